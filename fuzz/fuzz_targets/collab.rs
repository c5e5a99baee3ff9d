#![no_main]
//! See `rusher_server::fuzzing::collab` for what is fed and checked.

libfuzzer_sys::fuzz_target!(
    init: rusher_fuzz::record_panics(),
    |data: &[u8]| rusher_fuzz::abort_on_escaped_panic(|| rusher_server::fuzzing::collab(data))
);
