//! Minimal ttrpc client (scratch).
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
}
impl Default for CallOptions {
    fn default() -> Self {
        CallOptions {
            timeout: Duration::from_secs(10),
            metadata: Vec::new(),
        }
    }
}
impl CallOptions {
    pub fn with_timeout(timeout: Duration) -> Self {
        CallOptions {
            timeout,
            metadata: Vec::new(),
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
    tx: mpsc::Sender<Vec<u8>>,
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
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let (p2, c2) = (pending.clone(), closed.clone());
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if w.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let fail = |msg: String| {
                c2.store(true, Ordering::SeqCst);
                for (_, s) in p2.lock().unwrap().drain() {
                    let _ = s.send(Err(Error::new(Code::UNAVAILABLE, msg.clone())));
                }
            };
            loop {
                let mut h = [0u8; 10];
                if let Err(e) = r.read_exact(&mut h).await {
                    fail(format!("connection closed: {e}"));
                    return;
                }
                let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
                let sid = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                if len > ttrpc::proto::MESSAGE_LENGTH_MAX {
                    fail(format!("frame of {len} bytes exceeds the limit"));
                    return;
                }
                let mut body = vec![0u8; len];
                if let Err(e) = r.read_exact(&mut body).await {
                    fail(format!("truncated frame: {e}"));
                    return;
                }
                if h[8] != 2 {
                    continue;
                }
                let result = match ttrpc::proto::Response::parse_from_bytes(&body) {
                    Ok(resp) => {
                        let st = resp.status.clone().unwrap_or_default();
                        if st.code() != Code::OK {
                            Err(Error::new(st.code(), st.message))
                        } else {
                            Ok(resp.payload)
                        }
                    }
                    Err(e) => Err(Error::new(Code::INTERNAL, format!("bad response: {e}"))),
                };
                if let Some(s) = p2.lock().unwrap().remove(&sid) {
                    let _ = s.send(result);
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
        req.timeout_nano = opts.timeout.as_nanos() as i64;
        for (k, v) in &opts.metadata {
            let mut kv = ttrpc::proto::KeyValue::new();
            kv.key = k.clone();
            kv.value = v.clone();
            req.metadata.push(kv);
        }
        let body = req
            .write_to_bytes()
            .map_err(|e| Error::new(Code::INTERNAL, e.to_string()))?;
        let mut frame = Vec::with_capacity(10 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.push(1);
        frame.push(0);
        frame.extend_from_slice(&body);
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
