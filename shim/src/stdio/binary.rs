//! `binary://` and `binary-v2://` stdio: the process's output goes to a logging binary that
//! the shim starts, with containerd's conventions: the binary gets the stdout pipe as fd 3, the
//! stderr pipe as fd 4 and a readiness pipe as fd 5, an environment of only `CONTAINER_ID` and
//! `CONTAINER_NAMESPACE`, and its arguments from the URI query (`?key=value` gives `key value`).
//! `binary://` counts the readiness pipe's close as ready; `binary-v2://` needs a byte on it.
//!
//! Unlike the Go shim, the wait for readiness is bounded (a logger that never signals would
//! hang Create forever), and the logger is tracked by a pidfd, so stopping it can never signal
//! a recycled pid after the shim's reaper collected it.

// Unsafe here (denied elsewhere in the crate): pidfd_open and pidfd_send_signal (no safe wrapper), and placing the logger's fds between fork and exec.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

use super::pipes::pipe_pair;
use crate::error::{Error, Result};

/// How long a logging binary may take to signal ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logging binary gets to exit after SIGTERM (the Go shim's figure).
pub const TERM_TIMEOUT: Duration = Duration::from_secs(12);
/// How long Delete lets a logging binary take in the process's last output, and then exit on
/// its own, before it is sent SIGTERM: a slow logger must not lose what is still in its pipe.
/// `RSHIM_LOGGER_DRAIN_SECONDS` in the shim's environment (containerd's) overrides it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
pub const DRAIN_TIMEOUT_ENV: &str = "RSHIM_LOGGER_DRAIN_SECONDS";

/// `DRAIN_TIMEOUT`, or the whole seconds of `RSHIM_LOGGER_DRAIN_SECONDS`.
pub fn drain_timeout() -> Duration {
    std::env::var(DRAIN_TIMEOUT_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DRAIN_TIMEOUT)
}

/// A started logging binary and the pipes the process's output goes into.
pub struct BinaryIo {
    pub stdout: pipe::Sender,
    pub stderr: pipe::Sender,
    pub logger: Logger,
}

/// The logging binary's process.
pub struct Logger {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

/// Whether `uri` names a logging binary.
pub fn is_binary_uri(uri: &str) -> bool {
    uri.starts_with("binary://") || uri.starts_with("binary-v2://")
}

/// The binary's path and arguments from its URI.
pub fn command_line(uri: &str) -> Result<(String, Vec<String>)> {
    let parsed = url::Url::parse(uri)
        .map_err(|e| Error::InvalidArgument(format!("stdio URI {uri}: {e}")))?;
    let path = parsed.path().to_string();
    if path.is_empty() || path == "/" {
        return Err(Error::InvalidArgument(format!(
            "stdio URI {uri} names no binary"
        )));
    }
    let mut args = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (key, value) in parsed.query_pairs() {
        // Only a key's first value counts, as in containerd.
        if seen.insert(key.to_string()) {
            args.push(key.into_owned());
            args.push(value.into_owned());
        }
    }
    Ok((path, args))
}

impl BinaryIo {
    /// Starts the logging binary of `uri` for process `id` and waits (bounded) for it to be
    /// ready.
    pub async fn start(uri: &str, id: &str, namespace: &str) -> Result<BinaryIo> {
        let (path, args) = command_line(uri)?;
        let strict = uri.starts_with("binary-v2://");
        let (out_r, out_w) = pipe_pair()?;
        let (err_r, err_w) = pipe_pair()?;
        let (ready_r, ready_w) = pipe_pair()?;

        let mut cmd = Command::new(&path);
        cmd.args(&args)
            .env_clear()
            .env("CONTAINER_ID", id)
            .env("CONTAINER_NAMESPACE", namespace)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let sources = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
        // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
        unsafe {
            cmd.pre_exec(move || place_fds(&sources));
        }
        let child = runc_wrapper::monitor::spawn_reaped(&mut cmd)
            .map_err(|e| Error::io(format!("start logging binary {path}"), e))?;
        let pid = child.id() as i32;
        // The shim's reaper collects the child; the pidfd is how we follow it.
        drop(child);
        let logger = Logger::new(pid)?;
        drop((out_r, err_r, ready_w));

        let mut ready =
            pipe::Receiver::from_owned_fd(ready_r).map_err(|e| Error::io("readiness pipe", e))?;
        let mut byte = [0u8; 1];
        let outcome = tokio::time::timeout(READY_TIMEOUT, ready.read(&mut byte)).await;
        let failure = match outcome {
            Err(_) => Some(Error::DeadlineExceeded(format!(
                "logging binary {path} did not signal ready within {READY_TIMEOUT:?}"
            ))),
            Ok(Err(e)) => Some(Error::io(format!("read readiness of {path}"), e)),
            Ok(Ok(0)) if strict => Some(Error::FailedPrecondition(format!(
                "logging binary {path} did not call ready (it may have crashed or exited \
                 prematurely)"
            ))),
            Ok(Ok(_)) => None,
        };
        if let Some(e) = failure {
            logger.kill();
            return Err(e);
        }
        Ok(BinaryIo {
            stdout: sender(out_w)?,
            stderr: sender(err_w)?,
            logger,
        })
    }
}

impl Logger {
    fn new(pid: i32) -> Result<Logger> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::io(
                format!("pidfd of logging binary {pid}"),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the syscall returned a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open while registered.
        let pidfd =
            unsafe { AsyncFd::register(fd) }.map_err(|e| Error::io("register pidfd", e.into()))?;
        Ok(Logger { pid, pidfd })
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: pidfd_send_signal on a pidfd we own; a null siginfo is allowed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            log::debug!(
                "signal {signal} to logging binary {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            );
        }
    }

