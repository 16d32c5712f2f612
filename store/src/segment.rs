//! One segment: a log file of frames, named by its base offset, with its sparse indexes.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, IoSlice, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};

use crate::frame::{FrameFormat, FrameInfo, FRAME_HEADER_LEN};
use crate::index::{OffsetEntry, SegmentIndex, TimeEntry};
use crate::StoreError;

/// A segment file and what is known about its contents.
/// Reads at least this large are served from a mapping of the file rather than a copy.
const MAP_AT_LEAST: usize = 64 * 1024;

pub(crate) struct Segment {
    pub base_offset: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes of valid frames in the file.
    pub size: u64,
    /// Offset after the last frame.
    pub next_offset: u64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: u64,
    pub index: SegmentIndex,
    /// Bytes appended since the last offset-index entry.
    bytes_since_index: u64,
    /// Wall-clock ms when the segment was created or recovered, for `segment.ms`.
    pub created_ms: u64,
}

/// File name of a segment: the base offset, zero-padded to 20 digits.
pub(crate) fn file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Where a scan of a segment stopped.
pub(crate) enum ScanEnd {
    /// Reached the end of the file cleanly.
    Clean,
    /// Found a torn or corrupt frame at `position` for `reason`; the file was truncated there.
    Truncated { position: u64, reason: String },
}

impl Segment {
    pub fn create(dir: &Path, base_offset: u64) -> Result<Segment, StoreError> {
        let path = dir.join(file_name(base_offset));
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        let index = SegmentIndex::load(&path, 0)?;
        Ok(Segment {
            base_offset,
            path,
            file,
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            index,
            bytes_since_index: 0,
            created_ms: now_ms(),
        })
    }

