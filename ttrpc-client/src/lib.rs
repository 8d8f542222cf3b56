//! rshim's async ttrpc client (bug class 2 in docs/bug-classes.md: a reader task and a
//! writer task per connection, so a blocked write never stops responses being read).
//!
//! One connection = one writer task and one reader task: a blocked socket write never stops
//! responses from being read and delivered (the deadlock of containerd's old single-loop
//! client). Every call has a deadline (`CallOptions`, no way to call without one), sent as
//! `timeout_nano` (unless `local_deadline`: bounded here, sent as containerd sends a Wait) and
//! covering queueing, writing and waiting; expiry is DEADLINE_EXCEEDED. A
//! call whose deadline passes or whose future is dropped removes its pending entry (a drop
//! guard). A broken connection fails every pending call at once (UNAVAILABLE) and later calls
//! fail fast; `ReconnectingClient` reconnects for long-lived users.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod frame;
use tokio::sync::{mpsc, oneshot};
pub use ttrpc::proto::Code;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct Error {
    code: Code,
    message: String,
}
impl Error {
    pub fn new(code: Code, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }
    pub fn code(&self) -> Code {
        self.code
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}
pub type Result<T> = std::result::Result<T, Error>;

#[derive(Clone, Debug)]
pub struct CallOptions {
    pub timeout: Duration,
    pub metadata: Vec<(String, String)>,
    /// Send the deadline as `timeout_nano` (the default). Off, the call is still bounded here
    /// but the server sees a call without one, as containerd's Wait is.
    pub send_deadline: bool,
}
impl Default for CallOptions {
    fn default() -> Self {
        CallOptions::with_timeout(Duration::from_secs(10))
    }
}
impl CallOptions {
    pub fn with_timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout,
            metadata: Vec::new(),
            send_deadline: true,
        }
    }
    /// Bounded by `timeout` here, sent without a deadline (how containerd sends a Wait).
    pub fn local_deadline(timeout: Duration) -> Self {
        CallOptions {
            send_deadline: false,
            ..CallOptions::with_timeout(timeout)
        }
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.metadata
            .push(("containerd-namespace-ttrpc".into(), ns.into()));
        self
    }
}

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Vec<u8>>>>>>;

#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<([u8; frame::HEADER_LEN], Vec<u8>)>,
    pending: Pending,
    next: Arc<AtomicU32>,
    closed: Arc<AtomicBool>,
}

struct Guard {
    pending: Pending,
    id: u32,
}
impl Drop for Guard {
    fn drop(&mut self) {
        self.pending.lock().unwrap().remove(&self.id);
    }
}

impl Client {
    pub async fn connect(address: &str, timeout: Duration) -> Result<Client> {
        let path = address.strip_prefix("unix://").unwrap_or(address);
        let s = tokio::time::timeout(timeout, tokio::net::UnixStream::connect(path))
            .await
            .map_err(|_| {
                Error::new(
                    Code::DEADLINE_EXCEEDED,
                    format!("connect {address}: timed out"),
                )
            })?
            .map_err(|e| Error::new(Code::UNAVAILABLE, format!("connect {address}: {e}")))?;
        Ok(Client::from_stream(s))
    }
    pub fn from_stream(stream: tokio::net::UnixStream) -> Client {
        let (mut r, mut w) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<([u8; frame::HEADER_LEN], Vec<u8>)>(64);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (p2, c2) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            // Header and body go out as they are: no copy of the body into one frame buffer.
            while let Some((header, body)) = rx.recv().await {
                if w.write_all(&header).await.is_err() || w.write_all(&body).await.is_err() {
                    break;
                }
            }
        });
        // The reader never waits on a caller: responses go to oneshot channels; a caller that
        // is gone just drops its response.
        tokio::spawn(async move {
            let fail = |msg: String| {
                c2.store(true, Ordering::SeqCst);
                for (_, s) in p2.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                    let _ = s.send(Err(Error::new(Code::UNAVAILABLE, msg.clone())));
                }
            };
            let mut decoder = frame::FrameDecoder::default();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match r.read(&mut buf).await {
                    Ok(0) if decoder.buffered() > 0 => {
                        return fail("connection closed mid-frame (truncated frame)".into())
                    }
                    Ok(0) => return fail("connection closed".into()),
                    Ok(n) => n,
                    Err(e) => return fail(format!("connection failed: {e}")),
                };
                let frames = match decoder.push(&buf[..n]) {
                    Ok(frames) => frames,
                    Err(e) => return fail(e.to_string()),
                };
                for f in frames
                    .into_iter()
                    .filter(|f| f.kind == frame::TYPE_RESPONSE)
                {
                    let result = match ttrpc::proto::Response::parse_from_bytes(&f.payload) {
                        Ok(resp) => {
                            let st = resp.status.clone().unwrap_or_default();
                            if st.code() != Code::OK {
                                Err(Error::new(st.code(), st.message))
                            } else {
                                Ok(resp.payload)
                            }
                        }
                        Err(e) => Err(Error::new(
                            Code::INTERNAL,
                            format!("undecodable response: {e}"),
                        )),
                    };
                    // An unknown stream id (a late answer to a call that gave up) is ignored.
                    if let Some(s) = p2
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&f.stream_id)
                    {
                        let _ = s.send(result);
                    }
                }
            }
        });
        Client {
            tx,
            pending,
            next: Arc::new(AtomicU32::new(1)),
            closed,
        }
    }
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
    pub fn pending_calls(&self) -> usize {
        self.pending.lock().unwrap().len()
    }
    pub async fn call_raw(
        &self,
        service: &str,
        method: &str,
        payload: Vec<u8>,
        opts: &CallOptions,
    ) -> Result<Vec<u8>> {
        if self.is_closed() {
            return Err(Error::new(Code::UNAVAILABLE, "connection closed"));
        }
        let id = self.next.fetch_add(2, Ordering::SeqCst);
        let mut req = ttrpc::proto::Request::new();
        req.service = service.into();
        req.method = method.into();
        req.payload = payload;
        if opts.send_deadline {
            req.timeout_nano = opts.timeout.as_nanos() as i64;
        }
        for (k, v) in &opts.metadata {
            let mut kv = ttrpc::proto::KeyValue::new();
            kv.key = k.clone();
            kv.value = v.clone();
            req.metadata.push(kv);
        }
        let body = req
            .write_to_bytes()
            .map_err(|e| Error::new(Code::INTERNAL, e.to_string()))?;
        if body.len() > frame::MAX_PAYLOAD {
            return Err(Error::new(
                Code::RESOURCE_EXHAUSTED,
                format!(
                    "{service}/{method}: request of {} bytes exceeds the ttrpc limit",
                    body.len()
                ),
            ));
        }
        let frame = (frame::header(id, frame::TYPE_REQUEST, 0, body.len()), body);
        let (stx, srx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, stx);
        let _guard = Guard {
            pending: self.pending.clone(),
            id,
        };
        let fut = async {
            self.tx
                .send(frame)
                .await
                .map_err(|_| Error::new(Code::UNAVAILABLE, "connection closed"))?;
            srx.await
                .map_err(|_| Error::new(Code::UNAVAILABLE, "connection closed"))?
        };
        tokio::time::timeout(opts.timeout, fut).await.map_err(|_| {
            Error::new(
                Code::DEADLINE_EXCEEDED,
                format!(
                    "{service}/{method}: deadline of {:?} exceeded",
                    opts.timeout
                ),
            )
        })?
    }
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp> {
        let payload = req
            .write_to_bytes()
            .map_err(|e| Error::new(Code::INVALID_ARGUMENT, e.to_string()))?;
        let out = self.call_raw(service, method, payload, opts).await?;
        Resp::parse_from_bytes(&out)
            .map_err(|e| Error::new(Code::INTERNAL, format!("decode response: {e}")))
    }
}

