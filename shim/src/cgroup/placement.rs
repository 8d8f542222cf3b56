//! Moving the shim daemon into the cgroup named by the runtime option `ShimCgroup`, as the Go
//! shim does at `start`: on cgroup v2 the one unified hierarchy, on cgroup v1 every hierarchy
//! in which that path exists.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub fn is_unified(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// The `cgroup.procs` files a pid is written to for `cgroup_path`.
pub fn procs_files(root: &Path, cgroup_path: &str) -> Vec<PathBuf> {
    let relative = cgroup_path.trim_start_matches('/');
    if is_unified(root) {
        return vec![root.join(relative).join("cgroup.procs")];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        // Co-mounted controllers appear as symlinks (cpu -> cpu,cpuacct): follow only real dirs.
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path().join(relative).join("cgroup.procs"))
        .filter(|p| p.exists())
        .collect();
    files.sort();
    files
}

pub fn add_process(cgroup_path: &str, pid: i32) -> Result<()> {
    let files = procs_files(Path::new(CGROUP_ROOT), cgroup_path);
    if files.is_empty() {
        return Err(Error::NotFound(format!(
            "shim cgroup {cgroup_path} does not exist"
        )));
    }
    for file in files {
        std::fs::write(&file, pid.to_string())
            .map_err(|e| Error::io(format!("add shim {pid} to {}", file.display()), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_hierarchies_with_the_path() {
        let root = tempfile::tempdir().unwrap();
        for d in ["memory/shim", "pids/shim", "cpu,cpuacct/shim", "freezer"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        for d in ["memory/shim", "pids/shim", "cpu,cpuacct/shim"] {
            std::fs::write(root.path().join(d).join("cgroup.procs"), "").unwrap();
        }
        std::os::unix::fs::symlink("cpu,cpuacct", root.path().join("cpu")).unwrap();
        let files = procs_files(root.path(), "/shim");
        let names: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(root.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "cpu,cpuacct/shim/cgroup.procs",
                "memory/shim/cgroup.procs",
                "pids/shim/cgroup.procs"
            ]
        );
    }

    #[test]
    fn unified_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        assert_eq!(
            procs_files(root.path(), "system.slice/shim"),
            [root.path().join("system.slice/shim/cgroup.procs")]
        );
    }
}
