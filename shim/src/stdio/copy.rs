//! The one copy engine: every byte of a process's stdio, in either direction and for pipes and
//! the pty alike, goes through a `Copy`, a task that reads its source until EOF and writes to
//! its destination.
//!
//! Ownership makes the guarantees: a `Copy` is owned by exactly one `ProcessIo` (or
//! `PreparedIo`), and dropping it aborts its task, so no copy and no fd outlives its process.
//! An output copy may be *gated* (`Gate`): while runc runs an exec, output is read at once (runc
//! is never blocked, bug class 3) but held in memory, then delivered in order if runc succeeded
//! or dropped (and counted in the log) if it failed, as the Go shim shows only runc's error.
//! The hold is bounded: past `HOLD_LIMIT` the copy passes output through rather than stop
//! reading. A held byte is only ever dropped by an explicit `Gate::discard`.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes a gated copy keeps in memory while it holds.
pub const HOLD_LIMIT: usize = 4 << 20;

const BUF: usize = 64 * 1024;

pub type Source = Box<dyn AsyncRead + Send + Unpin>;
pub type Dest = Box<dyn AsyncWrite + Send + Unpin>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    Hold,
    Pass,
    Discard,
}

/// What gated copies do with output: hold it, pass it, or drop it. One gate serves a process's
/// stdout and stderr copies; it is opened (`pass`) or closed (`discard`) once runc returned.
pub struct Gate(watch::Sender<Decision>);

impl Gate {
    /// A gate that holds until told otherwise.
    pub fn holding() -> Gate {
        Gate(watch::channel(Decision::Hold).0)
    }

    /// Deliver what is held, in order, and everything after it.
    pub fn pass(&self) {
        self.0.send_replace(Decision::Pass);
    }

    /// Drop what is held and everything after it: the process never existed.
    pub fn discard(&self) {
        self.0.send_replace(Decision::Discard);
    }

    fn subscribe(&self) -> watch::Receiver<Decision> {
        self.0.subscribe()
    }
}

/// A running copy from a source to a destination.
pub struct Copy {
    task: JoinHandle<()>,
    done: watch::Receiver<bool>,
}

impl Copy {
    /// Starts copying `from` into `to` until EOF on `from`, through `gate` if given. `what`
    /// names the copy in the log. At EOF the destination is flushed and shut down (a pipe's
    /// reader then sees EOF), and `finished` resolves.
    pub fn spawn(what: &'static str, from: Source, to: Dest, gate: Option<&Gate>) -> Copy {
        let gate = gate.map(Gate::subscribe);
        let (done_tx, done) = watch::channel(false);
        let task = tokio::spawn(async move {
            run(what, from, to, gate).await;
            let _ = done_tx.send(true);
        });
        Copy { task, done }
    }

    /// Resolves once everything was delivered (or the destination failed, or the copy was
    /// stopped). Callers bound it: a grandchild can hold a pipe open forever.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            // An aborted task drops its sender: that counts as finished too.
            let _ = done.wait_for(|finished| *finished).await;
        }
    }

    /// Stops the copy now (what is still in flight is dropped).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a copy does with output right now.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Deliver,
    Keep,
    Drop,
}

fn mode(gate: &Option<watch::Receiver<Decision>>, overflowed: bool) -> Mode {
    match gate.as_ref().map(|g| *g.borrow()).unwrap_or(Decision::Pass) {
        Decision::Pass => Mode::Deliver,
        Decision::Discard => Mode::Drop,
        Decision::Hold if overflowed => Mode::Deliver,
        Decision::Hold => Mode::Keep,
    }
}

async fn run(
    what: &'static str,
    mut from: Source,
    mut to: Dest,
    mut gate: Option<watch::Receiver<Decision>>,
) {
    let mut held: Vec<u8> = Vec::new();
    let mut discarded: u64 = 0;
    let mut overflowed = false;
    let mut buf = vec![0u8; BUF];
    let mut eof = false;
    loop {
        let now = mode(&gate, overflowed);
        // What is held follows the decision first, so order is kept: held bytes always go out
        // before anything read after them.
        match now {
            Mode::Drop => {
                discarded += held.len() as u64;
                held.clear();
            }
            Mode::Deliver if !held.is_empty() => {
                if let Err(e) = to.write_all(&held).await {
                    log::warn!(
                        "{what}: destination failed ({e}): {} bytes dropped",
                        held.len()
                    );
                    return;
                }
                held.clear();
            }
            _ => {}
        }
        if eof && held.is_empty() {
            break;
        }
        if now == Mode::Keep && held.len() >= HOLD_LIMIT {
            // The memory bound: pass through rather than stop reading (runc must never block).
            log::warn!("{what}: output held past {HOLD_LIMIT} bytes: passing it through");
            overflowed = true;
            continue;
        }
        let read = match (&mut gate, now) {
            (Some(g), Mode::Keep) => {
                // Holding (or at EOF with output held): also wake up for the decision.
                tokio::select! {
                    changed = g.changed() => {
                        if changed.is_err() {
                            // The owner decides before it drops the gate; if it did not, deliver:
                            // nothing is lost by accident.
                            gate = None;
                        }
                        continue;
                    }
                    n = from.read(&mut buf), if !eof => n,
                }
            }
            _ => from.read(&mut buf).await,
        };
        match read {
            Ok(0) => eof = true,
            Err(e) => {
                log::debug!("{what}: source ended: {e}");
                eof = true;
            }
            Ok(n) => match now {
                Mode::Drop => discarded += n as u64,
                Mode::Keep => held.extend_from_slice(&buf[..n]),
                Mode::Deliver => {
                    if let Err(e) = to.write_all(&buf[..n]).await {
                        log::warn!("{what}: destination failed ({e}): {n} bytes dropped");
                        return;
                    }
                }
            },
        }
    }
    if discarded > 0 {
        log::info!("{what}: discarded {discarded} bytes written while the process failed to start");
    }
    let _ = to.flush().await;
    let _ = to.shutdown().await;
}

