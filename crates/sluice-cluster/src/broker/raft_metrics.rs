//! The per-group Raft series: for each shard group hosted on this node, its term, whether
//! this node leads it and its commit lag here; and the metadata group's commit lag. Refreshed
//! with the other Raft gauges ([`Broker::refresh_raft_gauges`]); a group no longer hosted
//! loses its series, so their number stays that of the groups hosted here.

use super::Broker;
use crate::metrics::GroupState;
use openraft::async_runtime::WatchReceiver;

impl Broker {
    /// Sets the per-group series from the groups hosted here now.
    pub(super) fn refresh_group_gauges(&self) {
        let gauges = &self.inner.metrics.raft;
        gauges
            .metadata_commit_lag
            .set(i64::try_from(self.inner.meta.commit_lag()).unwrap_or(i64::MAX));
        let groups: Vec<GroupState> = self
            .inner
            .replicas
            .read()
            .iter()
            .map(|((stream, _created_ms, shard), replica)| {
                let watch = replica.raft().metrics();
                let metrics = watch.borrow_watched();
                GroupState {
                    stream: stream.clone(),
                    shard: *shard,
                    term: metrics.current_term,
                    leads: metrics.current_leader == Some(metrics.id),
                    commit_lag: sluice_replication::commit_lag(&metrics),
                }
            })
            .collect();
        gauges.set_groups(&groups);
    }
}
