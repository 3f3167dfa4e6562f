//! The broker's metrics, named after the CloudWatch metrics of Kinesis where one exists
//! (IncomingRecords → `sluice_incoming_records_total`), labelled by stream.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    pub stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScalingLabels {
    pub stream: String,
    /// `split` or `merge`.
    pub action: String,
}

/// Counters the broker updates on its data and control paths.
#[derive(Clone, Default)]
pub struct Metrics {
    pub incoming_records: Family<StreamLabels, Counter>,
    pub incoming_bytes: Family<StreamLabels, Counter>,
    pub write_throughput_exceeded: Family<StreamLabels, Counter>,
    pub read_throughput_exceeded: Family<StreamLabels, Counter>,
    pub get_records_records: Family<StreamLabels, Counter>,
    pub get_records_bytes: Family<StreamLabels, Counter>,
    pub subscribe_to_shard_events: Family<StreamLabels, Counter>,
    pub scaling_decisions: Family<ScalingLabels, Counter>,
}

impl Metrics {
    /// Registers every series in `registry`.
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
    }

    pub fn stream(stream: &str) -> StreamLabels {
        StreamLabels {
            stream: stream.to_owned(),
        }
    }
}
