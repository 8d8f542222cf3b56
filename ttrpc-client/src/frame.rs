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

pub fn encode(stream_id: u32, kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    f.extend_from_slice(&stream_id.to_be_bytes());
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(payload);
    f
}

/// Feed it bytes as they arrive; it hands back whole frames.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    /// Adds `bytes` and returns every frame now complete. After an error the stream is unusable.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            // Take only what the current frame still needs: the buffer never exceeds one frame.
            let need = self.needed()?;
            let take = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.needed()? == 0 {
                let buf = std::mem::take(&mut self.buf);
                frames.push(Frame {
                    stream_id: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
                    kind: buf[8],
                    flags: buf[9],
                    payload: buf[HEADER_LEN..].to_vec(),
                });
            }
        }
        Ok(frames)
    }

    /// Bytes still missing from the frame being assembled.
    fn needed(&self) -> Result<usize, FrameError> {
        if self.buf.len() < HEADER_LEN {
            return Ok(HEADER_LEN - self.buf.len());
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        Ok(HEADER_LEN + len - self.buf.len())
    }

    /// Bytes buffered (at most one frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
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
