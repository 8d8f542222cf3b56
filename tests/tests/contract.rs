//! containerd's contract, as its own integration tests state it, checked on the shim directly
//! (no containerd): each test is one behaviour containerd or its CRI plugin relies on, and each
//! failed on the shim before the fix it guards.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::*;
use containerd_shim_protos::types::mount::Mount;
use containerd_shim_protos::types::task::Status;
use rshim_tests::*;
use ttrpc_client::{CallOptions, Code};

/// A call that must be answered within `secs` (a hang shows as DEADLINE_EXCEEDED).
fn within(secs: u64) -> CallOptions {
    CallOptions::with_timeout(Duration::from_secs(secs))
}

/// Polls `cond` every 10 ms for at most `bound`; panics naming `what` if it never holds.
async fn poll(what: &str, bound: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Task {
    _events: EventServer,
    bundle: Bundle,
    shim: Shim,
    id: String,
}

impl Task {
    /// A shim with one created (not started) container.
    async fn create(
        prefix: &str,
        bundle: Bundle,
        edit: impl FnOnce(&mut CreateTaskRequest),
    ) -> Task {
        Task::create_logging(prefix, bundle, true, edit).await
    }

    /// The same, with the shim started with `-debug` or without it.
    async fn create_logging(
        prefix: &str,
        bundle: Bundle,
        debug: bool,
        edit: impl FnOnce(&mut CreateTaskRequest),
    ) -> Task {
        let events = EventServer::start().await;
        let id = unique(prefix);
        let shim = Shim::start_logging(&id, bundle.path(), &events.address, debug).await;
        let mut req = CreateTaskRequest {
            id: id.clone(),
            bundle: bundle.path().to_string_lossy().into(),
            ..Default::default()
        };
        edit(&mut req);
        shim.task.create(req, &opts()).await.expect("Create");
        Task {
            _events: events,
            bundle,
            shim,
            id,
        }
    }

    async fn start(&self, exec_id: &str) -> ttrpc_client::Result<StartResponse> {
        let req = StartRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.shim.task.start(req, &opts()).await
    }

    async fn state(&self, exec_id: &str) -> StateResponse {
        let req = StateRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.shim.task.state(req, &opts()).await.expect("State")
    }

    async fn kill(&self, signal: u32) {
        let req = KillRequest {
            id: self.id.clone(),
            signal,
            ..Default::default()
        };
        self.shim.task.kill(req, &opts()).await.expect("Kill");
    }

    /// Wait, answered within `secs`.
    fn wait(&self, exec_id: &str, secs: u64) -> tokio::task::JoinHandle<ttrpc_client::Result<u32>> {
        let task = self.shim.task.clone();
        let req = WaitRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        tokio::spawn(async move { task.wait(req, &within(secs)).await.map(|r| r.exit_status) })
    }

    async fn exec(
        &self,
        exec_id: &str,
        args: &[&str],
        edit: impl FnOnce(&mut ExecProcessRequest),
    ) -> ttrpc_client::Result<()> {
        let mut req = ExecProcessRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            spec: Some(exec_spec(args)).into(),
            ..Default::default()
        };
        edit(&mut req);
        self.shim.task.exec(req, &opts()).await.map(drop)
    }

    async fn delete(&self, exec_id: &str) -> ttrpc_client::Result<DeleteResponse> {
        let req = DeleteRequest {
            id: self.id.clone(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.shim.task.delete(req, &within(60)).await
    }

    /// Kills and deletes what is left, then shuts the shim down.
    async fn finish(self) {
        let _ = self
            .shim
            .task
            .kill(
                KillRequest {
                    id: self.id.clone(),
                    signal: 9,
                    all: true,
                    ..Default::default()
                },
                &opts(),
            )
            .await;
        let _ = self.wait("", 20).await;
        let _ = self.delete("").await;
        self.shim.shutdown().await;
        drop(self.bundle);
    }
}

// containerd's CRI restart path and TestIssue9103: a task killed before Start exits, and its
// exit is told at once (the Wait answers, `/tasks/exit` is published). Before the fix the exit
// waited for a start event that never came: the Wait hung.
#[tokio::test(flavor = "multi_thread")]
async fn the_exit_of_a_task_killed_before_start_is_reported() {
    let task = Task::create("killed-created", Bundle::new(&["sleep", "1000"]), |_| {}).await;
    let wait = task.wait("", 20);
    task.kill(9).await;
    assert_eq!(
        wait.await.unwrap().expect("Wait of a killed created task"),
        137
    );
    assert_eq!(
        task.state("").await.status.enum_value(),
        Ok(Status::STOPPED)
    );
    let deleted = task.delete("").await.expect("Delete");
    assert_eq!(deleted.exit_status, 137);
    task.shim.shutdown().await;
}

// TestContainerExecLargeOutputWithTTY, TestTaskResize: an exec with a terminal, asked for by
// the request (the spec does not say it: containerd's client sets only the request's field).
// Before the fix runc refused the console socket and the error came after 30 s.
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_with_a_terminal_runs_and_its_output_arrives() {
    let task = Task::create("tty-exec", Bundle::new(&["sleep", "1000"]), |_| {}).await;
    task.start("").await.expect("Start");
    let fifos = Fifos::new();
    let out = Fifos::collect(&fifos.stdout);
    task.exec(
        "t1",
        &["sh", "-c", "echo on a tty; [ -t 1 ] && echo is a tty"],
        |r| {
            r.terminal = true;
            r.stdout = fifos.stdout.clone();
        },
    )
    .await
    .expect("Exec");
    let wait = task.wait("t1", 20);
    task.start("t1").await.expect("Start of a tty exec");
    let resize = ResizePtyRequest {
        id: task.id.clone(),
        exec_id: "t1".into(),
        width: 80,
        height: 25,
        ..Default::default()
    };
    // Right after the start, maybe after the exit: never an error (ctr resizes at once).
    task.shim
        .task
        .resize_pty(resize, &opts())
        .await
        .expect("ResizePty");
    assert_eq!(wait.await.unwrap().expect("Wait"), 0);
    task.delete("t1").await.expect("Delete exec");
    let text = String::from_utf8(out.join()).unwrap();
    assert_eq!(text, "on a tty\r\nis a tty\r\n");
    task.finish().await;
}

// A tty exec that runc cannot start fails with runc's error as soon as runc fails, not after
// the console socket's deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_tty_exec_that_runc_refuses_fails_at_once() {
    let task = Task::create("tty-exec-fail", Bundle::new(&["sleep", "1000"]), |_| {}).await;
    task.start("").await.expect("Start");
    let fifos = Fifos::new();
    let _out = Fifos::collect(&fifos.stdout);
    task.exec("t1", &["/no/such/binary"], |r| {
        r.terminal = true;
        r.stdout = fifos.stdout.clone();
    })
    .await
    .expect("Exec");
    let req = StartRequest {
        id: task.id.clone(),
        exec_id: "t1".into(),
        ..Default::default()
    };
    // Bounded well under the 30 s console deadline: a hang shows as DEADLINE_EXCEEDED.
    let err = task.shim.task.start(req, &within(20)).await.unwrap_err();
    assert_ne!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");
    assert!(err.message().contains("exec failed"), "{err}");
    task.finish().await;
}

/// A bind-mounted rootfs (as containerd's snapshots give it) from another directory.
fn with_bind_rootfs(source: &Path) -> impl FnOnce(&mut CreateTaskRequest) + '_ {
    move |req| {
        req.rootfs.push(Mount {
            type_: "bind".into(),
            source: source.to_string_lossy().into(),
            options: vec!["rbind".into(), "rw".into()],
            ..Default::default()
        });
    }
}

