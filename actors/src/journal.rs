//! A durable journal of state changes: a log of frames replayed on start, with snapshots so that
//! replay stays short. Group offsets and queue delivery state are both kept this way, as Kafka
//! keeps them in `__consumer_offsets` and `__share_group_state`.
//!
//! A change is one frame appended to the page cache (microseconds, and it survives a killed
//! process); fsyncs follow the journal's flush policy. When the journal has grown well past the
//! live state, the live state is written again as a snapshot and everything before it is
//! dropped. Each journal has exactly one writer: the actor that owns the [`Journal`].

use std::path::Path;
use std::sync::Arc;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use spool_store::{FrameFormat, FrameInfo, Log, LogConfig, MetaStore, FRAME_HEADER_LEN};
use tracing::{error, info};

use crate::BrokerError;

/// State rebuilt by replaying frames.
pub trait JournalState: Default {
    /// One change, as written to the journal (JSON).
    type Frame: Serialize + DeserializeOwned;
    /// Applies one change.
    fn apply(&mut self, frame: Self::Frame);
    /// Frames that rebuild the whole state from nothing.
    fn snapshot(&self) -> Vec<Self::Frame>;
}

/// Frame payload: `crc32c: u32` over the rest, `time_ms: i64`, then the JSON of a frame. Each
/// frame takes one offset of the journal.
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

fn json_error(e: serde_json::Error) -> BrokerError {
    BrokerError::Storage(spool_store::StoreError::from(e))
}

fn encode<F: Serialize>(frame: &F, now_ms: i64) -> Result<Vec<u8>, BrokerError> {
    let body = serde_json::to_vec(frame).map_err(json_error)?;
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

/// Where the journals live and how they are written: what a supervisor needs to open one
/// again after its actor ended.
#[derive(Clone)]
pub struct JournalPlace {
    pub data_dir: std::path::PathBuf,
    pub meta: Arc<MetaStore>,
    /// The fsync interval (`None`: the log's default policy).
    pub flush_ms: Option<u64>,
}

impl JournalPlace {
    /// Opens (recovering) the journal `name` here and replays it.
    pub fn open<S: JournalState + 'static>(
        &self,
        name: &'static str,
    ) -> Result<Journal<S>, BrokerError> {
        Journal::open(&self.data_dir, name, self.meta.clone(), self.flush_ms)
    }
}

/// A journal and the state it holds.
pub struct Journal<S: JournalState> {
    /// Directory under the data directory, and the journal's key in the log-start table.
    name: &'static str,
    log: Log,
    meta: Arc<MetaStore>,
    state: S,
    /// Journal bytes when the last snapshot was written.
    size_after_snapshot: u64,
    sync_in_flight: bool,
}

