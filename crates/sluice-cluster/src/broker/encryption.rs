//! Encryption at rest for streams: StartStreamEncryption and StopStreamEncryption, the
//! master key each write is encrypted under, and AWS KMS's errors for keys that are
//! unknown or disabled.
//!
//! The stream's metadata keeps the KeyId as the caller gave it (DescribeStream shows it
//! back). Every write request resolves it again through the node's [`KeyProvider`], so
//! a key disabled later stops writes with KMSDisabledException, as AWS does; records
//! already written stay readable. The shard logs do the encrypting (see
//! `sluice_storage::Log::append_with`).

use super::Broker;
use crate::error::BrokerError;
use sluice_meta::{Command, Stream};
use sluice_storage::keyring::{KeyName, KeyReference};
use sluice_storage::{EncryptionKey, KeyError, KeyProvider, LocalKeyring};
use std::path::Path;
use std::sync::Arc;

/// Opens the local keyring file for [`BrokerConfig::keys`](super::BrokerConfig::keys),
/// creating it at first start (mode 0600, with the key `alias/aws/kinesis`). Refuses a
/// file that group or others may read.
pub async fn open_local_keyring(path: &Path) -> Result<Arc<dyn KeyProvider>, BrokerError> {
    let path = path.to_owned();
    let keyring = tokio::task::spawn_blocking(move || LocalKeyring::open_or_create(&path))
        .await?
        .map_err(BrokerError::Keyring)?;
    Ok(Arc::new(keyring))
}

impl Broker {
    /// StartStreamEncryption: checks the stream (it must exist and be ACTIVE) and the key
    /// (it must exist and be enabled), then records the key and puts the stream in
    /// UPDATING until the change settles. Records written from then on are encrypted.
    pub async fn start_stream_encryption(
        &self,
        name: &str,
        key_id: &str,
    ) -> Result<(), BrokerError> {
        let command = Command::SetEncryption {
            name: name.to_owned(),
            key_id: Some(key_id.to_owned()),
        };
        self.inner.meta.read(|state| state.plan(&command))?;
        let key = self.resolve_key(key_id)?;
        self.propose(command).await?;
        tracing::info!(stream = %name, key_id = %key_id, master_key = %key.key_id(), "stream encryption started");
        self.settle_in_background(name);
        Ok(())
    }

    /// StopStreamEncryption: the stream must be ACTIVE, and if it is encrypted, `key_id`
    /// must name the key it is encrypted with. Records written from then on are not
    /// encrypted; those written before stay encrypted (and readable).
    pub async fn stop_stream_encryption(
        &self,
        name: &str,
        key_id: &str,
    ) -> Result<(), BrokerError> {
        let command = Command::SetEncryption {
            name: name.to_owned(),
            key_id: None,
        };
        self.inner.meta.read(|state| state.plan(&command))?;
        let stream = self.stream(name)?;
        if let Some(current) = &stream.encryption
            && !self.same_key(&current.key_id, key_id)
        {
            return Err(BrokerError::InvalidArgument(format!(
                "KeyId {key_id} does not match the key that stream {name} under account {} is encrypted with.",
                self.inner.config.identity.account
            )));
        }
        self.propose(command).await?;
        tracing::info!(stream = %name, "stream encryption stopped");
        self.settle_in_background(name);
        Ok(())
    }

    /// The master key a write to `stream` is encrypted under, if it is encrypted.
    pub(super) fn stream_key(&self, stream: &Stream) -> Result<Option<EncryptionKey>, BrokerError> {
        match &stream.encryption {
            Some(encryption) => self.resolve_key(&encryption.key_id).map(Some),
            None => Ok(None),
        }
    }

    /// Resolves a caller's KeyId; a key ARN of another region or account names no key
    /// this node holds.
    fn resolve_key(&self, key_id: &str) -> Result<EncryptionKey, BrokerError> {
        let identity = &self.inner.config.identity;
        if let Some(reference) = KeyReference::parse(key_id)
            && (reference.region.is_some_and(|r| r != identity.region)
                || reference.account.is_some_and(|a| a != identity.account))
        {
            return Err(self.key_not_found(key_id));
        }
        self.inner
            .config
            .keys
            .resolve(key_id)
            .map_err(|error| match error {
                KeyError::NotFound { .. } => self.key_not_found(key_id),
                KeyError::Disabled { key_id: canonical } => BrokerError::KmsDisabled(format!(
                    "arn:aws:kms:{}:{}:key/{canonical} is disabled.",
                    identity.region, identity.account
                )),
                other => BrokerError::Keyring(other),
            })
    }

