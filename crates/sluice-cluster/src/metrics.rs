//! The broker's metrics, named after the CloudWatch metrics of Kinesis where one exists
//! (IncomingRecords → `sluice_incoming_records_total`, PutRecords.Latency →
//! `sluice_put_records_latency_seconds`), labelled by stream, and by shard as well for the
//! shard-level metrics a stream has enabled with EnableEnhancedMonitoring.
//!
//! The data paths resolve a stream's series once per request ([`Metrics::for_stream`], a
//! cached set of handles, no allocation once the stream has been seen) and a shard's once
//! per shard batch ([`StreamMetrics::shard`]). Series of a deleted stream, and shard-level
//! series whose metric was disabled, are removed so that no stale gauge outlives them.

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sluice_types::ShardId;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    pub stream: String,
    /// `shardId-000000000000`, as AWS names the ShardId dimension's values.
    pub shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabels {
    pub stream: String,
    /// The consumer's name (AWS's ConsumerName dimension).
    pub consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    pub stream: String,
    /// `split` or `merge`.
    pub action: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Buckets of call latencies: 0.5 ms to about 8 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Buckets of fsync latencies: 50 µs to about 1.6 s.
fn fsync_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// The shard-level metrics of EnableEnhancedMonitoring, as a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardLevel(u8);

impl ShardLevel {
    pub const INCOMING_BYTES: ShardLevel = ShardLevel(1);
    pub const INCOMING_RECORDS: ShardLevel = ShardLevel(1 << 1);
    pub const OUTGOING_BYTES: ShardLevel = ShardLevel(1 << 2);
    pub const OUTGOING_RECORDS: ShardLevel = ShardLevel(1 << 3);
    pub const WRITE_THROUGHPUT_EXCEEDED: ShardLevel = ShardLevel(1 << 4);
    pub const READ_THROUGHPUT_EXCEEDED: ShardLevel = ShardLevel(1 << 5);
    pub const ITERATOR_AGE: ShardLevel = ShardLevel(1 << 6);

    /// The set a stream's `enhanced_metrics` (AWS's metric names) describe.
    pub fn of(names: &[String]) -> ShardLevel {
        let mut set = ShardLevel::default();
        for name in names {
            set.0 |= match name.as_str() {
                "IncomingBytes" => Self::INCOMING_BYTES.0,
                "IncomingRecords" => Self::INCOMING_RECORDS.0,
                "OutgoingBytes" => Self::OUTGOING_BYTES.0,
                "OutgoingRecords" => Self::OUTGOING_RECORDS.0,
                "WriteProvisionedThroughputExceeded" => Self::WRITE_THROUGHPUT_EXCEEDED.0,
                "ReadProvisionedThroughputExceeded" => Self::READ_THROUGHPUT_EXCEEDED.0,
                "IteratorAgeMilliseconds" => Self::ITERATOR_AGE.0,
                _ => 0,
            };
        }
        set
    }

    pub fn contains(self, other: ShardLevel) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Every series the broker updates on its data and control paths.
#[derive(Clone)]
pub struct Metrics {
    pub incoming_records: Family<StreamLabels, Counter>,
    pub incoming_bytes: Family<StreamLabels, Counter>,
    pub write_throughput_exceeded: Family<StreamLabels, Counter>,
    pub read_throughput_exceeded: Family<StreamLabels, Counter>,
    pub get_records_records: Family<StreamLabels, Counter>,
    pub get_records_bytes: Family<StreamLabels, Counter>,
    pub subscribe_to_shard_events: Family<StreamLabels, Counter>,
    pub scaling_decisions: Family<ScalingLabels, Counter>,
    pub put_record_success: Family<StreamLabels, Counter>,
    pub put_records_success: Family<StreamLabels, Counter>,
    pub put_records_failed_records: Family<StreamLabels, Counter>,
    pub put_records_throttled_records: Family<StreamLabels, Counter>,
    pub put_record_latency: HistogramFamily<StreamLabels>,
    pub put_records_latency: HistogramFamily<StreamLabels>,
    pub get_records_success: Family<StreamLabels, Counter>,
    pub get_records_latency: HistogramFamily<StreamLabels>,
    pub get_records_iterator_age: Family<StreamLabels, Gauge>,
    pub subscribe_to_shard_rate_exceeded: Family<ConsumerLabels, Counter>,
    pub subscribe_to_shard_millis_behind_latest: Family<ConsumerLabels, Gauge>,
    pub shard_incoming_bytes: Family<ShardLabels, Counter>,
    pub shard_incoming_records: Family<ShardLabels, Counter>,
    pub shard_outgoing_bytes: Family<ShardLabels, Counter>,
    pub shard_outgoing_records: Family<ShardLabels, Counter>,
    pub shard_write_throughput_exceeded: Family<ShardLabels, Counter>,
    pub shard_read_throughput_exceeded: Family<ShardLabels, Counter>,
    pub shard_iterator_age: Family<ShardLabels, Gauge>,
    /// One observation per fsync of a shard's record log (the node's disks, no labels).
    pub fsync_duration: Histogram,
    pub segments: Family<StreamLabels, Gauge>,
    pub disk_bytes: Family<StreamLabels, Gauge>,
    /// Raft, refreshed every few seconds (see `Broker::refresh_raft_gauges`).
    pub raft: RaftGauges,
    /// Handles already resolved, by stream name.
    streams: Arc<RwLock<HashMap<String, Arc<StreamMetrics>>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let histograms = || HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
        Metrics {
            incoming_records: Family::default(),
            incoming_bytes: Family::default(),
            write_throughput_exceeded: Family::default(),
            read_throughput_exceeded: Family::default(),
            get_records_records: Family::default(),
            get_records_bytes: Family::default(),
            subscribe_to_shard_events: Family::default(),
            scaling_decisions: Family::default(),
            put_record_success: Family::default(),
            put_records_success: Family::default(),
            put_records_failed_records: Family::default(),
            put_records_throttled_records: Family::default(),
            put_record_latency: histograms(),
            put_records_latency: histograms(),
            get_records_success: Family::default(),
            get_records_latency: histograms(),
            get_records_iterator_age: Family::default(),
            subscribe_to_shard_rate_exceeded: Family::default(),
            subscribe_to_shard_millis_behind_latest: Family::default(),
            shard_incoming_bytes: Family::default(),
            shard_incoming_records: Family::default(),
            shard_outgoing_bytes: Family::default(),
            shard_outgoing_records: Family::default(),
            shard_write_throughput_exceeded: Family::default(),
            shard_read_throughput_exceeded: Family::default(),
            shard_iterator_age: Family::default(),
            fsync_duration: fsync_histogram(),
            segments: Family::default(),
            disk_bytes: Family::default(),
            raft: RaftGauges::default(),
            streams: Arc::default(),
        }
    }
}

impl Metrics {
    /// Registers every series in `registry`, under the `sluice_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let sluice = registry.sub_registry_with_prefix("sluice");
        sluice.register(
            "incoming_records",
            "Records successfully put (IncomingRecords)",
            self.incoming_records.clone(),
        );
        sluice.register(
            "incoming_bytes",
            "Bytes successfully put, data and partition keys (IncomingBytes)",
            self.incoming_bytes.clone(),
        );
        sluice.register(
            "write_provisioned_throughput_exceeded",
            "Records refused by a shard's write limits (WriteProvisionedThroughputExceeded)",
            self.write_throughput_exceeded.clone(),
        );
        sluice.register(
            "read_provisioned_throughput_exceeded",
            "GetRecords calls refused by a shard's read limits (ReadProvisionedThroughputExceeded)",
            self.read_throughput_exceeded.clone(),
        );
        sluice.register(
            "get_records_records",
            "Records returned by GetRecords (GetRecords.Records)",
            self.get_records_records.clone(),
        );
        sluice.register(
            "get_records_bytes",
            "Bytes returned by GetRecords (GetRecords.Bytes)",
            self.get_records_bytes.clone(),
        );
        sluice.register(
            "subscribe_to_shard_events",
            "SubscribeToShard events pushed (SubscribeToShardEvent)",
            self.subscribe_to_shard_events.clone(),
        );
        sluice.register(
            "scaling_decisions",
            "Shards split or merged by the scaler",
            self.scaling_decisions.clone(),
        );
        sluice.register(
            "put_record_success",
            "PutRecord calls that wrote their record (PutRecord.Success)",
            self.put_record_success.clone(),
        );
        sluice.register(
            "put_records_success",
            "PutRecords calls that wrote at least one record (PutRecords.Success)",
            self.put_records_success.clone(),
        );
        sluice.register(
            "put_records_failed_records",
            "Records of PutRecords calls refused by an internal failure (PutRecords.FailedRecords)",
            self.put_records_failed_records.clone(),
        );
        sluice.register(
            "put_records_throttled_records",
            "Records of PutRecords calls refused by a shard's write limits (PutRecords.ThrottledRecords)",
            self.put_records_throttled_records.clone(),
        );
        sluice.register_with_unit(
            "put_record_latency",
            "Time the broker took per PutRecord call (PutRecord.Latency)",
            Unit::Seconds,
            self.put_record_latency.clone(),
        );
        sluice.register_with_unit(
            "put_records_latency",
            "Time the broker took per PutRecords call (PutRecords.Latency)",
            Unit::Seconds,
            self.put_records_latency.clone(),
        );
        sluice.register(
            "get_records_success",
            "GetRecords calls answered (GetRecords.Success)",
            self.get_records_success.clone(),
        );
        sluice.register_with_unit(
            "get_records_latency",
            "Time the broker took per GetRecords call (GetRecords.Latency)",
            Unit::Seconds,
            self.get_records_latency.clone(),
        );
        sluice.register_with_unit(
            "get_records_iterator_age",
            "Age of the last record of the stream's latest GetRecords call, 0 when it reached the tip (GetRecords.IteratorAgeMilliseconds)",
            Unit::Other("milliseconds".to_owned()),
            self.get_records_iterator_age.clone(),
        );
        sluice.register(
            "subscribe_to_shard_rate_exceeded",
            "SubscribeToShard calls refused because the consumer subscribed to the shard less than 5 s earlier (SubscribeToShard.RateExceeded)",
            self.subscribe_to_shard_rate_exceeded.clone(),
        );
        sluice.register(
            "subscribe_to_shard_event_millis_behind_latest",
            "MillisBehindLatest of the consumer's latest SubscribeToShard event (SubscribeToShardEvent.MillisBehindLatest)",
            self.subscribe_to_shard_millis_behind_latest.clone(),
        );
        sluice.register(
            "shard_incoming_bytes",
            "Bytes put into the shard (shard-level IncomingBytes, enhanced monitoring)",
            self.shard_incoming_bytes.clone(),
        );
        sluice.register(
            "shard_incoming_records",
            "Records put into the shard (shard-level IncomingRecords, enhanced monitoring)",
            self.shard_incoming_records.clone(),
        );
        sluice.register(
            "shard_outgoing_bytes",
            "Bytes GetRecords returned from the shard (shard-level OutgoingBytes, enhanced monitoring)",
            self.shard_outgoing_bytes.clone(),
        );
        sluice.register(
            "shard_outgoing_records",
            "Records GetRecords returned from the shard (shard-level OutgoingRecords, enhanced monitoring)",
            self.shard_outgoing_records.clone(),
        );
        sluice.register(
            "shard_write_provisioned_throughput_exceeded",
            "Records refused by the shard's write limits (shard-level WriteProvisionedThroughputExceeded, enhanced monitoring)",
            self.shard_write_throughput_exceeded.clone(),
        );
        sluice.register(
            "shard_read_provisioned_throughput_exceeded",
            "GetRecords calls refused by the shard's read limits (shard-level ReadProvisionedThroughputExceeded, enhanced monitoring)",
            self.shard_read_throughput_exceeded.clone(),
        );
        sluice.register_with_unit(
            "shard_iterator_age",
            "Age of the last record of the shard's latest GetRecords call (shard-level IteratorAgeMilliseconds, enhanced monitoring)",
            Unit::Other("milliseconds".to_owned()),
            self.shard_iterator_age.clone(),
        );
        sluice.register_with_unit(
            "fsync_duration",
            "Time of each fsync of a shard's record log (behind its Raft log, at most a second after the writes it covers)",
            Unit::Seconds,
            self.fsync_duration.clone(),
        );
        self.raft.register(sluice);
        sluice.register(
            "segments",
            "Segment files of the stream's shard logs on this node (updated by the retention pass)",
            self.segments.clone(),
        );
        sluice.register_with_unit(
            "disk",
            "Bytes of the stream's shard logs on disk, indexes included (updated by the retention pass)",
            Unit::Bytes,
            self.disk_bytes.clone(),
        );
    }

    pub fn stream(stream: &str) -> StreamLabels {
        StreamLabels {
            stream: stream.to_owned(),
        }
    }

    /// The stream's series, resolved once and cached.
    pub fn for_stream(&self, stream: &str) -> Arc<StreamMetrics> {
        if let Some(found) = self.streams.read().get(stream) {
            return Arc::clone(found);
        }
        let resolved = Arc::new(StreamMetrics::resolve(self, stream));
        Arc::clone(
            self.streams
                .write()
                .entry(stream.to_owned())
                .or_insert(resolved),
        )
    }

    /// Removes the shard-level series of metrics `enabled` no longer holds.
    pub fn retain_shard_metrics(&self, stream: &str, enabled: ShardLevel) {
        let Some(found) = self.streams.read().get(stream).cloned() else {
            return;
        };
        let mut shards = found.shards.lock();
        for (shard, handles) in shards.iter_mut() {
            let labels = found.shard_labels(*shard);
            handles.retain(self, &labels, enabled);
        }
    }

    /// Removes every series of a stream (it was deleted).
    pub fn forget_stream(&self, stream: &str) {
        let Some(found) = self.streams.write().remove(stream) else {
            return;
        };
        let labels = Metrics::stream(stream);
        for family in [
            &self.incoming_records,
            &self.incoming_bytes,
            &self.write_throughput_exceeded,
            &self.read_throughput_exceeded,
            &self.get_records_records,
            &self.get_records_bytes,
            &self.subscribe_to_shard_events,
            &self.put_record_success,
            &self.put_records_success,
            &self.put_records_failed_records,
            &self.put_records_throttled_records,
            &self.get_records_success,
        ] {
            family.remove(&labels);
        }
        for family in [
            &self.put_record_latency,
            &self.put_records_latency,
            &self.get_records_latency,
        ] {
            family.remove(&labels);
        }
        for family in [
            &self.get_records_iterator_age,
            &self.segments,
            &self.disk_bytes,
        ] {
            family.remove(&labels);
        }
        for consumer in found.consumers.lock().drain(..) {
            let labels = ConsumerLabels {
                stream: stream.to_owned(),
                consumer,
            };
            self.subscribe_to_shard_rate_exceeded.remove(&labels);
            self.subscribe_to_shard_millis_behind_latest.remove(&labels);
        }
        let mut shards = found.shards.lock();
        for (shard, handles) in shards.iter_mut() {
            let labels = found.shard_labels(*shard);
            handles.retain(self, &labels, ShardLevel::default());
        }
        self.scaling_decisions.remove(&ScalingLabels {
            stream: stream.to_owned(),
            action: "split".to_owned(),
        });
        self.scaling_decisions.remove(&ScalingLabels {
            stream: stream.to_owned(),
            action: "merge".to_owned(),
        });
    }
}

