//! The `delete` action: containerd runs it when a shim died, to clean up after it. It removes
//! the runc container (with the runtime options saved in the bundle), unmounts the rootfs in
//! whichever mount namespace it lives (bug class 4), and prints a `DeleteResponse`.

use std::path::Path;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use runc_wrapper::monitor::{ExitMonitor, Reaper};
use runc_wrapper::{Runc, RuncConfig};

use crate::events::timestamp;
use crate::flags::Flags;
use crate::options::RuncOptions;
use crate::rootfs;

const RUNC_DELETE_TIMEOUT: Duration = Duration::from_secs(30);

pub fn run(flags: &Flags) -> anyhow::Result<Vec<u8>> {
    let cwd = std::env::current_dir()?;
    // containerd runs `delete` from the bundle of the container (or `-bundle`).
    let bundle = if flags.bundle.is_empty() {
        cwd.parent().unwrap_or(&cwd).join(&flags.id)
    } else {
        flags.bundle.clone().into()
    };
    let options = RuncOptions::load(&bundle).unwrap_or_default();
    runc_delete(flags, &bundle, &options)?;
    if let Err(e) = rootfs::cleanup(&bundle) {
        log::warn!("{e}");
    }
    remove_dead_socket(&bundle);
    let pid: u32 = std::fs::read_to_string(bundle.join("init.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_default();
    let response = DeleteResponse {
        pid,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    };
    Ok(response.write_to_bytes()?)
}

/// The dead shim's socket, unless a live shim (of the same pod) still answers on it.
fn remove_dead_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = crate::address::socket_path(address.trim());
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

fn runc_delete(flags: &Flags, bundle: &Path, options: &RuncOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let monitor: std::sync::Arc<dyn ExitMonitor> = Reaper::start();
        let runc = Runc::new(
            RuncConfig {
                binary: options.binary(),
                root: Some(options.runc_root(&flags.namespace)),
                systemd_cgroup: options.systemd_cgroup,
                debug: false,
                log: Some(bundle.join("log.json")),
            },
            monitor,
        );
        if let Err(e) = runc.delete(&flags.id, true, RUNC_DELETE_TIMEOUT).await {
            log::warn!("failed to remove runc container {}: {e}", flags.id);
        }
    });
    Ok(())
}
