//! Free space on the file system that holds the data, so a broker can stop taking writes
//! before the disk fills (RabbitMQ's disk alarm).

use std::path::Path;

use crate::StoreError;

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
pub fn available_bytes(dir: &Path) -> Result<u64, StoreError> {
    let stat = rustix::fs::statvfs(dir).map_err(|e| StoreError::Io {
        path: dir.to_path_buf(),
        source: e.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Asks the kernel to write every dirty page of every file system to disk (`sync(2)`): the last
/// resort of a shutdown that ran out of time, which cannot wait for each log's own fsync.
pub fn sync_everything() {
    rustix::fs::sync();
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_directory_has_some_space_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::available_bytes(dir.path()).unwrap() > 0);
        assert!(super::available_bytes(&dir.path().join("missing")).is_err());
    }
}
