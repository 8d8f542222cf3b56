//! Replies on a ttrpc connection, below both the connection (which frames and routes) and the
//! dispatch (which decides what answers): the status and payload shapes, the response frame,
//! and `ReplyTo`, where a parked Wait's answer goes.

use containerd_shim_protos::protobuf::Message;
use tokio::sync::mpsc;
use ttrpc::proto::Code;
use ttrpc_client::frame::{encode, TYPE_RESPONSE};

/// A reply carrying only a status.
pub fn status(code: Code, message: String) -> ttrpc::Response {
    let mut response = ttrpc::Response::new();
    response.status = Some(ttrpc::get_status(code, message)).into();
    response
}

/// A successful reply carrying `resp`.
pub fn ok(resp: impl Message) -> ttrpc::Response {
    match resp.write_to_bytes() {
        Ok(payload) => {
            let mut out = status(Code::OK, String::new());
            out.payload = payload;
            out
        }
        Err(e) => status(Code::INTERNAL, format!("encode response: {e}")),
    }
}

/// The response frame of `response` on stream `stream_id`.
pub fn frame(stream_id: u32, response: &ttrpc::Response) -> Vec<u8> {
    let payload = response.write_to_bytes().unwrap_or_default();
    encode(stream_id, TYPE_RESPONSE, 0, &payload)
}

/// Where a parked Wait's reply goes: its stream on a connection that may have closed since (a
/// weak handle on the connection's write queue, so a parked Wait does not keep it open).
pub struct ReplyTo {
    stream_id: u32,
    writer: mpsc::WeakSender<Vec<u8>>,
}

impl ReplyTo {
    pub fn new(stream_id: u32, writer: &mpsc::Sender<Vec<u8>>) -> ReplyTo {
        ReplyTo {
            stream_id,
            writer: writer.downgrade(),
        }
    }

    pub fn closed(&self) -> bool {
        self.writer.strong_count() == 0
    }

    /// Queues the reply (waiting for room in a task if the queue is full); nothing if the
    /// connection is gone.
    pub fn send(&self, response: &ttrpc::Response) {
        let Some(tx) = self.writer.upgrade() else {
            return;
        };
        let frame = frame(self.stream_id, response);
        if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = tx.send(frame).await;
                });
            }
        }
    }
}
