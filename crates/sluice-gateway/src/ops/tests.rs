//! The handlers against a real broker on a temporary directory and a controlled clock:
//! every semantic error a handler answers with, by exact `__type` and message, and the
//! defaults and members of its answers.

use super::*;
use crate::value::decode_json;
use serde_json::json;
use sluice_cluster::{BrokerConfig, Clock, Identity};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const ACCOUNT: &str = "000000000000";
const NOW: u64 = 1_700_000_000_000;
/// 2^127: inside the second of three uniform shards.
const MIDDLE: &str = "170141183460469231731687303715884105728";

struct Fixture {
    broker: Broker,
    now: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        Fixture::with_shard_limit(Identity::default().shard_limit).await
    }

    async fn with_shard_limit(shard_limit: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let now = Arc::new(AtomicU64::new(NOW));
        let reader = Arc::clone(&now);
        let clock: Clock = Arc::new(move || reader.load(Ordering::SeqCst));
        let broker = Broker::open(BrokerConfig {
            fsync: false,
            retention_check_interval: Duration::from_secs(3600),
            clock,
            identity: Identity {
                shard_limit,
                ..Identity::default()
            },
            shard_limits: sluice_cluster::throttle::ShardLimitsConfig::disabled(),
            ..BrokerConfig::new(dir.path())
        })
        .await
        .unwrap();
        Fixture {
            broker,
            now,
            _dir: dir,
        }
    }

    fn advance(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Decodes `input` as a JSON request, checks it against the model, and runs `op`.
    async fn call(&self, op: Operation, input: serde_json::Value) -> Result<Value, ApiError> {
        let mut value = decode_json(input.to_string().as_bytes())?;
        validate::check_input(op.name(), &mut value)?;
        handle(&self.broker, op, &value).await
    }

    async fn ok(&self, op: Operation, input: serde_json::Value) -> Value {
        let shown = input.to_string();
        match self.call(op, input).await {
            Ok(output) => output,
            Err(error) => panic!("{op:?} {shown}: {error}"),
        }
    }

    /// Runs each case and compares the error's `__type` and message exactly.
    async fn check(&self, cases: Vec<(Operation, serde_json::Value, &str, String)>) {
        for (op, input, kind, message) in cases {
            let shown = input.to_string();
            match self.call(op, input).await {
                Ok(output) => panic!("{op:?} {shown}: expected {kind}, got {output:?}"),
                Err(error) => assert_eq!(
                    (error.kind.aws_type(), error.message.as_str()),
                    (kind, message.as_str()),
                    "{op:?} {shown}"
                ),
            }
        }
    }

    async fn active_stream(&self, name: &str, shards: u32) {
        self.ok(
            Operation::CreateStream,
            json!({"StreamName": name, "ShardCount": shards}),
        )
        .await;
        self.wait_for(name, StreamStatus::Active).await;
    }

    /// A stream that stays CREATING: its shard directory cannot be made, because a file
    /// is in the way of the stream's directory.
    async fn creating_stream(&self, name: &str) {
        let streams = self._dir.path().join("streams");
        std::fs::create_dir_all(&streams).unwrap();
        let created = self.now.load(Ordering::SeqCst);
        std::fs::write(streams.join(format!("{name}.{created}")), b"in the way").unwrap();
        self.ok(
            Operation::CreateStream,
            json!({"StreamName": name, "ShardCount": 1}),
        )
        .await;
        // Let the background activation run and fail.
        for _ in 0..20 {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(
            self.broker.stream(name).unwrap().status,
            StreamStatus::Creating
        );
    }

    async fn wait_for(&self, name: &str, status: StreamStatus) {
        // Opening many shards (each a Raft group) takes a while in a debug build.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if self.broker.stream(name).is_ok_and(|s| s.status == status) {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("stream {name} never became {status:?}");
    }
}

fn field<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |v, key| {
        v.get(key)
            .unwrap_or_else(|| panic!("no {key} in {value:?}"))
    })
}

fn shard_ids(shards: &Value) -> Vec<String> {
    shards
        .as_list()
        .unwrap()
        .iter()
        .map(|s| s.str_of("ShardId").unwrap().to_owned())
        .collect()
}

