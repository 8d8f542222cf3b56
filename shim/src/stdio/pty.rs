//! The pty master received on the console socket: a reader and a writer half for the copies,
//! and the window size.

// Unsafe here (denied elsewhere in the crate): TIOCSWINSZ on the master, and registering the
// master's fd with tokio.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};

/// One direction of the pty master, as its own fd (a dup) registered with tokio.
pub struct PtyHalf {
    inner: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl PtyHalf {
    pub fn of(master: &OwnedFd) -> Result<PtyHalf> {
        let fd = master
            .try_clone()
            .map_err(|e| Error::io("dup pty master", e))?;
        let set_nonblocking = || -> nix::Result<()> {
            let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
            Ok(())
        };
        set_nonblocking().map_err(|e| Error::io("pty master non-blocking", e.into()))?;
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd), so it stays open while registered.
        let inner = unsafe { tokio::io::unix::AsyncFd::register(fd) }
            .map_err(|e| Error::io("register pty master", e.into()))?;
        Ok(PtyHalf { inner })
    }
}

/// Sets the terminal's window size.
pub fn resize(master: &OwnedFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height as u16,
        ws_col: width as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize from a valid pointer on a valid fd.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        return Err(Error::io("resize pty", std::io::Error::last_os_error()));
    }
    Ok(())
}

impl AsyncRead for PtyHalf {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        loop {
            let mut guard = futures::ready!(self.inner.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return std::task::Poll::Ready(Ok(()));
                }
                // EIO: every slave fd is closed (the processes on the terminal are gone): EOF.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => {
                    return std::task::Poll::Ready(Ok(()))
                }
                Ok(Err(e)) => return std::task::Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PtyHalf {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        loop {
            let mut guard = futures::ready!(self.inner.poll_write_ready(cx))?;
            match guard
                .try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(std::io::Error::from))
            {
                Ok(result) => return std::task::Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    /// Nothing to shut down: the terminal stays (closing stdin of a tty is not an EOF).
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
