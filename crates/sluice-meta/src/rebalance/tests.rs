//! Planner tests: moves are applied as the shard leaders would finish them, until the plan
//! is empty, and the placement is then checked.

use super::*;
use crate::error::CommandError;
use crate::state::tests::create;
use proptest::prelude::*;

fn cluster(nodes: impl IntoIterator<Item = u64>, factor: u32) -> MetaState {
    let mut state = MetaState::default();
    state.identity.replication_factor = factor;
    state.nodes = nodes.into_iter().collect();
    state
}

/// The `FinishMove` of a `StartMove`.
fn finish(start: &Command) -> Command {
    let (name, created_ms, shard, moving) = start.shard_move().expect("a move");
    Command::FinishMove {
        name: name.to_owned(),
        created_ms,
        shard,
        from: moving.from,
        to: moving.to,
    }
}

/// Applies plans (finishing every move at once) until the plan is empty; returns the moves
/// and leader changes made.
fn settle(state: &mut MetaState, health: &NodeHealth, max_moves: usize) -> (usize, usize) {
    let (mut moves, mut leaders) = (0, 0);
    for _ in 0..1000 {
        let plan = state.plan_moves(health, max_moves);
        if plan.is_empty() {
            return (moves, leaders);
        }
        let started = plan
            .iter()
            .filter(|c| matches!(c, Command::StartMove { .. }))
            .count();
        assert!(started <= max_moves, "{plan:?}");
        for command in &plan {
            state.apply(command).unwrap();
            if matches!(command, Command::StartMove { .. }) {
                state.apply(&finish(command)).unwrap();
                moves += 1;
            } else {
                leaders += 1;
            }
        }
    }
    panic!("the plan never became empty");
}

/// Replicas and preferred leaders of open shards per node (every member listed).
fn counts(state: &MetaState) -> (BTreeMap<u64, usize>, BTreeMap<u64, usize>) {
    let mut replicas: BTreeMap<u64, usize> = state.nodes.iter().map(|n| (*n, 0)).collect();
    let mut leaders = replicas.clone();
    for stream in state.streams.values() {
        for shard in stream.open_shards() {
            let distinct: BTreeSet<u64> = shard.replicas.iter().copied().collect();
            assert_eq!(distinct.len(), shard.replicas.len(), "{shard:?}");
            for node in &shard.replicas {
                *replicas.entry(*node).or_default() += 1;
            }
            *leaders.entry(shard.replicas[0]).or_default() += 1;
        }
    }
    (replicas, leaders)
}

fn spread(counts: &BTreeMap<u64, usize>, nodes: &[u64]) -> usize {
    let values: Vec<usize> = nodes.iter().map(|n| counts[n]).collect();
    values.iter().max().unwrap() - values.iter().min().unwrap()
}

fn shard(state: &MetaState, name: &str, id: u32) -> Shard {
    state.streams[name].shards[id as usize].clone()
}

#[test]
fn a_joining_node_gets_its_share_of_replicas_and_leaders() {
    let mut state = cluster([1, 2, 3], 3);
    create(&mut state, "s", 4);
    assert!(state.plan_moves(&NodeHealth::default(), 2).is_empty());
    state.nodes.insert(4);
    let (moves, _) = settle(&mut state, &NodeHealth::default(), 2);
    // 12 replicas over 4 nodes: 3 each, one shard move per replica gained.
    let (replicas, leaders) = counts(&state);
    assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [3, 3, 3, 3]);
    assert_eq!(moves, 3);
    assert_eq!(leaders.values().copied().collect::<Vec<_>>(), [1, 1, 1, 1]);
    for shard in state.streams["s"].shards.iter() {
        assert_eq!(shard.replicas.len(), 3);
        assert_eq!(shard.moving, None);
    }
}

#[test]
fn moves_in_flight_count_against_the_limit_and_block_their_shard() {
    let mut state = cluster([1, 2, 3], 3);
    create(&mut state, "s", 6);
    state.nodes.extend([4, 5]);
    let plan = state.plan_moves(&NodeHealth::default(), 2);
    assert_eq!(plan.len(), 2, "{plan:?}");
    state.apply(&plan[0]).unwrap();
    // One move in flight: one more may start, on another shard.
    let next = state.plan_moves(&NodeHealth::default(), 2);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_ne!(
        next[0].shard_move().map(|m| m.2),
        plan[0].shard_move().map(|m| m.2)
    );
    state.apply(&next[0]).unwrap();
    assert!(state.plan_moves(&NodeHealth::default(), 2).is_empty());
    // The in-flight moves' targets already count as loaded.
    state.apply(&finish(&plan[0])).unwrap();
    state.apply(&finish(&next[0])).unwrap();
    settle(&mut state, &NodeHealth::default(), 2);
    let (replicas, leaders) = counts(&state);
    assert!(spread(&replicas, &[1, 2, 3, 4, 5]) <= 1, "{replicas:?}");
    assert!(spread(&leaders, &[1, 2, 3, 4, 5]) <= 1, "{leaders:?}");
}

