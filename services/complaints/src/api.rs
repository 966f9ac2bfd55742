//! The gRPC face of the complaints service: each handler parses its request
//! into domain types, checks the caller, runs the change in one transaction
//! (with its idempotency record, history entry, audit record and outbox
//! events), and maps back. No SQL here.

use crate::clock::{self, Calendar, Clock};
use crate::domain::{
    self, Action, CalendarFields, Command, Stage, Standard, State, TransitionError, replay,
};
use crate::error::Error;
use crate::intake::{self, RegisterClient};
use crate::store::{
    self, CalendarRecord, ComplaintRecord, ContactDetails, ContactRow, DueColumns, HistoryRow,
    IssueRecord, Needs, Personal,
};
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use touchstone_api::common::v1::Event;
use touchstone_api::complaints::v1 as pb;
use touchstone_api::complaints::v1::complaints_service_server::ComplaintsService;
use touchstone_auth::{Caller, Role, Target, authorize};
use touchstone_crypto::{DataKey, MasterKey};
use touchstone_list::{ListError, ListParams, ListQuery};
use touchstone_platform::audit::{self, Access};
use touchstone_platform::change::{self, Begun};
use touchstone_platform::db::{Db, Scope, Tx};
use touchstone_platform::error::{FieldViolation, Violations};
use touchstone_platform::idempotency;
use touchstone_platform::keyring::Keyring;
use touchstone_platform::outbox;
use touchstone_platform::{names, times};

/// How far in the future a stated receive time may be (clock skew).
const FUTURE_SLACK_MILLIS: i64 = 5 * 60 * 1000;

/// The complaints service.
#[derive(Debug, Clone)]
pub struct Complaints {
    db: Db,
    keys: Arc<Keyring>,
    register: RegisterClient,
}

impl Complaints {
    /// The service over `db`, checking client references with `register`.
    /// Data keys are stored in `db`, wrapped by `master`.
    pub fn new(db: Db, master: MasterKey, register: RegisterClient) -> Self {
        let keys = Arc::new(Keyring::new(master, db.clone()));
        Self { db, keys, register }
    }

    /// The agency's data key, read in `tx` (DESIGN §5).
    async fn key(&self, tx: &mut Tx, agency: &str) -> Result<Arc<DataKey>, Error> {
        Ok(self.keys.data_key(tx, agency).await?)
    }

    async fn begin<'a, R: prost::Message + Default + touchstone_api::Named>(
        &self,
        caller: &'a Caller,
        agency: &'a str,
        method: &'static str,
        request_id: &'a str,
        fingerprint: String,
    ) -> Result<Begun<'a, R>, Error> {
        Ok(change::begin(
            &self.db,
            &self.keys,
            caller,
            agency,
            method,
            request_id,
            fingerprint,
        )
        .await?)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn list_error(e: ListError) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(e.field, e.description)])
}

fn parse_agency<'a>(field: &str, parent: &'a str) -> Result<&'a str, Error> {
    Ok(names::parse_field(field, "agencies/{}", parent)?[0])
}

fn parse_two<'a>(field: &str, pattern: &str, value: &'a str) -> Result<(&'a str, &'a str), Error> {
    let ids = names::parse_field(field, pattern, value)?;
    Ok((ids[0], ids[1]))
}

fn parse_complaint<'a>(field: &str, value: &'a str) -> Result<(&'a str, &'a str), Error> {
    parse_two(field, "agencies/{}/complaints/{}", value)
}

fn etag(revision: i64) -> String {
    revision.to_string()
}

fn check_etag(given: &str, revision: i64) -> Result<(), Error> {
    if !given.is_empty() && given != etag(revision) {
        return Err(Error::StaleEtag);
    }
    Ok(())
}

fn note(field: &str, text: &str) -> Result<String, Error> {
    domain::long_text(text, domain::MAX_NOTE).map_err(|e| Error::invalid(field, e))
}

fn mask_paths(mask: &Option<prost_types::FieldMask>) -> Vec<String> {
    mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default()
}

/// The calendar and standard the agency's clocks run on.
async fn rules(tx: &mut Tx, agency: &str) -> Result<(Calendar, Standard), Error> {
    let standard = store::get_standard(tx, agency).await?;
    let calendar = if standard.calendar.is_empty() {
        domain::default_calendar()
    } else {
        match store::get_calendar(tx, agency, &standard.calendar).await? {
            Some(c) => c
                .fields
                .calendar()
                .map_err(|_| Error::Corrupt("calendar"))?,
            None => domain::default_calendar(),
        }
    };
    Ok((calendar, standard))
}

fn due_columns(state: &State, cal: &Calendar, standard: &Standard, now: i64) -> DueColumns {
    let c = state.clocks(cal, standard, now);
    DueColumns {
        due_time: c.due_time,
        overdue_from: c.overdue_from,
    }
}

fn clock_to_proto(c: &Clock, allowed: i64) -> pb::Clock {
    pb::Clock {
        allowed_days: allowed.clamp(0, i64::from(i32::MAX)) as i32,
        used_days: c.used.min(i64::from(i32::MAX)) as i32,
        remaining_days: c.remaining.min(i64::from(i32::MAX)) as i32,
        due_date: c.due_day.map(times::date_from_key),
        due_time: times::timestamp_opt(c.due_time),
        stopped: c.stopped,
        breached: c.breached,
        completed: c.completed,
    }
}

fn complaint_to_proto(
    r: &ComplaintRecord,
    cal: &Calendar,
    standard: &Standard,
    now: i64,
) -> pb::Complaint {
    let s = &r.state;
    let p = r.personal.clone().unwrap_or_default();
    let who = if !r.client_id.is_empty() {
        Some(pb::complainant::Who::Client(format!(
            "agencies/{}/clients/{}",
            r.agency, r.client_id
        )))
    } else if r.anonymous {
        Some(pb::complainant::Who::Anonymous(true))
    } else {
        p.contact.as_ref().map(|c| {
            pb::complainant::Who::Contact(pb::ContactDetails {
                display_name: c.display_name.clone(),
                email: c.email.clone(),
                phone: c.phone.clone(),
            })
        })
    };
    let clocks = s.clocks(cal, standard, now);
    pb::Complaint {
        name: r.name(),
        complainant: Some(pb::Complainant { who }),
        channel: r.channel,
        receive_time: Some(times::timestamp(s.receive_time)),
        unit: s.unit.clone(),
        service: r.service.clone(),
        category: s.category.clone(),
        description: p.description,
        remedy_sought: p.remedy_sought,
        severity: s.severity,
        accessibility: (!r.client_id.is_empty()).then(|| pb::Accessibility {
            needs: r.needs.needs.clone(),
            interpreter_needed: r.needs.interpreter_needed,
            preferred_language: r.needs.preferred_language.clone(),
            preferred_channel: r.needs.preferred_channel,
        }),
        stage: s.stage.proto() as i32,
        status: s.status.proto() as i32,
        assignment: (!s.unit.is_empty() || !s.officer.is_empty()).then(|| pb::Assignment {
            unit: s.unit.clone(),
            officer: s.officer.clone(),
        }),
        senior_queue: s.senior_queue,
        resolution: (s.outcome != 0).then(|| pb::Resolution {
            outcome: s.outcome,
            remedies: s.remedies.clone(),
            root_causes: s.root_causes.clone(),
            financial_amount_cents: s.financial_cents,
            financial_approver: s.financial_approver.clone(),
            summary: p.resolution_summary,
        }),
        links: s
            .links
            .iter()
            .map(|(c, k)| pb::ComplaintLink {
                complaint: c.clone(),
                kind: *k,
            })
            .collect(),
        referral: (!s.referral_body.is_empty()).then(|| pb::Referral {
            body: s.referral_body.clone(),
            reference: s.referral_reference.clone(),
            referral_time: times::timestamp_opt(s.referral_time),
        }),
        acknowledgement_clock: Some(clock_to_proto(&clocks.acknowledgement, clocks.allowed.0)),
        response_clock: Some(clock_to_proto(&clocks.response, clocks.allowed.1)),
        client_check: r.client_check,
        redacted: r.redacted,
        create_time: Some(times::timestamp(r.create_time)),
        update_time: Some(times::timestamp(r.update_time)),
        etag: etag(r.revision),
        due_time: times::timestamp_opt(clocks.due_time),
        overdue: clocks.overdue(now),
    }
}

