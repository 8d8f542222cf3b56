//! One process of a container (its init or an exec): its state machine, its exit, and the one
//! exit notification every `Wait` shares.
//!
//! Bug class 1: a pending `Wait` is one `ExitWaiter` in the process's list, told of the exit
//! once. containerd's Waits (no deadline, never cancelled: ttrpc has no cancel frame) are
//! parked there by the server as a stream id and a weak handle on the connection's writer, a
//! few dozen bytes each. Abandoned waiters are pruned when the list reaches its cap
//! (`MAX_PENDING_WAITS`); beyond it Wait answers ResourceExhausted. All are released at exit.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::{oneshot, watch};

use crate::error::{Error, Result};
use crate::stdio::{ProcessIo, StdioConfig};

/// Pending Waits allowed per process. containerd keeps one per task it watches; a client that
/// piles up more than this is abandoning them (ttrpc has no cancel frame).
pub const MAX_PENDING_WAITS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Paused,
    Stopped,
    Deleted,
}

/// What a client asks of a process. `Status::check` is the one place that decides whether a
/// status allows it; `Status::after` the one place that says what it leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Start,
    Pause,
    Resume,
    Delete,
    Exec,
    Checkpoint,
    Update,
}

impl Status {
    /// Whether a process in this status allows `op`, else the refusal in the Go shim's words
    /// (containerd's pkg/process, one type per state there; users and tools match on the
    /// words). The codes are more precise than the Go shim's Unknown: FailedPrecondition, and
    /// NotFound for a deleted process.
    pub fn check(self, op: Op) -> std::result::Result<(), Refusal> {
        use Op::*;
        use Status::*;
        let refused = |words| Err(Refusal::State(words));
        match (self, op) {
            (Created, Start | Delete | Exec | Update) => Ok(()),
            (Created, Pause) => refused("cannot pause task in created state"),
            (Created, Resume) => refused("cannot resume task in created state"),
            (Created, Checkpoint) => refused("cannot checkpoint a task in created state"),
            (Running, Pause | Exec | Update | Checkpoint) => Ok(()),
            (Running, Start) => refused("cannot start a running process"),
            (Running, Resume) => refused("cannot resume a running process"),
            (Running, Delete) => refused("cannot delete a running process"),
            (Paused, Resume | Update | Checkpoint) => Ok(()),
            (Paused, Start) => refused("cannot start a paused process"),
            (Paused, Pause) => refused("cannot pause a paused container"),
            (Paused, Delete) => refused("cannot delete a paused process"),
            (Paused, Exec) => refused("cannot exec in a paused state"),
            (Stopped, Delete) => Ok(()),
            (Stopped, Start) => refused("cannot start a stopped process"),
            (Stopped, Pause) => refused("cannot pause a stopped container"),
            (Stopped, Resume) => refused("cannot resume a stopped container"),
            (Stopped, Update) => refused("cannot update a stopped container"),
            (Stopped, Checkpoint) => refused("cannot checkpoint a stopped container"),
            (Stopped, Exec) => refused("cannot exec in a stopped state"),
            (Deleted, _) => Err(Refusal::Deleted),
        }
    }

    /// The status once `op`, allowed by `check`, has succeeded.
    pub fn after(self, op: Op) -> Status {
        match op {
            Op::Start | Op::Resume => Status::Running,
            Op::Pause => Status::Paused,
            Op::Delete => Status::Deleted,
            Op::Exec | Op::Checkpoint | Op::Update => self,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        }
    }
}

/// Why `Status::check` refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    State(&'static str),
    Deleted,
}

