//! One process of a container (its init or an exec): its state machine, its exit, and the one
//! exit notification every `Wait` shares.
//!
//! Bug class 1: a pending `Wait` is a `watch::Receiver` on the process's exit, a few dozen
//! bytes; when the caller gives up, dropping it frees everything. The number of pending Waits
//! per process is capped (`MAX_PENDING_WAITS`); beyond it Wait answers ResourceExhausted.

use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::watch;

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

impl Status {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: SystemTime,
}

struct State {
    status: Status,
    pid: u32,
    exit: Option<ExitInfo>,
}

pub struct Process {
    /// The container id for the init, the exec id for an exec.
    pub id: String,
    pub container_id: String,
    pub exec_id: Option<String>,
    pub stdio: StdioConfig,
    state: Mutex<State>,
    exit_tx: watch::Sender<Option<ExitInfo>>,
    /// Opens once the process's start event is queued (or its start failed, or it is deleted
    /// unstarted): its exit event must never overtake its start event.
    start_gate: watch::Sender<bool>,
    io: Mutex<Option<std::sync::Arc<ProcessIo>>>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: Option<&str>, stdio: StdioConfig) -> Process {
        Process {
            id: exec_id.unwrap_or(container_id).to_string(),
            container_id: container_id.to_string(),
            exec_id: exec_id.map(str::to_string),
            stdio,
            state: Mutex::new(State {
                status: Status::Created,
                pid: 0,
                exit: None,
            }),
            exit_tx: watch::channel(None).0,
            start_gate: watch::channel(false).0,
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

    /// A state transition, refusing the impossible ones with the status containerd expects.
    pub fn transition(&self, to: Status) -> Result<()> {
        let mut state = self.lock();
        let from = state.status;
        let allowed = match (from, to) {
            (Status::Created, Status::Running) => true,
            (Status::Running, Status::Paused) => true,
            (Status::Paused, Status::Running) => true,
            (Status::Created | Status::Stopped, Status::Deleted) => true,
            (_, Status::Stopped) => from != Status::Deleted,
            _ => false,
        };
        if !allowed {
            return Err(transition_error(&self.id, from, to));
        }
        state.status = to;
        Ok(())
    }

    /// Checks that `to` is reachable now, without changing anything (before a runc call).
    pub fn check_transition(&self, to: Status) -> Result<()> {
        let from = self.status();
        let ok = matches!(
            (from, to),
            (Status::Created, Status::Running)
                | (Status::Running, Status::Paused)
                | (Status::Paused, Status::Running)
                | (Status::Created | Status::Stopped, Status::Deleted)
        );
        if ok {
            Ok(())
        } else {
            Err(transition_error(&self.id, from, to))
        }
    }

    /// Start is allowed only from Created (Paused -> Running is Resume, not Start).
    pub fn check_start(&self) -> Result<()> {
        match self.status() {
            Status::Created => Ok(()),
            from => Err(transition_error(&self.id, from, Status::Running)),
        }
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

    /// Wakes every Wait. Called after the exit event is queued.
    pub fn notify_exit(&self) {
        let exit = self.exit();
        self.exit_tx.send_replace(exit);
    }

    /// Waits for the exit. Cancellation-safe: dropping the future drops the receiver and
    /// nothing else remains.
    pub async fn wait(&self) -> Result<ExitInfo> {
        if self.exit_tx.receiver_count() >= MAX_PENDING_WAITS {
            return Err(Error::ResourceExhausted(format!(
                "too many pending waits on process {} (limit {MAX_PENDING_WAITS})",
                self.id
            )));
        }
        let mut rx = self.exit_tx.subscribe();
        let exit = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| Error::Internal(format!("process {} is gone", self.id)))?;
        exit.ok_or_else(|| Error::Internal("exit missing".into()))
    }

    /// Pending Waits (for diagnostics and tests).
    pub fn pending_waits(&self) -> usize {
        self.exit_tx.receiver_count()
    }

    pub fn open_start_gate(&self) {
        self.start_gate.send_replace(true);
    }

    pub async fn start_gate_opened(&self) {
        let mut rx = self.start_gate.subscribe();
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// The Go shim's wording (pkg/process init_state.go / exec_state.go): users and tools match
/// on it. The codes are more precise than the Go shim's (FailedPrecondition, not Unknown).
fn transition_error(id: &str, from: Status, to: Status) -> Error {
    let msg = match (to, from) {
        (_, Status::Deleted) => return Error::NotFound(format!("process {id} was deleted")),
        (Status::Running, Status::Paused) => "cannot start a paused process",
        (Status::Running, Status::Running) => "cannot start a running process",
        (Status::Running, Status::Stopped) => "cannot start a stopped process",
        (Status::Running, Status::Created) => "cannot resume task in created state",
        (Status::Paused, Status::Created) => "cannot pause task in created state",
        (Status::Paused, Status::Paused) => "cannot pause a paused container",
        (Status::Paused, Status::Stopped) => "cannot pause a stopped container",
        (Status::Deleted, Status::Running) => "cannot delete a running process",
        (Status::Deleted, Status::Paused) => "cannot delete a paused process",
        _ => {
            return Error::FailedPrecondition(format!(
                "process {id}: cannot go from {} to {}",
                from.name(),
                to.name()
            ))
        }
    };
    Error::FailedPrecondition(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn process() -> Process {
        Process::new("c", None, StdioConfig::default())
    }

    #[test]
    fn state_machine_refuses_the_impossible() {
        let p = process();
        assert!(matches!(
            p.transition(Status::Paused),
            Err(Error::FailedPrecondition(_))
        ));
        p.transition(Status::Running).unwrap();
        let err = p.check_transition(Status::Deleted).unwrap_err();
        assert_eq!(err.to_string(), "cannot delete a running process");
        p.transition(Status::Paused).unwrap();
        assert!(p.check_transition(Status::Paused).is_err());
        assert_eq!(
            p.check_start().unwrap_err().to_string(),
            "cannot start a paused process"
        );
        p.transition(Status::Running).unwrap();
        assert!(p.record_exit(137, SystemTime::UNIX_EPOCH));
        assert!(!p.record_exit(1, SystemTime::UNIX_EPOCH), "first exit wins");
        assert_eq!(p.exit().unwrap().status, 137);
        assert!(matches!(
            p.check_transition(Status::Running),
            Err(Error::FailedPrecondition(_))
        ));
        p.transition(Status::Deleted).unwrap();
        assert!(matches!(
            p.check_transition(Status::Deleted),
            Err(Error::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn waiters_share_one_notification_and_cost_nothing_when_dropped() {
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
            held.push(p.exit_tx.subscribe());
        }
        assert!(matches!(p.wait().await, Err(Error::ResourceExhausted(_))));
        held.clear();
        p.record_exit(0, SystemTime::now());
        p.notify_exit();
        assert_eq!(p.wait().await.unwrap().status, 0);
    }
}
