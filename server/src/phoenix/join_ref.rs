//! A join ref kept inline: every joined channel stores one (on its worker and on the topic's owner),
//! so it must not cost a heap allocation.

use std::fmt;

/// The raw JSON text of a join ref (e.g. `"3"` with its quotes), at most [`JoinRef::MAX`] bytes.
/// Echoed verbatim; the phoenix client's refs are counters, a few bytes long.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct JoinRef {
    len: u8,
    buf: [u8; JoinRef::MAX],
}

impl JoinRef {
    /// Longest join ref accepted, in bytes of raw JSON.
    pub const MAX: usize = 15;

    /// Keep `raw` if it fits.
    pub fn new(raw: &str) -> Option<Self> {
        if raw.len() > Self::MAX {
            return None;
        }
        let mut buf = [0; Self::MAX];
        buf[..raw.len()].copy_from_slice(raw.as_bytes());
        Some(JoinRef { len: raw.len() as u8, buf })
    }

    /// The raw JSON text.
    pub fn as_str(&self) -> &str {
        // `new` copied whole UTF-8 text, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len as usize]).unwrap_or_default()
    }
}

impl std::ops::Deref for JoinRef {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for JoinRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_refs_verbatim_and_refuses_long_ones() {
        let r = JoinRef::new("\"12\"").unwrap();
        assert_eq!(&*r, "\"12\"");
        assert_eq!(JoinRef::new("\"αβγ\"").unwrap().as_str(), "\"αβγ\"");
        assert!(JoinRef::new(&"1".repeat(16)).is_none());
        assert_eq!(std::mem::size_of::<JoinRef>(), 16);
    }
}
