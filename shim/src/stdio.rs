//! A process's stdio as containerd hands it over: FIFO paths (any of them empty), `file://`
//! URIs, `binary://` logging binaries (see `binary_io`), or a terminal. The shim owns the pipes between the container and these destinations.
//!
//! Bug class 3: the pipes exist, and their readers run, before runc is spawned
//! (`runc_wrapper::io::ProcessPipes` starts draining at creation), and the destinations are
//! attached before runc runs too, so nothing runc or the process writes can block runc.
//!
//! FIFOs are never opened blocking (an open of a FIFO whose other end is gone would hang
//! forever). Output FIFOs are opened read-write, which never blocks and, as the Go shim does by
//! holding a read end, keeps the FIFO alive across a containerd restart.
//!
//! stdin to the last byte: the copy reads the stdin FIFO through a read-only end until EOF,
//! and the shim holds a separate write end (the keep-alive) so that EOF cannot come before
//! CloseIO, as in the Go shim. CloseIO drops only the keep-alive; the copy then delivers
//! everything still in the FIFO or being written, and sees EOF once the client has closed its
//! end too. Every copy task is owned by its `ProcessIo` and aborted when that is dropped (a
//! failed create or exec, a deleted process), so none outlives its process.

// Unsafe here (denied elsewhere in the crate): TIOCSWINSZ on the pty master, and registering the master's fd with tokio.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use runc_wrapper::io::{ProcessPipes, RuncStdio};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use crate::binary_io::{is_binary_uri, BinaryIo, Logger};
use crate::error::{Error, Result};

/// What containerd asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The live stdio of one process: copy tasks and what CloseIO / ResizePty act on.
pub struct ProcessIo {
    stdin_copy: Mutex<Option<JoinHandle<()>>>,
    /// The shim's write end of the stdin FIFO: while held, the copy cannot see EOF.
    stdin_keepalive: Mutex<Option<OwnedFd>>,
    output_copies: Mutex<Vec<JoinHandle<()>>>,
    drained: Mutex<Option<BoxFuture<'static, ()>>>,
    console: Option<OwnedFd>,
    /// The `binary://` logging process, stopped once the output is drained.
    logger: Option<Logger>,
    /// Owns the drain tasks of the output pipes.
    _pipes: Option<ProcessPipes>,
}

/// Whose stdio it is: a `binary://` logger is told the process id and namespace.
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    /// IoUid/IoGid: the owner of the pipes handed to the process.
    pub uid_gid: Option<(u32, u32)>,
}

/// Before runc: the fds runc gets and what the shim keeps.
pub struct PreparedIo {
    pub runc_stdio: RuncStdio,
    io: ProcessIo,
    pipes: Option<ProcessPipes>,
    stdin_path: String,
    stdout_path: String,
    id: String,
    namespace: String,
}

