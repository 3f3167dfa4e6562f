//! The `sluice.v1.Data` service: PutRecords with the Kinesis limits, and ReadShard, a
//! server stream over repeated `Broker::get_records` calls.

use crate::admin::{shard_id, stream_name, violation};
use crate::status_of;
use sluice_cluster::{Broker, BrokerError, GetRecordsOutput, IteratorStart, PutRecordInput};
use sluice_proto::v1 as pb;
use sluice_proto::v1::data_server::{Data, DataServer};
use sluice_types::limits::{
    MAX_GET_RECORDS, MAX_PUT_RECORDS, MAX_PUT_RECORDS_BYTES, MAX_RECORD_BYTES,
};
use sluice_types::partition_key_hash;
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;
use tonic::{Request, Response, Status};
use tracing::Instrument;

/// The longest pause between reads of a caught-up shard.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The first pause once a shard is caught up.
const MIN_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// The pause after a provisioned shard refused a read (5 reads per second per shard).
const THROTTLED_PAUSE: Duration = Duration::from_millis(200);
/// Longest partition key, in characters.
const MAX_PARTITION_KEY_CHARS: usize = 256;

/// The `sluice.v1.Data` service.
pub struct DataApi {
    broker: Broker,
    access: crate::Access,
}

/// Requests may be larger than tonic's 4 MiB default, so that a PutRecords call over the
/// 5 MiB limit gets the Kinesis error rather than a transport one.
const MAX_REQUEST_BYTES: usize = 2 * MAX_PUT_RECORDS_BYTES;

pub fn data_service(
    broker: Broker,
    access: crate::Access,
) -> crate::WithMethodPath<DataServer<DataApi>> {
    crate::WithMethodPath::new(
        DataServer::new(DataApi { broker, access }).max_decoding_message_size(MAX_REQUEST_BYTES),
    )
}

type ProduceStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<pb::ProduceAck, Status>> + Send>>;

