//! Acknowledged writes and metadata survive `kill -9` of a real `sluice` process.

use crate::{create_active, read_all};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use sluice_tests::ProcessNode;

#[tokio::test]
async fn acknowledged_records_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = ProcessNode::start(dir.path()).await;
    let client = node.client();
    create_active(&client, "durable", 2).await;
    client
        .add_tags_to_stream()
        .stream_name("durable")
        .tags("team", "data")
        .send()
        .await
        .unwrap();
    // Concurrent writers; every acknowledged record is remembered.
    let mut writers = tokio::task::JoinSet::new();
    for writer in 0..4 {
        let client = client.clone();
        writers.spawn(async move {
            let mut acked = Vec::new();
            for batch in 0..10 {
                let entries = (0..50)
                    .map(|i| {
                        PutRecordsRequestEntry::builder()
                            .partition_key(format!("w{writer}-{i}"))
                            .data(Blob::new(format!("{writer}:{batch}:{i}")))
                            .build()
                            .unwrap()
                    })
                    .collect();
                let out = client
                    .put_records()
                    .stream_name("durable")
                    .set_records(Some(entries))
                    .send()
                    .await
                    .unwrap();
                for (i, record) in out.records().iter().enumerate() {
                    if record.error_code().is_none() {
                        acked.push((
                            format!("{writer}:{batch}:{i}"),
                            record.sequence_number().unwrap().to_owned(),
                        ));
                    }
                }
            }
            acked
        });
    }
    let mut acked = Vec::new();
    while let Some(done) = writers.join_next().await {
        acked.extend(done.unwrap());
    }
    assert_eq!(acked.len(), 2000);
    node.kill9();

    let node = ProcessNode::start(dir.path()).await;
    let client = node.client();
    let summary = client
        .describe_stream_summary()
        .stream_name("durable")
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary
            .stream_description_summary()
            .unwrap()
            .stream_status()
            .as_str(),
        "ACTIVE"
    );
    let tags = client
        .list_tags_for_stream()
        .stream_name("durable")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tags()[0].key(), "team");
    let mut read = std::collections::HashMap::new();
    let mut newest = std::collections::HashMap::new();
    for shard in ["shardId-000000000000", "shardId-000000000001"] {
        let records = read_all(&client, "durable", shard).await;
        let sequences: Vec<_> = records
            .iter()
            .map(|r| crate::seq_key(r.sequence_number()))
            .collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "order in {shard}"
        );
        newest.insert(
            shard.to_owned(),
            sequences.last().cloned().unwrap_or_default(),
        );
        for record in records {
            let data = String::from_utf8(record.data().as_ref().to_vec()).unwrap();
            assert!(
                read.insert(data, record.sequence_number().to_owned())
                    .is_none(),
                "no duplicates"
            );
        }
    }
    for (data, sequence) in &acked {
        assert_eq!(
            read.get(data),
            Some(sequence),
            "acknowledged record {data} is readable with its sequence number"
        );
    }
    // Writes continue after the restart with higher sequence numbers.
    let (shard, next) = crate::put(&client, "durable", "w0-0", b"after restart").await;
    assert!(
        crate::seq_key(&next) > newest[&shard],
        "sequence numbers keep increasing across restarts"
    );
}
