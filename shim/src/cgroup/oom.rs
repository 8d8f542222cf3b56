//! OOM-kill events of one container, watched from Create: on cgroup v1 an eventfd registered on
//! `memory.oom_control`, on cgroup v2 inotify on `memory.events`. Both only wake the watcher;
//! the kernel's `oom_kill` counter decides whether a new OOM kill happened, so the watcher and
//! the exit path (which checks once more before publishing a `/tasks/exit`) never report one
//! kill twice, and an OOM kill is always published before the exit it caused.

// Unsafe here (denied elsewhere in the crate): registering the eventfd and inotify fds it owns with tokio (AsyncFd::register).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim_protos::events::task::TaskOOM;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use super::files::flat_keyed;
use super::paths::Cgroup;
use crate::error::{Error, Result};
use crate::events::Publisher;

/// The OOM state of one container. Dropping it stops the watcher.
pub struct OomWatch {
    state: Arc<OomState>,
    watcher: JoinHandle<()>,
}

struct OomState {
    container_id: String,
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    counter_file: PathBuf,
    /// Kills already published; the lock also orders the watcher against the exit path.
    published: Mutex<u64>,
    publisher: Publisher,
}

impl OomWatch {
    /// Starts watching `cgroup` for OOM kills of container `id`.
    pub fn start(id: &str, cgroup: &Cgroup, publisher: Publisher) -> Result<OomWatch> {
        let memory = cgroup
            .dir("memory")
            .ok_or_else(|| Error::NotFound("container has no memory cgroup".into()))?
            .to_path_buf();
        let (counter_file, wakeups) = match cgroup {
            Cgroup::V1(_) => {
                let file = memory.join("memory.oom_control");
                (file.clone(), Wakeups::eventfd(&memory, &file)?)
            }
            Cgroup::V2(_) => {
                let file = memory.join("memory.events");
                (file.clone(), Wakeups::inotify(&file)?)
            }
        };
        let state = Arc::new(OomState {
            container_id: id.to_string(),
            published: Mutex::new(read_oom_kills(&counter_file).unwrap_or(0)),
            counter_file,
            publisher,
        });
        let watcher = tokio::spawn(watch(state.clone(), cgroup.clone(), wakeups));
        Ok(OomWatch { state, watcher })
    }

    /// Publishes `/tasks/oom` if the container had an OOM kill not yet reported. Called before
    /// each `/tasks/exit` of the container.
    pub fn check(&self) {
        self.state.check();
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl OomState {
    fn check(&self) {
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let Some(kills) = read_oom_kills(&self.counter_file) else {
            return;
        };
        if kills > *published {
            log::info!("container {} was OOM-killed", self.container_id);
            *published = kills;
            self.publisher.publish(TaskOOM {
                container_id: self.container_id.clone(),
                ..Default::default()
            });
        }
    }
}

/// The kernel's count of OOM kills in the cgroup (v1 `oom_control` and v2 `memory.events`
/// both name it `oom_kill`).
fn read_oom_kills(file: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let keyed = flat_keyed(&text);
    keyed.has("oom_kill").then(|| keyed.get("oom_kill"))
}

async fn watch(state: Arc<OomState>, cgroup: Cgroup, wakeups: Wakeups) {
    loop {
        if let Err(e) = wakeups.next().await {
            log::warn!("OOM watch of {} stopped: {e}", state.container_id);
            return;
        }
        // The kernel also signals a v1 eventfd when the cgroup is removed.
        if !cgroup.exists() {
            return;
        }
        state.check();
    }
}

/// What wakes the watcher.
enum Wakeups {
    /// Kept open with the eventfd: the registration refers to it.
    EventFd(AsyncFd<EventFd>, #[allow(dead_code)] std::fs::File),
    Inotify(AsyncFd<InotifyFd>),
}

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Wakeups {
    fn eventfd(memory: &std::path::Path, oom_control: &std::path::Path) -> Result<Wakeups> {
        let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::io("eventfd", e.into()))?;
        let control = std::fs::File::open(oom_control)
            .map_err(|e| Error::io(format!("open {}", oom_control.display()), e))?;
        let registration = format!("{} {}", efd.as_raw_fd(), control.as_raw_fd());
        let event_control = memory.join("cgroup.event_control");
        std::fs::write(&event_control, registration)
            .map_err(|e| Error::io(format!("write {}", event_control.display()), e))?;
        // SAFETY: the AsyncFd owns the EventFd, so the fd stays open while registered.
        let efd = unsafe { AsyncFd::register(efd) }
            .map_err(|e| Error::io("register eventfd", e.into()))?;
        Ok(Wakeups::EventFd(efd, control))
    }

    fn inotify(events: &std::path::Path) -> Result<Wakeups> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::io("inotify", e.into()))?;
        inotify
            .add_watch(events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| Error::io(format!("watch {}", events.display()), e.into()))?;
        // SAFETY: the AsyncFd owns the Inotify, so the fd stays open while registered.
        let fd = unsafe { AsyncFd::register(InotifyFd(inotify)) }
            .map_err(|e| Error::io("register inotify", e.into()))?;
        Ok(Wakeups::Inotify(fd))
    }

    /// Waits for the next wakeup and consumes it.
    async fn next(&self) -> std::io::Result<()> {
        loop {
            let consumed = match self {
                Wakeups::EventFd(fd, _) => {
                    let mut guard = fd.readable().await?;
                    match guard.try_io(|fd| fd.get_ref().read().map_err(std::io::Error::from)) {
                        Ok(result) => result.map(|_| ()),
                        Err(_would_block) => continue,
                    }
                }
                Wakeups::Inotify(fd) => {
                    let mut guard = fd.readable().await?;
                    match guard
                        .try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from))
                    {
                        Ok(result) => result.map(|_| ()),
                        Err(_would_block) => continue,
                    }
                }
            };
            return consumed;
        }
    }
}
