//! The gateway's own series: how long each Kinesis request took, by operation and HTTP
//! status (`sluice_gateway_request_duration_seconds{op,status}`), measured once per request
//! in the endpoint. The broker's CloudWatch-named series live in `sluice-cluster`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The operation's name (`PutRecords`), or `unknown` for a target that names none.
    pub op: &'static str,
    /// The HTTP status answered; SubscribeToShard's is its initial response's.
    pub status: u16,
}

/// The gateway's series; cheap to clone (handles share their values).
#[derive(Clone)]
pub struct GatewayMetrics {
    request_duration: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

/// Buckets of request latencies: 0.5 ms to about 8 s.
fn request_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        GatewayMetrics {
            request_duration: Family::new_with_constructor(request_histogram),
        }
    }
}

impl GatewayMetrics {
    /// Registers every series in `registry`, under the `sluice_gateway_` prefix.
    pub fn register(&self, registry: &mut Registry) {
        registry
            .sub_registry_with_prefix("sluice_gateway")
            .register_with_unit(
                "request_duration",
                "Time from a Kinesis request's arrival to its answer, by operation and HTTP status",
                Unit::Seconds,
                self.request_duration.clone(),
            );
    }

    /// Records one answered request (labels are static: nothing is allocated).
    pub(crate) fn observe(&self, op: &'static str, status: http::StatusCode, elapsed: Duration) {
        self.request_duration
            .get_or_create(&RequestLabels {
                op,
                status: status.as_u16(),
            })
            .observe(elapsed.as_secs_f64());
    }
}
