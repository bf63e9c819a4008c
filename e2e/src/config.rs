//! Test configurations without retyping TOML: listeners and routes are built from the
//! few settings a test cares about, bind port 0 unless told otherwise, and the running
//! gateway says which port each got ([`crate::Gateway::port`]).
//!
//! ```ignore
//! let config = Config::new()
//!     .listener(Listener::mutual("mtls", &pki.path("ingress")).set("max_connections", 5))
//!     .route(Route::to("echo", echo.port).hosts(&[SERVICE_HOST]));
//! let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
//! let port = ingress.port("mtls");
//! ```

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::Path;

/// A whole configuration file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    listeners: Vec<Listener>,
    routes: Vec<Route>,
    extra: String,
}

impl Config {
    /// An empty configuration.
    pub fn new() -> Config {
        Config::default()
    }

    /// Adds a `[[listener]]`.
    pub fn listener(mut self, listener: Listener) -> Config {
        self.listeners.push(listener);
        self
    }

    /// Adds a `[[route]]`.
    pub fn route(mut self, route: Route) -> Config {
        self.routes.push(route);
        self
    }

    /// Appends raw TOML (a `[resolver]` or `[process]` table, say).
    pub fn raw(mut self, toml: &str) -> Config {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    /// The file's text.
    pub fn toml(&self) -> String {
        let mut out = String::new();
        for listener in &self.listeners {
            out.push_str(&listener.table.toml("listener"));
        }
        for route in &self.routes {
            out.push_str(&route.table.toml("route"));
        }
        out.push_str(&self.extra);
        out
    }
}

/// `key = value` lines of one table, in order.
#[derive(Clone, Debug, Default)]
struct Table(Vec<(String, String)>);

impl Table {
    fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key.to_owned(), value)),
        }
    }

    fn toml(&self, name: &str) -> String {
        let mut out = format!("\n[[{name}]]\n");
        for (key, value) in &self.0 {
            let _ = writeln!(out, "{key} = {value}");
        }
        out
    }
}

/// A TOML string literal.
pub fn quoted(text: &str) -> String {
    format!("{text:?}")
}

/// A TOML array of string literals (`hosts`, `allow`, `subject_alt_names`).
pub fn list(items: &[&str]) -> String {
    format!("[{}]", items.iter().map(|item| quoted(item)).collect::<Vec<_>>().join(", "))
}

/// A path as a TOML string literal.
pub fn quoted_path(path: &Path) -> String {
    quoted(&path.display().to_string())
}

/// An inline table `{ key = value, ... }` of TOML values, in order: a `tls` or
/// `upstream_tls` table with more than [`tls`] gives.
pub fn inline(fields: &[(&str, String)]) -> String {
    let fields = fields.iter().map(|(key, value)| format!("{key} = {value}")).collect::<Vec<_>>().join(", ");
    format!("{{ {fields} }}")
}

/// A `{ mode = ..., dir = ... }` TLS table for a Secret directory.
pub fn tls(mode: &str, secret: &Path) -> String {
    inline(&[("mode", quoted(mode)), ("dir", quoted_path(secret))])
}

/// One `[[listener]]`.
#[derive(Clone, Debug)]
pub struct Listener {
    table: Table,
}

impl Listener {
    fn named(name: &str) -> Listener {
        let mut table = Table::default();
        table.set("name", quoted(name));
        table.set("address", quoted("127.0.0.1:0"));
        Listener { table }
    }

    /// A plain listener: every connection takes `route`.
    pub fn plain(name: &str, route: &str) -> Listener {
        Listener::named(name).set("route", quoted(route))
    }

    /// A mutual-TLS listener presenting the Secret `secret` and verifying clients
    /// against its `ca.crt`.
    pub fn mutual(name: &str, secret: &Path) -> Listener {
        Listener::with_tls(name, tls("mutual", secret))
    }

    /// A TLS listener with the `tls` table `table` (an [`inline`] one with files, a CRL
    /// or a minimum version).
    pub fn with_tls(name: &str, table: String) -> Listener {
        Listener::named(name).set("tls", table)
    }

