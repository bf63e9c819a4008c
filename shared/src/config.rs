//! The configuration file: its schema, role defaults and validation.
//!
//! One schema serves both binaries, shaped for operators who know Istio: a listener is a
//! Gateway server (a port, optional TLS termination), a route is a ServiceEntry plus its
//! DestinationRule (SNI hosts, an upstream, origination TLS). Everything that can be
//! checked without touching the network is checked here, and every error names the file,
//! the line and column of the entry, and the field.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_spanned::Spanned;

/// Which binary is reading the file; it decides defaults and what is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `strait-egress`: plain or mesh-mTLS in, mTLS origination out.
    Egress,
    /// `strait-ingress`: mTLS in, plain (or TLS) to the in-cluster backend.
    Ingress,
}

impl Role {
    /// Port a TLS listener binds when it names no address (Istio's egress and the
    /// tutorial's ingress ports).
    pub fn default_tls_port(self) -> u16 {
        match self {
            Role::Egress => 15443,
            Role::Ingress => 13306,
        }
    }

    /// Name used in logs and process titles.
    pub fn name(self) -> &'static str {
        match self {
            Role::Egress => "egress",
            Role::Ingress => "ingress",
        }
    }
}

/// A configuration error, located as precisely as the file allows.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the configuration: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    /// TOML syntax, an unknown field, or a value of the wrong type.
    #[error("{file}:{line}:{column}: {message}")]
    Parse { file: PathBuf, line: usize, column: usize, message: String },
    /// The file parsed but says something inconsistent or unsafe.
    #[error("{file}:{line}:{column}: {field}: {message}")]
    Invalid { file: PathBuf, line: usize, column: usize, field: String, message: String },
}

/// The whole file as written (after role defaults are applied by [`Config::load`]).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Ports to accept on (`[[listener]]`).
    #[serde(default, rename = "listener")]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Where accepted streams go (`[[route]]`).
    #[serde(default, rename = "route")]
    pub routes: Vec<Spanned<RouteConfig>>,
    /// How upstream names are resolved.
    #[serde(default)]
    pub resolver: ResolverSettings,
    /// Process-wide behaviour: shutdown and certificate warnings.
    #[serde(default)]
    pub process: ProcessSettings,
    /// The admin HTTP port (config dump, log level; loopback by default).
    #[serde(default)]
    pub admin: AdminSettings,
    /// The health port kubelets probe (Istio's 15021).
    #[serde(default = "HttpPortSettings::health", deserialize_with = "HttpPortSettings::health_table")]
    pub health: HttpPortSettings,
    /// The Prometheus scrape port (Istio's 15090 `/stats/prometheus`).
    #[serde(default = "HttpPortSettings::metrics", deserialize_with = "HttpPortSettings::metrics_table")]
    pub metrics: HttpPortSettings,
    /// OpenTelemetry export.
    #[serde(default)]
    pub telemetry: TelemetrySettings,
    /// File the configuration came from; every later error points back to it.
    #[serde(skip_deserializing)]
    pub path: PathBuf,
    /// The file's text, kept to turn byte spans into line and column.
    #[serde(skip)]
    source: String,
}

/// One port the gateway accepts on.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Unique name, used in logs and by routes' `listeners`.
    pub name: String,
    /// Address to bind; TLS listeners default to the role's port on all interfaces.
    pub address: Option<SocketAddr>,
    /// TLS termination. Without it the listener is plain TCP and needs `route`.
    pub tls: Option<TlsConfig>,
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
    /// Most connections open at once; beyond it new ones are closed at accept.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP keepalive on accepted client connections.
    #[serde(default)]
    pub tcp_keepalive: TcpKeepalive,
    /// Envoy's `access_log_flush_interval`: when set, a connection writes an access-log
    /// record when its relay starts and every interval while it runs (bytes since the
    /// last record), besides the one at close, and the byte metrics follow.
    #[serde(default, with = "humantime_serde")]
    pub access_log_flush_interval: Option<Duration>,
}

/// TCP keepalive and the matching user timeout (Istio's DestinationRule
/// `connectionPool.tcp.tcpKeepalive`): finds a peer that vanished without a FIN (a
/// partitioned network, a node that died, a NAT that forgot the flow) within
/// `time + interval * probes`, long before the idle timeout would. The same bound is set
/// as `TCP_USER_TIMEOUT`, so a connection with unacknowledged data in flight (a bulk
/// stream, where keepalive probes are never sent) is given up on as quickly.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
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

