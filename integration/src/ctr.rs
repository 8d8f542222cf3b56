//! `ctr` with a deadline on every call: a call that outlives it is killed (SIGKILL: `ctr run`
//! forwards SIGTERM to the container) and reported as timed out.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// Exit code; None when killed by the deadline or a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
}

/// Runs `program args` with `stdin` bytes (or /dev/null), bounded by `timeout`.
pub fn run(program: &str, args: &[String], stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Output {
                stdout: String::new(),
                stderr: format!("spawn {program}: {e}"),
                code: None,
                timed_out: false,
            }
        }
    };
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // Written from a thread and then closed: the write must not block the wait.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    // Bounded: a container process that inherited ctr's pipe could hold it open past ctr.
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        String::from_utf8_lossy(&rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default())
            .into_owned()
    };
    Output {
        stdout: collect(stdout),
        stderr: collect(stderr),
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        timed_out,
    }
}

/// Reads a pipe to EOF in a thread. (The caller's deadline bounds the child; a container that
/// inherited the pipe could keep it open longer, so the join is bounded too: see `collect`.)
fn reader<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut out);
        }
        let _ = tx.send(out);
    });
    rx
}
