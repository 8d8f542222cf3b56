//! Pipes for a container process's stdio, created before runc is spawned, with a drain task
//! per output pipe reading continuously from creation on (bug class 3: nothing runc, runc init
//! or the process writes can block runc).
//!
//! A drain delivers to its destination once attached; until then, or while output is *held*,
//! it keeps bytes in memory, up to `PENDING_LIMIT` per pipe. Holding lets a caller hide what
//! runc wrote during a `create` that then failed (runc reports that error itself, and
//! containerd's Go shim never shows it), without ever blocking runc: a drain whose hold buffer
//! fills up passes its output through to the destination from then on.

use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Bytes a drain keeps in memory per pipe while it has no destination or is holding.
pub const PENDING_LIMIT: usize = 4 << 20;

/// What runc's own stdin/stdout/stderr are for a call: None = /dev/null.
#[derive(Default)]
pub struct RuncStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

type Dest = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Hold,
    Pass,
    Discard,
}

pub struct ProcessPipes {
    runc: RuncStdio,
    stdin: Option<tokio::net::unix::pipe::Sender>,
    stdout: Option<Drain>,
    stderr: Option<Drain>,
    mode: watch::Sender<Mode>,
}

struct Drain {
    dest: Option<tokio::sync::oneshot::Sender<Dest>>,
    done: watch::Receiver<bool>,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Into::into)
}

impl ProcessPipes {
    /// Creates the requested pipes and starts their drains. `owner`: chown the runc-side ends
    /// (IoUid/IoGid). Output passes through as soon as a destination is attached, unless
    /// `hold` is called first.
    pub fn new(
        stdin: bool,
        stdout: bool,
        stderr: bool,
        owner: Option<(u32, u32)>,
    ) -> std::io::Result<ProcessPipes> {
        let (mode, _) = watch::channel(Mode::Pass);
        let mut p = ProcessPipes {
            runc: RuncStdio::default(),
            stdin: None,
            stdout: None,
            stderr: None,
            mode,
        };
        let chown = |fd: &OwnedFd| -> std::io::Result<()> {
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(
                    std::os::fd::AsRawFd::as_raw_fd(fd),
                    Some(uid.into()),
                    Some(gid.into()),
                )?;
            }
            Ok(())
        };
        if stdin {
            let (r, w) = pipe()?;
            chown(&r)?;
            p.runc.stdin = Some(r);
            p.stdin = Some(tokio::net::unix::pipe::Sender::from_owned_fd(w)?);
        }
        if stdout {
            let (r, w) = pipe()?;
            chown(&w)?;
            p.runc.stdout = Some(w);
            p.stdout = Some(Drain::start(r, p.mode.subscribe())?);
        }
        if stderr {
            let (r, w) = pipe()?;
            chown(&w)?;
            p.runc.stderr = Some(w);
            p.stderr = Some(Drain::start(r, p.mode.subscribe())?);
        }
        Ok(p)
    }

    /// The fds to hand to runc as its 0, 1, 2 (taken once; drop them after spawning).
    pub fn take_runc_stdio(&mut self) -> RuncStdio {
        std::mem::take(&mut self.runc)
    }

    /// The shim's end of stdin (write end), if requested.
    pub fn take_stdin(&mut self) -> Option<tokio::net::unix::pipe::Sender> {
        self.stdin.take()
    }

    pub fn attach_stdout(&mut self, dest: Dest) {
        if let Some(tx) = self.stdout.as_mut().and_then(|d| d.dest.take()) {
            let _ = tx.send(dest);
        }
    }

    pub fn attach_stderr(&mut self, dest: Dest) {
        if let Some(tx) = self.stderr.as_mut().and_then(|d| d.dest.take()) {
            let _ = tx.send(dest);
        }
    }

    /// Keep output in memory (bounded) instead of delivering it, until `release` or `discard`.
    pub fn hold(&self) {
        self.mode.send_replace(Mode::Hold);
    }

    /// Deliver what was held, in order, and everything after it.
    pub fn release(&self) {
        self.mode.send_replace(Mode::Pass);
    }

    /// Drop what is held and everything after it (the process never existed).
    pub fn discard(&self) {
        self.mode.send_replace(Mode::Discard);
    }

    /// Resolves when every drain reached EOF and delivered everything (or its destination
    /// failed). Callers bound it: a grandchild can hold a pipe open forever.
    pub fn drained(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let done: Vec<_> = self
            .stdout
            .iter()
            .chain(self.stderr.iter())
            .map(|d| d.done.clone())
            .collect();
        async move {
            for mut d in done {
                let _ = d.wait_for(|finished| *finished).await;
            }
        }
    }
}