/// One stream's series, resolved once: updating them takes no lookup and no allocation.
pub struct StreamMetrics {
    stream: String,
    families: Metrics,
    pub incoming_records: Counter,
    pub incoming_bytes: Counter,
    pub write_throughput_exceeded: Counter,
    pub read_throughput_exceeded: Counter,
    pub get_records_records: Counter,
    pub get_records_bytes: Counter,
    pub subscribe_to_shard_events: Counter,
    pub put_record_success: Counter,
    pub put_records_success: Counter,
    pub put_records_failed_records: Counter,
    pub put_records_throttled_records: Counter,
    pub put_record_latency: Histogram,
    pub put_records_latency: Histogram,
    pub get_records_success: Counter,
    pub get_records_latency: Histogram,
    pub get_records_iterator_age: Gauge,
    pub segments: Gauge,
    pub disk_bytes: Gauge,
    /// Consumers whose series exist, to remove them with the stream.
    consumers: Mutex<Vec<String>>,
    shards: Mutex<HashMap<u32, ShardMetrics>>,
}

impl StreamMetrics {
    fn resolve(metrics: &Metrics, stream: &str) -> StreamMetrics {
        let labels = Metrics::stream(stream);
        // Exported from 0, so that the first decision shows in `increase()`.
        for action in ["split", "merge"] {
            let _created = metrics.scaling_decisions.get_or_create(&ScalingLabels {
                stream: stream.to_owned(),
                action: action.to_owned(),
            });
        }
        StreamMetrics {
            stream: stream.to_owned(),
            // Without the cache of stream handles: no reference cycle through it.
            families: Metrics {
                streams: Arc::default(),
                ..metrics.clone()
            },
            incoming_records: metrics.incoming_records.get_or_create(&labels).clone(),
            incoming_bytes: metrics.incoming_bytes.get_or_create(&labels).clone(),
            write_throughput_exceeded: metrics
                .write_throughput_exceeded
                .get_or_create(&labels)
                .clone(),
            read_throughput_exceeded: metrics
                .read_throughput_exceeded
                .get_or_create(&labels)
                .clone(),
            get_records_records: metrics.get_records_records.get_or_create(&labels).clone(),
            get_records_bytes: metrics.get_records_bytes.get_or_create(&labels).clone(),
            subscribe_to_shard_events: metrics
                .subscribe_to_shard_events
                .get_or_create(&labels)
                .clone(),
            put_record_success: metrics.put_record_success.get_or_create(&labels).clone(),
            put_records_success: metrics.put_records_success.get_or_create(&labels).clone(),
            put_records_failed_records: metrics
                .put_records_failed_records
                .get_or_create(&labels)
                .clone(),
            put_records_throttled_records: metrics
                .put_records_throttled_records
                .get_or_create(&labels)
                .clone(),
            put_record_latency: metrics.put_record_latency.get_or_create(&labels).clone(),
            put_records_latency: metrics.put_records_latency.get_or_create(&labels).clone(),
            get_records_success: metrics.get_records_success.get_or_create(&labels).clone(),
            get_records_latency: metrics.get_records_latency.get_or_create(&labels).clone(),
            get_records_iterator_age: metrics
                .get_records_iterator_age
                .get_or_create(&labels)
                .clone(),
            segments: metrics.segments.get_or_create(&labels).clone(),
            disk_bytes: metrics.disk_bytes.get_or_create(&labels).clone(),
            consumers: Mutex::new(Vec::new()),
            shards: Mutex::new(HashMap::new()),
        }
    }

