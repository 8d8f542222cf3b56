//! containerd's contract with a shim, as containerd 1.6.20's own `integration/client` tests state
//! it, checked through containerd's gRPC API (containers, snapshots, tasks, events) against the
//! Go shim and rshim side by side. Each spec names the containerd test it restates (in our own
//! words and code); it runs once per runtime and must hold for each. The Go shim is the
//! reference: a spec it fails is a broken spec.
//!
//! `RSHIM_SPECS=a,b` runs only those specs; `RSHIM_RUNTIMES=go` the reference alone;
//! `RSHIM_CONFORMANCE_REPORT=file` writes one line per spec for `scripts/matrix.sh`'s table
//! (spec, then each runtime's `pass` or `fail`, then the failures' text, tab-separated).

use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use rshim_integration::api::{Api, Collector, Events, Feeder, Fifos, Stdio};
use rshim_integration::containerd::{mounts_under, shims_of, Options, PrivateContainerd};
use rshim_integration::image::IMAGE;
use rshim_integration::Runtime;

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;
/// How long a process may take to be reported exited after it was killed or ended.
const EXIT_BOUND: Duration = Duration::from_secs(20);

struct Ctx<'a> {
    c: &'a PrivateContainerd,
    api: Api,
    events: &'a Events,
    rt: Runtime,
    spec: &'static str,
    /// Containers made by this run of the spec (removed afterwards, whatever happened).
    ids: Vec<String>,
    /// What was seen, for the report.
    notes: Vec<String>,
}

impl Ctx<'_> {
    fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    /// A container `<spec>-<name>-<runtime>` of the busybox image running `args`, made as the Go
    /// client does (new snapshot, containerd's default spec from the image config), by
    /// `ctr containers create`.
    async fn container(&mut self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        self.container_with(name, args, &[]).await
    }

    async fn container_with(
        &mut self,
        name: &str,
        args: &[&str],
        flags: &[&str],
    ) -> anyhow::Result<String> {
        let id = format!("{}-{name}-{}", self.spec, self.rt.name());
        let mut argv = vec!["containers", "create", "--runtime", self.rt.runtime_type()];
        argv.extend_from_slice(flags);
        // ctr would take the command's own flags (`sh -c`) for its own.
        argv.push("--");
        argv.push(IMAGE);
        argv.push(&id);
        argv.extend_from_slice(args);
        let out = tokio::task::block_in_place(|| self.c.ctr(&argv));
        ensure!(
            out.code == Some(0),
            "ctr containers create {id}: {}{}",
            out.stdout,
            out.stderr
        );
        self.ids.push(id.clone());
        Ok(id)
    }

    /// Edits the container's OCI spec.
    async fn edit_spec(
        &self,
        id: &str,
        f: impl FnOnce(&mut serde_json::Value),
    ) -> anyhow::Result<()> {
        let mut spec = self.api.spec(id).await?;
        f(&mut spec);
        self.api.set_spec(id, &spec).await
    }

    /// Tasks.Create, which must succeed.
    async fn create(&self, id: &str, io: &Stdio, terminal: bool) -> anyhow::Result<u32> {
        self.api
            .create(id, io, terminal)
            .await?
            .map_err(|e| anyhow!("Create {id}: {e}"))
    }

    /// Create and Start with no stdio; returns the pending Wait of the init.
    async fn run(&self, id: &str) -> anyhow::Result<tokio::task::JoinHandle<WaitRes>> {
        self.create(id, &Stdio::default(), false).await?;
        let wait = self.api.wait(id, "");
        self.api
            .start(id, "")
            .await
            .map_err(|e| anyhow!("Start {id}: {e}"))?;
        Ok(wait)
    }

    /// Removes every container of this spec run: kill, delete task, delete container and its
    /// snapshot (bounded, best effort).
    fn cleanup(&self) {
        // Bounded short: what is left (a shim that does not answer) goes when containerd does.
        let t = Duration::from_secs(15);
        for id in &self.ids {
            let _ = self
                .c
                .ctr_with(&["task", "kill", "-a", "-s", "SIGKILL", id], None, t);
            let _ = self.c.ctr_with(&["task", "delete", "-f", id], None, t);
            let _ = self.c.ctr_with(&["containers", "rm", id], None, t);
        }
    }
}

