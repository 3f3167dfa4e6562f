//! Kinesis limits, as AWS documents them.

/// Largest record (data + partition key) by default: 1 MiB.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Records per PutRecords request.
pub const MAX_PUT_RECORDS: usize = 500;
/// Bytes per PutRecords request (data + partition keys).
pub const MAX_PUT_RECORDS_BYTES: usize = 5 * 1024 * 1024;
/// Records per GetRecords call.
pub const MAX_GET_RECORDS: usize = 10_000;
/// Bytes per GetRecords call.
pub const MAX_GET_RECORDS_BYTES: usize = 10 * 1024 * 1024;
/// Shard iterators expire after five minutes.
pub const ITERATOR_TTL_MS: u64 = 5 * 60 * 1000;
/// Default, minimum and maximum retention.
pub const DEFAULT_RETENTION_HOURS: u32 = 24;
pub const MIN_RETENTION_HOURS: u32 = 24;
pub const MAX_RETENTION_HOURS: u32 = 8760;
/// Shards an on-demand stream starts with.
pub const ON_DEMAND_INITIAL_SHARDS: u32 = 4;
/// Default account-wide shard limit reported by DescribeLimits.
pub const DEFAULT_SHARD_LIMIT: u32 = 500;
/// Default on-demand stream limit reported by DescribeLimits.
pub const DEFAULT_ON_DEMAND_STREAM_LIMIT: u32 = 50;
/// Enhanced fan-out consumers per stream.
pub const MAX_CONSUMERS_PER_STREAM: usize = 20;
/// Tags per stream.
pub const MAX_TAGS_PER_STREAM: usize = 50;
