//! The runc calls running now, process-wide, for the shim's diagnostics dump (SIGUSR1): which
//! command, which pid, for how long. A call registers itself for as long as its future lives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Entry {
    command: String,
    pid: i32,
    started: Instant,
    deadline: Duration,
}

static CALLS: Mutex<BTreeMap<u64, Entry>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One call in the registry; dropping it (the call ended or was cancelled) removes it.
pub(crate) struct Registered(u64);

pub(crate) fn register(command: &str, pid: i32, deadline: Duration) -> Registered {
    let key = NEXT.fetch_add(1, Ordering::Relaxed);
    let entry = Entry {
        command: command.to_string(),
        pid,
        started: Instant::now(),
        deadline,
    };
    lock().insert(key, entry);
    Registered(key)
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock().remove(&self.0);
    }
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<u64, Entry>> {
    // Entries are plain data: a panic elsewhere cannot leave them half-written.
    CALLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// One line per runc call in flight, oldest first.
pub fn describe() -> Vec<String> {
    lock()
        .values()
        .map(|e| {
            format!(
                "runc call `{}` pid={} running for {:.1?} of its {:?}",
                e.command,
                e.pid,
                e.started.elapsed(),
                e.deadline
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_is_listed_while_registered() {
        let call = register("runc pause", 42, Duration::from_secs(10));
        assert!(describe()
            .iter()
            .any(|l| l.starts_with("runc call `runc pause` pid=42 running for")));
        drop(call);
        assert!(!describe().iter().any(|l| l.contains("pid=42 ")));
    }
}
