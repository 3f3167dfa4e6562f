//! Stream names and shard ids.

use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("invalid stream name")]
    StreamName,
    #[error("invalid shard id")]
    ShardId,
    #[error("invalid sequence number")]
    SequenceNumber,
}

/// A stream name: `[a-zA-Z0-9_.-]{1,128}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamName(String);

impl StreamName {
    pub fn parse(name: &str) -> Result<Self, TypeError> {
        let valid = !name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if valid {
            Ok(StreamName(name.to_owned()))
        } else {
            Err(TypeError::StreamName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shard id, `shardId-` followed by a 12-digit index unique within its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl ShardId {
    /// Parses `shardId-000000000007` (AWS also accepts the bare index digits after the prefix
    /// with any zero padding).
    pub fn parse(text: &str) -> Result<Self, TypeError> {
        let digits = text.strip_prefix("shardId-").ok_or(TypeError::ShardId)?;
        if digits.is_empty() || digits.len() > 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TypeError::ShardId);
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| u32::try_from(n).ok())
            .map(ShardId)
            .ok_or(TypeError::ShardId)
    }

    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shardId-{:012}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_follow_the_aws_pattern() {
        assert!(StreamName::parse("a-b_c.9").is_ok());
        assert!(StreamName::parse("").is_err());
        assert!(StreamName::parse("with space").is_err());
        assert!(StreamName::parse(&"x".repeat(128)).is_ok());
        assert!(StreamName::parse(&"x".repeat(129)).is_err());
    }

    #[test]
    fn shard_ids_round_trip() {
        let id = ShardId::parse("shardId-000000000042").unwrap();
        assert_eq!(id, ShardId(42));
        assert_eq!(id.to_string(), "shardId-000000000042");
        assert_eq!(ShardId::parse("shardId-7").unwrap(), ShardId(7));
        assert!(ShardId::parse("shard-1").is_err());
        assert!(ShardId::parse("shardId-").is_err());
        assert!(ShardId::parse("shardId-99999999999").is_err());
    }
}
