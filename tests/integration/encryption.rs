//! Encryption at rest through the AWS SDK: StartStreamEncryption and StopStreamEncryption,
//! what DescribeStream reports, AWS's KMS errors, records that never reach the disk in
//! clear while a stream is encrypted, restarts, and master-key rotation with the
//! `sluice keyring` command.

use crate::{create_active, put, read_all};
use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{EncryptionType, PutRecordsRequestEntry};
use sluice_tests::{Node, NodeOptions, sluice_binary, wait_active};
use std::path::{Path, PathBuf};

fn options() -> NodeOptions {
    NodeOptions {
        config: sluice_server::RawConfig {
            // The smallest segments the server accepts, so a few PutRecords start a new one.
            segment_bytes: Some(4 << 20),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs `sluice keyring <args> --keyring <path>` and returns its standard output.
async fn keyring(path: &Path, args: &[&str]) -> String {
    let mut command: Vec<String> = vec!["keyring".to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    command.extend(["--keyring".to_owned(), path.display().to_string()]);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(sluice_binary())
            .args(&command)
            .output()
            .expect("run sluice keyring (build it with `cargo build -p sluice`)")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "sluice keyring {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn start_encryption(
    client: &Client,
    stream: &str,
    key_id: &str,
) -> Result<
    (),
    aws_sdk_kinesis::error::SdkError<
        aws_sdk_kinesis::operation::start_stream_encryption::StartStreamEncryptionError,
    >,
> {
    client
        .start_stream_encryption()
        .stream_name(stream)
        .encryption_type(EncryptionType::Kms)
        .key_id(key_id)
        .send()
        .await
        .map(|_| ())
}

async fn stop_encryption(client: &Client, stream: &str, key_id: &str) {
    client
        .stop_stream_encryption()
        .stream_name(stream)
        .encryption_type(EncryptionType::Kms)
        .key_id(key_id)
        .send()
        .await
        .expect("stop stream encryption");
}

/// (EncryptionType, KeyId) as DescribeStream and DescribeStreamSummary report them; the
/// two must agree.
async fn encryption_of(client: &Client, stream: &str) -> (String, Option<String>) {
    let described = client
        .describe_stream()
        .stream_name(stream)
        .send()
        .await
        .expect("describe stream");
    let description = described.stream_description().expect("description");
    let full = (
        description
            .encryption_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        description.key_id().map(str::to_owned),
    );
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .expect("describe stream summary");
    let summary = summary.stream_description_summary().expect("summary");
    let short = (
        summary
            .encryption_type()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
        summary.key_id().map(str::to_owned),
    );
    assert_eq!(full, short);
    full
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// The files under `dir` that hold `needle`.
fn files_holding(dir: &Path, needle: &str) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|path| {
            // Files may vanish while a node runs (temporary files); those hold nothing.
            std::fs::read(path).is_ok_and(|bytes| {
                bytes
                    .windows(needle.len())
                    .any(|window| window == needle.as_bytes())
            })
        })
        .collect()
}

/// The master key versions named by the key sidecars under `dir` (`.key` files; the
/// version follows an 8-byte magic, see `sluice_storage`'s `crypto` module).
fn sidecar_versions(dir: &Path) -> Vec<u32> {
    let mut versions: Vec<u32> = files_under(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
        .filter_map(|p| {
            let bytes = std::fs::read(p).ok()?;
            Some(u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?))
        })
        .collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{nanos:x}-{}", std::process::id())
}

async fn payloads(client: &Client, stream: &str) -> Vec<(String, String)> {
    read_all(client, stream, "shardId-000000000000")
        .await
        .iter()
        .map(|r| {
            (
                r.partition_key().unwrap_or_default().to_owned(),
                String::from_utf8_lossy(r.data().as_ref()).into_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn encrypted_records_never_reach_the_disk_in_clear_and_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_owned();
    let keyring_path = data_dir.join("keyring.json");
    let node = Node::start_in(&data_dir, options()).await;
    let client = node.client();
    create_active(&client, "vault", 1).await;
    assert_eq!(
        encryption_of(&client, "vault").await,
        ("NONE".to_owned(), None)
    );

    let before = unique("plain-before");
    put(&client, "vault", "open-key", before.as_bytes()).await;

    start_encryption(&client, "vault", "alias/aws/kinesis")
        .await
        .expect("start stream encryption");
    wait_active(&client, "vault").await;
    assert_eq!(
        encryption_of(&client, "vault").await,
        ("KMS".to_owned(), Some("alias/aws/kinesis".to_owned()))
    );
    // Data and partition keys are encrypted, through PutRecord and PutRecords.
    let secret = unique("secret-data");
    let secret_key = unique("secret-key");
    put(
        &client,
        "vault",
        &secret_key,
        format!("{secret}-0").as_bytes(),
    )
    .await;
    let entries = (1..=5)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(&secret_key)
                .data(Blob::new(format!("{secret}-{i}")))
                .build()
                .unwrap()
        })
        .collect();
    let out = client
        .put_records()
        .stream_name("vault")
        .set_records(Some(entries))
        .send()
        .await
        .expect("put records");
    assert_eq!(out.failed_record_count(), Some(0));

    stop_encryption(&client, "vault", "alias/aws/kinesis").await;
    wait_active(&client, "vault").await;
    assert_eq!(
        encryption_of(&client, "vault").await,
        ("NONE".to_owned(), None)
    );
    let after = unique("plain-after");
    put(&client, "vault", "open-key", after.as_bytes()).await;

    let mut expected = vec![("open-key".to_owned(), before.clone())];
    expected.extend((0..=5).map(|i| (secret_key.clone(), format!("{secret}-{i}"))));
    expected.push(("open-key".to_owned(), after.clone()));
    assert_eq!(payloads(&client, "vault").await, expected);

    assert_eq!(files_holding(&data_dir, &secret), Vec::<PathBuf>::new());
    assert_eq!(files_holding(&data_dir, &secret_key), Vec::<PathBuf>::new());
    assert!(!files_holding(&data_dir, &before).is_empty());
    assert!(!files_holding(&data_dir, &after).is_empty());

    // A restart on the same directory reads everything back.
    node.stop().await;
    let node = Node::start_in(&data_dir, options()).await;
    let client = node.client();
    assert_eq!(payloads(&client, "vault").await, expected);

    // Rotation: new segments are wrapped under the new version, old ones stay readable.
    assert_eq!(sidecar_versions(&data_dir), vec![1]);
    node.stop().await;
    let rotated = keyring(&keyring_path, &["rotate", "alias/aws/kinesis"]).await;
    assert_eq!(rotated.trim(), "alias/aws/kinesis: version 2");
    let node = Node::start_in(&data_dir, options()).await;
    let client = node.client();
    start_encryption(&client, "vault", "alias/aws/kinesis")
        .await
        .expect("start stream encryption again");
    wait_active(&client, "vault").await;
    // More than a segment's worth (4 MiB) of encrypted records.
    let big = unique("big-secret");
    let filler = "x".repeat(900 << 10);
    for batch in 0..2 {
        let entries = (0..3)
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key("big")
                    .data(Blob::new(format!("{big}-{batch}-{i}:{filler}")))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = client
            .put_records()
            .stream_name("vault")
            .set_records(Some(entries))
            .send()
            .await
            .expect("put big records");
        assert_eq!(out.failed_record_count(), Some(0));
    }
    assert_eq!(sidecar_versions(&data_dir), vec![1, 2]);
    node.stop().await;
    let node = Node::start_in(&data_dir, options()).await;
    let client = node.client();
    let all = payloads(&client, "vault").await;
    assert_eq!(all.len(), expected.len() + 6);
    assert_eq!(all[..expected.len()], expected[..]);
    for (at, (key, data)) in all[expected.len()..].iter().enumerate() {
        assert_eq!(key, "big");
        assert_eq!(
            data,
            &format!("{big}-{}-{}:{filler}", at / 3, at % 3),
            "record {at}"
        );
    }
    assert_eq!(files_holding(&data_dir, &big), Vec::<PathBuf>::new());
    assert_eq!(files_holding(&data_dir, &secret), Vec::<PathBuf>::new());
    node.stop().await;
}

#[tokio::test]
async fn unknown_and_disabled_keys_are_refused_as_aws_does() {
    let node = Node::start_with(NodeOptions::default()).await;
    let client = node.client();
    let keyring_path = node.data_dir.join("keyring.json");
    create_active(&client, "guarded", 1).await;

    let error = start_encryption(&client, "guarded", "alias/does-not-exist")
        .await
        .unwrap_err();
    assert!(
        error
            .as_service_error()
            .is_some_and(|e| e.is_kms_not_found_exception()),
        "{error:?}"
    );
    assert_eq!(
        error.message(),
        Some("Alias arn:aws:kms:us-east-1:000000000000:alias/does-not-exist is not found.")
    );

    // A key the operator created and then disabled, while the node runs.
    let key_id = keyring(&keyring_path, &["create-key", "--alias", "alias/retired"]).await;
    let key_id = key_id.trim().to_owned();
    keyring(&keyring_path, &["disable", "alias/retired"]).await;
    let listed = keyring(&keyring_path, &["list"]).await;
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&key_id) && l.contains("disabled")),
        "{listed}"
    );
    for reference in [
        "alias/retired".to_owned(),
        key_id.clone(),
        format!("arn:aws:kms:us-east-1:000000000000:key/{key_id}"),
    ] {
        let error = start_encryption(&client, "guarded", &reference)
            .await
            .unwrap_err();
        assert!(
            error
                .as_service_error()
                .is_some_and(|e| e.is_kms_disabled_exception()),
            "{reference}: {error:?}"
        );
        assert_eq!(
            error.message().map(str::to_owned),
            Some(format!(
                "arn:aws:kms:us-east-1:000000000000:key/{key_id} is disabled."
            ))
        );
    }
    assert_eq!(
        encryption_of(&client, "guarded").await,
        ("NONE".to_owned(), None)
    );

    // EncryptionType must be KMS.
    let error = client
        .start_stream_encryption()
        .stream_name("guarded")
        .encryption_type(EncryptionType::None)
        .key_id("alias/aws/kinesis")
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("InvalidArgumentException"));

    // Once enabled again the key works, by its alias ARN too.
    keyring(&keyring_path, &["enable", "alias/retired"]).await;
    start_encryption(
        &client,
        "guarded",
        "arn:aws:kms:us-east-1:000000000000:alias/retired",
    )
    .await
    .expect("start with the enabled key");
    wait_active(&client, "guarded").await;
    put(&client, "guarded", "k", b"sealed").await;
    // Disabling it stops writes with KMSDisabledException; what was written stays readable.
    keyring(&keyring_path, &["disable", "alias/retired"]).await;
    let error = client
        .put_record()
        .stream_name("guarded")
        .partition_key("k")
        .data(Blob::new("refused"))
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.code(), Some("KMSDisabledException"), "{error:?}");
    let records = read_all(&client, "guarded", "shardId-000000000000").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].data().as_ref(), b"sealed");
    node.stop().await;
}
