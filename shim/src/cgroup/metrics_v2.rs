//! `io.containerd.cgroups.v2.Metrics` from a unified-hierarchy cgroup, as containerd's cgroups
//! library fills it: a file the kernel does not offer (a controller not enabled for the
//! cgroup) reads as 0, only a missing cgroup is an error.

use std::path::Path;

use containerd_shim_protos::cgroups_v2::metrics::{
    CPUStat, HugeTlbStat, IOEntry, IOStat, MemoryEvents, MemoryStat, Metrics, PSIData, PSIStats,
    PidsStat,
};
use containerd_shim_protos::protobuf::MessageField;

use super::files::{flat_keyed, read_optional, read_u64};
use super::metrics_v1::page_size_name;

pub fn collect(dir: &Path) -> std::io::Result<Metrics> {
    // The one check that fails: the cgroup itself is gone.
    std::fs::metadata(dir.join("cgroup.procs"))?;
    let value = |file: &str| read_u64(&dir.join(file)).unwrap_or(0);
    let keyed = |file: &str| read_optional(&dir.join(file)).unwrap_or_default();

    let cpu_stat = keyed("cpu.stat");
    let cpu = flat_keyed(&cpu_stat);
    let memory_stat = keyed("memory.stat");
    let mem = flat_keyed(&memory_stat);
    let events_text = keyed("memory.events");
    let events = flat_keyed(&events_text);

    Ok(Metrics {
        pids: MessageField::some(PidsStat {
            current: value("pids.current"),
            limit: value("pids.max"),
            ..Default::default()
        }),
        cpu: MessageField::some(CPUStat {
            usage_usec: cpu.get("usage_usec"),
            user_usec: cpu.get("user_usec"),
            system_usec: cpu.get("system_usec"),
            nr_periods: cpu.get("nr_periods"),
            nr_throttled: cpu.get("nr_throttled"),
            throttled_usec: cpu.get("throttled_usec"),
            nr_bursts: cpu.get("nr_bursts"),
            burst_usec: cpu.get("burst_usec"),
            psi: psi(&keyed("cpu.pressure")),
            ..Default::default()
        }),
        memory: MessageField::some(MemoryStat {
            anon: mem.get("anon"),
            file: mem.get("file"),
            kernel_stack: mem.get("kernel_stack"),
            slab: mem.get("slab"),
            sock: mem.get("sock"),
            shmem: mem.get("shmem"),
            file_mapped: mem.get("file_mapped"),
            file_dirty: mem.get("file_dirty"),
            file_writeback: mem.get("file_writeback"),
            anon_thp: mem.get("anon_thp"),
            inactive_anon: mem.get("inactive_anon"),
            active_anon: mem.get("active_anon"),
            inactive_file: mem.get("inactive_file"),
            active_file: mem.get("active_file"),
            unevictable: mem.get("unevictable"),
            slab_reclaimable: mem.get("slab_reclaimable"),
            slab_unreclaimable: mem.get("slab_unreclaimable"),
            pgfault: mem.get("pgfault"),
            pgmajfault: mem.get("pgmajfault"),
            workingset_refault: mem.get("workingset_refault"),
            workingset_activate: mem.get("workingset_activate"),
            workingset_nodereclaim: mem.get("workingset_nodereclaim"),
            pgrefill: mem.get("pgrefill"),
            pgscan: mem.get("pgscan"),
            pgsteal: mem.get("pgsteal"),
            pgactivate: mem.get("pgactivate"),
            pgdeactivate: mem.get("pgdeactivate"),
            pglazyfree: mem.get("pglazyfree"),
            pglazyfreed: mem.get("pglazyfreed"),
            thp_fault_alloc: mem.get("thp_fault_alloc"),
            thp_collapse_alloc: mem.get("thp_collapse_alloc"),
            usage: value("memory.current"),
            usage_limit: value("memory.max"),
            swap_usage: value("memory.swap.current"),
            swap_limit: value("memory.swap.max"),
            max_usage: value("memory.peak"),
            swap_max_usage: value("memory.swap.peak"),
            psi: psi(&keyed("memory.pressure")),
            ..Default::default()
        }),
        memory_events: MessageField::some(MemoryEvents {
            low: events.get("low"),
            high: events.get("high"),
            max: events.get("max"),
            oom: events.get("oom"),
            oom_kill: events.get("oom_kill"),
            oom_group_kill: events.get("oom_group_kill"),
            ..Default::default()
        }),
        io: MessageField::some(IOStat {
            usage: io_entries(&keyed("io.stat")),
            psi: psi(&keyed("io.pressure")),
            ..Default::default()
        }),
        hugetlb: hugetlb(dir),
        ..Default::default()
    })
}

