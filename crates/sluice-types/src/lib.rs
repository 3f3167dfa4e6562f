//! Sluice's domain vocabulary: validated stream names, shard ids, ARNs, sequence numbers,
//! hash-key ranges and the MD5 partition-key mapping, plus the Kinesis limits.
//!
//! Pure functions and plain data only: this crate knows nothing of tokio, HTTP, storage or
//! wire formats. Entry types: [`StreamName`], [`ShardId`], [`SequenceNumber`],
//! [`HashKeyRange`], [`partition_key_hash`], [`limits`].

mod arn;
mod hash;
pub mod limits;
mod names;
mod sequence;

pub use arn::{ConsumerArnParts, consumer_arn, parse_consumer_arn, parse_stream_arn, stream_arn};
pub use hash::{HashKeyRange, MAX_HASH_KEY, partition_key_hash};
pub use names::{ShardId, StreamName, TypeError};
pub use sequence::SequenceNumber;
