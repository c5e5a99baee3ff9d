//! Wire formats, independent of everything else in the crate: WebSocket frames, the HTTP upgrade,
//! and Phoenix Channels V2 messages.

pub mod frame;
pub mod handshake;
pub mod phoenix;
