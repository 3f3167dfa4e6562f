//! Encrypted segments: the cipher of one segment (its data key under AES-256-GCM) and the
//! sidecar file that stores the data key wrapped by a master key.
//!
//! # Sidecar
//!
//! `<base>.key`, next to `<base>.log`; written (temporary file, fsync, rename, directory
//! fsync) before the first encrypted batch of the segment, so every encrypted batch on
//! disk has a durable sidecar. All integers little endian:
//!
//! ```text
//! magic:[u8;8] = "SLKEYv01"
//! key_version:u32                       version of the master key that wrapped the data key
//! key_id_len:u16  key_id:[u8]           the master key's canonical id (UTF-8)
//! wrapped_len:u16 wrapped:[u8]          the data key as the key provider wrapped it
//! crc:u32                               CRC32C of everything before it
//! ```
//!
//! # Nonces
//!
//! Each segment has its own random 256-bit data key and each batch a fresh random 96-bit
//! nonce, so a (key, nonce) pair never repeats in practice: a segment (at most 1 GiB,
//! encrypted frames of at least 104 bytes) seals fewer than 2^24 batches, far below the 2^32 random
//! nonces per key that AES-GCM allows. The one exception to "one key per segment" is a
//! truncation that splits a batch: the head it keeps becomes a segment of its own, sealed
//! with its predecessor's data key under a new random nonce (see `segment`).

use crate::error::StorageError;
use crate::keyring::{DataKey, EncryptionKey, KeyProvider, WrappedKey, random_bytes};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) const NONCE_LEN: usize = ring::aead::NONCE_LEN;
pub(crate) const TAG_LEN: usize = 16;
/// Bytes an encrypted batch adds to its frame: the nonce and the tag.
pub(crate) const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const SIDECAR_MAGIC: &[u8; 8] = b"SLKEYv01";

/// The data key of one segment, ready to seal and open batches.
pub(crate) struct SegmentCipher {
    master: EncryptionKey,
    wrapped: WrappedKey,
    aead: LessSafeKey,
}

impl std::fmt::Debug for SegmentCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentCipher")
            .field("master", &self.master)
            .field("version", &self.wrapped.version)
            .finish_non_exhaustive()
    }
}

impl SegmentCipher {
    fn new(master: EncryptionKey, wrapped: WrappedKey, data_key: &DataKey) -> Self {
        // AES_256_GCM takes exactly 32 bytes, which is what a DataKey holds.
        let unbound = UnboundKey::new(&AES_256_GCM, data_key.as_bytes())
            .expect("a DataKey is 32 bytes, the AES-256 key length");
        SegmentCipher {
            master,
            wrapped,
            aead: LessSafeKey::new(unbound),
        }
    }

    /// A fresh random data key, wrapped under the newest version of `master`.
    pub fn generate(
        keys: &dyn KeyProvider,
        master: &EncryptionKey,
    ) -> Result<SegmentCipher, StorageError> {
        let data_key = DataKey::random()?;
        let wrapped = keys.wrap(master, &data_key)?;
        Ok(SegmentCipher::new(master.clone(), wrapped, &data_key))
    }

    /// The master key this segment's data key is wrapped under.
    pub fn master(&self) -> &EncryptionKey {
        &self.master
    }

    /// Encrypts `in_out` in place with a fresh random nonce; returns the nonce and tag.
    pub fn seal(
        &self,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<([u8; NONCE_LEN], [u8; TAG_LEN]), StorageError> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| {
                StorageError::Key(crate::KeyError::Corrupt {
                    reason: "batch too large to seal",
                })
            })?;
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag.as_ref());
        Ok((nonce, tag_bytes))
    }

    /// Decrypts and authenticates `ciphertext || tag` in place; `None` if it fails.
    pub fn open<'b>(&self, nonce: &[u8], aad: &[u8], in_out: &'b mut [u8]) -> Option<&'b mut [u8]> {
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        self.aead.open_in_place(nonce, Aad::from(aad), in_out).ok()
    }

    fn sidecar_bytes(&self) -> Vec<u8> {
        let id = self.master.key_id().as_bytes();
        let mut out = Vec::with_capacity(8 + 4 + 2 + id.len() + 2 + self.wrapped.bytes.len() + 4);
        out.extend_from_slice(SIDECAR_MAGIC);
        out.extend_from_slice(&self.wrapped.version.to_le_bytes());
        out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(u16::MAX).to_le_bytes());
        out.extend_from_slice(id);
        let wrapped_len = u16::try_from(self.wrapped.bytes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&wrapped_len.to_le_bytes());
        out.extend_from_slice(&self.wrapped.bytes);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Writes this cipher's sidecar to `path` durably (when `fsync`): a temporary file,
    /// fdatasync, rename, directory fsync.
    pub fn write_sidecar(&self, dir: &Path, path: &Path, fsync: bool) -> Result<(), StorageError> {
        if u16::try_from(self.master.key_id().len()).is_err()
            || u16::try_from(self.wrapped.bytes.len()).is_err()
        {
            return Err(StorageError::Key(crate::KeyError::Corrupt {
                reason: "key id or wrapped key too long for a sidecar",
            }));
        }
        let bytes = self.sidecar_bytes();
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| StorageError::io("create key sidecar", &tmp, e))?;
            file.write_all_at(&bytes, 0)
                .map_err(|e| StorageError::io("write key sidecar", &tmp, e))?;
            if fsync {
                file.sync_data()
                    .map_err(|e| StorageError::io("sync key sidecar", &tmp, e))?;
            }
        }
        std::fs::rename(&tmp, path).map_err(|e| StorageError::io("rename key sidecar", path, e))?;
        if fsync {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StorageError::io("sync directory", dir, e))?;
        }
        Ok(())
    }
}

