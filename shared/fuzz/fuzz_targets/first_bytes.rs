//! Whatever a stranger sends first: the permissive-mode sniffer, then the ClientHello
//! parse and the SNI that picks a route. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = strait::connection::looks_like_tls(data);
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = data;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    if let Ok(Some(accepted)) = acceptor.accept() {
        let hello = accepted.client_hello();
        let _ = hello.server_name().map(str::to_ascii_lowercase);
        let _ = hello.cipher_suites().len();
    }
});
