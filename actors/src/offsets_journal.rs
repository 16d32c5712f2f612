//! Committed offsets of every group, kept durable in a journal: a log of commit frames, as
//! Kafka keeps them in `__consumer_offsets`.
//!
//! A commit is one frame appended to the page cache (microseconds, and it survives a killed
//! process); fsyncs follow the journal's flush policy. On start the journal is replayed from its
//! start offset. When the journal has grown well past the live state, the live state is written
//! again as a snapshot and everything before it is dropped, so replay stays short.
//!
//! Only the [`OffsetsJournal`] actor writes the journal. Group actors own their offsets in memory
//! and send every change here before answering the client.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use spool_store::{FrameFormat, FrameInfo, Log, LogConfig, MetaStore, FRAME_HEADER_LEN};
use tracing::{error, info};

use crate::BrokerError;

/// Where the journal lives under the data directory, and its key in the log-start table.
pub const JOURNAL_DIR: &str = "__group_offsets";

/// A committed offset, as OffsetCommit carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_ms: i64,
}

/// A partition of a topic, as groups key their offsets.
pub type TopicPartition = (String, i32);

/// Every group's offsets.
pub type AllOffsets = HashMap<String, HashMap<TopicPartition, CommittedOffset>>;

/// One frame of the journal: changes to one group's offsets (`None` deletes).
#[derive(Debug, Serialize, Deserialize)]
struct JournalFrame {
    group: String,
    changes: Vec<(String, i32, Option<CommittedOffset>)>,
}

/// Frame payload: `crc32c: u32` over the rest, `commit_ms: i64`, then the JSON of a
/// [`JournalFrame`]. Each frame takes one offset of the journal.
struct JournalFormat;

const CRC_AT: usize = FRAME_HEADER_LEN;
const TIME_AT: usize = CRC_AT + 4;
const BODY_AT: usize = TIME_AT + 8;

impl FrameFormat for JournalFormat {
    fn validate(&self, frame: &[u8]) -> Result<FrameInfo, String> {
        if frame.len() < BODY_AT {
            return Err("journal frame shorter than its header".into());
        }
        let crc = u32::from_be_bytes(frame[CRC_AT..TIME_AT].try_into().unwrap());
        if crc32c::crc32c(&frame[TIME_AT..]) != crc {
            return Err("journal frame CRC mismatch".into());
        }
        self.describe(frame).ok_or_else(|| "short frame".into())
    }

    fn describe(&self, head: &[u8]) -> Option<FrameInfo> {
        let ts = head.get(TIME_AT..BODY_AT)?;
        Some(FrameInfo {
            last_offset_delta: 0,
            max_timestamp: i64::from_be_bytes(ts.try_into().ok()?),
            writer: None,
        })
    }

    fn describe_len(&self) -> usize {
        BODY_AT
    }
}

fn encode(frame: &JournalFrame, now_ms: i64) -> Result<Vec<u8>, BrokerError> {
    let body = serde_json::to_vec(frame)
        .map_err(|e| BrokerError::Storage(spool_store::StoreError::from(e)))?;
    let mut out = Vec::with_capacity(BODY_AT + body.len());
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&((BODY_AT - FRAME_HEADER_LEN + body.len()) as i32).to_be_bytes());
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&now_ms.to_be_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out[TIME_AT..]);
    out[CRC_AT..TIME_AT].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// The journal writer.
pub struct OffsetsJournal {
    log: Log,
    meta: Arc<MetaStore>,
    /// The live state, for snapshots.
    live: AllOffsets,
    /// Journal bytes when the last snapshot was written.
    size_after_snapshot: u64,
    sync_in_flight: bool,
}

/// Journal settings: small segments so that dropped history is deleted soon.
fn journal_config(flush_ms: Option<u64>) -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024 * 1024,
        flush_ms,
        flush_messages: None,
        retention_ms: None,
        retention_bytes: None,
        max_message_bytes: 64 * 1024 * 1024,
        ..LogConfig::default()
    }
}