// critest and containerd's suite: a process that makes a private mount namespace while the
// container runs (here `unshare -m`) holds a copy of its rootfs mount. The shim unmounts in
// its own namespace; Delete succeeds. Before the fix Delete failed, and the task could not be
// deleted at all while that process lived.
#[tokio::test(flavor = "multi_thread")]
async fn delete_succeeds_while_another_namespace_holds_a_copy_of_the_rootfs() {
    let (log, holder_pid) = delete_with_a_copy_held_elsewhere(true).await;
    // With -debug the copy is reported (looking for it is a debugging aid; see below).
    // (Other tests' holders may hold copies too: the holder only has to be among them.)
    let reported = log.lines().any(|l| {
        l.contains("copies remain in the mount namespaces of other processes")
            && l.contains(&holder_pid.to_string())
    });
    assert!(
        reported,
        "no report of the copy held by {holder_pid} in:\n{log}"
    );
}

// Looking for copies in other namespaces reads the mount table of every mount namespace on
// the node at every Delete (about 10 ms per container with 100 others running, growing with
// the node), for copies the kernel detaches anyway; the Go shim never looks. Without -debug
// rshim does not either. Before the fix it looked at every Delete and warned.
#[tokio::test(flavor = "multi_thread")]
async fn without_debug_delete_does_not_look_for_copies_elsewhere() {
    let (log, holder_pid) = delete_with_a_copy_held_elsewhere(false).await;
    assert!(
        !log.contains("copies remain"),
        "copies held by {holder_pid} looked for without -debug:\n{log}"
    );
}

