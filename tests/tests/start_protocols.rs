//! The `start` action driven the way each containerd generation drives it (only 1.6 runs on
//! this machine): 1.6/1.7 and 2.0-2.2 write the options `Any` on stdin and read a plain
//! address (version 2); a caller announcing MAX_SHIM_VERSION=3 reads JSON version 3; 2.3+
//! writes a binary `BootstrapParams` and reads a binary `BootstrapResult`, then talks
//! `containerd.task.v3.Task`.

use std::path::Path;

use containerd_shim_protos::api::*;
use containerd_shim_protos::bootstrap_api::{
    BootstrapParams, BootstrapResult, Extension, LogLevel,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use rshim_tests::*;
use ttrpc_client::task::TaskClient;

fn runc_options(shim_cgroup: &str) -> Any {
    let options = RuncOptions {
        shim_cgroup: shim_cgroup.into(),
        ..Default::default()
    };
    Any {
        type_url: "containerd.runc.v1.Options".into(),
        value: options.write_to_bytes().unwrap(),
        ..Default::default()
    }
}

/// Runs `true` in the container through whichever Task service the shim was reached by, and
/// shuts the shim down; returns the event topics seen.
async fn run_true(shim: &Shim, id: &str, bundle: &Bundle, events: &EventServer) -> Vec<String> {
    shim.task
        .create(
            CreateTaskRequest {
                id: id.into(),
                bundle: bundle.path().to_string_lossy().into(),
                ..Default::default()
            },
            &opts(),
        )
        .await
        .expect("Create");
    let start = StartRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.task.start(start, &opts()).await.expect("Start");
    let wait = WaitRequest {
        id: id.into(),
        ..Default::default()
    };
    assert_eq!(shim.task.wait(wait, &opts()).await.unwrap().exit_status, 0);
    let delete = DeleteRequest {
        id: id.into(),
        ..Default::default()
    };
    shim.task.delete(delete, &opts()).await.expect("Delete");
    let topics = events
        .log
        .wait_for("/tasks/delete", |t| t.iter().any(|t| t == "/tasks/delete"))
        .await;
    shim.shutdown().await;
    topics
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_1x_to_2_2_read_the_plain_address() {
    let events = EventServer::start().await;
    let id = unique("legacy");
    let bundle = Bundle::new(&["true"]);
    let out = Shim::run_start(
        &id,
        bundle.path(),
        &[
            ("TTRPC_ADDRESS", &events.address),
            ("MAX_SHIM_VERSION", "2"),
        ],
        &runc_options("").write_to_bytes().unwrap(),
    );
    let address = String::from_utf8(out).unwrap();
    assert!(
        address.starts_with("unix:///run/containerd/s/") && !address.contains('{'),
        "{address:?}"
    );
    let shim = Shim::attach(&address, &id, TaskClient::V2).await;
    let topics = run_true(&shim, &id, &bundle, &events).await;
    assert!(topics.contains(&"/tasks/exit".to_string()), "{topics:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_announcing_version_3_reads_json() {
    let events = EventServer::start().await;
    let id = unique("json");
    let bundle = Bundle::new(&["true"]);
    let out = Shim::run_start(
        &id,
        bundle.path(),
        &[
            ("TTRPC_ADDRESS", &events.address),
            ("MAX_SHIM_VERSION", "3"),
        ],
        b"",
    );
    let json: serde_json::Value = serde_json::from_slice(&out).expect("JSON on stdout");
    assert_eq!(json["version"], 3);
    assert_eq!(json["protocol"], "ttrpc");
    let address = json["address"].as_str().unwrap();
    assert!(address.starts_with("unix:///run/containerd/s/"));
    let shim = Shim::attach(address, &id, TaskClient::V3).await;
    let topics = run_true(&shim, &id, &bundle, &events).await;
    assert!(topics.contains(&"/tasks/exit".to_string()), "{topics:?}");
}

/// A cgroup (memory hierarchy on v1) that the test removes at the end.
struct TestCgroup(std::path::PathBuf, String);

impl TestCgroup {
    fn new(name: &str) -> TestCgroup {
        let root = Path::new("/sys/fs/cgroup");
        let base = if root.join("cgroup.controllers").exists() {
            root.to_path_buf()
        } else {
            root.join("memory")
        };
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        TestCgroup(dir, format!("/{name}"))
    }

    fn holds(&self, pid: i32) -> bool {
        std::fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == pid.to_string())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_2_3_bootstrap_protocol() {
    let events = EventServer::start().await;
    let id = unique("boot");
    let bundle = Bundle::new(&["true"]);
    let socket_dir = tempfile::Builder::new().prefix("rsd").tempdir().unwrap();
    let cgroup = TestCgroup::new(&unique("rshim-shimcg"));
    let params = BootstrapParams {
        instance_id: id.clone(),
        namespace: NAMESPACE.into(),
        log_level: LogLevel::LOG_LEVEL_DEBUG.into(),
        containerd_version: "2.3.0".into(),
        // No TTRPC_ADDRESS in the environment: the events address comes from here.
        containerd_ttrpc_address: events.address.clone(),
        socket_dir: Some(socket_dir.path().to_string_lossy().into_owned()),
        extensions: vec![Extension {
            value: MessageField::some(runc_options(&cgroup.1)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let out = Shim::run_start(&id, bundle.path(), &[], &params.write_to_bytes().unwrap());
    let result = BootstrapResult::parse_from_bytes(&out).expect("binary BootstrapResult");
    assert_eq!(result.version, 3);
    assert_eq!(result.protocol, "ttrpc");
    let expected_prefix = format!("unix://{}/", socket_dir.path().display());
    assert!(
        result.address.starts_with(&expected_prefix),
        "{} not under {expected_prefix}",
        result.address
    );
    assert_eq!(
        std::fs::read_link(bundle.path().join("s")).unwrap(),
        socket_dir.path(),
        "the socket directory is linked from the bundle"
    );

    let shim = Shim::attach(&result.address, &id, TaskClient::V3).await;
    assert!(
        cgroup.holds(shim.pid),
        "ShimCgroup from the options extension"
    );
    let socket = shim.socket_path();
    let topics = run_true(&shim, &id, &bundle, &events).await;
    assert!(
        topics.contains(&"/tasks/start".to_string()) && topics.contains(&"/tasks/exit".to_string()),
        "events published to the bootstrap's ttrpc address: {topics:?}"
    );
    assert!(!Path::new(&socket).exists(), "socket removed at shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn bootstrap_params_of_another_instance_are_not_taken_for_the_protocol() {
    let events = EventServer::start().await;
    let id = unique("other");
    let bundle = Bundle::new(&["true"]);
    let params = BootstrapParams {
        instance_id: "someone-else".into(),
        namespace: NAMESPACE.into(),
        ..Default::default()
    };
    let out = Shim::run_start(
        &id,
        bundle.path(),
        &[("TTRPC_ADDRESS", &events.address)],
        &params.write_to_bytes().unwrap(),
    );
    let address = String::from_utf8(out).expect("a plain address, not a BootstrapResult");
    assert!(
        address.starts_with("unix:///run/containerd/s/"),
        "{address:?}"
    );
    let shim = Shim::attach(&address, &id, TaskClient::V2).await;
    shim.shutdown().await;
}
