//! The HBONE settings as a file states them: `transport = "hbone"` on a mutual-TLS
//! listener (default port 15008, routes by `:authority` host) and on a route (its
//! `authority`, pool bounds, mutual-TLS origination with ALPN h2); every misuse is a
//! finding naming file, line and field.

use std::path::Path;
use std::time::Duration;

use strait::certs::{KeyType, ReferenceOptions};
use strait::config::{Config, ConfigError, Finding, Role};
use strait::route::RouteTable;

fn findings(role: Role, text: &str) -> Vec<String> {
    match Config::parse(Path::new("hbone.toml"), text.to_owned(), role) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid(found)) => found.iter().map(Finding::to_string).collect(),
        Err(other) => panic!("not a validation error: {other}"),
    }
}

fn has(found: &[String], needle: &str) {
    assert!(found.iter().any(|f| f.contains(needle)), "no finding with {needle:?} in {found:#?}");
}

#[test]
fn an_hbone_listener_and_route_parse_with_their_defaults() {
    let text = r#"
[[listener]]
name = "hbone"
transport = "hbone"
tls = { mode = "mutual", dir = "/certs/ingress" }

[[route]]
name = "db"
hosts = ["db.example.com"]
upstream = "db.default.svc:3306"

[[route]]
name = "onward"
upstream = "ingress.b.example:15008"
upstream_tls = { mode = "mutual", dir = "/certs/egress", sni = "ingress.b.example" }
transport = "hbone"
authority = "db.example.com:3306"
"#;
    let config = Config::parse(Path::new("hbone.toml"), text.to_owned(), Role::Ingress).unwrap();
    assert_eq!(config.listeners[0].get_ref().address.to_string(), "0.0.0.0:15008");
    let hbone = config.routes[1].get_ref().hbone.clone().expect("an HBONE route");
    assert_eq!((hbone.authority.to_string().as_str(), hbone.max_streams, hbone.idle_timeout), ("db.example.com:3306", 100, Duration::from_secs(60)));
    assert!(config.routes[0].get_ref().hbone.is_none());
}

#[test]
fn misused_hbone_settings_are_findings_with_line_and_field() {
    let found = findings(
        Role::Egress,
        r#"
[[listener]]
name = "plain-hbone"
address = "127.0.0.1:3306"
route = "db"
transport = "hbone"

[[listener]]
name = "simple-hbone"
transport = "hbone"
tls = { mode = "simple", cert = "/c/tls.crt", key = "/c/tls.key" }
default_route = "db"

[[route]]
name = "db"
upstream = "ingress.b.example:15008"
upstream_tls = { mode = "simple", ca = "/c/ca.crt" }
transport = "hbone"
hbone_max_streams = 0
hbone_idle_timeout = "0s"
protocol = "mysql"

[[route]]
name = "direct"
upstream = "db.example.com:3306"
upstream_tls = { mode = "disable" }
authority = "db.example.com:3306"
"#,
    );
    has(&found, "hbone.toml:2:1: listener[0] (plain-hbone).transport: an HBONE listener terminates mutual TLS");
    has(&found, "listener[1] (simple-hbone).tls.mode: HBONE is mutual TLS");
    has(&found, "listener[1] (simple-hbone).default_route: an HBONE listener routes each stream by its :authority");
    has(&found, "hbone.toml:14:1: route[0] (db).upstream_tls: HBONE runs inside mutual TLS");
    has(&found, "route[0] (db).authority: an HBONE route names the destination");
    has(&found, "route[0] (db).hbone_max_streams: must be between 1 and 10000");
    has(&found, "route[0] (db).hbone_idle_timeout: must be more than 0");
    has(&found, "route[0] (db).protocol: an HBONE route carries opaque bytes");
    has(&found, "route[1] (direct).authority: only HBONE routes use it");
    let bad_authority = findings(
        Role::Egress,
        r#"
[[listener]]
name = "p"
address = "127.0.0.1:3306"
route = "r"

[[route]]
name = "r"
upstream = "ingress.b.example:15008"
upstream_tls = { mode = "mutual", dir = "/c" }
transport = "hbone"
authority = "db.example.com"
"#,
    );
    has(&bad_authority, "route[0] (r).authority: \"db.example.com\" is not host:port");
}

#[test]
fn a_database_route_named_at_an_hbone_listener_is_refused() {
    let found = findings(
        Role::Ingress,
        r#"
[[listener]]
name = "hbone"
transport = "hbone"
tls = { mode = "mutual", dir = "/certs/ingress" }

[[route]]
name = "pg"
hosts = ["pg.example.com"]
listeners = ["hbone"]
protocol = "postgres"
upstream = "pg.default.svc:5432"
"#,
    );
    has(&found, "listener[0] (hbone).transport: route \"pg\" is protocol \"postgres\", but HBONE streams carry opaque bytes");
}

#[test]
fn streams_are_routed_by_the_host_of_their_authority() {
    let dir = tempfile::tempdir().unwrap();
    let options = ReferenceOptions { host: "db.example.com".into(), trust_domain: "cluster.local".into(), days: 30, key_type: KeyType::EcdsaP256 };
    strait::certs::write_reference(dir.path(), &options).unwrap();
    let text = format!(
        r#"
[[listener]]
name = "hbone"
address = "127.0.0.1:0"
transport = "hbone"
tls = {{ mode = "mutual", dir = "{server}" }}

[[listener]]
name = "mtls"
address = "127.0.0.1:0"
tls = {{ mode = "mutual", dir = "{server}" }}

[[route]]
name = "db"
hosts = ["db.example.com"]
upstream = "127.0.0.1:3306"

[[route]]
name = "pg"
hosts = ["pg.example.com"]
listeners = ["mtls"]
protocol = "postgres"
upstream = "127.0.0.1:5432"
"#,
        server = dir.path().join("ingress").display()
    );
    let config = Config::parse(&dir.path().join("ingress.toml"), text, Role::Ingress).unwrap();
    let table = RouteTable::build(&config).unwrap();
    let routing = table.listener("hbone").unwrap().hbone().expect("an HBONE listener");
    let route = |authority: &str| routing.select(authority).map(|r| r.name.clone());
    assert_eq!(route("db.example.com:3306").as_deref(), Some("db"));
    assert_eq!(route("DB.Example.com:13306").as_deref(), Some("db"), "host case-insensitive, any port");
    assert_eq!(route("pg.example.com:5432"), None, "pg is served at mtls only");
    assert_eq!(route("[::1]:3306"), None);
    assert_eq!(routing.server.alpn_protocols, vec![b"h2".to_vec()]);
    assert!(table.listener("mtls").unwrap().hbone().is_none());
}