/// A complaint in the basic view (AIP-157): its handling only, nothing
/// about who complained or what they wrote (see `ComplaintView` in the
/// proto), so that reading it is not a read of personal data.
fn basic_view(c: pb::Complaint) -> pb::Complaint {
    pb::Complaint {
        complainant: None,
        description: String::new(),
        remedy_sought: String::new(),
        accessibility: None,
        resolution: None,
        links: Vec::new(),
        referral: None,
        client_check: 0,
        ..c
    }
}

fn facts(r: &ComplaintRecord, cal: &Calendar, now: i64) -> pb::ComplaintFacts {
    let s = &r.state;
    pb::ComplaintFacts {
        complaint: r.name(),
        unit: s.unit.clone(),
        channel: r.channel,
        category: s.category.clone(),
        severity: s.severity,
        service: r.service.clone(),
        receive_time: Some(times::timestamp(s.receive_time)),
        stage: s.stage.proto() as i32,
        event_time: Some(times::timestamp(now)),
        event_date: Some(times::date_from_key(cal.local_day(now))),
    }
}

pub(crate) use crate::metrics::Missed;

fn days(n: i64) -> i32 {
    n.clamp(0, i64::from(i32::MAX)) as i32
}

/// The outbox events a command causes, given the state before and after;
/// adds the timeframes it missed to `missed`.
fn events_of(
    command: &Command,
    before: &State,
    after: &ComplaintRecord,
    cal: &Calendar,
    standard: &Standard,
    now: i64,
    missed: &mut Missed,
) -> Vec<outbox::Pending> {
    let f = || Some(facts(after, cal, now));
    let s = &after.state;
    let mut out = Vec::new();
    if before.acknowledge_time.is_none()
        && let Some(at) = s.acknowledge_time
    {
        let c = clock::clock(
            cal,
            s.receive_time,
            &[],
            Some(at),
            at,
            standard.acknowledge_days,
        );
        missed.acknowledge += u64::from(c.breached);
        out.push(outbox::Pending::new(&pb::ComplaintAcknowledged {
            facts: f(),
            working_days: days(c.used),
            within_standard: !c.breached,
        }));
    }
    match command {
        Command::AwaitClient => out.push(outbox::Pending::new(&pb::ComplaintPaused { facts: f() })),
        Command::Resume => out.push(outbox::Pending::new(&pb::ComplaintResumed { facts: f() })),
        Command::Close => out.push(outbox::Pending::new(&pb::ComplaintClosed { facts: f() })),
        Command::Reopen => out.push(outbox::Pending::new(&pb::ComplaintReopened { facts: f() })),
        Command::Withdraw => out.push(outbox::Pending::new(&pb::ComplaintWithdrawn { facts: f() })),
        Command::Escalate { referral_body, .. } => {
            out.push(outbox::Pending::new(&pb::ComplaintStageChanged {
                facts: f(),
                from_stage: before.stage.proto() as i32,
                referral_body: referral_body.clone(),
            }))
        }
        Command::Reclassify { .. } if s.senior_queue && !before.senior_queue => {
            if let Some(reason) = standard.senior_reason(s.severity, &s.category) {
                out.push(outbox::Pending::new(&pb::ComplaintEscalated {
                    facts: f(),
                    reason: reason.into(),
                }));
            }
        }
        Command::Resolve { .. } => {
            let mut stages: Vec<pb::StageDays> = s
                .stages
                .iter()
                .map(|span| {
                    let c = domain::span_days(span, cal, standard);
                    pb::StageDays {
                        stage: span.stage.proto() as i32,
                        working_days: days(c.used),
                        allowed_days: days(standard.days(span.stage)),
                        within_standard: !c.breached,
                    }
                })
                .collect();
            let clocks = s.clocks(cal, standard, now);
            let current = clocks.response;
            stages.push(pb::StageDays {
                stage: s.stage.proto() as i32,
                working_days: days(current.used),
                allowed_days: days(clocks.allowed.1),
                within_standard: !current.breached,
            });
            let all_pauses: Vec<clock::Pause> = s
                .stages
                .iter()
                .flat_map(|span| span.pauses.iter())
                .chain(s.pauses.iter())
                .map(|&(from, to)| clock::Pause { from, to })
                .collect();
            let total = clock::clock(cal, s.receive_time, &all_pauses, Some(now), now, 0);
            missed.respond += u64::from(current.breached);
            out.push(outbox::Pending::new(&pb::ComplaintResolved {
                facts: f(),
                outcome: s.outcome,
                remedies: s.remedies.clone(),
                stages,
                working_days: days(current.used),
                within_standard: !current.breached,
                total_working_days: days(total.used),
                root_causes: s.root_causes.clone(),
            }));
        }
        _ => {}
    }
    out
}

fn access<'a>(
    caller: &'a Caller,
    agency: &'a str,
    action: &'a str,
    resource: &'a str,
) -> Access<'a> {
    Access {
        agency,
        actor: &caller.subject,
        action,
        resource,
        request_id: "",
    }
}

/// What a lifecycle call asks for, before the complaint is loaded.
struct Verb<'a> {
    name: &'a str,
    note: &'a str,
    etag: &'a str,
    request_id: &'a str,
    method: &'static str,
    fingerprint: String,
}

impl Complaints {
    /// Runs one lifecycle command: load and lock the complaint, check the
    /// etag and the senior rules, apply the transition, append the history,
    /// queue the events, store and commit.
    async fn run_command(
        &self,
        caller: &Caller,
        verb: Verb<'_>,
        personal: impl FnOnce(&mut Personal),
        build: impl FnOnce(&ComplaintRecord) -> Result<Command, Error>,
    ) -> Result<pb::Complaint, Error> {
        let (agency, id) = parse_complaint("name", verb.name)?;
        authorize(caller, Action::Work.roles(), agency, Target::Named)?;
        let note = note("note", verb.note)?;
        let mut change = match self
            .begin(
                caller,
                agency,
                verb.method,
                verb.request_id,
                verb.fingerprint,
            )
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut record = store::lock_complaint(&mut change.tx, &change.key, agency, id)
            .await?
            .ok_or(Error::NotFound("complaint"))?;
        check_etag(verb.etag, record.revision)?;
        let command = build(&record)?;
        let now = times::now_millis();
        if let Some(p) = record.personal.as_mut() {
            personal(p);
        }
        let (cal, standard) = rules(&mut change.tx, agency).await?;
        let sequence = store::history_len(&mut change.tx, agency, id).await? + 1;
        let step = Step {
            command,
            time: now,
            actor: &caller.subject,
            note,
            sequence,
        };
        let (events, missed) = advance(
            &mut change.tx,
            &change.key,
            caller,
            &mut record,
            step,
            &cal,
            &standard,
        )
        .await?;
        record.revision += 1;
        record.update_time = now;
        let due = due_columns(&record.state, &cal, &standard, now);
        if !store::update_complaint(&mut change.tx, &change.key, &record, due).await? {
            return Err(Error::StaleEtag);
        }
        let name = record.name();
        for event in events {
            change.event_pending(&name, event);
        }
        let response = complaint_to_proto(&record, &cal, &standard, now);
        let response = change.finish(&name, response).await?;
        crate::metrics::count_missed(missed);
        Ok(response)
    }
}

/// One step of a complaint's life, about to be applied.
struct Step<'a> {
    command: Command,
    time: i64,
    actor: &'a str,
    note: String,
    sequence: i64,
}

/// Applies one step to `record` (not yet stored): the senior rules, the
/// transition, the history entry. Returns the outbox events it causes.
async fn advance(
    tx: &mut Tx,
    key: &DataKey,
    caller: &Caller,
    record: &mut ComplaintRecord,
    step: Step<'_>,
    cal: &Calendar,
    standard: &Standard,
) -> Result<(Vec<outbox::Pending>, Missed), Error> {
    if let Some(why) = domain::needs_senior(&record.state, &step.command)
        && !caller.acts_as(Role::SeniorOfficer, &record.agency)
    {
        return Err(Error::SeniorRequired(why));
    }
    let command = match step.command {
        Command::Resolve {
            outcome,
            remedies,
            root_causes,
            financial_cents,
            ..
        } => Command::Resolve {
            approver: if remedies.contains(&(pb::Remedy::Financial as i32)) {
                caller.subject.clone()
            } else {
                String::new()
            },
            outcome,
            remedies,
            root_causes,
            financial_cents,
        },
        other => other,
    };
    let before = record.state.clone();
    record.state = before.apply(&command, step.time)?;
    store::append_history(
        tx,
        key,
        &record.agency,
        &record.id,
        &history_row(
            step.sequence,
            step.actor,
            step.time,
            command.clone(),
            &before,
            &record.state,
            step.note,
        ),
    )
    .await?;
    let mut missed = Missed::default();
    let events = events_of(
        &command,
        &before,
        record,
        cal,
        standard,
        step.time,
        &mut missed,
    );
    Ok((events, missed))
}

