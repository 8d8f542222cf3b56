//! The wrapper against the real runc on busybox bundles, including the seed-002 flood (a runc
//! that writes 1 MiB to the process's stderr before doing its work) and a runc that hangs.
//!
//! The reaper is process-wide and its SIGCHLD task lives on the runtime that started it, so
//! every test runs on one shared runtime, and this test process is a child subreaper (orphaned
//! grandchildren come back to it and are reaped).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use runc_wrapper::io::RuncStdio;
use runc_wrapper::monitor::{ExitMonitor, Reaper};
use runc_wrapper::{CreateOpts, Error, ExecOpts, Runc, RuncConfig};

const FLOOD: usize = 1 << 20;

struct Env {
    rt: tokio::runtime::Runtime,
    spec: serde_json::Value,
    monitor: Arc<dyn ExitMonitor>,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        // Before the reaper exists: Command::output() waits on its own child.
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("runc")
            .arg("spec")
            .current_dir(dir.path())
            .output()
            .expect("runc");
        assert!(out.status.success());
        let spec = serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap())
            .unwrap();
        nix::sys::prctl::set_child_subreaper(true).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let monitor: Arc<dyn ExitMonitor> = rt.block_on(async { Reaper::start() });
        Env { rt, spec, monitor }
    })
}

/// A busybox bundle running `args`, removed (with its runc state) on drop.
struct Bundle {
    dir: tempfile::TempDir,
    root: PathBuf,
    id: String,
}

impl Bundle {
    fn new(args: &[&str]) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for a in ["sh", "echo", "sleep", "cat", "true"] {
            symlink("busybox", rootfs.join("bin").join(a)).unwrap();
        }
        let mut spec = env().spec.clone();
        spec["process"]["args"] = serde_json::json!(args);
        spec["process"]["terminal"] = serde_json::json!(false);
        spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
        spec["root"]["readonly"] = serde_json::json!(false);
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_vec(&spec).unwrap(),
        )
        .unwrap();
        let root = dir.path().join("runc-root");
        let id = format!(
            "rw-{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        Bundle { dir, root, id }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn runc(&self, binary: &Path) -> Runc {
        Runc::new(
            RuncConfig {
                binary: binary.to_path_buf(),
                root: Some(self.root.clone()),
                log: Some(self.dir.path().join("log.json")),
                ..Default::default()
            },
            env().monitor.clone(),
        )
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let runc = self.runc(Path::new("runc"));
        let id = self.id.clone();
        let _ = env()
            .rt
            .block_on(async move { runc.delete(&id, true, Duration::from_secs(10)).await });
    }
}

/// A wrapper script standing in for runc: for `subcommand` it first runs `before`, then execs
/// the real runc (which gets the process's stdio as its own).
fn wrapper(dir: &Path, subcommand: &str, before: &str) -> PathBuf {
    let path = dir.join(format!("runc-{subcommand}-wrapper"));
    let script = format!(
        "#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = {subcommand} ]; then {before}; break; fi; done\nexec /usr/sbin/runc \"$@\"\n"
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The flood's bytes: "abcdefghi\n" repeated, 1 MiB exactly.
fn flood_bytes() -> Vec<u8> {
    b"abcdefghi\n".iter().copied().cycle().take(FLOOD).collect()
}

const FLOOD_CMD: &str = "yes abcdefghi | head -c 1048576 >&2";

/// The process's stdout and stderr as pipes whose readers run before runc is spawned (as the
/// shim's stdio engine has them), each read to EOF into its file (or thrown away). The handle
/// resolves once both reached EOF.
fn drained_pipes(
    stdout: Option<&Path>,
    stderr: Option<&Path>,
) -> (RuncStdio, tokio::task::JoinHandle<()>) {
    use tokio::io::AsyncReadExt;
    let mut stdio = RuncStdio::default();
    let mut readers = Vec::new();
    for (slot, path) in [(&mut stdio.stdout, stdout), (&mut stdio.stderr, stderr)] {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        *slot = Some(w);
        let path = path.map(Path::to_path_buf);
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r).unwrap();
        readers.push(tokio::spawn(async move {
            let mut all = Vec::new();
            rx.read_to_end(&mut all).await.unwrap();
            if let Some(path) = path {
                std::fs::write(path, all).unwrap();
            }
        }));
    }
    let done = tokio::spawn(async move {
        for r in readers {
            r.await.unwrap();
        }
    });
    (stdio, done)
}

#[test]
fn exec_survives_a_stderr_flood_and_delivers_it_byte_exact() {
    let b = Bundle::new(&["sleep", "1000"]);
    let flood = wrapper(b.path(), "exec", FLOOD_CMD);
    let out_path = b.path().join("stderr");
    env().rt.block_on(async {
        let runc = b.runc(Path::new("runc"));
        runc.create(&b.id, b.path(), CreateOpts { pid_file: None, console_socket: None, no_pivot: false, no_new_keyring: false, detach: true, stdio: Default::default() }, Duration::from_secs(30)).await.unwrap();
        runc.start(&b.id, Duration::from_secs(30)).await.unwrap();
        let (stdio, drained) = drained_pipes(None, Some(&out_path));
        let process: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
            "args": ["sh", "-c", "echo done >&2"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
        }))
        .unwrap();
        b.runc(&flood)
            .exec(&b.id, &process, ExecOpts { pid_file: None, console_socket: None, detach: true, stdio }, Duration::from_secs(30))
            .await
            .expect("exec returns within its deadline despite the flood");
        tokio::time::timeout(Duration::from_secs(30), drained).await.expect("drained").unwrap();
    });
    let mut want = flood_bytes();
    want.extend_from_slice(b"done\n");
    let got = std::fs::read(&out_path).unwrap();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stderr not byte-exact");
}