#[cfg(test)]
mod tests {
    //! Every ordering of data, EOF and decision, byte-exact, through real pipes.

    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::net::unix::pipe;

    use super::*;

    /// A destination that keeps everything it is given.
    #[derive(Clone, Default)]
    struct Collect(Arc<Mutex<Vec<u8>>>, Arc<Mutex<bool>>);

    impl Collect {
        fn bytes(&self) -> Vec<u8> {
            self.0.lock().unwrap().clone()
        }
        fn shut(&self) -> bool {
            *self.1.lock().unwrap()
        }
    }

    impl AsyncWrite for Collect {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.lock().unwrap().extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            *self.1.lock().unwrap() = true;
            Poll::Ready(Ok(()))
        }
    }

    fn source() -> (pipe::Sender, Source) {
        let (tx, rx) = pipe::pipe().unwrap();
        (tx, Box::new(rx))
    }

    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ salt).collect()
    }

    async fn finished(c: &Copy) {
        tokio::time::timeout(Duration::from_secs(30), c.finished())
            .await
            .expect("copy finished within 30 s");
    }

    #[tokio::test]
    async fn without_a_gate_every_byte_passes_and_the_destination_is_shut_at_eof() {
        let (mut tx, rx) = source();
        let out = Collect::default();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), None);
        let data = pattern(3 << 20, 1);
        tx.write_all(&data).await.unwrap();
        drop(tx);
        finished(&copy).await;
        assert!(out.bytes() == data);
        assert!(out.shut());
    }

    #[tokio::test]
    async fn held_output_is_read_at_once_kept_back_then_delivered_in_order() {
        let (mut tx, rx) = source();
        let out = Collect::default();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), Some(&gate));
        // 1 MiB is 16 times a pipe's capacity: the write completes only because the copy
        // keeps reading while it holds (runc is never blocked).
        let before = pattern(1 << 20, 2);
        tx.write_all(&before).await.unwrap();
        assert!(out.bytes().is_empty(), "nothing delivered while holding");
        gate.pass();
        let after = pattern(100_000, 3);
        tx.write_all(&after).await.unwrap();
        drop(tx);
        finished(&copy).await;
        let mut want = before;
        want.extend_from_slice(&after);
        assert!(out.bytes() == want, "byte-exact, held bytes first");
    }

    #[tokio::test]
    async fn output_held_at_eof_waits_for_the_decision() {
        // The process wrote and exited before runc returned.
        let (mut tx, rx) = source();
        let out = Collect::default();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), Some(&gate));
        let data = pattern(200_000, 4);
        tx.write_all(&data).await.unwrap();
        drop(tx);
        let waiting = tokio::time::timeout(Duration::from_millis(200), copy.finished()).await;
        assert!(waiting.is_err(), "a holding copy does not finish at EOF");
        assert!(out.bytes().is_empty());
        gate.pass();
        finished(&copy).await;
        assert!(out.bytes() == data);
        assert!(out.shut());
    }

    #[tokio::test]
    async fn discard_drops_what_is_held_and_what_follows_and_still_reads_to_eof() {
        let (mut tx, rx) = source();
        let out = Collect::default();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), Some(&gate));
        tx.write_all(&pattern(300_000, 5)).await.unwrap();
        gate.discard();
        tx.write_all(&pattern(300_000, 6)).await.unwrap();
        drop(tx);
        finished(&copy).await;
        assert!(out.bytes().is_empty());
        assert!(out.shut(), "the client sees EOF");
    }

    #[tokio::test]
    async fn a_hold_past_its_limit_passes_through_instead_of_blocking_the_writer() {
        let (mut tx, rx) = source();
        let out = Collect::default();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), Some(&gate));
        let data = pattern(HOLD_LIMIT + (2 << 20), 7);
        tx.write_all(&data).await.unwrap();
        drop(tx);
        finished(&copy).await;
        assert!(
            out.bytes() == data,
            "everything, in order, without a decision"
        );
    }

    #[tokio::test]
    async fn a_gate_dropped_while_holding_delivers() {
        let (mut tx, rx) = source();
        let out = Collect::default();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, Box::new(out.clone()), Some(&gate));
        let data = pattern(100_000, 8);
        tx.write_all(&data).await.unwrap();
        drop(gate);
        drop(tx);
        finished(&copy).await;
        assert!(out.bytes() == data);
    }

    #[tokio::test]
    async fn a_dropped_copy_stops_and_closes_its_source() {
        let (mut tx, rx) = source();
        let copy = Copy::spawn("test", rx, Box::new(Collect::default()), None);
        tx.write_all(b"x").await.unwrap();
        drop(copy);
        // The reader is gone once the aborted task is dropped: writes fail with EPIPE.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tx.write_all(b"y").await {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break,
                Err(e) => panic!("unexpected {e}"),
                Ok(()) => {
                    assert!(tokio::time::Instant::now() < deadline, "source still open");
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}