/// A client for long-lived users (the shim's event publisher): it connects on first use and
/// again after the connection broke. Each connect is bounded by the call's own deadline; the
/// lock held meanwhile serializes reconnects, so a dead containerd costs one bounded attempt per
/// call, and the caller owns the backoff between calls (the publisher's: 50 ms doubling to 2 s).
pub struct ReconnectingClient {
    address: String,
    client: tokio::sync::Mutex<Option<Client>>,
}
impl ReconnectingClient {
    pub fn new(address: String) -> Self {
        ReconnectingClient {
            address,
            client: tokio::sync::Mutex::new(None),
        }
    }
    pub async fn call<Req: Message, Resp: Message>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Resp> {
        let client = {
            let mut c = self.client.lock().await;
            if c.as_ref().map(|c| c.is_closed()).unwrap_or(true) {
                *c = Some(Client::connect(&self.address, opts.timeout).await?);
            }
            c.clone().unwrap()
        };
        client.call(service, method, req, opts).await
    }
}

pub mod task {
    use super::*;
    use containerd_shim_protos::api::*;
    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    #[derive(Clone)]
    pub struct TaskClient {
        client: Client,
        service: String,
    }
    macro_rules! methods { ($($name:ident $m:literal $req:ty => $resp:ty;)*) => { $(pub async fn $name(&self, req: $req, opts: &CallOptions) -> Result<$resp> { self.client.call(&self.service, $m, &req, opts).await })* } }
    impl TaskClient {
        pub const V2: &'static str = "containerd.task.v2.Task";
        pub const V3: &'static str = "containerd.task.v3.Task";
        pub fn new(client: Client, service: &str) -> Self {
            TaskClient {
                client,
                service: service.into(),
            }
        }
        /// The connection, shared.
        pub fn client(&self) -> Client {
            self.client.clone()
        }
        methods! {
            create "Create" CreateTaskRequest => CreateTaskResponse; start "Start" StartRequest => StartResponse;
            state "State" StateRequest => StateResponse; wait "Wait" WaitRequest => WaitResponse;
            kill "Kill" KillRequest => Empty; delete "Delete" DeleteRequest => DeleteResponse;
            exec "Exec" ExecProcessRequest => Empty; pids "Pids" PidsRequest => PidsResponse;
            pause "Pause" PauseRequest => Empty; resume "Resume" ResumeRequest => Empty;
            close_io "CloseIO" CloseIORequest => Empty; resize_pty "ResizePty" ResizePtyRequest => Empty;
            connect "Connect" ConnectRequest => ConnectResponse; shutdown "Shutdown" ShutdownRequest => Empty;
            stats "Stats" StatsRequest => StatsResponse; update "Update" UpdateTaskRequest => Empty;
            checkpoint "Checkpoint" CheckpointTaskRequest => Empty;
        }
    }
}

pub mod events {
    //! containerd's ttrpc events service (`containerd.services.events.ttrpc.v1.Events`).
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
    use containerd_shim_protos::shim::events::ForwardRequest;

    pub const SERVICE: &str = "containerd.services.events.ttrpc.v1.Events";

    #[derive(Clone)]
    pub struct EventsClient {
        client: Client,
    }

    impl EventsClient {
        pub fn new(client: Client) -> Self {
            EventsClient { client }
        }

        pub async fn forward(&self, req: ForwardRequest, opts: &CallOptions) -> Result<Empty> {
            self.client.call(SERVICE, "Forward", &req, opts).await
        }
    }
}
