//! Fuzz target: arbitrary bytes as an NBD request header, as the server
//! reads them from a client.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    backchain::nbd::request::fuzz_entry(data);
});
