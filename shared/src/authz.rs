//! Who may use a route: allow-lists of client identities, Istio `principals` style.
//!
//! A pattern is one of:
//! - `*`: any client whose certificate verified (Istio's "any authenticated principal");
//! - a URI, e.g. `spiffe://cluster.local/ns/payments/sa/*`: matches URI SANs; a `*`
//!   matches within one path segment (`/ns/*/sa/client`) or a trailing rest (`/ns/a/*`);
//! - `dns:NAME`: matches a DNS SAN; `dns:*.example.com` matches one label;
//! - `cn:NAME`: matches the subject common name exactly.
//!
//! Istio's `principals: ["cluster.local/ns/payments/sa/api"]` is the SPIFFE ID without
//! its scheme: write `spiffe://cluster.local/ns/payments/sa/api` here.

use std::fmt;

use crate::identity::Identity;

/// One allow-list entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Any verified client.
    Any,
    /// URI SAN glob.
    Uri(String),
    /// DNS SAN, exact or `*.` wildcard.
    Dns(String),
    /// Subject CN, exact.
    CommonName(String),
}

/// A pattern that cannot be parsed, with the reason.
#[derive(Debug, thiserror::Error)]
#[error("{pattern:?} is not an identity pattern: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

impl Pattern {
    /// Parses one allow-list entry.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let failed = |reason| PatternError { pattern: text.to_owned(), reason };
        if text == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(dns) = text.strip_prefix("dns:") {
            if dns.is_empty() || dns.strip_prefix("*.").unwrap_or(dns).contains('*') {
                return Err(failed("a DNS pattern is a name, or *.name for one label"));
            }
            return Ok(Pattern::Dns(dns.to_ascii_lowercase()));
        }
        if let Some(cn) = text.strip_prefix("cn:") {
            return if cn.is_empty() { Err(failed("empty common name")) } else { Ok(Pattern::CommonName(cn.to_owned())) };
        }
        if text.contains("://") {
            return Ok(Pattern::Uri(text.to_owned()));
        }
        Err(failed("use *, a URI such as spiffe://td/ns/NS/sa/SA, dns:NAME or cn:NAME"))
    }

    /// Whether `identity` carries a name this pattern accepts.
    pub fn matches(&self, identity: &Identity) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Uri(glob) => identity.uris.iter().any(|uri| glob_segments(glob, uri)),
            Pattern::Dns(name) => identity.dns.iter().any(|dns| dns_matches(name, dns)),
            Pattern::CommonName(cn) => identity.common_name.as_deref() == Some(cn.as_str()),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Uri(u) => f.write_str(u),
            Pattern::Dns(d) => write!(f, "dns:{d}"),
            Pattern::CommonName(c) => write!(f, "cn:{c}"),
        }
    }
}

/// `*` matches one `/`-separated segment, except as the last segment, where it matches
/// the rest (so `spiffe://td/ns/a/*` covers every service account in namespace `a`).
fn glob_segments(glob: &str, value: &str) -> bool {
    let mut pattern = glob.split('/').peekable();
    let mut parts = value.split('/');
    while let Some(p) = pattern.next() {
        let last = pattern.peek().is_none();
        if p == "*" && last {
            return parts.next().is_some_and(|s| !s.is_empty());
        }
        match parts.next() {
            Some(s) if p == "*" && !s.is_empty() => {}
            Some(s) if s == p => {}
            _ => return false,
        }
    }
    parts.next().is_none()
}

fn dns_matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.split_once('.').is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == pattern,
    }
}

/// A route's allow-list; empty means any verified client.
#[derive(Clone, Debug, Default)]
pub struct AllowList(pub Vec<Pattern>);

