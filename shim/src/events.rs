//! Event publishing to containerd (`containerd.services.events.ttrpc.v1.Events/Forward` on
//! `TTRPC_ADDRESS`).
//!
//! One queue, one forwarding task, so events leave in the order they were published (and so in
//! order per container). Each Forward has a deadline; one that fails because containerd is
//! unreachable (or does not answer in time) is retried with backoff, reconnecting, until
//! containerd is back: a containerd restart loses nothing. One that containerd *answers* with
//! an error is retried a few times (`REJECTED_ATTEMPTS`) and then dropped with an error
//! naming it, so that one event containerd refuses cannot block every event after it.
//!
//! Nothing that containerd's state depends on is ever dropped: exits, creates, starts and
//! deletes (`Topic::KEPT`) are bounded by the processes that exist. The other events are
//! bounded by `QUEUE_LIMIT` while containerd is away: past it the oldest of them is dropped,
//! counted per topic and logged. A Forward whose answer never came (deadline) may have reached
//! containerd and is sent again: delivery is at least once, never zero times.
//! Shutdown flushes the queue within a bound.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use ttrpc_client::{CallOptions, Code, ReconnectingClient};

/// Droppable events held while containerd is unreachable; past this the oldest is dropped.
pub const QUEUE_LIMIT: usize = 8192;
/// Attempts at an event that containerd answers with an error before it is dropped.
const REJECTED_ATTEMPTS: u32 = 5;
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
const EVENTS_SERVICE: &str = ttrpc_client::events::SERVICE;

/// A containerd task event, by topic.
pub trait Topic: containerd_shim_protos::protobuf::Message + std::fmt::Debug {
    const TOPIC: &'static str;
    /// Never dropped from the queue: containerd's view of the task depends on it.
    const KEPT: bool;
    /// The message's full protobuf name, by which containerd resolves the payload
    /// ("containerd.events.TaskExit"). A constant, not the reflection descriptor: building
    /// the descriptors of the events' proto files costs every shim heap it keeps for life.
    const TYPE_URL: &'static str;
}

macro_rules! topics {
    ($($ty:ident => $topic:literal, $kept:literal),* $(,)?) => {
        $(impl Topic for $ty {
            const TOPIC: &'static str = $topic;
            const KEPT: bool = $kept;
            const TYPE_URL: &'static str = concat!("containerd.events.", stringify!($ty));
        })*
    };
}

topics! {
    TaskCreate => "/tasks/create", true,
    TaskStart => "/tasks/start", true,
    TaskDelete => "/tasks/delete", true,
    TaskExit => "/tasks/exit", true,
    TaskOOM => "/tasks/oom", false,
    TaskExecAdded => "/tasks/exec-added", false,
    TaskExecStarted => "/tasks/exec-started", false,
    TaskPaused => "/tasks/paused", false,
    TaskResumed => "/tasks/resumed", false,
}

enum Item {
    Event {
        request: ForwardRequest,
        kept: bool,
    },
    /// Flush: answered once everything queued before it was forwarded or given up on.
    Flush(oneshot::Sender<()>),
}

/// The queue between `publish` (never blocks) and the forwarding task.
#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    /// Droppable events in `items`.
    droppable: usize,
    /// Droppable events dropped so far, by topic.
    dropped: BTreeMap<String, u64>,
}

impl Queue {
    /// Appends; past `limit` droppable events, drops the oldest droppable one and returns
    /// its topic.
    fn push(&mut self, item: Item, limit: usize) -> Option<String> {
        if let Item::Event { kept: false, .. } = item {
            self.droppable += 1;
        }
        self.items.push_back(item);
        if self.droppable <= limit {
            return None;
        }
        let oldest = self
            .items
            .iter()
            .position(|i| matches!(i, Item::Event { kept: false, .. }))?;
        let Some(Item::Event { request, .. }) = self.items.remove(oldest) else {
            return None;
        };
        self.droppable -= 1;
        let topic = request.envelope.topic.clone();
        *self.dropped.entry(topic.clone()).or_default() += 1;
        Some(topic)
    }

    fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front()?;
        if let Item::Event { kept: false, .. } = item {
            self.droppable -= 1;
        }
        Some(item)
    }
}

#[derive(Clone)]
pub struct Publisher {
    namespace: String,
    queue: Arc<Mutex<Queue>>,
    ready: Arc<Notify>,
}

pub struct PublisherTask {
    handle: JoinHandle<()>,
}

impl Publisher {
    /// Starts the forwarding task. With no `ttrpc_address` (the shim driven directly, without
    /// containerd) events are logged at debug level and discarded.
    pub fn start(ttrpc_address: Option<String>, namespace: String) -> (Publisher, PublisherTask) {
        let publisher = Publisher {
            namespace,
            queue: Arc::new(Mutex::new(Queue::default())),
            ready: Arc::new(Notify::new()),
        };
        let handle = tokio::spawn(forward_loop(ttrpc_address, publisher.clone()));
        (publisher, PublisherTask { handle })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, item: Item) {
        let dropped = self.lock().push(item, QUEUE_LIMIT);
        if let Some(topic) = dropped {
            let counts = self.lock().dropped.clone();
            log::error!(
                "event queue holds {QUEUE_LIMIT} droppable events (containerd unreachable?): \
                 dropped the oldest, {topic}; dropped so far: {counts:?}"
            );
        }
        self.ready.notify_one();
    }