/// One destination: the SNI hosts that select it and the upstream it connects to.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in logs and by listeners' `route` / `default_route`.
    pub name: String,
    /// SNI host names that select this route at TLS listeners (exact, case-insensitive).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// TLS listeners whose SNI table holds this route; all of them when absent.
    pub listeners: Option<Vec<String>>,
    /// `host:port`; the host is a DNS name (resolved, round robin) or an IP address.
    pub upstream: String,
    /// Longest wait for one TCP connect to one upstream address.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Origination TLS (Istio's DestinationRule `tls`).
    pub upstream_tls: Option<TlsConfig>,
    /// Server certificate this route presents at TLS listeners, chosen by SNI
    /// (overrides the listener's `tls` credential for this route's hosts).
    pub downstream_tls: Option<TlsConfig>,
    /// Client identities allowed to use this route (see [`crate::authz`]); empty: any
    /// client the listener's TLS accepted.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A connection with no bytes either way for this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The application protocol: `tcp` (bytes, TLS from the first byte) or a database
    /// whose TLS is negotiated inside its protocol (`mysql`, `postgres`): then
    /// `upstream_tls` applies after the protocol's TLS request.
    #[serde(default)]
    pub protocol: Protocol,
    /// Database routes at plain listeners: whether the client may or must upgrade to TLS
    /// inside the protocol (MySQL Router's `client_ssl_mode`). Default: `required` when
    /// `downstream_tls` is set, `disabled` otherwise.
    pub downstream_ssl_mode: Option<SslMode>,
    /// TCP keepalive on the upstream connections of this route.
    #[serde(default)]
    pub tcp_keepalive: TcpKeepalive,
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

/// TLS settings, used for termination (listener `tls`, route `downstream_tls`) and
/// origination (route `upstream_tls`). Credential files follow the Kubernetes Secret
/// layout: `dir` holds `tls.crt`, `tls.key` and `ca.crt`; `cert`, `key`, `ca` override
/// single files.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// `mutual` (both sides present certificates), `simple` (server only), `disable`.
    pub mode: Option<TlsMode>,
    /// Directory in Secret layout (`tls.crt`, `tls.key`, `ca.crt`).
    pub dir: Option<PathBuf>,
    /// Certificate chain, leaf first (PEM).
    pub cert: Option<PathBuf>,
    /// Private key for `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
    /// CA bundle to verify the peer (PEM; may hold a root and intermediates).
    pub ca: Option<PathBuf>,
    /// SNI and verified name on origination; defaults to the upstream host.
    pub sni: Option<String>,
    /// Lowest TLS version accepted: "1.2" (default) or "1.3".
    #[serde(default)]
    pub min_version: TlsVersion,
    /// Cipher suites in preference order (rustls names, e.g. "TLS13_AES_128_GCM_SHA256");
    /// default: the provider's list.
    pub cipher_suites: Option<Vec<String>>,
    /// Certificate revocation list(s), PEM, checked against client certificates.
    pub ca_crl: Option<PathBuf>,
    /// On origination, names the server certificate must carry (one of them): SPIFFE
    /// URIs or DNS names, like DestinationRule `subjectAltNames`. When set, they replace
    /// the check of `sni` against the certificate unless `verify_hostname = true`.
    pub subject_alt_names: Option<Vec<String>>,
    /// On origination, also check the certificate against `sni` when
    /// `subject_alt_names` is set.
    pub verify_hostname: Option<bool>,
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

/// Where upstream names are looked up.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSettings {
    /// DNS servers (`ip:port`); the system's `/etc/resolv.conf` when empty.
    #[serde(default)]
    pub nameservers: Vec<SocketAddr>,
}

/// The admin HTTP listener (`[admin]`, Envoy's and Istio's 15000): config dump and
/// log level, besides the health and metrics paths. Loopback unless `allow_remote`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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

