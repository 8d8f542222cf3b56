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
//!
//! How bytes move is the copy's own business: when both ends are pipes (a process's pipe and
//! containerd's FIFO or a logger's pipe) and output passes straight through, the copy moves it
//! with `splice(2)`, pipe to pipe, without bringing it into user space; otherwise (a hold, the
//! pty, a file, or a kernel that refuses the splice) it reads into a buffer and writes that.

use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::FutureExt;
use nix::errno::Errno;
use nix::fcntl::SpliceFFlags;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bytes a gated copy keeps in memory while it holds.
pub const HOLD_LIMIT: usize = 4 << 20;

const BUF: usize = 64 * 1024;

/// At most this much per splice: more than a pipe holds (64 KiB unless resized, 1 MiB at most
/// without privilege), so one call moves everything the source holds that fits.
const SPLICE_LEN: usize = 1 << 20;

/// Reads that count what a failed destination never got (64 KiB each), at most.
const PENDING_READS: usize = 64;

/// Where a copy reads from: a pipe (which it may splice from) or any other stream.
pub enum Source {
    Pipe(pipe::Receiver),
    Stream(Box<dyn AsyncRead + Send + Unpin>),
}

/// Where a copy writes to: a pipe or FIFO (which it may splice into) or any other stream.
pub enum Dest {
    Pipe(pipe::Sender),
    Stream(Box<dyn AsyncWrite + Send + Unpin>),
}

impl Source {
    pub fn stream(s: impl AsyncRead + Send + Unpin + 'static) -> Source {
        Source::Stream(Box::new(s))
    }
}

impl Dest {
    pub fn stream(s: impl AsyncWrite + Send + Unpin + 'static) -> Dest {
        Dest::Stream(Box::new(s))
    }
}