    fn shard_labels(&self, shard: u32) -> ShardLabels {
        ShardLabels {
            stream: self.stream.clone(),
            shard: ShardId(shard).to_string(),
        }
    }

    /// The shard-level series `enabled` asks for (none unless enhanced monitoring is on).
    pub fn shard(&self, shard: u32, enabled: ShardLevel) -> ShardMetrics {
        if enabled.is_empty() {
            return ShardMetrics::default();
        }
        let mut shards = self.shards.lock();
        let handles = shards.entry(shard).or_default();
        handles.fill(&self.families, || self.shard_labels(shard), enabled);
        handles.masked(enabled)
    }

    /// A consumer's SubscribeToShard series.
    pub fn consumer(&self, consumer: &str) -> ConsumerMetrics {
        let labels = ConsumerLabels {
            stream: self.stream.clone(),
            consumer: consumer.to_owned(),
        };
        let mut consumers = self.consumers.lock();
        if !consumers.iter().any(|c| c == consumer) {
            consumers.push(consumer.to_owned());
        }
        ConsumerMetrics {
            rate_exceeded: self
                .families
                .subscribe_to_shard_rate_exceeded
                .get_or_create(&labels)
                .clone(),
            millis_behind_latest: self
                .families
                .subscribe_to_shard_millis_behind_latest
                .get_or_create(&labels)
                .clone(),
        }
    }
}