/// Parses a resolution into its command and the response summary.
fn parse_resolution(
    field: &str,
    resolution: Option<&pb::Resolution>,
) -> Result<(Command, String), Error> {
    let Some(resolution) = resolution else {
        return Err(Error::invalid(field, "required"));
    };
    let mut v = Violations::new();
    if matches!(
        pb::Outcome::try_from(resolution.outcome),
        Ok(pb::Outcome::Unspecified) | Err(_)
    ) {
        v.add(format!("{field}.outcome"), "required");
    }
    if resolution.remedies.len() > domain::MAX_LIST {
        v.add(format!("{field}.remedies"), "at most 50");
    }
    for (i, r) in resolution.remedies.iter().enumerate() {
        if matches!(
            pb::Remedy::try_from(*r),
            Ok(pb::Remedy::Unspecified) | Err(_)
        ) {
            v.add(format!("{field}.remedies[{i}]"), "not a known remedy");
        }
    }
    let financial = resolution
        .remedies
        .contains(&(pb::Remedy::Financial as i32));
    if resolution.financial_amount_cents < 0
        || resolution.financial_amount_cents > 100_000_000_000
        || (!financial && resolution.financial_amount_cents != 0)
    {
        v.add(
            format!("{field}.financial_amount_cents"),
            "0 to 100,000,000,000, and only with a FINANCIAL remedy",
        );
    }
    if resolution.root_causes.len() > domain::MAX_LIST {
        v.add(format!("{field}.root_causes"), "at most 50");
    }
    let mut root_causes = Vec::new();
    for (i, c) in resolution.root_causes.iter().enumerate() {
        if let Some(c) = v.check(
            &format!("{field}.root_causes[{i}]"),
            domain::short_text(c, true),
        ) {
            root_causes.push(c);
        }
    }
    let summary = v
        .check(
            &format!("{field}.summary"),
            domain::long_text(&resolution.summary, domain::MAX_NOTE),
        )
        .unwrap_or_default();
    if !v.is_empty() {
        return Err(v.into());
    }
    let mut remedies = resolution.remedies.clone();
    remedies.sort_unstable();
    remedies.dedup();
    Ok((
        Command::Resolve {
            outcome: resolution.outcome,
            remedies,
            root_causes,
            financial_cents: resolution.financial_amount_cents,
            approver: String::new(),
        },
        summary,
    ))
}

/// A checked escalation request: the stage asked for (None: the next one)
/// and the external body.
struct Escalation {
    to: Option<Stage>,
    body: String,
    reference: String,
}

impl Escalation {
    fn parse(stage: i32, referral: Option<&pb::Referral>) -> Result<Escalation, Error> {
        let to = if stage == 0 {
            None
        } else {
            Some(
                Stage::from_proto(stage)
                    .ok_or_else(|| Error::invalid("stage", "not a known stage"))?,
            )
        };
        let referral = referral.cloned().unwrap_or_default();
        let mut v = Violations::new();
        let body = v.check("referral.body", domain::short_text(&referral.body, false));
        let reference = v.check(
            "referral.reference",
            domain::short_text(&referral.reference, false),
        );
        if !v.is_empty() {
            return Err(v.into());
        }
        Ok(Escalation {
            to,
            body: body.unwrap_or_default(),
            reference: reference.unwrap_or_default(),
        })
    }

    fn command(self, state: &State) -> Result<Command, Error> {
        let to = match self.to {
            Some(s) => s,
            None => state
                .stage
                .next()
                .ok_or(Error::Transition(TransitionError::NotLaterStage))?,
        };
        if to == Stage::ExternalReview && (self.body.is_empty() || self.reference.is_empty()) {
            return Err(Error::invalid(
                "referral",
                "the external body and its reference are required for external review",
            ));
        }
        Ok(Command::Escalate {
            to,
            referral_body: self.body,
            referral_reference: self.reference,
        })
    }
}

/// Parses an assignment: unit, officer, or both.
fn parse_assignment(a: Option<&pb::Assignment>) -> Result<(String, String), Error> {
    let a = a.cloned().unwrap_or_default();
    let mut v = Violations::new();
    let unit = v.check("assignment.unit", domain::short_text(&a.unit, false));
    let officer = v.check("assignment.officer", domain::short_text(&a.officer, false));
    if !v.is_empty() {
        return Err(v.into());
    }
    let (unit, officer) = (unit.unwrap_or_default(), officer.unwrap_or_default());
    if unit.is_empty() && officer.is_empty() {
        return Err(Error::invalid(
            "assignment",
            "give a unit, an officer or both",
        ));
    }
    Ok((unit, officer))
}

fn history_row(
    sequence: i64,
    actor: &str,
    now: i64,
    command: Command,
    before: &State,
    after: &State,
    note: String,
) -> HistoryRow {
    HistoryRow {
        sequence,
        actor: actor.to_string(),
        time: now,
        command,
        from_status: before.status.proto() as i32,
        to_status: after.status.proto() as i32,
        from_stage: before.stage.proto() as i32,
        to_stage: after.stage.proto() as i32,
        note,
    }
}

/// Parses a complaint at intake into its record (without the client check).
fn parse_intake(
    c: &pb::Complaint,
    agency: &str,
    now: i64,
) -> Result<(ComplaintRecord, Option<String>), Error> {
    let mut v = Violations::new();
    let mut client_id = String::new();
    let mut anonymous = false;
    let mut contact = None;
    match c.complainant.as_ref().and_then(|x| x.who.as_ref()) {
        None => v.add(
            "complaint.complainant",
            "required: a client, anonymous, or contact details",
        ),
        Some(pb::complainant::Who::Client(name)) => {
            match names::parse_field(
                "complaint.complainant.client",
                "agencies/{}/clients/{}",
                name,
            ) {
                Ok(ids) if ids[0] == agency => client_id = ids[1].to_string(),
                Ok(_) => v.add(
                    "complaint.complainant.client",
                    "must be a client of the same agency",
                ),
                Err(e) => v.add(e.field, e.description),
            }
        }
        Some(pb::complainant::Who::Anonymous(a)) => {
            if !a {
                v.add("complaint.complainant.anonymous", "must be true when set");
            }
            anonymous = true;
        }
        Some(pb::complainant::Who::Contact(d)) => {
            let mut text = |field: &str, value: &str| {
                v.check(
                    &format!("complaint.complainant.contact.{field}"),
                    domain::short_text(value, false),
                )
                .unwrap_or_default()
            };
            let details = ContactDetails {
                display_name: text("display_name", &d.display_name),
                email: text("email", &d.email),
                phone: text("phone", &d.phone),
            };
            if !details.email.is_empty() && !details.email.contains('@') {
                v.add(
                    "complaint.complainant.contact.email",
                    "not an email address",
                );
            }
            if details.display_name.is_empty()
                && details.email.is_empty()
                && details.phone.is_empty()
            {
                v.add(
                    "complaint.complainant.contact",
                    "give at least a name, an email or a phone number",
                );
            }
            contact = Some(details);
        }
    }
    if !matches!(
        touchstone_api::common::v1::Channel::try_from(c.channel),
        Ok(ch) if ch != touchstone_api::common::v1::Channel::Unspecified
    ) {
        v.add("complaint.channel", "required: how the complaint came in");
    }
    let receive_time = match &c.receive_time {
        None => now,
        Some(ts) => match times::millis(ts) {
            Some(ms) if ms > now + FUTURE_SLACK_MILLIS => {
                v.add("complaint.receive_time", "must not be in the future");
                now
            }
            Some(ms) if ms < 631_152_000_000 => {
                v.add("complaint.receive_time", "must be after 1990");
                now
            }
            Some(ms) => ms,
            None => {
                v.add("complaint.receive_time", "not a valid timestamp");
                now
            }
        },
    };
    let unit = v
        .check("complaint.unit", domain::short_text(&c.unit, false))
        .unwrap_or_default();
    let service = v
        .check("complaint.service", domain::short_text(&c.service, false))
        .unwrap_or_default();
    let category = v
        .check("complaint.category", domain::short_text(&c.category, false))
        .unwrap_or_default();
    let description = v
        .check(
            "complaint.description",
            domain::long_text(&c.description, domain::MAX_NARRATIVE),
        )
        .unwrap_or_default();
    if description.is_empty() {
        v.add("complaint.description", "required");
    }
    let remedy_sought = v
        .check(
            "complaint.remedy_sought",
            domain::long_text(&c.remedy_sought, domain::MAX_NARRATIVE),
        )
        .unwrap_or_default();
    let severity = v
        .check("complaint.severity", domain::severity(c.severity))
        .map_or(pb::Severity::Medium as i32, |s| s as i32);
    if !v.is_empty() {
        return Err(v.into());
    }
    let client = (!client_id.is_empty()).then(|| format!("agencies/{agency}/clients/{client_id}"));
    let record = ComplaintRecord {
        agency: agency.to_string(),
        id: String::new(),
        client_check: if client_id.is_empty() {
            pb::ClientCheck::Unspecified as i32
        } else {
            pb::ClientCheck::Pending as i32
        },
        client_id,
        anonymous,
        channel: c.channel,
        service,
        needs: Needs::default(),
        state: State::received(receive_time, severity, &category, &unit, false),
        personal: Some(Personal {
            contact,
            description,
            remedy_sought,
            resolution_summary: String::new(),
        }),
        redacted: false,
        revision: 1,
        create_time: now,
        update_time: now,
    };
    Ok((record, client))
}