/// A snapshot is written once the journal is this much larger than after the last one.
const SNAPSHOT_GROWTH: u64 = 64 * 1024 * 1024;

impl OffsetsJournal {
    /// Opens (recovering) the journal under `data_dir` and replays it.
    pub fn open(
        data_dir: &Path,
        meta: Arc<MetaStore>,
        flush_ms: Option<u64>,
    ) -> Result<(OffsetsJournal, Vec<String>), BrokerError> {
        let start = meta.log_start_offset(JOURNAL_DIR, 0)?;
        let log = Log::open(
            &data_dir.join(JOURNAL_DIR),
            journal_config(flush_ms),
            Arc::new(JournalFormat),
            start,
        )?;
        let mut live = AllOffsets::new();
        let mut offset = log.log_start_offset();
        let mut frames = 0u64;
        while offset < log.next_offset() {
            let bytes = log.read(offset, 4 * 1024 * 1024)?;
            let mut pos = 0;
            while pos + BODY_AT <= bytes.len() {
                let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap()) as u64;
                let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
                let end = pos + FRAME_HEADER_LEN + len;
                let frame: JournalFrame = serde_json::from_slice(&bytes[pos + BODY_AT..end])
                    .map_err(|e| BrokerError::Storage(spool_store::StoreError::from(e)))?;
                apply(&mut live, frame);
                frames += 1;
                offset = base + 1;
                pos = end;
            }
        }
        let groups = live.len();
        info!(frames, groups, "group offsets replayed");
        let size = log.size_bytes();
        let groups = live.keys().cloned().collect();
        Ok((
            OffsetsJournal {
                log,
                meta,
                live,
                size_after_snapshot: size,
                sync_in_flight: false,
            },
            groups,
        ))
    }

    fn append(&mut self, frame: &JournalFrame) -> Result<(), BrokerError> {
        let bytes = encode(frame, now_ms())?;
        let info = JournalFormat
            .validate(&bytes)
            .map_err(BrokerError::CorruptBatch)?;
        self.log.append(&[&bytes], &info)?;
        Ok(())
    }

    /// Writes the live state again and drops the journal before it.
    fn snapshot(&mut self) -> Result<(), BrokerError> {
        let start = self.log.next_offset();
        let groups: Vec<JournalFrame> = self
            .live
            .iter()
            .map(|(group, offsets)| JournalFrame {
                group: group.clone(),
                changes: offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, Some(c.clone())))
                    .collect(),
            })
            .collect();
        for frame in &groups {
            self.append(frame)?;
        }
        // The snapshot must be on disk before the history it replaces is dropped.
        self.log.flush()?;
        self.meta.set_log_start_offset(JOURNAL_DIR, 0, start)?;
        self.log.delete_records_before(start)?;
        self.size_after_snapshot = self.log.size_bytes();
        info!(
            groups = groups.len(),
            start, "group offsets journal compacted"
        );
        Ok(())
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.sync_in_flight || !self.log.is_dirty() {
            return;
        }
        let due = self
            .log
            .config()
            .flush_ms
            .is_some_and(|ms| self.log.flushed_offset() < self.log.next_offset() && ms > 0);
        if !due {
            return;
        }
        let job = match self.log.prepare_sync() {
            Ok(job) => job,
            Err(e) => return error!(error = %e, "offsets journal sync failed"),
        };
        self.sync_in_flight = true;
        let fut = tokio::task::spawn_blocking(move || {
            let r = job.run();
            (job, r)
        });
        ctx.spawn(fut.into_actor(self).map(|res, act, _| {
            act.sync_in_flight = false;
            match res {
                Ok((job, Ok(()))) => {
                    if let Err(e) = act.log.complete_sync(&job) {
                        error!(error = %e, "offsets journal sync failed");
                    }
                }
                Ok((_, Err(e))) => error!(error = %e, "offsets journal fsync failed"),
                Err(e) => error!(error = %e, "offsets journal fsync task failed"),
            }
        }));
    }
}