/// One consumer's SubscribeToShard series.
pub struct ConsumerMetrics {
    pub rate_exceeded: Counter,
    pub millis_behind_latest: Gauge,
}

/// One shard's enabled series; a disabled one is `None`.
#[derive(Clone, Default)]
pub struct ShardMetrics {
    pub incoming_bytes: Option<Counter>,
    pub incoming_records: Option<Counter>,
    pub outgoing_bytes: Option<Counter>,
    pub outgoing_records: Option<Counter>,
    pub write_throughput_exceeded: Option<Counter>,
    pub read_throughput_exceeded: Option<Counter>,
    pub iterator_age: Option<Gauge>,
}

impl ShardMetrics {
    /// The counter handles with their families and the level that turns each on.
    fn counter_slots<'a>(
        &'a mut self,
        families: &'a Metrics,
    ) -> [(
        &'a mut Option<Counter>,
        &'a Family<ShardLabels, Counter>,
        ShardLevel,
    ); 6] {
        [
            (
                &mut self.incoming_bytes,
                &families.shard_incoming_bytes,
                ShardLevel::INCOMING_BYTES,
            ),
            (
                &mut self.incoming_records,
                &families.shard_incoming_records,
                ShardLevel::INCOMING_RECORDS,
            ),
            (
                &mut self.outgoing_bytes,
                &families.shard_outgoing_bytes,
                ShardLevel::OUTGOING_BYTES,
            ),
            (
                &mut self.outgoing_records,
                &families.shard_outgoing_records,
                ShardLevel::OUTGOING_RECORDS,
            ),
            (
                &mut self.write_throughput_exceeded,
                &families.shard_write_throughput_exceeded,
                ShardLevel::WRITE_THROUGHPUT_EXCEEDED,
            ),
            (
                &mut self.read_throughput_exceeded,
                &families.shard_read_throughput_exceeded,
                ShardLevel::READ_THROUGHPUT_EXCEEDED,
            ),
        ]
    }

    /// Creates the series `enabled` holds and this handle set lacks.
    fn fill(&mut self, families: &Metrics, labels: impl Fn() -> ShardLabels, enabled: ShardLevel) {
        for (slot, family, level) in self.counter_slots(families) {
            if enabled.contains(level) && slot.is_none() {
                *slot = Some(family.get_or_create(&labels()).clone());
            }
        }
        if enabled.contains(ShardLevel::ITERATOR_AGE) && self.iterator_age.is_none() {
            self.iterator_age = Some(families.shard_iterator_age.get_or_create(&labels()).clone());
        }
    }

    /// These handles, without the ones `enabled` does not hold.
    fn masked(&self, enabled: ShardLevel) -> ShardMetrics {
        let keep = |level: ShardLevel, slot: &Option<Counter>| {
            slot.clone().filter(|_| enabled.contains(level))
        };
        ShardMetrics {
            incoming_bytes: keep(ShardLevel::INCOMING_BYTES, &self.incoming_bytes),
            incoming_records: keep(ShardLevel::INCOMING_RECORDS, &self.incoming_records),
            outgoing_bytes: keep(ShardLevel::OUTGOING_BYTES, &self.outgoing_bytes),
            outgoing_records: keep(ShardLevel::OUTGOING_RECORDS, &self.outgoing_records),
            write_throughput_exceeded: keep(
                ShardLevel::WRITE_THROUGHPUT_EXCEEDED,
                &self.write_throughput_exceeded,
            ),
            read_throughput_exceeded: keep(
                ShardLevel::READ_THROUGHPUT_EXCEEDED,
                &self.read_throughput_exceeded,
            ),
            iterator_age: self
                .iterator_age
                .clone()
                .filter(|_| enabled.contains(ShardLevel::ITERATOR_AGE)),
        }
    }

    /// Drops (handles and exported series) what `enabled` does not hold.
    fn retain(&mut self, families: &Metrics, labels: &ShardLabels, enabled: ShardLevel) {
        for (slot, family, level) in self.counter_slots(families) {
            if !enabled.contains(level) && slot.take().is_some() {
                family.remove(labels);
            }
        }
        if !enabled.contains(ShardLevel::ITERATOR_AGE) && self.iterator_age.take().is_some() {
            families.shard_iterator_age.remove(labels);
        }
    }
}

