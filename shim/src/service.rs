//! The Task service: translates each ttrpc request once, validates it, and hands the work to
//! the container it names.
//!
//! Handlers can be dropped at any await (the ttrpc server drops them when `timeout_nano`
//! passes or the connection closes). State-changing work therefore runs in its own task
//! (`detached`) that always finishes or rolls back under its own deadlines; the handler only
//! waits for it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::{EnumOrUnknown, Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::types::task::{ProcessInfo, Status as TaskStatus};
use tokio::sync::Notify;

use crate::checkpoint::{self, RestoreSpec};
use crate::container::{Container, CreateRequest, Shared};
use crate::error::{Error, Result};
use crate::events::timestamp;
use crate::options::RuncOptions;
use crate::process::{ExitInfo, Status};
use crate::rootfs::MountSpec;
use crate::stdio::StdioConfig;

pub struct TaskService {
    shared: Shared,
    containers: Mutex<Containers>,
    /// Notified when the shim should exit (Shutdown with no container left).
    pub shutdown: Arc<Notify>,
}

#[derive(Default)]
struct Containers {
    ready: HashMap<String, Arc<Container>>,
    /// Ids whose Create is in progress (reserved against a concurrent duplicate).
    creating: std::collections::HashSet<String>,
    /// Set by a Shutdown that found no container: the shim is going away (it still flushes
    /// its events for a few seconds), so it takes no new work.
    shutting_down: bool,
}

/// Runs `fut` in its own task so that a dropped handler cannot abandon it half-way.
async fn detached<T, F>(fut: F) -> Result<T>
where
    F: std::future::Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    tokio::spawn(fut)
        .await
        .map_err(|e| Error::Internal(format!("task failed: {e}")))?
}

/// Held by a handler while it waits for a detached operation: dropped before `answered` (the
/// caller's deadline passed, or its connection closed), it sets the flag the operation reads.
struct Abandoned(Arc<std::sync::atomic::AtomicBool>, bool);

impl Abandoned {
    fn new() -> (Abandoned, Arc<std::sync::atomic::AtomicBool>) {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        (Abandoned(flag.clone(), true), flag)
    }

