//! The two change feeds the service consumes (feedback and complaints) and
//! what each event adds to the rollup. Each event's effect is applied in
//! the platform consumer's transaction, which also moves the cursor, so it
//! counts exactly once. Every figure is filed under the event's own day
//! (the agency-local day of a complaint step, the day of a response), never
//! the day it arrived, so late events land in the right period.

use crate::domain::{self, Cell, measure};
use crate::store::{self, ComplaintCohort, VolumeRecord};
use std::sync::Arc;
use std::time::Duration;
use touchstone_api::common::v1::Event;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_auth::ServiceToken;
use touchstone_platform::consumer::{
    self, BoxFuture, ConsumeError, EventPage, FeedSource, Handler, Skipped,
};
use touchstone_platform::db::{Db, Scope, Tx};

/// The complaints feed's name in `feed_cursors`.
pub const COMPLAINTS_FEED: &str = "complaints";
/// The feedback feed's name in `feed_cursors`.
pub const FEEDBACK_FEED: &str = "feedback";

const COMPLAINTS: &str = "touchstone.complaints.v1.";
const FEEDBACK: &str = "touchstone.feedback.v1.";

fn request<T>(token: &ServiceToken, message: T) -> Result<tonic::Request<T>, tonic::Status> {
    let mut r = tonic::Request::new(message);
    let header = token
        .header()
        .map_err(|_| tonic::Status::unauthenticated("no service token"))?;
    r.metadata_mut().insert("authorization", header);
    r.set_timeout(Duration::from_secs(10));
    Ok(r)
}

/// The complaints service's change feed, read with this service's token.
#[derive(Debug, Clone)]
pub struct ComplaintsFeed {
    /// The complaints service.
    pub channel: touchstone_server::peer::Balanced,
    /// This service's token.
    pub token: ServiceToken,
}

impl FeedSource for ComplaintsFeed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        Box::pin(async move {
            let r = request(
                &self.token,
                cpb::ListEventsRequest {
                    after_sequence: after,
                    page_size: limit.min(1000),
                },
            )?;
            let mut api = ComplaintsServiceClient::new(self.channel.clone());
            let page = api.list_events(r).await?.into_inner();
            Ok(EventPage {
                events: page.events,
                remaining: page.remaining,
            })
        })
    }
}

/// The feedback service's change feed, read with this service's token.
#[derive(Debug, Clone)]
pub struct FeedbackFeed {
    /// The feedback service.
    pub channel: touchstone_server::peer::Balanced,
    /// This service's token.
    pub token: ServiceToken,
}

impl FeedSource for FeedbackFeed {
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        Box::pin(async move {
            let r = request(
                &self.token,
                fpb::ListEventsRequest {
                    after_sequence: after,
                    page_size: limit.min(1000),
                },
            )?;
            let mut api = FeedbackServiceClient::new(self.channel.clone());
            let page = api.list_events(r).await?.into_inner();
            Ok(EventPage {
                events: page.events,
                remaining: page.remaining,
            })
        })
    }
}

/// A feed as the consumer should see it: no event twice in one page, and not
/// the event the cursor names. A producer that sends an event again within a
/// page (a retried read, a replayed row) cannot make it count twice.
///
/// The feed's order is the producer's commit order, which on PostgreSQL is
/// not the order of sequences (an event's sequence is taken at insert, its
/// place in the feed at commit): an event may follow one with a higher
/// sequence, and must be applied all the same. The position is opaque
/// (DESIGN §6); only the cursor's compare-and-set orders pages.
/// `S` is any pointer to a source (`Box`, `Arc`, `&dyn FeedSource`).
#[derive(Debug, Clone)]
pub struct Deduped<S>(pub S);

impl<S> FeedSource for Deduped<S>
where
    S: std::ops::Deref + Send + Sync,
    S::Target: FeedSource,
{
    fn list(&self, after: i64, limit: i32) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
        Box::pin(async move {
            let mut page = self.0.list(after, limit).await?;
            let mut seen = std::collections::HashSet::with_capacity(page.events.len() + 1);
            seen.insert(after);
            page.events.retain(|e| seen.insert(e.sequence));
            Ok(page)
        })
    }
}

fn malformed(why: &str) -> ConsumeError {
    ConsumeError::Malformed(why.to_string())
}