fn base64_of(len: usize) -> String {
    use base64::engine::general_purpose::STANDARD;
    STANDARD.encode(vec![7u8; len])
}

fn arn(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
}

#[test]
fn shard_ids_resolve_as_aws_reads_them() {
    for (text, index) in [
        ("shardId-000000000001", Some(1)),
        ("shardId-1", Some(1)),
        ("shard-1", Some(1)),
        ("1", Some(1)),
        ("-00002147483647", Some(2147483647)),
        ("a-00002147483647", Some(2147483647)),
        ("anything-0", Some(0)),
        ("2147483648", None),
        ("shardId-002147483648", None),
        ("ABKLFD8", None),
        ("2.14E4", None),
        ("shardId-", None),
        ("a-b-1", None),
        ("", None),
    ] {
        assert_eq!(resolve_shard_id(text), index.map(ShardId), "{text}");
    }
}

#[tokio::test]
async fn streams_are_named_by_name_or_arn() {
    let f = Fixture::new().await;
    f.active_stream("s", 1).await;
    f.check(vec![
        (
            Operation::DescribeStream,
            json!({}),
            "InvalidArgumentException",
            "Either StreamName or StreamARN should be provided.".into(),
        ),
        (
            Operation::DescribeStreamSummary,
            json!({"StreamName": "nope"}),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::DescribeStream,
            json!({"StreamName": "s", "StreamARN": arn("t")}),
            "InvalidArgumentException",
            format!(
                "StreamARN {} and StreamName s do not refer to the same stream.",
                arn("t")
            ),
        ),
    ])
    .await;
    let by_arn = f
        .ok(
            Operation::DescribeStreamSummary,
            json!({"StreamARN": arn("s")}),
        )
        .await;
    assert_eq!(
        field(&by_arn, &["StreamDescriptionSummary", "StreamName"]).as_str(),
        Some("s")
    );
}

#[tokio::test]
async fn create_stream_modes() {
    let f = Fixture::new().await;
    f.check(vec![
        (
            Operation::CreateStream,
            json!({"StreamName": "od", "ShardCount": 2, "StreamModeDetails": {"StreamMode": "ON_DEMAND"}}),
            "ValidationException",
            "ShardCount cannot be specified when StreamMode is ON_DEMAND.".into(),
        ),
        (
            Operation::CreateStream,
            json!({"StreamName": "pr", "StreamModeDetails": {"StreamMode": "PROVISIONED"}}),
            "ValidationException",
            "1 validation error detected: Value null at 'shardCount' failed to satisfy constraint: Member must not be null".into(),
        ),
    ])
    .await;
    // Neither a mode nor a shard count: an on-demand stream with its four initial shards.
    f.ok(Operation::CreateStream, json!({"StreamName": "plain"}))
        .await;
    f.wait_for("plain", StreamStatus::Active).await;
    let summary = f
        .ok(
            Operation::DescribeStreamSummary,
            json!({"StreamName": "plain"}),
        )
        .await;
    let summary = field(&summary, &["StreamDescriptionSummary"]);
    assert_eq!(
        field(summary, &["StreamModeDetails", "StreamMode"]).as_str(),
        Some("ON_DEMAND")
    );
    assert_eq!(summary.i64_of("OpenShardCount"), Some(4));
    // A shard count alone keeps the provisioned default.
    f.active_stream("counted", 3).await;
    let summary = f
        .ok(
            Operation::DescribeStreamSummary,
            json!({"StreamName": "counted"}),
        )
        .await;
    assert_eq!(
        field(
            &summary,
            &[
                "StreamDescriptionSummary",
                "StreamModeDetails",
                "StreamMode"
            ]
        )
        .as_str(),
        Some("PROVISIONED")
    );
}

