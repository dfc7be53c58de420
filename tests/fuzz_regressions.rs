//! Inputs the fuzzers found (fuzz/), each kept as a named regression test.

use backchain::block::{MemImage, ReadAt};
use backchain::volume::fs::{self, FsError};
use std::sync::Arc;

/// ext4_open_walk, out of memory: a superblock claiming millions of block
/// groups made ext4-view size a descriptor vector by that count before any
/// check. The group count is now checked against the volume size first.
#[test]
fn ext4_huge_group_count_is_refused_without_allocating() {
    let data = include_bytes!("data/fuzz/ext4-huge-group-count.bin").to_vec();
    let vol: Arc<dyn ReadAt> = Arc::new(MemImage(data.clone()));
    match fs::ext4::open(&vol) {
        Err(FsError::Corrupt { what, .. }) => assert!(what.contains("block groups"), "{what}"),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("a forged group count was accepted"),
    }
    // The whole fuzz entry point survives it too.
    fs::ext4::fuzz_open_walk(&data);
}
