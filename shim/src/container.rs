//! One container: its init, its execs, its runc, and every state change of them.
//!
//! Each container has its own operation lock (`ops`), held across the runc calls that change
//! the init's state (create, start, pause, resume, update, checkpoint, delete) so that they are
//! serialized; no lock shared by the whole shim is ever held across runc, so one container's
//! slow runc never stalls another container. Kill, State, Wait, Pids and the execs' Start and
//! Delete do not take `ops`: a hung Start must not stop a Kill, nor one exec another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;
use runc_wrapper::console::ConsoleSocket;
use runc_wrapper::io::RuncStdio;
use runc_wrapper::monitor::{Exit, ExitMonitor};
use runc_wrapper::{CreateOpts, ExecOpts, Runc, RuncConfig};

use crate::cgroup::{self, Cgroup, OomWatch};
use crate::checkpoint::{self, RestoreSpec};
use crate::error::{Error, Result};
use crate::events::{timestamp, Publisher};
use crate::exits::{EarlyExits, ExitHandler, ExitRouter};
use crate::options::RuncOptions;
use crate::process::{ExitInfo, Op, Process, Status};
use crate::rootfs::{self, MountSpec};
use crate::stdio::{PreparedIo, StdioConfig};

/// Deadlines of runc calls (bug class 1: nothing waits forever).
pub mod deadline {
    use std::time::Duration;
    pub const CREATE: Duration = Duration::from_secs(60);
    pub const START: Duration = Duration::from_secs(30);
    pub const EXEC: Duration = Duration::from_secs(30);
    pub const KILL: Duration = Duration::from_secs(10);
    pub const DELETE: Duration = Duration::from_secs(30);
    pub const QUERY: Duration = Duration::from_secs(10);
    pub const PAUSE: Duration = Duration::from_secs(10);
    pub const UPDATE: Duration = Duration::from_secs(10);
    /// CRIU dumps and restores whole process trees: minutes for a large one.
    pub const CHECKPOINT: Duration = Duration::from_secs(300);
    pub const RESTORE: Duration = Duration::from_secs(300);
    pub const CONSOLE: Duration = Duration::from_secs(30);
    /// Unmounting the rootfs, including the helper in another mount namespace (10 s).
    pub const UNMOUNT: Duration = Duration::from_secs(30);
    /// Mounting the rootfs (many layers, FUSE, lazy-pulling snapshotters).
    pub const MOUNT: Duration = Duration::from_secs(60);
    /// How long Delete waits for a process's output to reach its destination.
    pub const DRAIN: Duration = Duration::from_secs(5);
    /// How long the init's exit event waits for the exits of its execs.
    pub const EXEC_EXITS: Duration = Duration::from_secs(5);
}

/// Everything a container needs from the shim.
#[derive(Clone)]
pub struct Shared {
    pub namespace: String,
    pub publisher: Publisher,
    pub exits: Arc<ExitRouter>,
    pub monitor: Arc<dyn ExitMonitor>,
}

/// A validated Create request.
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<MountSpec>,
    pub stdio: StdioConfig,
    pub options: RuncOptions,
    /// Set when the container is created from a checkpoint: Start restores it.
    pub restore: Option<RestoreSpec>,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub init: Arc<Process>,
    runc: Runc,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// Specs of execs added but not started yet.
    exec_specs: Mutex<HashMap<String, oci_spec::runtime::Process>>,
    ops: tokio::sync::Mutex<()>,
    has_mounts: bool,
    private_pid_ns: bool,
    io_owner: Option<(u32, u32)>,
    /// Found from the init's pid at Create, as the Go shim does; None if it could not be.
    cgroup: OnceLock<Cgroup>,
    /// Dropped at Delete, which stops the watcher.
    oom: Mutex<Option<OomWatch>>,
    /// Runtime options (for checkpoint and restore).
    options: RuncOptions,
    /// A checkpoint to restore at Start instead of `runc start`.
    restore: Mutex<Option<RestoreSpec>>,
    /// Execs being started, and whether the init has died. The init's exit is held back while
    /// execs start (and until they exit, bounded), as the Go shim does: until then the task is
    /// still running for its clients (Exec is accepted, State says running); once the init
    /// has died no exec may start.
    exec_starts: tokio::sync::watch::Sender<ExecStarts>,
    shared: Shared,
}

