//! The configuration file: its schema, role defaults and validation.
//!
//! One schema serves both binaries, shaped for operators who know Istio: a listener is a
//! Gateway server (a port, optional TLS termination), a route is a ServiceEntry plus its
//! DestinationRule (SNI hosts, an upstream, origination TLS). Everything that can be
//! checked without touching the network is checked here, and *every* problem in a file
//! is reported at once, each with the file, the line and column, the field, and a fix.
//!
//! The layers, in the order a file goes through them: `schema` is the file as written
//! (what serde reads), `fields` finds every unknown field name, `validate` checks the
//! entries against each other and the role, and `model` is the checked result that the
//! rest of the crate reads — an upstream is a [`HostPort`], cipher suites and identity
//! patterns are parsed, credential files come in pairs. This module is the lowest layer
//! of the crate: it uses rustls' own value types (cipher suites, server names) but
//! nothing of [`crate::tls`], which builds rustls configurations from these types.

pub mod endpoints;
mod fields;
mod model;
pub mod proxy;
mod schema;
pub mod sni;
mod validate;
mod values;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_spanned::Spanned;
use toml::de::{DeTable, DeValue};

pub use endpoints::{Endpoint, HealthCheck, HealthCheckKind, OutlierDetection};
pub use model::{CertKey, DownstreamTls, HboneRoute, Limits, ListenerConfig, ListenerKind, ListenerTls, Rate, RouteConfig, TlsPolicy, UpstreamTls};
pub use proxy::{ProxyProtocol, ProxyVersion};
pub use schema::{
    AdminSettings, HealthSettings, MetricsSettings, PeerAuth, ProcessSettings, Protocol, ResolverSettings, SslMode, TcpKeepalive, TelemetrySettings, TlsMode,
    TlsVersion, Transport,
};
pub use values::{CipherSuite, HostPort};

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

/// One problem in a configuration file (or in a file it names), located as precisely as
/// the file allows. Displays as `file:line:column: field: message`, where the message
/// says how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Finding {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line of the entry (or of the field, for unknown fields and wrong types).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Path of the field, e.g. `listener[1] (mysql).route`.
    pub field: String,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the configuration: {source}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// TOML syntax: the parser stops at the first error, so this is always one.
    #[error("{file}:{line}:{column}: {message}")]
    Parse {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Every problem found in a file that parsed — unknown fields, values of the wrong
    /// type, settings that contradict each other or are unsafe — or in the credential
    /// files it names. Never empty; displayed one finding per line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Finding>),
}

impl ConfigError {
    /// How many problems this error reports.
    pub fn count(&self) -> usize {
        match self {
            ConfigError::Invalid(findings) => findings.len(),
            _ => 1,
        }
    }
}

fn lines(findings: &[Finding]) -> String {
    findings.iter().map(Finding::to_string).collect::<Vec<_>>().join("\n")
}

/// The whole file, checked, with role defaults applied.
#[derive(Debug, Serialize)]
pub struct Config {
    /// Ports to accept on (`[[listener]]`).
    #[serde(rename = "listener")]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Where accepted streams go (`[[route]]`).
    #[serde(rename = "route")]
    pub routes: Vec<Spanned<RouteConfig>>,
    /// How upstream names are resolved.
    pub resolver: ResolverSettings,
    /// Process-wide behaviour: shutdown and certificate warnings.
    pub process: ProcessSettings,
    /// The admin HTTP port (config dump, log level; loopback by default).
    pub admin: AdminSettings,
    /// The health port kubelets probe (Istio's 15021).
    pub health: HealthSettings,
    /// The Prometheus scrape port (Istio's 15090 `/stats/prometheus`).
    pub metrics: MetricsSettings,
    /// OpenTelemetry export.
    pub telemetry: TelemetrySettings,
    /// File the configuration came from; every later error points back to it.
    pub path: PathBuf,
    /// The file's text, kept to turn byte spans into line and column.
    #[serde(skip)]
    source: String,
}

/// Collects findings while a file is checked.
struct Report<'a> {
    file: &'a Path,
    text: &'a str,
    findings: Vec<(usize, Finding)>,
    /// Entries with an unknown field: their other findings would only echo the typo
    /// (a misspelt `route` is also a missing `route`), so they wait for the fix.
    quiet: Vec<usize>,
    /// Findings asked for, including quieted ones: what "did this entry pass" counts.
    asked: usize,
}

