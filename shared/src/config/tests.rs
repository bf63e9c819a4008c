use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::authz::Pattern;

fn parse(role: Role, text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text.to_owned(), role)
}

/// The findings of a refused file, one string each.
fn findings(role: Role, text: &str) -> Vec<String> {
    match parse(role, text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(ConfigError::Invalid(found)) => found.iter().map(Finding::to_string).collect(),
        Err(other) => panic!("not a validation error: {other}"),
    }
}

const EGRESS: &str = r#"
[[listener]]
name = "mesh"
tls = { mode = "mutual", dir = "/certs/mesh" }

[[listener]]
name = "mysql"
address = "127.0.0.1:3306"
route = "mysql"

[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "db.example.com:13306"
upstream_tls = { mode = "mutual", dir = "/certs/client" }
"#;

#[test]
fn egress_reference_parses_with_role_defaults() {
    let c = parse(Role::Egress, EGRESS).unwrap();
    assert_eq!(c.listeners[0].get_ref().address, "0.0.0.0:15443".parse::<SocketAddr>().unwrap());
    let up = c.routes[0].get_ref().upstream_tls.as_ref().unwrap();
    assert_eq!(up.client.as_ref().map(|c| c.key.clone()), Some(PathBuf::from("/certs/client/tls.key")));
    assert_eq!(up.ca, Some(PathBuf::from("/certs/client/ca.crt")));
    assert_eq!(c.routes[0].get_ref().connect_timeout, Duration::from_secs(10));
}

#[test]
fn unknown_field_is_located_with_a_suggestion() {
    let text = EGRESS.replace("route = \"mysql\"", "rout = \"mysql\"");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.starts_with("test.toml:9:1: listener[1] (mysql).rout: unknown field `rout`: did you mean `route`?"), "{e}");
    assert!(e.contains("expected one of `name`, `address`"), "{e}");
    // The entry's other findings (a plain listener without `route`) wait for the fix.
    assert_eq!(e.lines().count(), 1, "{e}");
}

#[test]
fn route_to_missing_listener_names_field_and_line() {
    let text = EGRESS.replace("route = \"mysql\"", "route = \"nope\"");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("test.toml:6:1: listener[1] (mysql).route: no route is named \"nope\" (routes: mysql)"), "{e}");
    let text = EGRESS.replace("route = \"mysql\"", "route = \"mysq\"");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("no route is named \"mysq\": did you mean \"mysql\"? (routes: mysql)"), "{e}");
}

#[test]
fn egress_route_without_tls_is_refused() {
    let text = EGRESS.replace("upstream_tls = { mode = \"mutual\", dir = \"/certs/client\" }", "");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("upstream_tls: the egress originates TLS"), "{e}");
}

#[test]
fn ingress_defaults_to_plain_backend_and_13306() {
    let c = parse(
        Role::Ingress,
        r#"
[[listener]]
name = "mtls"
tls = { mode = "mutual", dir = "/certs/server" }
[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "mysql.default.svc:3306"
"#,
    )
    .unwrap();
    assert_eq!(c.listeners[0].get_ref().address.port(), 13306);
    assert!(c.routes[0].get_ref().upstream_tls.is_none(), "plaintext to the in-cluster backend");
}

#[test]
fn duplicate_sni_host_is_refused() {
    let text = format!("{EGRESS}\n[[route]]\nname = \"b\"\nhosts = [\"DB.example.com\"]\nupstream = \"x:1\"\nupstream_tls = {{ mode = \"disable\" }}\n");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("route[1] (b).hosts: SNI host \"DB.example.com\" is already claimed by route \"mysql\""), "{e}");
}

