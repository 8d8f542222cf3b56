//! containerd's CRI plugin (what kubelet talks to) driving the Go shim (handler `runc`) and
//! rshim (handler `rshim`) through one scenario: a pod with several containers in one shim,
//! ExecSync, container logs, stats, resource updates, stop with a grace period, an OOM kill,
//! removal, and nothing left behind. What CRI reports must be the same for both shims.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use rshim_integration::containerd::{
    cgroup2, mounts_under, shims_of, systemd_cgroup, Options, PrivateContainerd, CNI_SUBNET,
    CRI_SLICE,
};
use rshim_integration::image::IMAGE;
use tonic::transport::{Channel, Endpoint, Uri};

type Cri = RuntimeServiceClient<Channel>;

async fn connect(socket: &str) -> Cri {
    let socket = socket.to_string();
    let channel = Endpoint::try_from("http://[::]")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
        .expect("connect to CRI");
    RuntimeServiceClient::new(channel)
}

/// Every CRI call is bounded: a hang is a failure, not a stuck test.
async fn bounded<T>(
    what: &str,
    f: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 60s"))
        .unwrap_or_else(|e| panic!("{what}: {e}"))
        .into_inner()
}

fn pod_config(name: &str, logs: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        log_directory: logs.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    // Its own network namespace, on the CNI bridge.
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            // With the systemd driver, containerd turns a `.slice` parent into
            // `<slice>:cri-containerd:<id>`, which runc makes a transient scope.
            cgroup_parent: if systemd_cgroup() {
                CRI_SLICE.into()
            } else {
                String::new()
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str], memory_limit: i64) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: IMAGE.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory_limit,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The CRI log file without timestamps: `stream tag text` per line, sorted (the order between
/// stdout and stderr is not defined).
fn log_lines(path: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            l.split_once(' ')
                .map(|(_, rest)| rest)
                .unwrap_or("")
                .to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// CRI's streaming Exec: the URL the runtime hands out, spoken to as kubelet's clients do
/// (WebSocket, `v4.channel.k8s.io`: one channel byte per message, 1 stdout, 2 stderr, 3 the
/// final status). Returns stdout, stderr and the status's reason and exit code.
async fn exec_stream(cri: &mut Cri, id: &str, cmd: &[&str]) -> String {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let url = bounded(
        "Exec",
        cri.exec(ExecRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    )
    .await
    .url;
    let mut request = url
        .replacen("http://", "ws://", 1)
        .into_client_request()
        .expect("streaming URL");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v4.channel.k8s.io".parse().unwrap(),
    );
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(request),
    )
    .await
    .expect("streaming connect in time")
    .expect("streaming connect");
    let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
    let read = async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Binary(b)) if !b.is_empty() => match b[0] {
                    1 => out.extend_from_slice(&b[1..]),
                    2 => err.extend_from_slice(&b[1..]),
                    3 => status.extend_from_slice(&b[1..]),
                    _ => {}
                },
                Ok(Message::Close(_)) | Err(_) => break,
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("exec stream ends in time");
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap_or_default();
    let code = status["details"]["causes"][0]["message"]
        .as_str()
        .unwrap_or("0");
    format!(
        "stdout {:?} stderr {:?} status {} exit {code}",
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err),
        status["status"].as_str().unwrap_or("?"),
    )
}

/// Polls the container's status until it has exited.
async fn exited(cri: &mut Cri, id: &str) -> ContainerStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = bounded(
            "ContainerStatus",
            cri.container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: false,
            }),
        )
        .await
        .status
        .expect("status");
        if status.state == ContainerState::ContainerExited as i32 {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The container's memory limit as its cgroup holds it (CRI's default cgroup path).
