//! Two clusters on one machine: `client-cluster` and `server-cluster` are network
//! namespaces joined by one veth pair — the network between the clusters — with
//! addresses from a documentation range (198.51.100.0/24, TEST-NET-2) that exist only
//! inside them. The server cluster runs DNS for `$SERVICE_URL` (dnsmasq), MariaDB and
//! the ingress; the client cluster runs the egress and the mariadb client.
//!
//! Programs run under `ip netns exec`; the test process reaches into a namespace by
//! moving one short-lived thread into it ([`Cluster::within`]). [`TwoClusters`] kills
//! whatever still runs in its namespaces and deletes them when it drops — also when the
//! test panics. Namespace names carry the test process's pid and a counter, so tests
//! running at the same time never share one.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::databases::{run_bounded, ClientRun};
use crate::{require, Gateway, Pki, Proc, Role, TempDir, SERVICE_HOST};

/// Topologies made by this process so far: part of every namespace name and address.
static TOPOLOGIES: AtomicU32 = AtomicU32::new(0);

/// The tutorial's ports, free in every fresh namespace.
pub const MYSQL_PORT: u16 = 3306;
/// The ingress's mutual-TLS port (the tutorial's 13306).
pub const INGRESS_PORT: u16 = 13306;
/// The egress's mesh port (Istio's 15443).
pub const MESH_PORT: u16 = 15443;

/// Runs `ip ARGS...`, panicking with its stderr when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run `ip`: {e} (apt-get install iproute2)"));
    assert!(out.status.success(), "ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// A gateway binary: `STRAIT_BIN_DIR` or `target/debug` (the fixture's rule).
fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("STRAIT_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build first (cargo build --workspace), or set STRAIT_BIN_DIR", path.display());
    path
}

/// One cluster: a network namespace with its end of the link between the clusters.
pub struct Cluster {
    /// The namespace's name (`client-cluster-<pid>-<n>`), for `ip netns exec`.
    pub netns: String,
    /// Its end of the veth pair.
    pub device: String,
    /// Its address on the link (a /30 of 198.51.100.0/24).
    pub address: Ipv4Addr,
}

