//! Automatic scaling: on-demand streams, and provisioned streams with a scaling policy,
//! split shards whose sustained write rate nears the shard limit and merge cold
//! neighbours after a cool-down.
//!
//! A pass samples every open shard's committed record and byte totals; utilisation is the
//! rate since the previous pass as a share of the per-shard write limit (the larger of the
//! records and bytes shares). Hot shards are split at the middle of their hash range, at
//! most doubling the open shard count in one pass; one cold adjacent pair is merged per
//! pass, never below the policy's minimum. Every decision is logged.

use super::Broker;
use crate::error::BrokerError;
use sluice_meta::{ScalingPolicy, Stream, StreamMode, StreamStatus};
use sluice_types::ShardId;
use sluice_types::limits::ON_DEMAND_INITIAL_SHARDS;
use std::collections::HashMap;

/// How long an on-demand stream waits after a scaling step before it may merge.
pub const ON_DEMAND_COOLDOWN_SECS: u64 = 15 * 60;
/// An on-demand shard splits at this share of its write limit.
pub const ON_DEMAND_TARGET_PERCENT: u32 = 80;

/// One step the scaler took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScalingDecision {
    Split {
        stream: String,
        shard: ShardId,
        utilization_percent: u64,
    },
    Merge {
        stream: String,
        shard: ShardId,
        adjacent: ShardId,
        utilization_percent: u64,
    },
}

#[derive(Clone, Copy)]
struct Sample {
    at_ms: u64,
    records: u64,
    bytes: u64,
}

/// What the scaler remembers between passes.
#[derive(Default)]
pub(super) struct ScalerState {
    samples: HashMap<(String, u64, u32), Sample>,
    last_scaled_ms: HashMap<(String, u64), u64>,
}

impl Broker {
    /// The policy the scaler applies to a stream, if any.
    fn effective_policy(&self, stream: &Stream) -> Option<ScalingPolicy> {
        match (stream.mode, &stream.scaling_policy) {
            (_, Some(policy)) => Some(policy.clone()),
            (StreamMode::OnDemand, None) => Some(ScalingPolicy {
                target_utilization_percent: ON_DEMAND_TARGET_PERCENT,
                min_shards: ON_DEMAND_INITIAL_SHARDS,
                max_shards: self.inner.config.identity.shard_limit,
                cooldown_secs: ON_DEMAND_COOLDOWN_SECS,
            }),
            (StreamMode::Provisioned, None) => None,
        }
    }

    /// One scaling pass over every stream that scales. Returns what it did.
    pub async fn autoscale_pass(&self) -> Result<Vec<ScalingDecision>, BrokerError> {
        let streams: Vec<Stream> = self
            .inner
            .meta
            .read(|s| s.streams.values().cloned().collect());
        let mut decisions = Vec::new();
        for stream in streams {
            if stream.status != StreamStatus::Active {
                continue;
            }
            let Some(policy) = self.effective_policy(&stream) else {
                continue;
            };
            decisions.extend(self.scale_stream(&stream, &policy).await?);
        }
        Ok(decisions)
    }

    /// Write utilisation (percent of the shard's limit) of each open shard since the last
    /// pass; shards seen for the first time are only sampled.
    async fn utilization(&self, stream: &Stream) -> Result<Vec<(u32, u64)>, BrokerError> {
        let now = self.now_ms();
        let limits = &self.inner.config.shard_limits;
        let mut measured = Vec::new();
        for shard in stream.open_shards() {
            let (stats, _) = self.describe_shard(stream, shard.id, None).await?;
            let (records, bytes) = (stats.written_records, stats.written_bytes);
            let key = (stream.name.clone(), stream.created_ms, shard.id);
            let current = Sample {
                at_ms: now,
                records,
                bytes,
            };
            let previous = self.inner.scaler.lock().samples.insert(key, current);
            let Some(previous) = previous else {
                continue;
            };
            let elapsed_ms = now.saturating_sub(previous.at_ms);
            if elapsed_ms == 0 {
                continue;
            }
            let share = |amount: u64, per_second: u64| {
                amount.saturating_mul(1000).saturating_mul(100)
                    / elapsed_ms.saturating_mul(per_second.max(1))
            };
            let records_percent = share(
                records.saturating_sub(previous.records),
                limits.write_records_per_sec,
            );
            let bytes_percent = share(
                bytes.saturating_sub(previous.bytes),
                limits.write_bytes_per_sec,
            );
            measured.push((shard.id, records_percent.max(bytes_percent)));
        }
        Ok(measured)
    }

