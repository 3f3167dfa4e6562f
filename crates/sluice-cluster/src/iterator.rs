//! Shard iterators: opaque, self-contained, checksummed tokens.
//!
//! Layout before URL-safe base64: version (1) · issued at ms (8) · stream creation ms (8) ·
//! shard index (4) · next offset (8) · stream name (rest) · CRC32C of all of that (4).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardIterator {
    pub issued_ms: u64,
    pub stream_created_ms: u64,
    pub shard: u32,
    pub offset: u64,
    pub stream: String,
}

impl ShardIterator {
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(33 + self.stream.len());
        raw.push(VERSION);
        raw.extend_from_slice(&self.issued_ms.to_be_bytes());
        raw.extend_from_slice(&self.stream_created_ms.to_be_bytes());
        raw.extend_from_slice(&self.shard.to_be_bytes());
        raw.extend_from_slice(&self.offset.to_be_bytes());
        raw.extend_from_slice(self.stream.as_bytes());
        let crc = crc32c::crc32c(&raw);
        raw.extend_from_slice(&crc.to_be_bytes());
        STANDARD.encode(raw)
    }

    pub fn decode(text: &str) -> Option<ShardIterator> {
        let raw = STANDARD.decode(text).ok()?;
        if raw.len() < 33 || raw[0] != VERSION {
            return None;
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_be_bytes(body.get(at..at + 8)?.try_into().ok()?))
        };
        Some(ShardIterator {
            issued_ms: u64_at(1)?,
            stream_created_ms: u64_at(9)?,
            shard: u32::from_be_bytes(body.get(17..21)?.try_into().ok()?),
            offset: u64_at(21)?,
            stream: String::from_utf8(body.get(29..)?.to_vec()).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_tampering() {
        let it = ShardIterator {
            issued_ms: 1,
            stream_created_ms: 2,
            shard: 3,
            offset: 4,
            stream: "orders".into(),
        };
        let text = it.encode();
        assert_eq!(ShardIterator::decode(&text), Some(it));
        let mut tampered = text.into_bytes();
        tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            ShardIterator::decode(&String::from_utf8(tampered).unwrap()),
            None
        );
        assert_eq!(ShardIterator::decode("not an iterator"), None);
        assert_eq!(ShardIterator::decode(""), None);
    }
}
