//! Fuzz target: arbitrary bytes as a hostile NBD server's reply stream to
//! backchain's client (requests in flight, chunks in any order), and as one
//! structured chunk. Errors are fine; a panic, a hang or an unbounded
//! allocation is a bug (every length is checked against a named limit).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::nbd::client::fuzz_replies(data);
    backchain::nbd::structured::fuzz_entry(data);
});
