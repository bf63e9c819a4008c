//! `diagnose`: walk one TLS path step by step and say in plain words what is wrong.
//!
//! The egress runs a route's whole origination (DNS, TCP per address, the handshake with
//! the route's own credential and verification); the ingress side connects to a running
//! listener as a client would. Each step prints its timing; the server's chain is
//! printed even when verification fails, because that is when it is needed.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{CertKey, Config, Protocol, TlsMode, TlsPolicy, UpstreamTls};
use crate::resolve::Resolver;
use crate::tls;

/// What to probe: a name and port, how to handshake, and which files to blame.
pub struct Probe {
    /// Host (DNS name or IP) and port to connect to.
    pub host: String,
    /// Port.
    pub port: u16,
    /// SNI and the name the server certificate is checked against.
    pub sni: String,
    /// Origination settings (mode, credential files, CA, SAN checks); `None`: plaintext.
    pub tls: Option<UpstreamTls>,
    /// For database routes, TLS starts after the protocol's own TLS request.
    pub protocol: Protocol,
}

/// The report: one line per step, and whether the path works.
pub struct Report {
    /// Human-readable steps.
    pub text: String,
    /// True only when every step succeeded.
    pub ok: bool,
}

/// Diagnoses an egress route by name, from the config at `config`.
pub async fn route(config: &Config, name: &str) -> Report {
    let mut out = String::new();
    let Some(route) = config.routes.iter().map(|r| r.get_ref()).find(|r| r.name == name) else {
        let names: Vec<&str> = config.routes.iter().map(|r| r.get_ref().name.as_str()).collect();
        return fail(out, format!("no route is named {name:?} in {}; routes: {}", config.path.display(), names.join(", ")));
    };
    let tls = route.upstream_tls.clone();
    let _ = writeln!(out, "route {name}: upstream {}, upstream_tls mode {}", route.upstream, tls.as_ref().map_or(TlsMode::Disable, |t| t.mode));
    let sni = tls.as_ref().map_or_else(|| route.upstream.host.clone(), |t| t.sni.to_str().into_owned());
    let probe = Probe { host: route.upstream.host.clone(), port: route.upstream.port, sni, tls, protocol: route.protocol };
    run(out, config, &probe).await
}

/// Diagnoses a running ingress listener from the client side: connects to `address`
/// with SNI `sni`, presenting `cert`/`key`, verifying the server with `ca`.
pub async fn client(config: &Config, address: SocketAddr, sni: String, cert: PathBuf, key: PathBuf, ca: PathBuf) -> Report {
    let out = format!("listener at {address}: SNI {sni}, client certificate {}\n", cert.display());
    let Ok(server_name) = ServerName::try_from(sni.clone()) else {
        return fail(out, format!("SNI {sni:?} is not a DNS name or IP address"));
    };
    let tls = UpstreamTls {
        mode: TlsMode::Mutual,
        client: Some(CertKey { cert, key }),
        ca: Some(ca),
        trust_domains: Default::default(),
        sni: server_name,
        subject_alt_names: None,
        verify_hostname: false,
        sni_from_client: false,
        policy: TlsPolicy::default(),
    };
    let probe = Probe { host: address.ip().to_string(), port: address.port(), sni, tls: Some(tls), protocol: Protocol::Tcp };
    run(out, config, &probe).await
}

fn fail(mut out: String, why: String) -> Report {
    let _ = writeln!(out, "FAIL: {why}");
    Report { text: out, ok: false }
}

fn step(out: &mut String, started: Instant, what: impl std::fmt::Display) {
    let _ = writeln!(out, "[{:>8.1} ms] {what}", started.elapsed().as_secs_f64() * 1000.0);
}

