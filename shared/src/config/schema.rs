//! The file as written: what serde reads, before anything is checked.
//!
//! Fields here are as loose as the file (strings, options, as-written defaults);
//! [`super::validate`] turns them into the checked types of [`super::model`], reporting
//! every problem it finds. Unknown fields are not refused by serde but by
//! [`super::fields`], which reports all of them at once instead of the first.
//!
//! The small settings types at the end are already fully typed by serde, so the checked
//! configuration uses them as they are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One `[[listener]]` as written.
#[derive(Debug, Deserialize)]
pub struct RawListener {
    /// Unique name, used in logs and by routes' `listeners`.
    pub name: String,
    /// `ip:port` to bind; TLS listeners default to the role's port on all interfaces.
    pub address: Option<String>,
    /// TLS termination. Without it the listener is plain TCP and needs `route`.
    pub tls: Option<RawTls>,
    /// The one route every connection of a plain listener takes.
    pub route: Option<String>,
    /// At a TLS listener, the route for clients that send no SNI (refused otherwise).
    pub default_route: Option<String>,
    /// Longest wait for a client to finish its TLS handshake.
    #[serde(default = "default_handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Istio's PeerAuthentication mode at a TLS listener.
    #[serde(default)]
    pub peer_auth: PeerAuth,
    /// Most connections open at once; beyond it new ones are closed at accept. Without
    /// it, the listener's share of the open-file budget ([`crate::fdlimit`]).
    pub max_connections: Option<usize>,
    /// TCP keepalive on accepted client connections.
    #[serde(default)]
    pub tcp_keepalive: TcpKeepalive,
    /// Envoy's `access_log_flush_interval`: when set, a connection writes an access-log
    /// record when its relay starts and every interval while it runs (bytes since the
    /// last record), besides the one at close, and the byte metrics follow.
    #[serde(default, with = "humantime_serde")]
    pub access_log_flush_interval: Option<Duration>,
    /// At a `permissive` listener whose `default_route` speaks a server-first protocol
    /// (`mysql`): how long to wait for a client's first byte before taking its silence as
    /// a plaintext client waiting for the server's greeting (default 50ms).
    #[serde(default, with = "humantime_serde")]
    pub permissive_detection_window: Option<Duration>,
    /// Accept a PROXY protocol header (v1 or v2) from these trusted ranges only.
    pub proxy_protocol: Option<super::proxy::RawProxyProtocol>,
    /// `hbone`: a TLS listener that serves HTTP/2 `CONNECT` streams (Istio's HBONE, port
    /// 15008), each routed by its `:authority`; `direct` (the default): one connection
    /// per TLS handshake, routed by SNI.
    #[serde(default)]
    pub transport: Transport,
    /// After a reload that changed a CA bundle, trust domain or CRL, verify the peers of
    /// this listener's open connections again (the client's chain, and the server's on
    /// origination) and close those that no longer verify (default true).
    pub recheck_on_trust_change: Option<bool>,
    /// Whether this listener's idle connections may be shed under overload, idlest
    /// first ([`crate::overload`]; default true). False makes `max_connections` a hard
    /// cap: beyond it new connections are closed, whatever is idle.
    pub shed_idle_under_pressure: Option<bool>,
    /// Abuse limits: connection rates and concurrent connections per source address
    /// and per client identity, and PostgreSQL CancelRequests per source.
    #[serde(default)]
    pub limits: RawLimits,
}

/// A listener's `limits` as written; every rate is per second, and absent means
/// unlimited except CancelRequests.
#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    /// New connections per second from one source address.
    pub connections_per_second_per_source: Option<u32>,
    /// Connections one source (or identity) may open at once above its rate.
    pub burst: Option<u32>,
    /// Connections open at once from one source address.
    pub concurrent_per_source: Option<u32>,
    /// New connections per second presenting one client identity (TLS listeners).
    pub connections_per_second_per_identity: Option<u32>,
    /// Connections open at once presenting one client identity (TLS listeners).
    pub concurrent_per_identity: Option<u32>,
    /// PostgreSQL CancelRequests per second from one source address (default 10).
    pub cancel_requests_per_second_per_source: Option<u32>,
}

