//! Sequence numbers: 56-digit decimal strings that encode the shard and its log position.
//!
//! Layout of the number after the leading `49`: a 54-digit zero-padded decimal rendering of
//! `shard_index << 64 | position`, where `position` is the record's offset in the shard log
//! plus one. Position 0 is the shard's starting sequence number, which sorts before every
//! record of the shard (as AWS's does), so `AFTER_SEQUENCE_NUMBER` of it starts at the first
//! record. Numbers strictly increase within a shard, and a child shard (higher index) always
//! sorts after its parents, which keeps per-key ordering across resharding. Clients compare
//! them as big integers, as they do with AWS's.

use crate::names::{ShardId, TypeError};
use std::fmt;

const PREFIX: &str = "49";
const BODY_DIGITS: usize = 54;

/// A decoded sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    pub shard: ShardId,
    /// Log offset + 1; 0 is the shard's starting sequence number.
    pub position: u64,
}

impl SequenceNumber {
    pub fn new(shard: ShardId, position: u64) -> Self {
        SequenceNumber { shard, position }
    }

    /// The sequence number of the record at `offset` in the shard's log.
    pub fn of_record(shard: ShardId, offset: u64) -> Self {
        SequenceNumber::new(shard, offset.saturating_add(1))
    }

    /// The shard's StartingSequenceNumber: before every record of the shard.
    pub fn shard_start(shard: ShardId) -> Self {
        SequenceNumber::new(shard, 0)
    }

    /// The log offset of the record this number names (`None` for the shard start).
    pub fn record_offset(&self) -> Option<u64> {
        self.position.checked_sub(1)
    }

    /// The log offset of the first record after this number.
    pub fn next_offset(&self) -> u64 {
        self.position
    }

    /// Parses a sequence number this broker issued. Any other decimal string is an error.
    pub fn parse(text: &str) -> Result<Self, TypeError> {
        let body = text.strip_prefix(PREFIX).ok_or(TypeError::SequenceNumber)?;
        if body.len() != BODY_DIGITS || !body.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TypeError::SequenceNumber);
        }
        let value: u128 = body.parse().map_err(|_| TypeError::SequenceNumber)?;
        let shard = u32::try_from(value >> 64).map_err(|_| TypeError::SequenceNumber)?;
        Ok(SequenceNumber {
            shard: ShardId(shard),
            position: value as u64,
        })
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = (u128::from(self.shard.0) << 64) | u128::from(self.position);
        write!(f, "{PREFIX}{value:054}")
    }
}

#[cfg(test)]
mod tests {
    use self::num_compare::as_big;
    use super::*;
    use proptest::prelude::*;

    mod num_compare {
        /// Compares decimal strings the way clients do: as big integers.
        pub fn as_big(a: &str) -> (usize, &str) {
            let trimmed = a.trim_start_matches('0');
            (trimmed.len(), trimmed)
        }
    }

    #[test]
    fn renders_56_digits() {
        let s = SequenceNumber::new(ShardId(3), 17).to_string();
        assert_eq!(s.len(), 56);
        assert!(s.starts_with("49"));
        assert_eq!(
            SequenceNumber::parse(&s).unwrap(),
            SequenceNumber::new(ShardId(3), 17)
        );
    }

    #[test]
    fn rejects_foreign_numbers() {
        assert!(SequenceNumber::parse("1").is_err());
        assert!(SequenceNumber::parse("49abc").is_err());
        let too_big = format!("49{}", "9".repeat(54));
        assert!(SequenceNumber::parse(&too_big).is_err());
    }

    proptest! {
        #[test]
        fn string_order_matches_numeric_order(a_shard in 0u32..u32::MAX, a_off: u64, b_shard in 0u32..u32::MAX, b_off: u64) {
            let a = SequenceNumber::new(ShardId(a_shard), a_off);
            let b = SequenceNumber::new(ShardId(b_shard), b_off);
            let (sa, sb) = (a.to_string(), b.to_string());
            prop_assert_eq!(a.cmp(&b), as_big(&sa).cmp(&as_big(&sb)));
            prop_assert_eq!(SequenceNumber::parse(&sa).unwrap(), a);
        }
    }
}
