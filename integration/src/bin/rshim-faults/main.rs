//! The fault-injection suite: bug classes reproduced on the real containerd, runc and kernel,
//! each run against containerd's Go shim and rshim. rshim must pass every row; the Go shim's
//! rows are measured and printed, not asserted. The table goes to stdout and to
//! integration/results/faults.md.
//!
//! `rshim-faults [--rounds N] [--rows 1,9]` (default 2000 storm rounds, every row; only a run of
//! every row rewrites the results file).

mod bad_requests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{DeleteRequest, KillRequest, WaitRequest};
use rshim_integration::containerd::{Options, PrivateContainerd, NAMESPACE};
use rshim_integration::events::EventCapture;
use rshim_integration::image::IMAGE;
use rshim_integration::procfs::usage;
use rshim_integration::{ctr, Runtime};
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

struct Row {
    scenario: &'static str,
    go: String,
    rshim: String,
    rshim_pass: bool,
}

fn shim_client_address(c: &PrivateContainerd, id: &str) -> String {
    std::fs::read_to_string(c.bundle(id).join("address"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

async fn connect(address: &str) -> anyhow::Result<TaskClient> {
    let client = Client::connect(address, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(TaskClient::new(client, TaskClient::V2))
}

/// Class 1: a process that cannot exit (paused, SIGTERM ignored by pid 1) and clients that
/// retry Kill + Wait + Delete with 100 ms deadlines or drop their connection.
async fn storm(
    c: &PrivateContainerd,
    events: &EventCapture,
    rt: Runtime,
    rounds: usize,
) -> anyhow::Result<(String, bool)> {
    let id = format!("storm-{}", rt.name());
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        rt.runtime_type(),
        IMAGE,
        &id,
        "sleep",
        "100000",
    ]);
    anyhow::ensure!(out.code == Some(0), "run: {}", out.stderr);
    let pid = c
        .shim_of(&id)
        .ok_or_else(|| anyhow::anyhow!("no shim for {id}"))?;
    let address = shim_client_address(c, &id);
    anyhow::ensure!(
        c.ctr(&["task", "pause", &id]).code == Some(0),
        "pause failed"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = usage(pid);

    // Pending Waits held open, sent as containerd sends them (no deadline): their cost each.
    const HELD: usize = 1000;
    let held = connect(&address).await?;
    let long = CallOptions::local_deadline(Duration::from_secs(120));
    let mut waits = Vec::new();
    for _ in 0..HELD {
        let (held, long, req) = (
            held.clone(),
            long.clone(),
            WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
        );
        waits.push(tokio::spawn(async move {
            let _ = held.wait(req, &long).await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let holding = usage(pid);
    for w in &waits {
        w.abort();
    }
    drop(held);
    let per_wait = (holding.rss_kib.saturating_sub(before.rss_kib) * 1024) / HELD as u64;

    // Through containerd: `ctr task kill` and `ctr task attach` (which waits) killed after
    // 100 ms. containerd
    // keeps each abandoned Wait pending in the shim (ttrpc has no cancel frame).
    const CTR_ROUNDS: usize = 100;
    let ctr_before = usage(pid);
    let ctr_started = Instant::now();
    for _ in 0..CTR_ROUNDS / 10 {
        std::thread::scope(|scope| {
            for _ in 0..10 {
                scope.spawn(|| {
                    let bound = Duration::from_millis(100);
                    let _ = c.ctr_with(&["task", "kill", &id], None, bound);
                    // Debian's ctr has no `task wait`; `attach` waits on the task.
                    let _ = c.ctr_with(&["task", "attach", &id], None, bound);
                });
            }
        });
    }
    let ctr_time = ctr_started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ctr_after = usage(pid);
    // The phase must have reached the shim: rshim's dump counts the Waits containerd left.
    let parked = match rt {
        Runtime::Rshim => Some(pending_waits_dumped(c, pid, &id).await),
        Runtime::Go => None,
    };

    // The storm on the shim's socket, Waits again without a deadline (as containerd's).
    let shared = connect(&address).await?;
    let short = CallOptions::with_timeout(Duration::from_millis(100));
    let short_wait = CallOptions::local_deadline(Duration::from_millis(100));
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for batch in 0..rounds.div_ceil(25) {
        let mut jobs = Vec::new();
        for i in 0..25 {
            let round = batch * 25 + i;
            if round >= rounds {
                break;
            }
            let (id, address, short, short_wait) = (
                id.clone(),
                address.clone(),
                short.clone(),
                short_wait.clone(),
            );
            let client = if round % 2 == 0 {
                Some(TaskClient::new(shared_client(&shared), TaskClient::V2))
            } else {
                None
            };
            jobs.push(tokio::spawn(async move {
                let t = match client {
                    Some(t) => t,
                    None => connect(&address).await.expect("connect"),
                };
                let t0 = Instant::now();
                let (k, w, d) = tokio::join!(
                    t.kill(
                        KillRequest {
                            id: id.clone(),
                            signal: 15,
                            ..Default::default()
                        },
                        &short
                    ),
                    t.wait(
                        WaitRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                        &short_wait
                    ),
                    t.delete(
                        DeleteRequest {
                            id: id.clone(),
                            ..Default::default()
                        },
                        &short
                    ),
                );
                let name = |r: Result<(), ttrpc_client::Error>| match r {
                    Ok(()) => "OK".to_string(),
                    Err(e) => format!("{:?}", e.code()),
                };
                (
                    t0.elapsed(),
                    [
                        name(k.map(|_| ())),
                        name(w.map(|_| ())),
                        name(d.map(|_| ())),
                    ],
                )
            }));
        }
        for j in jobs {
            let (took, names) = j.await?;
            slowest = slowest.max(took);
            for n in names {
                *codes.entry(n).or_default() += 1;
            }
        }
    }
    let storm_time = started.elapsed();
    drop(shared);
    // Let abandoned server-side work finish under its own deadlines.
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if usage(pid).fds <= before.fds + 2 {
            break;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = usage(pid);

    // Thaw: the process dies, one exit, status 137.
    anyhow::ensure!(
        c.ctr(&["task", "resume", &id]).code == Some(0),
        "resume failed"
    );
    let t = connect(&address).await?;
    let ok = CallOptions::with_timeout(Duration::from_secs(30));
    t.kill(
        KillRequest {
            id: id.clone(),
            signal: 9,
            ..Default::default()
        },
        &ok,
    )
    .await
    .map_err(|e| anyhow::anyhow!("kill: {e}"))?;
    let status = t
        .wait(
            WaitRequest {
                id: id.clone(),
                ..Default::default()
            },
            &ok,
        )
        .await
        .map_err(|e| anyhow::anyhow!("wait: {e}"))?
        .exit_status;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let exits = events
        .topics_for(&id)
        .iter()
        .filter(|t| *t == "/tasks/exit")
        .count();
    let _ = c.ctr(&["task", "delete", &id]);
    let _ = c.ctr(&["containers", "rm", &id]);

    // Stated slack: 2 fds, 4 threads (tokio's blocking pool), 4 MiB RSS (the allocator keeps
    // the peak of the storm's connections), 1 MiB RSS through containerd, 512 bytes per
    // pending Wait.
    let rss_growth = after.rss_kib as i64 - before.rss_kib as i64;
    let ctr_growth = ctr_after.rss_kib as i64 - ctr_before.rss_kib as i64;
    let pass = after.fds <= before.fds + 2
        && after.threads <= before.threads + 4
        && rss_growth < 4096
        && ctr_after.threads <= ctr_before.threads + 4
        && ctr_growth < 1024
        && parked.is_none_or(|n| n >= CTR_ROUNDS / 4)
        && per_wait < 512
        && slowest < Duration::from_millis(1000)
        && status == 137
        && exits == 1;
    let text = format!(
        "{} bytes per pending Wait ({HELD} held: RSS {} KiB); through containerd: {CTR_ROUNDS} rounds of ctr task kill + attach killed after 100 ms in {:.1}s, {}threads {}→{}, RSS {}→{} KiB; on the socket: {rounds} rounds in {:.1}s, slowest answer {} ms; statuses {:?}; fds {}→{}, threads {}→{}, RSS {}→{} KiB; exit {status}, /tasks/exit ×{exits}",
        per_wait,
        holding.rss_kib,
        ctr_time.as_secs_f64(),
        parked
            .map(|n| format!("Waits left pending by containerd: {n}, "))
            .unwrap_or_default(),
        ctr_before.threads,
        ctr_after.threads,
        ctr_before.rss_kib,
        ctr_after.rss_kib,
        storm_time.as_secs_f64(),
        slowest.as_millis(),
        codes,
        before.fds,
        after.fds,
        before.threads,
        after.threads,
        before.rss_kib,
        after.rss_kib,
    );
    Ok((text, pass))
}

/// The pending Waits of `id`'s init in rshim's SIGUSR1 dump, which containerd copies from the
/// shim's log into its own (0 if no dump line appears within 5 s).
async fn pending_waits_dumped(c: &PrivateContainerd, pid: i32, id: &str) -> usize {
    let log = c.dir.path().join("containerd.log");
    let seen = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGUSR1);
    let wanted = format!("dump: container={id} process={id} ");
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = std::fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(seen..).unwrap_or_default()).into_owned();
        let count = new.lines().filter(|l| l.contains(&wanted)).find_map(|l| {
            let at = l.find("pending_waits=")? + "pending_waits=".len();
            let digits: String = l[at..].chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        if let Some(n) = count {
            return n;
        }
    }
    0
}

/// TaskClient owns its Client; a clone shares the connection.
fn shared_client(t: &TaskClient) -> Client {
    t.client()
}

const FLOOD_BYTES: usize = 1 << 20;

/// The flood's bytes: "abcdefghi\n" repeated, 1 MiB exactly, then the process's own output.
fn flood_then(tail: &str) -> String {
    let mut s: String = "abcdefghi\n".chars().cycle().take(FLOOD_BYTES).collect();
    s.push_str(tail);
    s
}

/// A runc stand-in: for `subcommand`, 1 MiB to fd 2 (the process's stderr pipe, which runc
/// is handed) before exec'ing the real runc (seed 002).
fn flood_wrapper(dir: &std::path::Path, subcommand: &str) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("runc-flood-{subcommand}"));
    std::fs::write(
        &path,
        format!("#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = {subcommand} ]; then yes abcdefghi | head -c {FLOOD_BYTES} >&2; break; fi; done\nexec /usr/sbin/runc \"$@\"\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path.to_string_lossy().into_owned())
}

/// How each shim is told to use another runc binary.
fn runc_binary_args(
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

/// Class 3 through containerd: `ctr run` with a flood during create, `ctr task exec` with a
/// flood during exec. Bounded: a hang is recorded after `HANG_BOUND`.
fn stdio_flood(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<(String, bool)> {
    const HANG_BOUND: Duration = Duration::from_secs(20);
    let describe = |out: &ctr::Output, want: &str| -> (String, bool) {
        if out.timed_out {
            (
                format!("HUNG (killed after {}s)", HANG_BOUND.as_secs()),
                false,
            )
        } else if out.stderr == want {
            (
                format!("exit {:?}, 1 MiB + output byte-exact", out.code),
                true,
            )
        } else {
            (
                format!(
                    "exit {:?}, stderr {} bytes (want {})",
                    out.code,
                    out.stderr.len(),
                    want.len()
                ),
                false,
            )
        }
    };
    let create_flood = flood_wrapper(c.dir.path(), "create")?;
    let id = format!("flood-run-{}", rt.name());
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--runtime".into(),
        rt.runtime_type().into(),
    ];
    args.extend(runc_binary_args(c, rt, &create_flood)?);
    args.extend([
        IMAGE.to_string(),
        id.clone(),
        "sh".into(),
        "-c".into(),
        "echo done >&2".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = c.ctr_with(&refs, None, HANG_BOUND);
    let (run_text, run_ok) = describe(&run, &flood_then("done\n"));
    if run.timed_out {
        cleanup_hung(c, &id);
    }

    let exec_flood = flood_wrapper(c.dir.path(), "exec")?;
    let id = format!("flood-exec-{}", rt.name());
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--runtime".into(),
        rt.runtime_type().into(),
    ];
    args.extend(runc_binary_args(c, rt, &exec_flood)?);
    args.extend([
        IMAGE.to_string(),
        id.clone(),
        "sleep".into(),
        "100000".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    anyhow::ensure!(c.ctr(&refs).code == Some(0), "run -d failed");
    let exec = c.ctr_with(
        &[
            "task",
            "exec",
            "--exec-id",
            "flood",
            &id,
            "sh",
            "-c",
            "echo done >&2",
        ],
        None,
        HANG_BOUND,
    );
    let (exec_text, exec_ok) = describe(&exec, &flood_then("done\n"));
    cleanup_hung(c, &id);
    Ok((
        format!("ctr run: {run_text}; ctr task exec: {exec_text}"),
        run_ok && exec_ok,
    ))
}

/// Removes a container whose shim may be stuck: kill the shim, then let containerd clean up.
fn cleanup_hung(c: &PrivateContainerd, id: &str) {
    if let Some(pid) = c.shim_of(id) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(1000));
    }
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}

/// A runc that hangs (on `pause`) for one container of a pod shim: the other container of the
/// same shim keeps working (exec, `ctr task ls`), and the hung call ends with a clear error.
fn hanging_runc_in_a_pod(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<(String, bool)> {
    use std::os::unix::fs::PermissionsExt;
    const BOUND: Duration = Duration::from_secs(20);
    let hang = c.dir.path().join(format!("runc-hang-pause-{}", rt.name()));
    // Hangs in `pause`; crashes (SIGSEGV) in `exec`.
    std::fs::write(
        &hang,
        "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = pause ]; then exec sleep 1000; fi; \
         if [ \"$a\" = exec ]; then kill -SEGV $$; fi; done\nexec /usr/sbin/runc \"$@\"\n",
    )?;
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755))?;
    let group = format!("io.containerd.runc.v2.group=pod-{}", rt.name());
    let (stuck, healthy) = (
        format!("pod-{}-stuck", rt.name()),
        format!("pod-{}-ok", rt.name()),
    );
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--runtime".into(),
        rt.runtime_type().into(),
        "--annotation".into(),
        group.clone(),
    ];
    args.extend(runc_binary_args(c, rt, &hang.to_string_lossy())?);
    args.extend([
        IMAGE.to_string(),
        stuck.clone(),
        "sleep".into(),
        "100000".into(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    anyhow::ensure!(c.ctr(&refs).code == Some(0), "run {stuck}");
    let out = c.ctr(&[
        "run",
        "-d",
        "--runtime",
        rt.runtime_type(),
        "--annotation",
        &group,
        IMAGE,
        &healthy,
        "sleep",
        "100000",
    ]);
    anyhow::ensure!(out.code == Some(0), "run {healthy}: {}", out.stderr);
    // A pod shim's command line names only the first container: compare the bundles' addresses.
    let one_shim = !shim_client_address(c, &stuck).is_empty()
        && shim_client_address(c, &stuck) == shim_client_address(c, &healthy);

    // Pause the stuck one in the background; meanwhile use the healthy one.
    let (address, stuck_id) = (c.address.clone(), stuck.clone());
    let pause = std::thread::spawn(move || {
        let t0 = Instant::now();
        let args: Vec<String> = [
            "--address",
            &address,
            "--namespace",
            NAMESPACE,
            "task",
            "pause",
            &stuck_id,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        (ctr::run("ctr", &args, None, BOUND), t0.elapsed())
    });
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let exec = c.ctr_with(
        &["task", "exec", "--exec-id", "probe", &healthy, "echo", "ok"],
        None,
        BOUND,
    );
    let exec_time = t0.elapsed();
    let t0 = Instant::now();
    let ls = c.ctr_with(&["task", "ls"], None, BOUND);
    let ls_time = t0.elapsed();
    let (paused, pause_time) = pause.join().map_err(|_| anyhow::anyhow!("pause thread"))?;
    let pause_text = if paused.timed_out {
        format!("pause HUNG (killed after {}s)", BOUND.as_secs())
    } else {
        format!(
            "pause answered in {:.1}s: {}",
            pause_time.as_secs_f64(),
            paused.stderr.trim().trim_start_matches("ctr: ")
        )
    };
    let exec_ok = exec.code == Some(0) && exec.stdout == "ok\n";
    let ls_ok = ls.code == Some(0) && !ls.timed_out;
    // runc crashes: the exec fails with a clear error at once; the other container still works.
    let t0 = Instant::now();
    let crashed = c.ctr_with(
        &["task", "exec", "--exec-id", "crash", &stuck, "echo", "hi"],
        None,
        BOUND,
    );
    let crash_time = t0.elapsed();
    let crash_text = if crashed.timed_out {
        format!(
            "exec with crashing runc HUNG (killed after {}s)",
            BOUND.as_secs()
        )
    } else {
        format!(
            "exec with crashing runc answered in {} ms: {}",
            crash_time.as_millis(),
            crashed.stderr.trim().trim_start_matches("ctr: ")
        )
    };
    let after = c.ctr_with(
        &[
            "task",
            "exec",
            "--exec-id",
            "probe2",
            &healthy,
            "echo",
            "ok",
        ],
        None,
        BOUND,
    );
    let after_ok = after.code == Some(0) && after.stdout == "ok\n";
    cleanup_hung(c, &stuck);
    remove(c, &healthy);
    let pass = one_shim
        && exec_ok
        && ls_ok
        && !paused.timed_out
        && paused.code != Some(0)
        && pause_time < BOUND
        && !crashed.timed_out
        && crashed.code != Some(0)
        && crashed.stderr.contains("signal")
        && after_ok;
    Ok((
        format!(
            "one shim: {one_shim}; {pause_text}; meanwhile exec in the other container {} in {} ms, task ls {} in {} ms; {crash_text}; the other container afterwards: {}",
            if exec_ok { "ok" } else { "FAILED" },
            exec_time.as_millis(),
            if ls_ok { "ok" } else { "HUNG" },
            ls_time.as_millis(),
            if after_ok { "ok" } else { "FAILED" },
        ),
        pass,
    ))
}

/// The shim SIGKILLed while `runc create` runs (a runc wrapper that sleeps first): containerd's
/// cleanup must leave no runc container, process, mount or socket behind.
/// When the shim is SIGKILLed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KillPhase {
    /// While runc (a wrapper that sleeps first) is inside `create`.
    Create,
    /// While runc is inside `exec` for the running container.
    Exec,
    /// With the container running and nothing in flight.
    Idle,
}

impl KillPhase {
    fn name(self) -> &'static str {
        match self {
            KillPhase::Create => "create",
            KillPhase::Exec => "exec",
            KillPhase::Idle => "idle",
        }
    }
}

/// Row 5: the shim SIGKILLed mid-operation. containerd's cleanup (the binary's `delete`
/// action) must leave no runc container, process, mount or socket, and report the exit.
fn shim_killed(
    c: &PrivateContainerd,
    events: &EventCapture,
    rt: Runtime,
    phase: KillPhase,
) -> anyhow::Result<(String, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let slow = c
        .dir
        .path()
        .join(format!("runc-slow-{}-{}", phase.name(), rt.name()));
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = {} ]; then sleep 3; fi; done\n\
             exec /usr/sbin/runc \"$@\"\n",
            phase.name()
        ),
    )?;
    std::fs::set_permissions(&slow, std::fs::Permissions::from_mode(0o755))?;
    let id = format!("killed-{}-{}", phase.name(), rt.name());
    let mut args: Vec<String> = vec![
        "--address".into(),
        c.address.clone(),
        "--namespace".into(),
        NAMESPACE.into(),
        "run".into(),
        "-d".into(),
        "--runtime".into(),
        rt.runtime_type().into(),
    ];
    args.extend(runc_binary_args(c, rt, &slow.to_string_lossy())?);
    args.extend([
        IMAGE.to_string(),
        id.clone(),
        "sleep".into(),
        "100000".into(),
    ]);
    let run = std::thread::spawn(move || ctr::run("ctr", &args, None, Duration::from_secs(30)));
    let mut in_flight = None;
    if phase != KillPhase::Create {
        let out = run.join().map_err(|_| anyhow::anyhow!("ctr thread"))?;
        anyhow::ensure!(out.code == Some(0), "ctr run -d: {}", out.stderr);
        if phase == KillPhase::Exec {
            let exec: Vec<String> =
                c.args(&["task", "exec", "--exec-id", "e1", &id, "sleep", "100000"]);
            in_flight = Some(std::thread::spawn(move || {
                ctr::run("ctr", &exec, None, Duration::from_secs(30))
            }));
        }
    } else {
        in_flight = Some(run);
    }
    let mut shim = None;
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(50));
        shim = c.shim_of(&id);
        if shim.is_some() {
            break;
        }
    }
    // Let the wrapper get into its sleep inside the runc call.
    std::thread::sleep(Duration::from_millis(500));
    let socket = socket_of(c, &id);
    if let Some(pid) = shim {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let out = match in_flight {
        Some(t) => Some(t.join().map_err(|_| anyhow::anyhow!("ctr thread"))?),
        None => None,
    };
    // Past the wrapper's sleep: a runc that outlived the shim would have acted by now.
    std::thread::sleep(Duration::from_secs(4));
    let exit_reported = events.topics_for(&id).iter().any(|t| t == "/tasks/exit");
    let _ = c.ctr(&["task", "delete", &id]);
    let _ = c.ctr(&["containers", "rm", &id]);
    let runc_state = std::path::Path::new("/run/containerd/runc")
        .join(NAMESPACE)
        .join(&id)
        .exists();
    let leftover: Vec<i32> = std::fs::read_dir("/proc")?
        .flatten()
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
            !zombie && String::from_utf8_lossy(&cmd).contains(&id)
        })
        .collect();
    let mounts = rshim_integration::containerd::mounts_under(&c.bundle(&id)).len();
    let socket_left = !socket.is_empty() && std::path::Path::new(&socket).exists();
    if runc_state {
        let root = format!("/run/containerd/runc/{NAMESPACE}");
        let _ = ctr::run(
            "runc",
            &[
                "--root".into(),
                root,
                "delete".into(),
                "--force".into(),
                id.clone(),
            ],
            None,
            Duration::from_secs(10),
        );
    }
    for pid in &leftover {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGKILL);
    }
    if socket_left {
        let _ = std::fs::remove_file(&socket);
    }
    let hung = out.as_ref().is_some_and(|o| o.timed_out);
    // A failed Create reports no exit: there was no process (containerd's rule for both).
    let exit_ok = phase == KillPhase::Create || exit_reported;
    let pass = shim.is_some()
        && !hung
        && !runc_state
        && leftover.is_empty()
        && mounts == 0
        && !socket_left
        && exit_ok;
    let call = match &out {
        Some(o) if o.timed_out => "hung".to_string(),
        Some(o) => format!("exit {:?}", o.code),
        None => "-".to_string(),
    };
    Ok((
        format!(
            "{}: in-flight ctr {call}; exit reported: {exit_reported}; runc container left: \
             {runc_state}; processes left: {leftover:?}; mounts left: {mounts}; socket left: \
             {socket_left}",
            phase.name()
        ),
        pass,
    ))
}

/// containerd restarted while containers run: an exit that happens while it is down must be
/// forwarded once it is back, the shims must survive, and a running container's stdio must
/// keep working (an exec's output arrives).
fn containerd_restart(c: &mut PrivateContainerd, rt: Runtime) -> anyhow::Result<(String, bool)> {
    let (dies, lives) = (
        format!("restart-{}-dies", rt.name()),
        format!("restart-{}-lives", rt.name()),
    );
    for id in [&dies, &lives] {
        let out = c.ctr(&[
            "run",
            "-d",
            "--runtime",
            rt.runtime_type(),
            IMAGE,
            id,
            "sleep",
            "100000",
        ]);
        anyhow::ensure!(out.code == Some(0), "run {id}: {}", out.stderr);
    }
    let ls = c.ctr(&["task", "ls"]).stdout;
    let pid: i32 = ls
        .lines()
        .find(|l| l.split_whitespace().next() == Some(dies.as_str()))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no pid for {dies}"))?;
    let shims = [c.shim_of(&dies), c.shim_of(&lives)];
    c.stop_daemon();
    // The exit happens while containerd is down: its event cannot be delivered now.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(3));
    let log_before = std::fs::read_to_string(c.dir.path().join("containerd.log"))
        .unwrap_or_default()
        .len();
    c.restart()?;
    let mut forwarded = 0;
    for _ in 0..100 {
        let log = std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default();
        forwarded = log[log_before.min(log.len())..]
            .lines()
            .filter(|l| l.contains("event forwarded") && l.contains("topic=/tasks/exit"))
            .count();
        if forwarded > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let shims_alive = shims.iter().all(|p| {
        p.is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    });
    let exec = c.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        &lives,
        "echo",
        "still flowing",
    ]);
    let status = c.ctr(&["task", "ls"]).stdout;
    let state_of = |id: &str| {
        status
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("<none>")
            .to_string()
    };
    let (dead_state, live_state) = (state_of(&dies), state_of(&lives));
    for id in [&dies, &lives] {
        let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        std::thread::sleep(Duration::from_millis(300));
        let _ = c.ctr(&["task", "delete", "-f", id]);
        let _ = c.ctr(&["containers", "rm", id]);
    }
    let exec_ok = exec.code == Some(0) && exec.stdout == "still flowing\n";
    let pass = forwarded == 1
        && shims_alive
        && exec_ok
        && dead_state == "STOPPED"
        && live_state == "RUNNING";
    Ok((
        format!(
            "exit during the restart forwarded after it: {forwarded}×; shims alive: {shims_alive}; states {dead_state}/{live_state}; exec after restart: {}",
            if exec_ok { "output intact".to_string() } else { format!("{:?} {:?}", exec.code, exec.stderr) }
        ),
        pass,
    ))
}

/// Whether the shim serving `id` still answers a well-formed Connect.
fn still_serving(c: &PrivateContainerd, id: &str) -> anyhow::Result<bool> {
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

/// Kills and removes a container (best effort).
fn remove(c: &PrivateContainerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    std::thread::sleep(Duration::from_millis(300));
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}

fn frame(stream_id: u32, service: &str, method: &str, payload: Vec<u8>) -> Vec<u8> {
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

fn socket_of(c: &PrivateContainerd, id: &str) -> String {
    shim_client_address(c, id)
        .trim_start_matches("unix://")
        .to_string()
}

/// Reads one response frame (bounded by the socket's timeout); its status code.
fn read_status(s: &mut std::os::unix::net::UnixStream) -> std::io::Result<(u32, i32)> {
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

/// Class 2 at the shim's server: a pipelined client with 4 KiB socket buffers writes 64 requests
/// of 1 MiB each before reading any response. A server whose reading waited on its writing would
/// deadlock with it.
fn server_deadlock(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<(String, bool)> {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::Write;
    let id = format!("srv-{}", rt.name());
    anyhow::ensure!(
        c.ctr(&[
            "run",
            "-d",
            "--runtime",
            rt.runtime_type(),
            IMAGE,
            &id,
            "sleep",
            "100000"
        ])
        .code
            == Some(0),
        "run"
    );
    let path = socket_of(c, &id);
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    let big_id = "x".repeat(1 << 20);
    std::thread::spawn(move || {
        let run = || -> std::io::Result<usize> {
            let mut s = std::os::unix::net::UnixStream::connect(&path)?;
            setsockopt(&s, sockopt::SndBuf, &4096).map_err(std::io::Error::other)?;
            setsockopt(&s, sockopt::RcvBuf, &4096).map_err(std::io::Error::other)?;
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            s.set_write_timeout(Some(Duration::from_secs(20)))?;
            use protobuf::Message;
            let req = containerd_shim_protos::api::StateRequest {
                id: big_id,
                ..Default::default()
            };
            let payload = req.write_to_bytes().map_err(std::io::Error::other)?;
            for i in 0..64u32 {
                s.write_all(&frame(
                    2 * i + 1,
                    "containerd.task.v2.Task",
                    "State",
                    payload.clone(),
                ))?;
            }
            let mut answered = 0;
            for _ in 0..64 {
                read_status(&mut s)?;
                answered += 1;
            }
            Ok(answered)
        };
        let _ = tx.send(run());
    });
    let result = rx
        .recv_timeout(Duration::from_secs(45))
        .unwrap_or_else(|_| Err(std::io::Error::other("no answer in 45 s")));
    let took = started.elapsed();
    let still_serving = still_serving(c, &id)?;
    remove(c, &id);
    let (text, ok) = match result {
        Ok(n) => (
            format!("{n}/64 answered in {} ms", took.as_millis()),
            n == 64,
        ),
        Err(e) => (format!("stuck: {e} after {} ms", took.as_millis()), false),
    };
    Ok((
        format!("{text}; serving afterwards: {still_serving}"),
        ok && still_serving,
    ))
}

/// Hostile clients on the shim's socket: the shim answers or closes the bad connection, never
/// dies, keeps serving a well-formed client, and its fds return to baseline. A client of
/// another uid is refused even when the socket's mode would let it connect.
fn hostile_clients(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<(String, bool)> {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let id = format!("hostile-{}", rt.name());
    anyhow::ensure!(
        c.ctr(&[
            "run",
            "-d",
            "--runtime",
            rt.runtime_type(),
            IMAGE,
            &id,
            "sleep",
            "100000"
        ])
        .code
            == Some(0),
        "run"
    );
    let pid = c.shim_of(&id).ok_or_else(|| anyhow::anyhow!("no shim"))?;
    let path = socket_of(c, &id);
    std::thread::sleep(Duration::from_millis(300));
    let before = usage(pid);
    let open = || -> std::io::Result<UnixStream> {
        let s = UnixStream::connect(&path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    };
    let mut notes = Vec::new();
    // Random bytes, an oversized length, a truncated frame: each connection is cut or errored.
    let mut garbage = vec![0u8; 65536];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    for (what, bytes) in [
        ("garbage", garbage),
        ("oversized", {
            let mut f = u32::MAX.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
            f
        }),
        (
            "truncated",
            frame(1, "containerd.task.v2.Task", "State", vec![0; 100])[..40].to_vec(),
        ),
    ] {
        let mut s = open()?;
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        notes.push(format!(
            "{what}: {}",
            match read_status(&mut s) {
                Ok((_, code)) => format!("status {code}"),
                Err(_) => "closed".into(),
            }
        ));
    }
    // Well-framed nonsense: unknown service, unknown method, malformed protobuf.
    for (what, service, method, payload) in [
        ("unknown service", "no.such.Service", "State", vec![]),
        (
            "unknown method",
            "containerd.task.v2.Task",
            "NoSuchMethod",
            vec![],
        ),
        (
            "malformed protobuf",
            "containerd.task.v2.Task",
            "Create",
            vec![0xff; 16],
        ),
    ] {
        let mut s = open()?;
        s.write_all(&frame(1, service, method, payload))?;
        let code = match read_status(&mut s) {
            Ok((_, code)) => <ttrpc::proto::Code as protobuf::Enum>::from_i32(code)
                .map(|c| format!("{c:?}"))
                .unwrap_or(code.to_string()),
            Err(e) => format!("no answer ({e})"),
        };
        notes.push(format!("{what}: {code}"));
    }
    // 1,000 connections opened and dropped.
    for _ in 0..1000 {
        drop(UnixStream::connect(&path));
    }
    // A client of another uid (nobody). The socket's directory is 0700, so the test reaches the
    // same socket through a hard link in an open directory, with the inode's mode opened up:
    // only the peer-credential check is left to refuse it.
    use std::os::unix::fs::PermissionsExt;
    let probe_dir = tempfile::Builder::new()
        .prefix("rsh-probe")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(probe_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let link = probe_dir.path().join("shim.sock");
    std::fs::hard_link(&path, &link)?;
    let mode = std::fs::metadata(&path)?.permissions().mode();
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o666))?;
    let connect_frame = {
        use protobuf::Message;
        let req = containerd_shim_protos::api::ConnectRequest {
            id: id.clone(),
            ..Default::default()
        };
        hex_string(&frame(
            1,
            "containerd.task.v2.Task",
            "Connect",
            req.write_to_bytes().unwrap_or_default(),
        ))
    };
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ns.connect({:?})\ns.sendall(bytes.fromhex({connect_frame:?}))\ntry:\n  d=s.recv(10)\nexcept Exception:\n  d=b''\nprint('answered' if d else 'refused')\n",
        link.to_string_lossy()
    );
    let other_uid = ctr::run(
        "setpriv",
        &[
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            "/usr/bin/python3".into(),
            "-c".into(),
            py,
        ],
        None,
        Duration::from_secs(10),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    drop(probe_dir);
    notes.push(format!(
        "uid 65534: {}",
        if other_uid.stdout.trim().is_empty() {
            other_uid
                .stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no output")
                .to_string()
        } else {
            other_uid.stdout.trim().to_string()
        }
    ));
    std::thread::sleep(Duration::from_millis(500));
    let after = usage(pid);
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let serving = still_serving(c, &id)?;
    remove(c, &id);
    let refused = other_uid.stdout.trim() == "refused";
    let pass = alive && serving && after.fds <= before.fds + 2 && refused;
    Ok((
        format!(
            "{}; alive: {alive}, serving: {serving}, fds {}→{}",
            notes.join(", "),
            before.fds,
            after.fds
        ),
        pass,
    ))
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Class 4 at the shim boundary: containerd under `MountFlags=slave` semantics, a shim killed,
/// containerd gone, and the `delete` action run from a new mount namespace (as a restarted
/// containerd would). Afterwards the rootfs must be mounted nowhere.
fn mount_namespaces(rt: Runtime) -> anyhow::Result<(String, bool)> {
    let mut c = PrivateContainerd::start(Options {
        slave_mount_namespace: true,
        ..Default::default()
    })?;
    c.import_busybox()?;
    let (victim, other) = (
        format!("mnt-{}-a", rt.name()),
        format!("mnt-{}-b", rt.name()),
    );
    for id in [&victim, &other] {
        let out = c.ctr(&[
            "run",
            "-d",
            "--runtime",
            rt.runtime_type(),
            IMAGE,
            id,
            "sleep",
            "100000",
        ]);
        anyhow::ensure!(out.code == Some(0), "run {id}: {}", out.stderr);
    }
    let shim = c
        .shim_of(&victim)
        .ok_or_else(|| anyhow::anyhow!("no shim"))?;
    let bundle = c.bundle(&victim);
    let rootfs = bundle.join("rootfs");
    let mounted_before = holders(&rootfs).len();
    c.stop_daemon();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(shim), nix::sys::signal::SIGKILL);
    std::thread::sleep(Duration::from_millis(300));
    let binary = match rt {
        Runtime::Go => "/usr/bin/containerd-shim-runc-v2".to_string(),
        Runtime::Rshim => rshim_integration::containerd::rshim_bin_dir()
            .join("containerd-shim-rshim-v2")
            .to_string_lossy()
            .into_owned(),
    };
    let bundle_s = bundle.to_string_lossy().into_owned();
    let script = format!(
        "cd {bundle_s} && exec {binary} -namespace {NAMESPACE} -address {} -publish-binary /usr/bin/containerd -id {victim} -bundle {bundle_s} delete",
        c.address
    );
    let args: Vec<String> = ["-m", "--propagation", "slave", "sh", "-c", &script]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = ctr::run("unshare", &args, None, Duration::from_secs(60));
    let left = holders(&rootfs);
    let pass = out.code == Some(0) && mounted_before > 0 && left.is_empty();
    let text = format!(
        "delete exit {:?}; rootfs mounted in {} namespace(s) before, {} after{}",
        out.code,
        mounted_before,
        left.len(),
        if left.is_empty() {
            String::new()
        } else {
            format!(" (held by pids {left:?})")
        }
    );
    drop(c);
    Ok((text, pass))
}

/// One pid per mount namespace that lists `path` as a mount point.
fn holders(path: &std::path::Path) -> Vec<i32> {
    let target = path.to_string_lossy().to_string();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if !seen.insert(ns) {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
        if info
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(target.as_str()))
        {
            out.push(pid);
        }
    }
    out
}

const USAGE: &str = "usage: rshim-faults [--rounds N] [--rows 1,9] [--flood-loop N]";

fn main() -> anyhow::Result<()> {
    // Options take a value each; anything else is a mistake, not a reason to run for minutes.
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let known = ["--rounds", "--rows", "--flood-loop"].contains(&pair[0].as_str());
        if !known || pair.len() < 2 {
            eprintln!("{USAGE}");
            std::process::exit(if pair[0] == "--help" || pair[0] == "-h" {
                0
            } else {
                2
            });
        }
    }
    let rounds = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    // `--rows 1,9`: only those scenarios (for development); default all.
    let only: Option<Vec<String>> = std::env::args()
        .skip_while(|a| a != "--rows")
        .nth(1)
        .map(|r| r.split(',').map(String::from).collect());
    let wants = |row: &str| only.as_ref().is_none_or(|o| o.iter().any(|r| r == row));
    // `--flood-loop N`: only scenario 3 against rshim, N times (to chase an intermittent).
    if let Some(n) = std::env::args()
        .skip_while(|a| a != "--flood-loop")
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok())
    {
        let c = PrivateContainerd::start(Options::default())?;
        c.import_busybox()?;
        let mut failed = 0;
        for i in 0..n {
            let (text, ok) = stdio_flood(&c, Runtime::Rshim)?;
            if !ok {
                failed += 1;
                println!("run {i}: {text}");
                let log = std::fs::read_to_string(c.dir.path().join("containerd.log"))
                    .unwrap_or_default();
                for l in log.lines().filter(|l| {
                    l.contains("drained")
                        || l.contains("held past")
                        || l.contains("level=warn")
                        || l.contains("level=error")
                }) {
                    println!("{l}");
                }
            }
        }
        println!("flood loop: {} passed, {failed} failed", n - failed);
        std::process::exit(if failed > 0 { 1 } else { 0 });
    }

    {
        let mut c = PrivateContainerd::start(Options::default())?;
        c.import_busybox()?;
        let events = EventCapture::start(&c.address)?;
        if wants("1") {
            let mut results = Vec::new();
            for r in [Runtime::Go, Runtime::Rshim] {
                let res = rt.block_on(storm(&c, &events, r, rounds));
                results.push(res.unwrap_or_else(|e| (format!("error: {e:#}"), false)));
            }
            rows.push(Row {
                scenario: "1 unkillable process storm",
                go: results[0].0.clone(),
                rshim: results[1].0.clone(),
                rshim_pass: results[1].1,
            });
        }
        if wants("3") {
            let go =
                stdio_flood(&c, Runtime::Go).unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = stdio_flood(&c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "3 runc stdio flood (1 MiB before runc)",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
        if wants("2") {
            let go = server_deadlock(&c, Runtime::Go)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = server_deadlock(&c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "2 pipelined 64 x 1 MiB requests, 4 KiB buffers",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
        if wants("8") {
            let go = hostile_clients(&c, Runtime::Go)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = hostile_clients(&c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "8 hostile clients on the shim socket",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
        if wants("7") {
            let go = hanging_runc_in_a_pod(&c, Runtime::Go)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = hanging_runc_in_a_pod(&c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "7 runc hangs, then crashes, for one container of a pod shim",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
        if wants("5") {
            let mut go = Vec::new();
            let mut rshim = Vec::new();
            let mut pass = true;
            for phase in [KillPhase::Create, KillPhase::Exec, KillPhase::Idle] {
                let g = shim_killed(&c, &events, Runtime::Go, phase)
                    .unwrap_or_else(|e| (format!("{}: error: {e:#}", phase.name()), false));
                let r = shim_killed(&c, &events, Runtime::Rshim, phase)
                    .unwrap_or_else(|e| (format!("{}: error: {e:#}", phase.name()), false));
                go.push(g.0);
                rshim.push(r.0);
                pass &= r.1;
            }
            rows.push(Row {
                scenario: "5 shim SIGKILLed during create, during exec, idle",
                go: go.join("<br>"),
                rshim: rshim.join("<br>"),
                rshim_pass: pass,
            });
        }
        if wants("9") {
            let go = bad_requests::bad_requests(&c, Runtime::Go)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = bad_requests::bad_requests(&c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "9 bad requests on the shim socket",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
        drop(events);
        if wants("6") {
            let go = containerd_restart(&mut c, Runtime::Go)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            let rshim = containerd_restart(&mut c, Runtime::Rshim)
                .unwrap_or_else(|e| (format!("error: {e:#}"), false));
            rows.push(Row {
                scenario: "6 containerd restarted while containers run",
                go: go.0,
                rshim: rshim.0,
                rshim_pass: rshim.1,
            });
        }
    }

    if wants("4") {
        let go = mount_namespaces(Runtime::Go).unwrap_or_else(|e| (format!("error: {e:#}"), false));
        let rshim =
            mount_namespaces(Runtime::Rshim).unwrap_or_else(|e| (format!("error: {e:#}"), false));
        rows.push(Row {
            scenario: "4 mounts across mount namespaces",
            go: go.0,
            rshim: rshim.0,
            rshim_pass: rshim.1,
        });
    }

    let mut table = String::from(
        "| scenario | Go shim (measured) | rshim | rshim passes |\n|---|---|---|---|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.scenario,
            r.go,
            r.rshim,
            if r.rshim_pass { "yes" } else { "**NO**" }
        ));
    }
    println!("{table}");
    let results = rshim_integration::workspace_root().join("integration/results");
    std::fs::create_dir_all(&results)?;
    if only.is_none() {
        std::fs::write(results.join("faults.md"), &table)?;
    }
    let failed = rows.iter().filter(|r| !r.rshim_pass).count();
    println!("faults: {} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