#[test]
fn keepalive_defaults_and_bounds() {
    let c = parse(Role::Egress, EGRESS).unwrap();
    let k = c.routes[0].get_ref().tcp_keepalive;
    assert_eq!(k.bound(), Duration::from_secs(60 + 10 * 9), "today's values: 60 s, then 9 probes 10 s apart");
    let text = EGRESS.replace("route = \"mysql\"", "route = \"mysql\"\ntcp_keepalive = { time = \"5s\", interval = \"1s\", probes = 3 }");
    let c = parse(Role::Egress, &text).unwrap();
    assert_eq!(c.listeners[1].get_ref().tcp_keepalive.bound(), Duration::from_secs(8));
    let text = EGRESS.replace("route = \"mysql\"", "route = \"mysql\"\ntcp_keepalive = { time = \"500ms\" }");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("listener[1] (mysql).tcp_keepalive.time: must be at least 1s"), "{e}");
    let text = EGRESS.replace("upstream = \"db.example.com:13306\"", "upstream = \"db.example.com:13306\"\ntcp_keepalive = { probes = 0 }");
    let e = parse(Role::Egress, &text).unwrap_err().to_string();
    assert!(e.contains("route[0] (mysql).tcp_keepalive.probes"), "{e}");
}

#[test]
fn every_problem_in_a_file_is_reported_with_its_line() {
    let text = r#"
[[listener]]
name = "mesh"
tls = { mode = "mutual", dir = "/certs/mesh" }
handshake_timeout = "0s"

[[listener]]
name = "mysql"
address = "127.0.0.1:3306"
route = "nope"

[[route]]
name = "mysql"
hosts = ["db.example.com"]
upstream = "db.example.com"
upstream_tls = { mode = "mutual", dir = "/certs/client", cipher_suites = ["TLS_RC4"] }
allow = ["client"]
"#;
    let found = findings(Role::Egress, text);
    assert_eq!(
        found,
        [
            "test.toml:2:1: listener[0] (mesh).handshake_timeout: must be more than 0 (it bounds how long a stranger can hold a connection)",
            "test.toml:7:1: listener[1] (mysql).route: no route is named \"nope\" (routes: mysql)",
            "test.toml:12:1: route[0] (mysql).upstream: \"db.example.com\" is not host:port (e.g. \"db.example.com:3306\", \"10.0.0.7:3306\" or \"[::1]:3306\")",
            "test.toml:12:1: route[0] (mysql).allow: \"client\" is not an identity pattern: use *, a URI such as spiffe://td/ns/NS/sa/SA, dns:NAME or cn:NAME",
            &format!("test.toml:12:1: route[0] (mysql).upstream_tls.cipher_suites: unknown cipher suite \"TLS_RC4\"; known: {}", CipherSuite::names().join(", ")),
        ]
    );
}

#[test]
fn every_unknown_field_is_reported_and_other_entries_still_checked() {
    let text = r#"
[[listener]]
name = "mesh"
tls = { mood = "mutual", dir = "/certs/mesh" }

[[listener]]
name = "mysql"
adress = "127.0.0.1:3306"
route = "mysql"

[[route]]
name = "mysql"
upstream = "db.example.com:13306"
upstream_tls = { mode = "mutual", dir = "/certs/client" }
idle_timeout = "0s"

[admin]
enable = false
"#;
    let found = findings(Role::Egress, text);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("test.toml:4:9: listener[0] (mesh).tls.mood: unknown field `mood`: did you mean `mode`?"), "{}", found[0]);
    assert!(found[1].starts_with("test.toml:8:1: listener[1] (mysql).adress: unknown field `adress`: did you mean `address`?"), "{}", found[1]);
    assert_eq!(found[2], "test.toml:11:1: route[0] (mysql).idle_timeout: must be more than 0 (a zero timeout would close every connection at once)");
    assert!(found[3].starts_with("test.toml:18:1: admin.enable: unknown field `enable`: did you mean `enabled`?"), "{}", found[3]);
}

