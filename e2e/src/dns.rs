//! A real DNS server on a loopback port: dnsmasq in the foreground, answering only the
//! records a test gives it, with a one-second TTL so the gateway re-asks often.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use crate::{free_port, require, wait_for_port, Proc, TempDir};

/// The zone dnsmasq is authoritative for: any name under it without a record is NXDOMAIN.
pub const ZONE: &str = "strait.test";

/// A running dnsmasq on `127.0.0.1:port` (UDP and TCP), stopped when dropped.
pub struct Dnsmasq {
    /// Its port on 127.0.0.1; the gateway's `[resolver] nameservers` entry.
    pub port: u16,
    /// The process; its log holds every query it answered (`--log-queries`).
    pub proc: Proc,
    _dir: TempDir,
}

impl Dnsmasq {
    /// Starts dnsmasq answering each `(name, address)` pair with an A record (a name
    /// given twice gets both records) and NXDOMAIN for every other name in [`ZONE`].
    pub fn start(records: &[(&str, Ipv4Addr)]) -> Dnsmasq {
        require("dnsmasq");
        let dir = tempfile::tempdir().unwrap();
        // dnsmasq takes its port on the command line (`--port=0` turns DNS off).
        let port = free_port();
        let mut command = Command::new("dnsmasq");
        command
            .args(["--no-daemon", "--keep-in-foreground", "--bind-interfaces", "--no-resolv", "--no-hosts"])
            .args(["--listen-address=127.0.0.1", "--pid-file=", "--local-ttl=1", "--log-queries", "--log-facility=-"])
            .arg(format!("--port={port}"))
            .arg(format!("--local=/{ZONE}/"));
        for (name, address) in records {
            command.arg(format!("--host-record={name},{address}"));
        }
        let proc = Proc::spawn(command, dir.path().join("dnsmasq.log"));
        wait_for_port(port, Duration::from_secs(10));
        Dnsmasq { port, proc, _dir: dir }
    }

    /// The `[resolver]` table that sends a gateway's lookups here.
    pub fn resolver_table(&self) -> String {
        format!("\n[resolver]\nnameservers = [\"127.0.0.1:{}\"]\n", self.port)
    }
}
