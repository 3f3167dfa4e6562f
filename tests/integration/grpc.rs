//! The native gRPC API: stream administration through `sluice.v1.Streams` and records
//! through `sluice.v1.Data`, against a real node.

use sluice_proto::v1 as pb;
use sluice_proto::v1::data_client::DataClient;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_tests::{Node, wait_for};
use std::time::Duration;
use tonic::transport::Channel;

async fn streams(node: &Node) -> StreamsClient<Channel> {
    StreamsClient::connect(format!("http://{}", node.grpc_addr))
        .await
        .expect("connect")
}

async fn data(node: &Node) -> DataClient<Channel> {
    DataClient::connect(format!("http://{}", node.grpc_addr))
        .await
        .expect("connect")
}

async fn describe(client: &mut StreamsClient<Channel>, name: &str) -> pb::StreamDescription {
    client
        .describe_stream(pb::DescribeStreamRequest {
            stream_name: name.to_owned(),
        })
        .await
        .expect("describe")
        .into_inner()
        .stream
        .expect("a description")
}

async fn wait_status(client: &StreamsClient<Channel>, name: &str, status: &str) {
    wait_for(
        &format!("{name} to be {status}"),
        Duration::from_secs(10),
        || {
            let mut client = client.clone();
            async move {
                client
                    .describe_stream(pb::DescribeStreamRequest {
                        stream_name: name.to_owned(),
                    })
                    .await
                    .is_ok_and(|d| d.into_inner().stream.is_some_and(|s| s.status == status))
            }
        },
    )
    .await;
}

async fn create_active(client: &mut StreamsClient<Channel>, name: &str, shards: u32) {
    client
        .create_stream(pb::CreateStreamRequest {
            stream_name: name.to_owned(),
            shard_count: shards,
            ..Default::default()
        })
        .await
        .expect("create");
    wait_status(client, name, "ACTIVE").await;
}

