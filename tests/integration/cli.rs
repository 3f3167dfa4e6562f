//! The `sluice` command line against a running node.

use crate::create_active;
use sluice_tests::{Node, sluice_binary};

async fn sluice(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(sluice_binary())
            .args(&args)
            .output()
            .expect("run sluice")
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn stream_autoscale_sets_shows_and_removes_a_policy() {
    let node = Node::start().await;
    create_active(&node.client(), "scaled", 1).await;
    let endpoint = format!("http://{}", node.grpc_addr);
    let args = |extra: &[&str]| {
        let mut args: Vec<String> = ["stream", "autoscale", "scaled", "--endpoint", &endpoint]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let set = sluice(args(&[
        "--target",
        "60",
        "--min",
        "2",
        "--max",
        "8",
        "--cooldown",
        "120",
    ]))
    .await;
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let shown = sluice(args(&["--show"])).await;
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "scaled: target 60%, shards 2..=8, cool-down 120 s"
    );
    let bad = sluice(args(&["--min", "9", "--max", "8"])).await;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgumentException"));
    let off = sluice(args(&["--off"])).await;
    assert!(off.status.success());
    let shown = sluice(args(&["--show"])).await;
    assert_eq!(
        String::from_utf8_lossy(&shown.stdout).trim(),
        "scaled: no scaling policy"
    );

    let missing = sluice(vec![
        "stream".into(),
        "autoscale".into(),
        "nope".into(),
        "--endpoint".into(),
        endpoint.clone(),
    ])
    .await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(
            "ResourceNotFoundException: Stream nope under account 000000000000 not found."
        ),
        "{stderr}"
    );
}

