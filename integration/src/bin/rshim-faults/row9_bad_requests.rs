//! Row 9: bad requests on the shim's socket, each answered with the right status code and a
//! message a person can act on, and the shim serving afterwards.

use std::time::Duration;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use rshim_integration::containerd::{PrivateContainerd, NAMESPACE};
use rshim_integration::Runtime;
use ttrpc_client::{CallOptions, Code};

use crate::helpers::{connect, remove, run_sleeper, shim_client_address, Cell};
use crate::row::{both, Env, FaultRow, Outcome};

pub struct BadRequests;

impl FaultRow for BadRequests {
    fn number(&self) -> u8 {
        9
    }

    fn title(&self) -> &'static str {
        "bad requests on the shim socket"
    }

    fn measure(&self, env: &mut Env) -> Outcome {
        both(|rt| bad_requests(env.containerd(), rt))
    }
}

/// One bad request: what it is, the status rshim must answer, and what the message must name.
struct Case {
    label: &'static str,
    expect: Code,
    names: &'static str,
    got: Result<(), ttrpc_client::Error>,
}

fn process_spec(args: &[&str]) -> Any {
    let spec = serde_json::json!({"args": args, "cwd": "/", "env": ["PATH=/bin"],
                                  "user": {"uid": 0, "gid": 0}});
    Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&spec).unwrap_or_default(),
        ..Default::default()
    }
}

fn bad_requests(c: &PrivateContainerd, rt: Runtime) -> anyhow::Result<Cell> {
    let id = format!("bad-{}", rt.name());
    run_sleeper(c, rt, &id, &[])?;
    let address = shim_client_address(c, &id);
    let bundle = c.bundle(&id).to_string_lossy().into_owned();
    let no_config = tempfile::tempdir()?;
    let bad_config = tempfile::tempdir()?;
    std::fs::write(bad_config.path().join("config.json"), b"{not json")?;
    let dir = |d: &tempfile::TempDir| d.path().to_string_lossy().into_owned();
    let (no_config_path, bad_config_path) = (dir(&no_config), dir(&bad_config));

    let cases = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let task = connect(&address).await?;
            let o = CallOptions::with_timeout(Duration::from_secs(30)).namespace(NAMESPACE);
            let create = |id: &str, bundle: &str| CreateTaskRequest {
                id: id.into(),
                bundle: bundle.into(),
                ..Default::default()
            };
            let exec = |exec_id: &str, args: &[&str]| ExecProcessRequest {
                id: id.clone(),
                exec_id: exec_id.into(),
                spec: Some(process_spec(args)).into(),
                ..Default::default()
            };
            let mut cases = Vec::new();
            let mut case = |label, expect, names, got: Result<(), ttrpc_client::Error>| {
                cases.push(Case {
                    label,
                    expect,
                    names,
                    got,
                })
            };
            let r = task
                .state(
                    StateRequest {
                        id: "nope".into(),
                        ..Default::default()
                    },
                    &o,
                )
                .await;
            case(
                "state of an unknown id",
                Code::NOT_FOUND,
                "nope",
                r.map(drop),
            );
            let r = task.create(create(&id, &bundle), &o).await;
            case(
                "create of a duplicate id",
                Code::ALREADY_EXISTS,
                "",
                r.map(drop),
            );
            let r = task.create(create("b-empty", ""), &o).await;
            case(
                "create without a bundle",
                Code::INVALID_ARGUMENT,
                "bundle",
                r.map(drop),
            );
            let r = task.create(create("b-noconf", &no_config_path), &o).await;
            case(
                "bundle without config.json",
                Code::INVALID_ARGUMENT,
                "config.json",
                r.map(drop),
            );
            let r = task.create(create("b-badconf", &bad_config_path), &o).await;
            case(
                "invalid config.json",
                Code::INVALID_ARGUMENT,
                "config.json",
                r.map(drop),
            );
            let kill = KillRequest {
                id: id.clone(),
                signal: 999,
                ..Default::default()
            };
            let r = task.kill(kill, &o).await;
            case(
                "kill with signal 999",
                Code::INVALID_ARGUMENT,
                "999",
                r.map(drop),
            );
            let r = task.exec(exec("x-missing", &["/no/such/binary"]), &o).await;
            let r = match r {
                Ok(_) => {
                    let start = StartRequest {
                        id: id.clone(),
                        exec_id: "x-missing".into(),
                        ..Default::default()
                    };
                    task.start(start, &o).await.map(drop)
                }
                Err(e) => Err(e),
            };
            case(
                "exec of a missing binary",
                Code::UNKNOWN,
                "/no/such/binary",
                r,
            );
            let _ = task.exec(exec("x-dup", &["true"]), &o).await;
            let r = task.exec(exec("x-dup", &["true"]), &o).await;
            case(
                "exec with a duplicate exec id",
                Code::ALREADY_EXISTS,
                "x-dup",
                r.map(drop),
            );
            let r = task
                .start(
                    StartRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                    &o,
                )
                .await;
            case(
                "start of a running task",
                Code::FAILED_PRECONDITION,
                "running",
                r.map(drop),
            );
            let r = task
                .delete(
                    DeleteRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                    &o,
                )
                .await;
            case(
                "delete of a running task",
                Code::FAILED_PRECONDITION,
                "running",
                r.map(drop),
            );
            let wait = WaitRequest {
                id: id.clone(),
                exec_id: "nope".into(),
                ..Default::default()
            };
            let r = task.wait(wait, &o).await;
            case(
                "wait on an unknown exec",
                Code::NOT_FOUND,
                "nope",
                r.map(drop),
            );
            let serving = task
                .state(
                    StateRequest {
                        id: id.clone(),
                        ..Default::default()
                    },
                    &o,
                )
                .await
                .map(|s| s.status.value() == 2)
                .unwrap_or(false);
            // Whatever a shim accepted by mistake (the Go shim creates "b-empty" in its own
            // directory) is removed again.
            for stray in ["b-empty", "b-noconf", "b-badconf"] {
                let kill = KillRequest {
                    id: stray.into(),
                    signal: 9,
                    all: true,
                    ..Default::default()
                };
                let _ = task.kill(kill, &o).await;
                let wait = WaitRequest {
                    id: stray.into(),
                    ..Default::default()
                };
                let _ = tokio::time::timeout(Duration::from_secs(5), task.wait(wait, &o)).await;
                let _ = task
                    .delete(
                        DeleteRequest {
                            id: stray.into(),
                            ..Default::default()
                        },
                        &o,
                    )
                    .await;
            }
            anyhow::Ok((cases, serving))
        });
    remove(c, &id);
    let (cases, serving) = cases?;
    let mut pass = serving;
    let mut parts = Vec::new();
    for case in &cases {
        let (code, message) = match &case.got {
            Ok(()) => (Code::OK, String::new()),
            Err(e) => (e.code(), e.message().to_string()),
        };
        let right = code == case.expect && message.contains(case.names);
        pass &= right;
        let short: String = message.chars().take(50).collect();
        parts.push(format!(
            "{}: {code:?}{} \"{}\"",
            case.label,
            if right {
                ""
            } else {
                " (expected another answer)"
            },
            short.replace('|', "/")
        ));
    }
    parts.push(format!("serving afterwards: {serving}"));
    Ok((parts.join("; "), pass))
}