async fn run(mut out: String, config: &Config, probe: &Probe) -> Report {
    // DNS.
    let resolver = match Resolver::new(&config.resolver) {
        Ok(r) => r,
        Err(e) => return fail(out, e.to_string()),
    };
    let started = Instant::now();
    let addrs = match resolver.lookup(&probe.host, probe.port).await {
        Ok(addrs) => addrs,
        Err(e) => {
            step(&mut out, started, format!("DNS {}: no answer", probe.host));
            return fail(out, format!("{e}. Check the name, and `[resolver] nameservers` if it is served by a private DNS"));
        }
    };
    let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
    step(&mut out, started, format!("DNS {}: {}", probe.host, list.join(", ")));

    // TCP, every address (the gateway falls through them in turn).
    let mut reachable = None;
    for addr in &addrs {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                step(&mut out, started, format!("TCP {addr}: connected"));
                reachable.get_or_insert((tcp, *addr));
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => step(&mut out, started, format!("TCP {addr}: refused (nothing listens there)")),
            Ok(Err(e)) => step(&mut out, started, format!("TCP {addr}: {e}")),
            Err(_) => step(&mut out, started, format!("TCP {addr}: no answer within 5 s (filtered, or the host is down)")),
        }
    }
    let Some((tcp, addr)) = reachable else {
        return fail(out, format!("no address of {} accepts TCP on port {}", probe.host, probe.port));
    };
    let Some(tls) = &probe.tls else {
        let _ = writeln!(out, "upstream_tls mode is \"disable\": plaintext, nothing more to check");
        return Report { text: out + "OK: the path works\n", ok: true };
    };
    let mut tcp = tcp;
    if probe.protocol != Protocol::Tcp {
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(10), request_tls(probe.protocol, &mut tcp)).await {
            Ok(Ok(said)) => step(&mut out, started, said),
            Ok(Err(why)) => return fail(out, why),
            Err(_) => return fail(out, format!("the server did not answer the {} TLS request within 10 s", probe.protocol.as_str())),
        }
    }
    handshake(out, probe, tls, tcp, addr).await
}

/// Asks a database for TLS the way its protocol does, as the gateway would.
async fn request_tls(protocol: Protocol, tcp: &mut TcpStream) -> Result<String, String> {
    use crate::protocol::{mysql, postgres};
    use tokio::io::AsyncWriteExt;
    match protocol {
        Protocol::Mysql => {
            let mut buffer = Vec::new();
            let greeting = loop {
                if let Some(packet) = mysql::parse_packet(&mut buffer, 64 * 1024)? {
                    break packet;
                }
                if tcp.read_buf(&mut buffer).await.map_err(|e| format!("reading the MySQL greeting: {e}"))? == 0 {
                    return Err("the server closed before its MySQL greeting: is this a MySQL port?".into());
                }
            };
            let parsed = mysql::parse_greeting(&greeting.payload)?;
            if parsed.capabilities & mysql::CLIENT_SSL == 0 {
                return Err("the server's MySQL greeting does not offer TLS (no CLIENT_SSL): enable TLS on the server (ssl_cert/ssl_key), or set upstream_tls mode = \"disable\" if plaintext is really meant".into());
            }
            let mut request = (mysql::CLIENT_PROTOCOL_41 | mysql::CLIENT_SSL).to_le_bytes().to_vec();
            request.extend_from_slice(&[0, 0, 0, 1, 45]);
            request.extend_from_slice(&[0; 23]);
            let packet = mysql::Packet { seq: greeting.seq.wrapping_add(1), payload: request };
            tcp.write_all(&packet.encode()).await.map_err(|e| format!("sending the SSL request: {e}"))?;
            Ok("MySQL greeting offers TLS (CLIENT_SSL); SSL request sent".into())
        }
        Protocol::Postgres => {
            let mut request = 8u32.to_be_bytes().to_vec();
            request.extend_from_slice(&postgres::SSL_REQUEST.to_be_bytes());
            tcp.write_all(&request).await.map_err(|e| format!("sending SSLRequest: {e}"))?;
            let mut answer = [0u8; 1];
            tcp.read_exact(&mut answer).await.map_err(|e| format!("the server closed after SSLRequest: {e}"))?;
            match answer[0] {
                b'S' => Ok("PostgreSQL answered S to SSLRequest".into()),
                b'N' => Err("PostgreSQL answered N to SSLRequest: the server has ssl = off; enable it, or set upstream_tls mode = \"disable\" if plaintext is really meant".into()),
                other => Err(format!("PostgreSQL answered {:?} to SSLRequest: is this a PostgreSQL port?", other as char)),
            }
        }
        Protocol::Tcp => Ok(String::new()),
    }
}