impl AllowList {
    /// Whether the client may use the route. Without a client certificate (simple TLS
    /// or a plain listener) only an empty list allows.
    pub fn allows(&self, identity: Option<&Identity>) -> bool {
        if self.0.is_empty() {
            return true;
        }
        identity.is_some_and(|id| self.0.iter().any(|p| p.matches(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spiffe(uri: &str) -> Identity {
        Identity { uris: vec![uri.into()], ..Identity::default() }
    }

    #[test]
    fn spiffe_globs_match_by_segment() {
        let p = Pattern::parse("spiffe://cluster.local/ns/payments/sa/*").unwrap();
        assert!(p.matches(&spiffe("spiffe://cluster.local/ns/payments/sa/api")));
        assert!(!p.matches(&spiffe("spiffe://cluster.local/ns/default/sa/api")));
        assert!(!p.matches(&spiffe("spiffe://cluster.local/ns/payments/sa/")));
        let ns = Pattern::parse("spiffe://cluster.local/ns/*/sa/client").unwrap();
        assert!(ns.matches(&spiffe("spiffe://cluster.local/ns/a/sa/client")));
        assert!(!ns.matches(&spiffe("spiffe://cluster.local/ns/a/sa/other")));
        assert!(!ns.matches(&spiffe("spiffe://other.domain/ns/a/sa/client")));
        let exact = Pattern::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        assert!(!exact.matches(&spiffe("spiffe://cluster.local/ns/a/sa/b/c")));
    }

    #[test]
    fn dns_and_cn_patterns() {
        let id = Identity { dns: vec!["Client.Example.com".into()], common_name: Some("egress".into()), ..Identity::default() };
        assert!(Pattern::parse("dns:client.example.com").unwrap().matches(&id));
        assert!(Pattern::parse("dns:*.example.com").unwrap().matches(&id));
        assert!(!Pattern::parse("dns:*.com").unwrap().matches(&id));
        assert!(Pattern::parse("cn:egress").unwrap().matches(&id));
        assert!(!Pattern::parse("cn:Egress").unwrap().matches(&id));
        assert!(Pattern::parse("dns:a*.b").is_err());
        assert!(Pattern::parse("dns:*.*.b").is_err());
        assert!(Pattern::parse("dns:éa.b").is_ok());
        assert!(Pattern::parse("client").is_err());
    }

    #[test]
    fn empty_list_allows_and_certificateless_clients_fail_a_list() {
        assert!(AllowList::default().allows(None));
        let list = AllowList(vec![Pattern::Any]);
        assert!(!list.allows(None));
        assert!(list.allows(Some(&Identity::default())));
    }

    #[test]
    fn allow_list_edge_cases() {
        // A trailing `*` covers the rest of the path, a middle one exactly one segment.
        let namespace = Pattern::parse("spiffe://cluster.local/ns/a/*").unwrap();
        assert!(namespace.matches(&spiffe("spiffe://cluster.local/ns/a/sa/x")));
        assert!(!namespace.matches(&spiffe("spiffe://cluster.local/ns/a")));
        let exact = Pattern::parse("spiffe://cluster.local/ns/a").unwrap();
        assert!(!exact.matches(&spiffe("spiffe://cluster.local/ns/a/")), "a trailing slash is another ID");
        // Any of a certificate's URIs may match; kinds never cross.
        let two = Identity { uris: vec!["spiffe://x/ns/b/sa/b".into(), "spiffe://cluster.local/ns/a/sa/y".into()], ..Identity::default() };
        assert!(namespace.matches(&two));
        let dns_only = Identity { dns: vec!["cluster.local".into()], ..Identity::default() };
        assert!(!namespace.matches(&dns_only));
        assert!(!Pattern::parse("cn:cluster.local").unwrap().matches(&dns_only), "no CN, no match");
        // One wildcard label: not the bare domain, not two labels deep.
        let wildcard = Pattern::parse("dns:*.Example.com").unwrap();
        let dns = |name: &str| Identity { dns: vec![name.into()], ..Identity::default() };
        assert!(wildcard.matches(&dns("a.example.COM")));
        assert!(!wildcard.matches(&dns("example.com")));
        assert!(!wildcard.matches(&dns("a.b.example.com")));
        assert!(!wildcard.matches(&dns(".example.com")));
        // A list allows when any entry does; order does not matter.
        let list = AllowList(vec![Pattern::parse("cn:nobody").unwrap(), wildcard]);
        assert!(list.allows(Some(&dns("api.example.com"))));
        assert!(!list.allows(Some(&dns("api.example.org"))));
        assert_eq!(Pattern::parse("dns:*.Example.com").unwrap().to_string(), "dns:*.example.com");
    }
}
