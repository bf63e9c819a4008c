//! The MySQL connection-phase parsers: packet framing, server greeting, the client's SSL
//! request or handshake response. Never a panic, and rewriting CLIENT_SSL never changes
//! a packet's length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strait::protocol::mysql;

fuzz_target!(|data: &[u8]| {
    let mut buffer = data.to_vec();
    while let Ok(Some(packet)) = mysql::parse_packet(&mut buffer, 64 * 1024) {
        if let Ok(greeting) = mysql::parse_greeting(&packet.payload) {
            for offer in [true, false] {
                assert_eq!(mysql::greeting_with_ssl(&packet.payload, &greeting, offer).len(), packet.payload.len());
            }
        }
        if let Ok(caps) = mysql::client_capabilities(&packet.payload) {
            let _ = mysql::is_ssl_request(&packet.payload, caps);
            assert_eq!(mysql::with_ssl_flag(&packet.payload, true).len(), packet.payload.len());
        }
    }
});
