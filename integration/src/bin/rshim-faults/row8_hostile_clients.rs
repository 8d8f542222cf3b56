//! Row 8: hostile clients on the shim's socket (garbage, oversized and truncated frames, unknown
//! services and methods, 1,000 dropped connections, a client of another uid).

use std::time::Duration;

use rshim_integration::containerd::PrivateContainerd;
use rshim_integration::procfs::usage;
use rshim_integration::{ctr, Runtime};

use crate::helpers::{
    frame, poll, read_status, remove, run_sleeper, socket_of, still_serving, Cell,
};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct HostileClients;

impl FaultRow for HostileClients {
    fn number(&self) -> u8 {
        8
    }

    fn title(&self) -> &'static str {
        "hostile clients on the shim socket"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| hostile_clients(env.containerd(), rt))
    }
}

/// Hostile clients on the shim's socket: the shim answers or closes the bad connection, never
/// dies, keeps serving a well-formed client, and its fds return to baseline. A client of
/// another uid is refused even when the socket's mode would let it connect.
fn hostile_clients(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    let id = format!("hostile-{}", rt.name());
    run_sleeper(c, rt, &id, &[])?;
    let pid = c.shim_of(&id).ok_or_else(|| anyhow::anyhow!("no shim"))?;
    let path = socket_of(c, &id);
    // The baseline once the shim serves (it answers a well-formed client).
    anyhow::ensure!(still_serving(c, &id)?, "the shim does not serve");
    let before = usage(pid);
    let open = || -> std::io::Result<UnixStream> {
        let s = UnixStream::connect(&path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(s)
    };
    let mut notes = Vec::new();
    // Random bytes, an oversized length, a truncated frame: each connection is cut or errored.
    let mut garbage = vec![0u8; 65536];
    for (i, b) in garbage.iter_mut().enumerate() {
        *b = (i.wrapping_mul(2654435761) >> 13) as u8;
    }
    for (what, bytes) in [
        ("garbage", garbage),
        ("oversized", {
            let mut f = u32::MAX.to_be_bytes().to_vec();
            f.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
            f
        }),
        (
            "truncated",
            frame(1, "containerd.task.v2.Task", "State", vec![0; 100])[..40].to_vec(),
        ),
    ] {
        let mut s = open()?;
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        notes.push(format!(
            "{what}: {}",
            match read_status(&mut s) {
                Ok((_, code)) => format!("status {code}"),
                Err(_) => "closed".into(),
            }
        ));
    }
    // Well-framed nonsense: unknown service, unknown method, malformed protobuf.
    for (what, service, method, payload) in [
        ("unknown service", "no.such.Service", "State", vec![]),
        (
            "unknown method",
            "containerd.task.v2.Task",
            "NoSuchMethod",
            vec![],
        ),
        (
            "malformed protobuf",
            "containerd.task.v2.Task",
            "Create",
            vec![0xff; 16],
        ),
    ] {
        let mut s = open()?;
        s.write_all(&frame(1, service, method, payload))?;
        let code = match read_status(&mut s) {
            Ok((_, code)) => <ttrpc::proto::Code as protobuf::Enum>::from_i32(code)
                .map(|c| format!("{c:?}"))
                .unwrap_or(code.to_string()),
            Err(e) => format!("no answer ({e})"),
        };
        notes.push(format!("{what}: {code}"));
    }
    // 1,000 connections opened and dropped.
    for _ in 0..1000 {
        drop(UnixStream::connect(&path));
    }
    // A client of another uid (nobody). The socket's directory is 0700, so the test reaches the
    // same socket through a hard link in an open directory, with the inode's mode opened up:
    // only the peer-credential check is left to refuse it.
    use std::os::unix::fs::PermissionsExt;
    let probe_dir = tempfile::Builder::new()
        .prefix("rsh-probe")
        .tempdir_in("/tmp")?;
    std::fs::set_permissions(probe_dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let link = probe_dir.path().join("shim.sock");
    std::fs::hard_link(&path, &link)?;
    let mode = std::fs::metadata(&path)?.permissions().mode();
    std::fs::set_permissions(&link, std::fs::Permissions::from_mode(0o666))?;
    let connect_frame = {
        use protobuf::Message;
        let req = containerd_shim_protos::api::ConnectRequest {
            id: id.clone(),
            ..Default::default()
        };
        hex_string(&frame(
            1,
            "containerd.task.v2.Task",
            "Connect",
            req.write_to_bytes().unwrap_or_default(),
        ))
    };
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\ns.connect({:?})\ntry:\n  s.sendall(bytes.fromhex({connect_frame:?}))\n  d=s.recv(10)\nexcept Exception:\n  d=b''\nprint('answered' if d else 'refused')\n",
        link.to_string_lossy()
    );
    let other_uid = ctr::run(
        "setpriv",
        &[
            "--reuid=65534".into(),
            "--regid=65534".into(),
            "--clear-groups".into(),
            "/usr/bin/python3".into(),
            "-c".into(),
            py,
        ],
        None,
        Duration::from_secs(10),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    drop(probe_dir);
    notes.push(format!(
        "uid 65534: {}",
        if other_uid.stdout.trim().is_empty() {
            other_uid
                .stderr
                .trim()
                .lines()
                .last()
                .unwrap_or("no output")
                .to_string()
        } else {
            other_uid.stdout.trim().to_string()
        }
    ));
    // The shim closes the hostile connections as it sees them: poll (bounded) for its fds to
    // come back to the baseline.
    poll(Duration::from_secs(10), || usage(pid).fds <= before.fds + 2);
    let after = usage(pid);
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    let serving = still_serving(c, &id)?;
    remove(c, &id);
    let refused = other_uid.stdout.trim() == "refused";
    let pass = alive && serving && after.fds <= before.fds + 2 && refused;
    Ok((
        format!(
            "{}; alive: {alive}, serving: {serving}, fds {}→{}",
            notes.join(", "),
            before.fds,
            after.fds
        ),
        pass,
    ))
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
