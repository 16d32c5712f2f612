//! The log against a minimal frame format: recovery, rolling, retention and lookups.

use std::sync::Arc;

use spool_store::{FrameFormat, FrameInfo, Log, LogConfig, FRAME_HEADER_LEN};

/// Test payload: `crc32c: u32` over the rest, `last_offset_delta: u32`, `max_ts: i64`, data.
struct TestFormat;

impl FrameFormat for TestFormat {
    fn validate(&self, frame: &[u8]) -> Result<FrameInfo, String> {
        if frame.len() < FRAME_HEADER_LEN + 16 {
            return Err("short".into());
        }
        let crc = u32::from_be_bytes(frame[12..16].try_into().unwrap());
        if crc32c::crc32c(&frame[16..]) != crc {
            return Err("crc mismatch".into());
        }
        self.describe(frame).ok_or_else(|| "short".into())
    }
    fn describe(&self, head: &[u8]) -> Option<FrameInfo> {
        if head.len() < 28 {
            return None;
        }
        Some(FrameInfo {
            last_offset_delta: u32::from_be_bytes(head[16..20].try_into().unwrap()),
            max_timestamp: i64::from_be_bytes(head[20..28].try_into().unwrap()),
            writer: None,
        })
    }
    fn describe_len(&self) -> usize {
        28
    }
}

fn frame(records: u32, ts: i64, data: &[u8]) -> (Vec<u8>, FrameInfo) {
    let mut f = vec![0u8; 12];
    let mut rest = Vec::new();
    rest.extend_from_slice(&(records - 1).to_be_bytes());
    rest.extend_from_slice(&ts.to_be_bytes());
    rest.extend_from_slice(data);
    f.extend_from_slice(&crc32c::crc32c(&rest).to_be_bytes());
    f.extend_from_slice(&rest);
    let len = (f.len() - 12) as i32;
    f[8..12].copy_from_slice(&len.to_be_bytes());
    let info = TestFormat.validate(&f).unwrap();
    (f, info)
}

fn open(dir: &std::path::Path, config: LogConfig) -> Log {
    Log::open(dir, config, Arc::new(TestFormat), 0).unwrap()
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 300,
        index_interval_bytes: 64,
        ..LogConfig::default()
    }
}

fn base_offsets(bytes: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        out.push(i64::from_be_bytes(bytes[pos..pos + 8].try_into().unwrap()) as u64);
        pos += 12 + i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
    }
    out
}

#[test]
fn appends_get_consecutive_offsets_and_reads_return_whole_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    for i in 0..10 {
        let (f, info) = frame(3, 1000 + i, b"hello");
        let out = log.append(&[&f], &info).unwrap();
        assert_eq!(out.base_offset, i as u64 * 3);
        assert_eq!(out.last_offset, i as u64 * 3 + 2);
    }
    assert_eq!(log.next_offset(), 30);
    // Reading mid-frame returns the frame containing the offset.
    let bytes = log.read(7, 1 << 20).unwrap();
    assert_eq!(base_offsets(&bytes), vec![6, 9, 12, 15, 18, 21, 24, 27]);
    // A small budget still returns one whole frame.
    assert_eq!(base_offsets(&log.read(0, 1).unwrap()), vec![0]);
    assert!(log.read(30, 100).unwrap().is_empty());
    assert!(log.read(31, 100).is_err());
}

#[test]
fn rolls_segments_and_recovers_them_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), small_segments());
        for i in 0..40 {
            let (f, info) = frame(1, i, &[i as u8; 40]);
            log.append(&[&f], &info).unwrap();
        }
        assert!(log.segment_count() > 5);
        log.flush().unwrap();
    }
    let log = open(dir.path(), small_segments());
    assert_eq!(log.next_offset(), 40);
    for o in 0..40 {
        assert_eq!(base_offsets(&log.read(o, 1).unwrap()), vec![o]);
    }
}