impl<S: JournalState + 'static> Journal<S> {
    /// Opens (recovering) the journal `name` under `data_dir` and replays it.
    pub fn open(
        data_dir: &Path,
        name: &'static str,
        meta: Arc<MetaStore>,
        flush_ms: Option<u64>,
    ) -> Result<Journal<S>, BrokerError> {
        let start = meta.log_start_offset(name, 0)?;
        let log = Log::open(
            &data_dir.join(name),
            journal_config(flush_ms),
            Arc::new(JournalFormat),
            start,
        )?;
        let mut state = S::default();
        let mut offset = log.log_start_offset();
        let mut frames = 0u64;
        while offset < log.next_offset() {
            let bytes = log.read(offset, 4 * 1024 * 1024)?;
            let mut pos = 0;
            while pos + BODY_AT <= bytes.len() {
                let base = i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap()) as u64;
                let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
                let end = pos + FRAME_HEADER_LEN + len;
                let frame: S::Frame =
                    serde_json::from_slice(&bytes[pos + BODY_AT..end]).map_err(json_error)?;
                state.apply(frame);
                frames += 1;
                offset = base + 1;
                pos = end;
            }
        }
        info!(journal = name, frames, "journal replayed");
        let size = log.size_bytes();
        Ok(Journal {
            name,
            log,
            meta,
            state,
            size_after_snapshot: size,
            sync_in_flight: false,
        })
    }

    /// The state as of the last frame.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// Writes a change (to the page cache) and applies it.
    pub fn record(&mut self, frame: S::Frame) -> Result<(), BrokerError> {
        self.append(&frame)?;
        self.state.apply(frame);
        if self.log.size_bytes() > self.size_after_snapshot + SNAPSHOT_GROWTH {
            self.snapshot()?;
        }
        Ok(())
    }

    fn append(&mut self, frame: &S::Frame) -> Result<(), BrokerError> {
        let bytes = encode(frame, crate::offsets_journal::now_ms())?;
        let info = JournalFormat
            .validate(&bytes)
            .map_err(BrokerError::CorruptBatch)?;
        self.log.append(&[&bytes], &info)?;
        Ok(())
    }

    /// Writes the live state again and drops the journal before it.
    pub fn snapshot(&mut self) -> Result<(), BrokerError> {
        let start = self.log.next_offset();
        let frames = self.state.snapshot();
        for frame in &frames {
            self.append(frame)?;
        }
        // The snapshot must be on disk before the history it replaces is dropped.
        self.log.flush()?;
        self.meta.set_log_start_offset(self.name, 0, start)?;
        self.log.delete_records_before(start)?;
        self.size_after_snapshot = self.log.size_bytes();
        info!(
            journal = self.name,
            frames = frames.len(),
            start,
            "journal compacted"
        );
        Ok(())
    }

    /// Flushes everything written (at stop).
    pub fn flush(&mut self) {
        if let Err(e) = self.log.flush() {
            error!(journal = self.name, error = %e, "journal flush failed");
        }
    }

    /// Has the owning actor fsync the journal in the background by its flush policy: call from
    /// the actor's `started`. `journal` finds the journal in the actor.
    pub fn keep_synced<A>(act: &mut A, ctx: &mut Context<A>, journal: fn(&mut A) -> &mut Journal<S>)
    where
        A: Actor<Context = Context<A>>,
    {
        let every = journal(act).tick_interval();
        ctx.run_interval(every, move |act, ctx| Journal::tick(act, ctx, journal));
    }

    /// How often [`Journal::tick`] runs.
    fn tick_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.log.config().flush_ms.unwrap_or(1000).clamp(1, 1000))
    }

    /// Starts a background fsync when the flush policy asks for one. `journal` finds the
    /// journal in the owning actor.
    fn tick<A>(act: &mut A, ctx: &mut Context<A>, journal: fn(&mut A) -> &mut Journal<S>)
    where
        A: Actor<Context = Context<A>>,
    {
        let j = journal(act);
        if j.sync_in_flight || !j.log.is_dirty() {
            return;
        }
        let due = j
            .log
            .config()
            .flush_ms
            .is_some_and(|ms| j.log.flushed_offset() < j.log.next_offset() && ms > 0);
        if !due {
            return;
        }
        let name = j.name;
        let job = match j.log.prepare_sync() {
            Ok(job) => job,
            Err(e) => return error!(journal = name, error = %e, "journal sync failed"),
        };
        j.sync_in_flight = true;
        let fut = tokio::task::spawn_blocking(move || {
            let r = job.run();
            (job, r)
        });
        ctx.spawn(fut.into_actor(act).map(move |res, act, _| {
            let j = journal(act);
            j.sync_in_flight = false;
            match res {
                Ok((job, Ok(()))) => {
                    if let Err(e) = j.log.complete_sync(&job) {
                        error!(journal = name, error = %e, "journal sync failed");
                    }
                }
                Ok((_, Err(e))) => error!(journal = name, error = %e, "journal fsync failed"),
                Err(e) => error!(journal = name, error = %e, "journal fsync task failed"),
            }
        }));
    }

    #[cfg(test)]
    pub(crate) fn log(&self) -> &Log {
        &self.log
    }

    #[cfg(test)]
    pub(crate) fn flush_for_test(&mut self) {
        self.log.flush().unwrap();
    }
}
