//! A partition's log: an ordered set of segments with one active segment at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::frame::{FrameFormat, FrameInfo, FRAME_HEADER_LEN};
use crate::segment::{now_ms, ScanEnd, Segment};
use crate::{LogConfig, StoreError};

const CHECKPOINT_FILE: &str = "recovery-point";

/// An append-only log of frames in segment files. Single writer: the caller serializes access
/// (in Spool, the partition actor owns its `Log`).
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    format: Arc<dyn FrameFormat>,
    segments: BTreeMap<u64, Segment>,
    log_start_offset: u64,
    /// Offset up to which everything is on disk (fsynced).
    flushed_offset: u64,
    /// Entries appended since the last completed sync.
    unflushed_entries: u64,
    /// Bytes appended since the last completed sync.
    unflushed_bytes: u64,
    /// Files of segments rolled since the last sync: they still need an fsync.
    rolled_unsynced: Vec<File>,
    /// When the recovery checkpoint was last written (see [`CHECKPOINT_EVERY`]).
    checkpoint_written: std::time::Instant,
}

/// How often a sync also rewrites the recovery checkpoint. Writing it (a file and a rename)
/// after every fsync cost a partition synced per message more than the append itself; a
/// checkpoint a second old only makes recovery scan that second again (Kafka checkpoints its
/// recovery point every minute).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub base_offset: u64,
    pub last_offset: u64,
    /// True when the flush policy asks that this append's acknowledgement wait for an fsync.
    pub needs_sync: bool,
}

/// A prepared fsync, to run off the writer's thread (group commit: every append made before
/// [`Log::prepare_sync`] is durable once [`SyncJob::run`] returns).
pub struct SyncJob {
    files: Vec<File>,
    /// Everything below this offset is durable after the job.
    pub upto_offset: u64,
    segment_base: u64,
    segment_size: u64,
    entries: u64,
    bytes: u64,
}

impl SyncJob {
    /// Performs the fsyncs. Blocking: call from a thread that may block.
    pub fn run(&self) -> std::io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        Ok(())
    }
}

