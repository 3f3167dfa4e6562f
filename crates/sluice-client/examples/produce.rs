//! Writes numbered records to a stream with the batching producer and prints where they
//! went. Against `make run`:
//!
//! ```sh
//! cargo run -p sluice-client --example produce -- http://127.0.0.1:50051 example 1000
//! ```
//!
//! Arguments: endpoint (default `$SLUICE_ENDPOINT` or `http://127.0.0.1:50051`), stream
//! (default `example`, created with 2 shards if missing), record count (default 1000).

use sluice_client::{Client, ClientConfig, Error, ProducerConfig};
use std::collections::BTreeMap;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .or_else(|| std::env::var("SLUICE_ENDPOINT").ok())
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let stream = args.next().unwrap_or_else(|| "example".to_owned());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);

    let client = Client::connect(ClientConfig::new(endpoint)).await?;
    if let Err(error) = client.describe_stream(&stream).await {
        if error.kind() != Some("ResourceNotFoundException") {
            return Err(error);
        }
        client.create_stream(&stream, 2).await?;
    }
    let producer = client.producer(&stream, ProducerConfig::default()).await?;
    let mut deliveries = Vec::with_capacity(count);
    for i in 0..count {
        // Records of one key keep their order; keys spread over the shards.
        let key = format!("device-{}", i % 10);
        deliveries.push(
            producer
                .send(key, format!("reading {i}").into_bytes())
                .await?,
        );
    }
    producer.flush().await?;
    let mut per_shard: BTreeMap<String, usize> = BTreeMap::new();
    for delivery in deliveries {
        *per_shard.entry(delivery.await?.shard_id).or_default() += 1;
    }
    for (shard, records) in per_shard {
        println!("{shard}: {records} records");
    }
    Ok(())
}
