//! A consumer of every shard of a stream over `ReadShard` streams, following closed shards
//! into their children once all of their parents are read to the end (a merge has two), so
//! the records of a partition key come out in order across splits and merges.

use crate::{Client, Error, Signed};
use sluice_proto::v1 as pb;
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a [`Consumer`] starts in the shards it begins with (their children are always
/// read from their start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The oldest record still kept, in every shard whose parents are gone.
    TrimHorizon,
    /// Records written from now on, in the open shards.
    Latest,
    /// Records that arrived at or after this time (epoch milliseconds).
    AtTimestamp(u64),
}

/// Records of one shard, in order.
#[derive(Debug, Clone)]
pub struct ShardRecords {
    pub shard_id: String,
    pub records: Vec<pb::Record>,
    pub millis_behind_latest: u64,
}

enum Event {
    Records(ShardRecords),
    Finished(String, Vec<pb::ChildShard>),
    Failed(String, Error),
}

/// Follows every shard of a stream (see the module documentation). Records arrive as
/// [`ShardRecords`] batches from [`Consumer::next`]; a shard's batches come in order.
pub struct Consumer {
    data: pb::data_client::DataClient<Signed>,
    stream: String,
    inbox: mpsc::Receiver<Event>,
    events: mpsc::Sender<Event>,
    started: HashSet<String>,
    finished: HashSet<String>,
    waiting: HashMap<String, Vec<String>>,
}

/// A broken `ReadShard` stream is resumed this many times in a row at most.
const RESUME_ATTEMPTS: u32 = 20;

impl Consumer {
    pub(crate) async fn start(
        client: &Client,
        stream: &str,
        position: Position,
    ) -> Result<Consumer, Error> {
        let description = client.describe_stream(stream).await?;
        let known: HashSet<&str> = description
            .shards
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        // From LATEST only the open shards; otherwise every shard whose parents are gone
        // (expired), children following their parents.
        let first: Vec<String> = description
            .shards
            .iter()
            .filter(|s| match position {
                Position::Latest => s.ending_sequence_number.is_none(),
                _ => s
                    .parent_shard_id
                    .iter()
                    .chain(s.adjacent_parent_shard_id.iter())
                    .all(|p| !known.contains(p.as_str())),
            })
            .map(|s| s.shard_id.clone())
            .collect();
        let (events, inbox) = mpsc::channel(64);
        let mut consumer = Consumer {
            data: client.data(),
            stream: stream.to_owned(),
            inbox,
            events,
            started: HashSet::new(),
            finished: HashSet::new(),
            waiting: HashMap::new(),
        };
        for shard in first {
            consumer.read(shard, start_of(position));
        }
        Ok(consumer)
    }

    /// The next batch of records; `None` once every shard followed is finished (closed and
    /// read to its end, with no children left).
    pub async fn next(&mut self) -> Option<Result<ShardRecords, Error>> {
        loop {
            if self.started.len() == self.finished.len() {
                return None;
            }
            match self.inbox.recv().await? {
                Event::Records(batch) => return Some(Ok(batch)),
                Event::Failed(shard, error) => {
                    self.finished.insert(shard);
                    return Some(Err(error));
                }
                Event::Finished(shard, children) => {
                    self.finished.insert(shard);
                    for child in children {
                        self.waiting.insert(child.shard_id, child.parent_shards);
                    }
                    let ready: Vec<String> = self
                        .waiting
                        .iter()
                        .filter(|(child, parents)| {
                            !self.started.contains(*child)
                                && parents.iter().all(|p| self.finished.contains(p))
                        })
                        .map(|(child, _)| child.clone())
                        .collect();
                    for child in ready {
                        self.read(child, start_of(Position::TrimHorizon));
                    }
                }
            }
        }
    }

    /// Starts reading `shard` from `position`, resuming after the last batch read when the
    /// stream breaks.
    fn read(&mut self, shard: String, position: pb::StartingPosition) {
        self.started.insert(shard.clone());
        let mut data = self.data.clone();
        let stream = self.stream.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let mut position = position;
            let mut attempts = 0;
            loop {
                let request = pb::ReadShardRequest {
                    stream_name: stream.clone(),
                    shard_id: shard.clone(),
                    starting_position: Some(position.clone()),
                    max_records_per_batch: 0,
                };
                let status = match data.read_shard(request).await {
                    Ok(response) => {
                        let mut batches = response.into_inner();
                        loop {
                            match batches.message().await {
                                Ok(Some(batch)) => {
                                    attempts = 0;
                                    if !batch.records.is_empty() {
                                        let records = ShardRecords {
                                            shard_id: shard.clone(),
                                            records: batch.records,
                                            millis_behind_latest: batch.millis_behind_latest,
                                        };
                                        if events.send(Event::Records(records)).await.is_err() {
                                            return;
                                        }
                                    }
                                    // Only the last batch of a finished shard has no
                                    // continuation.
                                    let Some(next) = batch.continuation_sequence_number else {
                                        let _ = events
                                            .send(Event::Finished(shard, batch.child_shards))
                                            .await;
                                        return;
                                    };
                                    position = pb::StartingPosition {
                                        r#type: pb::StartingPositionType::AfterSequenceNumber
                                            as i32,
                                        sequence_number: next,
                                        timestamp_ms: 0,
                                    };
                                }
                                Ok(None) => break tonic::Status::unavailable("stream ended"),
                                Err(status) => break status,
                            }
                        }
                    }
                    Err(status) => status,
                };
                let transient = matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                );
                attempts += 1;
                if !transient || attempts > RESUME_ATTEMPTS {
                    let _ = events.send(Event::Failed(shard, status.into())).await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempts.min(10)))).await;
            }
        });
    }
}

fn start_of(position: Position) -> pb::StartingPosition {
    use pb::StartingPositionType as T;
    let (kind, timestamp_ms) = match position {
        Position::TrimHorizon => (T::TrimHorizon, 0),
        Position::Latest => (T::Latest, 0),
        Position::AtTimestamp(ms) => (T::AtTimestamp, ms),
    };
    pb::StartingPosition {
        r#type: kind as i32,
        sequence_number: String::new(),
        timestamp_ms,
    }
}
