//! ttrpc framing: a 10-byte header (u32 BE payload length, u32 BE stream id, u8 type, u8 flags)
//! then the payload. The decoder is incremental, validates the length before buffering any
//! payload, and never holds more than one frame's worth of bytes.

/// Header size.
pub const HEADER_LEN: usize = 10;
/// The ttrpc limit on a payload (4 MiB).
pub const MAX_PAYLOAD: usize = ttrpc::proto::MESSAGE_LENGTH_MAX;
pub const TYPE_REQUEST: u8 = 1;
pub const TYPE_RESPONSE: u8 = 2;
pub const TYPE_DATA: u8 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u32,
    pub kind: u8,
    pub flags: u8,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the ttrpc limit of {MAX_PAYLOAD}")]
    TooLong(usize),
}

pub fn header(stream_id: u32, kind: u8, flags: u8, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&(len as u32).to_be_bytes());
    h[4..8].copy_from_slice(&stream_id.to_be_bytes());
    h[8] = kind;
    h[9] = flags;
    h
}

pub fn encode(stream_id: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
    f.extend_from_slice(&header(stream_id, kind, flags, payload.len()));
    f.extend_from_slice(payload);
    f
}

/// Feed it bytes as they arrive; it hands back whole frames.
#[derive(Default)]
pub struct FrameDecoder {
    header: Vec<u8>,
    /// The payload being assembled; allocated once the header's length has been checked, and
    /// moved out whole (no copy) when complete.
    payload: Vec<u8>,
    expected: usize,
}

impl FrameDecoder {
    /// Adds `bytes` and returns every frame now complete. After an error the stream is unusable.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() || (self.header.len() == HEADER_LEN && self.expected == 0) {
            if self.header.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.header.len()).min(bytes.len());
                self.header.extend_from_slice(&bytes[..take]);
                bytes = &bytes[take..];
                if self.header.len() < HEADER_LEN {
                    break;
                }
                let len = u32::from_be_bytes([
                    self.header[0],
                    self.header[1],
                    self.header[2],
                    self.header[3],
                ]) as usize;
                if len > MAX_PAYLOAD {
                    return Err(FrameError::TooLong(len));
                }
                self.expected = len;
                self.payload = Vec::with_capacity(len);
            }
            let take = (self.expected - self.payload.len()).min(bytes.len());
            self.payload.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.payload.len() == self.expected {
                let h = std::mem::take(&mut self.header);
                frames.push(Frame {
                    stream_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    kind: h[8],
                    flags: h[9],
                    payload: std::mem::take(&mut self.payload),
                });
                self.expected = 0;
            }
        }
        Ok(frames)
    }

    /// Bytes buffered (at most one frame).
    pub fn buffered(&self) -> usize {
        self.header.len() + self.payload.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_across_arbitrary_splits() {
        let mut wire = encode(1, TYPE_REQUEST, 0, b"hello");
        wire.extend(encode(3, TYPE_RESPONSE, 4, b""));
        let mut d = FrameDecoder::default();
        let mut got = Vec::new();
        for b in &wire {
            got.extend(d.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].stream_id, got[0].kind, got[0].payload.as_slice()),
            (1, TYPE_REQUEST, &b"hello"[..])
        );
        assert_eq!(
            (got[1].stream_id, got[1].flags, got[1].payload.len()),
            (3, 4, 0)
        );
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::default();
        let mut header = u32::MAX.to_be_bytes().to_vec();
        header.extend_from_slice(&[0, 0, 0, 1, 2, 0, 9, 9, 9]);
        assert_eq!(d.push(&header), Err(FrameError::TooLong(u32::MAX as usize)));
        assert!(d.buffered() <= HEADER_LEN);
    }

    proptest! {
        /// Arbitrary bytes in arbitrary chunks: never a panic, never more than one frame buffered.
        #[test]
        fn arbitrary_input_is_safe(data in proptest::collection::vec(any::<u8>(), 0..4096), chunk in 1usize..64) {
            let mut d = FrameDecoder::default();
            for piece in data.chunks(chunk) {
                if d.push(piece).is_err() {
                    break;
                }
                prop_assert!(d.buffered() <= HEADER_LEN + MAX_PAYLOAD);
            }
        }

        /// Whatever is encoded decodes back, however it is split.
        #[test]
        fn round_trip(frames in proptest::collection::vec((any::<u32>(), 1u8..4, any::<u8>(), proptest::collection::vec(any::<u8>(), 0..512)), 1..8),
                      chunk in 1usize..97) {
            let wire: Vec<u8> = frames.iter().flat_map(|(id, k, f, p)| encode(*id, *k, *f, p)).collect();
            let mut d = FrameDecoder::default();
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                got.extend(d.push(piece).unwrap());
            }
            prop_assert_eq!(got.len(), frames.len());
            for (g, (id, k, f, p)) in got.iter().zip(&frames) {
                prop_assert_eq!((g.stream_id, g.kind, g.flags, &g.payload), (*id, *k, *f, p));
            }
        }
    }
}
