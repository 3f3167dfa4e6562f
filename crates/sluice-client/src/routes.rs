//! Which node to send a record to: the open shard whose hash key range holds the record's
//! hash, and that shard's leader.

use crate::Error;
use sluice_proto::v1 as pb;
use std::collections::HashMap;

/// One open shard and where its writes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRoute {
    pub shard_id: String,
    pub starting_hash_key: u128,
    pub ending_hash_key: u128,
    /// The gRPC address of its leader; `None` while the answering node knew none (any
    /// node takes the write then).
    pub leader: Option<String>,
    /// The leader's epoch (the shard group's Raft term) as the answering node knew it; 0
    /// when it knew none.
    pub leader_epoch: u64,
}

/// The open shards of a stream, by hash key.
#[derive(Debug, Clone, Default)]
pub struct StreamRoutes {
    /// Sorted by starting hash key; the open shards cover the whole key space.
    shards: Vec<ShardRoute>,
}

fn hash_key(text: &str) -> Result<u128, Error> {
    text.parse()
        .map_err(|_| Error::InvalidArgument(format!("hash key {text:?} is not a 128-bit number")))
}

impl StreamRoutes {
    /// Routes from a stream's description and the cluster status of a node.
    pub fn new(
        stream: &pb::StreamDescription,
        status: &pb::GetClusterStatusResponse,
    ) -> Result<StreamRoutes, Error> {
        let addresses: HashMap<u64, &str> = status
            .nodes
            .iter()
            .map(|n| (n.id, n.grpc_address.as_str()))
            .collect();
        let leaders: HashMap<&str, (u64, u64)> = status
            .shards
            .iter()
            .filter(|p| p.stream_name == stream.stream_name && p.leader != 0)
            .map(|p| (p.shard_id.as_str(), (p.leader, p.leader_epoch)))
            .collect();
        let mut shards = stream
            .shards
            .iter()
            .filter(|s| s.ending_sequence_number.is_none())
            .map(|s| {
                let leader = leaders.get(s.shard_id.as_str()).and_then(|(id, epoch)| {
                    addresses
                        .get(id)
                        .map(|address| ((*address).to_owned(), *epoch))
                });
                Ok(ShardRoute {
                    shard_id: s.shard_id.clone(),
                    starting_hash_key: hash_key(&s.starting_hash_key)?,
                    ending_hash_key: hash_key(&s.ending_hash_key)?,
                    leader_epoch: leader.as_ref().map_or(0, |(_, epoch)| *epoch),
                    leader: leader.map(|(address, _)| address),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        shards.sort_by_key(|s| s.starting_hash_key);
        Ok(StreamRoutes { shards })
    }

    /// Keeps the leaders of `older` routes where this answer names a leader of an older
    /// epoch (a node that has not yet heard of an election). An answer naming no leader
    /// stands: writes then go through the node the client was given, which forwards them.
    pub fn keep_newer_leaders(&mut self, older: &StreamRoutes) {
        for shard in self.shards.iter_mut().filter(|s| s.leader.is_some()) {
            let known = older.shards.iter().find(|o| o.shard_id == shard.shard_id);
            if let Some(known) = known.filter(|k| k.leader_epoch > shard.leader_epoch) {
                shard.leader = known.leader.clone();
                shard.leader_epoch = known.leader_epoch;
            }
        }
    }

    /// The open shard a record with this partition key (or explicit hash key) goes to.
    pub fn shard_for(
        &self,
        partition_key: &str,
        explicit_hash_key: Option<u128>,
    ) -> Option<&ShardRoute> {
        let hash =
            explicit_hash_key.unwrap_or_else(|| sluice_types::partition_key_hash(partition_key));
        let index = self.shards.partition_point(|s| s.ending_hash_key < hash);
        self.shards
            .get(index)
            .filter(|s| s.starting_hash_key <= hash)
    }

    /// Every open shard, by starting hash key.
    pub fn shards(&self) -> &[ShardRoute] {
        &self.shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, start: u128, end: u128) -> pb::ShardDescription {
        pb::ShardDescription {
            shard_id: id.to_owned(),
            starting_hash_key: start.to_string(),
            ending_hash_key: end.to_string(),
            ..Default::default()
        }
    }

    #[test]
    fn records_go_to_the_open_shard_holding_their_hash_and_its_leader() {
        let half = u128::MAX / 2;
        let mut closed = shard("shardId-000000000000", 0, u128::MAX);
        closed.ending_sequence_number = Some("1".to_owned());
        let stream = pb::StreamDescription {
            stream_name: "s".to_owned(),
            shards: vec![
                closed,
                shard("shardId-000000000002", half + 1, u128::MAX),
                shard("shardId-000000000001", 0, half),
            ],
            ..Default::default()
        };
        let status = pb::GetClusterStatusResponse {
            nodes: vec![pb::ClusterNode {
                id: 2,
                grpc_address: "10.0.0.2:50051".to_owned(),
                ..Default::default()
            }],
            shards: vec![pb::ShardPlacement {
                stream_name: "s".to_owned(),
                shard_id: "shardId-000000000001".to_owned(),
                leader: 2,
                leader_epoch: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let routes = StreamRoutes::new(&stream, &status).unwrap();
        assert_eq!(routes.shards()[0].leader_epoch, 5);
        // A later answer from a node that has not heard of that election yet.
        let mut lagging = status.clone();
        lagging.nodes.push(pb::ClusterNode {
            id: 3,
            grpc_address: "10.0.0.3:50051".to_owned(),
            ..Default::default()
        });
        lagging.shards[0].leader = 3;
        lagging.shards[0].leader_epoch = 4;
        let mut merged = StreamRoutes::new(&stream, &lagging).unwrap();
        merged.keep_newer_leaders(&routes);
        assert_eq!(merged.shards()[0].leader.as_deref(), Some("10.0.0.2:50051"));
        // A newer election wins over what was known.
        lagging.shards[0].leader_epoch = 6;
        let mut newer = StreamRoutes::new(&stream, &lagging).unwrap();
        newer.keep_newer_leaders(&routes);
        assert_eq!(newer.shards()[0].leader.as_deref(), Some("10.0.0.3:50051"));
        assert_eq!(newer.shards()[0].leader_epoch, 6);
        // An answer that names no leader (the node holds no replica) is taken as it is.
        lagging.shards.clear();
        let mut unknown = StreamRoutes::new(&stream, &lagging).unwrap();
        unknown.keep_newer_leaders(&routes);
        assert_eq!(unknown.shards()[0].leader, None);
        assert_eq!(routes.shards().len(), 2);
        let low = routes.shard_for("", Some(7)).unwrap();
        assert_eq!(low.shard_id, "shardId-000000000001");
        assert_eq!(low.leader.as_deref(), Some("10.0.0.2:50051"));
        let high = routes.shard_for("", Some(u128::MAX)).unwrap();
        assert_eq!(
            (high.shard_id.as_str(), high.leader.as_deref()),
            ("shardId-000000000002", None)
        );
        // MD5 of the partition key decides without an explicit hash key.
        let by_key = routes.shard_for("partition-key", None).unwrap();
        let hash = sluice_types::partition_key_hash("partition-key");
        assert!(by_key.starting_hash_key <= hash && hash <= by_key.ending_hash_key);
    }
}
