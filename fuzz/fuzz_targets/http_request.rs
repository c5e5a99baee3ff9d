#![no_main]
//! See `rusher_server::fuzzing::http_request` for what is fed and checked.

libfuzzer_sys::fuzz_target!(|data: &[u8]| rusher_server::fuzzing::http_request(data));
