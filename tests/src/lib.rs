//! Fixtures for driving the shim binary directly: a busybox bundle, a shim started with its
//! `start` action, an events server standing in for containerd's, and FIFOs for stdio.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{
    DeleteRequest, DeleteResponse, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest, StateResponse,
    WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events};
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

pub const NAMESPACE: &str = "rshim-test";

/// The shim binary: `RSHIM_BIN`, else the workspace's target/{debug,release}.
pub fn shim_binary() -> PathBuf {
    if let Ok(p) = std::env::var("RSHIM_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(root.join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join("containerd-shim-rshim-v2");
        if p.exists() {
            return p;
        }
    }
    panic!(
        "shim binary not found under {}: run `cargo build --workspace --bins` first",
        target.display()
    );
}

pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A bundle with a busybox rootfs and a config.json running `args`.
pub struct Bundle {
    pub dir: tempfile::TempDir,
}

impl Bundle {
    pub fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("rshim-bundle")
            .tempdir()
            .unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
            .expect("busybox-static is installed");
        for applet in [
            "sh", "cat", "echo", "sleep", "true", "false", "head", "dd", "yes", "ls", "tty", "id",
            "kill", "wc",
        ] {
            symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(dir.path())
            .output()
            .expect("runc is installed");
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bundle = Bundle { dir };
        bundle.edit_spec(|spec| {
            spec["process"]["args"] = serde_json::json!(args);
            spec["process"]["terminal"] = serde_json::json!(false);
            spec["root"]["readonly"] = serde_json::json!(false);
        });
        bundle
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn edit_spec(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let path = self.path().join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        f(&mut spec);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    }
}

/// The shim's log FIFO (`log` in the bundle), held open read-write so the shim can always
/// write to it, read without blocking.
pub struct LogFifo(std::fs::File);

impl LogFifo {
    pub fn create(bundle: &Bundle) -> LogFifo {
        let path = bundle.path().join("log");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        LogFifo(file)
    }

    /// Reads the log until `done` holds for what was read, for at most `bound`.
    pub async fn read_until(&mut self, bound: Duration, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + bound;
        let mut text = String::new();
        let mut buf = [0u8; 65536];
        while !done(&text) {
            assert!(Instant::now() < deadline, "log after {bound:?}:\n{text}");
            match self.0.read(&mut buf) {
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("read log FIFO: {e}"),
            }
        }
        text
    }
}

/// FIFOs for a process's stdio, with the test holding the client ends as containerd would.
pub struct Fifos {
    pub dir: tempfile::TempDir,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

impl Fifos {
    pub fn new() -> Fifos {
        let dir = tempfile::Builder::new()
            .prefix("rshim-fifo")
            .tempdir()
            .unwrap();
        let mk = |name: &str| {
            let p = dir.path().join(name);
            nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            p.to_string_lossy().into_owned()
        };
        let (stdin, stdout, stderr) = (mk("stdin"), mk("stdout"), mk("stderr"));
        Fifos {
            dir,
            stdin,
            stdout,
            stderr,
        }
    }

    /// Reads `path` to EOF in a thread, as containerd does: a blocking open (it returns once
    /// the shim opens its end), then reads until the shim closes it.
    pub fn collect(path: &str) -> Collected {
        let path = path.to_string();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            if let Ok(mut f) = std::fs::File::open(&path) {
                let _ = f.read_to_end(&mut out);
            }
            let _ = tx.send(out);
        });
        Collected(rx)
    }
}

/// Output being collected from a FIFO.
pub struct Collected(std::sync::mpsc::Receiver<Vec<u8>>);

impl Collected {
    /// Everything written until the shim closed the FIFO (bounded wait).
    pub fn join(self) -> Vec<u8> {
        self.0
            .recv_timeout(Duration::from_secs(30))
            .expect("FIFO not closed within 30s")
    }
}

impl Default for Fifos {
    fn default() -> Self {
        Self::new()
    }
}

