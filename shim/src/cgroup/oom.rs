//! OOM-kill events of one container, watched from Create: on cgroup v1 an eventfd registered on
//! `memory.oom_control`, on cgroup v2 inotify on `memory.events`. Both only wake the watcher;
//! the kernel's `oom_kill` counter decides whether a new OOM kill happened, so the watcher and
//! the exit path (which checks once more before publishing a `/tasks/exit`) never report one
//! kill twice, and an OOM kill is always published before the exit it caused.
//!
//! With systemd managing the cgroup (v2, the systemd driver), the container's scope is
//! removed as soon as its last process exits, which can be before the shim reads the counter
//! that woke it: the kill would be lost (the Go shim loses it the same way when it is slower
//! than systemd). On v2 the counters are hierarchical, so the parent keeps the kill: a kill
//! whose counter is gone by the time it is read is found there, as the growth of what the
//! parent counts beyond its remaining children ([`Kills`]).

// Unsafe here (denied elsewhere in the crate): registering the eventfd and inotify fds it owns with tokio (AsyncFd::register).
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim_protos::events::task::TaskOOM;
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
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
    /// The counts; the lock also orders the watcher against the exit path.
    kills: Mutex<Kills>,
    wakeups: Wakeups,
    publisher: Publisher,
}

impl OomWatch {
    /// Starts watching `cgroup` for OOM kills of container `id`.
    pub fn start(id: &str, cgroup: &Cgroup, publisher: Publisher) -> Result<OomWatch> {
        let memory = cgroup
            .dir("memory")
            .ok_or_else(|| Error::NotFound("container has no memory cgroup".into()))?
            .to_path_buf();
        let (kills, wakeups) = match cgroup {
            Cgroup::V1(_) => {
                let file = memory.join("memory.oom_control");
                (
                    Kills::new(file.clone(), None),
                    Wakeups::eventfd(&memory, &file)?,
                )
            }
            Cgroup::V2(_) => {
                let file = memory.join("memory.events");
                // Only systemd removes a cgroup as soon as it empties (runc's own cgroups go
                // at Delete, after the exit path's check): only a systemd scope needs its
                // parent's figure, which costs a read of every sibling's counter.
                let scope = memory.extension().is_some_and(|e| e == "scope");
                let wakeups = Wakeups::inotify(&file, memory.parent().filter(|_| scope))?;
                // Without the parent's removals to refresh it, the figure could take a
                // sibling's kills for this cgroup's: no fallback then.
                let fallback = wakeups.watches_parent().then(|| memory.clone());
                (Kills::new(file.clone(), fallback), wakeups)
            }
        };
        let state = Arc::new(OomState {
            container_id: id.to_string(),
            kills: Mutex::new(kills),
            wakeups,
            publisher,
        });
        let watcher = tokio::spawn(watch(state.clone(), cgroup.clone()));
        Ok(OomWatch { state, watcher })
    }

