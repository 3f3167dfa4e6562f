//! Enhanced fan-out: a subscription pushes a shard's records to one registered consumer as
//! soon as they are committed, for at most five minutes, paced at the consumer's own
//! 2 MiB/s per shard.
//!
//! One subscription per consumer and shard is active at a time. A second call within five
//! seconds of the first is refused with ResourceInUseException; a later one takes the
//! subscription over and the earlier one ends with that error, as AWS documents.

use super::{Broker, ChildShard, IteratorStart, child_shards};
use crate::error::BrokerError;
use crate::record::StoredRecord;
use parking_lot::Mutex;
use sluice_meta::ConsumerStatus;
use sluice_types::{SequenceNumber, ShardId, parse_consumer_arn};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// How long one subscription lasts.
pub const SUBSCRIPTION_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// A subscription with nothing to deliver still sends an event this often.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// A new call for the same consumer and shard within this window is refused.
const TAKEOVER_AFTER_MS: u64 = 5_000;
/// Each consumer's read budget per shard.
const CONSUMER_BYTES_PER_SEC: u64 = 2 << 20;
const MAX_EVENT_RECORDS: usize = 10_000;

/// One push of a subscription.
#[derive(Debug, Clone)]
pub struct SubscriptionEvent {
    pub shard: ShardId,
    pub records: Vec<StoredRecord>,
    /// Where to resume with AFTER_SEQUENCE_NUMBER; `None` once the shard is finished.
    pub continuation: Option<SequenceNumber>,
    pub millis_behind_latest: u64,
    /// Set on the last event of a closed shard.
    pub child_shards: Option<Vec<ChildShard>>,
}

/// A live subscription: events until the lifetime ends, the shard is finished, or an error.
pub struct Subscription {
    events: mpsc::Receiver<Result<SubscriptionEvent, BrokerError>>,
}

impl Subscription {
    /// The next event; `None` when the subscription is over.
    pub async fn next(&mut self) -> Option<Result<SubscriptionEvent, BrokerError>> {
        self.events.recv().await
    }
}

struct Active {
    started_ms: u64,
    cancel: CancellationToken,
}

/// Active subscriptions by (consumer ARN, shard).
#[derive(Default)]
pub(super) struct Registry {
    active: Mutex<HashMap<(String, u32), Active>>,
}

impl Broker {
    /// Starts pushing a shard's records to a registered consumer.
    pub async fn subscribe_to_shard(
        &self,
        consumer_arn: &str,
        shard_text: &str,
        start: IteratorStart,
    ) -> Result<Subscription, BrokerError> {
        let account = self.inner.config.identity.account.clone();
        let parts = parse_consumer_arn(consumer_arn).ok_or_else(|| {
            BrokerError::InvalidArgument(format!("Invalid ConsumerARN: {consumer_arn}"))
        })?;
        let name = parts.stream.as_str().to_owned();
        let stream = self.writable_stream(&name)?;
        let consumer = stream
            .consumers
            .iter()
            .find(|c| {
                c.name == parts.consumer && c.created_ms / 1000 == parts.created_epoch_seconds
            })
            .ok_or_else(|| {
                BrokerError::NotFound(format!(
                    "Consumer {} under stream {name} not found for account {account}.",
                    parts.consumer
                ))
            })?;
        if consumer.status != ConsumerStatus::Active {
            return Err(BrokerError::InUse(format!(
                "Consumer {consumer_arn} is not ACTIVE, instead in state {}",
                consumer.status.as_aws()
            )));
        }
        let shard = ShardId::parse(shard_text)
            .ok()
            .filter(|id| stream.shard(*id).is_some())
            .ok_or_else(|| self.shard_not_found(&name, shard_text))?;
        let offset = self.start_offset(&stream, shard, start).await?;

        let now = self.now_ms();
        let key = (consumer_arn.to_owned(), shard.0);
        let cancel = self.inner.cancel.child_token();
        {
            let mut active = self.inner.subscriptions.active.lock();
            // Forget subscriptions that have certainly ended.
            let horizon = SUBSCRIPTION_LIFETIME.as_millis() as u64 + TAKEOVER_AFTER_MS;
            active.retain(|_, a| now.saturating_sub(a.started_ms) < horizon);
            if let Some(existing) = active.get(&key) {
                if now.saturating_sub(existing.started_ms) < TAKEOVER_AFTER_MS {
                    self.inner
                        .metrics
                        .for_stream(&name)
                        .consumer(&parts.consumer)
                        .rate_exceeded
                        .inc();
                    return Err(BrokerError::InUse(format!(
                        "Another active subscription exists for this consumer: {consumer_arn}"
                    )));
                }
                existing.cancel.cancel();
            }
            active.insert(
                key.clone(),
                Active {
                    started_ms: now,
                    cancel: cancel.clone(),
                },
            );
        }

        let (sender, events) = mpsc::channel(2);
        let broker = self.clone();
        let span = tracing::info_span!("kinesis.subscription", stream = %name, shard = %shard, consumer = %parts.consumer);
        self.inner.tasks.spawn(
            async move {
                // The registry entry outlives the subscription: AWS refuses a new call
                // within five seconds of a successful one, whether or not it is still open.
                broker
                    .push_records(&name, shard, offset, sender, cancel, key.0)
                    .await;
            }
            .instrument(span),
        );
        Ok(Subscription { events })
    }