fn utc_day(ts: Option<&prost_types::Timestamp>) -> Option<i64> {
    let ts = ts?;
    let t = time::OffsetDateTime::from_unix_timestamp(ts.seconds).ok()?;
    Some(domain::day_key(t.date()))
}

/// The agency-local day of a complaint step: `event_date`, or for an event
/// without one, the UTC day of `event_time`.
fn complaint_day(facts: &cpb::ComplaintFacts) -> Result<i64, ConsumeError> {
    facts
        .event_date
        .as_ref()
        .and_then(domain::wire_date)
        .map(domain::day_key)
        .or_else(|| utc_day(facts.event_time.as_ref()))
        .ok_or_else(|| malformed("complaint event without a date"))
}

fn facts(f: Option<cpb::ComplaintFacts>) -> Result<cpb::ComplaintFacts, ConsumeError> {
    f.ok_or_else(|| malformed("complaint event without facts"))
}

fn cell(measure: String, day: i64, f: &cpb::ComplaintFacts, value: i64) -> Cell {
    Cell {
        measure,
        day,
        service: f.service.clone(),
        unit: f.unit.clone(),
        channel: f.channel,
        segment: String::new(),
        value,
    }
}

fn cohort_cell(measure: &str, day: i64, c: &ComplaintCohort, value: i64) -> Cell {
    Cell {
        measure: measure.to_string(),
        day,
        service: c.service.clone(),
        unit: c.unit.clone(),
        channel: c.channel,
        segment: String::new(),
        value,
    }
}

/// What one event adds: its effects on the service's own records (the
/// complaint cohort, volumes, follow-ups) are written in `tx` at once, in
/// order; its rollup deltas are pushed to `deltas` for the caller to merge.
trait Deltas: Send + Sync {
    fn deltas<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
        deltas: &'a mut Vec<(Cell, i64)>,
    ) -> BoxFuture<'a, Result<(), ConsumeError>>;
}

/// Applies `events` in order and merges their rollup deltas into one write
/// per agency, so a page of a thousand responses costs a few statements,
/// not three per response. A malformed event's deltas are dropped; with
/// `strict` its error is returned instead of being reported as skipped.
async fn apply_run<H: Deltas + ?Sized>(
    handler: &H,
    tx: &mut Tx,
    events: &[Event],
    strict: bool,
) -> Result<Vec<Skipped>, ConsumeError> {
    let mut skipped = Vec::new();
    let mut pending: Vec<(Cell, i64)> = Vec::new();
    let mut agency: Option<&str> = None;
    for event in events {
        if agency.is_some_and(|a| a != event.agency) {
            store::apply(tx, agency.unwrap_or_default(), &pending).await?;
            pending.clear();
        }
        agency = Some(event.agency.as_str());
        let before = pending.len();
        match handler.deltas(tx, event, &mut pending).await {
            Ok(()) => {}
            Err(ConsumeError::Malformed(why)) if !strict => {
                pending.truncate(before);
                skipped.push(Skipped {
                    sequence: event.sequence,
                    why,
                });
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(agency) = agency {
        store::apply(tx, agency, &pending).await?;
    }
    Ok(skipped)
}

/// The consumer's `Handler` for a `Deltas`: one event through the same
/// path as a run of one.
macro_rules! rollup_handler {
    ($h:ty) => {
        impl Handler for $h {
            fn apply<'a>(
                &'a self,
                tx: &'a mut Tx,
                event: &'a Event,
            ) -> BoxFuture<'a, Result<(), ConsumeError>> {
                Box::pin(async move {
                    apply_run(self, tx, std::slice::from_ref(event), true)
                        .await
                        .map(drop)
                })
            }

            fn apply_run<'a>(
                &'a self,
                tx: &'a mut Tx,
                events: &'a [Event],
            ) -> BoxFuture<'a, Result<Vec<Skipped>, ConsumeError>> {
                Box::pin(apply_run(self, tx, events, false))
            }
        }
    };
}

/// What complaints events add to the rollup.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComplaintsHandler;

rollup_handler!(ComplaintsHandler);