/// Records the chain the server presented, then lets the real verifier decide.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    chain: Mutex<Vec<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut chain = vec![end_entity.clone().into_owned()];
        chain.extend(intermediates.iter().map(|c| c.clone().into_owned()));
        *self.chain.lock().unwrap_or_else(|p| p.into_inner()) = chain;
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(m, c, d)
    }

    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(m, c, d)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

async fn handshake(mut out: String, probe: &Probe, settings: &UpstreamTls, tcp: TcpStream, addr: SocketAddr) -> Report {
    let key = match &settings.client {
        Some(pair) => match tls::load_certified_key(&pair.cert, &pair.key) {
            Ok(key) => Some(key),
            Err(e) => return fail(out, format!("our client credential is unusable: {e}")),
        },
        None => None,
    };
    let our_cert = settings.client.as_ref().map(|pair| pair.cert.clone());
    let verifier = match tls::server_verifier(settings) {
        Ok(v) => Arc::new(Recording { inner: v, chain: Mutex::new(Vec::new()) }),
        Err(e) => return fail(out, format!("our CA bundle is unusable: {e}")),
    };
    let config = match tls::client_config_with(key, settings, verifier.clone()) {
        Ok(c) => c,
        Err(e) => return fail(out, e.to_string()),
    };
    let server_name = settings.sni.clone();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), TlsConnector::from(config).connect(server_name, tcp)).await;
    let chain = verifier.chain.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // With trust domains, the first bundle stands for the rest in the explanations.
    let ca_file = settings.ca.clone().or_else(|| settings.trust_domains.values().next().cloned()).unwrap_or_default();
    let mut stream = match result {
        Err(_) => {
            step(&mut out, started, format!("TLS to {addr}: no handshake within 10 s"));
            return fail(out, "the server accepted TCP but never answered the ClientHello: is this port TLS at all?".into());
        }
        Ok(Err(e)) => {
            step(&mut out, started, format!("TLS to {addr} (SNI {}): failed: {e}", probe.sni));
            describe_chain(&mut out, &chain);
            let why = explain(&e, &chain, &ca_file, &our_cert, &probe.sni);
            return fail(out, why);
        }
        Ok(Ok(stream)) => stream,
    };
    let (_, session) = stream.get_ref();
    let version = session.protocol_version().and_then(|v| v.as_str()).unwrap_or("?");
    let suite = session.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("?");
    step(&mut out, started, format!("TLS to {addr} (SNI {}): {version}, {suite}", probe.sni));
    describe_chain(&mut out, &chain);
    let _ = writeln!(out, "  server certificate verified against {} and {}", ca_file.display(), naming(settings, &probe.sni));
    // TLS 1.3 servers judge our certificate after the client's Finished: read briefly to
    // hear a refusal.
    let started = Instant::now();
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut byte)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => step(
            &mut out,
            started,
            "the server accepted our certificate, then closed without close_notify: what is behind it (a gateway's route upstream) closed or refused; see that side's access log",
        ),
        Ok(Err(e)) => {
            step(&mut out, started, format!("after the handshake the server closed with: {e}"));
            let why = explain(&e, &chain, &ca_file, &our_cert, &probe.sni);
            return fail(out, why);
        }
        Ok(Ok(0)) => step(&mut out, started, "the server closed the connection after the handshake (the backend behind it may have refused)"),
        _ => step(&mut out, started, "client certificate accepted; the connection stays open"),
    }
    out.push_str("OK: the path works\n");
    Report { text: out, ok: true }
}