/// A port that serves only what is safe to expose to the cluster: `[health]`
/// (`/healthz/ready`, `/healthz/live`) or `[metrics]` (`/stats/prometheus`, `/metrics`).
/// Each table has its own default address, so either field may be left out
/// (`[metrics] enabled = false` alone is a whole table).
#[derive(Debug, Serialize)]
pub struct HttpPortSettings {
    /// Where it listens.
    pub address: SocketAddr,
    /// Set to false to serve it on the admin port only.
    #[serde(default = "default_true")]
    pub enabled: bool,
}

impl HttpPortSettings {
    /// `0.0.0.0:15021`, Istio's health port.
    pub fn health() -> HttpPortSettings {
        HttpPortSettings { address: SocketAddr::from(([0, 0, 0, 0], 15021)), enabled: true }
    }

    /// `0.0.0.0:15090`, Istio's Envoy Prometheus port.
    pub fn metrics() -> HttpPortSettings {
        HttpPortSettings { address: SocketAddr::from(([0, 0, 0, 0], 15090)), enabled: true }
    }

    fn health_table<'de, D: serde::Deserializer<'de>>(table: D) -> Result<HttpPortSettings, D::Error> {
        HttpPortTable::deserialize(table).map(|t| t.over(HttpPortSettings::health()))
    }

    fn metrics_table<'de, D: serde::Deserializer<'de>>(table: D) -> Result<HttpPortSettings, D::Error> {
        HttpPortTable::deserialize(table).map(|t| t.over(HttpPortSettings::metrics()))
    }
}

/// `[health]` or `[metrics]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpPortTable {
    address: Option<SocketAddr>,
    enabled: Option<bool>,
}

impl HttpPortTable {
    /// What the table says, the port's defaults for what it leaves out.
    fn over(self, defaults: HttpPortSettings) -> HttpPortSettings {
        HttpPortSettings { address: self.address.unwrap_or(defaults.address), enabled: self.enabled.unwrap_or(defaults.enabled) }
    }
}

fn default_true() -> bool {
    true
}

/// OpenTelemetry export (`[telemetry]`); read at start only.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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

impl RouteConfig {
    /// The client-side TLS mode of a database route, defaults applied.
    pub fn downstream_ssl_mode(&self) -> SslMode {
        self.downstream_ssl_mode.unwrap_or(if self.downstream_tls.is_some() { SslMode::Required } else { SslMode::Disabled })
    }
}

