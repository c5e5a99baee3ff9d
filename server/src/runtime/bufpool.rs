//! Per-worker pool of read buffers, so an idle connection holds none.

/// A read buffer: `data[start..end]` holds unread bytes. `data` is fully initialised, so reads go
/// straight into `data[end..]` without `unsafe`.
#[derive(Debug)]
pub struct ReadBuf {
    pub data: Vec<u8>,
    pub start: usize,
    pub end: usize,
}

impl ReadBuf {
    /// Unread bytes.
    pub fn filled(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
    /// Unread bytes, mutable (frames are unmasked in place).
    pub fn filled_mut(&mut self) -> &mut [u8] {
        &mut self.data[self.start..self.end]
    }
    /// Whether nothing is left unread.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
    /// Mark `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }
    /// Make room for at least `want` more bytes after `end`, moving unread bytes to the front first and
    /// growing (zero-filled) only when that is not enough.
    pub fn reserve(&mut self, want: usize) {
        if self.data.len() - self.end >= want {
            return;
        }
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.data.len() - self.end < want {
            self.data.resize(self.end + want, 0);
        }
    }
    /// The writable tail.
    pub fn spare(&mut self) -> &mut [u8] {
        &mut self.data[self.end..]
    }
}

/// Free list of buffers of `size` bytes. Buffers that grew past `4 * size` for a large frame are
/// dropped on return instead of kept, so the pool's memory stays bounded.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    size: usize,
    max_free: usize,
}

impl BufPool {
    /// A pool handing out `size`-byte buffers and keeping at most `max_free` idle ones.
    pub fn new(size: usize, max_free: usize) -> Self {
        BufPool { free: Vec::new(), size, max_free }
    }
    /// Take a buffer.
    pub fn get(&mut self) -> ReadBuf {
        let data = self.free.pop().unwrap_or_else(|| vec![0; self.size]);
        ReadBuf { data, start: 0, end: 0 }
    }
    /// Give a buffer back.
    pub fn put(&mut self, buf: ReadBuf) {
        if self.free.len() < self.max_free && buf.data.len() <= 4 * self.size {
            let mut data = buf.data;
            data.truncate(self.size);
            self.free.push(data);
        }
    }
    /// Idle buffers held.
    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_compacts_before_growing() {
        let mut pool = BufPool::new(8, 4);
        let mut b = pool.get();
        b.spare()[..6].copy_from_slice(b"abcdef");
        b.end = 6;
        b.consume(4);
        b.reserve(5);
        assert_eq!(b.filled(), b"ef");
        assert_eq!(b.data.len(), 8, "compaction made room without growing");
        b.reserve(10);
        assert!(b.data.len() >= 12);
        assert_eq!(b.filled(), b"ef");
        pool.put(b);
        assert_eq!(pool.idle(), 1);
        assert_eq!(pool.get().data.len(), 8);
    }

    #[test]
    fn oversized_buffers_are_not_kept() {
        let mut pool = BufPool::new(8, 4);
        let mut b = pool.get();
        b.reserve(100);
        pool.put(b);
        assert_eq!(pool.idle(), 0);
    }
}
