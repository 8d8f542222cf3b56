//! Dispatch of ttrpc requests to the Task service, under both service names containerd uses
//! (`containerd.task.v2.Task` for 1.6/1.7, `containerd.task.v3.Task` for 2.x: the messages are
//! identical). A request that does not decode answers InvalidArgument; an unknown service or
//! method Unimplemented; an error the code `Error::code` chose.
//!
//! A Wait without a deadline (containerd's: it waits for the life of the process and never
//! cancels) is not a task: `park_wait` leaves its reply address on the process (bug class 1).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use containerd_shim_protos::api::WaitRequest;
use containerd_shim_protos::protobuf::Message;
use futures::FutureExt;
use ttrpc::proto::Code;

use crate::error::Result;
use crate::process::{ExitInfo, ExitWaiter};
use crate::reply::{ok, status, ReplyTo};
use crate::service::{wait_response, TaskService};

pub const TASK_V2: &str = "containerd.task.v2.Task";
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// A request being answered. Its future holds only the handler's own state (the request is
/// decoded before it starts), which is what a pending Wait costs.
pub type Reply = Pin<Box<dyn Future<Output = ttrpc::Response> + Send>>;

pub fn is_task_service(service: &str) -> bool {
    service == TASK_V2 || service == TASK_V3
}

/// How a request is answered: by a reply (with the request's deadline, 0 for none), or not
/// now: a Wait parked on its process, answered through its `ReplyTo` at the exit.
pub enum Route {
    Reply(Reply, i64),
    Parked,
}

/// Routes a decoded request. A Wait without a deadline (containerd's: it waits for the life
/// of the process and never cancels) is parked instead of becoming a task (bug class 1).
pub fn route(
    svc: &Arc<TaskService>,
    request: &ttrpc::Request,
    reply_to: ReplyTo,
) -> std::result::Result<Route, ttrpc::Response> {
    if request.method == "Wait" && request.timeout_nano == 0 && is_task_service(&request.service) {
        park_wait(svc, &request.payload, reply_to)?;
        return Ok(Route::Parked);
    }
    let reply = dispatch(svc, &request.service, &request.method, &request.payload)?;
    Ok(Route::Reply(reply, request.timeout_nano))
}

/// The reply to `service`/`method` with `payload`, or at once the status that refuses it.
pub fn dispatch(
    svc: &Arc<TaskService>,
    service: &str,
    method: &str,
    payload: &[u8],
) -> std::result::Result<Reply, ttrpc::Response> {
    if !is_task_service(service) {
        return Err(status(
            Code::UNIMPLEMENTED,
            format!("service {service} is not served here"),
        ));
    }
    let svc = svc.clone();
    Ok(match method {
        "State" => call("State", payload, |r| svc.state(r)),
        "Create" => call("Create", payload, |r| svc.create(r)),
        "Start" => call("Start", payload, |r| svc.start(r)),
        "Delete" => call("Delete", payload, |r| svc.delete(r)),
        "Pids" => call("Pids", payload, |r| svc.pids(r)),
        "Pause" => call("Pause", payload, |r| svc.pause(r)),
        "Resume" => call("Resume", payload, |r| svc.resume(r)),
        "Checkpoint" => call("Checkpoint", payload, |r| svc.checkpoint(r)),
        "Kill" => call("Kill", payload, |r| svc.kill(r)),
        "Exec" => call("Exec", payload, |r| svc.exec(r)),
        "ResizePty" => call("ResizePty", payload, |r| svc.resize_pty(r)),
        "CloseIO" => call("CloseIO", payload, |r| svc.close_io(r)),
        "Update" => call("Update", payload, |r| svc.update(r)),
        "Wait" => call("Wait", payload, |r| svc.wait(r)),
        "Stats" => call("Stats", payload, |r| svc.stats(r)),
        "Connect" => call("Connect", payload, |r| svc.connect(r)),
        "Shutdown" => call("Shutdown", payload, |r| svc.shutdown(r)),
        other => {
            return Err(status(
                Code::UNIMPLEMENTED,
                format!("{service}/{other} is not implemented"),
            ))
        }
    })
}

/// Parks a Wait on its process: the reply goes to `reply_to` at the exit (at once if the exit
/// is already known). Refused at once (unknown id, undecodable, too many waits) with a status.
fn park_wait(
    svc: &TaskService,
    payload: &[u8],
    reply_to: ReplyTo,
) -> std::result::Result<(), ttrpc::Response> {
    let refuse = |e: crate::error::Error| status(e.code(), e.to_string());
    let request = WaitRequest::parse_from_bytes(payload).map_err(|e| {
        status(
            Code::INVALID_ARGUMENT,
            format!("Wait: cannot decode request: {e}"),
        )
    })?;
    let process = svc
        .container(&request.id)
        .and_then(|c| c.process(&request.exec_id))
        .map_err(refuse)?;
    process
        .add_waiter(Box::new(ParkedWait(reply_to)))
        .map_err(refuse)
}

/// A parked Wait: only where its answer goes.
struct ParkedWait(ReplyTo);