#[tokio::test]
async fn describe_answers_have_aws_members() {
    let f = Fixture::new().await;
    f.active_stream("s", 3).await;
    f.creating_stream("young").await;

    let described = f
        .ok(Operation::DescribeStream, json!({"StreamName": "s"}))
        .await;
    let description = field(&described, &["StreamDescription"]);
    assert_eq!(description.str_of("EncryptionType"), Some("NONE"));
    assert_eq!(description.bool_of("HasMoreShards"), Some(false));
    assert_eq!(description.i64_of("RetentionPeriodHours"), Some(24));
    assert!(description.get("KeyId").is_none());
    assert_eq!(shard_ids(field(description, &["Shards"])).len(), 3);

    let page = f
        .ok(
            Operation::DescribeStream,
            json!({"StreamName": "s", "Limit": 2, "ExclusiveStartShardId": "shard-0"}),
        )
        .await;
    let page = field(&page, &["StreamDescription"]);
    assert_eq!(
        shard_ids(field(page, &["Shards"])),
        ["shardId-000000000001", "shardId-000000000002"]
    );
    assert_eq!(page.bool_of("HasMoreShards"), Some(false));
    let first = f
        .ok(
            Operation::DescribeStream,
            json!({"StreamName": "s", "Limit": 1}),
        )
        .await;
    assert_eq!(
        field(&first, &["StreamDescription", "HasMoreShards"]).as_bool(),
        Some(true)
    );

    // A stream that is still being created shows no shards yet.
    let young = f
        .ok(Operation::DescribeStream, json!({"StreamName": "young"}))
        .await;
    let young = field(&young, &["StreamDescription"]);
    assert_eq!(young.str_of("StreamStatus"), Some("CREATING"));
    assert_eq!(young.list_of("Shards").map(<[Value]>::len), Some(0));
    assert_eq!(young.bool_of("HasMoreShards"), Some(false));

    let summary = f
        .ok(Operation::DescribeStreamSummary, json!({"StreamName": "s"}))
        .await;
    let summary = field(&summary, &["StreamDescriptionSummary"]);
    assert_eq!(summary.str_of("EncryptionType"), Some("NONE"));
    assert_eq!(summary.i64_of("OpenShardCount"), Some(3));
    assert_eq!(summary.i64_of("ConsumerCount"), Some(0));
    assert_eq!(summary.i64_of("MaxRecordSizeInKiB"), Some(1024));
}

#[tokio::test]
async fn list_shards_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 3).await;
    f.creating_stream("young").await;
    let first = f
        .ok(
            Operation::ListShards,
            json!({"StreamName": "s", "MaxResults": 1}),
        )
        .await;
    assert_eq!(
        shard_ids(field(&first, &["Shards"])),
        ["shardId-000000000000"]
    );
    let token = first.str_of("NextToken").unwrap().to_owned();

    f.check(vec![
        (
            Operation::ListShards,
            json!({}),
            "InvalidArgumentException",
            "Either NextToken or StreamName should be provided.".into(),
        ),
        (
            Operation::ListShards,
            json!({"StreamName": "s", "NextToken": token}),
            "InvalidArgumentException",
            "NextToken and StreamName cannot be provided together.".into(),
        ),
        (
            Operation::ListShards,
            json!({"StreamARN": arn("s"), "NextToken": token}),
            "InvalidArgumentException",
            "NextToken and StreamName cannot be provided together.".into(),
        ),
        (
            Operation::ListShards,
            json!({"NextToken": token, "ExclusiveStartShardId": "shardId-000000000000"}),
            "InvalidArgumentException",
            "NextToken and ExclusiveStartShardId cannot be provided together.".into(),
        ),
        (
            Operation::ListShards,
            json!({"NextToken": token, "StreamCreationTimestamp": 1}),
            "InvalidArgumentException",
            "NextToken and StreamCreationTimestamp cannot be provided together.".into(),
        ),
        (
            Operation::ListShards,
            json!({"NextToken": "not-a-token"}),
            "InvalidArgumentException",
            "Invalid NextToken.".into(),
        ),
        (
            Operation::ListShards,
            json!({"StreamName": "nope"}),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::ListShards,
            json!({"StreamName": "young"}),
            "ResourceInUseException",
            format!(
                "Stream young under account {ACCOUNT} not ACTIVE or UPDATING, instead in state CREATING"
            ),
        ),
    ])
    .await;

    // A token lives for 300 seconds.
    f.advance(300_000);
    let second = f
        .ok(
            Operation::ListShards,
            json!({"NextToken": token, "MaxResults": 1}),
        )
        .await;
    assert_eq!(
        shard_ids(field(&second, &["Shards"])),
        ["shardId-000000000001"]
    );
    f.advance(1);
    f.check(vec![(
        Operation::ListShards,
        json!({"NextToken": token}),
        "ExpiredNextTokenException",
        format!("The timestamp of the NextToken {token} has expired."),
    )])
    .await;

    // ExclusiveStartShardId and the AFTER_SHARD_ID filter read shard ids as AWS does.
    let after = f
        .ok(
            Operation::ListShards,
            json!({"StreamName": "s", "ExclusiveStartShardId": "shard-1"}),
        )
        .await;
    assert_eq!(
        shard_ids(field(&after, &["Shards"])),
        ["shardId-000000000002"]
    );
    let filtered = f
        .ok(
            Operation::ListShards,
            json!({"StreamName": "s", "ShardFilter": {"Type": "AFTER_SHARD_ID", "ShardId": "0"}}),
        )
        .await;
    assert_eq!(
        shard_ids(field(&filtered, &["Shards"])),
        ["shardId-000000000001", "shardId-000000000002"]
    );
}

