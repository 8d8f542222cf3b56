#![allow(dead_code)] // shared by several test binaries; each uses part of it
//! A raw ttrpc peer for tests: frames read and written by hand over a std unix socket, so a
//! test can make the server as slow, sequential or hostile as it needs.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;

use protobuf::Message;

pub struct Frame {
    pub stream_id: u32,
    pub kind: u8,
    pub body: Vec<u8>,
}

pub fn read_frame(s: &mut UnixStream) -> std::io::Result<Frame> {
    let mut h = [0u8; 10];
    s.read_exact(&mut h)?;
    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let stream_id = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(Frame {
        stream_id,
        kind: h[8],
        body,
    })
}

pub fn frame_bytes(stream_id: u32, kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(10 + body.len());
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.push(kind);
    f.push(0);
    f.extend_from_slice(body);
    f
}

pub fn request_payload(f: &Frame) -> Vec<u8> {
    ttrpc::proto::Request::parse_from_bytes(&f.body)
        .expect("request")
        .payload
}

pub fn ok_response(payload: Vec<u8>) -> Vec<u8> {
    let mut r = ttrpc::proto::Response::new();
    let mut st = ttrpc::proto::Status::new();
    st.code = ttrpc::proto::Code::OK.into();
    r.status = protobuf::MessageField::some(st);
    r.payload = payload;
    r.write_to_bytes().unwrap()
}

pub fn write_response(s: &mut UnixStream, stream_id: u32, payload: Vec<u8>) -> std::io::Result<()> {
    s.write_all(&frame_bytes(stream_id, 2, &ok_response(payload)))
}

/// Small kernel buffers, so that a peer that does not read blocks the writer at once.
pub fn small_buffers(s: &UnixStream) {
    use nix::sys::socket::{setsockopt, sockopt};
    setsockopt(s, sockopt::SndBuf, &4096).unwrap();
    setsockopt(s, sockopt::RcvBuf, &4096).unwrap();
}

pub struct Peer {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub listener: UnixListener,
}

impl Peer {
    pub fn bind() -> Peer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        Peer {
            dir,
            path,
            listener,
        }
    }

    pub fn address(&self) -> String {
        self.path.to_string_lossy().into_owned()
    }
}
