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

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// A fuzz target's entry point.
    type Target = fn(&[u8]);

    /// Every committed seed passes its target's checks, so the targets run (and cannot rot) in plain
    /// `cargo test` too, without cargo-fuzz.
    #[test]
    fn every_seed_passes_its_target() {
        let targets: [(&str, Target); 9] = [
            ("http_request", super::http_request),
            ("ws_frames", super::ws_frames),
            ("phoenix_text", super::phoenix_text),
            ("phoenix_binary", super::phoenix_binary),
            ("phoenix_session", super::phoenix_session),
            ("shootout", super::shootout),
            ("collab", super::collab),
            ("geo_fence", super::geo_fence),
            ("geo_push", super::geo_push),
        ];
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        for (name, target) in targets {
            let dir = std::fs::read_dir(seeds.join(name)).unwrap_or_else(|e| panic!("seeds of {name}: {e}"));
            let mut count = 0;
            for entry in dir {
                let path = entry.unwrap().path();
                target(&std::fs::read(&path).unwrap());
                count += 1;
            }
            assert!(count > 0, "{name} has seeds");
        }
    }
}
