//! A private containerd: own root, state, sockets and config under a temp dir, rshim's
//! directory first on its PATH. Dropping it stops containerd and removes every task,
//! container, shim, mount and socket it made.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::ctr::{self, Output};
use crate::image;

pub const NAMESPACE: &str = "rshim-it";
pub const CTR_TIMEOUT: Duration = Duration::from_secs(60);

pub struct PrivateContainerd {
    pub dir: tempfile::TempDir,
    pub address: String,
    child: Option<Child>,
}

#[derive(Default)]
pub struct Options {
    /// Enable the CRI plugin (off by default: faster, fewer moving parts).
    pub cri: bool,
    /// Start containerd in a new mount namespace that is a slave of ours, as systemd's
    /// `MountFlags=slave` does (bug class 4).
    pub slave_mount_namespace: bool,
}

/// The directory holding `containerd-shim-rshim-v2`: `RSHIM_BIN_DIR`, else target/debug.
pub fn rshim_bin_dir() -> PathBuf {
    std::env::var("RSHIM_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::workspace_root().join("target").join("debug"))
}

/// The containerd config version: `RSHIM_CONTAINERD_CONFIG_VERSION`, else 3 for containerd 2.x
/// (`containerd --version` of the one on PATH, as in a Debian sid root) and 2 for 1.x.
pub fn config_version() -> u32 {
    if let Some(v) = std::env::var("RSHIM_CONTAINERD_CONFIG_VERSION")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return v;
    }
    let out = Command::new("containerd")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    // "containerd github.com/containerd/containerd/v2 2.1.9~ds1 ..."
    let major = out.split_whitespace().nth(2).and_then(|v| {
        v.trim_start_matches('v')
            .split('.')
            .next()?
            .parse::<u32>()
            .ok()
    });
    if major.is_some_and(|m| m >= 2) {
        3
    } else {
        2
    }
}

/// The bridge pods are attached to (`CNI_BRIDGE` in `CNI_SUBNET`), deleted with the containerd.
pub const CNI_BRIDGE: &str = "rshim-cni0";
pub const CNI_SUBNET: &str = "10.213.7.0/24";
/// Debian's containernetworking-plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// The CRI plugin: the local pause image as sandbox image, Debian's CNI plugins with a config
/// under the temp dir (`cni_network`), and the two runtime handlers `runc` (the Go shim) and
/// `rshim`. Config version 2 (containerd 1.x) keeps all of it under `io.containerd.grpc.v1.cri`;
/// version 3 (containerd 2.x) splits it into the runtime plugin (handlers, CNI, OOM score,
/// AppArmor) and the images plugin (the pinned sandbox image).
fn cri_config(d: &Path, version: u32) -> String {
    let pause = image::PAUSE_IMAGE;
    let (runtime, sandbox_image, images) = if version == 2 {
        let cri = "[plugins.\"io.containerd.grpc.v1.cri\"";
        (
            cri,
            format!("  sandbox_image = \"{pause}\"\n"),
            String::new(),
        )
    } else {
        (
            "[plugins.\"io.containerd.cri.v1.runtime\"",
            String::new(),
            format!("[plugins.\"io.containerd.cri.v1.images\".pinned_images]\n  sandbox = \"{pause}\"\n"),
        )
    };
    format!(
        "{images}{runtime}]\n{sandbox_image}  restrict_oom_score_adj = true\n  disable_apparmor = true\n\
         {runtime}.cni]\n  bin_dir = \"{CNI_BIN_DIR}\"\n  conf_dir = \"{d}/cni/conf\"\n\
         {runtime}.containerd]\n  default_runtime_name = \"runc\"\n\
         {runtime}.containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n\
         {runtime}.containerd.runtimes.rshim]\n  runtime_type = \"io.containerd.rshim.v2\"\n\
         {options}",
        d = d.display(),
        options = runtime_options(runtime),
    )
}

/// `RSHIM_IT_SYSTEMD_CGROUP=1`: both CRI handlers run runc with systemd's cgroup driver
/// (`SystemdCgroup = true`, what nodes with systemd as PID 1 use), pods get `CRI_SLICE` as cgroup
/// parent; scripts/vm.sh sets it in its cgroup v2 guest.
pub fn systemd_cgroup() -> bool {
    std::env::var("RSHIM_IT_SYSTEMD_CGROUP").is_ok_and(|v| v == "1")
}

/// `RSHIM_IT_SHIM_CGROUP`: the runtime option `ShimCgroup` of both CRI handlers (a cgroup path
/// that must exist), so each shim moves itself there.
pub fn shim_cgroup() -> Option<String> {
    std::env::var("RSHIM_IT_SHIM_CGROUP")
        .ok()
        .filter(|v| !v.is_empty())
}

