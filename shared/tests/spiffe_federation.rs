//! Federation against real certificates minted with rcgen: the bundle is chosen by the
//! SPIFFE ID, never by which root happens to have signed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::CertificateError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use strait::certs::{Authority, KeyType, Leaf, Usage};
use strait::error::Refusal;
use strait::tls::{self, ClientTrust};
use strait::trust::{check_trust_domain_name, parse_spiffe_id, FederatedServerVerifier};

/// Two roots, A and B, their bundles on disk, and a root for non-SPIFFE certificates.
struct Roots {
    dir: PathBuf,
    a: Authority,
    b: Authority,
    plain: Authority,
}

impl Roots {
    fn new(name: &str) -> Roots {
        let dir = std::env::temp_dir().join(format!("strait-trust-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let roots = Roots {
            a: Authority::root("A root", KeyType::EcdsaP256, 30).unwrap(),
            b: Authority::root("B root", KeyType::EcdsaP256, 30).unwrap(),
            plain: Authority::root("Plain root", KeyType::EcdsaP256, 30).unwrap(),
            dir,
        };
        for (file, ca) in [("a.crt", &roots.a), ("b.crt", &roots.b), ("plain.crt", &roots.plain)] {
            std::fs::write(roots.dir.join(file), ca.bundle_pem()).unwrap();
        }
        roots
    }

    fn domains(&self) -> BTreeMap<String, PathBuf> {
        BTreeMap::from([("a.example".to_owned(), self.dir.join("a.crt")), ("b.example".to_owned(), self.dir.join("b.crt"))])
    }

    fn client_verifier(&self, other: Option<&Path>) -> Arc<dyn ClientCertVerifier> {
        let domains = self.domains();
        let trust = ClientTrust { ca: other, trust_domains: Some(&domains), crl: None };
        tls::client_verifier(&trust, &tls::provider()).unwrap()
    }
}

impl Drop for Roots {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn leaf(ca: &Authority, uris: &[&str], dns: &[&str], usage: Usage) -> Vec<CertificateDer<'static>> {
    let mut leaf = Leaf::new("workload", usage, 1);
    leaf.uris = uris.iter().map(|u| (*u).to_owned()).collect();
    leaf.dns = dns.iter().map(|d| (*d).to_owned()).collect();
    let issued = ca.issue(&leaf).unwrap();
    CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

fn verify_client(verifier: &dyn ClientCertVerifier, chain: &[CertificateDer<'_>]) -> Result<(), String> {
    verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).map(|_| ()).map_err(|e| match e {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
        e => format!("{e:?}"),
    })
}

#[test]
fn spiffe_ids_are_checked_against_the_spec() {
    assert_eq!(parse_spiffe_id("spiffe://a.example/ns/default/sa/client"), Ok("a.example"));
    assert_eq!(parse_spiffe_id("spiffe://cluster.local"), Ok("cluster.local"));
    for (bad, why) in [
        ("https://a.example/x", "scheme"),
        ("SPIFFE://a.example/x", "scheme"),
        ("spiffe:///x", "empty"),
        ("spiffe://A.example/x", "lowercase"),
        ("spiffe://a.example:8443/x", "port"),
        ("spiffe://user@a.example/x", "user info"),
        ("spiffe://a.example/x//y", "empty"),
        ("spiffe://a.example/x/", "empty"),
        ("spiffe://a.example/x/../y", "'..'"),
        ("spiffe://a.example/x?y=1", "letters"),
        ("spiffe://a.example/x#f", "letters"),
    ] {
        let reason = parse_spiffe_id(bad).unwrap_err();
        assert!(reason.contains(why), "{bad}: {reason}");
    }
    assert!(check_trust_domain_name("a.example").is_ok());
    assert!(check_trust_domain_name("spiffe://a.example").unwrap_err().contains("no scheme"));
    assert!(check_trust_domain_name("A.example").is_err());
}

#[test]
fn a_client_is_verified_only_against_its_trust_domains_bundle() {
    let roots = Roots::new("client");
    let verifier = roots.client_verifier(None);
    // B's root signing an ID of A's trust domain: refused although B is trusted.
    let impostor = leaf(&roots.b, &["spiffe://a.example/ns/default/sa/client"], &[], Usage::Client);
    let why = verify_client(verifier.as_ref(), &impostor).unwrap_err();
    assert!(why.contains("spiffe://a.example/ns/default/sa/client is not signed by a CA of trust domain \"a.example\""), "{why}");
    // The same root signing its own domain's ID, and A signing A's: accepted.
    verify_client(verifier.as_ref(), &leaf(&roots.b, &["spiffe://b.example/ns/default/sa/client"], &[], Usage::Client)).unwrap();
    verify_client(verifier.as_ref(), &leaf(&roots.a, &["spiffe://a.example/sa/x"], &[], Usage::Client)).unwrap();
    // Two URI SANs, a malformed ID, an unknown domain, no SPIFFE ID without a bundle.
    let two = leaf(&roots.a, &["spiffe://a.example/x", "spiffe://a.example/y"], &[], Usage::Client);
    assert!(verify_client(verifier.as_ref(), &two).unwrap_err().contains("carries 2 URI SANs"));
    let spiffe_and_other = leaf(&roots.a, &["spiffe://a.example/x", "https://example.com/"], &[], Usage::Client);
    assert!(verify_client(verifier.as_ref(), &spiffe_and_other).unwrap_err().contains("exactly one SPIFFE ID"));
    let malformed = leaf(&roots.a, &["spiffe://a.example/x/../y"], &[], Usage::Client);
    assert!(verify_client(verifier.as_ref(), &malformed).unwrap_err().contains("malformed SPIFFE ID"));
    let unknown = leaf(&roots.a, &["spiffe://c.example/x"], &[], Usage::Client);
    assert!(verify_client(verifier.as_ref(), &unknown).unwrap_err().contains("\"c.example\" is not federated here (trust_domains: a.example, b.example)"));
    let plain = leaf(&roots.plain, &[], &["client.example"], Usage::Client);
    assert!(verify_client(verifier.as_ref(), &plain).unwrap_err().contains("no SPIFFE ID"));
}

#[test]
fn certificates_without_a_spiffe_id_use_the_other_bundle_only() {
    let roots = Roots::new("other");
    let verifier = roots.client_verifier(Some(&roots.dir.join("plain.crt")));
    verify_client(verifier.as_ref(), &leaf(&roots.plain, &[], &["client.example"], Usage::Client)).unwrap();
    // A non-SPIFFE URI SAN is not a SPIFFE ID either.
    verify_client(verifier.as_ref(), &leaf(&roots.plain, &["https://client.example/"], &[], Usage::Client)).unwrap();
    // A domain root cannot sign non-SPIFFE certificates, and the plain root cannot sign
    // SPIFFE IDs.
    assert!(verify_client(verifier.as_ref(), &leaf(&roots.a, &[], &["client.example"], Usage::Client)).unwrap_err().contains("UnknownIssuer"));
    let why = verify_client(verifier.as_ref(), &leaf(&roots.plain, &["spiffe://a.example/x"], &[], Usage::Client)).unwrap_err();
    assert!(why.contains("not signed by a CA of trust domain"), "{why}");
}

#[test]
fn refusals_are_labelled_for_the_handshake_metrics() {
    let roots = Roots::new("labels");
    let verifier = roots.client_verifier(None);
    let labelled = |chain: &[CertificateDer<'_>]| {
        let e = verifier.verify_client_cert(&chain[0], &chain[1..], UnixTime::now()).unwrap_err();
        Refusal::of_handshake(&std::io::Error::other(e))
    };
    assert_eq!(labelled(&leaf(&roots.b, &["spiffe://a.example/x"], &[], Usage::Client)), Refusal::UnknownCa);
    assert_eq!(labelled(&leaf(&roots.a, &["spiffe://a.example/x", "spiffe://a.example/y"], &[], Usage::Client)), Refusal::BadCertificate);
}

#[test]
fn origination_verifies_the_server_by_its_trust_domain() {
    let roots = Roots::new("server");
    let by_domain = roots
        .domains()
        .into_iter()
        .map(|(domain, file)| {
            let v: Arc<dyn ServerCertVerifier> =
                rustls::client::WebPkiServerVerifier::builder_with_provider(tls::load_roots(&file).unwrap(), tls::provider()).build().unwrap();
            (domain, v)
        })
        .collect();
    let verifier = FederatedServerVerifier::new(by_domain, None);
    let name = ServerName::try_from("db.example").unwrap();
    let check = |chain: Vec<CertificateDer<'static>>| verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(|_| ());
    check(leaf(&roots.b, &["spiffe://b.example/db"], &["db.example"], Usage::Server)).unwrap();
    let refused = check(leaf(&roots.b, &["spiffe://a.example/db"], &["db.example"], Usage::Server)).unwrap_err();
    assert!(refused.to_string().contains("not signed by a CA of trust domain"), "{refused}");
}

#[test]
fn crls_apply_to_every_trust_domains_bundle() {
    let roots = Roots::new("crl");
    let mut revoked_leaf = Leaf::new("revoked", Usage::Client, 1);
    revoked_leaf.uris.push("spiffe://b.example/ns/default/sa/revoked".into());
    let revoked = roots.b.issue(&revoked_leaf).unwrap();
    let crl = roots.dir.join("crl.pem");
    std::fs::write(&crl, roots.a.revocation_list(&[], 1).unwrap() + &roots.b.revocation_list(&[&revoked], 1).unwrap()).unwrap();
    let domains = roots.domains();
    let verifier = tls::client_verifier(&ClientTrust { ca: None, trust_domains: Some(&domains), crl: Some(&crl) }, &tls::provider()).unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(revoked.chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    assert_eq!(verify_client(verifier.as_ref(), &chain).unwrap_err(), "InvalidCertificate(Revoked)");
    verify_client(verifier.as_ref(), &leaf(&roots.b, &["spiffe://b.example/ns/default/sa/kept"], &[], Usage::Client)).unwrap();
    verify_client(verifier.as_ref(), &leaf(&roots.a, &["spiffe://a.example/x"], &[], Usage::Client)).unwrap();
}

/// The SPIFFE ID parser takes any text a certificate carries: it never panics, and what
/// it accepts is a well-formed ID whose trust domain it returns (a bounded random walk
/// over the alphabet that matters, seeded so a failure reproduces).
#[test]
fn the_spiffe_id_parser_takes_any_input() {
    let alphabet: Vec<char> = "spiffe:/abcAZ09.-_@?#% \u{e9}\u{0}".chars().collect();
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let mut id: String = if next() % 2 == 0 { "spiffe://".into() } else { String::new() };
        id.extend((0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]));
        if let Ok(domain) = parse_spiffe_id(&id) {
            assert!(id.starts_with("spiffe://") && id["spiffe://".len()..].starts_with(domain) && !domain.is_empty(), "{id:?} -> {domain:?}");
            assert!(domain.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')), "{id:?}");
            assert!(check_trust_domain_name(domain).is_ok(), "{id:?}");
        }
    }
    assert!(parse_spiffe_id(&format!("spiffe://a.example/{}", "x".repeat(2100))).is_err(), "longer than 2048 bytes");
}
