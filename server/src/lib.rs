//! Rusher: a thread-per-core WebSocket server for real-time apps, speaking Phoenix Channels V2.
//!
//! Layers, each depending only on those below it:
//! `server` (start/stop) → `runtime` (workers, connections) → `http`, `phoenix`, `topics` →
//! `mailbox`, `cluster`, `store`, `metrics`, `auth`, `config` → `wire` (frames, handshake, Phoenix messages).

pub mod auth;
pub mod cluster;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mailbox;
pub mod metrics;
pub mod phoenix;
pub mod runtime;
pub mod server;
pub mod statics;
pub mod store;
pub mod sys;
pub mod topics;
pub mod wire;