/// The pods' cgroup parent with the systemd driver: containers land in
/// `/CRI_SLICE/cri-containerd-<id>.scope`.
pub const CRI_SLICE: &str = "rshimpods.slice";

/// Whether the host runs the unified cgroup v2 hierarchy.
pub fn cgroup2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

fn runtime_options(cri: &str) -> String {
    let mut options = String::new();
    if systemd_cgroup() {
        options.push_str("  SystemdCgroup = true\n");
    }
    if let Some(path) = shim_cgroup() {
        options.push_str(&format!("  ShimCgroup = \"{path}\"\n"));
    }
    if options.is_empty() {
        return options;
    }
    ["runc", "rshim"]
        .iter()
        .map(|h| format!("{cri}.containerd.runtimes.{h}.options]\n{options}"))
        .collect()
}

/// A pod network: a bridge with host-local addresses (kept under the temp dir) and loopback.
fn cni_network(d: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "rshim-pods",
        "plugins": [
            {
                "type": "bridge",
                "bridge": CNI_BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": CNI_SUBNET}]],
                    "dataDir": d.join("cni/ipam"),
                },
            },
            {"type": "loopback"},
        ],
    })
    .to_string()
}

impl PrivateContainerd {
    pub fn start(opts: Options) -> anyhow::Result<PrivateContainerd> {
        let bin_dir = rshim_bin_dir();
        if !bin_dir.join("containerd-shim-rshim-v2").exists() {
            bail!(
                "{} has no containerd-shim-rshim-v2: build it first (cargo build --bins)",
                bin_dir.display()
            );
        }
        // Short paths: unix socket paths are limited to 108 bytes.
        let dir = tempfile::Builder::new().prefix("rsh-").tempdir_in("/tmp")?;
        let d = dir.path();
        let address = d.join("c.sock").to_string_lossy().into_owned();
        let version = config_version();
        let disabled = match (opts.cri, version) {
            (true, _) => "[]",
            (false, 2) => r#"["io.containerd.grpc.v1.cri"]"#,
            // containerd 2.x split CRI into the runtime and image services and the gRPC one.
            (false, _) => {
                r#"["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images"]"#
            }
        };
        let config =
            format!(
            "version = {version}\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = {disabled}\n\
             [grpc]\n  address = \"{address}\"\n[ttrpc]\n  address = \"{address}.ttrpc\"\n\
             [debug]\n  level = \"debug\"\n{cri}",
            root = d.join("root").display(),
            state = d.join("state").display(),
            cri = if opts.cri { cri_config(d, version) } else { String::new() },
        );
        std::fs::write(d.join("config.toml"), config)?;
        if opts.cri {
            std::fs::create_dir_all(d.join("cni/conf"))?;
            std::fs::write(d.join("cni/conf/10-rshim.conflist"), cni_network(d))?;
        }
        let child = spawn(d, &bin_dir, opts.slave_mount_namespace)?;
        let c = PrivateContainerd {
            dir,
            address,
            child: Some(child),
        };
        c.wait_ready()?;
        Ok(c)
    }