impl Deltas for ComplaintsHandler {
    fn deltas<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
        deltas: &'a mut Vec<(Cell, i64)>,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        Box::pin(async move {
            let Some(kind) = event.r#type.strip_prefix(COMPLAINTS) else {
                return Ok(());
            };
            let agency = event.agency.as_str();
            match kind {
                "ComplaintReceived" => {
                    let e: cpb::ComplaintReceived = consumer::payload(event)?;
                    let f = facts(e.facts)?;
                    let day = complaint_day(&f)?;
                    let cohort = ComplaintCohort {
                        service: f.service.clone(),
                        unit: f.unit.clone(),
                        channel: f.channel,
                        receive_day: day,
                        escalated: false,
                        resolve_day: None,
                        reopened: false,
                    };
                    if store::insert_complaint(tx, agency, &f.complaint, &cohort).await? {
                        deltas.push((cell(measure::RECEIVED.into(), day, &f, 0), 1));
                        deltas.push((cell(measure::ESCALATION.into(), day, &f, 0), 1));
                    }
                }
                "ComplaintAcknowledged" => {
                    let e: cpb::ComplaintAcknowledged = consumer::payload(event)?;
                    let f = facts(e.facts)?;
                    let day = complaint_day(&f)?;
                    let within = i64::from(e.within_standard);
                    deltas.push((cell(measure::ACKNOWLEDGED.into(), day, &f, within), 1));
                }
                "ComplaintStageChanged" => {
                    let e: cpb::ComplaintStageChanged = consumer::payload(event)?;
                    let f = facts(e.facts)?;
                    if f.stage > e.from_stage
                        && let Some(mut c) = store::complaint(tx, agency, &f.complaint).await?
                        && !c.escalated
                    {
                        c.escalated = true;
                        store::update_complaint(tx, agency, &f.complaint, &c).await?;
                        deltas.push((cohort_cell(measure::ESCALATION, c.receive_day, &c, 0), -1));
                        deltas.push((cohort_cell(measure::ESCALATION, c.receive_day, &c, 1), 1));
                    }
                }
                "ComplaintResolved" => {
                    let e: cpb::ComplaintResolved = consumer::payload(event)?;
                    let f = facts(e.facts)?;
                    let day = complaint_day(&f)?;
                    let stage = if f.stage == 0 { 1 } else { f.stage };
                    let within = i64::from(e.within_standard);
                    deltas.push((cell(measure::responded(stage), day, &f, within), 1));
                    deltas.push((
                        cell(
                            measure::RESOLVE_DAYS.into(),
                            day,
                            &f,
                            i64::from(e.total_working_days),
                        ),
                        1,
                    ));
                    deltas.push((
                        cell(measure::OUTCOME.into(), day, &f, i64::from(e.outcome)),
                        1,
                    ));
                    if let Some(mut c) = store::complaint(tx, agency, &f.complaint).await?
                        && c.resolve_day.is_none()
                    {
                        c.resolve_day = Some(day);
                        store::update_complaint(tx, agency, &f.complaint, &c).await?;
                        deltas.push((cohort_cell(measure::REOPEN, day, &c, 0), 1));
                    }
                }
                "ComplaintReopened" => {
                    let e: cpb::ComplaintReopened = consumer::payload(event)?;
                    let f = facts(e.facts)?;
                    if let Some(mut c) = store::complaint(tx, agency, &f.complaint).await?
                        && let (Some(day), false) = (c.resolve_day, c.reopened)
                    {
                        c.reopened = true;
                        store::update_complaint(tx, agency, &f.complaint, &c).await?;
                        deltas.push((cohort_cell(measure::REOPEN, day, &c, 0), -1));
                        deltas.push((cohort_cell(measure::REOPEN, day, &c, 1), 1));
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// What feedback events add to the rollup.
#[derive(Debug, Clone, Copy, Default)]
pub struct FeedbackHandler;

fn volume_deltas(v: &VolumeRecord, sign: i64) -> Result<Vec<(Cell, i64)>, ConsumeError> {
    let (Some(start), Some(end)) = (domain::key_date(v.start_day), domain::key_date(v.end_day))
    else {
        return Err(malformed("volume record with a bad date"));
    };
    if end < start || (end - start).whole_days() > 3660 {
        return Err(malformed("volume record with a bad date range"));
    }
    let mut out = Vec::new();
    for (m, total) in [(measure::SERVED, v.served), (measure::OFFERED, v.offered)] {
        for (day, count) in domain::spread(total, start, end) {
            let c = Cell {
                measure: m.to_string(),
                day,
                service: v.service.clone(),
                unit: v.unit.clone(),
                channel: v.channel,
                segment: String::new(),
                value: 0,
            };
            out.push((c, sign * count));
        }
    }
    Ok(out)
}

/// What one survey response adds to the rollup: a cell per standard item
/// scored (by score) and one `responses` cell, on the response's day, for
/// its service, unit, channel and segment. The whole of what the feedback
/// feed's `ResponseSubmitted` adds (also used to load rollups in bulk).
pub fn response_deltas(
    e: fpb::ResponseSubmitted,
    deltas: &mut Vec<(Cell, i64)>,
) -> Result<(), ConsumeError> {
    let day = e
        .day
        .as_ref()
        .and_then(domain::wire_date)
        .map(domain::day_key)
        .or_else(|| utc_day(e.submit_time.as_ref()))
        .ok_or_else(|| malformed("response without a day"))?;
    let touchpoint = e.touchpoint.unwrap_or_default();
    let unit = if e.unit.is_empty() {
        touchpoint.unit
    } else {
        e.unit
    };
    let channel = if e.channel == 0 {
        touchpoint.channel
    } else {
        e.channel
    };
    let base = Cell {
        measure: measure::RESPONSES.into(),
        day,
        service: touchpoint.service,
        unit,
        channel,
        segment: domain::segment_key(e.segment.as_ref()),
        value: 0,
    };
    for s in &e.scores {
        if s.item > 0 {
            let c = Cell {
                measure: measure::item(s.item),
                value: i64::from(s.score),
                ..base.clone()
            };
            deltas.push((c, 1));
        }
    }
    deltas.push((base, 1));
    Ok(())
}

rollup_handler!(FeedbackHandler);

impl Deltas for FeedbackHandler {
    fn deltas<'a>(
        &'a self,
        tx: &'a mut Tx,
        event: &'a Event,
        deltas: &'a mut Vec<(Cell, i64)>,
    ) -> BoxFuture<'a, Result<(), ConsumeError>> {
        Box::pin(async move {
            let Some(kind) = event.r#type.strip_prefix(FEEDBACK) else {
                return Ok(());
            };
            let agency = event.agency.as_str();
            match kind {
                "ResponseSubmitted" => {
                    response_deltas(consumer::payload(event)?, deltas)?;
                }
                "VolumesRecorded" => {
                    let e: fpb::VolumesRecorded = consumer::payload(event)?;
                    let touchpoint = e.touchpoint.unwrap_or_default();
                    let day = |d: Option<&touchstone_api::common::v1::Date>| {
                        d.and_then(domain::wire_date)
                            .map(domain::day_key)
                            .ok_or_else(|| malformed("volume record without dates"))
                    };
                    let record = VolumeRecord {
                        service: touchpoint.service,
                        unit: touchpoint.unit,
                        channel: touchpoint.channel,
                        start_day: day(e.start_date.as_ref())?,
                        end_day: day(e.end_date.as_ref())?,
                        served: e.customers_served.max(0),
                        offered: e.customers_offered.max(0),
                    };
                    let name = if e.volume.is_empty() {
                        event.name.clone()
                    } else {
                        e.volume
                    };
                    let added = volume_deltas(&record, 1)?;
                    if let Some(old) = store::replace_volume(tx, agency, &name, &record).await? {
                        deltas.extend(volume_deltas(&old, -1)?);
                    }
                    deltas.extend(added);
                }
                "FollowUpOpened" => {
                    let e: fpb::FollowUpOpened = consumer::payload(event)?;
                    let due = e
                        .due_date
                        .as_ref()
                        .and_then(domain::wire_date)
                        .map(domain::day_key)
                        .ok_or_else(|| malformed("follow-up without a due date"))?;
                    store::open_follow_up(tx, agency, &e.follow_up, &e.unit, e.channel, due)
                        .await?;
                }
                "FollowUpDueDateChanged" => {
                    // A close is judged against the due date in force when
                    // it closes, so the open follow-up takes the new date.
                    let e: fpb::FollowUpDueDateChanged = consumer::payload(event)?;
                    let due = e
                        .due_date
                        .as_ref()
                        .and_then(domain::wire_date)
                        .map(domain::day_key)
                        .ok_or_else(|| malformed("follow-up due date change without a date"))?;
                    store::reschedule_follow_up(tx, agency, &e.follow_up, due).await?;
                }
                "FollowUpClosed" => {
                    let e: fpb::FollowUpClosed = consumer::payload(event)?;
                    let closed = utc_day(e.close_time.as_ref())
                        .ok_or_else(|| malformed("follow-up closed without a time"))?;
                    if let Some(due) = store::close_follow_up(tx, agency, &e.follow_up).await? {
                        let c = Cell {
                            measure: measure::FOLLOW_UP.into(),
                            day: closed,
                            service: String::new(),
                            unit: e.unit,
                            channel: e.channel,
                            segment: String::new(),
                            value: i64::from(closed <= due),
                        };
                        deltas.push((c, 1));
                    }
                }
                _ => {}
            }
            Ok(())
        })
    }
}

