//! The local keyring: master keys in a JSON file (mode 0600) next to the data.
//!
//! ```json
//! { "format": 1,
//!   "keys": [ { "key_id": "0f6c…-…", "aliases": ["alias/aws/kinesis"], "enabled": true,
//!               "created_ms": 1700000000000, "description": "",
//!               "versions": [ { "version": 1, "created_ms": 1700000000000,
//!                               "material": "<base64 of 32 random bytes>" } ] } ] }
//! ```
//!
//! A node creates the file at first start with the AWS-managed key `alias/aws/kinesis`
//! and refuses a file that group or others may read. Operators change it with
//! `sluice keyring …` (create a key, add an alias, rotate, disable, enable), which
//! rewrites it atomically (temporary file, fsync, rename, directory fsync). A running
//! node notices the change (a `stat` per key operation) and reloads it; if the new file
//! is unusable it keeps the keys it had and warns.
//!
//! Data keys are wrapped with AES-256-GCM under the newest version of a master key:
//! `nonce:[u8;12] ciphertext:[u8;32] tag:[u8;16]`, with the key id and version as
//! associated data. Rotation adds a version; older versions stay to unwrap older
//! segments. Disabling a key stops it wrapping new data keys (so writes to a stream that
//! uses it fail once they need a new segment, and StartStreamEncryption refuses it);
//! data already written with it stays readable.

use super::{
    DATA_KEY_LEN, DataKey, EncryptionKey, KINESIS_MANAGED_ALIAS, KeyError, KeyName, KeyProvider,
    KeyReference, WrappedKey, is_valid_alias, random_bytes,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use parking_lot::RwLock;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const FORMAT: u32 = 1;
const WRAP_AAD_PREFIX: &[u8] = b"sluice-data-key-v1";
const TAG_LEN: usize = 16;
const WRAPPED_LEN: usize = NONCE_LEN + DATA_KEY_LEN + TAG_LEN;

/// A master key as listed: everything but its material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySummary {
    pub key_id: String,
    pub aliases: Vec<String>,
    pub enabled: bool,
    pub created_ms: u64,
    pub description: String,
    /// Version numbers, oldest first; the last one wraps new data keys.
    pub versions: Vec<u32>,
}

#[derive(Clone)]
struct Material([u8; DATA_KEY_LEN]);

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
struct KeyVersion {
    version: u32,
    created_ms: u64,
    material: Material,
}

#[derive(Debug, Clone)]
struct MasterKey {
    key_id: String,
    aliases: Vec<String>,
    enabled: bool,
    created_ms: u64,
    description: String,
    versions: Vec<KeyVersion>,
}

impl MasterKey {
    fn generate(aliases: Vec<String>, description: String) -> Result<MasterKey, KeyError> {
        let now = now_ms();
        Ok(MasterKey {
            key_id: new_key_id()?,
            aliases,
            enabled: true,
            created_ms: now,
            description,
            versions: vec![KeyVersion {
                version: 1,
                created_ms: now,
                material: Material(random_bytes()?),
            }],
        })
    }

    fn summary(&self) -> KeySummary {
        KeySummary {
            key_id: self.key_id.clone(),
            aliases: self.aliases.clone(),
            enabled: self.enabled,
            created_ms: self.created_ms,
            description: self.description.clone(),
            versions: self.versions.iter().map(|v| v.version).collect(),
        }
    }
}

/// The file as serialized.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    keys: Vec<KeyFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    key_id: String,
    #[serde(default)]
    aliases: Vec<String>,
    enabled: bool,
    #[serde(default)]
    created_ms: u64,
    #[serde(default)]
    description: String,
    versions: Vec<VersionFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionFile {
    version: u32,
    #[serde(default)]
    created_ms: u64,
    material: String,
}

/// Identifies one version of the file on disk, to notice rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

struct State {
    keys: Vec<MasterKey>,
    stamp: Option<FileStamp>,
}

/// Master keys kept in a local JSON file (or only in memory, for tests). See the module
/// docs for the format and the rules.
pub struct LocalKeyring {
    path: Option<PathBuf>,
    state: RwLock<State>,
}

impl std::fmt::Debug for LocalKeyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalKeyring")
            .field("path", &self.path)
            .field("keys", &self.state.read().keys.len())
            .finish()
    }
}