    /// Binds `127.0.0.1:port` instead of port 0.
    pub fn port(self, port: u16) -> Listener {
        self.at(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// Binds `address` (another loopback address, say) instead of `127.0.0.1:0`.
    pub fn at(self, address: SocketAddr) -> Listener {
        self.set("address", quoted(&address.to_string()))
    }

    /// Sets any field to a TOML value (`"\"2s\""`, `5`, `"{ ... }"`).
    pub fn set(mut self, key: &str, value: impl ToString) -> Listener {
        self.table.set(key, value.to_string());
        self
    }
}

/// One `[[route]]`.
#[derive(Clone, Debug)]
pub struct Route {
    table: Table,
}

impl Route {
    /// A route to `host:port`.
    pub fn new(name: &str, upstream: &str) -> Route {
        let mut table = Table::default();
        table.set("name", quoted(name));
        table.set("upstream", quoted(upstream));
        Route { table }
    }

    /// A route to several endpoints (`upstreams`), each `(host:port, priority)`.
    pub fn several(name: &str, endpoints: &[(&str, u32)]) -> Route {
        let list: Vec<String> = endpoints.iter().map(|(address, priority)| format!("{{ address = {}, priority = {priority} }}", quoted(address))).collect();
        let mut table = Table::default();
        table.set("name", quoted(name));
        table.set("upstreams", format!("[{}]", list.join(", ")));
        Route { table }
    }

    /// A route to `127.0.0.1:port`.
    pub fn to(name: &str, port: u16) -> Route {
        Route::new(name, &format!("127.0.0.1:{port}"))
    }

    /// The SNI hosts that select it.
    pub fn hosts(self, hosts: &[&str]) -> Route {
        self.set("hosts", list(hosts))
    }

    /// Originates mutual TLS with the Secret `secret`, sending and verifying `sni`.
    pub fn mutual_origination(self, secret: &Path, sni: &str) -> Route {
        self.set("upstream_tls", inline(&[("mode", quoted("mutual")), ("dir", quoted_path(secret)), ("sni", quoted(sni))]))
    }

    /// `protocol = "mysql"` or `"postgres"`: TLS inside the database's protocol.
    pub fn protocol(self, protocol: &str) -> Route {
        self.set("protocol", quoted(protocol))
    }

    /// Plaintext upstream (must be explicit at the egress).
    pub fn plaintext(self) -> Route {
        self.set("upstream_tls", "{ mode = \"disable\" }")
    }

    /// Sets any field to a TOML value.
    pub fn set(mut self, key: &str, value: impl ToString) -> Route {
        self.table.set(key, value.to_string());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_toml_a_test_would_type() {
        let text = Config::new()
            .listener(Listener::mutual("mtls", Path::new("/s")).set("max_connections", 5))
            .route(Route::to("echo", 7).hosts(&["a.test", "b.test"]))
            .raw("[process]\ndrain_timeout = \"1s\"")
            .toml();
        let expected = "\n[[listener]]\nname = \"mtls\"\naddress = \"127.0.0.1:0\"\ntls = { mode = \"mutual\", dir = \"/s\" }\nmax_connections = 5\n\
            \n[[route]]\nname = \"echo\"\nupstream = \"127.0.0.1:7\"\nhosts = [\"a.test\", \"b.test\"]\n[process]\ndrain_timeout = \"1s\"\n";
        assert_eq!(text, expected);
        let parsed = strait::config::Config::parse(Path::new("t.toml"), text.replace("/s", "/nonexistent"), strait::config::Role::Ingress);
        assert!(parsed.is_ok(), "{parsed:?}");
    }

    #[test]
    fn addresses_protocols_and_inline_tables() {
        let tls13 = inline(&[("mode", quoted("mutual")), ("dir", quoted_path(Path::new("/s"))), ("min_version", quoted("1.3"))]);
        let text = Config::new()
            .listener(Listener::plain("plain", "db").at("127.0.0.2:0".parse().unwrap()))
            .listener(Listener::with_tls("tls13", tls13).port(7))
            .route(Route::to("db", 9).hosts(&["db.test"]).protocol("mysql").mutual_origination(Path::new("/c"), "db.test"))
            .toml();
        let expected = "\n[[listener]]\nname = \"plain\"\naddress = \"127.0.0.2:0\"\nroute = \"db\"\n\
            \n[[listener]]\nname = \"tls13\"\naddress = \"127.0.0.1:7\"\ntls = { mode = \"mutual\", dir = \"/s\", min_version = \"1.3\" }\n\
            \n[[route]]\nname = \"db\"\nupstream = \"127.0.0.1:9\"\nhosts = [\"db.test\"]\nprotocol = \"mysql\"\n\
            upstream_tls = { mode = \"mutual\", dir = \"/c\", sni = \"db.test\" }\n";
        assert_eq!(list(&["a", "b\"c"]), "[\"a\", \"b\\\"c\"]");
        assert_eq!(text, expected);
        let parsed = strait::config::Config::parse(Path::new("t.toml"), text, strait::config::Role::Egress);
        assert!(parsed.is_ok(), "{parsed:?}");
    }
}
