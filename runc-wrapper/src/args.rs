//! runc's command lines, rendered by pure functions (table-tested below): global options first,
//! then the subcommand, its flags, and its operands.

use std::path::PathBuf;

use crate::RuncConfig;

/// Options before the subcommand.
pub fn global(config: &RuncConfig) -> Vec<String> {
    // go-runc's order (root, debug, log, log-format, systemd-cgroup): runc accepts any order,
    // but wrappers that parse runc's global flags positionally (containerd's failpoint runc
    // among them) expect this one.
    let mut a = Vec::new();
    if let Some(root) = &config.root {
        a.extend(["--root".into(), root.display().to_string()]);
    }
    if config.debug {
        a.push("--debug".into());
    }
    if let Some(log) = &config.log {
        a.extend([
            "--log".into(),
            log.display().to_string(),
            "--log-format".into(),
            "json".into(),
        ]);
    }
    if config.systemd_cgroup {
        a.push("--systemd-cgroup".into());
    }
    a
}

fn flag(a: &mut Vec<String>, on: bool, name: &str) {
    if on {
        a.push(name.into());
    }
}

fn path(a: &mut Vec<String>, value: &Option<PathBuf>, name: &str) {
    if let Some(p) = value {
        a.extend([name.into(), p.display().to_string()]);
    }
}

/// `create` or `run` (which takes the same flags, plus `--detach` for run).
pub fn create(
    subcommand: &str,
    id: &str,
    bundle: &std::path::Path,
    o: &crate::CreateOpts,
) -> Vec<String> {
    let mut a = vec![
        subcommand.to_string(),
        "--bundle".into(),
        bundle.display().to_string(),
    ];
    path(&mut a, &o.pid_file, "--pid-file");
    path(&mut a, &o.console_socket, "--console-socket");
    flag(&mut a, o.no_pivot, "--no-pivot");
    flag(&mut a, o.no_new_keyring, "--no-new-keyring");
    flag(&mut a, subcommand == "run" && o.detach, "--detach");
    a.push(id.into());
    a
}

pub fn exec(id: &str, process_file: &std::path::Path, o: &crate::ExecOpts) -> Vec<String> {
    let mut a = vec![
        "exec".to_string(),
        "--process".into(),
        process_file.display().to_string(),
    ];
    flag(&mut a, o.detach, "--detach");
    path(&mut a, &o.pid_file, "--pid-file");
    path(&mut a, &o.console_socket, "--console-socket");
    a.push(id.into());
    a
}

pub fn kill(id: &str, signal: u32, all: bool) -> Vec<String> {
    let mut a = vec!["kill".to_string()];
    flag(&mut a, all, "--all");
    a.extend([id.into(), signal.to_string()]);
    a
}

pub fn delete(id: &str, force: bool) -> Vec<String> {
    let mut a = vec!["delete".to_string()];
    flag(&mut a, force, "--force");
    a.push(id.into());
    a
}

/// Subcommands whose only operand is the container id.
pub fn simple(subcommand: &str, id: &str) -> Vec<String> {
    vec![subcommand.into(), id.into()]
}

pub fn ps(id: &str) -> Vec<String> {
    vec!["ps".into(), "--format".into(), "json".into(), id.into()]
}

pub fn update(id: &str) -> Vec<String> {
    vec!["update".into(), "--resources".into(), "-".into(), id.into()]
}

pub fn stats(id: &str) -> Vec<String> {
    vec!["events".into(), "--stats".into(), id.into()]
}

/// runc checkpoint's flags that containerd's CheckpointOptions map to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CriuOpts {
    pub image_path: Option<PathBuf>,
    pub work_path: Option<PathBuf>,
    pub parent_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub external_unix_sockets: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    pub cgroups_mode: Option<String>,
}

fn criu(a: &mut Vec<String>, o: &CriuOpts) {
    path(a, &o.image_path, "--image-path");
    path(a, &o.work_path, "--work-path");
    path(a, &o.parent_path, "--parent-path");
    flag(a, o.tcp_established, "--tcp-established");
    flag(a, o.external_unix_sockets, "--ext-unix-sk");
    flag(a, o.shell_job, "--shell-job");
    flag(a, o.file_locks, "--file-locks");
    for ns in &o.empty_namespaces {
        a.extend(["--empty-ns".into(), ns.clone()]);
    }
    if let Some(mode) = &o.cgroups_mode {
        a.extend(["--manage-cgroups-mode".into(), mode.clone()]);
    }
}

pub fn checkpoint(id: &str, o: &crate::CheckpointOpts) -> Vec<String> {
    let mut a = vec!["checkpoint".to_string()];
    criu(&mut a, &o.criu);
    flag(&mut a, o.leave_running, "--leave-running");
    a.push(id.into());
    a
}

