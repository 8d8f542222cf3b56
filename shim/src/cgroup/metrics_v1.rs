//! `io.containerd.cgroups.v1.Metrics` from a cgroup v1 hierarchy, field by field as
//! containerd's cgroups library fills it (controllers that are not mounted are left empty).

// Unsafe here (denied elsewhere in the crate): sysconf(_SC_CLK_TCK), to convert cpuacct's ticks.
#![allow(unsafe_code)]

use std::path::Path;

use containerd_shim_protos::cgroups::metrics::{
    BlkIOEntry, BlkIOStat, CPUStat, CPUUsage, HugetlbStat, MemoryEntry, MemoryOomControl,
    MemoryStat, Metrics, PidsStat, Throttle,
};
use containerd_shim_protos::protobuf::MessageField;

use super::files::{flat_keyed, read_optional, read_u64};
use super::paths::Cgroup;

pub fn collect(cg: &Cgroup) -> std::io::Result<Metrics> {
    let mut m = Metrics::new();
    if let Some(dir) = cg.dir("pids") {
        m.pids = MessageField::some(pids(dir)?);
    }
    if let Some(dir) = cg.dir("cpuacct") {
        m.cpu = MessageField::some(cpu(dir, cg.dir("cpu"))?);
    }
    if let Some(dir) = cg.dir("memory") {
        m.memory = MessageField::some(memory(dir)?);
        m.memory_oom_control = MessageField::some(oom_control(dir)?);
    }
    if let Some(dir) = cg.dir("blkio") {
        m.blkio = MessageField::some(blkio(dir)?);
    }
    if let Some(dir) = cg.dir("hugetlb") {
        m.hugetlb = hugetlb(dir)?;
    }
    Ok(m)
}

fn pids(dir: &Path) -> std::io::Result<PidsStat> {
    let max = std::fs::read_to_string(dir.join("pids.max"))?;
    Ok(PidsStat {
        current: read_u64(&dir.join("pids.current"))?,
        // "max" (no limit) is 0, as in containerd.
        limit: max.trim().parse().unwrap_or(0),
        ..Default::default()
    })
}

