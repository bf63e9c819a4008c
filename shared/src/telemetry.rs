//! Logging set-up shared by both binaries.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Logs to stderr at `level` (a level or an `EnvFilter` directive such as
/// `info,strait::access=warn`).
pub fn init(level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("--log-level {level:?}: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|e| e.to_string())
}
