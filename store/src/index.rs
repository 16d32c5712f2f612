//! Sparse per-segment indexes, held in memory and mirrored to files so recovery need not scan.
//!
//! Offset index entry (8 bytes): `relative_offset: u32 BE`, `position: u32 BE`.
//! Time index entry (12 bytes): `timestamp: i64 BE`, `relative_offset: u32 BE`.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::StoreError;

/// One offset-index entry: the frame starting at `position` has base `relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// One time-index entry: up to the frame with `relative_offset`, no timestamp exceeds
/// `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Both sparse indexes of one segment, with the writers that mirror them to disk.
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    offset_path: PathBuf,
    time_path: PathBuf,
    offset_file: BufWriter<File>,
    time_file: BufWriter<File>,
}

impl SegmentIndex {
    /// Opens the index files beside a segment, loading entries that point inside `valid_len`
    /// bytes of the log. Missing or malformed files load as empty (and are rebuilt by the scan
    /// the caller then does).
    pub fn load(log_path: &Path, valid_len: u64) -> Result<SegmentIndex, StoreError> {
        let offset_path = log_path.with_extension("index");
        let time_path = log_path.with_extension("timeindex");
        let mut offsets: Vec<OffsetEntry> = read_entries(&offset_path, 8)?
            .into_iter()
            .map(|b| OffsetEntry {
                relative_offset: u32::from_be_bytes(b[0..4].try_into().unwrap()),
                position: u32::from_be_bytes(b[4..8].try_into().unwrap()),
            })
            .collect();
        let monotonic = offsets
            .windows(2)
            .all(|w| w[0].relative_offset < w[1].relative_offset && w[0].position < w[1].position);
        if !monotonic {
            offsets.clear();
        }
        offsets.retain(|e| (e.position as u64) < valid_len);
        let last_rel = offsets.last().map(|e| e.relative_offset);
        let mut times: Vec<TimeEntry> = read_entries(&time_path, 12)?
            .into_iter()
            .map(|b| TimeEntry {
                timestamp: i64::from_be_bytes(b[0..8].try_into().unwrap()),
                relative_offset: u32::from_be_bytes(b[8..12].try_into().unwrap()),
            })
            .collect();
        times.retain(|t| Some(t.relative_offset) <= last_rel);
        let mut idx = SegmentIndex {
            offsets,
            times,
            offset_file: BufWriter::new(open_append(&offset_path)?),
            time_file: BufWriter::new(open_append(&time_path)?),
            offset_path,
            time_path,
        };
        idx.rewrite()?;
        Ok(idx)
    }

    pub fn push_offset(&mut self, e: OffsetEntry) -> Result<(), StoreError> {
        self.offsets.push(e);
        let mut b = [0u8; 8];
        b[0..4].copy_from_slice(&e.relative_offset.to_be_bytes());
        b[4..8].copy_from_slice(&e.position.to_be_bytes());
        self.offset_file
            .write_all(&b)
            .map_err(StoreError::io(&self.offset_path))
    }

    pub fn push_time(&mut self, e: TimeEntry) -> Result<(), StoreError> {
        self.times.push(e);
        let mut b = [0u8; 12];
        b[0..8].copy_from_slice(&e.timestamp.to_be_bytes());
        b[8..12].copy_from_slice(&e.relative_offset.to_be_bytes());
        self.time_file
            .write_all(&b)
            .map_err(StoreError::io(&self.time_path))
    }

    /// Position of the last indexed frame whose base is at or below `relative_offset`.
    pub fn lookup(&self, relative_offset: u32) -> u32 {
        let i = self
            .offsets
            .partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Drops entries at or beyond `position` (after the log was truncated there).
    pub fn truncate(&mut self, position: u64) -> Result<(), StoreError> {
        self.offsets.retain(|e| (e.position as u64) < position);
        let last_rel = self.offsets.last().map(|e| e.relative_offset);
        self.times.retain(|t| Some(t.relative_offset) <= last_rel);
        self.rewrite()
    }

    /// Pushes buffered entries to the OS without waiting for the disk.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        self.offset_file
            .flush()
            .map_err(StoreError::io(&self.offset_path))?;
        self.time_file
            .flush()
            .map_err(StoreError::io(&self.time_path))
    }

    /// Rewrites both files from the in-memory entries.
    fn rewrite(&mut self) -> Result<(), StoreError> {
        let mut ob = Vec::with_capacity(self.offsets.len() * 8);
        for e in &self.offsets {
            ob.extend_from_slice(&e.relative_offset.to_be_bytes());
            ob.extend_from_slice(&e.position.to_be_bytes());
        }
        let mut tb = Vec::with_capacity(self.times.len() * 12);
        for e in &self.times {
            tb.extend_from_slice(&e.timestamp.to_be_bytes());
            tb.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        std::fs::write(&self.offset_path, ob).map_err(StoreError::io(&self.offset_path))?;
        std::fs::write(&self.time_path, tb).map_err(StoreError::io(&self.time_path))?;
        self.offset_file = BufWriter::new(open_append(&self.offset_path)?);
        self.time_file = BufWriter::new(open_append(&self.time_path)?);
        Ok(())
    }

    pub fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.offset_path);
        let _ = std::fs::remove_file(&self.time_path);
    }
}

fn open_append(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(StoreError::io(path))
}

/// Reads fixed-size entries; a missing file or a torn trailing entry yields fewer entries.
fn read_entries(path: &Path, size: usize) -> Result<Vec<Vec<u8>>, StoreError> {
    let mut buf = Vec::new();
    match File::open(path) {
        Ok(mut f) => {
            f.read_to_end(&mut buf).map_err(StoreError::io(path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(path)(e)),
    }
    Ok(buf.chunks_exact(size).map(|c| c.to_vec()).collect())
}