    /// Queues an event. Never blocks; see the module doc for what may be dropped.
    pub fn publish<E: Topic>(&self, event: E) {
        log::debug!("publish {} {event:?}", E::TOPIC);
        let request = envelope(&self.namespace, E::TOPIC, &event, SystemTime::now());
        self.push(Item::Event {
            request,
            kept: E::KEPT,
        });
    }

    /// Waits until every event published before this call has been forwarded, at most `bound`.
    pub async fn flush(&self, bound: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        self.push(Item::Flush(done_tx));
        matches!(tokio::time::timeout(bound, done_rx).await, Ok(Ok(())))
    }

    async fn next(&self) -> Item {
        loop {
            let notified = self.ready.notified();
            if let Some(item) = self.lock().pop() {
                return item;
            }
            notified.await;
        }
    }
}

impl PublisherTask {
    pub fn abort(self) {
        self.handle.abort();
    }
}

fn envelope<E: Topic>(namespace: &str, topic: &str, event: &E, at: SystemTime) -> ForwardRequest {
    let any = Any {
        type_url: E::TYPE_URL.to_string(),
        value: event.write_to_bytes().unwrap_or_default(),
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

async fn forward_loop(address: Option<String>, publisher: Publisher) {
    let client = address.map(ReconnectingClient::new);
    loop {
        let request = match publisher.next().await {
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
            Item::Event { request, .. } => request,
        };
        if let Some(client) = &client {
            forward(client, &request).await;
        }
    }
}

/// Forwards one event: until delivered while containerd is unreachable or silent, at most
/// `REJECTED_ATTEMPTS` times while containerd answers with an error.
async fn forward(client: &ReconnectingClient, request: &ForwardRequest) {
    let topic = &request.envelope.topic;
    let opts = CallOptions::with_timeout(FORWARD_TIMEOUT).namespace(&request.envelope.namespace);
    let mut backoff = BACKOFF_MIN;
    let (mut attempts, mut rejected) = (0u32, 0u32);
    loop {
        let result: ttrpc_client::Result<
            containerd_shim_protos::protobuf::well_known_types::empty::Empty,
        > = client.call(EVENTS_SERVICE, "Forward", request, &opts).await;
        let Err(e) = result else { return };
        attempts += 1;
        if answered_by_containerd(e.code()) {
            rejected += 1;
            if rejected >= REJECTED_ATTEMPTS {
                log::error!("containerd refused {topic} {rejected} times, dropping it: {e}");
                return;
            }
        }
        if attempts == 1 || attempts.is_multiple_of(20) {
            log::warn!("forward {topic} failed (attempt {attempts}), retrying: {e}");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// An error status containerd sent, as opposed to one that says it could not be reached or
/// did not answer in time (then the event is kept until it can be delivered).
fn answered_by_containerd(code: Code) -> bool {
    !matches!(code, Code::UNAVAILABLE | Code::DEADLINE_EXCEEDED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::Message;

    fn event<E: Topic>(e: E) -> Item {
        Item::Event {
            request: envelope("ns", E::TOPIC, &e, SystemTime::UNIX_EPOCH),
            kept: E::KEPT,
        }
    }

    fn topics(q: &mut Queue) -> Vec<String> {
        std::iter::from_fn(|| q.pop())
            .filter_map(|i| match i {
                Item::Event { request, .. } => Some(request.envelope.topic.clone()),
                Item::Flush(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_full_queue_drops_the_oldest_droppable_event_never_an_exit() {
        let mut q = Queue::default();
        assert_eq!(q.push(event(TaskExit::default()), 2), None);
        assert_eq!(q.push(event(TaskPaused::default()), 2), None);
        assert_eq!(q.push(event(TaskResumed::default()), 2), None);
        assert_eq!(q.push(event(TaskDelete::default()), 2), None);
        // A third droppable event: the oldest droppable (paused) goes, the exit stays.
        assert_eq!(
            q.push(event(TaskOOM::default()), 2).as_deref(),
            Some("/tasks/paused")
        );
        for _ in 0..100 {
            q.push(event(TaskExit::default()), 2);
        }
        assert_eq!(q.dropped.get("/tasks/paused"), Some(&1));
        let left = topics(&mut q);
        assert_eq!(left.iter().filter(|t| *t == "/tasks/exit").count(), 101);
        assert_eq!(
            left.iter()
                .filter(|t| !t.starts_with("/tasks/exit"))
                .collect::<Vec<_>>(),
            ["/tasks/resumed", "/tasks/delete", "/tasks/oom"]
        );
        assert_eq!(q.droppable, 0);
    }

    #[test]
    fn only_statuses_containerd_sent_count_as_refusals() {
        assert!(!answered_by_containerd(Code::UNAVAILABLE));
        assert!(!answered_by_containerd(Code::DEADLINE_EXCEEDED));
        assert!(answered_by_containerd(Code::INVALID_ARGUMENT));
        assert!(answered_by_containerd(Code::UNKNOWN));
    }

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

    #[test]
    fn each_type_url_is_the_messages_full_protobuf_name() {
        use containerd_shim_protos::protobuf::MessageFull;
        fn check<E: Topic + MessageFull>() {
            assert_eq!(E::TYPE_URL, E::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskDelete>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
    }
}