/// Starts consuming both feeds.
pub fn spawn(
    db: &Db,
    complaints: ComplaintsFeed,
    feedback: FeedbackFeed,
) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        consumer::spawn(
            db.clone(),
            COMPLAINTS_FEED,
            Arc::new(Deduped(Box::new(complaints))),
            Arc::new(ComplaintsHandler),
        ),
        consumer::spawn(
            db.clone(),
            FEEDBACK_FEED,
            Arc::new(Deduped(Box::new(feedback))),
            Arc::new(FeedbackHandler),
        ),
    ]
}

/// Checks that both producers answer, clears the rollups and both cursors
/// in one transaction, then replays both feeds from their first event. Returns the events applied per feed.
/// Safe beside running consumers of the same database: their cursor
/// compare-and-set makes them yield or replay with it.
pub async fn rebuild(
    db: &Db,
    complaints: &dyn FeedSource,
    feedback: &dyn FeedSource,
) -> Result<(u64, u64), ConsumeError> {
    // Both producers must answer before anything is cleared.
    for source in [complaints, feedback] {
        source.list(0, 1).await.map_err(ConsumeError::Source)?;
    }
    let mut tx = db.write(Scope::AllAgencies).await?;
    // Cursors first: a running consumer that has applied a page but not yet
    // moved the cursor then finds it moved (its compare-and-set fails and it
    // rolls back), and one that already moved it has committed before the
    // rollups are cleared. Either way nothing it did survives twice.
    consumer::reset(&mut tx, COMPLAINTS_FEED, 0).await?;
    consumer::reset(&mut tx, FEEDBACK_FEED, 0).await?;
    store::clear_rollups(&mut tx).await?;
    tx.commit().await?;
    let c = catch_up_complaints(db, complaints).await?;
    let f = catch_up_feedback(db, feedback).await?;
    Ok((c, f))
}

