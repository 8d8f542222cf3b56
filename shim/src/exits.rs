//! Routes every reaped exit to the process that owns the pid.
//!
//! The reaper (`runc_wrapper::monitor::Reaper`, one per shim) reaps every child; this router
//! holds one subscription for the shim's lifetime and a map pid -> process. A process whose pid
//! is only learnt after runc returns (the pid file) may exit before that: callers subscribe to
//! the monitor before spawning runc (`EarlyExits`), register the pid, then look for the pid
//! among the exits that arrived in between. `Process::record_exit` is idempotent, so seeing the
//! exit twice is harmless.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use runc_wrapper::monitor::{Exit, ExitMonitor, ExitSubscription};
use tokio::task::JoinHandle;

/// What is told of an exit. Implemented by the container that owns the process.
pub trait ExitHandler: Send + Sync {
    fn on_exit(self: Arc<Self>, exit: Exit);
}

#[derive(Default)]
pub struct ExitRouter {
    owners: Mutex<HashMap<i32, Weak<dyn ExitHandler>>>,
}

impl ExitRouter {
    /// Starts routing; the returned task ends when the monitor does.
    pub fn start(monitor: &dyn ExitMonitor) -> (Arc<ExitRouter>, JoinHandle<()>) {
        let router = Arc::new(ExitRouter::default());
        let mut sub = monitor.subscribe();
        let r = router.clone();
        let task = tokio::spawn(async move {
            while let Some(exit) = sub.recv().await {
                r.dispatch(exit);
            }
        });
        (router, task)
    }

    fn dispatch(&self, exit: Exit) {
        let owner = self
            .owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&exit.pid);
        if let Some(owner) = owner.and_then(|w| w.upgrade()) {
            owner.on_exit(exit);
        }
    }

    /// Routes `pid`'s exit to `owner`, including an exit already seen by `early`.
    pub fn register(&self, pid: i32, owner: Arc<dyn ExitHandler>, early: EarlyExits) {
        self.owners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, Arc::downgrade(&owner));
        let mut sub = early.0;
        while let Some(exit) = sub.try_recv() {
            if exit.pid == pid {
                self.owners
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&pid);
                owner.on_exit(exit);
                return;
            }
        }
    }
}

/// Exits seen since before a runc call that starts a process.
pub struct EarlyExits(ExitSubscription);

impl EarlyExits {
    pub fn subscribe(monitor: &dyn ExitMonitor) -> EarlyExits {
        EarlyExits(monitor.subscribe())
    }
}
