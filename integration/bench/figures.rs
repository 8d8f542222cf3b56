//! The measurements. Each group runs the two shims alternately (A B, then B A, ...) and
//! returns its figures; every container it made is removed by the caller afterwards.

use std::os::fd::FromRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use containerd_shim_protos::api::*;
use rshim_integration::containerd::{shell_quote, shims_of, PrivateContainerd};
use rshim_integration::events::EventCapture;
use rshim_integration::image::IMAGE;
use rshim_integration::procfs::{cpu_secs, usage, Usage};
use rshim_integration::Runtime;
use rshim_tests::Bundle;
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

use crate::stats::Figure;
use crate::Plan;

const GROUP_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

/// Round `i` runs the two shims in this order: alternating which goes first.
fn order(i: usize) -> [Runtime; 2] {
    if i.is_multiple_of(2) {
        [Runtime::Go, Runtime::Rshim]
    } else {
        [Runtime::Rshim, Runtime::Go]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn check(out: &rshim_integration::ctr::Output, what: &str) -> anyhow::Result<()> {
    if out.code != Some(0) {
        bail!(
            "{what} failed: {:?} {} {}",
            out.code,
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

fn run_detached(
    c: &PrivateContainerd,
    rt: Runtime,
    id: &str,
    extra: &[&str],
    cmd: &[&str],
) -> anyhow::Result<()> {
    let mut args = vec!["run", "-d", "--runtime", rt.runtime_type()];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[IMAGE, id]);
    args.extend_from_slice(cmd);
    check(&c.ctr(&args), &format!("ctr run -d {id}"))
}

/// One idle container (`sleep`), in the pod shim `pod` if given, for `--hold`.
pub fn hold_one(
    c: &PrivateContainerd,
    rt: Runtime,
    id: &str,
    pod: Option<String>,
) -> anyhow::Result<()> {
    let annotation = pod.map(|p| format!("{GROUP_ANNOTATION}={p}"));
    let extra: Vec<&str> = match &annotation {
        Some(a) => vec!["--annotation", a],
        None => vec![],
    };
    run_detached(c, rt, id, &extra, &["sleep", "100000"])
}

fn remove(c: &PrivateContainerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "-s", "SIGKILL", id]);
    let _ = c.ctr(&["task", "delete", "-f", id]);
    let _ = c.ctr(&["containers", "rm", id]);
}

/// The shim's memory once it has settled.
/// Idle: 2 s after the last request, past the blocking pool's keep-alive (1 s in rshim; the
/// Go runtime returns its idle threads on its own schedule), the same for both shims.
fn settled_usage(pid: i32) -> Usage {
    std::thread::sleep(IDLE_SETTLE);
    usage(pid)
}

/// How long a shim is left without requests before its idle memory is read: past the
/// blocking pool's keep-alive, for both shims alike (a measurement condition, not a wait for
/// an event).
const IDLE_SETTLE: Duration = Duration::from_secs(2);

/// The shims of `c` once there are `want` of them, polled up to `bound`: a `start` action
/// that lost its pod's socket to another exits on its own, and a new shim takes a moment to
/// serve. Whatever is there at the bound is returned (the caller judges the count).
fn shims_counted(c: &PrivateContainerd, want: usize, bound: Duration) -> Vec<i32> {
    let deadline = Instant::now() + bound;
    let mut shims = shims_of(&c.address);
    while shims.len() != want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        shims = shims_of(&c.address);
    }
    shims
}

/// Idle shim with one container; one pod shim holding 1, 10 and 50 containers.
pub fn memory(c: &PrivateContainerd, _: &EventCapture, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut rss = Figure::new("memory", "idle shim, 1 container: RSS", "MiB");
    let mut pss = Figure::new("memory", "idle shim, 1 container: PSS", "MiB");
    let mut threads = Figure::new("memory", "idle shim, 1 container: threads", "threads");
    for i in 0..plan.few {
        for rt in order(i) {
            let id = format!("mem-{}-{i}", rt.name());
            run_detached(c, rt, &id, &[], &["sleep", "100000"])?;
            let pid = c.shim_of(&id).context("shim of the container")?;
            let u = settled_usage(pid);
            rss.push(rt, mib(u.rss_kib));
            pss.push(rt, mib(u.pss_kib));
            threads.push(rt, u.threads as f64);
            remove(c, &id);
        }
    }
    let mut figs = vec![rss, pss, threads];
    figs.extend(idle_shims(c, plan)?);
    let sizes = &plan.pod_sizes;
    let mut pod_rss: Vec<Figure> = sizes
        .iter()
        .map(|n| Figure::new("memory", format!("pod shim, {n} containers: RSS"), "MiB"))
        .collect();
    let mut pod_pss: Vec<Figure> = sizes
        .iter()
        .map(|n| Figure::new("memory", format!("pod shim, {n} containers: PSS"), "MiB"))
        .collect();
    let mut pod_threads = Figure::new(
        "memory",
        format!(
            "pod shim, {} containers: threads",
            sizes.last().unwrap_or(&0)
        ),
        "threads",
    );
    let mut growth = Figure::new("memory", "pod shim: RSS per added container", "KiB");
    for rt in order(0) {
        let pod = format!("pod-{}", rt.name());
        let annotation = format!("{GROUP_ANNOTATION}={pod}");
        let mut made = 0;
        let mut first = None;
        for (k, &n) in sizes.iter().enumerate() {
            while made < n {
                let id = format!("{pod}-{made}");
                run_detached(
                    c,
                    rt,
                    &id,
                    &["--annotation", &annotation],
                    &["sleep", "100000"],
                )?;
                made += 1;
            }
            let pid = c.shim_of(&format!("{pod}-0")).context("pod shim")?;
            let u = settled_usage(pid);
            pod_rss[k].push(rt, mib(u.rss_kib));
            pod_pss[k].push(rt, mib(u.pss_kib));
            if k + 1 == sizes.len() {
                pod_threads.push(rt, u.threads as f64);
                if let Some((n0, rss0)) = first {
                    growth.push(rt, (u.rss_kib as f64 - rss0) / (n - n0) as f64);
                }
            }
            first.get_or_insert((n, u.rss_kib as f64));
        }
        c.remove_all();
    }
    figs.extend(pod_rss);
    figs.extend(pod_pss);
    figs.push(pod_threads);
    figs.push(growth);
    Ok(figs)
}

/// `plan.idle_shims` shims of one container each, idle at once: what each costs when the
/// binary's text is shared among them (PSS), per shim.
fn idle_shims(c: &PrivateContainerd, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let n = plan.idle_shims;
    let mut rss = Figure::new("memory", format!("{n} idle shims: RSS per shim"), "MiB");
    let mut pss = Figure::new("memory", format!("{n} idle shims: PSS per shim"), "MiB");
    for i in 0..plan.few {
        for rt in order(i) {
            let ids: Vec<String> = (0..n)
                .map(|k| format!("idle-{}-{i}-{k}", rt.name()))
                .collect();
            no_shims_left(c);
            for id in &ids {
                run_detached(c, rt, id, &[], &["sleep", "100000"])?;
            }
            // Every shim serving first (bounded poll), then idle as `settled_usage` measures it.
            let shims = shims_counted(c, n, Duration::from_secs(30));
            std::thread::sleep(IDLE_SETTLE);
            if shims.len() != n {
                bail!("{}: {} shims for {n} containers", rt.name(), shims.len());
            }
            let all: Vec<Usage> = shims.iter().map(|p| usage(*p)).collect();
            rss.push(
                rt,
                mib(all.iter().map(|u| u.rss_kib).sum::<u64>()) / n as f64,
            );
            pss.push(
                rt,
                mib(all.iter().map(|u| u.pss_kib).sum::<u64>()) / n as f64,
            );
            remove_parallel(c);
        }
    }
    Ok(vec![rss, pss])
}

/// `ctr run --rm` of `/bin/true` through containerd.
pub fn lifecycle(
    c: &PrivateContainerd,
    _: &EventCapture,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let mut f = Figure::new("latency", "ctr run --rm true", "ms").latency();
    for i in 0..plan.runs {
        for rt in order(i) {
            let id = format!("life-{}-{i}", rt.name());
            let t = Instant::now();
            let out = c.ctr(&[
                "run",
                "--rm",
                "--runtime",
                rt.runtime_type(),
                IMAGE,
                &id,
                "true",
            ]);
            let took = t.elapsed();
            check(&out, "ctr run --rm true")?;
            f.push(rt, ms(took));
        }
    }
    Ok(vec![f])
}

fn shim_binary(rt: Runtime) -> std::path::PathBuf {
    match rt {
        Runtime::Go => "/usr/bin/containerd-shim-runc-v2".into(),
        Runtime::Rshim => {
            rshim_integration::containerd::rshim_bin_dir().join("containerd-shim-rshim-v2")
        }
    }
}

const BENCH_NAMESPACE: &str = "rshim-bench";

/// The calls of a container's life as containerd waits for them, in ms: Create, Start, Wait
/// (from Start's answer to Wait's) and Delete; or, for the floor, the runc calls behind them.
#[derive(Clone, Copy, Default)]
struct Calls {
    create: f64,
    start: f64,
    wait: f64,
    delete: f64,
}

impl Calls {
    fn total(&self) -> f64 {
        self.create + self.start + self.wait + self.delete
    }
}

/// The shim's own share: the `start` action (launch to printed address), the Task API
/// lifecycle over ttrpc (Create, Start, Wait, Delete of `/bin/true`) call by call, and two
/// floors measured in the same rounds: `runc run` of the same bundle (one runc process, the
/// floor under any shim) and `runc create`, `runc start`, `runc delete` (the three runc
/// processes both shims spawn for those calls, so the floor under a shim that drives runc).
pub fn shim_share(
    c: &PrivateContainerd,
    _: &EventCapture,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let rt_tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut start = Figure::new("shim", "start action: launch to address", "ms").latency();
    let mut lives: Vec<(Runtime, Calls)> = Vec::new();
    let (mut run_floor, mut calls_floor) = (Vec::new(), Vec::new());
    for i in 0..plan.runs {
        // The floors take their turn in every round, so that drift of the machine falls on
        // them as on the shims. Each of the four starts from a settled machine (see LOCK_SETTLE).
        settle_lock();
        run_floor.push(runc_run_once(i)?);
        settle_lock();
        calls_floor.push(runc_calls_once(i)?);
        for rt in order(i) {
            settle_lock();
            let bundle = Bundle::new(&["true"]);
            let id = format!("share-{}-{i}", rt.name());
            // The shim's log FIFO, as containerd makes it (the Go shim exits without it); a
            // non-blocking read end lets the shim open it and holds its few lines.
            let log = bundle.path().join("log");
            nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
            let _log_reader = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&log)?;
            // Its output goes to files, not pipes: timed_within only waits for the exit, so
            // nothing would read a pipe meanwhile (a start action that wrote a pipe's worth
            // would block and be killed at the bound instead of failing with its message).
            let (mut stdout, mut stderr) = (tempfile::tempfile()?, tempfile::tempfile()?);
            let (status, took) = timed_within(
                Command::new(shim_binary(rt))
                    .args([
                        "-namespace",
                        BENCH_NAMESPACE,
                        "-id",
                        &id,
                        "-address",
                        &c.address,
                        "start",
                    ])
                    .current_dir(bundle.path())
                    .env("TTRPC_ADDRESS", format!("{}.ttrpc", c.address))
                    .stdin(Stdio::null())
                    .stdout(stdout.try_clone()?)
                    .stderr(stderr.try_clone()?),
                &format!("{} start", rt.name()),
                START_BOUND,
            )?;
            start.push(rt, took);
            if !status.success() {
                bail!("{} start: {status}: {}", rt.name(), read_back(&mut stderr)?);
            }
            let address = read_back(&mut stdout)?.trim().to_string();
            let calls = rt_tokio.block_on(drive_lifecycle(&address, &id, bundle.path()))?;
            lives.push((rt, calls));
        }
    }
    let run_median = crate::stats::median(&run_floor).unwrap_or(0.0);
    let calls_totals: Vec<f64> = calls_floor.iter().map(Calls::total).collect();
    let calls_median = crate::stats::median(&calls_totals).unwrap_or(0.0);

    let mut rpc = Figure::new("shim", "Create+Start+Wait+Delete over ttrpc", "ms").latency();
    let mut own = Figure::new("shim", "shim's own share (above runc run)", "ms").latency();
    let mut above_calls = Figure::new(
        "shim",
        "shim's own share above its runc calls (create, start, delete)",
        "ms",
    )
    .latency();
    let per_call = |name: &str| Figure::new("shim", format!("{name} over ttrpc"), "ms").latency();
    let (mut create, mut start_call) = (per_call("Create"), per_call("Start"));
    let (mut wait, mut delete) = (per_call("Wait (after Start)"), per_call("Delete"));
    for (rt, calls) in &lives {
        rpc.push(*rt, calls.total());
        own.push(*rt, calls.total() - run_median);
        above_calls.push(*rt, calls.total() - calls_median);
        create.push(*rt, calls.create);
        start_call.push(*rt, calls.start);
        wait.push(*rt, calls.wait);
        delete.push(*rt, calls.delete);
    }
    let floor = |name: &str, samples: Vec<f64>| {
        let mut f =
            Figure::new("shim", format!("{name} alone (floor, same for both)"), "ms").latency();
        f.go = samples.clone();
        f.rshim = samples;
        f
    };
    let pick = |f: fn(&Calls) -> f64| calls_floor.iter().map(f).collect::<Vec<_>>();
    Ok(vec![
        start,
        rpc,
        own,
        above_calls,
        floor("runc run", run_floor.clone()),
        floor("runc create, start, delete", calls_totals.clone()),
        create,
        floor("runc create", pick(|c| c.create)),
        start_call,
        floor("runc start", pick(|c| c.start)),
        wait,
        floor("exit seen (pidfd)", pick(|c| c.wait)),
        delete,
        floor("runc delete", pick(|c| c.delete)),
    ])
}

