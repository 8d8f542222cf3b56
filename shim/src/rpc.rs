//! Dispatch of ttrpc requests to the Task service, under both service names containerd uses
//! (`containerd.task.v2.Task` for 1.6/1.7, `containerd.task.v3.Task` for 2.x: the messages are
//! identical). A request that does not decode answers InvalidArgument; an error answers the
//! code `Error::code` chose.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::protobuf::Message;
use ttrpc::proto::{Code, ResponseInit};
use ttrpc::r#async::{MethodHandler, Service, TtrpcContext};

use crate::error::Result;
use crate::service::TaskService;

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

struct Method<Req, Resp, F> {
    svc: Arc<TaskService>,
    f: F,
    _types: PhantomData<fn(Req) -> Resp>,
}

#[async_trait]
impl<Req, Resp, F, Fut> MethodHandler for Method<Req, Resp, F>
where
    Req: Message + Send + 'static,
    Resp: Message + Send + 'static,
    F: Fn(Arc<TaskService>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let request = match Req::parse_from_bytes(&req.payload) {
            Ok(r) => r,
            Err(e) => {
                log::warn!("{}/{}: undecodable request: {e}", req.service, req.method);
                return Ok(ttrpc::Response::init_status(ttrpc::get_status(
                    Code::INVALID_ARGUMENT,
                    format!("{}: cannot decode request: {e}", req.method),
                )));
            }
        };
        match (self.f)(self.svc.clone(), request).await {
            Ok(resp) => {
                let mut out = ttrpc::Response::init_status(ttrpc::get_status(Code::OK, ""));
                out.set_payload(
                    resp.write_to_bytes()
                        .map_err(|e| ttrpc::Error::Others(format!("encode response: {e}")))?,
                );
                Ok(out)
            }
            Err(e) => {
                log::debug!("{}: {e}", req.method);
                Ok(ttrpc::Response::init_status(ttrpc::get_status(
                    e.code(),
                    e.to_string(),
                )))
            }
        }
    }
}

fn method<Req, Resp, F, Fut>(svc: &Arc<TaskService>, f: F) -> Box<dyn MethodHandler + Send + Sync>
where
    Req: Message + Send + 'static,
    Resp: Message + Send + 'static,
    F: Fn(Arc<TaskService>, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    Box::new(Method {
        svc: svc.clone(),
        f,
        _types: PhantomData,
    })
}

fn task_methods(svc: &Arc<TaskService>) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let mut m: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
    m.insert("State".into(), method(svc, TaskService::state));
    m.insert("Create".into(), method(svc, TaskService::create));
    m.insert("Start".into(), method(svc, TaskService::start));
    m.insert("Delete".into(), method(svc, TaskService::delete));
    m.insert("Pids".into(), method(svc, TaskService::pids));
    m.insert("Pause".into(), method(svc, TaskService::pause));
    m.insert("Resume".into(), method(svc, TaskService::resume));
    m.insert("Checkpoint".into(), method(svc, TaskService::checkpoint));
    m.insert("Kill".into(), method(svc, TaskService::kill));
    m.insert("Exec".into(), method(svc, TaskService::exec));
    m.insert("ResizePty".into(), method(svc, TaskService::resize_pty));
    m.insert("CloseIO".into(), method(svc, TaskService::close_io));
    m.insert("Update".into(), method(svc, TaskService::update));
    m.insert("Wait".into(), method(svc, TaskService::wait));
    m.insert("Stats".into(), method(svc, TaskService::stats));
    m.insert("Connect".into(), method(svc, TaskService::connect));
    m.insert("Shutdown".into(), method(svc, TaskService::shutdown));
    m
}

/// The services to register on the ttrpc server.
pub fn services(svc: &Arc<TaskService>) -> HashMap<String, Service> {
    [TASK_V2, TASK_V3]
        .into_iter()
        .map(|name| {
            (
                name.to_string(),
                Service {
                    methods: task_methods(svc),
                    streams: HashMap::new(),
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Shared;
    use crate::events::Publisher;
    use crate::exits::ExitRouter;
    use containerd_shim_protos::api::WaitRequest;
    use runc_wrapper::monitor::{ExitMonitor, Reaper};

    /// What one pending Wait costs in the shim's own code: the boxed handler future the ttrpc
    /// server keeps while the Wait is pending (the server's own per-request state comes on top).
    #[tokio::test]
    async fn a_pending_wait_handler_is_small() {
        let monitor: Arc<dyn ExitMonitor> = Reaper::start();
        let (exits, _router) = ExitRouter::start(monitor.as_ref());
        let (publisher, _task) = Publisher::start(None, "ns".into());
        let svc = Arc::new(TaskService::new(Shared {
            namespace: "ns".into(),
            publisher,
            exits,
            monitor,
        }));
        let methods = task_methods(&svc);
        let req = ttrpc::Request {
            service: TASK_V2.into(),
            method: "Wait".into(),
            payload: WaitRequest {
                id: "c1".into(),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap(),
            ..Default::default()
        };
        let fut = methods["Wait"].handler(TtrpcContext::default(), req);
        let size = std::mem::size_of_val(&*fut);
        eprintln!("pending Wait handler future: {size} bytes");
        assert!(size < 1024, "{size} bytes");
    }
}
