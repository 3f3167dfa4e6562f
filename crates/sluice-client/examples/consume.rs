//! Reads every record of a stream's shards from the start, over the `ReadShard` stream of
//! the native API, and prints them. Against `make run`, after the `produce` example:
//!
//! ```sh
//! cargo run -p sluice-client --example consume -- http://127.0.0.1:50051 example
//! ```

use sluice_client::{Client, ClientConfig, Error};
use sluice_proto::v1 as pb;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .or_else(|| std::env::var("SLUICE_ENDPOINT").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let stream = args.next().unwrap_or_else(|| "example".to_owned());

    let client = Client::connect(ClientConfig::new(endpoint)).await?;
    let description = client.describe_stream(&stream).await?;
    for shard in description.shards {
        let mut batches = client
            .data()
            .read_shard(pb::ReadShardRequest {
                stream_name: stream.clone(),
                shard_id: shard.shard_id.clone(),
                starting_position: Some(pb::StartingPosition {
                    r#type: pb::StartingPositionType::TrimHorizon as i32,
                    ..Default::default()
                }),
                max_records_per_batch: 1000,
            })
            .await?
            .into_inner();
        // The stream follows the shard as records arrive: stop at the first empty batch,
        // caught up with what was written.
        while let Some(batch) = batches.message().await? {
            for record in &batch.records {
                println!(
                    "{} {} {}",
                    shard.shard_id,
                    record.partition_key,
                    String::from_utf8_lossy(&record.data)
                );
            }
            if batch.records.is_empty() || batch.millis_behind_latest == 0 {
                break;
            }
        }
    }
    Ok(())
}