#[test]
fn a_draining_node_is_emptied_onto_the_others() {
    let mut state = cluster([1, 2, 3, 4], 3);
    create(&mut state, "s", 4);
    create(&mut state, "t", 2);
    state
        .apply(&Command::SetDraining {
            node: 2,
            draining: true,
        })
        .unwrap();
    settle(&mut state, &NodeHealth::default(), 3);
    let (replicas, leaders) = counts(&state);
    assert_eq!(replicas[&2], 0, "{replicas:?}");
    assert_eq!(leaders[&2], 0);
    assert!(spread(&replicas, &[1, 3, 4]) <= 1, "{replicas:?}");
    for stream in state.streams.values() {
        for shard in &stream.shards {
            assert_eq!(shard.replicas.len(), 3, "{shard:?}");
        }
    }
    // A stream created now is placed around the draining node.
    create(&mut state, "u", 3);
    assert!(
        state.streams["u"]
            .shards
            .iter()
            .all(|s| !s.replicas.contains(&2))
    );
}

#[test]
fn draining_a_node_of_a_cluster_no_larger_than_the_factor_shrinks_its_shards() {
    let mut state = cluster([1, 2, 3], 3);
    create(&mut state, "s", 3);
    state
        .apply(&Command::SetDraining {
            node: 3,
            draining: true,
        })
        .unwrap();
    let plan = state.plan_moves(&NodeHealth::default(), 5);
    assert_eq!(plan.len(), 3);
    assert!(plan.iter().all(|c| c.shard_move().map(|m| m.3)
        == Some(Move {
            from: Some(3),
            to: None
        })));
    settle(&mut state, &NodeHealth::default(), 5);
    for shard in &state.streams["s"].shards {
        let mut replicas = shard.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, [1, 2]);
    }
    // A node joins: the shards grow back to their factor on it.
    state.nodes.insert(4);
    settle(&mut state, &NodeHealth::default(), 5);
    for shard in &state.streams["s"].shards {
        let mut replicas = shard.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, [1, 2, 4]);
    }
}

#[test]
fn replicas_on_a_dead_node_are_recreated_and_an_unreachable_one_is_waited_for() {
    let mut state = cluster([1, 2, 3, 4], 3);
    create(&mut state, "s", 4);
    let on_four: Vec<u32> = state.streams["s"]
        .shards
        .iter()
        .filter(|s| s.replicas.contains(&4))
        .map(|s| s.id)
        .collect();
    assert!(!on_four.is_empty());
    // Unreachable within the grace period: nothing moves off or onto it.
    let down = NodeHealth {
        unreachable: [4].into(),
        dead: BTreeSet::new(),
    };
    for command in state.plan_moves(&down, 5) {
        let (_, _, _, moving) = command.shard_move().expect("only moves");
        assert_ne!(moving.from, Some(4));
        assert_ne!(moving.to, Some(4));
    }
    let dead = NodeHealth {
        unreachable: [4].into(),
        dead: [4].into(),
    };
    settle(&mut state, &dead, 2);
    let (replicas, _) = counts(&state);
    assert_eq!(replicas[&4], 0);
    assert_eq!(replicas.values().sum::<usize>(), 12);
    for shard in &state.streams["s"].shards {
        assert_eq!(shard.replicas.len(), 3);
    }
}

#[test]
fn a_shard_without_a_reachable_majority_is_left_alone() {
    let mut state = cluster([1, 2, 3, 4], 3);
    create(&mut state, "s", 1);
    let replicas = shard(&state, "s", 0).replicas;
    let dead: BTreeSet<u64> = replicas[1..].iter().copied().collect();
    let health = NodeHealth {
        unreachable: dead.clone(),
        dead,
    };
    assert!(state.plan_moves(&health, 5).is_empty());
}

#[test]
fn shards_placed_on_fewer_nodes_grow_to_their_factor_when_nodes_join() {
    let mut state = cluster([1], 3);
    create(&mut state, "s", 2);
    assert_eq!(shard(&state, "s", 0).replicas, [1]);
    state.nodes.extend([2, 3]);
    settle(&mut state, &NodeHealth::default(), 2);
    let (replicas, leaders) = counts(&state);
    assert_eq!(replicas.values().copied().collect::<Vec<_>>(), [2, 2, 2]);
    assert!(spread(&leaders, &[1, 2, 3]) <= 1, "{leaders:?}");
}