impl LocalKeyring {
    /// Opens an existing keyring file.
    pub fn open(path: &Path) -> Result<LocalKeyring, KeyError> {
        let (keys, stamp) = read_file(path)?;
        Ok(LocalKeyring {
            path: Some(path.to_owned()),
            state: RwLock::new(State {
                keys,
                stamp: Some(stamp),
            }),
        })
    }

    /// Opens the keyring file, creating it (mode 0600, holding `alias/aws/kinesis` with
    /// fresh random material) if it does not exist.
    pub fn open_or_create(path: &Path) -> Result<LocalKeyring, KeyError> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::open(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = vec![MasterKey::generate(
                    vec![KINESIS_MANAGED_ALIAS.to_owned()],
                    "Default key that protects Kinesis data when no other key is named".to_owned(),
                )?];
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| KeyError::io("create keyring directory", parent, e))?;
                }
                let stamp = write_file(path, &keys)?;
                tracing::info!(keyring = %path.display(), "created a keyring with the key alias/aws/kinesis");
                Ok(LocalKeyring {
                    path: Some(path.to_owned()),
                    state: RwLock::new(State {
                        keys,
                        stamp: Some(stamp),
                    }),
                })
            }
            Err(e) => Err(KeyError::io("stat keyring", path, e)),
        }
    }

    /// A keyring in memory only, holding `alias/aws/kinesis`; its keys die with it.
    pub fn ephemeral() -> Result<LocalKeyring, KeyError> {
        let key = MasterKey::generate(vec![KINESIS_MANAGED_ALIAS.to_owned()], String::new())?;
        Ok(LocalKeyring {
            path: None,
            state: RwLock::new(State {
                keys: vec![key],
                stamp: None,
            }),
        })
    }

    /// A keyring in memory with no keys at all: every key reference is unknown.
    pub fn empty() -> LocalKeyring {
        LocalKeyring {
            path: None,
            state: RwLock::new(State {
                keys: Vec::new(),
                stamp: None,
            }),
        }
    }

    /// The file, if the keyring has one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Every key, in creation order.
    pub fn list(&self) -> Vec<KeySummary> {
        self.refresh();
        self.state
            .read()
            .keys
            .iter()
            .map(MasterKey::summary)
            .collect()
    }

    /// The key a reference names, enabled or not.
    pub fn describe(&self, key: &str) -> Result<KeySummary, KeyError> {
        self.refresh();
        let state = self.state.read();
        let at = find(&state.keys, key)?;
        Ok(state.keys[at].summary())
    }

    /// Creates a key with fresh random material and the given aliases.
    pub fn create_key(
        &self,
        aliases: &[String],
        description: &str,
    ) -> Result<KeySummary, KeyError> {
        self.mutate(|keys| {
            for alias in aliases {
                check_new_alias(keys, alias)?;
            }
            let key = MasterKey::generate(aliases.to_vec(), description.to_owned())?;
            let summary = key.summary();
            keys.push(key);
            Ok(summary)
        })
    }

    /// Adds an alias to a key.
    pub fn add_alias(&self, key: &str, alias: &str) -> Result<(), KeyError> {
        self.mutate(|keys| {
            let at = find(keys, key)?;
            check_new_alias(keys, alias)?;
            keys[at].aliases.push(alias.to_owned());
            Ok(())
        })
    }

    /// Adds a version with fresh material; new data keys are wrapped under it, older
    /// versions still unwrap what they wrapped. Returns the new version number.
    pub fn rotate(&self, key: &str) -> Result<u32, KeyError> {
        self.mutate(|keys| {
            let at = find(keys, key)?;
            let next = keys[at]
                .versions
                .iter()
                .map(|v| v.version)
                .max()
                .unwrap_or(0)
                .checked_add(1)
                .ok_or(KeyError::Corrupt {
                    reason: "no version number left",
                })?;
            keys[at].versions.push(KeyVersion {
                version: next,
                created_ms: now_ms(),
                material: Material(random_bytes()?),
            });
            Ok(next)
        })
    }

    /// Enables or disables a key.
    pub fn set_enabled(&self, key: &str, enabled: bool) -> Result<(), KeyError> {
        self.mutate(|keys| {
            let at = find(keys, key)?;
            keys[at].enabled = enabled;
            Ok(())
        })
    }

    /// Applies `change` to the current keys (reloaded from the file first) and writes the
    /// result back before it takes effect here.
    fn mutate<T>(
        &self,
        change: impl FnOnce(&mut Vec<MasterKey>) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let mut state = self.state.write();
        if let Some(path) = &self.path {
            let (keys, stamp) = read_file(path)?;
            state.keys = keys;
            state.stamp = Some(stamp);
        }
        let mut keys = state.keys.clone();
        let out = change(&mut keys)?;
        if let Some(path) = &self.path {
            state.stamp = Some(write_file(path, &keys)?);
        }
        state.keys = keys;
        Ok(out)
    }

    /// Reloads the file if it changed since it was read. A file that cannot be used is
    /// reported and the keys in memory are kept.
    fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let stamp = match std::fs::metadata(path) {
            Ok(meta) => FileStamp::of(&meta),
            Err(error) => {
                tracing::warn!(keyring = %path.display(), error = %error, "cannot stat the keyring; keeping the keys in memory");
                return;
            }
        };
        if self.state.read().stamp == Some(stamp) {
            return;
        }
        let mut state = self.state.write();
        if state.stamp == Some(stamp) {
            return;
        }
        match read_file(path) {
            Ok((keys, stamp)) => {
                tracing::info!(keyring = %path.display(), keys = keys.len(), "reloaded the keyring");
                state.keys = keys;
                state.stamp = Some(stamp);
            }
            Err(error) => {
                tracing::warn!(keyring = %path.display(), error = %error, "the changed keyring is unusable; keeping the keys in memory");
                // Warn once per version of the file.
                state.stamp = Some(stamp);
            }
        }
    }
}