#[test]
fn create_survives_a_stderr_flood_and_delivers_it_byte_exact() {
    let b = Bundle::new(&["sh", "-c", "echo done >&2"]);
    let flood = wrapper(b.path(), "create", FLOOD_CMD);
    let out_path = b.path().join("stderr");
    env().rt.block_on(async {
        let (stdio, drained) = drained_pipes(None, Some(&out_path));
        b.runc(&flood)
            .create(
                &b.id,
                b.path(),
                CreateOpts {
                    pid_file: None,
                    console_socket: None,
                    no_pivot: false,
                    no_new_keyring: false,
                    detach: true,
                    stdio,
                },
                Duration::from_secs(30),
            )
            .await
            .expect("create returns within its deadline despite the flood");
        b.runc(Path::new("runc"))
            .start(&b.id, Duration::from_secs(30))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(30), drained)
            .await
            .expect("drained")
            .unwrap();
    });
    let mut want = flood_bytes();
    want.extend_from_slice(b"done\n");
    assert!(
        std::fs::read(&out_path).unwrap() == want,
        "stderr not byte-exact"
    );
}

#[test]
fn failed_create_reports_runcs_own_error() {
    let b = Bundle::new(&["/bin/does-not-exist"]);
    let err = env().rt.block_on(async {
        b.runc(Path::new("runc"))
            .create(
                &b.id,
                b.path(),
                CreateOpts {
                    pid_file: None,
                    console_socket: None,
                    no_pivot: false,
                    no_new_keyring: false,
                    detach: true,
                    stdio: Default::default(),
                },
                Duration::from_secs(30),
            )
            .await
            .unwrap_err()
    });
    let text = err.to_string();
    assert!(
        text.contains("does-not-exist") && text.contains("no such file"),
        "{text}"
    );
    assert!(!text.contains("exit status"), "{text}");
}

