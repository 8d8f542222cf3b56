//! ttrpc-client against the `ttrpc` crate's own async client, on the same in-process ttrpc
//! server, in one run (alternating A B A B). Prints calls/s, p50/p99 latency and MB/s.
//!
//! `cargo run --release -p ttrpc-client --example bench_compare [seconds-per-run]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::{StateRequest, StateResponse};
use containerd_shim_protos::shim_async::{create_task, Task, TaskClient as TheirTaskClient};
use ttrpc_client::task::TaskClient;
use ttrpc_client::{CallOptions, Client};

/// State echoes the request's id in the response's bundle: the payload size goes both ways.
struct Echo;

#[async_trait::async_trait]
impl Task for Echo {
    async fn state(
        &self,
        _: &ttrpc::r#async::TtrpcContext,
        req: StateRequest,
    ) -> ttrpc::Result<StateResponse> {
        Ok(StateResponse {
            bundle: req.id,
            pid: 1,
            ..Default::default()
        })
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Ours,
    Theirs,
}

struct Run {
    calls: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

async fn run(which: Which, address: &str, concurrency: usize, size: usize, secs: f64) -> Run {
    let id = "x".repeat(size);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut workers = Vec::new();
    // One connection per client kind, shared by all workers (as containerd does).
    let ours = TaskClient::new(
        Client::connect(address, Duration::from_secs(5))
            .await
            .unwrap(),
        TaskClient::V3,
    );
    let theirs = TheirTaskClient::new(
        ttrpc::r#async::Client::connect(&format!("unix://{address}"))
            .await
            .unwrap(),
    );
    let (ours, theirs) = (Arc::new(ours), Arc::new(theirs));
    for _ in 0..concurrency {
        let (ours, theirs, id) = (ours.clone(), theirs.clone(), id.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let opts = CallOptions::with_timeout(Duration::from_secs(30));
            while Instant::now() < deadline {
                let req = StateRequest {
                    id: id.clone(),
                    ..Default::default()
                };
                let t0 = Instant::now();
                let ok = match which {
                    Which::Ours => ours.state(req, &opts).await.is_ok(),
                    Which::Theirs => theirs
                        .state(ttrpc::context::with_timeout(30_000_000_000), &req)
                        .await
                        .is_ok(),
                };
                assert!(ok, "call failed");
                lat.push(t0.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    latencies.sort();
    Run {
        calls: latencies.len(),
        latencies,
        elapsed: started.elapsed(),
    }
}

fn pct(l: &[Duration], p: f64) -> Duration {
    l[((l.len() as f64 - 1.0) * p) as usize]
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.sock").to_string_lossy().into_owned();
        let service: Arc<dyn Task + Send + Sync> = Arc::new(Echo);
        let mut server = ttrpc::r#async::Server::new()
            .bind(&format!("unix://{path}"))
            .unwrap()
            .register_service(create_task(service));
        server.start().await.unwrap();

        println!("| scenario | client | calls/s | p50 | p99 | MB/s | ours/theirs (calls/s) |");
        println!("|---|---|---|---|---|---|---|");
        for (name, concurrency, size) in [
            ("small, concurrency 1", 1, 16),
            ("small, concurrency 64", 64, 16),
            ("1 MiB, concurrency 4", 4, 1 << 20),
        ] {
            let mut best = [0.0f64; 2];
            let mut rows = [String::new(), String::new()];
            // A B A B: machine noise hits both alike; the better of two runs is kept.
            for _ in 0..2 {
                for (i, which) in [Which::Ours, Which::Theirs].into_iter().enumerate() {
                    let r = run(which, &path, concurrency, size, secs).await;
                    let rate = r.calls as f64 / r.elapsed.as_secs_f64();
                    if rate > best[i] {
                        best[i] = rate;
                        let mbs = rate * (2 * size) as f64 / 1e6;
                        rows[i] = format!(
                            "| {name} | {} | {rate:.0} | {:?} | {:?} | {mbs:.1} |",
                            if which == Which::Ours {
                                "ttrpc-client"
                            } else {
                                "ttrpc crate"
                            },
                            pct(&r.latencies, 0.5),
                            pct(&r.latencies, 0.99)
                        );
                    }
                }
            }
            println!("{} {:.2} |", rows[0], best[0] / best[1]);
            println!("{} |", rows[1]);
        }
        server.shutdown().await.unwrap();
    });
}
