//! Deadlines, dropped calls, lost connections and hostile servers: every call ends with a
//! clear status, nothing is left in the pending map, and memory returns to where it was.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use support::*;
use ttrpc_client::{CallOptions, Client, Code, ReconnectingClient};

/// Live heap bytes of this test binary.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static A: Counting = Counting;

/// A server that reads every request and never answers.
fn silent_server(peer: Peer) {
    std::thread::spawn(move || {
        let peer = peer;
        let (mut s, _) = peer.listener.accept().unwrap();
        while read_frame(&mut s).is_ok() {}
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_dropped_calls_leave_nothing_behind() {
    let peer = Peer::bind();
    let address = peer.address();
    silent_server(peer);
    let client = Client::connect(&address, Duration::from_secs(5))
        .await
        .unwrap();
    let opts = CallOptions::with_timeout(Duration::from_millis(20));
    // Warm up (runtime, channel and map capacity), then measure.
    for _ in 0..100 {
        let _ = client.call_raw("s", "m", vec![0; 64], &opts).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = LIVE.load(Ordering::Relaxed);
    for _batch in 0..10 {
        let mut calls = Vec::new();
        for _ in 0..1000 {
            let (client, opts) = (client.clone(), opts.clone());
            calls.push(tokio::spawn(async move {
                client.call_raw("s", "m", vec![0; 64], &opts).await
            }));
        }
        for c in calls {
            let e = c.await.unwrap().unwrap_err();
            assert_eq!(e.code(), Code::DEADLINE_EXCEEDED, "{e}");
        }
    }
    // Dropped before their deadline: the drop guard removes them too.
    for _ in 0..1000 {
        let long = CallOptions::with_timeout(Duration::from_secs(60));
        let _ = tokio::time::timeout(
            Duration::from_millis(1),
            client.call_raw("s", "m", vec![0; 64], &long),
        )
        .await;
    }
    assert_eq!(client.pending_calls(), 0, "pending entries left behind");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = LIVE.load(Ordering::Relaxed);
    // Slack: the write queue may hold frames of calls that already gave up (bounded by its
    // capacity) and the map keeps its capacity.
    assert!(
        after - before < 256 * 1024,
        "live heap grew by {} bytes over 11,000 abandoned calls",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_connection_fails_every_pending_call_at_once() {
    let peer = Peer::bind();
    let address = peer.address();
    let (got_tx, got_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let peer = peer;
        let (mut s, _) = peer.listener.accept().unwrap();
        for _ in 0..10 {
            read_frame(&mut s).unwrap();
        }
        got_tx.send(()).unwrap();
        // Dropping the socket closes it with 10 calls pending.
    });
    let client = Client::connect(&address, Duration::from_secs(5))
        .await
        .unwrap();
    let opts = CallOptions::with_timeout(Duration::from_secs(60));
    let mut calls = Vec::new();
    for _ in 0..10 {
        let (client, opts) = (client.clone(), opts.clone());
        calls.push(tokio::spawn(async move {
            client.call_raw("s", "m", vec![1], &opts).await
        }));
    }
    let started = Instant::now();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap_err().code(), Code::UNAVAILABLE);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "pending calls were not failed promptly"
    );
    got_rx.recv_timeout(Duration::from_secs(1)).unwrap();
    assert!(client.is_closed());
    let e = client.call_raw("s", "m", vec![1], &opts).await.unwrap_err();
    assert_eq!(
        e.code(),
        Code::UNAVAILABLE,
        "a call on a closed connection fails fast"
    );
    assert_eq!(client.pending_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_client_survives_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    // A server that answers one call, then goes away (socket closed and removed).
    let serve_one = |path: std::path::PathBuf| {
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let f = read_frame(&mut s).unwrap();
            write_response(&mut s, f.stream_id, Vec::new()).unwrap();
            let _ = std::fs::remove_file(&path);
        })
    };
    let client = ReconnectingClient::new(path.to_string_lossy().into_owned());
    let opts = CallOptions::with_timeout(Duration::from_secs(5));
    let empty = protobuf::well_known_types::empty::Empty::new();
    let first = serve_one(path.clone());
    let r: ttrpc_client::Result<protobuf::well_known_types::empty::Empty> =
        client.call("s", "m", &empty, &opts).await;
    r.expect("first server answers");
    first.join().unwrap();
    // containerd restarted: same path, new server. The client reconnects by itself.
    let second = serve_one(path.clone());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r: ttrpc_client::Result<protobuf::well_known_types::empty::Empty> =
            client.call("s", "m", &empty, &opts).await;
        match r {
            Ok(_) => break,
            Err(e) => {
                assert_eq!(e.code(), Code::UNAVAILABLE, "{e}");
                assert!(Instant::now() < deadline, "never reconnected: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    second.join().unwrap();
}

fn hostile(reply: impl FnOnce(&mut std::os::unix::net::UnixStream, u32) + Send + 'static) -> Peer {
    let peer = Peer::bind();
    let listener = peer.listener.try_clone().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let f = read_frame(&mut s).unwrap();
        reply(&mut s, f.stream_id);
        std::thread::sleep(Duration::from_millis(500));
    });
    peer
}

async fn call_once(peer: &Peer) -> ttrpc_client::Result<Vec<u8>> {
    let client = Client::connect(&peer.address(), Duration::from_secs(5))
        .await
        .unwrap();
    client
        .call_raw(
            "s",
            "m",
            vec![7],
            &CallOptions::with_timeout(Duration::from_secs(5)),
        )
        .await
}

#[tokio::test]
async fn oversized_frame_fails_the_connection_without_allocating_it() {
    let peer = hostile(|s, id| {
        let mut h = Vec::new();
        h.extend_from_slice(&u32::MAX.to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&[2, 0]);
        let _ = s.write_all(&h);
    });
    let before = LIVE.load(Ordering::Relaxed);
    let e = call_once(&peer).await.unwrap_err();
    assert_eq!(e.code(), Code::UNAVAILABLE);
    assert!(e.message().contains("exceeds"), "{e}");
    assert!(
        LIVE.load(Ordering::Relaxed) - before < 1 << 20,
        "the claimed 4 GiB was allocated"
    );
}

#[tokio::test]
async fn truncated_frame_fails_the_call() {
    let peer = hostile(|s, id| {
        let full = frame_bytes(id, 2, &ok_response(vec![1; 100]));
        let _ = s.write_all(&full[..40]);
        // Then EOF.
    });
    let e = call_once(&peer).await.unwrap_err();
    assert_eq!(e.code(), Code::UNAVAILABLE, "{e}");
}

#[tokio::test]
async fn unknown_stream_id_is_ignored() {
    let peer = hostile(|s, id| {
        let _ = s.write_all(&frame_bytes(id + 1000, 2, &ok_response(b"stray".to_vec())));
        let _ = write_response(s, id, b"mine".to_vec());
    });
    assert_eq!(call_once(&peer).await.unwrap(), b"mine");
}

#[tokio::test]
async fn undecodable_response_is_a_clear_error() {
    let peer = hostile(|s, id| {
        let _ = s.write_all(&frame_bytes(id, 2, &[0xff, 0xff, 0xff]));
    });
    let e = call_once(&peer).await.unwrap_err();
    assert_eq!(e.code(), Code::INTERNAL, "{e}");
}

#[tokio::test]
async fn the_deadline_is_sent_unless_it_is_local_only() {
    for (opts, sent) in [
        (
            CallOptions::with_timeout(Duration::from_secs(5)),
            5_000_000_000,
        ),
        (CallOptions::local_deadline(Duration::from_secs(5)), 0),
    ] {
        let peer = Peer::bind();
        let listener = peer.listener.try_clone().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let f = read_frame(&mut s).unwrap();
            let request =
                <ttrpc::proto::Request as protobuf::Message>::parse_from_bytes(&f.body).unwrap();
            write_response(&mut s, f.stream_id, vec![1]).unwrap();
            request.timeout_nano
        });
        let client = Client::connect(&peer.address(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(
            client.call_raw("s", "m", vec![7], &opts).await.unwrap(),
            [1]
        );
        assert_eq!(server.join().unwrap(), sent);
    }
}