/// A count (milliseconds, bytes, segments) as a gauge value, saturating.
pub fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn shard_series_exist_only_for_enabled_metrics() {
        let metrics = Metrics::default();
        let stream = metrics.for_stream("orders");
        let none = stream.shard(0, ShardLevel::default());
        assert!(none.incoming_bytes.is_none());
        assert!(!exported(&metrics).contains("sluice_shard_"));

        let enabled = ShardLevel::of(&["IncomingBytes".to_owned()]);
        let handles = stream.shard(0, enabled);
        handles.incoming_bytes.as_ref().expect("enabled").inc_by(7);
        assert!(handles.incoming_records.is_none());
        let text = exported(&metrics);
        assert!(
            text.contains(
                "sluice_shard_incoming_bytes_total{stream=\"orders\",shard=\"shardId-000000000000\"} 7"
            ),
            "{text}"
        );
        assert!(
            !text.contains("sluice_shard_incoming_records_total"),
            "{text}"
        );

        metrics.retain_shard_metrics("orders", ShardLevel::default());
        assert!(!exported(&metrics).contains("sluice_shard_"));
        assert!(
            stream
                .shard(0, ShardLevel::default())
                .incoming_bytes
                .is_none()
        );
    }

    #[test]
    fn forgetting_a_stream_removes_its_series() {
        let metrics = Metrics::default();
        let stream = metrics.for_stream("gone");
        stream.get_records_iterator_age.set(5000);
        stream.consumer("app").millis_behind_latest.set(3);
        stream
            .shard(1, ShardLevel::of(&["IteratorAgeMilliseconds".to_owned()]))
            .iterator_age
            .expect("enabled")
            .set(5000);
        assert!(exported(&metrics).contains("stream=\"gone\""));
        metrics.forget_stream("gone");
        let text = exported(&metrics);
        assert!(!text.contains("stream=\"gone\""), "{text}");
        // A stream created again under the name starts from fresh series.
        assert_eq!(metrics.for_stream("gone").get_records_iterator_age.get(), 0);
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        let metrics = Metrics::default();
        let stream = metrics.for_stream("s");
        stream.put_records_latency.observe(0.001);
        stream.get_records_iterator_age.set(1);
        let text = exported(&metrics);
        for name in [
            "sluice_put_record_success_total{stream=\"s\"} 0",
            "sluice_put_records_latency_seconds_bucket{",
            "sluice_get_records_iterator_age_milliseconds{stream=\"s\"} 1",
            "sluice_fsync_duration_seconds_count 0",
            "sluice_disk_bytes{stream=\"s\"} 0",
            "sluice_segments{stream=\"s\"} 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
    }
}

