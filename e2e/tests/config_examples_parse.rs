//! Every file in config-examples/ is a valid configuration for its binary (credentials
//! aside: their paths are the operator's).

use std::path::Path;

use strait::config::{Config, Role};

fn parse(name: &str, role: Role) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples").join(name);
    Config::load(&path, role).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn reference_egress_has_mesh_and_plain_listeners() {
    let config = parse("egress.toml", Role::Egress);
    assert_eq!(config.listeners.len(), 2);
    assert_eq!(config.listeners[0].get_ref().address.port(), 15443);
}

#[test]
fn reference_ingress_listens_on_13306() {
    let config = parse("ingress.toml", Role::Ingress);
    assert_eq!(config.listeners[0].get_ref().address.port(), 13306);
}

#[test]
fn redis_third_party_is_an_egress_config() {
    parse("redis-third-party.toml", Role::Egress);
}

#[test]
fn zero_trust_ingress_has_strict_and_permissive_listeners() {
    use strait::config::PeerAuth;
    let config = parse("ingress-zero-trust.toml", Role::Ingress);
    assert_eq!(config.listeners[0].get_ref().peer_auth, PeerAuth::Strict);
    assert_eq!(config.listeners[1].get_ref().peer_auth, PeerAuth::Permissive);
    assert_eq!(config.routes[0].get_ref().allow.len(), 2);
}

#[test]
fn database_examples_parse_for_their_roles() {
    use strait::config::{Protocol, SslMode};
    let mysql = parse("mysql-origination.toml", Role::Egress);
    assert_eq!(mysql.routes[0].get_ref().protocol, Protocol::Mysql);
    let pg = parse("postgres-origination.toml", Role::Egress);
    assert_eq!(pg.routes[0].get_ref().protocol, Protocol::Postgres);
    let termination = parse("database-termination.toml", Role::Ingress);
    assert_eq!(termination.routes[0].get_ref().downstream_ssl_mode(), SslMode::Required);
}
