//! Process-wide metrics kept by the platform: each named database pool
//! ([`crate::db::Db::set_name`]) and each change-feed consumer
//! ([`crate::consumer`]). The server exposes them on every port through
//! `touchstone_server::register_collector` with [`encode_pools`] and
//! [`encode_feeds`].
//!
//! Pool metrics follow the OpenTelemetry database client semantic
//! conventions as Prometheus names them (`db.client.connection.count` →
//! `db_client_connection_count`, …). Labels are the pool's name (the
//! service), the connection state, and the consumer and feed names: all set
//! by code, none from a request.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use touchstone_api::common::v1::Event;

use crate::db::Inner;

/// From 100 µs (an idle connection) to the pool's 10 s acquire timeout.
const WAIT_BUCKETS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const POOL_NAME: &str = "db_client_connection_pool_name";

/// What a pool's metrics count beside what sqlx reports.
#[derive(Debug)]
pub(crate) struct PoolStats {
    /// Callers waiting for a connection now.
    waiting: AtomicI64,
    /// How long callers waited for the connections they got.
    wait_time: Histogram,
    /// Callers who got none within the acquire timeout.
    timeouts: AtomicU64,
    /// SQLite: writers waiting for the writer lock now.
    pub(crate) writers_queued: AtomicI64,
    /// SQLite: group transactions committed, and the writes they held.
    pub(crate) group_commits: AtomicU64,
    pub(crate) group_writes: AtomicU64,
}

impl Default for PoolStats {
    fn default() -> Self {
        Self {
            waiting: AtomicI64::new(0),
            wait_time: Histogram::new(WAIT_BUCKETS),
            timeouts: AtomicU64::new(0),
            writers_queued: AtomicI64::new(0),
            group_commits: AtomicU64::new(0),
            group_writes: AtomicU64::new(0),
        }
    }
}

