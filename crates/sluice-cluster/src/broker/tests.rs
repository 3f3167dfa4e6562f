//! Broker tests with a controlled clock: iterator expiry, retention, restart recovery.

use super::*;
use sluice_meta::ScalingPolicy;
use std::sync::atomic::{AtomicU64, Ordering};

struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    fn new(start_ms: u64) -> (ManualClock, Clock) {
        let now = Arc::new(AtomicU64::new(start_ms));
        let reader = Arc::clone(&now);
        (
            ManualClock(now),
            Arc::new(move || reader.load(Ordering::SeqCst)),
        )
    }
    fn advance(&self, ms: u64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

async fn broker_in(dir: &std::path::Path, clock: Clock, segment_bytes: u64) -> Broker {
    Broker::open(BrokerConfig {
        fsync: false,
        segment_bytes,
        retention_check_interval: Duration::from_secs(3600),
        clock,
        ..BrokerConfig::new(dir)
    })
    .await
    .unwrap()
}

async fn active_stream(broker: &Broker, name: &str, shards: u32) {
    broker
        .create_stream(name, shards, StreamMode::Provisioned, BTreeMap::new())
        .await
        .unwrap();
    for _ in 0..1000 {
        if broker
            .stream(name)
            .is_ok_and(|s| s.status == StreamStatus::Active)
        {
            return;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("stream {name} never became active");
}

fn record(key: &str, data: &[u8]) -> PutRecordInput {
    PutRecordInput {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: Bytes::copy_from_slice(data),
    }
}

#[tokio::test]
async fn iterators_expire_after_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "s", 1).await;
    let iterator = broker
        .get_shard_iterator("s", "shardId-000000000000", IteratorStart::TrimHorizon)
        .await
        .unwrap();
    clock.advance(ITERATOR_TTL_MS);
    let fresh = broker.get_records(&iterator, 10).await.unwrap();
    assert!(
        fresh.next_iterator.is_some(),
        "still valid at exactly five minutes"
    );
    clock.advance(1);
    let expired = broker.get_records(&iterator, 10).await.unwrap_err();
    assert!(
        matches!(expired, BrokerError::ExpiredIterator(_)),
        "{expired:?}"
    );
    // The iterator handed back is fresh again.
    let next = fresh.next_iterator.unwrap();
    assert!(broker.get_records(&next, 10).await.is_ok());
}

#[tokio::test]
async fn retention_deletes_whole_expired_segments_only() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    // Small segments so a few records fill several of them.
    let broker = broker_in(dir.path(), reader, 4096).await;
    active_stream(&broker, "s", 1).await;
    for i in 0..20 {
        let out = broker
            .put_records("s", vec![record("k", &[i as u8; 1000])])
            .await
            .unwrap();
        assert!(out[0].is_ok());
    }
    clock.advance(23 * 3_600_000);
    assert_eq!(
        broker.enforce_retention().await.unwrap(),
        0,
        "nothing is older than 24 h yet"
    );
    for i in 0..3 {
        broker
            .put_records("s", vec![record("new", &[i; 10])])
            .await
            .unwrap();
    }
    clock.advance(2 * 3_600_000);
    let dropped = broker.enforce_retention().await.unwrap();
    assert!(dropped >= 15, "old segments were deleted: {dropped}");
    let read = read_shard_zero(&broker).await;
    let keys: Vec<&str> = read.iter().map(|(_, key, _)| key.as_str()).collect();
    assert!(
        keys.ends_with(&["new", "new", "new"]),
        "recent records stay: {keys:?}"
    );
    assert!(read.len() < 23);
}

/// The shard's Raft log segments and whether its group directory holds a snapshot.
fn raft_log_of(data: &std::path::Path) -> (usize, bool) {
    let streams = data.join("streams");
    let stream = std::fs::read_dir(&streams)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let group = stream.join(format!("{:012}.group", 0));
    let segments = std::fs::read_dir(group.join("raft").join("log"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".log")
        })
        .count();
    (segments, group.join("snapshot.json").exists())
}

