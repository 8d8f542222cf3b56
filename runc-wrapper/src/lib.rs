//! Minimal runc wrapper (scratch).
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

pub mod console;
pub mod io;
pub mod monitor;

use monitor::{ExitMonitor, ExitSubscription};

#[derive(Clone, Debug, Default)]
pub struct RuncConfig { pub binary: PathBuf, pub root: Option<PathBuf>, pub systemd_cgroup: bool, pub debug: bool, pub log: Option<PathBuf> }

#[derive(Clone)]
pub struct Runc { config: RuncConfig, monitor: Arc<dyn ExitMonitor> }

pub struct CreateOpts { pub pid_file: Option<PathBuf>, pub console_socket: Option<PathBuf>, pub no_pivot: bool, pub no_new_keyring: bool, pub detach: bool, pub stdio: io::RuncStdio }
pub struct ExecOpts { pub pid_file: Option<PathBuf>, pub console_socket: Option<PathBuf>, pub detach: bool, pub stdio: io::RuncStdio }

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{command}: {message}")]
    Failed { command: String, status: i32, message: String },
    #[error("{command} timed out after {after:?}")]
    Timeout { command: String, after: Duration },
    #[error("{command}: cannot run: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("{0}")]
    Parse(String),
}
pub type Result<T> = std::result::Result<T, Error>;

struct Output { stdout: Vec<u8> }

/// How long a timed-out runc gets, after SIGKILL, to be reaped.
const REAP_GRACE: Duration = Duration::from_secs(5);

impl Runc {
    pub fn new(config: RuncConfig, monitor: Arc<dyn ExitMonitor>) -> Runc { Runc { config, monitor } }