#[tokio::test]
async fn list_shards_answers_at_most_1000_shards() {
    let f = Fixture::with_shard_limit(2000).await;
    f.active_stream("wide", 1001).await;
    let page = f
        .ok(
            Operation::ListShards,
            json!({"StreamName": "wide", "MaxResults": 10000}),
        )
        .await;
    assert_eq!(page.list_of("Shards").map(<[Value]>::len), Some(1000));
    let token = page.str_of("NextToken").unwrap();
    let rest = f
        .ok(Operation::ListShards, json!({"NextToken": token}))
        .await;
    assert_eq!(
        shard_ids(field(&rest, &["Shards"])),
        ["shardId-000000001000"]
    );
    assert!(rest.get("NextToken").is_none());
    let default = f
        .ok(Operation::ListShards, json!({"StreamName": "wide"}))
        .await;
    assert_eq!(default.list_of("Shards").map(<[Value]>::len), Some(1000));
}

#[tokio::test]
async fn list_streams_and_consumers_tokens_expire() {
    let f = Fixture::new().await;
    f.active_stream("a", 1).await;
    f.active_stream("b", 1).await;
    for consumer in ["c1", "c2"] {
        f.ok(
            Operation::RegisterStreamConsumer,
            json!({"StreamARN": arn("a"), "ConsumerName": consumer}),
        )
        .await;
    }
    let streams = f.ok(Operation::ListStreams, json!({"Limit": 1})).await;
    assert_eq!(streams.bool_of("HasMoreStreams"), Some(true));
    let summaries = streams.list_of("StreamSummaries").unwrap();
    assert_eq!(summaries.len(), 1);
    for member in ["StreamName", "StreamARN", "StreamStatus"] {
        assert!(summaries[0].get(member).is_some(), "{member}");
    }
    let streams_token = streams.str_of("NextToken").unwrap().to_owned();
    let consumers = f
        .ok(
            Operation::ListStreamConsumers,
            json!({"StreamARN": arn("a"), "MaxResults": 1}),
        )
        .await;
    let consumers_token = consumers.str_of("NextToken").unwrap().to_owned();

    let rest = f
        .ok(Operation::ListStreams, json!({"NextToken": streams_token}))
        .await;
    assert_eq!(rest.list_of("StreamNames").map(<[Value]>::len), Some(1));
    f.advance(300_001);
    f.check(vec![
        (
            Operation::ListStreams,
            json!({"NextToken": streams_token}),
            "ExpiredNextTokenException",
            format!("The timestamp of the NextToken {streams_token} has expired."),
        ),
        (
            Operation::ListStreamConsumers,
            json!({"StreamARN": arn("a"), "NextToken": consumers_token}),
            "ExpiredNextTokenException",
            format!("The timestamp of the NextToken {consumers_token} has expired."),
        ),
        (
            Operation::DescribeStreamConsumer,
            json!({"StreamARN": arn("a"), "ConsumerName": "nobody"}),
            "ResourceNotFoundException",
            format!("Consumer nobody under stream a not found for account {ACCOUNT}."),
        ),
        (
            Operation::DescribeStreamConsumer,
            json!({"ConsumerName": "c1"}),
            "InvalidArgumentException",
            "Either ConsumerARN or both ConsumerName and StreamARN must be provided.".into(),
        ),
    ])
    .await;
}