#[test]
fn finishing_a_move_puts_the_target_in_the_sources_place() {
    let mut state = cluster([1, 2, 3, 4], 3);
    create(&mut state, "s", 1);
    let before = shard(&state, "s", 0).replicas;
    let spare = (1..=4).find(|n| !before.contains(n)).unwrap();
    let start = Command::StartMove {
        name: "s".into(),
        created_ms: 1000,
        shard: 0,
        from: Some(before[0]),
        to: Some(spare),
    };
    state.apply(&start).unwrap();
    assert_eq!(
        shard(&state, "s", 0).moving,
        Some(Move {
            from: Some(before[0]),
            to: Some(spare)
        })
    );
    // One move at a time per shard.
    let again = Command::StartMove {
        name: "s".into(),
        created_ms: 1000,
        shard: 0,
        from: Some(before[1]),
        to: Some(spare),
    };
    assert!(matches!(state.plan(&again), Err(CommandError::InUse(_))));
    // A finish that names another move is refused.
    let other = Command::FinishMove {
        name: "s".into(),
        created_ms: 1000,
        shard: 0,
        from: Some(before[1]),
        to: Some(spare),
    };
    assert!(matches!(
        state.plan(&other),
        Err(CommandError::InvalidArgument(_))
    ));
    state.apply(&finish(&start)).unwrap();
    let after = shard(&state, "s", 0);
    assert_eq!(after.replicas, [spare, before[1], before[2]]);
    assert_eq!(after.moving, None);
    // Cancelling leaves the placement as it was.
    let back = Command::StartMove {
        name: "s".into(),
        created_ms: 1000,
        shard: 0,
        from: Some(before[1]),
        to: Some(before[0]),
    };
    state.apply(&back).unwrap();
    let (name, created_ms, id, moving) = back.shard_move().unwrap();
    state
        .apply(&Command::CancelMove {
            name: name.to_owned(),
            created_ms,
            shard: id,
            from: moving.from,
            to: moving.to,
        })
        .unwrap();
    assert_eq!(shard(&state, "s", 0), after);
}

#[test]
fn moves_that_would_break_the_placement_are_refused() {
    let mut state = cluster([1, 2, 3, 4], 3);
    create(&mut state, "s", 1);
    let replicas = shard(&state, "s", 0).replicas;
    let spare = (1..=4).find(|n| !replicas.contains(n)).unwrap();
    let start = |from: Option<u64>, to: Option<u64>| Command::StartMove {
        name: "s".into(),
        created_ms: 1000,
        shard: 0,
        from,
        to,
    };
    let refused = |state: &MetaState, command: Command| {
        assert!(
            matches!(state.plan(&command), Err(CommandError::InvalidArgument(_))),
            "{command:?}"
        );
    };
    refused(&state, start(None, None));
    refused(&state, start(Some(spare), Some(replicas[0])));
    refused(&state, start(Some(replicas[0]), Some(replicas[1])));
    refused(&state, start(Some(replicas[0]), Some(9)));
    state
        .apply(&Command::SetDraining {
            node: spare,
            draining: true,
        })
        .unwrap();
    refused(&state, start(Some(replicas[0]), Some(spare)));
    // Another incarnation of the stream is not this one.
    assert!(matches!(
        state.plan(&Command::StartMove {
            name: "s".into(),
            created_ms: 999,
            shard: 0,
            from: Some(replicas[0]),
            to: None,
        }),
        Err(CommandError::NotFound(_))
    ));
    let mut single = cluster([1], 3);
    create(&mut single, "s", 1);
    refused(&single, start(Some(1), None));
}

#[test]
fn draining_needs_a_member_and_leaves_one_node() {
    let mut state = cluster([1, 2], 3);
    let drain = |node| Command::SetDraining {
        node,
        draining: true,
    };
    assert!(matches!(
        state.plan(&drain(7)),
        Err(CommandError::NotFound(_))
    ));
    state.apply(&drain(1)).unwrap();
    assert!(matches!(
        state.plan(&drain(2)),
        Err(CommandError::InvalidArgument(_))
    ));
    assert_eq!(state.draining, [1].into());
    state
        .apply(&Command::SetDraining {
            node: 1,
            draining: false,
        })
        .unwrap();
    assert!(state.draining.is_empty());
}

