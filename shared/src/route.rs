//! The route table: for each listener, how an accepted connection finds its route.
//!
//! Built once from a validated [`Config`] with every credential loaded, then shared
//! behind an `ArcSwap` so a later reload can replace it whole; a connection takes one
//! snapshot at accept and keeps it for its life.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use serde_spanned::Spanned;

use crate::authz::{AllowList, Pattern};
use crate::config::{split_host_port, Config, ConfigError, ListenerConfig, RouteConfig, TlsConfig, TlsMode};
use crate::config::{PeerAuth, Protocol, SslMode, TcpKeepalive};
use crate::tls;

/// One destination, ready to connect to.
#[derive(Debug)]
pub struct Route {
    /// Name from the config, for logs.
    pub name: String,
    /// Upstream host (DNS name or IP literal), as configured.
    pub host: String,
    /// Upstream port.
    pub port: u16,
    /// Longest wait for each TCP connect and for the origination handshake.
    pub connect_timeout: Duration,
    /// Origination TLS; `None` only where the config says `mode = "disable"`.
    pub origination: Option<Origination>,
    /// Client identities allowed on this route.
    pub allow: AllowList,
    /// A connection idle this long either way is closed.
    pub idle_timeout: Duration,
    /// Bytes, or a database whose TLS is negotiated inside its protocol.
    pub protocol: Protocol,
    /// Database routes: client-side TLS inside the protocol, at plain listeners.
    pub downstream_ssl: DownstreamSsl,
    /// Keepalive on upstream sockets.
    pub keepalive: TcpKeepalive,
    /// Round-robin cursor over the resolved addresses.
    next_address: AtomicUsize,
}

/// Client-side TLS inside a database protocol.
#[derive(Debug)]
pub struct DownstreamSsl {
    /// Offered, required, or not at all.
    pub mode: SslMode,
    /// Server certificate and client verification, when offered.
    pub server: Option<Arc<ServerConfig>>,
}

/// How a route originates TLS.
#[derive(Debug)]
pub struct Origination {
    /// Client config with the route's CA and (in mutual mode) its client certificate.
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and verified against the server's certificate.
    pub server_name: ServerName<'static>,
}

impl Route {
    /// Index of the address to try first, advancing the round robin.
    pub fn first_address(&self, count: usize) -> usize {
        self.next_address.fetch_add(1, Ordering::Relaxed) % count.max(1)
    }
}

/// A route as selected at a TLS listener, with the server config for its hosts.
#[derive(Clone, Debug)]
pub struct TlsEntry {
    /// Where the stream goes.
    pub route: Arc<Route>,
    /// Certificate and client verification for this route's hosts.
    pub server: Arc<ServerConfig>,
}

/// How one listener picks routes.
#[derive(Debug)]
pub enum Routing {
    /// Plain TCP: every connection takes this route.
    Plain(Arc<Route>),
    /// TLS termination, route chosen by SNI.
    Tls(TlsRouting),
}

/// SNI routing state of a TLS listener.
#[derive(Debug)]
pub struct TlsRouting {
    /// Lower-case SNI host -> route.
    pub by_sni: HashMap<String, TlsEntry>,
    /// Route for clients that send no SNI.
    pub default: Option<TlsEntry>,
    /// Answers unknown SNI with an alert.
    pub refuse: Arc<ServerConfig>,
    /// Longest wait for the client's handshake (and, when sniffing, its first byte).
    pub handshake_timeout: Duration,
    /// Whether plaintext is accepted too (it takes `default`).
    pub peer_auth: PeerAuth,
}

impl TlsRouting {
    /// The entry for a ClientHello's SNI; `None` means refuse.
    pub fn select(&self, sni: Option<&str>) -> Option<&TlsEntry> {
        match sni {
            Some(host) => self.by_sni.get(&host.to_ascii_lowercase()),
            None => self.default.as_ref(),
        }
    }
}

/// One listener's address and routing.
#[derive(Debug)]
pub struct ListenerPlan {
    /// Name from the config, for logs.
    pub name: String,
    /// Where it binds.
    pub address: SocketAddr,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for the client's TLS handshake or, for database routes, the whole
    /// protocol negotiation.
    pub handshake_timeout: Duration,
    /// How it picks routes.
    pub routing: Routing,
    /// Keepalive on accepted sockets.
    pub keepalive: TcpKeepalive,
    /// How often a relaying connection writes a periodic access-log record, if at all.
    pub flush_interval: Option<Duration>,
}

