//! The client's frame decoder on arbitrary bytes, fed in arbitrary chunks: it returns frames or
//! an error, never panics, and never holds more than one frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protobuf::Message;
use ttrpc_client::frame::FrameDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut decoder = FrameDecoder::default();
    for piece in bytes.chunks(chunk) {
        match decoder.push(piece) {
            Ok(frames) => {
                for frame in frames {
                    // What a ttrpc peer does next with a frame's payload.
                    let _ = ttrpc::Response::parse_from_bytes(&frame.payload);
                    let _ = ttrpc::Request::parse_from_bytes(&frame.payload);
                }
            }
            Err(_) => return,
        }
        assert!(decoder.buffered() <= 10 + 4 << 20);
    }
});