impl AsyncRead for Source {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Source::Pipe(p) => Pin::new(p).poll_read(cx, buf),
            Source::Stream(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Dest {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Dest::Pipe(p) => Pin::new(p).poll_write(cx, b),
            Dest::Stream(s) => Pin::new(s).poll_write(cx, b),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Dest::Pipe(p) => Pin::new(p).poll_flush(cx),
            Dest::Stream(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Dest::Pipe(p) => Pin::new(p).poll_shutdown(cx),
            Dest::Stream(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

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

/// Logs a failed destination and returns `lost`. Losing bytes is a warning; a destination
/// that fails with nothing left to deliver (an exec's stdin after the process exited: EPIPE)
/// is the normal end of that copy, and the Go shim says nothing of it either.
fn dest_failed(what: &str, e: &io::Error, lost: u64) -> u64 {
    log::log!(
        dest_failed_level(lost),
        "{what}: destination failed ({e}): {lost} bytes dropped"
    );
    lost
}

fn dest_failed_level(lost: u64) -> log::Level {
    if lost == 0 {
        log::Level::Debug
    } else {
        log::Level::Warn
    }
}

/// What a finished copy did with the bytes it read (logged at its end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Moved {
    /// Delivered by splice, never in user space.
    spliced: u64,
    /// Delivered through the buffer.
    copied: u64,
    /// Dropped by the gate (the process never existed).
    discarded: u64,
    /// Read but not delivered: the destination failed.
    dropped: u64,
}

/// A running copy from a source to a destination.
pub struct Copy {
    task: JoinHandle<()>,
    done: watch::Receiver<Option<Moved>>,
}

impl Copy {
    /// Starts copying `from` into `to` until EOF on `from`, through `gate` if given. `what`
    /// names the copy in the log. At EOF the destination is flushed and shut down (a pipe's
    /// reader then sees EOF), and `finished` resolves.
    pub fn spawn(what: &'static str, from: Source, to: Dest, gate: Option<&Gate>) -> Copy {
        let gate = gate.map(Gate::subscribe);
        let (done_tx, done) = watch::channel(None);
        let task = tokio::spawn(async move {
            let moved = run(what, from, to, gate).await;
            let _ = done_tx.send(Some(moved));
        });
        Copy { task, done }
    }

    /// Resolves once everything was delivered (or the destination failed, or the copy was
    /// stopped). Callers bound it: a grandchild can hold a pipe open forever.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut done = self.done.clone();
        async move {
            // An aborted task drops its sender: that counts as finished too.
            let _ = done.wait_for(Option::is_some).await;
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

/// The copy buffer, allocated when first needed (a copy that only splices never needs it).
fn buffer(buf: &mut Vec<u8>) -> &mut [u8] {
    if buf.is_empty() {
        buf.resize(BUF, 0);
    }
    buf
}

async fn run(
    what: &'static str,
    mut from: Source,
    mut to: Dest,
    mut gate: Option<watch::Receiver<Decision>>,
) -> Moved {
    let mut moved = Moved::default();
    let mut held: Vec<u8> = Vec::new();
    let mut overflowed = false;
    let mut buf = Vec::new();
    let mut eof = false;
    // Pipe to pipe: splice while output passes straight through, unless the kernel refused.
    let mut splice = matches!((&from, &to), (Source::Pipe(_), Dest::Pipe(_)));
    loop {
        let now = mode(&gate, overflowed);
        // What is held follows the decision first, so order is kept: held bytes always go out
        // before anything read after them.
        match now {
            Mode::Drop => {
                moved.discarded += held.len() as u64;
                held.clear();
            }
            Mode::Deliver if !held.is_empty() => {
                if let Err(e) = to.write_all(&held).await {
                    let lost = held.len() as u64 + count_pending(&mut from, buffer(&mut buf));
                    moved.dropped += dest_failed(what, &e, lost);
                    return moved;
                }
                moved.copied += held.len() as u64;
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
        if let (true, Mode::Deliver, Source::Pipe(src), Dest::Pipe(dst)) = (splice, now, &from, &to)
        {
            match splice_once(src, dst).await {
                Spliced::Moved(n) => moved.spliced += n as u64,
                Spliced::Eof => eof = true,
                Spliced::DestFailed(e) => {
                    let lost = count_pending(&mut from, buffer(&mut buf));
                    moved.dropped += dest_failed(what, &e, lost);
                    return moved;
                }
                Spliced::Refused(e) => {
                    log::debug!("{what}: splice refused ({e}): copying through a buffer");
                    splice = false;
                }
            }
            continue;
        }
        let buf = buffer(&mut buf);
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
                    n = from.read(buf), if !eof => n,
                }
            }
            _ => from.read(buf).await,
        };
        match read {
            Ok(0) => eof = true,
            Err(e) => {
                log::debug!("{what}: source ended: {e}");
                eof = true;
            }
            Ok(n) => match now {
                Mode::Drop => moved.discarded += n as u64,
                Mode::Keep => held.extend_from_slice(&buf[..n]),
                Mode::Deliver => {
                    if let Err(e) = to.write_all(&buf[..n]).await {
                        let lost = n as u64 + count_pending(&mut from, buf);
                        moved.dropped += dest_failed(what, &e, lost);
                        return moved;
                    }
                    moved.copied += n as u64;
                }
            },
        }
    }
    if moved.discarded > 0 {
        log::info!(
            "{what}: discarded {} bytes written while the process failed to start",
            moved.discarded
        );
    }
    log::debug!(
        "{what}: EOF; {} bytes spliced, {} copied",
        moved.spliced,
        moved.copied
    );
    let _ = to.flush().await;
    let _ = to.shutdown().await;
    moved
}

/// What the source holds right now, read without waiting and counted: what a failed
/// destination never got. Bounded, as a writer may go on writing.
fn count_pending(from: &mut Source, buf: &mut [u8]) -> u64 {
    let mut n = 0;
    for _ in 0..PENDING_READS {
        match from.read(buf).now_or_never() {
            Some(Ok(k)) if k > 0 => n += k as u64,
            _ => break,
        }
    }
    n
}

/// One step of the pipe-to-pipe strategy.
enum Spliced {
    Moved(usize),
    Eof,
    /// The destination's reader is gone (EPIPE): the source still holds what was not moved.
    DestFailed(io::Error),
    /// The kernel will not splice these two (EINVAL and the like): use the buffer.
    Refused(io::Error),
}

/// Moves what the source pipe holds into the destination pipe, once both are ready: the
/// process's bytes go from one pipe's pages to the other's, never through user space.
async fn splice_once(from: &pipe::Receiver, to: &pipe::Sender) -> Spliced {
    let mut spurious = 0u32;
    loop {
        // Readiness is tokio's (edge-triggered, one registration per end, as for reads and
        // writes); a closed writer reads as ready (EOF) and a closed reader writes as ready
        // (EPIPE).
        if let Err(e) = from.readable().await {
            return Spliced::Refused(e);
        }
        if let Err(e) = to.writable().await {
            return Spliced::Refused(e);
        }
        let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
        match nix::fcntl::splice(from, None, to, None, SPLICE_LEN, flags) {
            Ok(0) => return Spliced::Eof,
            Ok(n) => return Spliced::Moved(n),
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE) => return Spliced::DestFailed(Errno::EPIPE.into()),
            Err(Errno::EAGAIN) => {
                // The source is empty or the destination full: ask the kernel which (without
                // waiting), and forget the readiness of that end only. Forgetting a ready end's
                // readiness would wait for an edge that may never come; an end that becomes
                // ready after the poll gets a new edge, which tokio's readiness ticks keep.
                let (readable, writable) = match ready_now(from, to) {
                    Ok(r) => r,
                    Err(e) => return Spliced::Refused(e),
                };
                if !readable {
                    let _ = from.try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                if !writable {
                    let _ = to.try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
                }
                if readable && writable {
                    // Both became ready since the splice: try again, but never spin.
                    spurious += 1;
                    if spurious > 1000 {
                        return Spliced::Refused(io::Error::other("splice keeps saying EAGAIN"));
                    }
                    tokio::task::yield_now().await;
                }
            }
            Err(e) => return Spliced::Refused(e.into()),
        }
    }
}

/// Whether the source has bytes (or EOF) and the destination room (or no reader), now.
fn ready_now(from: &pipe::Receiver, to: &pipe::Sender) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(from.as_fd(), PollFlags::POLLIN),
        PollFd::new(to.as_fd(), PollFlags::POLLOUT),
    ];
    nix::poll::poll(&mut fds, PollTimeout::ZERO)?;
    let any = |fd: &PollFd, want: PollFlags| {
        fd.revents()
            .is_some_and(|r| r.intersects(want | PollFlags::POLLHUP | PollFlags::POLLERR))
    };
    Ok((
        any(&fds[0], PollFlags::POLLIN),
        any(&fds[1], PollFlags::POLLOUT),
    ))
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
        (tx, Source::Pipe(rx))
    }

    /// A destination pipe (the FIFO's part) and the client's end of it.
    fn dest() -> (Dest, pipe::Receiver) {
        let (tx, rx) = pipe::pipe().unwrap();
        (Dest::Pipe(tx), rx)
    }

    /// Everything the client's end gets until EOF.
    async fn read_to_eof(client: &mut pipe::Receiver) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), client.read_to_end(&mut got))
            .await
            .expect("EOF within 30 s")
            .unwrap();
        got
    }

    /// What the copy reported when it finished.
    async fn moved(c: &Copy) -> Moved {
        let mut done = c.done.clone();
        let moved = tokio::time::timeout(Duration::from_secs(30), done.wait_for(Option::is_some))
            .await
            .expect("copy finished within 30 s")
            .expect("copy ran to its end");
        moved.expect("finished")
    }

    /// Writes `data` in chunks of varying sizes (as a process does), then closes the pipe.
    fn write_all_then_close(mut tx: pipe::Sender, data: Vec<u8>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut at = 0;
            let mut size = 1;
            while at < data.len() {
                let end = (at + size).min(data.len());
                tx.write_all(&data[at..end]).await.unwrap();
                at = end;
                size = size * 7 % 100_003 + 1;
            }
        })
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), None);
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), Some(&gate));
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), Some(&gate));
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), Some(&gate));
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), Some(&gate));
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
        let copy = Copy::spawn("test", rx, Dest::stream(out.clone()), Some(&gate));
        let data = pattern(100_000, 8);
        tx.write_all(&data).await.unwrap();
        drop(gate);
        drop(tx);
        finished(&copy).await;
        assert!(out.bytes() == data);
    }

    #[test]
    fn only_lost_bytes_make_a_failed_destination_a_warning() {
        assert_eq!(dest_failed_level(0), log::Level::Debug);
        assert_eq!(dest_failed_level(1), log::Level::Warn);
    }

    #[tokio::test]
    async fn a_dropped_copy_stops_and_closes_its_source() {
        let (mut tx, rx) = source();
        let copy = Copy::spawn("test", rx, Dest::stream(Collect::default()), None);
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

    // Pipe to pipe (a process's pipe into containerd's FIFO): the splice strategy.

    #[tokio::test]
    async fn pipe_to_pipe_splices_every_byte_in_order_and_the_reader_sees_eof() {
        let (tx, rx) = source();
        let (to, mut client) = dest();
        let copy = Copy::spawn("test", rx, to, None);
        let data = pattern(8 << 20, 9);
        let writer = write_all_then_close(tx, data.clone());
        let got = read_to_eof(&mut client).await;
        writer.await.unwrap();
        assert!(got == data, "byte-exact");
        let moved = moved(&copy).await;
        assert_eq!(moved.spliced, data.len() as u64, "{moved:?}");
        assert_eq!(moved.copied, 0, "{moved:?}");
    }

    #[tokio::test]
    async fn a_slow_reader_gets_every_byte_and_the_writer_is_held_back_not_failed() {
        let (tx, rx) = source();
        let (to, mut client) = dest();
        let copy = Copy::spawn("test", rx, to, None);
        let data = pattern(1 << 20, 10);
        let writer = write_all_then_close(tx, data.clone());
        let mut got = Vec::new();
        let mut chunk = vec![0u8; 5000];
        loop {
            tokio::time::sleep(Duration::from_millis(1)).await;
            match client.read(&mut chunk).await.unwrap() {
                0 => break,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
        writer.await.unwrap();
        assert!(got == data, "byte-exact");
        assert_eq!(moved(&copy).await.spliced, data.len() as u64);
    }

    #[tokio::test]
    async fn an_idle_pipe_then_eof_finishes_the_copy() {
        let (mut tx, rx) = source();
        let (to, mut client) = dest();
        let copy = Copy::spawn("test", rx, to, None);
        tx.write_all(b"one line\n").await.unwrap();
        let mut line = [0u8; 9];
        client.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"one line\n");
        let waiting = tokio::time::timeout(Duration::from_millis(100), copy.finished()).await;
        assert!(waiting.is_err(), "no EOF yet");
        drop(tx);
        finished(&copy).await;
        assert_eq!(client.read(&mut line).await.unwrap(), 0, "EOF passed on");
    }

    #[tokio::test]
    async fn a_reader_that_goes_away_ends_the_copy_and_what_it_missed_is_counted() {
        let (mut tx, rx) = source();
        let (to, mut client) = dest();
        let copy = Copy::spawn("test", rx, to, None);
        let first = pattern(32 << 10, 11);
        tx.write_all(&first).await.unwrap();
        let mut got = vec![0u8; first.len()];
        client.read_exact(&mut got).await.unwrap();
        assert!(got == first);
        drop(client);
        tx.write_all(&pattern(16 << 10, 12)).await.unwrap();
        let moved = moved(&copy).await;
        assert_eq!(moved.spliced, first.len() as u64, "{moved:?}");
        assert_eq!(moved.dropped, 16 << 10, "{moved:?}");
        // The copy is gone and its source closed: the process gets EPIPE, not a hang.
        let e = tx.write_all(b"more").await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn a_held_exec_output_is_copied_then_the_rest_spliced_in_order() {
        let (mut tx, rx) = source();
        let (to, mut client) = dest();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, to, Some(&gate));
        let before = pattern(300_000, 13);
        tx.write_all(&before).await.unwrap();
        gate.pass();
        let after = pattern(2 << 20, 14);
        let writer = write_all_then_close(tx, after.clone());
        let got = read_to_eof(&mut client).await;
        writer.await.unwrap();
        let mut want = before.clone();
        want.extend_from_slice(&after);
        assert!(got == want, "byte-exact, held bytes first");
        let moved = moved(&copy).await;
        // What was still in the process's pipe at the decision is spliced too.
        assert_eq!(moved.copied + moved.spliced, want.len() as u64, "{moved:?}");
        assert!(
            moved.copied > 0 && moved.spliced >= after.len() as u64,
            "{moved:?}"
        );
    }

    #[tokio::test]
    async fn a_discarded_pipe_to_pipe_copy_delivers_nothing_and_reads_to_eof() {
        let (mut tx, rx) = source();
        let (to, mut client) = dest();
        let gate = Gate::holding();
        let copy = Copy::spawn("test", rx, to, Some(&gate));
        tx.write_all(&pattern(100_000, 15)).await.unwrap();
        gate.discard();
        tx.write_all(&pattern(100_000, 16)).await.unwrap();
        drop(tx);
        let got = read_to_eof(&mut client).await;
        assert!(got.is_empty());
        assert_eq!(moved(&copy).await.discarded, 200_000);
    }

    #[tokio::test]
    async fn a_dropped_pipe_to_pipe_copy_closes_both_ends() {
        let (mut tx, rx) = source();
        let (to, mut client) = dest();
        let copy = Copy::spawn("test", rx, to, None);
        // Fill the destination so the copy waits on it with bytes in the source.
        let fill = pattern(200_000, 17);
        let mut written = 0;
        while written < fill.len() {
            match tokio::time::timeout(Duration::from_millis(200), tx.write(&fill[written..])).await
            {
                Ok(n) => written += n.unwrap(),
                Err(_) => break,
            }
        }
        drop(copy);
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
        // What reached the client is a prefix of what was written, then EOF.
        let got = read_to_eof(&mut client).await;
        assert!(!got.is_empty() && got[..] == fill[..got.len()]);
    }
}