/// The state of this node's Raft groups, as gauges.
#[derive(Clone, Default)]
pub struct RaftGauges {
    /// 1 while this node knows a metadata leader.
    pub metadata_leader_known: Gauge,
    /// The metadata group's current term as this node sees it.
    pub metadata_term: Gauge,
    /// Shard replicas hosted here, and how many of them lead their group.
    pub shard_replicas: Gauge,
    pub shard_leaders: Gauge,
    /// Hosted shard groups that know no leader.
    pub shards_leaderless: Gauge,
    /// Shard groups led here in which some replica is unreachable or more than
    /// `UNDER_REPLICATED_LAG` entries behind.
    pub shards_under_replicated: Gauge,
    /// The largest lag, in entries, of a follower behind its leader among the groups led here.
    pub replication_max_lag: Gauge,
    /// The metadata group's commit lag on this node (see `sluice_replication::commit_lag`).
    pub metadata_commit_lag: Gauge,
    /// Per shard group hosted here: its term, whether this node leads it, and its commit
    /// lag on this node. Only groups hosted here have series ([`RaftGauges::set_groups`]).
    pub shard_term: Family<ShardLabels, Gauge>,
    pub shard_is_leader: Family<ShardLabels, Gauge>,
    pub shard_commit_lag: Family<ShardLabels, Gauge>,
    /// The groups that have series now, so that those no longer hosted lose theirs.
    groups: Arc<Mutex<HashSet<ShardLabels>>>,
    /// Replica moves in the metadata now (the cluster's, as this node knows it).
    pub moves_in_progress: Gauge,
    /// Nodes being drained (decommissioned), as this node knows it.
    pub nodes_draining: Gauge,
    /// Moves this node finished as the leader of their shard group (`FinishMove`), and
    /// those it abandoned (`CancelMove`).
    pub moves_finished: Counter,
    pub moves_cancelled: Counter,
}

