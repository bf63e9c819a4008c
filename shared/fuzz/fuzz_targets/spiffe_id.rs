//! What a peer's certificate claims as its SPIFFE ID: the ID and trust-domain parsers and
//! the pick of a trust bundle from an arbitrary (mostly broken) certificate. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(domain) = strait::trust::parse_spiffe_id(text) {
            let _ = strait::trust::check_trust_domain_name(domain);
        }
        let _ = strait::trust::check_trust_domain_name(text);
    }
    let cert = rustls::pki_types::CertificateDer::from(data);
    let _ = strait::trust::bundle_for(&cert);
});