impl Drain {
    fn start(read: OwnedFd, mode: watch::Receiver<Mode>) -> std::io::Result<Drain> {
        let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(read)?;
        let (dest_tx, dest_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done) = watch::channel(false);
        tokio::spawn(async move {
            drain(rx, dest_rx, mode).await;
            let _ = done_tx.send(true);
        });
        Ok(Drain {
            dest: Some(dest_tx),
            done,
        })
    }
}

async fn drain(
    mut rx: tokio::net::unix::pipe::Receiver,
    mut dest_rx: tokio::sync::oneshot::Receiver<Dest>,
    mut mode: watch::Receiver<Mode>,
) {
    let mut held: Vec<u8> = Vec::new();
    // Bytes thrown away in Discard mode (a process that never started): logged at the end.
    let mut discarded: u64 = 0;
    let mut dest: Option<Dest> = None;
    let mut overflowed = false;
    let mut buf = vec![0u8; 64 * 1024];
    let mut eof = false;
    // Once the owner is gone nobody changes the mode again; stop watching it.
    let mut mode_open = true;
    loop {
        let current = *mode.borrow_and_update();
        let can_write = dest.is_some() && (current == Mode::Pass || overflowed);
        if current == Mode::Discard {
            discarded += held.len() as u64;
            held.clear();
        }
        if can_write && !held.is_empty() {
            if let Some(d) = dest.as_mut() {
                if let Err(e) = d.write_all(&held).await {
                    log::warn!(
                        "stdio destination failed ({e}): {} held bytes dropped",
                        held.len()
                    );
                    return;
                }
            }
            held.clear();
        }
        if eof {
            // Wait for a destination or a decision before finishing, unless nothing is held.
            if held.is_empty() || current == Mode::Discard {
                break;
            }
            if !mode_open && dest.is_some() {
                log::warn!("stdio owner gone with {} bytes held: dropped", held.len());
                break;
            }
            tokio::select! {
                d = &mut dest_rx, if dest.is_none() => match d {
                    Ok(d) => dest = Some(d),
                    Err(_) => {
                        log::warn!("stdio never got a destination: {} bytes dropped", held.len());
                        break;
                    }
                },
                changed = mode.changed(), if mode_open => if changed.is_err() { mode_open = false },
                else => break,
            }
            continue;
        }
        // Back-pressure only when the hold buffer is full and there is nowhere to put it.
        let room = held.len() < PENDING_LIMIT || can_write;
        tokio::select! {
            d = &mut dest_rx, if dest.is_none() => { if let Ok(d) = d { dest = Some(d) } }
            changed = mode.changed(), if mode_open => { if changed.is_err() { mode_open = false } }
            n = rx.read(&mut buf), if room => match n {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    let mode_now = *mode.borrow();
                    if mode_now == Mode::Discard {
                        discarded += n as u64;
                        continue;
                    }
                    if dest.is_some() && (mode_now == Mode::Pass || overflowed) && held.is_empty() {
                        if let Some(d) = dest.as_mut() {
                            if let Err(e) = d.write_all(&buf[..n]).await {
                                log::warn!("stdio destination failed ({e}): {n} bytes dropped");
                                return;
                            }
                        }
                    } else {
                        held.extend_from_slice(&buf[..n]);
                        if held.len() >= PENDING_LIMIT && dest.is_some() && !overflowed {
                            log::warn!("output held past {PENDING_LIMIT} bytes: passing it through");
                            overflowed = true;
                        }
                    }
                }
            },
        }
    }
    if discarded > 0 {
        log::info!("discarded {discarded} bytes written while a process failed to start");
    }
    if let Some(mut d) = dest {
        let _ = d.flush().await;
        let _ = d.shutdown().await;
    }
}
