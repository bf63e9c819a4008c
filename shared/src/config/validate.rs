//! Validation: the file as written ([`super::schema`]) in, the checked configuration
//! ([`super::model`]) out, and every problem on the way into the [`Report`].
//!
//! Nothing stops at the first problem: each entry is checked in full, and each check
//! that fails adds a finding that names the field and says how to fix it. An entry is
//! turned into its checked type only when none of its checks failed, so a checked value
//! never stands on a guess.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use rustls_pki_types::ServerName;
use serde_spanned::Spanned;

use super::fields::did_you_mean;
use super::model::{CertKey, DownstreamTls, HboneRoute, Limits, ListenerConfig, ListenerKind, ListenerTls, Rate, RouteConfig, TlsPolicy, UpstreamTls};
use super::schema::{CredentialPaths, PeerAuth, Protocol, RawListener, RawRoute, RawTls, SslMode, TcpKeepalive, TlsMode, Transport};
use super::values::{listen_address, san_pattern, CipherSuite, HostPort};
use super::{Report, Role};
use crate::authz::Pattern;

/// Upper bound for `max_connections` (far above what one process can hold open).
const MAX_CONNECTIONS_LIMIT: usize = 1 << 24;

/// How long a permissive listener with a server-first default route waits for a
/// client's first byte: TLS clients send their ClientHello at once, so silence this long
/// means a plaintext client waiting for the greeting.
const DEFAULT_DETECTION_WINDOW: Duration = Duration::from_millis(50);

/// Longest `permissive_detection_window`: every plaintext client waits this long for
/// its greeting.
const MAX_DETECTION_WINDOW: Duration = Duration::from_secs(1);

/// Istio's HBONE port: where an HBONE listener binds when the file names no address.
const HBONE_PORT: u16 = 15008;

/// Streams per pooled HBONE connection, as Envoy's default `max_requests_per_connection`
/// for CONNECT pools is reached in practice: 100.
const DEFAULT_HBONE_MAX_STREAMS: usize = 100;

/// Upper bound for `hbone_max_streams` (every stream shares one connection's windows).
const MAX_HBONE_STREAMS: usize = 10_000;

/// How long a pooled HBONE connection without streams stays open.
const DEFAULT_HBONE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The file's entries as written.
pub(super) struct Raw {
    pub listeners: Vec<Spanned<RawListener>>,
    pub routes: Vec<Spanned<RawRoute>>,
}

/// The checked entries, in file order.
pub(super) struct Checked {
    pub listeners: Vec<Spanned<ListenerConfig>>,
    pub routes: Vec<Spanned<RouteConfig>>,
}

/// Checks every entry of `raw` for `role`; `None` when anything was reported.
pub(super) fn validate(raw: &Raw, role: Role, report: &mut Report<'_>) -> Option<Checked> {
    let v = Validator { role, raw, default_max_connections: default_max_connections(raw) };
    if raw.listeners.is_empty() {
        report.add(&(0..0), "listener", "no [[listener]] is defined: add one (see config-examples/)");
    }
    unique_names(report, "listener", raw.listeners.iter().map(|l| (l.span(), l.get_ref().name.as_str())));
    unique_names(report, "route", raw.routes.iter().map(|r| (r.span(), r.get_ref().name.as_str())));
    let listeners: Vec<_> = raw.listeners.iter().enumerate().map(|(i, l)| v.listener(i, l, report).map(|c| Spanned::new(l.span(), c))).collect();
    distinct_addresses(&listeners, report);
    let routes: Vec<_> = raw.routes.iter().enumerate().map(|(i, r)| v.route(i, r, report).map(|c| Spanned::new(r.span(), c))).collect();
    v.distinct_hosts(report);
    Some(Checked { listeners: listeners.into_iter().collect::<Option<_>>()?, routes: routes.into_iter().collect::<Option<_>>()? })
}

/// The findings of one `[[listener]]` or `[[route]]` entry, located at its header.
struct At<'r, 'a> {
    report: &'r mut Report<'a>,
    span: Range<usize>,
    entry: String,
    before: usize,
}

impl<'r, 'a> At<'r, 'a> {
    fn new(report: &'r mut Report<'a>, span: Range<usize>, entry: String) -> Self {
        let before = report.count();
        At { report, span, entry, before }
    }

    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.report.add(&self.span, format!("{}.{field}", self.entry), message);
    }

    /// Whether nothing was reported since this entry's checks began.
    fn clean(&self) -> bool {
        self.report.count() == self.before
    }
}

struct Validator<'c> {
    role: Role,
    raw: &'c Raw,
    /// `max_connections` of the listeners that set none.
    default_max_connections: usize,
}

/// Each listener's share of the open-file budget, from the soft limit as it is now (the
/// binary raised it to the hard limit at start).
fn default_max_connections(raw: &Raw) -> usize {
    let explicit: Vec<usize> = raw.listeners.iter().filter_map(|l| l.get_ref().max_connections).collect();
    let implicit = raw.listeners.len() - explicit.len();
    // An unreadable limit is taken as the common 1024 default: a small, safe budget.
    crate::fdlimit::default_max_connections(crate::fdlimit::soft_limit().unwrap_or(1024), &explicit, implicit)
}