/// The acks of a produce stream as a `Stream`.
fn acks_stream(
    mut receiver: tokio::sync::mpsc::Receiver<Result<pb::ProduceAck, Status>>,
) -> impl futures_core::Stream<Item = Result<pb::ProduceAck, Status>> + Send {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

/// One PutRecords batch: the Kinesis limits, the stream lookup, the write, the results.
/// `in_order`: a shard's admitted records are a prefix of its records in the batch.
/// `hashes`: the hash keys the records route by, when already computed (`routing_hashes`),
/// so that no partition key is hashed twice.
async fn put_batch(
    broker: &Broker,
    requested_stream: &str,
    entries: Vec<pb::PutRecordsRequestEntry>,
    in_order: bool,
    hashes: Option<Vec<u128>>,
) -> Result<pb::PutRecordsResponse, Status> {
    let name = stream_name(requested_stream)?;
    let count = entries.len();
    if count == 0 || count > MAX_PUT_RECORDS {
        return Err(violation(
            Some(&format!("[{count} records]")),
            "records",
            &format!("Member must have length between 1 and {MAX_PUT_RECORDS}"),
        ));
    }
    let mut total = 0usize;
    for (i, record) in entries.iter().enumerate() {
        let key_chars = record.partition_key.chars().count();
        if key_chars == 0 || key_chars > MAX_PARTITION_KEY_CHARS {
            return Err(violation(
                Some(&record.partition_key),
                &format!("records.{}.member.partitionKey", i + 1),
                &format!("Member must have length between 1 and {MAX_PARTITION_KEY_CHARS}"),
            ));
        }
        let size = record.data.len() + record.partition_key.len();
        if size > MAX_RECORD_BYTES {
            let len = record.data.len();
            return Err(violation(
                Some(&format!(
                    "java.nio.HeapByteBuffer[pos=0 lim={len} cap={len}]"
                )),
                &format!("records.{}.member.data", i + 1),
                &format!("Member must have length less than or equal to {MAX_RECORD_BYTES}"),
            ));
        }
        total += size;
    }
    if total > MAX_PUT_RECORDS_BYTES {
        return Err(status_of(BrokerError::InvalidArgument(
            "Records size exceeds 5 MB limit".to_owned(),
        )));
    }
    // As Kinesis does: the stream is looked up before the hash keys are read.
    let stream = broker.stream(name).map_err(status_of)?;
    if !matches!(
        stream.status,
        sluice_cluster::StreamStatus::Active | sluice_cluster::StreamStatus::Updating
    ) {
        return Err(status_of(BrokerError::NotFound(format!(
            "Stream {name} under account {} not found.",
            broker.identity().account
        ))));
    }
    let mut records = Vec::with_capacity(count);
    for (i, record) in entries.into_iter().enumerate() {
        let explicit_hash_key = match record.explicit_hash_key {
                None => hashes.as_ref().and_then(|hashes| hashes.get(i).copied()),
                Some(text) => Some(text.parse::<u128>().ok().filter(|_| !text.starts_with('+')).ok_or_else(|| {
                    status_of(BrokerError::InvalidArgument(format!(
                        "Invalid ExplicitHashKey. ExplicitHashKey must be in the range: [0, 2^128-1]. Specified value was {text}"
                    )))
                })?),
            };
        records.push(PutRecordInput {
            partition_key: record.partition_key,
            explicit_hash_key,
            data: record.data,
        });
    }
    let results = if in_order {
        broker.put_records_in_order(name, records).await
    } else {
        broker.put_records(name, records).await
    }
    .map_err(status_of)?;
    let failed = results.iter().filter(|r| r.is_err()).count() as u32;
    Ok(pb::PutRecordsResponse {
        failed_record_count: failed,
        records: results
            .into_iter()
            .map(|result| pb::PutRecordsResultEntry {
                result: Some(match result {
                    Ok(out) => {
                        pb::put_records_result_entry::Result::Success(pb::PutRecordsSuccess {
                            shard_id: out.shard.to_string(),
                            sequence_number: out.sequence.to_string(),
                        })
                    }
                    Err(failure) => {
                        pb::put_records_result_entry::Result::Error(pb::PutRecordsError {
                            error_code: failure.code.to_owned(),
                            error_message: failure.message,
                        })
                    }
                }),
            })
            .collect(),
    })
}

/// Batches of one produce stream written at the same time, at most.
const MAX_PRODUCE_BATCHES_RUNNING: usize = 16;

/// One produce batch: the access check, the write with the in-order rule, the ack.
async fn produce_batch(
    broker: &Broker,
    caller: Option<&sluice_cluster::Caller>,
    batch: pb::ProduceRequest,
    hashes: Option<Vec<u128>>,
) -> pb::ProduceAck {
    let batch_id = batch.batch_id;
    let allowed = match caller {
        Some(caller) => broker
            .authorize(
                caller,
                "kinesis:PutRecords",
                &broker.stream_arn(&batch.stream_name),
            )
            .map_err(status_of),
        None => Ok(()),
    };
    let outcome = match allowed {
        Ok(()) => put_batch(broker, &batch.stream_name, batch.records, true, hashes).await,
        Err(status) => Err(status),
    };
    match outcome {
        Ok(response) => pb::ProduceAck {
            batch_id,
            failed_record_count: response.failed_record_count,
            records: response.records,
            error: None,
        },
        Err(status) => pb::ProduceAck {
            batch_id,
            failed_record_count: 0,
            records: Vec::new(),
            error: Some(pb::PutRecordsError {
                error_code: status
                    .metadata()
                    .get(crate::ERROR_TYPE_KEY)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("InternalFailure")
                    .to_owned(),
                error_message: status.message().to_owned(),
            }),
        },
    }
}

/// The hash-key ranges a produce batch writes to: those of the open shards its records
/// route to when it arrives. Two batches whose ranges are disjoint share no partition key
/// (nor any explicit hash key), whatever splits and merges happen while they are written.
#[derive(Debug, PartialEq)]
enum Claim {
    /// A batch that could not be routed (unknown stream, bad hash key): it runs alone.
    All,
    /// Disjoint inclusive ranges, in order.
    Ranges(Vec<(u128, u128)>),
}

/// The hash key each record routes by: its explicit hash key, else the MD5 of its partition
/// key. `None` when an explicit hash key is not a number (`put_batch` refuses the batch).
fn routing_hashes(records: &[pb::PutRecordsRequestEntry]) -> Option<Vec<u128>> {
    records
        .iter()
        .map(|record| match &record.explicit_hash_key {
            Some(text) => text.parse::<u128>().ok(),
            None => Some(partition_key_hash(&record.partition_key)),
        })
        .collect()
}

impl Claim {
    /// The claim of a batch to `stream` whose records route by `hashes` (`None`: a batch
    /// that cannot be routed).
    fn of(broker: &Broker, stream: &str, hashes: Option<&[u128]>) -> Claim {
        let Some(hashes) = hashes else {
            return Claim::All;
        };
        let open = broker.with_state(|state| {
            state.streams.get(stream).map(|stream| {
                stream
                    .open_shards()
                    .map(|shard| (shard.start_hash, shard.end_hash))
                    .collect::<Vec<_>>()
            })
        });
        let Some(mut open) = open else {
            return Claim::All;
        };
        open.sort_unstable();
        let mut used = vec![false; open.len()];
        for hash in hashes {
            match used.get_mut(open.partition_point(|(_, end)| end < hash)) {
                Some(used) => *used = true,
                None => return Claim::All,
            }
        }
        Claim::Ranges(
            open.into_iter()
                .zip(used)
                .filter_map(|(range, used)| used.then_some(range))
                .collect(),
        )
    }

    fn overlaps(&self, other: &Claim) -> bool {
        let (Claim::Ranges(mine), Claim::Ranges(theirs)) = (self, other) else {
            return true;
        };
        let (mut i, mut j) = (0, 0);
        while let (Some(a), Some(b)) = (mine.get(i), theirs.get(j)) {
            if a.0 <= b.1 && b.0 <= a.1 {
                return true;
            }
            if a.1 < b.1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        false
    }
}

type BatchStream =
    Pin<Box<dyn futures_core::Stream<Item = Result<pb::ReadShardBatch, Status>> + Send>>;

#[tonic::async_trait]
impl Data for DataApi {
    type ReadShardStream = BatchStream;
    type ProduceStream = ProduceStream;

    #[tracing::instrument(name = "grpc.put_records", skip_all, fields(stream = %request.get_ref().stream_name))]
    async fn put_records(
        &self,
        request: Request<pb::PutRecordsRequest>,
    ) -> Result<Response<pb::PutRecordsResponse>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:PutRecords",
            &request.get_ref().stream_name,
        )?;
        let request = request.into_inner();
        put_batch(
            &self.broker,
            &request.stream_name,
            request.records,
            false,
            None,
        )
        .await
        .map(Response::new)
    }

    #[tracing::instrument(name = "grpc.produce", skip_all)]
    async fn produce(
        &self,
        request: Request<tonic::Streaming<pb::ProduceRequest>>,
    ) -> Result<Response<ProduceStream>, Status> {
        let caller = self.access.caller(&request)?;
        let broker = self.broker.clone();
        let mut incoming = request.into_inner();
        let (acks, outgoing) = tokio::sync::mpsc::channel::<Result<pb::ProduceAck, Status>>(
            MAX_PRODUCE_BATCHES_RUNNING,
        );
        // Batches start in arrival order; one starts only once every earlier batch sharing
        // a shard with it has finished, so each shard's batches are written one after
        // another while batches of different shards are written side by side.
        tokio::spawn(
            async move {
                let mut running = tokio::task::JoinSet::new();
                let mut claims: HashMap<tokio::task::Id, Claim> = HashMap::new();
                loop {
                    let batch = match incoming.message().await {
                        Ok(Some(batch)) => batch,
                        Ok(None) => break,
                        Err(status) => {
                            tracing::debug!(error = %status, "produce stream ended by the client");
                            break;
                        }
                    };
                    let hashes = routing_hashes(&batch.records);
                    let claim = Claim::of(&broker, &batch.stream_name, hashes.as_deref());
                    while claims.len() >= MAX_PRODUCE_BATCHES_RUNNING
                        || claims.values().any(|running| running.overlaps(&claim))
                    {
                        match running.join_next_with_id().await {
                            Some(Ok((id, ()))) => claims.remove(&id),
                            Some(Err(error)) => claims.remove(&error.id()),
                            None => break,
                        };
                    }
                    let broker = broker.clone();
                    let caller = caller.clone();
                    let acks = acks.clone();
                    let span = tracing::info_span!(
                        "grpc.produce_batch",
                        stream = %batch.stream_name,
                        batch = batch.batch_id
                    );
                    let task = running.spawn(
                        async move {
                            let ack = produce_batch(&broker, caller.as_ref(), batch, hashes).await;
                            let _ = acks.send(Ok(ack)).await;
                        }
                        .instrument(span),
                    );
                    claims.insert(task.id(), claim);
                }
                // The batches already started finish and are answered (the ack stream ends
                // when the last of them drops its sender).
                running.detach_all();
            }
            .instrument(tracing::Span::current()),
        );
        Ok(Response::new(Box::pin(acks_stream(outgoing))))
    }

    #[tracing::instrument(name = "grpc.read_shard", skip_all, fields(stream = %request.get_ref().stream_name, shard = %request.get_ref().shard_id))]
    async fn read_shard(
        &self,
        request: Request<pb::ReadShardRequest>,
    ) -> Result<Response<BatchStream>, Status> {
        self.access.check_stream(
            &request,
            "kinesis:GetRecords",
            &request.get_ref().stream_name,
        )?;
        let request = request.into_inner();
        let name = stream_name(&request.stream_name)?.to_owned();
        let shard = shard_id(&self.broker, &name, &request.shard_id)?;
        let limit = match request.max_records_per_batch as usize {
            0 => MAX_GET_RECORDS,
            n if n <= MAX_GET_RECORDS => n,
            n => {
                return Err(violation(
                    Some(&n.to_string()),
                    "maxRecordsPerBatch",
                    &format!("Member must have value less than or equal to {MAX_GET_RECORDS}"),
                ));
            }
        };
        let start = iterator_start(request.starting_position.unwrap_or_default())?;
        let iterator = self
            .broker
            .get_shard_iterator(&name, &shard.to_string(), start.clone())
            .await
            .map_err(status_of)?;
        let reader = Reader {
            broker: self.broker.clone(),
            name,
            shard: shard.to_string(),
            start,
            iterator: Some(iterator),
            last_sequence: None,
            limit,
        };
        Ok(Response::new(Box::pin(batches(reader))))
    }
}

