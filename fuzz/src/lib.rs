//! Support for the fuzz targets in `fuzz_targets/`; the targets themselves live in
//! `rusher_server::fuzzing`.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};

thread_local! {
    /// The last panic's message and place, kept for the report should it not be caught.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Replaces libFuzzer's panic hook, which aborts on every panic, with one that only records it, for
/// targets whose code catches panics on purpose (the collab document catches `yrs` panics, as the
/// server does). Call from the target's `init`.
pub fn record_panics() {
    panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|last| *last.borrow_mut() = info.to_string());
    }));
}

/// Runs `body`; a panic that escapes it is printed and aborts the process, so the fuzzer reports
/// the input as a crash just as it does under its own hook.
pub fn abort_on_escaped_panic(body: impl FnOnce()) {
    if panic::catch_unwind(AssertUnwindSafe(body)).is_err() {
        LAST_PANIC.with(|last| eprintln!("panic not caught by the server: {}", last.borrow()));
        std::process::abort();
    }
}