async fn drive_lifecycle(address: &str, id: &str, bundle: &Path) -> anyhow::Result<Calls> {
    let opts = CallOptions::with_timeout(Duration::from_secs(30)).namespace(BENCH_NAMESPACE);
    let client = Client::connect(address, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let task = TaskClient::new(client, TaskClient::V2);
    let e = |e: ttrpc_client::Error| anyhow::anyhow!("{e}");
    let mut calls = Calls::default();
    let t = Instant::now();
    task.create(
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into(),
            ..Default::default()
        },
        &opts,
    )
    .await
    .map_err(e)?;
    calls.create = ms(t.elapsed());
    let t = Instant::now();
    let req = StartRequest {
        id: id.into(),
        ..Default::default()
    };
    task.start(req, &opts).await.map_err(e)?;
    calls.start = ms(t.elapsed());
    let t = Instant::now();
    let req = WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    task.wait(req, &opts).await.map_err(e)?;
    calls.wait = ms(t.elapsed());
    let t = Instant::now();
    let req = DeleteRequest {
        id: id.into(),
        ..Default::default()
    };
    task.delete(req, &opts).await.map_err(e)?;
    calls.delete = ms(t.elapsed());
    let _ = task.shutdown(ShutdownRequest::default(), &opts).await;
    Ok(calls)
}

