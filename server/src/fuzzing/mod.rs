//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer): one function per parser that
//! reads bytes from the network, each feeding the input through the same code the server runs and
//! asserting what must hold for any input (round trips, bounds, well-formed output). A failed
//! assertion panics, which the fuzzer reports as a crash with the input that caused it.
//!
//! Not part of the server's API: nothing here is called by the server itself.

mod collab;
mod geo;
mod session;
mod wire;

pub use collab::collab;
pub use geo::{geo_fence, geo_push};
pub use session::phoenix_session;
pub use wire::{http_request, phoenix_binary, phoenix_text, shootout, ws_frames};

use crate::config::{Config, ServeArgs};

/// The configuration a server started without flags has: the bounds the targets check against.
fn default_config() -> Config {
    ServeArgs::default().resolve().expect("the default configuration is valid")
}
