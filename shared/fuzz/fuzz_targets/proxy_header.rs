//! A PROXY protocol header from a trusted load balancer that is broken anyway: our framing
//! around the `ppp` parser. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strait::proxy_protocol::parse(data);
});