/// Runs `sluice ARGS <target>` (`target` names the node: `--endpoint URL` for gRPC or
/// `--kinesis-endpoint URL` for the Kinesis JSON API) and returns stdout, failing on a
/// non-zero exit.
async fn sluice_ok(target: &[String], args: &[&str]) -> String {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(target.iter().cloned());
    let output = sluice(all.clone()).await;
    assert!(
        output.status.success(),
        "sluice {all:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// `sluice stream describe STREAM --output json`, parsed.
async fn describe_json(endpoint: &[String], stream: &str) -> serde_json::Value {
    let out = sluice_ok(
        endpoint,
        &["stream", "describe", stream, "--output", "json"],
    )
    .await;
    serde_json::from_str(&out).expect("describe prints JSON")
}

async fn tail_json(endpoint: &[String], stream: &str, count: usize) -> Vec<serde_json::Value> {
    let count = count.to_string();
    let out = sluice_ok(
        endpoint,
        &[
            "tail",
            stream,
            "--from",
            "trim-horizon",
            "--format",
            "json",
            "--max-records",
            &count,
            "--idle-timeout",
            "20",
        ],
    )
    .await;
    out.lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

#[tokio::test]
async fn a_new_user_creates_puts_tails_reshards_and_deletes_with_the_cli() {
    let node = Node::start().await;
    let target = [
        "--endpoint".to_owned(),
        format!("http://{}", node.grpc_addr),
    ];
    new_user_walkthrough(&node, &target).await;
}

/// The same commands over the Kinesis JSON API (`--kinesis-endpoint`), as against any
/// Kinesis-compatible server.
#[tokio::test]
async fn the_cli_does_the_same_over_the_kinesis_api() {
    let node = Node::start().await;
    let target = [
        "--kinesis-endpoint".to_owned(),
        format!("http://{}", node.kinesis_addr),
    ];
    new_user_walkthrough(&node, &target).await;
}

async fn new_user_walkthrough(node: &Node, endpoint: &[String]) {
    let created = sluice_ok(
        endpoint,
        &[
            "stream", "create", "clicks", "--shards", "2", "--tag", "team=web",
        ],
    )
    .await;
    assert_eq!(created.trim(), "clicks: created");
    crate::wait_active(&node.client(), "clicks").await;
    let listed: serde_json::Value =
        serde_json::from_str(&sluice_ok(endpoint, &["stream", "list", "--output", "json"]).await)
            .unwrap();
    assert_eq!(listed[0]["StreamName"], "clicks");
    let described = describe_json(endpoint, "clicks").await;
    assert_eq!(described["OpenShardCount"], 2);
    assert_eq!(described["Tags"]["team"], "web");

    // 200 JSON lines keyed by user: every one comes back, in order per user.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let lines: Vec<String> = (0..200)
        .map(|i| format!(r#"{{"user":"u{}","n":{i}}}"#, i % 7))
        .collect();
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let input_path = input.to_str().unwrap();
    let put = sluice_ok(
        endpoint,
        &["put", "clicks", "--file", input_path, "--key-field", "user"],
    )
    .await;
    assert!(put.starts_with("clicks: put 200 of 200 records"), "{put}");
    let records = tail_json(endpoint, "clicks", 200).await;
    assert_eq!(records.len(), 200);
    check_order_per_key(&records);

    // Split a shard, write again: the tail reads the parent to its end, then its children.
    let split = sluice_ok(endpoint, &["stream", "split", "clicks", "0", "--wait"]).await;
    assert!(
        split.starts_with("clicks: splitting shardId-000000000000 at "),
        "{split}"
    );
    // --wait answered once the split was done.
    let described = describe_json(endpoint, "clicks").await;
    assert_eq!(described["StreamStatus"], "ACTIVE");
    assert_eq!(described["OpenShardCount"], 3);
    let more = dir.path().join("more.jsonl");
    let lines: Vec<String> = (200..300)
        .map(|i| format!(r#"{{"user":"u{}","n":{i}}}"#, i % 7))
        .collect();
    std::fs::write(&more, lines.join("\n")).unwrap();
    sluice_ok(
        endpoint,
        &[
            "put",
            "clicks",
            "--file",
            more.to_str().unwrap(),
            "--key-field",
            "user",
        ],
    )
    .await;
    let records = tail_json(endpoint, "clicks", 300).await;
    assert_eq!(records.len(), 300);
    check_order_per_key(&records);
    let shards: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["ShardId"].as_str())
        .collect();
    assert!(
        shards.len() >= 3,
        "records from the parent and its children: {shards:?}"
    );

    // Scale to 4: the split's children are already two of the four ranges and stay;
    // every open shard takes writes, and the tail reads all 400 in order per user.
    let scaled = sluice_ok(endpoint, &["stream", "scale", "clicks", "--shards", "4"]).await;
    assert_eq!(scaled.trim(), "clicks: scaling from 3 to 4 shards");
    crate::wait_active(&node.client(), "clicks").await;
    let last = dir.path().join("last.jsonl");
    let lines: Vec<String> = (300..400)
        .map(|i| format!(r#"{{"user":"u{}","n":{i}}}"#, i % 7))
        .collect();
    std::fs::write(&last, lines.join("\n")).unwrap();
    let put = sluice_ok(
        endpoint,
        &[
            "put",
            "clicks",
            "--file",
            last.to_str().unwrap(),
            "--key-field",
            "user",
            "--output",
            "json",
        ],
    )
    .await;
    let put: serde_json::Value = serde_json::from_str(&put).unwrap();
    assert_eq!(put["Records"], 100);
    let records = tail_json(endpoint, "clicks", 400).await;
    assert_eq!(records.len(), 400);
    check_order_per_key(&records);
    let described = describe_json(endpoint, "clicks").await;
    assert_eq!(described["OpenShardCount"], 4);
    assert_eq!(described["Shards"].as_array().map(Vec::len), Some(6));
    // --wait answers once the stream is gone.
    let deleted = sluice_ok(endpoint, &["stream", "delete", "clicks", "--wait"]).await;
    assert_eq!(deleted.trim(), "clicks: deleted");
    let listed = sluice_ok(endpoint, &["stream", "list", "--output", "json"]).await;
    assert_eq!(listed.trim(), "[]");

    let mut args: Vec<String> = ["stream", "describe", "clicks-nope"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(endpoint.iter().cloned());
    let missing = sluice(args).await;
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(
        stderr.trim(),
        "error: ResourceNotFoundException: Stream clicks-nope under account 000000000000 not found."
    );
}

/// Each user's `n` values come back strictly increasing.
fn check_order_per_key(records: &[serde_json::Value]) {
    use base64::Engine;
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for record in records {
        let data = base64::engine::general_purpose::STANDARD
            .decode(record["Data"].as_str().expect("data"))
            .expect("base64");
        let value: serde_json::Value = serde_json::from_slice(&data).expect("json data");
        let user = value["user"].as_str().expect("user").to_owned();
        assert_eq!(record["PartitionKey"], user.as_str());
        let n = value["n"].as_i64().expect("n");
        if let Some(previous) = last.insert(user.clone(), n) {
            assert!(previous < n, "{user}: {previous} then {n}");
        }
    }
}
