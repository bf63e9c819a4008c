//! Credentials delivered the way Kubernetes delivers them, and a gateway seen reacting.
//!
//! A Secret mounted into a pod is not three plain files. The kubelet writes the payload
//! into a timestamped directory, points the `..data` symlink at it, and exposes each key
//! as a symlink through `..data`:
//!
//! ```text
//! DIR/..2026_11_25_15_00_00.123456/{tls.crt,tls.key,ca.crt}
//! DIR/..data    -> ..2026_11_25_15_00_00.123456
//! DIR/tls.crt   -> ..data/tls.crt        (and tls.key, ca.crt)
//! ```
//!
//! An update writes a whole new timestamped directory, points `..data_tmp` at it and
//! renames `..data_tmp` over `..data`, so a reader sees either every old file or every
//! new one, never a mix; then the old directory is removed. cert-manager renewals reach
//! the pod the same way. [`KubeSecret`] reproduces that layout and that update exactly,
//! and also the plain in-place overwrite an operator might do by hand.
//!
//! The rest of the module observes what a rotation test needs to see: which certificate
//! a listener presents, and when a gateway logs that it reloaded (or refused to).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustls_pki_types::CertificateDer;
use strait::certs::Issued;

use crate::Gateway;

/// What a successful reload logs (`strait::gateway`).
pub const RELOADED: &str = "configuration and credentials reloaded";
/// What a reload that failed to load logs; the running state stays.
pub const REFUSED: &str = "reload refused";

/// A directory laid out like a kubelet-mounted Secret.
pub struct KubeSecret {
    /// The mount point: the directory a gateway's `dir = ...` names.
    pub dir: PathBuf,
    /// Name of the timestamped directory `..data` points at now.
    current: String,
}

impl KubeSecret {
    /// Creates `dir` holding `files` (name, contents) in the kubelet's layout.
    pub fn create(dir: &Path, files: &[(&str, &str)]) -> KubeSecret {
        std::fs::create_dir_all(dir).unwrap();
        let current = write_payload(dir, files);
        symlink(&current, dir.join("..data")).unwrap();
        let mut secret = KubeSecret { dir: dir.to_owned(), current };
        secret.link_keys();
        secret
    }

    /// A TLS Secret (`tls.crt`, `tls.key`, `ca.crt`) holding `issued` and trusting `ca_pem`.
    pub fn tls(dir: &Path, issued: &Issued, ca_pem: &str) -> KubeSecret {
        KubeSecret::create(dir, &[("tls.crt", &issued.chain_pem), ("tls.key", &issued.key_pem), ("ca.crt", ca_pem)])
    }

    /// A TLS Secret holding copies of the plain Secret-layout directory `plain`
    /// (a credential [`crate::Pki`] wrote).
    pub fn copy_of(dir: &Path, plain: &Path) -> KubeSecret {
        let read = |name: &str| std::fs::read_to_string(plain.join(name)).unwrap();
        let (crt, key, ca) = (read("tls.crt"), read("tls.key"), read("ca.crt"));
        KubeSecret::create(dir, &[("tls.crt", &crt), ("tls.key", &key), ("ca.crt", &ca)])
    }

    /// Path of key `name` as a consumer sees it (`DIR/tls.crt`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Current contents of key `name`.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap()
    }

    /// The kubelet's atomic update: a new timestamped directory holding `files` plus
    /// every current key they do not replace, `..data_tmp` pointing at it renamed over
    /// `..data`, then the old directory removed. Returns when the swap is done.
    pub fn update(&mut self, files: &[(&str, &str)]) {
        let mut payload: Vec<(String, String)> = files.iter().map(|(n, c)| ((*n).to_owned(), (*c).to_owned())).collect();
        for entry in std::fs::read_dir(self.dir.join(&self.current)).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !payload.iter().any(|(n, _)| *n == name) {
                let contents = std::fs::read_to_string(self.dir.join(&self.current).join(&name)).unwrap();
                payload.push((name, contents));
            }
        }
        let borrowed: Vec<(&str, &str)> = payload.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
        let next = write_payload(&self.dir, &borrowed);
        let tmp = self.dir.join("..data_tmp");
        symlink(&next, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let old = std::mem::replace(&mut self.current, next);
        self.link_keys();
        std::fs::remove_dir_all(self.dir.join(old)).unwrap();
    }

    /// Replaces the TLS keys with `issued` (and `ca.crt` with `ca_pem`, if given) in one
    /// kubelet update, as a cert-manager renewal does.
    pub fn rotate(&mut self, issued: &Issued, ca_pem: Option<&str>) {
        let mut files = vec![("tls.crt", issued.chain_pem.as_str()), ("tls.key", issued.key_pem.as_str())];
        files.extend(ca_pem.map(|ca| ("ca.crt", ca)));
        self.update(&files);
    }

    /// Overwrites key `name` in place (open, truncate, write: same inode, no rename),
    /// the way an operator or a naive tool rewrites a file.
    pub fn overwrite_in_place(&self, name: &str, contents: &str) {
        std::fs::write(self.path(name), contents).unwrap();
    }

    /// Makes the user-visible `DIR/<key> -> ..data/<key>` link for every key in the
    /// current payload that has none yet (the kubelet adds links for new keys).
    fn link_keys(&mut self) {
        for entry in std::fs::read_dir(self.dir.join(&self.current)).unwrap() {
            let name = entry.unwrap().file_name();
            let link = self.dir.join(&name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(&name), &link).unwrap();
            }
        }
    }
}

