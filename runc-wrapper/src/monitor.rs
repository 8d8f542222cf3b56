use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::mpsc;
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + the signal that killed it (containerd's convention).
    pub status: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    pub timestamp: std::time::SystemTime,
}
pub trait ExitMonitor: Send + Sync + 'static {
    fn subscribe(&self) -> ExitSubscription;
}
pub struct ExitSubscription {
    rx: mpsc::UnboundedReceiver<Exit>,
    id: u64,
    reaper: Arc<Reaper>,
}
impl ExitSubscription {
    pub async fn recv(&mut self) -> Option<Exit> {
        self.rx.recv().await
    }
    pub fn try_recv(&mut self) -> Option<Exit> {
        self.rx.try_recv().ok()
    }
}
impl Drop for ExitSubscription {
    fn drop(&mut self) {
        self.reaper
            .subs
            .lock()
            .unwrap()
            .retain(|(i, _)| *i != self.id);
    }
}
pub struct Reaper {
    subs: Mutex<Vec<(u64, mpsc::UnboundedSender<Exit>)>>,
    next: Mutex<u64>,
}
static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
impl Reaper {
    pub fn start() -> Arc<Reaper> {
        REAPER
            .get_or_init(|| {
                let r = Arc::new(Reaper {
                    subs: Mutex::new(Vec::new()),
                    next: Mutex::new(0),
                });
                let r2 = r.clone();
                let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
                    .expect("SIGCHLD");
                tokio::spawn(async move {
                    loop {
                        r2.reap();
                        if sig.recv().await.is_none() {
                            break;
                        }
                    }
                });
                r
            })
            .clone()
    }
    fn reap(&self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            let (pid, status, signal) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) => (p.as_raw(), c, None),
                Ok(WaitStatus::Signaled(p, s, _)) => (p.as_raw(), 128 + s as i32, Some(s as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            let e = Exit {
                pid,
                status,
                signal,
                timestamp: std::time::SystemTime::now(),
            };
            for (_, tx) in self.subs.lock().unwrap().iter() {
                let _ = tx.send(e);
            }
        }
    }
}
impl ExitMonitor for Reaper {
    fn subscribe(&self) -> ExitSubscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        self.subs.lock().unwrap().push((id, tx));
        ExitSubscription {
            rx,
            id,
            reaper: REAPER.get().expect("reaper").clone(),
        }
    }
}

/// `Command::spawn` for a process-wide reaper's world. When exec fails, std waits for the dead
/// child itself and panics if the reaper (`waitpid(-1)`) collected it first; that panic is
/// turned back into the spawn error it stands for.
pub fn spawn_reaped(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn())) {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::other(format!(
            "{program} could not be executed"
        ))),
    }
}
