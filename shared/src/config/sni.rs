//! SNI host patterns of a route's `hosts`, and the `{sni}` upstream.
//!
//! As in Istio's Gateway `hosts`: a host is an exact DNS name, or `*.` followed by one
//! (`*.db.example.com`): the `*` is the whole leftmost label and stands for one or more
//! labels, so it matches `a.db.example.com` and `x.a.db.example.com` but not
//! `db.example.com` itself. Exact hosts win over wildcards, and a longer wildcard over a
//! shorter one. A bare `*` (every name) is refused: with an `{sni}` upstream it would
//! reach any host a client names.

use rustls_pki_types::ServerName;

/// The host of an upstream that connects to the name the client sent
/// (`upstream = "{sni}:5432"`).
pub const SNI_HOST: &str = "{sni}";

/// Whether `host` is a `*.suffix` pattern.
pub fn is_wildcard(host: &str) -> bool {
    host.starts_with("*.")
}

/// Whether the (lower-case) `name` is matched by the wildcard `pattern` (`*.suffix`).
pub fn wildcard_matches(pattern: &str, name: &str) -> bool {
    pattern.strip_prefix('*').is_some_and(|dot_suffix| name.len() > dot_suffix.len() && name.ends_with(dot_suffix))
}

/// Checks one entry of `hosts`; the error says what is wrong.
pub fn check_host(host: &str) -> Result<(), String> {
    if host == "*" {
        return Err("a bare \"*\" would select every name a client sends: give the suffix, e.g. \"*.db.example.com\"".into());
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(format!("{host:?}: `*` may only be the whole leftmost label, as in Istio's Gateway hosts (\"*.db.example.com\")"));
    }
    let dns = !name.is_empty() && !name.contains(':') && name.parse::<std::net::IpAddr>().is_err() && ServerName::try_from(name).is_ok();
    if !dns {
        return Err(format!("{host:?} is not a DNS name or a \"*.\" wildcard of one (no ports, no IP addresses)"));
    }
    Ok(())
}

/// The port of an `{sni}:port` upstream; `None` when `upstream` is not one.
pub fn dynamic_port(upstream: &str) -> Option<Result<u16, String>> {
    let port = upstream.strip_prefix(SNI_HOST)?.strip_prefix(':');
    Some(match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port != 0 => Ok(port),
        _ => Err(format!("{upstream:?}: an SNI upstream is \"{SNI_HOST}:port\", with a port from 1 to 65535")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_wildcards_only_as_the_leading_label() {
        for good in ["db.example.com", "*.db.example.com", "*.com"] {
            assert_eq!(check_host(good), Ok(()), "{good}");
        }
        for bad in ["*", "a.*.example.com", "*db.example.com", "**.example.com", "*.*.example.com", "db.example.com:5432", "10.0.0.1", "", "*."] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_wildcard_matches_one_or_more_labels_but_not_its_suffix() {
        assert!(wildcard_matches("*.db.example.com", "a.db.example.com"));
        assert!(wildcard_matches("*.db.example.com", "x.a.db.example.com"));
        assert!(!wildcard_matches("*.db.example.com", "db.example.com"));
        assert!(!wildcard_matches("*.db.example.com", "adb.example.com"));
        assert!(!wildcard_matches("*.db.example.com", ".db.example.com"));
    }

    #[test]
    fn sni_upstreams_have_a_port() {
        assert_eq!(dynamic_port("{sni}:5432"), Some(Ok(5432)));
        assert!(matches!(dynamic_port("{sni}"), Some(Err(_))));
        assert!(matches!(dynamic_port("{sni}:0"), Some(Err(_))));
        assert_eq!(dynamic_port("db.example.com:5432"), None);
    }
}
