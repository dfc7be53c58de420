//! Fuzz target: `backchain::volume::lvm::fuzz_pv` on arbitrary bytes as a
//! disk: partition table, PV label, metadata areas (circular text, CRCs),
//! VG assembly and reads at both ends of every readable LV.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::volume::lvm::fuzz_pv(data);
});
