//! Row 5: the shim SIGKILLed during create, during exec, and idle. containerd's cleanup (the
//! binary's `delete` action) must leave no runc container, process, mount or socket, and report
//! the exit.

use std::time::Duration;

use rshim_integration::containerd::{PrivateContainerd, NAMESPACE};
use rshim_integration::events::EventCapture;
use rshim_integration::image::IMAGE;
use rshim_integration::{ctr, Runtime};

use crate::helpers::{poll, processes_mentioning, runc_binary_args, socket_of, Cell};
use crate::row::{Env, FaultRow, Outcome};

pub struct ShimKilled;

impl FaultRow for ShimKilled {
    fn number(&self) -> u8 {
        5
    }

    fn title(&self) -> &'static str {
        "shim SIGKILLed during create, during exec, idle"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        let mut go = Vec::new();
        let mut rshim = Vec::new();
        let mut pass = true;
        // Both shims per phase, each phase's verdicts on a line of their cells.
        for phase in [KillPhase::Create, KillPhase::Exec, KillPhase::Idle] {
            let (c, events) = (env.containerd(), env.events());
            let g = shim_killed(c, events, Runtime::Go, phase)
                .unwrap_or_else(|e| (format!("{}: error: {e:#}", phase.name()), false));
            let r = shim_killed(c, events, Runtime::Rshim, phase)
                .unwrap_or_else(|e| (format!("{}: error: {e:#}", phase.name()), false));
            go.push(g.0);
            rshim.push(r.0);
            pass &= r.1;
        }
        Outcome {
            go: go.join("<br>"),
            rshim: rshim.join("<br>"),
            rshim_pass: pass,
        }
    }
}

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
) -> anyhow::Result<Cell> {
    use std::os::unix::fs::PermissionsExt;
    let slow = c
        .dir
        .path()
        .join(format!("runc-slow-{}-{}", phase.name(), rt.name()));
    // The wrapper marks that it is inside the runc call before it sleeps there, so the test
    // kills the shim at that point by waiting for the mark, not for a fixed time.
    let inside = c
        .dir
        .path()
        .join(format!("inside-{}-{}", phase.name(), rt.name()));
    std::fs::write(
        &slow,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = {} ]; then touch {}; sleep 3; fi; done\n\
             exec /usr/sbin/runc \"$@\"\n",
            phase.name(),
            inside.display()
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
    // Bounded poll for the shim: under load containerd can take seconds to start it.
    let mut shim = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while shim.is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        shim = c.shim_of(&id);
    }
    anyhow::ensure!(shim.is_some(), "no shim for {id} appeared within 20 s");
    // Until the wrapper is inside the runc call (bounded); idle has no such call.
    if phase != KillPhase::Idle {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !inside.exists() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "runc {} never started for {id}",
                phase.name()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let socket = socket_of(c, &id);
    if let Some(pid) = shim {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    }
    let out = match in_flight {
        Some(t) => Some(t.join().map_err(|_| anyhow::anyhow!("ctr thread"))?),
        None => None,
    };
    // A runc (or its wrapper) that outlived the shim acts when its sleep ends: wait (bounded)
    // until none is left, so that what it did is seen below.
    let slow_path = slow.to_string_lossy().into_owned();
    let runc_left = || {
        let runcs = processes_mentioning("/usr/sbin/runc");
        !processes_mentioning(&slow_path).is_empty()
            || processes_mentioning(&id).iter().any(|p| runcs.contains(p))
    };
    anyhow::ensure!(
        poll(Duration::from_secs(20), || !runc_left()),
        "a runc call of {id} still runs 20 s after its shim was killed"
    );
    // containerd's cleanup of the dead shim reports the exit (not for a create: nothing ran).
    let exit_seen = || events.topics_for(&id).iter().any(|t| t == "/tasks/exit");
    let exit_reported = if phase == KillPhase::Create {
        exit_seen()
    } else {
        poll(Duration::from_secs(20), exit_seen)
    };
    let _ = c.ctr(&["task", "delete", &id]);
    let _ = c.ctr(&["containers", "rm", &id]);
    let runc_state = std::path::Path::new("/run/containerd/runc")
        .join(NAMESPACE)
        .join(&id)
        .exists();
    let leftover = processes_mentioning(&id);
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
