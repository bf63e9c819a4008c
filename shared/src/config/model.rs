//! The checked configuration: what validation produces and everything else reads.
//!
//! Every value here has been checked against the rest of the file: an upstream is a
//! [`HostPort`], a listener has its address, cipher suites and identity patterns are
//! parsed, and credential files come in the pairs their mode needs. An `Option` here
//! means "not configured", never "validated to be present". The serde `Serialize` is the
//! effective configuration shown at `/config_dump` (`dir` expanded into file paths).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::ServerName;
use serde::Serialize;

use super::schema::{PeerAuth, Protocol, SslMode, TcpKeepalive, TlsMode, TlsVersion, Transport};
use super::values::{self, CipherSuite, HostPort};
use crate::authz::Pattern;

/// One port the gateway accepts on.
#[derive(Debug, Serialize)]
pub struct ListenerConfig {
    /// Unique name, used in logs and by routes' `listeners`.
    pub name: String,
    /// Where it binds (the role's TLS port on all interfaces when the file names none).
    pub address: SocketAddr,
    /// Plain TCP to one route, or TLS termination routed by SNI.
    #[serde(flatten)]
    pub kind: ListenerKind,
    /// Longest wait for a client to finish its TLS handshake.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Istio's PeerAuthentication mode (always `strict` at plain listeners).
    pub peer_auth: PeerAuth,
    /// Most connections open at once; beyond it new ones are closed at accept. As
    /// written, or (when the file sets none) this listener's share of the open-file
    /// budget at load time ([`crate::fdlimit::default_max_connections`]).
    pub max_connections: usize,
    /// TCP keepalive on accepted client connections.
    pub tcp_keepalive: TcpKeepalive,
    /// How often a relaying connection writes a periodic access-log record, if at all.
    #[serde(with = "humantime_serde")]
    pub access_log_flush_interval: Option<Duration>,
    /// At a `permissive` listener whose `default_route` is server-first (`mysql`): how
    /// long a client may stay silent before it is taken as plaintext and served the
    /// greeting (default applied); `None` everywhere else, where the first byte is waited
    /// for up to `handshake_timeout`.
    #[serde(with = "humantime_serde")]
    pub permissive_detection_window: Option<Duration>,
    /// Where a PROXY protocol header is accepted from; `None`: never (the TCP peer is
    /// the client).
    pub proxy_protocol: Option<super::proxy::ProxyProtocol>,
    /// `hbone` at a mutual-TLS listener that serves HTTP/2 `CONNECT` streams routed by
    /// `:authority`; `direct` everywhere else.
    pub transport: Transport,
    /// Whether a reload that changes this listener's trust (CA bundle, trust domains,
    /// CRL) verifies its open connections' client chains again, closing those that fail.
    pub recheck_on_trust_change: bool,
    /// Whether idle connections of this listener may be shed under overload.
    pub shed_idle_under_pressure: bool,
    /// Abuse limits (defaults applied).
    pub limits: Limits,
}

/// A token bucket's settings: `per_second` tokens refill, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rate {
    /// Sustained rate.
    pub per_second: u32,
    /// Most taken at once after a quiet spell.
    pub burst: u32,
}

/// A listener's abuse limits, checked: `None` is unlimited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// New connections per source address.
    pub per_source: Option<Rate>,
    /// Connections open at once per source address.
    pub concurrent_per_source: Option<u32>,
    /// New connections per client identity (after the TLS handshake).
    pub per_identity: Option<Rate>,
    /// Connections open at once per client identity.
    pub concurrent_per_identity: Option<u32>,
    /// PostgreSQL CancelRequests per source address (always limited: each one is a
    /// guess at a cancel key).
    pub cancels_per_source: Rate,
}

/// What a listener does with a connection.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ListenerKind {
    /// Plain TCP: every connection takes `route` (a route of this file).
    Plain {
        /// The route's name.
        route: String,
    },
    /// TLS termination; the route is chosen by SNI.
    Tls {
        /// Mode, credential and policy.
        tls: ListenerTls,
        /// Route for clients without SNI (and plaintext clients under `peer_auth`);
        /// a route served at this listener.
        default_route: Option<String>,
    },
}

impl ListenerConfig {
    /// The listener's TLS settings; `None` for a plain listener.
    pub fn tls(&self) -> Option<&ListenerTls> {
        match &self.kind {
            ListenerKind::Tls { tls, .. } => Some(tls),
            ListenerKind::Plain { .. } => None,
        }
    }
}

/// A certificate chain file and its private key file, always given together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertKey {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Private key for `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Lowest version and cipher suites of one TLS side.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TlsPolicy {
    /// Lowest TLS version accepted.
    pub min_version: TlsVersion,
    /// Suites in preference order; `None`: the built-in order.
    pub cipher_suites: Option<Vec<CipherSuite>>,
}

/// A listener's `tls`: TLS termination.
#[derive(Clone, Debug, Serialize)]
pub struct ListenerTls {
    /// `mutual` or `simple` (never `disable`: a plain listener has no `tls`).
    pub mode: TlsMode,
    /// The certificate presented for routes that bring no `downstream_tls`.
    #[serde(flatten)]
    pub credential: Option<CertKey>,
    /// CA bundle that verifies client certificates (with `trust_domains`, those
    /// without a SPIFFE ID); in `mutual` mode this or `trust_domains` is present.
    pub ca: Option<PathBuf>,
    /// SPIFFE federation: trust domain -> CA bundle for client certificates whose
    /// SPIFFE ID names it ([`crate::trust`]); empty: `ca` verifies every client.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub trust_domains: BTreeMap<String, PathBuf>,
    /// Revocation lists checked against client certificates.
    pub ca_crl: Option<PathBuf>,
    /// Versions and suites.
    #[serde(flatten)]
    pub policy: TlsPolicy,
}

