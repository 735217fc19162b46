//! A logical wall clock, for tests and development only (`up --clock-file
//! PATH`): components read the time from a file holding Unix seconds, so a
//! test sets the time, and moves it past a TTL or into the next admission
//! window, by writing the file instead of waiting. Only the guests' WASI wall
//! clock follows the file; their monotonic clock and the host's own timers
//! (`--tick`'s interval, instance timeouts) stay real.
//!
//! ```no_run
//! # fn run() -> anyhow::Result<()> {
//! let path = std::path::Path::new("/tmp/clock");
//! hongbao_host::clock::write(path, 1_767_225_600)?;
//! let clock = hongbao_host::clock::FileClock::open(path)?;
//! let options = hongbao_host::ServeOptions { wall_clock: Some(clock), ..Default::default() };
//! # let _ = options; Ok(()) }
//! ```

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A `wasi:clocks/wall-clock` that reads its file on every call: a read of a
/// few bytes. (A copy cached until the file's mtime changes could miss a
/// write: two quick writes can leave the same mtime.)
#[derive(Debug, Clone)]
pub struct FileClock {
    path: Arc<Path>,
    /// Nanoseconds since the epoch last read, answered should the file
    /// become unreadable while serving (the guest's clock cannot fail).
    last: Arc<AtomicU64>,
}

impl FileClock {
    /// The clock of `path`, which must already hold a time.
    pub fn open(path: &Path) -> Result<FileClock> {
        let now = read(path)?;
        Ok(FileClock { path: path.into(), last: Arc::new(AtomicU64::new(now.as_nanos() as u64)) })
    }
}

impl wasmtime_wasi::HostWallClock for FileClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self) -> Duration {
        match read(&self.path) {
            Ok(now) => {
                self.last.store(now.as_nanos() as u64, Ordering::Relaxed);
                now
            }
            Err(e) => {
                eprintln!("hongbao-host: --clock-file: {e:#}; answering the last time read");
                Duration::from_nanos(self.last.load(Ordering::Relaxed))
            }
        }
    }
}

/// The file's time: Unix seconds as a decimal number (`1767225600`,
/// `1767225600.25`), surrounding whitespace ignored.
fn read(path: &Path) -> Result<Duration> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the clock file {}", path.display()))?;
    text.trim()
        .parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .with_context(|| format!("the clock file {} holds {text:?}, not Unix seconds", path.display()))
}

/// Sets the clock of `path` to `unix_seconds`, atomically (written beside it,
/// then renamed over it): a reader sees the old time or the new, never a
/// partial write.
pub fn write(path: &Path, unix_seconds: i64) -> std::io::Result<()> {
    let mut staged = path.as_os_str().to_owned();
    staged.push(".new");
    std::fs::write(&staged, format!("{unix_seconds}\n"))?;
    std::fs::rename(&staged, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime_wasi::HostWallClock;

    #[test]
    fn the_clock_reads_what_was_last_written() {
        let dir = crate::external::TempDir::new("clock").unwrap();
        let path = dir.0.join("now");
        write(&path, 1_767_225_600).unwrap();
        let clock = FileClock::open(&path).unwrap();
        assert_eq!(clock.now(), Duration::from_secs(1_767_225_600));
        write(&path, 1_767_225_601).unwrap();
        assert_eq!(clock.now(), Duration::from_secs(1_767_225_601), "no caching across writes");
        std::fs::write(&path, "1767225602.5").unwrap();
        assert_eq!(clock.now(), Duration::from_millis(1_767_225_602_500));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(clock.now(), Duration::from_millis(1_767_225_602_500), "the last time read");
    }

    #[test]
    fn a_missing_or_garbled_file_is_refused_at_start() {
        let dir = crate::external::TempDir::new("clock-bad").unwrap();
        let path = dir.0.join("now");
        let missing = FileClock::open(&path).unwrap_err();
        assert!(format!("{missing:#}").contains("reading the clock file"), "{missing:#}");
        for garbled in ["", "noon", "-5", "1e400"] {
            std::fs::write(&path, garbled).unwrap();
            let error = FileClock::open(&path).unwrap_err();
            assert!(format!("{error:#}").contains("not Unix seconds"), "{garbled:?}: {error:#}");
        }
    }
}
