//! Row 7: runc hangs (in `pause`), then crashes (in `exec`), for one container of a pod shim;
//! the other container of the same shim must keep working.

use std::time::{Duration, Instant};

use rshim_integration::containerd::{PrivateContainerd, NAMESPACE};
use rshim_integration::image::IMAGE;
use rshim_integration::{ctr, Runtime};

use crate::helpers::{
    cleanup_hung, poll, remove, run_sleeper, runc_binary_args, shim_client_address, Cell,
};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct HangingRunc;

impl FaultRow for HangingRunc {
    fn number(&self) -> u8 {
        7
    }

    fn title(&self) -> &'static str {
        "runc hangs, then crashes, for one container of a pod shim"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| hanging_runc_in_a_pod(env.containerd(), rt))
    }
}

/// A runc that hangs (on `pause`) for one container of a pod shim: the other container of the
/// same shim keeps working (exec, `ctr task ls`), and the hung call ends with a clear error.
fn hanging_runc_in_a_pod(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
    use std::os::unix::fs::PermissionsExt;
    const BOUND: Duration = Duration::from_secs(20);
    let hang = c.dir.path().join(format!("runc-hang-pause-{}", rt.name()));
    // Hangs in `pause`; crashes (SIGSEGV) in `exec`.
    // It marks that it hangs (so the row waits for that, not for a fixed time).
    let hanging = c.dir.path().join(format!("hanging-pause-{}", rt.name()));
    std::fs::write(
        &hang,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = pause ]; then touch {}; exec sleep 1000; fi; \
             if [ \"$a\" = exec ]; then kill -SEGV $$; fi; done\nexec /usr/sbin/runc \"$@\"\n",
            hanging.display()
        ),
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
    run_sleeper(c, rt, &healthy, &["--annotation", &group])?;
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
    // Until the stand-in hangs inside `pause` (bounded).
    anyhow::ensure!(
        poll(BOUND, || hanging.exists()),
        "the hanging pause never started"
    );
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