/// One `[[route]]` as written.
#[derive(Debug, Deserialize)]
pub struct RawRoute {
    /// Unique name, used in logs and by listeners' `route` / `default_route`.
    pub name: String,
    /// SNI host names that select this route at TLS listeners (exact, case-insensitive).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS listeners whose SNI table holds this route; all of them when absent.
    pub listeners: Option<Vec<String>>,
    /// `host:port`; the host is a DNS name (resolved, round robin) or an IP address.
    /// The one-endpoint form of `upstreams`.
    pub upstream: Option<String>,
    /// Several endpoints with priorities and weights (see [`super::endpoints`]).
    pub upstreams: Option<Vec<super::endpoints::RawEndpoint>>,
    /// Passive outlier detection per resolved address (Envoy's `outlier_detection`).
    pub outlier_detection: Option<super::endpoints::OutlierDetection>,
    /// Active health checks of every endpoint address.
    pub health_check: Option<super::endpoints::HealthCheck>,
    /// Longest wait for one TCP connect to one upstream address.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Origination TLS (Istio's DestinationRule `tls`).
    pub upstream_tls: Option<RawTls>,
    /// Server certificate this route presents at TLS listeners, chosen by SNI.
    pub downstream_tls: Option<RawTls>,
    /// Client identities allowed to use this route (see [`crate::authz`]).
    #[serde(default)]
    pub allow: Vec<String>,
    /// A connection with no bytes either way for this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// `tcp`, or a database whose TLS is negotiated inside its protocol.
    #[serde(default)]
    pub protocol: Protocol,
    /// Database routes at plain listeners: whether clients may or must upgrade to TLS.
    pub downstream_ssl_mode: Option<SslMode>,
    /// TCP keepalive on the upstream connections of this route.
    #[serde(default)]
    pub tcp_keepalive: TcpKeepalive,
    /// Write a PROXY protocol header of this version to the upstream.
    pub send_proxy_protocol: Option<super::proxy::ProxyVersion>,
    /// Client address ranges allowed on this route (the PROXY header's source where one
    /// was accepted); any when empty.
    #[serde(default)]
    pub source_ranges: Vec<String>,
    /// `hbone`: each client connection becomes one HTTP/2 `CONNECT` stream over a pooled
    /// mutual-TLS connection to `upstream` (a remote HBONE listener); `direct` (the
    /// default): one TLS connection per client connection.
    #[serde(default)]
    pub transport: Transport,
    /// HBONE routes: the `:authority` of each `CONNECT` (`host:port` of the destination
    /// behind the remote gateway, as Istio sends it).
    pub authority: Option<String>,
    /// HBONE routes: most streams at once on one pooled connection (default 100, like
    /// Envoy's); a new pool connection is opened when every one is full.
    pub hbone_max_streams: Option<usize>,
    /// HBONE routes: a pooled connection without streams for this long is closed
    /// (default 60s).
    #[serde(default, with = "humantime_serde")]
    pub hbone_idle_timeout: Option<Duration>,
}

/// A `tls`, `upstream_tls` or `downstream_tls` table as written. Credential files follow
/// the Kubernetes Secret layout: `dir` holds `tls.crt`, `tls.key` and `ca.crt`; `cert`,
/// `key`, `ca` override single files.
#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    /// `mutual`, `simple` or `disable`.
    pub mode: Option<TlsMode>,
    /// Directory in Secret layout.
    pub dir: Option<PathBuf>,
    /// Certificate chain, leaf first (PEM).
    pub cert: Option<PathBuf>,
    /// Private key for `cert` (PEM).
    pub key: Option<PathBuf>,
    /// One PEM file holding the private key and the certificate chain together, as a
    /// Kubernetes pod certificate (`credentialBundlePath`) or cert-manager's
    /// csi-driver-spiffe writes it; read in one go, so key and chain always match.
    pub bundle: Option<PathBuf>,
    /// CA bundle to verify the peer (PEM). With `trust_domains`: the bundle for peer
    /// certificates without a SPIFFE ID.
    pub ca: Option<PathBuf>,
    /// SPIFFE trust-domain federation: trust domain -> the CA bundle (PEM) that peer
    /// certificates whose SPIFFE ID names that domain must chain to.
    pub trust_domains: Option<std::collections::BTreeMap<String, PathBuf>>,
    /// SNI and verified name on origination.
    pub sni: Option<String>,
    /// Lowest TLS version accepted.
    pub min_version: Option<TlsVersion>,
    /// Cipher suites in preference order, by rustls name.
    pub cipher_suites: Option<Vec<String>>,
    /// Certificate revocation list(s), PEM.
    pub ca_crl: Option<PathBuf>,
    /// On origination, names the server certificate must carry (one of them).
    pub subject_alt_names: Option<Vec<String>>,
    /// On origination, also check the certificate against `sni`.
    pub verify_hostname: Option<bool>,
}

/// Credential file paths after `dir` defaults are applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialPaths {
    /// Certificate chain, if any.
    pub cert: Option<PathBuf>,
    /// Private key, if any.
    pub key: Option<PathBuf>,
    /// CA bundle, if any.
    pub ca: Option<PathBuf>,
}

