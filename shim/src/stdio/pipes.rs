//! The pipes between runc (and so the process, which inherits them) and the shim's copies.
//! They exist before runc is spawned, and their copies run from then on (bug class 3).

use std::os::fd::{AsRawFd, OwnedFd};

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

fn pipe_pair() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("create stdio pipe", e.into()))
}
