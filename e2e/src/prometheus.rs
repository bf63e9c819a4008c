//! A real Prometheus (Debian's `prometheus` package, `/usr/bin/prometheus`) scraping
//! gateways' metrics ports every second, and its HTTP query API: the PromQL of Istio's
//! dashboards and of Kiali runs against what Strait exports, as it would in a cluster.
//!
//! Each target gets the labels Kubernetes service discovery would attach in Istio's
//! Prometheus set-up (`namespace`, `pod`), so queries that select by pod work too.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, Proc, TempDir};

/// Where the Debian package installs the server.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Seconds between scrapes: short, so a test sees a counter move within a few seconds.
pub const SCRAPE_INTERVAL_SECONDS: u64 = 1;

/// One scrape job: a gateway's metrics port and the labels its pod would carry.
#[derive(Clone, Debug)]
pub struct Target {
    /// The job name (`job` label).
    pub job: String,
    /// The metrics port's address; scraped at `/stats/prometheus`, as Istio's proxies are.
    pub address: SocketAddr,
    /// Target labels (`pod`, `namespace`), as Kubernetes discovery would relabel them.
    pub labels: Vec<(String, String)>,
}

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The series' labels (`__name__` included when the result keeps it).
    pub labels: BTreeMap<String, String>,
    /// Its value at the query time.
    pub value: f64,
}

impl Sample {
    /// A label's value, or "" when the series has no such label.
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }
}

/// A running Prometheus on a loopback port with its own data directory, stopped when
/// dropped.
pub struct Prometheus {
    /// Its HTTP port on 127.0.0.1 (`/api/v1/query`).
    pub port: u16,
    /// The process; its log holds what it said about scrapes.
    pub proc: Proc,
    _dir: TempDir,
}

impl Prometheus {
    /// Writes a configuration scraping `targets` every second and starts the server;
    /// returns once `/-/ready` answers 200.
    pub fn start(targets: &[Target]) -> Prometheus {
        assert!(Path::new(PROMETHEUS).exists(), "{PROMETHEUS} is missing: run e2e/install-deps.sh (apt-get install prometheus)");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(targets)).unwrap();
        let port = free_port();
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let mut proc = Proc::spawn(command, dir.path().join("prometheus.log"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if matches!(get(port, "/-/ready"), Ok((200, _))) {
                break;
            }
            if let Some(status) = proc.try_wait() {
                panic!("prometheus exited ({status}) before it was ready:\n{}", proc.output());
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 30s:\n{}", proc.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        Prometheus { port, proc, _dir: dir }
    }

    /// Evaluates `promql` now (`GET /api/v1/query`); the result must be an instant vector.
    pub fn query(&self, promql: &str) -> Vec<Sample> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = get(self.port, &path).unwrap_or_else(|e| panic!("prometheus query failed: {e}"));
        let reply: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("prometheus answered {status} with {body:?}: {e}"));
        assert_eq!(reply["status"], "success", "query {promql} failed ({status}): {body}");
        assert_eq!(reply["data"]["resultType"], "vector", "query {promql} is not an instant vector: {body}");
        reply["data"]["result"].as_array().unwrap().iter().map(sample).collect()
    }

    /// Evaluates `promql` until `accept` takes the result (scrapes land every second);
    /// returns that result, or panics after `limit` with the last one.
    pub fn wait_for(&self, promql: &str, limit: Duration, accept: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        let deadline = Instant::now() + limit;
        loop {
            let samples = self.query(promql);
            if accept(&samples) {
                return samples;
            }
            assert!(Instant::now() < deadline, "after {limit:?}, {promql}\nstill gives {samples:#?}\nprometheus log:\n{}", self.proc.output());
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn config_yaml(targets: &[Target]) -> String {
    let mut yaml = format!("global:\n  scrape_interval: {SCRAPE_INTERVAL_SECONDS}s\n  scrape_timeout: {SCRAPE_INTERVAL_SECONDS}s\nscrape_configs:\n");
    for target in targets {
        yaml += &format!("  - job_name: {:?}\n    metrics_path: /stats/prometheus\n    static_configs:\n", target.job);
        yaml += &format!("      - targets: [{:?}]\n        labels:\n", target.address.to_string());
        for (name, value) in &target.labels {
            yaml += &format!("          {name}: {value:?}\n");
        }
    }
    yaml
}

fn sample(value: &serde_json::Value) -> Sample {
    let labels = value["metric"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
    let text = value["value"][1].as_str().unwrap();
    Sample { labels, value: text.parse().unwrap_or_else(|e| panic!("sample value {text:?}: {e}")) }
}

/// `GET path` over HTTP/1.0, so the reply is never chunked; returns (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_and_encoding() {
        let target = Target { job: "gw".into(), address: "127.0.0.1:9".parse().unwrap(), labels: vec![("pod".into(), "gw-1-a".into())] };
        let yaml = config_yaml(&[target]);
        assert!(yaml.contains("  - job_name: \"gw\"\n    metrics_path: /stats/prometheus\n"), "{yaml}");
        assert!(yaml.contains("      - targets: [\"127.0.0.1:9\"]\n        labels:\n          pod: \"gw-1-a\"\n"), "{yaml}");
        assert_eq!(percent_encode("sum(x{a=~\"b.*\"}[1m])"), "sum%28x%7Ba%3D~%22b.%2A%22%7D%5B1m%5D%29");
    }
}
