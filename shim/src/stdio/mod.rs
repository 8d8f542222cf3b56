//! A process's stdio, in one place: containerd hands over FIFO paths (any of them empty),
//! `file://` URIs, `binary://` logging binaries (`binary`) or a terminal, and the shim moves
//! every byte between those and the process with one engine (`copy`).
//!
//! Who owns what (each FIFO end and each copy has exactly one owner):
//!
//! ```text
//! Process ── ProcessIo ─┬─ stdin: Copy (FIFO read end -> pipe or pty) + the FIFO's keep-alive
//!                       ├─ outputs: Copy per stream (pipe or pty -> FIFO, file or logger)
//!                       ├─ gate: holds exec output while runc runs, then passes it
//!                       ├─ console: the pty master (ResizePty)
//!                       └─ logger: the `binary://` process
//! ```
//!
//! - Bug class 3: pipes and their copies exist before runc is spawned (`PreparedIo::prepare`),
//!   so nothing runc or the process writes can block runc.
//! - Nothing lost: stdin is read to EOF (CloseIO drops only the keep-alive, as in the Go
//!   shim); output is delivered until EOF, and Delete waits for that (bounded); held output is
//!   dropped only when runc failed and the process never existed.
//! - Nothing leaked: dropping a `ProcessIo` (a failed create or exec, a deleted process) drops
//!   its copies, which aborts their tasks and closes their fds.

mod binary;
mod copy;
mod endpoints;
mod pipes;
mod pty;

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;

pub use binary::command_line as binary_command_line;
use binary::drain_timeout;
use runc_wrapper::io::RuncStdio;

use self::binary::{is_binary_uri, BinaryIo, Logger};
use self::copy::{Copy, Dest, Gate, Source};
use self::endpoints::{open_input, open_output};
use self::pipes::Pipes;
use self::pty::PtyHalf;
use crate::error::Result;

/// What containerd asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Whose stdio it is: a `binary://` logger is told the process id and namespace.
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    /// IoUid/IoGid: the owner of the pipes handed to the process.
    pub uid_gid: Option<(u32, u32)>,
}

/// The live stdio of one process.
pub struct ProcessIo {
    stdin: Option<Stdin>,
    outputs: Vec<Copy>,
    /// Passing once the process exists; kept so that no copy sees its gate dropped.
    _gate: Option<Gate>,
    console: Option<OwnedFd>,
    logger: Option<Logger>,
}

struct Stdin {
    copy: Copy,
    /// The shim's write end of the stdin FIFO: while held, the copy cannot see EOF.
    keepalive: Mutex<Option<OwnedFd>>,
}

/// Before runc: the fds runc gets, and the copies already running.
pub struct PreparedIo {
    pub runc_stdio: RuncStdio,
    io: Option<ProcessIo>,
    gate: Option<Gate>,
    /// For a terminal: what to wire once the pty master arrives.
    terminal: Option<Terminal>,
}

struct Terminal {
    stdin: String,
    stdout: String,
    id: String,
    namespace: String,
}

impl PreparedIo {
    /// Opens the destinations, creates the pipes and starts their copies, all before runc.
    /// For a terminal nothing is created here: the pty comes from the console socket later.
    /// `hold`: output waits in memory until `finish` (a failed `runc exec` then shows only its
    /// error, as with the Go shim; the copies never stop reading either way).
    pub async fn prepare(cfg: &StdioConfig, owner: Owner<'_>, hold: bool) -> Result<PreparedIo> {
        if cfg.terminal {
            return Ok(PreparedIo {
                runc_stdio: RuncStdio::default(),
                io: Some(ProcessIo::none()),
                gate: None,
                terminal: Some(Terminal {
                    stdin: cfg.stdin.clone(),
                    stdout: cfg.stdout.clone(),
                    id: owner.id.to_string(),
                    namespace: owner.namespace.to_string(),
                }),
            });
        }
        // A logging binary takes both outputs and no input, as in the Go shim.
        let binary = is_binary_uri(&cfg.stdout);
        let pipes = Pipes::new(
            !cfg.stdin.is_empty() && !binary,
            !cfg.stdout.is_empty(),
            !cfg.stderr.is_empty() || binary,
            owner.uid_gid,
        )?;
        let mut io = ProcessIo::none();
        let (stdout_dest, stderr_dest): (Option<Dest>, Option<Dest>) = if binary {
            let started = BinaryIo::start(&cfg.stdout, owner.id, owner.namespace).await?;
            io.logger = Some(started.logger);
            (
                Some(Dest::Pipe(started.stdout)),
                Some(Dest::Pipe(started.stderr)),
            )
        } else {
            let open = |uri: &str| -> Result<Option<Dest>> {
                if uri.is_empty() {
                    Ok(None)
                } else {
                    open_output(uri).map(Some)
                }
            };
            (open(&cfg.stdout)?, open(&cfg.stderr)?)
        };
        let gate = hold.then(Gate::holding);
        for (what, pipe, dest) in [
            ("stdout", pipes.stdout, stdout_dest),
            ("stderr", pipes.stderr, stderr_dest),
        ] {
            if let (Some(pipe), Some(dest)) = (pipe, dest) {
                io.outputs
                    .push(Copy::spawn(what, Source::Pipe(pipe), dest, gate.as_ref()));
            }
        }
        if let Some(to_process) = pipes.stdin {
            let (fifo, keepalive) = open_input(&cfg.stdin)?;
            io.stdin = Some(Stdin {
                copy: Copy::spawn("stdin", Source::Pipe(fifo), Dest::Pipe(to_process), None),
                keepalive: Mutex::new(Some(keepalive)),
            });
        }
        Ok(PreparedIo {
            runc_stdio: pipes.runc,
            io: Some(io),
            gate,
            terminal: None,
        })
    }