impl KeyProvider for LocalKeyring {
    fn resolve(&self, key_id: &str) -> Result<EncryptionKey, KeyError> {
        self.refresh();
        let state = self.state.read();
        let key = &state.keys[find(&state.keys, key_id)?];
        if !key.enabled {
            return Err(KeyError::Disabled {
                key_id: key.key_id.clone(),
            });
        }
        Ok(EncryptionKey::new(&key.key_id))
    }

    fn wrap(&self, key: &EncryptionKey, data_key: &DataKey) -> Result<WrappedKey, KeyError> {
        self.refresh();
        let state = self.state.read();
        let master = by_id(&state.keys, key.key_id())?;
        if !master.enabled {
            return Err(KeyError::Disabled {
                key_id: master.key_id.clone(),
            });
        }
        let newest = master
            .versions
            .iter()
            .max_by_key(|v| v.version)
            .ok_or(KeyError::Corrupt {
                reason: "master key has no versions",
            })?;
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(data_key.as_bytes());
        let tag = aead_key(&newest.material)?
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(wrap_aad(&master.key_id, newest.version)),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| KeyError::Corrupt {
                reason: "data key could not be sealed",
            })?;
        out.extend_from_slice(tag.as_ref());
        Ok(WrappedKey {
            version: newest.version,
            bytes: out,
        })
    }

    fn unwrap(
        &self,
        key: &EncryptionKey,
        version: u32,
        wrapped: &[u8],
    ) -> Result<DataKey, KeyError> {
        self.refresh();
        let state = self.state.read();
        let master = by_id(&state.keys, key.key_id())?;
        let material = &master
            .versions
            .iter()
            .find(|v| v.version == version)
            .ok_or_else(|| KeyError::VersionNotFound {
                key_id: master.key_id.clone(),
                version,
            })?
            .material;
        if wrapped.len() != WRAPPED_LEN {
            return Err(KeyError::Corrupt {
                reason: "wrapped data key has the wrong length",
            });
        }
        let (nonce, sealed) = wrapped.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Corrupt {
            reason: "wrapped data key has a bad nonce",
        })?;
        let mut in_out = sealed.to_vec();
        let plain = aead_key(material)?
            .open_in_place(
                nonce,
                Aad::from(wrap_aad(&master.key_id, version)),
                &mut in_out,
            )
            .map_err(|_| KeyError::Corrupt {
                reason: "wrapped data key failed authentication",
            })?;
        let bytes: [u8; DATA_KEY_LEN] = plain.try_into().map_err(|_| KeyError::Corrupt {
            reason: "unwrapped data key has the wrong length",
        })?;
        Ok(DataKey::from_bytes(bytes))
    }
}

fn aead_key(material: &Material) -> Result<LessSafeKey, KeyError> {
    UnboundKey::new(&AES_256_GCM, &material.0)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Corrupt {
            reason: "master key material has the wrong length",
        })
}

