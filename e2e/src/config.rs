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

/// A `{ mode = ..., dir = ... }` TLS table for a Secret directory.
pub fn tls(mode: &str, secret: &Path) -> String {
    format!("{{ mode = {}, dir = {} }}", quoted(mode), quoted(&secret.display().to_string()))
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
        Listener::named(name).set("tls", tls("mutual", secret))
    }

    /// A TLS listener with `tls` given as a TOML inline table (for settings beyond a
    /// Secret directory: `bundle`, `ca`, versions, ...).
    pub fn named_tls(name: &str, tls: &str) -> Listener {
        Listener::named(name).set("tls", tls)
    }

    /// Binds `127.0.0.1:port` instead of port 0.
    pub fn port(self, port: u16) -> Listener {
        self.set("address", quoted(&format!("127.0.0.1:{port}")))
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

    /// A route to `127.0.0.1:port`.
    pub fn to(name: &str, port: u16) -> Route {
        Route::new(name, &format!("127.0.0.1:{port}"))
    }

    /// The SNI hosts that select it.
    pub fn hosts(self, hosts: &[&str]) -> Route {
        let list = hosts.iter().map(|h| quoted(h)).collect::<Vec<_>>().join(", ");
        self.set("hosts", format!("[{list}]"))
    }

    /// Originates mutual TLS with the Secret `secret`, sending and verifying `sni`.
    pub fn mutual_origination(self, secret: &Path, sni: &str) -> Route {
        let value = format!("{{ mode = \"mutual\", dir = {}, sni = {} }}", quoted(&secret.display().to_string()), quoted(sni));
        self.set("upstream_tls", value)
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
}