/// A route's `upstream_tls` in mode `simple` or `mutual` (mode `disable` is no
/// `UpstreamTls` at all).
#[derive(Clone, Debug, Serialize)]
pub struct UpstreamTls {
    /// `simple` or `mutual`.
    pub mode: TlsMode,
    /// Client certificate presented upstream; set exactly in `mutual` mode.
    #[serde(flatten)]
    pub client: Option<CertKey>,
    /// CA bundle that verifies the server (with `trust_domains`, a server certificate
    /// without a SPIFFE ID); always present without `trust_domains`.
    pub ca: Option<PathBuf>,
    /// SPIFFE federation: trust domain -> CA bundle for server certificates whose
    /// SPIFFE ID names it ([`crate::trust`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub trust_domains: BTreeMap<String, PathBuf>,
    /// SNI sent and, unless `subject_alt_names` replace it, the name verified
    /// (default: the upstream host).
    #[serde(serialize_with = "values::server_name")]
    pub sni: ServerName<'static>,
    /// Secure naming: the server certificate must carry one of these.
    #[serde(serialize_with = "values::optional_patterns")]
    pub subject_alt_names: Option<Vec<Pattern>>,
    /// With `subject_alt_names`, also check the certificate against `sni`.
    pub verify_hostname: bool,
    /// An `{sni}` upstream without an explicit `sni`: each connection sends and
    /// verifies the name its client sent, and `sni` (`sni.invalid`) is not used.
    pub sni_from_client: bool,
    /// Versions and suites.
    #[serde(flatten)]
    pub policy: TlsPolicy,
}

/// A route's `downstream_tls`: its own server certificate.
#[derive(Clone, Debug, Serialize)]
pub struct DownstreamTls {
    /// The certificate presented for this route's hosts.
    #[serde(flatten)]
    pub credential: CertKey,
    /// CA that verifies clients. At `tcp` routes only an explicit `ca` (a Secret's
    /// ca.crt names the issuer of the *server* certificate, as cert-manager writes it);
    /// `None` there means the listener's CA. At database routes `ca` or the `dir`'s
    /// ca.crt, used in `mutual` mode.
    pub ca: Option<PathBuf>,
    /// Revocation lists checked against client certificates.
    pub ca_crl: Option<PathBuf>,
    /// Database routes: the in-protocol TLS mode as written (`None`: `mutual` when a CA
    /// is known, `simple` otherwise). Always `None` at `tcp` routes, where the
    /// listener's mode applies.
    pub mode: Option<TlsMode>,
}

/// One destination: the SNI hosts that select it and the upstream it connects to.
#[derive(Debug, Serialize)]
pub struct RouteConfig {
    /// Unique name, used in logs and by listeners' `route` / `default_route`.
    pub name: String,
    /// SNI host names that select this route at TLS listeners (exact, case-insensitive).
    pub hosts: Vec<String>,
    /// TLS listeners whose SNI table holds this route; all of them when absent.
    pub listeners: Option<Vec<String>>,
    /// Where it connects: the first endpoint of the lowest priority (the only one of
    /// the `upstream = "..."` form); names the destination in logs and metrics.
    pub upstream: HostPort,
    /// Every endpoint, in file order (one for the `upstream` form).
    pub endpoints: Vec<super::endpoints::Endpoint>,
    /// Passive outlier detection, when configured.
    pub outlier_detection: Option<super::endpoints::OutlierDetection>,
    /// Active health checks, when configured.
    pub health_check: Option<super::endpoints::HealthCheck>,
    /// Longest wait for one TCP connect to one upstream address.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Origination TLS; `None` means mode `disable` (plaintext, said explicitly in the
    /// file, or the ingress's default towards its in-cluster backend).
    pub upstream_tls: Option<UpstreamTls>,
    /// Server certificate this route presents, chosen by SNI or inside a database
    /// protocol.
    pub downstream_tls: Option<DownstreamTls>,
    /// Client identities allowed to use this route; empty: any client the listener's
    /// TLS accepted.
    #[serde(serialize_with = "values::patterns")]
    pub allow: Vec<Pattern>,
    /// A connection with no bytes either way for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `tcp`, or a database whose TLS is negotiated inside its protocol.
    pub protocol: Protocol,
    /// Database routes: client-side TLS inside the protocol, default applied
    /// (`required` with `downstream_tls`, `disabled` without); `disabled` at `tcp` routes.
    pub downstream_ssl_mode: SslMode,
    /// TCP keepalive on the upstream connections of this route.
    pub tcp_keepalive: TcpKeepalive,
    /// The PROXY protocol header written to the upstream, if any.
    pub send_proxy_protocol: Option<super::proxy::ProxyVersion>,
    /// Client address ranges allowed; empty: any.
    pub source_ranges: Vec<ipnet::IpNet>,
    /// HBONE origination: set when `transport = "hbone"`.
    pub hbone: Option<HboneRoute>,
}

/// How an HBONE route originates: its `CONNECT` authority and its pool's bounds.
#[derive(Clone, Debug, Serialize)]
pub struct HboneRoute {
    /// `:authority` of every `CONNECT` this route sends.
    pub authority: HostPort,
    /// Most streams at once on one pooled connection.
    pub max_streams: usize,
    /// A pooled connection without streams this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
}

impl RouteConfig {
    /// The client-side TLS mode of a database route, defaults applied.
    pub fn downstream_ssl_mode(&self) -> SslMode {
        self.downstream_ssl_mode
    }
}