    /// Opens an existing segment. When `trusted_len` is given, that prefix is known good (it
    /// was flushed before the last checkpoint) and its indexes are used; the rest is scanned.
    /// Without it the whole file is scanned and the indexes rebuilt.
    pub fn open(
        path: PathBuf,
        base_offset: u64,
        trusted: Option<(u64, u64)>,
        format: &dyn FrameFormat,
        index_interval: u32,
    ) -> Result<(Segment, ScanEnd), StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        let file_len = file.metadata().map_err(StoreError::io(&path))?.len();
        let (trusted_len, trusted_next) = match trusted {
            Some((len, next)) if len <= file_len => (len, next),
            _ => (0, base_offset),
        };
        let index = SegmentIndex::load(&path, trusted_len)?;
        let (max_timestamp, offset_of_max_timestamp) = match index.times.last() {
            Some(t) => (t.timestamp, base_offset + t.relative_offset as u64),
            None => (-1, base_offset),
        };
        let mut seg = Segment {
            base_offset,
            path,
            file,
            size: trusted_len,
            next_offset: trusted_next,
            max_timestamp,
            offset_of_max_timestamp,
            index,
            bytes_since_index: 0,
            created_ms: now_ms(),
        };
        if trusted_len == 0 {
            seg.index.truncate(0)?;
            seg.max_timestamp = -1;
        }
        let end = seg.scan_from(trusted_len, file_len, format, index_interval)?;
        Ok((seg, end))
    }

    /// Validates frames from `position` to `file_len`, indexing them; truncates at the first
    /// bad one.
    fn scan_from(
        &mut self,
        mut position: u64,
        file_len: u64,
        format: &dyn FrameFormat,
        index_interval: u32,
    ) -> Result<ScanEnd, StoreError> {
        let scan_file = self.file.try_clone().map_err(StoreError::io(&self.path))?;
        let mut reader = BufReader::with_capacity(1 << 20, scan_file);
        reader
            .seek(SeekFrom::Start(position))
            .map_err(StoreError::io(&self.path))?;
        let mut frame = Vec::new();
        let bad = loop {
            if position == file_len {
                break None;
            }
            if file_len - position < FRAME_HEADER_LEN as u64 {
                break Some("torn frame header".to_string());
            }
            let mut header = [0u8; FRAME_HEADER_LEN];
            reader
                .read_exact(&mut header)
                .map_err(StoreError::io(&self.path))?;
            let base = i64::from_be_bytes(header[0..8].try_into().unwrap());
            let len = i32::from_be_bytes(header[8..12].try_into().unwrap());
            if base < 0 || base as u64 != self.next_offset {
                break Some(format!(
                    "frame base offset {base} where {} was expected",
                    self.next_offset
                ));
            }
            if len <= 0 || position + FRAME_HEADER_LEN as u64 + len as u64 > file_len {
                break Some(format!("frame length {len} runs past the end of the file"));
            }
            frame.clear();
            frame.extend_from_slice(&header);
            frame.resize(FRAME_HEADER_LEN + len as usize, 0);
            reader
                .read_exact(&mut frame[FRAME_HEADER_LEN..])
                .map_err(StoreError::io(&self.path))?;
            let info = match format.validate(&frame) {
                Ok(info) => info,
                Err(reason) => break Some(reason),
            };
            self.note_appended(
                base as u64,
                frame.len() as u64,
                &info,
                index_interval as u64,
            )?;
            position += frame.len() as u64;
        };
        match bad {
            None => Ok(ScanEnd::Clean),
            Some(reason) => {
                self.truncate_at(position)?;
                Ok(ScanEnd::Truncated { position, reason })
            }
        }
    }

    /// Cuts the file and its indexes at `position`.
    pub fn truncate_at(&mut self, position: u64) -> Result<(), StoreError> {
        self.file
            .set_len(position)
            .map_err(StoreError::io(&self.path))?;
        self.file.sync_all().map_err(StoreError::io(&self.path))?;
        self.size = position;
        self.index.truncate(position)
    }

    /// Appends one frame whose base offset is already set; returns its position.
    pub fn append(
        &mut self,
        base: u64,
        parts: &[&[u8]],
        info: &FrameInfo,
        index_interval: u32,
    ) -> Result<u64, StoreError> {
        let position = self.size;
        let base_bytes = (base as i64).to_be_bytes();
        let mut slices: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        slices.push(&base_bytes);
        slices.push(&parts[0][8..]);
        slices.extend_from_slice(&parts[1..]);
        write_all_vectored(&mut self.file, &slices).map_err(StoreError::io(&self.path))?;
        let len = slices.iter().map(|s| s.len() as u64).sum();
        self.note_appended(self.next_offset, len, info, index_interval as u64)?;
        Ok(position)
    }

    /// Updates sizes, offsets and indexes after a frame of `len` bytes at the current end.
    fn note_appended(
        &mut self,
        base: u64,
        len: u64,
        info: &FrameInfo,
        index_interval: u64,
    ) -> Result<(), StoreError> {
        let position = self.size;
        let relative = (base - self.base_offset) as u32;
        if self.index.offsets.is_empty() || self.bytes_since_index >= index_interval {
            self.index.push_offset(OffsetEntry {
                relative_offset: relative,
                position: position as u32,
            })?;
            self.bytes_since_index = 0;
            if info.max_timestamp > self.index.times.last().map_or(-1, |t| t.timestamp) {
                self.index.push_time(TimeEntry {
                    timestamp: info.max_timestamp,
                    relative_offset: relative,
                })?;
            }
        }
        self.bytes_since_index += len;
        if info.max_timestamp > self.max_timestamp {
            self.max_timestamp = info.max_timestamp;
            self.offset_of_max_timestamp = base;
        }
        self.size += len;
        self.next_offset = base + info.last_offset_delta as u64 + 1;
        Ok(())
    }

    /// Reads `len` bytes at `position`.
    pub fn read_at(&self, position: u64, len: usize) -> Result<BytesMut, StoreError> {
        let mut buf = BytesMut::zeroed(len);
        self.file
            .read_exact_at(&mut buf, position)
            .map_err(StoreError::io(&self.path))?;
        Ok(buf)
    }

    /// Reads a frame's header at `position`: its base offset and total length.
    pub fn header_at(&self, position: u64) -> Result<(u64, u64), StoreError> {
        let mut h = [0u8; FRAME_HEADER_LEN];
        self.file
            .read_exact_at(&mut h, position)
            .map_err(StoreError::io(&self.path))?;
        let base = i64::from_be_bytes(h[0..8].try_into().unwrap()) as u64;
        let len = i32::from_be_bytes(h[8..12].try_into().unwrap()) as u64;
        Ok((base, FRAME_HEADER_LEN as u64 + len))
    }

    /// Position of the frame containing `offset` (which must lie in this segment).
    pub fn find_position(&self, offset: u64) -> Result<u64, StoreError> {
        let mut pos = self.index.lookup((offset - self.base_offset) as u32) as u64;
        loop {
            let (_, len) = self.header_at(pos)?;
            let next = pos + len;
            if next >= self.size {
                return Ok(pos);
            }
            let (next_base, _) = self.header_at(next)?;
            if next_base > offset {
                return Ok(pos);
            }
            pos = next;
        }
    }

    /// Reads whole frames starting at `position`, at most `max_bytes` unless the first frame
    /// alone is larger (then exactly that frame, so a reader always makes progress).
    pub fn read_frames(&self, position: u64, max_bytes: usize) -> Result<Bytes, StoreError> {
        let available = (self.size - position) as usize;
        if available == 0 {
            return Ok(Bytes::new());
        }
        let want = available.min(max_bytes.max(FRAME_HEADER_LEN));
        let buf = self.bytes_at(position, want)?;
        let mut end = 0usize;
        while end + FRAME_HEADER_LEN <= buf.len() {
            let len = i32::from_be_bytes(buf[end + 8..end + 12].try_into().unwrap()) as usize;
            let total = FRAME_HEADER_LEN + len;
            if end + total > buf.len() {
                break;
            }
            end += total;
        }
        if end == 0 {
            let (_, total) = self.header_at(position)?;
            return self.bytes_at(position, total as usize);
        }
        Ok(buf.slice(..end))
    }

    /// `len` bytes at `position`. Large reads map the file instead of copying it, so a fetch
    /// hands page-cache pages to the socket without passing them through a buffer. Mapping is
    /// safe because a segment file only grows while it is open: it is truncated only by
    /// recovery, before any reader exists, and deletion unlinks it (mappings stay valid).
    fn bytes_at(&self, position: u64, len: usize) -> Result<Bytes, StoreError> {
        if len < MAP_AT_LEAST {
            return Ok(self.read_at(position, len)?.freeze());
        }
        // SAFETY: see above; the mapped range lies within the file's current length.
        let map = unsafe {
            memmap2::MmapOptions::new()
                .offset(position)
                .len(len)
                .map(&self.file)
        }
        .map_err(StoreError::io(&self.path))?;
        Ok(Bytes::from_owner(map))
    }

    pub fn delete_files(self) {
        self.index.remove_files();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Writes every slice, in order, with as few `writev` calls as the file allows.
fn write_all_vectored(file: &mut File, slices: &[&[u8]]) -> std::io::Result<()> {
    let (mut index, mut within) = (0usize, 0usize);
    while index < slices.len() {
        let io: Vec<IoSlice<'_>> = std::iter::once(&slices[index][within..])
            .chain(slices[index + 1..].iter().copied())
            .map(IoSlice::new)
            .collect();
        let mut written = file.write_vectored(&io)?;
        if written == 0 && io.iter().any(|s| !s.is_empty()) {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while index < slices.len() && written >= slices[index].len() - within {
            written -= slices[index].len() - within;
            index += 1;
            within = 0;
        }
        within += written;
    }
    Ok(())
}
