//! What a process costs, read from /proc: fds, threads, RSS and PSS.

/// One reading of a process's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub fds: usize,
    pub threads: usize,
    pub rss_kib: u64,
    /// Proportional set size (`smaps_rollup`): shared pages divided among their users.
    pub pss_kib: u64,
}

pub fn usage(pid: i32) -> Usage {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    Usage {
        fds,
        threads: field(&status, "Threads:") as usize,
        rss_kib: field(&status, "VmRSS:"),
        pss_kib: field(&rollup, "Pss:"),
    }
}

/// The number after `name` on its line (`VmRSS:   1234 kB`).
fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process() {
        let u = super::usage(std::process::id() as i32);
        assert!(
            u.fds > 0 && u.threads > 0 && u.rss_kib > 0 && u.pss_kib > 0,
            "{u:?}"
        );
    }
}