const RUNC_BENCH_ROOT: &str = "/run/rshim-bench-runc";

/// How long the machine is left idle before each floor and each shim's life in the shim
/// rounds. Not a wait for anything: a measurement condition. `runc create` moves its init into
/// the container's cgroups, which takes the kernel's cgroup migration lock for writing, and
/// that waits for a whole RCU grace period (10 to 15 ms here) unless another migration
/// released the lock less than about one grace period before (results/profile.md). Without
/// the pause the floor's `runc create`, which came right after `runc run`, skipped that wait
/// and the shims' only sometimes (rshim's, after its quicker `start` action, more often than
/// the Go shim's); after it every measured `runc create` starts as one on a node usually does,
/// with the lock idle. 100 ms is several grace periods.
const LOCK_SETTLE: Duration = Duration::from_millis(100);

fn settle_lock() {
    std::thread::sleep(LOCK_SETTLE);
}

/// How long one runc call of the floors may take before it is killed and the bench fails.
const RUNC_BOUND: Duration = Duration::from_secs(60);

/// How long a shim's `start` action may take (a hang is a failure of the shim, not a figure).
const START_BOUND: Duration = Duration::from_secs(30);

/// How long one flood through `ctr run` may take (the Go shim's seed-002 hang is a flood
/// through exec, not this one; a hang here is a failure, not a figure).
const FLOOD_BOUND: Duration = Duration::from_secs(600);

