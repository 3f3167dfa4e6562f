//! The rebalancer's planner: from the metadata and what is known of the nodes' health, the
//! next replica moves and preferred-leader changes towards a balanced placement. Pure: the
//! metadata leader proposes what it returns, and `MetaState::plan` checks every command
//! again when it is applied, so a plan made from a slightly old state is harmless.

use crate::command::Command;
use crate::model::{Move, Shard, StreamStatus};
use crate::state::{MetaState, Zone};
use std::collections::{BTreeMap, BTreeSet};

/// What the rebalancer knows of the nodes beyond the metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeHealth {
    /// Members that cannot be reached now: no replica is moved onto them, and a shard whose
    /// reachable replicas are no majority is left alone.
    pub unreachable: BTreeSet<u64>,
    /// Members unreachable for longer than the grace period: their replicas are re-created
    /// on other nodes.
    pub dead: BTreeSet<u64>,
}

/// One placed shard as the planner sees it.
struct Candidate<'a> {
    stream: &'a str,
    created_ms: u64,
    shard: &'a Shard,
    /// The replicas once the move in progress, if any, is finished.
    projected: Vec<u64>,
    /// A command for this shard is already in the plan.
    planned: bool,
}

/// What a node holds: replicas of open shards first (they take writes), then of all.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Load {
    open: usize,
    total: usize,
}

impl MetaState {
    /// The next steps towards a balanced placement, with at most `max_moves` moves in
    /// flight (those already started count):
    ///
    /// 1. a replica on a draining node, on a node dead past the grace period or on a node
    ///    that left the cluster moves to the least-loaded reachable node that holds none of
    ///    the shard's replicas, in a zone none of the others is in if there is one;
    /// 2. a shard below the replication factor (capped by the nodes that are neither
    ///    draining nor dead) gains a replica the same way;
    /// 3. a replica sharing its zone with another of its shard moves to the least-loaded
    ///    reachable node of a zone the shard has no replica in, when there is one (zones:
    ///    [`MetaState::zone_of`]; a node without a zone is a zone of its own);
    /// 4. replicas of open shards move from the most to the least loaded reachable node
    ///    until the counts differ by at most one, by moves that leave no more replicas
    ///    sharing a zone than before (the zone spread wins over the counts when both
    ///    cannot hold);
    /// 5. once no move is in flight or planned, preferred leaders (first replicas) of open
    ///    shards swap within their shards until the counts differ by at most one.
    ///
    /// A shard with a move in progress is left alone, and so is one whose reachable
    /// replicas are no majority: its group could not commit a membership change.
    /// Deterministic: shards in stream-name and shard order, ties between nodes by id.
    ///
    /// When no node can take a replica that must leave (a node drained or dead in a
    /// cluster no larger than the replication factor), the replica is dropped: the shard
    /// shrinks to the nodes left rather than the drain being refused, and grows back to
    /// its factor when a node joins. Its remaining replicas are then all it needs for a
    /// majority, as a group of that size always does.
    pub fn plan_moves(&self, health: &NodeHealth, max_moves: usize) -> Vec<Command> {
        let leaving = |node: &u64| {
            !self.nodes.contains(node) || self.draining.contains(node) || health.dead.contains(node)
        };
        let reachable = |node: &u64| {
            self.nodes.contains(node)
                && !health.unreachable.contains(node)
                && !health.dead.contains(node)
        };
        let targets: BTreeSet<u64> = self
            .nodes
            .iter()
            .filter(|n| !leaving(n) && reachable(n))
            .copied()
            .collect();
        let keepers = self.nodes.iter().filter(|n| !leaving(n)).count();
        let factor = (self.identity.replication_factor.max(1) as usize).min(keepers);

        let mut shards: Vec<Candidate<'_>> = self
            .streams
            .values()
            .filter(|stream| stream.status != StreamStatus::Deleting)
            .flat_map(|stream| {
                stream
                    .shards
                    .iter()
                    .filter(|shard| !shard.replicas.is_empty())
                    .map(|shard| Candidate {
                        stream: &stream.name,
                        created_ms: stream.created_ms,
                        shard,
                        projected: shard
                            .moving
                            .map_or_else(|| shard.replicas.clone(), |m| m.apply(&shard.replicas)),
                        planned: false,
                    })
            })
            .collect();
        let in_flight = shards.iter().filter(|c| c.shard.moving.is_some()).count();
        let mut budget = max_moves.saturating_sub(in_flight);
        let mut load: BTreeMap<u64, Load> = targets.iter().map(|n| (*n, Load::default())).collect();
        for candidate in &shards {
            for node in &candidate.projected {
                if let Some(entry) = load.get_mut(node) {
                    entry.total += 1;
                    entry.open += usize::from(candidate.shard.is_open());
                }
            }
        }
        // Whether the group can change its membership: a majority of its voters answers.
        let has_quorum = |shard: &Shard| {
            2 * shard.replicas.iter().filter(|n| reachable(n)).count() > shard.replicas.len()
        };
        let movable = |candidate: &Candidate<'_>| {
            !candidate.planned && candidate.shard.moving.is_none() && has_quorum(candidate.shard)
        };
        let mut commands = Vec::new();

