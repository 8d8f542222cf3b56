//! Logging to containerd's per-shim log FIFO (`log` in the bundle), in logrus' text format
//! (`time="..." level=info msg="..."`), which containerd copies into its own log.
//!
//! Writes never block the shim: the FIFO is non-blocking, and a line that does not fit while
//! nobody reads (containerd restarting) is dropped and counted; the count is reported with the
//! next line that gets through.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

pub struct FifoLogger {
    out: Mutex<Sink>,
    dropped: AtomicU64,
}

enum Sink {
    Fifo(File),
    Stderr,
}

impl FifoLogger {
    /// Logs to the FIFO at `path` if it exists, else to stderr.
    pub fn install(path: &Path, debug: bool) {
        let sink = match open_fifo(path) {
            Some(f) => Sink::Fifo(f),
            None => Sink::Stderr,
        };
        let logger = FifoLogger {
            out: Mutex::new(sink),
            dropped: AtomicU64::new(0),
        };
        Self::set(logger, debug);
    }

    /// Logs to stderr (the `start` and `delete` actions: containerd captures their stderr).
    pub fn install_stderr(debug: bool) {
        Self::set(
            FifoLogger {
                out: Mutex::new(Sink::Stderr),
                dropped: AtomicU64::new(0),
            },
            debug,
        );
    }

    fn set(logger: FifoLogger, debug: bool) {
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(if debug {
                LevelFilter::Debug
            } else {
                LevelFilter::Info
            });
        }
    }
}

fn open_fifo(path: &Path) -> Option<File> {
    // O_WRONLY|O_NONBLOCK fails with ENXIO when containerd has no reader open; never block on
    // the open. Falling back to O_RDWR keeps the FIFO usable for a containerd that comes back.
    let write_only = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    match write_only {
        Ok(f) => Some(f),
        Err(_) => OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .ok(),
    }
}

/// The runtime this shim serves as, named in every line as containerd's shims do: the one its
/// binary's name says (`containerd-shim-runc-v2` when installed as the drop-in).
fn runtime() -> &'static str {
    static RUNTIME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| crate::info::runtime_name(&std::env::args().next().unwrap_or_default()))
}

pub fn format_line(level: Level, msg: &str, now: SystemTime) -> String {
    format_line_as(runtime(), level, msg, now)
}

fn format_line_as(runtime: &str, level: Level, msg: &str, now: SystemTime) -> String {
    let level = match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    };
    format!(
        "time=\"{}\" level={} msg={:?} runtime={runtime}\n",
        rfc3339_nano(now),
        level,
        msg
    )
}

/// RFC 3339 with fixed nanoseconds, UTC (containerd's `RFC3339NanoFixed`).
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

impl Log for FifoLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut msg = record.args().to_string();
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            msg = format!("{msg} ({dropped} earlier log lines dropped: log FIFO full)");
        }
        let line = format_line(record.level(), &msg, SystemTime::now());
        let Ok(mut out) = self.out.lock() else { return };
        match &mut *out {
            Sink::Fifo(f) => {
                if f.write_all(line.as_bytes()).is_err() {
                    self.dropped.fetch_add(1 + dropped, Ordering::Relaxed);
                }
            }
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamp_is_rfc3339_nano_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_000_000, 5);
        assert_eq!(rfc3339_nano(t), "2026-11-18T11:06:40.000000005Z");
        assert_eq!(
            rfc3339_nano(SystemTime::UNIX_EPOCH),
            "1970-01-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn line_is_logrus_text() {
        let line = format_line(Level::Warn, "a \"quoted\" thing", SystemTime::UNIX_EPOCH);
        assert_eq!(
            line,
            "time=\"1970-01-01T00:00:00.000000000Z\" level=warning msg=\"a \\\"quoted\\\" thing\" runtime=io.containerd.rshim.v2\n"
        );
    }
    #[test]
    fn a_drop_in_names_the_runtime_it_serves() {
        // Installed as containerd-shim-runc-v2, its lines say io.containerd.runc.v2, as the Go
        // shim's do (Docker 20.10 showed rshim's own name before).
        let runtime = crate::info::runtime_name("/usr/local/bin/containerd-shim-runc-v2");
        let line = format_line_as(&runtime, Level::Info, "x", SystemTime::UNIX_EPOCH);
        assert!(line.ends_with(" runtime=io.containerd.runc.v2\n"), "{line}");
    }
}
