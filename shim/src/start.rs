//! The `start` action: containerd runs the binary with the bundle as working directory; it
//! launches the long-lived daemon (or finds the live shim of the same group) and prints the
//! address containerd should connect to.
//!
//! Two start protocols, told apart by what containerd writes on stdin:
//! - containerd 1.6 to 2.2: the runtime options as an `Any` (or nothing); the answer is the
//!   plain address, which every one of them reads as a version-2 shim (`containerd.task.v2`).
//!   Only a caller announcing `MAX_SHIM_VERSION` 3 or more gets the JSON form with version 3.
//! - containerd 2.3 and later: a binary `BootstrapParams` naming this instance and namespace,
//!   with the options as an extension and an optional socket directory; the answer is a binary
//!   `BootstrapResult` (version 3, served as `containerd.task.v3`).

// Unsafe here (denied elsewhere in the crate): handing the listening socket and the readiness pipe to the daemon as raw fds across exec.
#![allow(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, LogLevel};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::address::{self, socket_path};
use crate::flags::Flags;
use crate::options::RuncOptions;

/// The daemon gets its listening socket as fd 3 (containerd's convention) and a pipe on fd 4 on
/// which it writes one byte once it serves.
pub const LISTENER_FD: i32 = 3;
pub const READY_FD: i32 = 4;
pub const READY_ENV: &str = "RSHIM_READY_FD";
/// How long `start` waits for the daemon to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest stdin message read (containerd's own bound).
const MAX_STDIN_SIZE: u64 = 10 << 20;
/// The link in the bundle naming the socket directory of the bootstrap protocol.
const SOCKET_DIR_LINK: &str = "s";

/// Runs the `start` action; returns what goes to stdout.
pub fn run(flags: &Flags) -> anyhow::Result<Vec<u8>> {
    let bundle = std::env::current_dir().context("working directory (the bundle)")?;
    let input = StartInput::parse(&read_stdin()?, flags);
    let socket_dir = input
        .socket_dir()
        .unwrap_or(address::SOCKET_DIR)
        .to_string();
    if input.bootstrap.is_some() && socket_dir != address::SOCKET_DIR {
        // The daemon (and `delete`) find a socket directory of their own through this link.
        let link = bundle.join(SOCKET_DIR_LINK);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&socket_dir, &link).context("link the socket directory")?;
    }
    let group = address::group_id(&bundle, &flags.id);
    let address = address::socket_address(&socket_dir, &flags.address, &flags.namespace, &group);
    let path = socket_path(&address).to_string();

    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            // A live shim of the same group (pod) serves this container too.
            if UnixStream::connect(&path).is_ok() {
                write_address_file(&bundle, &address)?;
                return input.response(&address);
            }
            // A stale socket left by a shim that died.
            std::fs::remove_file(&path).with_context(|| format!("remove stale socket {path}"))?;
            bind(&path).with_context(|| format!("create shim socket {path}"))?
        }
        Err(e) => return Err(e).with_context(|| format!("create shim socket {path}")),
    };

    let result = spawn_daemon(flags, &bundle, &listener, &input);
    if result.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    result?;
    write_address_file(&bundle, &address)?;
    input.response(&address)
}

/// What containerd wrote on `start`'s stdin.
pub struct StartInput {
    /// Set when containerd speaks the bootstrap protocol (2.3+).
    pub bootstrap: Option<BootstrapParams>,
    pub options: RuncOptions,
}

impl StartInput {
    /// Bootstrap parameters are recognised only when they name this instance and namespace:
    /// legacy options bytes can decode as a `BootstrapParams` too (containerd's own check).
    pub fn parse(data: &[u8], flags: &Flags) -> StartInput {
        if data.is_empty() {
            return StartInput {
                bootstrap: None,
                options: RuncOptions::default(),
            };
        }
        if let Ok(params) = BootstrapParams::parse_from_bytes(data) {
            if params.instance_id == flags.id && params.namespace == flags.namespace {
                // The first extension that is a runtime-options message we know.
                let options = params
                    .extensions
                    .iter()
                    .filter_map(|e| e.value.as_ref())
                    .find_map(|any| RuncOptions::from_any(Some(any)).ok())
                    .unwrap_or_default();
                return StartInput {
                    bootstrap: Some(params),
                    options,
                };
            }
        }
        // Unknown option types are containerd's business at Create; start only needs ShimCgroup.
        let options = Any::parse_from_bytes(data)
            .ok()
            .and_then(|any| RuncOptions::from_any(Some(&any)).ok())
            .unwrap_or_default();
        StartInput {
            bootstrap: None,
            options,
        }
    }

    fn socket_dir(&self) -> Option<&str> {
        self.bootstrap
            .as_ref()
            .and_then(|p| p.socket_dir.as_deref())
            .filter(|d| !d.is_empty())
    }

    fn debug(&self) -> bool {
        self.bootstrap
            .as_ref()
            .is_some_and(|p| p.log_level.value() <= LogLevel::LOG_LEVEL_DEBUG as i32)
    }