fn memory_limit(id: &str) -> String {
    [
        format!("/sys/fs/cgroup/memory/k8s.io/{id}/memory.limit_in_bytes"),
        format!("/sys/fs/cgroup/k8s.io/{id}/memory.max"),
        format!("/sys/fs/cgroup/{CRI_SLICE}/cri-containerd-{id}.scope/memory.max"),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .map(|v| v.trim().to_string())
    .unwrap_or_else(|| "cgroup not found".into())
}

/// The systemd scope of container (or sandbox) `id`: its cgroup directory and systemd's view.
fn scope(id: &str) -> String {
    let unit = format!("cri-containerd-{id}.scope");
    let dir = Path::new("/sys/fs/cgroup").join(CRI_SLICE).join(&unit);
    let active = std::process::Command::new("systemctl")
        .args(["is-active", &unit])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|e| format!("systemctl: {e}"));
    format!(
        "cgroup {CRI_SLICE}/cri-containerd-<id>.scope exists: {}, systemctl is-active: {active}",
        dir.is_dir()
    )
}

/// The cgroup v2 path of `pid` (`0::` line of /proc/PID/cgroup).
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .unwrap_or_else(|| "no cgroup v2 line".into())
}

/// A counter of the pods' slice `memory.events` (hierarchical: counts its scopes' events).
fn slice_memory_event(key: &str) -> i64 {
    std::fs::read_to_string(
        Path::new("/sys/fs/cgroup")
            .join(CRI_SLICE)
            .join("memory.events"),
    )
    .unwrap_or_default()
    .lines()
    .find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
    .unwrap_or(-1)
}

fn k8s_shims(address: &str) -> Vec<i32> {
    shims_of(address)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == b"k8s.io"))
                .unwrap_or(false)
        })
        .collect()
}