fn cpu(cpuacct: &Path, cpu: Option<&Path>) -> std::io::Result<CPUStat> {
    let per_cpu = std::fs::read_to_string(cpuacct.join("cpuacct.usage_percpu"))?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // cpuacct.stat counts clock ticks; containerd reports nanoseconds.
    let stat = std::fs::read_to_string(cpuacct.join("cpuacct.stat"))?;
    let stat = flat_keyed(&stat);
    let tick_ns = 1_000_000_000 / clock_ticks_per_second();
    let mut throttling = Throttle::new();
    if let Some(text) = cpu.and_then(|d| read_optional(&d.join("cpu.stat"))) {
        let s = flat_keyed(&text);
        throttling.periods = s.get("nr_periods");
        throttling.throttled_periods = s.get("nr_throttled");
        throttling.throttled_time = s.get("throttled_time");
    }
    Ok(CPUStat {
        usage: MessageField::some(CPUUsage {
            total: read_u64(&cpuacct.join("cpuacct.usage"))?,
            kernel: stat.get("system") * tick_ns,
            user: stat.get("user") * tick_ns,
            per_cpu,
            ..Default::default()
        }),
        throttling: MessageField::some(throttling),
        ..Default::default()
    })
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

fn memory(dir: &Path) -> std::io::Result<MemoryStat> {
    let s = std::fs::read_to_string(dir.join("memory.stat"))?;
    let s = flat_keyed(&s);
    let mut m = MemoryStat {
        cache: s.get("cache"),
        rss: s.get("rss"),
        rss_huge: s.get("rss_huge"),
        mapped_file: s.get("mapped_file"),
        dirty: s.get("dirty"),
        writeback: s.get("writeback"),
        pg_pg_in: s.get("pgpgin"),
        pg_pg_out: s.get("pgpgout"),
        pg_fault: s.get("pgfault"),
        pg_maj_fault: s.get("pgmajfault"),
        inactive_anon: s.get("inactive_anon"),
        active_anon: s.get("active_anon"),
        inactive_file: s.get("inactive_file"),
        active_file: s.get("active_file"),
        unevictable: s.get("unevictable"),
        hierarchical_memory_limit: s.get("hierarchical_memory_limit"),
        hierarchical_swap_limit: s.get("hierarchical_memsw_limit"),
        total_cache: s.get("total_cache"),
        total_rss: s.get("total_rss"),
        total_rss_huge: s.get("total_rss_huge"),
        total_mapped_file: s.get("total_mapped_file"),
        total_dirty: s.get("total_dirty"),
        total_writeback: s.get("total_writeback"),
        total_pg_pg_in: s.get("total_pgpgin"),
        total_pg_pg_out: s.get("total_pgpgout"),
        total_pg_fault: s.get("total_pgfault"),
        total_pg_maj_fault: s.get("total_pgmajfault"),
        total_inactive_anon: s.get("total_inactive_anon"),
        total_active_anon: s.get("total_active_anon"),
        total_inactive_file: s.get("total_inactive_file"),
        total_active_file: s.get("total_active_file"),
        total_unevictable: s.get("total_unevictable"),
        ..Default::default()
    };
    m.usage = MessageField::some(memory_entry(dir, "memory")?);
    // Swap and kernel accounting may be compiled out or disabled: missing files leave them empty.
    for (prefix, entry) in [
        ("memory.memsw", &mut m.swap),
        ("memory.kmem", &mut m.kernel),
        ("memory.kmem.tcp", &mut m.kernel_tcp),
    ] {
        match memory_entry(dir, prefix) {
            Ok(e) => *entry = MessageField::some(e),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(m)
}

fn memory_entry(dir: &Path, prefix: &str) -> std::io::Result<MemoryEntry> {
    let value = |name: &str| read_u64(&dir.join(format!("{prefix}.{name}")));
    Ok(MemoryEntry {
        usage: value("usage_in_bytes")?,
        max: value("max_usage_in_bytes")?,
        failcnt: value("failcnt")?,
        limit: value("limit_in_bytes")?,
        ..Default::default()
    })
}

fn oom_control(dir: &Path) -> std::io::Result<MemoryOomControl> {
    let s = std::fs::read_to_string(dir.join("memory.oom_control"))?;
    let s = flat_keyed(&s);
    Ok(MemoryOomControl {
        oom_kill_disable: s.get("oom_kill_disable"),
        under_oom: s.get("under_oom"),
        oom_kill: s.get("oom_kill"),
        ..Default::default()
    })
}

/// The CFQ/BFQ recursive statistics where the kernel keeps them, else the throttle ones
/// (which every kernel has), as containerd does.
fn blkio(dir: &Path) -> std::io::Result<BlkIOStat> {
    let devices = read_optional(Path::new("/proc/partitions"))
        .map(|p| partitions(&p))
        .unwrap_or_default();
    let entries = |file: &str| -> Vec<BlkIOEntry> {
        read_optional(&dir.join(format!("blkio.{file}")))
            .map(|text| blkio_entries(&text, &devices))
            .unwrap_or_default()
    };
    let mut stat = BlkIOStat {
        sectors_recursive: entries("sectors_recursive"),
        io_service_bytes_recursive: entries("io_service_bytes_recursive"),
        io_serviced_recursive: entries("io_serviced_recursive"),
        io_queued_recursive: entries("io_queued_recursive"),
        io_service_time_recursive: entries("io_service_time_recursive"),
        io_wait_time_recursive: entries("io_wait_time_recursive"),
        io_merged_recursive: entries("io_merged_recursive"),
        io_time_recursive: entries("time_recursive"),
        ..Default::default()
    };
    if stat.io_service_bytes_recursive.is_empty() && stat.io_serviced_recursive.is_empty() {
        stat.io_serviced_recursive = entries("throttle.io_serviced");
        stat.io_service_bytes_recursive = entries("throttle.io_service_bytes");
    }
    Ok(stat)
}

/// `(major, minor) -> /dev/name` from `/proc/partitions`.
fn partitions(text: &str) -> Vec<((u64, u64), String)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (major, minor) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
            Some(((major, minor), format!("/dev/{}", f.get(3)?)))
        })
        .collect()
}

/// Lines `MAJOR:MINOR Op value`; the closing `Total value` line has no device and is skipped.
fn blkio_entries(text: &str, devices: &[((u64, u64), String)]) -> Vec<BlkIOEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (device, op, value) = match f.as_slice() {
                [device, op, value] => (*device, *op, *value),
                [device, value] => (*device, "", *value),
                _ => return None,
            };
            let (major, minor) = device.split_once(':')?;
            let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
            Some(BlkIOEntry {
                device: devices
                    .iter()
                    .find(|(k, _)| *k == (major, minor))
                    .map(|(_, name)| name.clone())
                    .unwrap_or_default(),
                major,
                minor,
                op: op.to_string(),
                value: value.parse().ok()?,
                ..Default::default()
            })
        })
        .collect()
}

/// One entry per huge page size the kernel offers (`hugepages-2048kB` -> `2MB`).
fn hugetlb(dir: &Path) -> std::io::Result<Vec<HugetlbStat>> {
    let Ok(sizes) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Ok(Vec::new());
    };
    let mut names: Vec<String> = sizes
        .filter_map(|e| e.ok())
        .filter_map(|e| page_size_name(&e.file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|size| {
            let value = |name: &str| read_u64(&dir.join(format!("hugetlb.{size}.{name}")));
            Ok(HugetlbStat {
                usage: value("usage_in_bytes")?,
                max: value("max_usage_in_bytes")?,
                failcnt: value("failcnt")?,
                pagesize: size,
                ..Default::default()
            })
        })
        .collect()
}

