//! Phoenix Presence payloads: who is in a topic, keyed by user, one meta per connection.
//!
//! The client's `Presence` merges diffs by `phx_ref`, so every connection's meta carries a ref that is
//! unique on this server.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One connection's presence in a topic.
#[derive(Debug, Clone)]
pub struct Meta<'a> {
    pub user: &'a str,
    pub phx_ref: u64,
}

fn write_meta(out: &mut String, m: &Meta<'_>) {
    let _ = write!(out, r#"{{"phx_ref":"{:x}"}}"#, m.phx_ref);
}

fn write_group<'a>(out: &mut String, metas: impl Iterator<Item = &'a Meta<'a>>) {
    let mut by_user: BTreeMap<&str, Vec<&Meta<'_>>> = BTreeMap::new();
    for m in metas {
        by_user.entry(m.user).or_default().push(m);
    }
    out.push('{');
    for (i, (user, metas)) in by_user.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(user).expect("strings serialise"));
        out.push_str(r#":{"metas":["#);
        for (j, m) in metas.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_meta(out, m);
        }
        out.push_str("]}");
    }
    out.push('}');
}

/// `presence_state` payload: every member grouped by user.
pub fn state_json<'a>(metas: impl Iterator<Item = &'a Meta<'a>>) -> String {
    let mut out = String::new();
    write_group(&mut out, metas);
    out
}

/// `presence_diff` payload.
pub fn diff_json(joins: &[Meta<'_>], leaves: &[Meta<'_>]) -> String {
    let mut out = String::from(r#"{"joins":"#);
    write_group(&mut out, joins.iter());
    out.push_str(r#","leaves":"#);
    write_group(&mut out, leaves.iter());
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_groups_metas_by_user() {
        let metas = [
            Meta { user: "bob", phx_ref: 2 },
            Meta { user: "alice", phx_ref: 1 },
            Meta { user: "bob", phx_ref: 3 },
        ];
        let v: serde_json::Value = serde_json::from_str(&state_json(metas.iter())).unwrap();
        assert_eq!(v["alice"]["metas"][0]["phx_ref"], "1");
        assert_eq!(v["bob"]["metas"].as_array().unwrap().len(), 2);
        assert_eq!(v["bob"]["metas"][1]["phx_ref"], "3");
    }

    #[test]
    fn diff_has_joins_and_leaves_and_escapes_names() {
        let j = [Meta { user: "a\"b", phx_ref: 255 }];
        let v: serde_json::Value = serde_json::from_str(&diff_json(&j, &[])).unwrap();
        assert_eq!(v["joins"]["a\"b"]["metas"][0]["phx_ref"], "ff");
        assert_eq!(v["leaves"], serde_json::json!({}));
    }
}
