//! The partition-key → hash-key mapping and hash-key ranges.

use md5::{Digest, Md5};

/// The largest hash key, 2^128 - 1.
pub const MAX_HASH_KEY: u128 = u128::MAX;

/// MD5 of the partition key's UTF-8 bytes, read as an unsigned 128-bit big-endian integer.
pub fn partition_key_hash(partition_key: &str) -> u128 {
    let digest = Md5::digest(partition_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest);
    u128::from_be_bytes(bytes)
}

/// An inclusive range of hash keys owned by one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    pub start: u128,
    pub end: u128,
}

impl HashKeyRange {
    pub const FULL: HashKeyRange = HashKeyRange {
        start: 0,
        end: MAX_HASH_KEY,
    };

    pub fn contains(&self, key: u128) -> bool {
        self.start <= key && key <= self.end
    }

    /// Splits the key space into `count` contiguous ranges the way AWS does for a new
    /// stream: equal widths, the last range absorbing the remainder.
    pub fn uniform(count: u32) -> Vec<HashKeyRange> {
        Self::FULL.divide(count)
    }

    /// Divides this range into `count` contiguous pieces of (nearly) equal width.
    pub fn divide(&self, count: u32) -> Vec<HashKeyRange> {
        if count <= 1 {
            return vec![*self];
        }
        let count = u128::from(count);
        let width = self.end - self.start;
        // floor((width + 1) / count) without overflowing on the full key space.
        let step = match width.checked_add(1) {
            Some(total) => total / count,
            None => width / count + u128::from(width % count == count - 1),
        };
        (0..count)
            .map(|i| {
                let start = self.start + step * i;
                let end = if i + 1 == count {
                    self.end
                } else {
                    start + step - 1
                };
                HashKeyRange { start, end }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn md5_mapping_matches_known_values() {
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(
            partition_key_hash(""),
            0xd41d8cd98f00b204e9800998ecf8427e_u128
        );
        // md5("a") = 0cc175b9c0f1b6a831c399e269772661
        assert_eq!(
            partition_key_hash("a"),
            0x0cc175b9c0f1b6a831c399e269772661_u128
        );
    }

    #[test]
    fn uniform_ranges_match_aws_for_small_counts() {
        let two = HashKeyRange::uniform(2);
        assert_eq!(two[0].end, 170141183460469231731687303715884105727);
        assert_eq!(two[1].start, 170141183460469231731687303715884105728);
        assert_eq!(two[1].end, MAX_HASH_KEY);
        let four = HashKeyRange::uniform(4);
        assert_eq!(four[0].end, 85070591730234615865843651857942052863);
        assert_eq!(four[3].start, 255211775190703847597530955573826158592);
    }

    proptest! {
        #[test]
        fn uniform_ranges_cover_the_key_space_exactly(count in 1u32..2000, key: u128) {
            let ranges = HashKeyRange::uniform(count);
            prop_assert_eq!(ranges.len(), count as usize);
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges[ranges.len() - 1].end, MAX_HASH_KEY);
            for pair in ranges.windows(2) {
                prop_assert_eq!(pair[0].end + 1, pair[1].start);
                prop_assert!(pair[0].start <= pair[0].end);
            }
            let owners = ranges.iter().filter(|r| r.contains(key)).count();
            prop_assert_eq!(owners, 1);
        }

        #[test]
        fn every_partition_key_routes_to_exactly_one_shard(key in "\\PC{1,256}", count in 1u32..64) {
            let hash = partition_key_hash(&key);
            let ranges = HashKeyRange::uniform(count);
            prop_assert_eq!(ranges.iter().filter(|r| r.contains(hash)).count(), 1);
        }
    }
}