    fn global_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if self.config.debug { a.push("--debug".into()); }
        if let Some(log) = &self.config.log { a.push("--log".into()); a.push(log.display().to_string()); a.push("--log-format".into()); a.push("json".into()); }
        if let Some(root) = &self.config.root { a.push("--root".into()); a.push(root.display().to_string()); }
        if self.config.systemd_cgroup { a.push("--systemd-cgroup".into()); }
        a
    }

    async fn run(&self, args: Vec<String>, stdio: io::RuncStdio, stdin_data: Option<Vec<u8>>, timeout: Duration) -> Result<Output> {
        let bin = if self.config.binary.as_os_str().is_empty() { PathBuf::from("runc") } else { self.config.binary.clone() };
        let command = format!("{} {}", bin.display(), args.first().cloned().unwrap_or_default());
        let mut full = self.global_args();
        full.extend(args);
        let log_offset = self.config.log.as_ref().and_then(|l| std::fs::metadata(l).ok()).map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&bin);
        cmd.args(&full).process_group(0);
        let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Spawn { command: command.clone(), source: e.into() })?;
        let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Spawn { command: command.clone(), source: e.into() })?;
        let mut stdin_w = None;
        match (stdio.stdin, stdin_data.is_some()) {
            (Some(fd), _) => { cmd.stdin(Stdio::from(fd)); }
            (None, true) => { let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap(); cmd.stdin(Stdio::from(r)); stdin_w = Some(w); }
            (None, false) => { cmd.stdin(Stdio::null()); }
        }
        // For commands that start a process, runc's stdio is the process's: an absent stream is
        // /dev/null, never our capture pipe (the container would inherit it and hold it open).
        let process_cmd = matches!(full_sub(&full), "create" | "exec" | "run" | "restore");
        let own_stdout = stdio.stdout.is_none() && !process_cmd;
        cmd.stdout(match stdio.stdout { Some(fd) => Stdio::from(fd), None if process_cmd => Stdio::null(), None => Stdio::from(out_w) });
        let own_stderr = stdio.stderr.is_none() && !process_cmd;
        cmd.stderr(match stdio.stderr { Some(fd) => Stdio::from(fd), None if process_cmd => Stdio::null(), None => Stdio::from(err_w) });
        let mut sub = self.monitor.subscribe();
        let child = cmd.spawn().map_err(|e| Error::Spawn { command: command.clone(), source: e })?;
        drop(cmd);
        let pid = child.id() as i32;
        std::mem::forget(child);
        if let Some(w) = stdin_w { let data = stdin_data.unwrap_or_default(); std::thread::spawn(move || { let mut f = std::fs::File::from(w); let _ = std::io::Write::write_all(&mut f, &data); }); }
        let read_all = |fd: OwnedFd, own: bool| async move {
            if !own { return Vec::new(); }
            let mut r = tokio::net::unix::pipe::Receiver::from_owned_fd(fd).unwrap();
            let mut buf = Vec::new();
            let _ = (&mut r).take(1 << 20).read_to_end(&mut buf).await;
            buf
        };
        // Dropped (the call cancelled) before runc exited: kill its process group.
        let guard = KillGuard(Some(pid));
        let result = {
            let wait = async {
                while let Some(e) = sub.recv().await {
                    if e.pid == pid {
                        return e.status;
                    }
                }
                -1
            };
            let work = async { tokio::join!(wait, read_all(out_r, own_stdout), read_all(err_r, own_stderr)) };
            tokio::time::timeout(timeout, work).await
        };
        match result {
            Ok((status, stdout, stderr)) => {
                std::mem::forget(guard);
                if status == 0 {
                    return Ok(Output { stdout });
                }
                let message = self
                    .config
                    .log
                    .as_ref()
                    .and_then(|l| last_error(l, log_offset))
                    .unwrap_or_else(|| String::from_utf8_lossy(&stderr).trim().to_string());
                Err(Error::Failed { command, status, message })
            }
            Err(_) => {
                // Bug class 1: the deadline passed. Kill runc's whole process group and wait
                // (bounded) until the reaper has reaped runc, so no zombie is left.
                drop(guard);
                let _ = tokio::time::timeout(REAP_GRACE, async {
                    while let Some(e) = sub.recv().await {
                        if e.pid == pid {
                            break;
                        }
                    }
                })
                .await;
                Err(Error::Timeout { command, after: timeout })
            }
        }
    }

    pub async fn create(&self, id: &str, bundle: &Path, opts: CreateOpts, timeout: Duration) -> Result<()> {
        let mut a: Vec<String> = vec!["create".into(), "--bundle".into(), bundle.display().to_string()];
        if let Some(p) = &opts.pid_file { a.push("--pid-file".into()); a.push(p.display().to_string()); }
        if let Some(p) = &opts.console_socket { a.push("--console-socket".into()); a.push(p.display().to_string()); }
        if opts.no_pivot { a.push("--no-pivot".into()); }
        if opts.no_new_keyring { a.push("--no-new-keyring".into()); }
        a.push(id.into());
        self.run(a, opts.stdio, None, timeout).await.map(|_| ())
    }
    pub async fn start(&self, id: &str, timeout: Duration) -> Result<()> { self.run(vec!["start".into(), id.into()], Default::default(), None, timeout).await.map(|_| ()) }
    pub async fn exec(&self, id: &str, process: &oci_spec::runtime::Process, opts: ExecOpts, timeout: Duration) -> Result<()> {
        let file = tempfile_path();
        std::fs::write(&file, serde_json::to_vec(process).map_err(|e| Error::Parse(e.to_string()))?).map_err(|e| Error::Spawn { command: "runc exec".into(), source: e })?;
        let mut a: Vec<String> = vec!["exec".into(), "--process".into(), file.display().to_string()];
        if opts.detach { a.push("--detach".into()); }
        if let Some(p) = &opts.pid_file { a.push("--pid-file".into()); a.push(p.display().to_string()); }
        if let Some(p) = &opts.console_socket { a.push("--console-socket".into()); a.push(p.display().to_string()); }
        a.push(id.into());
        let r = self.run(a, opts.stdio, None, timeout).await.map(|_| ());
        let _ = std::fs::remove_file(&file);
        r
    }
    pub async fn kill(&self, id: &str, signal: u32, all: bool, timeout: Duration) -> Result<()> {
        let mut a: Vec<String> = vec!["kill".into()];
        if all { a.push("--all".into()); }
        a.push(id.into()); a.push(signal.to_string());
        self.run(a, Default::default(), None, timeout).await.map(|_| ())
    }
    pub async fn delete(&self, id: &str, force: bool, timeout: Duration) -> Result<()> {
        let mut a: Vec<String> = vec!["delete".into()];
        if force { a.push("--force".into()); }
        a.push(id.into());
        self.run(a, Default::default(), None, timeout).await.map(|_| ())
    }
    pub async fn ps(&self, id: &str, timeout: Duration) -> Result<Vec<i32>> {
        let out = self.run(vec!["ps".into(), "--format".into(), "json".into(), id.into()], Default::default(), None, timeout).await?;
        serde_json::from_slice::<Option<Vec<i32>>>(&out.stdout).map(|v| v.unwrap_or_default()).map_err(|e| Error::Parse(format!("runc ps: {e}")))
    }
    pub async fn pause(&self, id: &str, timeout: Duration) -> Result<()> { self.run(vec!["pause".into(), id.into()], Default::default(), None, timeout).await.map(|_| ()) }
    pub async fn resume(&self, id: &str, timeout: Duration) -> Result<()> { self.run(vec!["resume".into(), id.into()], Default::default(), None, timeout).await.map(|_| ()) }
    pub async fn update(&self, id: &str, resources: &oci_spec::runtime::LinuxResources, timeout: Duration) -> Result<()> {
        let data = serde_json::to_vec(resources).map_err(|e| Error::Parse(e.to_string()))?;
        self.run(vec!["update".into(), "--resources".into(), "-".into(), id.into()], Default::default(), Some(data), timeout).await.map(|_| ())
    }
}

fn full_sub(args: &[String]) -> &str {
    const SUBS: &[&str] = &["create", "exec", "run", "restore", "start", "kill", "delete", "ps", "pause", "resume", "update", "state"];
    args.iter().map(String::as_str).find(|a| SUBS.contains(a)).unwrap_or("")
}

fn tempfile_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!("runc-process-{}-{}.json", std::process::id(), N.fetch_add(1, Ordering::Relaxed)))
}

fn last_error(log: &Path, offset: u64) -> Option<String> {
    let data = std::fs::read(log).ok()?;
    let tail = data.get(offset as usize..)?;
    String::from_utf8_lossy(tail).lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).rfind(|v| v["level"] == "error").and_then(|v| v["msg"].as_str().map(String::from))
}

struct KillGuard(Option<i32>);
impl Drop for KillGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0 { let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL); }
    }
}
#[allow(dead_code)]
fn _unused(_: &ExitSubscription, f: &OwnedFd) -> i32 { f.as_raw_fd() }