fn calendar_to_proto(c: &CalendarRecord) -> pb::Calendar {
    pb::Calendar {
        name: c.name(),
        display_name: c.fields.display_name.clone(),
        time_zone: c.fields.time_zone.clone(),
        weekend_days: c
            .fields
            .weekend_days
            .iter()
            .map(|d| i32::from(*d))
            .collect(),
        holidays: c
            .fields
            .holidays
            .iter()
            .map(|d| times::date_from_key(*d))
            .collect(),
        close_minute: i32::from(c.fields.close_minute),
        create_time: Some(times::timestamp(c.create_time)),
        update_time: Some(times::timestamp(c.update_time)),
        etag: etag(c.revision),
    }
}

fn standard_to_proto(agency: &str, s: &Standard) -> pb::ComplaintStandard {
    pb::ComplaintStandard {
        name: format!("agencies/{agency}/complaintStandard"),
        calendar: if s.calendar.is_empty() {
            String::new()
        } else {
            format!("agencies/{agency}/calendars/{}", s.calendar)
        },
        acknowledge_days: days(s.acknowledge_days),
        frontline_days: days(s.response_days[0]),
        investigation_days: days(s.response_days[1]),
        internal_review_days: days(s.response_days[2]),
        external_review_days: days(s.response_days[3]),
        target_share: s.target_share,
        senior_categories: s.senior_categories.clone(),
        update_time: (s.update_time > 0).then(|| times::timestamp(s.update_time)),
        etag: etag(s.revision),
    }
}

fn issue_to_proto(i: &IssueRecord) -> pb::Issue {
    pb::Issue {
        name: i.name(),
        title: i.title.clone(),
        description: i.description.clone(),
        complaints: i.complaints.clone(),
        recommended_solution: i.recommended_solution.clone(),
        owner: i.owner.clone(),
        state: i.state,
        create_time: Some(times::timestamp(i.create_time)),
        update_time: Some(times::timestamp(i.update_time)),
        etag: etag(i.revision),
    }
}

/// Checks an issue's fields from the API into `target`, for the paths given
/// (all of them on create).
fn apply_issue(
    target: &mut IssueRecord,
    issue: &pb::Issue,
    paths: &[&str],
    agency: &str,
) -> Result<(), Error> {
    let mut v = Violations::new();
    for path in paths {
        match *path {
            "title" => {
                if let Some(t) = v.check("issue.title", domain::short_text(&issue.title, true)) {
                    target.title = t;
                }
            }
            "description" => {
                if let Some(t) = v.check(
                    "issue.description",
                    domain::long_text(&issue.description, domain::MAX_NOTE),
                ) {
                    target.description = t;
                }
            }
            "recommended_solution" => {
                if let Some(t) = v.check(
                    "issue.recommended_solution",
                    domain::long_text(&issue.recommended_solution, domain::MAX_NOTE),
                ) {
                    target.recommended_solution = t;
                }
            }
            "owner" => {
                if let Some(t) = v.check("issue.owner", domain::short_text(&issue.owner, false)) {
                    target.owner = t;
                }
            }
            "state" => match pb::issue::State::try_from(issue.state) {
                Ok(pb::issue::State::Unspecified) => target.state = pb::issue::State::Open as i32,
                Ok(s) => target.state = s as i32,
                Err(_) => v.add("issue.state", "not a known state"),
            },
            "complaints" => {
                if issue.complaints.len() > 1000 {
                    v.add("issue.complaints", "at most 1000");
                }
                let mut list = Vec::new();
                for (i, c) in issue.complaints.iter().enumerate() {
                    match names::parse_field(
                        &format!("issue.complaints[{i}]"),
                        "agencies/{}/complaints/{}",
                        c,
                    ) {
                        Ok(ids) if ids[0] == agency => {
                            if !list.contains(c) {
                                list.push(c.clone());
                            }
                        }
                        Ok(_) => v.add(
                            format!("issue.complaints[{i}]"),
                            "must be a complaint of the same agency",
                        ),
                        Err(e) => v.add(e.field, e.description),
                    }
                }
                target.complaints = list;
            }
            other => v.add(
                "update_mask",
                format!(
                    "{} is not a field that can be changed",
                    other.chars().take(40).collect::<String>()
                ),
            ),
        }
    }
    v.finish().map_err(Error::InvalidArgument)
}

async fn check_complaints_exist(tx: &mut Tx, agency: &str, list: &[String]) -> Result<(), Error> {
    for (i, c) in list.iter().enumerate() {
        let (_, id) = parse_complaint("issue.complaints", c)?;
        if !store::complaint_exists(tx, agency, id).await? {
            return Err(Error::invalid(
                &format!("issue.complaints[{i}]"),
                "no such complaint",
            ));
        }
    }
    Ok(())
}

impl Complaints {
    /// Recomputes the due columns of the agency's open complaints (after its
    /// calendar or standard changed).
    async fn recompute_due(&self, tx: &mut Tx, agency: &str) -> Result<(), Error> {
        let (cal, standard) = rules(tx, agency).await?;
        let now = times::now_millis();
        for (id, state) in store::open_complaints(tx, agency).await? {
            store::set_due(tx, agency, &id, due_columns(&state, &cal, &standard, now)).await?;
        }
        Ok(())
    }
}

/// Most historic steps of one imported complaint.
const MAX_STEPS: usize = 100;
/// Most complaints one GetComplaintStatuses names.
const MAX_STATUSES: usize = 1000;

/// A complaint being taken in: new (CreateComplaint) or historic, with the
/// steps it already went through (ImportComplaint).
struct Intake<'a> {
    parent: &'a str,
    complaint: Option<&'a pb::Complaint>,
    complaint_id: &'a str,
    request_id: &'a str,
    fingerprint: String,
    method: &'static str,
    action: Action,
    steps: &'a [pb::HistoricStep],
}

/// A historic step as a command, its time and its note.
fn historic_step(
    i: usize,
    step: &pb::HistoricStep,
    state: &State,
) -> Result<(Command, i64, String, String), Error> {
    use pb::historic_step::Action as A;
    let field = format!("steps[{i}]");
    let time = step
        .time
        .as_ref()
        .and_then(times::millis)
        .ok_or_else(|| Error::invalid(&format!("{field}.time"), "required"))?;
    let note = domain::long_text(&step.note, domain::MAX_NOTE)
        .map_err(|e| Error::invalid(&format!("{field}.note"), e))?;
    let actor = domain::short_text(&step.actor, false)
        .map_err(|e| Error::invalid(&format!("{field}.actor"), e))?;
    let (command, summary) = match A::try_from(step.action) {
        Ok(A::Acknowledge) => (Command::Acknowledge, None),
        Ok(A::Start) => (Command::Start, None),
        Ok(A::AwaitClient) => (Command::AwaitClient, None),
        Ok(A::Resume) => (Command::Resume, None),
        Ok(A::Close) => (Command::Close, None),
        Ok(A::Reopen) => (Command::Reopen, None),
        Ok(A::Withdraw) => (Command::Withdraw, None),
        Ok(A::Resolve) => {
            let (c, summary) =
                parse_resolution(&format!("{field}.resolution"), step.resolution.as_ref())?;
            (c, Some(summary))
        }
        Ok(A::Escalate) => (
            Escalation::parse(step.stage, step.referral.as_ref())?.command(state)?,
            None,
        ),
        Ok(A::Assign) => {
            let (unit, officer) = parse_assignment(step.assignment.as_ref())?;
            (
                Command::Assign {
                    unit: if unit.is_empty() {
                        state.unit.clone()
                    } else {
                        unit
                    },
                    officer,
                },
                None,
            )
        }
        Ok(A::Unspecified) | Err(_) => {
            return Err(Error::invalid(&format!("{field}.action"), "required"));
        }
    };
    let note = match summary {
        Some(summary) if note.is_empty() => summary,
        _ => note,
    };
    Ok((command, time, note, actor))
}

