//! Bug class 2 (seed 001): a client that sends and receives on one loop deadlocks against a
//! server that writes each response before reading the next request, once the socket buffers
//! are full. The naive client below is kept to prove the scenario deadlocks; ttrpc-client,
//! with a writer task and a reader task, must finish every call with intact payloads.

mod support;

use std::io::Write;
use std::time::Duration;

use support::*;
use ttrpc_client::{CallOptions, Client};

const CALLS: usize = 64;
const SIZE: usize = 1 << 20;

/// Sequential server: read a request, write its 1 MiB response (an echo), then the next.
/// Reports each request it finished serving on `served`.
fn sequential_echo_server(
    peer: Peer,
    served_tx: std::sync::mpsc::Sender<usize>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let peer = peer; // the whole peer (and its temp dir) lives as long as the server
        let (mut s, _) = peer.listener.accept().unwrap();
        small_buffers(&s);
        let mut served = 0;
        while let Ok(f) = read_frame(&mut s) {
            if write_response(&mut s, f.stream_id, request_payload(&f)).is_err() {
                break;
            }
            served += 1;
            let _ = served_tx.send(served);
        }
        served
    })
}

fn payload(i: usize) -> Vec<u8> {
    (0..SIZE).map(|j| (i * 31 + j) as u8).collect()
}

fn request_frame(stream_id: u32, body: Vec<u8>) -> Vec<u8> {
    use protobuf::Message;
    let mut r = ttrpc::proto::Request::new();
    r.service = "test.Echo".into();
    r.method = "Echo".into();
    r.payload = body;
    frame_bytes(stream_id, 1, &r.write_to_bytes().unwrap())
}

#[test]
fn naive_single_loop_client_deadlocks() {
    let peer = Peer::bind();
    let path = peer.path.clone();
    let (served_tx, served_rx) = std::sync::mpsc::channel();
    let _server = sequential_echo_server(peer, served_tx);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // One loop: send every request, then read the responses.
        let mut s = std::os::unix::net::UnixStream::connect(&path).expect("naive client connects");
        small_buffers(&s);
        let _ = tx.send("connected");
        for i in 0..CALLS {
            if s.write_all(&request_frame(2 * i as u32 + 1, payload(i)))
                .is_err()
            {
                break;
            }
        }
        let _ = tx.send("wrote everything");
        // Keep the socket open: closing it would unblock the server.
        std::thread::sleep(Duration::from_secs(30));
    });
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok("connected"));
    // The writes can never finish: the server waits for us to read its first response, which
    // we only do after writing.
    assert!(
        rx.recv_timeout(Duration::from_secs(3)).is_err(),
        "the naive client was expected to deadlock; the scenario no longer proves anything"
    );
    assert!(
        served_rx.try_recv().is_err(),
        "the server finished a response: not deadlocked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_client_finishes_every_call() {
    let peer = Peer::bind();
    let address = peer.address();
    let (served_tx, _served_rx) = std::sync::mpsc::channel();
    let server = sequential_echo_server(peer, served_tx);
    let stream = tokio::net::UnixStream::connect(&address).await.unwrap();
    small_buffers(&stream_std(&stream));
    let client = Client::from_stream(stream);
    let opts = CallOptions::with_timeout(Duration::from_secs(60));
    let mut calls = Vec::new();
    for i in 0..CALLS {
        let (client, opts) = (client.clone(), opts.clone());
        calls.push(tokio::spawn(async move {
            (
                i,
                client
                    .call_raw("test.Echo", "Echo", payload(i), &opts)
                    .await,
            )
        }));
    }
    for call in calls {
        let (i, result) = call.await.unwrap();
        let got = result.unwrap_or_else(|e| panic!("call {i}: {e}"));
        assert!(got == payload(i), "call {i}: payload corrupted");
    }
    assert_eq!(client.pending_calls(), 0);
    drop(client);
    assert_eq!(server.join().unwrap(), CALLS);
}

/// A borrowed std view of a tokio stream, for setsockopt.
fn stream_std(s: &tokio::net::UnixStream) -> std::os::unix::net::UnixStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    let dup = nix::unistd::dup(s.as_raw_fd()).unwrap();
    unsafe { std::os::unix::net::UnixStream::from_raw_fd(dup) }
}