#[test]
fn prefer_leader_swaps_the_first_replica() {
    let mut state = cluster([1, 2, 3], 3);
    create(&mut state, "s", 1);
    let before = shard(&state, "s", 0).replicas;
    state
        .apply(&Command::PreferLeader {
            name: "s".into(),
            created_ms: 1000,
            shard: 0,
            node: before[2],
        })
        .unwrap();
    assert_eq!(
        shard(&state, "s", 0).replicas,
        [before[2], before[1], before[0]]
    );
}

proptest! {
    /// Whatever the cluster's history of joins and drains, settling leaves every shard on
    /// distinct, non-draining nodes at its capped factor, with replica and preferred
    /// leader counts within one of each other.
    #[test]
    fn settling_balances_replicas_and_leaders(
        initial in 1u64..5,
        joined in 0u64..4,
        factor in 1u32..4,
        shards in 1u32..9,
        drained in proptest::collection::btree_set(1u64..9, 0..3),
    ) {
        let mut state = cluster(1..=initial, factor);
        create(&mut state, "a", shards);
        state.nodes.extend(initial + 1..=initial + joined);
        create(&mut state, "b", shards.div_ceil(2));
        for node in drained {
            // Refusals (not a member, the last node) leave the state as it was.
            let _ = state.apply(&Command::SetDraining { node, draining: true });
        }
        settle(&mut state, &NodeHealth::default(), 3);
        let live: Vec<u64> = state.nodes.difference(&state.draining).copied().collect();
        let expected = (factor as usize).min(live.len());
        let (replicas, leaders) = counts(&state);
        for stream in state.streams.values() {
            for shard in &stream.shards {
                prop_assert_eq!(shard.replicas.len(), expected, "{:?}", shard);
                prop_assert!(shard.replicas.iter().all(|n| live.contains(n)), "{:?}", shard);
            }
        }
        prop_assert!(spread(&replicas, &live) <= 1, "{:?}", replicas);
        prop_assert!(spread(&leaders, &live) <= 1, "{:?}", leaders);
    }
}

/// Gives each node of `zones` its zone.
fn zoned(state: &mut MetaState, zones: &[(u64, &str)]) {
    for (node, zone) in zones {
        state.zones.insert(*node, (*zone).to_owned());
    }
}

/// The distinct zones of a shard's replicas.
fn zones_of(state: &MetaState, shard: &Shard) -> BTreeSet<String> {
    shard
        .replicas
        .iter()
        .map(|n| format!("{:?}", state.zone_of(*n)))
        .collect()
}

#[test]
fn new_shards_are_placed_in_distinct_zones() {
    let mut state = cluster(1..=6, 3);
    zoned(
        &mut state,
        &[(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "b"), (6, "c")],
    );
    create(&mut state, "s", 4);
    for shard in &state.streams["s"].shards {
        assert_eq!(zones_of(&state, shard).len(), 3, "{shard:?}");
    }
    // Zone c has one node: it holds a replica of every shard; a and b share the rest.
    let (replicas, _) = counts(&state);
    assert_eq!(replicas[&6], 4);
    assert_eq!(replicas[&1] + replicas[&2] + replicas[&3], 4);
    assert_eq!(replicas[&4] + replicas[&5], 4);
}

#[test]
fn nodes_without_a_zone_count_as_zones_of_their_own() {
    let mut state = cluster(1..=4, 3);
    // Two nodes in zone a, two without a zone: three zones, never two replicas in a.
    zoned(&mut state, &[(1, "a"), (2, "a")]);
    create(&mut state, "s", 4);
    for shard in &state.streams["s"].shards {
        assert_eq!(state.zone_conflicts(&shard.replicas), 0, "{shard:?}");
    }
    // Without any zone, placement is what it was before zones: the least loaded nodes.
    let mut plain = cluster(1..=4, 3);
    create(&mut plain, "s", 4);
    let (replicas, leaders) = counts(&plain);
    assert!(spread(&replicas, &[1, 2, 3, 4]) <= 1, "{replicas:?}");
    assert!(spread(&leaders, &[1, 2, 3, 4]) <= 1, "{leaders:?}");
}