/// Parses a sidecar into (master key, version, wrapped bytes).
fn parse_sidecar(bytes: &[u8]) -> Option<(EncryptionKey, WrappedKey)> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let rest = body.strip_prefix(SIDECAR_MAGIC.as_slice())?;
    let (version, rest) = rest.split_first_chunk::<4>()?;
    let (id_len, rest) = rest.split_first_chunk::<2>()?;
    let (id, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*id_len)))?;
    let (wrapped_len, rest) = rest.split_first_chunk::<2>()?;
    let (wrapped, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*wrapped_len)))?;
    if !rest.is_empty() {
        return None;
    }
    Some((
        EncryptionKey::new(std::str::from_utf8(id).ok()?),
        WrappedKey {
            version: u32::from_le_bytes(*version),
            bytes: wrapped.to_vec(),
        },
    ))
}

/// The cipher of the segment whose sidecar is at `path`; `None` if it has no sidecar
/// (it holds no encrypted batch).
pub(crate) fn load_cipher(
    path: &Path,
    keys: Option<&Arc<dyn KeyProvider>>,
) -> Result<Option<Arc<SegmentCipher>>, StorageError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read key sidecar", path, e)),
    };
    let Some((master, wrapped)) = parse_sidecar(&bytes) else {
        return Err(StorageError::corrupt(path, 0, "unreadable key sidecar"));
    };
    let Some(keys) = keys else {
        return Err(StorageError::NoKeyProvider {
            segment: path.to_owned(),
        });
    };
    let data_key = keys.unwrap(&master, wrapped.version, &wrapped.bytes)?;
    Ok(Some(Arc::new(SegmentCipher::new(
        master, wrapped, &data_key,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::{KINESIS_MANAGED_ALIAS, LocalKeyring};
    use tempfile::TempDir;

    #[test]
    fn sidecars_round_trip_and_reject_damage() {
        let dir = TempDir::new().unwrap();
        let keys: Arc<dyn KeyProvider> = Arc::new(LocalKeyring::ephemeral().unwrap());
        let master = keys.resolve(KINESIS_MANAGED_ALIAS).unwrap();
        let cipher = SegmentCipher::generate(keys.as_ref(), &master).unwrap();
        let path = dir.path().join("00000000000000000000.key");
        cipher.write_sidecar(dir.path(), &path, true).unwrap();
        let loaded = load_cipher(&path, Some(&keys)).unwrap().unwrap();
        assert_eq!(loaded.master(), &master);
        let mut data = b"secret payload".to_vec();
        let (nonce, tag) = cipher.seal(b"header", &mut data).unwrap();
        assert_ne!(&data[..], b"secret payload");
        data.extend_from_slice(&tag);
        assert_eq!(
            loaded
                .open(&nonce, b"header", &mut data.clone())
                .map(|p| p.to_vec()),
            Some(b"secret payload".to_vec())
        );
        assert!(loaded.open(&nonce, b"other", &mut data.clone()).is_none());
        assert!(matches!(
            load_cipher(&path, None),
            Err(StorageError::NoKeyProvider { .. })
        ));
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load_cipher(&path, Some(&keys)),
            Err(StorageError::Corrupt { .. })
        ));
        assert!(
            load_cipher(&dir.path().join("missing.key"), Some(&keys))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn garbage_sidecars_do_not_parse() {
        for bytes in [&b""[..], b"abc", b"SLKEYv01", &[0u8; 64]] {
            assert!(parse_sidecar(bytes).is_none());
        }
    }
}