#[tokio::test]
async fn get_shard_iterator_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 2).await;
    f.creating_stream("young").await;
    let start = "Must either specify (1) AT_SEQUENCE_NUMBER or AFTER_SEQUENCE_NUMBER and StartingSequenceNumber or (2) TRIM_HORIZON or LATEST and no StartingSequenceNumber.";
    let iterator = |stream: &str, shard: &str, kind: &str| json!({"StreamName": stream, "ShardId": shard, "ShardIteratorType": kind});
    let with = |mut base: serde_json::Value, key: &str, value: serde_json::Value| {
        base[key] = value;
        base
    };
    let other_shard = format!("49{:054}", (1u128 << 64) | 5);
    f.check(vec![
        // A shard id that does not resolve is reported before the stream is looked up.
        (
            Operation::GetShardIterator,
            iterator("nope", "ABKLFD8", "LATEST"),
            "ResourceNotFoundException",
            format!("Could not find shard ABKLFD8 in stream nope under account {ACCOUNT}."),
        ),
        (
            Operation::GetShardIterator,
            iterator("nope", "2147483648", "LATEST"),
            "ResourceNotFoundException",
            format!("Could not find shard 2147483648 in stream nope under account {ACCOUNT}."),
        ),
        (
            Operation::GetShardIterator,
            iterator("nope", "shardId-002147483648", "LATEST"),
            "ResourceNotFoundException",
            format!(
                "Could not find shard shardId-002147483648 in stream nope under account {ACCOUNT}."
            ),
        ),
        // A missing stream, a stream still CREATING and a missing shard read alike.
        (
            Operation::GetShardIterator,
            iterator("nope", "a-00002147483647", "LATEST"),
            "ResourceNotFoundException",
            format!(
                "Shard shardId-002147483647 in stream nope under account {ACCOUNT} does not exist"
            ),
        ),
        (
            Operation::GetShardIterator,
            iterator("young", "shardId-0", "LATEST"),
            "ResourceNotFoundException",
            format!(
                "Shard shardId-000000000000 in stream young under account {ACCOUNT} does not exist"
            ),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-5", "AT_SEQUENCE_NUMBER"),
                "StartingSequenceNumber",
                json!("5"),
            ),
            "ResourceNotFoundException",
            format!("Shard shardId-000000000005 in stream s under account {ACCOUNT} does not exist"),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("nope", "shardId-0", "LATEST"),
                "StartingSequenceNumber",
                json!("5"),
            ),
            "ResourceNotFoundException",
            format!("Shard shardId-000000000000 in stream nope under account {ACCOUNT} does not exist"),
        ),
        // Type and sequence number combinations.
        (
            Operation::GetShardIterator,
            iterator("s", "shardId-0", "AT_SEQUENCE_NUMBER"),
            "InvalidArgumentException",
            format!("{start} Request specified AT_SEQUENCE_NUMBER and no StartingSequenceNumber."),
        ),
        (
            Operation::GetShardIterator,
            iterator("s", "shardId-0", "AFTER_SEQUENCE_NUMBER"),
            "InvalidArgumentException",
            format!(
                "{start} Request specified AFTER_SEQUENCE_NUMBER and no StartingSequenceNumber."
            ),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-0", "LATEST"),
                "StartingSequenceNumber",
                json!("5"),
            ),
            "InvalidArgumentException",
            format!("{start} Request specified LATEST and also a StartingSequenceNumber."),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-0", "TRIM_HORIZON"),
                "StartingSequenceNumber",
                json!("5"),
            ),
            "InvalidArgumentException",
            format!("{start} Request specified TRIM_HORIZON and also a StartingSequenceNumber."),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-0", "AT_SEQUENCE_NUMBER"),
                "StartingSequenceNumber",
                json!("5"),
            ),
            "InvalidArgumentException",
            format!(
                "StartingSequenceNumber 5 used in GetShardIterator on shard shardId-000000000000 in stream s under account {ACCOUNT} is invalid."
            ),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-0", "AT_SEQUENCE_NUMBER"),
                "StartingSequenceNumber",
                json!(other_shard),
            ),
            "InvalidArgumentException",
            "Invalid StartingSequenceNumber. It encodes shardId-000000000001, while it was used in a call to a shard with shardId-000000000000".into(),
        ),
        (
            Operation::GetShardIterator,
            iterator("s", "shardId-0", "AT_TIMESTAMP"),
            "InvalidArgumentException",
            "Must specify timestampInMillis parameter for iterator of type AT_TIMESTAMP. Current request has no timestamp parameter.".into(),
        ),
        (
            Operation::GetShardIterator,
            with(
                iterator("s", "shardId-0", "AT_TIMESTAMP"),
                "Timestamp",
                json!((NOW + 2000) as f64 / 1000.0),
            ),
            "InvalidArgumentException",
            format!(
                "The timestampInMillis parameter cannot be greater than the currentTimestampInMillis. timestampInMillis: {}, currentTimestampInMillis: {NOW}",
                NOW + 2000
            ),
        ),
    ])
    .await;
    // Loose shard ids name the same shard.
    for shard in ["shardId-000000000001", "shardId-1", "shard-1", "1"] {
        f.ok(
            Operation::GetShardIterator,
            iterator("s", shard, "TRIM_HORIZON"),
        )
        .await;
    }
    f.ok(
        Operation::GetShardIterator,
        with(
            iterator("s", "0", "AT_TIMESTAMP"),
            "Timestamp",
            json!(NOW as f64 / 1000.0),
        ),
    )
    .await;
}

