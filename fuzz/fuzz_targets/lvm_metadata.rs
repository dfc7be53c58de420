//! Fuzz target: `backchain::volume::lvm::fuzz_metadata` on arbitrary bytes:
//! the LVM2 metadata text parser (bounded depth, items and string length)
//! and the VG model built from it. Errors are fine; a panic, a hang or an
//! unbounded allocation is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::volume::lvm::fuzz_metadata(data);
});