    /// Restarts containerd (same root, state and sockets); its shims live on meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop_daemon();
        self.child = Some(spawn(self.dir.path(), &rshim_bin_dir(), false)?);
        self.wait_ready()
    }

    fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctr(&["version"]).code == Some(0) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not answer within 20s; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The full `ctr` argument list (address, namespace, then `args`).
    pub fn args(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "--address".to_string(),
            self.address.clone(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// `ctr` against this containerd, bounded by `CTR_TIMEOUT`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        ctr::run("ctr", &self.args(args), None, CTR_TIMEOUT)
    }

    pub fn ctr_with(&self, args: &[&str], stdin: Option<&[u8]>, timeout: Duration) -> Output {
        ctr::run("ctr", &self.args(args), stdin, timeout)
    }

    /// `ctr` under a pseudo-terminal (`script`), for `-t` runs.
    pub fn ctr_tty(&self, args: &[&str], timeout: Duration) -> Output {
        let line = self
            .args(args)
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ");
        ctr::run(
            "script",
            &["-qec".into(), format!("ctr {line}"), "/dev/null".into()],
            None,
            timeout,
        )
    }

    /// Builds (once per process) and imports the busybox image.
    pub fn import_busybox(&self) -> anyhow::Result<()> {
        let tar = self.dir.path().join("busybox.tar");
        image::build(&tar)?;
        let out = self.ctr(&["images", "import", tar.to_str().unwrap_or_default()]);
        if out.code != Some(0) {
            bail!("ctr images import failed: {}{}", out.stdout, out.stderr);
        }
        Ok(())
    }

    /// The CRI socket (the same gRPC socket as ctr's).
    pub fn cri_endpoint(&self) -> &str {
        &self.address
    }

    /// Builds and imports the busybox and pause images into CRI's namespace (`k8s.io`).
    pub fn import_cri_images(&self) -> anyhow::Result<()> {
        for (name, build) in [
            (
                "busybox.tar",
                image::build as fn(&Path) -> anyhow::Result<()>,
            ),
            ("pause.tar", image::build_pause),
        ] {
            let tar = self.dir.path().join(name);
            build(&tar)?;
            let args: Vec<String> = [
                "--address",
                &self.address,
                "-n",
                "k8s.io",
                "images",
                "import",
                tar.to_str().unwrap_or_default(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let out = ctr::run("ctr", &args, None, CTR_TIMEOUT);
            if out.code != Some(0) {
                bail!(
                    "ctr -n k8s.io images import {name}: {}{}",
                    out.stdout,
                    out.stderr
                );
            }
        }
        Ok(())
    }

    /// Kills and removes every task and container (best effort, bounded).
    pub fn remove_all(&self) {
        let list = self.ctr(&["containers", "list", "-q"]);
        for id in list.stdout.lines().filter(|l| !l.is_empty()) {
            let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["task", "delete", "-f", id]);
            let _ = self.ctr(&["containers", "delete", id]);
        }
    }

    /// Stops containerd alone (SIGTERM, then SIGKILL after 10 s): its shims live on.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The bundle of container `id`.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("state/io.containerd.runtime.v2.task")
            .join(NAMESPACE)
            .join(id)
    }

    /// The live shim serving container `id`: the daemon, not its short-lived `start` or
    /// `delete` action, which carry the same `-id` (killing the `start` action instead of the
    /// daemon made row 5 of the faults kill nothing).
    pub fn shim_of(&self, id: &str) -> Option<i32> {
        shims_of(&self.address).into_iter().find(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let action = args.iter().any(|a| *a == b"start" || *a == b"delete");
            !action
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-id" && w[1] == id.as_bytes())
        })
    }

    fn stop(&mut self) {
        if self.child.is_some() {
            self.remove_all();
        }
        self.stop_daemon();
        // RSHIM_CONTAINERD_LOG_DIR (scripts/matrix.sh: how containerd started each shim) or
        // RSHIM_IT_LOG_DIR (scripts/vm.sh): keep containerd's log, with the shims' lines.
        let keep = std::env::var("RSHIM_CONTAINERD_LOG_DIR")
            .or_else(|_| std::env::var("RSHIM_IT_LOG_DIR"));
        if let Ok(dir) = keep {
            let name = self
                .dir
                .path()
                .file_name()
                .unwrap_or_default()
                .to_string_lossy();
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::copy(
                self.dir.path().join("containerd.log"),
                Path::new(&dir).join(format!("containerd-{name}.log")),
            );
        }
        kill_shims_of(&self.address);
        delete_orphaned_containers(self.dir.path());
        unmount_under(self.dir.path());
        if self.dir.path().join("cni/conf").exists() {
            // The bridge the CNI plugin made on the host (absent if no pod ran).
            let _ = Command::new("ip")
                .args(["link", "delete", CNI_BRIDGE])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(d: &Path, bin_dir: &Path, slave_mount_namespace: bool) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("containerd.log"))?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = if slave_mount_namespace {
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "slave", "containerd"]);
        c
    } else {
        Command::new("containerd")
    };
    command
        .arg("--config")
        .arg(d.join("config.toml"))
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("start containerd (is it installed? scripts/install-deps.sh)")
}

/// Containers whose shim died with containerd gone keep running: remove those whose bundle is
/// ours with runc itself.
fn delete_orphaned_containers(dir: &Path) {
    let root = Path::new("/run/containerd/runc").join(NAMESPACE);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    let ours = dir.to_string_lossy().to_string();
    for e in entries.flatten() {
        let state = std::fs::read_to_string(e.path().join("state.json")).unwrap_or_default();
        if state.contains(&ours) {
            let id = e.file_name().to_string_lossy().to_string();
            let args = vec![
                "--root".to_string(),
                root.to_string_lossy().into(),
                "delete".into(),
                "--force".into(),
                id,
            ];
            let _ = ctr::run("runc", &args, None, Duration::from_secs(20));
        }
    }
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Shims started by this containerd carry `-address <sock>` on their command line.
pub fn shims_of(address: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
                .unwrap_or(true);
            !zombie
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == address.as_bytes())
        })
        .collect()
}

fn kill_shims_of(address: &str) {
    for pid in shims_of(address) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
}

/// Mount points under `dir` in our namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

fn unmount_under(dir: &Path) {
    let mut mounts = mounts_under(dir);
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mounts {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}
