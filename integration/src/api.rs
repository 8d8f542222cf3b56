//! containerd's own gRPC API (containers, snapshots, tasks, events), as its Go client drives it:
//! what `ctr` 1.6 cannot do (create a task without starting it, Wait, CloseIO of stdin, exec
//! with a terminal and ResizePty) is done here. The generated client is the `containerd-client`
//! crate (tonic 0.14, as the CRI test uses); its protos are containerd 2's, a superset on the
//! wire of 1.6's for these services.
//!
//! Stdio goes through FIFOs the test makes itself, every one opened non-blocking.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::events_client::EventsClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::*;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Request, Status};
use containerd_client::types::Mount;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containerd::NAMESPACE;

pub use containerd_client::tonic;

/// The type URLs containerd registers for the OCI spec and a process spec.
pub const SPEC_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
pub const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// The runc shim's options type (`runtime.v2.runc.v1.Options`, shared by both shims).
pub const RUNC_OPTIONS_TYPE: &str = "containerd.runc.v1.Options";
/// Every API call is bounded: a hang is a failure, not a stuck test.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// One connection to containerd's gRPC socket, every request in `NAMESPACE`.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
}

/// A gRPC outcome: the answer or the status containerd returned (code and message).
pub type Res<T> = Result<T, Status>;

impl Api {
    pub async fn connect(address: &str) -> anyhow::Result<Api> {
        let channel = containerd_client::connect(address)
            .await
            .with_context(|| format!("connect to {address}"))?;
        Ok(Api { channel })
    }

