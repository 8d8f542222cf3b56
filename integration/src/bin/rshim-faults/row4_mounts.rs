//! Row 4: mounts across mount namespaces, in a containerd of its own.

use std::time::Duration;

use rshim_integration::containerd::{Options, PrivateContainerd, NAMESPACE};
use rshim_integration::{ctr, Runtime};

use crate::helpers::Cell;
use crate::helpers::{run_sleeper, wait_gone};
use crate::row::{both, Env, FaultRow, Outcome, Setup};

pub struct Mounts;

impl FaultRow for Mounts {
    fn number(&self) -> u8 {
        4
    }

    fn title(&self) -> &'static str {
        "mounts across mount namespaces"
    }

    fn setup(&self) -> Setup {
        Setup::Own
    }

    fn measure(&self, _env: &mut Env) -> Outcome {
        both(mount_namespaces)
    }
}

/// Class 4 at the shim boundary: containerd under `MountFlags=slave` semantics, a shim killed,
/// containerd gone, and the `delete` action run from a new mount namespace (as a restarted
/// containerd would). Afterwards the rootfs must be mounted nowhere.
fn mount_namespaces(rt: Runtime) -> anyhow::Result<Cell> {
    let mut c = PrivateContainerd::start(Options {
        slave_mount_namespace: true,
        ..Default::default()
    })?;
    c.import_busybox()?;
    let (victim, other) = (
        format!("mnt-{}-a", rt.name()),
        format!("mnt-{}-b", rt.name()),
    );
    for id in [&victim, &other] {
        run_sleeper(&c, rt, id, &[])?;
    }
    let shim = c
        .shim_of(&victim)
        .ok_or_else(|| anyhow::anyhow!("no shim"))?;
    let bundle = c.bundle(&victim);
    let rootfs = bundle.join("rootfs");
    let mounted_before = holders(&rootfs).len();
    c.stop_daemon();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL);
    wait_gone(shim, Duration::from_secs(10));
    let binary = match rt {
        Runtime::Go => "/usr/bin/containerd-shim-runc-v2".to_string(),
        Runtime::Rshim => rshim_integration::containerd::rshim_bin_dir()
            .join("containerd-shim-rshim-v2")
            .to_string_lossy()
            .into_owned(),
    };
    let bundle_s = bundle.to_string_lossy().into_owned();
    let script = format!(
        "cd {bundle_s} && exec {binary} -namespace {NAMESPACE} -address {} -publish-binary /usr/bin/containerd -id {victim} -bundle {bundle_s} delete",
        c.address
    );
    let args: Vec<String> = ["-m", "--propagation", "slave", "sh", "-c", &script]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = ctr::run("unshare", &args, None, Duration::from_secs(60));
    let left = holders(&rootfs);
    let pass = out.code == Some(0) && mounted_before > 0 && left.is_empty();
    let text = format!(
        "delete exit {:?}; rootfs mounted in {} namespace(s) before, {} after{}",
        out.code,
        mounted_before,
        left.len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" (held by pids {left:?})")
        }
    );
    drop(c);
    Ok((text, pass))
}

/// One pid per mount namespace that lists `path` as a mount point.
fn holders(path: &std::path::Path) -> Vec<i32> {
    let target = path.to_string_lossy().to_string();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !seen.insert(ns) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if info
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
        {
            out.push(pid);
        }
    }
    out
}