impl Cluster {
    /// `program` as a command that runs inside this cluster.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns]).arg(program);
        command
    }

    /// Runs `f` on a thread that has joined this cluster's namespace: sockets it makes
    /// live in the cluster (and keep working from any thread afterwards).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}", self.netns);
        std::thread::scope(|scope| {
            let joined = scope.spawn(|| {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
                // setns(2) moves only this thread into the namespace.
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns({path}): {e}"));
                f()
            });
            joined.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `address:port` in this cluster.
    pub fn at(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.address, port))
    }

    /// A TCP connection from inside this cluster.
    pub fn connect(&self, to: SocketAddr, limit: Duration) -> std::io::Result<TcpStream> {
        self.within(|| TcpStream::connect_timeout(&to, limit))
    }

    /// A listening socket inside this cluster.
    pub fn listen(&self, at: SocketAddr) -> TcpListener {
        self.within(|| TcpListener::bind(at).unwrap_or_else(|e| panic!("cannot bind {at}: {e}")))
    }

    /// Waits until something accepts on `to` (seen from inside this cluster), or panics
    /// after `limit` with `log` (the server's output) in the message.
    pub fn wait_for_port(&self, to: SocketAddr, limit: Duration, log: impl Fn() -> String + Send + Sync) {
        let deadline = Instant::now() + limit;
        self.within(|| {
            while TcpStream::connect_timeout(&to, Duration::from_millis(200)).is_err() {
                assert!(Instant::now() < deadline, "nothing listens on {to} in a cluster after {limit:?}:\n{}", log());
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }

    /// Starts `strait-egress` or `strait-ingress` in this cluster with `config` (written
    /// to `dir`), admin port on the cluster's loopback; returns once it logs `ready`.
    pub fn gateway(&self, role: Role, dir: &Path, config: &str) -> Gateway {
        let name = match role {
            Role::Egress => "strait-egress",
            Role::Ingress => "strait-ingress",
        };
        let config_path = dir.join(format!("{name}-{}.toml", self.netns));
        std::fs::write(&config_path, config).unwrap();
        let mut command = self.command(binary(name));
        command.arg("--config").arg(&config_path).args(["--log-level", "info,strait=debug", "--admin-address", "127.0.0.1:0"]);
        let mut proc = Proc::spawn(command, config_path.with_extension("log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !proc.output().contains(" ready") {
            if let Some(status) = proc.try_wait() {
                panic!("{name} exited ({status}) before it was ready:\n{}", proc.output());
            }
            assert!(Instant::now() < deadline, "{name} not ready after 20s:\n{}", proc.output());
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = proc.output();
        let admin_port = output
            .lines()
            .find(|l| l.contains("admin listening"))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name} logged no admin address:\n{output}"));
        Gateway { proc, config: config_path, admin_port }
    }

    /// `GET`/`POST` on a gateway's admin port, from inside this cluster.
    pub fn admin(&self, gateway: &Gateway, method: &str, path: &str) -> (u16, String) {
        let port = gateway.admin_port;
        self.within(|| crate::http(port, method, path))
    }

    /// Runs `sql` with the real `mariadb` client, from this cluster, over plain TCP to
    /// `to` (user `app`), bounded in time.
    pub fn mariadb_sql(&self, to: SocketAddr, sql: &str) -> ClientRun {
        require("mariadb");
        let mut command = self.command("mariadb");
        command.arg("--no-defaults").args([
            "-h",
            &to.ip().to_string(),
            "-P",
            &to.port().to_string(),
            "-uapp",
            "-papp",
            "--skip-ssl",
            "--connect-timeout=10",
            "-N",
            "-B",
            "-e",
            sql,
        ]);
        run_bounded(&command)
    }

    /// Starts dnsmasq on this cluster's address, port 53, answering each `(name,
    /// address)` with an A record and NXDOMAIN for every other name under
    /// [`crate::dns::ZONE`]. The TTL is long (300 s), so a resolver's cache outlives a
    /// partition: new connections then fail on the connect, not on DNS.
    pub fn dns(&self, records: &[(&str, Ipv4Addr)], dir: &Path) -> Proc {
        require("dnsmasq");
        let mut command = self.command("dnsmasq");
        command
            .args(["--no-daemon", "--keep-in-foreground", "--bind-interfaces", "--no-resolv", "--no-hosts"])
            .arg(format!("--listen-address={}", self.address))
            .args(["--port=53", "--pid-file=", "--local-ttl=300", "--log-queries", "--log-facility=-"])
            .arg(format!("--local=/{}/", crate::dns::ZONE));
        for (name, address) in records {
            command.arg(format!("--host-record={name},{address}"));
        }
        let proc = Proc::spawn(command, dir.join(format!("dnsmasq-{}.log", self.netns)));
        let log = proc.log.clone();
        self.wait_for_port(self.at(53), Duration::from_secs(10), || std::fs::read_to_string(&log).unwrap_or_default());
        proc
    }
}

/// The two clusters and the link between them; both namespaces (and everything still
/// running in them) are gone when this drops.
pub struct TwoClusters {
    /// Where the app, its sidecar and the egress run.
    pub client: Cluster,
    /// Where DNS, MariaDB and the ingress run.
    pub server: Cluster,
}

impl TwoClusters {
    /// Makes both namespaces, the veth pair between them and their addresses, with
    /// loopback up in each.
    pub fn new() -> TwoClusters {
        require("ip");
        let n = TOPOLOGIES.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // A /30 of 198.51.100.0/24 per topology: .1 client, .2 server. The link is its
        // own segment, so addresses could even repeat across tests; distinct ones keep
        // logs unambiguous.
        let base = ((pid.wrapping_mul(7).wrapping_add(n)) % 64) as u8 * 4;
        let clusters = TwoClusters {
            client: Cluster { netns: format!("client-cluster-{pid}-{n}"), device: "to-server".into(), address: Ipv4Addr::new(198, 51, 100, base + 1) },
            server: Cluster { netns: format!("server-cluster-{pid}-{n}"), device: "to-client".into(), address: Ipv4Addr::new(198, 51, 100, base + 2) },
        };
        // From here on, Drop cleans up whatever exists if a step fails.
        ip(&["netns", "add", &clusters.client.netns]);
        ip(&["netns", "add", &clusters.server.netns]);
        let (c, s) = (&clusters.client, &clusters.server);
        ip(&["link", "add", &c.device, "netns", &c.netns, "type", "veth", "peer", "name", &s.device, "netns", &s.netns]);
        for side in [c, s] {
            ip(&["-n", &side.netns, "addr", "add", &format!("{}/30", side.address), "dev", &side.device]);
            ip(&["-n", &side.netns, "link", "set", "lo", "up"]);
            ip(&["-n", &side.netns, "link", "set", &side.device, "up"]);
        }
        // Bounded wait until the link carries a TCP connection (carrier comes up async).
        let probe = s.listen(s.at(9));
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.connect(s.at(9), Duration::from_millis(500)).is_err() {
            assert!(Instant::now() < deadline, "the veth link between the clusters never carried a connection");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(probe);
        clusters
    }

    /// The partition by cable: the client cluster's end of the link goes down. Its
    /// route to the server cluster goes with it, so new connects fail at once
    /// (`Network is unreachable`), and nothing sent on open connections arrives.
    pub fn link_down(&self) {
        ip(&["-n", &self.client.netns, "link", "set", &self.client.device, "down"]);
    }

    /// Ends [`TwoClusters::link_down`].
    pub fn link_up(&self) {
        ip(&["-n", &self.client.netns, "link", "set", &self.client.device, "up"]);
    }

    /// The silent partition: every packet on the link is dropped in both directions,
    /// with the link up, so a connect just goes unanswered. `tc qdisc ... netem loss
    /// 100%` on both ends when the kernel has netem; kernels built without it
    /// (CONFIG_NET_SCH_NETEM unset) drop the same packets with an nftables netdev
    /// ingress chain on both ends instead — lost on the wire either way, the senders are
    /// never told. Returns which one it used, for the test's output.
    pub fn drop_packets(&self) -> &'static str {
        let netem = |side: &Cluster| {
            Command::new("ip")
                .args(["netns", "exec", &side.netns, "tc", "qdisc", "add", "dev", &side.device, "root", "netem", "loss", "100%"])
                .output()
                .unwrap_or_else(|e| panic!("cannot run tc: {e} (apt-get install iproute2)"))
        };
        let first = netem(&self.client);
        if first.status.success() {
            let second = netem(&self.server);
            assert!(second.status.success(), "tc netem on the server side failed: {}", String::from_utf8_lossy(&second.stderr));
            return "tc netem loss 100%";
        }
        let why = String::from_utf8_lossy(&first.stderr);
        assert!(why.contains("qdisc kind is unknown"), "tc qdisc add ... netem loss 100% failed: {why}");
        require("nft");
        for side in [&self.client, &self.server] {
            let chain =
                format!("add chain netdev strait_partition drop_all {{ type filter hook ingress device \"{}\" priority 0 ; policy drop ; }}", side.device);
            for rule in ["add table netdev strait_partition", chain.as_str()] {
                let out = side.command("nft").arg(rule).output().unwrap();
                assert!(out.status.success(), "nft {rule} failed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
        "nftables netdev ingress drop (this kernel has no netem)"
    }

    /// Ends [`TwoClusters::drop_packets`].
    pub fn stop_dropping(&self) {
        for side in [&self.client, &self.server] {
            let netem = side.command("tc").args(["qdisc", "del", "dev", &side.device, "root"]).output().unwrap();
            if !netem.status.success() {
                let out = side.command("nft").args(["delete", "table", "netdev", "strait_partition"]).output().unwrap();
                assert!(out.status.success(), "neither a netem qdisc nor the nftables table could be removed: {}", String::from_utf8_lossy(&out.stderr));
            }
        }
    }
}

impl Default for TwoClusters {
    fn default() -> Self {
        TwoClusters::new()
    }
}

impl Drop for TwoClusters {
    fn drop(&mut self) {
        for side in [&self.client, &self.server] {
            // Every process in the namespace was started by this test; kill each by id.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &side.netns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", &side.netns]).status();
        }
    }
}

/// MariaDB in the server cluster, on the cluster's loopback port 3306 (the in-cluster
/// `mysql.default.svc.cluster.local:3306`; nothing outside the cluster can reach it),
/// with user `app`/`app` allowed from anywhere. Root talks to it over its unix socket.
pub struct ClusterMariaDb {
    socket: PathBuf,
    _proc: Proc,
    _dir: TempDir,
}

impl ClusterMariaDb {
    /// Initialises a data directory and starts `mariadbd` in `cluster`, with the
    /// fixture's flags (`start_mariadbd`).
    pub fn start(cluster: &Cluster) -> ClusterMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let (command, socket) = crate::mariadbd_command(cluster.command("mariadbd"), dir.path(), MYSQL_PORT);
        let proc = Proc::spawn(command, dir.path().join("mariadbd.log"));
        let log = proc.log.clone();
        cluster.wait_for_port(SocketAddr::from(([127, 0, 0, 1], MYSQL_PORT)), Duration::from_secs(30), || std::fs::read_to_string(&log).unwrap_or_default());
        let db = ClusterMariaDb { socket, _proc: proc, _dir: dir };
        db.root_sql("CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%';");
        db
    }

    /// Runs SQL as root over the unix socket: "read it back on the server side".
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb").arg(format!("--socket={}", self.socket.display())).args(["-uroot", "-N", "-B", "-e", sql]).output().unwrap();
        assert!(out.status.success(), "root SQL {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The server cluster's half of the tutorial, without its gateway: DNS answering
/// [`SERVICE_HOST`] (the `$SERVICE_URL`) with the server cluster's address, and MariaDB.
pub struct ServerServices {
    /// dnsmasq on `server:53`; its log holds every query.
    pub dns: Proc,
    /// MariaDB on the server cluster's 127.0.0.1:3306.
    pub db: ClusterMariaDb,
}

impl ServerServices {
    /// Starts both in `clusters.server`.
    pub fn start(clusters: &TwoClusters, dir: &Path) -> ServerServices {
        let dns = clusters.server.dns(&[(SERVICE_HOST, clusters.server.address)], dir);
        let db = ClusterMariaDb::start(&clusters.server);
        ServerServices { dns, db }
    }

    /// The `[resolver]` table that sends a gateway's lookups to this DNS server.
    pub fn resolver_table(clusters: &TwoClusters) -> String {
        format!("\n[resolver]\nnameservers = [\"{}:53\"]\n", clusters.server.address)
    }
}

/// A `tcp_keepalive` inline table for a listener or route.
pub fn keepalive(time_s: u64, interval_s: u64, probes: u32) -> String {
    format!("tcp_keepalive = {{ time = \"{time_s}s\", interval = \"{interval_s}s\", probes = {probes} }}")
}

/// The ingress of the server cluster: mutual TLS on `server:13306`, SNI [`SERVICE_HOST`]
/// to MariaDB on the cluster's loopback. `listener_extra` goes into the listener table
/// (keepalive, say); `extra` is appended.
pub fn ingress_config(pki: &Pki, clusters: &TwoClusters, listener_extra: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "mtls"
address = "{address}"
tls = {{ mode = "mutual", dir = "{secret}" }}
{listener_extra}

[[route]]
name = "mysql"
hosts = ["{SERVICE_HOST}"]
listeners = ["mtls"]
upstream = "127.0.0.1:{MYSQL_PORT}"
{extra}
"#,
        address = clusters.server.at(INGRESS_PORT),
        secret = pki.path("ingress").display(),
    )
}

/// The egress of the client cluster: the app's plain port on `client:3306` to the route
/// that resolves `$SERVICE_URL` with the server cluster's DNS and originates mTLS to
/// its port 13306. `route_extra` goes into the route table (keepalive,
/// connect_timeout); `extra` is appended.
pub fn egress_config(pki: &Pki, clusters: &TwoClusters, route_extra: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "mysql-plain"
address = "{plain}"
route = "to-server-cluster"

[[route]]
name = "to-server-cluster"
upstream = "{SERVICE_HOST}:{INGRESS_PORT}"
upstream_tls = {{ mode = "mutual", dir = "{client}", sni = "{SERVICE_HOST}" }}
{route_extra}
{resolver}
{extra}
"#,
        plain = clusters.client.at(MYSQL_PORT),
        client = pki.path("egress").display(),
        resolver = ServerServices::resolver_table(clusters),
    )
}

/// A `mariadb` client session held open: statements are written to its stdin one at a
/// time (batch mode, so the first error ends it, as an application's connection would
/// end), its output goes to a file. Killed when dropped.
pub struct MariadbSession {
    child: Child,
    stdin: Option<ChildStdin>,
    out: PathBuf,
    err: PathBuf,
}

impl MariadbSession {
    /// Opens a session from `cluster` to `to` and waits (bounded) until a first query
    /// has come back through it.
    pub fn open(cluster: &Cluster, to: SocketAddr, dir: &Path) -> MariadbSession {
        require("mariadb");
        let n = TOPOLOGIES.fetch_add(1, Ordering::Relaxed);
        let (out, err) = (dir.join(format!("session-{n}.out")), dir.join(format!("session-{n}.err")));
        let mut command = cluster.command("mariadb");
        command
            .arg("--no-defaults")
            .args([
                "-h",
                &to.ip().to_string(),
                "-P",
                &to.port().to_string(),
                "-uapp",
                "-papp",
                "--skip-ssl",
                "--skip-reconnect",
                "--unbuffered",
                "--connect-timeout=10",
                "-N",
                "-B",
            ])
            .stdin(Stdio::piped())
            .stdout(File::create(&out).unwrap())
            .stderr(File::create(&err).unwrap());
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let mut session = MariadbSession { child, stdin, out, err };
        session.send("SELECT 'session-open';");
        let deadline = Instant::now() + Duration::from_secs(15);
        while !session.stdout().contains("session-open") {
            assert!(session.child.try_wait().unwrap().is_none(), "the mariadb session ended before its first reply: {}", session.stderr());
            assert!(Instant::now() < deadline, "the mariadb session got no reply in 15s: {}", session.stderr());
            std::thread::sleep(Duration::from_millis(20));
        }
        session
    }

    /// Writes one statement (with its newline) to the session.
    pub fn send(&mut self, statement: &str) {
        let stdin = self.stdin.as_mut().expect("session stdin");
        writeln!(stdin, "{statement}").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits up to `limit` for the client to exit by itself; `Some(elapsed)` when it did.
    pub fn wait_for_exit(&mut self, since: Instant, limit: Duration) -> Option<Duration> {
        let deadline = since + limit;
        loop {
            if self.child.try_wait().unwrap().is_some() {
                return Some(since.elapsed());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the client printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// What the client reported as errors so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
}

impl Drop for MariadbSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server that reads and discards everything (the far end of a bulk upload), on a
/// port inside a cluster. Counts what it received.
pub struct Sink {
    /// Bytes received over all connections.
    pub received: Arc<AtomicU64>,
}

impl Sink {
    /// Listens on `at` inside `cluster`; lives until the test process ends.
    pub fn start(cluster: &Cluster, at: SocketAddr) -> Sink {
        let listener = cluster.listen(at);
        let received = Arc::new(AtomicU64::new(0));
        let counter = received.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = stream.read(&mut buffer) {
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                    }
                });
            }
        });
        Sink { received }
    }
}
