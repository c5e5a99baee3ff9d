//! `geo:<tenant>` geofencing: live positions of moving objects, fixed and roaming fences, and
//! `geofence_event`s to the subscribers of each fence. The protocol is in `docs/geo.md`.
//!
//! The connection's worker parses and checks every push ([`push`]) and forwards it to the tenant's
//! owner ([`owner`]), which holds the [`tenant::Tenant`] and answers. Detection itself is pure
//! ([`detect`]) over spatial indexes ([`index`]).

pub mod detect;
pub mod evaluate;
pub mod fence;
pub mod index;
mod owner;
mod push;
pub mod query;
pub mod tenant;

pub use owner::{Geo, GeoMsg};
/// For the fuzz targets (`crate::fuzzing`): the push parser and what it yields.
pub(crate) use owner::{Loc, Op};
pub(crate) use push::parse_op;
pub use push::{on_join, on_push, valid_tenant};

use std::sync::Arc;

use crate::auth::Grants;

/// Longest tenant name, in bytes.
pub const MAX_TENANT: usize = 128;
/// Largest `props` object of a location update, in bytes.
pub const MAX_PROPS: usize = 1024;
/// Most a `ts` may lie ahead of the server's clock, in milliseconds.
pub const MAX_FUTURE_MS: f64 = 60_000.0;
/// Most updates in one `locations` push.
pub const MAX_BATCH: usize = 1000;
/// Largest result of one query or list page.
pub const MAX_LIMIT: usize = 1000;
/// Result size when a query names none.
pub const DEFAULT_LIMIT: usize = 100;

/// What a member may do in its tenant.
#[derive(Debug, Clone)]
pub enum Access {
    /// Open mode (no secret): everything.
    Open,
    /// The socket's user and what its grant token allows.
    Granted { user: Arc<str>, grants: Grants },
}

impl Access {
    /// Whether this member may move object `id`: its own objects (`<user>` and `<user>/...`) and what
    /// its grant names. A user whose name contains `/` owns no objects implicitly: its name lies inside
    /// another user's namespace (user `a` owns `a/b`), so both would move object `a/b`; such a user moves
    /// only what its grant names.
    pub fn may_move(&self, id: &str) -> bool {
        match self {
            Access::Open => true,
            Access::Granted { user, grants } => {
                let own = !user.contains('/')
                    && (id == &**user || id.strip_prefix(&**user).is_some_and(|rest| rest.starts_with('/')));
                own || grants.may_move(id)
            }
        }
    }

    /// Whether this member may create, change and delete fences.
    pub fn may_admin(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Granted { grants, .. } => grants.geo_admin,
        }
    }
}

/// Fences a subscription names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fences {
    All,
    Ids(Vec<Arc<str>>),
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_move_their_own_objects_and_what_they_are_granted() {
        let grants = Grants { geo_move: vec!["truck-*".into()], geo_admin: false, operator: false };
        let a = Access::Granted { user: "alice".into(), grants };
        assert!(a.may_move("alice") && a.may_move("alice/phone") && a.may_move("truck-9"));
        assert!(!a.may_move("alicex") && !a.may_move("bob") && !a.may_move("van"));
        assert!(!a.may_admin());
        assert!(Access::Open.may_move("bob") && Access::Open.may_admin());
    }

    #[test]
    fn a_user_named_inside_another_users_namespace_owns_nothing_implicitly() {
        // "alice/phone" is alice's object; a user named "alice/phone" must not move it too, nor its
        // sub-objects, which are alice's as well.
        let slashed = Access::Granted { user: "alice/phone".into(), grants: Grants::default() };
        assert!(!slashed.may_move("alice/phone") && !slashed.may_move("alice/phone/gps"));
        assert!(!slashed.may_move("alice"));
        let alice = Access::Granted { user: "alice".into(), grants: Grants::default() };
        assert!(alice.may_move("alice/phone") && alice.may_move("alice/phone/gps"));
        // A grant still lets such a user move what it names.
        let granted = Access::Granted {
            user: "alice/phone".into(),
            grants: Grants { geo_move: vec!["sensor-1".into()], ..Grants::default() },
        };
        assert!(granted.may_move("sensor-1") && !granted.may_move("alice/phone"));
    }
}