impl Log {
    /// Opens (recovering) or creates the log in `dir`. Frames flushed before the last
    /// checkpoint are trusted; everything after is validated and a bad tail is truncated.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        format: Arc<dyn FrameFormat>,
        log_start_offset: u64,
    ) -> Result<Log, StoreError> {
        std::fs::create_dir_all(dir).map_err(StoreError::io(dir))?;
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .map_err(StoreError::io(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".log")?.parse::<u64>().ok()
            })
            .collect();
        bases.sort_unstable();
        let checkpoint = read_checkpoint(dir);
        let mut segments = BTreeMap::new();
        let mut scanned_bytes = 0u64;
        let mut expected_next: Option<u64> = None;
        let mut cut = false;
        for base in bases {
            let path = dir.join(crate::segment::file_name(base));
            if cut || expected_next.is_some_and(|n| n != base) {
                warn!(path = %path.display(), "deleting segment after a truncated or discontinuous tail");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(path.with_extension("index"));
                let _ = std::fs::remove_file(path.with_extension("timeindex"));
                cut = true;
                continue;
            }
            let trusted = match checkpoint {
                Some(c) if base < c.segment_base => {
                    let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    // A closed segment before the checkpoint: fully flushed; its end offset is
                    // the next segment's base, found when that one is opened.
                    Some((len, u64::MAX))
                }
                Some(c) if base == c.segment_base => Some((c.segment_size, c.next_offset)),
                _ => None,
            };
            let (seg, end) = match trusted {
                Some((len, u64::MAX)) => open_closed_segment(&path, base, len, &*format, &config)?,
                other => {
                    let from = other.map_or(0, |t| t.0);
                    let file_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                    scanned_bytes += file_len.saturating_sub(from);
                    Segment::open(
                        path.clone(),
                        base,
                        other,
                        &*format,
                        config.index_interval_bytes,
                    )?
                }
            };
            if let ScanEnd::Truncated { position, reason } = &end {
                warn!(segment = %seg.path.display(), position, %reason, "truncated corrupt or torn tail");
                cut = true;
            }
            expected_next = Some(seg.next_offset);
            segments.insert(base, seg);
        }
        if segments.is_empty() {
            let seg = Segment::create(dir, log_start_offset)?;
            segments.insert(log_start_offset, seg);
        }
        let next = segments.values().next_back().unwrap().next_offset;
        let log_start_offset = log_start_offset
            .max(*segments.keys().next().unwrap())
            .min(next);
        info!(dir = %dir.display(), segments = segments.len(), log_start_offset, next_offset = next, scanned_bytes, "log recovered");
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            format,
            segments,
            log_start_offset,
            flushed_offset: next,
            unflushed_entries: 0,
            unflushed_bytes: 0,
            rolled_unsynced: Vec::new(),
            checkpoint_written: std::time::Instant::now(),
        };
        log.write_checkpoint()?;
        Ok(log)
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    /// First offset still readable.
    pub fn log_start_offset(&self) -> u64 {
        self.log_start_offset
    }

    /// Offset the next append will get (Kafka's log end offset / high watermark on one node).
    pub fn next_offset(&self) -> u64 {
        self.active().next_offset
    }

    /// Offset below which everything is fsynced.
    pub fn flushed_offset(&self) -> u64 {
        self.flushed_offset
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active(&self) -> &Segment {
        self.segments
            .values()
            .next_back()
            .expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .values_mut()
            .next_back()
            .expect("a log always has a segment")
    }

    /// Appends one frame, given as the concatenation of `parts` (so a caller can replace a few
    /// bytes without copying the rest), with the assigned base offset written over its first 8
    /// bytes. The first part holds at least the frame header. The frame is in the OS page cache
    /// when this returns; see [`AppendOutcome::needs_sync`].
    pub fn append(
        &mut self,
        parts: &[&[u8]],
        info: &FrameInfo,
    ) -> Result<AppendOutcome, StoreError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let head = parts.first().copied().unwrap_or_default();
        if head.len() < FRAME_HEADER_LEN
            || i32::from_be_bytes(head[8..12].try_into().unwrap()) as usize
                != len - FRAME_HEADER_LEN
        {
            return Err(StoreError::MalformedFrame(
                "length field does not match the frame".into(),
            ));
        }
        if len > self.config.max_message_bytes as usize + FRAME_HEADER_LEN {
            return Err(StoreError::FrameTooLarge {
                size: len,
                limit: self.config.max_message_bytes as usize,
            });
        }
        self.maybe_roll(len as u64)?;
        let base = self.next_offset();
        let interval = self.config.index_interval_bytes;
        self.active_mut().append(base, parts, info, interval)?;
        self.unflushed_entries += info.last_offset_delta as u64 + 1;
        self.unflushed_bytes += len as u64;
        let needs_sync = self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_entries >= n);
        Ok(AppendOutcome {
            base_offset: base,
            last_offset: base + info.last_offset_delta as u64,
            needs_sync,
        })
    }

    /// Rolls to a new segment when the active one is full or old.
    fn maybe_roll(&mut self, incoming: u64) -> Result<(), StoreError> {
        let (size, created, next) = {
            let a = self.active();
            (a.size, a.created_ms, a.next_offset)
        };
        let full = size > 0 && size + incoming > self.config.segment_bytes;
        let old = size > 0 && now_ms().saturating_sub(created) >= self.config.segment_ms;
        if !(full || old) {
            return Ok(());
        }
        let active = self.active_mut();
        active.index.flush()?;
        let file = active
            .file
            .try_clone()
            .map_err(StoreError::io(&active.path))?;
        self.rolled_unsynced.push(file);
        let seg = Segment::create(&self.dir, next)?;
        info!(dir = %self.dir.display(), base_offset = next, reason = if full { "size" } else { "age" }, "segment rolled");
        self.segments.insert(next, seg);
        Ok(())
    }

    /// Collects what an fsync must cover now. Index buffers are pushed to the OS here.
    pub fn prepare_sync(&mut self) -> Result<SyncJob, StoreError> {
        let (entries, bytes) = (self.unflushed_entries, self.unflushed_bytes);
        let mut files = std::mem::take(&mut self.rolled_unsynced);
        let active = self.active_mut();
        active.index.flush()?;
        files.push(
            active
                .file
                .try_clone()
                .map_err(StoreError::io(&active.path))?,
        );
        Ok(SyncJob {
            files,
            upto_offset: active.next_offset,
            segment_base: active.base_offset,
            segment_size: active.size,
            entries,
            bytes,
        })
    }

    /// Records a completed sync: moves the flushed offset, and writes the recovery checkpoint
    /// when the last one is older than [`CHECKPOINT_EVERY`].
    pub fn complete_sync(&mut self, job: &SyncJob) -> Result<(), StoreError> {
        let due = self.checkpoint_written.elapsed() >= CHECKPOINT_EVERY;
        self.record_sync(job, due)
    }

    /// Synchronous flush (on shutdown and in tests). The checkpoint is always written: the
    /// next start scans nothing.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let job = self.prepare_sync()?;
        job.run().map_err(StoreError::io(&self.dir))?;
        self.record_sync(&job, true)
    }

    fn record_sync(&mut self, job: &SyncJob, checkpoint: bool) -> Result<(), StoreError> {
        self.unflushed_entries = self.unflushed_entries.saturating_sub(job.entries);
        self.unflushed_bytes = self.unflushed_bytes.saturating_sub(job.bytes);
        if job.upto_offset > self.flushed_offset {
            self.flushed_offset = job.upto_offset;
        }
        if !checkpoint {
            return Ok(());
        }
        self.write_checkpoint_at(job.segment_base, job.segment_size, job.upto_offset)
    }

    /// Bytes appended and not yet covered by a completed sync.
    pub fn unflushed_bytes(&self) -> u64 {
        self.unflushed_bytes
    }

    /// True when something was appended since the last sync.
    pub fn is_dirty(&self) -> bool {
        self.unflushed_entries > 0 || !self.rolled_unsynced.is_empty()
    }

    fn write_checkpoint(&mut self) -> Result<(), StoreError> {
        let (b, s, n) = {
            let a = self.active();
            (a.base_offset, a.size, a.next_offset)
        };
        self.write_checkpoint_at(b, s, n)
    }

    /// Writes `recovery-point` atomically (temp file and rename). It is not fsynced: losing it
    /// only makes the next recovery scan more.
    fn write_checkpoint_at(&mut self, base: u64, size: u64, next: u64) -> Result<(), StoreError> {
        let path = self.dir.join(CHECKPOINT_FILE);
        let tmp = self.dir.join("recovery-point.tmp");
        std::fs::write(&tmp, format!("1 {base} {size} {next}\n")).map_err(StoreError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(StoreError::io(&path))?;
        self.checkpoint_written = std::time::Instant::now();
        Ok(())
    }

    fn check_range(&self, offset: u64) -> Result<(), StoreError> {
        let end = self.next_offset();
        if offset < self.log_start_offset || offset > end {
            return Err(StoreError::OffsetOutOfRange {
                offset,
                start: self.log_start_offset,
                end,
            });
        }
        Ok(())
    }

    /// Reads whole frames from the one containing `offset`, up to `max_bytes` (at least one
    /// frame). Reading at the end of the log returns no bytes.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Bytes, StoreError> {
        self.check_range(offset)?;
        if offset == self.next_offset() {
            return Ok(Bytes::new());
        }
        let (_, seg) = self
            .segments
            .range(..=offset)
            .next_back()
            .expect("offset within range has a segment");
        if offset >= seg.next_offset {
            // Between segments cannot happen in a contiguous log, but be safe.
            return Ok(Bytes::new());
        }
        let pos = seg.find_position(offset)?;
        seg.read_frames(pos, max_bytes)
    }

    /// The first frame whose newest entry has a timestamp at or after `timestamp`, with its
    /// bytes, so the caller can find the exact entry. `None` when no entry is that recent.
    pub fn frame_for_timestamp(&self, timestamp: i64) -> Result<Option<Bytes>, StoreError> {
        let Some(seg) = self
            .segments
            .values()
            .find(|s| s.max_timestamp >= timestamp && s.next_offset > self.log_start_offset)
        else {
            return Ok(None);
        };
        // Start from the last time-index entry below the target: nothing before it qualifies.
        let start_rel = seg
            .index
            .times
            .iter()
            .take_while(|t| t.timestamp < timestamp)
            .last()
            .map_or(0, |t| t.relative_offset);
        let start_offset = (seg.base_offset + start_rel as u64).max(self.log_start_offset);
        let mut pos = seg.find_position(start_offset)?;
        let need = self.format.describe_len();
        while pos < seg.size {
            let (_, len) = seg.header_at(pos)?;
            let head = seg.read_at(pos, (need as u64).min(len) as usize)?;
            let info = self
                .format
                .describe(&head)
                .ok_or_else(|| StoreError::MalformedFrame("undescribable frame".into()))?;
            if info.max_timestamp >= timestamp {
                return Ok(Some(seg.read_at(pos, len as usize)?.freeze()));
            }
            pos += len;
        }
        Ok(None)
    }

    /// The largest timestamp in the log and the base offset of the frame holding it.
    pub fn max_timestamp(&self) -> Option<(i64, u64)> {
        self.segments
            .values()
            .filter(|s| s.max_timestamp >= 0)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| (s.max_timestamp, s.offset_of_max_timestamp))
    }

    /// Frames at the tail of the log written by idempotent writers, oldest first, for
    /// rebuilding writer state after a restart: (base offset, info) of the active segment.
    pub fn tail_frames(&self) -> Result<Vec<(u64, FrameInfo)>, StoreError> {
        let seg = self.active();
        let need = self.format.describe_len();
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < seg.size {
            let (base, len) = seg.header_at(pos)?;
            let head = seg.read_at(pos, (need as u64).min(len) as usize)?;
            if let Some(info) = self.format.describe(&head) {
                out.push((base, info));
            }
            pos += len;
        }
        Ok(out)
    }

    /// Moves the log start offset forward (Kafka's DeleteRecords) and deletes segments that
    /// lie wholly below it. Returns the new start offset.
    pub fn delete_records_before(&mut self, offset: u64) -> Result<u64, StoreError> {
        self.check_range(offset)?;
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
        }
        self.delete_segments_while(|seg, log| seg.next_offset <= log.log_start_offset);
        Ok(self.log_start_offset)
    }

    /// Applies `retention.ms` and `retention.bytes` to closed segments. Returns how many were
    /// deleted. The start offset moves to the first remaining segment.
    pub fn apply_retention(&mut self, now_ms: u64) -> usize {
        let retention_ms = self.config.retention_ms;
        let retention_bytes = self.config.retention_bytes;
        let mut size = self.size_bytes();
        let before = self.segments.len();
        self.delete_segments_while(|seg, _| {
            let expired = retention_ms.is_some_and(|ms| {
                seg.max_timestamp >= 0 && (seg.max_timestamp as u64) + ms < now_ms
            });
            let oversized = retention_bytes.is_some_and(|b| size > b && size - seg.size >= b);
            if expired || oversized {
                size -= seg.size;
                true
            } else {
                false
            }
        });
        before - self.segments.len()
    }

    /// Deletes the oldest closed segments while `pred` holds (never the active one).
    fn delete_segments_while(&mut self, mut pred: impl FnMut(&Segment, &Log) -> bool) {
        while self.segments.len() > 1 {
            let (&base, seg) = self.segments.iter().next().unwrap();
            if !pred(seg, self) {
                break;
            }
            let seg = self.segments.remove(&base).unwrap();
            let next = seg.next_offset;
            info!(segment = %seg.path.display(), "segment deleted");
            seg.delete_files();
            self.log_start_offset = self.log_start_offset.max(next);
        }
        if self.segments.len() == 1 {
            let active_base = self.active().base_offset;
            self.log_start_offset = self.log_start_offset.max(active_base);
        }
    }

    /// Rolls the active segment if it is older than `segment.ms`.
    pub fn roll_if_old(&mut self) -> Result<(), StoreError> {
        self.maybe_roll(0)
    }

    /// Removes the log's directory and everything in it.
    pub fn delete(self) -> Result<(), StoreError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(StoreError::io(&dir))
    }
}