fn wrap_aad(key_id: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_AAD_PREFIX.len() + key_id.len() + 4);
    aad.extend_from_slice(WRAP_AAD_PREFIX);
    aad.extend_from_slice(key_id.as_bytes());
    aad.extend_from_slice(&version.to_le_bytes());
    aad
}

/// The position of the key a reference (id, ARN, alias, alias ARN) names.
fn find(keys: &[MasterKey], reference: &str) -> Result<usize, KeyError> {
    let not_found = || KeyError::NotFound {
        key_id: reference.to_owned(),
    };
    let parsed = KeyReference::parse(reference).ok_or_else(not_found)?;
    keys.iter()
        .position(|k| match parsed.name {
            KeyName::Id(id) => k.key_id.eq_ignore_ascii_case(id),
            KeyName::Alias(alias) => k.aliases.iter().any(|a| a == alias),
        })
        .ok_or_else(not_found)
}

fn by_id<'k>(keys: &'k [MasterKey], key_id: &str) -> Result<&'k MasterKey, KeyError> {
    keys.iter()
        .find(|k| k.key_id == key_id)
        .ok_or_else(|| KeyError::NotFound {
            key_id: key_id.to_owned(),
        })
}

fn check_new_alias(keys: &[MasterKey], alias: &str) -> Result<(), KeyError> {
    let error = |reason| KeyError::Alias {
        alias: alias.to_owned(),
        reason,
    };
    if !is_valid_alias(alias) {
        return Err(error(
            "an alias is alias/ followed by letters, digits, '/', '_' or '-'",
        ));
    }
    if alias.starts_with("alias/aws/") {
        return Err(error("aliases beginning with alias/aws/ are reserved"));
    }
    if keys.iter().any(|k| k.aliases.iter().any(|a| a == alias)) {
        return Err(error("the alias already names a key"));
    }
    Ok(())
}

/// A random (version 4) UUID.
fn new_key_id() -> Result<String, KeyError> {
    let mut b: [u8; 16] = random_bytes()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    ))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads, permission-checks and validates the file.
fn read_file(path: &Path) -> Result<(Vec<MasterKey>, FileStamp), KeyError> {
    let mut file = File::open(path).map_err(|e| KeyError::io("open keyring", path, e))?;
    let meta = file
        .metadata()
        .map_err(|e| KeyError::io("stat keyring", path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::InsecurePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text)
        .map_err(|e| KeyError::io("read keyring", path, e))?;
    let format_error = |reason: String| KeyError::Format {
        path: path.to_owned(),
        reason,
    };
    let parsed: KeyringFile =
        serde_json::from_str(&text).map_err(|e| format_error(e.to_string()))?;
    if parsed.format != FORMAT {
        return Err(format_error(format!(
            "format {} is not supported (expected {FORMAT})",
            parsed.format
        )));
    }
    let mut keys: Vec<MasterKey> = Vec::with_capacity(parsed.keys.len());
    for key in parsed.keys {
        if !super::is_key_uuid(&key.key_id) {
            return Err(format_error(format!("key id {} is not a UUID", key.key_id)));
        }
        if keys.iter().any(|k| k.key_id == key.key_id) {
            return Err(format_error(format!("key id {} appears twice", key.key_id)));
        }
        for alias in &key.aliases {
            if !is_valid_alias(alias) {
                return Err(format_error(format!("alias {alias} is not valid")));
            }
            if keys.iter().any(|k| k.aliases.contains(alias)) {
                return Err(format_error(format!("alias {alias} names two keys")));
            }
        }
        if key.versions.is_empty() {
            return Err(format_error(format!("key {} has no versions", key.key_id)));
        }
        let mut versions = Vec::with_capacity(key.versions.len());
        for version in key.versions {
            if versions
                .iter()
                .any(|v: &KeyVersion| v.version == version.version)
            {
                return Err(format_error(format!(
                    "key {} has version {} twice",
                    key.key_id, version.version
                )));
            }
            let material: [u8; DATA_KEY_LEN] = BASE64
                .decode(version.material.as_bytes())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| {
                    format_error(format!(
                        "version {} of key {} is not 32 bytes of base64",
                        version.version, key.key_id
                    ))
                })?;
            versions.push(KeyVersion {
                version: version.version,
                created_ms: version.created_ms,
                material: Material(material),
            });
        }
        versions.sort_by_key(|v| v.version);
        keys.push(MasterKey {
            key_id: key.key_id,
            aliases: key.aliases,
            enabled: key.enabled,
            created_ms: key.created_ms,
            description: key.description,
            versions,
        });
    }
    Ok((keys, FileStamp::of(&meta)))
}

