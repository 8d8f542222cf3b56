//! The long-lived shim daemon: a child subreaper that serves the Task API until Shutdown (with
//! no container left) or SIGTERM.

// Unsafe here (denied elsewhere in the crate): the SIGPIPE disposition, a malloc parameter and the readiness pipe inherited as a raw fd.
#![allow(unsafe_code)]

use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use runc_wrapper::monitor::{ExitMonitor, Reaper};
use tokio::signal::unix::{signal, SignalKind};

use crate::container::Shared;
use crate::events::Publisher;
use crate::exits::ExitRouter;
use crate::flags::Flags;
use crate::logger::FifoLogger;
use crate::server;
use crate::service::TaskService;
use crate::start::READY_ENV;

/// How long shutdown waits for queued events to reach containerd.
const FLUSH_BOUND: Duration = Duration::from_secs(5);

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    FifoLogger::install(Path::new("log"), flags.debug);
    // Orphaned container processes (runc's grandchildren) are reparented to us, so we can
    // reap them and report their exits.
    nix::sys::prctl::set_child_subreaper(true)?;
    // A FIFO whose reader went away must give EPIPE, not kill the shim.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )?
    };
    // Allocations of 64 KiB and more (the copy buffers of each process's stdio) get pages of
    // their own, untouched until used and returned to the kernel when freed, instead of heap
    // chunks that stay resident once any earlier user touched them (a reused chunk is also
    // zeroed whole): with one runtime thread every allocation comes from the one main heap,
    // and a pod shim of 50 idle containers held 11.9 MiB RSS without this, 8.5 with it.
    // SAFETY: mallopt only sets a malloc parameter; no allocation is in flight (one thread).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024) };
    let listener = server::listener(&flags.socket)?;
    let ready = take_ready_fd();
    // One thread: a shim waits on runc, pipes and sockets, and never computes for long. Work
    // that can sleep in the kernel (mounts, unmounts) runs on threads of its own
    // (`blocking.rs`), `file://` output on tokio's blocking pool. A second worker bought no
    // latency (runc dominates every call) and cost a thread, its stack and a malloc arena.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(8)
        // Blocking work is rare in a shim: an idle shim keeps no thread for it beyond a
        // moment (tokio's default keeps each for 10 s).
        .thread_keep_alive(Duration::from_secs(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(flags, listener, ready));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Err(e) = &result {
        log::error!("shim exiting: {e:#}");
    }
    result
}

async fn serve(
    flags: &Flags,
    listener: std::os::unix::net::UnixListener,
    ready: Option<i32>,
) -> anyhow::Result<()> {
    let reaper: Arc<dyn ExitMonitor> = Reaper::start();
    let (exits, _router) = ExitRouter::start(reaper.as_ref());
    let ttrpc_address = std::env::var("TTRPC_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty());
    let (publisher, publisher_task) = Publisher::start(ttrpc_address, flags.namespace.clone());
    let svc = Arc::new(TaskService::new(Shared {
        namespace: flags.namespace.clone(),
        publisher: publisher.clone(),
        exits,
        monitor: reaper,
    }));
    let mut server = server::serve(listener, &svc).await?;
    signal_ready(ready);
    log::info!(
        "shim {} serving (namespace {}, pid {})",
        flags.id,
        flags.namespace,
        std::process::id()
    );

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigusr1 = signal(SignalKind::user_defined1())?;
    loop {
        tokio::select! {
            _ = svc.shutdown.notified() => { log::info!("shutdown requested"); break }
            _ = sigterm.recv() => { log::info!("SIGTERM"); break }
            _ = sigint.recv() => { log::info!("SIGINT"); break }
            _ = sigusr1.recv() => {
                for line in svc.describe() {
                    log::info!("dump: {line}");
                }
            }
        }
    }
    if !publisher.flush(FLUSH_BOUND).await {
        log::warn!("events not all forwarded within {FLUSH_BOUND:?} at shutdown");
    }
    publisher_task.abort();
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    remove_socket(flags);
    Ok(())
}

/// The pipe `start` waits on (fd 4), taken from the environment while the process is still
/// single-threaded: changing the environment later would race libc's getenv.
fn take_ready_fd() -> Option<i32> {
    let fd = std::env::var(READY_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok());
    std::env::remove_var(READY_ENV);
    fd
}

/// Tells `start` that we serve.
fn signal_ready(ready: Option<i32>) {
    let Some(fd) = ready else { return };
    // SAFETY: `start` passed us this pipe's write end; nothing else uses the fd.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    let _ = pipe.write_all(b"1");
}

fn remove_socket(flags: &Flags) {
    let path = if !flags.socket.is_empty() {
        flags
            .socket
            .strip_prefix("unix://")
            .unwrap_or(&flags.socket)
            .to_string()
    } else if let Ok(address) = std::fs::read_to_string("address") {
        crate::address::socket_path(address.trim()).to_string()
    } else {
        return;
    };
    if let Err(e) = std::fs::remove_file(&path) {
        log::debug!("remove socket {path}: {e}");
    }
}