#[tokio::test]
async fn put_record_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 1).await;
    f.creating_stream("young").await;
    let too_big_hash = "340282366920938463463374607431768211456";
    let record = |stream: &str| json!({"StreamName": stream, "PartitionKey": "k", "Data": "AA=="});
    let with = |mut base: serde_json::Value, key: &str, value: &str| {
        base[key] = json!(value);
        base
    };
    f.check(vec![
        // The stream is looked up before the hash key and the ordering number are read.
        (
            Operation::PutRecord,
            with(record("nope"), "ExplicitHashKey", too_big_hash),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::PutRecord,
            with(record("nope"), "SequenceNumberForOrdering", "5"),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::PutRecord,
            record("young"),
            "ResourceNotFoundException",
            format!("Stream young under account {ACCOUNT} not found."),
        ),
        (
            Operation::PutRecord,
            with(record("s"), "ExplicitHashKey", too_big_hash),
            "InvalidArgumentException",
            format!(
                "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {too_big_hash}"
            ),
        ),
        (
            Operation::PutRecord,
            with(record("s"), "SequenceNumberForOrdering", "5"),
            "InvalidArgumentException",
            format!(
                "ExclusiveMinimumSequenceNumber 5 used in PutRecord on stream s under account {ACCOUNT} is invalid."
            ),
        ),
        (
            Operation::PutRecord,
            json!({"StreamName": "s", "PartitionKey": "kk", "Data": base64_of(1024 * 1024 - 1)}),
            "ValidationException",
            "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048575 cap=1048575]' at 'data' failed to satisfy constraint: Member must have length less than or equal to 1048576".into(),
        ),
    ])
    .await;
    let first = f.ok(Operation::PutRecord, record("s")).await;
    let sequence = first.str_of("SequenceNumber").unwrap();
    f.ok(
        Operation::PutRecord,
        with(record("s"), "SequenceNumberForOrdering", sequence),
    )
    .await;
    f.ok(
        Operation::PutRecord,
        with(record("s"), "ExplicitHashKey", &u128::MAX.to_string()),
    )
    .await;
}