/// The whole routing state of a process: what a reload replaces.
#[derive(Debug)]
pub struct RouteTable {
    /// Every listener, in config order.
    pub listeners: Vec<Arc<ListenerPlan>>,
    /// Every certificate the table presents, one entry per file.
    pub credentials: Vec<tls::CredentialInfo>,
}

impl RouteTable {
    /// Loads every credential the config names and builds the table. Errors point at
    /// the config entry and field that named the bad file.
    pub fn build(config: &Config) -> Result<RouteTable, ConfigError> {
        let mut loaded = Loaded::default();
        let mut routes = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            let route = build_route(config, i, r, &mut loaded)?;
            routes.insert(route.name.clone(), Arc::new(route));
        }
        let mut listeners = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let listener = l.get_ref();
            let routing = match &listener.tls {
                None => {
                    let name = listener.route.as_deref().unwrap_or_default();
                    Routing::Plain(routes[name].clone())
                }
                Some(tls) => Routing::Tls(build_tls_routing(config, i, l, tls, &routes, &mut loaded)?),
            };
            listeners.push(Arc::new(ListenerPlan {
                name: listener.name.clone(),
                address: listener.address.expect("validated: every listener has an address"),
                max_connections: listener.max_connections,
                handshake_timeout: listener.handshake_timeout,
                routing,
                keepalive: listener.tcp_keepalive,
                flush_interval: listener.access_log_flush_interval,
            }));
        }
        Ok(RouteTable { listeners, credentials: loaded.0.into_values().collect() })
    }

    /// The plan of the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerPlan>> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Credentials loaded while building, by certificate file, so a file named by several
/// entries is described once.
#[derive(Default)]
struct Loaded(std::collections::BTreeMap<std::path::PathBuf, tls::CredentialInfo>);