fn naming(tls: &UpstreamTls, sni: &str) -> String {
    match &tls.subject_alt_names {
        Some(names) => format!("subject_alt_names [{}]", names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")),
        None => format!("the SNI name {sni}"),
    }
}

fn describe_chain(out: &mut String, chain: &[CertificateDer<'_>]) {
    if chain.is_empty() {
        return;
    }
    let _ = writeln!(out, "  server chain:");
    for (i, cert) in chain.iter().enumerate() {
        if let Some(c) = Described::of(cert) {
            let _ = writeln!(
                out,
                "    {i}: subject {}\n       issuer  {}\n       SANs    [{}]\n       expires {} ({})",
                c.subject,
                c.issuer,
                c.sans.join(", "),
                c.not_after,
                c.left
            );
        }
    }
}

struct Described {
    subject: String,
    issuer: String,
    sans: Vec<String>,
    not_after: String,
    left: String,
}

impl Described {
    fn of(cert: &CertificateDer<'_>) -> Option<Described> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
        let identity = crate::identity::Identity::from_cert(cert);
        let expiry = parsed.validity().not_after.timestamp();
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let days = (expiry - now) / 86400;
        Some(Described {
            subject: parsed.subject().to_string(),
            issuer: parsed.issuer().to_string(),
            sans: identity.uris.into_iter().chain(identity.dns).collect(),
            not_after: parsed.validity().not_after.to_string(),
            left: if expiry < now { format!("expired {} days ago", -days) } else { format!("in {days} days") },
        })
    }
}

/// Subjects of the certificates in a CA bundle, for "trusts CA Y".
fn bundle_subjects(file: &Path) -> String {
    match tls::load_certs(file) {
        Ok(certs) => certs.iter().filter_map(Described::of).map(|c| c.subject).collect::<Vec<_>>().join("; "),
        Err(e) => format!("(unreadable: {e})"),
    }
}

/// Turns a handshake error into what to change.
fn explain(error: &std::io::Error, chain: &[CertificateDer<'_>], ca: &Path, our_cert: &Option<PathBuf>, sni: &str) -> String {
    let Some(tls_error) = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) else {
        return format!("{error}: the connection broke during the handshake (is this a TLS port? does the server accept our TLS versions?)");
    };
    let leaf = chain.first().and_then(Described::of);
    let last = chain.last().and_then(Described::of);
    let ours = our_cert.as_ref().map_or_else(|| "our certificate".to_owned(), |p| p.display().to_string());
    match tls_error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the server's chain ends in CA \"{}\", but this route trusts CA \"{}\" ({}): add the server's CA to that file, or fix the server's chain",
            last.map_or_else(|| "?".into(), |c| c.issuer),
            bundle_subjects(ca),
            ca.display()
        ),
        rustls::Error::InvalidCertificate(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!("the server's certificate {}: it must be renewed on the server", leaf.map_or_else(|| "has expired".into(), |c| c.left))
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            "the server's certificate is not valid yet: check the server's clock or its not-before date".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }) => format!(
            "the server's certificate names [{}], not {sni:?}: set the route's upstream_tls.sni to one of those names, or reissue the certificate with {sni:?} as a DNS SAN",
            leaf.map_or_else(String::new, |c| c.sans.join(", "))
        ),
        rustls::Error::InvalidCertificate(CertificateError::BadSignature) => format!(
            "the server's chain does not verify against {} (\"{}\"): a CA there has the issuer's name but not its key, so the server's CA was re-created or belongs to another PKI; put the server's real CA in that file",
            ca.display(),
            bundle_subjects(ca)
        ),
        rustls::Error::InvalidCertificate(other) => format!("the server's certificate was rejected: {other:?}"),
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => format!(
                "the server refused our client certificate (alert: unknown_ca): its client CA does not include the issuer of {ours}"
            ),
            AlertDescription::DecryptError => format!(
                "the server refused our client certificate (alert: decrypt_error): its client CA has a CA named like the issuer of {ours} but with another key (a re-created CA or another PKI)"
            ),
            AlertDescription::CertificateRequired => format!(
                "the server requires a client certificate (alert: certificate_required): set upstream_tls mode = \"mutual\" with a credential ({ours})"
            ),
            AlertDescription::BadCertificate | AlertDescription::CertificateExpired | AlertDescription::CertificateRevoked | AlertDescription::UnsupportedCertificate => {
                format!("the server refused our client certificate (alert: {alert:?}): check {ours} (validity, clientAuth usage, revocation)")
            }
            AlertDescription::AccessDenied | AlertDescription::UnrecognisedName | AlertDescription::HandshakeFailure => format!(
                "the server refused SNI {sni:?} (alert: {alert:?}): no route there serves this host; check the server's hosts"
            ),
            AlertDescription::ProtocolVersion => "the server does not accept our TLS versions (alert: protocol_version): check min_version on both sides".into(),
            other => format!("the server aborted the handshake (alert: {other:?})"),
        },
        other => format!("TLS error: {other}"),
    }
}