#[test]
fn every_value_of_the_wrong_type_is_reported() {
    let text = EGRESS
        .replace("dir = \"/certs/mesh\" }", "dir = \"/certs/mesh\" }\nhandshake_timeout = \"0s\"")
        .replace("route = \"mysql\"", "route = \"mysql\"\nmax_connections = \"many\"")
        .replace("upstream = \"db.example.com:13306\"", "upstream = \"db.example.com:13306\"\nconnect_timeout = 5\nprotocol = \"mysq\"");
    let text = format!("{text}\n[[route]]\nname = \"b\"\nupstream = \"x:1\"\nupstream_tls = {{ mode = \"mutal\" }}\n");
    let found = findings(Role::Egress, &text);
    assert_eq!(found.len(), 5, "{found:#?}");
    // An entry without a bad value is still checked in full.
    assert!(found[0].starts_with("test.toml:2:1: listener[0] (mesh).handshake_timeout: must be more than 0"), "{}", found[0]);
    assert!(found[1].starts_with("test.toml:11:19: listener[1] (mysql).max_connections: invalid type: string \"many\""), "{}", found[1]);
    assert!(found[2].starts_with("test.toml:17:19: route[0] (mysql).connect_timeout: invalid type: integer `5`"), "{}", found[2]);
    assert!(found[3].starts_with("test.toml:18:12: route[0] (mysql).protocol: unknown variant `mysq`"), "{}", found[3]);
    assert!(found[3].ends_with("did you mean `mysql`?"), "{}", found[3]);
    assert!(found[4].starts_with("test.toml:24:25: route[1] (b).upstream_tls.mode: unknown variant `mutal`"), "{}", found[4]);
}

#[test]
fn a_missing_required_field_stops_before_the_meaning_checks() {
    let text = EGRESS.replace("name = \"mysql\"\nhosts", "hosts");
    let found = findings(Role::Egress, &text);
    assert_eq!(found, ["test.toml:11:1: route[0]: missing field `name`"]);
}

#[test]
fn upstream_or_upstreams_exactly_once_with_checked_endpoints() {
    let none = EGRESS.replace("upstream = \"db.example.com:13306\"", "");
    let found = findings(Role::Egress, &none);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("test.toml:11:1: route[0] (mysql).upstream: missing: give `upstream"), "{found:?}");
    let several = "upstreams = [{ address = \"a.example.com:13306\", priority = 1 }, { address = \"b.example.com:13306\", weight = 3 }]";
    let both = EGRESS.replace("upstream = \"db.example.com:13306\"", &format!("upstream = \"db.example.com:13306\"\n{several}"));
    assert!(findings(Role::Egress, &both)[0].contains("route[0] (mysql).upstreams: give either"), "{:?}", findings(Role::Egress, &both));
    // Two hosts: the origination name must be explicit.
    let text = EGRESS.replace("upstream = \"db.example.com:13306\"", several);
    let found = findings(Role::Egress, &text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("test.toml:11:1: route[0] (mysql).upstream_tls.sni: the upstreams have different hosts"), "{found:?}");
    let text = text.replace("dir = \"/certs/client\" }", "dir = \"/certs/client\", sni = \"db.example.com\" }");
    let route = parse(Role::Egress, &text).unwrap().routes.remove(0).into_inner();
    assert_eq!(route.upstream.to_string(), "b.example.com:13306", "the first of the best priority names the route");
    assert_eq!(route.endpoints.iter().map(|e| (e.priority, e.weight)).collect::<Vec<_>>(), [(1, 1), (0, 3)]);
    // The new tables' fields are known, and typos in them are found.
    let tables = "outlier_detection = { consecutive_failures = 3, base_ejection_time = \"1s\", max_ejection_percent = 50 }\n\
        health_check = { kind = \"tls\", interval = \"2s\", timeout = \"500ms\", unhealthy_treshold = 2 }";
    let text = text.replace("upstream_tls =", &format!("{tables}\nupstream_tls ="));
    let found = findings(Role::Egress, &text);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("route[0] (mysql).health_check.unhealthy_treshold: unknown field `unhealthy_treshold`: did you mean `unhealthy_threshold`?"),
        "{found:?}"
    );
    let route = parse(Role::Egress, &text.replace("treshold", "threshold")).unwrap().routes.remove(0).into_inner();
    let check = route.health_check.unwrap();
    assert_eq!(
        (check.kind, check.interval, check.timeout, check.healthy_threshold),
        (HealthCheckKind::Tls, Duration::from_secs(2), Duration::from_millis(500), 1)
    );
    let outlier = route.outlier_detection.unwrap();
    assert_eq!((outlier.consecutive_failures, outlier.max_ejection_percent, outlier.max_ejection_time), (3, 50, Duration::from_secs(300)));
    let bad = text.replace("treshold", "threshold").replace("base_ejection_time = \"1s\"", "base_ejection_time = \"0s\"");
    assert!(findings(Role::Egress, &bad)[0].contains("route[0] (mysql).outlier_detection.base_ejection_time: must be more than 0"));
}

