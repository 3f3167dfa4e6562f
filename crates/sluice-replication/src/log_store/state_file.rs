//! The state file beside the segment log: the few values Raft must not forget that are
//! not log entries (vote, committed, purged log id, index anchor).
//!
//! Layout (little-endian): `magic "SLRS" | version:u8 | body_len:u32 | crc32c(body):u32 |
//! body`, the body CBOR. A new version is written to `raft-state.tmp`, fsynced, renamed
//! over `raft-state`, and the directory is fsynced, so after a crash the file holds
//! either the old or the new state, never a mix; the checksum catches media damage.

use crate::LogStoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"SLRS";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 4 + 1 + 4 + 4;
/// The state is a few hundred bytes; anything much larger is damage.
const MAX_BODY_LEN: usize = 1 << 20;

pub(crate) const FILE_NAME: &str = "raft-state";
const TMP_NAME: &str = "raft-state.tmp";

/// The state file of one store directory.
pub(crate) struct StateFile {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    fsync: bool,
}

impl StateFile {
    /// `fsync: false` is for tests that want speed only, like `LogConfig::fsync`.
    pub(crate) fn new(dir: &Path, fsync: bool) -> StateFile {
        StateFile {
            dir: dir.to_path_buf(),
            path: dir.join(FILE_NAME),
            tmp: dir.join(TMP_NAME),
            fsync,
        }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, `None` if the file does not exist. A leftover temporary file
    /// (a crash before the rename) is removed.
    pub(crate) fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, LogStoreError> {
        match std::fs::remove_file(&self.tmp) {
            Ok(()) => {
                tracing::debug!(path = %self.tmp.display(), "removed a leftover raft state temporary file");
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(LogStoreError::io(
                    "remove raft state temporary file",
                    &self.tmp,
                    e,
                ));
            }
        }
        let bytes = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(LogStoreError::io("read raft state", &self.path, e)),
        };
        let body = decode_frame(&bytes).map_err(|reason| LogStoreError::CorruptState {
            path: self.path.clone(),
            reason,
        })?;
        ciborium::from_reader(body)
            .map(Some)
            .map_err(|source| LogStoreError::DecodeState {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the stored state; durable when it returns (unless fsync is off).
    pub(crate) fn store<T: Serialize>(&self, value: &T) -> Result<(), LogStoreError> {
        let mut body = Vec::with_capacity(256);
        ciborium::into_writer(value, &mut body).map_err(|source| LogStoreError::Encode {
            what: "raft state",
            source,
        })?;
        let bytes = encode_frame(&body);
        let write = |file: &mut File| -> io::Result<()> {
            file.write_all(&bytes)?;
            if self.fsync {
                file.sync_all()?;
            }
            Ok(())
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp)
            .map_err(|e| LogStoreError::io("create raft state temporary file", &self.tmp, e))?;
        write(&mut file).map_err(|e| LogStoreError::io("write raft state", &self.tmp, e))?;
        drop(file);
        std::fs::rename(&self.tmp, &self.path)
            .map_err(|e| LogStoreError::io("rename raft state", &self.path, e))?;
        if self.fsync {
            fsync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), LogStoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogStoreError::io("sync directory", dir, e))
}

fn encode_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    // The body is a few hundred bytes: it always fits.
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn decode_frame(bytes: &[u8]) -> Result<&[u8], &'static str> {
    let (header, body) = bytes
        .split_at_checked(HEADER_LEN)
        .ok_or("shorter than its header")?;
    if &header[..4] != MAGIC {
        return Err("bad magic");
    }
    if header[4] != VERSION {
        return Err("unknown version");
    }
    let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
    let crc = u32::from_le_bytes([header[9], header[10], header[11], header[12]]);
    if len > MAX_BODY_LEN || len != body.len() {
        return Err("body length does not match");
    }
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch");
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u64,
        b: Option<String>,
    }

    fn sample() -> Sample {
        Sample {
            a: 7,
            b: Some("x".into()),
        }
    }

    #[test]
    fn missing_file_loads_as_none_and_store_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), true);
        assert_eq!(file.load::<Sample>().unwrap(), None);
        file.store(&sample()).unwrap();
        assert_eq!(file.load::<Sample>().unwrap(), Some(sample()));
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn leftover_temporary_file_is_ignored_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), true);
        file.store(&sample()).unwrap();
        std::fs::write(dir.path().join(TMP_NAME), b"half-written").unwrap();
        assert_eq!(file.load::<Sample>().unwrap(), Some(sample()));
        assert!(!dir.path().join(TMP_NAME).exists());
    }

    #[test]
    fn every_damaged_byte_or_cut_is_a_typed_corruption_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), false);
        file.store(&sample()).unwrap();
        let good = std::fs::read(file.path()).unwrap();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(file.path(), &bad).unwrap();
            let err = file.load::<Sample>().unwrap_err();
            assert!(
                matches!(err, LogStoreError::CorruptState { .. }),
                "flip at {at}: {err:?}"
            );
            assert!(err.is_corruption());
        }
        for len in 0..good.len() {
            std::fs::write(file.path(), &good[..len]).unwrap();
            let err = file.load::<Sample>().unwrap_err();
            assert!(
                matches!(err, LogStoreError::CorruptState { .. }),
                "cut at {len}: {err:?}"
            );
        }
    }

    #[test]
    fn a_valid_frame_around_a_foreign_body_is_a_decode_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), false);
        file.store(&"not a sample").unwrap();
        let err = file.load::<Sample>().unwrap_err();
        assert!(matches!(err, LogStoreError::DecodeState { .. }), "{err:?}");
        assert_eq!(io::Error::from(err).kind(), io::ErrorKind::InvalidData);
    }
}
