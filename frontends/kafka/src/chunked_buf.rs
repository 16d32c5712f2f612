//! An encode buffer that splices record sets in by reference.
//!
//! A fetch response is mostly record batches that the store already holds as `Bytes` (often a
//! mapping of the segment file). kafka-protocol encodes them with `put_slice`, which would copy
//! every byte into the response buffer. [`ChunkedBuf`] recognises those slices by address and
//! keeps a reference to the original `Bytes` instead, so the response leaves as a list of
//! chunks for one vectored write, and the records are copied once: into the socket.

use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Slices shorter than this are copied: a reference costs more than it saves.
const SPLICE_AT_LEAST: usize = 4096;

/// The encoded response: fields in small owned chunks, record sets as shared references.
pub(crate) struct ChunkedBuf<'a> {
    /// Record sets that may be spliced, in the order the encoder writes them.
    spliceable: &'a [Bytes],
    /// Index in `spliceable` of the next candidate.
    next: usize,
    chunks: Vec<Bytes>,
    /// Bytes in `chunks`.
    flushed: usize,
    head: BytesMut,
}

impl<'a> ChunkedBuf<'a> {
    pub fn new(spliceable: &'a [Bytes]) -> Self {
        ChunkedBuf {
            spliceable,
            next: 0,
            chunks: Vec::new(),
            flushed: 0,
            head: BytesMut::with_capacity(256),
        }
    }

    /// Total bytes written.
    pub fn len(&self) -> usize {
        self.flushed + self.head.len()
    }

    /// The chunks, in order.
    pub fn into_chunks(mut self) -> Vec<Bytes> {
        self.flush_head();
        self.chunks
    }

    fn flush_head(&mut self) {
        if !self.head.is_empty() {
            let head = self.head.split().freeze();
            self.flushed += head.len();
            self.chunks.push(head);
        }
    }

    /// The spliceable `Bytes` that `src` is, if any.
    fn find(&mut self, src: &[u8]) -> Option<Bytes> {
        let rest = &self.spliceable[self.next..];
        let at = rest
            .iter()
            .position(|b| b.as_ptr() == src.as_ptr() && b.len() == src.len())?;
        self.next += at + 1;
        Some(rest[at].clone())
    }
}

// SAFETY: every method delegates to `head`, a `BytesMut`, except `put_slice`, which either
// delegates too or records a chunk without touching `head`'s memory.
unsafe impl BufMut for ChunkedBuf<'_> {
    fn remaining_mut(&self) -> usize {
        self.head.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        self.head.advance_mut(cnt)
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.head.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if src.len() >= SPLICE_AT_LEAST {
            if let Some(shared) = self.find(src) {
                self.flush_head();
                self.flushed += shared.len();
                self.chunks.push(shared);
                return;
            }
        }
        self.head.extend_from_slice(src);
    }
}

/// Gaps (space filled in later) are used by kafka-protocol's record batch encoder, never by
/// its message encoders, so they only ever fall in `head`.
impl ByteBufMut for ChunkedBuf<'_> {
    fn offset(&self) -> usize {
        self.len()
    }

    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.flushed, "seek into a spliced chunk");
        self.head.resize(offset - self.flushed, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.flushed, "range in a spliced chunk");
        &mut self.head[r.start - self.flushed..r.end - self.flushed]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_record_sets_are_referenced_and_the_rest_copied() {
        let records = Bytes::from(vec![1u8; 10_000]);
        let stranger = vec![2u8; 10_000];
        let spliceable = [records.clone()];
        let mut buf = ChunkedBuf::new(&spliceable);
        buf.put_i32(7);
        buf.put_slice(&records);
        buf.put_slice(&stranger);
        buf.put_u8(9);
        assert_eq!(buf.len(), 4 + 10_000 + 10_000 + 1);
        let chunks = buf.into_chunks();
        assert_eq!(chunks.len(), 3);
        assert_eq!(chunks[1].as_ptr(), records.as_ptr(), "spliced, not copied");
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let mut want = 7i32.to_be_bytes().to_vec();
        want.extend_from_slice(&records);
        want.extend_from_slice(&stranger);
        want.push(9);
        assert_eq!(joined, want);
    }
}