#[test]
fn syntax_errors_are_one_finding() {
    let e = parse(Role::Egress, "[[listener]\nname = 1\n").unwrap_err();
    assert!(matches!(e, ConfigError::Parse { line: 1, .. }), "{e}");
    assert_eq!(e.count(), 1);
}

/// A route served at the mesh listener only, with an allow-list.
const API: &str = r#"
[[route]]
name = "api"
hosts = ["api.example.com"]
listeners = ["mesh"]
upstream = "[::1]:8443"
upstream_tls = { mode = "disable" }
allow = ["spiffe://cluster.local/ns/default/sa/client", "dns:*.example.com"]
"#;

#[test]
fn validation_produces_checked_types() {
    let text = EGRESS.replace(
        "upstream_tls = { mode = \"mutual\", dir = \"/certs/client\" }",
        r#"upstream_tls = { mode = "mutual", dir = "/certs/client", cipher_suites = ["tls13_aes_256_gcm_sha384"], subject_alt_names = ["spiffe://td/ns/db/sa/*", "db.example.com"] }"#,
    ) + API;
    let c = parse(Role::Egress, &text).unwrap();
    let route = c.routes[0].get_ref();
    assert_eq!(route.upstream, HostPort { host: "db.example.com".into(), port: 13306 });
    let api = c.routes[1].get_ref();
    assert_eq!(api.allow, [Pattern::Uri("spiffe://cluster.local/ns/default/sa/client".into()), Pattern::Dns("*.example.com".into())]);
    assert_eq!(api.upstream, HostPort { host: "::1".into(), port: 8443 });
    assert!(api.upstream_tls.is_none(), "mode \"disable\"");
    let up = route.upstream_tls.as_ref().unwrap();
    assert_eq!(up.mode, TlsMode::Mutual);
    assert_eq!(up.sni.to_str(), "db.example.com", "SNI defaults to the upstream host");
    let suites: Vec<&str> = up.policy.cipher_suites.iter().flatten().map(|s| s.name()).collect();
    assert_eq!(suites, ["TLS13_AES_256_GCM_SHA384"]);
    assert_eq!(up.subject_alt_names.as_deref(), Some(&[Pattern::Uri("spiffe://td/ns/db/sa/*".into()), Pattern::Dns("db.example.com".into())][..]));
    match &c.listeners[1].get_ref().kind {
        ListenerKind::Plain { route } => assert_eq!(route, "mysql"),
        other => panic!("{other:?}"),
    }
    let mesh = c.listeners[0].get_ref().tls().unwrap();
    assert_eq!(mesh.credential, Some(CertKey { cert: "/certs/mesh/tls.crt".into(), key: "/certs/mesh/tls.key".into() }));
    assert_eq!(mesh.ca, Some(PathBuf::from("/certs/mesh/ca.crt")));
}