impl Loaded {
    fn key(&mut self, cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, tls::TlsError> {
        let certified = tls::load_certified_key(cert, key)?;
        self.0.insert(cert.to_owned(), tls::CredentialInfo::of(cert, &certified));
        Ok(certified)
    }
}

fn build_route(config: &Config, i: usize, r: &Spanned<RouteConfig>, loaded: &mut Loaded) -> Result<Route, ConfigError> {
    let route = r.get_ref();
    let at = |field: &str, e: tls::TlsError| config.locate(r.span(), format!("route[{i}] ({}).{field}", route.name), e.to_string());
    let (host, port) = split_host_port(&route.upstream).expect("validated: upstream is host:port");
    let tls_config = route.upstream_tls.as_ref().expect("validated: role defaults set upstream_tls");
    let mode = tls_config.mode.expect("validated: upstream_tls.mode is set");
    let origination = match mode {
        TlsMode::Disable => None,
        mode => {
            let sni = tls_config.sni.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(sni.clone()).map_err(|_| {
                config.locate(r.span(), format!("route[{i}] ({}).upstream_tls.sni", route.name), format!("{sni:?} is not a DNS name or IP address"))
            })?;
            let paths = tls_config.paths();
            let key = match (mode, &paths.cert, &paths.key) {
                (TlsMode::Mutual, Some(cert), Some(key)) => Some(loaded.key(cert, key).map_err(|e| at("upstream_tls", e))?),
                _ => None,
            };
            let client = tls::client_config(key, tls_config).map_err(|e| at("upstream_tls", e))?;
            Some(Origination { config: client, server_name })
        }
    };
    Ok(Route {
        name: route.name.clone(),
        host,
        port,
        connect_timeout: route.connect_timeout,
        origination,
        allow: AllowList(route.allow.iter().map(|p| Pattern::parse(p).expect("validated: allow patterns parse")).collect()),
        idle_timeout: route.idle_timeout,
        protocol: route.protocol,
        downstream_ssl: build_downstream_ssl(config, i, r, loaded)?,
        keepalive: route.tcp_keepalive,
        next_address: AtomicUsize::new(0),
    })
}

/// The in-protocol server config of a database route (none for `tcp` routes or when
/// TLS is not offered to clients).
fn build_downstream_ssl(config: &Config, i: usize, r: &Spanned<RouteConfig>, loaded: &mut Loaded) -> Result<DownstreamSsl, ConfigError> {
    let route = r.get_ref();
    let mode = route.downstream_ssl_mode();
    let server = match (&route.downstream_tls, route.protocol, mode) {
        (Some(own), Protocol::Mysql | Protocol::Postgres, SslMode::Preferred | SslMode::Required) => {
            let at = |e: tls::TlsError| config.locate(r.span(), format!("route[{i}] ({}).downstream_tls", route.name), e.to_string());
            let p = own.paths();
            let key = loaded.key(path(&p.cert), path(&p.key)).map_err(at)?;
            let mut settings = own.clone();
            settings.mode = Some(own.mode.unwrap_or(if p.ca.is_some() { TlsMode::Mutual } else { TlsMode::Simple }));
            let ca = if settings.mode == Some(TlsMode::Mutual) { p.ca.as_deref() } else { None };
            Some(tls::server_config(&settings, key, ca, own.ca_crl.as_deref()).map_err(at)?)
        }
        _ => None,
    };
    Ok(DownstreamSsl { mode: if server.is_some() { mode } else { SslMode::Disabled }, server })
}

fn build_tls_routing(
    config: &Config,
    i: usize,
    l: &Spanned<ListenerConfig>,
    tls: &TlsConfig,
    routes: &HashMap<String, Arc<Route>>,
    loaded: &mut Loaded,
) -> Result<TlsRouting, ConfigError> {
    let listener = l.get_ref();
    let listener_paths = tls.paths();
    let located = |field: String, e: tls::TlsError| config.locate(l.span(), field, e.to_string());
    let listener_field = format!("listener[{i}] ({}).tls", listener.name);
    // The listener's own certificate serves every route that brings none.
    let shared = match (&listener_paths.cert, &listener_paths.key) {
        (Some(cert), Some(key)) => {
            let key = loaded.key(cert, key).map_err(|e| located(listener_field.clone(), e))?;
            Some(tls::server_config(tls, key, listener_paths.ca.as_deref(), tls.ca_crl.as_deref()).map_err(|e| located(listener_field.clone(), e))?)
        }
        _ => None,
    };
    let mut by_sni = HashMap::new();
    let mut entries = HashMap::new();
    for (j, r) in config.routes.iter().enumerate() {
        let rc = r.get_ref();
        if !config.tls_listeners_of(rc).any(|name| name == listener.name) {
            continue;
        }
        let server = match &rc.downstream_tls {
            Some(own) => {
                let p = own.paths();
                let field = format!("route[{j}] ({}).downstream_tls", rc.name);
                let at = |e| config.locate(r.span(), field.clone(), e);
                let key = loaded.key(path(&p.cert), path(&p.key)).map_err(|e| at(e.to_string()))?;
                // Only an explicit `ca` replaces the listener's client CA: a Secret's
                // ca.crt names the issuer of the *server* certificate (cert-manager).
                let ca = own.ca.as_deref().or(listener_paths.ca.as_deref());
                let crl = own.ca_crl.as_deref().or(tls.ca_crl.as_deref());
                tls::server_config(tls, key, ca, crl).map_err(|e| at(e.to_string()))?
            }
            None => shared.clone().ok_or_else(|| {
                located(
                    listener_field.clone(),
                    tls::TlsError::File {
                        file: config.path.clone(),
                        reason: format!("route {:?} brings no downstream_tls and the listener has no certificate to present for it", rc.name),
                    },
                )
            })?,
        };
        let entry = TlsEntry { route: routes[&rc.name].clone(), server };
        for host in &rc.hosts {
            by_sni.insert(host.to_ascii_lowercase(), entry.clone());
        }
        entries.insert(rc.name.clone(), entry);
    }
    let default = match &listener.default_route {
        Some(name) => Some(entries.get(name).cloned().ok_or_else(|| {
            config.locate(
                l.span(),
                format!("listener[{i}] ({}).default_route", listener.name),
                format!("route {name:?} is not served at this listener (see its `listeners`)"),
            )
        })?),
        None => None,
    };
    Ok(TlsRouting { by_sni, default, refuse: tls::refusing_server_config(), handshake_timeout: listener.handshake_timeout, peer_auth: listener.peer_auth })
}

fn path(p: &Option<std::path::PathBuf>) -> &Path {
    p.as_deref().expect("validated: credential paths are present")
}