/// `hugepages-2048kB` -> `2MB`, `hugepages-1048576kB` -> `1GB` (the cgroup file naming).
pub fn page_size_name(dir_name: &str) -> Option<String> {
    let kb: u64 = dir_name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    let (value, unit) = match kb {
        k if k >= 1 << 20 && k % (1 << 20) == 0 => (k >> 20, "GB"),
        k if k >= 1 << 10 && k % (1 << 10) == 0 => (k >> 10, "MB"),
        k => (k, "KB"),
    };
    Some(format!("{value}{unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkio_lines_with_device_names() {
        let devices = partitions(
            "major minor  #blocks  name\n\n 254        0  262144000 vda\n 254        1  262142959 vda1\n",
        );
        let entries = blkio_entries(
            "254:0 Read 4096\n254:0 Write 8192\n254:1 Discard 0\nTotal 12288\n",
            &devices,
        );
        let got: Vec<(String, u64, u64, String, u64)> = entries
            .iter()
            .map(|e| (e.device.clone(), e.major, e.minor, e.op.clone(), e.value))
            .collect();
        assert_eq!(
            got,
            [
                ("/dev/vda".into(), 254, 0, "Read".into(), 4096),
                ("/dev/vda".into(), 254, 0, "Write".into(), 8192),
                ("/dev/vda1".into(), 254, 1, "Discard".into(), 0),
            ]
        );
    }

    #[test]
    fn huge_page_names() {
        assert_eq!(page_size_name("hugepages-2048kB").as_deref(), Some("2MB"));
        assert_eq!(
            page_size_name("hugepages-1048576kB").as_deref(),
            Some("1GB")
        );
        assert_eq!(page_size_name("hugepages-64kB").as_deref(), Some("64KB"));
        assert_eq!(page_size_name("other"), None);
    }

    #[test]
    fn a_fake_hierarchy_fills_every_section() {
        let root = tempfile::tempdir().unwrap();
        let dir = |c: &str| {
            let d = root.path().join(c);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let write = |d: &Path, f: &str, v: &str| std::fs::write(d.join(f), v).unwrap();
        let (pids, cpuacct, cpu, memory) = (dir("pids"), dir("cpuacct"), dir("cpu"), dir("memory"));
        write(&pids, "pids.current", "3\n");
        write(&pids, "pids.max", "max\n");
        write(&cpuacct, "cpuacct.usage", "5000\n");
        write(&cpuacct, "cpuacct.usage_percpu", "2000 3000 \n");
        write(&cpuacct, "cpuacct.stat", "user 2\nsystem 1\n");
        write(
            &cpu,
            "cpu.stat",
            "nr_periods 10\nnr_throttled 4\nthrottled_time 99\n",
        );
        write(
            &memory,
            "memory.stat",
            "cache 11\nrss 22\ntotal_rss 33\nhierarchical_memsw_limit 44\n",
        );
        for (f, v) in [
            ("usage_in_bytes", "100"),
            ("max_usage_in_bytes", "200"),
            ("failcnt", "1"),
            ("limit_in_bytes", "300"),
        ] {
            write(&memory, &format!("memory.{f}"), v);
            write(&memory, &format!("memory.kmem.{f}"), v);
        }
        write(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        let cg = Cgroup::V1(
            [
                ("pids", pids),
                ("cpuacct", cpuacct),
                ("cpu", cpu),
                ("memory", memory),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        );
        let m = collect(&cg).unwrap();
        assert_eq!((m.pids.current, m.pids.limit), (3, 0));
        let tick = 1_000_000_000 / clock_ticks_per_second();
        assert_eq!(m.cpu.usage.total, 5000);
        assert_eq!(m.cpu.usage.per_cpu, [2000, 3000]);
        assert_eq!((m.cpu.usage.user, m.cpu.usage.kernel), (2 * tick, tick));
        assert_eq!(m.cpu.throttling.throttled_periods, 4);
        assert_eq!(
            (m.memory.cache, m.memory.rss, m.memory.total_rss),
            (11, 22, 33)
        );
        assert_eq!(m.memory.hierarchical_swap_limit, 44);
        assert_eq!(
            (
                m.memory.usage.usage,
                m.memory.usage.max,
                m.memory.usage.failcnt,
                m.memory.usage.limit
            ),
            (100, 200, 1, 300)
        );
        assert_eq!(m.memory.kernel.usage, 100);
        // No memsw files (swap accounting off): the section stays empty.
        assert!(m.memory.swap.is_none());
        assert_eq!(m.memory_oom_control.oom_kill, 2);
    }
}
