//! Fuzz target: `backchain::volume::fs::btrfs::fuzz_open_walk` on arbitrary bytes. Errors are
//! fine; a panic, a hang or an unbounded allocation is a bug. The walk is
//! bounded inside the entry function (depth, entries, bytes read).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::volume::fs::btrfs::fuzz_open_walk(data);
});