/// (topic, event payload) in arrival order.
type Recorded = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// Records the events the shim forwards, standing in for containerd's events service.
/// Recorded events, and the topic the server refuses (answers with an error), if any.
#[derive(Clone, Default)]
pub struct EventLog(Recorded, Option<&'static str>);

impl EventLog {
    pub fn topics(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }

    pub fn payloads(&self, topic: &str) -> Vec<Vec<u8>> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Waits (bounded) until `pred` holds over the topics.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let topics = self.topics();
            if pred(&topics) {
                return topics;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events so far: {topics:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[async_trait::async_trait]
impl Events for EventLog {
    async fn forward(
        &self,
        _ctx: &ttrpc::r#async::TtrpcContext,
        req: ForwardRequest,
    ) -> ttrpc::Result<Empty> {
        let env = req.envelope.into_option().unwrap_or_default();
        if Some(env.topic.as_str()) == self.1 {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("{} refused by the test", env.topic),
            )));
        }
        self.0
            .lock()
            .unwrap()
            .push((env.topic, env.event.value.clone()));
        Ok(Empty::new())
    }
}

/// An events server on a temp unix socket.
pub struct EventServer {
    pub log: EventLog,
    pub address: String,
    _server: ttrpc::r#async::Server,
    _dir: tempfile::TempDir,
}

impl EventServer {
    pub async fn start() -> EventServer {
        EventServer::refusing(None).await
    }

    /// An events server that answers every event of `topic` with InvalidArgument.
    pub async fn refusing(topic: Option<&'static str>) -> EventServer {
        let dir = tempfile::Builder::new()
            .prefix("rshim-ev")
            .tempdir()
            .unwrap();
        let path = dir.path().join("events.sock");
        let log = EventLog(Recorded::default(), topic);
        let service: Arc<dyn Events + Send + Sync> = Arc::new(log.clone());
        let mut server = ttrpc::r#async::Server::new()
            .bind(&format!("unix://{}", path.display()))
            .unwrap()
            .register_service(create_events(service));
        server.start().await.unwrap();
        EventServer {
            log,
            address: path.to_string_lossy().into_owned(),
            _server: server,
            _dir: dir,
        }
    }
}

/// A shim started the way containerd starts one: the `start` action in the bundle.
pub struct Shim {
    pub address: String,
    pub pid: i32,
    pub task: TaskClient,
    pub client: Client,
}

impl Shim {
    /// Runs the binary's `start` action for container `id` of `bundle`, as containerd does;
    /// returns the address it prints.
    pub fn start_action(id: &str, bundle: &Path, events: &str) -> String {
        Shim::start_action_logging(id, bundle, events, true)
    }

    /// The `start` action, with `-debug` or without it (the shim then logs at info).
    pub fn start_action_logging(id: &str, bundle: &Path, events: &str, debug: bool) -> String {
        let env = [("TTRPC_ADDRESS", events)];
        let out = Shim::run_start_logging(id, bundle, &env, b"", debug);
        let address = String::from_utf8(out).unwrap().trim().to_string();
        assert!(
            address.starts_with("unix:///run/containerd/s/"),
            "address {address:?}"
        );
        address
    }

    /// The `start` action with this environment and stdin; returns its stdout.
    pub fn run_start(id: &str, bundle: &Path, env: &[(&str, &str)], stdin: &[u8]) -> Vec<u8> {
        Shim::run_start_logging(id, bundle, env, stdin, true)
    }

    fn run_start_logging(
        id: &str,
        bundle: &Path,
        env: &[(&str, &str)],
        stdin: &[u8],
        debug: bool,
    ) -> Vec<u8> {
        use std::io::Write;
        let fake_containerd = format!("/tmp/rshim-test-{}.sock", std::process::id());
        let mut args = vec![
            "-namespace",
            NAMESPACE,
            "-id",
            id,
            "-address",
            &fake_containerd,
        ];
        if debug {
            args.push("-debug");
        }
        args.push("start");
        let mut child = Command::new(shim_binary())
            .args(args)
            .current_dir(bundle)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run shim start");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "shim start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// Starts a shim for container `id` of `bundle`, publishing to `events`.
    pub async fn start(id: &str, bundle: &Path, events: &str) -> Shim {
        Shim::start_logging(id, bundle, events, true).await
    }

    /// Starts a shim with `-debug` or without it.
    pub async fn start_logging(id: &str, bundle: &Path, events: &str, debug: bool) -> Shim {
        let address = Shim::start_action_logging(id, bundle, events, debug);
        Shim::attach(&address, id, TaskClient::V2).await
    }

    /// Connects to the shim at `address` through the Task service `service` (v2 or v3).
    pub async fn attach(address: &str, id: &str, service: &'static str) -> Shim {
        let address = address.to_string();
        let client = Client::connect(&address, Duration::from_secs(5))
            .await
            .expect("connect to shim");
        let task = TaskClient::new(client.clone(), service);
        let pid = task
            .connect(
                containerd_shim_protos::api::ConnectRequest {
                    id: id.into(),
                    ..Default::default()
                },
                &opts(),
            )
            .await
            .expect("Connect")
            .shim_pid as i32;
        Shim {
            address,
            pid,
            task,
            client,
        }
    }

    pub fn socket_path(&self) -> String {
        self.address.trim_start_matches("unix://").to_string()
    }

    /// Alive and not a zombie (nothing may reap an orphaned shim on a machine whose pid 1
    /// does not).
    pub fn alive(&self) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid), None).is_ok()
            && !is_zombie(self.pid)
    }

    /// Shutdown, then wait (bounded) for the process to be gone.
    pub async fn shutdown(&self) {
        let _ = self
            .task
            .shutdown(
                ShutdownRequest {
                    ..Default::default()
                },
                &opts(),
            )
            .await;
        self.wait_gone(Duration::from_secs(10)).await;
    }

    pub async fn wait_gone(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.alive() {
            assert!(
                Instant::now() < deadline,
                "shim {} still alive after {bound:?}",
                self.pid
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Task calls in the shape the tests repeat: by container id (and exec id, `""` for the init),
/// with `opts()`. The answer is returned as is, for `.unwrap()` or `.unwrap_err()`; `shim.task`
/// takes any other request or option.
impl Shim {
    pub async fn state(&self, id: &str) -> ttrpc_client::Result<StateResponse> {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.task.state(req, &opts()).await
    }

    /// Starts the init (`exec_id` empty) or an exec.
    pub async fn start_process(
        &self,
        id: &str,
        exec_id: &str,
    ) -> ttrpc_client::Result<StartResponse> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.task.start(req, &opts()).await
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> ttrpc_client::Result<WaitResponse> {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.task.wait(req, &opts()).await
    }

    /// The exit status of the init or an exec, once it has exited.
    pub async fn wait_exit(&self, id: &str, exec_id: &str) -> u32 {
        self.wait(id, exec_id).await.expect("Wait").exit_status
    }

    pub async fn kill(&self, id: &str, exec_id: &str, signal: u32) -> ttrpc_client::Result<Empty> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.task.kill(req, &opts()).await
    }

    pub async fn delete(&self, id: &str, exec_id: &str) -> ttrpc_client::Result<DeleteResponse> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.task.delete(req, &opts()).await
    }

    /// SIGKILL, Wait and Delete of a container's init: the end of most scenarios.
    pub async fn kill_and_delete(&self, id: &str) {
        self.kill(id, "", 9).await.expect("Kill");
        self.wait(id, "").await.expect("Wait");
        self.delete(id, "").await.expect("Delete");
    }

    pub async fn pause(&self, id: &str) -> ttrpc_client::Result<Empty> {
        let req = PauseRequest {
            id: id.into(),
            ..Default::default()
        };
        self.task.pause(req, &opts()).await
    }

    pub async fn resume(&self, id: &str) -> ttrpc_client::Result<Empty> {
        let req = ResumeRequest {
            id: id.into(),
            ..Default::default()
        };
        self.task.resume(req, &opts()).await
    }

    pub async fn pids(&self, id: &str) -> ttrpc_client::Result<PidsResponse> {
        let req = PidsRequest {
            id: id.into(),
            ..Default::default()
        };
        self.task.pids(req, &opts()).await
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid),
                nix::sys::signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_file(self.socket_path());
    }
}