/// The broker's starting position for a protobuf one.
pub(crate) fn iterator_start(position: pb::StartingPosition) -> Result<IteratorStart, Status> {
    Ok(match pb::StartingPositionType::try_from(position.r#type) {
        Ok(pb::StartingPositionType::TrimHorizon) => IteratorStart::TrimHorizon,
        Ok(pb::StartingPositionType::Latest) => IteratorStart::Latest,
        Ok(pb::StartingPositionType::AtSequenceNumber) => {
            IteratorStart::AtSequence(position.sequence_number)
        }
        Ok(pb::StartingPositionType::AfterSequenceNumber) => {
            IteratorStart::AfterSequence(position.sequence_number)
        }
        Ok(pb::StartingPositionType::AtTimestamp) => {
            IteratorStart::AtTimestampMs(position.timestamp_ms)
        }
        _ => {
            return Err(status_of(BrokerError::InvalidArgument(
                "starting_position.type must be set".to_owned(),
            )));
        }
    })
}

/// One ReadShard call's position in its shard.
struct Reader {
    broker: Broker,
    name: String,
    shard: String,
    /// Where the call started, to start again if the iterator expired before any record.
    start: IteratorStart,
    /// `None` once the shard is finished.
    iterator: Option<String>,
    last_sequence: Option<String>,
    limit: usize,
}

