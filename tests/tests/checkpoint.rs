//! Checkpoint and restore through the Task API. CRIU does not run on this kernel, so the round
//! trip cannot complete here; what is asserted is what containerd relies on around it: state
//! rules, the error that names CRIU's log copied into the bundle, the container untouched by a
//! failed dump, and a Create from a checkpoint that restores at Start and fails there cleanly.

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::CheckpointOptions;
use containerd_shim_protos::types::task::Status;
use rshim_tests::*;
use ttrpc_client::Code;

fn create(id: &str, bundle: &Bundle) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().to_string_lossy().into(),
        ..Default::default()
    }
}

fn checkpoint(id: &str, path: &str, options: Option<Any>) -> CheckpointTaskRequest {
    CheckpointTaskRequest {
        id: id.into(),
        path: path.into(),
        options: MessageField::from_option(options),
        ..Default::default()
    }
}

async fn status(shim: &Shim, id: &str) -> Status {
    let req = StateRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.task.state(req, &opts()).await.unwrap().status.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn checkpoint_rules_and_a_failed_dump() {
    let events = EventServer::start().await;
    let id = unique("ckpt");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create(&id, &bundle), &opts())
        .await
        .unwrap();
    let images = tempfile::tempdir().unwrap();
    let path = images.path().to_string_lossy().into_owned();

    let e = shim
        .task
        .checkpoint(checkpoint(&id, &path, None), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FAILED_PRECONDITION, "{e}");
    assert!(e.message().contains("created state"), "{e}");

    let start = StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.unwrap();
    let wrong = Any {
        type_url: "containerd.runc.v1.Options".into(),
        ..Default::default()
    };
    let e = shim
        .task
        .checkpoint(checkpoint(&id, &path, Some(wrong)), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");

    let options = Any {
        type_url: "containerd.runc.v1.CheckpointOptions".into(),
        value: CheckpointOptions {
            file_locks: true,
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap(),
        ..Default::default()
    };
    match shim
        .task
        .checkpoint(checkpoint(&id, &path, Some(options)), &opts())
        .await
    {
        // Where CRIU works, an image and a container still running (leave-running).
        Ok(_) => assert!(std::fs::read_dir(images.path()).unwrap().count() > 0),
        Err(e) => {
            eprintln!("checkpoint failed as expected here: {e}");
            let log = bundle.path().join("criu-dump.log");
            assert!(
                e.message().contains(&format!("path= {}", log.display())),
                "the error names CRIU's log: {e}"
            );
            assert!(
                e.message()
                    .starts_with("runc did not terminate successfully"),
                "the Go shim's wording: {e}"
            );
        }
    }
    assert!(
        !bundle.path().join("criu-work").exists(),
        "the temporary work dir is removed"
    );
    assert_eq!(
        status(&shim, &id).await,
        Status::RUNNING,
        "a failed dump leaves it running"
    );

    let kill = KillRequest {
        id: id.clone(),
        signal: 9,
        ..Default::default()
    };
    shim.task.kill(kill, &opts()).await.unwrap();
    let wait = WaitRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.wait(wait, &opts()).await.unwrap();
    let e = shim
        .task
        .checkpoint(checkpoint(&id, &path, None), &opts())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FAILED_PRECONDITION, "{e}");
    assert!(e.message().contains("stopped"), "{e}");
    let delete = DeleteRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task.delete(delete, &opts()).await.unwrap();
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn create_from_a_checkpoint_restores_at_start() {
    let events = EventServer::start().await;
    let id = unique("restore");
    let bundle = Bundle::new(&["sleep", "1000"]);
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    // An image directory without images: CRIU (where it runs) has nothing to restore.
    let images = tempfile::tempdir().unwrap();
    let mut req = create(&id, &bundle);
    req.checkpoint = images.path().to_string_lossy().into_owned();
    let created = shim
        .task
        .create(req, &opts())
        .await
        .expect("Create from a checkpoint");
    assert_eq!(created.pid, 0, "nothing runs before Start");
    assert_eq!(status(&shim, &id).await, Status::CREATED);
    assert!(
        !runc_state_exists(&id),
        "no runc container until the restore"
    );

    // No process exists until the restore: an exec is refused in the Go shim's words.
    let spec = serde_json::json!({"args": ["true"], "cwd": "/", "env": ["PATH=/bin"], "user": {"uid": 0, "gid": 0}});
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: "e".into(),
        spec: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: serde_json::to_vec(&spec).unwrap(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let e = shim.task.exec(exec, &opts()).await.unwrap_err();
    assert_eq!(e.code(), Code::FAILED_PRECONDITION, "{e}");
    assert_eq!(e.message(), "cannot exec in a created state");

    let start = StartRequest {
        id: id.clone(),
        ..Default::default()
    };
    let e = shim.task.start(start, &opts()).await.unwrap_err();
    assert!(e.message().starts_with("OCI runtime restore failed"), "{e}");
    let delete = DeleteRequest {
        id: id.clone(),
        ..Default::default()
    };
    shim.task
        .delete(delete, &opts())
        .await
        .expect("Delete after a failed restore");
    assert!(!runc_state_exists(&id));
    let topics = events
        .log
        .wait_for("/tasks/delete", |t| t.iter().any(|t| t == "/tasks/delete"))
        .await;
    assert!(!topics.contains(&"/tasks/start".to_string()), "{topics:?}");

    // parent_checkpoint alone makes no sense.
    let id2 = unique("restore2");
    let mut req = create(&id2, &bundle);
    req.parent_checkpoint = "/somewhere".into();
    let e = shim.task.create(req, &opts()).await.unwrap_err();
    assert_eq!(e.code(), Code::INVALID_ARGUMENT, "{e}");
    shim.shutdown().await;
}