/// Whether process `pid` exited within `bound`, seen through a pidfd (no polling interval
/// adds to what is timed). The process is not reaped: its owner waits for it afterwards.
fn exited_within(pid: i32, bound: Duration) -> anyhow::Result<bool> {
    // SAFETY: pidfd_open takes a pid and flags; the fd it returns is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("pidfd_open {pid}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd from pidfd_open, owned by nothing else.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let deadline = Instant::now() + bound;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(1) => return Ok(true),
            Ok(_) if left.is_zero() => return Ok(false),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("poll the pidfd of {pid}: {e}"),
        }
    }
}

/// Runs `cmd` to its exit within `bound` (killed and reaped past it): its status and how long
/// it took, in ms.
fn timed_within(
    cmd: &mut Command,
    what: &str,
    bound: Duration,
) -> anyhow::Result<(std::process::ExitStatus, f64)> {
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawn {what}"))?;
    let exited = exited_within(child.id() as i32, bound);
    let took = ms(t.elapsed());
    if !matches!(exited, Ok(true)) {
        let _ = child.kill();
        let _ = child.wait();
        exited?;
        bail!("{what} did not finish within {bound:?}");
    }
    Ok((child.wait()?, took))
}

/// `runc --root RUNC_BENCH_ROOT args`, bounded, in ms; a failure carries runc's stderr.
fn runc_timed(args: &[&str]) -> anyhow::Result<f64> {
    let mut stderr = tempfile::tempfile()?;
    let what = format!("runc {}", args.join(" "));
    let (status, took) = timed_within(
        Command::new("runc")
            .args(["--root", RUNC_BENCH_ROOT])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone()?),
        &what,
        RUNC_BOUND,
    )?;
    if !status.success() {
        bail!("{what}: {status}: {}", read_back(&mut stderr)?.trim());
    }
    Ok(took)
}