    /// Whether two KeyIds name one master key (the same text, or the same key by id,
    /// ARN or alias, enabled or not).
    fn same_key(&self, a: &str, b: &str) -> bool {
        let canonical = |reference: &str| match self.inner.config.keys.resolve(reference) {
            Ok(key) => Some(key.key_id().to_owned()),
            Err(KeyError::Disabled { key_id }) => Some(key_id),
            Err(_) => None,
        };
        a == b || canonical(a).is_some_and(|id| Some(id) == canonical(b))
    }

    /// KMS's NotFoundException messages, by the form of the reference.
    fn key_not_found(&self, key_id: &str) -> BrokerError {
        let identity = &self.inner.config.identity;
        BrokerError::KmsNotFound(match KeyReference::parse(key_id) {
            Some(reference) => {
                let region = reference.region.unwrap_or(&identity.region);
                let account = reference.account.unwrap_or(&identity.account);
                match reference.name {
                    KeyName::Id(id) => {
                        format!("Key 'arn:aws:kms:{region}:{account}:key/{id}' does not exist")
                    }
                    KeyName::Alias(alias) => {
                        format!("Alias arn:aws:kms:{region}:{account}:{alias} is not found.")
                    }
                }
            }
            None => format!("Invalid keyId {key_id}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BrokerConfig, IteratorStart, PutRecordInput};
    use super::*;
    use bytes::Bytes;
    use sluice_meta::{StreamMode, StreamStatus};
    use std::collections::BTreeMap;
    use std::time::Duration;

    async fn broker_with(data: &Path, keyring: &Path) -> Broker {
        Broker::open(BrokerConfig {
            fsync: false,
            segment_bytes: 64 << 10,
            retention_check_interval: Duration::from_secs(3600),
            keys: open_local_keyring(keyring).await.unwrap(),
            ..BrokerConfig::new(data)
        })
        .await
        .unwrap()
    }

    async fn wait_status(broker: &Broker, name: &str, status: StreamStatus) {
        for _ in 0..2000 {
            if broker.stream(name).is_ok_and(|s| s.status == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("stream {name} never reached {status:?}");
    }

    async fn put(broker: &Broker, name: &str, data: &[u8]) {
        let results = broker
            .put_records(
                name,
                vec![PutRecordInput {
                    partition_key: "key".to_owned(),
                    explicit_hash_key: None,
                    data: Bytes::copy_from_slice(data),
                }],
            )
            .await
            .unwrap();
        assert!(results.iter().all(Result::is_ok), "{results:?}");
    }

    async fn read_all(broker: &Broker, name: &str) -> Vec<Vec<u8>> {
        let iterator = broker
            .get_shard_iterator(name, "shardId-000000000000", IteratorStart::TrimHorizon)
            .await
            .unwrap();
        let out = broker.get_records(&iterator, 10_000).await.unwrap();
        out.records.iter().map(|r| r.data.to_vec()).collect()
    }

    fn any_file_contains(dir: &Path, needle: &[u8]) -> bool {
        let mut stack = vec![dir.to_owned()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else if std::fs::read(&path)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    return true;
                }
            }
        }
        false
    }

    #[tokio::test]
    async fn encrypted_writes_are_sealed_on_disk_and_read_back_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let keyring = dir.path().join("keyring.json");
        let broker = broker_with(&data, &keyring).await;
        broker
            .create_stream("s", 1, StreamMode::Provisioned, BTreeMap::new())
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        put(&broker, "s", b"before-encryption-marker").await;
        broker
            .start_stream_encryption("s", "alias/aws/kinesis")
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        assert_eq!(
            broker.stream("s").unwrap().encryption.map(|e| e.key_id),
            Some("alias/aws/kinesis".to_owned())
        );
        put(&broker, "s", b"while-encrypted-marker").await;
        broker
            .stop_stream_encryption("s", "alias/aws/kinesis")
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        assert_eq!(broker.stream("s").unwrap().encryption, None);
        put(&broker, "s", b"after-encryption-marker").await;
        let expected = vec![
            b"before-encryption-marker".to_vec(),
            b"while-encrypted-marker".to_vec(),
            b"after-encryption-marker".to_vec(),
        ];
        assert_eq!(read_all(&broker, "s").await, expected);
        broker.shutdown().await;
        drop(broker);
        assert!(!any_file_contains(&data, b"while-encrypted-marker"));
        assert!(any_file_contains(&data, b"before-encryption-marker"));
        assert!(any_file_contains(&data, b"after-encryption-marker"));
        let broker = broker_with(&data, &keyring).await;
        assert_eq!(read_all(&broker, "s").await, expected);
        broker.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_disabled_and_foreign_keys_are_refused_with_kms_errors() {
        let dir = tempfile::tempdir().unwrap();
        let keyring_path = dir.path().join("keyring.json");
        let broker = broker_with(&dir.path().join("data"), &keyring_path).await;
        broker
            .create_stream("s", 1, StreamMode::Provisioned, BTreeMap::new())
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        let refused = |reference: &'static str| {
            let broker = broker.clone();
            async move {
                broker
                    .start_stream_encryption("s", reference)
                    .await
                    .unwrap_err()
            }
        };
        match refused("alias/missing").await {
            BrokerError::KmsNotFound(m) => assert_eq!(
                m,
                "Alias arn:aws:kms:us-east-1:000000000000:alias/missing is not found."
            ),
            other => panic!("{other:?}"),
        }
        match refused("11111111-2222-4333-8444-555555555555").await {
            BrokerError::KmsNotFound(m) => assert_eq!(
                m,
                "Key 'arn:aws:kms:us-east-1:000000000000:key/11111111-2222-4333-8444-555555555555' does not exist"
            ),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            refused("arn:aws:kms:eu-west-1:000000000000:alias/aws/kinesis").await,
            BrokerError::KmsNotFound(_)
        ));
        assert!(matches!(
            refused("not-a-key").await,
            BrokerError::KmsNotFound(m) if m == "Invalid keyId not-a-key"
        ));
        let keyring = LocalKeyring::open(&keyring_path).unwrap();
        let created = keyring.create_key(&["alias/off".to_owned()], "").unwrap();
        keyring.set_enabled("alias/off", false).unwrap();
        match refused("alias/off").await {
            BrokerError::KmsDisabled(m) => assert_eq!(
                m,
                format!(
                    "arn:aws:kms:us-east-1:000000000000:key/{} is disabled.",
                    created.key_id
                )
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(broker.stream("s").unwrap().encryption, None);
        assert_eq!(broker.stream("s").unwrap().status, StreamStatus::Active);
        // A missing stream is reported before the key is looked at.
        assert!(matches!(
            broker
                .start_stream_encryption("missing", "alias/missing")
                .await,
            Err(BrokerError::NotFound(_))
        ));
        // Writes to a stream whose key was disabled later fail as AWS's do.
        keyring.set_enabled("alias/off", true).unwrap();
        broker
            .start_stream_encryption("s", "alias/off")
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        put(&broker, "s", b"x").await;
        keyring.set_enabled("alias/off", false).unwrap();
        let error = broker
            .put_records(
                "s",
                vec![PutRecordInput {
                    partition_key: "k".to_owned(),
                    explicit_hash_key: None,
                    data: Bytes::from_static(b"y"),
                }],
            )
            .await
            .unwrap_err();
        assert!(matches!(error, BrokerError::KmsDisabled(_)), "{error:?}");
        // Stopping needs the stream's own key, named any way.
        assert!(matches!(
            broker
                .stop_stream_encryption("s", "alias/aws/kinesis")
                .await,
            Err(BrokerError::InvalidArgument(_))
        ));
        broker
            .stop_stream_encryption("s", &created.key_id)
            .await
            .unwrap();
        wait_status(&broker, "s", StreamStatus::Active).await;
        put(&broker, "s", b"z").await;
        assert_eq!(
            read_all(&broker, "s").await,
            vec![b"x".to_vec(), b"z".to_vec()]
        );
        broker.shutdown().await;
    }
}
