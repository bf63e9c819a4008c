//! A real redis-server that speaks only mutual TLS, with its own CA: a third-party
//! server the egress originates mTLS to, no ingress in between.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use strait::certs::{Authority, KeyType, Leaf, Usage};

use crate::{free_port, require, wait_for_port, Proc, TempDir};

/// A TLS-only redis-server on 127.0.0.1 that requires client certificates.
pub struct Redis {
    /// Its TLS port on 127.0.0.1 (the plain port is disabled).
    pub tls_port: u16,
    /// The DNS name in its server certificate; the SNI a client must send.
    pub host: String,
    /// Secret (`tls.crt`, `tls.key`, `ca.crt`) with a client certificate redis
    /// accepts and the CA that verifies redis's own certificate.
    pub client_secret: PathBuf,
    /// The process; its log is redis's log.
    pub proc: Proc,
    _dir: TempDir,
}

impl Redis {
    /// Makes a CA, a server certificate for `host` and a client certificate, and starts
    /// redis with `--port 0 --tls-port ... --tls-auth-clients yes`.
    pub fn start_tls_only(host: &str) -> Redis {
        require("redis-server");
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::root("Redis CA", KeyType::EcdsaP256, 30).unwrap();
        let mut server = Leaf::new(host, Usage::Server, 30);
        server.dns.push(host.into());
        let server_secret = dir.path().join("server");
        strait::certs::write_secret(&server_secret, &ca.issue(&server).unwrap(), &ca.bundle_pem()).unwrap();
        // Redis verifies client certificates as OpenSSL does: clientAuth EKU required.
        let client = Leaf::new("redis-client", Usage::Client, 30);
        let client_secret = dir.path().join("client");
        strait::certs::write_secret(&client_secret, &ca.issue(&client).unwrap(), &ca.bundle_pem()).unwrap();

        // redis-server takes its port on the command line (`--tls-port 0` turns TLS off).
        let tls_port = free_port();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", "0", "--tls-port", &tls_port.to_string(), "--bind", "127.0.0.1"])
            .arg("--tls-cert-file")
            .arg(server_secret.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(server_secret.join("tls.key"))
            .arg("--tls-ca-cert-file")
            .arg(server_secret.join("ca.crt"))
            .args(["--tls-auth-clients", "yes", "--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(dir.path());
        let proc = Proc::spawn(command, dir.path().join("redis.log"));
        wait_for_port(tls_port, Duration::from_secs(20));
        Redis { tls_port, host: host.into(), client_secret, proc, _dir: dir }
    }

    /// Runs `redis-cli` straight at the TLS port with TLS and the client certificate:
    /// reading the server's state bypassing the gateway.
    pub fn direct_tls_cli(&self, args: &[&str]) -> (bool, String) {
        let secret = &self.client_secret;
        let mut command = Command::new("redis-cli");
        command
            .args(["-h", "127.0.0.1", "-p", &self.tls_port.to_string(), "--tls", "--sni", &self.host])
            .arg("--cacert")
            .arg(secret.join("ca.crt"))
            .arg("--cert")
            .arg(secret.join("tls.crt"))
            .arg("--key")
            .arg(secret.join("tls.key"))
            .args(args);
        run_cli(command)
    }
}

/// Runs plain `redis-cli -h 127.0.0.1 -p port ARGS...` (no TLS), bounded in time;
/// returns (exit success, stdout+stderr).
pub fn redis_cli(port: u16, args: &[&str]) -> (bool, String) {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]).args(args);
    run_cli(command)
}

fn run_cli(command: Command) -> (bool, String) {
    require("redis-cli");
    // redis-cli has no overall timeout of its own; `timeout` bounds a hung handshake.
    let mut bounded = Command::new("timeout");
    bounded.arg("20").arg(command.get_program()).args(command.get_args());
    let out = bounded.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}