#[test]
fn bad_sni_and_listen_address_are_found_at_validation() {
    let text = EGRESS
        .replace("address = \"127.0.0.1:3306\"", "address = \"localhost:3306\"")
        .replace("dir = \"/certs/client\"", "dir = \"/certs/client\", sni = \"not a name\"");
    let found = findings(Role::Egress, &text);
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(found[0].contains("listener[1] (mysql).address: \"localhost:3306\" is not ip:port"), "{}", found[0]);
    assert!(found[1].contains("route[0] (mysql).upstream_tls.sni: \"not a name\" is not a DNS name or IP address"), "{}", found[1]);
}

#[test]
fn a_tls_listener_without_a_certificate_needs_one_per_route() {
    let text = EGRESS.replace("tls = { mode = \"mutual\", dir = \"/certs/mesh\" }", "tls = { mode = \"mutual\", ca = \"/certs/mesh/ca.crt\" }");
    let found = findings(Role::Egress, &text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("listener[0] (mesh).tls: route \"mysql\" brings no downstream_tls and the listener has no certificate"), "{}", found[0]);
}

#[test]
fn the_dump_is_the_effective_configuration() {
    let c = parse(Role::Egress, &format!("{EGRESS}{API}")).unwrap();
    let dump = serde_json::to_value(&c).unwrap();
    let mesh = &dump["listener"][0];
    assert_eq!(mesh["address"], "0.0.0.0:15443");
    assert_eq!(mesh["tls"]["mode"], "mutual");
    assert_eq!(mesh["tls"]["cert"], "/certs/mesh/tls.crt");
    assert_eq!(mesh["tls"]["min_version"], "1.2");
    assert_eq!(mesh["handshake_timeout"], "10s");
    assert_eq!(dump["listener"][1]["route"], "mysql");
    let route = &dump["route"][0];
    assert_eq!(route["upstream"], "db.example.com:13306");
    assert_eq!(dump["route"][1]["allow"], serde_json::json!(["spiffe://cluster.local/ns/default/sa/client", "dns:*.example.com"]));
    assert_eq!(dump["route"][1]["upstream"], "[::1]:8443");
    assert_eq!(dump["route"][1]["upstream_tls"], serde_json::Value::Null);
    assert_eq!(route["upstream_tls"]["sni"], "db.example.com");
    assert_eq!(route["upstream_tls"]["key"], "/certs/client/tls.key");
    assert_eq!(dump["path"], "test.toml");
}

#[test]
fn watched_files_are_the_loaded_ones() {
    let c = parse(Role::Egress, EGRESS).unwrap();
    let files: Vec<String> = c.watched_files().iter().map(|p| p.display().to_string()).collect();
    assert_eq!(
        files,
        [
            "/certs/client/ca.crt",
            "/certs/client/tls.crt",
            "/certs/client/tls.key",
            "/certs/mesh/ca.crt",
            "/certs/mesh/tls.crt",
            "/certs/mesh/tls.key",
            "test.toml"
        ]
    );
}

#[test]
fn no_finding_is_ever_empty_handed() {
    // Whatever the input, a refusal carries at least one located finding.
    for text in ["", "listener = 3", "[[route]]\nname = \"r\"\nupstream = \"x:1\"\n", "[[listener]]\n[[listener]]\nname = \"\"\n"] {
        let e = parse(Role::Egress, text).unwrap_err();
        assert!(e.count() >= 1 && !e.to_string().is_empty(), "{text:?}: {e}");
    }
}

#[test]
fn line_col_counts_from_one() {
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab", 0), (1, 1));
    assert_eq!(line_col("é", 1), (1, 1), "never inside a character");
}

