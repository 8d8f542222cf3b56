//! One ttrpc client connection: a reader that decodes frames and starts a task per request, a
//! writer that sends replies in the order they are ready (bug class 2: reading never waits for
//! writing, so a client that does not read its replies cannot stop the shim from reading), and
//! the request tasks themselves, all ended when the connection closes.

use std::sync::Arc;
use std::time::Duration;

use containerd_shim_protos::protobuf::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use ttrpc::proto::Code;
use ttrpc_client::frame::{Frame, FrameDecoder, TYPE_REQUEST};

use crate::reply::{self, ReplyTo};
use crate::rpc::{self, Route};
use crate::service::TaskService;

/// Replies queued for the writer; a full queue makes request tasks wait (back-pressure).
const WRITE_QUEUE: usize = 256;
/// Requests in flight on one connection; beyond it a request is refused at once.
const MAX_IN_FLIGHT: usize = 65_536;
/// At shutdown, how long replies already being made get to reach the client.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(200);

pub async fn serve(stream: UnixStream, svc: Arc<TaskService>, mut stop: watch::Receiver<bool>) {
    let (mut reader, writer) = stream.into_split();
    let (tx, rx) = mpsc::channel(WRITE_QUEUE);
    let writer = tokio::spawn(write_loop(writer, rx));
    let mut requests = JoinSet::new();
    let mut decoder = FrameDecoder::default();
    // Small: a connection costs this much while idle; large frames build up in the decoder.
    let mut buf = vec![0u8; 16 * 1024];
    let mut stopping = *stop.borrow();
    while !stopping {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                match decoder.push(&buf[..n]) {
                    Ok(frames) => {
                        for frame in frames {
                            start_request(frame, &svc, &tx, &mut requests);
                        }
                    }
                    Err(e) => {
                        // A frame we cannot take (over the ttrpc limit): the stream is lost.
                        log::warn!("ttrpc client sent a bad frame, closing it: {e}");
                        break;
                    }
                }
            }
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
            changed = stop.changed() => stopping = changed.is_err() || *stop.borrow(),
        }
    }
    if stopping {
        let finish = async { while requests.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, finish).await;
    }
    // The connection is gone (or the shim stops): every pending request with it. Handlers are
    // cancellation-safe: state changes run detached (`service::detached`).
    requests.abort_all();
    while requests.join_next().await.is_some() {}
    drop(tx);
    // Replies already queued get a moment; a writer stuck on a client that does not read goes.
    let mut writer = writer;
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn write_loop(mut writer: OwnedWriteHalf, mut replies: mpsc::Receiver<Vec<u8>>) {
    while let Some(frame) = replies.recv().await {
        if writer.write_all(&frame).await.is_err() {
            return;
        }
    }
}

/// Starts the task that answers one frame, or answers at once what needs no handler.
fn start_request(
    frame: Frame,
    svc: &Arc<TaskService>,
    tx: &mpsc::Sender<Vec<u8>>,
    requests: &mut JoinSet<()>,
) {
    let stream_id = frame.stream_id;
    if frame.kind != TYPE_REQUEST {
        // The Task service has no streams: data frames have nowhere to go.
        log::debug!(
            "ignoring ttrpc frame of type {} on stream {stream_id}",
            frame.kind
        );
        return;
    }
    let (reply, timeout_nano) = match accept(&frame.payload, stream_id, svc, tx, requests.len()) {
        Ok(Route::Reply(reply, timeout_nano)) => (reply, timeout_nano),
        Ok(Route::Parked) => return,
        Err(refused) => return send_now(reply::frame(stream_id, &refused), tx, requests),
    };
    let tx = tx.clone();
    // Two task shapes so that a call without a deadline (a Wait) does not carry a timer.
    if timeout_nano > 0 {
        let deadline = Duration::from_nanos(timeout_nano as u64);
        requests.spawn(async move {
            let response = match tokio::time::timeout(deadline, reply).await {
                Ok(r) => r,
                Err(_) => reply::status(Code::DEADLINE_EXCEEDED, "timeout".into()),
            };
            let _ = tx.send(reply::frame(stream_id, &response)).await;
        });
    } else {
        requests.spawn(async move {
            let response = reply.await;
            let _ = tx.send(reply::frame(stream_id, &response)).await;
        });
    }
}

/// How a request will be answered (`rpc::route` decides), or the status that refuses it at
/// the connection's level (stream id, in-flight limit, undecodable request).
fn accept(
    payload: &[u8],
    stream_id: u32,
    svc: &Arc<TaskService>,
    tx: &mpsc::Sender<Vec<u8>>,
    in_flight: usize,
) -> Result<Route, ttrpc::Response> {
    if stream_id % 2 != 1 {
        return Err(reply::status(
            Code::INVALID_ARGUMENT,
            "stream id must be odd".into(),
        ));
    }
    if in_flight >= MAX_IN_FLIGHT {
        return Err(reply::status(
            Code::RESOURCE_EXHAUSTED,
            format!("{MAX_IN_FLIGHT} requests already in flight on this connection"),
        ));
    }
    let request = ttrpc::Request::parse_from_bytes(payload).map_err(|e| {
        reply::status(
            Code::INVALID_ARGUMENT,
            format!("cannot decode request: {e}"),
        )
    })?;
    rpc::route(svc, &request, ReplyTo::new(stream_id, tx))
}

/// Queues a reply made without a handler. The reader never waits for the writer (bug class 2),
/// and no reply is dropped: if the queue is full, a task waits for room.
fn send_now(frame: Vec<u8>, tx: &mpsc::Sender<Vec<u8>>, requests: &mut JoinSet<()>) {
    if let Err(mpsc::error::TrySendError::Full(frame)) = tx.try_send(frame) {
        let tx = tx.clone();
        requests.spawn(async move {
            let _ = tx.send(frame).await;
        });
    }
}