/// Writes `files` into a fresh `..YYYY_MM_DD_HH_MM_SS.micros` directory under `dir`;
/// returns its name.
fn write_payload(dir: &Path, files: &[(&str, &str)]) -> String {
    let micros = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_micros();
    let name = (micros..).map(timestamp_dir_name).find(|name| !dir.join(name).exists()).unwrap();
    let payload = dir.join(&name);
    std::fs::create_dir(&payload).unwrap();
    for (file, contents) in files {
        std::fs::write(payload.join(file), contents).unwrap();
        if file.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(payload.join(file), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    name
}

/// `..2026_11_25_15_00_00.123456` for a Unix time in microseconds (UTC).
fn timestamp_dir_name(micros: u128) -> String {
    let secs = (micros / 1_000_000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("..{year:04}_{month:02}_{day:02}_{:02}_{:02}_{:02}.{:06}", rem / 3600, rem % 3600 / 60, rem % 60, micros % 1_000_000)
}

/// The first certificate (the leaf) of a PEM chain file, DER.
pub fn leaf_der(chain_file: &Path) -> CertificateDer<'static> {
    strait::tls::load_certs(chain_file).unwrap().remove(0)
}

/// The leaf serial of the credential in Secret directory `dir`, spelled as the gateway
/// logs it (`serial=...` on "certificate loaded").
pub fn serial(dir: &Path) -> String {
    let cert = dir.join("tls.crt");
    let key = strait::tls::load_certified_key(&cert, &dir.join("tls.key")).unwrap();
    strait::tls::CredentialInfo::of(&cert, &key).serial
}

/// Follows a gateway's log from a point on, reading only what is new (a busy gateway's
/// access log grows fast; re-reading it whole every few milliseconds would load the
/// machine the test measures).
pub struct LogTail {
    file: std::fs::File,
    /// Bytes read but not yet ending in a newline.
    partial: Vec<u8>,
}

impl LogTail {
    /// Starts at the current end of `gateway`'s log: only lines written later are seen.
    pub fn from_now(gateway: &Gateway) -> LogTail {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::open(&gateway.proc.log).unwrap();
        file.seek(SeekFrom::End(0)).unwrap();
        LogTail { file, partial: Vec::new() }
    }

    /// The next complete new line containing `needle`, if one was written already;
    /// lines before it are consumed.
    pub fn next_with(&mut self, needle: &str) -> Option<String> {
        self.next_with_any(&[needle])
    }

    /// The next complete new line containing any of `needles`, if one was written
    /// already; lines before it are consumed.
    pub fn next_with_any(&mut self, needles: &[&str]) -> Option<String> {
        use std::io::Read;
        loop {
            if let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.partial.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                if needles.iter().any(|n| line.contains(n)) {
                    return Some(line);
                }
                continue;
            }
            let mut chunk = [0u8; 64 * 1024];
            match self.file.read(&mut chunk).unwrap() {
                0 => return None,
                n => self.partial.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Waits for the next reload outcome ([`RELOADED`] or [`REFUSED`]); returns its
    /// line and how long the wait took.
    pub fn wait_for_reload(&mut self, gateway: &Gateway, limit: Duration) -> (String, Duration) {
        self.wait_for_any(gateway, &[RELOADED, REFUSED], limit)
    }

    /// Waits for the next new line containing `needle`; returns it and how long the
    /// wait took. Panics after `limit`, showing `gateway`'s log.
    pub fn wait_for(&mut self, gateway: &Gateway, needle: &str, limit: Duration) -> (String, Duration) {
        self.wait_for_any(gateway, &[needle], limit)
    }

    /// Waits for the next new line containing any of `needles`.
    pub fn wait_for_any(&mut self, gateway: &Gateway, needles: &[&str], limit: Duration) -> (String, Duration) {
        let start = Instant::now();
        loop {
            if let Some(line) = self.next_with_any(needles) {
                return (line, start.elapsed());
            }
            assert!(start.elapsed() < limit, "no new line with {needles:?} within {limit:?}; log:\n{}", gateway.proc.output());
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_update_match_the_kubelet() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("secret");
        let mut secret = KubeSecret::create(&dir, &[("tls.crt", "crt 1"), ("tls.key", "key 1"), ("ca.crt", "ca 1")]);
        let first = std::fs::read_link(dir.join("..data")).unwrap();
        assert!(first.is_relative() && first.to_string_lossy().starts_with("..20"), "{first:?}");
        assert_eq!(std::fs::read_link(dir.join("tls.crt")).unwrap(), Path::new("..data/tls.crt"));

        secret.update(&[("ca.crt", "ca 2")]);
        let second = std::fs::read_link(dir.join("..data")).unwrap();
        assert_ne!(first, second);
        assert!(!dir.join(&first).exists(), "the old payload is removed");
        assert!(std::fs::symlink_metadata(dir.join("..data_tmp")).is_err());
        assert_eq!((secret.read("tls.crt"), secret.read("ca.crt")), ("crt 1".into(), "ca 2".into()));
        let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        let mut expected = vec!["..data".to_owned(), second.display().to_string(), "ca.crt".into(), "tls.crt".into(), "tls.key".into()];
        expected.sort();
        assert_eq!(names, expected);

        secret.overwrite_in_place("tls.key", "key 2");
        assert_eq!(std::fs::read_to_string(dir.join(&second).join("tls.key")).unwrap(), "key 2");
    }

    #[test]
    fn timestamp_names_are_utc_calendar_dates() {
        assert_eq!(timestamp_dir_name(0), "..1970_01_01_00_00_00.000000");
        // 2026-11-25T15:00:00.123456Z
        assert_eq!(timestamp_dir_name(1_795_618_800_123_456), "..2026_11_25_15_00_00.123456");
    }
}
