//! Event publishing to containerd (`containerd.services.events.ttrpc.v1.Events/Forward` on
//! `TTRPC_ADDRESS`).
//!
//! One queue, one forwarding task, so events leave in the order they were published (and so in
//! order per container). Each Forward has a deadline; a failed one is retried with backoff,
//! reconnecting, until containerd is back: a containerd restart loses nothing. The queue is
//! bounded in memory; an overflow is logged with its count, never silent. Shutdown flushes the
//! queue within a bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use ttrpc_client::{CallOptions, ReconnectingClient};

/// Events held while containerd is unreachable. Beyond this, events are dropped and counted.
pub const QUEUE_LIMIT: usize = 8192;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const EVENTS_SERVICE: &str = ttrpc_client::events::SERVICE;

/// A containerd task event, by topic.
pub trait Topic: containerd_shim_protos::protobuf::MessageFull {
    const TOPIC: &'static str;
}

macro_rules! topics {
    ($($ty:ty => $topic:literal),* $(,)?) => {
        $(impl Topic for $ty { const TOPIC: &'static str = $topic; })*
    };
}

topics! {
    TaskCreate => "/tasks/create",
    TaskStart => "/tasks/start",
    TaskDelete => "/tasks/delete",
    TaskExit => "/tasks/exit",
    TaskOOM => "/tasks/oom",
    TaskExecAdded => "/tasks/exec-added",
    TaskExecStarted => "/tasks/exec-started",
    TaskPaused => "/tasks/paused",
    TaskResumed => "/tasks/resumed",
}

enum Item {
    Event(ForwardRequest),
    /// Flush: answered once everything queued before it was forwarded or given up on.
    Flush(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Publisher {
    namespace: String,
    tx: mpsc::Sender<Item>,
    overflowed: Arc<AtomicU64>,
}

pub struct PublisherTask {
    handle: JoinHandle<()>,
}

impl Publisher {
    /// Starts the forwarding task. With no `ttrpc_address` (the shim driven directly, without
    /// containerd) events are logged at debug level and discarded.
    pub fn start(ttrpc_address: Option<String>, namespace: String) -> (Publisher, PublisherTask) {
        let (tx, rx) = mpsc::channel(QUEUE_LIMIT);
        let handle = tokio::spawn(forward_loop(ttrpc_address, rx));
        (
            Publisher {
                namespace,
                tx,
                overflowed: Arc::new(AtomicU64::new(0)),
            },
            PublisherTask { handle },
        )
    }

    /// Queues an event. Never blocks: a full queue drops the event and counts it.
    pub fn publish<E: Topic>(&self, event: E) {
        let request = envelope(&self.namespace, E::TOPIC, &event, SystemTime::now());
        log::debug!(
            "publish {} {}",
            E::TOPIC,
            containerd_shim_protos::protobuf::text_format::print_to_string(&event)
        );
        if self.tx.try_send(Item::Event(request)).is_err() {
            let n = self.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
            log::error!(
                "event queue full ({QUEUE_LIMIT}): dropped {} (total dropped: {n})",
                E::TOPIC
            );
        }
    }

    /// Waits until every event published before this call has been forwarded, at most `bound`.
    pub async fn flush(&self, bound: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = tokio::time::timeout(bound, async {
            self.tx.send(Item::Flush(done_tx)).await.is_ok() && done_rx.await.is_ok()
        });
        matches!(sent.await, Ok(true))
    }
}

impl PublisherTask {
    pub fn abort(self) {
        self.handle.abort();
    }
}

fn envelope(
    namespace: &str,
    topic: &str,
    event: &dyn MessageDyn,
    at: SystemTime,
) -> ForwardRequest {
    // containerd resolves the payload by the message's full protobuf name
    // (e.g. "containerd.events.TaskExit").
    let any = Any {
        type_url: event.descriptor_dyn().full_name().to_string(),
        value: event.write_to_bytes_dyn().unwrap_or_default(),
        ..Default::default()
    };
    let envelope = Envelope {
        timestamp: MessageField::some(timestamp(at)),
        namespace: namespace.to_string(),
        topic: topic.to_string(),
        event: MessageField::some(any),
        ..Default::default()
    };
    ForwardRequest {
        envelope: MessageField::some(envelope),
        ..Default::default()
    }
}

pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

async fn forward_loop(address: Option<String>, mut rx: mpsc::Receiver<Item>) {
    let client = address.map(ReconnectingClient::new);
    while let Some(item) = rx.recv().await {
        let request = match item {
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Item::Event(request) => request,
        };
        let Some(client) = &client else { continue };
        let namespace = request.envelope.namespace.clone();
        let opts = CallOptions::with_timeout(FORWARD_TIMEOUT).namespace(&namespace);
        let mut backoff = BACKOFF_MIN;
        let mut attempts = 0u32;
        loop {
            let result: ttrpc_client::Result<
                containerd_shim_protos::protobuf::well_known_types::empty::Empty,
            > = client
                .call(EVENTS_SERVICE, "Forward", &request, &opts)
                .await;
            match result {
                Ok(_) => break,
                Err(e) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(20) {
                        log::warn!(
                            "forward {} failed (attempt {attempts}), retrying: {e}",
                            request.envelope.topic
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    #[test]
    fn envelope_names_the_event_type() {
        let exit = TaskExit {
            container_id: "c".into(),
            id: "c".into(),
            pid: 42,
            exit_status: 137,
            ..Default::default()
        };
        let req = envelope("ns", TaskExit::TOPIC, &exit, SystemTime::UNIX_EPOCH);
        let env = req.envelope.as_ref().unwrap();
        assert_eq!(env.topic, "/tasks/exit");
        assert_eq!(env.namespace, "ns");
        assert_eq!(env.event.type_url, "containerd.events.TaskExit");
        assert_eq!(TaskExit::parse_from_bytes(&env.event.value).unwrap(), exit);
    }
}