impl<'a> Report<'a> {
    fn new(file: &'a Path, text: &'a str) -> Self {
        Report { file, text, findings: Vec::new(), quiet: Vec::new(), asked: 0 }
    }

    /// A finding located at the start of `span`.
    fn add(&mut self, span: &Range<usize>, field: impl Into<String>, message: impl Into<String>) {
        self.asked += 1;
        if !self.quiet.contains(&span.start) {
            self.push(span, field.into(), message.into());
        }
    }

    /// A finding that is never quieted (unknown fields, wrong types).
    fn add_always(&mut self, span: &Range<usize>, field: String, message: String) {
        self.asked += 1;
        self.push(span, field, message);
    }

    fn push(&mut self, span: &Range<usize>, field: String, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.findings.push((span.start, Finding { file: self.file.to_owned(), line, column, field, message }));
    }

    /// Findings asked for so far.
    fn count(&self) -> usize {
        self.asked
    }

    /// Every finding, in file order.
    fn finish(mut self) -> Vec<Finding> {
        self.findings.sort_by_key(|(offset, _)| *offset);
        self.findings.into_iter().map(|(_, f)| f).collect()
    }
}

/// The sections of a file that deserialized, before validation.
struct Sections {
    raw: validate::Raw,
    resolver: ResolverSettings,
    process: ProcessSettings,
    admin: AdminSettings,
    health: HealthSettings,
    metrics: MetricsSettings,
    telemetry: TelemetrySettings,
}

impl Config {
    /// Reads, parses and validates `path` for `role`.
    pub fn load(path: &Path, role: Role) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { file: path.to_owned(), source })?;
        Self::parse(path, text, role)
    }

    /// Parses and validates configuration text; `path` is only used in messages.
    pub fn parse(path: &Path, text: String, role: Role) -> Result<Config, ConfigError> {
        let (sections, checked) = check(path, &text, role)?;
        Ok(Config {
            listeners: checked.listeners,
            routes: checked.routes,
            resolver: sections.resolver,
            process: sections.process,
            admin: sections.admin,
            health: sections.health,
            metrics: sections.metrics,
            telemetry: sections.telemetry,
            path: path.to_owned(),
            source: text,
        })
    }

    /// Names of the TLS listeners whose SNI table holds `route`.
    pub fn tls_listeners_of<'a>(&'a self, route: &'a RouteConfig) -> impl Iterator<Item = &'a str> + 'a {
        self.listeners
            .iter()
            .map(|l| l.get_ref())
            .filter(|l| l.tls().is_some())
            .filter(move |l| route.listeners.as_ref().is_none_or(|names| names.contains(&l.name)))
            .map(|l| l.name.as_str())
    }

    /// Every file whose change should trigger a reload: the config itself and each
    /// credential file it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        let pair = |c: &CertKey| [c.cert.clone(), c.key.clone()];
        for l in self.listeners.iter().filter_map(|l| l.get_ref().tls()) {
            files.extend(l.credential.iter().flat_map(pair).chain(l.ca.clone()).chain(l.ca_crl.clone()).chain(l.trust_domains.values().cloned()));
        }
        for r in self.routes.iter().map(|r| r.get_ref()) {
            if let Some(up) = &r.upstream_tls {
                files.extend(up.client.iter().flat_map(pair).chain(up.ca.clone()).chain(up.trust_domains.values().cloned()));
            }
            if let Some(down) = &r.downstream_tls {
                files.extend(pair(&down.credential).into_iter().chain(down.ca.clone()).chain(down.ca_crl.clone()));
            }
        }
        files.sort();
        files.dedup();
        files
    }

    /// A finding at a listener or route entry, for problems found after parsing (a
    /// certificate that fails to load, say).
    pub fn finding(&self, span: Range<usize>, field: String, message: String) -> Finding {
        let (line, column) = line_col(&self.source, span.start);
        Finding { file: self.path.clone(), line, column, field, message }
    }
}

