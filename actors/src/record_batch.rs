//! The broker's batch format: Kafka's v2 record batch ("magic 2"). Every log stores batches in
//! this layout, whatever front end wrote them, so a Kafka fetch returns stored bytes as they
//! are. This module reads the fixed header only; record-level decoding is a front end's job.

use spool_store::{FrameFormat, FrameInfo, WriterInfo};

/// Size of the v2 batch header up to the first record.
pub const BATCH_HEADER_LEN: usize = 61;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORDS_COUNT_AT: usize = 57;
/// Where the leader epoch is stamped by the broker (outside the CRC).
pub const LEADER_EPOCH_AT: usize = 12;

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// Header facts of a valid batch, beyond what the store needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub info: FrameInfo,
    pub records_count: i32,
    pub attributes: i16,
    pub base_timestamp: i64,
}

impl BatchHeader {
    /// Compression codec id from the attributes (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> i16 {
        self.attributes & 0x7
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// Checks a whole batch: size, magic, CRC-32C and header consistency.
pub fn validate(batch: &[u8]) -> Result<BatchHeader, String> {
    check(batch, true)
}

/// [`validate`] without the CRC, for a batch the broker encoded itself a moment ago (the
/// encoder has just computed that CRC over the same bytes).
pub fn validate_own(batch: &[u8]) -> Result<BatchHeader, String> {
    check(batch, false)
}

fn check(batch: &[u8], crc: bool) -> Result<BatchHeader, String> {
    if batch.len() < BATCH_HEADER_LEN {
        return Err(format!(
            "batch of {} bytes is shorter than its header",
            batch.len()
        ));
    }
    let declared = i32_at(batch, 8);
    if declared < 0 || declared as usize + 12 != batch.len() {
        return Err(format!(
            "batch length field {declared} does not match {} bytes",
            batch.len() - 12
        ));
    }
    let magic = batch[MAGIC_AT] as i8;
    if magic != 2 {
        return Err(format!(
            "unsupported magic {magic}: only v2 batches are accepted"
        ));
    }
    if crc {
        let declared = i32_at(batch, CRC_AT) as u32;
        let actual = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
        if declared != actual {
            return Err(format!(
                "CRC mismatch: header {declared:#010x}, computed {actual:#010x}"
            ));
        }
    }
    let header = describe(batch).expect("length checked");
    if header.records_count <= 0 && !header.is_control() {
        return Err(format!("batch declares {} records", header.records_count));
    }
    if header.info.last_offset_delta as i64 + 1 < header.records_count as i64 {
        return Err("last offset delta is smaller than the record count".into());
    }
    if header.compression() > 4 {
        return Err(format!(
            "unknown compression codec {}",
            header.compression()
        ));
    }
    Ok(header)
}

/// Reads the header of a batch without verifying it.
pub fn describe(head: &[u8]) -> Option<BatchHeader> {
    if head.len() < BATCH_HEADER_LEN {
        return None;
    }
    let delta = i32_at(head, LAST_OFFSET_DELTA_AT);
    let producer_id = i64_at(head, PRODUCER_ID_AT);
    Some(BatchHeader {
        info: FrameInfo {
            last_offset_delta: u32::try_from(delta).ok()?,
            max_timestamp: i64_at(head, MAX_TIMESTAMP_AT),
            writer: (producer_id >= 0).then(|| WriterInfo {
                id: producer_id,
                epoch: i16_at(head, PRODUCER_EPOCH_AT),
                first_sequence: i32_at(head, BASE_SEQUENCE_AT),
            }),
        },
        records_count: i32_at(head, RECORDS_COUNT_AT),
        attributes: i16_at(head, ATTRIBUTES_AT),
        base_timestamp: i64_at(head, 27),
    })
}

/// The timestamp-type attribute: the batch carries the broker's append time.
const LOG_APPEND_TIME_FLAG: i16 = 0x08;
/// Where the bytes rewritten by [`stamp_log_append_time`] end: just after the max timestamp.
pub const STAMPED_HEAD_END: usize = PRODUCER_ID_AT;

/// For `message.timestamp.type=LogAppendTime`, as Kafka does it: the header bytes from the
/// magic byte to the max timestamp (`batch[16..43]`) with the timestamp-type attribute set, the
/// max timestamp replaced by `now`, and the CRC recomputed over the new header and the
/// untouched records. Consumers take every record's timestamp from the max timestamp of such a
/// batch, so the records need no rewrite. `batch` must have passed [`validate`].
pub fn stamp_log_append_time(batch: &[u8], now: i64) -> [u8; STAMPED_HEAD_END - MAGIC_AT] {
    let mut head = [0u8; STAMPED_HEAD_END - MAGIC_AT];
    head.copy_from_slice(&batch[MAGIC_AT..STAMPED_HEAD_END]);
    let at = |field: usize| field - MAGIC_AT;
    let attributes = i16_at(batch, ATTRIBUTES_AT) | LOG_APPEND_TIME_FLAG;
    head[at(ATTRIBUTES_AT)..at(ATTRIBUTES_AT) + 2].copy_from_slice(&attributes.to_be_bytes());
    head[at(MAX_TIMESTAMP_AT)..].copy_from_slice(&now.to_be_bytes());
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&head[at(ATTRIBUTES_AT)..]),
        &batch[STAMPED_HEAD_END..],
    );
    head[at(CRC_AT)..at(ATTRIBUTES_AT)].copy_from_slice(&crc.to_be_bytes());
    head
}

/// Splits a run of concatenated batches (as a Produce request carries them) into slices.
pub fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            return Err("trailing bytes shorter than a batch header".into());
        }
        let len = i32_at(bytes, 8);
        if len < 0 || 12 + len as usize > bytes.len() {
            return Err(format!(
                "batch length {len} runs past the end of the records"
            ));
        }
        let (batch, rest) = bytes.split_at(12 + len as usize);
        out.push(batch);
        bytes = rest;
    }
    Ok(out)
}

/// The store's view of this format.
pub struct KafkaBatchFormat;

impl FrameFormat for KafkaBatchFormat {
    fn validate(&self, frame: &[u8]) -> Result<FrameInfo, String> {
        validate(frame).map(|h| h.info)
    }
    fn describe(&self, head: &[u8]) -> Option<FrameInfo> {
        describe(head).map(|h| h.info)
    }
    fn describe_len(&self) -> usize {
        BATCH_HEADER_LEN
    }
}