    fn kill(&self) {
        self.signal(libc::SIGKILL);
    }

    /// Lets the logger finish on its own until `deadline` (the caller has closed its pipes, so
    /// it sees EOF once it has read everything), then SIGTERM, then SIGKILL if it has not
    /// exited within `TERM_TIMEOUT`.
    pub async fn stop(&self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, self.pidfd.readable())
            .await
            .is_ok()
        {
            return;
        }
        log::warn!(
            "logging binary {} still running {:?} after its output ended; sending SIGTERM",
            self.pid,
            drain_timeout()
        );
        self.signal(libc::SIGTERM);
        if tokio::time::timeout(TERM_TIMEOUT, self.pidfd.readable())
            .await
            .is_err()
        {
            log::warn!(
                "logging binary {} did not exit within {TERM_TIMEOUT:?}; killing it",
                self.pid
            );
            self.kill();
        }
    }
}

fn sender(fd: OwnedFd) -> Result<pipe::Sender> {
    pipe::Sender::from_owned_fd(fd).map_err(|e| Error::io("logging pipe", e))
}

/// In the child: the three pipe ends become fds 3, 4 and 5 (without close-on-exec). Each is
/// first moved above 10, where no target number is, so no dup2 is a no-op on a source that
/// already sits on its target.
fn place_fds(sources: &[RawFd; 3]) -> std::io::Result<()> {
    let mut moved = [0; 3];
    for (i, fd) in sources.iter().enumerate() {
        // SAFETY: fcntl on an fd inherited from the parent.
        moved[i] = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10) };
        if moved[i] < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, fd) in moved.iter().enumerate() {
        // SAFETY: dup2 onto 3, 4, 5; dup2 clears close-on-exec on the new fd.
        if unsafe { libc::dup2(*fd, 3 + i as RawFd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_from_the_query() {
        let (path, args) =
            command_line("binary:///usr/bin/logger?-t=my%20tag&--id=c1&flag").unwrap();
        assert_eq!(path, "/usr/bin/logger");
        assert_eq!(args, ["-t", "my tag", "--id", "c1", "flag", ""]);
        let (_, args) = command_line("binary-v2:///bin/log?a=1&a=2").unwrap();
        assert_eq!(args, ["a", "1"]);
        assert!(command_line("binary://").is_err());
    }
}
