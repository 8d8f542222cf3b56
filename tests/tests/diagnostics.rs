//! The diagnostics dump: SIGUSR1 makes the shim write its containers, their processes with the
//! Waits pending on each, and the runc calls in flight to its log FIFO.

use std::time::{Duration, Instant};

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use rshim_tests::*;

/// A runc whose `pause` hangs, so that a call stays in flight.
fn runc_slow_to_pause(bundle: &Bundle) -> String {
    runc_stand_in(
        bundle.path(),
        "runc-slow-pause",
        "for a in \"$@\"; do [ \"$a\" = pause ] && exec sleep 60; done",
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sigusr1_dumps_processes_pending_waits_and_runc_calls_in_flight() {
    let events = EventServer::start().await;
    let id = unique("dump");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let mut log = LogFifo::create(&bundle);
    let binary = runc_slow_to_pause(&bundle);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let options = RuncOptions {
        binary_name: binary.clone(),
        ..Default::default()
    };
    let req = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().to_string_lossy().into(),
        options: MessageField::some(Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: options.write_to_bytes().unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    shim.task.create(req, &opts()).await.expect("Create");
    let start = StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.expect("Start");

    // Two Waits pending on the init process, and a Pause stuck in runc.
    let mut pending = Vec::new();
    for _ in 0..2 {
        let task = shim.task.clone();
        let wait = WaitRequest {
            id: id.clone(),
            ..Default::default()
        };
        pending.push(tokio::spawn(async move { task.wait(wait, &opts()).await }));
    }
    let task = shim.task.clone();
    let pause = PauseRequest {
        id: id.clone(),
        ..Default::default()
    };
    let pause_bound = ttrpc_client::CallOptions::with_timeout(Duration::from_secs(5));
    let paused = tokio::spawn(async move { task.pause(pause, &pause_bound).await });

    // Signal until the dump shows both (the requests reach the shim asynchronously).
    let wanted_process = format!("container={id} process={id} ");
    let wanted_runc = format!("runc call `{binary} pause` pid=");
    let dumped = |text: &str| {
        text.lines().any(|l| {
            l.contains("dump: ")
                && l.contains(&wanted_process)
                && l.contains("status=running pending_waits=2")
        }) && text
            .lines()
            .any(|l| l.contains("dump: ") && l.contains(&wanted_runc))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while !dumped(&text) {
        assert!(Instant::now() < deadline, "no complete dump in:\n{text}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim.pid),
            nix::sys::signal::SIGUSR1,
        )
        .unwrap();
        text += &log
            .read_until(Duration::from_secs(5), |t| t.contains("dump: "))
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The stuck Pause answers at its deadline (runc killed with it); the shim still serves.
    let e = paused
        .await
        .unwrap()
        .expect_err("Pause through a hung runc");
    assert_eq!(e.code(), ttrpc_client::Code::DEADLINE_EXCEEDED, "{e}");
    let kill = KillRequest {
        id: id.clone(),
        signal: 9,
        ..Default::default()
    };
    shim.task.kill(kill, &opts()).await.expect("Kill");
    for w in pending {
        assert_eq!(w.await.unwrap().expect("Wait").exit_status, 137);
    }
    let delete = DeleteRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.delete(delete, &opts()).await.expect("Delete");
    shim.shutdown().await;
}

// Output of an exec that failed to start is not shown (runc's error is, as with the Go
// shim), but it is not dropped silently either: the log says how many bytes went.
#[tokio::test(flavor = "multi_thread")]
async fn output_of_a_failed_exec_is_counted_in_the_log() {
    let events = EventServer::start().await;
    let id = unique("discard");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let mut log = LogFifo::create(&bundle);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let create = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().to_string_lossy().into(),
        ..Default::default()
    };
    shim.task.create(create, &opts()).await.expect("Create");
    let start = StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.expect("Start");
    let fifos = Fifos::new();
    let _err = Fifos::collect(&fifos.stderr);
    let spec = serde_json::json!({"args": ["/no/such/binary"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: "missing".into(),
        stderr: fifos.stderr.clone(),
        spec: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&spec).unwrap(),
            ..Default::default()
        }),
        ..Default::default()
    };
    shim.task.exec(exec, &opts()).await.expect("Exec");
    let start = StartRequest {
        id: id.clone(),
        exec_id: "missing".into(),
        ..Default::default()
    };
    shim.task
        .start(start, &opts())
        .await
        .expect_err("exec of a missing binary");
    // runc wrote its error line to the exec's stderr before failing.
    let text = log
        .read_until(Duration::from_secs(10), |t| t.contains("discarded "))
        .await;
    let line = text.lines().find(|l| l.contains("discarded ")).unwrap();
    assert!(
        line.contains("stderr: discarded ")
            && line.contains("bytes written while the process failed to start"),
        "{line}"
    );
    shim.kill_and_delete(&id).await;
    shim.shutdown().await;
}