#[tokio::test]
async fn put_records_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 1).await;
    f.creating_stream("young").await;
    let small = json!({"PartitionKey": "k", "Data": "AA=="});
    let bad_hash = json!({"PartitionKey": "k", "Data": "AA==", "ExplicitHashKey": "340282366920938463463374607431768211456"});
    let big = json!({"PartitionKey": "k", "Data": base64_of(1024 * 1024 - 1)});
    f.check(vec![
        (
            Operation::PutRecords,
            json!({"StreamName": "nope", "Records": [small, bad_hash]}),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::PutRecords,
            json!({"StreamName": "young", "Records": [small]}),
            "ResourceNotFoundException",
            format!("Stream young under account {ACCOUNT} not found."),
        ),
        (
            Operation::PutRecords,
            json!({"StreamName": "s", "Records": [small, bad_hash]}),
            "InvalidArgumentException",
            "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was 340282366920938463463374607431768211456".into(),
        ),
        (
            Operation::PutRecords,
            json!({"StreamName": "s", "Records": [small, {"PartitionKey": "kk", "Data": base64_of(1024 * 1024 - 1)}]}),
            "ValidationException",
            "1 validation error detected: Value 'java.nio.HeapByteBuffer[pos=0 lim=1048575 cap=1048575]' at 'records.2.member.data' failed to satisfy constraint: Member must have length less than or equal to 1048576".into(),
        ),
        (
            Operation::PutRecords,
            json!({"StreamName": "s", "Records": [big, big, big, big, big, big]}),
            "InvalidArgumentException",
            "Records size exceeds 5 MB limit".into(),
        ),
    ])
    .await;
    let put = f
        .ok(
            Operation::PutRecords,
            json!({"StreamName": "s", "Records": [big, big, big, big, big]}),
        )
        .await;
    assert_eq!(put.i64_of("FailedRecordCount"), Some(0));
}

#[tokio::test]
async fn resharding_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 3).await;
    f.creating_stream("young").await;
    let merge = |stream: &str, a: &str, b: &str| json!({"StreamName": stream, "ShardToMerge": a, "AdjacentShardToMerge": b});
    let split = |stream: &str, shard: &str, key: &str| json!({"StreamName": stream, "ShardToSplit": shard, "NewStartingHashKey": key});
    f.check(vec![
        (
            Operation::SplitShard,
            split("nope", "ABKLFD8", "2"),
            "ResourceNotFoundException",
            format!("Could not find shard ABKLFD8 in stream nope under account {ACCOUNT}."),
        ),
        (
            Operation::SplitShard,
            split("nope", "2147483647", "2"),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::SplitShard,
            split("s", "shardId-5", "2"),
            "ResourceNotFoundException",
            format!("Could not find shard shardId-000000000005 in stream s under account {ACCOUNT}."),
        ),
        (
            Operation::SplitShard,
            split("s", "shard-0", "1"),
            "InvalidArgumentException",
            format!(
                "NewStartingHashKey 1 used in SplitShard() on shard shardId-000000000000 in stream s under account {ACCOUNT} is not both greater than one plus the shard's StartingHashKey 0 and less than the shard's EndingHashKey 113427455640312821154458202477256070484."
            ),
        ),
        (
            Operation::SplitShard,
            split("young", "shardId-0", "2"),
            "ResourceInUseException",
            format!("Stream young under account {ACCOUNT} not ACTIVE, instead in state CREATING"),
        ),
        (
            Operation::MergeShards,
            merge("nope", "2147483648", "x-0"),
            "ResourceNotFoundException",
            format!("Could not find shard 2147483648 in stream nope under account {ACCOUNT}."),
        ),
        (
            Operation::MergeShards,
            merge("nope", "x-0", "2.14E4"),
            "ResourceNotFoundException",
            format!("Could not find shard 2.14E4 in stream nope under account {ACCOUNT}."),
        ),
        (
            Operation::MergeShards,
            merge("nope", "x-0", "x-1"),
            "ResourceNotFoundException",
            format!("Stream nope under account {ACCOUNT} not found."),
        ),
        (
            Operation::MergeShards,
            merge("s", "shardId-5", "x-0"),
            "ResourceNotFoundException",
            format!("Could not find shard shardId-000000000005 in stream s under account {ACCOUNT}."),
        ),
        (
            Operation::MergeShards,
            merge("young", "shardId-0", "shardId-1"),
            "ResourceInUseException",
            format!("Stream young under account {ACCOUNT} not ACTIVE, instead in state CREATING"),
        ),
        (
            Operation::MergeShards,
            merge("s", "x-0", "x-2"),
            "InvalidArgumentException",
            format!(
                "Shards shardId-000000000000 and shardId-000000000002 in stream s under account {ACCOUNT} are not an adjacent pair of shards eligible for merging"
            ),
        ),
        // The adjacent shard must be the one above.
        (
            Operation::MergeShards,
            merge("s", "x-1", "x-0"),
            "InvalidArgumentException",
            format!(
                "Shards shardId-000000000001 and shardId-000000000000 in stream s under account {ACCOUNT} are not an adjacent pair of shards eligible for merging"
            ),
        ),
    ])
    .await;
    // Splitting by a loose shard id works too.
    f.ok(Operation::SplitShard, split("s", "shard-1", MIDDLE))
        .await;
    f.wait_for("s", StreamStatus::Active).await;
    f.ok(Operation::MergeShards, merge("s", "0", "shard-3"))
        .await;
    f.wait_for("s", StreamStatus::Active).await;
    let open = f.broker.stream("s").unwrap().open_shards().count();
    assert_eq!(open, 3);
}

