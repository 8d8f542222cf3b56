//! `rshim-bench`: rshim against containerd's Go shim on one private containerd, measured in one
//! run with the two shims alternating run by run (so machine noise falls on both), printed as a
//! table of medians, spread and rshim/Go ratios, and written to `integration/results/` as
//! markdown, CSV (every sample) and an SVG plot.
//!
//! `rshim-bench [--quick] [--runs N] [--few N] [--few N] [--out DIR] [--only group,group]`
//! Groups: memory, lifecycle, shim, exec, stdio, events, scale.

mod figures;
mod plot;
mod stats;

use std::path::PathBuf;

use anyhow::Context;
use rshim_integration::containerd::{Options, PrivateContainerd};
use rshim_integration::events::EventCapture;

/// How much to measure.
#[derive(Clone)]
pub struct Plan {
    /// Samples per runtime for latencies.
    pub runs: usize,
    /// Samples per runtime for memory and throughput.
    pub few: usize,
    /// Containers in the pod-shim memory figure.
    pub pod_sizes: Vec<usize>,
    /// MiB written by the stdio throughput figures (pipe, tty).
    pub stdio_mib: (usize, usize),
    /// Pods and containers per pod of the scale figure.
    pub scale: (usize, usize),
    /// Samples per runtime of the scale figure (alternating).
    pub scale_runs: usize,
    /// Idle shims (one container each) for the per-shim PSS figure.
    pub idle_shims: usize,
    pub only: Option<Vec<String>>,
}

impl Plan {
    fn wants(&self, group: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|g| g == group))
    }
}

const TITLE: &str = "rshim / containerd-shim-runc-v2, medians (< 1: less memory or time)";

fn main() -> anyhow::Result<()> {
    let mut quick = false;
    let mut runs = None;
    let mut few = None;
    let mut out = None;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            // Redraws DIR/bench.svg from DIR/bench.csv (after a change to the plot).
            "--replot" => {
                let dir = PathBuf::from(args.next().context("--replot DIR")?);
                let csv = std::fs::read_to_string(dir.join("bench.csv"))?;
                let figures = plot::figures_from_csv(&csv);
                return plot::ratios_svg(&figures, &dir.join("bench.svg"), TITLE);
            }
            // Leaves N idle containers (one shim each, or one pod shim with --pod) per runtime
            // for inspection (smaps, strace, perf), prints the shims' pids and waits for a
            // line on stdin.
            "--hold" => {
                let n: usize = args.next().context("--hold N")?.parse()?;
                return hold(n, args.next().as_deref() == Some("--pod"));
            }
            "--runs" => runs = Some(args.next().context("--runs N")?.parse()?),
            "--few" => few = Some(args.next().context("--few N")?.parse()?),
            "--out" => out = Some(PathBuf::from(args.next().context("--out DIR")?)),
            "--only" => {
                only = Some(
                    args.next()
                        .context("--only groups")?
                        .split(',')
                        .map(String::from)
                        .collect(),
                )
            }
            other => anyhow::bail!(
                "unknown argument {other}; usage: rshim-bench [--quick] [--runs N] [--few N] [--out DIR] \
                 [--only memory,lifecycle,shim,exec,stdio,events,scale]"
            ),
        }
    }
    let plan = if quick {
        Plan {
            runs: runs.unwrap_or(3),
            few: few.unwrap_or(1),
            pod_sizes: vec![1, 3],
            stdio_mib: (64, 16),
            scale: (2, 3),
            scale_runs: 1,
            idle_shims: 2,
            only,
        }
    } else {
        Plan {
            runs: runs.unwrap_or(30),
            few: few.unwrap_or(3),
            pod_sizes: vec![1, 10, 50],
            stdio_mib: (1024, 256),
            scale: (10, 10),
            scale_runs: 5,
            idle_shims: 10,
            only,
        }
    };
    // A quick run checks the harness; it does not replace the published figures.
    let out = out.unwrap_or_else(|| {
        if quick {
            std::env::temp_dir().join("rshim-bench-quick")
        } else {
            rshim_integration::workspace_root().join("integration/results")
        }
    });
    std::fs::create_dir_all(&out)?;

    use_release_shim();
    let c = PrivateContainerd::start(Options::default())?;
    c.import_busybox()?;
    let events = EventCapture::start(&c.address)?;
    let mut all = Vec::new();
    type Group = fn(&PrivateContainerd, &EventCapture, &Plan) -> anyhow::Result<Vec<stats::Figure>>;
    let groups: [(&str, Group); 7] = [
        ("memory", figures::memory),
        ("lifecycle", figures::lifecycle),
        ("shim", figures::shim_share),
        ("exec", figures::exec),
        ("stdio", figures::stdio),
        ("events", figures::event_latency),
        ("scale", figures::scale),
    ];
    for (name, group) in groups {
        if !plan.wants(name) {
            continue;
        }
        eprintln!("bench: {name}");
        let figs = group(&c, &events, &plan).with_context(|| format!("figure group {name}"))?;
        c.remove_all();
        all.extend(figs);
    }
    drop(events);
    drop(c);

    let machine = figures::machine();
    let table = stats::table(&all);
    let command = if quick {
        "scripts/build-release.sh && target/release/rshim-bench --quick"
    } else {
        "scripts/build-release.sh && target/release/rshim-bench"
    };
    let root = rshim_integration::workspace_root();
    let shim = std::env::var("RSHIM_BIN_DIR").unwrap_or_default();
    let shim = shim
        .strip_prefix(&format!("{}/", root.display()))
        .unwrap_or(&shim);
    let report = format!(
        "Measured {date} on {machine}; rshim from {shim}.\n\nReproduce: `{command}` (as root; alternating the two \
         shims run by run; medians, p95 for latencies, ± the interquartile range over the \
         median).\n\n{table}",
        date = figures::today(),
    );
    println!("{report}");
    std::fs::write(out.join("bench.md"), &report)?;
    std::fs::write(out.join("bench.csv"), stats::csv(&all))?;
    plot::ratios_svg(&all, &out.join("bench.svg"), TITLE)?;
    eprintln!("bench: wrote {}/bench.{{md,csv,svg}}", out.display());
    Ok(())
}

/// A release bench measures the release shim: the static one `scripts/build-release.sh`
/// builds (as deployed), else the one `cargo build --release` put beside it.
fn use_release_shim() {
    if !cfg!(debug_assertions) && std::env::var_os("RSHIM_BIN_DIR").is_none() {
        let target = rshim_integration::workspace_root().join("target");
        let static_dir = target.join("x86_64-unknown-linux-gnu/release");
        let release = if static_dir.join("containerd-shim-rshim-v2").exists() {
            static_dir
        } else {
            target.join("release")
        };
        std::env::set_var("RSHIM_BIN_DIR", release);
    }
}

fn hold(n: usize, pod: bool) -> anyhow::Result<()> {
    use_release_shim();
    let c = PrivateContainerd::start(Options::default())?;
    c.import_busybox()?;
    for rt in [
        rshim_integration::Runtime::Go,
        rshim_integration::Runtime::Rshim,
    ] {
        for k in 0..n {
            let id = format!("hold-{}-{k}", rt.name());
            figures::hold_one(&c, rt, &id, pod.then(|| format!("hold-{}", rt.name())))?;
            if pod && k > 0 {
                continue; // the pod's shim is named after its first container
            }
            let pid = c.shim_of(&id).context("shim of the container")?;
            println!("{} {id} shim pid {pid}", rt.name());
        }
    }
    eprintln!("holding; press Enter to remove them");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    c.remove_all();
    Ok(())
}
