//! Row 6: containerd restarted while containers run.

use std::time::Duration;

use rshim_integration::containerd::PrivateContainerd;
use rshim_integration::Runtime;

use crate::helpers::Cell;
use crate::helpers::{remove, run_sleeper, wait_gone};
use crate::row::{both, Env, FaultRow, Outcome, Setup};

pub struct ContainerdRestart;

impl FaultRow for ContainerdRestart {
    fn number(&self) -> u8 {
        6
    }

    fn title(&self) -> &'static str {
        "containerd restarted while containers run"
    }

    fn setup(&self) -> Setup {
        Setup::SharedRestartable
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| containerd_restart(env.containerd_mut(), rt))
    }
}

/// containerd restarted while containers run: an exit that happens while it is down must be
/// forwarded once it is back, the shims must survive, and a running container's stdio must
/// keep working (an exec's output arrives).
fn containerd_restart(c: &mut PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
    let (dies, lives) = (
        format!("restart-{}-dies", rt.name()),
        format!("restart-{}-lives", rt.name()),
    );
    for id in [&dies, &lives] {
        run_sleeper(c, rt, id, &[])?;
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
    // Reaped by its shim (its parent) while containerd is down: the exit has happened.
    anyhow::ensure!(
        wait_gone(pid, Duration::from_secs(20)),
        "{dies}'s process was not reaped within 20 s"
    );
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
    // containerd 1.7 and later delete, at restart, a task whose process exited while they were
    // down ("cleaning leaked shim process"): the exit then reaches containerd as that Delete's
    // answer, and the dead task's shim is shut down by it. containerd 1.6 keeps the task and
    // takes the exit event the shim forwards once it is back.
    let cleaned = {
        let log = std::fs::read_to_string(c.dir.path().join("containerd.log")).unwrap_or_default();
        log[log_before.min(log.len())..].lines().any(|l| {
            l.contains("cleaning leaked shim process") && l.contains(&format!("id={dies}"))
        })
    };
    let alive = |p: &Option<i32>| {
        p.is_some_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok())
    };
    let shims_alive = if cleaned {
        alive(&shims[1])
    } else {
        shims.iter().all(alive)
    };
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
        remove(c, id);
    }
    let exec_ok = exec.code == Some(0) && exec.stdout == "still flowing\n";
    let exit_reached = if cleaned {
        dead_state == "<none>"
    } else {
        forwarded == 1 && dead_state == "STOPPED"
    };
    let pass = exit_reached && shims_alive && exec_ok && live_state == "RUNNING";
    let how = if cleaned {
        "the dead task deleted by containerd at restart (1.7+)".to_string()
    } else {
        format!("exit during the restart forwarded after it: {forwarded}×")
    };
    Ok((
        format!(
            "{how}; shims alive: {shims_alive}; states {dead_state}/{live_state}; exec after restart: {}",
            if exec_ok { "output intact".to_string() } else { format!("{:?} {:?}", exec.code, exec.stderr) }
        ),
        pass,
    ))
}
