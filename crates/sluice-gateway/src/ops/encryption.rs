//! StartStreamEncryption and StopStreamEncryption, and how DescribeStream and
//! DescribeStreamSummary report a stream's encryption (`EncryptionType`, `KeyId`).
//!
//! The service model lets `EncryptionType` be `NONE` or `KMS`, but both operations take
//! only `KMS` (InvalidArgumentException otherwise). The broker checks the stream (it must
//! exist and be ACTIVE) before the key (KMSNotFoundException, KMSDisabledException).

use super::*;

/// StartStreamEncryption: `{}` once the stream is UPDATING on its way to encryption.
pub(super) async fn start(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    require_kms(input)?;
    let key_id = opt_str(input, "KeyId").unwrap_or("");
    broker.start_stream_encryption(&name, key_id).await?;
    Ok(obj(vec![]))
}

/// StopStreamEncryption: `{}` once the stream is UPDATING on its way to plaintext.
pub(super) async fn stop(broker: &Broker, input: &Value) -> Result<Value, ApiError> {
    let name = stream_name(input)?;
    require_kms(input)?;
    let key_id = opt_str(input, "KeyId").unwrap_or("");
    broker.stop_stream_encryption(&name, key_id).await?;
    Ok(obj(vec![]))
}

fn require_kms(input: &Value) -> Result<(), ApiError> {
    match opt_str(input, "EncryptionType") {
        Some("KMS") => Ok(()),
        other => Err(ApiError::invalid_argument(format!(
            "Encryption type {} is not supported. KMS is the only valid EncryptionType for this request.",
            other.unwrap_or("null")
        ))),
    }
}

/// `EncryptionType` of a stream description: `KMS` or `NONE`.
pub(super) fn encryption_type(stream: &Stream) -> Value {
    s(if stream.encryption.is_some() {
        "KMS"
    } else {
        "NONE"
    })
}

/// `KeyId` of a stream description: the key as the caller named it, absent when the
/// stream is not encrypted.
pub(super) fn key_id(stream: &Stream) -> Value {
    opt(stream.encryption.as_ref(), |e| s(&e.key_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::decode_json;
    use serde_json::json;
    use sluice_cluster::{BrokerConfig, LocalKeyring};
    use std::sync::Arc;
    use std::time::Duration;

    const NOW: u64 = 1_700_000_000_000;

    async fn broker(dir: &std::path::Path) -> Broker {
        Broker::open(BrokerConfig {
            fsync: false,
            retention_check_interval: Duration::from_secs(3600),
            clock: Arc::new(|| NOW),
            keys: Arc::new(LocalKeyring::ephemeral().unwrap()),
            ..BrokerConfig::new(dir)
        })
        .await
        .unwrap()
    }

    async fn call(
        broker: &Broker,
        op: Operation,
        input: serde_json::Value,
    ) -> Result<Value, ApiError> {
        let mut value = decode_json(input.to_string().as_bytes())?;
        validate::check_input(op.name(), &mut value)?;
        handle(broker, op, &value).await
    }

    async fn wait_active(broker: &Broker, name: &str) {
        for _ in 0..2000 {
            if broker
                .stream(name)
                .is_ok_and(|s| s.status == StreamStatus::Active)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{name} never became ACTIVE");
    }

    fn error_of(result: Result<Value, ApiError>) -> (&'static str, String) {
        let error = result.expect_err("an error");
        (error.kind.aws_type(), error.message)
    }

    fn description(output: &Value, member: &str) -> (Option<String>, Option<String>) {
        let described = output.get(member).expect("description");
        let text = |key| match described.get(key) {
            Some(Value::Str(text)) => Some(text.clone()),
            _ => None,
        };
        (text("EncryptionType"), text("KeyId"))
    }

    #[tokio::test]
    async fn start_describe_and_stop_as_aws_answers_them() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path()).await;
        call(
            &broker,
            Operation::CreateStream,
            json!({"StreamName": "s", "ShardCount": 1}),
        )
        .await
        .unwrap();
        wait_active(&broker, "s").await;
        let start = |kind: &str, key: &str| json!({"StreamName": "s", "EncryptionType": kind, "KeyId": key});
        assert_eq!(
            error_of(call(&broker, Operation::StartStreamEncryption, start("NONE", "alias/aws/kinesis")).await),
            (
                "InvalidArgumentException",
                "Encryption type NONE is not supported. KMS is the only valid EncryptionType for this request.".to_owned()
            )
        );
        assert_eq!(
            error_of(
                call(
                    &broker,
                    Operation::StartStreamEncryption,
                    start("KMS", "alias/nope")
                )
                .await
            ),
            (
                "KMSNotFoundException",
                "Alias arn:aws:kms:us-east-1:000000000000:alias/nope is not found.".to_owned()
            )
        );
        assert_eq!(
            error_of(
                call(
                    &broker,
                    Operation::StartStreamEncryption,
                    json!({"StreamName": "missing", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"})
                )
                .await
            ),
            (
                "ResourceNotFoundException",
                "Stream missing under account 000000000000 not found.".to_owned()
            )
        );
        call(
            &broker,
            Operation::StartStreamEncryption,
            start("KMS", "alias/aws/kinesis"),
        )
        .await
        .unwrap();
        wait_active(&broker, "s").await;
        let summary = call(
            &broker,
            Operation::DescribeStreamSummary,
            json!({"StreamName": "s"}),
        )
        .await
        .unwrap();
        assert_eq!(
            description(&summary, "StreamDescriptionSummary"),
            (Some("KMS".to_owned()), Some("alias/aws/kinesis".to_owned()))
        );
        assert_eq!(
            error_of(
                call(
                    &broker,
                    Operation::StopStreamEncryption,
                    start("NONE", "alias/aws/kinesis")
                )
                .await
            )
            .0,
            "InvalidArgumentException"
        );
        call(
            &broker,
            Operation::StopStreamEncryption,
            start("KMS", "alias/aws/kinesis"),
        )
        .await
        .unwrap();
        wait_active(&broker, "s").await;
        let described = call(
            &broker,
            Operation::DescribeStream,
            json!({"StreamName": "s"}),
        )
        .await
        .unwrap();
        assert_eq!(
            description(&described, "StreamDescription"),
            (Some("NONE".to_owned()), None)
        );
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn a_stream_that_is_not_active_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let broker = broker(dir.path()).await;
        // A file where the stream's directory goes keeps it CREATING.
        let streams = dir.path().join("streams");
        std::fs::create_dir_all(&streams).unwrap();
        std::fs::write(streams.join(format!("busy.{NOW}")), b"in the way").unwrap();
        call(
            &broker,
            Operation::CreateStream,
            json!({"StreamName": "busy", "ShardCount": 1}),
        )
        .await
        .unwrap();
        for op in [
            Operation::StartStreamEncryption,
            Operation::StopStreamEncryption,
        ] {
            let input = json!({"StreamName": "busy", "EncryptionType": "KMS", "KeyId": "alias/aws/kinesis"});
            assert_eq!(
                error_of(call(&broker, op, input).await),
                (
                    "ResourceInUseException",
                    "Stream busy under account 000000000000 not ACTIVE, instead in state CREATING"
                        .to_owned()
                ),
                "{op:?}"
            );
        }
        broker.shutdown().await;
    }
}