#[test]
fn a_hanging_runc_is_killed_with_its_process_group_and_reaped() {
    let b = Bundle::new(&["true"]);
    let pidfile = b.path().join("wrapper.pid");
    // The hanging runc also leaves a child behind in its process group.
    let hang = wrapper(
        b.path(),
        "ps",
        &format!("echo $$ > {}; sleep 1000 & sleep 1000", pidfile.display()),
    );
    let err = env().rt.block_on(async {
        b.runc(&hang)
            .ps(&b.id, Duration::from_secs(1))
            .await
            .unwrap_err()
    });
    match &err {
        Error::Timeout { command, after } => {
            assert!(command.contains("ps"), "{command}");
            assert_eq!(*after, Duration::from_secs(1));
        }
        other => panic!("expected a timeout, got {other}"),
    }
    let pgid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The whole group is gone, killed and reaped: a zombie keeps its process group and can still
    // be signalled, so the probe fails only once every member (the orphaned `sleep`, which comes
    // back to this subreaper, included) has been reaped. Zombies of *other* processes are not
    // counted: the tests run side by side, and another test's runc can be a zombie for the
    // moment between its exit and the reaper's SIGCHLD (that made CI fail once).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "process group {pgid} still exists (killed but not reaped: {})",
            zombie_state(pgid)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `State:` line of `pid`, for the failure message.
fn zombie_state(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or("gone")
        .to_string()
}

#[test]
fn state_update_version_and_features() {
    let b = Bundle::new(&["sleep", "1000"]);
    env().rt.block_on(async {
        let runc = b.runc(Path::new("runc"));
        runc.create(
            &b.id,
            b.path(),
            CreateOpts::default(),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let st = runc.state(&b.id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            (st.id.as_str(), st.status.as_str()),
            (b.id.as_str(), "created")
        );
        assert!(st.pid > 0);
        runc.start(&b.id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            runc.state(&b.id, Duration::from_secs(10))
                .await
                .unwrap()
                .status,
            "running"
        );
        let resources: oci_spec::runtime::LinuxResources =
            serde_json::from_value(serde_json::json!({"pids": {"limit": 42}})).unwrap();
        runc.update(&b.id, &resources, Duration::from_secs(10))
            .await
            .unwrap();
        let missing = runc
            .state("no-such-container", Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(missing.to_string().contains("does not exist"), "{missing}");
        assert!(runc
            .version(Duration::from_secs(10))
            .await
            .unwrap()
            .starts_with("runc version"));
        let features: serde_json::Value =
            serde_json::from_slice(&runc.features(Duration::from_secs(10)).await.unwrap()).unwrap();
        assert!(features["ociVersionMax"].is_string(), "{features}");
    });
    let cgroup = std::fs::read_to_string(format!("/sys/fs/cgroup/pids/{}/pids.max", b.id))
        .unwrap_or_default();
    assert_eq!(cgroup.trim(), "42", "runc update applied the pids limit");
}

#[test]
fn console_socket_receives_the_pty_master() {
    let b = Bundle::new(&["sh", "-c", "echo tty-ok; sleep 2"]);
    b.edit_terminal();
    let out = env().rt.block_on(async {
        let console = runc_wrapper::console::ConsoleSocket::new().unwrap();
        let runc = b.runc(Path::new("runc"));
        let opts = CreateOpts {
            console_socket: Some(console.path().to_path_buf()),
            ..Default::default()
        };
        let (created, master) = tokio::join!(
            runc.create(&b.id, b.path(), opts, Duration::from_secs(30)),
            console.receive(Duration::from_secs(30))
        );
        created.unwrap();
        let master = master.unwrap();
        runc.start(&b.id, Duration::from_secs(10)).await.unwrap();
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut f = std::fs::File::from(master);
            let mut buf = [0u8; 64];
            let n = f.read(&mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .await
        .unwrap()
    });
    assert!(out.contains("tty-ok"), "read from the pty master: {out:?}");
}

impl Bundle {
    fn edit_terminal(&self) {
        let path = self.dir.path().join("config.json");
        let mut spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        spec["process"]["terminal"] = serde_json::json!(true);
        std::fs::write(&path, serde_json::to_vec(&spec).unwrap()).unwrap();
    }
}

/// The seed-002 flood on stdout, and on both streams at once, during exec.
#[test]
fn exec_survives_a_flood_on_stdout_and_on_both_streams() {
    for (name, before, want_out, want_err) in [
        ("stdout", "yes abcdefghi | head -c 1048576", true, false),
        (
            "both",
            "yes abcdefghi | head -c 1048576; yes abcdefghi | head -c 1048576 >&2",
            true,
            true,
        ),
    ] {
        let b = Bundle::new(&["sleep", "1000"]);
        let flood = wrapper(b.path(), "exec", before);
        let (out_path, err_path) = (b.path().join("out"), b.path().join("err"));
        env().rt.block_on(async {
            let runc = b.runc(Path::new("runc"));
            runc.create(&b.id, b.path(), CreateOpts::default(), Duration::from_secs(30)).await.unwrap();
            runc.start(&b.id, Duration::from_secs(30)).await.unwrap();
            let (stdio, drained) = drained_pipes(Some(&out_path), Some(&err_path));
            let process: oci_spec::runtime::Process = serde_json::from_value(serde_json::json!({
                "args": ["sh", "-c", "echo out-done; echo err-done >&2"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}
            }))
            .unwrap();
            b.runc(&flood)
                .exec(&b.id, &process, ExecOpts { detach: true, stdio, ..Default::default() }, Duration::from_secs(30))
                .await
                .unwrap_or_else(|e| panic!("{name}: exec did not survive the flood: {e}"));
            tokio::time::timeout(Duration::from_secs(30), drained).await.expect("drained").unwrap();
        });
        let expect = |flooded: bool, tail: &str| {
            let mut v = if flooded { flood_bytes() } else { Vec::new() };
            v.extend_from_slice(tail.as_bytes());
            v
        };
        assert!(
            std::fs::read(&out_path).unwrap() == expect(want_out, "out-done\n"),
            "{name}: stdout not byte-exact"
        );
        assert!(
            std::fs::read(&err_path).unwrap() == expect(want_err, "err-done\n"),
            "{name}: stderr not byte-exact"
        );
    }
}

#[test]
fn lifecycle_ps_pause_resume_kill_delete() {
    let b = Bundle::new(&["sleep", "1000"]);
    env().rt.block_on(async {
        let runc = b.runc(Path::new("runc"));
        let t = Duration::from_secs(10);
        let pid_file = b.path().join("init.pid");
        runc.create(
            &b.id,
            b.path(),
            CreateOpts {
                pid_file: Some(pid_file.clone()),
                ..Default::default()
            },
            t,
        )
        .await
        .unwrap();
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        runc.start(&b.id, t).await.unwrap();
        assert_eq!(runc.ps(&b.id, t).await.unwrap(), vec![pid]);
        runc.pause(&b.id, t).await.unwrap();
        assert_eq!(runc.state(&b.id, t).await.unwrap().status, "paused");
        runc.resume(&b.id, t).await.unwrap();
        assert_eq!(runc.state(&b.id, t).await.unwrap().status, "running");
        let mut exits = env().monitor.subscribe();
        runc.kill(&b.id, 9, false, t).await.unwrap();
        let exit = tokio::time::timeout(t, async {
            loop {
                match exits.recv().await {
                    Some(e) if e.pid == pid => return e,
                    Some(_) => continue,
                    None => panic!("monitor closed"),
                }
            }
        })
        .await
        .expect("the killed init is reaped and reported");
        assert_eq!(exit.status, 137);
        runc.delete(&b.id, false, t).await.unwrap();
        let gone = runc.state(&b.id, t).await.unwrap_err();
        assert!(gone.to_string().contains("does not exist"), "{gone}");
    });
}

#[test]
fn a_crashing_runc_is_named_with_its_signal() {
    let b = Bundle::new(&["true"]);
    let crash = wrapper(b.path(), "ps", "kill -SEGV $$");
    let err = env().rt.block_on(async {
        b.runc(&crash)
            .ps(&b.id, Duration::from_secs(10))
            .await
            .unwrap_err()
    });
    match &err {
        Error::Failed {
            status, message, ..
        } => {
            assert_eq!(*status, 128 + libc::SIGSEGV);
            assert!(
                message.ends_with("was killed by signal SIGSEGV"),
                "{message}"
            );
        }
        other => panic!("expected a failure, got {other}"),
    }
}

#[test]
fn a_runc_that_cannot_be_executed_is_an_error_not_a_panic() {
    let b = Bundle::new(&["true"]);
    // Not executable: exec fails after fork, where std waits for the child itself and the
    // process-wide reaper may already have collected it.
    let script = b.path().join("not-executable");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    for _ in 0..50 {
        let err = env().rt.block_on(async {
            b.runc(&script)
                .ps(&b.id, Duration::from_secs(5))
                .await
                .unwrap_err()
        });
        let text = err.to_string();
        // std's own error, or ours when the reaper got the child first: both in Go's words.
        assert!(
            text.contains(&format!(
                "exec: \"{}\": permission denied",
                script.display()
            )),
            "{err}"
        );
    }
}

#[test]
fn a_missing_runc_is_named_in_gos_words() {
    // containerd's TestContainerNoBinaryExists (and users' scripts) match Go's exec.Error text.
    let b = Bundle::new(&["true"]);
    let bare = env().rt.block_on(async {
        b.runc(Path::new("no-runc"))
            .ps(&b.id, Duration::from_secs(5))
            .await
            .unwrap_err()
    });
    assert_eq!(
        bare.to_string(),
        "no-runc ps: exec: \"no-runc\": executable file not found in $PATH"
    );
    let path = b.path().join("no-runc");
    let absolute = env().rt.block_on(async {
        b.runc(&path)
            .ps(&b.id, Duration::from_secs(5))
            .await
            .unwrap_err()
    });
    let p = path.display();
    assert_eq!(
        absolute.to_string(),
        format!("{p} ps: exec: \"{p}\": stat {p}: no such file or directory")
    );
}