/// One shard group's state on this node, for the per-group series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub stream: String,
    pub shard: u32,
    pub term: u64,
    pub leads: bool,
    pub commit_lag: u64,
}

/// A follower this many entries behind makes its shard under-replicated.
pub const UNDER_REPLICATED_LAG: u64 = 1_000;

impl RaftGauges {
    /// Sets the per-group series to `groups` (every group hosted here) and removes those of
    /// groups no longer hosted.
    pub fn set_groups(&self, groups: &[GroupState]) {
        let mut known = self.groups.lock();
        let mut now = HashSet::with_capacity(groups.len());
        for group in groups {
            let labels = ShardLabels {
                stream: group.stream.clone(),
                shard: ShardId(group.shard).to_string(),
            };
            self.shard_term
                .get_or_create(&labels)
                .set(i64::try_from(group.term).unwrap_or(i64::MAX));
            self.shard_is_leader
                .get_or_create(&labels)
                .set(i64::from(group.leads));
            self.shard_commit_lag
                .get_or_create(&labels)
                .set(i64::try_from(group.commit_lag).unwrap_or(i64::MAX));
            now.insert(labels);
        }
        for gone in known.difference(&now) {
            self.shard_term.remove(gone);
            self.shard_is_leader.remove(gone);
            self.shard_commit_lag.remove(gone);
        }
        *known = now;
    }