/// One handler through the whole scenario; returns what CRI reported, in order.
async fn scenario(c: &PrivateContainerd, handler: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |k: &str, v: String| seen.push(format!("{k}: {v}"));
    let mut cri = connect(c.cri_endpoint()).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config(&format!("pod-{handler}"), logs.path());
    let run = cri.run_pod_sandbox(RunPodSandboxRequest {
        config: Some(config.clone()),
        runtime_handler: handler.into(),
    });
    let pod = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(r)) => r.into_inner().pod_sandbox_id,
        other => panic!("RunPodSandbox ({handler}): {other:?}\n{}", c.log_tail()),
    };

    let mut ids = HashMap::new();
    for (name, command, limit) in [
        (
            "talker",
            vec![
                "sh",
                "-c",
                "trap '' TERM; echo hello; echo oops >&2; while true; do sleep 1; done",
            ],
            0,
        ),
        ("sleeper", vec!["sleep", "100000"], 0),
        (
            "hog",
            vec![
                "sh",
                "-c",
                "sleep 1; dd if=/dev/zero of=/dev/null bs=256M count=1",
            ],
            32 << 20,
        ),
    ] {
        let id = bounded(
            "CreateContainer",
            cri.create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(container_config(name, &command, limit)),
                sandbox_config: Some(config.clone()),
            }),
        )
        .await
        .container_id;
        bounded(
            "StartContainer",
            cri.start_container(StartContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await;
        ids.insert(name, id);
    }
    note("shims for the pod", k8s_shims(&c.address).len().to_string());
    let oom_kills_before = slice_memory_event("oom_kill ");
    if cgroup2() {
        if let Some(&shim) = k8s_shims(&c.address).first() {
            note("shim cgroup", cgroup_of(shim));
        }
    }
    if systemd_cgroup() {
        note("sandbox scope", scope(&pod));
        note("container scope", scope(&ids["sleeper"]));
    }

    // The pod's network: an address from the CNI bridge, seen by its containers as eth0.
    let status = bounded(
        "PodSandboxStatus",
        cri.pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        }),
    )
    .await;
    let ip = status
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    note(
        "pod ip on the CNI bridge",
        ip.starts_with(CNI_SUBNET.trim_end_matches("0/24"))
            .to_string(),
    );
    let eth0 = bounded(
        "ExecSync eth0",
        cri.exec_sync(ExecSyncRequest {
            container_id: ids["sleeper"].clone(),
            cmd: vec!["cat".into(), "/proc/net/dev".into()],
            timeout: 10,
        }),
    )
    .await;
    note(
        "container sees eth0 and the pod ip",
        (String::from_utf8_lossy(&eth0.stdout).contains("eth0:") && !ip.is_empty()).to_string(),
    );

    let exec = bounded(
        "ExecSync",
        cri.exec_sync(ExecSyncRequest {
            container_id: ids["talker"].clone(),
            cmd: ["sh", "-c", "echo out; echo err >&2; exit 3"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            timeout: 10,
        }),
    )
    .await;
    note(
        "exec sync",
        format!(
            "exit {} stdout {:?} stderr {:?}",
            exec.exit_code,
            String::from_utf8_lossy(&exec.stdout),
            String::from_utf8_lossy(&exec.stderr)
        ),
    );

    note(
        "exec stream",
        exec_stream(
            &mut cri,
            &ids["talker"],
            &["sh", "-c", "echo out; echo err >&2; exit 4"],
        )
        .await,
    );

    let stats = bounded(
        "ContainerStats",
        cri.container_stats(ContainerStatsRequest {
            container_id: ids["sleeper"].clone(),
        }),
    )
    .await
    .stats
    .expect("stats");
    let memory = stats
        .memory
        .and_then(|m| m.working_set_bytes)
        .map(|v| v.value);
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    note(
        "stats",
        format!(
            "memory working set > 0: {}, cpu usage > 0: {}",
            memory.unwrap_or(0) > 0,
            cpu.unwrap_or(0) > 0
        ),
    );
    let listed = bounded(
        "ListContainerStats",
        cri.list_container_stats(ListContainerStatsRequest { filter: None }),
    )
    .await
    .stats
    .len();
    note("listed stats", listed.to_string());

    bounded(
        "UpdateContainerResources",
        cri.update_container_resources(UpdateContainerResourcesRequest {
            container_id: ids["sleeper"].clone(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: 128 << 20,
                cpu_shares: 512,
                ..Default::default()
            }),
            ..Default::default()
        }),
    )
    .await;
    let limit = bounded(
        "ContainerStats after update",
        cri.container_stats(ContainerStatsRequest {
            container_id: ids["sleeper"].clone(),
        }),
    )
    .await;
    note("update answered", format!("{}", limit.stats.is_some()));
    note("memory limit after update", memory_limit(&ids["sleeper"]));

    let hog = exited(&mut cri, &ids["hog"]).await;
    note(
        "oom",
        format!("exit {} reason {}", hog.exit_code, hog.reason),
    );
    if systemd_cgroup() {
        note(
            "oom_kill counted in the pod slice's memory.events",
            (slice_memory_event("oom_kill ") - oom_kills_before).to_string(),
        );
    }

    // The talker ignores SIGTERM: the grace period runs out, then SIGKILL.
    let t = Instant::now();
    bounded(
        "StopContainer",
        cri.stop_container(StopContainerRequest {
            container_id: ids["talker"].clone(),
            timeout: 2,
        }),
    )
    .await;
    let stopped_after = t.elapsed();
    let talker = exited(&mut cri, &ids["talker"]).await;
    note(
        "stop with grace 2s",
        format!(
            "exit {} reason {} waited the grace period: {}",
            talker.exit_code,
            talker.reason,
            stopped_after >= Duration::from_millis(1800)
        ),
    );
    note(
        "talker log",
        log_lines(&logs.path().join("talker.log")).join(" | "),
    );

    for id in ids.values() {
        let _ = bounded(
            "StopContainer",
            cri.stop_container(StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            }),
        )
        .await;
        bounded(
            "RemoveContainer",
            cri.remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            }),
        )
        .await;
    }
    let bundle = c
        .dir
        .path()
        .join("state/io.containerd.runtime.v2.task/k8s.io")
        .join(&pod);
    let socket = std::fs::read_to_string(bundle.join("address"))
        .unwrap_or_default()
        .trim()
        .trim_start_matches("unix://")
        .to_string();
    bounded(
        "StopPodSandbox",
        cri.stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await;
    bounded(
        "RemovePodSandbox",
        cri.remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        }),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !k8s_shims(&c.address).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    note("shims left", k8s_shims(&c.address).len().to_string());
    note(
        "pod shim socket left",
        (!socket.is_empty() && Path::new(&socket).exists()).to_string(),
    );
    note("mounts left", mounts_under(c.dir.path()).len().to_string());
    if systemd_cgroup() {
        // systemd stops an emptied scope on its own; give it a moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = || {
            ids.values()
                .chain([&pod])
                .filter(|id| {
                    Path::new("/sys/fs/cgroup")
                        .join(CRI_SLICE)
                        .join(format!("cri-containerd-{id}.scope"))
                        .exists()
                })
                .count()
        };
        while left() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        note("scopes left after removal", left().to_string());
        note("container scope after removal", scope(&ids["sleeper"]));
    }
    seen
}

