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

/// CPU time a process has used so far, user and system, its exited threads included
/// (`utime` + `stime` of `/proc/PID/stat`, in clock ticks of 10 ms), in seconds.
pub fn cpu_secs(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on every Linux ABI this runs on.
    Some(ticks as f64 / 100.0)
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
    fn cpu_time_grows_with_work() {
        // Spins until its own CPU time has grown by 50 ms (bounded at 20 s of wall time, so a
        // loaded machine only makes it slower): a reader that never moves fails.
        let me = std::process::id() as i32;
        let before = super::cpu_secs(me).expect("own stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        let mut after = before;
        while after - before < 0.05 && t.elapsed() < std::time::Duration::from_secs(20) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            after = super::cpu_secs(me).expect("own stat");
        }
        std::hint::black_box(x);
        assert!(after - before >= 0.05, "{before} -> {after}");
    }

    #[test]
    fn this_process() {
        let u = super::usage(std::process::id() as i32);
        assert!(
            u.fds > 0 && u.threads > 0 && u.rss_kib > 0 && u.pss_kib > 0,
            "{u:?}"
        );
    }
}
