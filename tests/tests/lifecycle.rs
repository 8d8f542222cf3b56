//! The shim driven directly over ttrpc (no containerd): lifecycle, exec, signals, pause,
//! events, and bad input answered with the right status while the shim keeps serving.

use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::events::task::{TaskExit, TaskStart};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::types::task::Status;
use rshim_tests::*;
use ttrpc_client::Code;

fn create_req(id: &str, bundle: &Bundle, fifos: Option<&Fifos>) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().to_string_lossy().into(),
        stdout: fifos.map(|f| f.stdout.clone()).unwrap_or_default(),
        stderr: fifos.map(|f| f.stderr.clone()).unwrap_or_default(),
        ..Default::default()
    }
}

/// A shim running one container that sleeps; the event server and bundle live as long as the
/// caller keeps them.
async fn running_sleeper(prefix: &str) -> (EventServer, Bundle, Shim, String) {
    let events = EventServer::start().await;
    let id = unique(prefix);
    let bundle = Bundle::new(&["sleep", "1000"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create_req(&id, &bundle, None), &opts())
        .await
        .unwrap();
    shim.start_process(&id, "").await.unwrap();
    (events, bundle, shim, id)
}

#[tokio::test(flavor = "multi_thread")]
async fn run_to_exit_code_with_output_and_events() {
    let events = EventServer::start().await;
    let id = unique("exit");
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 3"]);
    let fifos = Fifos::new();
    let (out, err) = (Fifos::collect(&fifos.stdout), Fifos::collect(&fifos.stderr));
    let shim = Shim::start(&id, bundle.path(), &events.address).await;

    let created = shim
        .task
        .create(create_req(&id, &bundle, Some(&fifos)), &opts())
        .await
        .expect("Create");
    assert!(created.pid > 0);
    let state = shim.state(&id).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(Status::CREATED));
    let started = shim.start_process(&id, "").await.unwrap();
    assert_eq!(started.pid, created.pid);
    assert_eq!(shim.wait_exit(&id, "").await, 3);
    let state = shim.state(&id).await.unwrap();
    assert_eq!(state.status.enum_value(), Ok(Status::STOPPED));
    assert_eq!(state.exit_status, 3);
    let deleted = shim.delete(&id, "").await.expect("Delete");
    assert_eq!((deleted.exit_status, deleted.pid), (3, created.pid));
    assert_eq!(out.join(), b"out\n");
    assert_eq!(err.join(), b"err\n");
    assert!(!runc_state_exists(&id), "runc state removed");

    let topics = events
        .log
        .wait_for("delete event", |t| t.iter().any(|x| x == "/tasks/delete"))
        .await;
    assert_eq!(
        topics,
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ]
    );
    let exit = TaskExit::parse_from_bytes(&events.log.payloads("/tasks/exit")[0]).unwrap();
    assert_eq!(
        (
            exit.container_id.as_str(),
            exit.id.as_str(),
            exit.exit_status,
            exit.pid
        ),
        (id.as_str(), id.as_str(), 3, created.pid)
    );
    let start = TaskStart::parse_from_bytes(&events.log.payloads("/tasks/start")[0]).unwrap();
    assert_eq!(start.pid, created.pid);

    // Deleted means gone.
    let err = shim.delete(&id, "").await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);
    shim.shutdown().await;
    assert!(
        !std::path::Path::new(&shim.socket_path()).exists(),
        "socket removed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn instant_exit_is_reported_after_start() {
    let events = EventServer::start().await;
    let id = unique("instant");
    let bundle = Bundle::new(&["true"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create_req(&id, &bundle, None), &opts())
        .await
        .unwrap();
    shim.start_process(&id, "").await.unwrap();
    assert_eq!(shim.wait_exit(&id, "").await, 0);
    let topics = events
        .log
        .wait_for("exit", |t| t.iter().any(|x| x == "/tasks/exit"))
        .await;
    let start = topics
        .iter()
        .position(|t| t == "/tasks/start")
        .expect("start event");
    let exit = topics.iter().position(|t| t == "/tasks/exit").unwrap();
    assert!(start < exit, "exit published before start: {topics:?}");
    shim.delete(&id, "").await.unwrap();
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_kill_pause_resume_and_pids() {
    let events = EventServer::start().await;
    let id = unique("exec");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let init_pid = shim
        .task
        .create(create_req(&id, &bundle, None), &opts())
        .await
        .unwrap()
        .pid;
    shim.start_process(&id, "").await.unwrap();

    // An exec with output.
    let fifos = Fifos::new();
    let out = Fifos::collect(&fifos.stdout);
    let exec = |exec_id: &str, args: &[&str], fifos: Option<&Fifos>| ExecProcessRequest {
        id: id.clone(),
        exec_id: exec_id.into(),
        stdout: fifos.map(|f| f.stdout.clone()).unwrap_or_default(),
        spec: Some(exec_spec(args)).into(),
        ..Default::default()
    };
    shim.task
        .exec(
            exec("e1", &["sh", "-c", "echo from exec; exit 5"], Some(&fifos)),
            &opts(),
        )
        .await
        .unwrap();
    let dup = shim
        .task
        .exec(exec("e1", &["true"], None), &opts())
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::ALREADY_EXISTS);
    shim.start_process(&id, "e1").await.unwrap();
    assert_eq!(shim.wait_exit(&id, "e1").await, 5);
    let err = shim.kill(&id, "e1", 9).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::NOT_FOUND,
        "kill of a finished exec: {err}"
    );
    let d = shim.delete(&id, "e1").await.unwrap();
    assert_eq!(d.exit_status, 5);
    assert_eq!(out.join(), b"from exec\n");

    // A long exec shows up in Pids with its exec id.
    shim.task
        .exec(exec("e2", &["sleep", "1000"], None), &opts())
        .await
        .unwrap();
    let e2_pid = shim.start_process(&id, "e2").await.unwrap().pid;
    let pids = shim.pids(&id).await.unwrap();
    let listed: Vec<u32> = pids.processes.iter().map(|p| p.pid).collect();
    assert!(
        listed.contains(&init_pid) && listed.contains(&e2_pid),
        "{listed:?}"
    );
    let e2_info = pids.processes.iter().find(|p| p.pid == e2_pid).unwrap();
    assert_eq!(e2_info.info.type_url, "containerd.runc.v1.ProcessDetails");

    // Pause / resume.
    shim.pause(&id).await.unwrap();
    let st = shim.state(&id).await.unwrap();
    assert_eq!(st.status.enum_value(), Ok(Status::PAUSED));
    let again = shim.pause(&id).await.unwrap_err();
    assert_eq!(again.code(), Code::FAILED_PRECONDITION);
    let busy = shim.delete(&id, "").await.unwrap_err();
    assert_eq!(
        busy.code(),
        Code::FAILED_PRECONDITION,
        "delete of a paused task: {busy}"
    );
    shim.resume(&id).await.unwrap();

    // Kill the init: every exec's exit comes before the init's.
    shim.kill(&id, "", 9).await.unwrap();
    assert_eq!(shim.wait_exit(&id, "").await, 137);
    assert_eq!(shim.wait_exit(&id, "e2").await, 137);
    let late = shim.start_process(&id, "e2").await.unwrap_err();
    assert_eq!(late.code(), Code::FAILED_PRECONDITION);
    shim.delete(&id, "e2").await.unwrap();
    shim.delete(&id, "").await.unwrap();

    let topics = events
        .log
        .wait_for("delete", |t| t.iter().any(|x| x == "/tasks/delete"))
        .await;
    let exits: Vec<TaskExit> = events
        .log
        .payloads("/tasks/exit")
        .iter()
        .map(|p| TaskExit::parse_from_bytes(p).unwrap())
        .collect();
    assert_eq!(
        exits.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["e1", "e2", id.as_str()],
        "{topics:?}"
    );
    let counts = count_by_topic(&topics);
    assert_eq!(counts.get("/tasks/exec-added"), Some(&2));
    assert_eq!(counts.get("/tasks/exec-started"), Some(&2));
    assert_eq!(counts.get("/tasks/paused"), Some(&1));
    assert_eq!(counts.get("/tasks/resumed"), Some(&1));
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_statuses_and_the_shim_keeps_serving() {
    let events = EventServer::start().await;
    let id = unique("bad");
    // pid 1 of a pid namespace ignores signals it has no handler for: trap SIGTERM.
    let bundle = Bundle::new(&[
        "sh",
        "-c",
        "trap 'exit 7' TERM; while true; do sleep 1; done",
    ]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;

    // Unknown ids.
    let e = shim.state("nope").await.unwrap_err();
    assert_eq!(e.code(), Code::NOT_FOUND);
    assert!(e.message().contains("nope"), "{e}");
    // Garbage bytes where a request should be.
    let garbage = shim
        .client
        .call_raw(
            ttrpc_client::task::TaskClient::V2,
            "Create",
            vec![0xff; 32],
            &opts(),
        )
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::INVALID_ARGUMENT, "{garbage}");
    // Empty id, missing bundle, invalid config.json.
    let e = shim
        .task
        .create(CreateTaskRequest::default(), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT);
    let e = shim
        .task
        .create(
            CreateTaskRequest {
                id: id.clone(),
                bundle: "/nonexistent".into(),
                ..Default::default()
            },
            &opts(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT);
    let broken = Bundle::new(&["true"]);
    std::fs::write(broken.path().join("config.json"), b"{not json").unwrap();
    let e = shim
        .task
        .create(create_req("broken", &broken, None), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    // A missing binary: runc's own message, not "exit status 1".
    let missing = Bundle::new(&["/bin/does-not-exist"]);
    let e = shim
        .task
        .create(create_req(&unique("missing"), &missing, None), &opts())
        .await
        .unwrap_err();
    assert!(
        e.message().contains("does-not-exist"),
        "runc's error text expected: {e}"
    );
    assert!(!e.message().contains("exit status"), "{e}");

    // A good container, then misuse of it.
    shim.task
        .create(create_req(&id, &bundle, None), &opts())
        .await
        .unwrap();
    let dup = shim
        .task
        .create(create_req(&id, &bundle, None), &opts())
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::ALREADY_EXISTS);
    shim.start_process(&id, "").await.unwrap();
    let twice = shim.start_process(&id, "").await.unwrap_err();
    assert_eq!(twice.code(), Code::FAILED_PRECONDITION);
    let running = shim.delete(&id, "").await.unwrap_err();
    assert_eq!(running.code(), Code::FAILED_PRECONDITION);
    let badsig = shim.kill(&id, "", 1000).await.unwrap_err();
    assert_eq!(badsig.code(), Code::INVALID_ARGUMENT);
    let e = shim
        .task
        .exec(
            ExecProcessRequest {
                id: id.clone(),
                exec_id: "x".into(),
                ..Default::default()
            },
            &opts(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "exec without spec: {e}");
    let e = shim
        .task
        .checkpoint(
            CheckpointTaskRequest {
                id: id.clone(),
                ..Default::default()
            },
            &opts(),
        )
        .await
        .unwrap_err();
    // A checkpoint needs somewhere to put the image.
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    assert!(e.message().contains("image path"), "{e}");

    // Still serving: the container can be killed and deleted normally.
    shim.kill(&id, "", 15).await.unwrap();
    assert_eq!(shim.wait_exit(&id, "").await, 7);
    shim.delete(&id, "").await.unwrap();
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_waits_for_the_last_container_and_abandoned_waits_cost_nothing() {
    let (_events, _bundle, shim, id) = running_sleeper("shut").await;

    // Waits abandoned by their deadline answer DeadlineExceeded.
    for _ in 0..50 {
        let e = shim
            .task
            .wait(
                WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &ttrpc_client::CallOptions::with_timeout(Duration::from_millis(20)),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::DEADLINE_EXCEEDED);
    }
    // Shutdown with a live container does nothing.
    shim.task
        .shutdown(ShutdownRequest::default(), &opts())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        shim.alive(),
        "a shim with a container must not exit on Shutdown"
    );
    shim.kill(&id, "", 9).await.unwrap();
    assert_eq!(shim.wait_exit(&id, "").await, 137);
    shim.delete(&id, "").await.unwrap();
    shim.shutdown().await;
    assert!(!shim.alive());
}

/// containerd sends Wait without a deadline and never cancels it: the shim parks such Waits on
/// the process. Hundreds on one connection and more on a connection that then closes: all stay
/// pending until the exit, every live one is answered with it, and a Wait after the exit
/// answers at once.
#[tokio::test(flavor = "multi_thread")]
async fn waits_without_a_deadline_are_all_answered_at_exit() {
    let (_events, _bundle, shim, id) = running_sleeper("parked").await;

    let as_containerd = ttrpc_client::CallOptions::local_deadline(Duration::from_secs(20));
    let wait_on = |task: ttrpc_client::task::TaskClient| {
        let (id, bound) = (id.clone(), as_containerd.clone());
        tokio::spawn(async move {
            let req = WaitRequest {
                id,
                ..Default::default()
            };
            task.wait(req, &bound).await
        })
    };
    let waits: Vec<_> = (0..300).map(|_| wait_on(shim.task.clone())).collect();
    let other = ttrpc_client::Client::connect(&shim.address, Duration::from_secs(5))
        .await
        .unwrap();
    let other_task = ttrpc_client::task::TaskClient::new(other, ttrpc_client::task::TaskClient::V2);
    let abandoned: Vec<_> = (0..100).map(|_| wait_on(other_task.clone())).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        waits.iter().chain(&abandoned).all(|w| !w.is_finished()),
        "a Wait answered before the exit"
    );
    for w in &abandoned {
        w.abort();
    }
    drop(other_task);

    shim.kill(&id, "", 9).await.unwrap();
    for w in waits {
        assert_eq!(w.await.unwrap().expect("parked Wait").exit_status, 137);
    }
    assert_eq!(shim.wait_exit(&id, "").await, 137);
    shim.delete(&id, "").await.unwrap();
    shim.shutdown().await;
}
