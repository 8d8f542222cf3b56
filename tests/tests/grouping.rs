//! The `start` action as containerd drives it: socket permissions, the address file, and pod
//! grouping (containers of one group share the live shim of that group).

use std::os::unix::fs::PermissionsExt;

use containerd_shim_protos::api::*;
use rshim_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn containers_of_one_group_share_one_shim() {
    let events = EventServer::start().await;
    let group = unique("pod");
    let (id1, id2) = (unique("c1"), unique("c2"));
    let (b1, b2) = (
        Bundle::new(&["sleep", "1000"]),
        Bundle::new(&["sleep", "1000"]),
    );
    for b in [&b1, &b2] {
        b.edit_spec(|s| {
            s["annotations"] = serde_json::json!({"io.kubernetes.cri.sandbox-id": group})
        });
    }
    let shim = Shim::start(&id1, b1.path(), &events.address).await;
    // Socket 0600 in a 0700 directory; the address file written in the bundle.
    let path = std::path::PathBuf::from(shim.socket_path());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::read_to_string(b1.path().join("address")).unwrap(),
        shim.address
    );
    // The listening socket (fd 3) is close-on-exec: no runc the shim spawns holds it, so a
    // dead shim never seems to answer on it.
    let fdinfo = std::fs::read_to_string(format!("/proc/{}/fdinfo/3", shim.pid)).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "fd 3 flags {flags:o}");

    // The second container of the pod gets the live shim's address; no second daemon.
    let second = Shim::start_action(&id2, b2.path(), &events.address);
    assert_eq!(second, shim.address);
    assert_eq!(
        std::fs::read_to_string(b2.path().join("address")).unwrap(),
        shim.address
    );

    for (id, b) in [(&id1, &b1), (&id2, &b2)] {
        let req = CreateTaskRequest {
            id: id.clone(),
            bundle: b.path().to_string_lossy().into(),
            ..Default::default()
        };
        shim.task.create(req, &opts()).await.unwrap();
        shim.task
            .start(
                StartRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &opts(),
            )
            .await
            .unwrap();
    }
    let c = shim
        .task
        .connect(
            ConnectRequest {
                id: id2.clone(),
                ..Default::default()
            },
            &opts(),
        )
        .await
        .unwrap();
    assert_eq!(c.shim_pid as i32, shim.pid, "one shim serves the whole pod");

    for id in [&id1, &id2] {
        shim.task
            .kill(
                KillRequest {
                    id: id.clone(),
                    signal: 9,
                    ..Default::default()
                },
                &opts(),
            )
            .await
            .unwrap();
        shim.task
            .wait(
                WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &opts(),
            )
            .await
            .unwrap();
        shim.task
            .delete(
                DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                },
                &opts(),
            )
            .await
            .unwrap();
        if id == &id1 {
            // A container is left: Shutdown must not stop the pod's shim.
            shim.task
                .shutdown(ShutdownRequest::default(), &opts())
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            assert!(shim.alive());
        }
    }
    shim.shutdown().await;
    assert!(
        !path.exists(),
        "socket removed when the last container is gone"
    );
}

#[test]
fn a_stale_socket_is_replaced() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let events = EventServer::start().await;
        let id = unique("stale");
        let b = Bundle::new(&["true"]);
        let shim = Shim::start(&id, b.path(), &events.address).await;
        let address = shim.address.clone();
        // The shim dies without cleaning up: its socket file stays.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(shim.pid),
            nix::sys::signal::SIGKILL,
        )
        .unwrap();
        shim.wait_gone(std::time::Duration::from_secs(5)).await;
        assert!(std::path::Path::new(&shim.socket_path()).exists());
        std::mem::forget(shim);
        let again = Shim::start(&id, b.path(), &events.address).await;
        assert_eq!(again.address, address);
        assert!(again.alive());
        again.shutdown().await;
    });
}
