//! Master keys for encryption at rest: the [`KeyProvider`] interface the segment log wraps
//! and unwraps its data keys with, the key references callers may use, and the default
//! provider, [`LocalKeyring`] (a JSON file of master keys, see `local`).
//!
//! Envelope encryption: each encrypted segment has its own random 256-bit data key, which
//! the provider wraps under the newest version of a master key; the log stores only the
//! wrapped form (in the segment's `.key` sidecar) and asks the provider to unwrap it by
//! (master key, version) when the segment is read. An external KMS plugs in by
//! implementing [`KeyProvider`].
//!
//! Key material never appears in `Debug` output or logs: [`DataKey`] and the keyring's
//! versions print as `<redacted>`.

mod local;

pub use crate::error::KeyError;
pub use local::{KeySummary, LocalKeyring};

/// The alias of the master key AWS manages for Kinesis; every new keyring holds it.
pub const KINESIS_MANAGED_ALIAS: &str = "alias/aws/kinesis";

/// Bytes of a data key (AES-256).
pub const DATA_KEY_LEN: usize = 32;

/// A segment's data key in clear. Only the log and key providers handle it.
#[derive(Clone)]
pub struct DataKey([u8; DATA_KEY_LEN]);

impl DataKey {
    pub fn from_bytes(bytes: [u8; DATA_KEY_LEN]) -> Self {
        DataKey(bytes)
    }

    /// A fresh key from the operating system's random number generator.
    pub fn random() -> Result<Self, KeyError> {
        Ok(DataKey(random_bytes()?))
    }

    pub fn as_bytes(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

/// A data key wrapped (encrypted and authenticated) under one version of a master key.
/// Not secret: it is stored next to the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    pub version: u32,
    pub bytes: Vec<u8>,
}

/// A resolved master key: its canonical id (a UUID for the local keyring), whatever
/// alias or ARN the caller used to name it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EncryptionKey {
    key_id: String,
}

impl EncryptionKey {
    pub fn new(key_id: impl Into<String>) -> Self {
        EncryptionKey {
            key_id: key_id.into(),
        }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }
}

/// Where master keys live. Implementations are shared by every log of a node, so they
/// must be cheap to call concurrently; `resolve` is called once per write request to an
/// encrypted stream, `wrap` once per new encrypted segment, `unwrap` once per segment
/// opened for reading.
pub trait KeyProvider: Send + Sync {
    /// The master key a caller's KeyId names: a key id, a key ARN
    /// (`arn:aws:kms:<region>:<account>:key/<id>`), an alias (`alias/<name>`) or an alias
    /// ARN (`arn:aws:kms:<region>:<account>:alias/<name>`). Fails with
    /// [`KeyError::NotFound`] for unknown keys and [`KeyError::Disabled`] for disabled ones.
    fn resolve(&self, key_id: &str) -> Result<EncryptionKey, KeyError>;

    /// Wraps `data_key` under the newest version of `key`. Disabled keys wrap nothing.
    fn wrap(&self, key: &EncryptionKey, data_key: &DataKey) -> Result<WrappedKey, KeyError>;

    /// Recovers a data key that [`wrap`](Self::wrap) produced under `version` of `key`.
    fn unwrap(
        &self,
        key: &EncryptionKey,
        version: u32,
        wrapped: &[u8],
    ) -> Result<DataKey, KeyError>;
}

/// What a key reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyName<'a> {
    /// A key id (UUID).
    Id(&'a str),
    /// An alias, `alias/` prefix included.
    Alias(&'a str),
}

/// A caller's KeyId, parsed: the key or alias it names and, for an ARN, the region and
/// account in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyReference<'a> {
    pub name: KeyName<'a>,
    pub region: Option<&'a str>,
    pub account: Option<&'a str>,
}

impl<'a> KeyReference<'a> {
    /// Parses a key id, key ARN, alias or alias ARN; `None` for anything else.
    pub fn parse(text: &'a str) -> Option<KeyReference<'a>> {
        if let Some(rest) = text.strip_prefix("arn:") {
            let mut parts = rest.splitn(5, ':');
            let partition = parts.next()?;
            let service = parts.next()?;
            let region = parts.next()?;
            let account = parts.next()?;
            let resource = parts.next()?;
            if !partition.starts_with("aws")
                || service != "kms"
                || region.is_empty()
                || account.len() != 12
                || !account.bytes().all(|b| b.is_ascii_digit())
            {
                return None;
            }
            let name = if let Some(id) = resource.strip_prefix("key/") {
                is_key_uuid(id).then_some(KeyName::Id(id))?
            } else {
                is_valid_alias(resource).then_some(KeyName::Alias(resource))?
            };
            return Some(KeyReference {
                name,
                region: Some(region),
                account: Some(account),
            });
        }
        let name = if is_key_uuid(text) {
            KeyName::Id(text)
        } else if is_valid_alias(text) {
            KeyName::Alias(text)
        } else {
            return None;
        };
        Some(KeyReference {
            name,
            region: None,
            account: None,
        })
    }
}

/// Whether `text` is a UUID in its canonical 8-4-4-4-12 hexadecimal form.
pub fn is_key_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Whether `text` is `alias/` followed by 1 to 250 letters, digits, `/`, `_` or `-`.
pub fn is_valid_alias(text: &str) -> bool {
    text.strip_prefix("alias/").is_some_and(|name| {
        !name.is_empty()
            && name.len() <= 250
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    })
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], KeyError> {
    use ring::rand::SecureRandom;
    let mut out = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| KeyError::Randomness)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";

    #[test]
    fn key_references_parse_in_all_four_forms() {
        assert_eq!(
            KeyReference::parse(ID),
            Some(KeyReference {
                name: KeyName::Id(ID),
                region: None,
                account: None
            })
        );
        let arn = format!("arn:aws:kms:us-east-1:123456789012:key/{ID}");
        assert_eq!(
            KeyReference::parse(&arn),
            Some(KeyReference {
                name: KeyName::Id(ID),
                region: Some("us-east-1"),
                account: Some("123456789012")
            })
        );
        assert_eq!(
            KeyReference::parse("alias/aws/kinesis").map(|r| r.name),
            Some(KeyName::Alias("alias/aws/kinesis"))
        );
        let alias_arn = "arn:aws:kms:eu-west-1:123456789012:alias/orders-key";
        assert_eq!(
            KeyReference::parse(alias_arn),
            Some(KeyReference {
                name: KeyName::Alias("alias/orders-key"),
                region: Some("eu-west-1"),
                account: Some("123456789012")
            })
        );
    }

    #[test]
    fn malformed_key_references_are_rejected() {
        for text in [
            "",
            "alias/",
            "alias/has space",
            "orders-key",
            "1234abcd-12ab-34cd-56ef-1234567890a",
            "1234abcd-12ab-34cd-56ef-1234567890ag",
            "arn:aws:kms:us-east-1:123456789012:key/not-a-uuid",
            "arn:aws:kms:us-east-1:1234:alias/x",
            "arn:aws:s3:us-east-1:123456789012:alias/x",
            "arn:aws:kms::123456789012:alias/x",
            "arn:aws:kms:us-east-1:123456789012",
        ] {
            assert_eq!(KeyReference::parse(text), None, "{text:?}");
        }
    }

    #[test]
    fn data_keys_never_print_their_bytes() {
        let key = DataKey::from_bytes([0xab; DATA_KEY_LEN]);
        let printed = format!("{key:?}");
        assert_eq!(printed, "DataKey(<redacted>)");
        assert!(!printed.contains("ab"));
    }
}