#[derive(Debug, Clone, Copy, Default)]
struct ExecStarts {
    starting: usize,
    init_died: bool,
}

/// One exec start in progress; its drop tells a held-back init exit that it is over.
struct ExecStarting<'a>(&'a tokio::sync::watch::Sender<ExecStarts>);

impl Drop for ExecStarting<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|s| s.starting -= 1);
    }
}

impl Container {
    /// Mounts the rootfs, runs `runc create` with stdio already draining, and publishes
    /// `/tasks/create`. On failure everything done is undone, and so it is when the requester
    /// is gone by the end (containerd gave up on the call and may already have cleaned up the
    /// bundle): a container nobody asked for any more is not left behind.
    pub async fn create(
        req: CreateRequest,
        shared: Shared,
        requester_gone: impl Fn() -> bool,
    ) -> Result<Arc<Container>> {
        let spec = read_spec(&req.bundle)?;
        req.options.save(&req.bundle)?;
        let rootfs = rootfs::rootfs_of(&req.bundle);
        // Mounting can sleep in the kernel (an overlay of many layers, FUSE, a lazy-pulling
        // snapshotter): on a thread of its own, bounded; a mount that completes after Create
        // gave up is undone.
        let (mounts, target, bundle) = (req.rootfs.clone(), rootfs.clone(), req.bundle.clone());
        let undo = rootfs.clone();
        crate::blocking::run(
            format!("mount the rootfs of {}", req.id),
            deadline::MOUNT,
            move || rootfs::mount_all(&mounts, &target, &bundle),
            move |mounted| {
                if mounted.is_ok() {
                    let _ = rootfs::unmount_all(&undo);
                }
            },
        )
        .await??;
        let runc = Runc::new(
            RuncConfig {
                binary: req.options.binary(),
                root: Some(req.options.runc_root(&shared.namespace)),
                systemd_cgroup: req.options.systemd_cgroup,
                debug: false,
                log: Some(req.bundle.join("log.json")),
            },
            shared.monitor.clone(),
        );
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            init: Arc::new(Process::new(&req.id, None, req.stdio.clone())),
            runc,
            execs: Mutex::new(HashMap::new()),
            exec_specs: Mutex::new(HashMap::new()),
            ops: tokio::sync::Mutex::new(()),
            has_mounts: !req.rootfs.is_empty(),
            private_pid_ns: has_private_pid_namespace(&spec),
            io_owner: req.options.io_owner(),
            cgroup: OnceLock::new(),
            oom: Mutex::new(None),
            options: req.options.clone(),
            restore: Mutex::new(req.restore.clone()),
            exec_starts: tokio::sync::watch::channel(ExecStarts::default()).0,
            shared,
        });
        // From a checkpoint, nothing runs until Start restores it (as in the Go shim).
        let created = if req.restore.is_some() {
            Ok(())
        } else {
            container.run_create(&req).await
        };
        let created = created.and_then(|()| {
            if requester_gone() {
                Err(Error::Unavailable(format!(
                    "create of {} rolled back: its requester is gone",
                    req.id
                )))
            } else {
                Ok(())
            }
        });
        if let Err(e) = created {
            log::warn!("create of {} failed, undoing it: {e}", req.id);
            let _ = container
                .runc
                .delete(&container.id, true, deadline::DELETE)
                .await;
            if container.has_mounts {
                let _ = rootfs::unmount_all(&rootfs);
            }
            return Err(e);
        }
        let init = &container.init;
        container.shared.publisher.publish(TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.to_string_lossy().into_owned(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| containerd_shim_protos::types::mount::Mount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            io: MessageField::some(TaskIO {
                stdin: req.stdio.stdin.clone(),
                stdout: req.stdio.stdout.clone(),
                stderr: req.stdio.stderr.clone(),
                terminal: req.stdio.terminal,
                ..Default::default()
            }),
            pid: init.pid(),
            ..Default::default()
        });
        Ok(container)
    }

    async fn run_create(self: &Arc<Self>, req: &CreateRequest) -> Result<()> {
        // Create output passes straight through (no hold): holding it until `runc create`
        // returned lost bytes now and then under `ctr run --rm` (about 1 run in 25 with a
        // 1 MiB flood; cause not found yet). The price: a failed create also shows runc's own
        // error line on the container's stderr, where runc wrote it.
        let pid_file = self.bundle.join("init.pid");
        let (pid, early) = self
            .launch(
                &self.init,
                &pid_file,
                false,
                "create",
                |stdio, console_socket| {
                    let opts = CreateOpts {
                        pid_file: Some(pid_file.clone()),
                        console_socket,
                        no_pivot: req.options.no_pivot_root,
                        no_new_keyring: req.options.no_new_keyring,
                        detach: true,
                        stdio,
                    };
                    self.runc
                        .create(&self.id, &self.bundle, opts, deadline::CREATE)
                },
            )
            .await?;
        self.watch_cgroup(pid);
        self.shared.exits.register(pid, self.clone(), early);
        Ok(())
    }

    /// `runc restore` of the checkpoint given at Create, with stdio draining from before, as
    /// for a create.
    async fn run_restore(self: &Arc<Self>, spec: &RestoreSpec) -> Result<()> {
        let pid_file = self.bundle.join("init.pid");
        let (pid, early) = self
            .launch(
                &self.init,
                &pid_file,
                false,
                "restore",
                |stdio, console_socket| {
                    let mut opts = spec.restore_opts(&self.bundle, &self.options);
                    opts.console_socket = console_socket;
                    opts.stdio = stdio;
                    self.runc
                        .restore(&self.id, &self.bundle, opts, deadline::RESTORE)
                },
            )
            .await?;
        self.watch_cgroup(pid);
        self.shared.exits.register(pid, self.clone(), early);
        Ok(())
    }

    /// The one way a process is started through runc (create, restore, exec): its stdio
    /// prepared and draining before runc runs (bug class 3), a console socket for a terminal,
    /// exits subscribed before runc can start anything (an instant exit is not missed), then
    /// the pid from the pid file and the stdio wired. Returns the pid and the exits seen since
    /// the subscription; the caller registers them once its start event is queued.
    async fn launch<'a, F, Fut>(
        self: &'a Arc<Self>,
        process: &'a Arc<Process>,
        pid_file: &'a Path,
        hold_output: bool,
        op: &'static str,
        run: F,
    ) -> Result<(i32, EarlyExits)>
    where
        F: FnOnce(RuncStdio, Option<PathBuf>) -> Fut,
        Fut: std::future::Future<Output = runc_wrapper::Result<()>> + 'a,
    {
        let mut prepared =
            PreparedIo::prepare(&process.stdio, self.stdio_owner(&process.id), hold_output).await?;
        let console = if process.stdio.terminal {
            Some(ConsoleSocket::new().map_err(|e| Error::io("create console socket", e))?)
        } else {
            None
        };
        let early = EarlyExits::subscribe(self.shared.monitor.as_ref());
        let ran = run(
            std::mem::take(&mut prepared.runc_stdio),
            console.as_ref().map(|c| c.path().to_path_buf()),
        );
        let master = match &console {
            Some(console) => Some(with_console(ran, console, op).await?),
            None => {
                ran.await.map_err(|e| Error::runtime(op, e))?;
                None
            }
        };
        let pid = read_pid_file(pid_file)?;
        process.set_pid(pid as u32);
        process.set_io(prepared.finish(master).await?);
        Ok((pid, early))
    }

    /// Checkpoint with CRIU (the Go shim's rules: running or paused only; the container keeps
    /// running unless `exit`; a failed dump leaves `criu-dump.log` in the bundle).
    pub async fn checkpoint(
        &self,
        path: &str,
        options: &containerd_shim_protos::shim::oci::CheckpointOptions,
    ) -> Result<()> {
        let _op = self.ops.lock().await;
        self.init.check(Op::Checkpoint)?;
        let work = checkpoint::WorkDir::for_dump(options, &self.options, &self.bundle);
        let opts = checkpoint::checkpoint_opts(path, options, &self.options, &work.path)?;
        std::fs::create_dir_all(&work.path)
            .map_err(|e| Error::io(format!("create {}", work.path.display()), e))?;
        self.runc
            .checkpoint(&self.id, &opts, deadline::CHECKPOINT)
            .await
            .map_err(|e| checkpoint::dump_failed(e, &work.path, &self.bundle))
    }

    /// Finds the container's cgroup (for Stats) and starts its OOM watch. Neither is fatal,
    /// as in the Go shim: a container whose init already exited has no cgroup to find.
    fn watch_cgroup(&self, pid: i32) {
        let cg = match Cgroup::of_pid(pid) {
            Ok(cg) => cg,
            Err(e) => {
                log::warn!("cgroup of container {} (pid {pid}): {e}", self.id);
                return;
            }
        };
        match OomWatch::start(&self.id, &cg, self.shared.publisher.clone()) {
            Ok(watch) => *self.oom.lock().unwrap_or_else(|p| p.into_inner()) = Some(watch),
            Err(e) => log::warn!("OOM watch of container {}: {e}", self.id),
        }
        let _ = self.cgroup.set(cg);
    }

    fn restore_pending(&self) -> bool {
        self.restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Who a process's stdio belongs to (`process_id` is the container id for the init).
    fn stdio_owner<'a>(&'a self, process_id: &'a str) -> crate::stdio::Owner<'a> {
        crate::stdio::Owner {
            id: process_id,
            namespace: &self.shared.namespace,
            uid_gid: self.io_owner,
        }
    }

    /// The container's cgroup metrics (`Stats`).
    pub async fn stats(
        &self,
    ) -> Result<containerd_shim_protos::protobuf::well_known_types::any::Any> {
        let cg = self.cgroup.get().cloned().ok_or_else(|| {
            Error::NotFound(format!("cgroup of container {} does not exist", self.id))
        })?;
        crate::blocking::run(
            format!("read the cgroup metrics of {}", self.id),
            deadline::QUERY,
            move || cgroup::stats(&cg),
            drop,
        )
        .await?
    }

    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!("exec {exec_id} not found in container {}", self.id))
            })
    }

    pub fn exec_processes(&self) -> Vec<Arc<Process>> {
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub async fn start(self: &Arc<Self>, exec_id: &str) -> Result<u32> {
        if exec_id.is_empty() {
            let _op = self.ops.lock().await;
            self.start_init().await
        } else {
            // Not under `ops`: execs start side by side, as in the Go shim (an exec whose
            // runc is slow must not hold back the others, a probe's for instance). The exec's
            // own status serializes its Start and Delete; the init's exit waits for it.
            self.start_exec(exec_id).await
        }
    }

    async fn start_init(self: &Arc<Self>) -> Result<u32> {
        let init = &self.init;
        // Closes the start gate: an exit seen from now on waits for the start event.
        init.begin_start()?;
        let restore = self
            .restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let started = match &restore {
            Some(spec) => self.run_restore(spec).await,
            None => self
                .runc
                .start(&self.id, deadline::START)
                .await
                .map_err(|e| Error::runtime("start", e)),
        };
        if let Err(e) = started {
            init.open_start_gate();
            return Err(e);
        }
        self.restore
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        // The init may already have exited (and be Stopped): that is not an error of Start.
        let _ = init.complete(Op::Start);
        self.shared.publisher.publish(TaskStart {
            container_id: self.id.clone(),
            pid: init.pid(),
            ..Default::default()
        });
        init.open_start_gate();
        Ok(init.pid())
    }

    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioConfig,
        spec: oci_spec::runtime::Process,
    ) -> Result<()> {
        self.init.check(Op::Exec)?;
        // A container created from a checkpoint has no process until Start restores it (the
        // Go shim's createdCheckpointState).
        if self.restore_pending() {
            return Err(Error::FailedPrecondition(
                "cannot exec in a created state".into(),
            ));
        }
        {
            let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
            if execs.contains_key(exec_id) {
                return Err(Error::AlreadyExists(format!(
                    "exec {exec_id} already exists in container {}",
                    self.id
                )));
            }
            execs.insert(
                exec_id.to_string(),
                Arc::new(Process::new(&self.id, Some(exec_id), stdio)),
            );
        }
        self.exec_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(exec_id.to_string(), spec);
        self.shared.publisher.publish(TaskExecAdded {
            container_id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        });
        Ok(())
    }

    async fn start_exec(self: &Arc<Self>, exec_id: &str) -> Result<u32> {
        let exec = self.process(exec_id)?;
        if self.init.status() == Status::Deleted {
            return Err(crate::process::gone(&self.id));
        }
        let _starting = self.begin_exec_start()?;
        exec.begin_start()?;
        let spec = self
            .exec_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                Error::FailedPrecondition(format!("exec {exec_id} has no process spec"))
            })?;
        let result = self.run_exec(&exec, &spec).await;
        exec.open_start_gate();
        let pid = result?;
        self.exec_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        Ok(pid)
    }

    /// Counts an exec start, refused once the init has died (the Go shim's words).
    fn begin_exec_start(&self) -> Result<ExecStarting<'_>> {
        let mut died = false;
        self.exec_starts.send_if_modified(|s| {
            died = s.init_died;
            if !died {
                s.starting += 1;
            }
            !died
        });
        if died {
            return Err(Error::FailedPrecondition(format!(
                "container {} init process is not running",
                self.id
            )));
        }
        Ok(ExecStarting(&self.exec_starts))
    }

    async fn run_exec(
        self: &Arc<Self>,
        exec: &Arc<Process>,
        spec: &oci_spec::runtime::Process,
    ) -> Result<u32> {
        let pid_file = self.bundle.join(format!("{}.pid", exec.id));
        let (pid, early) = self
            .launch(exec, &pid_file, true, "exec", |stdio, console_socket| {
                let opts = ExecOpts {
                    pid_file: Some(pid_file.clone()),
                    console_socket,
                    detach: true,
                    stdio,
                };
                self.runc.exec(&self.id, spec, opts, deadline::EXEC)
            })
            .await?;
        let _ = std::fs::remove_file(&pid_file);
        let _ = exec.complete(Op::Start);
        self.shared.publisher.publish(TaskExecStarted {
            container_id: self.id.clone(),
            exec_id: exec.id.clone(),
            pid: pid as u32,
            ..Default::default()
        });
        // Registered after the start event is queued: even an instant exit is published after it.
        self.shared.exits.register(pid, self.clone(), early);
        Ok(pid as u32)
    }

    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let process = self.process(exec_id)?;
        match process.status() {
            Status::Deleted => {
                return Err(Error::NotFound(format!(
                    "process {} was deleted",
                    process.id
                )))
            }
            // The init's Kill still goes to runc, as in the Go shim: `kill --all` reaches
            // what is left in the container's cgroup after its init exited.
            Status::Stopped if !process.is_init() => {
                return Err(Error::NotFound("process already finished".into()))
            }
            _ => {}
        }
        if process.is_init() {
            return self
                .runc
                .kill(&self.id, signal, all, deadline::KILL)
                .await
                .map_err(|e| {
                    let text = e.to_string();
                    if [
                        "not running",
                        "no such process",
                        "already finished",
                        "does not exist",
                    ]
                    .iter()
                    .any(|s| text.contains(s))
                    {
                        Error::NotFound("process already finished".into())
                    } else {
                        e.into()
                    }
                });
        }
        let pid = process.pid();
        if pid == 0 {
            return Err(Error::FailedPrecondition(format!(
                "exec {} has not been started",
                process.id
            )));
        }
        // Any signal the kernel knows, real-time ones included (as the Go shim's unix.Kill):
        // the service has checked it is 0..=64.
        match crate::sys::kill(pid as i32, signal as i32) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::ESRCH) => {
                Err(Error::NotFound("process already finished".into()))
            }
            Err(e) => Err(Error::Internal(format!("kill exec {}: {e}", process.id))),
        }
    }

    /// Deletes an exec; returns what its Delete response reports.
    pub async fn delete_exec(&self, exec_id: &str) -> Result<(u32, Option<ExitInfo>)> {
        let exec = self.process(exec_id)?;
        exec.check(Op::Delete)?;
        exec.open_start_gate();
        // Never a `/tasks/delete`-era answer before the exit event: wait for its notification.
        exec.exit_told(deadline::EXEC_EXITS).await;
        if let Some(io) = exec.io() {
            io.drain_and_close(deadline::DRAIN).await;
        }
        exec.complete(Op::Delete)?;
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        self.exec_specs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        Ok((exec.pid(), exec.exit()))
    }

    /// Deletes the container: runc state, stdio, rootfs mounts; publishes `/tasks/delete`.
    pub async fn delete_init(&self) -> Result<(u32, Option<ExitInfo>)> {
        let _op = self.ops.lock().await;
        let init = &self.init;
        init.check(Op::Delete)?;
        let never_started = init.status() == Status::Created;
        init.open_start_gate();
        // `/tasks/delete` never overtakes `/tasks/exit`: wait for the exit's notification.
        init.exit_told(deadline::EXEC_EXITS).await;
        match self
            .runc
            .delete(&self.id, never_started, deadline::DELETE)
            .await
        {
            Ok(()) => {}
            Err(e) if e.to_string().contains("does not exist") => {}
            Err(e) => return Err(e.into()),
        }
        if never_started && init.exit().is_none() && init.pid() != 0 {
            // runc killed the init; its exit arrives through the reaper shortly.
            let _ = tokio::time::timeout(deadline::EXEC_EXITS, init.wait()).await;
        }
        if let Some(io) = init.io() {
            io.drain_and_close(deadline::DRAIN).await;
        }
        if self.has_mounts {
            self.unmount_rootfs().await?;
        }
        init.complete(Op::Delete)?;
        self.oom.lock().unwrap_or_else(|p| p.into_inner()).take();
        let exit = init.exit();
        self.shared.publisher.publish(TaskDelete {
            container_id: self.id.clone(),
            pid: init.pid(),
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: MessageField::from_option(exit.map(|e| timestamp(e.at))),
            ..Default::default()
        });
        Ok((init.pid(), exit))
    }

    /// Unmounts the rootfs (in whichever mount namespace holds it) on a blocking thread: an
    /// unmount can sleep in the kernel, and the namespace helper is waited for, neither of which
    /// may stall the runtime's workers. Bounded: a stuck unmount fails Delete, never hangs it.
    async fn unmount_rootfs(&self) -> Result<()> {
        let bundle = self.bundle.clone();
        crate::blocking::run(
            format!("unmount the rootfs of {}", self.id),
            deadline::UNMOUNT,
            move || rootfs::cleanup(&bundle),
            drop,
        )
        .await?
    }

    pub async fn pause(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.init.check(Op::Pause)?;
        self.runc.pause(&self.id, deadline::PAUSE).await?;
        self.init.complete(Op::Pause)?;
        self.shared.publisher.publish(TaskPaused {
            container_id: self.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub async fn resume(&self) -> Result<()> {
        let _op = self.ops.lock().await;
        self.init.check(Op::Resume)?;
        self.runc.resume(&self.id, deadline::PAUSE).await?;
        let _ = self.init.complete(Op::Resume);
        self.shared.publisher.publish(TaskResumed {
            container_id: self.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub async fn pids(&self) -> Result<Vec<i32>> {
        Ok(self.runc.ps(&self.id, deadline::QUERY).await?)
    }

    pub async fn update(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let _op = self.ops.lock().await;
        self.init.check(Op::Update)?;
        Ok(self
            .runc
            .update(&self.id, resources, deadline::UPDATE)
            .await?)
    }

    /// The init died: kill the rest of the container when it has no pid namespace of its own,
    /// let execs being started finish starting, wait (bounded, together) for the execs' exits,
    /// and only then record and publish the init's exit. Until it is recorded the task is
    /// running for its clients, as with the Go shim.
    async fn handle_init_exit(self: Arc<Self>, exit: Exit) {
        if !self.private_pid_ns {
            if let Err(e) = self
                .runc
                .kill(&self.id, libc::SIGKILL as u32, true, deadline::KILL)
                .await
            {
                log::debug!("kill remaining processes of {}: {e}", self.id);
            }
        }
        // An exec start is bounded by runc's deadline; the margin covers its stdio setup.
        let mut starts = self.exec_starts.subscribe();
        let started = starts.wait_for(|s| s.starting == 0);
        if tokio::time::timeout(deadline::EXEC + deadline::EXEC_EXITS, started)
            .await
            .is_err()
        {
            log::warn!(
                "exec starts of {} still running; reporting its exit",
                self.id
            );
        }
        // An exec may have recorded its exit but not yet published it: wait for its
        // notification, which fires only once its exit event is queued.
        let execs: Vec<_> = self
            .exec_processes()
            .into_iter()
            .filter(|e| e.pid() != 0)
            .collect();
        let exits = futures::future::join_all(execs.iter().map(|e| e.wait()));
        if tokio::time::timeout(deadline::EXEC_EXITS, exits)
            .await
            .is_err()
        {
            log::warn!(
                "execs of {} still running {:?} after its init exited; reporting its exit",
                self.id,
                deadline::EXEC_EXITS
            );
        }
        if self.init.record_exit(exit.status as u32, exit.timestamp) {
            let init = self.init.clone();
            self.publish_exit(init).await;
        }
    }

    /// Publishes `/tasks/exit` (never before the process's start event, and an OOM kill
    /// before the exit it caused) and wakes every Wait.
    async fn publish_exit(self: Arc<Self>, process: Arc<Process>) {
        process.start_gate_opened().await;
        if let Some(oom) = self.oom.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            oom.check();
        }
        let exit = process.exit().unwrap_or(ExitInfo {
            status: 255,
            at: SystemTime::now(),
        });
        self.shared.publisher.publish(TaskExit {
            container_id: self.id.clone(),
            id: process.id.clone(),
            pid: process.pid(),
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        });
        process.notify_exit();
    }
}

impl ExitHandler for Container {
    fn on_exit(self: Arc<Self>, exit: Exit) {
        let pid = exit.pid as u32;
        if self.init.pid() == pid {
            // The first report wins (the reaper and an early-exit check can both see it).
            let first = self
                .exec_starts
                .send_if_modified(|s| !std::mem::replace(&mut s.init_died, true));
            if first {
                log::debug!(
                    "init of {} (pid {pid}) exited with {}",
                    self.id,
                    exit.status
                );
                tokio::spawn(self.handle_init_exit(exit));
            }
            return;
        }
        // Only a process still running can own the pid: an exited exec not yet deleted may
        // have had the same pid (pid reuse), and must not take a new exec's exit.
        let exec = self
            .exec_processes()
            .into_iter()
            .find(|p| p.pid() == pid && p.exit().is_none());
        let Some(exec) = exec else { return };
        if exec.record_exit(exit.status as u32, exit.timestamp) {
            log::debug!(
                "exec {} of {} (pid {pid}) exited with {}",
                exec.id,
                self.id,
                exit.status
            );
            tokio::spawn(self.publish_exit(exec));
        }
    }
}

/// Runs a runc call that hands a terminal to the shim through `console`. A runc that fails is
/// reported at once (it will never connect to the socket; waiting for the console's deadline
/// would only delay its error); a console that fails while runc still runs is reported after
/// runc's own outcome, whose error says more.
async fn with_console(
    ran: impl std::future::Future<Output = runc_wrapper::Result<()>>,
    console: &ConsoleSocket,
    op: &'static str,
) -> Result<std::os::fd::OwnedFd> {
    let receive = console.receive(deadline::CONSOLE);
    tokio::pin!(ran, receive);
    tokio::select! {
        ran_result = &mut ran => {
            ran_result.map_err(|e| Error::runtime(op, e))?;
            Ok(receive.await?)
        }
        master = &mut receive => {
            ran.await.map_err(|e| Error::runtime(op, e))?;
            Ok(master?)
        }
    }
}

fn read_spec(bundle: &Path) -> Result<serde_json::Value> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            Error::InvalidArgument(format!("bundle {} has no config.json", bundle.display()))
        }
        _ => Error::io(format!("read {}", path.display()), e),
    })?;
    serde_json::from_slice(&data)
        .map_err(|e| Error::InvalidArgument(format!("invalid {}: {e}", path.display())))
}

/// Without a pid namespace of its own, the init's death does not kill the rest of the
/// container; the shim does (as containerd's Go shim does).
fn has_private_pid_namespace(spec: &serde_json::Value) -> bool {
    spec["linux"]["namespaces"]
        .as_array()
        .map(|nss| {
            nss.iter()
                .any(|ns| ns["type"] == "pid" && ns["path"].as_str().unwrap_or("").is_empty())
        })
        .unwrap_or(false)
}

fn read_pid_file(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read pid file {}", path.display()), e))?;
    text.trim().parse().map_err(|_| {
        Error::Internal(format!(
            "pid file {} holds {text:?}, not a pid",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_pid_namespace_detection() {
        let own =
            serde_json::json!({"linux": {"namespaces": [{"type": "mount"}, {"type": "pid"}]}});
        let shared = serde_json::json!({"linux": {"namespaces": [{"type": "pid", "path": "/proc/1/ns/pid"}]}});
        let none = serde_json::json!({"linux": {"namespaces": [{"type": "mount"}]}});
        assert!(has_private_pid_namespace(&own));
        assert!(!has_private_pid_namespace(&shared));
        assert!(!has_private_pid_namespace(&none));
    }
}