    /// Publishes `/tasks/oom` if the container had an OOM kill not yet reported. Called before
    /// each `/tasks/exit` of the container; takes what the watcher has not yet seen.
    pub fn check(&self) {
        let seen = self.state.wakeups.take_pending();
        self.state.on(seen);
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl OomState {
    /// Acts on what woke the watcher (or what the exit path found pending): a sibling's
    /// removal refreshes the parent's figure while this cgroup still exists; then whatever
    /// the counters say is new is published, unless a sibling's removal is still unaccounted
    /// for when this cgroup is already gone (the parent's figure would then mix the two).
    fn on(&self, seen: Seen) {
        let mut kills = self.kills.lock().unwrap_or_else(|p| p.into_inner());
        let exists = kills.exists();
        if seen.sibling_removed && exists {
            kills.note_parent();
        }
        let ambiguous = seen.sibling_removed && !exists;
        if kills.take_new(ambiguous) > 0 {
            log::info!("container {} was OOM-killed", self.container_id);
            self.publisher.publish(TaskOOM {
                container_id: self.container_id.clone(),
                ..Default::default()
            });
        }
        if seen.counter_written && kills.exists() {
            kills.note_parent();
        }
    }
}

/// One container's OOM kills: what its counter says and what was published. For a systemd
/// scope on v2 also what its parent counts beyond its other children (the kills of removed
/// children plus this cgroup's own; v2's counts are hierarchical), noted with this cgroup's
/// own count when the watcher starts, when the counter is written and when a sibling goes.
/// systemd removes an emptied scope at once, often before the shim reads the counter of the
/// kill that emptied it (the Go shim then loses the kill); when the counter is gone, the
/// growth of the parent's figure since the note is this cgroup's kills, since no sibling went
/// in between (one that did makes it ambiguous, and nothing is guessed).
struct Kills {
    /// `memory.oom_control` (v1) or `memory.events` (v2).
    counter: PathBuf,
    /// A v2 systemd scope's directory, whose parent keeps the hierarchical counts.
    dir: Option<PathBuf>,
    published: u64,
    /// The parent's figure and this cgroup's count, read together (this cgroup's first).
    noted: Option<(u64, u64)>,
}

impl Kills {
    fn new(counter: PathBuf, dir: Option<PathBuf>) -> Kills {
        let published = read_oom_kills(&counter).unwrap_or(0);
        Kills {
            counter,
            dir,
            published,
            noted: None,
        }
    }

    fn exists(&self) -> bool {
        self.counter.exists()
    }

    /// Kills not yet published, now counted as published. `ambiguous`: a sibling went since
    /// the last note, so a gone counter cannot be told from the parent's figure.
    fn take_new(&mut self, ambiguous: bool) -> u64 {
        if let Some(count) = read_oom_kills(&self.counter) {
            let new = count.saturating_sub(self.published);
            self.published = self.published.max(count);
            return new;
        }
        let Some(dir) = self.dir.as_deref() else {
            return 0;
        };
        let Some((before, own)) = self.noted.take() else {
            return 0;
        };
        if ambiguous {
            log::debug!(
                "{} went with its cgroup before it was read, with a sibling: its kills, if \
                 any, cannot be told from the parent's",
                self.counter.display()
            );
            return 0;
        }
        let Some(now) = beyond_other_children(dir) else {
            return 0;
        };
        // The figure grew by this cgroup's kills since `own` was read.
        let total = own + now.saturating_sub(before);
        let new = total.saturating_sub(self.published);
        self.published = self.published.max(total);
        if new > 0 {
            log::debug!(
                "{} went with its cgroup before it was read; its parent counts {new} new kill(s)",
                self.counter.display()
            );
        }
        new
    }

    fn note_parent(&mut self) {
        let Some(dir) = self.dir.as_deref() else {
            return;
        };
        let Some(own) = read_oom_kills(&self.counter) else {
            return;
        };
        self.noted = beyond_other_children(dir).map(|figure| (figure, own));
    }
}

/// What the parent of cgroup `dir` counts (v2, hierarchical) beyond its children other than
/// `dir`: its removed children's kills and `dir`'s own.
fn beyond_other_children(dir: &std::path::Path) -> Option<u64> {
    let parent = dir.parent()?;
    let mut figure = read_oom_kills(&parent.join("memory.events"))?;
    for entry in std::fs::read_dir(parent).ok()?.flatten() {
        let child = entry.path();
        if child != dir && entry.file_type().is_ok_and(|t| t.is_dir()) {
            let kills = read_oom_kills(&child.join("memory.events")).unwrap_or(0);
            figure = figure.saturating_sub(kills);
        }
    }
    Some(figure)
}

/// The kernel's count of OOM kills in the cgroup (v1 `oom_control` and v2 `memory.events`
/// both name it `oom_kill`).
fn read_oom_kills(file: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let keyed = flat_keyed(&text);
    keyed.has("oom_kill").then(|| keyed.get("oom_kill"))
}

async fn watch(state: Arc<OomState>, cgroup: Cgroup) {
    // Here rather than in Create's path: reading the parent's children is the watcher's work.
    state.on(Seen {
        counter_written: true,
        sibling_removed: false,
    });
    loop {
        let seen = match state.wakeups.next().await {
            Ok(seen) => seen,
            Err(e) => {
                log::warn!("OOM watch of {} stopped: {e}", state.container_id);
                return;
            }
        };
        // Before looking whether the cgroup still exists: a kill that woke us may be all that
        // is left of it.
        state.on(seen);
        // The kernel also signals a v1 eventfd when the cgroup is removed.
        if !cgroup.exists() {
            return;
        }
    }
}

/// What a wakeup said.
#[derive(Clone, Copy, Default)]
struct Seen {
    /// The counter was written (an eventfd signal always counts as this).
    counter_written: bool,
    /// Another cgroup under the same parent was removed.
    sibling_removed: bool,
}

/// What wakes the watcher.
enum Wakeups {
    /// Kept open with the eventfd: the registration refers to it.
    EventFd(AsyncFd<EventFd>, #[allow(dead_code)] std::fs::File),
    /// One inotify instance: the counter, and (systemd scopes) the parent directory, for its
    /// children's removals; `own` names this cgroup among them.
    Inotify {
        fd: AsyncFd<InotifyFd>,
        counter: WatchDescriptor,
        own: Option<std::ffi::OsString>,
    },
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

    /// inotify on `events`, and on `parent`'s removals of children when given.
    fn inotify(events: &std::path::Path, parent: Option<&std::path::Path>) -> Result<Wakeups> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| Error::io("inotify", e.into()))?;
        let counter = inotify
            .add_watch(events, AddWatchFlags::IN_MODIFY)
            .map_err(|e| Error::io(format!("watch {}", events.display()), e.into()))?;
        // The parent's watch only serves the fallback: failing it must not cost the watch of
        // the counter itself.
        let own = parent.and_then(|parent| {
            let flags = AddWatchFlags::IN_DELETE | AddWatchFlags::IN_ONLYDIR;
            if let Err(e) = inotify.add_watch(parent, flags) {
                log::debug!(
                    "watch {} (OOM kills of removed scopes): {e}",
                    parent.display()
                );
                return None;
            }
            events.parent()?.file_name().map(|n| n.to_os_string())
        });
        // SAFETY: the AsyncFd owns the Inotify, so the fd stays open while registered.
        let fd = unsafe { AsyncFd::register(InotifyFd(inotify)) }
            .map_err(|e| Error::io("register inotify", e.into()))?;
        Ok(Wakeups::Inotify { fd, counter, own })
    }

    /// Whether removals of the parent's children are watched (see [`Kills`]).
    fn watches_parent(&self) -> bool {
        matches!(self, Wakeups::Inotify { own: Some(_), .. })
    }

    /// Consumes what is pending, without waiting.
    fn take_pending(&self) -> Seen {
        match self {
            Wakeups::EventFd(fd, _) => Seen {
                counter_written: fd.get_ref().read().is_ok(),
                sibling_removed: false,
            },
            Wakeups::Inotify { fd, .. } => fd
                .get_ref()
                .0
                .read_events()
                .map(|events| self.seen(&events))
                .unwrap_or_default(),
        }
    }

    /// Waits for the next wakeup and consumes it.
    async fn next(&self) -> std::io::Result<Seen> {
        loop {
            let consumed = match self {
                Wakeups::EventFd(fd, _) => {
                    let mut guard = fd.readable().await?;
                    match guard.try_io(|fd| fd.get_ref().read().map_err(std::io::Error::from)) {
                        Ok(result) => result.map(|_| Seen {
                            counter_written: true,
                            sibling_removed: false,
                        }),
                        Err(_would_block) => continue,
                    }
                }
                Wakeups::Inotify { fd, .. } => {
                    let mut guard = fd.readable().await?;
                    match guard
                        .try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from))
                    {
                        Ok(result) => result.map(|events| self.seen(&events)),
                        Err(_would_block) => continue,
                    }
                }
            };
            return consumed;
        }
    }

    /// inotify's events, read: the counter written (not only its watch going with the
    /// cgroup), a child of the parent other than this cgroup removed.
    fn seen(&self, events: &[InotifyEvent]) -> Seen {
        let Wakeups::Inotify { counter, own, .. } = self else {
            return Seen::default();
        };
        let mut seen = Seen::default();
        for e in events {
            if e.wd == *counter {
                seen.counter_written |= e.mask.contains(AddWatchFlags::IN_MODIFY);
            } else if e.mask.contains(AddWatchFlags::IN_DELETE) && e.name != *own {
                seen.sibling_removed = true;
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 parent with `ours` and a sibling, each with a `memory.events`.
    struct Tree {
        _dir: tempfile::TempDir,
        parent: PathBuf,
        ours: PathBuf,
    }

    impl Tree {
        fn new(parent_kills: u64, ours: u64, sibling: u64) -> Tree {
            let dir = tempfile::tempdir().unwrap();
            let parent = dir.path().join("pod.slice");
            for (cg, kills) in [("ours.scope", ours), ("sibling.scope", sibling)] {
                std::fs::create_dir_all(parent.join(cg)).unwrap();
                set_kills(&parent.join(cg), kills);
            }
            set_kills(&parent, parent_kills);
            let ours = parent.join("ours.scope");
            Tree {
                _dir: dir,
                parent,
                ours,
            }
        }

        fn kills(&self) -> Kills {
            Kills::new(self.ours.join("memory.events"), Some(self.ours.clone()))
        }

        /// Kills of `ours` as the watcher holds them once started (the parent noted).
        fn noted(&self) -> Kills {
            let mut kills = self.kills();
            kills.note_parent();
            kills
        }

        /// An OOM kill in `ours`, counted by it and its parent as the kernel does on v2.
        fn kill_in_ours(&self) {
            set_kills(&self.ours, 1);
            set_kills(&self.parent, 3);
        }

        /// The sibling, with its kills, removed.
        fn remove_sibling(&self) {
            std::fs::remove_dir_all(self.parent.join("sibling.scope")).unwrap();
        }

        /// What systemd does once the scope is empty.
        fn remove_ours(&self) {
            std::fs::remove_dir_all(&self.ours).unwrap();
        }
    }

    fn set_kills(cgroup: &std::path::Path, kills: u64) {
        let text = format!("low 0\nhigh 0\nmax 3\noom 1\noom_kill {kills}\noom_group_kill 0\n");
        std::fs::write(cgroup.join("memory.events"), text).unwrap();
    }

    #[test]
    fn a_kill_read_while_the_cgroup_exists_is_counted_once() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = tree.noted();
        tree.kill_in_ours();
        assert_eq!(kills.take_new(false), 1);
        // The exit path checks again, after systemd removed the scope: nothing new.
        tree.remove_ours();
        assert_eq!(kills.take_new(false), 0);
    }

    // With the systemd driver the emptied scope is removed at once; a kill whose counter was
    // not read before that used to be lost (the CRI check in the cgroup v2 VM saw "reason
    // Error" instead of "OOMKilled").
    #[test]
    fn a_kill_whose_cgroup_is_gone_before_the_read_is_found_in_the_parent() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = tree.noted();
        tree.kill_in_ours();
        tree.remove_ours();
        assert_eq!(kills.take_new(false), 1);
        assert_eq!(kills.take_new(false), 0, "reported twice");
    }

    #[test]
    fn a_removal_without_a_kill_is_not_one() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = tree.noted();
        tree.remove_ours();
        assert_eq!(kills.take_new(false), 0);
    }

    #[test]
    fn a_sibling_with_kills_removed_since_the_note_is_not_taken_for_ours() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = tree.noted();
        // The sibling, with its 2 kills, goes; the watcher sees it while ours exists and notes
        // the parent again.
        tree.remove_sibling();
        kills.note_parent();
        tree.remove_ours();
        assert_eq!(kills.take_new(false), 0);
    }

    #[test]
    fn a_sibling_removed_unseen_when_ours_is_gone_makes_it_ambiguous() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = tree.noted();
        tree.remove_sibling();
        tree.remove_ours();
        assert_eq!(kills.take_new(true), 0);
    }

    #[test]
    fn on_v1_or_outside_a_systemd_scope_nothing_is_guessed() {
        let tree = Tree::new(2, 0, 2);
        let mut kills = Kills::new(tree.ours.join("memory.events"), None);
        kills.note_parent();
        set_kills(&tree.parent, 3);
        tree.remove_ours();
        assert_eq!(kills.take_new(false), 0);
    }
}