        // 1 and 2: replicas that must leave, and shards below their factor.
        for candidate in shards.iter_mut() {
            if budget == 0 {
                break;
            }
            if !movable(candidate) {
                continue;
            }
            let shard: &Shard = candidate.shard;
            let replicas = &shard.replicas;
            // Dead nodes and former members first: their replicas count for nothing now.
            let from = replicas
                .iter()
                .filter(|n| leaving(n))
                .min_by_key(|n| (self.draining.contains(n), **n))
                .copied();
            let kept: Vec<u64> = replicas
                .iter()
                .filter(|n| Some(**n) != from)
                .copied()
                .collect();
            let to = self.least_loaded_spread(&load, replicas, &kept);
            let moving = match (from, to) {
                (Some(_), None) if replicas.len() <= 1 => continue,
                (Some(from), to) => Move {
                    from: Some(from),
                    to,
                },
                (None, Some(to)) if replicas.len() < factor => Move {
                    from: None,
                    to: Some(to),
                },
                (None, _) => continue,
            };
            commands.push(start(candidate, moving, &mut load));
            budget -= 1;
        }

        // 3: replicas sharing a zone.
        for candidate in shards.iter_mut() {
            if budget == 0 {
                break;
            }
            let replicas = &candidate.shard.replicas;
            if !movable(candidate)
                || replicas.iter().any(&leaving)
                || self.zone_conflicts(replicas) == 0
            {
                continue;
            }
            let used: BTreeSet<Zone<'_>> = replicas.iter().map(|n| self.zone_of(*n)).collect();
            let Some(to) = load
                .iter()
                .filter(|(node, _)| !used.contains(&self.zone_of(**node)))
                .min_by_key(|(node, load)| (**load, **node))
                .map(|(node, _)| *node)
            else {
                continue;
            };
            // Of the replicas sharing a zone, the most loaded one that is not the preferred
            // leader moves (a later one of its zone, so the first stays).
            let from = replicas
                .iter()
                .enumerate()
                .filter(|(i, node)| {
                    replicas[..*i]
                        .iter()
                        .any(|earlier| self.zone_of(*earlier) == self.zone_of(**node))
                })
                .map(|(_, node)| *node)
                .max_by_key(|node| (load.get(node).copied().unwrap_or_default(), *node));
            let Some(from) = from else {
                continue;
            };
            let moving = Move {
                from: Some(from),
                to: Some(to),
            };
            commands.push(start(candidate, moving, &mut load));
            budget -= 1;
        }

        // 4: replica counts.
        while budget > 0 {
            let order = by_load(&load, |l| (l.open, l.total));
            let mut found = None;
            'search: for high in order.iter().rev() {
                for low in &order {
                    if load[high].open <= load[low].open + 1 {
                        break;
                    }
                    let choice = shards.iter().position(|c| {
                        movable(c)
                            && c.shard.is_open()
                            && !c.shard.replicas.iter().any(&leaving)
                            && c.shard.replicas.contains(high)
                            && !c.shard.replicas.contains(low)
                            && self.keeps_spread(&c.shard.replicas, *high, *low)
                    });
                    if let Some(index) = choice {
                        found = Some((index, *high, *low));
                        break 'search;
                    }
                }
            }
            let Some((index, from, to)) = found else {
                break;
            };
            let moving = Move {
                from: Some(from),
                to: Some(to),
            };
            commands.push(start(&mut shards[index], moving, &mut load));
            budget -= 1;
        }

        // 5: preferred leaders, once replicas stay where they are.
        if in_flight == 0 && commands.is_empty() {
            let mut leaders: BTreeMap<u64, usize> = targets.iter().map(|n| (*n, 0)).collect();
            for candidate in shards.iter().filter(|c| c.shard.is_open()) {
                if let Some(count) = leaders.get_mut(&candidate.shard.replicas[0]) {
                    *count += 1;
                }
            }
            for _ in 0..max_moves.max(1) {
                let Some(path) = leader_path(&shards, &leaders) else {
                    break;
                };
                let (first, last) = (path[0].1, path[path.len() - 1].2);
                for (index, _, to) in path {
                    let candidate = &mut shards[index];
                    candidate.planned = true;
                    commands.push(Command::PreferLeader {
                        name: candidate.stream.to_owned(),
                        created_ms: candidate.created_ms,
                        shard: candidate.shard.id,
                        node: to,
                    });
                }
                leaders.entry(first).and_modify(|c| *c -= 1);
                leaders.entry(last).and_modify(|c| *c += 1);
            }
        }
        commands
    }
}

