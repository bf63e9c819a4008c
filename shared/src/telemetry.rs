//! Logging set-up shared by both binaries, with a log level that can change at run time
//! (the admin port's `/logging`, like `istioctl proxy-config log --level`).

use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `key=value` text, for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Changes the log filter of the running process; the admin port's `/logging` holds one.
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogControl {
    /// Replaces the log filter.
    pub fn set_level(&self, level: &str) -> Result<(), String> {
        self.handle.reload(parse(level)?).map_err(|e| e.to_string())?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = level.to_owned();
        tracing::warn!(level, "log level changed");
        Ok(())
    }

    /// The filter in force.
    pub fn level(&self) -> String {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Logs to stderr at `level` (a level or an `EnvFilter` directive such as
/// `info,strait::access=warn`). Lines are written by a background thread, so a worker
/// never waits on stderr for an access-log line; when that thread falls behind, workers
/// wait rather than drop lines. Keep the returned guard until exit: dropping it flushes.
pub fn init(level: &str, format: LogFormat) -> Result<(tracing_appender::non_blocking::WorkerGuard, LogControl), String> {
    let filter = parse(level)?;
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(fmt).try_init(),
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
    };
    installed.map_err(|e| e.to_string())?;
    Ok((guard, LogControl { handle, current: Mutex::new(level.to_owned()) }))
}

/// Parses a filter, refusing a bare word that is not a level: `EnvFilter` would take
/// `degub` as a target name and silence every other log line.
fn parse(level: &str) -> Result<EnvFilter, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !directive.contains('[') && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("log level {directive:?}: not a level (trace, debug, info, warn, error, off); for one module write MODULE=LEVEL"));
        }
    }
    EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_typo_is_not_taken_for_a_target() {
        assert!(super::parse("degub").is_err());
        assert!(super::parse("info,strait::access=warn").is_ok());
        assert!(super::parse("DEBUG").is_ok());
    }
}