    async fn scale_stream(
        &self,
        stream: &Stream,
        policy: &ScalingPolicy,
    ) -> Result<Vec<ScalingDecision>, BrokerError> {
        let measured = self.utilization(stream).await?;
        let open = stream.open_shards().count() as u32;
        let target = u64::from(policy.target_utilization_percent);
        let now = self.now_ms();
        let stream_key = (stream.name.clone(), stream.created_ms);
        let mut decisions = Vec::new();

        let mut hot: Vec<(u32, u64)> = measured
            .iter()
            .copied()
            .filter(|(_, u)| *u >= target)
            .collect();
        hot.sort_by_key(|(_, utilization)| std::cmp::Reverse(*utilization));
        // Never more than double in one pass, never past the maximum.
        let budget = open.min(policy.max_shards.saturating_sub(open)) as usize;
        for (shard, utilization_percent) in hot.into_iter().take(budget) {
            let current = self.stream(&stream.name)?;
            let Some(meta) = current.shard(ShardId(shard)).filter(|s| s.is_open()) else {
                continue;
            };
            if meta.end_hash - meta.start_hash < 4 {
                continue;
            }
            let middle = meta.start_hash + (meta.end_hash - meta.start_hash) / 2 + 1;
            self.split_shard(&stream.name, ShardId(shard), &middle.to_string())
                .await?;
            // Finish the step now so the next split sees an ACTIVE stream.
            let after = self.stream(&stream.name)?;
            self.settle(&after).await?;
            tracing::info!(stream = %stream.name, shard = %ShardId(shard), utilization_percent, "scaler split a hot shard");
            self.count_decision(&stream.name, "split");
            decisions.push(ScalingDecision::Split {
                stream: stream.name.clone(),
                shard: ShardId(shard),
                utilization_percent,
            });
        }
        if !decisions.is_empty() {
            self.inner
                .scaler
                .lock()
                .last_scaled_ms
                .insert(stream_key, now);
            return Ok(decisions);
        }

        let last_scaled = self
            .inner
            .scaler
            .lock()
            .last_scaled_ms
            .get(&stream_key)
            .copied()
            .unwrap_or(stream.created_ms);
        let cooled = now.saturating_sub(last_scaled) >= policy.cooldown_secs.saturating_mul(1000);
        if open <= policy.min_shards || !cooled || measured.len() < open as usize {
            return Ok(decisions);
        }
        let by_id: HashMap<u32, u64> = measured.into_iter().collect();
        let mut shards: Vec<_> = stream.open_shards().collect();
        shards.sort_by_key(|s| s.start_hash);
        let cold_pair = shards.windows(2).find_map(|pair| {
            let combined = by_id.get(&pair[0].id)? + by_id.get(&pair[1].id)?;
            (combined * 2 < target && pair[0].end_hash.checked_add(1) == Some(pair[1].start_hash))
                .then_some((pair[0].id, pair[1].id, combined))
        });
        if let Some((first, second, utilization_percent)) = cold_pair {
            self.merge_shards(&stream.name, ShardId(first), ShardId(second))
                .await?;
            let after = self.stream(&stream.name)?;
            self.settle(&after).await?;
            tracing::info!(stream = %stream.name, shard = %ShardId(first), adjacent = %ShardId(second), utilization_percent, "scaler merged cold shards");
            self.inner
                .scaler
                .lock()
                .last_scaled_ms
                .insert(stream_key, now);
            self.count_decision(&stream.name, "merge");
            decisions.push(ScalingDecision::Merge {
                stream: stream.name.clone(),
                shard: ShardId(first),
                adjacent: ShardId(second),
                utilization_percent,
            });
        }
        Ok(decisions)
    }

    fn count_decision(&self, stream: &str, action: &str) {
        self.inner
            .metrics
            .scaling_decisions
            .get_or_create(&crate::metrics::ScalingLabels {
                stream: stream.to_owned(),
                action: action.to_owned(),
            })
            .inc();
    }

    pub(super) fn spawn_autoscaler(&self) {
        self.spawn_periodic(
            self.inner.config.autoscale_interval,
            "scaling",
            |broker| async move { broker.autoscale_pass().await },
        );
    }

    /// Sets or clears a stream's scaling policy.
    pub async fn set_scaling_policy(
        &self,
        name: &str,
        policy: Option<ScalingPolicy>,
    ) -> Result<(), BrokerError> {
        self.propose(sluice_meta::Command::SetScalingPolicy {
            name: name.to_owned(),
            policy,
        })
        .await
    }
}