    fn register(&self, sluice: &mut Registry) {
        sluice.register(
            "raft_metadata_leader_known",
            "1 while this node knows a leader of the metadata group",
            self.metadata_leader_known.clone(),
        );
        sluice.register(
            "raft_metadata_term",
            "Current term of the metadata group on this node",
            self.metadata_term.clone(),
        );
        sluice.register(
            "raft_shard_replicas",
            "Shard replicas hosted on this node",
            self.shard_replicas.clone(),
        );
        sluice.register(
            "raft_shard_leaders",
            "Shard groups this node leads",
            self.shard_leaders.clone(),
        );
        sluice.register(
            "raft_shards_leaderless",
            "Shard groups hosted here that know no leader",
            self.shards_leaderless.clone(),
        );
        sluice.register(
            "raft_shards_under_replicated",
            "Shard groups led here with a replica unreachable or more than 1000 entries behind",
            self.shards_under_replicated.clone(),
        );
        sluice.register(
            "raft_metadata_commit_lag_entries",
            "Metadata group entries not yet committed (on its leader) or committed but not applied (elsewhere), on this node",
            self.metadata_commit_lag.clone(),
        );
        sluice.register(
            "raft_shard_term",
            "Current term of each shard group hosted on this node",
            self.shard_term.clone(),
        );
        sluice.register(
            "raft_shard_is_leader",
            "1 for each shard group hosted here that this node leads, 0 for the others",
            self.shard_is_leader.clone(),
        );
        sluice.register(
            "raft_shard_commit_lag_entries",
            "Per shard group hosted here: entries not yet committed (on its leader) or committed but not applied (on a follower)",
            self.shard_commit_lag.clone(),
        );
        sluice.register(
            "rebalance_moves_in_progress",
            "Replica moves in progress in the cluster (from the metadata this node applied)",
            self.moves_in_progress.clone(),
        );
        sluice.register(
            "rebalance_nodes_draining",
            "Nodes being decommissioned (from the metadata this node applied)",
            self.nodes_draining.clone(),
        );
        sluice.register(
            "rebalance_moves_finished",
            "Replica moves this node finished as the leader of their shard group",
            self.moves_finished.clone(),
        );
        sluice.register(
            "rebalance_moves_cancelled",
            "Replica moves this node abandoned as the leader of their shard group (target gone or stalled)",
            self.moves_cancelled.clone(),
        );
        sluice.register(
            "raft_replication_max_lag_entries",
            "Largest lag, in Raft entries, of a follower behind its leader among the groups led here",
            self.replication_max_lag.clone(),
        );
    }
}
