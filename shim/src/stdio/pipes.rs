//! The pipes between runc (and so the process, which inherits them) and the shim's copies.
//! They exist before runc is spawned, and their copies run from then on (bug class 3).
//!
//! Every pipe and FIFO the shim copies through is widened to `fs.pipe-max-size` (1 MiB unless
//! the node's operator lowered it), where the Go shim leaves the kernel's 64 KiB: each copy
//! then moves up to 1 MiB per wake-up instead of 64 KiB, which is most of what a flood of
//! output costs (issue 16: stdout 1.3-1.5x the Go shim's throughput at 64 KiB, 3.8x widened). A
//! process that writes while its reader is slow (containerd restarting, a busy log reader)
//! also blocks 16 times later. The pages are the kernel's and exist only while bytes wait in
//! the pipe; the widening is best effort, a pipe the kernel refuses to widen keeps its size.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::OnceLock;

use runc_wrapper::io::RuncStdio;
use tokio::net::unix::pipe;

use crate::error::{Error, Result};

/// The shim's ends of a process's pipes; their other ends are in `runc`.
pub struct Pipes {
    pub runc: RuncStdio,
    pub stdin: Option<pipe::Sender>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
}

impl Pipes {
    /// Creates the requested pipes. `owner`: IoUid/IoGid, the owner of the ends the process
    /// gets (a process running as another user can then reopen them, as in the Go shim).
    pub fn new(
        stdin: bool,
        stdout: bool,
        stderr: bool,
        owner: Option<(u32, u32)>,
    ) -> Result<Pipes> {
        let mut p = Pipes {
            runc: RuncStdio::default(),
            stdin: None,
            stdout: None,
            stderr: None,
        };
        let chown = |fd: &OwnedFd| -> Result<()> {
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(fd.as_raw_fd(), Some(uid.into()), Some(gid.into()))
                    .map_err(|e| Error::io("chown stdio pipe", e.into()))?;
            }
            Ok(())
        };
        if stdin {
            let (r, w) = pipe_pair()?;
            chown(&r)?;
            p.runc.stdin = Some(r);
            p.stdin = Some(pipe::Sender::from_owned_fd(w).map_err(|e| Error::io("stdin pipe", e))?);
        }
        if stdout {
            let (r, w) = pipe_pair()?;
            chown(&w)?;
            p.runc.stdout = Some(w);
            p.stdout =
                Some(pipe::Receiver::from_owned_fd(r).map_err(|e| Error::io("stdout pipe", e))?);
        }
        if stderr {
            let (r, w) = pipe_pair()?;
            chown(&w)?;
            p.runc.stderr = Some(w);
            p.stderr =
                Some(pipe::Receiver::from_owned_fd(r).map_err(|e| Error::io("stderr pipe", e))?);
        }
        Ok(p)
    }
}

/// A close-on-exec pipe, widened.
pub(super) fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("create stdio pipe", e.into()))?;
    widen(&r);
    Ok((r, w))
}

/// The most a pipe is widened to, whatever `fs.pipe-max-size` allows root.
const WIDEST: usize = 1 << 20;

/// Widens the pipe or FIFO behind `fd` (either end) to `fs.pipe-max-size`, at most 1 MiB.
pub(super) fn widen(fd: &impl AsFd) {
    let size = width();
    let fd = fd.as_fd();
    match nix::fcntl::fcntl(
        fd.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(size as _),
    ) {
        Ok(_) => {}
        // EPERM past a user's pipe-user-pages limits, ENOMEM, EBUSY: the pipe keeps its size.
        Err(e) => log::debug!("pipe of fd {} not widened to {size}: {e}", fd.as_raw_fd()),
    }
}

/// The width every pipe gets: `fs.pipe-max-size`, read once, at most `WIDEST`.
fn width() -> usize {
    static WIDTH: OnceLock<usize> = OnceLock::new();
    *WIDTH.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .map_or(WIDEST, |max| max.min(WIDEST))
    })
}

/// The size of the pipe behind `fd`, for the tests of what is widened.
#[cfg(test)]
pub(super) fn size_of(fd: &impl AsFd) -> usize {
    nix::fcntl::fcntl(fd.as_fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap() as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stdio_pipes_are_as_wide_as_the_system_allows() {
        let want = width();
        assert!(want > 64 * 1024, "pipe-max-size here is {want}");
        let (r, w) = pipe_pair().unwrap();
        assert_eq!(size_of(&r), want);
        assert_eq!(size_of(&w), want);
        let p = Pipes::new(true, true, true, None).unwrap();
        for fd in [&p.runc.stdin, &p.runc.stdout, &p.runc.stderr] {
            assert_eq!(size_of(fd.as_ref().unwrap()), want);
        }
    }
}
