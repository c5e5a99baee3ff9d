#![no_main]
//! See `rusher_server::fuzzing::geo_fence` for what is fed and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher_server::fuzzing::geo_fence(data));