/// Every check, in order: syntax (one error: the parser stops), then field names and
/// value types (all of them), then the entries' meaning (all of it).
fn check(path: &Path, text: &str, role: Role) -> Result<(Sections, validate::Checked), ConfigError> {
    let root = DeTable::parse(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError::Parse { file: path.to_owned(), line, column, message: e.message().trim_end().to_owned() }
    })?;
    let root = root.get_ref();
    let mut report = Report::new(path, text);
    for unknown in fields::unknown_fields(root) {
        if let Some(entry) = &unknown.entry {
            report.quiet.push(entry.start);
        }
        report.add_always(&unknown.span, unknown.field, unknown.message);
    }
    let sections = read_sections(root, &mut report);
    let checked = sections.as_ref().and_then(|s| validate::validate(&s.raw, role, &mut report));
    let mut findings = report.finish();
    match (sections, checked) {
        (Some(sections), Some(checked)) if findings.is_empty() => Ok((sections, checked)),
        _ => {
            if findings.is_empty() {
                findings.push(Finding {
                    file: path.to_owned(),
                    line: 1,
                    column: 1,
                    field: String::new(),
                    message: "the configuration was refused without a reason (a bug: please report it with this file)".into(),
                });
            }
            Err(ConfigError::Invalid(findings))
        }
    }
}

/// Deserializes each entry and section on its own, so that a value of the wrong type in
/// one does not hide those in the others. `None` when an entry could not be read at all.
fn read_sections(root: &DeTable<'_>, report: &mut Report<'_>) -> Option<Sections> {
    let listeners = entries(root, "listener", report);
    let routes = entries(root, "route", report);
    let resolver = section(root, "resolver", report);
    let process = section(root, "process", report);
    let admin: Option<AdminSettings> = section(root, "admin", report);
    let health = section(root, "health", report);
    let metrics = section(root, "metrics", report);
    let telemetry = section(root, "telemetry", report);
    if let (Some(admin), Some(value)) = (&admin, root.get("admin")) {
        if admin.enabled && !admin.address.ip().is_loopback() && !admin.allow_remote {
            let message = format!("{} is reachable from other hosts, and the admin port shows the configuration and changes the log level: bind 127.0.0.1, or set allow_remote = true (probes and scrapes have [health] and [metrics])", admin.address);
            report.add_always(&value.span(), "admin.address".into(), message);
        }
    }
    Some(Sections {
        raw: validate::Raw { listeners: listeners?, routes: routes? },
        resolver: resolver?,
        process: process?,
        admin: admin?,
        health: health?,
        metrics: metrics?,
        telemetry: telemetry?,
    })
}

fn entries<T: DeserializeOwned>(root: &DeTable<'_>, key: &str, report: &mut Report<'_>) -> Option<Vec<Spanned<T>>> {
    let Some(value) = root.get(key) else { return Some(Vec::new()) };
    let DeValue::Array(items) = value.get_ref() else {
        return deserialize(root, value.clone(), report).map(|(entries, _)| entries);
    };
    let read: Vec<Option<Spanned<T>>> = items
        .iter()
        .map(|item| {
            let (entry, guessed) = deserialize(root, item.clone(), report)?;
            if guessed {
                report.quiet.push(item.span().start);
            }
            Some(entry)
        })
        .collect();
    read.into_iter().collect()
}

fn section<T: DeserializeOwned + Default>(root: &DeTable<'_>, key: &str, report: &mut Report<'_>) -> Option<T> {
    match root.get(key) {
        Some(value) => deserialize(root, value.clone(), report).map(|(section, _)| section),
        None => Some(T::default()),
    }
}

/// One value into `T`. serde stops at the first value of the wrong type; so each one is
/// reported (at the value, named by its path), taken out, and the rest read again, until
/// the value reads. The flag says whether anything was taken out: the result then holds
/// defaults where the file had mistakes. `None` when it cannot be read even so (a
/// required field is missing).
fn deserialize<T: DeserializeOwned>(root: &DeTable<'_>, mut value: Spanned<DeValue<'_>>, report: &mut Report<'_>) -> Option<(T, bool)> {
    let whole = value.span();
    let mut guessed = false;
    // Each round takes one key out, so the keys of the value bound the rounds.
    loop {
        match T::deserialize(toml::de::ValueDeserializer::from(value.clone())) {
            Ok(read) => return Some((read, guessed)),
            Err(e) => {
                let span = e.span().unwrap_or(whole.clone());
                report.add_always(&span, fields::path_at(root, span.start), fields::suggest_variant(e.message().trim_end()));
                if !fields::remove_at(value.get_mut(), span.start) {
                    return None;
                }
                guessed = true;
            }
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |nl| before.len() - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests;
