/// Bytes of the frame header the store itself reads: `base_offset: i64` then `length: i32`.
pub const FRAME_HEADER_LEN: usize = 12;

/// What the store needs to know about a frame beyond its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    /// Offsets taken by the frame are `base_offset ..= base_offset + last_offset_delta`.
    pub last_offset_delta: u32,
    /// Largest timestamp (ms since the epoch) of any entry in the frame, for the time index.
    pub max_timestamp: i64,
    /// The writer that produced the frame, when it is idempotent; used to rebuild writer
    /// state (de-duplication) on recovery.
    pub writer: Option<WriterInfo>,
}

/// Identity and sequence of an idempotent writer's frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterInfo {
    pub id: i64,
    pub epoch: i16,
    pub first_sequence: i32,
}

/// The caller's knowledge of its payload format. The store uses it to validate frames during
/// recovery and to read timestamps for lookups; it never interprets payloads itself.
pub trait FrameFormat: Send + Sync + 'static {
    /// Checks a whole frame (header included), integrity checksum and all.
    fn validate(&self, frame: &[u8]) -> Result<FrameInfo, String>;
    /// Reads the frame's description from its leading bytes only, without verifying it.
    /// `head` holds at least [`FrameFormat::describe_len`] bytes when the frame is that long.
    fn describe(&self, head: &[u8]) -> Option<FrameInfo>;
    /// How many leading bytes [`FrameFormat::describe`] needs.
    fn describe_len(&self) -> usize;
}
