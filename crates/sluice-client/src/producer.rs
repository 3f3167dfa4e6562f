//! A batching producer: records are grouped per shard, batched per node and sent to the
//! node leading their shard over its `Produce` stream.
//!
//! Order: a shard has at most one batch in flight, and the node writes a `Produce` batch
//! with the in-order rule (once a record of a shard is refused, that shard's later records
//! in the batch are refused too), so refused records are retried ahead of newer ones and
//! the records of a shard — so of a partition key — are written in the order they were
//! sent. After the stream's shards change (a split or merge), nothing is sent until every
//! batch sent before the change is answered, so records of a key never overtake each other
//! across a parent and its child.
//!
//! Delivery is at least once: a batch in flight when its node's stream breaks is sent
//! again (it may have been written). Backpressure: `send` waits while the records buffered
//! and in flight hold `buffer_bytes`.

use crate::routes::StreamRoutes;
use crate::{Client, Error, MAX_MESSAGE_BYTES};
use bytes::Bytes;
use sluice_proto::v1 as pb;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// How a [`Producer`] batches and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a record may wait for others to fill its batch.
    pub linger: Duration,
    /// Records per batch (at most 500, the PutRecords limit).
    pub batch_max_records: usize,
    /// Bytes of keys and data per batch (at most 5 MiB).
    pub batch_max_bytes: usize,
    /// Batches in flight per node.
    pub max_in_flight: usize,
    /// Attempts per record before it fails with [`Error::NotWritten`].
    pub max_attempts: u32,
    /// Bytes of records buffered and in flight before `send` waits.
    pub buffer_bytes: usize,
    /// How often the shard map is refreshed while producing.
    pub refresh_interval: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_max_records: 500,
            batch_max_bytes: 5 << 20,
            max_in_flight: 16,
            max_attempts: 10,
            buffer_bytes: 32 << 20,
            refresh_interval: Duration::from_secs(5),
        }
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub shard_id: String,
    pub sequence_number: String,
}

/// A batching, routing producer for one stream (see the module documentation). Records
/// sent before it is dropped are still written; call [`Producer::flush`] to wait for them.
pub struct Producer {
    commands: mpsc::UnboundedSender<Command>,
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
}

/// The outcome of one sent record: a future of where it was written. It may be dropped.
pub struct Delivery(oneshot::Receiver<Result<Ack, Error>>);

impl Future for Delivery {
    type Output = Result<Ack, Error>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(Error::Closed)))
    }
}

enum Command {
    Record(Pending),
    Flush(oneshot::Sender<()>),
}

struct Pending {
    partition_key: String,
    data: Bytes,
    attempts: u32,
    reply: oneshot::Sender<Result<Ack, Error>>,
    _buffer: OwnedSemaphorePermit,
}

const MAX_RECORD_BYTES: usize = 1 << 20;

impl Producer {
    pub(crate) async fn start(
        client: Client,
        stream: &str,
        config: ProducerConfig,
    ) -> Result<Producer, Error> {
        if config.batch_max_records == 0 || config.batch_max_records > 500 {
            return Err(Error::InvalidArgument(
                "batch_max_records must be 1 to 500".to_owned(),
            ));
        }
        if config.batch_max_bytes > 5 << 20 || config.buffer_bytes < MAX_RECORD_BYTES {
            return Err(Error::InvalidArgument(
                "batch_max_bytes must be at most 5 MiB and buffer_bytes at least 1 MiB".to_owned(),
            ));
        }
        // A stream still being created refuses writes: start once it takes them.
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.describe_stream(stream).await?.status == "CREATING"
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let routes = client.routes(stream).await?;
        let config = ProducerConfig {
            max_in_flight: config.max_in_flight.max(1),
            ..config
        };
        let (commands, received) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let buffer_bytes = config.buffer_bytes.min(Semaphore::MAX_PERMITS);
        let task = Task {
            client,
            stream: stream.to_owned(),
            config,
            routes,
            refreshed: Instant::now(),
            stale: false,
            queues: HashMap::new(),
            queued: 0,
            oldest: None,
            busy: HashSet::new(),
            retry_at: HashMap::new(),
            nodes: HashMap::new(),
            in_flight: HashMap::new(),
            barrier: HashSet::new(),
            next_batch: 0,
            generations: 0,
            flushes: Vec::new(),
            events_tx,
        };
        tokio::spawn(task.run(received, events));
        Ok(Producer {
            commands,
            buffer: Arc::new(Semaphore::new(buffer_bytes)),
            buffer_bytes,
        })
    }

