//! Per-shard throughput limits in the manner of Kinesis Data Streams' provisioned mode.
//!
//! AWS gives every shard a write budget of 1 MiB/s and 1,000 records/s and a read budget
//! of 2 MiB/s and 5 `GetRecords` calls/s; each consumer registered for enhanced fan-out
//! gets its own 2 MiB/s per shard. Going over a write or read budget is answered with
//! `ProvisionedThroughputExceededException` (for `PutRecords`, per record); fan-out
//! budgets only pace pushes and never fail a call.
//!
//! Every budget here is a [`TokenBucket`]: tokens refill continuously with elapsed
//! milliseconds, and the bucket holds at most `burst` tokens. The defaults hold one
//! second's worth (the quotas are stated per second, and the limiter AWS ships in its own
//! Kinesis Producer Library uses buckets of exactly one second's worth for these limits).
//! Two documented AWS behaviours go beyond a plain bucket, and both are modelled as
//! *debt* (a negative balance that must be refilled before anything else is admitted):
//!
//! * A `GetRecords` call may return up to 10 MiB although the shard reads 2 MiB/s; AWS
//!   then throttles the shard's following calls for up to five seconds. [`ShardLimits`]
//!   admits a call while the read-byte budget is not in debt and charges the bytes the
//!   call actually returned afterwards, which may put it in debt: after a 10 MiB read
//!   from a full bucket calls are refused for 4 s, from a drained one for 5 s.
//! * A stream whose maximum record size was raised above 1 MiB accepts a record larger
//!   than the write-byte bucket "by temporarily bursting beyond its sustained write
//!   throughput" (AWS's words). Such a record is admitted when the byte bucket is full
//!   and leaves it in debt, so the shard takes no more writes until it has been repaid.
//!
//! Records of one `PutRecords` call are judged one by one, in order: a throttled record
//! does not stop a later, smaller one from being admitted, as AWS documents ("a single
//! record failure does not stop the processing of subsequent records").
//!
//! Time is always passed in as epoch milliseconds from the broker's clock, so the module
//! never reads the system time and tests control it exactly. A clock that steps back is
//! tolerated: no tokens are added until it passes the latest time seen. Balances are kept
//! in thousandths of a token, so refill by the millisecond is exact integer arithmetic.
//!
//! Entry types: [`ShardLimits`] with [`ShardLimitsConfig`], [`TokenBucket`] with [`Rate`],
//! and [`rate_exceeded_message`] for the AWS error text.

/// One mebibyte, the unit AWS states the shard limits in.
pub const MIB: u64 = 1024 * 1024;

/// Provisioned write bytes per second per shard (data plus partition key).
pub const WRITE_BYTES_PER_SEC: u64 = MIB;

/// Provisioned records written per second per shard.
pub const WRITE_RECORDS_PER_SEC: u64 = 1_000;

/// Provisioned bytes read by `GetRecords` per second per shard.
pub const READ_BYTES_PER_SEC: u64 = 2 * MIB;

/// Provisioned `GetRecords` calls per second per shard.
pub const READ_CALLS_PER_SEC: u64 = 5;

/// Bytes per second pushed to each enhanced fan-out consumer per shard.
pub const FAN_OUT_BYTES_PER_SEC: u64 = 2 * MIB;

/// Balances are kept in thousandths of a token: a bucket refilling `n` tokens per
/// second gains exactly `n` of these units per millisecond.
const SCALE: i128 = 1_000;

/// How fast a [`TokenBucket`] refills and how much it can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second (spread evenly over the milliseconds).
    pub per_second: u64,
    /// The most tokens the bucket holds; a full bucket admits this much at once.
    pub burst: u64,
}

impl Rate {
    /// A rate whose bucket holds exactly one second's worth of tokens.
    pub const fn per_second(per_second: u64) -> Rate {
        Rate {
            per_second,
            burst: per_second,
        }
    }

    /// The pacing rate of one enhanced fan-out consumer on one shard (2 MiB/s).
    pub const fn fan_out() -> Rate {
        Rate::per_second(FAN_OUT_BYTES_PER_SEC)
    }
}

