//! Row 2: a pipelined client with 4 KiB socket buffers writes 64 requests of 1 MiB each before
//! reading any response; the shim's server must not deadlock with it.

use std::time::{Duration, Instant};

use rshim_integration::containerd::PrivateContainerd;
use rshim_integration::Runtime;

use crate::helpers::{frame, read_status, remove, run_sleeper, socket_of, still_serving, Cell};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct Pipelined;

impl FaultRow for Pipelined {
    fn number(&self) -> u8 {
        2
    }

    fn title(&self) -> &'static str {
        "pipelined 64 x 1 MiB requests, 4 KiB buffers"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| server_deadlock(env.containerd(), rt))
    }
}

/// Class 2 at the shim's server: a pipelined client with 4 KiB socket buffers writes 64 requests
/// of 1 MiB each before reading any response. A server whose reading waited on its writing would
/// deadlock with it.
fn server_deadlock(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::io::Write;
    let id = format!("srv-{}", rt.name());
    run_sleeper(c, rt, &id, &[])?;
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
