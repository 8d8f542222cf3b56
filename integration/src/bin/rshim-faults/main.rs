//! The fault-injection suite: bug classes reproduced on the real containerd, runc and kernel,
//! each run against containerd's Go shim and rshim. rshim must pass every row; the Go shim's
//! rows are measured and printed, not asserted. The table goes to stdout and to
//! integration/results/faults.md.
//!
//! `rshim-faults [--rounds N] [--rows 1,9]` (default 2000 storm rounds, every row; only a run of
//! every row rewrites the results file).
//!
//! Each row is a module `rowN_*.rs` implementing `row::FaultRow`, listed once in `ROWS`; what
//! several rows use is in `helpers.rs`.

mod helpers;
mod row;
mod row1_storm;
mod row2_pipelined;
mod row3_flood;
mod row4_mounts;
mod row5_shim_killed;
mod row6_containerd_restart;
mod row7_hanging_runc;
mod row8_hostile_clients;
mod row9_bad_requests;

use row::{Env, FaultRow, Outcome};

/// Every row, in the order they run and appear in the table. The order matters: the rows that
/// read the shared containerd's events come first, row 6 (which restarts that containerd) after
/// them, and row 4 (a containerd of its own) once the shared one is stopped.
const ROWS: &[&dyn FaultRow] = &[
    &row1_storm::Storm,
    &row3_flood::Flood,
    &row2_pipelined::Pipelined,
    &row8_hostile_clients::HostileClients,
    &row7_hanging_runc::HangingRunc,
    &row5_shim_killed::ShimKilled,
    &row9_bad_requests::BadRequests,
    &row6_containerd_restart::ContainerdRestart,
    &row4_mounts::Mounts,
];

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
    // `--rows 1,9`: only those scenarios (for development); default all.
    let only: Option<Vec<String>> = std::env::args()
        .skip_while(|a| a != "--rows")
        .nth(1)
        .map(|r| r.split(',').map(String::from).collect());
    let wants = |row: u8| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|r| *r == row.to_string()))
    };
    // `--flood-loop N`: only scenario 3 against rshim, N times (to chase an intermittent).
    if let Some(n) = std::env::args()
        .skip_while(|a| a != "--flood-loop")
        .nth(1)
        .and_then(|n| n.parse::<usize>().ok())
    {
        let failed = row3_flood::flood_loop(n)?;
        std::process::exit(if failed > 0 { 1 } else { 0 });
    }

    let mut env = Env::new(rounds)?;
    let mut rows: Vec<(&dyn FaultRow, Outcome)> = Vec::new();
    for &row in ROWS.iter().filter(|r| wants(r.number())) {
        env.prepare(row.setup())?;
        rows.push((row, row.measure(&mut env)));
    }
    drop(env);

    let mut table = String::from(
        "| scenario | Go shim (measured) | rshim | rshim passes |\n|---|---|---|---|\n",
    );
    for (row, r) in &rows {
        table.push_str(&format!(
            "| {} {} | {} | {} | {} |\n",
            row.number(),
            row.title(),
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
    let failed = rows.iter().filter(|(_, r)| !r.rshim_pass).count();
    println!("faults: {} passed, {} failed", rows.len() - failed, failed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}
