//! The process-wide reaper: the shim is a child subreaper, so every process it or runc starts
//! ends up its child. One task reaps them all on SIGCHLD and broadcasts each exit to the
//! subscribers; a caller that starts a process subscribes *before* spawning it, so even an
//! exit that happens before spawn returns is seen.

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
            .unwrap_or_else(|p| p.into_inner())
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
    /// Reaps every exited child and tells each subscriber. Raw `waitpid`, not nix's: nix
    /// cannot represent a death by a real-time signal (it answers EINVAL after the kernel has
    /// already reaped the child), and that exit would be lost.
    fn reap(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into a valid i32.
            let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG) };
            if pid <= 0 {
                return; // 0: children left, none exited; -1: ECHILD (none) or EINTR (retried by the next SIGCHLD)
            }
            let (status, signal) = if libc::WIFEXITED(raw) {
                (libc::WEXITSTATUS(raw), None)
            } else if libc::WIFSIGNALED(raw) {
                let sig = libc::WTERMSIG(raw);
                (128 + sig, Some(sig))
            } else {
                continue; // stopped or continued: not an exit
            };
            let e = Exit {
                pid,
                status,
                signal,
                timestamp: std::time::SystemTime::now(),
            };
            for (_, tx) in self.subs.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                let _ = tx.send(e);
            }
        }
    }
}
impl ExitMonitor for Reaper {
    fn subscribe(&self) -> ExitSubscription {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut n = self.next.lock().unwrap_or_else(|p| p.into_inner());
            *n += 1;
            *n
        };
        self.subs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, tx));
        ExitSubscription {
            rx,
            id,
            reaper: REAPER.get().expect("reaper").clone(),
        }
    }
}

/// `Command::spawn` for a process-wide reaper's world. When exec fails, std waits for the dead
/// child itself and panics if the reaper (`waitpid(-1)`) collected it first, losing the exec
/// error; that panic is turned back into an error naming why the program cannot run.
pub fn spawn_reaped(cmd: &mut std::process::Command) -> std::io::Result<std::process::Child> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cmd.spawn())) {
        Ok(result) => result,
        Err(_) => Err(why_not_executable(cmd.get_program())),
    }
}

/// A bare program name resolved through `PATH` to an executable regular file (Go's
/// `exec.LookPath`); a path is returned as it is. NotFound when no `PATH` entry has it.
pub fn look_path(program: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    if program.components().count() != 1 || program.as_os_str().is_empty() {
        return Ok(program.to_path_buf());
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(program);
        if let Ok(m) = std::fs::metadata(&candidate) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("{} not found in PATH", program.display()),
    ))
}

/// The usual reasons exec fails, checked after the fact: missing, or not executable by us.
fn why_not_executable(program: &std::ffi::OsStr) -> std::io::Error {
    use std::os::unix::fs::PermissionsExt;
    let name = std::path::Path::new(program);
    let shown = name.display();
    if name.components().count() == 1 {
        // Looked up in PATH: std already reports a name found nowhere as NotFound.
        return std::io::Error::other(format!("{shown} (from PATH) could not be executed"));
    }
    match std::fs::metadata(name) {
        Err(e) => std::io::Error::new(e.kind(), format!("{shown}: {e}")),
        Ok(m) if !m.is_file() => std::io::Error::other(format!("{shown} is not a regular file")),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{shown} is not executable"),
        ),
        // Executable, yet exec failed: a bad interpreter line or binary format.
        Ok(_) => std::io::Error::other(format!(
            "{shown} could not be executed (bad interpreter or binary format?)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn why_a_program_cannot_be_executed() {
        let dir = tempfile::tempdir().unwrap();
        let why = |name: &str| why_not_executable(dir.path().join(name).as_os_str()).to_string();
        assert!(
            why("missing").contains("No such file"),
            "{}",
            why("missing")
        );
        std::fs::create_dir(dir.path().join("dir")).unwrap();
        assert!(why("dir").ends_with("is not a regular file"));
        std::fs::write(dir.path().join("plain"), "#!/bin/sh\n").unwrap();
        assert!(why("plain").ends_with("is not executable"));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "#!/no/such/interpreter\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(why("bad").contains("bad interpreter"));
        assert!(why_not_executable("runc".as_ref())
            .to_string()
            .contains("from PATH"));
    }
}
