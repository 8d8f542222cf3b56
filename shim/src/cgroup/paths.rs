//! Where a process's cgroup lives, found from `/proc/PID/cgroup` and the mount table, the way
//! containerd's Go shim loads a container's cgroup from its init pid at Create.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cgroup of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: one directory per controller (`memory`, `cpuacct`, `pids`, ...).
    V1(HashMap<String, PathBuf>),
    /// cgroup v2: the one directory in the unified hierarchy.
    V2(PathBuf),
}

impl Cgroup {
    /// The cgroup of `pid`, as seen from this process's mount namespace.
    pub fn of_pid(pid: i32) -> Result<Cgroup> {
        let read = |path: String| {
            std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))
        };
        let membership = read(format!("/proc/{pid}/cgroup"))?;
        let mounts = read("/proc/self/mountinfo".to_string())?;
        Cgroup::resolve(&membership, &mounts).ok_or_else(|| {
            Error::NotFound(format!("no mounted cgroup hierarchy holds process {pid}"))
        })
    }

    /// Pure part of [`Cgroup::of_pid`]: `membership` is `/proc/PID/cgroup`, `mountinfo` is
    /// `/proc/self/mountinfo`. A v1 controller wins over the unified entry (hybrid hosts keep
    /// their controllers on v1).
    pub fn resolve(membership: &str, mountinfo: &str) -> Option<Cgroup> {
        let mounts = cgroup_mounts(mountinfo);
        let mut v1 = HashMap::new();
        let mut unified = None;
        for line in membership.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                unified = mounts.iter().find(|m| m.v2).map(|m| m.join(path));
                continue;
            }
            for controller in controllers.split(',') {
                if let Some(m) = mounts
                    .iter()
                    .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
                {
                    v1.insert(controller.to_string(), m.join(path));
                }
            }
        }
        if !v1.is_empty() {
            Some(Cgroup::V1(v1))
        } else {
            unified.map(Cgroup::V2)
        }
    }

    /// The directory of a v1 controller, or the unified directory.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self {
            Cgroup::V1(dirs) => dirs.get(controller).map(PathBuf::as_path),
            Cgroup::V2(dir) => Some(dir),
        }
    }

    /// Whether the cgroup still exists (runc removes it at delete).
    pub fn exists(&self) -> bool {
        match self {
            Cgroup::V1(dirs) => dirs.values().any(|d| d.exists()),
            Cgroup::V2(dir) => dir.exists(),
        }
    }
}

struct CgroupMount {
    root: String,
    mount_point: PathBuf,
    controllers: Vec<String>,
    v2: bool,
}

impl CgroupMount {
    /// The directory of cgroup `path` under this mount (whose own root may be a sub-cgroup).
    fn join(&self, path: &str) -> PathBuf {
        let relative = if self.root != "/" {
            path.strip_prefix(self.root.as_str()).unwrap_or(path)
        } else {
            path
        };
        self.mount_point.join(relative.trim_start_matches('/'))
    }
}

/// The cgroup and cgroup2 mounts of a mountinfo table.
fn cgroup_mounts(mountinfo: &str) -> Vec<CgroupMount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            // id parent major:minor root mount-point options [optional...] - fstype source super
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let right: Vec<&str> = right.split(' ').collect();
            let (root, mount_point) = (*left.get(3)?, *left.get(4)?);
            let fstype = *right.first()?;
            let v2 = match fstype {
                "cgroup2" => true,
                "cgroup" => false,
                _ => return None,
            };
            let controllers = right
                .get(2)
                .map(|opts| {
                    opts.split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some(CgroupMount {
                root: root.to_string(),
                mount_point: PathBuf::from(mount_point),
                controllers,
                v2,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 /kubepods /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate";

    #[test]
    fn v1_controllers_under_their_mounts() {
        let membership = "\
9:name=systemd:/default/c1
8:pids:/kubepods/default/c1
4:memory:/default/c1
1:cpu,cpuacct:/default/c1
0::/default/c1";
        let Some(Cgroup::V1(dirs)) = Cgroup::resolve(membership, V1_MOUNTS) else {
            panic!("expected v1");
        };
        assert_eq!(
            dirs["memory"],
            Path::new("/sys/fs/cgroup/memory/default/c1")
        );
        assert_eq!(
            dirs["cpu"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/default/c1")
        );
        assert_eq!(
            dirs["cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/default/c1")
        );
        // The pids hierarchy is mounted from /kubepods: that prefix is not repeated.
        assert_eq!(dirs["pids"], Path::new("/sys/fs/cgroup/pids/default/c1"));
        assert!(!dirs.contains_key("name=systemd"));
    }

    #[test]
    fn unified_hierarchy() {
        let mounts = "25 20 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate";
        assert_eq!(
            Cgroup::resolve("0::/system.slice/c1.scope\n", mounts),
            Some(Cgroup::V2(PathBuf::from(
                "/sys/fs/cgroup/system.slice/c1.scope"
            )))
        );
        assert_eq!(Cgroup::resolve("0::/x\n", "no mounts here"), None);
    }

    #[test]
    fn this_process_resolves() {
        let cg = Cgroup::of_pid(std::process::id() as i32).unwrap();
        assert!(cg.exists());
    }
}