/// `RSHIM_IT_OBS_DIR`: each runtime's observation lines go to `<dir>/<test>-<runtime>.txt`
/// (scripts/vm.sh tabulates them).
fn save_observation(test: &str, runtime: &str, lines: &[String]) {
    if let Ok(dir) = std::env::var("RSHIM_IT_OBS_DIR") {
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(
            Path::new(&dir).join(format!("{test}-{runtime}.txt")),
            lines.join("\n") + "\n",
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cri_sees_the_same_from_both_shims() {
    let c = PrivateContainerd::start(Options {
        cri: true,
        ..Default::default()
    })
    .expect("containerd with CRI");
    c.import_cri_images().expect("import images into k8s.io");
    let go = scenario(&c, "runc").await;
    let rshim = scenario(&c, "rshim").await;
    save_observation("cri", "go", &go);
    save_observation("cri", "rshim", &rshim);
    // The reference itself must show the behaviour, so that two equal failures cannot pass.
    let mut expect: Vec<String> = [
        "shims for the pod: 1",
        "exec sync: exit 3 stdout \"out\\n\" stderr \"err\\n\"",
        "exec stream: stdout \"out\\n\" stderr \"err\\n\" status Failure exit 4",
        "stats: memory working set > 0: true, cpu usage > 0: true",
        "oom: exit 137 reason OOMKilled",
        "stop with grace 2s: exit 137 reason Error waited the grace period: true",
        "talker log: stderr F oops | stdout F hello",
        "shims left: 0",
        "pod ip on the CNI bridge: true",
        "container sees eth0 and the pod ip: true",
        "memory limit after update: 134217728",
        "mounts left: 0",
    ]
    .map(String::from)
    .to_vec();
    if systemd_cgroup() {
        expect.extend([
            format!("container scope: cgroup {CRI_SLICE}/cri-containerd-<id>.scope exists: true, systemctl is-active: active"),
            "oom_kill counted in the pod slice's memory.events: 1".into(),
            "scopes left after removal: 0".into(),
        ]);
    }
    if let (Some(path), true) = (rshim_integration::containerd::shim_cgroup(), cgroup2()) {
        expect.push(format!("shim cgroup: {path}"));
    }
    let lacks = |seen: &[String]| -> Vec<String> {
        let text = seen.join("\n");
        expect
            .iter()
            .filter(|e| !text.contains(e.as_str()))
            .cloned()
            .collect()
    };
    let (go_lacks, rshim_lacks) = (lacks(&go), lacks(&rshim));
    // Both lacking it: the harness or the host is broken, not a shim.
    let both: Vec<&String> = go_lacks
        .iter()
        .filter(|e| rshim_lacks.contains(e))
        .collect();
    assert!(
        both.is_empty(),
        "Go shim lacks {both:?} (so does rshim):\n{}",
        go.join("\n")
    );
    assert!(
        rshim_lacks.is_empty(),
        "rshim lacks {rshim_lacks:?} (the Go shim has it):\n{}",
        rshim.join("\n")
    );
    // The Go shim alone lacking an expected line is its own flake (under the systemd driver it
    // can miss an OOM kill: systemd removes the emptied scope, memory.events with it, before the
    // shim reads it). Reported, and that line left out of the comparison.
    let key = |l: &str| l.split(": ").next().unwrap_or("").to_string();
    let flaky: Vec<String> = go_lacks.iter().map(|e| key(e)).collect();
    for line in go.iter().filter(|l| flaky.contains(&key(l))) {
        println!("NOTE: the Go shim fails where rshim passes: {line}");
    }
    let compared = |seen: &[String]| -> Vec<String> {
        seen.iter()
            .filter(|l| !flaky.contains(&key(l)))
            .cloned()
            .collect()
    };
    assert_eq!(
        compared(&go),
        compared(&rshim),
        "CRI sees a difference:\n[go]\n{}\n[rshim]\n{}",
        go.join("\n"),
        rshim.join("\n")
    );
}