/// At most how much of a timed process's output is read back (an address or an error line is
/// far less; the rest of a runaway writer's output is not needed to say what failed).
const READ_BACK_LIMIT: u64 = 64 * 1024;

/// What a process wrote into `file` (a temp file it was given as stdout or stderr), at most
/// `READ_BACK_LIMIT` bytes of it, invalid UTF-8 replaced.
fn read_back(file: &mut std::fs::File) -> anyhow::Result<String> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.take(READ_BACK_LIMIT).read_to_end(&mut bytes))
        .context("read back a timed process's output from its temp file")?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// `runc run` of a `/bin/true` bundle, in ms.
fn runc_run_once(i: usize) -> anyhow::Result<f64> {
    let bundle = Bundle::new(&["true"]);
    let id = format!("floor-{i}-{}", std::process::id());
    runc_timed(&["run", "--bundle", &bundle.path().to_string_lossy(), &id])
}

/// `runc create`, `runc start`, the process's exit (seen through a pidfd) and `runc delete`
/// of a `/bin/true` bundle, each in ms: the runc calls a shim makes for Create, Start and
/// Delete, without any shim. What the shim's own share cannot go below while it runs runc
/// once per call, as both shims do.
fn runc_calls_once(i: usize) -> anyhow::Result<Calls> {
    let bundle = Bundle::new(&["true"]);
    let id = format!("calls-{i}-{}", std::process::id());
    let pid_file = bundle.path().join("init.pid");
    let (b, p) = (bundle.path().to_string_lossy(), pid_file.to_string_lossy());
    let create = runc_timed(&["create", "--bundle", &b, "--pid-file", &p, &id])?;
    let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let start = runc_timed(&["start", &id])?;
    // Not our child (runc's init is reparented away): seen exiting through its pidfd. A pid
    // that is already gone fails pidfd_open; that is an exit too.
    let t = Instant::now();
    if !exited_within(pid, Duration::from_secs(30)).unwrap_or(true) {
        bail!("{id} did not exit within 30 s");
    }
    let wait = ms(t.elapsed());
    let delete = runc_timed(&["delete", &id])?;
    Ok(Calls {
        create,
        start,
        wait,
        delete,
    })
}