impl Reader {
    /// The next batch with records, or the last one of a finished shard; `None` when the
    /// shard is finished. Waits while the shard is caught up.
    async fn next_batch(&mut self) -> Option<Result<pb::ReadShardBatch, Status>> {
        let mut pause = MIN_POLL_INTERVAL;
        loop {
            let iterator = self.iterator.clone()?;
            match self.broker.get_records(&iterator, self.limit).await {
                Ok(out) => {
                    self.iterator = out.next_iterator.clone();
                    if !out.records.is_empty() || out.child_shards.is_some() {
                        return Some(Ok(self.batch(out)));
                    }
                }
                Err(BrokerError::ThroughputExceeded(_)) => {
                    tokio::time::sleep(THROTTLED_PAUSE).await;
                    continue;
                }
                Err(BrokerError::ExpiredIterator(_)) => {
                    // The client kept us waiting; go on from the last record sent.
                    let start = match &self.last_sequence {
                        Some(last) => IteratorStart::AfterSequence(last.clone()),
                        None => self.start.clone(),
                    };
                    match self
                        .broker
                        .get_shard_iterator(&self.name, &self.shard, start)
                        .await
                    {
                        Ok(fresh) => {
                            self.iterator = Some(fresh);
                            continue;
                        }
                        Err(error) => {
                            self.iterator = None;
                            return Some(Err(status_of(error)));
                        }
                    }
                }
                Err(error) => {
                    self.iterator = None;
                    return Some(Err(status_of(error)));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_POLL_INTERVAL);
        }
    }

    fn batch(&mut self, out: GetRecordsOutput) -> pb::ReadShardBatch {
        let records: Vec<pb::Record> = out
            .records
            .iter()
            .map(|r| crate::record_pb(out.shard, r))
            .collect();
        if let Some(last) = records.last() {
            self.last_sequence = Some(last.sequence_number.clone());
        }
        let finished = out.child_shards.is_some();
        pb::ReadShardBatch {
            records,
            millis_behind_latest: out.millis_behind_latest,
            child_shards: out
                .child_shards
                .unwrap_or_default()
                .iter()
                .map(crate::child_shard_pb)
                .collect(),
            continuation_sequence_number: if finished {
                None
            } else {
                self.last_sequence.clone()
            },
        }
    }
}

/// The batches of one ReadShard call. The stream lives as long as the client reads it:
/// when the client goes away tonic drops it, and with it any pending read or pause.
fn batches(
    reader: Reader,
) -> impl futures_core::Stream<Item = Result<pb::ReadShardBatch, Status>> + Send {
    futures_util::stream::unfold(reader, |mut reader| async move {
        let item = reader.next_batch().await?;
        Some((item, reader))
    })
}

#[cfg(test)]
mod claim_tests {
    use super::Claim;

    #[test]
    fn claims_overlap_when_a_range_meets_another() {
        let ranges = |r: &[(u128, u128)]| Claim::Ranges(r.to_vec());
        let low_and_high = ranges(&[(0, 9), (30, 39)]);
        assert!(!low_and_high.overlaps(&ranges(&[(10, 19), (20, 29)])));
        assert!(!low_and_high.overlaps(&ranges(&[(40, u128::MAX)])));
        assert!(low_and_high.overlaps(&ranges(&[(10, 19), (39, 45)])));
        assert!(low_and_high.overlaps(&ranges(&[(5, 5)])));
        // A child's range inside its parent's: the same keys.
        assert!(ranges(&[(0, 99)]).overlaps(&ranges(&[(50, 59)])));
        assert!(!ranges(&[]).overlaps(&low_and_high));
        assert!(Claim::All.overlaps(&ranges(&[])));
        assert!(low_and_high.overlaps(&Claim::All));
    }
}