fn apply(live: &mut AllOffsets, frame: JournalFrame) {
    let offsets = live.entry(frame.group.clone()).or_default();
    for (topic, partition, change) in frame.changes {
        match change {
            Some(c) => {
                offsets.insert((topic, partition), c);
            }
            None => {
                offsets.remove(&(topic, partition));
            }
        }
    }
    if offsets.is_empty() {
        live.remove(&frame.group);
    }
}

/// Milliseconds since the Unix epoch, as commit timestamps record them.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Actor for OffsetsJournal {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let every =
            Duration::from_millis(self.log.config().flush_ms.unwrap_or(1000).clamp(1, 1000));
        ctx.run_interval(every, |act, ctx| act.tick(ctx));
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        if let Err(e) = self.log.flush() {
            error!(error = %e, "offsets journal flush at stop failed");
        }
    }
}

/// Records changes to one group's offsets; answered once they are in the journal.
#[derive(Message)]
#[rtype(result = "Result<(), BrokerError>")]
pub struct RecordOffsets {
    pub group: String,
    /// `None` deletes the partition's offset.
    pub changes: Vec<(TopicPartition, Option<CommittedOffset>)>,
}

impl Handler<RecordOffsets> for OffsetsJournal {
    type Result = Result<(), BrokerError>;

    fn handle(&mut self, msg: RecordOffsets, _: &mut Context<Self>) -> Self::Result {
        let frame = JournalFrame {
            group: msg.group,
            changes: msg
                .changes
                .into_iter()
                .map(|((t, p), c)| (t, p, c))
                .collect(),
        };
        self.append(&frame)?;
        apply(&mut self.live, frame);
        if self.log.size_bytes() > self.size_after_snapshot + SNAPSHOT_GROWTH {
            self.snapshot()?;
        }
        Ok(())
    }
}

/// One group's offsets, as a (re)starting group actor loads them.
#[derive(Message)]
#[rtype(result = "HashMap<TopicPartition, CommittedOffset>")]
pub struct LoadGroupOffsets {
    pub group: String,
}

impl Handler<LoadGroupOffsets> for OffsetsJournal {
    type Result = MessageResult<LoadGroupOffsets>;

    fn handle(&mut self, msg: LoadGroupOffsets, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.live.get(&msg.group).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(offset: i64) -> Option<CommittedOffset> {
        Some(CommittedOffset {
            offset,
            leader_epoch: -1,
            metadata: format!("m{offset}"),
            commit_ms: 1,
        })
    }

    #[test]
    fn offsets_survive_reopen_and_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(&dir.path().join("meta.redb")).unwrap());
        {
            let (mut j, groups) = OffsetsJournal::open(dir.path(), meta.clone(), None).unwrap();
            assert!(groups.is_empty());
            for i in 0..100 {
                let frame = JournalFrame {
                    group: "g".into(),
                    changes: vec![("t".into(), i % 3, commit(i as i64))],
                };
                j.append(&frame).unwrap();
                apply(&mut j.live, frame);
            }
            let gone = JournalFrame {
                group: "h".into(),
                changes: vec![("t".into(), 0, commit(5)), ("t".into(), 0, None)],
            };
            j.append(&gone).unwrap();
            apply(&mut j.live, gone);
            j.snapshot().unwrap();
            let after = JournalFrame {
                group: "g".into(),
                changes: vec![("u".into(), 0, commit(7))],
            };
            j.append(&after).unwrap();
            j.log.flush().unwrap();
        }
        let (j, groups) = OffsetsJournal::open(dir.path(), meta, None).unwrap();
        assert_eq!(groups, ["g"]);
        let g = &j.live["g"];
        assert_eq!(g[&("t".to_string(), 0)].offset, 99);
        assert_eq!(g[&("t".to_string(), 1)].offset, 97);
        assert_eq!(g[&("t".to_string(), 1)].metadata, "m97");
        assert_eq!(g[&("u".to_string(), 0)].offset, 7);
        assert!(!j.live.contains_key("h"), "deleted offsets stay deleted");
        assert!(
            j.log.log_start_offset() > 0,
            "history before the snapshot is dropped"
        );
    }
}