/// `ctr task exec` of `/bin/true` in a running container.
pub fn exec(c: &PrivateContainerd, _: &EventCapture, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let mut f = Figure::new("latency", "ctr task exec true", "ms").latency();
    for rt in order(0) {
        run_detached(
            c,
            rt,
            &format!("exec-{}", rt.name()),
            &[],
            &["sleep", "100000"],
        )?;
    }
    for i in 0..plan.runs {
        for rt in order(i) {
            let id = format!("exec-{}", rt.name());
            let exec_id = format!("e{i}");
            let t = Instant::now();
            let out = c.ctr(&["task", "exec", "--exec-id", &exec_id, &id, "true"]);
            let took = t.elapsed();
            check(&out, "ctr task exec")?;
            f.push(rt, ms(took));
        }
    }
    Ok(vec![f])
}

/// A container writing N MiB of zeros to stdout, read by `ctr run` into /dev/null: through pipes
/// and FIFOs, and through a pty.
pub fn stdio(c: &PrivateContainerd, _: &EventCapture, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let (pipe_mib, tty_mib) = plan.stdio_mib;
    let mut pipe =
        Figure::new("stdio", format!("{pipe_mib} MiB stdout, ctr run"), "MB/s").throughput();
    let mut tty =
        Figure::new("stdio", format!("{tty_mib} MiB stdout, ctr run -t"), "MB/s").throughput();
    for i in 0..plan.few {
        for rt in order(i) {
            let id = format!("flood-{}-{i}", rt.name());
            let t = Instant::now();
            let status = pipe_flood(c, rt, &id, pipe_mib, &[])?;
            let secs = t.elapsed().as_secs_f64();
            if !status.success() {
                bail!("flood through {} failed: {status}", rt.name());
            }
            pipe.push(rt, pipe_mib as f64 * 1.048576 / secs);

            let id = format!("ttyflood-{}-{i}", rt.name());
            let count = format!("count={tty_mib}");
            let line = c
                .args(&[
                    "run",
                    "-t",
                    "--rm",
                    "--runtime",
                    rt.runtime_type(),
                    IMAGE,
                    &id,
                    "dd",
                    "if=/dev/zero",
                    "bs=1M",
                    &count,
                ])
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ");
            let t = Instant::now();
            let (status, _) = timed_within(
                Command::new("script")
                    .args(["-qec", &format!("ctr {line}"), "/dev/null"])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null()),
                &format!("the tty flood of {id}"),
                FLOOD_BOUND,
            )?;
            let secs = t.elapsed().as_secs_f64();
            if !status.success() {
                bail!("tty flood through {} failed: {status}", rt.name());
            }
            tty.push(rt, tty_mib as f64 * 1.048576 / secs);
        }
    }
    let cpu = stdio_cpu(c, plan)?;
    Ok(vec![pipe, tty, cpu])
}

/// `ctr run --rm` of a container writing `mib` MiB of zeros to stdout, read into /dev/null.
fn pipe_flood(
    c: &PrivateContainerd,
    rt: Runtime,
    id: &str,
    mib: usize,
    extra: &[&str],
) -> anyhow::Result<std::process::ExitStatus> {
    let count = format!("count={mib}");
    let mut argv = vec!["run", "--rm", "--runtime", rt.runtime_type()];
    argv.extend_from_slice(extra);
    argv.extend_from_slice(&[IMAGE, id, "dd", "if=/dev/zero", "bs=1M", &count]);
    let (status, _) = timed_within(
        Command::new("ctr")
            .args(c.args(&argv))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        &format!("the flood of {id}"),
        FLOOD_BOUND,
    )?;
    Ok(status)
}

