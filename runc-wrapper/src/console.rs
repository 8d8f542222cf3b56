//! The console socket: runc (`--console-socket`) connects to it and passes the pty master of a
//! terminal process over SCM_RIGHTS. Receiving is bounded by a deadline.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use crate::Error;

pub struct ConsoleSocket {
    /// A private directory (removed on drop) holding the socket.
    dir: tempfile::TempDir,
    path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> std::io::Result<ConsoleSocket> {
        let dir = tempfile::Builder::new().prefix("rshim-pty").tempdir()?;
        let path = dir.path().join("pty.sock");
        let listener = tokio::net::UnixListener::bind(&path)?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits (at most `timeout`) for runc to connect and send the pty master.
    pub async fn receive(&self, timeout: Duration) -> Result<OwnedFd, Error> {
        let receive = async {
            let (stream, _) = self
                .listener
                .accept()
                .await
                .map_err(|e| Error::Console(format!("accept: {e}")))?;
            loop {
                stream
                    .readable()
                    .await
                    .map_err(|e| Error::Console(e.to_string()))?;
                match stream.try_io(tokio::io::Interest::READABLE, || {
                    receive_fd(stream.as_raw_fd())
                }) {
                    Ok(fd) => return Ok(fd),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(Error::Console(e.to_string())),
                }
            }
        };
        tokio::time::timeout(timeout, receive)
            .await
            .map_err(|_| Error::Timeout {
                command: format!("console socket {}", self.dir.path().display()),
                after: timeout,
            })?
    }
}

/// One message carrying one fd (runc sends the pty's name as data, the master as SCM_RIGHTS).
fn receive_fd(socket: RawFd) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket,
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this fd in our table; we own it now.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(std::io::Error::other("runc sent no file descriptor"))
}
