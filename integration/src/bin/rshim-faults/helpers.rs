//! What several rows share: reaching a shim's socket, speaking raw ttrpc frames to it, telling
//! a shim to use a stand-in runc, and removing containers afterwards.

use std::time::Duration;

use rshim_integration::containerd::PrivateContainerd;
use rshim_integration::image::IMAGE;
use rshim_integration::Runtime;
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

/// A row's verdict for one shim: the table cell's text and whether it passes.
pub type Cell = (String, bool);

/// The `ttrpc` address (`unix://...`) of the shim serving `id`, from its bundle.
pub fn shim_client_address(c: &PrivateContainerd, id: &str) -> String {
    std::fs::read_to_string(c.bundle(id).join("address"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// A task client on a fresh connection to `address`.
pub async fn connect(address: &str) -> anyhow::Result<TaskClient> {
    let client = Client::connect(address, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(TaskClient::new(client, TaskClient::V2))
}

/// The socket path of the shim serving `id`.
pub fn socket_of(c: &PrivateContainerd, id: &str) -> String {
    shim_client_address(c, id)
        .trim_start_matches("unix://")
        .to_string()
}

/// Whether the shim serving `id` still answers a well-formed Connect.
pub fn still_serving(c: &PrivateContainerd, id: &str) -> anyhow::Result<bool> {
    let address = shim_client_address(c, id);
    let req = containerd_shim_protos::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            match connect(&address).await {
                Ok(t) => t
                    .connect(req, &CallOptions::with_timeout(Duration::from_secs(5)))
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        }))
}

/// `ctr run -d --runtime <rt> [extra] IMAGE <id> sleep 100000`: a long-running container for
/// a row to work on.
pub fn run_sleeper(
    c: &PrivateContainerd,
    rt: Runtime,
    id: &str,
    extra: &[&str],
) -> anyhow::Result<()> {
    let mut args = vec!["run", "-d", "--runtime", rt.runtime_type()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, id, "sleep", "100000"]);
    let out = c.ctr(&args);
    anyhow::ensure!(out.code == Some(0), "ctr run {id}: {}", out.stderr);
    Ok(())
}

/// The STATUS column of `ctr task ls` for `id` (None: no such task).
fn task_status(c: &PrivateContainerd, id: &str) -> Option<String> {
    c.ctr(&["task", "ls"])
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
        .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
}

/// Polls `done` every 50 ms for at most `bound`; whether it came true.
pub fn poll(bound: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + bound;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most `bound`) until process `pid` is gone (reaped); whether it is.
pub fn wait_gone(pid: i32, bound: Duration) -> bool {
    let pid = nix::unistd::Pid::from_raw(pid);
    poll(bound, || nix::sys::signal::kill(pid, None).is_err())
}

/// Live (non-zombie) processes whose command line contains `text`.
pub fn processes_mentioning(text: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z');
            !zombie
                && String::from_utf8_lossy(&cmd)
                    .replace('\0', " ")
                    .contains(text)
        })
        .collect()
}

/// Kills and removes a container (best effort): SIGKILL, then the delete once the task is
/// seen stopped (polled, at most 10 s).
pub fn remove(c: &PrivateContainerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    poll(Duration::from_secs(10), || {
        task_status(c, id).is_none_or(|s| s == "STOPPED")
    });
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}

/// Removes a container whose shim may be stuck: kill the shim (and wait, at most 10 s, until
/// it is gone), then let containerd clean up.
pub fn cleanup_hung(c: &PrivateContainerd, id: &str) {
    if let Some(pid) = c.shim_of(id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        wait_gone(pid, Duration::from_secs(10));
    }
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}

/// How each shim is told to use another runc binary.
pub fn runc_binary_args(
    c: &PrivateContainerd,
    rt: Runtime,
    binary: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(match rt {
        Runtime::Go => vec!["--runc-binary".into(), binary.into()],
        Runtime::Rshim => {
            let toml = c.dir.path().join(format!(
                "opts-{}.toml",
                binary.rsplit('-').next().unwrap_or("x")
            ));
            std::fs::write(&toml, format!("BinaryName = \"{binary}\"\n"))?;
            vec![
                "--runtime-config-path".into(),
                toml.to_string_lossy().into_owned(),
            ]
        }
    })
}

/// One ttrpc request frame (kind 1) carrying `method` of `service`.
pub fn frame(stream_id: u32, service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
    use protobuf::Message;
    let mut r = ttrpc::proto::Request::new();
    r.service = service.into();
    r.method = method.into();
    r.payload = payload;
    let body = r.write_to_bytes().unwrap_or_default();
    raw_frame(stream_id, 1, &body)
}

fn raw_frame(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.extend_from_slice(&[kind, 0]);
    f.extend_from_slice(body);
    f
}

/// Reads one response frame (bounded by the socket's timeout); its status code.
pub fn read_status(s: &mut std::os::unix::net::UnixStream) -> std::io::Result<(u32, i32)> {
    use protobuf::Message;
    use std::io::Read;
    let mut h = [0u8; 10];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut body = vec![0u8; len.min(16 << 20)];
    s.read_exact(&mut body)?;
    let resp = ttrpc::proto::Response::parse_from_bytes(&body).map_err(std::io::Error::other)?;
    Ok((id, resp.status.code.value()))
}
