//! Row 3: a runc that writes 1 MiB to the process's stderr pipe before it runs (during create,
//! then during exec): the shim must drain it, not hang, and pass every byte through.

use std::time::Duration;

use rshim_integration::containerd::{Options, PrivateContainerd};
use rshim_integration::image::IMAGE;
use rshim_integration::{ctr, Runtime};

use crate::helpers::{cleanup_hung, runc_binary_args, Cell};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct Flood;

impl FaultRow for Flood {
    fn number(&self) -> u8 {
        3
    }

    fn title(&self) -> &'static str {
        "runc stdio flood (1 MiB before runc)"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| stdio_flood(env.containerd(), rt))
    }
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

/// Class 3 through containerd: `ctr run` with a flood during create, `ctr task exec` with a
/// flood during exec. Bounded: a hang is recorded after `HANG_BOUND`.
fn stdio_flood(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
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

/// `--flood-loop N`: this row against rshim alone, `n` times, printing each failure with the
/// containerd log lines that explain it (to chase an intermittent). The number of failures.
pub fn flood_loop(n: usize) -> anyhow::Result<usize> {
    let c = PrivateContainerd::start(Options::default())?;
    c.import_busybox()?;
    let mut failed = 0;
    let log_path = c.dir.path().join("containerd.log");
    let log_len = || {
        std::fs::metadata(&log_path)
            .map(|m| m.len() as usize)
            .unwrap_or(0)
    };
    for i in 0..n {
        let before = log_len();
        let (text, ok) = stdio_flood(&c, Runtime::Rshim)?;
        if !ok {
            failed += 1;
            println!("run {i}: {text}");
            // Everything containerd (and the shim, through its log FIFO) said during this run.
            let log = std::fs::read(&log_path).unwrap_or_default();
            let new = String::from_utf8_lossy(&log[before.min(log.len())..]).into_owned();
            for l in new
                .lines()
                .filter(|l| !l.contains("cleaning up after shim disconnected"))
            {
                println!("{l}");
            }
        }
    }
    println!("flood loop: {} passed, {failed} failed", n - failed);
    Ok(failed)
}