/// A token bucket refilled by elapsed milliseconds, holding at most [`Rate::burst`]
/// tokens, which may be driven into debt by the operations that say so.
///
/// A new bucket starts full. The bucket is *in debt* while its balance is negative;
/// only [`TokenBucket::take_allowing_debt`] and [`TokenBucket::charge`] can put it there.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: Rate,
    /// Balance in thousandths of a token, as of `last_ms`; never above the capacity.
    balance: i128,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate`, as of `now_ms`.
    pub fn new(rate: Rate, now_ms: u64) -> Self {
        TokenBucket {
            rate,
            balance: capacity(rate),
            last_ms: now_ms,
        }
    }

    /// The rate this bucket was made with.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes `amount` tokens if all of them are available at `now_ms`; takes nothing and
    /// returns `false` otherwise. An amount above the burst can never be taken.
    pub fn try_take(&mut self, amount: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        let needed = scaled(amount);
        if self.balance >= needed {
            self.balance -= needed;
            true
        } else {
            false
        }
    }

    /// Takes `amount` tokens if the bucket is not in debt at `now_ms`, even when fewer
    /// are available: the balance may go negative, and nothing more is admitted until
    /// refill has repaid the debt. Returns `false` (taking nothing) while in debt.
    pub fn take_allowing_debt(&mut self, amount: u64, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.balance < 0 {
            return false;
        }
        self.balance = self.balance.saturating_sub(scaled(amount));
        true
    }

    /// Takes `amount` tokens unconditionally, going into (further) debt if need be: for
    /// usage that has already happened, such as the bytes a read returned.
    pub fn charge(&mut self, amount: u64, now_ms: u64) {
        self.refill(now_ms);
        self.balance = self.balance.saturating_sub(scaled(amount));
    }

    /// Milliseconds from `now_ms` until `amount` tokens are available (0 if they are
    /// now). `wait_ms(0, now)` is the time until the bucket is out of debt. An amount the
    /// bucket can never hold (above the burst, or any shortfall with a zero refill rate)
    /// yields `u64::MAX`.
    pub fn wait_ms(&self, amount: u64, now_ms: u64) -> u64 {
        let balance = self.balance_at(now_ms);
        let needed = scaled(amount);
        if balance >= needed {
            return 0;
        }
        if amount > self.rate.burst || self.rate.per_second == 0 {
            return u64::MAX;
        }
        let shortfall = needed - balance;
        let per_ms = i128::from(self.rate.per_second);
        let ms = (shortfall + per_ms - 1) / per_ms;
        u64::try_from(ms).unwrap_or(u64::MAX)
    }

    /// Whole tokens available at `now_ms` (0 while in debt).
    pub fn available(&self, now_ms: u64) -> u64 {
        let whole = self.balance_at(now_ms).max(0) / SCALE;
        u64::try_from(whole).unwrap_or(u64::MAX)
    }

    /// Whether the balance is negative at `now_ms`.
    pub fn in_debt(&self, now_ms: u64) -> bool {
        self.balance_at(now_ms) < 0
    }

    /// Whether the bucket holds its full burst at `now_ms`.
    pub fn is_full(&self, now_ms: u64) -> bool {
        self.balance_at(now_ms) >= capacity(self.rate)
    }

    fn refill(&mut self, now_ms: u64) {
        self.balance = self.balance_at(now_ms);
        self.last_ms = self.last_ms.max(now_ms);
    }

    fn balance_at(&self, now_ms: u64) -> i128 {
        let capacity = capacity(self.rate);
        if now_ms <= self.last_ms || self.balance >= capacity {
            return self.balance;
        }
        let elapsed = i128::from(now_ms - self.last_ms);
        let gained = elapsed.saturating_mul(i128::from(self.rate.per_second));
        self.balance.saturating_add(gained).min(capacity)
    }
}

fn capacity(rate: Rate) -> i128 {
    scaled(rate.burst)
}

fn scaled(amount: u64) -> i128 {
    i128::from(amount) * SCALE
}

/// The per-shard limits to enforce. `Default` is AWS's provisioned mode, enabled.
///
/// Every budget's bucket holds one second's worth. A rate of 0 admits nothing on that
/// dimension (use `enabled: false` to switch limits off altogether).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLimitsConfig {
    /// When false, every write and read is admitted and nothing is tracked.
    pub enabled: bool,
    /// Write bytes (data plus partition key) per second; AWS: 1 MiB.
    pub write_bytes_per_sec: u64,
    /// Records written per second; AWS: 1,000.
    pub write_records_per_sec: u64,
    /// Bytes returned by `GetRecords` per second; AWS: 2 MiB.
    pub read_bytes_per_sec: u64,
    /// `GetRecords` calls per second; AWS: 5.
    pub read_calls_per_sec: u64,
}

impl Default for ShardLimitsConfig {
    fn default() -> Self {
        ShardLimitsConfig {
            enabled: true,
            write_bytes_per_sec: WRITE_BYTES_PER_SEC,
            write_records_per_sec: WRITE_RECORDS_PER_SEC,
            read_bytes_per_sec: READ_BYTES_PER_SEC,
            read_calls_per_sec: READ_CALLS_PER_SEC,
        }
    }
}

impl ShardLimitsConfig {
    /// A configuration that admits everything.
    pub fn disabled() -> Self {
        ShardLimitsConfig {
            enabled: false,
            ..ShardLimitsConfig::default()
        }
    }
}

/// Per-shard write and read limiters (records and bytes in; calls and bytes out).
///
/// One value per shard, owned by whoever serialises the shard's requests; all methods
/// take the current time in epoch milliseconds.
#[derive(Debug, Clone)]
pub struct ShardLimits {
    enabled: bool,
    write_bytes: TokenBucket,
    write_records: TokenBucket,
    read_bytes: TokenBucket,
    read_calls: TokenBucket,
}

impl ShardLimits {
    /// Limiters for one shard with every budget full as of `now_ms`.
    pub fn new(config: &ShardLimitsConfig, now_ms: u64) -> Self {
        let bucket = |per_second| TokenBucket::new(Rate::per_second(per_second), now_ms);
        ShardLimits {
            enabled: config.enabled,
            write_bytes: bucket(config.write_bytes_per_sec),
            write_records: bucket(config.write_records_per_sec),
            read_bytes: bucket(config.read_bytes_per_sec),
            read_calls: bucket(config.read_calls_per_sec),
        }
    }

    /// Whether limits are enforced at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Admits as many of `record_sizes` (bytes of data plus partition key, in request
    /// order) as the budgets allow, returning one flag per record: `true` admitted,
    /// `false` throttled.
    ///
    /// A record is admitted only if both the record and the byte budget allow it, and
    /// then it is charged to both. Records are judged independently, in order: after a
    /// throttled record a later, smaller one may still fit and be admitted, as AWS does
    /// per record in `PutRecords`; the caller keeps the admitted records in their request
    /// order. A record larger than the byte burst (possible once a stream's maximum
    /// record size is raised above 1 MiB) is admitted only when the byte budget is full,
    /// and leaves it in debt.
    pub fn admit_writes(&mut self, record_sizes: &[u64], now_ms: u64) -> Vec<bool> {
        record_sizes
            .iter()
            .map(|&size| self.admit_write(size, now_ms))
            .collect()
    }

    /// Like [`ShardLimits::admit_writes`], but once a record is refused every later one is
    /// refused too (and charged nothing): what is admitted is a prefix, so a client that
    /// retries the refused records in order never reorders a shard.
    pub fn admit_writes_in_order(&mut self, record_sizes: &[u64], now_ms: u64) -> Vec<bool> {
        let mut open = true;
        record_sizes
            .iter()
            .map(|&size| {
                open = open && self.admit_write(size, now_ms);
                open
            })
            .collect()
    }

    /// [`ShardLimits::admit_writes`] for a single record (`PutRecord`).
    pub fn admit_write(&mut self, record_size: u64, now_ms: u64) -> bool {
        if !self.enabled {
            return true;
        }
        let byte_burst = self.write_bytes.rate().burst;
        let bytes_fit = self
            .write_bytes
            .wait_ms(record_size.min(byte_burst), now_ms)
            == 0;
        if !bytes_fit || !self.write_records.try_take(1, now_ms) {
            return false;
        }
        self.write_bytes.charge(record_size, now_ms);
        true
    }

    /// One `GetRecords` call: admitted if a call token is available and the read-byte
    /// budget is not in debt (a throttled call uses up no call token). The bytes the call
    /// returns are charged afterwards with [`ShardLimits::charge_read_bytes`].
    pub fn admit_read_call(&mut self, now_ms: u64) -> bool {
        if !self.enabled {
            return true;
        }
        if self.read_bytes.in_debt(now_ms) {
            return false;
        }
        self.read_calls.try_take(1, now_ms)
    }

    /// Charges the bytes an admitted `GetRecords` call returned. This may put the read
    /// budget in debt (one call may return up to 10 MiB), refusing further calls until
    /// the debt is repaid at the read rate.
    pub fn charge_read_bytes(&mut self, bytes: u64, now_ms: u64) {
        if self.enabled {
            self.read_bytes.charge(bytes, now_ms);
        }
    }

    /// Milliseconds until a record of `record_size` bytes could be admitted (0 if now;
    /// `u64::MAX` if never, e.g. with a zero rate). A retry hint, not a promise.
    pub fn write_wait_ms(&self, record_size: u64, now_ms: u64) -> u64 {
        if !self.enabled {
            return 0;
        }
        let byte_burst = self.write_bytes.rate().burst;
        let bytes = self
            .write_bytes
            .wait_ms(record_size.min(byte_burst), now_ms);
        bytes.max(self.write_records.wait_ms(1, now_ms))
    }

    /// Milliseconds until a `GetRecords` call could be admitted (0 if now; `u64::MAX` if
    /// never). A retry hint, not a promise.
    pub fn read_wait_ms(&self, now_ms: u64) -> u64 {
        if !self.enabled {
            return 0;
        }
        let bytes = self.read_bytes.wait_ms(0, now_ms);
        bytes.max(self.read_calls.wait_ms(1, now_ms))
    }
}

/// AWS's message for a throttled shard, used both as the `message` of a
/// `ProvisionedThroughputExceededException` (`PutRecord`, `GetRecords`) and as the
/// `ErrorMessage` of a throttled `PutRecords` entry, e.g. `Rate exceeded for shard
/// shardId-000000000001 in stream foo under account 000000000000.`
pub fn rate_exceeded_message(shard: &str, stream: &str, account: &str) -> String {
    format!("Rate exceeded for shard {shard} in stream {stream} under account {account}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn aws(now_ms: u64) -> ShardLimits {
        ShardLimits::new(&ShardLimitsConfig::default(), now_ms)
    }

    fn count(flags: &[bool]) -> usize {
        flags.iter().filter(|&&admitted| admitted).count()
    }

    /// A step of a scripted scenario: at `at` ms after `T0`, write records of the given
    /// sizes and expect exactly `admitted` of them to be admitted.
    struct Step {
        at: u64,
        sizes: Vec<u64>,
        admitted: usize,
    }

    fn step(at: u64, record_count: usize, size: u64, admitted: usize) -> Step {
        Step {
            at,
            sizes: vec![size; record_count],
            admitted,
        }
    }

    #[test]
    fn write_scenarios() {
        let cases: Vec<(&str, Vec<Step>)> = vec![
            (
                "a full second of records is admitted, the 1,001st is throttled",
                vec![step(0, 1_000, 10, 1_000), step(0, 1, 10, 0)],
            ),
            (
                "same second, one call of 1,001 records",
                vec![step(0, 1_001, 10, 1_000)],
            ),
            (
                "a drained budget refills one record per millisecond",
                vec![
                    step(0, 1_000, 10, 1_000),
                    step(1, 2, 10, 1),
                    step(500, 1_000, 10, 499),
                    step(1_500, 1_000, 10, 1_000),
                ],
            ),
            (
                "idle time does not bank more than one second of records",
                vec![step(60_000, 5_000, 10, 1_000), step(60_000, 1, 10, 0)],
            ),
            (
                "one 1 MiB record fills the byte budget",
                vec![
                    step(0, 1, MIB, 1),
                    step(0, 1, 1, 0),
                    step(500, 1, MIB, 0),
                    step(500, 1, MIB / 2, 1),
                    step(1_500, 1, MIB, 1),
                ],
            ),
            (
                "bytes bind before records: 100 KiB records, ten per second",
                vec![step(0, 20, 100 * 1024, 10), step(1_000, 20, 100 * 1024, 10)],
            ),
            (
                "a record over the byte burst is admitted from a full bucket and leaves debt",
                vec![
                    step(0, 1, 5 * MIB, 1),
                    step(1_000, 1, 1, 0),
                    step(3_999, 1, 1, 0),
                    step(4_001, 1, 1, 1),
                ],
            ),
            (
                "a record over the byte burst waits for a full bucket",
                vec![
                    step(0, 1, 10, 1),
                    step(0, 1, 3 * MIB, 0),
                    step(10, 1, 3 * MIB, 1),
                ],
            ),
        ];
        for (name, steps) in cases {
            let mut limits = aws(T0);
            for (index, s) in steps.iter().enumerate() {
                let flags = limits.admit_writes(&s.sizes, T0 + s.at);
                assert_eq!(flags.len(), s.sizes.len(), "{name}: step {index}");
                assert_eq!(count(&flags), s.admitted, "{name}: step {index}");
            }
        }
    }

    #[test]
    fn sustained_thousand_records_per_second_is_admitted() {
        let mut limits = aws(T0);
        // One record every millisecond for ten seconds: exactly the provisioned rate.
        for ms in 0..10_000 {
            assert!(limits.admit_write(100, T0 + ms), "record at {ms} ms");
        }
        // Batches of 100 records every 100 ms: the same rate, bursty within the second.
        let mut limits = aws(T0);
        for tick in 0..100 {
            let flags = limits.admit_writes(&[100; 100], T0 + tick * 100);
            assert_eq!(count(&flags), 100, "batch {tick}");
        }
    }

    #[test]
    fn throttled_records_do_not_block_later_ones_that_fit() {
        let mut limits = aws(T0);
        assert!(limits.admit_write(MIB - 1_000, T0));
        let flags = limits.admit_writes(&[2_000, 500, 600, 400], T0);
        assert_eq!(flags, vec![false, true, false, true]);
    }

    #[test]
    fn in_order_admission_refuses_everything_after_the_first_refusal() {
        let mut limits = aws(T0);
        assert!(limits.admit_write(MIB - 1_000, T0));
        let flags = limits.admit_writes_in_order(&[500, 2_000, 400, 10], T0);
        assert_eq!(flags, vec![true, false, false, false]);
        // Nothing after the refusal was charged: 500 bytes of budget are still there.
        assert_eq!(limits.admit_writes(&[400, 200], T0), vec![true, false]);
    }

    #[test]
    fn records_are_charged_only_when_both_budgets_allow() {
        // A slow byte budget (one byte per ms) and ten records per second make refill
        // small enough to see what a throttled record spent.
        let config = ShardLimitsConfig {
            write_bytes_per_sec: 1_000,
            write_records_per_sec: 10,
            ..ShardLimitsConfig::default()
        };
        // Records exhausted, bytes left: a throttled record must not spend bytes.
        let mut limits = ShardLimits::new(&config, T0);
        assert_eq!(count(&limits.admit_writes(&[50; 10], T0)), 10);
        assert!(!limits.admit_write(500, T0));
        assert!(limits.admit_write(600, T0 + 100));
        // Bytes exhausted, records left: a throttled record must not spend a record.
        let mut limits = ShardLimits::new(&config, T0);
        assert!(limits.admit_write(1_000, T0));
        assert_eq!(count(&limits.admit_writes(&[10; 8], T0)), 0);
        assert_eq!(count(&limits.admit_writes(&[1; 12], T0 + 100)), 10);
    }

    #[test]
    fn read_calls_are_limited_to_five_per_second() {
        let mut limits = aws(T0);
        for call in 0..5 {
            assert!(limits.admit_read_call(T0), "call {call}");
            limits.charge_read_bytes(1_000, T0);
        }
        assert!(!limits.admit_read_call(T0));
        assert_eq!(limits.read_wait_ms(T0), 200);
        assert!(!limits.admit_read_call(T0 + 199));
        assert!(limits.admit_read_call(T0 + 200));
        assert!(!limits.admit_read_call(T0 + 200));
    }

    #[test]
    fn reads_go_into_debt_and_recover() {
        let cases: Vec<(&str, u64, u64)> = vec![
            // (name, bytes read just before, ms until calls are admitted again)
            ("a 10 MiB read from a full budget", 0, 4_000),
            ("a 10 MiB read from a drained budget", 2 * MIB, 5_000),
            ("a 10 MiB read from a half-used budget", MIB, 4_500),
        ];
        for (name, before, recovery) in cases {
            let mut limits = aws(T0);
            if before > 0 {
                assert!(limits.admit_read_call(T0), "{name}");
                limits.charge_read_bytes(before, T0);
            }
            assert!(limits.admit_read_call(T0), "{name}: the big read itself");
            limits.charge_read_bytes(10 * MIB, T0);
            for probe in [1, 1_000, 3_000, recovery - 1] {
                assert!(!limits.admit_read_call(T0 + probe), "{name}: at {probe} ms");
            }
            assert_eq!(limits.read_wait_ms(T0 + 1_000), recovery - 1_000, "{name}");
            assert!(limits.admit_read_call(T0 + recovery), "{name}: recovered");
        }
    }

    #[test]
    fn a_read_within_budget_leaves_calls_free() {
        // Five calls in a second returning 1 MiB in total stay within both budgets.
        let mut limits = aws(T0);
        for call in 0..5 {
            assert!(limits.admit_read_call(T0 + call * 10));
            limits.charge_read_bytes(MIB / 5, T0 + call * 10);
        }
        assert!(!limits.read_bytes.in_debt(T0 + 50));
        // A 2 MiB read from a full bucket uses it up without debt; the next call passes.
        let mut limits = aws(T0);
        assert!(limits.admit_read_call(T0));
        limits.charge_read_bytes(2 * MIB, T0);
        assert!(limits.admit_read_call(T0));
        limits.charge_read_bytes(1, T0);
        assert!(!limits.admit_read_call(T0));
    }

    #[test]
    fn disabled_config_admits_everything() {
        let mut limits = ShardLimits::new(&ShardLimitsConfig::disabled(), T0);
        assert!(!limits.enabled());
        let flags = limits.admit_writes(&[MIB; 500], T0);
        assert!(flags.iter().all(|&admitted| admitted));
        assert_eq!(count(&limits.admit_writes(&[10; 5_000], T0)), 5_000);
        for _ in 0..100 {
            assert!(limits.admit_read_call(T0));
            limits.charge_read_bytes(10 * MIB, T0);
        }
        assert_eq!(limits.write_wait_ms(10 * MIB, T0), 0);
        assert_eq!(limits.read_wait_ms(T0), 0);
    }

    #[test]
    fn default_config_is_aws_provisioned_mode() {
        let config = ShardLimitsConfig::default();
        assert!(config.enabled);
        assert_eq!(config.write_bytes_per_sec, 1_048_576);
        assert_eq!(config.write_records_per_sec, 1_000);
        assert_eq!(config.read_bytes_per_sec, 2_097_152);
        assert_eq!(config.read_calls_per_sec, 5);
        assert_eq!(Rate::fan_out(), Rate::per_second(2_097_152));
    }

    #[test]
    fn zero_rates_admit_nothing_without_panicking() {
        let config = ShardLimitsConfig {
            enabled: true,
            write_bytes_per_sec: 0,
            write_records_per_sec: 0,
            read_bytes_per_sec: 0,
            read_calls_per_sec: 0,
        };
        let mut limits = ShardLimits::new(&config, T0);
        assert_eq!(count(&limits.admit_writes(&[0, 1, 10], T0 + 5_000)), 0);
        assert!(!limits.admit_read_call(T0 + 5_000));
        assert_eq!(limits.write_wait_ms(1, T0), u64::MAX);
        assert_eq!(limits.read_wait_ms(T0), u64::MAX);
    }

    #[test]
    fn write_wait_hint() {
        let mut limits = aws(T0);
        assert_eq!(limits.write_wait_ms(MIB, T0), 0);
        assert!(limits.admit_write(MIB, T0));
        // 1 MiB refills at 1,048.576 bytes per ms: 1,000 ms.
        assert_eq!(limits.write_wait_ms(MIB, T0), 1_000);
        assert_eq!(limits.write_wait_ms(1_049, T0), 2);
        assert_eq!(limits.write_wait_ms(1_048, T0), 1);
        assert!(!limits.admit_write(1_049, T0 + 1));
        assert!(limits.admit_write(1_049, T0 + 2));
    }

    #[test]
    fn bucket_wait_ms() {
        let mut bucket = TokenBucket::new(Rate::per_second(1_000), T0);
        let cases: Vec<(u64, u64, u64)> = vec![
            // (amount, at ms, expected wait) on a full bucket of 1,000
            (0, 0, 0),
            (1_000, 0, 0),
            (1_001, 0, u64::MAX),
        ];
        for (amount, at, wait) in cases {
            assert_eq!(bucket.wait_ms(amount, T0 + at), wait, "amount {amount}");
        }
        assert!(bucket.try_take(1_000, T0));
        assert_eq!(bucket.wait_ms(1, T0), 1);
        assert_eq!(bucket.wait_ms(250, T0), 250);
        assert_eq!(bucket.wait_ms(250, T0 + 100), 150);
        assert_eq!(bucket.wait_ms(0, T0), 0);
        assert!(bucket.take_allowing_debt(3_000, T0));
        assert!(bucket.in_debt(T0));
        assert_eq!(bucket.wait_ms(0, T0), 3_000);
        assert_eq!(bucket.wait_ms(500, T0), 3_500);
        assert!(!bucket.take_allowing_debt(1, T0 + 2_999));
        assert!(bucket.take_allowing_debt(1, T0 + 3_000));
    }

    #[test]
    fn bucket_basics() {
        let mut bucket = TokenBucket::new(
            Rate {
                per_second: 10,
                burst: 30,
            },
            T0,
        );
        assert!(bucket.is_full(T0));
        assert_eq!(bucket.available(T0), 30);
        assert!(!bucket.try_take(31, T0), "all or nothing");
        assert_eq!(bucket.available(T0), 30);
        assert!(bucket.try_take(30, T0));
        assert!(!bucket.try_take(1, T0));
        // 10 per second is one token per 100 ms, accrued in exact fractions.
        assert!(!bucket.try_take(1, T0 + 99));
        assert!(bucket.try_take(1, T0 + 100));
        assert_eq!(bucket.available(T0 + 10_000), 30, "capped at the burst");
        bucket.charge(100, T0 + 10_000);
        assert!(bucket.in_debt(T0 + 10_000));
        assert_eq!(bucket.available(T0 + 10_000), 0);
        assert!(!bucket.try_take(0, T0 + 10_000));
        assert!(!bucket.take_allowing_debt(0, T0 + 10_000));
        assert!(bucket.take_allowing_debt(0, T0 + 17_000));
    }

    #[test]
    fn a_clock_stepping_back_adds_nothing() {
        let mut bucket = TokenBucket::new(Rate::per_second(1_000), T0 + 1_000);
        assert!(bucket.try_take(1_000, T0 + 1_000));
        assert!(!bucket.try_take(1, T0));
        assert!(!bucket.try_take(1, T0 + 999));
        assert!(!bucket.try_take(1, T0 + 1_000));
        assert!(bucket.try_take(1, T0 + 1_001));
        let limits = aws(T0 + 5_000);
        assert_eq!(limits.write_wait_ms(1, 0), 0);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut bucket = TokenBucket::new(
            Rate {
                per_second: u64::MAX,
                burst: u64::MAX,
            },
            0,
        );
        assert!(bucket.try_take(u64::MAX, 0));
        assert!(bucket.take_allowing_debt(u64::MAX, 0));
        bucket.charge(u64::MAX, 0);
        assert!(bucket.in_debt(1));
        assert!(bucket.try_take(u64::MAX, u64::MAX));
        assert_eq!(bucket.wait_ms(u64::MAX, u64::MAX), 1_000);
        let mut slow = TokenBucket::new(
            Rate {
                per_second: 1,
                burst: u64::MAX,
            },
            0,
        );
        assert!(slow.try_take(u64::MAX, 0));
        assert_eq!(slow.wait_ms(u64::MAX, 0), u64::MAX);
    }

    #[test]
    fn rate_exceeded_message_matches_aws() {
        assert_eq!(
            rate_exceeded_message("shardId-000000000001", "foo", "000000000000"),
            "Rate exceeded for shard shardId-000000000001 in stream foo under account 000000000000."
        );
    }

    /// A small deterministic generator (SplitMix64) for the property tests.
    struct Gen(u64);

    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        /// Uniform-ish in `low..=high`.
        fn range(&mut self, low: u64, high: u64) -> u64 {
            low + self.next() % (high - low + 1)
        }
    }

    /// Checks that over every window of admissions the admitted total stays within the
    /// burst plus what the rate refills in the window's length, plus `slack` (the most a
    /// single admission may overdraw). `events` are (time, amount admitted), time-sorted.
    fn assert_window_bound(events: &[(u64, u64)], rate: Rate, slack: u64, what: &str) {
        let mut prefix = vec![0_u128];
        for &(_, amount) in events {
            let last = prefix.last().copied().unwrap_or(0);
            prefix.push(last + u128::from(amount));
        }
        for first in 0..events.len() {
            for last in first..events.len() {
                let admitted = prefix[last + 1] - prefix[first];
                let span = u128::from(events[last].0 - events[first].0);
                let allowed = (u128::from(rate.burst) + u128::from(slack)) * 1_000
                    + u128::from(rate.per_second) * span;
                assert!(
                    admitted * 1_000 <= allowed,
                    "{what}: {admitted} admitted in {span} ms (events {first}..={last}, {rate:?})"
                );
            }
        }
    }

    #[test]
    fn property_bucket_never_admits_more_than_burst_plus_refill() {
        let mut gen_ = Gen(0x5EED_0001);
        for case in 0..400 {
            let per_second = gen_.range(1, 5_000);
            let rate = Rate {
                per_second,
                burst: gen_.range(1, 3 * per_second),
            };
            let debt = case % 2 == 1;
            let mut now = gen_.range(0, 1 << 40);
            let mut bucket = TokenBucket::new(rate, now);
            let mut events = Vec::new();
            let mut largest = 0;
            for _ in 0..gen_.range(1, 150) {
                now += match gen_.range(0, 3) {
                    0 => 0,
                    1 => gen_.range(0, 5),
                    2 => gen_.range(0, 200),
                    _ => gen_.range(0, 3_000),
                };
                let amount = gen_.range(0, rate.burst);
                let admitted = if debt {
                    bucket.take_allowing_debt(amount, now)
                } else {
                    bucket.try_take(amount, now)
                };
                if admitted {
                    events.push((now, amount));
                    largest = largest.max(amount);
                }
            }
            // Without debt the bound is exact; with debt a window may end on one
            // admission that overdrew the bucket by at most its own amount.
            let slack = if debt { largest } else { 0 };
            assert_window_bound(&events, rate, slack, &format!("case {case}"));
        }
    }

    #[test]
    fn property_shard_writes_stay_within_both_budgets() {
        let mut gen_ = Gen(0x5EED_0002);
        for case in 0..150 {
            let config = ShardLimitsConfig {
                enabled: true,
                write_bytes_per_sec: gen_.range(1_000, 2 * MIB),
                write_records_per_sec: gen_.range(1, 2_000),
                ..ShardLimitsConfig::default()
            };
            let byte_rate = Rate::per_second(config.write_bytes_per_sec);
            let record_rate = Rate::per_second(config.write_records_per_sec);
            let mut now = T0;
            let mut limits = ShardLimits::new(&config, now);
            let mut bytes = Vec::new();
            let mut records = Vec::new();
            for _ in 0..gen_.range(1, 60) {
                now += gen_.range(0, 400);
                let batch: Vec<u64> = (0..gen_.range(1, 50))
                    .map(|_| {
                        let divisor = gen_.range(1, 64);
                        gen_.range(0, byte_rate.burst / divisor)
                    })
                    .collect();
                let flags = limits.admit_writes(&batch, now);
                let admitted: Vec<u64> = batch
                    .iter()
                    .zip(&flags)
                    .filter(|(_, admitted)| **admitted)
                    .map(|(size, _)| *size)
                    .collect();
                bytes.push((now, admitted.iter().sum()));
                records.push((now, admitted.len() as u64));
            }
            assert_window_bound(&bytes, byte_rate, 0, &format!("case {case} bytes"));
            assert_window_bound(&records, record_rate, 0, &format!("case {case} records"));
        }
    }

    #[test]
    fn property_reads_stay_within_budget_plus_one_read() {
        let mut gen_ = Gen(0x5EED_0003);
        for case in 0..150 {
            let config = ShardLimitsConfig::default();
            let byte_rate = Rate::per_second(config.read_bytes_per_sec);
            let call_rate = Rate::per_second(config.read_calls_per_sec);
            let max_read = 10 * MIB;
            let mut now = T0;
            let mut limits = ShardLimits::new(&config, now);
            let mut bytes = Vec::new();
            let mut calls = Vec::new();
            for _ in 0..gen_.range(1, 200) {
                now += gen_.range(0, 700);
                if limits.admit_read_call(now) {
                    let read = match gen_.range(0, 3) {
                        0 => 0,
                        1 => gen_.range(0, 100_000),
                        2 => gen_.range(0, 2 * MIB),
                        _ => gen_.range(0, max_read),
                    };
                    limits.charge_read_bytes(read, now);
                    bytes.push((now, read));
                    calls.push((now, 1));
                }
            }
            assert_window_bound(&bytes, byte_rate, max_read, &format!("case {case} bytes"));
            assert_window_bound(&calls, call_rate, 0, &format!("case {case} calls"));
        }
    }
}