fn error_type(status: &tonic::Status) -> &str {
    status
        .metadata()
        .get("x-sluice-error-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn stream_administration_round_trip() {
    let node = Node::start().await;
    let mut client = streams(&node).await;

    create_active(&mut client, "admin", 1).await;
    let described = describe(&mut client, "admin").await;
    assert_eq!(
        described.stream_arn,
        "arn:aws:kinesis:us-east-1:000000000000:stream/admin"
    );
    assert_eq!(described.mode, "PROVISIONED");
    assert_eq!(described.retention_hours, 24);
    assert_eq!(described.open_shard_count, 1);
    assert_eq!(described.shards.len(), 1);
    let shard = &described.shards[0];
    assert_eq!(shard.shard_id, "shardId-000000000000");
    assert_eq!(shard.starting_hash_key, "0");
    assert_eq!(shard.ending_hash_key, u128::MAX.to_string());
    assert!(shard.ending_sequence_number.is_none());

    // Creating it again is refused, as Kinesis refuses it.
    let error = client
        .create_stream(pb::CreateStreamRequest {
            stream_name: "admin".to_owned(),
            shard_count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::FailedPrecondition);
    assert_eq!(error_type(&error), "ResourceInUseException");

    let listed = client
        .list_streams(pb::ListStreamsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .streams
            .iter()
            .map(|s| s.stream_name.as_str())
            .collect::<Vec<_>>(),
        ["admin"]
    );
    assert!(!listed.has_more_streams);

    let middle = (u128::MAX / 2 + 1).to_string();
    client
        .split_shard(pb::SplitShardRequest {
            stream_name: "admin".to_owned(),
            shard_id: "shardId-000000000000".to_owned(),
            new_starting_hash_key: middle.clone(),
        })
        .await
        .expect("split");
    wait_status(&client, "admin", "ACTIVE").await;
    let described = describe(&mut client, "admin").await;
    assert_eq!(described.open_shard_count, 2);
    assert_eq!(described.shards.len(), 3);
    assert!(described.shards[0].ending_sequence_number.is_some());
    for child in &described.shards[1..] {
        assert_eq!(
            child.parent_shard_id.as_deref(),
            Some("shardId-000000000000")
        );
        assert!(child.ending_sequence_number.is_none());
    }
    assert_eq!(
        described.shards[1].ending_hash_key,
        (u128::MAX / 2).to_string()
    );
    assert_eq!(described.shards[2].starting_hash_key, middle);

    // A closed shard cannot be split again.
    let error = client
        .split_shard(pb::SplitShardRequest {
            stream_name: "admin".to_owned(),
            shard_id: "shardId-000000000000".to_owned(),
            new_starting_hash_key: middle,
        })
        .await
        .unwrap_err();
    assert_eq!(error_type(&error), "ResourceNotFoundException", "{error:?}");

    client
        .add_tags(pb::AddTagsRequest {
            stream_name: "admin".to_owned(),
            tags: [("team", "data"), ("env", "test")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        })
        .await
        .expect("add tags");
    client
        .remove_tags(pb::RemoveTagsRequest {
            stream_name: "admin".to_owned(),
            tag_keys: vec!["env".to_owned()],
        })
        .await
        .expect("remove tags");
    let tags = describe(&mut client, "admin").await.tags;
    assert_eq!(tags.len(), 1);
    assert_eq!(tags.get("team").map(String::as_str), Some("data"));

    for hours in [48, 36, 24] {
        client
            .set_retention(pb::SetRetentionRequest {
                stream_name: "admin".to_owned(),
                retention_hours: hours,
            })
            .await
            .expect("set retention");
        assert_eq!(describe(&mut client, "admin").await.retention_hours, hours);
    }
    let error = client
        .set_retention(pb::SetRetentionRequest {
            stream_name: "admin".to_owned(),
            retention_hours: 12,
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&error), "InvalidArgumentException");

    client
        .delete_stream(pb::DeleteStreamRequest {
            stream_name: "admin".to_owned(),
            enforce_consumer_deletion: false,
        })
        .await
        .expect("delete");
    wait_for("the stream to be gone", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            client
                .describe_stream(pb::DescribeStreamRequest {
                    stream_name: "admin".to_owned(),
                })
                .await
                .is_err_and(|e| e.code() == tonic::Code::NotFound)
        }
    })
    .await;
    let error = client
        .describe_stream(pb::DescribeStreamRequest {
            stream_name: "admin".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(error_type(&error), "ResourceNotFoundException");

    // Names are checked against the Kinesis constraints.
    let error = client
        .create_stream(pb::CreateStreamRequest {
            stream_name: "no spaces".to_owned(),
            shard_count: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&error), "ValidationException");
    node.stop().await;
}

fn entry(key: &str, data: &[u8]) -> pb::PutRecordsRequestEntry {
    pb::PutRecordsRequestEntry {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: data.to_vec().into(),
    }
}

async fn put(
    client: &mut DataClient<Channel>,
    stream: &str,
    from: usize,
    to: usize,
) -> Vec<String> {
    let response = client
        .put_records(pb::PutRecordsRequest {
            stream_name: stream.to_owned(),
            records: (from..to)
                .map(|i| entry(&format!("k{i}"), format!("v{i}").as_bytes()))
                .collect(),
        })
        .await
        .expect("put records")
        .into_inner();
    assert_eq!(response.failed_record_count, 0);
    response
        .records
        .into_iter()
        .map(|r| match r.result {
            Some(pb::put_records_result_entry::Result::Success(s)) => {
                assert_eq!(s.shard_id, "shardId-000000000000");
                s.sequence_number
            }
            other => panic!("a failed record: {other:?}"),
        })
        .collect()
}

async fn next_batch(batches: &mut tonic::Streaming<pb::ReadShardBatch>) -> pb::ReadShardBatch {
    tokio::time::timeout(Duration::from_secs(10), batches.message())
        .await
        .expect("a batch within 10 s")
        .expect("a well-formed batch")
        .expect("the stream is open")
}

#[tokio::test]
async fn put_records_then_read_shard_follows_new_records() {
    let node = Node::start().await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "data", 1).await;
    let mut client = data(&node).await;

    let mut sent = put(&mut client, "data", 0, 20).await;
    let mut batches = client
        .read_shard(pb::ReadShardRequest {
            stream_name: "data".to_owned(),
            shard_id: "shardId-000000000000".to_owned(),
            starting_position: Some(pb::StartingPosition {
                r#type: pb::StartingPositionType::TrimHorizon as i32,
                ..Default::default()
            }),
            max_records_per_batch: 7,
        })
        .await
        .expect("read shard")
        .into_inner();
    let mut received: Vec<pb::Record> = Vec::new();
    while received.len() < 20 {
        let batch = next_batch(&mut batches).await;
        assert!(batch.records.len() <= 7);
        assert!(batch.child_shards.is_empty());
        assert_eq!(
            batch.continuation_sequence_number.as_deref(),
            batch.records.last().map(|r| r.sequence_number.as_str())
        );
        received.extend(batch.records);
    }

    // Records put while the stream is open arrive on it.
    sent.extend(put(&mut client, "data", 20, 25).await);
    while received.len() < 25 {
        received.extend(next_batch(&mut batches).await.records);
    }
    assert_eq!(
        received
            .iter()
            .map(|r| r.sequence_number.clone())
            .collect::<Vec<_>>(),
        sent,
        "every record, in order"
    );
    for (i, record) in received.iter().enumerate() {
        assert_eq!(record.partition_key, format!("k{i}"));
        assert_eq!(record.data, format!("v{i}").as_bytes());
    }

    // Once the shard is split, the stream ends with its children.
    admin
        .split_shard(pb::SplitShardRequest {
            stream_name: "data".to_owned(),
            shard_id: "shardId-000000000000".to_owned(),
            new_starting_hash_key: (u128::MAX / 2 + 1).to_string(),
        })
        .await
        .expect("split");
    let last = next_batch(&mut batches).await;
    assert!(last.records.is_empty());
    assert!(last.continuation_sequence_number.is_none());
    let mut children: Vec<String> = last.child_shards.into_iter().map(|c| c.shard_id).collect();
    children.sort();
    assert_eq!(children, ["shardId-000000000001", "shardId-000000000002"]);
    let end = tokio::time::timeout(Duration::from_secs(10), batches.message())
        .await
        .expect("the end within 10 s")
        .expect("a clean end");
    assert!(end.is_none());
    node.stop().await;
}

#[tokio::test]
async fn put_records_limits() {
    let node = Node::start().await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "limits", 1).await;
    let client = data(&node).await;

    let put = |records: Vec<pb::PutRecordsRequestEntry>| {
        let mut client = client.clone();
        async move {
            client
                .put_records(pb::PutRecordsRequest {
                    stream_name: "limits".to_owned(),
                    records,
                })
                .await
                .unwrap_err()
        }
    };

    let too_many = put((0..501).map(|i| entry(&i.to_string(), b"x")).collect()).await;
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&too_many), "ValidationException");

    let too_large = put(vec![entry("k", &vec![0; 1024 * 1024])]).await;
    assert_eq!(too_large.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&too_large), "ValidationException");

    let six_mib = (0..6)
        .map(|i| entry(&i.to_string(), &vec![0; 1024 * 1024 - 1]))
        .collect();
    let too_much = put(six_mib).await;
    assert_eq!(too_much.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&too_much), "InvalidArgumentException");
    assert_eq!(too_much.message(), "Records size exceeds 5 MB limit");

    let empty_key = put(vec![entry("", b"x")]).await;
    assert_eq!(error_type(&empty_key), "ValidationException");
    let long_key = put(vec![entry(&"k".repeat(257), b"x")]).await;
    assert_eq!(error_type(&long_key), "ValidationException");

    let bad_hash = put(vec![pb::PutRecordsRequestEntry {
        explicit_hash_key: Some(format!("{}0", u128::MAX)),
        ..entry("k", b"x")
    }])
    .await;
    assert_eq!(error_type(&bad_hash), "InvalidArgumentException");

    let missing = DataClient::connect(format!("http://{}", node.grpc_addr))
        .await
        .unwrap()
        .put_records(pb::PutRecordsRequest {
            stream_name: "missing".to_owned(),
            records: vec![entry("k", b"x")],
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(error_type(&missing), "ResourceNotFoundException");
    node.stop().await;
}

#[tokio::test]
async fn merge_update_shard_count_on_demand_and_read_errors() {
    let node = Node::start().await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "reshard", 2).await;

    // The pair must be given in hash key order.
    let error = admin
        .merge_shards(pb::MergeShardsRequest {
            stream_name: "reshard".to_owned(),
            shard_id: "shardId-000000000001".to_owned(),
            adjacent_shard_id: "shardId-000000000000".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::InvalidArgument);
    assert_eq!(error_type(&error), "InvalidArgumentException");
    admin
        .merge_shards(pb::MergeShardsRequest {
            stream_name: "reshard".to_owned(),
            shard_id: "shardId-000000000000".to_owned(),
            adjacent_shard_id: "shardId-000000000001".to_owned(),
        })
        .await
        .expect("merge");
    wait_status(&admin, "reshard", "ACTIVE").await;
    let described = describe(&mut admin, "reshard").await;
    assert_eq!(described.open_shard_count, 1);
    let merged = described.shards.last().unwrap();
    assert_eq!(
        merged.parent_shard_id.as_deref(),
        Some("shardId-000000000000")
    );
    assert_eq!(
        merged.adjacent_parent_shard_id.as_deref(),
        Some("shardId-000000000001")
    );

    let updated = admin
        .update_shard_count(pb::UpdateShardCountRequest {
            stream_name: "reshard".to_owned(),
            target_shard_count: 2,
        })
        .await
        .expect("update shard count")
        .into_inner();
    assert_eq!(updated.current_shard_count, 1);
    assert_eq!(updated.target_shard_count, 2);
    wait_status(&admin, "reshard", "ACTIVE").await;
    assert_eq!(describe(&mut admin, "reshard").await.open_shard_count, 2);

    let error = admin
        .create_stream(pb::CreateStreamRequest {
            stream_name: "demand".to_owned(),
            shard_count: 3,
            on_demand: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(error_type(&error), "ValidationException");
    admin
        .create_stream(pb::CreateStreamRequest {
            stream_name: "demand".to_owned(),
            on_demand: true,
            ..Default::default()
        })
        .await
        .expect("create on-demand");
    wait_status(&admin, "demand", "ACTIVE").await;
    let described = describe(&mut admin, "demand").await;
    assert_eq!(described.mode, "ON_DEMAND");
    assert_eq!(described.open_shard_count, 4);

    let mut client = data(&node).await;
    let read = |shard: &str, kind: pb::StartingPositionType| pb::ReadShardRequest {
        stream_name: "reshard".to_owned(),
        shard_id: shard.to_owned(),
        starting_position: Some(pb::StartingPosition {
            r#type: kind as i32,
            ..Default::default()
        }),
        max_records_per_batch: 0,
    };
    let error = client
        .read_shard(read(
            "shardId-000000000099",
            pb::StartingPositionType::TrimHorizon,
        ))
        .await
        .unwrap_err();
    assert_eq!(error.code(), tonic::Code::NotFound);
    assert_eq!(error_type(&error), "ResourceNotFoundException");
    let error = client
        .read_shard(read(
            "shardId-000000000000",
            pb::StartingPositionType::Unspecified,
        ))
        .await
        .unwrap_err();
    assert_eq!(error_type(&error), "InvalidArgumentException");

    // A closed shard with no records ends at once with its child.
    let mut batches = client
        .read_shard(read(
            "shardId-000000000000",
            pb::StartingPositionType::TrimHorizon,
        ))
        .await
        .expect("read a closed shard")
        .into_inner();
    let last = next_batch(&mut batches).await;
    assert!(last.records.is_empty());
    assert_eq!(
        last.child_shards
            .iter()
            .map(|c| c.shard_id.as_str())
            .collect::<Vec<_>>(),
        ["shardId-000000000002"]
    );
    assert!(batches.message().await.expect("a clean end").is_none());
    node.stop().await;
}

fn produce_request(batch_id: u64, stream: &str, keys: &[&str]) -> pb::ProduceRequest {
    pb::ProduceRequest {
        batch_id,
        stream_name: stream.to_owned(),
        records: keys
            .iter()
            .map(|key| pb::PutRecordsRequestEntry {
                partition_key: (*key).to_owned(),
                explicit_hash_key: None,
                data: format!("{batch_id}:{key}").into_bytes().into(),
            })
            .collect(),
    }
}

/// Opens a produce stream: batches go in through the sender, acks come out of the stream.
async fn open_produce(
    node: &Node,
) -> (
    tokio::sync::mpsc::Sender<pb::ProduceRequest>,
    tonic::Streaming<pb::ProduceAck>,
) {
    let (requests, mut incoming) = tokio::sync::mpsc::channel::<pb::ProduceRequest>(8);
    let acks = data(node)
        .await
        .produce(futures_util::stream::poll_fn(move |cx| {
            incoming.poll_recv(cx)
        }))
        .await
        .expect("open the produce stream")
        .into_inner();
    (requests, acks)
}

#[tokio::test]
async fn produce_stream_acks_every_batch_and_survives_a_refused_one() {
    let node = Node::start().await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "produced", 2).await;
    let (requests, mut acks) = open_produce(&node).await;
    // Pipelined: all batches are sent before any ack is read.
    let batches = [
        produce_request(1, "produced", &["a", "b", "c"]),
        produce_request(2, "produced", &["a", "b"]),
        produce_request(3, "missing", &["a"]),
        produce_request(4, "produced", &[""]),
        produce_request(5, "produced", &["a", "c"]),
    ];
    for batch in batches.clone() {
        requests.send(batch).await.expect("send a batch");
    }
    // Batches that share no shard may be answered in either order: gather the acks.
    let mut by_id = std::collections::HashMap::new();
    for _ in &batches {
        let ack = acks
            .message()
            .await
            .expect("ack")
            .expect("an ack per batch");
        assert!(
            by_id.insert(ack.batch_id, ack).is_none(),
            "one ack per batch"
        );
    }
    // 56-digit decimals: equal lengths compare as numbers do.
    let mut last_by_shard: std::collections::HashMap<String, String> = Default::default();
    let mut written = 0;
    for expected in &batches {
        let ack = by_id
            .remove(&expected.batch_id)
            .expect("every batch answered");
        match expected.batch_id {
            3 => {
                let error = ack.error.expect("refused batch");
                assert_eq!(error.error_code, "ResourceNotFoundException");
                assert!(ack.records.is_empty());
            }
            4 => {
                let error = ack.error.expect("refused batch");
                assert_eq!(error.error_code, "ValidationException");
            }
            _ => {
                assert_eq!(ack.error, None);
                assert_eq!(ack.failed_record_count, 0);
                assert_eq!(ack.records.len(), expected.records.len());
                for entry in ack.records {
                    let Some(pb::put_records_result_entry::Result::Success(ok)) = entry.result
                    else {
                        panic!("record failed: {entry:?}");
                    };
                    let sequence = ok.sequence_number.clone();
                    assert_eq!(sequence.len(), 56);
                    // A shard's batches are written in the order they were sent.
                    if let Some(previous) =
                        last_by_shard.insert(ok.shard_id.clone(), sequence.clone())
                    {
                        assert!(
                            previous < sequence,
                            "sequence numbers go up in {}",
                            ok.shard_id
                        );
                    }
                    written += 1;
                }
            }
        }
    }
    assert_eq!(written, 7);
    drop(requests);
    assert!(acks.message().await.expect("clean end").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_produce_batches_keep_every_keys_order() {
    let node = Node::start().await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "pipelined", 4).await;
    let (requests, mut acks) = open_produce(&node).await;
    // 60 batches sent without waiting: some share shards with the ones before, some not
    // (a key per batch, or several), so batches are written both side by side and in turn.
    let keys: Vec<String> = (0..12).map(|k| format!("key-{k}")).collect();
    let batches = 60u64;
    let sender = tokio::spawn(async move {
        for batch_id in 0..batches {
            let width = 1 + (batch_id as usize % 4);
            let records = (0..width)
                .flat_map(|i| {
                    let key = keys[(batch_id as usize * 5 + i * 7) % keys.len()].clone();
                    (0..5).map(move |n| {
                        // Every other batch is large, so it takes longer than the next.
                        let padding = if batch_id % 2 == 0 { 100 << 10 } else { 0 };
                        pb::PutRecordsRequestEntry {
                            partition_key: key.clone(),
                            explicit_hash_key: None,
                            data: format!("{batch_id}:{n}:{}", "x".repeat(padding))
                                .into_bytes()
                                .into(),
                        }
                    })
                })
                .collect();
            let request = pb::ProduceRequest {
                batch_id,
                stream_name: "pipelined".into(),
                records,
            };
            requests.send(request).await.expect("send a batch");
        }
        requests
    });
    let mut answered = std::collections::HashSet::new();
    for _ in 0..batches {
        let ack = acks
            .message()
            .await
            .expect("ack")
            .expect("an ack per batch");
        assert_eq!(ack.error, None, "batch {} refused", ack.batch_id);
        assert_eq!(ack.failed_record_count, 0);
        assert!(answered.insert(ack.batch_id), "one ack per batch");
    }
    drop(sender.await.expect("sender"));
    // Read every shard back: each key's records come in the order they were sent.
    let client = node.client();
    let shards = client
        .list_shards()
        .stream_name("pipelined")
        .send()
        .await
        .expect("list shards");
    let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let mut read = 0;
    for shard in shards.shards() {
        for record in crate::read_all(&client, "pipelined", shard.shard_id()).await {
            let key = record.partition_key().expect("a partition key").to_owned();
            let text = String::from_utf8(record.data.into_inner()).expect("utf-8");
            let mut fields = text.split(':');
            let mut number = || -> u64 {
                fields
                    .next()
                    .and_then(|field| field.parse().ok())
                    .expect("batch:n:padding")
            };
            let position = (number(), number());
            if let Some(previous) = last.insert(key.clone(), position) {
                assert!(
                    previous < position,
                    "{key}: {position:?} was written after {previous:?}"
                );
            }
            read += 1;
        }
    }
    let sent: usize = (0..batches).map(|b| 5 * (1 + (b as usize % 4))).sum();
    assert_eq!(read, sent, "every record written once");
}

/// Three records of one key: 600 KiB (fits the 1 MiB burst), 600 KiB (does not), 1 KiB.
fn big_small_batch() -> Vec<pb::PutRecordsRequestEntry> {
    [600 << 10, 600 << 10, 1 << 10]
        .into_iter()
        .map(|size: usize| pb::PutRecordsRequestEntry {
            partition_key: "one-key".to_owned(),
            explicit_hash_key: None,
            data: vec![7u8; size].into(),
        })
        .collect()
}

fn succeeded(results: &[pb::PutRecordsResultEntry]) -> Vec<bool> {
    results
        .iter()
        .map(|r| {
            matches!(
                r.result,
                Some(pb::put_records_result_entry::Result::Success(_))
            )
        })
        .collect()
}

#[tokio::test]
async fn produce_stream_refuses_the_rest_of_a_shard_after_a_throttled_record() {
    let node = Node::start_with(sluice_tests::NodeOptions {
        throughput_limits: true,
        ..Default::default()
    })
    .await;
    let mut admin = streams(&node).await;
    create_active(&mut admin, "ordered", 1).await;
    create_active(&mut admin, "unordered", 1).await;

    // Unary PutRecords is Kinesis PutRecords: a small record after a throttled one still
    // fits and is written, ahead of the throttled one's retry.
    let unary = data(&node)
        .await
        .put_records(pb::PutRecordsRequest {
            stream_name: "unordered".into(),
            records: big_small_batch(),
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(succeeded(&unary.records), [true, false, true]);

    // The produce stream keeps the shard's order: everything after the refusal is refused.
    let (requests, mut acks) = open_produce(&node).await;
    requests
        .send(pb::ProduceRequest {
            batch_id: 1,
            stream_name: "ordered".into(),
            records: big_small_batch(),
        })
        .await
        .expect("send");
    let ack = acks.message().await.expect("ack").expect("an ack");
    assert_eq!(succeeded(&ack.records), [true, false, false]);
    assert_eq!(ack.failed_record_count, 2);
    for entry in &ack.records[1..] {
        let Some(pb::put_records_result_entry::Result::Error(error)) = &entry.result else {
            panic!("refused: {entry:?}");
        };
        assert_eq!(error.error_code, "ProvisionedThroughputExceededException");
    }
}