impl Complaints {
    async fn take_in(
        &self,
        caller: &Caller,
        req: Intake<'_>,
        deadline: Option<std::time::Duration>,
    ) -> Result<pb::Complaint, Error> {
        let agency = parse_agency("parent", req.parent)?;
        authorize(caller, req.action.roles(), agency, Target::Collection)?;
        let Some(complaint) = req.complaint else {
            return Err(Error::invalid("complaint", "required"));
        };
        let now = times::now_millis();
        let (mut record, client) = parse_intake(complaint, agency, now)?;
        record.id = names::chosen_id("complaint_id", req.complaint_id)?;
        change::check_request_id(req.request_id)?;
        // The register is asked before the write transaction opens, so a
        // slow register never holds the writer; if it cannot answer, the
        // complaint is still taken in and checked again later.
        if let Some(client) = &client {
            match intake::check(&self.register, client, deadline).await {
                intake::Checked::Verified(needs) => {
                    record.client_check = pb::ClientCheck::Verified as i32;
                    record.needs = needs;
                }
                intake::Checked::Unknown => {
                    return Err(Error::invalid(
                        "complaint.complainant.client",
                        "the register has no such client",
                    ));
                }
                intake::Checked::Erased => {
                    return Err(Error::invalid(
                        "complaint.complainant.client",
                        "the client was erased from the register",
                    ));
                }
                intake::Checked::Unavailable => {}
            }
        }
        let mut change = match self
            .begin(caller, agency, req.method, req.request_id, req.fingerprint)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let (cal, standard) = rules(&mut change.tx, agency).await?;
        let senior = standard.senior_reason(record.state.severity, &record.state.category);
        record.state.senior_queue = senior.is_some();
        let s = &record.state;
        let received_at = s.receive_time;
        let command = Command::Receive {
            receive_time: s.receive_time,
            severity: s.severity,
            category: s.category.clone(),
            unit: s.unit.clone(),
            senior: s.senior_queue,
        };
        let before = record.state.clone();
        store::append_history(
            &mut change.tx,
            &change.key,
            agency,
            &record.id,
            &history_row(
                1,
                &caller.subject,
                received_at,
                command,
                &before,
                &record.state,
                String::new(),
            ),
        )
        .await?;
        let name = record.name();
        change.event(
            &name,
            &pb::ComplaintReceived {
                facts: Some(facts(&record, &cal, received_at)),
                senior_queue: record.state.senior_queue,
            },
        );
        if let Some(reason) = senior {
            change.event(
                &name,
                &pb::ComplaintEscalated {
                    facts: Some(facts(&record, &cal, received_at)),
                    reason: reason.into(),
                },
            );
        }
        let mut last = received_at;
        for (i, step) in req.steps.iter().enumerate() {
            let (command, time, note, actor) = historic_step(i, step, &record.state)?;
            if time < last || time > now + FUTURE_SLACK_MILLIS {
                return Err(Error::invalid(
                    &format!("steps[{i}].time"),
                    "not before the previous step or the receipt, and not in the future",
                ));
            }
            last = time;
            if let (Command::Resolve { .. }, Some(p)) = (&command, record.personal.as_mut()) {
                p.resolution_summary = note.clone();
            }
            let actor = if actor.is_empty() {
                caller.subject.clone()
            } else {
                actor
            };
            let step = Step {
                command,
                time,
                actor: &actor,
                note,
                sequence: i as i64 + 2,
            };
            // Steps taken in (history) are not live breaches: `_missed`.
            let (events, _missed) = advance(
                &mut change.tx,
                &change.key,
                caller,
                &mut record,
                step,
                &cal,
                &standard,
            )
            .await
            .map_err(|e| match e {
                Error::Transition(t) => {
                    Error::invalid(&format!("steps[{i}].action"), t.to_string())
                }
                other => other,
            })?;
            for event in events {
                change.event_pending(&name, event);
            }
        }
        // The row is written once, in its final state; the history above
        // holds every step that led to it.
        let due = due_columns(&record.state, &cal, &standard, now);
        store::insert_complaint(&mut change.tx, &change.key, &record, due).await?;
        let response = complaint_to_proto(&record, &cal, &standard, now);
        Ok(change.finish(&name, response).await?)
    }
}