impl RawTls {
    /// Resolves the Secret-layout directory into file paths; explicit paths win.
    pub fn paths(&self) -> CredentialPaths {
        let in_dir = |name: &str| self.dir.as_ref().map(|d| d.join(name));
        CredentialPaths {
            cert: self.cert.clone().or_else(|| self.bundle.clone()).or_else(|| in_dir("tls.crt")),
            key: self.key.clone().or_else(|| self.bundle.clone()).or_else(|| in_dir("tls.key")),
            ca: self.ca.clone().or_else(|| in_dir("ca.crt")),
        }
    }
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(3600)
}

/// TCP keepalive and the matching user timeout (Istio's DestinationRule
/// `connectionPool.tcp.tcpKeepalive`): finds a peer that vanished without a FIN (a
/// partitioned network, a node that died, a NAT that forgot the flow) within
/// `time + interval * probes`, long before the idle timeout would. The same bound is set
/// as `TCP_USER_TIMEOUT`, so a connection with unacknowledged data in flight (a bulk
/// stream, where keepalive probes are never sent) is given up on as quickly.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct TcpKeepalive {
    /// Idle time before the first probe.
    #[serde(default = "default_keepalive_time", with = "humantime_serde")]
    pub time: Duration,
    /// Time between probes.
    #[serde(default = "default_keepalive_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    #[serde(default = "default_keepalive_probes")]
    pub probes: u32,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive { time: default_keepalive_time(), interval: default_keepalive_interval(), probes: default_keepalive_probes() }
    }
}

impl TcpKeepalive {
    /// How long a silent peer can go unnoticed: the last probe's deadline.
    pub fn bound(&self) -> Duration {
        self.time + self.interval * self.probes
    }
}

fn default_keepalive_time() -> Duration {
    Duration::from_secs(60)
}

fn default_keepalive_interval() -> Duration {
    Duration::from_secs(10)
}

fn default_keepalive_probes() -> u32 {
    9
}

/// Whether a TLS listener also takes plaintext (Istio PeerAuthentication `mtls.mode`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PeerAuth {
    /// TLS only (with client certificates in `mutual` mode).
    #[default]
    Strict,
    /// TLS and plaintext on the same port, told apart by the first byte; plaintext
    /// clients take the listener's `default_route`. For migrations.
    Permissive,
    /// Plaintext only, to `default_route`; the listener's TLS settings are not used.
    Disable,
}

/// How a connection crosses between the gateways: a TLS connection of its own, or a
/// stream inside a shared HTTP/2 connection (HBONE).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One TLS (or plain) connection per client connection.
    #[default]
    Direct,
    /// HTTP/2 `CONNECT` streams inside long-lived mutual-TLS connections (Istio's HBONE).
    Hbone,
}

/// Lowest TLS version a side accepts.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// What a route's bytes are.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque bytes; TLS, if any, starts at the first byte.
    #[default]
    Tcp,
    /// MySQL/MariaDB: TLS starts after the server greeting, on the client's SSL request.
    Mysql,
    /// PostgreSQL: TLS starts after an SSLRequest answered `S`.
    Postgres,
}

impl Protocol {
    /// Whether the server speaks first (MySQL's greeting): a client of it sends nothing
    /// until it has heard the server.
    pub fn server_first(self) -> bool {
        match self {
            Protocol::Mysql => true,
            Protocol::Tcp | Protocol::Postgres => false,
        }
    }

    /// Name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Mysql => "mysql",
            Protocol::Postgres => "postgres",
        }
    }
}

/// Client-side TLS inside a database protocol, named like MySQL Router's modes.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SslMode {
    /// TLS is not offered; clients stay plaintext.
    Disabled,
    /// TLS is offered; plaintext clients are still served.
    Preferred,
    /// TLS is offered and plaintext clients are refused with a protocol error.
    Required,
}

/// Istio's TLS modes, spelled in lower case.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP. Only allowed where it is explicit, and logged as a warning at start.
    Disable,
    /// Server-authenticated TLS.
    Simple,
    /// Both sides authenticate with certificates.
    Mutual,
}

impl std::fmt::Display for TlsMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Simple => "simple",
            TlsMode::Mutual => "mutual",
        })
    }
}

/// Where upstream names are looked up.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct ResolverSettings {
    /// DNS servers (`ip:port`); the system's `/etc/resolv.conf` when empty.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

