//! Fuzz target: `backchain::engine::digests::fuzz_entry` on arbitrary bytes
//! as a digest map file (either version): checked, then read to its end.
//! Errors are fine; a panic or an unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::engine::digests::fuzz_entry(data);
});
