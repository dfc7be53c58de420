//! Fuzz target: `backchain::schedule::calendar::fuzz_entry` on arbitrary
//! bytes: parse as a calendar expression; when valid, the normalized form
//! must read back as itself and give the same elapses. Errors are fine; a
//! panic or a hang is a bug (every search is bounded inside).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::schedule::calendar::fuzz_entry(data);
});
