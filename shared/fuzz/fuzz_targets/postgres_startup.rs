//! The PostgreSQL start-up parsers: the length check and the first-message classifier.
//! Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::protocol::postgres;

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = postgres::startup_length([data[0], data[1], data[2], data[3]]);
    }
    let _ = postgres::parse_startup(data);
});