type WaitRes =
    Result<containerd_client::services::v1::WaitResponse, rshim_integration::api::tonic::Status>;

/// The exit status a pending Wait reports, within `EXIT_BOUND`.
async fn exit_of(what: &str, wait: tokio::task::JoinHandle<WaitRes>) -> anyhow::Result<u32> {
    match tokio::time::timeout(EXIT_BOUND, wait).await {
        Err(_) => bail!("Wait of {what}: no answer within {EXIT_BOUND:?}"),
        Ok(r) => Ok(r?.map_err(|e| anyhow!("Wait of {what}: {e}"))?.exit_status),
    }
}

fn status_text(s: &rshim_integration::api::tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

// ---------------------------------------------------------------------------------------------
// 1. TestContainerKill / TestTaskResize / CRI's restart path: a created task that is killed
//    without ever being started exits 137, the exit is waited for and published, and Delete
//    reports it.

async fn kill_created(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    x.create(&id, &Stdio::default(), false).await?;
    let wait = x.api.wait(&id, "");
    x.api
        .kill(&id, "", SIGKILL, false)
        .await
        .map_err(|e| anyhow!("Kill of the created task: {}", status_text(&e)))?;
    let code = exit_of("the killed created task", wait).await?;
    x.note(format!("Wait: {code}"));
    ensure!(
        code == 137,
        "Wait of the killed created task: {code}, not 137"
    );
    let exit = x
        .events
        .wait_for(&id, EXIT_BOUND, |e| e.topic == "/tasks/exit")
        .await
        .ok_or_else(|| anyhow!("no /tasks/exit event for the killed created task"))?;
    let status = exit.exit.map(|e| e.exit_status).unwrap_or(u32::MAX);
    ensure!(status == 137, "/tasks/exit reports {status}, not 137");
    let deleted = x
        .api
        .delete(&id)
        .await
        .map_err(|e| anyhow!("Delete of the killed created task: {}", status_text(&e)))?;
    x.note(format!("Delete: {}", deleted.exit_status));
    ensure!(
        deleted.exit_status == 137,
        "Delete of the killed created task reports {}, not 137",
        deleted.exit_status
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. TestContainerExecLargeOutputWithTTY: an exec with a terminal writes all its output.

async fn exec_tty_large_output(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    let fifos = Fifos::new()?;
    for round in 0..3 {
        let exec = format!("big{round}");
        let io = fifos.stdio(&exec, false, true, false);
        let out = Collector::open(&io.stdout)?;
        x.api
            .exec(&id, &exec, &["sh", "-c", "seq -s ' ' 1000000"], &io, true)
            .await?
            .map_err(|e| anyhow!("Exec with a terminal: {}", status_text(&e)))?;
        let wait = x.api.wait(&id, &exec);
        x.api
            .start(&id, &exec)
            .await
            .map_err(|e| anyhow!("Start of the tty exec: {}", status_text(&e)))?;
        let code = exit_of("the tty exec", wait).await?;
        ensure!(code == 0, "tty exec exited {code}");
        let whole = out
            .wait_for(Duration::from_secs(20), |b| {
                b.windows(14).any(|w| w == b"999999 1000000")
            })
            .await;
        let text = out.bytes();
        ensure!(
            whole,
            "round {round}: tty exec output ({} bytes) lacks its end \"999999 1000000\"; it ends {:?}",
            text.len(),
            String::from_utf8_lossy(&text[text.len().saturating_sub(20)..])
        );
        x.api
            .delete_process(&id, &exec)
            .await
            .map_err(|e| anyhow!("DeleteProcess: {}", status_text(&e)))?;
    }
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    Ok(())
}

// TestTaskResize: ResizePty of a created task without a terminal is accepted.
async fn task_resize(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sh", "-c", "exit 7"]).await?;
    x.create(&id, &Stdio::default(), false).await?;
    let wait = x.api.wait(&id, "");
    let resized = x.api.resize(&id, "", 32, 32).await;
    x.note(format!("resize of a created task: {resized:?}"));
    resized.map_err(|e| anyhow!("ResizePty of a created task: {}", status_text(&e)))?;
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the killed created task", wait).await?;
    Ok(())
}

// TestTaskResize, with a terminal: ResizePty of a terminal exec reaches its terminal.
async fn exec_tty_resize(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("tty", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    let fifos = Fifos::new()?;
    let io = fifos.stdio("size", true, true, false);
    let out = Collector::open(&io.stdout)?;
    let mut input = Feeder::open(&io.stdin)?;
    x.api
        .exec(
            &id,
            "size",
            &["sh", "-c", "read line; stty size"],
            &io,
            true,
        )
        .await?
        .map_err(|e| anyhow!("Exec with a terminal: {}", status_text(&e)))?;
    let wait = x.api.wait(&id, "size");
    x.api
        .start(&id, "size")
        .await
        .map_err(|e| anyhow!("Start of the tty exec: {}", status_text(&e)))?;
    x.api
        .resize(&id, "size", 123, 45)
        .await
        .map_err(|e| anyhow!("ResizePty of the tty exec: {}", status_text(&e)))?;
    input.write(b"go\n").await?;
    let code = exit_of("the tty exec", wait).await?;
    let seen = out
        .wait_for(Duration::from_secs(10), |b| {
            String::from_utf8_lossy(b).contains("45 123")
        })
        .await;
    ensure!(
        seen && code == 0,
        "tty exec after ResizePty(123x45): exit {code}, output {:?}",
        out.text()
    );
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Delete while another mount namespace holds a copy of the rootfs mount (any process that
//    made a private mount namespace while the container ran, as `unshare -m` does).

struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn delete_with_rootfs_in_other_namespace(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    let rootfs = x.c.bundle(&id).join("rootfs");
    let holder = Reaped(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "300"])
            .stdin(PStdio::null())
            .stdout(PStdio::null())
            .stderr(PStdio::null())
            .spawn()
            .context("unshare")?,
    );
    let pid = holder.0.id();
    let needle = rootfs.to_string_lossy().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ours = std::fs::read_link("/proc/self/ns/mnt").ok();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if theirs.is_some() && theirs != ours && info.contains(&needle) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the unshare process never held a copy of {needle}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    x.api.kill(&id, "", SIGKILL, false).await?;
    let code = exit_of("the init", init).await?;
    ensure!(code == 137, "killed init exited {code}");
    let deleted = x.api.delete(&id).await;
    x.note(format!(
        "Delete: {}",
        match &deleted {
            Ok(d) => format!("ok {}", d.exit_status),
            Err(e) => status_text(e),
        }
    ));
    drop(holder);
    deleted.map_err(|e| {
        anyhow!(
            "Delete while another mount namespace holds the rootfs: {}",
            status_text(&e)
        )
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 4. TestContainerCloseIO / TestContainerAttach: every byte written to stdin reaches the
//    process, then CloseIO(stdin) gives it EOF; `cat` echoes it all, byte for byte.

/// `len` bytes of a fixed pseudo-random sequence (every byte value, no repeating period).
fn pattern(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

async fn stdin_through_cat(x: &mut Ctx<'_>, name: &str, len: usize) -> anyhow::Result<()> {
    let id = x.container(name, &["cat"]).await?;
    let fifos = Fifos::new()?;
    // All three, as the Go client's cio makes them.
    let io = fifos.stdio("cat", true, true, true);
    let out = Collector::open(&io.stdout)?;
    let _err = Collector::open(&io.stderr)?;
    let input = Feeder::open(&io.stdin)?;
    x.create(&id, &io, false).await?;
    let wait = x.api.wait(&id, "");
    x.api.start(&id, "").await?;
    let data = pattern(len);
    input
        .write_all_and_close(&data, Duration::from_secs(60))
        .await?;
    x.api
        .close_stdin(&id, "")
        .await
        .map_err(|e| anyhow!("CloseIO(stdin): {}", status_text(&e)))?;
    let code = exit_of("cat", wait).await?;
    let all = out
        .wait_for(Duration::from_secs(10), |b| b.len() >= len)
        .await;
    let got = out.bytes();
    let first_diff = got.iter().zip(&data).position(|(a, b)| a != b);
    x.note(format!("{len}: exit {code}, {} bytes back", got.len()));
    ensure!(
        all && got.len() == len && first_diff.is_none() && code == 0,
        "{len} bytes into stdin then CloseIO: cat exited {code} and gave back {} bytes (first difference at {first_diff:?})",
        got.len()
    );
    x.api.delete(&id).await?;
    Ok(())
}

async fn stdin_1mib(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    for round in 0..5 {
        stdin_through_cat(x, &format!("r{round}"), 1 << 20).await?;
    }
    Ok(())
}

async fn stdin_3mib(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    for round in 0..3 {
        stdin_through_cat(x, &format!("r{round}"), 3 << 20).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 5. An exec started while the init is exiting.

async fn exec_while_init_exits(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let mut outcomes: Vec<String> = Vec::new();
    for round in 0..6 {
        let id = x.container(&format!("k{round}"), &["sleep", "300"]).await?;
        let init = x.run(&id).await?;
        x.api
            .exec(&id, "a", &["sleep", "5"], &Stdio::default(), false)
            .await?
            .map_err(|e| anyhow!("Exec while running: {}", status_text(&e)))?;
        // The init is killed while one exec is being started and another being made.
        let (killed, started, made) = tokio::join!(
            x.api.kill(&id, "", SIGKILL, false),
            x.api.start(&id, "a"),
            async {
                let made = x
                    .api
                    .exec(&id, "b", &["sleep", "5"], &Stdio::default(), false)
                    .await;
                match made {
                    Ok(Ok(())) => x.api.start(&id, "b").await.map(|_| ()),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(rshim_integration::api::tonic::Status::unknown(
                        e.to_string(),
                    )),
                }
            }
        );
        killed.map_err(|e| anyhow!("Kill: {}", status_text(&e)))?;
        exit_of("the init", init).await?;
        let show = |r: Result<(), rshim_integration::api::tonic::Status>| match r {
            Ok(()) => "started".to_string(),
            Err(e) => e.message().replace(&id, "<id>"),
        };
        outcomes.push(format!(
            "a: {} / b: {}",
            show(started.map(|_| ())),
            show(made)
        ));
    }
    x.note(format!("{outcomes:?}"));
    // Each exec begun while the init dies either starts or is refused in words containerd's
    // shims use: runc's own ("cannot exec in a stopped container", "setns ..."), "cannot exec
    // in a stopped state" (the init's exit was already told), or "container ... init process
    // is not running" (the Go shim since 1.7 and rshim: the init has died, its exit is being
    // held back). The init's exit is reported either way (checked above); the deterministic
    // version of this race, with a runc that holds the exec, is in tests/tests/contract.rs.
    let known = [
        "started",
        "cannot exec in a stopped",
        "init process is not running",
        "setns",
        "exit status",
        "OCI runtime exec failed",
    ];
    let unknown: Vec<&String> = outcomes
        .iter()
        .filter(|o| {
            o.split(" / ")
                .any(|part| !known.iter().any(|k| part.contains(k)))
        })
        .collect();
    ensure!(
        unknown.is_empty(),
        "execs begun while the init was exiting ended in unexpected ways: {unknown:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// More of containerd's tests.

// TestContainerExec, TestWaitStoppedProcess: an exec's exit status, waited for twice, and
// reported by DeleteProcess.
async fn exec_exit_status(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    x.api
        .exec(
            &id,
            "six",
            &["sh", "-c", "exit 6"],
            &Stdio::default(),
            false,
        )
        .await?
        .map_err(|e| anyhow!("Exec: {}", status_text(&e)))?;
    let wait = x.api.wait(&id, "six");
    x.api.start(&id, "six").await?;
    let first = exit_of("the exec", wait).await?;
    let second = exit_of("the stopped exec", x.api.wait(&id, "six")).await?;
    let deleted = x.api.delete_process(&id, "six").await?;
    ensure!(
        (first, second, deleted.exit_status) == (6, 6, 6),
        "exec `exit 6`: Wait {first}, Wait again {second}, DeleteProcess {}",
        deleted.exit_status
    );
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    Ok(())
}

// TestWaitStoppedTask, TestContainerExitedAtSet, TestShortRunningTaskPid: a task that exits 7
// has a pid, is waited for twice, shows as stopped with an exit time, and Delete reports 7.
async fn wait_stopped_task(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sh", "-c", "exit 7"]).await?;
    let pid = x.create(&id, &Stdio::default(), false).await?;
    ensure!(pid > 0, "Create returned pid {pid}");
    let wait = x.api.wait(&id, "");
    x.api.start(&id, "").await?;
    let first = exit_of("the task", wait).await?;
    let second = exit_of("the stopped task", x.api.wait(&id, "")).await?;
    let got = x.api.get(&id, "").await?;
    let exited_at = got.exited_at.map(|t| t.seconds).unwrap_or(0);
    let deleted = x.api.delete(&id).await?;
    ensure!(
        (first, second, got.exit_status, deleted.exit_status) == (7, 7, 7, 7),
        "task `exit 7`: Wait {first}, Wait again {second}, Get {}, Delete {}",
        got.exit_status,
        deleted.exit_status
    );
    ensure!(
        got.status == containerd_client::types::v1::Status::Stopped as i32,
        "Get of the exited task: status {}",
        got.status
    );
    ensure!(exited_at > 0, "Get of the exited task: no exited_at");
    ensure!(
        deleted.exited_at.map(|t| t.seconds).unwrap_or(0) > 0,
        "Delete of the exited task: no exited_at"
    );
    Ok(())
}

// TestContainerKill: a second Kill of an exited task is NotFound.
async fn kill_twice(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    x.api.kill(&id, "", SIGKILL, false).await?;
    let code = exit_of("the init", init).await?;
    ensure!(code == 137, "killed init exited {code}");
    let again = x.api.kill(&id, "", SIGTERM, false).await;
    x.note(format!(
        "second kill: {:?}",
        again.as_ref().map_err(status_text)
    ));
    match again {
        Ok(()) => bail!("a second Kill of the exited task succeeded"),
        Err(e) if e.code() == rshim_integration::api::tonic::Code::NotFound => Ok(()),
        Err(e) => bail!(
            "a second Kill of the exited task: {}, not NotFound",
            status_text(&e)
        ),
    }
}

const NOT_FOUND_TEXT: &str = "executable file not found in $PATH";

// TestContainerNoBinaryExists: Create of a task whose binary is missing fails, saying so.
async fn no_binary(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["nothing"]).await?;
    match x.api.create(&id, &Stdio::default(), false).await? {
        Ok(_) => bail!("Create of a task whose binary is missing succeeded"),
        Err(e) => {
            x.note(e.message().to_string());
            ensure!(
                e.message().contains(NOT_FOUND_TEXT),
                "Create error lacks {NOT_FOUND_TEXT:?}: {}",
                status_text(&e)
            );
        }
    }
    Ok(())
}

// TestContainerExecNoBinaryExists: Start of an exec whose binary is missing fails, saying so.
async fn exec_no_binary(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    x.api
        .exec(&id, "none", &["none"], &Stdio::default(), false)
        .await?
        .map_err(|e| anyhow!("Exec: {}", status_text(&e)))?;
    let started = x.api.start(&id, "none").await;
    let _ = x.api.delete_process(&id, "none").await;
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    match started {
        Ok(_) => bail!("Start of an exec whose binary is missing succeeded"),
        Err(e) => {
            x.note(e.message().to_string());
            ensure!(
                e.message().contains(NOT_FOUND_TEXT),
                "exec Start error lacks {NOT_FOUND_TEXT:?}: {}",
                status_text(&e)
            );
        }
    }
    Ok(())
}

// TestDeleteContainerExecCreated: an exec made but never started can be deleted.
async fn delete_exec_created(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    x.api
        .exec(&id, "idle", &["true"], &Stdio::default(), false)
        .await?
        .map_err(|e| anyhow!("Exec: {}", status_text(&e)))?;
    let deleted = x.api.delete_process(&id, "idle").await;
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    deleted.map_err(|e| anyhow!("DeleteProcess of a created exec: {}", status_text(&e)))?;
    Ok(())
}

// TestTaskForceDelete, TestProcessForceDelete: Delete of a running task or exec is refused;
// after a kill it succeeds.
async fn force_delete(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    x.api
        .exec(&id, "long", &["sleep", "300"], &Stdio::default(), false)
        .await?
        .map_err(|e| anyhow!("Exec: {}", status_text(&e)))?;
    let exec = x.api.wait(&id, "long");
    x.api.start(&id, "long").await?;
    let running_exec = x.api.delete_process(&id, "long").await;
    ensure!(
        running_exec.is_err(),
        "DeleteProcess of a running exec succeeded"
    );
    x.api.kill(&id, "long", SIGKILL, false).await?;
    let code = exit_of("the killed exec", exec).await?;
    ensure!(code == 137, "killed exec exited {code}");
    x.api
        .delete_process(&id, "long")
        .await
        .map_err(|e| anyhow!("DeleteProcess of the killed exec: {}", status_text(&e)))?;
    let running = x.api.delete(&id).await;
    x.note(format!(
        "delete running exec: {} / task: {}",
        running_exec
            .err()
            .map(|e| status_text(&e))
            .unwrap_or_default(),
        running.as_ref().err().map(status_text).unwrap_or_default()
    ));
    ensure!(running.is_err(), "Delete of a running task succeeded");
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    x.api
        .delete(&id)
        .await
        .map_err(|e| anyhow!("Delete of the killed task: {}", status_text(&e)))?;
    Ok(())
}

/// Polls (bounded) until none of `pids` is alive.
async fn gone(pids: &[u32]) -> bool {
    let deadline = Instant::now() + EXIT_BOUND;
    loop {
        let alive: Vec<&u32> = pids
            .iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .map(|s| {
                        !s.rsplit(')')
                            .next()
                            .unwrap_or("")
                            .trim_start()
                            .starts_with('Z')
                    })
                    .unwrap_or(false)
            })
            .collect();
        if alive.is_empty() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A host-PID-namespace container running a shell with two sleeping children; returns its id,
/// the pending Wait and the pids ListPids reports once the children are there.
async fn host_pid_family(
    x: &mut Ctx<'_>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<WaitRes>, Vec<u32>)> {
    let id = x
        .container("c", &["sh", "-c", "sleep 300 & sleep 300 & wait"])
        .await?;
    x.edit_spec(&id, |spec| {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "pid");
        }
    })
    .await?;
    let init = x.run(&id).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = loop {
        let pids = x.api.pids(&id).await?;
        if pids.len() >= 3 {
            break pids;
        }
        ensure!(
            Instant::now() < deadline,
            "ListPids never showed the shell and its two children: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Ok((id, init, pids))
}

// TestContainerPids, TestContainerKillAll: ListPids shows every process; Kill(all) kills them
// all, even in the host's PID namespace.
async fn kill_all(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (id, init, pids) = host_pid_family(x).await?;
    x.api.kill(&id, "", SIGKILL, true).await?;
    let code = exit_of("the init", init).await?;
    ensure!(code == 137, "init exited {code}");
    ensure!(
        gone(&pids).await,
        "processes left after Kill(all): {pids:?}"
    );
    Ok(())
}

// TestContainerKillInitPidHost: in the host's PID namespace, when the init is killed the shim
// kills the rest of the container.
async fn kill_init_pid_host(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let (id, init, pids) = host_pid_family(x).await?;
    x.api.kill(&id, "", SIGKILL, false).await?;
    let code = exit_of("the init", init).await?;
    ensure!(code == 137, "init exited {code}");
    ensure!(
        gone(&pids).await,
        "children left after the init was killed: {pids:?}"
    );
    Ok(())
}

// TestContainerNoSTDIN: a task with stdout and stderr but no stdin runs and exits 0.
async fn no_stdin(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sh", "-c", "echo out"]).await?;
    let fifos = Fifos::new()?;
    let io = fifos.stdio("nostdin", false, true, true);
    let out = Collector::open(&io.stdout)?;
    let _err = Collector::open(&io.stderr)?;
    x.create(&id, &io, false).await?;
    let wait = x.api.wait(&id, "");
    x.api.start(&id, "").await?;
    let code = exit_of("the task", wait).await?;
    let said = out
        .wait_for(Duration::from_secs(10), |b| b.starts_with(b"out\n"))
        .await;
    ensure!(
        code == 0 && said,
        "task without stdin: exit {code}, stdout {:?}",
        out.text()
    );
    x.api.delete(&id).await?;
    Ok(())
}

// TestTaskUpdate: Update of a running task's memory limit reaches its cgroup.
async fn task_update(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    let limit: u64 = 64 << 20;
    x.api
        .update_resources(&id, &serde_json::json!({"memory": {"limit": limit}}))
        .await
        .map_err(|e| anyhow!("Update: {}", status_text(&e)))?;
    let path = format!(
        "/sys/fs/cgroup/memory/{}/{id}/memory.limit_in_bytes",
        rshim_integration::containerd::NAMESPACE
    );
    let now = std::fs::read_to_string(&path).unwrap_or_default();
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    ensure!(
        now.trim() == limit.to_string(),
        "{path} after Update to {limit}: {now:?}"
    );
    Ok(())
}

fn oom_score_adj(pid: i32) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

// TestShimOOMScore: the shim's oom_score_adj is containerd's plus one (at most 1000).
async fn shim_oom_score(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    let config =
        x.c.dir
            .path()
            .join("config.toml")
            .to_string_lossy()
            .to_string();
    let containerd = std::fs::read_dir("/proc")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.starts_with("containerd\0") && cmd.contains(&config)
        })
        .ok_or_else(|| anyhow!("our containerd's pid not found"))?;
    let id = x.container("c", &["sleep", "300"]).await?;
    let init = x.run(&id).await?;
    let shim = x.c.shim_of(&id);
    let want = (oom_score_adj(containerd).unwrap_or(0) + 1).min(1000);
    let got = shim.and_then(oom_score_adj);
    x.api.kill(&id, "", SIGKILL, false).await?;
    exit_of("the init", init).await?;
    x.note(format!(
        "containerd {containerd}: want {want}, shim {shim:?}: {got:?}"
    ));
    ensure!(got == Some(want), "shim oom_score_adj {got:?}, want {want}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------

const SPECS: &[&str] = &[
    "kill-created",
    "exec-tty-large-output",
    "task-resize",
    "exec-tty-resize",
    "delete-rootfs-in-other-mntns",
    "stdin-1mib",
    "stdin-3mib",
    "exec-while-init-exits",
    "exec-exit-status",
    "wait-stopped-task",
    "kill-twice",
    "no-binary",
    "exec-no-binary",
    "delete-exec-created",
    "force-delete",
    "kill-all",
    "kill-init-pid-host",
    "no-stdin",
    "task-update",
    "shim-oom-score",
];

async fn run_spec(x: &mut Ctx<'_>) -> anyhow::Result<()> {
    match x.spec {
        "kill-created" => kill_created(x).await,
        "exec-tty-large-output" => exec_tty_large_output(x).await,
        "task-resize" => task_resize(x).await,
        "exec-tty-resize" => exec_tty_resize(x).await,
        "delete-rootfs-in-other-mntns" => delete_with_rootfs_in_other_namespace(x).await,
        "stdin-1mib" => stdin_1mib(x).await,
        "stdin-3mib" => stdin_3mib(x).await,
        "exec-while-init-exits" => exec_while_init_exits(x).await,
        "exec-exit-status" => exec_exit_status(x).await,
        "wait-stopped-task" => wait_stopped_task(x).await,
        "kill-twice" => kill_twice(x).await,
        "no-binary" => no_binary(x).await,
        "exec-no-binary" => exec_no_binary(x).await,
        "delete-exec-created" => delete_exec_created(x).await,
        "force-delete" => force_delete(x).await,
        "kill-all" => kill_all(x).await,
        "kill-init-pid-host" => kill_init_pid_host(x).await,
        "no-stdin" => no_stdin(x).await,
        "task-update" => task_update(x).await,
        "shim-oom-score" => shim_oom_score(x).await,
        other => Err(anyhow!("no spec {other}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containerd_contract_holds_for_both_shims() {
    let started = Instant::now();
    let runtimes = Runtime::selected();
    let c = PrivateContainerd::start(Options::default()).expect("private containerd");
    c.import_busybox().expect("import busybox");
    let api = Api::connect(&c.address).await.expect("containerd API");
    let events = api.events().await.expect("subscribe to events");
    let only = std::env::var("RSHIM_SPECS").ok();
    let selected = |name: &str| {
        only.as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    };

    let mut rows = Vec::new();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for spec in SPECS.iter().copied().filter(|s| selected(s)) {
        let mut cells = Vec::new();
        let mut verdicts = Vec::new();
        let mut why = Vec::new();
        for &rt in &runtimes {
            let mut x = Ctx {
                c: &c,
                api: api.clone(),
                events: &events,
                rt,
                spec,
                ids: Vec::new(),
                notes: Vec::new(),
            };
            let t = Instant::now();
            let outcome =
                match tokio::time::timeout(Duration::from_secs(150), run_spec(&mut x)).await {
                    Ok(r) => r,
                    Err(_) => Err(anyhow!("spec did not finish within 150s")),
                };
            tokio::task::block_in_place(|| x.cleanup());
            let cell = match &outcome {
                Ok(()) => "pass".to_string(),
                Err(e) => format!("FAIL: {e:#}"),
            };
            println!(
                "[{spec} / {}] {cell} ({:.1}s) {}",
                rt.name(),
                t.elapsed().as_secs_f64(),
                x.notes.join(" | ")
            );
            if outcome.is_err() {
                failures.push(format!("{spec} on {}: {cell}", rt.name()));
                why.push(format!(
                    "{}: {}",
                    rt.name(),
                    cell.replace(['\t', '\n'], " ")
                ));
            }
            verdicts.push(if outcome.is_ok() { "pass" } else { "fail" });
            cells.push(cell);
        }
        rows.push(format!("| {spec} | {} |", cells.join(" | ")));
        report.push(format!(
            "{spec}\t{}\t{}",
            verdicts.join("\t"),
            why.join("; ")
        ));
    }
    if let Ok(path) = std::env::var("RSHIM_CONFORMANCE_REPORT") {
        std::fs::write(&path, report.join("\n") + "\n").expect("write RSHIM_CONFORMANCE_REPORT");
    }
    println!(
        "| behaviour | {} |\n|---|{}\n{}",
        runtimes
            .iter()
            .map(|r| r.name())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(runtimes.len()),
        rows.join("\n")
    );
    println!("conformance took {:.0}s", started.elapsed().as_secs_f64());
    drop(events);
    let address = c.address.clone();
    let dir = c.dir.path().to_path_buf();
    drop(c);
    assert!(
        shims_of(&address).is_empty(),
        "shims left behind: {:?}",
        shims_of(&address)
    );
    assert!(
        mounts_under(&dir).is_empty(),
        "mounts left behind: {:?}",
        mounts_under(&dir)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
