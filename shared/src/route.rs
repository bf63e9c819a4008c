//! The route table: for each listener, how an accepted connection finds its route.
//!
//! Built once from a checked [`Config`] with every credential loaded, then shared
//! behind an `ArcSwap` so a later reload can replace it whole; a connection takes one
//! snapshot at accept and keeps it for its life.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Display;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use serde_spanned::Spanned;

use crate::authz::AllowList;
use crate::config::{CertKey, Config, ConfigError, Finding, ListenerConfig, ListenerKind, ListenerTls, RouteConfig, TlsMode, TlsPolicy};
use crate::config::{PeerAuth, Protocol, SslMode, TcpKeepalive, Transport};
use crate::endpoints::{EndpointSet, Registry};
use crate::hbone::Pool;
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
    /// HBONE routes: the pool of HTTP/2 connections each client connection's `CONNECT`
    /// stream goes over (this table's credentials; a reload builds a new pool).
    pub hbone: Option<Pool>,
    /// Round-robin cursor over the resolved addresses.
    next_address: AtomicUsize,
    /// The endpoints to connect to, with priorities, weights and address health.
    pub endpoints: EndpointSet,
    /// The PROXY protocol header written to the upstream after connecting, if any.
    pub send_proxy: Option<crate::config::ProxyVersion>,
    /// Client address ranges allowed; empty: any.
    pub source_ranges: Vec<ipnet::IpNet>,
}

