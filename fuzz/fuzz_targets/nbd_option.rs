//! Fuzz target: arbitrary bytes through every NBD option payload parser
//! (OPT_GO/INFO data, meta context requests, NBD_REP_INFO, META_CONTEXT
//! replies, option headers), which both the client and the server run on
//! what a peer sends.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::nbd::option::fuzz_entry(data);
});