    fn answered(mut self) {
        self.1 = false;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.1 {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

fn require(field: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        Err(Error::InvalidArgument(format!("{field} must not be empty")))
    } else {
        Ok(())
    }
}

impl TaskService {
    pub fn new(shared: Shared) -> TaskService {
        TaskService {
            shared,
            containers: Mutex::new(Containers::default()),
            shutdown: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Containers> {
        self.containers.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        require("id", id)?;
        self.lock()
            .ready
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not found")))
    }

    pub async fn create(self: Arc<Self>, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        require("id", &req.id)?;
        require("bundle", &req.bundle)?;
        if req.checkpoint.is_empty() && !req.parent_checkpoint.is_empty() {
            return Err(Error::InvalidArgument(
                "parent_checkpoint without checkpoint".into(),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        if !bundle.is_dir() {
            return Err(Error::InvalidArgument(format!(
                "bundle {} is not a directory",
                req.bundle
            )));
        }
        let options = RuncOptions::from_any(req.options.as_ref())?;
        let restore = RestoreSpec::from_create(&req.checkpoint, &req.parent_checkpoint, &options);
        let request = CreateRequest {
            id: req.id.clone(),
            bundle,
            rootfs: req
                .rootfs
                .iter()
                .map(|m| MountSpec {
                    kind: m.type_.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    options: m.options.clone(),
                })
                .collect(),
            stdio: StdioConfig {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            options,
            restore,
        };
        {
            let mut c = self.lock();
            if c.shutting_down {
                return Err(Error::FailedPrecondition(format!(
                    "cannot create {}: the shim is shutting down",
                    req.id
                )));
            }
            if c.ready.contains_key(&req.id) || !c.creating.insert(req.id.clone()) {
                return Err(Error::AlreadyExists(format!(
                    "container {} already exists",
                    req.id
                )));
            }
        }
        let svc = self.clone();
        // Set if this handler is dropped before Create finished (the caller's deadline passed
        // or its connection closed): the detached Create then rolls itself back.
        let (waiting, gone) = Abandoned::new();
        let created = detached(async move {
            let id = request.id.clone();
            let result = Container::create(request, svc.shared.clone(), || {
                gone.load(std::sync::atomic::Ordering::SeqCst)
            })
            .await;
            let mut c = svc.lock();
            c.creating.remove(&id);
            let container = result?;
            let pid = container.init.pid();
            c.ready.insert(id, container);
            Ok(CreateTaskResponse {
                pid,
                ..Default::default()
            })
        })
        .await;
        waiting.answered();
        created
    }

    pub async fn start(self: Arc<Self>, req: StartRequest) -> Result<StartResponse> {
        let container = self.container(&req.id)?;
        let pid = detached(async move { container.start(&req.exec_id).await }).await?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    pub async fn state(self: Arc<Self>, req: StateRequest) -> Result<StateResponse> {
        let container = self.container(&req.id)?;
        let p = container.process(&req.exec_id)?;
        let status = match p.status() {
            Status::Created => TaskStatus::CREATED,
            Status::Running => TaskStatus::RUNNING,
            Status::Paused => TaskStatus::PAUSED,
            Status::Stopped => TaskStatus::STOPPED,
            Status::Deleted => {
                return Err(Error::NotFound(format!("process {} was deleted", p.id)))
            }
        };
        let exit = p.exit();
        Ok(StateResponse {
            id: p.id.clone(),
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: p.pid(),
            status: EnumOrUnknown::new(status),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or_default(),
            exited_at: MessageField::from_option(exit.map(|e| timestamp(e.at))),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    /// Wait may stay pending for the life of the process and is never cancelled by containerd
    /// (ttrpc has no cancel frame): the lookups happen now, and the future that stays holds
    /// only the process and its exit subscription.
    pub fn wait(
        self: Arc<Self>,
        req: WaitRequest,
    ) -> impl std::future::Future<Output = Result<WaitResponse>> + Send + 'static {
        let process = self
            .container(&req.id)
            .and_then(|c| c.process(&req.exec_id))
            .map_err(Box::new);
        async move { Ok(wait_response(process.map_err(|e| *e)?.wait().await?)) }
    }

    pub async fn kill(self: Arc<Self>, req: KillRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        // 0 checks that the process exists (kill(2)); runc and the Go shim accept it.
        if req.signal > 64 {
            return Err(Error::InvalidArgument(format!(
                "invalid signal {}",
                req.signal
            )));
        }
        detached(async move { container.kill(&req.exec_id, req.signal, req.all).await }).await?;
        Ok(Empty::new())
    }

    pub async fn delete(self: Arc<Self>, req: DeleteRequest) -> Result<DeleteResponse> {
        let container = self.container(&req.id)?;
        let svc = self.clone();
        let (pid, exit) = detached(async move {
            if !req.exec_id.is_empty() {
                return container.delete_exec(&req.exec_id).await;
            }
            let result = container.delete_init().await?;
            svc.lock().ready.remove(&container.id);
            Ok(result)
        })
        .await?;
        Ok(delete_response(pid, exit))
    }

    pub async fn exec(self: Arc<Self>, req: ExecProcessRequest) -> Result<Empty> {
        require("exec_id", &req.exec_id)?;
        let container = self.container(&req.id)?;
        let spec_any = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec spec is missing".into()))?;
        let mut spec: oci_spec::runtime::Process = serde_json::from_slice(&spec_any.value)
            .map_err(|e| Error::InvalidArgument(format!("invalid exec process spec: {e}")))?;
        // The request decides whether the exec has a terminal, not the spec (as in the Go
        // shim): runc refuses a console socket for a process spec without one.
        spec.set_terminal(Some(req.terminal));
        let stdio = StdioConfig {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        container.add_exec(&req.exec_id, stdio, spec)?;
        Ok(Empty::new())
    }

    pub async fn pids(self: Arc<Self>, req: PidsRequest) -> Result<PidsResponse> {
        let container = self.container(&req.id)?;
        let pids = container.pids().await?;
        let execs = container.exec_processes();
        let processes = pids
            .into_iter()
            .map(|pid| {
                let mut info = ProcessInfo {
                    pid: pid as u32,
                    ..Default::default()
                };
                if let Some(exec) = execs.iter().find(|e| e.pid() == pid as u32) {
                    let details = ProcessDetails {
                        exec_id: exec.id.clone(),
                        ..Default::default()
                    };
                    info.info = MessageField::some(Any {
                        type_url: "containerd.runc.v1.ProcessDetails".into(),
                        value: details.write_to_bytes().unwrap_or_default(),
                        ..Default::default()
                    });
                }
                info
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    pub async fn pause(self: Arc<Self>, req: PauseRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        detached(async move { container.pause().await }).await?;
        Ok(Empty::new())
    }

    pub async fn resume(self: Arc<Self>, req: ResumeRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        detached(async move { container.resume().await }).await?;
        Ok(Empty::new())
    }

    pub async fn close_io(self: Arc<Self>, req: CloseIORequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        let p = container.process(&req.exec_id)?;
        if req.stdin {
            if let Some(io) = p.io() {
                io.close_stdin();
            }
        }
        Ok(Empty::new())
    }

    pub async fn resize_pty(self: Arc<Self>, req: ResizePtyRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        let p = container.process(&req.exec_id)?;
        // A resize that arrives after the process exited is harmless and answered without an
        // error: clients resize as soon as they attach, which can be just after a short
        // process ended (`ctr task exec -t ... true` showed "cannot resize a stopped
        // container" now and then with the Go shim's rule). The pty may still be open.
        if p.status() == Status::Deleted {
            return Err(crate::process::gone(&p.id));
        }
        if let Some(io) = p.io() {
            io.resize(req.width, req.height)?;
        }
        Ok(Empty::new())
    }

    pub async fn update(self: Arc<Self>, req: UpdateTaskRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("resources are missing".into()))?;
        let resources: oci_spec::runtime::LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| Error::InvalidArgument(format!("invalid resources: {e}")))?;
        detached(async move { container.update(&resources).await }).await?;
        Ok(Empty::new())
    }

    pub async fn connect(self: Arc<Self>, req: ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self
            .container(&req.id)
            .map(|c| c.init.pid())
            .unwrap_or_default();
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            ..Default::default()
        })
    }

    pub async fn shutdown(self: Arc<Self>, _req: ShutdownRequest) -> Result<Empty> {
        // A pod shim serves several containers: it exits only when the last one is deleted.
        // Decided under the lock Create takes, so no Create can slip in after it.
        let mut c = self.lock();
        if c.ready.is_empty() && c.creating.is_empty() {
            c.shutting_down = true;
            self.shutdown.notify_one();
        }
        Ok(Empty::new())
    }

    pub async fn stats(self: Arc<Self>, req: StatsRequest) -> Result<StatsResponse> {
        let stats = self.container(&req.id)?.stats().await?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    pub async fn checkpoint(self: Arc<Self>, req: CheckpointTaskRequest) -> Result<Empty> {
        let container = self.container(&req.id)?;
        let options = checkpoint::parse_options(req.options.as_ref())?;
        detached(async move { container.checkpoint(&req.path, &options).await }).await?;
        Ok(Empty::new())
    }

    /// For the diagnostics dump (SIGUSR1): every container's processes with their pending
    /// Waits, then the runc calls in flight.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .lock()
            .ready
            .values()
            .flat_map(|c| {
                std::iter::once(c.init.clone())
                    .chain(c.exec_processes())
                    .map(|p| {
                        format!(
                            "container={} process={} pid={} status={} pending_waits={}",
                            c.id,
                            p.id,
                            p.pid(),
                            p.status().name(),
                            p.pending_waits()
                        )
                    })
            })
            .collect();
        lines.extend(runc_wrapper::inflight::describe());
        lines.extend(crate::blocking::describe());
        lines
    }
}

/// What a Wait answers at the exit, parked (`rpc`) or not.
pub fn wait_response(exit: ExitInfo) -> WaitResponse {
    WaitResponse {
        exit_status: exit.status,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }
}

fn delete_response(pid: u32, exit: Option<ExitInfo>) -> DeleteResponse {
    DeleteResponse {
        pid,
        exit_status: exit.map(|e| e.status).unwrap_or_default(),
        exited_at: MessageField::from_option(exit.map(|e| timestamp(e.at))),
        ..Default::default()
    }
}