/// Applies the complaints feed until it has nothing more.
pub async fn catch_up_complaints(db: &Db, source: &dyn FeedSource) -> Result<u64, ConsumeError> {
    consumer::catch_up(db, COMPLAINTS_FEED, &Deduped(source), &ComplaintsHandler).await
}

/// Applies the feedback feed until it has nothing more.
pub async fn catch_up_feedback(db: &Db, source: &dyn FeedSource) -> Result<u64, ConsumeError> {
    consumer::catch_up(db, FEEDBACK_FEED, &Deduped(source), &FeedbackHandler).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Answers one fixed page, whatever is asked.
    struct Page(Vec<i64>);

    impl FeedSource for Page {
        fn list(
            &self,
            _after: i64,
            _limit: i32,
        ) -> BoxFuture<'_, Result<EventPage, tonic::Status>> {
            let events = self
                .0
                .iter()
                .map(|&sequence| Event {
                    sequence,
                    ..Default::default()
                })
                .collect::<Vec<_>>();
            Box::pin(async move { Ok(EventPage::from(events)) })
        }
    }

    async fn kept(page: &[i64], after: i64) -> Vec<i64> {
        let source = Page(page.to_vec());
        let feed = Deduped(&source as &dyn FeedSource);
        let got = feed.list(after, 100).await.unwrap();
        got.events.iter().map(|e| e.sequence).collect()
    }

    /// On PostgreSQL the feed is in commit order, so a lower sequence can
    /// follow a higher one (written first, committed later). Such an event
    /// was dropped as a "replay" here, and the KPI undercounted every
    /// complaint taken while another was being written.
    #[tokio::test]
    async fn an_event_after_a_higher_sequence_is_kept() {
        assert_eq!(
            kept(&[8, 7, 9, 12, 10, 11], 6).await,
            vec![8, 7, 9, 12, 10, 11]
        );
    }

    #[tokio::test]
    async fn an_event_twice_in_a_page_or_the_cursors_own_is_dropped() {
        assert_eq!(kept(&[6, 8, 7, 8, 9, 7], 6).await, vec![8, 7, 9]);
    }
}