    /// Queues a record; waits while the buffer is full. The returned future resolves to
    /// where the record was written (or why it was not) and may be dropped.
    pub async fn send(
        &self,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Result<Delivery, Error> {
        let partition_key = partition_key.into();
        let data = data.into();
        let chars = partition_key.chars().count();
        if chars == 0 || chars > 256 {
            return Err(Error::InvalidArgument(
                "a partition key has 1 to 256 characters".to_owned(),
            ));
        }
        let size = partition_key.len() + data.len();
        if size > MAX_RECORD_BYTES {
            return Err(Error::InvalidArgument(
                "a record is at most 1 MiB with its partition key".to_owned(),
            ));
        }
        let permits = u32::try_from(size.clamp(1, self.buffer_bytes)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.buffer)
            .acquire_many_owned(permits)
            .await
            .map_err(|_| Error::Closed)?;
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Record(Pending {
                partition_key,
                data,
                attempts: 0,
                reply,
                _buffer: permit,
            }))
            .map_err(|_| Error::Closed)?;
        Ok(Delivery(answer))
    }

    /// Waits until every record sent before has its outcome.
    pub async fn flush(&self) -> Result<(), Error> {
        let (done, finished) = oneshot::channel();
        self.commands
            .send(Command::Flush(done))
            .map_err(|_| Error::Closed)?;
        finished.await.map_err(|_| Error::Closed)
    }
}

enum Event {
    Ack(String, pb::ProduceAck),
    /// The node's stream of this generation ended or failed (`None`: none could be opened).
    Broken(String, Option<u64>),
}

struct NodeStream {
    requests: mpsc::UnboundedSender<pb::ProduceRequest>,
    in_flight: usize,
    generation: u64,
}

struct InFlight {
    node: String,
    /// The generation of the node's stream it was sent on.
    generation: Option<u64>,
    /// The shards its records belong to (each has no other batch in flight).
    shards: Vec<String>,
    records: Vec<Pending>,
}

/// The producer's task: owns the queues, the node streams and the batches in flight.
struct Task {
    client: Client,
    stream: String,
    config: ProducerConfig,
    routes: StreamRoutes,
    refreshed: Instant,
    /// An answer suggested the map is out of date.
    stale: bool,
    /// Records waiting, per shard id, oldest first.
    queues: HashMap<String, VecDeque<Pending>>,
    queued: usize,
    /// When the oldest waiting record arrived (the linger clock).
    oldest: Option<Instant>,
    /// Shards with a batch in flight.
    busy: HashSet<String>,
    /// Shards whose refused records wait before they are sent again.
    retry_at: HashMap<String, Instant>,
    /// Open `Produce` streams by node address ("" for the seed node).
    nodes: HashMap<String, NodeStream>,
    in_flight: HashMap<u64, InFlight>,
    /// Batches sent before the stream's shards changed: nothing is sent until they are
    /// answered.
    barrier: HashSet<u64>,
    next_batch: u64,
    /// Streams opened so far (each gets the next number).
    generations: u64,
    flushes: Vec<oneshot::Sender<()>>,
    events_tx: mpsc::UnboundedSender<Event>,
}