impl PreparedIo {
    /// Creates pipes (drains running) and attaches the destinations, all before runc.
    /// For a terminal nothing is created here: the pty comes from the console socket later.
    /// `hold`: keep output in memory until `finish` (a failed `runc create` then shows only
    /// its error, as with the Go shim; the drains never stop reading either way).
    pub async fn prepare(cfg: &StdioConfig, owner: Owner<'_>, hold: bool) -> Result<PreparedIo> {
        let mut empty = ProcessIo::none();
        if cfg.terminal {
            return Ok(PreparedIo {
                runc_stdio: RuncStdio::default(),
                io: empty,
                pipes: None,
                stdin_path: cfg.stdin.clone(),
                stdout_path: cfg.stdout.clone(),
                id: owner.id.to_string(),
                namespace: owner.namespace.to_string(),
            });
        }
        // A logging binary takes both outputs and no input, as in the Go shim.
        let binary = is_binary_uri(&cfg.stdout);
        let mut pipes = ProcessPipes::new(
            !cfg.stdin.is_empty() && !binary,
            !cfg.stdout.is_empty(),
            !cfg.stderr.is_empty() || binary,
            owner.uid_gid,
        )
        .map_err(|e| Error::io("create stdio pipes", e))?;
        if hold {
            pipes.hold();
        }
        if binary {
            let logger = BinaryIo::start(&cfg.stdout, owner.id, owner.namespace).await?;
            pipes.attach_stdout(Box::new(logger.stdout));
            pipes.attach_stderr(Box::new(logger.stderr));
            empty.logger = Some(logger.logger);
        } else {
            if !cfg.stdout.is_empty() {
                pipes.attach_stdout(open_output(&cfg.stdout)?);
            }
            if !cfg.stderr.is_empty() {
                pipes.attach_stderr(open_output(&cfg.stderr)?);
            }
        }
        if let Some(stdin_pipe) = pipes.take_stdin() {
            let (fifo, keepalive) = open_input(&cfg.stdin)?;
            let copy = tokio::spawn(copy_until_eof(fifo, stdin_pipe, "stdin"));
            *empty
                .stdin_copy
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()) = Some(copy);
            *empty
                .stdin_keepalive
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()) = Some(keepalive);
        }
        *empty.drained.lock().unwrap_or_else(|p| p.into_inner()) = Some(pipes.drained().boxed());
        let runc_stdio = pipes.take_runc_stdio();
        Ok(PreparedIo {
            runc_stdio,
            io: empty,
            pipes: Some(pipes),
            stdin_path: String::new(),
            stdout_path: String::new(),
            id: owner.id.to_string(),
            namespace: owner.namespace.to_string(),
        })
    }

    /// After runc: for a terminal, wire the pty master received on the console socket to the
    /// FIFOs (stdout carries the terminal's output; stderr is unused with a tty).
    pub async fn finish(mut self, console: Option<OwnedFd>) -> Result<ProcessIo> {
        let mut io = std::mem::replace(&mut self.io, ProcessIo::none());
        if let Some(pipes) = &self.pipes {
            pipes.release();
        }
        io._pipes = self.pipes.take();
        let Some(master) = console else { return Ok(io) };
        if !self.stdout_path.is_empty() {
            let reader = pty_half(&master)?;
            let out: Box<dyn AsyncWrite + Send + Unpin> = if is_binary_uri(&self.stdout_path) {
                let logger = BinaryIo::start(&self.stdout_path, &self.id, &self.namespace).await?;
                io.logger = Some(logger.logger);
                Box::new(logger.stdout)
            } else {
                open_output(&self.stdout_path)?
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let copy = tokio::spawn(async move {
                copy_pty_output(reader, out).await;
                let _ = done_tx.send(());
            });
            io.output_copies
                .get_mut()
                .unwrap_or_else(|p| p.into_inner())
                .push(copy);
            *io.drained.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(
                async move {
                    let _ = done_rx.await;
                }
                .boxed(),
            );
        }
        if !self.stdin_path.is_empty() {
            let (fifo, keepalive) = open_input(&self.stdin_path)?;
            let writer = pty_half(&master)?;
            let copy = tokio::spawn(copy_until_eof(fifo, writer, "stdin (tty)"));
            *io.stdin_copy.get_mut().unwrap_or_else(|p| p.into_inner()) = Some(copy);
            *io.stdin_keepalive
                .get_mut()
                .unwrap_or_else(|p| p.into_inner()) = Some(keepalive);
        }
        io.console = Some(master);
        Ok(io)
    }
}

impl Drop for PreparedIo {
    /// Never finished: runc failed, the process does not exist; drop what it held.
    fn drop(&mut self) {
        if let Some(pipes) = &self.pipes {
            pipes.discard();
        }
    }
}

impl ProcessIo {
    /// A process without stdio of its own (e.g. a failed setup).
    pub fn none() -> ProcessIo {
        ProcessIo {
            stdin_copy: Mutex::new(None),
            stdin_keepalive: Mutex::new(None),
            output_copies: Mutex::new(Vec::new()),
            drained: Mutex::new(None),
            console: None,
            logger: None,
            _pipes: None,
        }
    }