#[test]
fn damaged_examples_are_refused_with_findings_never_a_panic() {
    let examples = [
        include_str!("../../../config-examples/egress.toml"),
        include_str!("../../../config-examples/ingress.toml"),
        include_str!("../../../config-examples/ingress-zero-trust.toml"),
        include_str!("../../../config-examples/database-termination.toml"),
    ];
    // A fixed xorshift sequence: the same cuts every run.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |below: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % below.max(1) as u64) as usize
    };
    for text in examples {
        for _ in 0..150 {
            let mut bytes = text.as_bytes().to_vec();
            let start = next(bytes.len());
            let end = (start + 1 + next(40)).min(bytes.len());
            bytes.drain(start..end);
            let damaged = String::from_utf8_lossy(&bytes).into_owned();
            for role in [Role::Egress, Role::Ingress] {
                if let Err(e) = parse(role, &damaged) {
                    assert!(e.count() >= 1 && !e.to_string().is_empty());
                }
            }
        }
    }
}

#[test]
fn health_and_metrics_tables_may_leave_out_either_field() {
    let c = parse(Role::Egress, &format!("{EGRESS}\n[health]\naddress = \"127.0.0.1:9\"\n\n[metrics]\nenabled = false\n")).unwrap();
    assert_eq!((c.health.address, c.health.enabled), ("127.0.0.1:9".parse().unwrap(), true));
    assert_eq!((c.metrics.address, c.metrics.enabled), ("0.0.0.0:15090".parse().unwrap(), false));
    let e = parse(Role::Egress, &format!("{EGRESS}\n[metrics]\nport = 1\n")).unwrap_err().to_string();
    assert!(e.contains("unknown field `port`"), "{e}");
}

#[test]
fn a_permissive_mysql_default_route_gets_a_detection_window_and_only_it_may_set_one() {
    let permissive = EGRESS.replace("dir = \"/certs/mesh\" }", "dir = \"/certs/mesh\" }\npeer_auth = \"permissive\"\ndefault_route = \"mysql\"");
    let as_mysql = permissive.replace("upstream = \"db.example.com:13306\"", "upstream = \"db.example.com:13306\"\nprotocol = \"mysql\"");
    let window = |c: &Config| c.listeners[0].get_ref().permissive_detection_window;
    assert_eq!(window(&parse(Role::Egress, &as_mysql).unwrap()), Some(Duration::from_millis(50)));
    assert_eq!(window(&parse(Role::Egress, &permissive).unwrap()), None, "a tcp default route waits for the first byte");
    let set =
        |text: &str, value: &str| text.replace("peer_auth = \"permissive\"", &format!("peer_auth = \"permissive\"\npermissive_detection_window = \"{value}\""));
    let dumped = serde_json::to_value(parse(Role::Egress, &set(&as_mysql, "20ms")).unwrap()).unwrap();
    assert_eq!(dumped["listener"][0]["permissive_detection_window"], "20ms");

    let found = findings(Role::Egress, &set(&permissive, "20ms"));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].contains("listener[0] (mesh).permissive_detection_window: the default_route's protocol is not server-first"), "{}", found[0]);
    let strict = set(&as_mysql, "20ms").replace("peer_auth = \"permissive\"", "peer_auth = \"strict\"");
    assert!(findings(Role::Egress, &strict)[0].contains("only a peer_auth = \"permissive\" listener"));
    let plain = EGRESS.replace("route = \"mysql\"", "route = \"mysql\"\npermissive_detection_window = \"20ms\"");
    assert!(findings(Role::Egress, &plain)[0].contains("listener[1] (mysql).permissive_detection_window: a plain listener never waits"));
    for bad in ["0s", "2s", "10s"] {
        let found = findings(Role::Egress, &set(&as_mysql, bad));
        assert!(found[0].contains("permissive_detection_window: must be more than 0, at most 1s and less than handshake_timeout"), "{bad}: {found:#?}");
    }
}