#[tokio::test]
async fn retention_lets_the_raft_log_drop_the_entries_of_deleted_records() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let offset_of = |out: &[Result<PutRecordOutput, PutRecordFailure>]| {
        out[0].as_ref().unwrap().sequence.record_offset().unwrap()
    };
    let last_before;
    {
        let broker = broker_in(dir.path(), Arc::clone(&reader), 4096).await;
        active_stream(&broker, "s", 1).await;
        for i in 0..40 {
            let out = broker
                .put_records("s", vec![record("old", &[i as u8; 1000])])
                .await
                .unwrap();
            assert!(out[0].is_ok());
        }
        let (segments_before, snapshot) = raft_log_of(dir.path());
        assert!(
            segments_before > 5 && !snapshot,
            "{segments_before} segments"
        );
        clock.advance(25 * 3_600_000);
        for i in 0..3 {
            broker
                .put_records("s", vec![record("new", &[i; 10])])
                .await
                .unwrap();
        }
        assert!(broker.enforce_retention().await.unwrap() >= 30);
        // openraft builds the snapshot and purges behind it on its own time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (segments, snapshot) = raft_log_of(dir.path());
            if snapshot && segments < segments_before / 2 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the raft log still has {segments} of {segments_before} segments (snapshot: {snapshot})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = broker
            .put_records("s", vec![record("last", b"x")])
            .await
            .unwrap();
        last_before = offset_of(&out);
        broker.shutdown().await;
    }
    // After a restart the group starts from the snapshot and what follows it: the
    // retained records are all there and new ones follow on in sequence.
    let broker = broker_in(dir.path(), reader, 4096).await;
    let out = broker
        .put_records("s", vec![record("after", b"y")])
        .await
        .unwrap();
    let after = offset_of(&out);
    let read = read_shard_zero(&broker).await;
    let keys: Vec<&str> = read.iter().map(|(_, key, _)| key.as_str()).collect();
    assert!(
        keys.ends_with(&["new", "new", "new", "last", "after"]),
        "{keys:?}"
    );
    let offsets: Vec<u64> = read.iter().map(|(offset, _, _)| *offset).collect();
    assert_eq!(offsets[offsets.len() - 2..], [last_before, after]);
    assert_eq!(after, last_before + 1, "offsets go on after the snapshot");
    assert_eq!(last_before, 43);
}

#[tokio::test(start_paused = true)]
async fn a_stream_left_deleting_is_forgotten_by_the_metadata_leader() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "s", 1).await;
    // A DeleteStream whose settling never ran (its node stopped right after committing it).
    broker
        .propose(Command::DeleteStream {
            name: "s".to_owned(),
            enforce_consumer_deletion: false,
        })
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    assert_eq!(broker.stream("s").unwrap().status, StreamStatus::Deleting);
    while broker.stream("s").is_ok() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still DELETING"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(30));
    broker.shutdown().await;
}

#[tokio::test]
async fn restart_keeps_records_streams_and_closed_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, reader) = ManualClock::new(1_700_000_000_000);
    {
        let broker = broker_in(dir.path(), Arc::clone(&reader), 64 << 20).await;
        active_stream(&broker, "s", 1).await;
        broker
            .put_records("s", vec![record("a", b"1"), record("b", b"2")])
            .await
            .unwrap();
        broker
            .split_shard("s", ShardId(0), &(u128::MAX / 2).to_string())
            .await
            .unwrap();
        broker.shutdown().await;
    }
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    let stream = broker.stream("s").unwrap();
    assert_eq!(stream.shards.len(), 3);
    assert_eq!(stream.shards[0].closed, Some(Some(1)));
    // The closed parent refuses writes after the restart: new records go to children.
    let out = broker
        .put_records("s", vec![record("a", b"3")])
        .await
        .unwrap();
    assert_ne!(out[0].as_ref().unwrap().shard, ShardId(0));
    let iterator = broker
        .get_shard_iterator("s", "shardId-000000000000", IteratorStart::TrimHorizon)
        .await
        .unwrap();
    let parent = broker.get_records(&iterator, 100).await.unwrap();
    assert_eq!(parent.records.len(), 2);
    assert!(parent.next_iterator.is_none());
    assert_eq!(parent.child_shards.map(|c| c.len()), Some(2));
}