impl TlsConfig {
    /// Resolves the Secret-layout directory into file paths; explicit paths win.
    pub fn paths(&self) -> CredentialPaths {
        let in_dir = |name: &str| self.dir.as_ref().map(|d| d.join(name));
        CredentialPaths {
            cert: self.cert.clone().or_else(|| in_dir("tls.crt")),
            key: self.key.clone().or_else(|| in_dir("tls.key")),
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

/// Upper bound for `max_connections` (far above what one process can hold open).
const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

fn default_max_connections() -> usize {
    16384
}

/// Splits `host:port` (IPv6 in brackets) without resolving anything.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() || host.contains(':') && !s.starts_with('[') {
        return None;
    }
    Some((host.to_ascii_lowercase(), port.parse().ok()?))
}

impl Config {
    /// Reads, parses and validates `path` for `role`.
    pub fn load(path: &Path, role: Role) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Self::parse(path, text, role)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: String, role: Role) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(&text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(&text, s.start)).unwrap_or((0, 0));
            ConfigError::Parse { file: path.to_owned(), line, column, message: e.message().to_owned() }
        })?;
        config.path = path.to_owned();
        config.source = text;
        config.apply_role_defaults(role);
        config.validate(role)?;
        Ok(config)
    }

    /// Fills in what the role implies: TLS listener ports, and plain backends at the ingress.
    fn apply_role_defaults(&mut self, role: Role) {
        for l in &mut self.listeners {
            let l = l.get_mut();
            if l.address.is_none() && l.tls.is_some() {
                l.address = Some(SocketAddr::from(([0, 0, 0, 0], role.default_tls_port())));
            }
        }
        if role == Role::Ingress {
            for r in &mut self.routes {
                r.get_mut().upstream_tls.get_or_insert_with(|| TlsConfig { mode: Some(TlsMode::Disable), ..TlsConfig::default() });
            }
        }
    }

    /// Builds an [`ConfigError::Invalid`] pointing at the start of `span`.
    fn invalid(&self, span: std::ops::Range<usize>, field: String, message: String) -> ConfigError {
        let (line, column) = line_col(&self.source, span.start);
        ConfigError::Invalid { file: self.path.clone(), line, column, field, message }
    }

    fn validate(&self, role: Role) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(self.invalid(0..0, "listener".into(), "no [[listener]] is defined".into()));
        }
        if self.admin.enabled && !self.admin.address.ip().is_loopback() && !self.admin.allow_remote {
            return Err(self.invalid(0..0, "admin.address".into(), format!("{} is reachable from other hosts, and the admin port shows the configuration and changes the log level: bind 127.0.0.1, or set admin.allow_remote = true (probes and scrapes have [health] and [metrics])", self.admin.address)));
        }
        let route_names = self.unique_names(self.routes.iter().map(|r| (r.span(), r.get_ref().name.as_str())), "route")?;
        let listener_names = self.unique_names(self.listeners.iter().map(|l| (l.span(), l.get_ref().name.as_str())), "listener")?;
        let mut addresses = HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            let at = |field: &str| format!("listener[{i}] ({}).{field}", l.get_ref().name);
            self.validate_listener(role, l, &route_names, &at)?;
            let addr = l.get_ref().address.expect("defaults gave TLS listeners an address");
            // Port 0 asks the kernel for a free port: any number of listeners may.
            if addr.port() != 0 && !addresses.insert(addr) {
                return Err(self.invalid(l.span(), at("address"), format!("{addr} is already bound by another listener")));
            }
        }
        let mut hosts: HashMap<(String, String), &str> = HashMap::new();
        for (i, r) in self.routes.iter().enumerate() {
            let route = r.get_ref();
            let at = |field: &str| format!("route[{i}] ({}).{field}", route.name);
            self.validate_route(r, &listener_names, &at)?;
            for host in &route.hosts {
                for listener in self.tls_listeners_of(route) {
                    let key = (listener.to_owned(), host.to_ascii_lowercase());
                    if let Some(other) = hosts.insert(key, &route.name) {
                        return Err(self.invalid(
                            r.span(),
                            at("hosts"),
                            format!(
                                "SNI host {host:?} is already claimed by route {other:?} at listener {listener:?}; each host selects one route per listener"
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn unique_names<'a>(&self, names: impl Iterator<Item = (std::ops::Range<usize>, &'a str)>, kind: &str) -> Result<HashSet<&'a str>, ConfigError> {
        let mut seen = HashSet::new();
        for (i, (span, name)) in names.enumerate() {
            if name.is_empty() {
                return Err(self.invalid(span, format!("{kind}[{i}].name"), "must not be empty".into()));
            }
            if !seen.insert(name) {
                return Err(self.invalid(span, format!("{kind}[{i}].name"), format!("{kind} name {name:?} is used twice")));
            }
        }
        Ok(seen)
    }

    /// Names of the TLS listeners whose SNI table holds `route`.
    pub fn tls_listeners_of<'a>(&'a self, route: &'a RouteConfig) -> impl Iterator<Item = &'a str> + 'a {
        self.listeners
            .iter()
            .map(|l| l.get_ref())
            .filter(|l| l.tls.is_some())
            .filter(move |l| route.listeners.as_ref().is_none_or(|names| names.contains(&l.name)))
            .map(|l| l.name.as_str())
    }

    fn validate_listener(&self, role: Role, l: &Spanned<ListenerConfig>, routes: &HashSet<&str>, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let span = l.span();
        let listener = l.get_ref();
        let err = |field: &str, msg: String| self.invalid(span.clone(), at(field), msg);
        let known = |name: &String, field: &str| {
            if routes.contains(name.as_str()) {
                Ok(())
            } else {
                Err(err(field, format!("no route is named {name:?}")))
            }
        };
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&listener.max_connections) {
            return Err(err("max_connections", format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}")));
        }
        if listener.handshake_timeout.is_zero() {
            return Err(err("handshake_timeout", "must be more than 0 (it bounds how long a stranger can hold a connection)".into()));
        }
        validate_keepalive(&listener.tcp_keepalive).map_err(|(field, msg)| err(field, msg))?;
        if listener.access_log_flush_interval.is_some_and(|every| every < Duration::from_millis(100)) {
            return Err(err("access_log_flush_interval", "must be at least 100ms (each record is a log line per connection)".into()));
        }
        match &listener.tls {
            None => {
                let in_protocol_tls = |name: &String| {
                    self.routes
                        .iter()
                        .map(|r| r.get_ref())
                        .any(|r| &r.name == name && r.protocol != Protocol::Tcp && r.downstream_ssl_mode() != SslMode::Disabled)
                };
                if role == Role::Ingress && !listener.route.as_ref().is_some_and(in_protocol_tls) {
                    return Err(err("tls", "an ingress listener must terminate TLS: add tls = { mode = \"mutual\", dir = ... }, or route to a database route that negotiates TLS inside its protocol (downstream_tls)".into()));
                }
                if listener.address.is_none() {
                    return Err(err("address", "a plain listener needs an address, e.g. \"0.0.0.0:3306\"".into()));
                }
                let Some(route) = &listener.route else {
                    return Err(err("route", "a plain listener cannot read SNI: name the one route it serves".into()));
                };
                known(route, "route")?;
                let no_identity = |r: &RouteConfig| r.protocol == Protocol::Tcp || r.downstream_ssl_mode() != SslMode::Required;
                if self.routes.iter().any(|r| &r.get_ref().name == route && !r.get_ref().allow.is_empty() && no_identity(r.get_ref())) {
                    return Err(err(
                        "route",
                        format!("route {route:?} has an `allow` list, but a plain listener has no client identity to check: it would refuse everyone"),
                    ));
                }
                if listener.default_route.is_some() {
                    return Err(err("default_route", "only TLS listeners have a default route; a plain listener uses `route`".into()));
                }
                if listener.peer_auth != PeerAuth::Strict {
                    return Err(err("peer_auth", "a plain listener takes plaintext anyway; peer_auth applies to TLS listeners".into()));
                }
            }
            Some(tls) => {
                if listener.route.is_some() {
                    return Err(err("route", "a TLS listener routes by SNI: use `default_route` for clients without SNI".into()));
                }
                if let Some(d) = &listener.default_route {
                    known(d, "default_route")?;
                }
                if listener.peer_auth != PeerAuth::Strict && listener.default_route.is_none() {
                    return Err(err(
                        "default_route",
                        "plaintext clients cannot send SNI: peer_auth \"permissive\" or \"disable\" needs the route they take".into(),
                    ));
                }
                self.validate_tls_policy(tls, &|field, msg| err(field, msg), "tls")?;
                if tls.subject_alt_names.is_some() || tls.verify_hostname.is_some() {
                    return Err(err("tls.subject_alt_names", "server names are checked on origination; at a listener use a route's `allow`".into()));
                }
                match tls.mode {
                    Some(TlsMode::Mutual | TlsMode::Simple) => {}
                    Some(TlsMode::Disable) => {
                        return Err(err(
                            "tls.mode",
                            "a listener with `tls` terminates TLS: use \"mutual\" or \"simple\", or remove `tls` for a plain listener".into(),
                        ))
                    }
                    None => return Err(err("tls.mode", "missing: \"mutual\" (client certificates required) or \"simple\"".into())),
                }
                if tls.sni.is_some() {
                    return Err(err("tls.sni", "SNI is chosen by the client at a listener; `sni` belongs in a route's upstream_tls".into()));
                }
                let p = tls.paths();
                if p.cert.is_some() != p.key.is_some() {
                    return Err(err("tls", "give both a certificate and its key (or `dir` holding tls.crt and tls.key)".into()));
                }
                let routes_with_allow = self.routes.iter().map(|r| r.get_ref()).filter(|r| !r.allow.is_empty());
                if tls.mode == Some(TlsMode::Simple) {
                    if let Some(r) = routes_with_allow.into_iter().find(|r| self.tls_listeners_of(r).any(|n| n == listener.name)) {
                        return Err(err(
                            "tls.mode",
                            format!("route {:?} has an `allow` list, but mode \"simple\" asks no client certificate: use \"mutual\"", r.name),
                        ));
                    }
                }
                if tls.mode == Some(TlsMode::Mutual) && p.ca.is_none() {
                    return Err(err("tls.ca", "mode \"mutual\" verifies client certificates: give `ca` (or `dir` holding ca.crt)".into()));
                }
            }
        }
        Ok(())
    }

    fn validate_route(&self, r: &Spanned<RouteConfig>, listeners: &HashSet<&str>, at: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let span = r.span();
        let route = r.get_ref();
        let err = |field: &str, msg: String| self.invalid(span.clone(), at(field), msg);
        if route.connect_timeout.is_zero() || route.idle_timeout.is_zero() {
            let field = if route.connect_timeout.is_zero() { "connect_timeout" } else { "idle_timeout" };
            return Err(err(field, "must be more than 0 (a zero timeout would close every connection at once)".into()));
        }
        validate_keepalive(&route.tcp_keepalive).map_err(|(field, msg)| err(field, msg))?;
        if split_host_port(&route.upstream).is_none() {
            return Err(err("upstream", format!("{:?} is not host:port", route.upstream)));
        }
        for name in route.listeners.iter().flatten() {
            if !listeners.contains(name.as_str()) {
                let mut known: Vec<&str> = listeners.iter().copied().collect();
                known.sort_unstable();
                return Err(err("listeners", format!("no listener is named {name:?} (listeners: {})", known.join(", "))));
            }
        }
        if let Some(host) = route.hosts.iter().find(|h| h.is_empty() || h.contains(':') || h.contains('*')) {
            return Err(err("hosts", format!("{host:?} is not an exact DNS name (no ports, no wildcards)")));
        }
        match &route.upstream_tls {
            None => {
                return Err(err(
                    "upstream_tls",
                    "the egress originates TLS: add upstream_tls = { mode = \"mutual\", dir = ... } or, to send plaintext on purpose, mode = \"disable\""
                        .into(),
                ));
            }
            Some(tls) => {
                let p = tls.paths();
                match tls.mode {
                    None => return Err(err("upstream_tls.mode", "missing: \"mutual\", \"simple\" or \"disable\"".into())),
                    Some(TlsMode::Disable) => {
                        if p != CredentialPaths::default() || tls.sni.is_some() {
                            return Err(err(
                                "upstream_tls",
                                "mode \"disable\" sends plaintext: remove the credential fields or pick \"simple\"/\"mutual\"".into(),
                            ));
                        }
                    }
                    Some(mode) => {
                        if p.ca.is_none() {
                            return Err(err("upstream_tls.ca", "origination verifies the server: give `ca` (or `dir` holding ca.crt)".into()));
                        }
                        if mode == TlsMode::Mutual && (p.cert.is_none() || p.key.is_none()) {
                            return Err(err(
                                "upstream_tls",
                                "mode \"mutual\" presents a client certificate: give `cert` and `key` (or `dir` holding tls.crt and tls.key)".into(),
                            ));
                        }
                    }
                }
            }
        }
        for pattern in &route.allow {
            crate::authz::Pattern::parse(pattern).map_err(|e| err("allow", e.to_string()))?;
        }
        if let Some(tls) = &route.upstream_tls {
            self.validate_tls_policy(tls, &|field, msg| err(field, msg), "upstream_tls")?;
            if tls.ca_crl.is_some() {
                return Err(err("upstream_tls.ca_crl", "revocation lists apply to client certificates: set ca_crl on the listener's tls".into()));
            }
            if tls.verify_hostname.is_some() && tls.subject_alt_names.is_none() {
                return Err(err(
                    "upstream_tls.verify_hostname",
                    "only meaningful with subject_alt_names (without them the host name is always verified)".into(),
                ));
            }
        }
        if let Some(tls) = &route.downstream_tls {
            if tls.subject_alt_names.is_some() || tls.verify_hostname.is_some() {
                return Err(err(
                    "downstream_tls.subject_alt_names",
                    "server names are checked on origination (upstream_tls); clients are restricted with `allow`".into(),
                ));
            }
            if tls.cipher_suites.is_some() || tls.min_version != TlsVersion::default() {
                return Err(err("downstream_tls", "versions and cipher suites are the listener's: set them in the listener's tls".into()));
            }
        }
        if route.protocol == Protocol::Tcp && route.downstream_ssl_mode.is_some() {
            return Err(err("downstream_ssl_mode", "only database routes (protocol = \"mysql\" or \"postgres\") negotiate TLS inside the protocol".into()));
        }
        if route.protocol != Protocol::Tcp {
            let wants_tls = route.downstream_ssl_mode.is_some_and(|m| m != SslMode::Disabled);
            if wants_tls && route.downstream_tls.is_none() {
                return Err(err("downstream_tls", "downstream_ssl_mode offers TLS to clients: give the server credential in downstream_tls".into()));
            }
            if let Some(tls) = &route.downstream_tls {
                if tls.mode == Some(TlsMode::Disable) {
                    return Err(err("downstream_tls.mode", "use downstream_ssl_mode = \"disabled\" to serve database clients in plaintext".into()));
                }
                if tls.mode == Some(TlsMode::Mutual) && tls.paths().ca.is_none() {
                    return Err(err("downstream_tls.ca", "mode \"mutual\" verifies client certificates: give `ca` (or `dir` holding ca.crt)".into()));
                }
            }
        }
        if let Some(tls) = &route.downstream_tls {
            if (tls.mode.is_some() && route.protocol == Protocol::Tcp) || tls.sni.is_some() {
                return Err(err("downstream_tls", "only credential fields (dir, cert, key, ca) belong here; the listener's tls.mode applies".into()));
            }
            let p = tls.paths();
            if p.cert.is_none() || p.key.is_none() {
                return Err(err("downstream_tls", "give `cert` and `key` (or `dir` holding tls.crt and tls.key)".into()));
            }
        }
        Ok(())
    }

    /// Every file whose change should trigger a reload: the config itself and each
    /// credential file it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let tls_blocks = self
            .listeners
            .iter()
            .filter_map(|l| l.get_ref().tls.as_ref())
            .chain(self.routes.iter().flat_map(|r| [r.get_ref().upstream_tls.as_ref(), r.get_ref().downstream_tls.as_ref()]).flatten());
        for tls in tls_blocks {
            let p = tls.paths();
            files.extend([p.cert, p.key, p.ca, tls.ca_crl.clone()].into_iter().flatten());
        }
        files.sort();
        files.dedup();
        files
    }

    fn validate_tls_policy(&self, tls: &TlsConfig, err: &dyn Fn(&str, String) -> ConfigError, at: &str) -> Result<(), ConfigError> {
        for name in tls.cipher_suites.iter().flatten() {
            if crate::tls::cipher_suite(name).is_none() {
                return Err(err(
                    &format!("{at}.cipher_suites"),
                    format!("unknown cipher suite {name:?}; known: {}", crate::tls::cipher_suite_names().join(", ")),
                ));
            }
        }
        if tls.cipher_suites.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(err(&format!("{at}.cipher_suites"), "an empty list allows no connection; remove it for the defaults".into()));
        }
        for name in tls.subject_alt_names.iter().flatten() {
            crate::tls::san_pattern(name).map_err(|e| err(&format!("{at}.subject_alt_names"), e.to_string()))?;
        }
        Ok(())
    }

    /// Position of a listener or route entry, for errors raised after parsing
    /// (a certificate that fails to load, say).
    pub fn locate(&self, span: std::ops::Range<usize>, field: String, message: String) -> ConfigError {
        self.invalid(span, field, message)
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Simple => "simple",
            TlsMode::Mutual => "mutual",
        })
    }
}