    /// After runc succeeded: held output is passed on; for a terminal, the pty master received
    /// on the console socket is wired to the FIFOs (stdout carries the terminal's output;
    /// stderr is unused with a tty).
    pub async fn finish(mut self, console: Option<OwnedFd>) -> Result<ProcessIo> {
        let mut io = self.io.take().unwrap_or_else(ProcessIo::none);
        if let Some(gate) = self.gate.take() {
            gate.pass();
            io._gate = Some(gate);
        }
        let (Some(master), Some(terminal)) = (console, self.terminal.take()) else {
            return Ok(io);
        };
        if !terminal.stdout.is_empty() {
            let out: Dest = if is_binary_uri(&terminal.stdout) {
                let started =
                    BinaryIo::start(&terminal.stdout, &terminal.id, &terminal.namespace).await?;
                io.logger = Some(started.logger);
                Dest::Pipe(started.stdout)
            } else {
                open_output(&terminal.stdout)?
            };
            let reader = PtyHalf::of(&master)?;
            io.outputs.push(Copy::spawn(
                "stdout (tty)",
                Source::stream(reader),
                out,
                None,
            ));
        }
        if !terminal.stdin.is_empty() {
            let (fifo, keepalive) = open_input(&terminal.stdin)?;
            let writer = PtyHalf::of(&master)?;
            io.stdin = Some(Stdin {
                copy: Copy::spawn(
                    "stdin (tty)",
                    Source::Pipe(fifo),
                    Dest::stream(writer),
                    None,
                ),
                keepalive: Mutex::new(Some(keepalive)),
            });
        }
        io.console = Some(master);
        Ok(io)
    }
}

/// How long the output copies of a process that never started may take to count what they
/// drop (runc has exited; only a stray grandchild could keep a pipe open).
const DISCARD_BOUND: Duration = Duration::from_secs(5);

impl Drop for PreparedIo {
    /// Never finished: runc failed and the process does not exist. stdin stops now; what was
    /// held is dropped, and the output copies read on to EOF (bounded) to count it in the log.
    fn drop(&mut self) {
        let Some(mut io) = self.io.take() else { return };
        let Some(gate) = self.gate.take() else { return };
        gate.discard();
        let outputs = std::mem::take(&mut io.outputs);
        drop(io);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let finished = futures::future::join_all(outputs.iter().map(Copy::finished));
                let _ = tokio::time::timeout(DISCARD_BOUND, finished).await;
                drop((outputs, gate));
            });
        }
    }
}

impl ProcessIo {
    /// A process without stdio of its own.
    pub fn none() -> ProcessIo {
        ProcessIo {
            stdin: None,
            outputs: Vec::new(),
            _gate: None,
            console: None,
            logger: None,
        }
    }

    /// CloseIO: the container sees EOF on stdin once everything the client wrote into the
    /// FIFO is delivered and the client has closed its end.
    pub fn close_stdin(&self) {
        if let Some(stdin) = &self.stdin {
            stdin
                .keepalive
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        match &self.console {
            Some(master) => pty::resize(master, width, height),
            None => Ok(()),
        }
    }

    /// Waits until the process's output has reached its destinations, at most `bound` (a
    /// grandchild can keep the pipe open forever), then stops every copy. A `binary://`
    /// logger gets `drain_timeout()` instead, to read its last output and exit on its own,
    /// before it is stopped.
    pub async fn drain_and_close(&self, bound: Duration) {
        let bound = match &self.logger {
            Some(_) => bound.max(drain_timeout()),
            None => bound,
        };
        let deadline = tokio::time::Instant::now() + bound;
        let finished = futures::future::join_all(self.outputs.iter().map(Copy::finished));
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            log::warn!("stdio not drained within {bound:?}; closing it");
        }
        // The process is gone: nothing can read stdin any more.
        self.close_stdin();
        if let Some(stdin) = &self.stdin {
            stdin.copy.stop();
        }
        for copy in &self.outputs {
            copy.stop();
        }
        if let Some(logger) = &self.logger {
            logger.stop(deadline).await;
        }
    }
}