#[tokio::test]
async fn tag_rules() {
    let f = Fixture::new().await;
    f.active_stream("s", 1).await;
    let invalid = "Some tags contain invalid characters. Valid characters: Unicode letters, digits, white space, _ . / = + - % @.";
    let percent = |verb: &str| {
        format!(
            "Failed to {verb} stream s under account {ACCOUNT} because some tags contained illegal characters. The allowed characters are Unicode letters, white-spaces, '_',',','/','=','+','-','@'."
        )
    };
    let add = |tags: serde_json::Value| json!({"StreamName": "s", "Tags": tags});
    let remove = |keys: serde_json::Value| json!({"StreamName": "s", "TagKeys": keys});
    let mut cases = vec![(
        Operation::AddTagsToStream,
        json!({"StreamName": "nope", "Tags": {"a;b": "c"}}),
        "ResourceNotFoundException",
        format!("Stream nope under account {ACCOUNT} not found."),
    )];
    for tags in [
        json!({"abc;def": "1"}),
        json!({"abc\tdef": "1"}),
        json!({"abc\ndef": "1"}),
        json!({"abc,def": "1"}),
        json!({"a": "abc;def"}),
        json!({"a": "abc,def"}),
        json!({"a": "😀"}),
    ] {
        cases.push((
            Operation::AddTagsToStream,
            add(tags),
            "InvalidArgumentException",
            invalid.to_owned(),
        ));
    }
    cases.extend([
        (
            Operation::AddTagsToStream,
            add(json!({"abc%def": "1"})),
            "InvalidArgumentException",
            percent("add tags to"),
        ),
        (
            Operation::AddTagsToStream,
            add(json!({"a": "abc%def"})),
            "InvalidArgumentException",
            percent("add tags to"),
        ),
        (
            Operation::RemoveTagsFromStream,
            remove(json!(["abc;def"])),
            "InvalidArgumentException",
            invalid.to_owned(),
        ),
        (
            Operation::RemoveTagsFromStream,
            remove(json!(["abc%def"])),
            "InvalidArgumentException",
            percent("remove tags from"),
        ),
    ]);
    f.check(cases).await;

    f.ok(
        Operation::AddTagsToStream,
        add(json!({"a": "a", "ü0 _.": "a", "/=+-@": "a", "b": "ü0 _./=+-@", "c": "", "app:team": "x:y"})),
    )
    .await;
    let listed = f
        .ok(Operation::ListTagsForStream, json!({"StreamName": "s"}))
        .await;
    let keys: Vec<&str> = listed
        .list_of("Tags")
        .unwrap()
        .iter()
        .map(|t| t.str_of("Key").unwrap())
        .collect();
    assert_eq!(keys, ["/=+-@", "a", "app:team", "b", "c", "ü0 _."]);
    assert_eq!(listed.bool_of("HasMoreTags"), Some(false));
    let page = f
        .ok(
            Operation::ListTagsForStream,
            json!({"StreamName": "s", "Limit": 2, "ExclusiveStartTagKey": "a"}),
        )
        .await;
    assert_eq!(page.bool_of("HasMoreTags"), Some(true));
    f.ok(Operation::RemoveTagsFromStream, remove(json!(["app:team"])))
        .await;

    // Fifty tags at most on a stream: five are there already.
    let many: serde_json::Map<String, serde_json::Value> =
        (0..46).map(|i| (format!("k{i}"), json!("v"))).collect();
    f.check(vec![(
        Operation::AddTagsToStream,
        add(serde_json::Value::Object(many)),
        "InvalidArgumentException",
        format!(
            "Failed to add tags to stream s under account {ACCOUNT} because a given stream cannot have more than 50 tags associated with it."
        ),
    )])
    .await;
}
