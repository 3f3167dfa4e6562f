//! State-machine tests: every command's effect and rejection, and replay determinism.

use super::*;
use crate::model::StreamMode;
use proptest::prelude::*;

/// Creates an ACTIVE provisioned stream at time 1000.
pub(crate) fn create(state: &mut MetaState, name: &str, shards: u32) {
    state
        .apply(&Command::CreateStream {
            name: name.into(),
            shard_count: shards,
            mode: StreamMode::Provisioned,
            tags: BTreeMap::new(),
            now_ms: 1000,
        })
        .unwrap();
    state
        .apply(&Command::ActivateStream {
            name: name.into(),
            created_ms: 1000,
        })
        .unwrap();
}

fn open_ranges(stream: &Stream) -> Vec<(u128, u128)> {
    let mut ranges: Vec<_> = stream
        .open_shards()
        .map(|s| (s.start_hash, s.end_hash))
        .collect();
    ranges.sort();
    ranges
}

#[test]
fn create_twice_is_resource_in_use() {
    let mut state = MetaState::default();
    create(&mut state, "s", 2);
    let err = state
        .plan(&Command::CreateStream {
            name: "s".into(),
            shard_count: 1,
            mode: StreamMode::Provisioned,
            tags: BTreeMap::new(),
            now_ms: 5,
        })
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::InUse("Stream s under account 000000000000 already exists.".into())
    );
}

#[test]
fn split_closes_parent_and_opens_two_children() {
    let mut state = MetaState::default();
    create(&mut state, "s", 1);
    let half = (u128::MAX / 2 + 1).to_string();
    state
        .apply(&Command::SplitShard {
            name: "s".into(),
            shard: 0,
            new_starting_hash_key: half,
            ending: [(0, Some(41))].into(),
            now_ms: 2000,
        })
        .unwrap();
    let stream = &state.streams["s"];
    assert_eq!(stream.status, StreamStatus::Updating);
    assert_eq!(stream.shards[0].closed, Some(Some(41)));
    assert_eq!(stream.shards[1].parent, Some(0));
    assert_eq!(stream.shards[2].start_hash, u128::MAX / 2 + 1);
    assert_eq!(
        open_ranges(stream),
        HashKeyRange::uniform(2)
            .iter()
            .map(|r| (r.start, r.end))
            .collect::<Vec<_>>()
    );
    // A second split while UPDATING is refused.
    let err = state
        .plan(&Command::SplitShard {
            name: "s".into(),
            shard: 1,
            new_starting_hash_key: "12345".into(),
            ending: BTreeMap::new(),
            now_ms: 2001,
        })
        .unwrap_err();
    assert!(matches!(err, CommandError::InUse(_)));
}

#[test]
fn split_key_outside_the_shard_is_invalid_argument() {
    let mut state = MetaState::default();
    create(&mut state, "s", 2);
    for key in [
        "0",
        "1",
        &(u128::MAX / 2).to_string(),
        &u128::MAX.to_string(),
    ] {
        let err = state
            .plan(&Command::SplitShard {
                name: "s".into(),
                shard: 0,
                new_starting_hash_key: key.to_string(),
                ending: BTreeMap::new(),
                now_ms: 2,
            })
            .unwrap_err();
        assert!(
            matches!(err, CommandError::InvalidArgument(_)),
            "{key}: {err:?}"
        );
    }
}

#[test]
fn merge_requires_adjacent_open_shards() {
    let mut state = MetaState::default();
    create(&mut state, "s", 3);
    let err = state
        .plan(&Command::MergeShards {
            name: "s".into(),
            shard: 0,
            adjacent: 2,
            ending: BTreeMap::new(),
            now_ms: 3,
        })
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::InvalidArgument(
            "Shards shardId-000000000000 and shardId-000000000002 in stream s under account 000000000000 are not an adjacent pair of shards eligible for merging".into()
        )
    );
    state
        .apply(&Command::MergeShards {
            name: "s".into(),
            shard: 0,
            adjacent: 1,
            ending: [(0, None), (1, Some(3))].into(),
            now_ms: 3,
        })
        .unwrap();
    let stream = &state.streams["s"];
    let merged = stream.shards.last().unwrap();
    assert_eq!((merged.parent, merged.adjacent_parent), (Some(0), Some(1)));
    assert_eq!(merged.start_hash, 0);
    assert_eq!(stream.open_shards().count(), 2);
}

#[test]
fn retention_rules_follow_aws() {
    let mut state = MetaState::default();
    create(&mut state, "s", 1);
    let set = |hours, increase| Command::SetRetention {
        name: "s".into(),
        hours,
        increase,
    };
    assert!(matches!(
        state.plan(&set(10, true)),
        Err(CommandError::InvalidArgument(_))
    ));
    assert!(matches!(
        state.plan(&set(9000, true)),
        Err(CommandError::InvalidArgument(_))
    ));
    state.apply(&set(48, true)).unwrap();
    assert_eq!(state.streams["s"].retention_hours, 48);
    assert!(matches!(
        state.plan(&set(24, true)),
        Err(CommandError::InvalidArgument(_))
    ));
    assert!(matches!(
        state.plan(&set(72, false)),
        Err(CommandError::InvalidArgument(_))
    ));
    state.apply(&set(24, false)).unwrap();
    assert_eq!(state.streams["s"].retention_hours, 24);
}