#[test]
fn expiry_times_print_like_java_dates() {
    assert_eq!(format_time(0), "Thu Jan 01 00:00:00 UTC 1970");
    assert_eq!(format_time(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    assert_eq!(
        format_time(1_710_279_586_000),
        "Tue Mar 12 21:39:46 UTC 2024"
    );
}

async fn active_consumer(broker: &Broker, stream: &str, name: &str) -> String {
    broker.register_consumer(stream, name).await.unwrap();
    for _ in 0..1000 {
        let found = broker
            .stream(stream)
            .unwrap()
            .consumers
            .into_iter()
            .find(|c| c.name == name);
        if let Some(consumer) = found.filter(|c| c.status == sluice_meta::ConsumerStatus::Active) {
            return sluice_types::consumer_arn(
                &broker.stream_arn(stream),
                name,
                consumer.created_ms / 1000,
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("consumer {name} never became active");
}

/// Skips events until the subscription ends; returns how it ended.
async fn end_of(subscription: &mut Subscription) -> Option<Result<SubscriptionEvent, BrokerError>> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match subscription.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the subscription ends within 10 s")
}

async fn next_event(subscription: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("an event within 10 s")
        .expect("subscription still open")
        .expect("no error event")
}

#[tokio::test]
async fn subscriptions_push_committed_records_then_child_shards() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "s", 1).await;
    let consumer = active_consumer(&broker, "s", "app").await;
    broker
        .put_records("s", vec![record("a", b"before")])
        .await
        .unwrap();

    let mut subscription = broker
        .subscribe_to_shard(
            &consumer,
            "shardId-000000000000",
            IteratorStart::TrimHorizon,
        )
        .await
        .unwrap();
    let first = next_event(&mut subscription).await;
    assert_eq!(first.records.len(), 1);
    assert_eq!(&first.records[0].data[..], b"before");
    assert_eq!(
        first.continuation,
        Some(SequenceNumber::of_record(ShardId(0), 0))
    );

    // A record put now is pushed without polling.
    broker
        .put_records("s", vec![record("b", b"pushed")])
        .await
        .unwrap();
    let second = next_event(&mut subscription).await;
    assert_eq!(&second.records[0].data[..], b"pushed");

    // A second subscription within five seconds is refused.
    let refused = broker
        .subscribe_to_shard(&consumer, "shardId-000000000000", IteratorStart::Latest)
        .await
        .err()
        .expect("second subscription refused");
    assert!(matches!(refused, BrokerError::InUse(_)), "{refused:?}");

    // After a split the parent's subscription ends with its children and no continuation.
    broker
        .split_shard("s", ShardId(0), &(u128::MAX / 2).to_string())
        .await
        .unwrap();
    let last = next_event(&mut subscription).await;
    assert!(last.records.is_empty());
    assert_eq!(last.continuation, None);
    let children: Vec<ShardId> = last.child_shards.unwrap().iter().map(|c| c.shard).collect();
    assert_eq!(children, [ShardId(1), ShardId(2)]);
    assert!(
        subscription.next().await.is_none(),
        "the subscription is over"
    );

    // Five seconds later a new subscription takes over an old one.
    let mut old = broker
        .subscribe_to_shard(
            &consumer,
            "shardId-000000000001",
            IteratorStart::TrimHorizon,
        )
        .await
        .unwrap();
    clock.advance(5_000);
    let _new = broker
        .subscribe_to_shard(
            &consumer,
            "shardId-000000000001",
            IteratorStart::TrimHorizon,
        )
        .await
        .unwrap();
    let ended = end_of(&mut old).await;
    assert!(
        matches!(ended, Some(Err(BrokerError::InUse(_)))),
        "{ended:?}"
    );
}

fn hashed_to(key: u128) -> impl Fn(usize) -> PutRecordInput {
    move |i| PutRecordInput {
        partition_key: format!("k{i}"),
        explicit_hash_key: Some(key),
        data: Bytes::from_static(&[7u8; 100]),
    }
}

#[tokio::test]
async fn on_demand_streams_grow_under_load_and_shrink_after_the_cooldown() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    broker
        .create_stream("od", 4, StreamMode::OnDemand, BTreeMap::new())
        .await
        .unwrap();
    for _ in 0..1000 {
        if broker
            .stream("od")
            .is_ok_and(|s| s.status == StreamStatus::Active)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        broker.autoscale_pass().await.unwrap().is_empty(),
        "the first pass only samples"
    );

    // 10 s of 900 records/s into shard 0 (90 % of its limit), nothing elsewhere.
    let to_shard0 = hashed_to(1);
    for batch in 0..18 {
        let records = (0..500).map(|i| to_shard0(batch * 500 + i)).collect();
        assert!(
            broker
                .put_records("od", records)
                .await
                .unwrap()
                .iter()
                .all(Result::is_ok)
        );
    }
    clock.advance(10_000);
    let decisions = broker.autoscale_pass().await.unwrap();
    assert_eq!(
        decisions,
        [ScalingDecision::Split {
            stream: "od".into(),
            shard: ShardId(0),
            utilization_percent: 90,
        }]
    );
    let stream = broker.stream("od").unwrap();
    assert_eq!(stream.open_shards().count(), 5);
    assert_eq!(stream.status, StreamStatus::Active);

    // Quiet, but within the cool-down: nothing merges.
    clock.advance(60_000);
    assert!(broker.autoscale_pass().await.unwrap().is_empty());
    // Past the cool-down, one cold adjacent pair merges per pass, down to four shards.
    clock.advance(autoscale::ON_DEMAND_COOLDOWN_SECS * 1000);
    let decisions = broker.autoscale_pass().await.unwrap();
    assert!(
        matches!(decisions.as_slice(), [ScalingDecision::Merge { .. }]),
        "{decisions:?}"
    );
    assert_eq!(broker.stream("od").unwrap().open_shards().count(), 4);
    clock.advance(autoscale::ON_DEMAND_COOLDOWN_SECS * 1000);
    assert!(
        broker.autoscale_pass().await.unwrap().is_empty(),
        "never below four shards"
    );
    let counted = |action: &str| {
        broker
            .metrics()
            .scaling_decisions
            .get_or_create(&crate::metrics::ScalingLabels {
                stream: "od".into(),
                action: action.into(),
            })
            .get()
    };
    assert_eq!(
        (counted("split"), counted("merge")),
        (1, 1),
        "decisions are counted"
    );
}

#[tokio::test]
async fn a_scaling_policy_scales_a_provisioned_stream_within_its_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "p", 1).await;
    // Without a policy a provisioned stream never scales.
    broker.autoscale_pass().await.unwrap();
    let flood = hashed_to(5);
    let records: Vec<_> = (0..900).map(&flood).collect();
    broker.put_records("p", records).await.unwrap();
    clock.advance(1_000);
    assert!(broker.autoscale_pass().await.unwrap().is_empty());

    let policy = ScalingPolicy {
        target_utilization_percent: 50,
        min_shards: 1,
        max_shards: 2,
        cooldown_secs: 60,
    };
    broker.set_scaling_policy("p", Some(policy)).await.unwrap();
    assert!(
        broker.autoscale_pass().await.unwrap().is_empty(),
        "the first pass only samples"
    );
    let records: Vec<_> = (0..900).map(&flood).collect();
    broker.put_records("p", records).await.unwrap();
    clock.advance(1_000);
    let decisions = broker.autoscale_pass().await.unwrap();
    assert!(
        matches!(decisions.as_slice(), [ScalingDecision::Split { .. }]),
        "{decisions:?}"
    );
    // At the maximum, more load splits nothing.
    let to_child = hashed_to(5);
    let records: Vec<_> = (0..900).map(&to_child).collect();
    broker.put_records("p", records).await.unwrap();
    clock.advance(1_000);
    assert!(broker.autoscale_pass().await.unwrap().is_empty());
    assert_eq!(broker.stream("p").unwrap().open_shards().count(), 2);
    // A bad policy is refused.
    let bad = ScalingPolicy {
        target_utilization_percent: 50,
        min_shards: 3,
        max_shards: 2,
        cooldown_secs: 60,
    };
    assert!(matches!(
        broker.set_scaling_policy("p", Some(bad)).await,
        Err(BrokerError::InvalidArgument(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn subscriptions_end_after_five_minutes() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "s", 1).await;
    let consumer = active_consumer(&broker, "s", "app").await;
    let mut subscription = broker
        .subscribe_to_shard(&consumer, "shardId-000000000000", IteratorStart::Latest)
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut heartbeats = 0;
    while let Some(event) = subscription.next().await {
        let event = event.unwrap();
        assert!(event.records.is_empty());
        assert!(event.continuation.is_some());
        heartbeats += 1;
    }
    let lived = started.elapsed();
    assert!(lived >= Duration::from_secs(300), "lived {lived:?}");
    assert!(lived < Duration::from_secs(306), "lived {lived:?}");
    // An idle subscription still sends an event every five seconds.
    assert!((55..=60).contains(&heartbeats), "{heartbeats} heartbeats");
}

#[tokio::test]
async fn deregistering_a_consumer_ends_its_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let (_clock, reader) = ManualClock::new(1_700_000_000_000);
    let broker = broker_in(dir.path(), reader, 64 << 20).await;
    active_stream(&broker, "s", 1).await;
    let consumer = active_consumer(&broker, "s", "app").await;
    let mut subscription = broker
        .subscribe_to_shard(&consumer, "shardId-000000000000", IteratorStart::Latest)
        .await
        .unwrap();
    next_event(&mut subscription).await;
    broker.deregister_consumer("s", "app").await.unwrap();
    let ended = end_of(&mut subscription).await;
    assert!(
        matches!(ended, Some(Err(BrokerError::NotFound(_)))),
        "{ended:?}"
    );
}

/// A broker of a cluster, serving its peers on a port of its own.
async fn cluster_broker(
    dir: &std::path::Path,
    id: u64,
    join: Option<&str>,
    clock: Clock,
) -> (Broker, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let broker = Broker::open(BrokerConfig {
        fsync: false,
        segment_bytes: 4096,
        retention_check_interval: Duration::from_secs(3600),
        clock,
        node: MetaNode {
            id,
            node: PeerNode {
                grpc: addr.clone(),
                kinesis: String::new(),
                zone: None,
            },
            join: join.map(|a| vec![a.to_owned()]).unwrap_or_default(),
        },
        peer_local_ip: Some(std::net::IpAddr::from([127, 0, 0, 1])),
        // The test polls reads faster than a shard's five calls a second.
        shard_limits: ShardLimitsConfig::disabled(),
        ..BrokerConfig::new(dir)
    })
    .await
    .unwrap();
    let server = tonic::transport::Server::builder()
        .add_service(broker.peer_service())
        .add_service(broker.shard_service());
    tokio::spawn(server.serve_with_incoming(
        tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
    ));
    (broker, addr)
}

/// Every record of shard 0 a broker reads from its own replica or through a holder.
async fn read_shard_zero(broker: &Broker) -> Vec<(u64, String, u64)> {
    let iterator = match broker
        .get_shard_iterator("s", "shardId-000000000000", IteratorStart::TrimHorizon)
        .await
    {
        Ok(iterator) => iterator,
        Err(error) => {
            eprintln!("iterator: {error}");
            return Vec::new();
        }
    };
    match broker.get_records(&iterator, 1000).await {
        Ok(out) => out
            .records
            .into_iter()
            .map(|r| (r.offset, r.partition_key, r.arrival_ms))
            .collect(),
        Err(error) => {
            eprintln!("records: {error}");
            Vec::new()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_added_after_retention_starts_from_the_snapshot() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let (clock, reader) = ManualClock::new(1_700_000_000_000);
    let (first, seed) = cluster_broker(dirs[0].path(), 1, None, Arc::clone(&reader)).await;
    let (second, _) = cluster_broker(dirs[1].path(), 2, Some(&seed), Arc::clone(&reader)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while first.cluster_members().0.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "node 2 never joined");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    active_stream(&first, "s", 1).await;
    for i in 0..40 {
        let out = first
            .put_records("s", vec![record("old", &[i as u8; 1000])])
            .await
            .unwrap();
        assert!(out[0].is_ok(), "{out:?}");
    }
    clock.advance(25 * 3_600_000);
    for i in 0..3 {
        let out = first
            .put_records("s", vec![record("new", &[i; 10])])
            .await
            .unwrap();
        assert!(out[0].is_ok(), "{out:?}");
    }
    // Both replicas drop the expired records, then the Raft entries that held them.
    for (broker, dir) in [(&first, &dirs[0]), (&second, &dirs[1])] {
        assert!(broker.enforce_retention().await.unwrap() >= 30);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !raft_log_of(dir.path()).1 {
            assert!(
                std::time::Instant::now() < deadline,
                "no snapshot was taken"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let expected = read_shard_zero(&first).await;
    assert_eq!(
        expected
            .iter()
            .map(|(_, k, _)| k.as_str())
            .collect::<Vec<_>>()[expected.len() - 3..],
        ["new", "new", "new"]
    );
    assert!(expected[0].0 > 0, "old records are gone: {expected:?}");
    // A third node joins: the rebalancer gives it a replica of the shard, which cannot be
    // built from the purged Raft log and starts from the snapshot instead.
    let (third, _) = cluster_broker(dirs[2].path(), 3, Some(&seed), Arc::clone(&reader)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let placed = third
            .shard_placement()
            .into_iter()
            .any(|p| p.replicas.contains(&3) && p.moving.is_none());
        if placed && raft_log_of(dirs[2].path()).1 && read_shard_zero(&third).await == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 has no caught-up replica: {:?} / {:?}",
            third.shard_placement(),
            read_shard_zero(&third).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Writes go on with the next offsets on every replica.
    let out = third
        .put_records("s", vec![record("after", b"x")])
        .await
        .unwrap();
    let offset = out[0].as_ref().unwrap().sequence.record_offset().unwrap();
    assert_eq!(offset, expected.last().unwrap().0 + 1);
    for broker in [&first, &second, &third] {
        broker.shutdown().await;
    }
}