    pub fn req<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        r.metadata_mut()
            .insert("containerd-namespace", NAMESPACE.parse().expect("ascii"));
        r.set_timeout(CALL_TIMEOUT);
        r
    }

    pub fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.channel.clone())
    }

    pub fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.channel.clone())
    }

    pub fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.channel.clone())
    }

    pub async fn container(&self, id: &str) -> anyhow::Result<Container> {
        self.containers()
            .get(self.req(GetContainerRequest { id: id.into() }))
            .await?
            .into_inner()
            .container
            .ok_or_else(|| anyhow!("container {id}: no record"))
    }

    /// The container's OCI spec as JSON.
    pub async fn spec(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let c = self.container(id).await?;
        let spec = c.spec.ok_or_else(|| anyhow!("container {id}: no spec"))?;
        Ok(serde_json::from_slice(&spec.value)?)
    }

    /// Replaces the container's OCI spec.
    pub async fn set_spec(&self, id: &str, spec: &serde_json::Value) -> anyhow::Result<()> {
        let mut c = self.container(id).await?;
        c.spec = Some(prost_types::Any {
            type_url: SPEC_TYPE.into(),
            value: serde_json::to_vec(spec)?,
        });
        self.containers()
            .update(self.req(UpdateContainerRequest {
                container: Some(c),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["spec".into()],
                }),
            }))
            .await?;
        Ok(())
    }

    /// The rootfs mounts of the container's snapshot (what the Go client passes to Create).
    pub async fn rootfs(&self, id: &str) -> anyhow::Result<Vec<Mount>> {
        let c = self.container(id).await?;
        Ok(self
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: c.snapshotter,
                key: c.snapshot_key,
            }))
            .await?
            .into_inner()
            .mounts)
    }

    /// Tasks.Create with the container's rootfs and the given stdio (FIFO paths or empty).
    pub async fn create(&self, id: &str, io: &Stdio, terminal: bool) -> anyhow::Result<Res<u32>> {
        let rootfs = self.rootfs(id).await?;
        Ok(self
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.into(),
                rootfs,
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal,
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner().pid))
    }

    pub async fn start(&self, id: &str, exec: &str) -> Res<u32> {
        self.tasks()
            .start(self.req(StartRequest {
                container_id: id.into(),
                exec_id: exec.into(),
            }))
            .await
            .map(|r| r.into_inner().pid)
    }

    pub async fn kill(&self, id: &str, exec: &str, signal: i32, all: bool) -> Res<()> {
        self.tasks()
            .kill(self.req(KillRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                signal: signal as u32,
                all,
            }))
            .await
            .map(|_| ())
    }

    /// Tasks.Delete of the init: its exit status.
    pub async fn delete(&self, id: &str) -> Res<DeleteResponse> {
        self.tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn delete_process(&self, id: &str, exec: &str) -> Res<DeleteResponse> {
        self.tasks()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.into(),
                exec_id: exec.into(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    pub async fn get(&self, id: &str, exec: &str) -> Res<containerd_client::types::v1::Process> {
        self.tasks()
            .get(self.req(GetRequest {
                container_id: id.into(),
                exec_id: exec.into(),
            }))
            .await
            .map(|r| r.into_inner().process.unwrap_or_default())
    }

    /// Tasks.Wait sent now and answered in the background (as the Go client's `Wait` channel).
    pub fn wait(&self, id: &str, exec: &str) -> tokio::task::JoinHandle<Res<WaitResponse>> {
        let api = self.clone();
        let (id, exec) = (id.to_string(), exec.to_string());
        tokio::spawn(async move {
            let mut r = api.req(WaitRequest {
                container_id: id,
                exec_id: exec,
            });
            // A Wait lasts as long as the process: no deadline of its own (the caller bounds it).
            r.set_timeout(Duration::from_secs(3600));
            api.tasks().wait(r).await.map(|r| r.into_inner())
        })
    }

    /// Tasks.Exec of `args` with the init's process spec otherwise.
    pub async fn exec(
        &self,
        id: &str,
        exec: &str,
        args: &[&str],
        io: &Stdio,
        terminal: bool,
    ) -> anyhow::Result<Res<()>> {
        let mut process = self.spec(id).await?["process"].clone();
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(terminal);
        Ok(self.exec_spec(id, exec, &process, io, terminal).await)
    }

    pub async fn exec_spec(
        &self,
        id: &str,
        exec: &str,
        process: &serde_json::Value,
        io: &Stdio,
        terminal: bool,
    ) -> Res<()> {
        self.tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.into(),
                stdin: io.stdin.clone(),
                stdout: io.stdout.clone(),
                stderr: io.stderr.clone(),
                terminal,
                spec: Some(prost_types::Any {
                    type_url: PROCESS_TYPE.into(),
                    value: serde_json::to_vec(process).expect("json"),
                }),
                exec_id: exec.into(),
            }))
            .await
            .map(|_| ())
    }

    pub async fn resize(&self, id: &str, exec: &str, width: u32, height: u32) -> Res<()> {
        self.tasks()
            .resize_pty(self.req(ResizePtyRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                width,
                height,
            }))
            .await
            .map(|_| ())
    }

    pub async fn close_stdin(&self, id: &str, exec: &str) -> Res<()> {
        self.tasks()
            .close_io(self.req(CloseIoRequest {
                container_id: id.into(),
                exec_id: exec.into(),
                stdin: true,
            }))
            .await
            .map(|_| ())
    }

    pub async fn pids(&self, id: &str) -> Res<Vec<u32>> {
        self.tasks()
            .list_pids(self.req(ListPidsRequest {
                container_id: id.into(),
            }))
            .await
            .map(|r| r.into_inner().processes.iter().map(|p| p.pid).collect())
    }

    pub async fn update_resources(&self, id: &str, resources: &serde_json::Value) -> Res<()> {
        self.tasks()
            .update(self.req(UpdateTaskRequest {
                container_id: id.into(),
                resources: Some(prost_types::Any {
                    type_url:
                        "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
                    value: serde_json::to_vec(resources).expect("json"),
                }),
                ..Default::default()
            }))
            .await
            .map(|_| ())
    }

    pub async fn metrics(&self, id: &str) -> Res<Vec<containerd_client::types::Metric>> {
        self.tasks()
            .metrics(self.req(MetricsRequest {
                filters: vec![format!("id=={id}")],
            }))
            .await
            .map(|r| r.into_inner().metrics)
    }

    /// Subscribes to every event of `NAMESPACE`, collected in the background. containerd's
    /// gRPC server answers a Subscribe (its headers) only with the first event, so the call is
    /// made in the background and pings are published until one comes back: then the
    /// subscription is known to be in place.
    pub async fn events(&self) -> anyhow::Result<Events> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut client = EventsClient::new(self.channel.clone());
        let task = tokio::spawn(async move {
            let Ok(stream) = client
                .subscribe(Request::new(SubscribeRequest {
                    filters: vec![format!("namespace=={NAMESPACE}")],
                }))
                .await
            else {
                return;
            };
            let mut stream = stream.into_inner();
            while let Ok(Some(envelope)) = stream.message().await {
                let event = Event::from_envelope(envelope);
                sink.lock().expect("events").push(event);
            }
        });
        let events = Events { seen, task };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            EventsClient::new(self.channel.clone())
                .publish(self.req(PublishRequest {
                    topic: "/rshim/ping".into(),
                    event: Some(prost_types::Any {
                        type_url: "containerd.events.ContainerCreate".into(),
                        value: Vec::new(),
                    }),
                }))
                .await
                .context("publish a ping event")?;
            if events
                .seen
                .lock()
                .expect("events")
                .iter()
                .any(|e| e.topic == "/rshim/ping")
            {
                return Ok(events);
            }
            if Instant::now() > deadline {
                bail!("the event subscription saw none of its pings within 20s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// One event: its topic, the container it is about, and for /tasks/exit the process and status.
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub container: String,
    pub exit: Option<containerd_client::events::TaskExit>,
}

impl Event {
    fn from_envelope(e: containerd_client::types::Envelope) -> Event {
        let any = e.event.unwrap_or_default();
        let (container, exit) = if e.topic == "/tasks/exit" {
            let exit = containerd_client::events::TaskExit::decode(any.value.as_slice()).ok();
            (
                exit.as_ref()
                    .map(|x| x.container_id.clone())
                    .unwrap_or_default(),
                exit,
            )
        } else {
            // Every task and container event has the container's id in field 1.
            (first_string(&any.value).unwrap_or_default(), None)
        };
        Event {
            topic: e.topic,
            container,
            exit,
        }
    }
}

/// Field 1 of a protobuf message when it is a string (`container_id` / `id`).
fn first_string(buf: &[u8]) -> Option<String> {
    if buf.first() != Some(&0x0a) {
        return None;
    }
    let mut rest = &buf[1..];
    let len = prost::encoding::decode_varint(&mut rest).ok()? as usize;
    rest.get(..len)
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

pub struct Events {
    seen: Arc<Mutex<Vec<Event>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Events {
    pub fn of(&self, container: &str) -> Vec<Event> {
        self.seen
            .lock()
            .expect("events")
            .iter()
            .filter(|e| e.container == container)
            .cloned()
            .collect()
    }

    /// Polls (bounded) until an event about `container` satisfies `f`.
    pub async fn wait_for(
        &self,
        container: &str,
        timeout: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.of(container).into_iter().find(|e| f(e)) {
                return Some(e);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stdio paths for Create/Exec: FIFOs (made by `Fifos`) or empty (none).
#[derive(Debug, Clone, Default)]
pub struct Stdio {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// A directory of FIFOs for one process, removed on drop.
pub struct Fifos {
    pub dir: tempfile::TempDir,
}

impl Fifos {
    pub fn new() -> anyhow::Result<Fifos> {
        Ok(Fifos {
            dir: tempfile::Builder::new()
                .prefix("rsh-fifo-")
                .tempdir_in("/tmp")?,
        })
    }

    /// Makes the FIFO `name` in the directory and returns its path.
    pub fn make(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", path.display()))?;
        Ok(path)
    }

    /// `Stdio` of FIFOs `<prefix>-in`/`-out`/`-err` as asked.
    pub fn stdio(&self, prefix: &str, stdin: bool, stdout: bool, stderr: bool) -> Stdio {
        let make = |want: bool, suffix: &str| -> String {
            if !want {
                return String::new();
            }
            self.make(&format!("{prefix}-{suffix}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Stdio {
            stdin: make(stdin, "in"),
            stdout: make(stdout, "out"),
            stderr: make(stderr, "err"),
        }
    }
}

/// Everything that comes out of a FIFO, read in the background. Opened read-write and
/// non-blocking: the open never waits for the shim, and no EOF is seen before the shim opens
/// its end; the reader knows what it expects and polls for it with a bound.
pub struct Collector {
    data: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Collector> {
        let mut rx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path.as_ref())
            .with_context(|| format!("open {}", path.as_ref().display()))?;
        let data = Arc::new(Mutex::new(Vec::new()));
        let sink = data.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = rx.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock().expect("collector").extend_from_slice(&buf[..n]);
            }
        });
        Ok(Collector { data, task })
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.data.lock().expect("collector").clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Polls (bounded) until what was read satisfies `f`; returns whether it did.
    pub async fn wait_for(&self, timeout: Duration, f: impl Fn(&[u8]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f(&self.data.lock().expect("collector")) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The writing end of a stdin FIFO, opened read-write and non-blocking (never waits for the
/// shim; the data stays in the FIFO until the shim reads it).
pub struct Feeder {
    tx: tokio::net::unix::pipe::Sender,
}

impl Feeder {
    pub fn open(path: impl AsRef<Path>) -> anyhow::Result<Feeder> {
        let tx = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path.as_ref())
            .with_context(|| format!("open {}", path.as_ref().display()))?;
        Ok(Feeder { tx })
    }

    /// Writes all of `data` (bounded), then closes the FIFO.
    pub async fn write_all_and_close(
        mut self,
        data: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        match tokio::time::timeout(timeout, self.tx.write_all(data)).await {
            Ok(r) => r.context("write stdin")?,
            Err(_) => bail!("stdin: {} bytes not taken within {timeout:?}", data.len()),
        }
        Ok(())
    }

    pub async fn write(&mut self, data: &[u8]) -> anyhow::Result<()> {
        tokio::time::timeout(CALL_TIMEOUT, self.tx.write_all(data))
            .await
            .context("stdin write timed out")??;
        Ok(())
    }
}