/// The admin HTTP listener (`[admin]`, Envoy's and Istio's 15000): config dump and
/// log level, besides the health and metrics paths. Loopback unless `allow_remote`.
#[derive(Debug, Deserialize, Serialize)]
pub struct AdminSettings {
    /// Where it listens; `127.0.0.1:15000` by default.
    #[serde(default = "default_admin_address")]
    pub address: SocketAddr,
    /// Set to false to run without an admin port.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Allows a non-loopback `address` (anyone who reaches it can read the
    /// configuration and change the log level); logged as a warning at start.
    #[serde(default)]
    pub allow_remote: bool,
}

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings { address: default_admin_address(), enabled: true, allow_remote: false }
    }
}

fn default_admin_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 15000))
}

/// The health port kubelets probe (`[health]`, Istio's 15021): `/healthz/ready` and
/// `/healthz/live` only, so it is safe to expose.
#[derive(Debug, Deserialize, Serialize)]
pub struct HealthSettings {
    /// Where it listens; `0.0.0.0:15021` by default.
    #[serde(default = "default_health_address")]
    pub address: SocketAddr,
    /// Set to false to serve the probes on the admin port only.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings { address: default_health_address(), enabled: true }
    }
}

fn default_health_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15021))
}

/// The Prometheus scrape port (`[metrics]`, Istio's 15090): `/stats/prometheus` (and
/// `/metrics`) only.
#[derive(Debug, Deserialize, Serialize)]
pub struct MetricsSettings {
    /// Where it listens; `0.0.0.0:15090` by default.
    #[serde(default = "default_metrics_address")]
    pub address: SocketAddr,
    /// Set to false to serve the metrics on the admin port only.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings { address: default_metrics_address(), enabled: true }
    }
}

fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 15090))
}

fn default_true() -> bool {
    true
}

/// OpenTelemetry export (`[telemetry]`); read at start only.
#[derive(Debug, Deserialize, Serialize)]
pub struct TelemetrySettings {
    /// OTLP/HTTP collector base URL, e.g. `http://otel-collector:4318`; one span per
    /// connection goes to `/v1/traces`. No export when absent.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans and metrics; default `strait-egress` / `strait-ingress`.
    pub service_name: Option<String>,
    /// How often metrics are pushed to the collector.
    #[serde(default = "default_metrics_interval", with = "humantime_serde")]
    pub metrics_interval: Duration,
    /// This gateway's workload, for the labels of Istio's standard metrics
    /// (`source_workload` at the egress, `destination_workload` at the ingress); default:
    /// `$ISTIO_META_WORKLOAD_NAME`, else `$POD_NAME` without its generated suffixes.
    pub workload_name: Option<String>,
    /// Its namespace; default `$POD_NAMESPACE`.
    pub workload_namespace: Option<String>,
    /// Its canonical service (`service.istio.io/canonical-name`); default
    /// `$CANONICAL_SERVICE`, else the workload name.
    pub canonical_service: Option<String>,
    /// Its canonical revision (`service.istio.io/canonical-revision`); default
    /// `$CANONICAL_REVISION`, else `latest`.
    pub canonical_revision: Option<String>,
    /// The cluster it runs in (`source_cluster` / `destination_cluster`); default
    /// `$ISTIO_META_CLUSTER_ID`.
    pub cluster_id: Option<String>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            service_name: None,
            metrics_interval: default_metrics_interval(),
            workload_name: None,
            workload_namespace: None,
            canonical_service: None,
            canonical_revision: None,
            cluster_id: None,
        }
    }
}

fn default_metrics_interval() -> Duration {
    Duration::from_secs(15)
}

/// Process-wide settings (`[process]`).
#[derive(Debug, Deserialize, Serialize)]
pub struct ProcessSettings {
    /// After SIGTERM, how long the listeners keep accepting (readiness already fails),
    /// so connections Kubernetes still routes here during endpoint removal are served:
    /// Istio's `terminationDrainDuration`. Then they close and `drain_timeout` starts.
    #[serde(default = "default_drain_delay", with = "humantime_serde")]
    pub drain_delay: Duration,
    /// After the drain delay, how long open connections may run before they are cut.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A certificate expiring within this window is logged as a warning at every load
    /// (cert-manager renews 30 days before expiry; a certificate this close missed it).
    #[serde(default = "default_cert_warning_window", with = "humantime_serde")]
    pub cert_warning_window: Duration,
}

impl Default for ProcessSettings {
    fn default() -> Self {
        ProcessSettings { drain_delay: default_drain_delay(), drain_timeout: default_drain_timeout(), cert_warning_window: default_cert_warning_window() }
    }
}

fn default_drain_delay() -> Duration {
    Duration::from_secs(5)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_cert_warning_window() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
