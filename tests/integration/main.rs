//! Black-box suites: the official AWS SDK for Rust (and raw HTTP for what no SDK would
//! send) against real nodes.

mod auth;
mod cli;
mod client;
mod cluster;
mod durability;
mod encryption;
mod errors;
mod fanout;
mod faults;
mod grpc;
mod liveness;
mod metrics;
mod produce_faults;
mod protocol;
mod rebalance;
mod records;
mod resharding;
mod routing;
mod streams;
mod throttling;
mod tls;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use sluice_tests::wait_active;

/// Orders decimal sequence numbers as big integers, as clients compare them.
pub fn seq_key(sequence: &str) -> (usize, String) {
    let trimmed = sequence.trim_start_matches('0');
    (trimmed.len(), trimmed.to_owned())
}

/// Creates a stream and waits until it is ACTIVE.
pub async fn create_active(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    wait_active(client, name).await;
}

/// Puts one record and returns (shard id, sequence number).
pub async fn put(client: &Client, stream: &str, key: &str, data: &[u8]) -> (String, String) {
    let out = client
        .put_record()
        .stream_name(stream)
        .partition_key(key)
        .data(Blob::new(data))
        .send()
        .await
        .expect("put record");
    (out.shard_id().to_owned(), out.sequence_number().to_owned())
}

/// Reads a shard from TRIM_HORIZON until an empty page (or the shard's end).
pub async fn read_all(
    client: &Client,
    stream: &str,
    shard: &str,
) -> Vec<aws_sdk_kinesis::types::Record> {
    let mut iterator = client
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::TrimHorizon)
        .send()
        .await
        .expect("get shard iterator")
        .shard_iterator
        .expect("iterator");
    let mut records = Vec::new();
    loop {
        let out = client
            .get_records()
            .shard_iterator(&iterator)
            .send()
            .await
            .expect("get records");
        let page = out.records().to_vec();
        let empty = page.is_empty();
        records.extend(page);
        match out.next_shard_iterator {
            Some(next) if !empty => iterator = next,
            _ => return records,
        }
    }
}