    /// The subscription's loop: read what is committed, push it, wait for more.
    async fn push_records(
        &self,
        name: &str,
        shard: ShardId,
        mut offset: u64,
        sender: mpsc::Sender<Result<SubscriptionEvent, BrokerError>>,
        cancel: CancellationToken,
        consumer_arn: String,
    ) {
        let deadline = tokio::time::Instant::now() + SUBSCRIPTION_LIFETIME;
        // Pacing: the time at which the bytes sent so far are paid for at 2 MiB/s; up to
        // one second of credit is allowed (a burst of 2 MiB).
        let mut paid_until = tokio::time::Instant::now();
        let mut metadata = self.inner.meta.watch_applied();
        // The first event goes out at once, even when there is nothing to deliver yet.
        let mut heartbeat_due = true;
        let metrics = self.inner.metrics.for_stream(name);
        let consumer_metrics = sluice_types::parse_consumer_arn(&consumer_arn)
            .map(|parts| metrics.consumer(&parts.consumer));
        loop {
            metadata.mark_unchanged();
            let stream = match self.writable_stream(name) {
                Ok(stream) => stream,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            // A deregistered consumer's subscription ends.
            let registered = sluice_types::parse_consumer_arn(&consumer_arn).is_some_and(|parts| {
                stream.consumers.iter().any(|c| {
                    c.name == parts.consumer
                        && c.created_ms / 1000 == parts.created_epoch_seconds
                        && c.status == ConsumerStatus::Active
                })
            });
            if !registered {
                let _ = sender
                    .send(Err(BrokerError::NotFound(format!(
                        "Consumer {consumer_arn} not found."
                    ))))
                    .await;
                return;
            }
            let Some(shard_meta) = stream.shard(shard) else {
                let _ = sender
                    .send(Err(self.shard_not_found(name, &shard.to_string())))
                    .await;
                return;
            };
            let read = self
                .read_shard(
                    &stream,
                    shard.0,
                    offset,
                    MAX_EVENT_RECORDS,
                    CONSUMER_BYTES_PER_SEC as usize,
                    self.now_ms(),
                    false,
                    Duration::ZERO,
                )
                .await;
            let (records, stats) = match read {
                Ok(read) => read,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let bytes: u64 = records
                .iter()
                .map(|r| (r.data.len() + r.partition_key.len()) as u64)
                .sum();
            if let Some(last) = records.last() {
                offset = last.offset + 1;
            } else {
                offset = offset.max(stats.first_offset);
            }
            let commit_point = stats.commit_point;
            let finished = match shard_meta.closed {
                Some(Some(ending)) => offset > ending,
                Some(None) => true,
                None => false,
            };
            let now = self.now_ms();
            let millis_behind_latest = if offset >= commit_point {
                0
            } else {
                stats
                    .newest_timestamp_ms
                    .saturating_sub(records.last().map_or(now, |r| r.arrival_ms))
            };
            let had_records = !records.is_empty();
            let event = SubscriptionEvent {
                shard,
                records,
                continuation: (!finished).then(|| SequenceNumber::new(shard, offset)),
                millis_behind_latest,
                child_shards: finished.then(|| child_shards(&stream, shard)),
            };
            if had_records || finished || heartbeat_due {
                heartbeat_due = false;
                tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = sender.send(Err(taken_over(&consumer_arn))).await;
                        return;
                    }
                    sent = sender.send(Ok(event)) => {
                        if sent.is_err() {
                            return;
                        }
                        metrics.subscribe_to_shard_events.inc();
                        if let Some(consumer) = &consumer_metrics {
                            consumer
                                .millis_behind_latest
                                .set(crate::metrics::gauge_value(millis_behind_latest));
                        }
                    }
                }
                if finished {
                    return;
                }
                // Pay for what was sent before reading more; unused credit never exceeds
                // one second's worth (a 2 MiB burst).
                let cost = Duration::from_millis(bytes * 1000 / CONSUMER_BYTES_PER_SEC);
                let now = tokio::time::Instant::now();
                let credit_floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
                paid_until = paid_until.max(credit_floor) + cost;
                if paid_until > now {
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            let _ = sender.send(Err(taken_over(&consumer_arn))).await;
                            return;
                        }
                        _ = tokio::time::sleep_until(paid_until) => {}
                    }
                }
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
                continue;
            }
            // Nothing new: wait for a commit, a heartbeat, the end of life or a takeover.
            let heartbeat = tokio::time::sleep(HEARTBEAT);
            tokio::select! {
                _ = cancel.cancelled() => {
                    let _ = sender.send(Err(taken_over(&consumer_arn))).await;
                    return;
                }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = sender.closed() => return,
                // Whatever the wait's outcome (a commit, an error such as the stream's
                // deletion), the loop reads again and reports what it finds. It outlasts
                // the heartbeat, which must win when nothing is committed.
                _ = self.wait_for_commit(&stream, shard.0, offset, HEARTBEAT * 2) => {}
                // A split or merge may have finished the shard.
                _ = metadata.changed() => {}
                _ = heartbeat => heartbeat_due = true,
            }
            if tokio::time::Instant::now() >= deadline {
                return;
            }
        }
    }
}

fn taken_over(consumer_arn: &str) -> BrokerError {
    BrokerError::InUse(format!(
        "Another active subscription exists for this consumer: {consumer_arn}"
    ))
}
