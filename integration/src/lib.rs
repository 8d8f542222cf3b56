//! The real-world harness: a private containerd (Debian's) with its own root, state, sockets
//! and config under a temp dir, rshim and containerd's Go shim configured side by side, a
//! busybox image built locally, and `ctr` run with a deadline on every call.

pub mod api;
pub mod containerd;
pub mod ctr;
pub mod events;
pub mod image;
pub mod procfs;

/// The runtimes under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// containerd's Go shim, the reference.
    Go,
    Rshim,
}

impl Runtime {
    pub fn runtime_type(self) -> &'static str {
        match self {
            Runtime::Go => "io.containerd.runc.v2",
            Runtime::Rshim => "io.containerd.rshim.v2",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Runtime::Go => "go",
            Runtime::Rshim => "rshim",
        }
    }

    /// `RSHIM_RUNTIMES` (comma-separated `go`, `rshim`) selects; default both.
    pub fn selected() -> Vec<Runtime> {
        let sel = std::env::var("RSHIM_RUNTIMES").unwrap_or_else(|_| "go,rshim".into());
        [Runtime::Go, Runtime::Rshim]
            .into_iter()
            .filter(|r| sel.split(',').any(|s| s.trim() == r.name()))
            .collect()
    }
}

/// The workspace root (for target/debug).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Polls `probe` every 10 ms until it answers `Ok`, for at most `bound`, instead of sleeping a
/// fixed time for something to happen. `Err` carries what was seen meanwhile; past `bound` this
/// panics saying what did not happen and what was last seen.
pub fn poll_until<T>(
    what: &str,
    bound: std::time::Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + bound;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if std::time::Instant::now() >= deadline => {
                panic!("{what} did not happen within {bound:?}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}