#[derive(Debug, Clone, Copy)]
struct Checkpoint {
    segment_base: u64,
    segment_size: u64,
    next_offset: u64,
}

fn read_checkpoint(dir: &Path) -> Option<Checkpoint> {
    let text = std::fs::read_to_string(dir.join(CHECKPOINT_FILE)).ok()?;
    let mut it = text.split_whitespace();
    if it.next()? != "1" {
        return None;
    }
    Some(Checkpoint {
        segment_base: it.next()?.parse().ok()?,
        segment_size: it.next()?.parse().ok()?,
        next_offset: it.next()?.parse().ok()?,
    })
}

/// Opens a closed segment that was fully flushed before the checkpoint: its indexes are
/// trusted when present, and the segment is scanned (rebuilding them) when they are not.
fn open_closed_segment(
    path: &Path,
    base: u64,
    len: u64,
    format: &dyn FrameFormat,
    config: &LogConfig,
) -> Result<(Segment, ScanEnd), StoreError> {
    let interval = config.index_interval_bytes;
    let (mut seg, end) = Segment::open(
        path.to_path_buf(),
        base,
        Some((len, base)),
        format,
        interval,
    )?;
    if seg.index.offsets.is_empty() && len > 0 {
        drop(seg);
        return Segment::open(path.to_path_buf(), base, None, format, interval);
    }
    // Find the real end offset from the last indexed frame forward, reading headers only.
    let mut pos = seg.index.offsets.last().map_or(0, |e| e.position as u64);
    let mut next = base;
    while pos < len {
        let (b, flen) = seg.header_at(pos)?;
        let head = seg.read_at(pos, (format.describe_len() as u64).min(flen) as usize)?;
        let info = format.describe(&head).ok_or_else(|| {
            StoreError::MalformedFrame(format!("undescribable frame in {}", path.display()))
        })?;
        next = b + info.last_offset_delta as u64 + 1;
        pos += flen;
    }
    seg.next_offset = next;
    Ok((seg, end))
}
