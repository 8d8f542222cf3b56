//! Syscalls that can sleep in the kernel for ever (mount and unmount of FUSE, NFS or a
//! lazy-pulling snapshotter; cgroup files of a wedged controller), run with a deadline.
//!
//! Each runs on a thread of its own, not on tokio's blocking pool: a call stuck in the kernel
//! cannot be cancelled, and stuck calls that kept pool threads would starve everything else
//! that uses the pool (`file://` output, other containers' mounts). When the deadline passes
//! the caller gets DeadlineExceeded and the thread is left to finish when the kernel lets it;
//! what it produced then is handed to `abandoned` (a mount made after its Create gave up is
//! unmounted there). Calls still running are listed in the SIGUSR1 dump (`describe`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Calls in flight: (id, what, since).
static INFLIGHT: Mutex<Vec<(u64, String, Instant)>> = Mutex::new(Vec::new());
static NEXT: Mutex<u64> = Mutex::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `f` on its own thread and waits for it at most `bound`. If the caller stops waiting
/// (deadline, or its future dropped), the result `f` returns later goes to `abandoned`.
pub async fn run<T, F, A>(what: String, bound: Duration, f: F, abandoned: A) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
    A: FnOnce(T) + Send + 'static,
{
    let id = {
        let mut n = lock(&NEXT);
        *n += 1;
        *n
    };
    lock(&INFLIGHT).push((id, what.clone(), Instant::now()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_what = what.clone();
    let spawned = std::thread::Builder::new()
        .name("rshim-syscall".into())
        .spawn(move || {
            let result = f();
            lock(&INFLIGHT).retain(|(i, ..)| *i != id);
            if let Err(result) = tx.send(result) {
                log::warn!("{thread_what} finished after its caller gave up; undoing it");
                abandoned(result);
            }
        });
    if let Err(e) = spawned {
        lock(&INFLIGHT).retain(|(i, ..)| *i != id);
        return Err(Error::io(format!("start a thread for {what}"), e));
    }
    match tokio::time::timeout(bound, rx).await {
        Ok(Ok(result)) => Ok(result),
        Ok(Err(_)) => Err(Error::Internal(format!("{what}: its thread died"))),
        Err(_) => Err(Error::DeadlineExceeded(format!(
            "{what} took longer than {bound:?} (still running in the kernel; see the SIGUSR1 dump)"
        ))),
    }
}

/// The calls in flight, for the diagnostics dump.
pub fn describe() -> Vec<String> {
    lock(&INFLIGHT)
        .iter()
        .map(|(_, what, since)| format!("blocking call `{what}` running for {:?}", since.elapsed()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[tokio::test]
    async fn a_call_past_its_deadline_is_reported_then_undone_when_it_ends() {
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (undone_tx, undone_rx) = mpsc::channel::<u32>();
        let stuck = run(
            "mount of a wedged filesystem".into(),
            Duration::from_millis(50),
            move || {
                let _ = release_rx.recv();
                7u32
            },
            move |made| {
                let _ = undone_tx.send(made);
            },
        )
        .await;
        assert!(
            matches!(stuck, Err(Error::DeadlineExceeded(_))),
            "{stuck:?}"
        );
        assert!(describe()
            .iter()
            .any(|l| l.contains("mount of a wedged filesystem")));
        release_tx.send(()).unwrap();
        let undone = undone_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(undone, 7, "what it made after the caller gave up is undone");
        assert!(!describe()
            .iter()
            .any(|l| l.contains("mount of a wedged filesystem")));
    }

    #[tokio::test]
    async fn a_call_within_its_deadline_returns_its_result() {
        let got = run("quick".into(), Duration::from_secs(10), || 42, |_| {}).await;
        assert_eq!(got.unwrap(), 42);
    }

    #[test]
    fn stuck_calls_do_not_starve_the_blocking_pool() {
        // The daemon's runtime has a small blocking pool; more stuck calls than it has
        // threads leave it serving.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Arc::new(Mutex::new(release_rx));
        rt.block_on(async {
            for n in 0..4 {
                let rx = release_rx.clone();
                let stuck = run(
                    format!("stuck {n}"),
                    Duration::from_millis(1),
                    move || {
                        let _ = lock(&rx).recv();
                    },
                    |_| {},
                )
                .await;
                assert!(stuck.is_err());
            }
            let served =
                tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(|| 1))
                    .await;
            assert_eq!(served.expect("the blocking pool is starved").unwrap(), 1);
        });
        drop(release_tx);
    }
}