    fn ttrpc_address(&self) -> Option<&str> {
        self.bootstrap
            .as_ref()
            .map(|p| p.containerd_ttrpc_address.as_str())
            .filter(|a| !a.is_empty())
    }

    /// The answer on stdout, in the protocol containerd spoke.
    pub fn response(&self, address: &str) -> anyhow::Result<Vec<u8>> {
        if self.bootstrap.is_some() {
            let result = BootstrapResult {
                version: 3,
                address: address.to_string(),
                protocol: "ttrpc".to_string(),
                ..Default::default()
            };
            return result.write_to_bytes().context("encode BootstrapResult");
        }
        let max_version = std::env::var("MAX_SHIM_VERSION")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(2);
        if max_version >= 3 {
            let json = serde_json::json!({"version": 3, "address": address, "protocol": "ttrpc"});
            return Ok(json.to_string().into_bytes());
        }
        Ok(address.as_bytes().to_vec())
    }
}

fn bind(path: &str) -> std::io::Result<UnixListener> {
    let dir = Path::new(path).parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut data = Vec::new();
    std::io::stdin()
        .take(MAX_STDIN_SIZE)
        .read_to_end(&mut data)
        .context("read stdin")?;
    Ok(data)
}

fn spawn_daemon(
    flags: &Flags,
    bundle: &Path,
    listener: &UnixListener,
    input: &StartInput,
) -> anyhow::Result<()> {
    let options = &input.options;
    let exe = std::env::current_exe().context("locate own binary")?;
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    let mut cmd = Command::new(&exe);
    cmd.args([
        "-namespace",
        &flags.namespace,
        "-id",
        &flags.id,
        "-address",
        &flags.address,
    ]);
    if flags.debug || input.debug() {
        cmd.arg("-debug");
    }
    if let Some(ttrpc) = input.ttrpc_address() {
        cmd.env("TTRPC_ADDRESS", ttrpc);
    }
    // The daemon's stdio must not be ours: containerd reads our stdout to EOF.
    cmd.current_dir(bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env(READY_ENV, READY_FD.to_string())
        .process_group(0);
    let listener_fd = listener.as_raw_fd();
    let ready_fd = ready_w.as_raw_fd();
    // SAFETY: only async-signal-safe calls (fcntl, dup2) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move both out of the way first: a source may already sit on a target number,
            // where dup2 would be a no-op that leaves FD_CLOEXEC set.
            let listener = libc::fcntl(listener_fd, libc::F_DUPFD_CLOEXEC, 10);
            let ready = libc::fcntl(ready_fd, libc::F_DUPFD_CLOEXEC, 10);
            if listener < 0
                || ready < 0
                || libc::dup2(listener, LISTENER_FD) < 0
                || libc::dup2(ready, READY_FD) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {}", exe.display()))?;
    drop(ready_w);
    let pid = child.id() as i32;
    let kill = || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    };
    if let Err(e) = wait_ready(ready_r) {
        kill();
        return Err(e);
    }
    if let Err(e) = adjust_oom_score(pid) {
        kill();
        return Err(e);
    }
    if !options.shim_cgroup.is_empty() {
        if let Err(e) = crate::cgroup::add_process(&options.shim_cgroup, pid) {
            kill();
            return Err(e.into());
        }
    }
    Ok(())
}

fn wait_ready(ready: OwnedFd) -> anyhow::Result<()> {
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&ready),
        PollFlags::POLLIN,
    )];
    let n = poll(
        &mut fds,
        PollTimeout::try_from(READY_TIMEOUT.as_millis() as i32).unwrap_or(PollTimeout::MAX),
    )
    .context("wait for the shim daemon")?;
    if n == 0 {
        bail!("shim daemon did not start serving within {READY_TIMEOUT:?}");
    }
    let mut byte = [0u8; 1];
    let mut file = std::fs::File::from(ready);
    match file.read(&mut byte) {
        Ok(1) => Ok(()),
        _ => bail!("shim daemon exited before serving (see the shim log)"),
    }
}

/// The shim gets containerd's OOM score + 1, so that under memory pressure the kernel kills a
/// shim before containerd (containerd's `AdjustOOMScore`).
fn adjust_oom_score(pid: i32) -> anyhow::Result<()> {
    let parent = nix::unistd::getppid();
    let score: i32 = std::fs::read_to_string(format!("/proc/{parent}/oom_score_adj"))
        .context("read containerd's OOM score")?
        .trim()
        .parse()
        .context("parse containerd's OOM score")?;
    let shim_score = (score + 1).min(1000);
    std::fs::write(format!("/proc/{pid}/oom_score_adj"), shim_score.to_string())
        .context("set the shim's OOM score")
}

fn write_address_file(bundle: &Path, address: &str) -> anyhow::Result<()> {
    let tmp = bundle.join(".address");
    let mut f = std::fs::File::create(&tmp).context("write address file")?;
    f.write_all(address.as_bytes())
        .context("write address file")?;
    std::fs::rename(&tmp, bundle.join("address")).context("write address file")
}
