//! Noticing that the config or a credential changed on disk.
//!
//! Kubernetes updates a mounted Secret by writing a new timestamped directory and
//! swapping the `..data` symlink; cert-manager rewrites the Secret the same way; an
//! operator may overwrite a file in place. All three show up as events in the directory
//! that holds the file, so the parent directories are watched, not the files.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// What a file event means for the reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A watched file changed in place or a Secret update is under way: more may follow
    /// (a certificate written before its key), so the reload waits for the burst to settle.
    Settling,
    /// The kubelet swapped a Secret's `..data` symlink: the update is complete and
    /// consistent, so the reload runs at once.
    Committed,
}

/// The name of the symlink the kubelet swaps, last, to publish a Secret update.
const KUBELET_COMMIT: &str = "..data";

/// Watches a set of directories; each relevant event sends a [`Change`] (dropped when
/// many are already pending: the reload reads the files, not the events).
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    /// File names that matter in the watched directories; other files there (logs,
    /// editors' swap files) are ignored.
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl FileWatcher {
    /// A watcher that wakes `changes` on every relevant event in a watched directory.
    pub fn new(changes: mpsc::Sender<Change>) -> notify::Result<FileWatcher> {
        let names: Arc<Mutex<HashSet<OsString>>> = Arc::default();
        let wanted = names.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, notify::EventKind::Access(_)) {
                return;
            }
            let wanted = wanted.lock().unwrap_or_else(|p| p.into_inner());
            let relevant = event.paths.iter().filter_map(|p| p.file_name()).any(|name| {
                // `..data`, `..2026_11_25_...`: the kubelet's atomic Secret update.
                wanted.contains(name) || name.to_string_lossy().starts_with("..")
            });
            if relevant {
                let _ = changes.try_send(classify(&event));
            }
        })?;
        Ok(FileWatcher { watcher, watched: BTreeSet::new(), names })
    }

    /// Watches exactly `files` (through their parent directories) from now on. A file
    /// that is a symlink is also watched where it points, so an in-place write to the
    /// target (a Secret's `..2026_…/tls.crt`, a `/etc/letsencrypt/live` link) is seen.
    pub fn watch_files(&mut self, files: &[PathBuf]) {
        let files: Vec<PathBuf> = files
            .iter()
            .flat_map(|f| {
                let target = std::fs::canonicalize(f).ok().filter(|t| t != f);
                std::iter::once(f.clone()).chain(target)
            })
            .collect();
        *self.names.lock().unwrap_or_else(|p| p.into_inner()) = files.iter().filter_map(|f| f.file_name()).map(OsString::from).collect();
        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| parent_dir(f)).collect();
        for gone in self.watched.difference(&wanted) {
            let _ = self.watcher.unwatch(gone);
        }
        for dir in wanted.difference(&self.watched) {
            if let Err(e) = self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes; SIGHUP still reloads");
            }
        }
        self.watched = wanted;
    }
}

/// A rename onto (or creation of) `..data` is the kubelet's commit; anything else may be
/// the first of several writes.
fn classify(event: &notify::Event) -> Change {
    use notify::event::{EventKind, ModifyKind, RenameMode};
    let lands = matches!(event.kind, EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both | RenameMode::Any)));
    // A paired rename lists the old name first and the new one last.
    let name = event.paths.last().and_then(|p| p.file_name());
    if lands && name.is_some_and(|n| n == KUBELET_COMMIT) {
        Change::Committed
    } else {
        Change::Settling
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// A digest of the files' contents: a reload whose inputs have not changed is skipped.
pub fn fingerprint(files: &[PathBuf]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::time::Duration;

    async fn next(changes: &mut mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(5), changes.recv()).await.expect("a file event within 5 s").expect("watcher alive")
    }

    #[tokio::test]
    async fn a_kubelet_swap_commits_and_an_in_place_write_settles() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("..2026_12_01_12_00_00.1");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("tls.crt"), "one").unwrap();
        symlink(&first, dir.path().join("..data")).unwrap();
        symlink("..data/tls.crt", dir.path().join("tls.crt")).unwrap();
        let plain = dir.path().join("ca.crt");
        std::fs::write(&plain, "ca").unwrap();

        let (tx, mut changes) = mpsc::channel(64);
        let mut watcher = FileWatcher::new(tx).unwrap();
        watcher.watch_files(&[dir.path().join("tls.crt"), plain.clone()]);

        // The kubelet's update: a new timestamped directory, `..data_tmp` pointing at
        // it, renamed over `..data`. Only the rename commits.
        let second = dir.path().join("..2026_12_01_12_00_01.2");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("tls.crt"), "two").unwrap();
        symlink(&second, dir.path().join("..data_tmp")).unwrap();
        std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).unwrap();
        let mut seen = Vec::new();
        while !seen.contains(&Change::Committed) {
            seen.push(next(&mut changes).await);
        }
        assert!(seen[..seen.len() - 1].iter().all(|c| *c == Change::Settling), "only the rename commits: {seen:?}");
        while changes.try_recv().is_ok() {}

        std::fs::write(&plain, "ca, rewritten in place").unwrap();
        assert_eq!(next(&mut changes).await, Change::Settling, "an in-place write may be half of an update");
    }
}