impl MetaState {
    /// The reachable node with the least load that holds none of `replicas`, preferring
    /// one whose zone none of `kept` is in.
    fn least_loaded_spread(
        &self,
        load: &BTreeMap<u64, Load>,
        replicas: &[u64],
        kept: &[u64],
    ) -> Option<u64> {
        let used: BTreeSet<Zone<'_>> = kept.iter().map(|n| self.zone_of(*n)).collect();
        load.iter()
            .filter(|(node, _)| !replicas.contains(node))
            .min_by_key(|(node, load)| (used.contains(&self.zone_of(**node)), **load, **node))
            .map(|(node, _)| *node)
    }

    /// Whether moving the replica on `from` of a shard held by `replicas` to `to` leaves
    /// no more replicas sharing a zone than before.
    fn keeps_spread(&self, replicas: &[u64], from: u64, to: u64) -> bool {
        let after: Vec<u64> = replicas
            .iter()
            .map(|n| if *n == from { to } else { *n })
            .collect();
        self.zone_conflicts(&after) <= self.zone_conflicts(replicas)
    }
}

/// A chain of preferred-leader swaps that takes one leadership from a node leading the
/// most open shards to one leading at least two fewer: each step `(shard, from, to)` hands
/// a shard `from` leads to `to`, one of its replicas, which hands on another it leads
/// (the shortest such chain, found breadth first). `None` when the counts are within one,
/// or when the replicas' placement allows no better (then replicas must move first).
fn leader_path(
    shards: &[Candidate<'_>],
    leaders: &BTreeMap<u64, usize>,
) -> Option<Vec<(usize, u64, u64)>> {
    let order = by_load(leaders, |count| *count);
    for high in order.iter().rev() {
        let mut reached: BTreeMap<u64, (usize, u64)> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([*high]);
        while let Some(node) = queue.pop_front() {
            for (index, candidate) in shards.iter().enumerate() {
                let shard = candidate.shard;
                if candidate.planned || !shard.is_open() || shard.replicas[0] != node {
                    continue;
                }
                for next in &shard.replicas[1..] {
                    if next == high || reached.contains_key(next) || !leaders.contains_key(next) {
                        continue;
                    }
                    reached.insert(*next, (index, node));
                    if leaders[next] + 1 < leaders[high] {
                        let mut path = Vec::new();
                        let mut at = *next;
                        while at != *high {
                            let (index, from) = reached[&at];
                            path.push((index, from, at));
                            at = from;
                        }
                        path.reverse();
                        return Some(path);
                    }
                    queue.push_back(*next);
                }
            }
        }
    }
    None
}

/// Nodes from the least to the most loaded, ties by id.
fn by_load<T, K: Ord>(load: &BTreeMap<u64, T>, key: impl Fn(&T) -> K) -> Vec<u64> {
    let mut order: Vec<u64> = load.keys().copied().collect();
    order.sort_by_key(|node| (key(&load[node]), *node));
    order
}

/// The `StartMove` of `moving` on `candidate`, with the loads it leads to.
fn start(candidate: &mut Candidate<'_>, moving: Move, load: &mut BTreeMap<u64, Load>) -> Command {
    let open = usize::from(candidate.shard.is_open());
    if let Some(entry) = moving.from.and_then(|from| load.get_mut(&from)) {
        entry.total -= 1;
        entry.open -= open;
    }
    if let Some(entry) = moving.to.and_then(|to| load.get_mut(&to)) {
        entry.total += 1;
        entry.open += open;
    }
    candidate.planned = true;
    Command::StartMove {
        name: candidate.stream.to_owned(),
        created_ms: candidate.created_ms,
        shard: candidate.shard.id,
        from: moving.from,
        to: moving.to,
    }
}

#[cfg(test)]
mod tests;