/// Counts its caller as waiting for a connection until dropped.
pub(crate) struct Waiting<'a>(&'a AtomicI64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PoolStats {
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.waiting)
    }

    /// Counts its caller as waiting for SQLite's writer lock until dropped.
    pub(crate) fn queued_writer(&self) -> Waiting<'_> {
        self.writers_queued.fetch_add(1, Ordering::Relaxed);
        Waiting(&self.writers_queued)
    }

    /// Counts a group commit of `writes` writes.
    pub(crate) fn group_committed(&self, writes: usize) {
        self.group_commits.fetch_add(1, Ordering::Relaxed);
        self.group_writes
            .fetch_add(u64::try_from(writes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn acquired(&self, waited: Duration, error: Option<&sqlx::Error>) {
        match error {
            None => self.wait_time.observe(waited.as_secs_f64()),
            Some(sqlx::Error::PoolTimedOut) => {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
            }
            Some(_) => {}
        }
    }
}

static POOLS: Mutex<Vec<(String, Weak<Inner>)>> = Mutex::new(Vec::new());

pub(crate) fn register_pool(name: &str, inner: &Arc<Inner>) {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|(n, p)| n != name && p.strong_count() > 0);
    pools.push((name.to_string(), Arc::downgrade(inner)));
}

fn live_pools() -> Vec<(String, Arc<Inner>)> {
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    pools.retain(|(_, p)| p.strong_count() > 0);
    pools
        .iter()
        .filter_map(|(n, p)| Some((n.clone(), p.upgrade()?)))
        .collect()
}

/// Writes the metrics of every named, open pool of this process:
/// `db_client_connection_count{db_client_connection_pool_name, db_client_connection_state="used"|"idle"}`,
/// `db_client_connection_max`, `db_client_connection_pending_requests`,
/// `db_client_connection_wait_time_seconds` (histogram),
/// `db_client_connection_timeouts_total`, and for SQLite's group commit
/// `touchstone_db_writers_queued`, `touchstone_db_group_commits_total` and
/// `touchstone_db_group_commit_writes_total` (their quotient is the mean
/// group size).
pub fn encode_pools(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let pools = live_pools();
    if pools.is_empty() {
        return Ok(());
    }
    let mut count = encoder.encode_descriptor(
        "db_client_connection_count",
        "Connections of the pool, by state: used (lent out) or idle",
        None,
        MetricType::Gauge,
    )?;
    for (name, inner) in &pools {
        let size = i64::from(inner.pool().size());
        let idle = i64::try_from(inner.pool().num_idle()).unwrap_or(i64::MAX);
        for (state, value) in [("used", (size - idle).max(0)), ("idle", idle)] {
            let labels = [
                (POOL_NAME, name.as_str()),
                ("db_client_connection_state", state),
            ];
            ConstGauge::new(value).encode(count.encode_family(&labels)?)?;
        }
    }
    gauges(
        encoder,
        &pools,
        "db_client_connection_max",
        "Most connections the pool may open",
        |inner| i64::from(inner.pool().options().get_max_connections()),
    )?;
    gauges(
        encoder,
        &pools,
        "db_client_connection_pending_requests",
        "Callers waiting for a connection of the pool now",
        |inner| inner.stats.waiting.load(Ordering::Relaxed).max(0),
    )?;
    let mut wait = encoder.encode_descriptor(
        "db_client_connection_wait_time",
        "Time callers waited for a connection of the pool",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (name, inner) in &pools {
        let labels = [(POOL_NAME, name.as_str())];
        inner.stats.wait_time.encode(wait.encode_family(&labels)?)?;
    }
    let mut timeouts = encoder.encode_descriptor(
        "db_client_connection_timeouts",
        "Callers who got no connection of the pool within its acquire timeout (10 s)",
        None,
        MetricType::Counter,
    )?;
    for (name, inner) in &pools {
        let labels = [(POOL_NAME, name.as_str())];
        ConstCounter::new(inner.stats.timeouts.load(Ordering::Relaxed))
            .encode(timeouts.encode_family(&labels)?)?;
    }
    let sqlite: Vec<(String, Arc<Inner>)> = pools
        .iter()
        .filter(|(_, inner)| inner.is_sqlite())
        .cloned()
        .collect();
    if sqlite.is_empty() {
        return Ok(());
    }
    gauges(
        encoder,
        &sqlite,
        "touchstone_db_writers_queued",
        "SQLite: writers waiting for the writer lock now",
        |inner| inner.stats.writers_queued.load(Ordering::Relaxed).max(0),
    )?;
    for (name, help, value) in [
        (
            "touchstone_db_group_commits",
            "SQLite: group transactions committed",
            (|s: &PoolStats| s.group_commits.load(Ordering::Relaxed)) as fn(&PoolStats) -> u64,
        ),
        (
            "touchstone_db_group_commit_writes",
            "SQLite: write transactions committed in groups",
            |s: &PoolStats| s.group_writes.load(Ordering::Relaxed),
        ),
    ] {
        let mut counter = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (pool, inner) in &sqlite {
            let labels = [(POOL_NAME, pool.as_str())];
            ConstCounter::new(value(&inner.stats)).encode(counter.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    pools: &[(String, Arc<Inner>)],
    name: &str,
    help: &str,
    value: impl Fn(&Inner) -> i64,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (pool, inner) in pools {
        let labels = [(POOL_NAME, pool.as_str())];
        ConstGauge::new(value(inner)).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// How far one consumer is behind one feed, as far as it knows: the events
/// it has read from the producer and not yet applied.
#[derive(Debug)]
pub(crate) struct FeedLag {
    consumer: String,
    feed: &'static str,
    /// Events read and not yet applied.
    pending: AtomicI64,
    /// When the oldest of them was committed at the producer (ms since the
    /// epoch; 0: none pending).
    oldest_ms: AtomicI64,
    /// When the producer last answered a read (ms since the epoch; 0: never).
    last_read_ms: AtomicI64,
    /// Reads or applications that failed (not counting a replica overtaking).
    failures: AtomicU64,
}

static FEEDS: Mutex<Vec<Arc<FeedLag>>> = Mutex::new(Vec::new());

/// The lag record of `consumer` on `feed`, made on first use.
pub(crate) fn feed_lag(consumer: &str, feed: &'static str) -> Arc<FeedLag> {
    let mut feeds = FEEDS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(lag) = feeds
        .iter()
        .find(|l| l.consumer == consumer && l.feed == feed)
    {
        return lag.clone();
    }
    let lag = Arc::new(FeedLag {
        consumer: consumer.to_string(),
        feed,
        pending: AtomicI64::new(0),
        oldest_ms: AtomicI64::new(0),
        last_read_ms: AtomicI64::new(0),
        failures: AtomicU64::new(0),
    });
    feeds.push(lag.clone());
    lag
}

fn occurred_ms(event: &Event) -> i64 {
    event.occurred_time.as_ref().map_or(0, |t| {
        t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
    })
}

impl FeedLag {
    /// The producer answered a read with `events`, none applied yet, and
    /// said `remaining` more follow them.
    pub(crate) fn read(&self, events: &[Event], remaining: i64) {
        self.last_read_ms
            .store(crate::times::now_millis(), Ordering::Relaxed);
        self.pending.store(
            i64::try_from(events.len())
                .unwrap_or(i64::MAX)
                .saturating_add(remaining.max(0)),
            Ordering::Relaxed,
        );
        self.oldest_ms.store(
            events.first().map_or(0, occurred_ms).max(0),
            Ordering::Relaxed,
        );
    }

    /// A run of `applied` events committed; `rest` are still to apply.
    pub(crate) fn applied(&self, applied: usize, rest: &[Event]) {
        let applied = i64::try_from(applied).unwrap_or(i64::MAX);
        let left = (self.pending.load(Ordering::Relaxed) - applied).max(0);
        self.pending.store(left, Ordering::Relaxed);
        self.oldest_ms.store(
            rest.first().map_or(0, occurred_ms).max(0),
            Ordering::Relaxed,
        );
    }

    pub(crate) fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// Writes every change-feed consumer's lag, labelled `consumer` (the
/// consuming database's name) and `feed` (the producer):
/// `touchstone_feed_consumer_lag_events` (events at the producer not yet
/// applied: those read and not applied plus those the producer said follow
/// them at the last read, counted up to 100,000 past the page), `touchstone_feed_consumer_lag_seconds` (age of the oldest
/// of those; 0 when none), `touchstone_feed_consumer_last_read_timestamp_seconds`
/// and `touchstone_feed_consumer_failures_total`.
pub fn encode_feeds(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let feeds = FEEDS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if feeds.is_empty() {
        return Ok(());
    }
    let now = crate::times::now_millis();
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let gauge = |encoder: &mut DescriptorEncoder<'_>,
                 name: &str,
                 help: &str,
                 value: &dyn Fn(&FeedLag) -> f64|
     -> Result<(), std::fmt::Error> {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
        for lag in &feeds {
            let labels = [("consumer", lag.consumer.as_str()), ("feed", lag.feed)];
            ConstGauge::new(value(lag)).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    };
    gauge(
        encoder,
        "touchstone_feed_consumer_lag_events",
        "Change-feed events the consumer has read and not yet applied (at most a page, 1000)",
        &|lag| lag.pending.load(Ordering::Relaxed) as f64,
    )?;
    gauge(
        encoder,
        "touchstone_feed_consumer_lag_seconds",
        "Age of the oldest change-feed event the consumer has read and not yet applied (0 when none)",
        &|lag| match lag.oldest_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            oldest => seconds((now - oldest).max(0)),
        },
    )?;
    gauge(
        encoder,
        "touchstone_feed_consumer_last_read_timestamp_seconds",
        "When the producer last answered the consumer's read (seconds since the epoch; 0: never)",
        &|lag| seconds(lag.last_read_ms.load(Ordering::Relaxed)),
    )?;
    let mut failures = encoder.encode_descriptor(
        "touchstone_feed_consumer_failures",
        "Change-feed reads or applications that failed and will be retried",
        None,
        MetricType::Counter,
    )?;
    for lag in &feeds {
        let labels = [("consumer", lag.consumer.as_str()), ("feed", lag.feed)];
        ConstCounter::new(lag.failures.load(Ordering::Relaxed))
            .encode(failures.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::consumer::{self, BoxFuture, ConsumeError, EventPage, FeedSource, Handler};
    use crate::db::{PLATFORM_MIGRATIONS, Scope, Tx};
    use prometheus_client::collector::Collector;
    use prometheus_client::registry::Registry;
    use std::sync::atomic::AtomicBool;

    #[derive(Debug)]
    struct Platform;

    impl Collector for Platform {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            encode_pools(&mut encoder)?;
            encode_feeds(&mut encoder)
        }
    }

    fn scrape() -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Platform));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    /// The value of the sample whose name and labels are exactly `series`.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    }

    #[tokio::test]
    async fn a_named_pool_reports_connections_waiters_and_wait_time() {
        let test = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        test.db.set_name("metrics-pool-test");
        let tx = test.db.read(Scope::AllAgencies).await.unwrap();

        let text = scrape();
        let pool = r#"db_client_connection_pool_name="metrics-pool-test""#;
        let used = value(
            &text,
            &format!(r#"db_client_connection_count{{{pool},db_client_connection_state="used"}}"#),
        );
        assert!(used.unwrap() >= 1.0, "{text}");
        assert!(
            value(
                &text,
                &format!(
                    r#"db_client_connection_count{{{pool},db_client_connection_state="idle"}}"#
                )
            )
            .is_some(),
            "{text}"
        );
        assert!(value(&text, &format!("db_client_connection_max{{{pool}}}")).unwrap() >= 1.0);
        assert_eq!(
            value(
                &text,
                &format!("db_client_connection_pending_requests{{{pool}}}")
            ),
            Some(0.0),
            "{text}"
        );
        assert!(
            value(
                &text,
                &format!("db_client_connection_wait_time_seconds_count{{{pool}}}")
            )
            .unwrap()
                >= 1.0,
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("db_client_connection_timeouts_total{{{pool}}}")
            ),
            Some(0.0),
            "{text}"
        );
        // (Not checked after the commit: sqlx returns the connection to
        // the pool in the background.)
        tx.commit().await.unwrap();
    }

    /// A feed that answers pages of at most `.1` events and says how many
    /// follow.
    struct VecFeed(Vec<Event>, usize);

    impl FeedSource for VecFeed {
        fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
            let later: Vec<Event> = self
                .0
                .iter()
                .filter(|e| e.sequence > after)
                .cloned()
                .collect();
            let size = self.1.min(limit as usize).min(later.len());
            let page = EventPage {
                remaining: (later.len() - size) as i64,
                events: later[..size].to_vec(),
            };
            Box::pin(async move { Ok(page) })
        }
    }

    /// Applies nothing; fails on agency `b`'s events while told to.
    struct FailOnB(AtomicBool);

    impl Handler for FailOnB {
        fn apply<'a>(
            &'a self,
            _tx: &'a mut Tx,
            event: &'a Event,
        ) -> BoxFuture<'a, Result<(), ConsumeError>> {
            let fail = event.agency == "b" && self.0.load(Ordering::Relaxed);
            Box::pin(async move {
                if fail {
                    Err(ConsumeError::Source(tonic::Status::unavailable("down")))
                } else {
                    Ok(())
                }
            })
        }
    }

    #[tokio::test]
    async fn consumer_lag_counts_events_read_and_not_applied_and_their_age() {
        let test = crate::testing::fresh(&[&PLATFORM_MIGRATIONS]).await;
        test.db.set_name("metrics-lag-test");
        let hour_ago = crate::times::now_millis() / 1000 - 3600;
        let events = [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "b")]
            .into_iter()
            .map(|(sequence, agency)| Event {
                sequence,
                agency: agency.into(),
                occurred_time: Some(prost_types::Timestamp {
                    seconds: hour_ago + sequence,
                    nanos: 0,
                }),
                ..Event::default()
            })
            .collect();
        // Pages of three: 1a 2a 3b, and two more follow.
        let source = VecFeed(events, 3);
        let handler = FailOnB(AtomicBool::new(true));
        let series =
            |name: &str| format!(r#"{name}{{consumer="metrics-lag-test",feed="lag-test-feed"}}"#);

        // Agency a's run commits; b's fails and stays pending, and the two
        // events after the page are behind too.
        consumer::step(&test.db, "lag-test-feed", &source, &handler)
            .await
            .unwrap_err();
        let text = scrape();
        assert_eq!(
            value(&text, &series("touchstone_feed_consumer_lag_events")),
            Some(3.0),
            "{text}"
        );
        let behind = value(&text, &series("touchstone_feed_consumer_lag_seconds")).unwrap();
        assert!(behind >= 3000.0, "{text}");
        assert!(
            value(
                &text,
                &series("touchstone_feed_consumer_last_read_timestamp_seconds")
            )
            .unwrap()
                > 0.0,
            "{text}"
        );

        // Once consumed, nothing is behind.
        handler.0.store(false, Ordering::Relaxed);
        consumer::catch_up(&test.db, "lag-test-feed", &source, &handler)
            .await
            .unwrap();
        assert_eq!(
            consumer::cursor(&test.db, "lag-test-feed").await.unwrap(),
            5
        );
        let text = scrape();
        assert_eq!(
            value(&text, &series("touchstone_feed_consumer_lag_events")),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, &series("touchstone_feed_consumer_lag_seconds")),
            Some(0.0),
            "{text}"
        );
    }
}
