//! rshim's only way of running runc (or any runc-compatible binary: crun, youki, a wrapper).
//!
//! - Bug class 1: every call has a deadline; on expiry runc's whole process group is killed and
//!   reaped, and the error names the command and the time it had. A call that is cancelled
//!   (its future dropped) kills the group too.
//! - Bug class 3: for calls that hand the process's stdio to runc (`io::RuncStdio`), the
//!   caller has the pipes' readers running before runc is spawned; runc's own stdout/stderr,
//!   when not the process's, are drained concurrently with the wait.
//! - runc is never waited on with `Child::wait`: the shim is a subreaper that reaps every child
//!   (`monitor::Reaper`); a call subscribes to exits before spawning and unsubscribes after.
//! - Errors carry runc's own message (its `--log` JSON), never just "exit status 1".

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

pub mod args;
pub mod console;
pub mod inflight;
pub mod io;
mod log;
pub mod monitor;

pub use args::CriuOpts;
use monitor::ExitMonitor;

/// One runc binary and its global options (from containerd's runc Options).
#[derive(Clone, Debug, Default)]
pub struct RuncConfig {
    /// Empty means `runc` on PATH.
    pub binary: PathBuf,
    pub root: Option<PathBuf>,
    pub systemd_cgroup: bool,
    pub debug: bool,
    /// `--log FILE --log-format json`; without it each call gets no JSON log and errors come
    /// from runc's stderr.
    pub log: Option<PathBuf>,
}

#[derive(Default)]
pub struct CreateOpts {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// For `run` only (`create` always detaches).
    pub detach: bool,
    pub stdio: io::RuncStdio,
}

#[derive(Default)]
pub struct ExecOpts {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub stdio: io::RuncStdio,
}

#[derive(Debug, Clone, Default)]
pub struct CheckpointOpts {
    pub criu: CriuOpts,
    pub leave_running: bool,
}

#[derive(Default)]
pub struct RestoreOpts {
    pub criu: CriuOpts,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_subreaper: bool,
    pub stdio: io::RuncStdio,
}

