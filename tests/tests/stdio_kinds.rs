//! Stdio kinds beyond FIFOs: `binary://` and `binary-v2://` logging binaries (containerd's fd,
//! environment and readiness conventions, bounded readiness), `file://` URIs, and IoUid/IoGid
//! ownership of the pipes a process gets.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use rshim_tests::*;
use ttrpc_client::Code;

fn request(id: &str, bundle: &Bundle, stdout: &str, stderr: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().to_string_lossy().into(),
        stdout: stdout.into(),
        stderr: stderr.into(),
        ..Default::default()
    }
}

async fn run_to_exit(shim: &Shim, id: &str) -> u32 {
    let start = StartRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.expect("Start");
    let wait = WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    let status = shim.task.wait(wait, &opts()).await.unwrap().exit_status;
    let delete = DeleteRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.task.delete(delete, &opts()).await.expect("Delete");
    status
}

/// A logging binary (a host shell script) that records its arguments and environment, then
/// copies fd 3 and fd 4 to files. `ready` is what it does with fd 5 first.
fn logger(dir: &Path, ready: &str) -> String {
    let script = dir.join("logger.sh");
    let out = dir.display();
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             echo \"[$*]\" > {out}/args\n\
             /usr/bin/tr '\\0' ' ' < /proc/$$/environ > {out}/env\n\
             {ready}\n\
             /bin/cat <&3 > {out}/stdout &\n\
             /bin/cat <&4 > {out}/stderr\n\
             wait\n\
             echo done > {out}/done\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script.display().to_string()
}

fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn binary_v2_logger_gets_both_outputs_and_containerds_conventions() {
    let events = EventServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = logger(dir.path(), "printf x >&5; exec 5>&-");
    let id = unique("binlog");
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2; exit 4"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let uri = format!("binary-v2://{script}?--tag=my%20app&-v");
    shim.task
        .create(request(&id, &bundle, &uri, &uri), &opts())
        .await
        .expect("Create");
    assert_eq!(run_to_exit(&shim, &id).await, 4);
    // Delete closed the pipes: the logger saw EOF and finished.
    assert_eq!(wait_for_file(&dir.path().join("done")), "done\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stdout")).unwrap(),
        "out\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
        "err\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("args")).unwrap(),
        "[--tag my app -v ]\n"
    );
    // Only these two variables, in containerd's order.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("env")).unwrap(),
        format!("CONTAINER_ID={id} CONTAINER_NAMESPACE={NAMESPACE} ")
    );
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn readiness_rules_of_binary_and_binary_v2() {
    let events = EventServer::start().await;
    let id = unique("binready");
    let bundle = Bundle::new(&["echo", "hi"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;

    // binary://: closing fd 5 without a byte counts as ready.
    let dir = tempfile::tempdir().unwrap();
    let script = logger(dir.path(), "exec 5>&-");
    let uri = format!("binary://{script}");
    shim.task
        .create(request(&id, &bundle, &uri, &uri), &opts())
        .await
        .expect("binary:// with EOF readiness");
    assert_eq!(run_to_exit(&shim, &id).await, 0);
    assert_eq!(wait_for_file(&dir.path().join("done")), "done\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stdout")).unwrap(),
        "hi\n"
    );

    // binary-v2://: the same logger has not called ready.
    let id2 = unique("binready2");
    let bundle2 = Bundle::new(&["echo", "hi"]);
    let uri = format!("binary-v2://{script}");
    let err = shim
        .task
        .create(request(&id2, &bundle2, &uri, &uri), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FAILED_PRECONDITION, "{err}");
    assert!(err.message().contains("did not call ready"), "{err}");
    assert!(
        !runc_state_exists(&id2),
        "no runc container for a failed Create"
    );

    // A logger that never signals: Create fails within the readiness bound, not never.
    let id3 = unique("binhang");
    let bundle3 = Bundle::new(&["echo", "hi"]);
    let hang = tempfile::tempdir().unwrap();
    let script = logger(hang.path(), "sleep 60");
    let uri = format!("binary-v2://{script}");
    let err = shim
        .task
        .create(request(&id3, &bundle3, &uri, &uri), &opts())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DEADLINE_EXCEEDED, "{err}");

    // A missing binary: a clear error.
    let id4 = unique("binmissing");
    let bundle4 = Bundle::new(&["echo", "hi"]);
    let uri = "binary:///no/such/logger";
    let err = shim
        .task
        .create(request(&id4, &bundle4, uri, uri), &opts())
        .await
        .unwrap_err();
    assert!(err.message().contains("/no/such/logger"), "{err}");

    // Still serving.
    let c = ConnectRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.connect(c, &opts()).await.expect("still serving");
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn file_uris_append_and_create_their_directory() {
    let events = EventServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/sub/container.log");
    let id = unique("fileuri");
    let bundle = Bundle::new(&["sh", "-c", "echo out; echo err >&2"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let uri = format!("file://{}", log.display());
    shim.task
        .create(request(&id, &bundle, &uri, &uri), &opts())
        .await
        .expect("Create");
    assert_eq!(run_to_exit(&shim, &id).await, 0);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort();
    assert_eq!(lines, ["err", "out"]);
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn io_uid_and_gid_own_the_process_pipes() {
    let events = EventServer::start().await;
    let fifos = Fifos::new();
    let id = unique("iouid");
    let bundle = Bundle::new(&["busybox", "stat", "-L", "-c", "%u:%g", "/proc/self/fd/1"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let options = RuncOptions {
        io_uid: 1234,
        io_gid: 5678,
        ..Default::default()
    };
    let mut req = request(&id, &bundle, &fifos.stdout, "");
    req.options = MessageField::some(Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: options.write_to_bytes().unwrap(),
        ..Default::default()
    });
    let out = Fifos::collect(&fifos.stdout);
    shim.task.create(req, &opts()).await.expect("Create");
    assert_eq!(run_to_exit(&shim, &id).await, 0);
    // runc's fixStdioPermissions gives the pipe's uid to the process's user (root here) and
    // keeps its group: the group shows the shim's chown, 0 would mean none happened.
    assert_eq!(String::from_utf8(out.join()).unwrap(), "0:5678\n");
    shim.shutdown().await;
}

// A slow logging binary still gets the process's last output: Delete lets it read to EOF and
// exit on its own (bounded by RSHIM_LOGGER_DRAIN_SECONDS, 60 s by default) before SIGTERM.
// The process writes 128 KiB and exits at once (the pipes hold it); this logger reads 16 KiB/s,
// so it needs about 8 s, and it dies at once on SIGTERM. Before the fix Delete sent SIGTERM
// after 5 s and the rest of the output was lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_logger_gets_the_output_to_the_last_byte() {
    let events = EventServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow-logger.py");
    let out = dir.path().join("stdout");
    std::fs::write(
        &script,
        format!(
            "#!/usr/bin/python3\nimport os, time\nos.close(5)\n\
             with open({out:?}, 'wb') as f:\n  while True:\n    b = os.read(3, 4096)\n    \
             if not b: break\n    f.write(b); f.flush(); time.sleep(0.25)\n",
            out = out.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let id = unique("slowlog");
    let bundle = Bundle::new(&["head", "-c", "131072", "/dev/zero"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    let uri = format!("binary://{}", script.display());
    shim.task
        .create(request(&id, &bundle, &uri, &uri), &opts())
        .await
        .expect("Create");
    assert_eq!(run_to_exit(&shim, &id).await, 0);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 128 << 10);
    shim.shutdown().await;
}