#[test]
fn unflushed_tail_is_rescanned_and_index_files_rebuilt_when_missing() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), small_segments());
        for i in 0..20 {
            let (f, info) = frame(2, i, &[1; 30]);
            log.append(&[&f], &info).unwrap();
        }
        // No flush: the checkpoint still points at the empty log.
    }
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "index") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = open(dir.path(), small_segments());
    assert_eq!(log.next_offset(), 40);
    assert_eq!(base_offsets(&log.read(21, 1).unwrap()), vec![20]);
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn torn_tail_is_truncated_to_the_last_whole_frame() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = open(dir.path(), LogConfig::default());
        for i in 0..5 {
            let (f, info) = frame(1, i, &[2; 50]);
            log.append(&[&f], &info).unwrap();
        }
        log.flush().unwrap();
        for i in 5..8 {
            let (f, info) = frame(1, i, &[3; 50]);
            log.append(&[&f], &info).unwrap();
        }
    }
    let seg = last_segment(dir.path());
    let len = std::fs::metadata(&seg).unwrap().len();
    // Cut the last frame in half.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 30).unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    assert_eq!(log.next_offset(), 7);
    let (f, info) = frame(1, 9, b"after");
    assert_eq!(log.append(&[&f], &info).unwrap().base_offset, 7);
}

#[test]
fn corrupt_frame_in_tail_is_truncated_with_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let frame_len;
    {
        let mut log = open(dir.path(), LogConfig::default());
        let (f0, _) = frame(1, 0, &[4; 50]);
        frame_len = f0.len() as u64;
        for i in 0..6 {
            let (f, info) = frame(1, i, &[4; 50]);
            log.append(&[&f], &info).unwrap();
        }
    }
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    // Flip a payload byte of the fourth frame.
    bytes[(3 * frame_len + 40) as usize] ^= 0xff;
    std::fs::write(&seg, bytes).unwrap();
    let log = open(dir.path(), LogConfig::default());
    assert_eq!(log.next_offset(), 3);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), 3 * frame_len);
}

#[test]
fn retention_and_delete_records_move_the_start_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(600),
            ..small_segments()
        },
    );
    for i in 0..40 {
        let (f, info) = frame(1, i, &[5; 40]);
        log.append(&[&f], &info).unwrap();
    }
    let before = log.segment_count();
    let deleted = log.apply_retention(u64::MAX / 2);
    assert!(deleted > 0 && log.segment_count() == before - deleted);
    assert!(log.size_bytes() <= 600 + 300);
    let start = log.log_start_offset();
    assert!(start > 0);
    assert!(log.read(start - 1, 10).is_err());
    let target = start + 2;
    assert_eq!(log.delete_records_before(target).unwrap(), target);
    assert!(log.read(target - 1, 10).is_err());
    assert_eq!(base_offsets(&log.read(target, 1).unwrap()), vec![target]);
}

#[test]
fn time_lookup_finds_the_first_frame_at_or_after_a_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), small_segments());
    for i in 0..30 {
        let (f, info) = frame(1, 1000 + i * 10, &[6; 40]);
        log.append(&[&f], &info).unwrap();
    }
    let found = log.frame_for_timestamp(1155).unwrap().unwrap();
    assert_eq!(base_offsets(&found), vec![16]);
    assert!(log.frame_for_timestamp(5000).unwrap().is_none());
    assert_eq!(log.max_timestamp(), Some((1290, 29)));
}

#[test]
fn large_reads_are_whole_frames_and_see_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), LogConfig::default());
    let data = vec![7u8; 10_000];
    let mut written = Vec::new();
    for i in 0..40 {
        let (f, info) = frame(1, i, &data);
        log.append(&[&f], &info).unwrap();
        written.extend_from_slice(&f);
    }
    // Larger than the mapping threshold: served from a map of the file.
    let all = log.read(0, 1 << 20).unwrap();
    assert_eq!(base_offsets(&all), (0..40).collect::<Vec<_>>());
    // A budget that ends mid-frame stops at the last whole frame.
    let part = log.read(5, 100_000).unwrap();
    assert_eq!(base_offsets(&part), (5..14).collect::<Vec<_>>());
    // Appends after a mapped read are visible to the next one, and the old bytes are intact.
    let (f, info) = frame(1, 99, &data);
    log.append(&[&f], &info).unwrap();
    assert_eq!(
        base_offsets(&log.read(30, 1 << 20).unwrap()),
        (30..41).collect::<Vec<_>>()
    );
    assert_eq!(base_offsets(&all), (0..40).collect::<Vec<_>>());
    // Everything but the stamped base offsets is what was written.
    let size = written.len() / 40;
    assert_eq!(all.len(), written.len());
    for (got, sent) in all.chunks(size).zip(written.chunks(size)) {
        assert!(got[8..] == sent[8..], "frame bytes differ");
    }
}
