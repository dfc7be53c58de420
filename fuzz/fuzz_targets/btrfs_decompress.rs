//! Fuzz target: `backchain::volume::fs::btrfs::fuzz_decompress`, btrfs's
//! extent decompression (its LZO1X decoder and segment layout, zlib, zstd)
//! on arbitrary bytes. The first byte picks the method and sector size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::volume::fs::btrfs::fuzz_decompress(data);
});