/// A container with a bind-mounted rootfs, a process holding a copy of that mount in its own
/// mount namespace, and the container killed and deleted: returns the shim's log up to its
/// shutdown (with `-debug` or without) and the holder's pid. Delete must succeed and leave the
/// rootfs unmounted here either way.
async fn delete_with_a_copy_held_elsewhere(debug: bool) -> (String, u32) {
    let layers = Bundle::new(&["true"]);
    let source = layers.path().join("rootfs");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let rootfs = bundle.path().join("rootfs");
    let mut log = LogFifo::create(&bundle);
    let task = Task::create_logging("foreign-ns", bundle, debug, with_bind_rootfs(&source)).await;
    task.start("").await.expect("Start");
    let mut holder = std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sleep", "300"])
        .spawn()
        .unwrap();
    let holder_pid = holder.id();
    let listed = || {
        std::fs::read_to_string(format!("/proc/{holder_pid}/mountinfo"))
            .map(|m| m.contains(&format!(" {} ", rootfs.display())))
            .unwrap_or(false)
    };
    poll(
        "the holder's namespace lists the rootfs",
        Duration::from_secs(10),
        listed,
    )
    .await;
    let wait = task.wait("", 20);
    task.kill(9).await;
    assert_eq!(wait.await.unwrap().expect("Wait"), 137);
    let deleted = task.delete("").await;
    assert_eq!(
        deleted
            .expect("Delete with a copy held elsewhere")
            .exit_status,
        137
    );
    let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !own.contains(&format!(" {} ", rootfs.display())),
        "still mounted here"
    );
    // The shim logs synchronously, in order: once its shutdown is in the log, so is all that
    // Delete logged.
    task.shim.shutdown().await;
    let text = log
        .read_until(Duration::from_secs(10), |t| {
            t.contains("shutdown requested")
        })
        .await;
    let _ = holder.kill();
    let _ = holder.wait();
    drop(layers);
    (text, holder_pid)
}

/// The stdin FIFO opened for writing as containerd's client does (non-blocking: the shim
/// already holds its read end), then switched to blocking writes.
fn open_stdin_writer(path: &str) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("open stdin FIFO for writing");
    nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&f),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    f
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn process_state(pid: u32) -> char {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next()?.trim_start().chars().next())
        .unwrap_or('?')
}

// TestContainerCloseIO, TestContainerAttach: everything written into stdin before CloseIO
// reaches the process, then EOF. Here the process is stopped while the client writes and
// closes, so the bytes still sit in the FIFO when CloseIO arrives. Before the fix CloseIO
// aborted the copy and those bytes were lost (wc counted only what was in the pipe).
#[tokio::test(flavor = "multi_thread")]
async fn stdin_written_before_close_io_arrives_to_the_last_byte() {
    let fifos = Fifos::new();
    let bundle = Bundle::new(&["wc", "-c"]);
    let task = Task::create("stdin-closeio", bundle, |r| {
        r.stdin = fifos.stdin.clone();
        r.stdout = fifos.stdout.clone();
    })
    .await;
    let out = Fifos::collect(&fifos.stdout);
    let pid = task.start("").await.expect("Start").pid;
    // Stopped from outside (a namespace's init ignores SIGSTOP from inside it). Sent until the
    // process is seen stopped: Start returns while runc init (a multi-threaded Go program) may
    // still be in execve, and execve drops a group stop that is pending then (the test failed
    // 1 run in 6 with the whole file in parallel: `wc` running, nothing pending).
    let process = nix::unistd::Pid::from_raw(pid as i32);
    poll("the process is stopped", Duration::from_secs(10), || {
        nix::sys::signal::kill(process, nix::sys::signal::SIGSTOP).unwrap();
        process_state(pid) == 'T'
    })
    .await;
    // Fits in the FIFO, the copy's buffer and the process's pipe: the write completes while
    // the process reads nothing.
    let data = pattern(100 * 1024);
    let mut w = open_stdin_writer(&fifos.stdin);
    w.write_all(&data).unwrap();
    drop(w);
    let close = CloseIORequest {
        id: task.id.clone(),
        stdin: true,
        ..Default::default()
    };
    task.shim
        .task
        .close_io(close, &opts())
        .await
        .expect("CloseIO");
    let wait = task.wait("", 30);
    nix::sys::signal::kill(process, nix::sys::signal::SIGCONT).unwrap();
    assert_eq!(wait.await.unwrap().expect("Wait"), 0);
    task.delete("").await.expect("Delete");
    let text = String::from_utf8(out.join()).unwrap();
    assert_eq!(text.trim(), data.len().to_string());
    task.shim.shutdown().await;
}