impl Refusal {
    pub fn error(self, id: &str) -> Error {
        match self {
            Refusal::State(words) => Error::FailedPrecondition(words.to_string()),
            Refusal::Deleted => gone(id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: SystemTime,
}

/// One pending Wait: told of the exit exactly once, or of `None` when the process is gone
/// without one (deleted before it ran).
pub trait ExitWaiter: Send {
    /// The caller is gone (its connection closed, its future dropped): the entry can go.
    fn abandoned(&self) -> bool;
    fn notify(self: Box<Self>, exit: Option<ExitInfo>);
}

/// An in-process Wait (`Process::wait`).
impl ExitWaiter for oneshot::Sender<Option<ExitInfo>> {
    fn abandoned(&self) -> bool {
        self.is_closed()
    }
    fn notify(self: Box<Self>, exit: Option<ExitInfo>) {
        let _ = self.send(exit);
    }
}

struct State {
    status: Status,
    pid: u32,
    exit: Option<ExitInfo>,
    /// Set once the exit may be told (its event is queued): Waits answer from then on.
    notified: bool,
    waiters: Vec<Box<dyn ExitWaiter>>,
}

pub struct Process {
    /// The container id for the init, the exec id for an exec.
    pub id: String,
    pub exec_id: Option<String>,
    pub stdio: StdioConfig,
    state: Mutex<State>,
    /// Closed only while a Start is in flight (from `begin_start` until its start event is
    /// queued or the start failed): an exit event must never overtake a start event that is
    /// being published, but the exit of a process never started (killed while Created) is
    /// reported at once, as the Go shim does.
    start_gate: watch::Sender<bool>,
    io: Mutex<Option<std::sync::Arc<ProcessIo>>>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: Option<&str>, stdio: StdioConfig) -> Process {
        Process {
            id: exec_id.unwrap_or(container_id).to_string(),
            exec_id: exec_id.map(str::to_string),
            stdio,
            state: Mutex::new(State {
                status: Status::Created,
                pid: 0,
                exit: None,
                notified: false,
                waiters: Vec::new(),
            }),
            start_gate: watch::channel(true).0,
            io: Mutex::new(None),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_init(&self) -> bool {
        self.exec_id.is_none()
    }

    pub fn status(&self) -> Status {
        self.lock().status
    }

    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    pub fn exit(&self) -> Option<ExitInfo> {
        self.lock().exit
    }

    pub fn set_pid(&self, pid: u32) {
        self.lock().pid = pid;
    }

    pub fn set_io(&self, io: ProcessIo) {
        *self.io.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::sync::Arc::new(io));
    }

    pub fn io(&self) -> Option<std::sync::Arc<ProcessIo>> {
        self.io.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the process's status allows `op` now (before the runc call that does it).
    pub fn check(&self, op: Op) -> Result<()> {
        self.status().check(op).map_err(|r| r.error(&self.id))
    }

    /// Records that `op` succeeded: the status it leads to, if the status still allows it
    /// (an exit recorded meanwhile wins: a process that exited right after its start stays
    /// Stopped).
    pub fn complete(&self, op: Op) -> Result<()> {
        let mut state = self.lock();
        state.status.check(op).map_err(|r| r.error(&self.id))?;
        state.status = state.status.after(op);
        Ok(())
    }

    /// Start is allowed only from Created (Paused -> Running is Resume, not Start). Closes the
    /// start gate in the same step as the check, so an exit recorded after it waits for the
    /// start event, and one recorded before it makes the Start fail.
    pub fn begin_start(&self) -> Result<()> {
        let state = self.lock();
        state
            .status
            .check(Op::Start)
            .map_err(|r| r.error(&self.id))?;
        self.start_gate.send_replace(false);
        Ok(())
    }

    /// Records the exit (first report wins: the reaper and an early-exit check can both see it)
    /// and returns whether this call recorded it.
    pub fn record_exit(&self, status: u32, at: SystemTime) -> bool {
        let mut state = self.lock();
        if state.exit.is_some() || state.status == Status::Deleted {
            return false;
        }
        state.exit = Some(ExitInfo { status, at });
        state.status = Status::Stopped;
        true
    }

    /// Answers every Wait. Called after the exit event is queued.
    pub fn notify_exit(&self) {
        let (exit, waiters) = {
            let mut state = self.lock();
            state.notified = true;
            (state.exit, std::mem::take(&mut state.waiters))
        };
        for waiter in waiters {
            waiter.notify(exit);
        }
    }

    /// Adds a Wait: answered at once if the exit is already told, else at the exit.
    pub fn add_waiter(&self, waiter: Box<dyn ExitWaiter>) -> Result<()> {
        let mut state = self.lock();
        if state.notified {
            let exit = state.exit;
            drop(state);
            waiter.notify(exit);
            return Ok(());
        }
        if state.waiters.len() >= MAX_PENDING_WAITS {
            state.waiters.retain(|w| !w.abandoned());
        }
        if state.waiters.len() >= MAX_PENDING_WAITS {
            return Err(Error::ResourceExhausted(format!(
                "too many pending waits on process {} (limit {MAX_PENDING_WAITS})",
                self.id
            )));
        }
        state.waiters.push(waiter);
        Ok(())
    }

    /// Waits for the exit. Cancellation-safe: a dropped future leaves an abandoned entry that
    /// the exit or the next pruning removes.
    pub async fn wait(&self) -> Result<ExitInfo> {
        let (tx, rx) = oneshot::channel();
        self.add_waiter(Box::new(tx))?;
        rx.await.ok().flatten().ok_or_else(|| gone(&self.id))
    }

    /// If the exit is recorded, waits (at most `bound`) until it has been told: its event
    /// queued, its Waits answered. Lets Delete keep `/tasks/exit` before `/tasks/delete`.
    pub async fn exit_told(&self, bound: std::time::Duration) {
        if self.exit().is_some() {
            let _ = tokio::time::timeout(bound, self.wait()).await;
        }
    }

    /// Waits still wanted (for diagnostics and tests).
    pub fn pending_waits(&self) -> usize {
        self.lock()
            .waiters
            .iter()
            .filter(|w| !w.abandoned())
            .count()
    }

    pub fn open_start_gate(&self) {
        self.start_gate.send_replace(true);
    }

    pub async fn start_gate_opened(&self) {
        let mut rx = self.start_gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        for waiter in state.waiters.drain(..) {
            waiter.notify(None);
        }
    }
}

/// What a Wait answers for a process deleted without an exit.
pub fn gone(id: &str) -> Error {
    Error::NotFound(format!("process {id} was deleted"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn process() -> Process {
        Process::new("c", None, StdioConfig::default())
    }

    #[test]
    fn the_state_table_whole() {
        use Op::*;
        use Status::*;
        let ops = [Start, Pause, Resume, Delete, Exec, Checkpoint, Update];
        // (status, ops allowed), every other op refused.
        let allowed = [
            (Created, &[Start, Delete, Exec, Update][..]),
            (Running, &[Pause, Exec, Update, Checkpoint][..]),
            (Paused, &[Resume, Update, Checkpoint][..]),
            (Stopped, &[Delete][..]),
            (Deleted, &[][..]),
        ];
        for (status, ok) in allowed {
            for op in ops {
                let answer = status.check(op);
                assert_eq!(
                    answer.is_ok(),
                    ok.contains(&op),
                    "{status:?} {op:?}: {answer:?}"
                );
            }
        }
        assert_eq!(Created.after(Start), Running);
        assert_eq!(Running.after(Pause), Paused);
        assert_eq!(Paused.after(Resume), Running);
        assert_eq!(Stopped.after(Delete), Deleted);
        assert_eq!(Running.after(Exec), Running);
        // The Go shim's words, and NotFound for a deleted process.
        let words = |s: Status, op| s.check(op).unwrap_err().error("p").to_string();
        assert_eq!(words(Running, Delete), "cannot delete a running process");
        assert_eq!(words(Paused, Start), "cannot start a paused process");
        assert_eq!(words(Stopped, Exec), "cannot exec in a stopped state");
        assert_eq!(
            words(Created, Checkpoint),
            "cannot checkpoint a task in created state"
        );
        assert!(matches!(
            Deleted.check(Pause).unwrap_err().error("p"),
            Error::NotFound(_)
        ));
    }

    #[test]
    fn a_process_follows_the_table_and_its_exit_wins() {
        let p = process();
        assert!(matches!(
            p.check(Op::Pause),
            Err(Error::FailedPrecondition(_))
        ));
        p.begin_start().unwrap();
        p.complete(Op::Start).unwrap();
        assert_eq!(p.status(), Status::Running);
        p.complete(Op::Pause).unwrap();
        assert_eq!(
            p.begin_start().unwrap_err().to_string(),
            "cannot start a paused process"
        );
        p.complete(Op::Resume).unwrap();
        assert!(p.record_exit(137, SystemTime::UNIX_EPOCH));
        assert!(!p.record_exit(1, SystemTime::UNIX_EPOCH), "first exit wins");
        assert_eq!(p.exit().unwrap().status, 137);
        // A start completing after the exit leaves the process stopped.
        assert!(p.complete(Op::Start).is_err());
        assert_eq!(p.status(), Status::Stopped);
        p.complete(Op::Delete).unwrap();
        assert!(matches!(p.check(Op::Delete), Err(Error::NotFound(_))));
    }

    #[tokio::test]
    async fn waiters_share_one_notification_and_dropped_ones_are_not_counted() {
        let p = Arc::new(process());
        let mut waits = Vec::new();
        for _ in 0..100 {
            let p = p.clone();
            waits.push(tokio::spawn(
                async move { p.wait().await.map(|e| e.status) },
            ));
        }
        // Abandoned waits: started, then dropped.
        for _ in 0..50 {
            let p2 = p.clone();
            let abandoned = tokio::spawn(async move { p2.wait().await.map(|e| e.status) });
            tokio::task::yield_now().await;
            abandoned.abort();
            let _ = abandoned.await;
        }
        tokio::task::yield_now().await;
        while p.pending_waits() < 100 {
            tokio::task::yield_now().await;
        }
        assert_eq!(p.pending_waits(), 100, "aborted waits left nothing behind");
        p.record_exit(3, SystemTime::now());
        p.notify_exit();
        for w in waits {
            assert_eq!(w.await.unwrap().unwrap(), 3);
        }
        assert_eq!(p.pending_waits(), 0);
        // A wait after the exit returns at once.
        assert_eq!(p.wait().await.unwrap().status, 3);
    }

    #[tokio::test]
    async fn pending_waits_are_capped() {
        let p = Arc::new(process());
        let mut held = Vec::new();
        for _ in 0..MAX_PENDING_WAITS {
            let (tx, rx) = oneshot::channel();
            p.add_waiter(Box::new(tx)).unwrap();
            held.push(rx);
        }
        assert!(matches!(p.wait().await, Err(Error::ResourceExhausted(_))));
        // Abandoned ones make room.
        held.truncate(MAX_PENDING_WAITS - 1);
        let p2 = p.clone();
        let one_more = tokio::spawn(async move { p2.wait().await.map(|e| e.status) });
        while p.pending_waits() < MAX_PENDING_WAITS {
            tokio::task::yield_now().await;
        }
        held.clear();
        p.record_exit(0, SystemTime::now());
        p.notify_exit();
        assert_eq!(p.wait().await.unwrap().status, 0);
        assert_eq!(one_more.await.unwrap().unwrap(), 0);
    }

    #[tokio::test]
    async fn a_process_deleted_before_its_exit_answers_its_waits() {
        // A parked Wait does not keep its process alive.
        let p = process();
        let (tx, rx) = oneshot::channel();
        p.add_waiter(Box::new(tx)).unwrap();
        assert_eq!(p.pending_waits(), 1);
        drop(p);
        assert_eq!(rx.await.unwrap(), None);
    }
}
