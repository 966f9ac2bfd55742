//! Complaint timeframes missed, for alerting on service-standard (SLA)
//! breaches: `touchstone_complaint_timeframe_breaches_total{timeframe}`,
//! counted when an acknowledgement or a resolution that came later than the
//! agency's standard allows commits. Labelled by timeframe only (never by
//! agency, unit or complaint), so the series stay few and hold no personal
//! data; the KPI service has the per-agency figures.

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use std::sync::atomic::{AtomicU64, Ordering};

/// Timeframes one change missed, counted once its transaction commits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// Acknowledged after the acknowledgement timeframe.
    pub acknowledge: u64,
    /// Resolved after the response timeframe of its stage.
    pub respond: u64,
}

static ACKNOWLEDGE: AtomicU64 = AtomicU64::new(0);
static RESPOND: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_missed(missed: Missed) {
    ACKNOWLEDGE.fetch_add(missed.acknowledge, Ordering::Relaxed);
    RESPOND.fetch_add(missed.respond, Ordering::Relaxed);
}

/// The breaches counted in this process so far.
pub fn missed_so_far() -> Missed {
    Missed {
        acknowledge: ACKNOWLEDGE.load(Ordering::Relaxed),
        respond: RESPOND.load(Ordering::Relaxed),
    }
}

/// Writes `touchstone_complaint_timeframe_breaches_total{timeframe="acknowledge"|"respond"}`
/// (for `touchstone_server::register_collector`).
pub fn encode(encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(
        "touchstone_complaint_timeframe_breaches",
        "Complaints acknowledged or resolved later than the agency's standard allows \
         (service-standard breaches), by timeframe",
        None,
        MetricType::Counter,
    )?;
    let missed = missed_so_far();
    for (timeframe, count) in [
        ("acknowledge", missed.acknowledge),
        ("respond", missed.respond),
    ] {
        ConstCounter::new(count).encode(metric.encode_family(&[("timeframe", timeframe)])?)?;
    }
    Ok(())
}
