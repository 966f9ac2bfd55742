//! The load loop: a fixed number of workers, each with one request in flight
//! at a time, a warm-up that is not recorded, then a fixed measurement window.
//! A request counts when it completes inside the window; latencies are kept
//! whole and sorted at the end (no histogram approximation).

use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// One kind of request, issued over and over by one worker.
pub(super) trait Op: Send + 'static {
    /// Issues one request. An error is a short label (e.g. a gRPC code) to
    /// count by.
    fn call(&mut self) -> impl Future<Output = Result<(), String>> + Send;
}

/// Warm-up, then the measured window.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
}

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Measured {
    pub(super) scenario: &'static str,
    /// Successful requests completed inside the window.
    pub(super) ok: u64,
    /// Failed requests completed inside the window.
    pub(super) errors: u64,
    /// Failures by label (gRPC code or database error).
    pub(super) error_kinds: BTreeMap<String, u64>,
    /// Length of the window, seconds.
    pub(super) window_secs: f64,
    /// Successful requests per second.
    pub(super) per_second: f64,
    pub(super) mean_ms: f64,
    pub(super) p50_ms: f64,
    pub(super) p90_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) max_ms: f64,
    /// CPU time this process (servers and load generator together) used
    /// during the window, in milliseconds per successful request; `None`
    /// where `/proc/self/stat` is unavailable.
    pub(super) cpu_ms_per_request: Option<f64>,
    /// The same CPU time as a share of all CPUs of the machine (0..1).
    pub(super) cpu_share: Option<f64>,
    /// How busy all CPUs of the machine were during the window (0..1), from
    /// `/proc/stat`: this process, the database server and anything else.
    pub(super) machine_busy: Option<f64>,
    /// Requests still in flight when the window closed, abandoned after a grace period.
    pub(super) abandoned_workers: usize,
}

#[derive(Default)]
struct Tally {
    latencies_ns: Vec<u64>,
    errors: BTreeMap<String, u64>,
}

/// How long requests still in flight at the end of the window may take to
/// finish before their workers are abandoned.
const TAIL_GRACE: Duration = Duration::from_secs(30);

/// Runs `ops` (one per worker) concurrently for `window`.
pub(super) async fn run<O: Op>(
    scenario: &'static str,
    ops: Vec<O>,
    window: Window,
    bar: &ProgressBar,
) -> Measured {
    let start = Instant::now();
    let from = start + window.warmup;
    let until = from + window.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut op in ops {
        tasks.spawn(async move {
            let mut tally = Tally {
                latencies_ns: Vec::with_capacity(4096),
                errors: BTreeMap::new(),
            };
            let mut retries: u64 = 0;
            let mut refused_in_a_row: u32 = 0;
            loop {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let result = op.call().await;
                let done = Instant::now();
                // A refused call is sent again after a pause that doubles
                // with each refusal in a row (10 ms up to 1 s, with jitter),
                // as the refusal asks ("retry with backoff"); resent at once,
                // the callers of an overloaded server spend its CPU on
                // refusals and starve the calls it admitted.
                let failed = result.is_err();
                if done >= from && done <= until {
                    match result {
                        Ok(()) => tally.latencies_ns.push(
                            u64::try_from(done.duration_since(sent).as_nanos()).unwrap_or(u64::MAX),
                        ),
                        Err(label) => *tally.errors.entry(label).or_default() += 1,
                    }
                }
                if failed {
                    refused_in_a_row = (refused_in_a_row + 1).min(7);
                    retries += 1;
                    let pause = (10u64 << (refused_in_a_row - 1)).min(1000);
                    tokio::time::sleep(std::time::Duration::from_millis(pause + retries % 10))
                        .await;
                } else {
                    refused_in_a_row = 0;
                }
            }
            tally
        });
    }
    bar.set_message(format!("{scenario}: warming up"));
    tokio::time::sleep_until(from.into()).await;
    bar.set_message(format!("{scenario}: measuring"));
    let cpu_before = process_cpu_secs();
    let machine_before = machine_ticks();
    tokio::time::sleep_until(until.into()).await;
    let cpu = process_cpu_secs()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let machine_busy =
        machine_ticks()
            .zip(machine_before)
            .and_then(|((busy1, total1), (busy0, total0))| {
                (total1 > total0).then(|| (busy1 - busy0) as f64 / (total1 - total0) as f64)
            });
    bar.set_message(format!("{scenario}: finishing requests in flight"));

    let mut latencies = Vec::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let collected = tokio::time::timeout(TAIL_GRACE, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(t) => {
                    latencies.extend(t.latencies_ns);
                    for (k, v) in t.errors {
                        *errors.entry(k).or_default() += v;
                    }
                }
                Err(e) => *errors.entry(format!("worker failed: {e}")).or_default() += 1,
            }
        }
    })
    .await;
    let abandoned_workers = if collected.is_err() {
        let n = tasks.len();
        tasks.shutdown().await;
        n
    } else {
        0
    };
    let mut measured = summarise(
        scenario,
        latencies,
        errors,
        window.duration,
        abandoned_workers,
    );
    if let Some(cpu) = cpu {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        measured.cpu_share = Some(cpu / window.duration.as_secs_f64() / cpus);
        measured.cpu_ms_per_request = (measured.ok > 0).then(|| cpu * 1e3 / measured.ok as f64);
    }
    measured.machine_busy = machine_busy;
    measured
}