/// The shim's CPU time per GiB of stdout moved through pipes and FIFOs: the floods of `stdio`
/// run in a pod shim kept alive by an idle container, so the shim's CPU counters can be read
/// before and after each flood (both shims group containers by the sandbox annotation).
fn stdio_cpu(c: &PrivateContainerd, plan: &Plan) -> anyhow::Result<Figure> {
    let (pipe_mib, _) = plan.stdio_mib;
    let mut cpu = Figure::new(
        "stdio",
        format!("shim CPU per GiB of stdout ({pipe_mib} MiB, ctr run)"),
        "s/GiB",
    );
    let mut shims = Vec::new();
    for rt in order(0) {
        let pod = format!("stdio-cpu-{}", rt.name());
        let holder = format!("stdio-cpu-hold-{}", rt.name());
        hold_one(c, rt, &holder, Some(pod.clone()))?;
        let pid = c.shim_of(&holder).context("shim of the holder")?;
        shims.push((rt, pod, holder, pid));
    }
    for i in 0..plan.few {
        for rt in order(i) {
            let (_, pod, _, pid) = shims
                .iter()
                .find(|s| s.0 == rt)
                .expect("a shim per runtime");
            let annotation = format!("{GROUP_ANNOTATION}={pod}");
            let id = format!("stdio-cpu-{}-{i}", rt.name());
            let before = cpu_secs(*pid).context("shim's CPU time")?;
            let status = pipe_flood(c, rt, &id, pipe_mib, &["--annotation", &annotation])?;
            let after = cpu_secs(*pid).context("shim's CPU time after the flood")?;
            if !status.success() {
                bail!("flood through {}'s pod shim failed: {status}", rt.name());
            }
            cpu.push(rt, (after - before) * 1024.0 / pipe_mib as f64);
        }
    }
    for (_, _, holder, _) in &shims {
        remove(c, holder);
    }
    Ok(cpu)
}

