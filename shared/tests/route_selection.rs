//! How a connection finds its route in a built table: by listener for plain ports, by SNI
//! (case-insensitive) at TLS listeners, the default route for clients without SNI, and
//! `listeners = [...]` keeping a route's hosts off other TLS listeners.

use std::path::Path;

use strait::certs::{KeyType, ReferenceOptions};
use strait::config::{Config, Role};
use strait::route::{RouteTable, Routing, TlsRouting};

fn table(dir: &Path) -> RouteTable {
    let options = ReferenceOptions { host: "db.example.com".into(), trust_domain: "cluster.local".into(), days: 30, key_type: KeyType::EcdsaP256 };
    strait::certs::write_reference(dir, &options).unwrap();
    let server = dir.join("ingress").display().to_string();
    let text = format!(
        r#"
[[listener]]
name = "public"
address = "127.0.0.1:0"
tls = {{ mode = "mutual", dir = "{server}" }}
default_route = "db"

[[listener]]
name = "internal"
address = "127.0.0.1:0"
tls = {{ mode = "mutual", dir = "{server}" }}

[[listener]]
name = "plain"
address = "127.0.0.1:0"
route = "echo"

[[route]]
name = "db"
hosts = ["db.example.com"]
upstream = "127.0.0.1:3306"
upstream_tls = {{ mode = "disable" }}

[[route]]
name = "echo"
hosts = ["echo.example.com"]
listeners = ["internal"]
upstream = "127.0.0.1:7"
upstream_tls = {{ mode = "disable" }}
"#
    );
    let config = Config::parse(&dir.join("egress.toml"), text, Role::Egress).unwrap();
    RouteTable::build(&config).unwrap()
}

fn tls<'a>(table: &'a RouteTable, listener: &str) -> &'a TlsRouting {
    match &table.listener(listener).unwrap().routing {
        Routing::Tls(routing) => routing,
        _ => panic!("{listener} is a TLS listener"),
    }
}

fn route_of(routing: &TlsRouting, sni: Option<&str>) -> Option<String> {
    routing.select(sni).map(|entry| entry.route.name.clone())
}

#[test]
fn sni_default_route_and_per_listener_routes() {
    let dir = tempfile::tempdir().unwrap();
    let table = table(dir.path());

    let public = tls(&table, "public");
    assert_eq!(route_of(public, Some("db.example.com")).as_deref(), Some("db"));
    assert_eq!(route_of(public, Some("DB.Example.COM")).as_deref(), Some("db"), "SNI is case-insensitive");
    assert_eq!(route_of(public, None).as_deref(), Some("db"), "no SNI takes the default route");
    assert_eq!(route_of(public, Some("echo.example.com")), None, "echo is served at `internal` only");
    assert_eq!(route_of(public, Some("unknown.example.com")), None);

    let internal = tls(&table, "internal");
    assert_eq!(route_of(internal, Some("echo.example.com")).as_deref(), Some("echo"));
    assert_eq!(route_of(internal, Some("db.example.com")).as_deref(), Some("db"), "no `listeners`: every TLS listener");
    assert_eq!(route_of(internal, None), None, "no default route: refused");

    match &table.listener("plain").unwrap().routing {
        Routing::Plain(route) => assert_eq!(route.name, "echo"),
        _ => panic!("plain is a plain listener"),
    }
    assert!(table.listener("gone").is_none());
}

#[test]
fn round_robin_starts_each_connection_one_address_further() {
    let dir = tempfile::tempdir().unwrap();
    let table = table(dir.path());
    let route = tls(&table, "public").select(Some("db.example.com")).unwrap().route.clone();
    let firsts: Vec<usize> = (0..6).map(|_| route.first_address(3)).collect();
    assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
    assert_eq!(route.first_address(0), 0, "no addresses: no division by zero");
}