/// Busy and total clock ticks of all CPUs so far (Linux `/proc/stat`); idle
/// and I/O wait count as not busy.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]; the
    // guest times are already inside user and nice.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// User plus system CPU time of this process so far, in seconds (Linux).
fn process_cpu_secs() -> Option<f64> {
    // Clock ticks: USER_HZ is 100 on every Linux the binary targets.
    const TICKS_PER_SEC: f64 = 100.0;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces; fields resume after its ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

fn summarise(
    scenario: &'static str,
    mut latencies_ns: Vec<u64>,
    error_kinds: BTreeMap<String, u64>,
    window: Duration,
    abandoned_workers: usize,
) -> Measured {
    latencies_ns.sort_unstable();
    let ok = latencies_ns.len() as u64;
    let window_secs = window.as_secs_f64();
    let ms = |ns: u64| ns as f64 / 1e6;
    let mean_ms = if latencies_ns.is_empty() {
        0.0
    } else {
        latencies_ns.iter().map(|&n| n as f64).sum::<f64>() / latencies_ns.len() as f64 / 1e6
    };
    Measured {
        scenario,
        ok,
        errors: error_kinds.values().sum(),
        error_kinds,
        window_secs,
        per_second: ok as f64 / window_secs,
        mean_ms,
        p50_ms: ms(percentile(&latencies_ns, 50.0)),
        p90_ms: ms(percentile(&latencies_ns, 90.0)),
        p99_ms: ms(percentile(&latencies_ns, 99.0)),
        max_ms: ms(latencies_ns.last().copied().unwrap_or(0)),
        cpu_ms_per_request: None,
        cpu_share: None,
        machine_busy: None,
        abandoned_workers,
    }
}

/// Nearest-rank percentile of sorted values; 0 when there are none.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 90.0), 90);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn summaries_count_successes_only() {
        let mut errors = BTreeMap::new();
        errors.insert("Unavailable".to_string(), 3);
        let m = summarise(
            "x",
            vec![3_000_000, 1_000_000, 2_000_000],
            errors,
            Duration::from_secs(2),
            0,
        );
        assert_eq!(m.ok, 3);
        assert_eq!(m.errors, 3);
        assert!((m.per_second - 1.5).abs() < 1e-9);
        assert!((m.p50_ms - 2.0).abs() < 1e-9);
        assert!((m.max_ms - 3.0).abs() < 1e-9);
    }

    #[test]
    fn cpu_time_is_read_where_proc_exists() {
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(process_cpu_secs().is_some_and(|s| s >= 0.0));
        }
        if std::path::Path::new("/proc/stat").exists() {
            assert!(machine_ticks().is_some_and(|(busy, total)| busy <= total));
        }
    }
}