impl Task {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        let mut open = true;
        loop {
            let wake = self.next_wake();
            tokio::select! {
                command = commands.recv(), if open => match command {
                    Some(command) => {
                        self.take(command);
                        while let Ok(command) = commands.try_recv() {
                            self.take(command);
                        }
                    }
                    None => open = false,
                },
                Some(event) = events.recv() => self.handle(event),
                () = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now)), if wake.is_some() => {}
            }
            if self.stale || self.refreshed.elapsed() >= self.config.refresh_interval {
                self.refresh().await;
            }
            self.dispatch().await;
            if self.queued == 0 && self.in_flight.is_empty() {
                for done in self.flushes.drain(..) {
                    let _ = done.send(());
                }
                if !open {
                    return;
                }
            }
        }
    }

    /// When something waits on time: the linger of the oldest record or a retry. Times
    /// already past need no timer: what they wait for is sent at once, or waits for an
    /// answer (a shard or node busy, a barrier), which wakes the task anyway.
    fn next_wake(&self) -> Option<Instant> {
        let now = Instant::now();
        let linger = self.oldest.map(|at| at + self.config.linger);
        linger
            .into_iter()
            .chain(self.retry_at.values().copied())
            .filter(|at| *at > now)
            .min()
    }

    fn take(&mut self, command: Command) {
        match command {
            Command::Record(pending) => self.enqueue_back(pending),
            Command::Flush(done) => self.flushes.push(done),
        }
    }

    /// The queue of the shard a partition key routes to now.
    fn queue_of(&mut self, partition_key: &str) -> &mut VecDeque<Pending> {
        let shard = self
            .routes
            .shard_for(partition_key, None)
            .map_or("", |s| s.shard_id.as_str());
        if !self.queues.contains_key(shard) {
            self.queues.insert(shard.to_owned(), VecDeque::new());
        }
        self.queues.get_mut(shard).expect("inserted above")
    }

    fn enqueue_back(&mut self, pending: Pending) {
        self.queue_of(&pending.partition_key).push_back(pending);
        self.queued += 1;
        self.oldest.get_or_insert_with(Instant::now);
    }

    /// Puts refused records back ahead of the newer ones of their shard, in order, or
    /// fails those out of attempts.
    fn requeue(&mut self, records: Vec<Pending>, kind: &str, message: &str) {
        for mut pending in records.into_iter().rev() {
            pending.attempts += 1;
            if pending.attempts >= self.config.max_attempts {
                let _ = pending.reply.send(Err(Error::NotWritten {
                    attempts: pending.attempts,
                    kind: kind.to_owned(),
                    message: message.to_owned(),
                }));
                continue;
            }
            let shard = self
                .routes
                .shard_for(&pending.partition_key, None)
                .map_or_else(String::new, |s| s.shard_id.clone());
            let backoff = Duration::from_millis(20 * u64::from(pending.attempts.min(25)));
            self.retry_at
                .insert(shard.clone(), Instant::now() + backoff);
            self.queues.entry(shard).or_default().push_front(pending);
            self.queued += 1;
        }
        if self.queued > 0 {
            self.oldest.get_or_insert_with(Instant::now);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Ack(node, ack) => {
                let Some(batch) = self.in_flight.remove(&ack.batch_id) else {
                    return;
                };
                self.barrier.remove(&ack.batch_id);
                if let Some(stream) = self.nodes.get_mut(&node) {
                    stream.in_flight = stream.in_flight.saturating_sub(1);
                }
                for shard in &batch.shards {
                    self.busy.remove(shard);
                }
                if let Some(error) = ack.error {
                    // The whole batch was refused.
                    let retryable = matches!(
                        error.error_code.as_str(),
                        "InternalFailure" | "ProvisionedThroughputExceededException"
                    );
                    let records = batch.records.into_iter();
                    if retryable {
                        self.stale = true;
                        self.requeue(records.collect(), &error.error_code, &error.error_message);
                    } else {
                        for pending in records {
                            let _ = pending.reply.send(Err(Error::NotWritten {
                                attempts: pending.attempts + 1,
                                kind: error.error_code.clone(),
                                message: error.error_message.clone(),
                            }));
                        }
                    }
                    return;
                }
                let mut refused = Vec::new();
                let (mut kind, mut message) = (String::new(), String::new());
                for (pending, result) in batch.records.into_iter().zip(ack.records) {
                    match result.result {
                        Some(pb::put_records_result_entry::Result::Success(ok)) => {
                            let _ = pending.reply.send(Ok(Ack {
                                shard_id: ok.shard_id,
                                sequence_number: ok.sequence_number,
                            }));
                        }
                        Some(pb::put_records_result_entry::Result::Error(error)) => {
                            kind = error.error_code;
                            message = error.error_message;
                            refused.push(pending);
                        }
                        None => refused.push(pending),
                    }
                }
                if !refused.is_empty() {
                    if kind != "ProvisionedThroughputExceededException" {
                        self.stale = true;
                    }
                    self.requeue(refused, &kind, &message);
                }
            }
            Event::Broken(node, generation) => {
                if self
                    .nodes
                    .get(&node)
                    .is_some_and(|s| Some(s.generation) == generation)
                {
                    self.nodes.remove(&node);
                }
                self.stale = true;
                let lost: Vec<u64> = self
                    .in_flight
                    .iter()
                    .filter(|(_, b)| b.node == node && b.generation == generation)
                    .map(|(id, _)| *id)
                    .collect();
                for id in lost {
                    let Some(batch) = self.in_flight.remove(&id) else {
                        continue;
                    };
                    self.barrier.remove(&id);
                    for shard in &batch.shards {
                        self.busy.remove(shard);
                    }
                    // The node may have written them: at least once.
                    self.requeue(
                        batch.records,
                        "InternalFailure",
                        "the connection to the node was lost",
                    );
                }
            }
        }
    }

    async fn refresh(&mut self) {
        // At most five refreshes a second, however many answers ask for one.
        if self.refreshed.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.refreshed = Instant::now();
        self.stale = false;
        let mut routes = match self.client.routes(&self.stream).await {
            Ok(routes) => routes,
            Err(error) => {
                tracing::debug!(%error, "could not refresh the shard map");
                return;
            }
        };
        let before: Vec<&str> = self
            .routes
            .shards()
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        let after: Vec<&str> = routes
            .shards()
            .iter()
            .map(|s| s.shard_id.as_str())
            .collect();
        let reshaped = before != after;
        routes.keep_newer_leaders(&self.routes);
        self.routes = routes;
        if reshaped {
            // Batches already sent finish first; waiting records move to their new shard
            // in their order (those of one key all sat in one queue).
            self.barrier = self.in_flight.keys().copied().collect();
            let queues = std::mem::take(&mut self.queues);
            self.queued = 0;
            self.retry_at.clear();
            for (_, queue) in queues {
                for pending in queue {
                    self.enqueue_back(pending);
                }
            }
        }
    }

    /// Sends batches to every node with room for them, from the shards it leads that have
    /// records waiting and no batch in flight: each shard goes into one batch, so a node
    /// writes the batches of different shards side by side.
    async fn dispatch(&mut self) {
        if self.queued == 0 || !self.barrier.is_empty() {
            return;
        }
        let lingering = self
            .oldest
            .is_some_and(|at| at.elapsed() < self.config.linger);
        if lingering && self.queued < self.config.batch_max_records && self.flushes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut by_node: HashMap<String, Vec<String>> = HashMap::new();
        for (shard, queue) in &self.queues {
            if queue.is_empty()
                || self.busy.contains(shard)
                || self.retry_at.get(shard).is_some_and(|at| *at > now)
            {
                continue;
            }
            let node = self
                .routes
                .shards()
                .iter()
                .find(|s| &s.shard_id == shard)
                .and_then(|s| s.leader.clone())
                .unwrap_or_default();
            by_node.entry(node).or_default().push(shard.clone());
        }
        for (node, shards) in by_node {
            let mut shards = shards.into_iter().peekable();
            while shards.peek().is_some() {
                let room = self
                    .nodes
                    .get(&node)
                    .is_none_or(|s| s.in_flight < self.config.max_in_flight);
                if !room {
                    break;
                }
                let (batch_shards, records) = self.fill_batch(&mut shards);
                if records.is_empty() {
                    break;
                }
                self.queued -= records.len();
                self.send(node.clone(), batch_shards, records).await;
            }
        }
        self.queues.retain(|_, q| !q.is_empty());
        self.oldest = (self.queued > 0).then(Instant::now);
    }

    /// One batch from the next shards: each shard with records in it is marked busy; a
    /// shard whose records do not all fit ends the batch (the rest wait for its answer).
    fn fill_batch(
        &mut self,
        shards: &mut impl Iterator<Item = String>,
    ) -> (Vec<String>, Vec<Pending>) {
        let mut taken = Vec::new();
        let mut records = Vec::with_capacity(self.queued.min(self.config.batch_max_records));
        let mut bytes = 0;
        for shard in shards {
            let Some(queue) = self.queues.get_mut(&shard) else {
                continue;
            };
            let mut full = false;
            let before = records.len();
            while let Some(next) = queue.front() {
                let size = next.partition_key.len() + next.data.len();
                if records.len() == self.config.batch_max_records
                    || (bytes + size > self.config.batch_max_bytes && !records.is_empty())
                {
                    full = true;
                    break;
                }
                bytes += size;
                records.extend(queue.pop_front());
            }
            if records.len() > before {
                self.retry_at.remove(&shard);
                self.busy.insert(shard.clone());
                taken.push(shard);
            }
            if full {
                break;
            }
        }
        (taken, records)
    }

    async fn send(&mut self, node: String, shards: Vec<String>, records: Vec<Pending>) {
        let batch_id = self.next_batch;
        self.next_batch += 1;
        let request = pb::ProduceRequest {
            batch_id,
            stream_name: self.stream.clone(),
            records: records
                .iter()
                .map(|p| pb::PutRecordsRequestEntry {
                    partition_key: p.partition_key.clone(),
                    explicit_hash_key: None,
                    data: p.data.clone(),
                })
                .collect(),
        };
        let generation = match self.stream_to(&node).await {
            Some(stream) => {
                stream.in_flight += 1;
                // A closed stream reports itself broken: the batch is sent again then.
                let _ = stream.requests.send(request);
                Some(stream.generation)
            }
            None => None,
        };
        self.in_flight.insert(
            batch_id,
            InFlight {
                node: node.clone(),
                generation,
                shards,
                records,
            },
        );
        if generation.is_none() {
            let _ = self.events_tx.send(Event::Broken(node, None));
        }
    }

    /// The node's `Produce` stream, opened on first use.
    async fn stream_to(&mut self, node: &str) -> Option<&mut NodeStream> {
        if !self.nodes.contains_key(node) {
            let channel = if node.is_empty() {
                self.client.seed()
            } else {
                match self.client.node(node).await {
                    Ok(channel) => channel,
                    Err(error) => {
                        tracing::debug!(node, %error, "could not reach a shard leader");
                        return None;
                    }
                }
            };
            let (requests, outgoing) = mpsc::unbounded_channel::<pb::ProduceRequest>();
            let mut outgoing = outgoing;
            let outgoing = futures_util::stream::poll_fn(move |cx| outgoing.poll_recv(cx));
            let mut data = pb::data_client::DataClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let events = self.events_tx.clone();
            let name = node.to_owned();
            self.generations += 1;
            let generation = self.generations;
            tokio::spawn(async move {
                match data.produce(outgoing).await {
                    Ok(response) => {
                        let mut acks = response.into_inner();
                        while let Ok(Some(ack)) = acks.message().await {
                            if events.send(Event::Ack(name.clone(), ack)).is_err() {
                                return;
                            }
                        }
                    }
                    Err(status) => {
                        tracing::debug!(node = %name, error = %status, "a produce stream failed");
                    }
                }
                let _ = events.send(Event::Broken(name, Some(generation)));
            });
            self.nodes.insert(
                node.to_owned(),
                NodeStream {
                    requests,
                    in_flight: 0,
                    generation,
                },
            );
        }
        self.nodes.get_mut(node)
    }
}