/// Client-side TLS inside a database protocol.
#[derive(Debug)]
pub struct DownstreamSsl {
    /// Offered, required, or not at all.
    pub mode: SslMode,
    /// Server certificate and client verification, when offered.
    pub server: Option<Arc<ServerConfig>>,
    /// The client verifier inside `server` (mutual mode), for [`crate::recheck`].
    pub verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// How a route originates TLS.
#[derive(Debug)]
pub struct Origination {
    /// Client config with the route's CA and (in mutual mode) its client certificate.
    pub config: Arc<ClientConfig>,
    /// Sent as SNI and verified against the server's certificate.
    pub server_name: ServerName<'static>,
    /// An `{sni}` upstream: each connection sends and verifies its client's SNI instead.
    pub from_client: bool,
    /// The server verifier inside `config`, to verify a live connection's server chain
    /// again after a trust change ([`crate::recheck`]).
    pub verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
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
    /// The client verifier inside `server` (mutual mode), to verify a live
    /// connection's chain again after a trust change ([`crate::recheck`]).
    pub verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

/// How one listener picks routes.
#[derive(Debug)]
pub enum Routing {
    /// Plain TCP: every connection takes this route.
    Plain(Arc<Route>),
    /// TLS termination, route chosen by SNI.
    Tls(TlsRouting),
    /// Mutual TLS serving HTTP/2 `CONNECT` streams, each routed by its `:authority`.
    Hbone(HboneRouting),
}

/// Authority routing of an HBONE listener.
#[derive(Debug)]
pub struct HboneRouting {
    /// Lower-case host of `:authority` -> route (the routes' `hosts`; any port).
    pub by_host: HashMap<String, Arc<Route>>,
    /// The listener's certificate and client verification, with ALPN h2.
    pub server: Arc<ServerConfig>,
    /// The client verifier inside `server`, to verify a live connection's client chain
    /// again after a trust change ([`crate::recheck`]).
    pub verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl HboneRouting {
    /// The route for a `CONNECT`'s `host:port` authority; `None` means refuse.
    pub fn select(&self, authority: &str) -> Option<&Arc<Route>> {
        let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        self.by_host.get(&host.to_ascii_lowercase())
    }
}

/// SNI routing state of a TLS listener.
#[derive(Debug)]
pub struct TlsRouting {
    /// Lower-case SNI host -> route.
    pub by_sni: HashMap<String, TlsEntry>,
    /// Lower-case `*.suffix` patterns and their routes, longest first (the most
    /// specific wins); consulted when no exact host matched.
    pub wildcards: Vec<(String, TlsEntry)>,
    /// Route for clients that send no SNI.
    pub default: Option<TlsEntry>,
    /// Answers unknown SNI with an alert.
    pub refuse: Arc<ServerConfig>,
    /// Longest wait for the client's handshake (and, when sniffing, its first byte).
    pub handshake_timeout: Duration,
    /// Whether plaintext is accepted too (it takes `default`).
    pub peer_auth: PeerAuth,
    /// Permissive listeners whose default route is server-first: a client silent this
    /// long is plaintext, waiting for the greeting.
    pub detection_window: Option<Duration>,
}

impl ListenerPlan {
    /// The authority routing of an HBONE listener.
    pub fn hbone(&self) -> Option<&HboneRouting> {
        match &self.routing {
            Routing::Hbone(routing) => Some(routing),
            _ => None,
        }
    }
}

impl TlsRouting {
    /// The entry for a ClientHello's SNI; `None` means refuse.
    pub fn select(&self, sni: Option<&str>) -> Option<&TlsEntry> {
        match sni {
            Some(host) => {
                let host = host.to_ascii_lowercase();
                self.by_sni
                    .get(&host)
                    .or_else(|| self.wildcards.iter().find(|(pattern, _)| crate::config::sni::wildcard_matches(pattern, &host)).map(|(_, entry)| entry))
            }
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
    /// Where a PROXY protocol header is accepted from; `None`: not at all.
    pub proxy_trusted: Option<Vec<ipnet::IpNet>>,
    /// Whether a trust change re-verifies the peers of this listener's open connections.
    pub recheck_on_trust_change: bool,
    /// Abuse limits.
    pub limits: crate::config::Limits,
    /// Whether idle connections may be shed under overload.
    pub shed_idle_under_pressure: bool,
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
    /// Loads every credential the config names and builds the table. A file that cannot
    /// be used is reported at the config entry and field that named it, and every such
    /// file is reported, not only the first.
    pub fn build(config: &Config) -> Result<RouteTable, ConfigError> {
        Self::build_with(config, &Registry::default())
    }

    /// [`RouteTable::build`] with the endpoint health of `registry`: a route keeps the
    /// state of the endpoints it still lists (a running gateway's reload).
    pub fn build_with(config: &Config, registry: &Registry) -> Result<RouteTable, ConfigError> {
        let mut b = Builder { config, loaded: Loaded::default(), problems: Vec::new(), registry };
        let mut routes = HashMap::new();
        for (i, r) in config.routes.iter().enumerate() {
            if let Some(route) = build_route(&mut b, i, r) {
                routes.insert(r.get_ref().name.as_str(), Arc::new(route));
            }
        }
        let mut listeners = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            if let Some(plan) = build_listener(&mut b, i, l, &routes) {
                listeners.push(Arc::new(plan));
            }
        }
        if !b.problems.is_empty() {
            // A route served at several listeners fails the same way at each.
            let mut seen = HashSet::new();
            b.problems.retain(|f| seen.insert(f.clone()));
            return Err(ConfigError::Invalid(b.problems));
        }
        Ok(RouteTable { listeners, credentials: b.loaded.0.into_values().collect() })
    }

    /// The plan of the listener called `name`.
    pub fn listener(&self, name: &str) -> Option<&Arc<ListenerPlan>> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// What a build carries along: the config, the credentials loaded so far, and every
/// problem met. A build step returns `None` only after adding a problem.
struct Builder<'c> {
    config: &'c Config,
    loaded: Loaded,
    problems: Vec<Finding>,
    registry: &'c Registry,
}

impl Builder<'_> {
    fn fail(&mut self, span: Range<usize>, field: String, error: impl Display) {
        self.problems.push(self.config.finding(span, field, error.to_string()));
    }
}

/// Credentials loaded while building, by certificate file, so a file named by several
/// entries is described once.
#[derive(Default)]
struct Loaded(BTreeMap<PathBuf, tls::CredentialInfo>);

impl Loaded {
    fn key(&mut self, pair: &CertKey) -> Result<Arc<rustls::sign::CertifiedKey>, tls::TlsError> {
        let certified = tls::load_certified_key(&pair.cert, &pair.key)?;
        self.0.insert(pair.cert.clone(), tls::CredentialInfo::of(&pair.cert, &certified));
        Ok(certified)
    }
}

fn build_route(b: &mut Builder<'_>, i: usize, r: &Spanned<RouteConfig>) -> Option<Route> {
    let route = r.get_ref();
    let field = format!("route[{i}] ({}).upstream_tls", route.name);
    let origination = match &route.upstream_tls {
        None => Some(None),
        Some(tls) => {
            let key = match &tls.client {
                Some(pair) => b.loaded.key(pair).map(Some).map_err(|e| b.fail(r.span(), field.clone(), e)).ok(),
                None => Some(None),
            };
            // Built even when the key failed, so a bad CA is reported too.
            let client = tls::server_verifier(tls)
                .and_then(|verifier| Ok((tls::client_config_with(key.clone().flatten(), tls, verifier.clone())?, verifier)))
                .map_err(|e| b.fail(r.span(), field, e))
                .ok();
            match (key, client) {
                (Some(_), Some((config, verifier))) if route.hbone.is_some() => Some(Some(Origination {
                    config: tls::with_alpn(&config, crate::hbone::ALPN_H2),
                    server_name: tls.sni.clone(),
                    from_client: tls.sni_from_client,
                    verifier,
                })),
                (Some(_), Some((config, verifier))) => {
                    Some(Some(Origination { config, server_name: tls.sni.clone(), from_client: tls.sni_from_client, verifier }))
                }
                _ => None,
            }
        }
    };
    let downstream_ssl = build_downstream_ssl(b, i, r);
    Some(Route {
        name: route.name.clone(),
        host: route.upstream.host.clone(),
        port: route.upstream.port,
        connect_timeout: route.connect_timeout,
        origination: origination?,
        allow: AllowList(route.allow.clone()),
        idle_timeout: route.idle_timeout,
        protocol: route.protocol,
        downstream_ssl: downstream_ssl?,
        keepalive: route.tcp_keepalive,
        hbone: route.hbone.as_ref().map(|h| Pool::new(h.authority.to_string(), h.max_streams, h.idle_timeout)),
        next_address: AtomicUsize::new(0),
        endpoints: EndpointSet::new(&route.name, &route.endpoints, route.outlier_detection, route.health_check, b.registry),
        send_proxy: route.send_proxy_protocol,
        source_ranges: route.source_ranges.clone(),
    })
}

/// The in-protocol server config of a database route (none for `tcp` routes or when
/// TLS is not offered to clients).
fn build_downstream_ssl(b: &mut Builder<'_>, i: usize, r: &Spanned<RouteConfig>) -> Option<DownstreamSsl> {
    let route = r.get_ref();
    let mode = route.downstream_ssl_mode;
    let own = match (&route.downstream_tls, route.protocol, mode) {
        (Some(own), Protocol::Mysql | Protocol::Postgres, SslMode::Preferred | SslMode::Required) => own,
        _ => return Some(DownstreamSsl { mode: SslMode::Disabled, server: None, verifier: None }),
    };
    let tls_mode = own.mode.unwrap_or(if own.ca.is_some() { TlsMode::Mutual } else { TlsMode::Simple });
    let ca = if tls_mode == TlsMode::Mutual { own.ca.as_deref() } else { None };
    // Versions and suites of a database route are the defaults (validation refuses others).
    let trust = tls::ClientTrust { ca, trust_domains: None, crl: own.ca_crl.as_deref() };
    let server = b.loaded.key(&own.credential).and_then(|key| tls::server_config(&TlsPolicy::default(), tls_mode, key, &trust));
    match server {
        Ok(server) => Some(DownstreamSsl { mode, server: Some(server.config), verifier: server.verifier }),
        Err(e) => {
            b.fail(r.span(), format!("route[{i}] ({}).downstream_tls", route.name), e);
            None
        }
    }
}

fn build_listener(b: &mut Builder<'_>, i: usize, l: &Spanned<ListenerConfig>, routes: &HashMap<&str, Arc<Route>>) -> Option<ListenerPlan> {
    let listener = l.get_ref();
    let routing = match &listener.kind {
        ListenerKind::Plain { route } => match routes.get(route.as_str()) {
            Some(route) => Routing::Plain(route.clone()),
            // Its route failed to build, and said why.
            None if !b.problems.is_empty() => return None,
            None => {
                b.fail(l.span(), format!("listener[{i}] ({}).route", listener.name), format!("no route is named {route:?}"));
                return None;
            }
        },
        ListenerKind::Tls { tls, .. } if listener.transport == Transport::Hbone => Routing::Hbone(build_hbone_routing(b, i, l, tls, routes)?),
        ListenerKind::Tls { tls, default_route } => Routing::Tls(build_tls_routing(b, i, l, tls, default_route.as_deref(), routes)),
    };
    Some(ListenerPlan {
        name: listener.name.clone(),
        address: listener.address,
        max_connections: listener.max_connections,
        handshake_timeout: listener.handshake_timeout,
        routing,
        keepalive: listener.tcp_keepalive,
        flush_interval: listener.access_log_flush_interval,
        proxy_trusted: listener.proxy_protocol.as_ref().map(|p| p.trusted.clone()),
        recheck_on_trust_change: listener.recheck_on_trust_change,
        limits: listener.limits.clone(),
        shed_idle_under_pressure: listener.shed_idle_under_pressure,
    })
}

/// The SNI table of a TLS listener. Entries whose credential failed are left out (and
/// reported), so the table is only complete when the build found no problem.
fn build_tls_routing(
    b: &mut Builder<'_>,
    i: usize,
    l: &Spanned<ListenerConfig>,
    tls: &ListenerTls,
    default_route: Option<&str>,
    routes: &HashMap<&str, Arc<Route>>,
) -> TlsRouting {
    let config = b.config;
    let listener = l.get_ref();
    let listener_field = format!("listener[{i}] ({}).tls", listener.name);
    let server_config = |key, trust: &tls::ClientTrust<'_>| tls::server_config(&tls.policy, tls.mode, key, trust);
    let listener_trust = tls::ClientTrust { ca: tls.ca.as_deref(), trust_domains: Some(&tls.trust_domains), crl: tls.ca_crl.as_deref() };
    // The listener's own certificate serves every route that brings none.
    let shared = match &tls.credential {
        Some(pair) => b.loaded.key(pair).and_then(|key| server_config(key, &listener_trust)).map_err(|e| b.fail(l.span(), listener_field.clone(), e)).ok(),
        None => None,
    };
    let mut by_sni = HashMap::new();
    let mut wildcards = Vec::new();
    let mut entries = HashMap::new();
    for (j, r) in config.routes.iter().enumerate() {
        let rc = r.get_ref();
        if !config.tls_listeners_of(rc).any(|name| name == listener.name) {
            continue;
        }
        let server = match (&rc.downstream_tls, &shared) {
            (Some(own), _) => {
                // Only an explicit `ca` replaces the listener's client CA: a Secret's
                // ca.crt names the issuer of the *server* certificate (cert-manager).
                // An own `ca` replaces the listener's trust (trust domains included).
                let crl = own.ca_crl.as_deref().or(tls.ca_crl.as_deref());
                let trust = match own.ca.as_deref() {
                    Some(ca) => tls::ClientTrust { ca: Some(ca), trust_domains: None, crl },
                    None => tls::ClientTrust { crl, ..listener_trust },
                };
                match b.loaded.key(&own.credential).and_then(|key| server_config(key, &trust)) {
                    Ok(server) => server,
                    Err(e) => {
                        b.fail(r.span(), format!("route[{j}] ({}).downstream_tls", rc.name), e);
                        continue;
                    }
                }
            }
            (None, Some(shared)) => shared.clone(),
            // The listener's certificate failed to load: reported above.
            (None, None) if tls.credential.is_some() => continue,
            (None, None) => {
                let why = format!("route {:?} brings no downstream_tls and the listener has no certificate to present for it", rc.name);
                b.fail(l.span(), listener_field.clone(), why);
                continue;
            }
        };
        // A route that failed to build has said why.
        let Some(route) = routes.get(rc.name.as_str()) else { continue };
        let entry = TlsEntry { route: route.clone(), server: server.config, verifier: server.verifier };
        for host in rc.hosts.iter().map(|h| h.to_ascii_lowercase()) {
            if crate::config::sni::is_wildcard(&host) {
                wildcards.push((host, entry.clone()));
            } else {
                by_sni.insert(host, entry.clone());
            }
        }
        entries.insert(rc.name.as_str(), entry);
    }
    let default = match default_route {
        None => None,
        Some(name) => match entries.get(name) {
            Some(entry) => Some(entry.clone()),
            None if !b.problems.is_empty() => None,
            None => {
                let why = format!("route {name:?} is not served at this listener (see its `listeners`)");
                b.fail(l.span(), format!("listener[{i}] ({}).default_route", listener.name), why);
                None
            }
        },
    };
    wildcards.sort_by_key(|(pattern, _): &(String, TlsEntry)| std::cmp::Reverse(pattern.len()));
    TlsRouting {
        by_sni,
        wildcards,
        default,
        refuse: tls::refusing_server_config(),
        handshake_timeout: listener.handshake_timeout,
        peer_auth: listener.peer_auth,
        detection_window: listener.permissive_detection_window,
    }
}

/// The authority table of an HBONE listener: its own certificate (with ALPN h2) for
/// every stream, and the `tcp` routes served there by host. Database routes and routes
/// with their own certificate that do not name this listener are left out (validation
/// refuses them where they do).
fn build_hbone_routing(
    b: &mut Builder<'_>,
    i: usize,
    l: &Spanned<ListenerConfig>,
    tls: &ListenerTls,
    routes: &HashMap<&str, Arc<Route>>,
) -> Option<HboneRouting> {
    let config = b.config;
    let listener = l.get_ref();
    let field = format!("listener[{i}] ({}).tls", listener.name);
    let pair = tls.credential.as_ref()?;
    let server = b
        .loaded
        .key(pair)
        .and_then(|key| {
            let trust = tls::ClientTrust { ca: tls.ca.as_deref(), trust_domains: Some(&tls.trust_domains), crl: tls.ca_crl.as_deref() };
            tls::server_config(&tls.policy, tls.mode, key, &trust)
        })
        .map_err(|e| b.fail(l.span(), field, e))
        .ok()?;
    let mut by_host = HashMap::new();
    for rc in config.routes.iter().map(|r| r.get_ref()) {
        let served = config.tls_listeners_of(rc).any(|name| name == listener.name);
        if !served || rc.protocol != Protocol::Tcp || rc.downstream_tls.is_some() {
            continue;
        }
        let Some(route) = routes.get(rc.name.as_str()) else { continue };
        for host in &rc.hosts {
            by_host.insert(host.to_ascii_lowercase(), route.clone());
        }
    }
    Some(HboneRouting { by_host, server: tls::with_alpn(&server.config, crate::hbone::ALPN_H2), verifier: server.verifier })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::certs::{write_reference, KeyType, ReferenceOptions};
    use crate::config::Role;

    /// The reference PKI in a fresh directory, removed on drop.
    struct Pki(PathBuf);

    impl Pki {
        fn new(name: &str) -> Pki {
            let dir = std::env::temp_dir().join(format!("strait-route-{name}-{}", std::process::id()));
            let options = ReferenceOptions { host: "db.example.com".into(), trust_domain: "cluster.local".into(), days: 30, key_type: KeyType::EcdsaP256 };
            write_reference(&dir, &options).unwrap();
            Pki(dir)
        }

        fn path(&self, secret: &str) -> String {
            self.0.join(secret).display().to_string()
        }
    }

    impl Drop for Pki {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn egress(pki: &Pki, routes: &str) -> Config {
        let text = format!(
            r#"
[[listener]]
name = "mesh"
address = "127.0.0.1:15443"
tls = {{ mode = "mutual", dir = "{mesh}" }}

[[listener]]
name = "mysql"
address = "127.0.0.1:3306"
route = "mysql"
{routes}"#,
            mesh = pki.path("mesh/egress"),
        );
        Config::parse(Path::new("test.toml"), text, Role::Egress).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn routes_carry_checked_values() {
        let pki = Pki::new("checked");
        let config = egress(
            &pki,
            &format!(
                r#"
[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "DB.example.com:13306"
upstream_tls = {{ mode = "mutual", dir = "{client}", sni = "ingress.example.com" }}

[[route]]
name = "api"
hosts = ["api.example.com"]
listeners = ["mesh"]
upstream = "[::1]:8443"
upstream_tls = {{ mode = "disable" }}
allow = ["spiffe://cluster.local/ns/default/sa/*"]
"#,
                client = pki.path("egress"),
            ),
        );
        let table = RouteTable::build(&config).unwrap_or_else(|e| panic!("{e}"));
        let Routing::Plain(route) = &table.listener("mysql").unwrap().routing else { panic!("plain listener") };
        assert_eq!((route.host.as_str(), route.port), ("db.example.com", 13306));
        assert_eq!(route.origination.as_ref().unwrap().server_name.to_str(), "ingress.example.com");
        let Routing::Tls(mesh) = &table.listener("mesh").unwrap().routing else { panic!("TLS listener") };
        assert!(Arc::ptr_eq(&mesh.select(Some("DB.Example.com")).unwrap().route, route));
        let api = &mesh.select(Some("api.example.com")).unwrap().route;
        assert_eq!((api.host.as_str(), api.port), ("::1", 8443));
        assert!(api.origination.is_none());
        assert_eq!(api.allow.0, [crate::authz::Pattern::Uri("spiffe://cluster.local/ns/default/sa/*".into())]);
        assert_eq!(table.credentials.len(), 2, "mesh and client certificates: {:?}", table.credentials);
    }

    #[test]
    fn exact_hosts_win_then_the_longest_wildcard() {
        let pki = Pki::new("wildcards");
        let config = egress(
            &pki,
            r#"
[[route]]
name = "mysql"
upstream = "db.example.com:13306"
upstream_tls = { mode = "disable" }

[[route]]
name = "exact"
hosts = ["A.db.example.com"]
listeners = ["mesh"]
upstream = "10.0.0.1:5432"
upstream_tls = { mode = "disable" }

[[route]]
name = "family"
hosts = ["*.db.example.com"]
listeners = ["mesh"]
upstream = "{sni}:5432"
upstream_tls = { mode = "disable" }

[[route]]
name = "deeper"
hosts = ["*.eu.db.example.com"]
listeners = ["mesh"]
upstream = "{sni}:5433"
upstream_tls = { mode = "disable" }
"#,
        );
        let table = RouteTable::build(&config).unwrap_or_else(|e| panic!("{e}"));
        let Routing::Tls(mesh) = &table.listener("mesh").unwrap().routing else { panic!("TLS listener") };
        let picked = |sni: &str| mesh.select(Some(sni)).map(|e| e.route.name.clone());
        assert_eq!(picked("a.db.example.com").as_deref(), Some("exact"));
        assert_eq!(picked("B.db.example.com").as_deref(), Some("family"));
        assert_eq!(picked("x.eu.db.example.com").as_deref(), Some("deeper"));
        assert_eq!(picked("x.y.db.example.com").as_deref(), Some("family"), "a wildcard stands for one or more labels");
        assert_eq!(picked("db.example.com"), None, "not the bare suffix");
        assert_eq!(picked("c.other.example"), None);
        let family = mesh.select(Some("b.db.example.com")).unwrap();
        assert_eq!((family.route.host.as_str(), family.route.port), (crate::config::sni::SNI_HOST, 5432));
    }

    #[test]
    fn every_credential_problem_is_reported_at_its_entry() {
        let pki = Pki::new("problems");
        let config = egress(
            &pki,
            &format!(
                r#"
[[route]]
name = "mysql"
upstream = "db.example.com:13306"
upstream_tls = {{ mode = "mutual", dir = "{nowhere}" }}

[[route]]
name = "api"
hosts = ["api.example.com"]
upstream = "api.example.com:443"
upstream_tls = {{ mode = "disable" }}
downstream_tls = {{ cert = "{server}/tls.crt", key = "{client}/tls.key" }}
"#,
                nowhere = pki.path("nowhere"),
                server = pki.path("ingress"),
                client = pki.path("egress"),
            ),
        );
        let e = RouteTable::build(&config).unwrap_err();
        let lines: Vec<String> = e.to_string().lines().map(str::to_owned).collect();
        // The client key and the CA of route 0 (both missing), and route 1's mismatch.
        assert_eq!(lines.len(), 3, "{e}");
        assert!(lines[0].starts_with("test.toml:12:1: route[0] (mysql).upstream_tls: ") && lines[0].contains("nowhere/tls.crt: cannot read"), "{}", lines[0]);
        assert!(lines[1].starts_with("test.toml:12:1: route[0] (mysql).upstream_tls: ") && lines[1].contains("nowhere/ca.crt: cannot read"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("test.toml:17:1: route[1] (api).downstream_tls: ") && lines[2].contains("does not belong to the certificate"),
            "{}",
            lines[2]
        );
    }
}
