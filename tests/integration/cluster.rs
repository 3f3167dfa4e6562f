//! Clusters of in-process nodes over real sockets: the metadata group (bootstrap, join,
//! forwarding of control calls to the leader, failover).

use sluice_tests::{Node, NodeOptions, wait_for};
use std::time::Duration;

fn joining(seed: &Node) -> NodeOptions {
    NodeOptions {
        config: sluice_server::RawConfig {
            join: Some(vec![seed.grpc_addr.to_string()]),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn stream_names(node: &Node) -> Vec<String> {
    node.client()
        .list_streams()
        .send()
        .await
        .map(|out| out.stream_names().to_vec())
        .unwrap_or_default()
}

async fn wait_listed_everywhere(nodes: &[&Node], name: &str, listed: bool) {
    for node in nodes {
        wait_for(
            &format!("{name} listed={listed} on {}", node.kinesis_addr),
            Duration::from_secs(20),
            || async { stream_names(node).await.iter().any(|n| n == name) == listed },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_calls_on_any_node_reach_every_node() {
    let first = Node::start().await;
    let second = Node::start_with(joining(&first)).await;
    let third = Node::start_with(joining(&second)).await;
    // A control call on a follower is forwarded to the leader; the caller then reads its
    // own write on the node it called.
    third
        .client()
        .create_stream()
        .stream_name("everywhere")
        .shard_count(2)
        .send()
        .await
        .expect("create stream on a joined node");
    assert!(
        stream_names(&third)
            .await
            .contains(&"everywhere".to_owned())
    );
    wait_listed_everywhere(&[&first, &second, &third], "everywhere", true).await;
    // The same name again is refused wherever it is asked.
    let again = second
        .client()
        .create_stream()
        .stream_name("everywhere")
        .shard_count(1)
        .send()
        .await
        .expect_err("a second stream of the same name");
    assert_eq!(
        again.into_service_error().meta().code(),
        Some("ResourceInUseException")
    );
    second
        .client()
        .add_tags_to_stream()
        .stream_name("everywhere")
        .tags("team", "data")
        .send()
        .await
        .expect("tag on another node");
    let tags = first
        .client()
        .list_tags_for_stream()
        .stream_name("everywhere")
        .send()
        .await
        .expect("list tags");
    wait_for("the tag on the first node", Duration::from_secs(10), || {
        let first = &first;
        async move {
            first
                .client()
                .list_tags_for_stream()
                .stream_name("everywhere")
                .send()
                .await
                .map(|out| out.tags().iter().any(|t| t.key() == "team"))
                .unwrap_or(false)
        }
    })
    .await;
    drop(tags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metadata_group_survives_losing_its_first_node() {
    let first = Node::start().await;
    let second = Node::start_with(joining(&first)).await;
    let third = Node::start_with(joining(&first)).await;
    second
        .client()
        .create_stream()
        .stream_name("before")
        .shard_count(1)
        .send()
        .await
        .expect("create stream");
    wait_listed_everywhere(&[&first, &second, &third], "before", true).await;
    // The bootstrap node (the first leader) goes away; two of three voters remain.
    first.stop().await;
    third
        .client()
        .create_stream()
        .stream_name("after")
        .shard_count(1)
        .send()
        .await
        .expect("create stream after failover");
    wait_listed_everywhere(&[&second, &third], "after", true).await;
    wait_listed_everywhere(&[&second, &third], "before", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_its_id_and_catches_up() {
    let first = Node::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let second = Node::start_in(dir.path(), joining(&first)).await;
    let id = std::fs::read_to_string(dir.path().join("node-id")).expect("node id stored");
    second.stop().await;
    // Asked while the other voter is down: no quorum, so the caller gets an error (the
    // outcome is unknown, as AWS's InternalFailure says)...
    let error = first
        .client()
        .create_stream()
        .stream_name("while-away")
        .shard_count(1)
        .send()
        .await
        .expect_err("two voters, one down: no quorum");
    assert_eq!(
        error.into_service_error().meta().code(),
        Some("InternalFailure")
    );
    // ...and the leader's appended command commits once the member is back (without
    // --join: it already is a member, under the id it stored).
    let second = Node::start_in(dir.path(), NodeOptions::default()).await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("node-id")).expect("node id"),
        id
    );
    wait_listed_everywhere(&[&first, &second], "while-away", true).await;
    second
        .client()
        .create_stream()
        .stream_name("after-return")
        .shard_count(1)
        .send()
        .await
        .expect("create stream with both voters back");
    wait_listed_everywhere(&[&first, &second], "after-return", true).await;
}

async fn read_shard(node: &Node, stream: &str, shard: &str) -> Vec<(String, Vec<u8>)> {
    crate::read_all(&node.client(), stream, shard)
        .await
        .into_iter()
        .map(|r| (r.sequence_number().to_owned(), r.data().as_ref().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_replicated_to_every_node_and_survive_losing_one() {
    let first = Node::start().await;
    let second = Node::start_with(joining(&first)).await;
    let third = Node::start_with(joining(&first)).await;
    let nodes = [&first, &second, &third];
    crate::create_active(&second.client(), "replicated", 2).await;
    // Writes through every node (followers forward to each shard's leader).
    let mut acked = Vec::new();
    for i in 0..30 {
        let node = nodes[i % 3];
        let data = format!("record-{i}");
        let (shard, sequence) = crate::put(
            &node.client(),
            "replicated",
            &format!("key-{i}"),
            data.as_bytes(),
        )
        .await;
        acked.push((shard, sequence, data));
    }
    // Every node serves every acknowledged record, in the same order with the same
    // sequence numbers.
    let shards: std::collections::BTreeSet<String> =
        acked.iter().map(|(s, _, _)| s.clone()).collect();
    for shard in &shards {
        let mut expected: Vec<(String, Vec<u8>)> = acked
            .iter()
            .filter(|(s, _, _)| s == shard)
            .map(|(_, seq, data)| (seq.clone(), data.as_bytes().to_vec()))
            .collect();
        expected.sort_by_key(|(seq, _)| crate::seq_key(seq));
        for node in nodes {
            wait_for(
                &format!("{shard} complete on {}", node.kinesis_addr),
                Duration::from_secs(20),
                || {
                    let expected = &expected;
                    async move { read_shard(node, "replicated", shard).await == *expected }
                },
            )
            .await;
        }
    }
    // One node goes away: the two others still take and serve writes.
    first.stop().await;
    let (shard, sequence) = crate::put(&third.client(), "replicated", "after", b"after-loss").await;
    for node in [&second, &third] {
        wait_for(
            "the write after the loss",
            Duration::from_secs(20),
            || async {
                read_shard(node, "replicated", &shard)
                    .await
                    .iter()
                    .any(|(seq, data)| *seq == sequence && data == b"after-loss")
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_status_shows_members_placement_and_leaders() {
    let first = Node::start().await;
    let second = Node::start_with(joining(&first)).await;
    crate::create_active(&first.client(), "placed", 2).await;
    let endpoint = format!("http://{}", second.grpc_addr);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        let status = cluster_status(&endpoint).await;
        let leaders_known = status["Shards"]
            .as_array()
            .is_some_and(|shards| shards.iter().all(|s| s["Leader"].as_u64() != Some(0)));
        if leaders_known {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no leader for every shard: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let nodes = status["Nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 2);
    assert!(nodes.iter().all(|n| n["Voter"] == true));
    let ids: Vec<u64> = nodes.iter().map(|n| n["Id"].as_u64().unwrap()).collect();
    assert_ne!(status["MetadataLeader"].as_u64(), Some(0));
    let shards = status["Shards"].as_array().expect("shards");
    assert_eq!(shards.len(), 2);
    for shard in shards {
        // Replication factor 3, capped by the node count: both nodes hold every shard.
        let mut replicas: Vec<u64> = shard["Replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        replicas.sort_unstable();
        let mut expected = ids.clone();
        expected.sort_unstable();
        assert_eq!(replicas, expected);
        assert!(ids.contains(&shard["Leader"].as_u64().unwrap()));
        // The leader was elected: its epoch (the group's Raft term) is at least 1.
        assert!(shard["LeaderEpoch"].as_u64().unwrap() >= 1, "{shard}");
    }
    // Preferred leaders alternate between the nodes.
    assert_ne!(shards[0]["Replicas"][0], shards[1]["Replicas"][0]);
}

pub(crate) async fn cluster_status(endpoint: &str) -> serde_json::Value {
    let endpoint = endpoint.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sluice_tests::sluice_binary())
            .args([
                "cluster",
                "status",
                "--output",
                "json",
                "--endpoint",
                &endpoint,
            ])
            .output()
            .expect("run sluice cluster status")
    })
    .await
    .expect("join");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("json")
}

fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|line| line.split_whitespace().next() == Some(name))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_gauges_report_replicas_leaders_and_the_metadata_leader() {
    let first = Node::start().await;
    let second = Node::start_with(joining(&first)).await;
    crate::create_active(&second.client(), "gauged", 2).await;
    let mut leaders = 0.0;
    for node in [&first, &second] {
        wait_for("the raft gauges", Duration::from_secs(20), || async {
            let text = sluice_tests::http_get(node.kinesis_addr, "/metrics")
                .await
                .1;
            gauge(&text, "sluice_raft_shard_replicas") == Some(2.0)
                && gauge(&text, "sluice_raft_metadata_leader_known") == Some(1.0)
                && gauge(&text, "sluice_raft_shards_leaderless") == Some(0.0)
                && gauge(&text, "sluice_raft_metadata_term").is_some_and(|t| t >= 1.0)
        })
        .await;
        let text = sluice_tests::http_get(node.kinesis_addr, "/metrics")
            .await
            .1;
        leaders += gauge(&text, "sluice_raft_shard_leaders").expect("shard leaders");
        assert_eq!(
            gauge(&text, "sluice_raft_shards_under_replicated"),
            Some(0.0),
            "{text}"
        );
    }
    // Each shard group has exactly one leader.
    assert_eq!(leaders, 2.0);
}