impl ExitWaiter for ParkedWait {
    fn abandoned(&self) -> bool {
        self.0.closed()
    }

    fn notify(self: Box<Self>, exit: Option<ExitInfo>) {
        let response = match exit {
            Some(exit) => ok(wait_response(exit)),
            None => status(Code::NOT_FOUND, "process deleted before it exited".into()),
        };
        self.0.send(&response);
    }
}

/// Decodes the request now, then answers with the handler's result.
fn call<Req, Resp, Fut>(
    method: &'static str,
    payload: &[u8],
    handler: impl FnOnce(Req) -> Fut,
) -> Reply
where
    Req: Message,
    Resp: Message,
    Fut: Future<Output = Result<Resp>> + Send + 'static,
{
    let request = match Req::parse_from_bytes(payload) {
        Ok(r) => r,
        Err(e) => {
            log::warn!("{method}: undecodable request: {e}");
            let refused = status(
                Code::INVALID_ARGUMENT,
                format!("{method}: cannot decode request: {e}"),
            );
            return Box::pin(std::future::ready(refused));
        }
    };
    // `map`, not an async block: an async block would keep the handler's future twice (once
    // as captured, once as awaited), and this future is what a pending Wait costs.
    Box::pin(handler(request).map(move |result| match result {
        Ok(resp) => ok(resp),
        Err(e) => {
            log::debug!("{method}: {e}");
            status(e.code(), e.to_string())
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::Shared;
    use crate::events::Publisher;
    use crate::exits::ExitRouter;
    use crate::process::Process;
    use containerd_shim_protos::api::WaitResponse;
    use runc_wrapper::monitor::{ExitMonitor, Reaper};

    fn service() -> Arc<TaskService> {
        let monitor: Arc<dyn ExitMonitor> = Reaper::start();
        let (exits, _router) = ExitRouter::start(monitor.as_ref());
        let (publisher, _task) = Publisher::start(None, "ns".into());
        Arc::new(TaskService::new(Shared {
            namespace: "ns".into(),
            publisher,
            exits,
            monitor,
        }))
    }

    /// What one of containerd's pending Waits costs: a boxed `ParkedWait` (a stream id and a
    /// weak handle on the connection's writer) and its slot in the process's list.
    #[test]
    fn a_parked_wait_is_a_few_dozen_bytes() {
        let parked = std::mem::size_of::<ParkedWait>();
        let slot = std::mem::size_of::<Box<dyn ExitWaiter>>();
        eprintln!("parked Wait: {parked} bytes boxed + {slot} bytes in the list");
        assert!(parked + slot <= 32, "{parked} + {slot} bytes");
    }

    #[tokio::test]
    async fn a_parked_wait_is_answered_at_exit_on_its_stream() {
        use ttrpc_client::frame::FrameDecoder;
        let p = Process::new("c1", None, Default::default());
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        p.add_waiter(Box::new(ParkedWait(ReplyTo::new(7, &tx))))
            .unwrap();
        assert_eq!(p.pending_waits(), 1);
        p.record_exit(5, std::time::SystemTime::now());
        p.notify_exit();
        let frames = FrameDecoder::default()
            .push(&rx.recv().await.unwrap())
            .unwrap();
        assert_eq!(frames[0].stream_id, 7);
        let response = ttrpc::Response::parse_from_bytes(&frames[0].payload).unwrap();
        assert_eq!(response.status.code.value(), Code::OK as i32);
        let wait = WaitResponse::parse_from_bytes(&response.payload).unwrap();
        assert_eq!(wait.exit_status, 5);
        assert_eq!(p.pending_waits(), 0);
    }

    #[test]
    fn a_parked_wait_of_a_closed_connection_is_abandoned() {
        let p = Process::new("c1", None, Default::default());
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        p.add_waiter(Box::new(ParkedWait(ReplyTo::new(7, &tx))))
            .unwrap();
        assert_eq!(p.pending_waits(), 1);
        drop((tx, rx));
        assert_eq!(p.pending_waits(), 0);
    }

    #[tokio::test]
    async fn unknown_services_and_methods_and_undecodable_requests() {
        let svc = service();
        let code = |r: ttrpc::Response| r.status.code.value();
        let refused = dispatch(&svc, "no.such.Service", "State", &[])
            .err()
            .unwrap();
        assert_eq!(code(refused), Code::UNIMPLEMENTED as i32);
        let refused = dispatch(&svc, TASK_V3, "NoSuchMethod", &[]).err().unwrap();
        assert_eq!(code(refused), Code::UNIMPLEMENTED as i32);
        let reply = dispatch(&svc, TASK_V2, "Create", &[0xff; 16]).ok().unwrap();
        assert_eq!(code(reply.await), Code::INVALID_ARGUMENT as i32);
        // A known call on an unknown container: the service's own status.
        let payload = WaitRequest {
            id: "nope".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        let reply = dispatch(&svc, TASK_V2, "Wait", &payload).ok().unwrap();
        assert_eq!(code(reply.await), Code::NOT_FOUND as i32);
    }
}