#[tonic::async_trait]
impl ComplaintsService for Complaints {
    #[tracing::instrument(skip_all)]
    async fn create_complaint(
        &self,
        request: Request<pb::CreateComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let deadline = touchstone_server::deadline::remaining(&request);
        let req = request.into_inner();
        let intake = Intake {
            parent: &req.parent,
            complaint: req.complaint.as_ref(),
            complaint_id: &req.complaint_id,
            request_id: &req.request_id,
            fingerprint: idempotency::fingerprint(&req),
            method: "CreateComplaint",
            action: Action::Intake,
            steps: &[],
        };
        Ok(Response::new(
            self.take_in(&caller, intake, deadline).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn import_complaint(
        &self,
        request: Request<pb::ImportComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let deadline = touchstone_server::deadline::remaining(&request);
        let req = request.into_inner();
        if req
            .complaint
            .as_ref()
            .is_some_and(|c| c.receive_time.is_none())
        {
            return Err(Error::invalid(
                "complaint.receive_time",
                "required for a historic complaint",
            )
            .into());
        }
        if req.steps.len() > MAX_STEPS {
            return Err(Error::invalid("steps", "at most 100").into());
        }
        let intake = Intake {
            parent: &req.parent,
            complaint: req.complaint.as_ref(),
            complaint_id: &req.complaint_id,
            request_id: &req.request_id,
            fingerprint: idempotency::fingerprint(&req),
            method: "ImportComplaint",
            action: Action::Migrate,
            steps: &req.steps,
        };
        Ok(Response::new(
            self.take_in(&caller, intake, deadline).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn get_complaint(
        &self,
        request: Request<pb::GetComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_complaint("name", &req.name)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            let record = store::get_complaint(&mut tx, &key, agency, id)
                .await?
                .ok_or(Error::NotFound("complaint"))?;
            let (cal, standard) = rules(&mut tx, agency).await?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "GetComplaint", &req.name),
                    &[&req.name],
                )
                .await?;
            Ok::<_, Error>(complaint_to_proto(
                &record,
                &cal,
                &standard,
                times::now_millis(),
            ))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn summarize_complaints(
        &self,
        request: Request<pb::SummarizeComplaintsRequest>,
    ) -> Reply<pb::SummarizeComplaintsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Collection)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let rows = store::tally_open(&mut tx, agency, times::now_millis()).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::SummarizeComplaintsResponse {
                tallies: rows
                    .into_iter()
                    .map(|(stage, severity, open, overdue)| pb::ComplaintTally {
                        stage,
                        severity,
                        open,
                        overdue,
                    })
                    .collect(),
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_complaint_statuses(
        &self,
        request: Request<pb::GetComplaintStatusesRequest>,
    ) -> Reply<pb::GetComplaintStatusesResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ReadStatus.roles(),
                agency,
                Target::Collection,
            )?;
            if req.names.len() > MAX_STATUSES {
                return Err(Error::invalid("names", "at most 1000"));
            }
            let mut ids = Vec::with_capacity(req.names.len());
            for (i, name) in req.names.iter().enumerate() {
                let field = format!("names[{i}]");
                let (of, id) = parse_complaint(&field, name)?;
                if of != agency {
                    return Err(Error::invalid(&field, "must be a complaint of `parent`"));
                }
                ids.push(id);
            }
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let found = store::public_states(&mut tx, agency, &ids).await?;
            let (cal, standard) = rules(&mut tx, agency).await?;
            tx.commit().await?;
            let now = times::now_millis();
            let by_id: HashMap<&str, &store::PublicState> =
                found.iter().map(|p| (p.id.as_str(), p)).collect();
            Ok::<_, Error>(pb::GetComplaintStatusesResponse {
                statuses: ids
                    .iter()
                    .filter_map(|id| by_id.get(id))
                    .map(|p| {
                        let s = &p.state;
                        let clocks = s.clocks(&cal, &standard, now);
                        pb::ComplaintStatus {
                            name: format!("agencies/{agency}/complaints/{}", p.id),
                            status: s.status.proto() as i32,
                            stage: s.stage.proto() as i32,
                            category: s.category.clone(),
                            service: p.service.clone(),
                            receive_time: Some(times::timestamp(s.receive_time)),
                            update_time: Some(times::timestamp(p.update_time)),
                            response_due_time: times::timestamp_opt(clocks.response.due_time),
                        }
                    })
                    .collect(),
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_complaints(
        &self,
        request: Request<pb::ListComplaintsRequest>,
    ) -> Reply<pb::ListComplaintsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Collection)?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let officer = req.assigned_to_me.then_some(caller.subject.as_str());
            let scope = format!("{}|{}", req.parent, officer.unwrap_or(""));
            let first = if officer.is_some() { 3 } else { 2 };
            let query = ListQuery::plan(&store::COMPLAINT_SCHEMA, &scope, &params, first)
                .map_err(list_error)?;
            let view = pb::ComplaintView::try_from(req.view)
                .map_err(|_| Error::invalid("view", "an unknown view"))?;
            let basic = view == pb::ComplaintView::Basic;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = if basic {
                None
            } else {
                Some(self.key(&mut tx, agency).await?)
            };
            let (records, next_page_token) =
                store::list_complaints(&mut tx, key.as_deref(), agency, officer, &query).await?;
            let (cal, standard) = rules(&mut tx, agency).await?;
            tx.commit().await?;
            if !basic {
                let names: Vec<String> = records.iter().map(ComplaintRecord::name).collect();
                self.db
                    .audit_reads(access(&caller, agency, "ListComplaints", ""), &names)
                    .await?;
            }
            let now = times::now_millis();
            Ok::<_, Error>(pb::ListComplaintsResponse {
                complaints: records
                    .iter()
                    .map(|r| {
                        let c = complaint_to_proto(r, &cal, &standard, now);
                        if basic { basic_view(c) } else { c }
                    })
                    .collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_complaint(
        &self,
        request: Request<pb::UpdateComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.complaint.as_ref() else {
                return Err(Error::invalid("complaint", "required"));
            };
            let paths = mask_paths(&req.update_mask);
            if paths.is_empty() {
                return Err(Error::invalid("update_mask", "name the fields to change"));
            }
            let mut v = Violations::new();
            let mut narrative: Vec<(&str, String)> = Vec::new();
            let mut classify = false;
            for p in &paths {
                match p.as_str() {
                    "description" | "remedy_sought" => {
                        let value = if p == "description" {
                            &patch.description
                        } else {
                            &patch.remedy_sought
                        };
                        if let Some(t) = v.check(
                            &format!("complaint.{p}"),
                            domain::long_text(value, domain::MAX_NARRATIVE),
                        ) {
                            if p == "description" && t.is_empty() {
                                v.add("complaint.description", "required");
                            }
                            narrative.push((
                                if p == "description" {
                                    "description"
                                } else {
                                    "remedy_sought"
                                },
                                t,
                            ));
                        }
                    }
                    "unit" | "category" | "severity" | "service" | "channel" => classify = true,
                    other => v.add(
                        "update_mask",
                        format!(
                            "{} cannot be changed here",
                            other.chars().take(40).collect::<String>()
                        ),
                    ),
                }
            }
            let has = |f: &str| paths.iter().any(|p| p == f);
            let unit = if has("unit") {
                v.check("complaint.unit", domain::short_text(&patch.unit, false))
            } else {
                None
            };
            let category = if has("category") {
                v.check(
                    "complaint.category",
                    domain::short_text(&patch.category, false),
                )
            } else {
                None
            };
            let service = if has("service") {
                v.check(
                    "complaint.service",
                    domain::short_text(&patch.service, false),
                )
            } else {
                None
            };
            let severity = if has("severity") {
                v.check("complaint.severity", domain::severity(patch.severity))
            } else {
                None
            };
            let channel = if has("channel") {
                match touchstone_api::common::v1::Channel::try_from(patch.channel) {
                    Ok(c) if c != touchstone_api::common::v1::Channel::Unspecified => {
                        Some(c as i32)
                    }
                    _ => {
                        v.add("complaint.channel", "not a known channel");
                        None
                    }
                }
            } else {
                None
            };
            if !v.is_empty() {
                return Err(v.into());
            }
            let (agency, id) = parse_complaint("complaint.name", &patch.name)?;
            authorize(&caller, Action::Work.roles(), agency, Target::Named)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "UpdateComplaint",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let mut record = store::lock_complaint(&mut change.tx, &change.key, agency, id)
                .await?
                .ok_or(Error::NotFound("complaint"))?;
            check_etag(&patch.etag, record.revision)?;
            if !narrative.is_empty() {
                let Some(personal) = record.personal.as_mut() else {
                    return Err(Error::FailedPrecondition {
                        reason: "REDACTED",
                        message: "the complaint's narrative was removed with the client's personal data",
                    });
                };
                for (field, text) in narrative {
                    match field {
                        "description" => personal.description = text,
                        _ => personal.remedy_sought = text,
                    }
                }
            }
            if let Some(s) = service {
                record.service = s;
            }
            if let Some(c) = channel {
                record.channel = c;
            }
            let now = times::now_millis();
            let (cal, standard) = rules(&mut change.tx, agency).await?;
            let before = record.state.clone();
            let mut command = None;
            if classify && (unit.is_some() || category.is_some() || severity.is_some()) {
                let severity = severity.map_or(before.severity, |s| s as i32);
                let category = category.unwrap_or_else(|| before.category.clone());
                let senior =
                    before.senior_queue || standard.senior_reason(severity, &category).is_some();
                let c = Command::Reclassify {
                    severity,
                    category,
                    unit: unit.unwrap_or_else(|| before.unit.clone()),
                    senior,
                };
                record.state = before.apply(&c, now)?;
                let sequence = store::history_len(&mut change.tx, agency, id).await? + 1;
                store::append_history(
                    &mut change.tx,
                    &change.key,
                    agency,
                    id,
                    &history_row(
                        sequence,
                        &caller.subject,
                        now,
                        c.clone(),
                        &before,
                        &record.state,
                        String::new(),
                    ),
                )
                .await?;
                command = Some(c);
            }
            record.revision += 1;
            record.update_time = now;
            let due = due_columns(&record.state, &cal, &standard, now);
            if !store::update_complaint(&mut change.tx, &change.key, &record, due).await? {
                return Err(Error::StaleEtag);
            }
            let name = record.name();
            let mut missed = Missed::default();
            if let Some(c) = &command {
                for event in events_of(c, &before, &record, &cal, &standard, now, &mut missed) {
                    change.event_pending(&name, event);
                }
            }
            let response = complaint_to_proto(&record, &cal, &standard, now);
            let response = change.finish(&name, response).await?;
            crate::metrics::count_missed(missed);
            Ok(response)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn acknowledge_complaint(
        &self,
        request: Request<pb::AcknowledgeComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "AcknowledgeComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Acknowledge))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn start_complaint(
        &self,
        request: Request<pb::StartComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "StartComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Start))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn await_client(&self, request: Request<pb::AwaitClientRequest>) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "AwaitClient",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::AwaitClient))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn resume_complaint(
        &self,
        request: Request<pb::ResumeComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "ResumeComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Resume))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn resolve_complaint(
        &self,
        request: Request<pb::ResolveComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let (command, summary) = parse_resolution("resolution", req.resolution.as_ref())?;
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "ResolveComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(
                &caller,
                verb,
                move |p| p.resolution_summary = summary,
                move |_| Ok(command),
            )
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn close_complaint(
        &self,
        request: Request<pb::CloseComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "CloseComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Close))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn reopen_complaint(
        &self,
        request: Request<pb::ReopenComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "ReopenComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Reopen))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn withdraw_complaint(
        &self,
        request: Request<pb::WithdrawComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "WithdrawComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(&caller, verb, |_| {}, |_| Ok(Command::Withdraw))
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn escalate_complaint(
        &self,
        request: Request<pb::EscalateComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let escalation = Escalation::parse(req.stage, req.referral.as_ref())?;
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "EscalateComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(
                &caller,
                verb,
                |_| {},
                move |record| escalation.command(&record.state),
            )
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn assign_complaint(
        &self,
        request: Request<pb::AssignComplaintRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let (unit, officer) = parse_assignment(req.assignment.as_ref())?;
        let verb = Verb {
            name: &req.name,
            note: &req.note,
            etag: &req.etag,
            request_id: &req.request_id,
            method: "AssignComplaint",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(
                &caller,
                verb,
                |_| {},
                move |record| {
                    Ok(Command::Assign {
                        unit: if unit.is_empty() {
                            record.state.unit.clone()
                        } else {
                            unit
                        },
                        officer,
                    })
                },
            )
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn link_complaints(
        &self,
        request: Request<pb::LinkComplaintsRequest>,
    ) -> Reply<pb::Complaint> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let Some(link) = req.link.clone() else {
            return Err(Error::invalid("link", "required").into());
        };
        let (agency, id) = parse_complaint("name", &req.name)?;
        let (other_agency, other_id) = parse_complaint("link.complaint", &link.complaint)?;
        if other_agency != agency {
            return Err(
                Error::invalid("link.complaint", "must be a complaint of the same agency").into(),
            );
        }
        if other_id == id {
            return Err(
                Error::invalid("link.complaint", "a complaint cannot be linked to itself").into(),
            );
        }
        if matches!(
            pb::complaint_link::Kind::try_from(link.kind),
            Ok(pb::complaint_link::Kind::Unspecified) | Err(_)
        ) {
            return Err(Error::invalid("link.kind", "DUPLICATE or RELATED").into());
        }
        authorize(&caller, Action::Work.roles(), agency, Target::Named).map_err(Error::from)?;
        {
            let mut tx = self
                .db
                .read(Scope::Agency(agency))
                .await
                .map_err(Error::from)?;
            let exists = store::complaint_exists(&mut tx, agency, other_id).await?;
            tx.commit().await.map_err(Error::from)?;
            if !exists {
                return Err(Error::invalid("link.complaint", "no such complaint").into());
            }
        }
        let verb = Verb {
            name: &req.name,
            note: "",
            etag: "",
            request_id: &req.request_id,
            method: "LinkComplaints",
            fingerprint: idempotency::fingerprint(&req),
        };
        let r = self
            .run_command(
                &caller,
                verb,
                |_| {},
                move |_| {
                    Ok(Command::Link {
                        complaint: link.complaint,
                        kind: link.kind,
                    })
                },
            )
            .await?;
        Ok(Response::new(r))
    }

    #[tracing::instrument(skip_all)]
    async fn list_complaint_history(
        &self,
        request: Request<pb::ListComplaintHistoryRequest>,
    ) -> Reply<pb::ListComplaintHistoryResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_complaint("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            if !store::complaint_exists(&mut tx, agency, id).await? {
                return Err(Error::NotFound("complaint"));
            }
            let rows = store::history(&mut tx, &key, agency, id).await?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "ListComplaintHistory", &req.parent),
                    &[&req.parent],
                )
                .await?;
            Ok::<_, Error>(pb::ListComplaintHistoryResponse {
                entries: rows
                    .iter()
                    .map(|h| pb::HistoryEntry {
                        sequence: h.sequence,
                        action: h.command.action().into(),
                        actor: h.actor.clone(),
                        time: Some(times::timestamp(h.time)),
                        from_status: h.from_status,
                        to_status: h.to_status,
                        from_stage: h.from_stage,
                        to_stage: h.to_stage,
                        note: h.note.clone(),
                    })
                    .collect(),
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_contact(
        &self,
        request: Request<pb::CreateContactRequest>,
    ) -> Reply<pb::Contact> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_complaint("parent", &req.parent)?;
            authorize(&caller, Action::Work.roles(), agency, Target::Named)?;
            let Some(c) = req.contact.as_ref() else {
                return Err(Error::invalid("contact", "required"));
            };
            let mut v = Violations::new();
            if matches!(
                touchstone_api::common::v1::Channel::try_from(c.channel),
                Ok(touchstone_api::common::v1::Channel::Unspecified) | Err(_)
            ) {
                v.add("contact.channel", "required");
            }
            if matches!(
                pb::contact::Direction::try_from(c.direction),
                Ok(pb::contact::Direction::Unspecified) | Err(_)
            ) {
                v.add("contact.direction", "INBOUND or OUTBOUND");
            }
            let summary = v
                .check(
                    "contact.summary",
                    domain::long_text(&c.summary, domain::MAX_NOTE),
                )
                .unwrap_or_default();
            let now = times::now_millis();
            let contact_time = match &c.contact_time {
                None => now,
                Some(ts) => match times::millis(ts) {
                    Some(ms) if ms <= now + FUTURE_SLACK_MILLIS => ms,
                    _ => {
                        v.add("contact.contact_time", "a valid time, not in the future");
                        now
                    }
                },
            };
            if !v.is_empty() {
                return Err(v.into());
            }
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateContact",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let record = store::lock_complaint(&mut change.tx, &change.key, agency, id)
                .await?
                .ok_or(Error::NotFound("complaint"))?;
            if record.redacted {
                return Err(Error::FailedPrecondition {
                    reason: "REDACTED",
                    message: "the complainant's personal data was removed",
                });
            }
            let row = ContactRow {
                id: names::new_id(),
                channel: c.channel,
                direction: c.direction,
                contact_time,
                summary,
                officer: caller.subject.clone(),
                create_time: now,
            };
            store::insert_contact(&mut change.tx, &change.key, agency, id, &row).await?;
            let response = contact_to_proto(&req.parent, &row);
            let name = response.name.clone();
            Ok(change.finish(&name, response).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_contacts(
        &self,
        request: Request<pb::ListContactsRequest>,
    ) -> Reply<pb::ListContactsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_complaint("parent", &req.parent)?;
            authorize(&caller, Action::Read.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.key(&mut tx, agency).await?;
            if !store::complaint_exists(&mut tx, agency, id).await? {
                return Err(Error::NotFound("complaint"));
            }
            let rows = store::contacts(&mut tx, &key, agency, id).await?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "ListContacts", &req.parent),
                    &[&req.parent],
                )
                .await?;
            Ok::<_, Error>(pb::ListContactsResponse {
                contacts: rows
                    .iter()
                    .map(|r| contact_to_proto(&req.parent, r))
                    .collect(),
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_calendar(
        &self,
        request: Request<pb::CreateCalendarRequest>,
    ) -> Reply<pb::Calendar> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::Configure.roles(),
                agency,
                Target::Collection,
            )?;
            if req.calendar_id.is_empty() {
                return Err(Error::invalid("calendar_id", "required, e.g. \"nsw\""));
            }
            let id = names::chosen_id("calendar_id", &req.calendar_id)?;
            let Some(c) = req.calendar.as_ref() else {
                return Err(Error::invalid("calendar", "required"));
            };
            let mut v = Violations::new();
            let fields = CalendarFields::parse(c, &mut v);
            if !v.is_empty() {
                return Err(v.into());
            }
            let now = times::now_millis();
            let record = CalendarRecord {
                agency: agency.to_string(),
                id,
                fields,
                revision: 1,
                create_time: now,
                update_time: now,
            };
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            store::insert_calendar(&mut tx, &record).await?;
            audit::record(
                &mut tx,
                access(&caller, agency, "CreateCalendar", &record.name()),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(calendar_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_calendar(&self, request: Request<pb::GetCalendarRequest>) -> Reply<pb::Calendar> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_two("name", "agencies/{}/calendars/{}", &req.name)?;
            authorize(&caller, Action::ReadSettings.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let record = store::get_calendar(&mut tx, agency, id)
                .await?
                .ok_or(Error::NotFound("calendar"))?;
            tx.commit().await?;
            Ok::<_, Error>(calendar_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_calendar(
        &self,
        request: Request<pb::UpdateCalendarRequest>,
    ) -> Reply<pb::Calendar> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.calendar.as_ref() else {
                return Err(Error::invalid("calendar", "required"));
            };
            let (agency, id) = parse_two("calendar.name", "agencies/{}/calendars/{}", &patch.name)?;
            authorize(&caller, Action::Configure.roles(), agency, Target::Named)?;
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let mut record = store::get_calendar(&mut tx, agency, id)
                .await?
                .ok_or(Error::NotFound("calendar"))?;
            check_etag(&patch.etag, record.revision)?;
            let mut merged = calendar_to_proto(&record);
            let paths = mask_paths(&req.update_mask);
            let all = [
                "display_name",
                "time_zone",
                "weekend_days",
                "holidays",
                "close_minute",
            ];
            let paths: Vec<String> = if paths.is_empty() {
                all.iter().map(|s| s.to_string()).collect()
            } else {
                paths
            };
            for p in &paths {
                match p.as_str() {
                    "display_name" => merged.display_name = patch.display_name.clone(),
                    "time_zone" => merged.time_zone = patch.time_zone.clone(),
                    "weekend_days" => merged.weekend_days = patch.weekend_days.clone(),
                    "holidays" => merged.holidays = patch.holidays.clone(),
                    "close_minute" => merged.close_minute = patch.close_minute,
                    _ => {
                        return Err(Error::invalid(
                            "update_mask",
                            "not a field that can be changed",
                        ));
                    }
                }
            }
            let mut v = Violations::new();
            record.fields = CalendarFields::parse(&merged, &mut v);
            if !v.is_empty() {
                return Err(v.into());
            }
            record.revision += 1;
            record.update_time = times::now_millis();
            if !store::update_calendar(&mut tx, &record).await? {
                return Err(Error::StaleEtag);
            }
            if store::get_standard(&mut tx, agency).await?.calendar == id {
                self.recompute_due(&mut tx, agency).await?;
            }
            audit::record(
                &mut tx,
                access(&caller, agency, "UpdateCalendar", &record.name()),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(calendar_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_calendars(
        &self,
        request: Request<pb::ListCalendarsRequest>,
    ) -> Reply<pb::ListCalendarsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ReadSettings.roles(),
                agency,
                Target::Collection,
            )?;
            let params = ListParams {
                filter: "",
                order_by: "",
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::CALENDAR_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let (records, next_page_token) = store::list_calendars(&mut tx, agency, &query).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::ListCalendarsResponse {
                calendars: records.iter().map(calendar_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_complaint_standard(
        &self,
        request: Request<pb::GetComplaintStandardRequest>,
    ) -> Reply<pb::ComplaintStandard> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = names::parse_field("name", "agencies/{}/complaintStandard", &req.name)?[0];
            authorize(&caller, Action::ReadSettings.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let standard = store::get_standard(&mut tx, agency).await?;
            tx.commit().await?;
            Ok::<_, Error>(standard_to_proto(agency, &standard))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_complaint_standard(
        &self,
        request: Request<pb::UpdateComplaintStandardRequest>,
    ) -> Reply<pb::ComplaintStandard> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(s) = req.complaint_standard.as_ref() else {
                return Err(Error::invalid("complaint_standard", "required"));
            };
            let agency = names::parse_field(
                "complaint_standard.name",
                "agencies/{}/complaintStandard",
                &s.name,
            )?[0];
            authorize(&caller, Action::Configure.roles(), agency, Target::Named)?;
            let mut v = Violations::new();
            let mut standard = Standard::parse(s, &mut v);
            if !s.calendar.is_empty()
                && let Ok(ids) = names::parse("agencies/{}/calendars/{}", &s.calendar, false)
                && ids[0] != agency
            {
                v.add(
                    "complaint_standard.calendar",
                    "must be a calendar of the same agency",
                );
            }
            if !v.is_empty() {
                return Err(v.into());
            }
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let current = store::get_standard(&mut tx, agency).await?;
            check_etag(&s.etag, current.revision)?;
            if !standard.calendar.is_empty()
                && store::get_calendar(&mut tx, agency, &standard.calendar)
                    .await?
                    .is_none()
            {
                return Err(Error::invalid(
                    "complaint_standard.calendar",
                    "no such calendar",
                ));
            }
            standard.revision = current.revision + 1;
            standard.update_time = times::now_millis();
            if !store::put_standard(&mut tx, agency, &standard).await? {
                return Err(Error::StaleEtag);
            }
            self.recompute_due(&mut tx, agency).await?;
            audit::record(
                &mut tx,
                access(&caller, agency, "UpdateComplaintStandard", &s.name),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, Error>(standard_to_proto(agency, &standard))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_issue(&self, request: Request<pb::CreateIssueRequest>) -> Reply<pb::Issue> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Learn.roles(), agency, Target::Collection)?;
            let Some(issue) = req.issue.as_ref() else {
                return Err(Error::invalid("issue", "required"));
            };
            let now = times::now_millis();
            let mut record = IssueRecord {
                agency: agency.to_string(),
                id: names::chosen_id("issue_id", &req.issue_id)?,
                title: String::new(),
                description: String::new(),
                complaints: Vec::new(),
                recommended_solution: String::new(),
                owner: String::new(),
                state: pb::issue::State::Open as i32,
                revision: 1,
                create_time: now,
                update_time: now,
            };
            apply_issue(
                &mut record,
                issue,
                &[
                    "title",
                    "description",
                    "recommended_solution",
                    "owner",
                    "state",
                    "complaints",
                ],
                agency,
            )?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateIssue",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            check_complaints_exist(&mut change.tx, agency, &record.complaints).await?;
            store::insert_issue(&mut change.tx, &record).await?;
            let name = record.name();
            Ok(change.finish(&name, issue_to_proto(&record)).await?)
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_issue(&self, request: Request<pb::GetIssueRequest>) -> Reply<pb::Issue> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_two("name", "agencies/{}/issues/{}", &req.name)?;
            authorize(&caller, Action::ReadSettings.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let record = store::get_issue(&mut tx, agency, id)
                .await?
                .ok_or(Error::NotFound("issue"))?;
            tx.commit().await?;
            Ok::<_, Error>(issue_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_issue(&self, request: Request<pb::UpdateIssueRequest>) -> Reply<pb::Issue> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.issue.as_ref() else {
                return Err(Error::invalid("issue", "required"));
            };
            let (agency, id) = parse_two("issue.name", "agencies/{}/issues/{}", &patch.name)?;
            authorize(&caller, Action::Learn.roles(), agency, Target::Named)?;
            let paths = mask_paths(&req.update_mask);
            if paths.is_empty() {
                return Err(Error::invalid("update_mask", "name the fields to change"));
            }
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let mut record = store::get_issue(&mut tx, agency, id)
                .await?
                .ok_or(Error::NotFound("issue"))?;
            check_etag(&patch.etag, record.revision)?;
            let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
            apply_issue(&mut record, patch, &refs, agency)?;
            check_complaints_exist(&mut tx, agency, &record.complaints).await?;
            record.revision += 1;
            record.update_time = times::now_millis();
            if !store::update_issue(&mut tx, &record).await? {
                return Err(Error::StaleEtag);
            }
            audit::record(&mut tx, access(&caller, agency, "UpdateIssue", &patch.name)).await?;
            tx.commit().await?;
            Ok::<_, Error>(issue_to_proto(&record))
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_issues(
        &self,
        request: Request<pb::ListIssuesRequest>,
    ) -> Reply<pb::ListIssuesResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ReadSettings.roles(),
                agency,
                Target::Collection,
            )?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::ISSUE_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let (records, next_page_token) = store::list_issues(&mut tx, agency, &query).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::ListIssuesResponse {
                issues: records.iter().map(issue_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = Action::Feed.roles();
        let page = outbox::list_for(
            &self.db,
            &caller,
            allowed,
            req.after_sequence,
            req.page_size,
        )
        .await
        .map_err(Error::from)?;
        Ok(Response::new(pb::ListEventsResponse {
            events: page.events,
            remaining: page.remaining,
        }))
    }

    type WatchEventsStream = Pin<Box<dyn Stream<Item = Result<Event, Status>> + Send + 'static>>;

    #[tracing::instrument(skip_all)]
    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = Action::Feed.roles();
        let stream = outbox::watch_for(self.db.clone(), &caller, allowed, req.after_sequence)
            .map_err(Error::from)?
            .map(|item| item.map_err(|e| Status::from(Error::Database(e))));
        Ok(Response::new(Box::pin(stream)))
    }
}

fn contact_to_proto(parent: &str, r: &ContactRow) -> pb::Contact {
    pb::Contact {
        name: format!("{parent}/contacts/{}", r.id),
        channel: r.channel,
        direction: r.direction,
        contact_time: Some(times::timestamp(r.contact_time)),
        summary: r.summary.clone(),
        officer: r.officer.clone(),
        create_time: Some(times::timestamp(r.create_time)),
    }
}

/// Replays a complaint's stored history (for tests and audits): the state it
/// gives must equal the stored state.
pub fn replay_history(rows: &[HistoryRow]) -> Result<State, TransitionError> {
    replay(rows.iter().map(|h| (&h.command, h.time)))
}
