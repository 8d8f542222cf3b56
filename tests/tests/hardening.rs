//! Edges where the shim must refuse, accept or finish exactly as containerd's Go shim does:
//! who may connect, which signals reach an exec, and no new work after Shutdown.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use containerd_shim_protos::api::*;
use rshim_tests::*;
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client, Code};

async fn running(prefix: &str, events: &str) -> (Bundle, Shim, String) {
    let id = unique(prefix);
    let bundle = Bundle::new(&["sleep", "1000"]);
    let shim = Shim::start(&id, bundle.path(), events).await;
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
    (bundle, shim, id)
}

// ttrpc's UnixSocketRequireSameUser, which the Go shim uses, compares the uid and the gid.
// Before the fix a client of the shim's uid but another gid was served.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_another_group_is_refused() {
    let events = EventServer::start().await;
    let (_bundle, shim, id) = running("peer-gid", &events.address).await;
    let path = shim.socket_path();
    // Credentials are per thread in the kernel: a raw setresgid changes only this thread's,
    // and SO_PEERCRED records the connecting thread's.
    let stream = std::thread::spawn(move || {
        // SAFETY: a raw syscall changing this thread's gids; no memory is involved.
        let rc = unsafe { libc::syscall(libc::SYS_setresgid, 65534, 65534, 65534) };
        assert_eq!(rc, 0, "setresgid");
        UnixStream::connect(path).expect("connect")
    })
    .join()
    .unwrap();
    stream.set_nonblocking(true).unwrap();
    let stream = tokio::net::UnixStream::from_std(stream).unwrap();
    let other = TaskClient::new(Client::from_stream(stream), TaskClient::V2);
    let connect = ConnectRequest {
        id: id.clone(),
        ..Default::default()
    };
    let refused = other
        .connect(connect, &CallOptions::with_timeout(Duration::from_secs(10)))
        .await
        .expect_err("a client of gid 65534 must not be served");
    assert_ne!(refused.code(), Code::DEADLINE_EXCEEDED, "{refused}");
    // The shim still serves its own user.
    let connect = ConnectRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.connect(connect, &opts()).await.expect("Connect");
    shim.kill_and_delete(&id).await;
    shim.shutdown().await;
}

// The Go shim signals an exec with unix.Kill, any signal number; SIGRTMIN (34) terminates a
// process that does not handle it, and that exit is reported. Before the fix: InvalidArgument
// "invalid signal 34"; and a process killed by a real-time signal had its exit lost (the
// reaper used nix's waitpid, which cannot represent that status).
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_takes_real_time_signals() {
    let events = EventServer::start().await;
    let (_bundle, shim, id) = running("exec-rt", &events.address).await;
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: "rt".into(),
        spec: Some(exec_spec(&["sleep", "1000"])).into(),
        ..Default::default()
    };
    shim.task.exec(exec, &opts()).await.expect("Exec");
    let start = StartRequest {
        id: id.clone(),
        exec_id: "rt".into(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.expect("Start");
    let kill = KillRequest {
        id: id.clone(),
        exec_id: "rt".into(),
        signal: 34,
        ..Default::default()
    };
    shim.task
        .kill(kill, &opts())
        .await
        .expect("Kill with SIGRTMIN");
    let wait = WaitRequest {
        id: id.clone(),
        exec_id: "rt".into(),
        ..Default::default()
    };
    let status = shim
        .task
        .wait(wait, &opts())
        .await
        .expect("Wait")
        .exit_status;
    assert_eq!(status, 128 + 34);
    shim.kill_and_delete(&id).await;
    shim.shutdown().await;
}

// After a Shutdown that found no container the shim is going away (it flushes its events for
// a few seconds first): a Create then is refused, never half-served. Events here go to an
// address where nobody listens, so the flush takes its whole bound. Before the fix the Create
// succeeded, and its container was left behind when the shim exited.
#[tokio::test(flavor = "multi_thread")]
async fn no_create_is_served_after_shutdown() {
    let nowhere = format!("/tmp/rshim-no-events-{}.sock", std::process::id());
    let (_bundle, shim, id) = running("after-shutdown", &nowhere).await;
    shim.kill_and_delete(&id).await;
    shim.task
        .shutdown(ShutdownRequest::default(), &opts())
        .await
        .expect("Shutdown");
    let late = Bundle::new(&["sleep", "1000"]);
    let late_id = unique("too-late");
    let create = CreateTaskRequest {
        id: late_id.clone(),
        bundle: late.path().to_string_lossy().into(),
        ..Default::default()
    };
    let refused = shim.task.create(create, &opts()).await;
    let created = refused.is_ok();
    if created {
        let _ = std::process::Command::new("runc")
            .args(["--root", &format!("/run/containerd/runc/{NAMESPACE}")])
            .args(["delete", "--force", &late_id])
            .status();
    }
    let err = refused.expect_err("Create after Shutdown");
    assert!(
        matches!(err.code(), Code::FAILED_PRECONDITION | Code::UNAVAILABLE),
        "{err}"
    );
    shim.wait_gone(Duration::from_secs(20)).await;
}

// An event containerd refuses does not hold back the events after it: it is retried a few
// times and dropped (logged), and the exit still arrives. Before the fix the refused event was
// retried forever and no event after it was ever forwarded.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_containerd_refuses_does_not_block_the_exit() {
    let events = EventServer::refusing(Some("/tasks/exec-added")).await;
    let (_bundle, shim, id) = running("refused-event", &events.address).await;
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: "x".into(),
        spec: Some(exec_spec(&["true"])).into(),
        ..Default::default()
    };
    shim.task.exec(exec, &opts()).await.expect("Exec");
    shim.kill_and_delete(&id).await;
    events
        .log
        .wait_for("/tasks/exit and /tasks/delete after a refused event", |t| {
            t.iter().any(|t| t == "/tasks/exit") && t.iter().any(|t| t == "/tasks/delete")
        })
        .await;
    shim.shutdown().await;
}