// A few MiB through a running reader, byte-exact, with CloseIO right after the client closed.
#[tokio::test(flavor = "multi_thread")]
async fn stdin_megabytes_arrive_byte_exact() {
    let fifos = Fifos::new();
    let task = Task::create("stdin-mib", Bundle::new(&["cat"]), |r| {
        r.stdin = fifos.stdin.clone();
        r.stdout = fifos.stdout.clone();
    })
    .await;
    let out = Fifos::collect(&fifos.stdout);
    task.start("").await.expect("Start");
    let data = pattern(3 << 20);
    let mut w = open_stdin_writer(&fifos.stdin);
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || {
            w.write_all(&data).unwrap();
        })
    };
    let wait = task.wait("", 60);
    tokio::task::spawn_blocking(move || writer.join().unwrap())
        .await
        .unwrap();
    let close = CloseIORequest {
        id: task.id.clone(),
        stdin: true,
        ..Default::default()
    };
    task.shim
        .task
        .close_io(close, &opts())
        .await
        .expect("CloseIO");
    assert_eq!(wait.await.unwrap().expect("Wait"), 0);
    task.delete("").await.expect("Delete");
    let got = out.join();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "stdin bytes differ");
    task.shim.shutdown().await;
}

/// A runc whose `exec` waits for `go` to exist after creating `ready`, as containerd's
/// failpoint runc does for TestIssue10589.
fn runc_delaying_exec(dir: &Path) -> String {
    let (ready, go) = (dir.join("exec-ready"), dir.join("exec-go"));
    let before = format!(
        "for a in \"$@\"; do\n  if [ \"$a\" = exec ]; then\n    touch {ready}\n    \
         while [ ! -e {go} ]; do sleep 0.01; done\n    break\n  fi\ndone",
        ready = ready.display(),
        go = go.display()
    );
    runc_stand_in(dir, "runc-delay-exec", &before)
}

// TestIssue10589: the init dies while an exec is being started. Its exit is held back until
// that start is over (as the Go shim does), so a client may still add an exec in between; a
// new exec start is refused; the started one fails in runc; then the task is stopped and both
// execs are still Created. Before the fix the exec was refused ("cannot exec in a stopped
// state").
#[tokio::test(flavor = "multi_thread")]
async fn an_exec_starting_while_the_init_dies_holds_back_its_exit() {
    let bundle = Bundle::new(&["sleep", "1000"]);
    let runc = runc_delaying_exec(bundle.path());
    let (ready, go) = (
        bundle.path().join("exec-ready"),
        bundle.path().join("exec-go"),
    );
    let task = Task::create("exec-vs-exit", bundle, |r| {
        r.options = runc_binary_option(&runc)
    })
    .await;
    let pid = task.start("").await.expect("Start").pid;
    task.exec("e1", &["sleep", "301"], |_| {})
        .await
        .expect("Exec e1");
    let starting = {
        let client = task.shim.task.clone();
        let req = StartRequest {
            id: task.id.clone(),
            exec_id: "e1".into(),
            ..Default::default()
        };
        tokio::spawn(async move { client.start(req, &opts()).await })
    };
    poll("runc exec started", Duration::from_secs(20), || {
        ready.exists()
    })
    .await;
    let wait = task.wait("", 60);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    poll("the init is reaped", Duration::from_secs(10), || {
        process_state(pid) == '?'
    })
    .await;
    task.exec("e2", &["sleep", "302"], |_| {})
        .await
        .expect("Exec while the init's exit is held back");
    let refused = task.start("e2").await.unwrap_err();
    assert_eq!(refused.code(), Code::FAILED_PRECONDITION, "{refused}");
    assert!(
        refused.message().contains("init process is not running"),
        "{refused}"
    );
    std::fs::write(&go, b"").unwrap();
    starting
        .await
        .unwrap()
        .expect_err("runc exec into a dead container fails");
    assert_eq!(wait.await.unwrap().expect("Wait"), 137);
    assert_eq!(
        task.state("").await.status.enum_value(),
        Ok(Status::STOPPED)
    );
    for exec in ["e1", "e2"] {
        assert_eq!(
            task.state(exec).await.status.enum_value(),
            Ok(Status::CREATED),
            "{exec}"
        );
    }
    task.delete("").await.expect("Delete");
    task.shim.shutdown().await;
}