#[test]
fn delete_with_consumers_needs_enforcement() {
    let mut state = MetaState::default();
    create(&mut state, "s", 1);
    state
        .apply(&Command::RegisterConsumer {
            name: "s".into(),
            consumer: "c".into(),
            now_ms: 5,
        })
        .unwrap();
    assert!(matches!(
        state.plan(&Command::DeleteStream {
            name: "s".into(),
            enforce_consumer_deletion: false
        }),
        Err(CommandError::InUse(_))
    ));
    state
        .apply(&Command::DeleteStream {
            name: "s".into(),
            enforce_consumer_deletion: true,
        })
        .unwrap();
    assert_eq!(state.streams["s"].status, StreamStatus::Deleting);
    state
        .apply(&Command::ForgetStream {
            name: "s".into(),
            created_ms: 1000,
        })
        .unwrap();
    assert!(state.streams.is_empty());
}

#[test]
fn shard_limit_is_enforced() {
    let mut state = MetaState::new(Identity {
        shard_limit: 3,
        ..Identity::default()
    });
    create(&mut state, "a", 2);
    let err = state
        .plan(&Command::CreateStream {
            name: "b".into(),
            shard_count: 2,
            mode: StreamMode::Provisioned,
            tags: BTreeMap::new(),
            now_ms: 1,
        })
        .unwrap_err();
    assert!(matches!(err, CommandError::LimitExceeded(_)));
}

#[test]
fn mode_changes_are_limited_to_two_per_day() {
    let mut state = MetaState::default();
    create(&mut state, "s", 1);
    let change = |mode, now_ms| Command::UpdateStreamMode {
        name: "s".into(),
        mode,
        now_ms,
    };
    state.apply(&change(StreamMode::OnDemand, 10)).unwrap();
    state.apply(&change(StreamMode::Provisioned, 20)).unwrap();
    assert!(matches!(
        state.plan(&change(StreamMode::OnDemand, 30)),
        Err(CommandError::LimitExceeded(_))
    ));
    state
        .apply(&change(StreamMode::OnDemand, 25 * 3600 * 1000))
        .unwrap();
    assert_eq!(state.streams["s"].mode, StreamMode::OnDemand);
}

fn parents_are_consistent(stream: &Stream) {
    for shard in &stream.shards {
        for parent in [shard.parent, shard.adjacent_parent].into_iter().flatten() {
            let parent = stream.shard(ShardId(parent)).expect("parent exists");
            assert!(
                !parent.is_open(),
                "parent {} of {} still open",
                parent.id,
                shard.id
            );
            assert!(parent.start_hash <= shard.end_hash && shard.start_hash <= parent.end_hash);
        }
    }
}

proptest! {
    #[test]
    fn update_shard_count_reaches_uniform_ranges(initial in 1u32..40, steps in proptest::collection::vec(0u32..1000, 1..4)) {
        let mut state = MetaState::default();
        create(&mut state, "s", initial);
        let mut open = initial;
        for (i, step) in steps.into_iter().enumerate() {
            let low = open.div_ceil(2);
            let high = open * 2;
            let target = low + step % (high - low + 1);
            state.apply(&Command::UpdateShardCount {
                name: "s".into(),
                target,
                ending: BTreeMap::new(),
                now_ms: 10 + i as u64,
            }).unwrap();
            state.apply(&Command::ActivateStream { name: "s".into(), created_ms: 1000 }).unwrap();
            let stream = &state.streams["s"];
            let expected: Vec<_> = HashKeyRange::uniform(target).iter().map(|r| (r.start, r.end)).collect();
            prop_assert_eq!(open_ranges(stream), expected);
            parents_are_consistent(stream);
            open = target;
        }
    }
}

#[test]
fn update_shard_count_outside_half_to_double_is_rejected() {
    let mut state = MetaState::default();
    create(&mut state, "s", 4);
    for target in [1, 9] {
        assert!(
            state
                .plan(&Command::UpdateShardCount {
                    name: "s".into(),
                    target,
                    ending: BTreeMap::new(),
                    now_ms: 1,
                })
                .is_err()
        );
    }
}

#[test]
fn replicas_are_placed_evenly_with_rotating_preferred_leaders() {
    let mut state = MetaState::new(Identity {
        replication_factor: 2,
        ..Identity::default()
    });
    state.nodes = [1, 2, 3].into();
    create(&mut state, "a", 3);
    create(&mut state, "b", 3);
    let mut replicas_per_node: BTreeMap<u64, usize> = BTreeMap::new();
    let mut leaders_per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for stream in state.streams.values() {
        for shard in stream.open_shards() {
            assert_eq!(shard.replicas.len(), 2, "{shard:?}");
            assert_ne!(shard.replicas[0], shard.replicas[1]);
            for node in &shard.replicas {
                *replicas_per_node.entry(*node).or_default() += 1;
            }
            *leaders_per_node.entry(shard.replicas[0]).or_default() += 1;
        }
    }
    // 6 shards × 2 replicas over 3 nodes; each node the preferred leader of 2.
    assert_eq!(
        replicas_per_node.values().copied().collect::<Vec<_>>(),
        [4, 4, 4]
    );
    assert_eq!(
        leaders_per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2]
    );
}

#[test]
fn the_replication_factor_is_capped_by_the_node_count_and_splits_place_children() {
    let mut state = MetaState {
        nodes: [7].into(),
        ..MetaState::default()
    };
    create(&mut state, "s", 1);
    assert_eq!(state.streams["s"].shards[0].replicas, [7]);
    state.nodes = [7, 8].into();
    state
        .apply(&Command::SplitShard {
            name: "s".into(),
            shard: 0,
            new_starting_hash_key: (1u128 << 64).to_string(),
            ending: [(0, None)].into(),
            now_ms: 2000,
        })
        .unwrap();
    let stream = &state.streams["s"];
    // The closed parent keeps its placement; the children are placed on both nodes.
    assert_eq!(stream.shards[0].replicas, [7]);
    for child in stream.open_shards() {
        let mut replicas = child.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, [7, 8]);
    }
}