    /// CloseIO: the container sees EOF on stdin once everything the client wrote into the
    /// FIFO is delivered and the client has closed its end.
    pub fn close_stdin(&self) {
        self.stdin_keepalive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// The process is gone: stop copying stdin (nothing can read it any more).
    fn stop_stdin(&self) {
        self.close_stdin();
        if let Some(copy) = self
            .stdin_copy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            copy.abort();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.console else {
            return Ok(());
        };
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

    /// Waits until the process's output has reached its destinations, at most `bound` (a
    /// grandchild can keep the pipe open forever), then stops every copy. A `binary://`
    /// logger gets `binary_io::drain_timeout()` instead, to read its last output and exit on
    /// its own, before it is stopped.
    pub async fn drain_and_close(&self, bound: Duration) {
        let bound = match &self.logger {
            Some(_) => bound.max(crate::binary_io::drain_timeout()),
            None => bound,
        };
        let deadline = tokio::time::Instant::now() + bound;
        let drained = self
            .drained
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(drained) = drained {
            if tokio::time::timeout_at(deadline, drained).await.is_err() {
                log::warn!("stdio not drained within {bound:?}; closing it");
            }
        }
        self.stop_stdin();
        for copy in self
            .output_copies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            copy.abort();
        }
        if let Some(logger) = &self.logger {
            logger.stop(deadline).await;
        }
    }
}

impl Drop for ProcessIo {
    /// Copies never outlive their owner: a failed create or exec drops its `ProcessIo`
    /// without `drain_and_close`, and its tasks must not keep the FIFOs and pipes open.
    fn drop(&mut self) {
        let stdin = self.stdin_copy.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(copy) = stdin.take() {
            copy.abort();
        }
        let outputs = self
            .output_copies
            .get_mut()
            .unwrap_or_else(|p| p.into_inner());
        for copy in outputs.drain(..) {
            copy.abort();
        }
    }
}

/// Opens an output destination: a FIFO or plain path, or `file:///path` (appended to).
fn open_output(uri: &str) -> Result<Box<dyn AsyncWrite + Send + Unpin>> {
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
        return Ok(Box::new(tokio::fs::File::from_std(f)));
    }
    if uri.contains("://") {
        return Err(Error::Unimplemented(format!(
            "stdio URI scheme not supported yet: {uri}"
        )));
    }
    if !Path::new(uri).exists() {
        return Err(Error::NotFound(format!("stdio FIFO {uri} does not exist")));
    }
    // Read-write: never blocks, never ENXIO, survives the reader going away and coming back.
    let sender = pipe::OpenOptions::new()
        .read_write(true)
        .open_sender(uri)
        .map_err(|e| Error::io(format!("open FIFO {uri}"), e))?;
    Ok(Box::new(sender))
}

/// The stdin FIFO: a read-only end for the copy and a write-only keep-alive end, both opened
/// non-blocking (the read end first, so the write end's open cannot fail with ENXIO).
fn open_input(path: &str) -> Result<(pipe::Receiver, OwnedFd)> {
    use std::os::unix::fs::OpenOptionsExt;
    let fifo = pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| Error::io(format!("open stdin FIFO {path}"), e))?;
    let keepalive = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(format!("open stdin FIFO {path} for writing"), e))?;
    Ok((fifo, keepalive.into()))
}

/// One direction of the pty master as a tokio pipe-like object (the master is a character
/// device; tokio's pipe types accept it when opened non-blocking).
fn pty_half(master: &OwnedFd) -> Result<PtyHalf> {
    let dup = master
        .try_clone()
        .map_err(|e| Error::io("dup pty master", e))?;
    PtyHalf::new(dup).map_err(|e| Error::io("register pty master", e))
}

pub struct PtyHalf {
    inner: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl PtyHalf {
    fn new(fd: OwnedFd) -> std::io::Result<PtyHalf> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the AsyncFd owns `fd` (an OwnedFd), so it stays open while registered.
        Ok(PtyHalf {
            inner: unsafe { tokio::io::unix::AsyncFd::register(fd)? },
        })
    }
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

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

async fn copy_until_eof<R, W>(mut from: R, mut to: W, what: &'static str)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    if let Err(e) = tokio::io::copy(&mut from, &mut to).await {
        log::debug!("{what} copy ended: {e}");
    }
    let _ = to.shutdown().await;
}

async fn copy_pty_output(mut from: PtyHalf, mut to: Box<dyn AsyncWrite + Send + Unpin>) {
    if let Err(e) = tokio::io::copy(&mut from, &mut to).await {
        log::debug!("pty output copy ended: {e}");
    }
    let _ = to.flush().await;
}