#[test]
fn sni_upstreams_need_wildcard_hosts_at_tls_listeners_only() {
    let route = |extra: &str| {
        format!("{EGRESS}\n[[route]]\nname = \"family\"\nhosts = [\"*.db.example.com\"]\nupstream = \"{{sni}}:5432\"\nupstream_tls = {{ mode = \"mutual\", dir = \"/certs/client\" }}\n{extra}")
    };
    let c = parse(Role::Egress, &route("")).unwrap();
    let family = c.routes[1].get_ref();
    assert_eq!(family.upstream.to_string(), "{sni}:5432");
    let tls = family.upstream_tls.as_ref().unwrap();
    assert!(tls.sni_from_client, "each connection verifies its own client's name");
    let found = findings(Role::Egress, &route("health_check = { kind = \"tcp\" }\nlisteners = [\"mysql\"]"));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("route[1] (family).upstream: an \"{sni}\" upstream needs a TLS listener")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("route[1] (family).health_check: an \"{sni}\" upstream has no fixed address")), "{found:?}");
    let text = EGRESS.replace("upstream = \"db.example.com:13306\"", "upstream = \"{sni}:13306\"");
    let found = findings(Role::Egress, &text);
    assert!(found.iter().any(|f| f.contains("listener \"mysql\" sends clients without SNI here")), "{found:?}");
    for bad in ["*", "a.*.example.com", "*db.example.com"] {
        let found = findings(Role::Egress, &EGRESS.replace("hosts = [\"db.example.com\"]", &format!("hosts = [\"{bad}\"]")));
        assert_eq!(found.len(), 1, "{bad}: {found:?}");
        assert!(found[0].contains("route[0] (mysql).hosts: "), "{found:?}");
    }
}

#[test]
fn trust_domains_are_parsed_and_checked() {
    let federated = r#"
[[listener]]
name = "mesh"
tls = { mode = "mutual", cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = { "a.example" = "/certs/a/ca.crt", "b.example" = "/certs/b/ca.crt" } }
recheck_on_trust_change = false

[[route]]
name = "db"
hosts = ["db.example.com"]
upstream = "db.example.com:13306"
upstream_tls = { mode = "mutual", cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = { "b.example" = "/certs/b/ca.crt" }, subject_alt_names = ["spiffe://b.example/ns/db/sa/ingress"] }
"#;
    let c = parse(Role::Egress, federated).unwrap();
    let listener = c.listeners[0].get_ref();
    let tls = listener.tls().unwrap();
    assert_eq!(tls.ca, None);
    assert_eq!(tls.trust_domains.keys().collect::<Vec<_>>(), ["a.example", "b.example"]);
    assert!(!listener.recheck_on_trust_change);
    let up = c.routes[0].get_ref().upstream_tls.as_ref().unwrap();
    assert_eq!((up.ca.clone(), up.trust_domains.len()), (None, 1));
    assert!(c.watched_files().contains(&PathBuf::from("/certs/a/ca.crt")));
    assert!(parse(Role::Egress, EGRESS).unwrap().listeners[0].get_ref().recheck_on_trust_change, "on by default");

    let bad = r#"
[[listener]]
name = "mesh"
tls = { mode = "mutual", cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = { "spiffe://a.example" = "/a.crt", "A.example" = "/a.crt" } }

[[listener]]
name = "simple"
address = "127.0.0.1:15444"
tls = { mode = "simple", cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = { "a.example" = "/a.crt" } }

[[route]]
name = "db"
hosts = ["db.example.com"]
upstream = "db.example.com:13306"
upstream_tls = { mode = "mutual", cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = {} }
downstream_tls = { cert = "/c/tls.crt", key = "/c/tls.key", trust_domains = { "a.example" = "/a.crt" } }
"#;
    let found = findings(Role::Egress, bad).join("\n");
    for needle in [
        "listener[0] (mesh).tls.trust_domains: \"spiffe://a.example\" is not a SPIFFE trust domain name: a trust domain name has no scheme",
        "listener[0] (mesh).tls.trust_domains: \"A.example\" is not a SPIFFE trust domain name: the trust domain must be lowercase",
        "listener[1] (simple).tls.trust_domains: mode \"simple\" asks no client certificate",
        "route[0] (db).upstream_tls.trust_domains: empty",
        "route[0] (db).downstream_tls.trust_domains: client trust is the listener's",
        "test.toml:",
    ] {
        assert!(found.contains(needle), "{needle:?} not in:\n{found}");
    }
}