#[test]
fn a_replica_sharing_a_zone_moves_once_a_node_of_a_free_zone_joins() {
    let mut state = cluster([1, 2, 3], 3);
    zoned(&mut state, &[(1, "a"), (2, "a"), (3, "b")]);
    create(&mut state, "s", 4);
    // Two zones for three replicas: every shard has two replicas in a, and nothing helps.
    for shard in &state.streams["s"].shards {
        assert_eq!(state.zone_conflicts(&shard.replicas), 1, "{shard:?}");
    }
    assert!(state.plan_moves(&NodeHealth::default(), 2).is_empty());

    state.nodes.insert(4);
    zoned(&mut state, &[(4, "c")]);
    settle(&mut state, &NodeHealth::default(), 2);
    for shard in &state.streams["s"].shards {
        assert_eq!(zones_of(&state, shard).len(), 3, "{shard:?}");
        assert_eq!(shard.replicas.len(), 3, "{shard:?}");
    }
    // Zones b and c have one node each: they hold every shard; a's two nodes share theirs.
    let (replicas, leaders) = counts(&state);
    assert_eq!((replicas[&3], replicas[&4]), (4, 4), "{replicas:?}");
    assert!(spread(&replicas, &[1, 2]) <= 1, "{replicas:?}");
    assert!(spread(&leaders, &[1, 2, 3, 4]) <= 1, "{leaders:?}");
}

#[test]
fn balancing_moves_never_put_two_replicas_in_one_zone() {
    // Three zones of two nodes; a third node joins zone a: replicas move onto it only from
    // the other node of a, never from b or c (that would put two replicas in a).
    let mut state = cluster(1..=6, 3);
    zoned(
        &mut state,
        &[(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")],
    );
    create(&mut state, "s", 6);
    state.nodes.insert(7);
    zoned(&mut state, &[(7, "a")]);
    settle(&mut state, &NodeHealth::default(), 2);
    for shard in &state.streams["s"].shards {
        assert_eq!(state.zone_conflicts(&shard.replicas), 0, "{shard:?}");
    }
    let (replicas, _) = counts(&state);
    assert!(spread(&replicas, &[1, 2, 7]) <= 1, "{replicas:?}");
    assert!(spread(&replicas, &[3, 4, 5, 6]) <= 1, "{replicas:?}");
}

#[test]
fn a_draining_nodes_replica_goes_to_a_free_zone_first() {
    let mut state = cluster(1..=4, 3);
    zoned(&mut state, &[(1, "a"), (2, "b"), (3, "c"), (4, "c")]);
    create(&mut state, "s", 2);
    let before = shard(&state, "s", 0);
    let on_c = *before
        .replicas
        .iter()
        .find(|n| state.zones[n] == "c")
        .expect("a replica in c");
    state
        .apply(&Command::SetDraining {
            node: on_c,
            draining: true,
        })
        .unwrap();
    settle(&mut state, &NodeHealth::default(), 2);
    for shard in &state.streams["s"].shards {
        assert!(!shard.replicas.contains(&on_c), "{shard:?}");
        assert_eq!(zones_of(&state, shard).len(), 3, "{shard:?}");
    }
}

proptest! {
    /// Whatever the zones of the nodes (some without one) and the history of joins,
    /// settling leaves every shard at its factor on as many distinct zones as the factor
    /// and the live zones allow, and ends (zone moves and count moves never undo each
    /// other).
    #[test]
    fn settling_spreads_replicas_over_as_many_zones_as_there_are(
        initial in 1u64..5,
        joined in 0u64..4,
        factor in 1u32..4,
        shards in 1u32..7,
        zones in proptest::collection::vec(proptest::option::of(0u8..3), 8),
    ) {
        let mut state = cluster(1..=initial, factor);
        let zone_name = |node: u64| zones[(node - 1) as usize].map(|z| format!("z{z}"));
        for node in 1..=initial {
            if let Some(zone) = zone_name(node) {
                state.zones.insert(node, zone);
            }
        }
        create(&mut state, "a", shards);
        for node in initial + 1..=initial + joined {
            state.nodes.insert(node);
            if let Some(zone) = zone_name(node) {
                state.zones.insert(node, zone);
            }
        }
        create(&mut state, "b", shards.div_ceil(2));
        settle(&mut state, &NodeHealth::default(), 3);
        let live: Vec<u64> = state.nodes.iter().copied().collect();
        let live_zones: BTreeSet<String> =
            live.iter().map(|n| format!("{:?}", state.zone_of(*n))).collect();
        let expected = (factor as usize).min(live.len());
        for stream in state.streams.values() {
            for shard in &stream.shards {
                prop_assert_eq!(shard.replicas.len(), expected, "{:?}", shard);
                prop_assert_eq!(
                    zones_of(&state, shard).len(),
                    expected.min(live_zones.len()),
                    "{:?} zones {:?}",
                    shard,
                    state.zones
                );
            }
        }
        let (_, leaders) = counts(&state);
        prop_assert!(spread(&leaders, &live) <= 1, "{:?}", leaders);
    }
}