/// Writes the keys atomically with mode 0600: a temporary file, fsync, rename, and a
/// directory fsync. Returns the stamp of the new file.
fn write_file(path: &Path, keys: &[MasterKey]) -> Result<FileStamp, KeyError> {
    let file = KeyringFile {
        format: FORMAT,
        keys: keys
            .iter()
            .map(|k| KeyFile {
                key_id: k.key_id.clone(),
                aliases: k.aliases.clone(),
                enabled: k.enabled,
                created_ms: k.created_ms,
                description: k.description.clone(),
                versions: k
                    .versions
                    .iter()
                    .map(|v| VersionFile {
                        version: v.version,
                        created_ms: v.created_ms,
                        material: BASE64.encode(v.material.0),
                    })
                    .collect(),
            })
            .collect(),
    };
    let mut text = serde_json::to_string_pretty(&file).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(KeyError::io("remove stale keyring", &tmp, e)),
    }
    {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| KeyError::io("create keyring", &tmp, e))?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(|e| KeyError::io("write keyring", &tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| KeyError::io("rename keyring", path, e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| KeyError::io("sync keyring directory", dir, e))?;
    let meta = std::fs::metadata(path).map_err(|e| KeyError::io("stat keyring", path, e))?;
    Ok(FileStamp::of(&meta))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn keyring_in(dir: &TempDir) -> (PathBuf, LocalKeyring) {
        let path = dir.path().join("keyring.json");
        let keyring = LocalKeyring::open_or_create(&path).unwrap();
        (path, keyring)
    }

    #[test]
    fn a_new_keyring_file_is_private_and_holds_the_kinesis_key() {
        let dir = TempDir::new().unwrap();
        let (path, keyring) = keyring_in(&dir);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let keys = keyring.list();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].aliases, vec![KINESIS_MANAGED_ALIAS.to_owned()]);
        assert_eq!(keys[0].versions, vec![1]);
        assert!(keys[0].enabled);
        // Opening again finds the same key rather than making a new one.
        let again = LocalKeyring::open_or_create(&path).unwrap();
        assert_eq!(again.list(), keys);
    }

    #[test]
    fn a_keyring_readable_by_others_is_refused() {
        let dir = TempDir::new().unwrap();
        let (path, _) = keyring_in(&dir);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            LocalKeyring::open(&path),
            Err(KeyError::InsecurePermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn every_reference_form_resolves_and_unknown_ones_do_not() {
        let dir = TempDir::new().unwrap();
        let (_, keyring) = keyring_in(&dir);
        let created = keyring
            .create_key(&["alias/orders".to_owned()], "orders")
            .unwrap();
        let expected = EncryptionKey::new(&created.key_id);
        for reference in [
            created.key_id.clone(),
            created.key_id.to_uppercase(),
            format!("arn:aws:kms:us-east-1:000000000000:key/{}", created.key_id),
            "alias/orders".to_owned(),
            "arn:aws:kms:us-east-1:000000000000:alias/orders".to_owned(),
        ] {
            assert_eq!(
                keyring.resolve(&reference).unwrap(),
                expected,
                "{reference}"
            );
        }
        for reference in [
            "alias/missing",
            "00000000-0000-4000-8000-000000000000",
            "not a key",
        ] {
            assert!(
                matches!(keyring.resolve(reference), Err(KeyError::NotFound { .. })),
                "{reference}"
            );
        }
    }

    #[test]
    fn wrapped_keys_unwrap_with_their_version_after_rotation() {
        let dir = TempDir::new().unwrap();
        let (path, keyring) = keyring_in(&dir);
        let key = keyring.resolve(KINESIS_MANAGED_ALIAS).unwrap();
        let data_key = DataKey::random().unwrap();
        let wrapped = keyring.wrap(&key, &data_key).unwrap();
        assert_eq!(wrapped.version, 1);
        assert_eq!(keyring.rotate(KINESIS_MANAGED_ALIAS).unwrap(), 2);
        let newer = keyring.wrap(&key, &data_key).unwrap();
        assert_eq!(newer.version, 2);
        // A fresh process (reopening the file) unwraps both.
        let reopened = LocalKeyring::open(&path).unwrap();
        for w in [&wrapped, &newer] {
            let back = reopened.unwrap(&key, w.version, &w.bytes).unwrap();
            assert_eq!(back.as_bytes(), data_key.as_bytes());
        }
        // The wrong version, or a flipped bit, fails authentication.
        assert!(matches!(
            reopened.unwrap(&key, 2, &wrapped.bytes),
            Err(KeyError::Corrupt { .. })
        ));
        let mut flipped = wrapped.bytes.clone();
        flipped[20] ^= 1;
        assert!(matches!(
            reopened.unwrap(&key, 1, &flipped),
            Err(KeyError::Corrupt { .. })
        ));
        assert!(matches!(
            reopened.unwrap(&key, 9, &wrapped.bytes),
            Err(KeyError::VersionNotFound { version: 9, .. })
        ));
    }

    #[test]
    fn disabled_keys_wrap_nothing_but_still_unwrap() {
        let dir = TempDir::new().unwrap();
        let (_, keyring) = keyring_in(&dir);
        let key = keyring.resolve(KINESIS_MANAGED_ALIAS).unwrap();
        let data_key = DataKey::random().unwrap();
        let wrapped = keyring.wrap(&key, &data_key).unwrap();
        keyring.set_enabled(KINESIS_MANAGED_ALIAS, false).unwrap();
        assert!(matches!(
            keyring.resolve(KINESIS_MANAGED_ALIAS),
            Err(KeyError::Disabled { .. })
        ));
        assert!(matches!(
            keyring.wrap(&key, &data_key),
            Err(KeyError::Disabled { .. })
        ));
        assert!(keyring.unwrap(&key, 1, &wrapped.bytes).is_ok());
        keyring.set_enabled(KINESIS_MANAGED_ALIAS, true).unwrap();
        assert_eq!(keyring.resolve(KINESIS_MANAGED_ALIAS).unwrap(), key);
    }

    #[test]
    fn a_running_keyring_sees_changes_made_through_another_handle() {
        let dir = TempDir::new().unwrap();
        let (path, running) = keyring_in(&dir);
        let operator = LocalKeyring::open(&path).unwrap();
        let created = operator.create_key(&["alias/late".to_owned()], "").unwrap();
        assert_eq!(
            running.resolve("alias/late").unwrap().key_id(),
            created.key_id
        );
        operator.set_enabled("alias/late", false).unwrap();
        assert!(matches!(
            running.resolve("alias/late"),
            Err(KeyError::Disabled { .. })
        ));
        // A broken rewrite is ignored: the running keyring keeps what it had.
        std::fs::write(&path, "not json").unwrap();
        assert!(matches!(
            running.resolve("alias/late"),
            Err(KeyError::Disabled { .. })
        ));
        assert!(running.resolve(KINESIS_MANAGED_ALIAS).is_ok());
    }

    #[test]
    fn aliases_are_checked() {
        let dir = TempDir::new().unwrap();
        let (_, keyring) = keyring_in(&dir);
        let created = keyring.create_key(&[], "").unwrap();
        keyring.add_alias(&created.key_id, "alias/one").unwrap();
        for alias in ["alias/one", "alias/aws/mine", "one", "alias/bad alias"] {
            assert!(
                matches!(
                    keyring.add_alias(&created.key_id, alias),
                    Err(KeyError::Alias { .. })
                ),
                "{alias}"
            );
        }
        assert_eq!(
            keyring.describe("alias/one").unwrap().aliases,
            vec!["alias/one".to_owned()]
        );
    }

    #[test]
    fn key_material_never_appears_in_debug_output() {
        let dir = TempDir::new().unwrap();
        let (path, keyring) = keyring_in(&dir);
        let text = std::fs::read_to_string(&path).unwrap();
        let file: serde_json::Value = serde_json::from_str(&text).unwrap();
        let material = file["keys"][0]["versions"][0]["material"]
            .as_str()
            .unwrap()
            .to_owned();
        let keys = format!("{:?}", keyring.state.read().keys);
        let printed = format!("{keyring:?} {keys}");
        assert!(!printed.contains(&material));
        assert!(printed.contains("<redacted>"));
    }
}