/// From a process's exit (the `exited_at` the shim stamps when it reaps it) to the
/// `/tasks/exit` event read from `ctr events`.
pub fn event_latency(
    c: &PrivateContainerd,
    events: &EventCapture,
    plan: &Plan,
) -> anyhow::Result<Vec<Figure>> {
    let mut f = Figure::new("events", "exit to /tasks/exit at ctr events", "ms").latency();
    for i in 0..plan.runs {
        for rt in order(i) {
            let id = format!("ev-{}-{i}", rt.name());
            run_detached(c, rt, &id, &[], &["sleep", "0.2"])?;
            let deadline = Instant::now() + Duration::from_secs(20);
            let exit = loop {
                let found = events
                    .all()
                    .into_iter()
                    .find(|e| e.topic == "/tasks/exit" && e.container() == Some(id.as_str()));
                if let Some(e) = found {
                    break e;
                }
                if Instant::now() > deadline {
                    bail!("no /tasks/exit for {id}");
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            let exited_at = exit.payload["exited_at"]
                .as_str()
                .and_then(|s| humantime::parse_rfc3339_weak(s).ok())
                .with_context(|| format!("exited_at in {}", exit.payload))?;
            let latency = exit.received.duration_since(exited_at).unwrap_or_default();
            f.push(rt, ms(latency));
            remove(c, &id);
        }
    }
    Ok(vec![f])
}

/// `pods x per_pod` containers started at once (`ctr run -d` in parallel): total time, and
/// the memory and threads of all shims together afterwards.
pub fn scale(c: &PrivateContainerd, _: &EventCapture, plan: &Plan) -> anyhow::Result<Vec<Figure>> {
    let (pods, per_pod) = plan.scale;
    let n = pods * per_pod;
    let mut total = Figure::new(
        "scale",
        format!("{n} containers ({pods} pods) started at once"),
        "s",
    );
    let mut rss = Figure::new("scale", format!("all shims of {n} containers: RSS"), "MiB");
    let mut pss = Figure::new("scale", format!("all shims of {n} containers: PSS"), "MiB");
    let mut threads = Figure::new(
        "scale",
        format!("all shims of {n} containers: threads"),
        "threads",
    );
    // The shims' part of the start: the CPU their daemons took from runc and containerd on
    // the same cores (the short-lived `start` actions are not counted).
    let mut cpu = Figure::new(
        "scale",
        format!("all shim daemons of {n} containers: CPU until started"),
        "ms",
    );
    for rt in (0..plan.scale_runs).flat_map(order) {
        no_shims_left(c);
        let t = Instant::now();
        let results: Vec<anyhow::Result<()>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|k| {
                    s.spawn(move || {
                        let pod = format!("scale-{}-p{}", rt.name(), k % pods);
                        let id = format!("{pod}-c{}", k / pods);
                        let annotation = format!("{GROUP_ANNOTATION}={pod}");
                        run_detached(
                            c,
                            rt,
                            &id,
                            &["--annotation", &annotation],
                            &["sleep", "100000"],
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("panicked")))
                .collect()
        });
        total.push(rt, t.elapsed().as_secs_f64());
        if let Some(e) = results.into_iter().find_map(Result::err) {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(500));
        // A start action that lost its pod's socket to another one exits on its own; give
        // such stragglers a bounded moment before counting.
        let shims = shims_counted(c, pods, Duration::from_secs(5));
        let sum = shims
            .iter()
            .map(|p| usage(*p))
            .fold(Usage::default(), |a, u| Usage {
                fds: a.fds + u.fds,
                threads: a.threads + u.threads,
                rss_kib: a.rss_kib + u.rss_kib,
                pss_kib: a.pss_kib + u.pss_kib,
            });
        if shims.len() != pods {
            bail!("{}: {} shims for {pods} pods", rt.name(), shims.len());
        }
        rss.push(rt, mib(sum.rss_kib));
        pss.push(rt, mib(sum.pss_kib));
        threads.push(rt, sum.threads as f64);
        let secs: f64 = shims.iter().filter_map(|p| cpu_secs(*p)).sum();
        cpu.push(rt, secs * 1000.0);
        remove_parallel(c);
    }
    Ok(vec![total, rss, pss, threads, cpu])
}

/// Waits (at most 30 s) until the shims of earlier rounds are gone: a shim exits after the
/// Delete that containerd's removal waited for, so a count taken at once could include it.
fn no_shims_left(c: &PrivateContainerd) {
    let settle = Instant::now() + Duration::from_secs(30);
    while !shims_of(&c.address).is_empty() && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn remove_parallel(c: &PrivateContainerd) {
    let list = c.ctr(&["containers", "list", "-q"]);
    let ids: Vec<&str> = list.stdout.lines().filter(|l| !l.is_empty()).collect();
    std::thread::scope(|s| {
        for chunk in ids.chunks(ids.len().div_ceil(8).max(1)) {
            s.spawn(move || chunk.iter().for_each(|id| remove(c, id)));
        }
    });
}

/// The machine, for the report.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| format!("{} GiB", k / (1 << 20)))
        .unwrap_or_default();
    let first_line = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_default()
    };
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cgroup = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "v2"
    } else {
        "v1"
    };
    format!(
        "{cpus} x {model}, {mem}, Linux {}, cgroup {cgroup}; {}; {}",
        kernel.trim(),
        first_line("containerd", "--version"),
        first_line("runc", "--version")
    )
}

pub fn today() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()[..10].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_bound_is_killed_and_named() {
        let t = Instant::now();
        let err = timed_within(
            Command::new("sleep").arg("30"),
            "sleep 30",
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert!(
            err.to_string().contains("sleep 30 did not finish within"),
            "{err}"
        );
    }

    #[test]
    fn a_command_within_its_bound_gives_its_status() {
        let (status, took) = timed_within(
            Command::new("false").arg(""),
            "false",
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(status.code(), Some(1));
        assert!(took >= 0.0);
    }

    #[test]
    fn read_back_is_bounded() {
        use std::io::Write;
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&vec![b'x'; READ_BACK_LIMIT as usize + 10])
            .unwrap();
        assert_eq!(
            read_back(&mut file).unwrap().len(),
            READ_BACK_LIMIT as usize
        );
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"unix:///run/x\n").unwrap();
        assert_eq!(read_back(&mut file).unwrap(), "unix:///run/x\n");
    }

    #[test]
    fn a_failed_runc_call_says_what_runc_said() {
        let err = runc_timed(&["state", "no-such-container-of-the-bench"]).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