/// `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..` lines.
fn io_entries(text: &str) -> Vec<IOEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut entry = IOEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for field in fields {
                let Some((key, value)) = field.split_once('=') else {
                    continue;
                };
                let value = value.parse().unwrap_or(0);
                match key {
                    "rbytes" => entry.rbytes = value,
                    "wbytes" => entry.wbytes = value,
                    "rios" => entry.rios = value,
                    "wios" => entry.wios = value,
                    _ => {}
                }
            }
            Some(entry)
        })
        .collect()
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=0` and the same for `full`.
fn psi(text: &str) -> MessageField<PSIStats> {
    if text.is_empty() {
        return MessageField::none();
    }
    let mut stats = PSIStats::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let kind = fields.next();
        let mut data = PSIData::new();
        for field in fields {
            match field.split_once('=') {
                Some(("avg10", v)) => data.avg10 = v.parse().unwrap_or(0.0),
                Some(("avg60", v)) => data.avg60 = v.parse().unwrap_or(0.0),
                Some(("avg300", v)) => data.avg300 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => data.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        match kind {
            Some("some") => stats.some = MessageField::some(data),
            Some("full") => stats.full = MessageField::some(data),
            _ => {}
        }
    }
    MessageField::some(stats)
}

fn hugetlb(dir: &Path) -> Vec<HugeTlbStat> {
    let Ok(sizes) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut names: Vec<String> = sizes
        .filter_map(|e| e.ok())
        .filter_map(|e| page_size_name(&e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
        .into_iter()
        .filter(|size| dir.join(format!("hugetlb.{size}.current")).exists())
        .map(|size| {
            let events =
                read_optional(&dir.join(format!("hugetlb.{size}.events"))).unwrap_or_default();
            HugeTlbStat {
                current: read_u64(&dir.join(format!("hugetlb.{size}.current"))).unwrap_or(0),
                max: read_u64(&dir.join(format!("hugetlb.{size}.max"))).unwrap_or(0),
                failcnt: flat_keyed(&events).get("max"),
                pagesize: size,
                ..Default::default()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fake_unified_cgroup() {
        let dir = tempfile::tempdir().unwrap();
        let write = |f: &str, v: &str| std::fs::write(dir.path().join(f), v).unwrap();
        write("cgroup.procs", "");
        write("pids.current", "4\n");
        write("pids.max", "max\n");
        write(
            "cpu.stat",
            "usage_usec 900\nuser_usec 600\nsystem_usec 300\n",
        );
        write("cpu.pressure", "some avg10=1.50 avg60=0.00 avg300=0.00 total=42\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n");
        write("memory.stat", "anon 4096\nfile 8192\npgfault 3\n");
        write("memory.current", "12288\n");
        write("memory.max", "max\n");
        write("memory.events", "low 0\nhigh 0\nmax 5\noom 2\noom_kill 1\n");
        write(
            "io.stat",
            "254:0 rbytes=100 wbytes=200 rios=1 wios=2 dbytes=0 dios=0\n",
        );
        let m = collect(dir.path()).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (4, u64::MAX));
        assert_eq!(
            (m.cpu.usage_usec, m.cpu.user_usec, m.cpu.system_usec),
            (900, 600, 300)
        );
        assert_eq!(m.cpu.psi.some.avg10, 1.5);
        assert_eq!((m.cpu.psi.some.total, m.cpu.psi.full.total), (42, 7));
        assert_eq!(
            (m.memory.anon, m.memory.file, m.memory.pgfault),
            (4096, 8192, 3)
        );
        assert_eq!((m.memory.usage, m.memory.usage_limit), (12288, u64::MAX));
        // Swap not enabled: zero, not an error.
        assert_eq!(m.memory.swap_usage, 0);
        assert_eq!((m.memory_events.max, m.memory_events.oom_kill), (5, 1));
        let io = &m.io.usage[0];
        assert_eq!(
            (io.major, io.minor, io.rbytes, io.wbytes, io.rios, io.wios),
            (254, 0, 100, 200, 1, 2)
        );
        assert!(m.memory.psi.is_none());
    }

    #[test]
    fn a_removed_cgroup_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = collect(&dir.path().join("gone")).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    }
}