/// A zombie whose threads are all gone. A killed multi-threaded process shows its leader as `Z`
/// while other threads still run their exit and hold the fd table (and so the shim's socket).
fn is_zombie(pid: i32) -> bool {
    let leader_dead = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0);
    leader_dead && threads <= 1
}

pub fn opts() -> CallOptions {
    CallOptions::with_timeout(Duration::from_secs(30))
}

/// runc's root for the test namespace, to check that nothing is left behind.
pub fn runc_state_exists(id: &str) -> bool {
    Path::new("/run/containerd/runc")
        .join(NAMESPACE)
        .join(id)
        .exists()
}

pub fn count_by_topic(topics: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for t in topics {
        *m.entry(t.clone()).or_insert(0) += 1;
    }
    m
}

/// An exec's process spec as containerd sends it (an `Any` of the runtime spec's Process).
pub fn exec_spec(args: &[&str]) -> containerd_shim_protos::protobuf::well_known_types::any::Any {
    let spec = serde_json::json!({"args": args, "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    containerd_shim_protos::protobuf::well_known_types::any::Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&spec).unwrap(),
        ..Default::default()
    }
}

/// Create's runtime options naming `binary` as runc (containerd's runc `Options`).
pub fn runc_binary_option(
    binary: &str,
) -> containerd_shim_protos::protobuf::MessageField<
    containerd_shim_protos::protobuf::well_known_types::any::Any,
> {
    use containerd_shim_protos::protobuf::Message;
    let options = containerd_shim_protos::shim::oci::Options {
        binary_name: binary.into(),
        ..Default::default()
    };
    containerd_shim_protos::protobuf::MessageField::some(
        containerd_shim_protos::protobuf::well_known_types::any::Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: options.write_to_bytes().unwrap(),
            ..Default::default()
        },
    )
}

/// The path of `name` in PATH.
pub fn which(name: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A stand-in for runc in `dir`: a shell script that runs `before` (with runc's arguments in
/// "$@") and then execs the real runc. The thin wrapper the tests use to make runc slow,
/// stuck or late at one step, where the real runc cannot be made to.
pub fn runc_stand_in(dir: &Path, name: &str, before: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let script = format!("#!/bin/sh\n{before}\nexec {} \"$@\"\n", which("runc"));
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_string_lossy().into()
}