// Signal 0 asks whether the process exists, as kill(2) does; the Go shim passes it to runc.
// Before the fix: InvalidArgument "invalid signal 0".
#[tokio::test(flavor = "multi_thread")]
async fn signal_zero_checks_that_the_task_exists() {
    let events = EventServer::start().await;
    let (_bundle, shim, id) = running("signal-zero", &events.address).await;
    let probe = KillRequest {
        id: id.clone(),
        signal: 0,
        ..Default::default()
    };
    shim.task
        .kill(probe.clone(), &opts())
        .await
        .expect("Kill 0 of a running task");
    shim.kill_and_delete(&id).await;
    shim.shutdown().await;
}

// A Create whose caller gave up (its deadline passed; containerd then cleans up the bundle)
// is rolled back when it finishes, instead of leaving a container nobody knows of. Here runc
// create takes 3 s and the caller waits 1 s. Before the fix the container stayed (State
// answered CREATED and runc listed it).
#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_caller_gave_up_is_rolled_back() {
    let events = EventServer::start().await;
    let id = unique("abandoned-create");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let runc = runc_stand_in(
        bundle.path(),
        "runc-slow-create",
        "for a in \"$@\"; do [ \"$a\" = create ] && sleep 3; done",
    );
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let create = CreateTaskRequest {
        id: id.clone(),
        bundle: bundle.path().to_string_lossy().into(),
        options: runc_binary_option(&runc),
        ..Default::default()
    };
    let gave_up = shim
        .task
        .create(create, &CallOptions::with_timeout(Duration::from_secs(1)))
        .await
        .expect_err("Create within 1 s while runc takes 3 s");
    assert_eq!(gave_up.code(), Code::DEADLINE_EXCEEDED, "{gave_up}");
    let state = || StateRequest {
        id: id.clone(),
        ..Default::default()
    };
    // runc create has run once its pid file exists; then the Create must be undone.
    let pid_file = bundle.path().join("init.pid");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !pid_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "runc create never ran"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    loop {
        let answer = shim.task.state(state(), &opts()).await;
        let gone = matches!(&answer, Err(e) if e.code() == Code::NOT_FOUND);
        if gone && !runc_state_exists(&id) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the abandoned Create left a container: State {answer:?}, runc lists it: {}",
            runc_state_exists(&id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !events.log.topics().iter().any(|t| t == "/tasks/create"),
        "no /tasks/create for a rolled-back Create: {:?}",
        events.log.topics()
    );
    shim.shutdown().await;
}
