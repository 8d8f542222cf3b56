//! Stats and OOM through the shim's Task API: metrics read from the container's own cgroup,
//! and an OOM kill reported as `/tasks/oom` before the `/tasks/exit` it caused.

use containerd_shim_protos::api::*;
use containerd_shim_protos::cgroups::metrics::Metrics as MetricsV1;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as MetricsV2;
use containerd_shim_protos::events::task::TaskOOM;
use containerd_shim_protos::protobuf::Message;
use rshim_tests::*;
use ttrpc_client::Code;

fn create_req(id: &str, bundle: &Bundle) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.path().to_string_lossy().into(),
        ..Default::default()
    }
}

fn by_id<T: ToOwnedId>(id: &str) -> T {
    T::with_id(id)
}

trait ToOwnedId {
    fn with_id(id: &str) -> Self;
}

macro_rules! with_id {
    ($($t:ty),*) => {$(impl ToOwnedId for $t {
        fn with_id(id: &str) -> Self { Self { id: id.into(), ..Default::default() } }
    })*};
}
with_id!(StartRequest, StatsRequest, WaitRequest, DeleteRequest);

#[tokio::test(flavor = "multi_thread")]
async fn stats_report_the_containers_cgroup() {
    let events = EventServer::start().await;
    let id = unique("stats");
    // Two processes and a 64 MiB limit, so the figures have something to show.
    let bundle = Bundle::new(&["sh", "-c", "sleep 1000 & exec sleep 1000"]);
    bundle.edit_spec(|s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
    });
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create_req(&id, &bundle), &opts())
        .await
        .unwrap();
    shim.task.start(by_id(&id), &opts()).await.unwrap();

    // The second process may take a moment to be forked.
    let mut pids = 0;
    let mut metrics = None;
    for _ in 0..100 {
        let stats = shim.task.stats(by_id(&id), &opts()).await.expect("Stats");
        let any = stats.stats.into_option().expect("stats present");
        if any.type_url == "io.containerd.cgroups.v2.Metrics" {
            let m = MetricsV2::parse_from_bytes(&any.value).unwrap();
            pids = m.pids.current;
            assert!(m.memory.usage > 0);
            assert_eq!(m.memory.usage_limit, 64 << 20);
        } else {
            assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
            let m = MetricsV1::parse_from_bytes(&any.value).unwrap();
            pids = m.pids.current;
            metrics = Some(m);
        }
        if pids == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(pids, 2, "the container's two processes");
    if let Some(m) = metrics {
        assert!(m.memory.usage.usage > 0, "memory usage");
        assert_eq!(m.memory.usage.limit, 64 << 20, "the limit from the spec");
        assert!(m.memory.total_rss + m.memory.total_cache > 0);
        assert!(m.cpu.usage.total > 0, "cpu time");
        assert!(!m.cpu.usage.per_cpu.is_empty());
    }

    // Unknown container: NotFound.
    let err = shim.task.stats(by_id("nope"), &opts()).await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);

    shim.task
        .kill(
            KillRequest {
                id: id.clone(),
                signal: 9,
                all: true,
                ..Default::default()
            },
            &opts(),
        )
        .await
        .unwrap();
    shim.task.wait(by_id(&id), &opts()).await.unwrap();
    shim.task.delete(by_id(&id), &opts()).await.unwrap();
    // After Delete the container is gone: NotFound, and no hang.
    let err = shim.task.stats(by_id(&id), &opts()).await.unwrap_err();
    assert_eq!(err.code(), Code::NOT_FOUND);
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_kill_is_published_before_the_exit() {
    let events = EventServer::start().await;
    let id = unique("oom");
    // dd allocates and fills a 256 MiB buffer in a 32 MiB cgroup.
    let bundle = Bundle::new(&["dd", "if=/dev/zero", "of=/dev/null", "bs=256M", "count=1"]);
    bundle.edit_spec(|s| {
        s["linux"]["resources"]["memory"] =
            serde_json::json!({"limit": 32 << 20, "swap": 32 << 20});
    });
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create_req(&id, &bundle), &opts())
        .await
        .unwrap();
    shim.task.start(by_id(&id), &opts()).await.unwrap();
    let status = shim
        .task
        .wait(by_id(&id), &opts())
        .await
        .unwrap()
        .exit_status;
    assert_eq!(status, 137, "killed by the OOM killer");

    let topics = events
        .log
        .wait_for("the exit event", |t| t.iter().any(|t| t == "/tasks/exit"))
        .await;
    let oom_at = topics.iter().position(|t| t == "/tasks/oom");
    let exit_at = topics.iter().position(|t| t == "/tasks/exit");
    assert!(oom_at.is_some(), "no /tasks/oom in {topics:?}");
    assert!(oom_at < exit_at, "/tasks/oom must come first: {topics:?}");
    assert_eq!(count_by_topic(&topics)["/tasks/oom"], 1, "{topics:?}");
    let oom = TaskOOM::parse_from_bytes(&events.log.payloads("/tasks/oom")[0]).unwrap();
    assert_eq!(oom.container_id, id);

    shim.task.delete(by_id(&id), &opts()).await.unwrap();
    shim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_normal_exit_reports_no_oom() {
    let events = EventServer::start().await;
    let id = unique("nooom");
    let bundle = Bundle::new(&["sh", "-c", "exit 3"]);
    bundle.edit_spec(|s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": 32 << 20});
    });
    let shim = Shim::start(&id, bundle.path(), &events.address).await;
    shim.task
        .create(create_req(&id, &bundle), &opts())
        .await
        .unwrap();
    shim.task.start(by_id(&id), &opts()).await.unwrap();
    assert_eq!(
        shim.task
            .wait(by_id(&id), &opts())
            .await
            .unwrap()
            .exit_status,
        3
    );
    let topics = events
        .log
        .wait_for("the exit event", |t| t.iter().any(|t| t == "/tasks/exit"))
        .await;
    assert!(!topics.iter().any(|t| t == "/tasks/oom"), "{topics:?}");
    shim.task.delete(by_id(&id), &opts()).await.unwrap();
    shim.shutdown().await;
}
