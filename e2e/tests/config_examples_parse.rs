//! Every file in config-examples/ is a valid configuration for its binary (credentials
//! aside: their paths are the operator's). The folder is walked, so a new example is
//! checked without a line here; the tests after the walk check what particular examples
//! must show.

use std::path::{Path, PathBuf};

use strait::config::{Config, Role};

fn examples() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config-examples");
    dir.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn parse(name: &str, role: Role) -> Config {
    Config::load(&examples().join(name), role).unwrap_or_else(|e| panic!("{e}"))
}

/// Every `*.toml` under `dir`, in subfolders too, sorted.
fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(toml_files(&path));
        } else if path.extension().is_some_and(|x| x == "toml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The role a file's first line names: `# strait-egress ...` or `# strait-ingress ...`.
fn role_of(text: &str) -> Option<Role> {
    let first = text.lines().next()?.strip_prefix("# ")?;
    let word = first.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next()?;
    match word {
        "strait-egress" => Some(Role::Egress),
        "strait-ingress" => Some(Role::Ingress),
        _ => None,
    }
}

#[test]
fn every_example_parses_for_the_role_its_first_line_names() {
    let files = toml_files(&examples());
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match role_of(&text) {
            None => failures.push(format!(
                "{}: the first line must name the binary, `# strait-egress ...` or `# strait-ingress ...` (add that line), not {:?}",
                path.display(),
                text.lines().next().unwrap_or("")
            )),
            Some(role) => {
                if let Err(e) = Config::load(path, role) {
                    failures.push(format!("{} (as {role:?}): {e}", path.display()));
                }
            }
        }
    }
    println!("{} examples checked:\n{}", files.len(), files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join("\n"));
    assert!(failures.is_empty(), "{} of {} examples do not parse:\n{}", failures.len(), files.len(), failures.join("\n"));
    for name in ["egress.toml", "ingress.toml", "database-termination.toml"] {
        assert!(files.contains(&examples().join(name)), "the walk missed {name}: {files:#?}");
    }
}

#[test]
fn the_first_line_names_the_role() {
    assert_eq!(role_of("# strait-egress: the client cluster's egress\n[[listener]]"), Some(Role::Egress));
    assert_eq!(role_of("# strait-ingress with zero-trust policy"), Some(Role::Ingress));
    assert_eq!(role_of("# strait-ingress"), Some(Role::Ingress));
    assert_eq!(role_of("# An example without its role\n# strait-egress"), None);
    assert_eq!(role_of("[[listener]]"), None);
    assert_eq!(role_of("# strait-egressive"), None);
    assert_eq!(role_of(""), None);
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