/// Keepalive settings that would never probe or would probe continuously are refused.
fn validate_keepalive(k: &TcpKeepalive) -> Result<(), (&'static str, String)> {
    if k.time < Duration::from_secs(1) || k.interval < Duration::from_secs(1) {
        let field = if k.time < Duration::from_secs(1) { "tcp_keepalive.time" } else { "tcp_keepalive.interval" };
        return Err((field, "must be at least 1s (the kernel counts keepalive in whole seconds)".into()));
    }
    if !(1..=127).contains(&k.probes) {
        return Err(("tcp_keepalive.probes", "must be between 1 and 127 (the kernel's limit)".into()));
    }
    Ok(())
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(role: Role, text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text.to_owned(), role)
    }

    const EGRESS: &str = r#"
[[listener]]
name = "mesh"
tls = { mode = "mutual", dir = "/certs/mesh" }

[[listener]]
name = "mysql"
address = "127.0.0.1:3306"
route = "mysql"

[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "db.example.com:13306"
upstream_tls = { mode = "mutual", dir = "/certs/client" }
"#;

    #[test]
    fn egress_reference_parses_with_role_defaults() {
        let c = parse(Role::Egress, EGRESS).unwrap();
        assert_eq!(c.listeners[0].get_ref().address, Some("0.0.0.0:15443".parse().unwrap()));
        let p = c.routes[0].get_ref().upstream_tls.as_ref().unwrap().paths();
        assert_eq!(p.key, Some(PathBuf::from("/certs/client/tls.key")));
        assert_eq!(c.routes[0].get_ref().connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn health_and_metrics_tables_may_leave_out_either_field() {
        let c = parse(Role::Egress, &format!("{EGRESS}\n[health]\naddress = \"127.0.0.1:9\"\n\n[metrics]\nenabled = false\n")).unwrap();
        assert_eq!((c.health.address, c.health.enabled), ("127.0.0.1:9".parse().unwrap(), true));
        assert_eq!((c.metrics.address, c.metrics.enabled), ("0.0.0.0:15090".parse().unwrap(), false));
        let e = parse(Role::Egress, &format!("{EGRESS}\n[metrics]\nport = 1\n")).unwrap_err().to_string();
        assert!(e.contains("unknown field `port`"), "{e}");
    }

    #[test]
    fn unknown_field_is_located() {
        let text = EGRESS.replace("route = \"mysql\"", "rout = \"mysql\"");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.starts_with("test.toml:9:1: unknown field `rout`"), "{e}");
    }

    #[test]
    fn route_to_missing_listener_names_field_and_line() {
        let text = EGRESS.replace("route = \"mysql\"", "route = \"nope\"");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.contains("test.toml:6:1: listener[1] (mysql).route: no route is named \"nope\""), "{e}");
    }

    #[test]
    fn egress_route_without_tls_is_refused() {
        let text = EGRESS.replace("upstream_tls = { mode = \"mutual\", dir = \"/certs/client\" }", "");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.contains("upstream_tls: the egress originates TLS"), "{e}");
    }

    #[test]
    fn ingress_defaults_to_plain_backend_and_13306() {
        let c = parse(
            Role::Ingress,
            r#"
[[listener]]
name = "mtls"
tls = { mode = "mutual", dir = "/certs/server" }
[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "mysql.default.svc:3306"
"#,
        )
        .unwrap();
        assert_eq!(c.listeners[0].get_ref().address.unwrap().port(), 13306);
        assert_eq!(c.routes[0].get_ref().upstream_tls.as_ref().unwrap().mode, Some(TlsMode::Disable));
    }

    #[test]
    fn duplicate_sni_host_is_refused() {
        let text = format!("{EGRESS}\n[[route]]\nname = \"b\"\nhosts = [\"DB.example.com\"]\nupstream = \"x:1\"\nupstream_tls = {{ mode = \"disable\" }}\n");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.contains("already claimed by route \"mysql\""), "{e}");
    }

    #[test]
    fn keepalive_defaults_and_bounds() {
        let c = parse(Role::Egress, EGRESS).unwrap();
        let k = c.routes[0].get_ref().tcp_keepalive;
        assert_eq!(k.bound(), Duration::from_secs(60 + 10 * 9), "today's values: 60 s, then 9 probes 10 s apart");
        let text = EGRESS.replace("route = \"mysql\"", "route = \"mysql\"\ntcp_keepalive = { time = \"5s\", interval = \"1s\", probes = 3 }");
        let c = parse(Role::Egress, &text).unwrap();
        assert_eq!(c.listeners[1].get_ref().tcp_keepalive.bound(), Duration::from_secs(8));
        let text = EGRESS.replace("route = \"mysql\"", "route = \"mysql\"\ntcp_keepalive = { time = \"500ms\" }");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.contains("listener[1] (mysql).tcp_keepalive.time: must be at least 1s"), "{e}");
        let text = EGRESS.replace("upstream = \"db.example.com:13306\"", "upstream = \"db.example.com:13306\"\ntcp_keepalive = { probes = 0 }");
        let e = parse(Role::Egress, &text).unwrap_err().to_string();
        assert!(e.contains("route[0] (mysql).tcp_keepalive.probes"), "{e}");
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("Db.X:13306"), Some(("db.x".into(), 13306)));
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("::1:80"), None);
        assert_eq!(split_host_port("x"), None);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
