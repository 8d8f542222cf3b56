//! The client's ends as containerd names them: FIFO paths and `file://` URIs (`binary://` is
//! in `binary`). FIFOs are never opened blocking: an open of a FIFO whose other end is gone
//! would hang forever.

use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::net::unix::pipe;

use super::copy::Dest;
use super::pipes::widen;
use crate::error::{Error, Result};

/// An output destination: a FIFO or plain path, or `file:///path` (appended to). A FIFO is
/// opened read-write: that never blocks, never fails with ENXIO, and (as the Go shim does by
/// holding a read end) keeps the FIFO alive across a containerd restart.
pub fn open_output(uri: &str) -> Result<Dest> {
    if let Some(path) = uri.strip_prefix("file://") {
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("open {path}"), e))?;
        return Ok(Dest::stream(tokio::fs::File::from_std(f)));
    }
    if uri.contains("://") {
        return Err(Error::Unimplemented(format!(
            "stdio URI scheme not supported yet: {uri}"
        )));
    }
    if !Path::new(uri).exists() {
        return Err(Error::NotFound(format!("stdio FIFO {uri} does not exist")));
    }
    let sender = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(uri)
        .map_err(|e| Error::io(format!("open FIFO {uri}"), e))?;
    widen(&sender);
    Ok(Dest::Pipe(sender))
}

/// The stdin FIFO: a read-only end for the copy and a write-only keep-alive end, both opened
/// non-blocking (the read end first, so the write end's open cannot fail with ENXIO). While
/// the keep-alive is held the copy cannot see EOF, even between two clients; CloseIO drops it.
pub fn open_input(path: &str) -> Result<(pipe::Receiver, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| Error::io(format!("open stdin FIFO {path}"), e))?;
    widen(&fifo);
    let keepalive = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("open stdin FIFO {path} for writing"), e))?;
    Ok((fifo, keepalive.into()))
}

#[cfg(test)]
mod tests {
    use super::super::pipes::size_of;
    use super::*;

    /// containerd's FIFOs are widened as the shim's own pipes are (`pipes`): the copy into
    /// the FIFO and its reader then move up to 1 MiB per wake-up.
    #[tokio::test]
    async fn containerd_fifos_are_widened() {
        let dir = tempfile::tempdir().unwrap();
        let (out, inp) = (dir.path().join("out"), dir.path().join("in"));
        for p in [&out, &inp] {
            nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        }
        // The client's end, opened after the shim's, shows the same pipe's size.
        let Dest::Pipe(_shim_end) = open_output(out.to_str().unwrap()).unwrap() else {
            panic!("a FIFO is a pipe destination");
        };
        let client = pipe::OpenOptions::new().open_receiver(&out).unwrap();
        let (_copy_end, keepalive) = open_input(inp.to_str().unwrap()).unwrap();
        let default = 64 * 1024;
        assert!(
            size_of(&client) > default,
            "stdout FIFO: {}",
            size_of(&client)
        );
        assert!(
            size_of(&keepalive) > default,
            "stdin FIFO: {}",
            size_of(&keepalive)
        );
    }
}