pub fn restore(id: &str, bundle: &std::path::Path, o: &crate::RestoreOpts) -> Vec<String> {
    let mut a = vec![
        "restore".to_string(),
        "--bundle".into(),
        bundle.display().to_string(),
    ];
    criu(&mut a, &o.criu);
    flag(&mut a, o.detach, "--detach");
    path(&mut a, &o.pid_file, "--pid-file");
    path(&mut a, &o.console_socket, "--console-socket");
    flag(&mut a, o.no_pivot, "--no-pivot");
    flag(&mut a, o.no_subreaper, "--no-subreaper");
    a.push(id.into());
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CheckpointOpts, CreateOpts, ExecOpts, RestoreOpts};
    use std::path::Path;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn global_options() {
        assert_eq!(global(&RuncConfig::default()), Vec::<String>::new());
        let c = RuncConfig {
            binary: "crun".into(),
            root: Some("/run/r/ns".into()),
            systemd_cgroup: true,
            debug: true,
            log: Some("/b/log.json".into()),
        };
        assert_eq!(
            global(&c),
            // go-runc's order: --root first (containerd's failpoint runc parses it so).
            s(&[
                "--root",
                "/run/r/ns",
                "--debug",
                "--log",
                "/b/log.json",
                "--log-format",
                "json",
                "--systemd-cgroup"
            ])
        );
    }

    #[test]
    fn create_and_run() {
        let bare = CreateOpts::default();
        assert_eq!(
            create("create", "c1", Path::new("/b"), &bare),
            s(&["create", "--bundle", "/b", "c1"])
        );
        let full = CreateOpts {
            pid_file: Some("/b/init.pid".into()),
            console_socket: Some("/tmp/pty.sock".into()),
            no_pivot: true,
            no_new_keyring: true,
            detach: true,
            ..Default::default()
        };
        assert_eq!(
            create("create", "c1", Path::new("/b"), &full),
            s(&[
                "create",
                "--bundle",
                "/b",
                "--pid-file",
                "/b/init.pid",
                "--console-socket",
                "/tmp/pty.sock",
                "--no-pivot",
                "--no-new-keyring",
                "c1"
            ])
        );
        assert_eq!(
            create("run", "c1", Path::new("/b"), &full)
                .iter()
                .filter(|a| *a == "--detach")
                .count(),
            1
        );
    }

    #[test]
    fn exec_kill_delete_and_queries() {
        let o = ExecOpts {
            pid_file: Some("/b/e.pid".into()),
            console_socket: None,
            detach: true,
            ..Default::default()
        };
        assert_eq!(
            exec("c1", Path::new("/tmp/p.json"), &o),
            s(&[
                "exec",
                "--process",
                "/tmp/p.json",
                "--detach",
                "--pid-file",
                "/b/e.pid",
                "c1"
            ])
        );
        assert_eq!(kill("c1", 9, true), s(&["kill", "--all", "c1", "9"]));
        assert_eq!(kill("c1", 15, false), s(&["kill", "c1", "15"]));
        assert_eq!(delete("c1", true), s(&["delete", "--force", "c1"]));
        assert_eq!(delete("c1", false), s(&["delete", "c1"]));
        assert_eq!(ps("c1"), s(&["ps", "--format", "json", "c1"]));
        assert_eq!(update("c1"), s(&["update", "--resources", "-", "c1"]));
        assert_eq!(stats("c1"), s(&["events", "--stats", "c1"]));
        for sub in ["start", "state", "pause", "resume"] {
            assert_eq!(simple(sub, "c1"), s(&[sub, "c1"]));
        }
    }

    #[test]
    fn checkpoint_and_restore() {
        let criu = CriuOpts {
            image_path: Some("/img".into()),
            work_path: Some("/work".into()),
            parent_path: Some("../parent".into()),
            tcp_established: true,
            external_unix_sockets: true,
            shell_job: true,
            file_locks: true,
            empty_namespaces: vec!["network".into()],
            cgroups_mode: Some("soft".into()),
        };
        let c = CheckpointOpts {
            criu: criu.clone(),
            leave_running: true,
        };
        assert_eq!(
            checkpoint("c1", &c),
            s(&[
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/work",
                "--parent-path",
                "../parent",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--empty-ns",
                "network",
                "--manage-cgroups-mode",
                "soft",
                "--leave-running",
                "c1"
            ])
        );
        let r = RestoreOpts {
            criu,
            detach: true,
            pid_file: Some("/b/init.pid".into()),
            no_subreaper: true,
            ..Default::default()
        };
        let args = restore("c1", Path::new("/b"), &r);
        assert_eq!(&args[..3], &s(&["restore", "--bundle", "/b"])[..]);
        for f in ["--detach", "--no-subreaper", "--image-path"] {
            assert!(args.contains(&f.to_string()), "{f} in {args:?}");
        }
        assert_eq!(args.last().map(String::as_str), Some("c1"));
    }
}