// A resize that reaches an exec just after it exited is harmless (`ctr task exec -t ... true`
// resizes at once): no error. Before the fix: "cannot resize a stopped container".
#[tokio::test(flavor = "multi_thread")]
async fn a_resize_after_the_exec_exited_is_not_an_error() {
    let task = Task::create("resize-late", Bundle::new(&["sleep", "1000"]), |_| {}).await;
    task.start("").await.expect("Start");
    let fifos = Fifos::new();
    let out = Fifos::collect(&fifos.stdout);
    task.exec("t1", &["true"], |r| {
        r.terminal = true;
        r.stdout = fifos.stdout.clone();
    })
    .await
    .expect("Exec");
    let wait = task.wait("t1", 20);
    task.start("t1").await.expect("Start");
    assert_eq!(wait.await.unwrap().expect("Wait"), 0);
    let resize = ResizePtyRequest {
        id: task.id.clone(),
        exec_id: "t1".into(),
        width: 100,
        height: 30,
        ..Default::default()
    };
    task.shim
        .task
        .resize_pty(resize, &opts())
        .await
        .expect("ResizePty after the exit");
    task.delete("t1").await.expect("Delete exec");
    drop(out);
    task.finish().await;
}

// No task or fd outlives its process: failed execs with stdin leave the shim's fd count where
// it was. Before the fix each left its stdin copy and 2 fds behind.
#[tokio::test(flavor = "multi_thread")]
async fn failed_execs_with_stdin_leave_no_fd_behind() {
    let task = Task::create("exec-fds", Bundle::new(&["sleep", "1000"]), |_| {}).await;
    task.start("").await.expect("Start");
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", task.shim.pid))
            .unwrap()
            .count()
    };
    failing_exec_with_stdin(&task, 0).await;
    let before = fds();
    for n in 1..=10 {
        failing_exec_with_stdin(&task, n).await;
    }
    // Aborted copies close their fds as their tasks end: poll for the count to settle.
    let settled = || fds() <= before;
    poll(
        "fds back to where they were",
        Duration::from_secs(10),
        settled,
    )
    .await;
    task.finish().await;
}

async fn failing_exec_with_stdin(task: &Task, n: usize) {
    let fifos = Fifos::new();
    let exec_id = format!("missing-{n}");
    task.exec(&exec_id, &["/no/such/binary"], |r| {
        r.stdin = fifos.stdin.clone()
    })
    .await
    .expect("Exec");
    task.start(&exec_id)
        .await
        .expect_err("exec of a missing binary");
    task.delete(&exec_id).await.expect("Delete exec");
}

/// A runc whose `exec` of a process whose spec mentions `SLOW_EXEC` waits for `go` to exist.
fn runc_delaying_slow_execs(dir: &Path) -> String {
    let go = dir.join("exec-go");
    let before = format!(
        "prev=\nfor a in \"$@\"; do\n  if [ \"$prev\" = --process ] && grep -q SLOW_EXEC \"$a\"; then\n    \
         while [ ! -e {go} ]; do sleep 0.01; done\n  fi\n  prev=$a\ndone",
        go = go.display()
    );
    runc_stand_in(dir, "runc-slow-exec", &before)
}

// Execs start side by side, as in the Go shim: one whose runc is slow (a hung exec, a busy
// node) does not hold back another's Start (a liveness probe's). Before the fix every Start
// of a container waited on one lock, and the second exec's Start timed out.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_exec_start_does_not_hold_back_another() {
    let bundle = Bundle::new(&["sleep", "1000"]);
    let runc = runc_delaying_slow_execs(bundle.path());
    let go = bundle.path().join("exec-go");
    let task = Task::create("exec-side-by-side", bundle, |r| {
        r.options = runc_binary_option(&runc)
    })
    .await;
    task.start("").await.expect("Start");
    task.exec("slow", &["sh", "-c", "true SLOW_EXEC"], |_| {})
        .await
        .expect("Exec slow");
    let slow = {
        let client = task.shim.task.clone();
        let req = StartRequest {
            id: task.id.clone(),
            exec_id: "slow".into(),
            ..Default::default()
        };
        tokio::spawn(async move { client.start(req, &within(60)).await })
    };
    task.exec("quick", &["true"], |_| {})
        .await
        .expect("Exec quick");
    let wait = task.wait("quick", 20);
    let req = StartRequest {
        id: task.id.clone(),
        exec_id: "quick".into(),
        ..Default::default()
    };
    let started = task.shim.task.start(req, &within(20)).await;
    std::fs::write(&go, b"").unwrap();
    started.expect("Start of an exec while another exec's runc is slow");
    assert_eq!(wait.await.unwrap().expect("Wait"), 0);
    slow.await
        .unwrap()
        .expect("the slow exec starts once runc goes on");
    task.finish().await;
}