/// `runc state` output.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct State {
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: String,
    #[serde(default)]
    pub rootfs: String,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// runc exited non-zero; `message` is runc's own error.
    #[error("{command}: {message}")]
    Failed {
        command: String,
        status: i32,
        message: String,
    },
    /// The deadline passed; runc and its process group were killed and reaped.
    #[error("{command} timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("{command}: cannot run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    /// The binary could not be executed. Worded as Go's os/exec words it (`exec: "runc":
    /// executable file not found in $PATH`), which containerd's callers match on, followed by
    /// our own reason when it says more.
    #[error("{command}: {}", exec_wording(binary, source))]
    Exec {
        command: String,
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("{command}: {message}")]
    Parse { command: String, message: String },
    /// Receiving the pty master from runc's console socket failed or timed out.
    #[error("console socket: {0}")]
    Console(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Go's `exec.Error` text for a binary that cannot be executed: `exec: "NAME": REASON`, where a
/// bare name not found in PATH is `executable file not found in $PATH` and a path that does not
/// exist is `stat PATH: no such file or directory`. Other reasons keep our own words.
fn exec_wording(binary: &Path, source: &std::io::Error) -> String {
    let name = binary.display();
    let bare = binary.components().count() == 1;
    match source.kind() {
        std::io::ErrorKind::NotFound if bare => {
            format!("exec: \"{name}\": executable file not found in $PATH")
        }
        std::io::ErrorKind::NotFound => {
            format!("exec: \"{name}\": stat {name}: no such file or directory")
        }
        std::io::ErrorKind::PermissionDenied => format!("exec: \"{name}\": permission denied"),
        _ => format!("exec: \"{name}\": {source}"),
    }
}

/// How long a timed-out runc gets, after SIGKILL, to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);
/// runc's own output kept per call (stdout for queries, stderr for errors).
const OUTPUT_LIMIT: u64 = 4 << 20;

/// What one runc call needs besides its arguments.
#[derive(Default)]
struct Call {
    /// The process's stdio: runc's stdio *is* the process's, an absent stream is /dev/null
    /// (never a capture pipe, which the container would inherit and hold open).
    process_stdio: Option<io::RuncStdio>,
    /// Bytes for runc's stdin (`update --resources -`).
    stdin: Option<Vec<u8>>,
}

#[derive(Clone)]
pub struct Runc {
    config: RuncConfig,
    monitor: Arc<dyn ExitMonitor>,
}

impl Runc {
    pub fn new(config: RuncConfig, monitor: Arc<dyn ExitMonitor>) -> Runc {
        Runc { config, monitor }
    }

    fn binary(&self) -> PathBuf {
        if self.config.binary.as_os_str().is_empty() {
            PathBuf::from("runc")
        } else {
            self.config.binary.clone()
        }
    }

    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        mut opts: CreateOpts,
        timeout: Duration,
    ) -> Result<()> {
        let stdio = std::mem::take(&mut opts.stdio);
        let call = Call {
            process_stdio: Some(stdio),
            ..Default::default()
        };
        self.call(args::create("create", id, bundle, &opts), call, timeout)
            .await
            .map(drop)
    }

    /// `runc run`; with `detach` it returns once the container runs, else when it exits.
    pub async fn run(
        &self,
        id: &str,
        bundle: &Path,
        mut opts: CreateOpts,
        timeout: Duration,
    ) -> Result<()> {
        let stdio = std::mem::take(&mut opts.stdio);
        let call = Call {
            process_stdio: Some(stdio),
            ..Default::default()
        };
        self.call(args::create("run", id, bundle, &opts), call, timeout)
            .await
            .map(drop)
    }

    pub async fn start(&self, id: &str, timeout: Duration) -> Result<()> {
        self.call(args::simple("start", id), Call::default(), timeout)
            .await
            .map(drop)
    }

    /// `runc exec --process FILE`: the spec goes to a temp file, removed afterwards.
    pub async fn exec(
        &self,
        id: &str,
        process: &oci_spec::runtime::Process,
        mut opts: ExecOpts,
        timeout: Duration,
    ) -> Result<()> {
        let command = format!("{} exec", self.binary().display());
        let json = serde_json::to_vec(process).map_err(|e| Error::Parse {
            command: command.clone(),
            message: e.to_string(),
        })?;
        let file = tempfile::Builder::new()
            .prefix("runc-process")
            .suffix(".json")
            .tempfile()
            .map_err(|e| Error::Spawn {
                command: command.clone(),
                source: e,
            })?;
        std::fs::write(file.path(), json).map_err(|e| Error::Spawn { command, source: e })?;
        let stdio = std::mem::take(&mut opts.stdio);
        let call = Call {
            process_stdio: Some(stdio),
            ..Default::default()
        };
        self.call(args::exec(id, file.path(), &opts), call, timeout)
            .await
            .map(drop)
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool, timeout: Duration) -> Result<()> {
        self.call(args::kill(id, signal, all), Call::default(), timeout)
            .await
            .map(drop)
    }

    pub async fn delete(&self, id: &str, force: bool, timeout: Duration) -> Result<()> {
        self.call(args::delete(id, force), Call::default(), timeout)
            .await
            .map(drop)
    }

    pub async fn state(&self, id: &str, timeout: Duration) -> Result<State> {
        let out = self
            .call(args::simple("state", id), Call::default(), timeout)
            .await?;
        self.parse("state", &out)
    }

    pub async fn ps(&self, id: &str, timeout: Duration) -> Result<Vec<i32>> {
        let out = self.call(args::ps(id), Call::default(), timeout).await?;
        // runc prints `null` for a container with no process.
        Ok(self
            .parse::<Option<Vec<i32>>>("ps", &out)?
            .unwrap_or_default())
    }

    pub async fn pause(&self, id: &str, timeout: Duration) -> Result<()> {
        self.call(args::simple("pause", id), Call::default(), timeout)
            .await
            .map(drop)
    }

    pub async fn resume(&self, id: &str, timeout: Duration) -> Result<()> {
        self.call(args::simple("resume", id), Call::default(), timeout)
            .await
            .map(drop)
    }

    /// `runc update --resources -`, the resources as JSON on runc's stdin.
    pub async fn update(
        &self,
        id: &str,
        resources: &oci_spec::runtime::LinuxResources,
        timeout: Duration,
    ) -> Result<()> {
        let json = serde_json::to_vec(resources).map_err(|e| Error::Parse {
            command: "runc update".into(),
            message: e.to_string(),
        })?;
        self.call(
            args::update(id),
            Call {
                stdin: Some(json),
                ..Default::default()
            },
            timeout,
        )
        .await
        .map(drop)
    }

    pub async fn checkpoint(
        &self,
        id: &str,
        opts: &CheckpointOpts,
        timeout: Duration,
    ) -> Result<()> {
        self.call(args::checkpoint(id, opts), Call::default(), timeout)
            .await
            .map(drop)
    }

    pub async fn restore(
        &self,
        id: &str,
        bundle: &Path,
        mut opts: RestoreOpts,
        timeout: Duration,
    ) -> Result<()> {
        let stdio = std::mem::take(&mut opts.stdio);
        let call = Call {
            process_stdio: Some(stdio),
            ..Default::default()
        };
        self.call(args::restore(id, bundle, &opts), call, timeout)
            .await
            .map(drop)
    }

    /// `runc events --stats`: one JSON object.
    pub async fn stats(&self, id: &str, timeout: Duration) -> Result<serde_json::Value> {
        let out = self.call(args::stats(id), Call::default(), timeout).await?;
        self.parse("events --stats", &out)
    }

    /// `runc features` (raw JSON, for containerd's RuntimeInfo).
    pub async fn features(&self, timeout: Duration) -> Result<Vec<u8>> {
        self.call(vec!["features".into()], Call::default(), timeout)
            .await
    }

    pub async fn version(&self, timeout: Duration) -> Result<String> {
        let out = self
            .call(vec!["--version".into()], Call::default(), timeout)
            .await?;
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, what: &str, out: &[u8]) -> Result<T> {
        serde_json::from_slice(out).map_err(|e| Error::Parse {
            command: format!("{} {what}", self.binary().display()),
            message: format!("unexpected output: {e}"),
        })
    }

    /// Spawns runc, waits for it through the reaper with a deadline, returns its stdout.
    async fn call(&self, args: Vec<String>, call: Call, timeout: Duration) -> Result<Vec<u8>> {
        let binary = self.binary();
        let command = format!(
            "{} {}",
            binary.display(),
            args.first().map(String::as_str).unwrap_or("")
        );
        let spawn_err = |source: std::io::Error| Error::Spawn {
            command: command.clone(),
            source,
        };
        let log_offset = self
            .config
            .log
            .as_ref()
            .and_then(|l| std::fs::metadata(l).ok())
            .map(|m| m.len())
            .unwrap_or(0);

        // Looked up here, as Go's exec.Command does, not by execvp in the child: a name found
        // nowhere is then reported with certainty, even when the reaper collects the child.
        let program = monitor::look_path(&binary).map_err(|source| Error::Exec {
            command: command.clone(),
            binary: binary.clone(),
            source,
        })?;
        let mut cmd = Command::new(&program);
        cmd.args(args::global(&self.config))
            .args(&args)
            .process_group(0);
        // runc dies with the shim (as go-runc's Pdeathsig does): a runc outliving a killed shim
        // could create a container after containerd's cleanup ran, owned by nobody. The signal
        // follows the spawning *thread*; the shim spawns runc from its runtime's one thread
        // (the main thread), which lives as long as the shim.
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (mut out_r, mut err_r) = (None, None);
        match call.process_stdio {
            Some(stdio) => {
                cmd.stdin(stdio.stdin.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stdout(stdio.stdout.map(Stdio::from).unwrap_or_else(Stdio::null));
                cmd.stderr(stdio.stderr.map(Stdio::from).unwrap_or_else(Stdio::null));
            }
            None => {
                let (r, w) = pipe().map_err(spawn_err)?;
                cmd.stdout(Stdio::from(w));
                out_r = Some(r);
                let (r, w) = pipe().map_err(spawn_err)?;
                cmd.stderr(Stdio::from(w));
                err_r = Some(r);
                cmd.stdin(Stdio::null());
            }
        }
        let mut stdin_w = None;
        if call.stdin.is_some() {
            let (r, w) = pipe().map_err(spawn_err)?;
            cmd.stdin(Stdio::from(r));
            stdin_w = Some(w);
        }

        // Subscribe before spawning: runc may exit before spawn() even returns.
        let mut exits = self.monitor.subscribe();
        let child = monitor::spawn_reaped(&mut cmd).map_err(|source| Error::Exec {
            command: command.clone(),
            binary: binary.clone(),
            source,
        })?;
        let pid = child.id() as i32;
        // Dropping a std Child neither waits nor kills; the reaper reaps it.
        drop(child);
        drop(cmd); // closes our copies of the fds handed to runc
        let guard = GroupKiller(Some(pid));
        let _registered = inflight::register(&command, pid, timeout);

        let feed = async {
            if let (Some(w), Some(data)) = (stdin_w, call.stdin) {
                if let Ok(mut tx) = tokio::net::unix::pipe::Sender::from_owned_fd(w) {
                    let _ = tokio::io::AsyncWriteExt::write_all(&mut tx, &data).await;
                }
            }
        };
        let wait = async {
            while let Some(e) = exits.recv().await {
                if e.pid == pid {
                    return (e.status, e.signal);
                }
            }
            (-1, None)
        };
        let work = async { tokio::join!(wait, read_limited(out_r), read_limited(err_r), feed) };
        match tokio::time::timeout(timeout, work).await {
            Ok(((status, signal), stdout, stderr, ())) => {
                std::mem::forget(guard);
                if status == 0 {
                    return Ok(stdout);
                }
                let message = self
                    .config
                    .log
                    .as_ref()
                    .and_then(|l| log::last_error(l, log_offset))
                    .unwrap_or_else(|| String::from_utf8_lossy(&stderr).trim().to_string());
                let message = match signal {
                    // A crashed (or killed) runc: say so, runc had no chance to log.
                    Some(sig) if message.is_empty() => format!(
                        "{} was killed by signal {}",
                        self.config.binary.display(),
                        nix::sys::signal::Signal::try_from(sig)
                            .map(|s| s.as_str().to_string())
                            .unwrap_or_else(|_| sig.to_string())
                    ),
                    _ if message.is_empty() => format!("exit status {status}"),
                    _ => message,
                };
                Err(Error::Failed {
                    command,
                    status,
                    message,
                })
            }
            Err(_) => {
                // Bug class 1: kill runc's whole group and wait (bounded) until the reaper has
                // reaped runc, so no zombie is left behind.
                drop(guard);
                let _ = tokio::time::timeout(REAP_GRACE, async {
                    while let Some(e) = exits.recv().await {
                        if e.pid == pid {
                            break;
                        }
                    }
                })
                .await;
                Err(Error::Timeout {
                    command,
                    after: timeout,
                })
            }
        }
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(Into::into)
}

/// Reads one of runc's own output pipes to EOF, keeping at most `OUTPUT_LIMIT` bytes (and
/// discarding the rest, so runc never blocks on a full pipe).
async fn read_limited(fd: Option<OwnedFd>) -> Vec<u8> {
    let Some(fd) = fd else { return Vec::new() };
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut rx).take(OUTPUT_LIMIT).read_to_end(&mut kept).await;
    let _ = tokio::io::copy(&mut rx, &mut tokio::io::sink()).await;
    kept
}

/// Kills runc's process group unless disarmed (`mem::forget`) once runc has exited: a call
/// cancelled mid-way leaves no runc behind.
struct GroupKiller(Option<i32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::SIGKILL,
            );
        }
    }
}