#[test]
fn proxy_protocol_and_source_ranges_are_checked_ranges() {
    let text = EGRESS
        .replace("route = \"mysql\"", "route = \"mysql\"\nproxy_protocol = { trusted = [\"127.0.0.0/8\", \"::1\"] }")
        .replace("upstream = \"db.example.com:13306\"", "upstream = \"db.example.com:13306\"\nsend_proxy_protocol = \"v2\"\nsource_ranges = [\"10.0.0.0/8\"]");
    let c = parse(Role::Egress, &text).unwrap();
    let trusted = &c.listeners[1].get_ref().proxy_protocol.as_ref().unwrap().trusted;
    assert_eq!(trusted.iter().map(ToString::to_string).collect::<Vec<_>>(), ["127.0.0.0/8", "::1/128"]);
    let route = c.routes[0].get_ref();
    assert_eq!((route.send_proxy_protocol, route.source_ranges.len()), (Some(ProxyVersion::V2), 1));
    let bad = text.replace("\"::1\"", "\"lb.example.com\"").replace("10.0.0.0/8", "10.0.0.0/40");
    let found = findings(Role::Egress, &bad);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|f| f.contains("listener[1] (mysql).proxy_protocol.trusted: \"lb.example.com\" is not an address range")), "{found:?}");
    assert!(found.iter().any(|f| f.contains("route[0] (mysql).source_ranges: \"10.0.0.0/40\" is not an address range")), "{found:?}");
    let found = findings(Role::Egress, &text.replace("\"v2\"", "\"v3\""));
    assert!(found.iter().any(|f| f.contains("route[0] (mysql).send_proxy_protocol: unknown variant `v3`")), "{found:?}");
    let empty = text.replace("trusted = [\"127.0.0.0/8\", \"::1\"]", "trusted = []");
    assert!(findings(Role::Egress, &empty)[0].contains("proxy_protocol.trusted: empty"));
}

#[test]
fn limits_are_checked_and_defaulted() {
    let with_limits =
        EGRESS.replace("route = \"mysql\"\n", "route = \"mysql\"\nlimits = { connections_per_second_per_source = 50, concurrent_per_source = 200 }\n");
    let c = parse(Role::Egress, &with_limits).unwrap();
    let limits = &c.listeners[1].get_ref().limits;
    assert_eq!(limits.per_source, Some(model::Rate { per_second: 50, burst: 100 }), "burst defaults to twice the rate");
    assert_eq!(limits.concurrent_per_source, Some(200));
    assert_eq!(limits.cancels_per_source, model::Rate { per_second: 10, burst: 20 }, "CancelRequests are limited by default");
    assert_eq!(c.listeners[0].get_ref().limits.per_source, None, "no connection limit by default");

    let bad = EGRESS.replace("route = \"mysql\"\n", "route = \"mysql\"\nlimits = { burst = 5, concurrent_per_source = 0, concurrent_per_identity = 3 }\n");
    let found = findings(Role::Egress, &bad).join("\n");
    for needle in [
        "listener[1] (mysql).limits.concurrent_per_source: must be at least 1",
        "listener[1] (mysql).limits.burst: a burst belongs to a rate",
        "listener[1] (mysql).limits: identity limits need client certificates",
    ] {
        assert!(found.contains(needle), "{needle:?} not in:\n{found}");
    }
    let unknown = EGRESS.replace("route = \"mysql\"\n", "route = \"mysql\"\nlimits = { per_source = 1 }\n");
    let found = findings(Role::Egress, &unknown).join("\n");
    assert!(found.contains("limits.per_source: unknown field") && found.contains("connections_per_second_per_source"), "{found}");
}
