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