impl Validator<'_> {
    fn route_named(&self, name: &str) -> Option<&RawRoute> {
        self.raw.routes.iter().map(|r| r.get_ref()).find(|r| r.name == name)
    }

    /// "no route is named ..." with the names there are, and the likely one.
    fn no_route(&self, name: &str) -> String {
        let names: Vec<&str> = self.raw.routes.iter().map(|r| r.get_ref().name.as_str()).collect();
        missing("route", name, &names)
    }

    /// Names of the TLS listeners whose SNI table holds `route`.
    fn tls_listeners_of<'a>(&'a self, route: &'a RawRoute) -> impl Iterator<Item = &'a str> + 'a {
        self.raw
            .listeners
            .iter()
            .map(|l| l.get_ref())
            .filter(|l| l.tls.is_some())
            .filter(move |l| route.listeners.as_ref().is_none_or(|names| names.contains(&l.name)))
            .map(|l| l.name.as_str())
    }

    fn listener(&self, i: usize, l: &Spanned<RawListener>, report: &mut Report<'_>) -> Option<ListenerConfig> {
        let raw = l.get_ref();
        let mut at = At::new(report, l.span(), format!("listener[{i}] ({})", raw.name));
        if raw.max_connections.is_some_and(|cap| !(1..=MAX_CONNECTIONS_LIMIT).contains(&cap)) {
            at.add("max_connections", format!("must be between 1 and {MAX_CONNECTIONS_LIMIT}"));
        }
        if raw.handshake_timeout.is_zero() {
            at.add("handshake_timeout", "must be more than 0 (it bounds how long a stranger can hold a connection)");
        }
        keepalive(&raw.tcp_keepalive, &mut at);
        if raw.access_log_flush_interval.is_some_and(|every| every < std::time::Duration::from_millis(100)) {
            at.add("access_log_flush_interval", "must be at least 100ms (each record is a log line per connection)");
        }
        let address = match (&raw.address, &raw.tls) {
            (Some(text), _) => listen_address(text).map_err(|m| at.add("address", m)).ok(),
            (None, Some(_)) if raw.transport == Transport::Hbone => Some(SocketAddr::from(([0, 0, 0, 0], HBONE_PORT))),
            (None, Some(_)) => Some(SocketAddr::from(([0, 0, 0, 0], self.role.default_tls_port()))),
            (None, None) => {
                at.add("address", "a plain listener needs an address, e.g. \"0.0.0.0:3306\"");
                None
            }
        };
        let permissive_detection_window = self.detection_window(raw, &mut at);
        let proxy_protocol = match &raw.proxy_protocol {
            None => Some(None),
            Some(p) if p.trusted.is_empty() => {
                at.add(
                    "proxy_protocol.trusted",
                    "empty: no address may send a PROXY header, so every connection would be refused; list the load balancer's ranges",
                );
                None
            }
            Some(p) => {
                super::proxy::ranges(&p.trusted, "proxy_protocol.trusted", |f, m| at.add(f, m)).map(|trusted| Some(super::proxy::ProxyProtocol { trusted }))
            }
        };
        let limits = limits(raw, &mut at);
        let kind = match &raw.tls {
            None => self.plain(raw, &mut at),
            Some(tls) => self.terminating(raw, tls, &mut at),
        };
        self.hbone_listener(raw, &mut at);
        if !at.clean() {
            return None;
        }
        Some(ListenerConfig {
            name: raw.name.clone(),
            address: address?,
            kind: kind?,
            handshake_timeout: raw.handshake_timeout,
            peer_auth: raw.peer_auth,
            max_connections: raw.max_connections.unwrap_or(self.default_max_connections),
            tcp_keepalive: raw.tcp_keepalive,
            access_log_flush_interval: raw.access_log_flush_interval,
            permissive_detection_window,
            proxy_protocol: proxy_protocol?,
            transport: raw.transport,
            recheck_on_trust_change: raw.recheck_on_trust_change.unwrap_or(true),
            shed_idle_under_pressure: raw.shed_idle_under_pressure.unwrap_or(true),
            limits: limits?,
        })
    }

    /// What an HBONE listener needs: mutual TLS with its own certificate (one handshake
    /// serves every stream, whatever its authority), no SNI-era settings, and routes that
    /// carry opaque bytes.
    fn hbone_listener(&self, raw: &RawListener, at: &mut At<'_, '_>) {
        if raw.transport != Transport::Hbone {
            return;
        }
        let Some(tls) = &raw.tls else {
            at.add("transport", "an HBONE listener terminates mutual TLS: add tls = { mode = \"mutual\", dir = ... }");
            return;
        };
        if tls.mode.is_some_and(|mode| mode != TlsMode::Mutual) {
            at.add("tls.mode", "HBONE is mutual TLS (the client's certificate is each stream's identity): use \"mutual\"");
        }
        let p = tls.paths();
        if p.cert.is_none() || p.key.is_none() {
            at.add("tls", "an HBONE listener presents its own certificate for every stream: give `cert` and `key` (or `dir` holding tls.crt and tls.key)");
        }
        if raw.default_route.is_some() {
            at.add("default_route", "an HBONE listener routes each stream by its :authority: remove default_route");
        }
        if raw.peer_auth != PeerAuth::Strict {
            at.add("peer_auth", "an HBONE listener takes mutual TLS only: remove peer_auth");
        }
        let named_here = |r: &&RawRoute| r.listeners.as_ref().is_some_and(|names| names.contains(&raw.name));
        for r in self.raw.routes.iter().map(|r| r.get_ref()).filter(named_here) {
            if r.protocol != Protocol::Tcp {
                at.add(
                    "transport",
                    format!("route {:?} is protocol {:?}, but HBONE streams carry opaque bytes: serve it at another listener", r.name, r.protocol.as_str()),
                );
            }
            if r.downstream_tls.is_some() {
                at.add("transport", format!("route {:?} brings a downstream_tls, but at an HBONE listener the handshake is the listener's own: remove it or serve the route elsewhere", r.name));
            }
        }
    }

    /// The detection window of a permissive listener whose default route is
    /// server-first (default applied); refused where it would mean nothing.
    fn detection_window(&self, raw: &RawListener, at: &mut At<'_, '_>) -> Option<Duration> {
        let default_route = raw.default_route.as_deref().and_then(|name| self.route_named(name));
        let applies = raw.tls.is_some() && raw.peer_auth == PeerAuth::Permissive && default_route.is_some_and(|r| r.protocol.server_first());
        let field = "permissive_detection_window";
        match (raw.permissive_detection_window, applies) {
            (None, true) => Some(DEFAULT_DETECTION_WINDOW),
            (None, false) => None,
            (Some(window), true) => {
                if window.is_zero() || window > MAX_DETECTION_WINDOW || window >= raw.handshake_timeout {
                    at.add(field, format!("must be more than 0, at most {MAX_DETECTION_WINDOW:?} and less than handshake_timeout (every plaintext client waits this long for its greeting)"));
                }
                Some(window)
            }
            (Some(_), false) => {
                let why = if raw.tls.is_none() {
                    "a plain listener never waits for the client's first byte"
                } else if raw.peer_auth != PeerAuth::Permissive {
                    "only a peer_auth = \"permissive\" listener tells TLS from plaintext clients"
                } else {
                    "the default_route's protocol is not server-first (only protocol = \"mysql\" is): its plaintext clients speak first, so the first byte is waited for up to handshake_timeout"
                };
                at.add(field, format!("{why}; remove permissive_detection_window"));
                None
            }
        }
    }

    fn plain(&self, raw: &RawListener, at: &mut At<'_, '_>) -> Option<ListenerKind> {
        let route = raw.route.as_deref().map(|name| (name, self.route_named(name)));
        let ingress_allowed = match route {
            Some((_, Some(r))) => negotiates_tls(r),
            Some((_, None)) => true, // the unknown route is the finding
            None => false,
        };
        if self.role == Role::Ingress && !ingress_allowed {
            at.add("tls", "an ingress listener must terminate TLS: add tls = { mode = \"mutual\", dir = ... }, or route to a database route that negotiates TLS inside its protocol (downstream_tls)");
        }
        if raw.default_route.is_some() {
            at.add("default_route", "only TLS listeners have a default route; a plain listener uses `route`");
        }
        if raw.peer_auth != PeerAuth::Strict {
            at.add("peer_auth", "a plain listener takes plaintext anyway; peer_auth applies to TLS listeners");
        }
        let Some((name, target)) = route else {
            at.add("route", "a plain listener cannot read SNI: name the one route it serves");
            return None;
        };
        match target {
            None => at.add("route", self.no_route(name)),
            Some(r) if !r.allow.is_empty() && !identifies_clients(r) => {
                at.add("route", format!("route {name:?} has an `allow` list, but a plain listener has no client identity to check: it would refuse everyone"))
            }
            Some(_) => {}
        }
        Some(ListenerKind::Plain { route: name.to_owned() })
    }

    fn terminating(&self, raw: &RawListener, tls: &RawTls, at: &mut At<'_, '_>) -> Option<ListenerKind> {
        if raw.route.is_some() {
            at.add("route", "a TLS listener routes by SNI: use `default_route` for clients without SNI");
        }
        let served: Vec<&RawRoute> = self.raw.routes.iter().map(|r| r.get_ref()).filter(|r| self.tls_listeners_of(r).any(|n| n == raw.name)).collect();
        if let Some(name) = &raw.default_route {
            match self.route_named(name) {
                None => at.add("default_route", self.no_route(name)),
                Some(r) if !served.iter().any(|s| s.name == r.name) => {
                    at.add("default_route", format!("route {name:?} is not served at this listener: add {:?} to its `listeners`", raw.name))
                }
                Some(_) => {}
            }
        }
        if raw.peer_auth != PeerAuth::Strict && raw.default_route.is_none() {
            at.add("default_route", "plaintext clients cannot send SNI: peer_auth \"permissive\" or \"disable\" needs the route they take");
        }
        let policy = policy(tls, "tls", at);
        if tls.subject_alt_names.is_some() || tls.verify_hostname.is_some() {
            at.add("tls.subject_alt_names", "server names are checked on origination; at a listener use a route's `allow`");
        }
        if tls.sni.is_some() {
            at.add("tls.sni", "SNI is chosen by the client at a listener; `sni` belongs in a route's upstream_tls");
        }
        let mode = match tls.mode {
            Some(mode @ (TlsMode::Mutual | TlsMode::Simple)) => Some(mode),
            Some(TlsMode::Disable) => {
                at.add("tls.mode", "a listener with `tls` terminates TLS: use \"mutual\" or \"simple\", or remove `tls` for a plain listener");
                None
            }
            None => {
                at.add("tls.mode", "missing: \"mutual\" (client certificates required) or \"simple\"");
                None
            }
        };
        bundle_alone(tls, "tls", at);
        let p = tls.paths();
        if p.cert.is_some() != p.key.is_some() {
            at.add("tls", "give both a certificate and its key (or `dir` holding tls.crt and tls.key)");
        }
        let credential = cert_key(&p);
        if mode == Some(TlsMode::Simple) {
            if let Some(r) = served.iter().find(|r| !r.allow.is_empty()) {
                at.add("tls.mode", format!("route {:?} has an `allow` list, but mode \"simple\" asks no client certificate: use \"mutual\"", r.name));
            }
        }
        let trust_domains = trust_domains(tls, "tls", at);
        if mode == Some(TlsMode::Mutual) && p.ca.is_none() && tls.trust_domains.is_none() {
            at.add("tls.ca", "mode \"mutual\" verifies client certificates: give `ca` (or `dir` holding ca.crt, or `trust_domains`)");
        }
        if mode == Some(TlsMode::Simple) && tls.trust_domains.is_some() {
            at.add("tls.trust_domains", "mode \"simple\" asks no client certificate: use \"mutual\", or remove trust_domains");
        }
        if p.cert.is_none() && p.key.is_none() {
            for r in served.iter().filter(|r| r.downstream_tls.is_none()) {
                at.add(
                    "tls",
                    format!(
                        "route {:?} brings no downstream_tls and the listener has no certificate to present for it: give the listener `cert` and `key` (or `dir`), or the route a downstream_tls",
                        r.name
                    ),
                );
            }
        }
        let tls = ListenerTls { mode: mode?, credential, ca: p.ca, trust_domains: trust_domains?, ca_crl: tls.ca_crl.clone(), policy: policy? };
        Some(ListenerKind::Tls { tls, default_route: raw.default_route.clone() })
    }

    fn route(&self, i: usize, r: &Spanned<RawRoute>, report: &mut Report<'_>) -> Option<RouteConfig> {
        let raw = r.get_ref();
        let mut at = At::new(report, r.span(), format!("route[{i}] ({})", raw.name));
        for (field, timeout) in [("connect_timeout", raw.connect_timeout), ("idle_timeout", raw.idle_timeout)] {
            if timeout.is_zero() {
                at.add(field, "must be more than 0 (a zero timeout would close every connection at once)");
            }
        }
        keepalive(&raw.tcp_keepalive, &mut at);
        let endpoints = super::endpoints::endpoints(raw.upstream.as_deref(), raw.upstreams.as_deref(), |f, m| at.add(f, m));
        let upstream = endpoints.as_deref().and_then(primary);
        self.endpoint_checks(raw, endpoints.as_deref(), &mut at);
        let listener_names: Vec<&str> = self.raw.listeners.iter().map(|l| l.get_ref().name.as_str()).collect();
        for name in raw.listeners.iter().flatten() {
            if !listener_names.contains(&name.as_str()) {
                at.add("listeners", missing("listener", name, &listener_names));
            }
        }
        for host in &raw.hosts {
            if let Err(message) = super::sni::check_host(host) {
                at.add("hosts", message);
            }
        }
        if raw.upstream.as_deref().and_then(super::sni::dynamic_port).is_some() {
            self.sni_upstream(raw, &mut at);
        }
        let allow: Vec<Option<Pattern>> = raw.allow.iter().map(|p| Pattern::parse(p).map_err(|e| at.add("allow", e.to_string())).ok()).collect();
        let upstream_tls = self.upstream_tls(raw, upstream.as_ref(), &mut at);
        let downstream_tls = downstream_tls(raw, &mut at);
        let downstream_ssl_mode = downstream_ssl_mode(raw, &mut at);
        let source_ranges = super::proxy::ranges(&raw.source_ranges, "source_ranges", |f, m| at.add(f, m));
        let hbone = hbone_route(raw, &mut at);
        if !at.clean() {
            return None;
        }
        Some(RouteConfig {
            name: raw.name.clone(),
            hosts: raw.hosts.clone(),
            listeners: raw.listeners.clone(),
            upstream: upstream?,
            endpoints: endpoints?,
            outlier_detection: raw.outlier_detection,
            health_check: raw.health_check,
            connect_timeout: raw.connect_timeout,
            upstream_tls: upstream_tls?,
            downstream_tls: downstream_tls?,
            allow: allow.into_iter().collect::<Option<_>>()?,
            idle_timeout: raw.idle_timeout,
            protocol: raw.protocol,
            downstream_ssl_mode,
            tcp_keepalive: raw.tcp_keepalive,
            send_proxy_protocol: raw.send_proxy_protocol,
            source_ranges: source_ranges?,
            hbone: hbone?,
        })
    }

    /// An `{sni}` upstream is reached only with an SNI that one of the route's hosts
    /// matched: no plain listener or default route may lead to it, and there is no
    /// fixed address to check or eject.
    fn sni_upstream(&self, raw: &RawRoute, at: &mut At<'_, '_>) {
        if raw.hosts.is_empty() {
            at.add("hosts", "an \"{sni}\" upstream connects to the name the client sent: list the names (\"*.db.example.com\") it may be");
        }
        for l in self.raw.listeners.iter().map(|l| l.get_ref()) {
            if l.route.as_deref() == Some(raw.name.as_str()) || l.default_route.as_deref() == Some(raw.name.as_str()) {
                at.add("upstream", format!("listener {:?} sends clients without SNI here, and an \"{{sni}}\" upstream needs the client's SNI", l.name));
            }
        }
        if self.tls_listeners_of(raw).next().is_none() {
            at.add("upstream", "an \"{sni}\" upstream needs a TLS listener to read the SNI at: this route is served at none");
        }
        for (field, set) in [("outlier_detection", raw.outlier_detection.is_some()), ("health_check", raw.health_check.is_some())] {
            if set {
                at.add(field, "an \"{sni}\" upstream has no fixed address to check or eject: remove it");
            }
        }
    }

    /// Outlier detection, health checks, and the explicit SNI that several endpoint
    /// hosts need.
    fn endpoint_checks(&self, raw: &RawRoute, endpoints: Option<&[super::endpoints::Endpoint]>, at: &mut At<'_, '_>) {
        if let Some(o) = &raw.outlier_detection {
            super::endpoints::outlier_detection(o, |f, m| at.add(f, m));
        }
        let tls_mode = raw.upstream_tls.as_ref().and_then(|t| t.mode);
        let originates = matches!(tls_mode, Some(TlsMode::Simple | TlsMode::Mutual));
        if let Some(h) = &raw.health_check {
            super::endpoints::health_check(h, originates, |f, m| at.add(f, m));
        }
        let sni = raw.upstream_tls.as_ref().and_then(|t| t.sni.as_ref());
        if originates && sni.is_none() && endpoints.is_some_and(super::endpoints::needs_explicit_sni) {
            at.add("upstream_tls.sni", "the upstreams have different hosts, so the name sent and verified cannot default to one of them: give `sni`");
        }
    }

    /// `Some(None)` is plaintext: mode "disable", or no `upstream_tls` at the ingress
    /// (its backend is in-cluster).
    fn upstream_tls(&self, raw: &RawRoute, upstream: Option<&HostPort>, at: &mut At<'_, '_>) -> Option<Option<UpstreamTls>> {
        let Some(tls) = &raw.upstream_tls else {
            if self.role == Role::Ingress {
                return Some(None);
            }
            at.add(
                "upstream_tls",
                "the egress originates TLS: add upstream_tls = { mode = \"mutual\", dir = ... } or, to send plaintext on purpose, mode = \"disable\"",
            );
            return None;
        };
        if tls.ca_crl.is_some() {
            at.add("upstream_tls.ca_crl", "revocation lists apply to client certificates: set ca_crl on the listener's tls");
        }
        if tls.verify_hostname.is_some() && tls.subject_alt_names.is_none() {
            at.add("upstream_tls.verify_hostname", "only meaningful with subject_alt_names (without them the host name is always verified)");
        }
        let policy = policy(tls, "upstream_tls", at);
        let subject_alt_names = subject_alt_names(tls, at);
        bundle_alone(tls, "upstream_tls", at);
        let p = tls.paths();
        let mode = match tls.mode {
            None => {
                at.add("upstream_tls.mode", "missing: \"mutual\", \"simple\" or \"disable\"");
                return None;
            }
            Some(TlsMode::Disable) => {
                let tls_settings = tls.sni.is_some()
                    || tls.subject_alt_names.is_some()
                    || tls.cipher_suites.is_some()
                    || tls.min_version.is_some()
                    || tls.trust_domains.is_some();
                if p != CredentialPaths::default() || tls_settings {
                    at.add("upstream_tls", "mode \"disable\" sends plaintext: remove the credential and TLS fields or pick \"simple\"/\"mutual\"");
                }
                return Some(None);
            }
            Some(mode) => mode,
        };
        let trust_domains = trust_domains(tls, "upstream_tls", at);
        if p.ca.is_none() && tls.trust_domains.is_none() {
            at.add("upstream_tls.ca", "origination verifies the server: give `ca` (or `dir` holding ca.crt, or `trust_domains`)");
        }
        let client = match (mode, cert_key(&p)) {
            (TlsMode::Mutual, None) => {
                at.add("upstream_tls", "mode \"mutual\" presents a client certificate: give `cert` and `key` (or `dir` holding tls.crt and tls.key)");
                None
            }
            (TlsMode::Mutual, client) => client,
            _ => None,
        };
        // Without its own `sni` the route sends the upstream host (already reported if
        // bad), or, to an `{sni}` upstream, the client's SNI.
        let sni_from_client = tls.sni.is_none() && upstream.is_some_and(|u| u.host == super::sni::SNI_HOST);
        let default_sni = if sni_from_client { Some("sni.invalid".to_owned()) } else { upstream.map(|u| u.host.clone()) };
        let sni = match tls.sni.clone().or(default_sni) {
            Some(name) => ServerName::try_from(name.clone()).map_err(|_| at.add("upstream_tls.sni", format!("{name:?} is not a DNS name or IP address"))).ok(),
            None => None,
        };
        Some(Some(UpstreamTls {
            mode,
            client,
            ca: p.ca,
            trust_domains: trust_domains?,
            sni: sni?,
            subject_alt_names: subject_alt_names?,
            verify_hostname: tls.verify_hostname.unwrap_or(false),
            sni_from_client,
            policy: policy?,
        }))
    }

    /// SNI hosts are unique per listener: one host selects one route.
    fn distinct_hosts(&self, report: &mut Report<'_>) {
        let mut claimed: HashMap<(&str, String), &str> = HashMap::new();
        for (i, r) in self.raw.routes.iter().enumerate() {
            let route = r.get_ref();
            for host in &route.hosts {
                for listener in self.tls_listeners_of(route) {
                    let owner = *claimed.entry((listener, host.to_ascii_lowercase())).or_insert(&route.name);
                    if owner != route.name {
                        report.add(
                            &r.span(),
                            format!("route[{i}] ({}).hosts", route.name),
                            format!(
                                "SNI host {host:?} is already claimed by route {owner:?} at listener {listener:?}; each host selects one route per listener"
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// The endpoint that names the route's destination: the first of the lowest priority.
fn primary(endpoints: &[super::endpoints::Endpoint]) -> Option<HostPort> {
    let best = endpoints.iter().map(|e| e.priority).min()?;
    endpoints.iter().find(|e| e.priority == best).map(|e| e.address.clone())
}

/// A route's HBONE origination (`Some(None)`: a direct route), or `None` after a finding.
fn hbone_route(raw: &RawRoute, at: &mut At<'_, '_>) -> Option<Option<HboneRoute>> {
    if raw.transport == Transport::Direct {
        let set = [
            ("authority", raw.authority.is_some()),
            ("hbone_max_streams", raw.hbone_max_streams.is_some()),
            ("hbone_idle_timeout", raw.hbone_idle_timeout.is_some()),
        ];
        for (field, _) in set.iter().filter(|(_, set)| *set) {
            at.add(field, "only HBONE routes use it: add transport = \"hbone\", or remove it");
        }
        return Some(None);
    }
    if raw.protocol != Protocol::Tcp {
        at.add("protocol", "an HBONE route carries opaque bytes in its stream: use protocol \"tcp\" (the database's own TLS, if any, goes inside)");
    }
    if raw.upstream_tls.as_ref().and_then(|tls| tls.mode) != Some(TlsMode::Mutual) {
        at.add("upstream_tls", "HBONE runs inside mutual TLS: give upstream_tls = { mode = \"mutual\", dir = ... } (its ALPN is h2)");
    }
    let authority = match &raw.authority {
        Some(text) => HostPort::parse(text).map_err(|m| at.add("authority", m)).ok(),
        None => {
            at.add("authority", "an HBONE route names the destination every CONNECT asks for: authority = \"db.example.com:3306\"");
            None
        }
    };
    let max_streams = raw.hbone_max_streams.unwrap_or(DEFAULT_HBONE_MAX_STREAMS);
    if !(1..=MAX_HBONE_STREAMS).contains(&max_streams) {
        at.add("hbone_max_streams", format!("must be between 1 and {MAX_HBONE_STREAMS}"));
    }
    let idle_timeout = raw.hbone_idle_timeout.unwrap_or(DEFAULT_HBONE_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        at.add("hbone_idle_timeout", "must be more than 0 (a pooled connection would close before its first stream)");
    }
    Some(Some(HboneRoute { authority: authority?, max_streams, idle_timeout }))
}

/// `Some(None)`: the route has no certificate of its own.
fn downstream_tls(raw: &RawRoute, at: &mut At<'_, '_>) -> Option<Option<DownstreamTls>> {
    let Some(tls) = &raw.downstream_tls else { return Some(None) };
    let database = raw.protocol != Protocol::Tcp;
    if tls.subject_alt_names.is_some() || tls.verify_hostname.is_some() {
        at.add("downstream_tls.subject_alt_names", "server names are checked on origination (upstream_tls); clients are restricted with `allow`");
    }
    if tls.cipher_suites.is_some() || tls.min_version.is_some() {
        at.add("downstream_tls", "versions and cipher suites are the listener's: set them in the listener's tls");
    }
    if tls.sni.is_some() || (tls.mode.is_some() && !database) {
        at.add("downstream_tls", "only credential fields (dir, cert, key, ca) belong here; the listener's tls.mode applies");
    }
    bundle_alone(tls, "downstream_tls", at);
    if tls.trust_domains.is_some() {
        at.add("downstream_tls.trust_domains", "client trust is the listener's: set trust_domains in the listener's tls");
    }
    let p = tls.paths();
    if database && tls.mode == Some(TlsMode::Disable) {
        at.add("downstream_tls.mode", "use downstream_ssl_mode = \"disabled\" to serve database clients in plaintext");
    }
    if database && tls.mode == Some(TlsMode::Mutual) && p.ca.is_none() {
        at.add("downstream_tls.ca", "mode \"mutual\" verifies client certificates: give `ca` (or `dir` holding ca.crt)");
    }
    let credential = cert_key(&p);
    if credential.is_none() {
        at.add("downstream_tls", "give `cert` and `key` (or `dir` holding tls.crt and tls.key)");
    }
    Some(Some(DownstreamTls {
        credential: credential?,
        // At an SNI listener a Secret's ca.crt names the server certificate's issuer
        // (cert-manager), so only an explicit `ca` replaces the listener's client CA.
        ca: if database { p.ca } else { tls.ca.clone() },
        ca_crl: tls.ca_crl.clone(),
        mode: if database { tls.mode } else { None },
    }))
}

fn downstream_ssl_mode(raw: &RawRoute, at: &mut At<'_, '_>) -> SslMode {
    if raw.protocol == Protocol::Tcp {
        if raw.downstream_ssl_mode.is_some() {
            at.add("downstream_ssl_mode", "only database routes (protocol = \"mysql\" or \"postgres\") negotiate TLS inside the protocol");
        }
        return SslMode::Disabled;
    }
    let mode = ssl_mode(raw);
    if mode != SslMode::Disabled && raw.downstream_tls.is_none() {
        at.add("downstream_tls", "downstream_ssl_mode offers TLS to clients: give the server credential in downstream_tls");
    }
    mode
}

/// A database route's client-side TLS mode as written, default applied.
fn ssl_mode(raw: &RawRoute) -> SslMode {
    raw.downstream_ssl_mode.unwrap_or(if raw.downstream_tls.is_some() { SslMode::Required } else { SslMode::Disabled })
}

/// Whether a plain listener serving `route` still gets TLS (inside the database protocol).
fn negotiates_tls(route: &RawRoute) -> bool {
    route.protocol != Protocol::Tcp && ssl_mode(route) != SslMode::Disabled
}

/// Whether a plain listener serving `route` learns who the client is: only a database
/// route that requires TLS inside its protocol sees a client certificate.
fn identifies_clients(route: &RawRoute) -> bool {
    route.protocol != Protocol::Tcp && ssl_mode(route) == SslMode::Required
}

fn cert_key(p: &CredentialPaths) -> Option<CertKey> {
    match (&p.cert, &p.key) {
        (Some(cert), Some(key)) => Some(CertKey { cert: cert.clone(), key: key.clone() }),
        _ => None,
    }
}

/// Versions and suites of one TLS side; every unknown suite is reported.
fn policy(tls: &RawTls, side: &str, at: &mut At<'_, '_>) -> Option<TlsPolicy> {
    let field = format!("{side}.cipher_suites");
    let cipher_suites = match &tls.cipher_suites {
        None => Some(None),
        Some(names) if names.is_empty() => {
            at.add(&field, "an empty list allows no connection; remove it for the defaults");
            None
        }
        Some(names) => {
            let parsed: Vec<Option<CipherSuite>> = names.iter().map(|n| CipherSuite::parse(n).map_err(|m| at.add(&field, m)).ok()).collect();
            parsed.into_iter().collect::<Option<Vec<_>>>().map(Some)
        }
    };
    Some(TlsPolicy { min_version: tls.min_version.unwrap_or_default(), cipher_suites: cipher_suites? })
}

fn subject_alt_names(tls: &RawTls, at: &mut At<'_, '_>) -> Option<Option<Vec<Pattern>>> {
    let Some(names) = &tls.subject_alt_names else { return Some(None) };
    let parsed: Vec<Option<Pattern>> = names.iter().map(|n| san_pattern(n).map_err(|e| at.add("upstream_tls.subject_alt_names", e.to_string())).ok()).collect();
    parsed.into_iter().collect::<Option<Vec<_>>>().map(Some)
}

/// Keepalive settings that would never probe or would probe continuously are refused.
fn keepalive(k: &TcpKeepalive, at: &mut At<'_, '_>) {
    for (field, value) in [("tcp_keepalive.time", k.time), ("tcp_keepalive.interval", k.interval)] {
        if value < Duration::from_secs(1) {
            at.add(field, "must be at least 1s (the kernel counts keepalive in whole seconds)");
        }
    }
    if !(1..=127).contains(&k.probes) {
        at.add("tcp_keepalive.probes", "must be between 1 and 127 (the kernel's limit)");
    }
}

fn unique_names<'r>(report: &mut Report<'_>, kind: &str, names: impl Iterator<Item = (Range<usize>, &'r str)>) {
    let mut seen = HashSet::new();
    for (i, (span, name)) in names.enumerate() {
        if name.is_empty() {
            report.add(&span, format!("{kind}[{i}].name"), "must not be empty: give it a unique name");
        } else if !seen.insert(name) {
            report.add(&span, format!("{kind}[{i}].name"), format!("{kind} name {name:?} is used twice: names must be unique"));
        }
    }
}

/// A `bundle` holds the key and the chain: a `cert` or `key` beside it would be a
/// second, possibly different, credential.
/// Default PostgreSQL CancelRequests per second per source address: far above what
/// real clients send (one per cancelled query), far below a key-guessing loop.
const DEFAULT_CANCELS_PER_SECOND: u32 = 10;

/// A listener's `limits`, checked, defaults applied.
fn limits(raw: &RawListener, at: &mut At<'_, '_>) -> Option<Limits> {
    let l = &raw.limits;
    let mut clean = true;
    for (field, value) in [
        ("connections_per_second_per_source", l.connections_per_second_per_source),
        ("burst", l.burst),
        ("concurrent_per_source", l.concurrent_per_source),
        ("connections_per_second_per_identity", l.connections_per_second_per_identity),
        ("concurrent_per_identity", l.concurrent_per_identity),
        ("cancel_requests_per_second_per_source", l.cancel_requests_per_second_per_source),
    ] {
        if value == Some(0) {
            at.add(&format!("limits.{field}"), "must be at least 1 (remove it for no limit)");
            clean = false;
        }
    }
    let rates = [l.connections_per_second_per_source, l.connections_per_second_per_identity];
    if l.burst.is_some() && rates.iter().all(Option::is_none) {
        at.add("limits.burst", "a burst belongs to a rate: set connections_per_second_per_source or connections_per_second_per_identity");
        clean = false;
    }
    if raw.tls.is_none() && (l.connections_per_second_per_identity.is_some() || l.concurrent_per_identity.is_some()) {
        at.add("limits", "identity limits need client certificates: a plain listener has no identity to count (use the per_source limits)");
        clean = false;
    }
    // Without `burst`, twice the rate: a client reconnecting a pool at once is not a flood.
    let rate = |per_second: Option<u32>| per_second.map(|per_second| Rate { per_second, burst: l.burst.unwrap_or(per_second.saturating_mul(2)).max(1) });
    let cancels = l.cancel_requests_per_second_per_source.unwrap_or(DEFAULT_CANCELS_PER_SECOND);
    clean.then(|| Limits {
        per_source: rate(l.connections_per_second_per_source),
        concurrent_per_source: l.concurrent_per_source,
        per_identity: rate(l.connections_per_second_per_identity),
        concurrent_per_identity: l.concurrent_per_identity,
        cancels_per_source: Rate { per_second: cancels, burst: cancels.saturating_mul(2) },
    })
}

/// `trust_domains` with every name checked as a SPIFFE trust domain; empty when absent.
fn trust_domains(tls: &RawTls, field: &str, at: &mut At<'_, '_>) -> Option<BTreeMap<String, PathBuf>> {
    let Some(domains) = &tls.trust_domains else { return Some(BTreeMap::new()) };
    let field = format!("{field}.trust_domains");
    if domains.is_empty() {
        at.add(&field, "empty: map at least one trust domain to its CA bundle, e.g. { \"a.example\" = \"/certs/a/ca.crt\" }, or remove it");
        return None;
    }
    let mut clean = true;
    for name in domains.keys() {
        if let Err(reason) = crate::trust::check_trust_domain_name(name) {
            at.add(&field, format!("{name:?} is not a SPIFFE trust domain name: {reason}"));
            clean = false;
        }
    }
    clean.then(|| domains.clone())
}

fn bundle_alone(tls: &RawTls, field: &str, at: &mut At<'_, '_>) {
    if tls.bundle.is_some() && (tls.cert.is_some() || tls.key.is_some()) {
        at.add(&format!("{field}.bundle"), "a bundle already holds the key and the chain: give either `bundle` or `cert` and `key`");
    }
}

fn distinct_addresses(listeners: &[Option<Spanned<ListenerConfig>>], report: &mut Report<'_>) {
    let mut bound: HashMap<SocketAddr, &str> = HashMap::new();
    for (i, l) in listeners.iter().enumerate() {
        let Some(l) = l else { continue };
        let listener = l.get_ref();
        // Port 0 asks the kernel for a free port: any number of listeners may.
        if listener.address.port() == 0 {
            continue;
        }
        let owner = *bound.entry(listener.address).or_insert(&listener.name);
        if owner != listener.name {
            report.add(
                &l.span(),
                format!("listener[{i}] ({}).address", listener.name),
                format!("{} is already bound by listener {owner:?}: give each listener its own address", listener.address),
            );
        }
    }
}

/// "no listener is named ..." with the names there are, and the likely one.
fn missing(kind: &str, name: &str, known: &[&str]) -> String {
    let mut known = known.to_vec();
    known.sort_unstable();
    known.dedup();
    let list = if known.is_empty() { format!("no {kind} is defined") } else { format!("{kind}s: {}", known.join(", ")) };
    match did_you_mean(name, &known) {
        Some(close) => format!("no {kind} is named {name:?}: did you mean {close:?}? ({list})"),
        None => format!("no {kind} is named {name:?} ({list})"),
    }
}
