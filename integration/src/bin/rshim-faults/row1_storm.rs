//! Row 1: a process that cannot exit, and clients that retry Kill + Wait + Delete with short
//! deadlines or drop their connection: through containerd and on the shim's socket. The shim's
//! fds, threads and RSS must come back, and the process must exit once, with status 137.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{DeleteRequest, KillRequest, WaitRequest};
use rshim_integration::containerd::PrivateContainerd;
use rshim_integration::events::EventCapture;
use rshim_integration::procfs::usage;
use rshim_integration::Runtime;
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

use crate::helpers::{connect, run_sleeper, shim_client_address, Cell};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct Storm;

impl FaultRow for Storm {
    fn number(&self) -> u8 {
        1
    }

    fn title(&self) -> &'static str {
        "unkillable process storm"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| {
            env.tokio()
                .block_on(storm(env.containerd(), env.events(), rt, env.rounds))
        })
    }
}

/// Class 1: a process that cannot exit (paused, SIGTERM ignored by pid 1) and clients that
/// retry Kill + Wait + Delete with 100 ms deadlines or drop their connection.
async fn storm(
    c: &PrivateContainerd,
    events: &EventCapture,
    rt: Runtime,
    rounds: usize,
) -> anyhow::Result<Cell> {
    let id = format!("storm-{}", rt.name());
    run_sleeper(c, rt, &id, &[])?;
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

    // The storm on the shim's socket, Waits again without a deadline (as containerd's), twice:
    // the first brings the allocator to the peak that so many concurrent calls need (which it
    // keeps, more of it on a loaded machine where calls pile up: up to 8.2 MiB seen); a leak
    // grows with every round, so the second storm must not grow the RSS again.
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    socket_storm(&id, &address, rounds, &mut codes, &mut slowest).await?;
    let storm_time = started.elapsed();
    settle(pid, before.fds).await;
    let between = usage(pid);
    socket_storm(&id, &address, rounds, &mut codes, &mut slowest).await?;
    settle(pid, before.fds).await;
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
    // The exit event reaches `ctr events` after the Wait's answer: poll for it (bounded).
    let count_exits = || {
        events
            .topics_for(&id)
            .iter()
            .filter(|t| *t == "/tasks/exit")
            .count()
    };
    crate::helpers::poll(Duration::from_secs(10), || count_exits() >= 1);
    let exits = count_exits();
    let _ = c.ctr(&["task", "delete", &id]);
    let _ = c.ctr(&["containers", "rm", &id]);

    // Stated slack: 2 fds, 4 threads (tokio's blocking pool), 4 MiB RSS across the second
    // storm (the first one's peak is the allocator's, kept: 2.8 MiB quiet, up to 8.2 MiB on a
    // loaded CI run; a leak of 2 KiB per round would show), 1 MiB RSS through containerd, 512
    // bytes per pending Wait.
    let rss_growth = after.rss_kib as i64 - between.rss_kib as i64;
    let ctr_growth = ctr_after.rss_kib as i64 - ctr_before.rss_kib as i64;
    let pass = after.fds <= before.fds + 2
        && after.threads <= before.threads + 4
        && rss_growth < 4096
        && ctr_after.threads <= ctr_before.threads + 4
        && ctr_growth < 1024
        // At least one Wait left by containerd reached the shim, so the phase is not vacuous;
        // how many depends on how soon each ctr sends its Wait before it is killed, which the
        // machine's load decides (100 on a quiet machine, 9 under a loaded test run).
        && parked.is_none_or(|n| n >= 1)
        && per_wait < 512
        && slowest < Duration::from_millis(1000)
        && status == 137
        && exits == 1;
    let text = format!(
        "{} bytes per pending Wait ({HELD} held: RSS {} KiB); through containerd: {CTR_ROUNDS} rounds of ctr task kill + attach killed after 100 ms in {:.1}s, {}threads {}→{}, RSS {}→{} KiB; on the socket: 2 x {rounds} rounds, the first in {:.1}s, slowest answer {} ms; statuses {:?}; fds {}→{}, threads {}→{}, RSS {}→{}→{} KiB (before, after one storm, after two); exit {status}, /tasks/exit ×{exits}",
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
        between.rss_kib,
        after.rss_kib,
    );
    Ok((text, pass))
}

/// `rounds` rounds of Kill + Wait + Delete with 100 ms deadlines, 25 at a time, half on one
/// shared connection and half on a connection each: the answers' codes and the slowest answer.
async fn socket_storm(
    id: &str,
    address: &str,
    rounds: usize,
    codes: &mut BTreeMap<String, usize>,
    slowest: &mut Duration,
) -> anyhow::Result<()> {
    let shared = connect(address).await?;
    let short = CallOptions::with_timeout(Duration::from_millis(100));
    let short_wait = CallOptions::local_deadline(Duration::from_millis(100));
    for batch in 0..rounds.div_ceil(25) {
        let mut jobs = Vec::new();
        for i in 0..25 {
            let round = batch * 25 + i;
            if round >= rounds {
                break;
            }
            let (id, address, short, short_wait) = (
                id.to_string(),
                address.to_string(),
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
            *slowest = (*slowest).max(took);
            for n in names {
                *codes.entry(n).or_default() += 1;
            }
        }
    }
    drop(shared);
    Ok(())
}

/// Lets abandoned server-side work finish under its own deadlines: polls (bounded, 30 s) for
/// the shim's fds to come back to `fds`, then gives the allocator 2 s to settle.
async fn settle(pid: i32, fds: usize) {
    for _ in 0..60 {
        if usage(pid).fds <= fds + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
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
