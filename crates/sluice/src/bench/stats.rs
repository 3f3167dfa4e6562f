//! Counters and latency histograms shared by the workers of one phase, the live progress
//! line, and the final report (one human line and one JSON line per workload).

use hdrhistogram::Histogram;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// Latencies are recorded in microseconds, from 1 µs to one hour, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the workers of one phase have done so far.
pub struct Stats {
    requests: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    failed_records: AtomicU64,
    /// One histogram per worker, so recording never contends (the progress line reads them
    /// once a second).
    histograms: Vec<Mutex<Histogram<u64>>>,
    error_kinds: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Self {
            requests: AtomicU64::new(0),
            records: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            failed_records: AtomicU64::new(0),
            histograms: (0..workers.max(1))
                .map(|_| Mutex::new(new_histogram()))
                .collect(),
            error_kinds: Mutex::new(BTreeMap::new()),
        })
    }

    /// One completed request that moved `records` records carrying `bytes` bytes of data.
    pub fn success(&self, worker: usize, latency: Duration, records: u64, bytes: u64) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        lock(&self.histograms[worker % self.histograms.len()]).saturating_record(micros);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One read (e.g. a pushed event) that delivered one record per entry of `latencies`,
    /// carrying `bytes` bytes of data in all.
    pub fn deliveries(&self, worker: usize, latencies: &[Duration], bytes: u64) {
        {
            let mut histogram = lock(&self.histograms[worker % self.histograms.len()]);
            for latency in latencies {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                histogram.saturating_record(micros);
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.records
            .fetch_add(latencies.len() as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// One request that failed as a whole.
    pub fn error(&self, kind: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.error_kinds).entry(kind).or_default() += 1;
    }

    /// Records rejected inside an otherwise successful batch request.
    pub fn failed_records<'a>(&self, count: u64, codes: impl IntoIterator<Item = &'a str>) {
        self.failed_records.fetch_add(count, Ordering::Relaxed);
        let mut kinds = lock(&self.error_kinds);
        for code in codes {
            *kinds.entry(format!("record {code}")).or_default() += 1;
        }
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn failed_record_count(&self) -> u64 {
        self.failed_records.load(Ordering::Relaxed)
    }

    /// All workers' latencies merged.
    pub fn histogram(&self) -> Histogram<u64> {
        let mut merged = new_histogram();
        for histogram in &self.histograms {
            // Same bounds everywhere, so adding cannot fail.
            let _ = merged.add(&*lock(histogram));
        }
        merged
    }

    pub fn error_kinds(&self) -> BTreeMap<String, u64> {
        lock(&self.error_kinds).clone()
    }
}

/// Prints `name: records/s, MB/s, p99 so far` on stderr once a second until dropped.
pub struct Progress {
    task: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(name: &str, stats: &Arc<Stats>, enabled: bool) -> Self {
        if !enabled {
            return Self { task: None };
        }
        let name = name.to_owned();
        let stats = Arc::clone(stats);
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs(1));
            ticker.tick().await;
            let (mut last_records, mut last_bytes) = (0, 0);
            let mut last = tokio::time::Instant::now();
            loop {
                ticker.tick().await;
                let now = tokio::time::Instant::now();
                let seconds = now.duration_since(last).as_secs_f64().max(1e-3);
                let (records, bytes) = (stats.records(), stats.bytes());
                let p99 = ms(stats.histogram().value_at_quantile(0.99));
                let mut line = format!(
                    "{name}: {:.0} records/s, {:.1} MB/s, p99 {p99:.2} ms so far",
                    (records - last_records) as f64 / seconds,
                    (bytes - last_bytes) as f64 / seconds / 1e6,
                );
                let errors = stats.errors() + stats.failed_record_count();
                if errors > 0 {
                    line.push_str(&format!(", {errors} errors"));
                }
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K{line}");
                let _ = stderr.flush();
                (last_records, last_bytes, last) = (records, bytes, now);
            }
        });
        Self { task: Some(task) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}

/// Microseconds to milliseconds.
pub fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

pub fn round3(value: f64) -> f64 {
    if value.is_finite() {
        (value * 1000.0).round() / 1000.0
    } else {
        0.0
    }
}

/// The outcome of one workload.
pub struct Report {
    pub workload: String,
    pub requests: u64,
    pub records: u64,
    pub bytes: u64,
    pub errors: u64,
    pub failed_records: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
    pub concurrency: usize,
    pub record_size: usize,
    /// Records per request (PutRecords batch, 1 for PutRecord); `None` for reads.
    pub batch: Option<usize>,
    /// Paced phases: the requests/s that were asked for.
    pub target_rate: Option<f64>,
    /// Workload-specific fields appended to the JSON line.
    pub extra: Vec<(&'static str, Value)>,
    /// Replaces the standard human-readable line (workloads whose figures differ in kind).
    pub human: Option<String>,
    pub error_kinds: BTreeMap<String, u64>,
}

impl Report {
    pub fn from_stats(workload: &str, stats: &Stats, elapsed: Duration) -> Self {
        Self {
            workload: workload.to_owned(),
            requests: stats.requests(),
            records: stats.records(),
            bytes: stats.bytes(),
            errors: stats.errors(),
            failed_records: stats.failed_record_count(),
            elapsed,
            histogram: stats.histogram(),
            concurrency: 0,
            record_size: 0,
            batch: None,
            target_rate: None,
            extra: Vec::new(),
            human: None,
            error_kinds: stats.error_kinds(),
        }
    }

    fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.seconds()
    }

    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds()
    }

    pub fn requests_per_sec(&self) -> f64 {
        self.requests as f64 / self.seconds()
    }

    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            ms(self.histogram.value_at_quantile(quantile))
        }
    }

    pub fn max_ms(&self) -> f64 {
        if self.histogram.is_empty() {
            0.0
        } else {
            ms(self.histogram.max())
        }
    }

    /// One JSON object on one line, keys in a fixed order.
    pub fn json_line(&self) -> String {
        let mut fields: Vec<(&str, Value)> = vec![
            ("workload", Value::from(self.workload.as_str())),
            (
                "records_per_sec",
                Value::from(round3(self.records_per_sec())),
            ),
            ("mb_per_sec", Value::from(round3(self.mb_per_sec()))),
            (
                "requests_per_sec",
                Value::from(round3(self.requests_per_sec())),
            ),
            ("p50_ms", Value::from(self.quantile_ms(0.50))),
            ("p99_ms", Value::from(self.quantile_ms(0.99))),
            ("p999_ms", Value::from(self.quantile_ms(0.999))),
            ("max_ms", Value::from(self.max_ms())),
            ("errors", Value::from(self.errors)),
            ("failed_records", Value::from(self.failed_records)),
            ("requests", Value::from(self.requests)),
            ("records", Value::from(self.records)),
            (
                "duration_s",
                Value::from(round3(self.elapsed.as_secs_f64())),
            ),
            ("concurrency", Value::from(self.concurrency)),
            ("record_size", Value::from(self.record_size)),
        ];
        if let Some(batch) = self.batch {
            fields.push(("batch", Value::from(batch)));
        }
        if let Some(rate) = self.target_rate {
            fields.push(("target_rate", Value::from(round3(rate))));
        }
        fields.extend(self.extra.iter().map(|(k, v)| (*k, v.clone())));
        if !self.error_kinds.is_empty() {
            let kinds = self
                .error_kinds
                .iter()
                .map(|(k, v)| (k.clone(), Value::from(*v)))
                .collect();
            fields.push(("error_kinds", Value::Object(kinds)));
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// One line for people.
    pub fn human_line(&self) -> String {
        if let Some(line) = &self.human {
            return line.clone();
        }
        let mut line = format!(
            "{:<16} {:>10.0} records/s {:>8.1} MB/s {:>8.1} req/s | p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms | errors {}",
            self.workload,
            self.records_per_sec(),
            self.mb_per_sec(),
            self.requests_per_sec(),
            self.quantile_ms(0.50),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.max_ms(),
            self.errors,
        );
        if self.batch.is_some() {
            line.push_str(&format!(", failed records {}", self.failed_records));
        }
        let shape = match self.batch {
            Some(batch) => format!("{} B x {batch}", self.record_size),
            None => format!("{} B records", self.record_size),
        };
        line.push_str(&format!(
            " | {} workers, {shape}, {:.1} s",
            self.concurrency,
            self.elapsed.as_secs_f64()
        ));
        if let Some(rate) = self.target_rate {
            line.push_str(&format!(", target {rate:.1} req/s"));
        }
        line
    }
}
