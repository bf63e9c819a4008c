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

/// Watches a set of directories; each change sends one wake-up (coalesced: a burst of
/// events leaves at most one pending).
pub struct FileWatcher {
    watcher: RecommendedWatcher,
    watched: BTreeSet<PathBuf>,
    /// File names that matter in the watched directories; other files there (logs,
    /// editors' swap files) are ignored.
    names: Arc<Mutex<HashSet<OsString>>>,
}

impl FileWatcher {
    /// A watcher that wakes `changes` on every relevant event in a watched directory.
    pub fn new(changes: mpsc::Sender<()>) -> notify::Result<FileWatcher> {
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
                let _ = changes.try_send(());
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
