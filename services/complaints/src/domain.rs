//! What a complaint is and how it may change: the lifecycle's transition
//! table, the history that alone reproduces a complaint's state, the
//! complaint standard and the clocks derived from them, and who may do what.
//! No I/O here.

use crate::clock::{self, Calendar, Clock, Pause};
use serde::{Deserialize, Serialize};
use touchstone_api::complaints::v1 as pb;
use touchstone_auth::Role;
use touchstone_platform::error::Violations;

/// Longest description or remedy sought, in characters.
pub const MAX_NARRATIVE: usize = 20_000;
/// Longest note, contact summary or resolution summary, in characters.
pub const MAX_NOTE: usize = 5_000;
/// Longest short text (unit, service, category, officer, names).
pub const MAX_SHORT: usize = 200;
/// Most root causes, remedies, senior categories, links or holidays.
pub const MAX_LIST: usize = 50;
/// Most holidays in one calendar.
pub const MAX_HOLIDAYS: usize = 2_000;

/// Lifecycle status, stored as the proto enum number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Taken in.
    Received,
    /// Acknowledged.
    Acknowledged,
    /// Being worked on.
    InProgress,
    /// Waiting for the client: the response clock is stopped.
    AwaitingClient,
    /// Responded to.
    Resolved,
    /// Closed.
    Closed,
    /// Withdrawn by the complainant.
    Withdrawn,
    /// Reopened after resolution.
    Reopened,
}

impl Status {
    /// Every status.
    pub const ALL: [Status; 8] = [
        Status::Received,
        Status::Acknowledged,
        Status::InProgress,
        Status::AwaitingClient,
        Status::Resolved,
        Status::Closed,
        Status::Withdrawn,
        Status::Reopened,
    ];

    /// The proto value.
    pub fn proto(self) -> pb::Status {
        match self {
            Status::Received => pb::Status::Received,
            Status::Acknowledged => pb::Status::Acknowledged,
            Status::InProgress => pb::Status::InProgress,
            Status::AwaitingClient => pb::Status::AwaitingClient,
            Status::Resolved => pb::Status::Resolved,
            Status::Closed => pb::Status::Closed,
            Status::Withdrawn => pb::Status::Withdrawn,
            Status::Reopened => pb::Status::Reopened,
        }
    }

    /// Whether work on the complaint is still owed (its clocks can run).
    pub fn is_open(self) -> bool {
        matches!(
            self,
            Status::Received
                | Status::Acknowledged
                | Status::InProgress
                | Status::AwaitingClient
                | Status::Reopened
        )
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.proto().as_str_name().trim_start_matches("STATUS_"))
    }
}

/// Complaint-handling stage, in escalation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Stage {
    /// Front line.
    Frontline,
    /// Investigation.
    Investigation,
    /// Internal review.
    InternalReview,
    /// External review.
    ExternalReview,
}

impl Stage {
    /// The proto value.
    pub fn proto(self) -> pb::Stage {
        match self {
            Stage::Frontline => pb::Stage::Frontline,
            Stage::Investigation => pb::Stage::Investigation,
            Stage::InternalReview => pb::Stage::InternalReview,
            Stage::ExternalReview => pb::Stage::ExternalReview,
        }
    }

    /// From the proto value; None for UNSPECIFIED or unknown numbers.
    pub fn from_proto(v: i32) -> Option<Stage> {
        match pb::Stage::try_from(v).ok()? {
            pb::Stage::Frontline => Some(Stage::Frontline),
            pb::Stage::Investigation => Some(Stage::Investigation),
            pb::Stage::InternalReview => Some(Stage::InternalReview),
            pb::Stage::ExternalReview => Some(Stage::ExternalReview),
            pb::Stage::Unspecified => None,
        }
    }

    /// The next stage, if any.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Frontline => Some(Stage::Investigation),
            Stage::Investigation => Some(Stage::InternalReview),
            Stage::InternalReview => Some(Stage::ExternalReview),
            Stage::ExternalReview => None,
        }
    }
}

/// Severity, stored as the proto enum number.
pub fn severity(v: i32) -> Result<pb::Severity, &'static str> {
    match pb::Severity::try_from(v) {
        Ok(pb::Severity::Unspecified) => Ok(pb::Severity::Medium),
        Ok(s) => Ok(s),
        Err(_) => Err("not a known severity"),
    }
}

/// What was done to a complaint: one history entry each. Replaying the
/// commands in order from an empty complaint gives its current state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Command {
    /// Intake: always the first entry.
    Receive {
        /// When it was received.
        receive_time: i64,
        /// Severity (proto number).
        severity: i32,
        /// Category.
        category: String,
        /// Unit complained about.
        unit: String,
        /// Whether it goes to the senior queue.
        senior: bool,
    },
    /// RECEIVED or REOPENED → ACKNOWLEDGED.
    Acknowledge,
    /// ACKNOWLEDGED or REOPENED → IN_PROGRESS.
    Start,
    /// IN_PROGRESS → AWAITING_CLIENT (clock stops).
    AwaitClient,
    /// AWAITING_CLIENT → IN_PROGRESS (clock runs).
    Resume,
    /// → RESOLVED.
    Resolve {
        /// Outcome (proto number).
        outcome: i32,
        /// Remedies (proto numbers).
        remedies: Vec<i32>,
        /// Root causes.
        root_causes: Vec<String>,
        /// Financial remedy in cents.
        financial_cents: i64,
        /// Who approved a financial remedy.
        approver: String,
    },
    /// RESOLVED → CLOSED.
    Close,
    /// RESOLVED or CLOSED → REOPENED.
    Reopen,
    /// Open → WITHDRAWN.
    Withdraw,
    /// To a later stage (→ IN_PROGRESS), starting its clock.
    Escalate {
        /// The new stage.
        to: Stage,
        /// External body, when referred.
        referral_body: String,
        /// Its reference.
        referral_reference: String,
    },
    /// To a unit and officer.
    Assign {
        /// Unit.
        unit: String,
        /// Officer.
        officer: String,
    },
    /// Classification changed.
    Reclassify {
        /// Severity (proto number).
        severity: i32,
        /// Category.
        category: String,
        /// Unit.
        unit: String,
        /// Whether it is now in the senior queue.
        senior: bool,
    },
    /// A link to another complaint.
    Link {
        /// The other complaint's name.
        complaint: String,
        /// Link kind (proto number).
        kind: i32,
    },
}

impl Command {
    /// The history's action name, e.g. "ACKNOWLEDGE".
    pub fn action(&self) -> &'static str {
        match self {
            Command::Receive { .. } => "RECEIVE",
            Command::Acknowledge => "ACKNOWLEDGE",
            Command::Start => "START",
            Command::AwaitClient => "AWAIT_CLIENT",
            Command::Resume => "RESUME",
            Command::Resolve { .. } => "RESOLVE",
            Command::Close => "CLOSE",
            Command::Reopen => "REOPEN",
            Command::Withdraw => "WITHDRAW",
            Command::Escalate { .. } => "ESCALATE",
            Command::Assign { .. } => "ASSIGN",
            Command::Reclassify { .. } => "RECLASSIFY",
            Command::Link { .. } => "LINK",
        }
    }
}

/// One stage a complaint has left (by escalation or reopening), with its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpan {
    /// The stage.
    pub stage: Stage,
    /// When its clock started.
    pub start: i64,
    /// When it stopped being stopped: pauses as [from, to).
    pub pauses: Vec<(i64, Option<i64>)>,
    /// When its clock ended (resolution, or the move to the next stage).
    pub end: i64,
}

/// A complaint's state: exactly what replaying its history gives. Holds no
/// personal data (narratives and contact details are sealed elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Status.
    pub status: Status,
    /// Stage.
    pub stage: Stage,
    /// Severity (proto number).
    pub severity: i32,
    /// Category.
    pub category: String,
    /// Unit complained about (or assigned to).
    pub unit: String,
    /// Officer assigned.
    pub officer: String,
    /// In the senior queue.
    pub senior_queue: bool,
    /// Received.
    pub receive_time: i64,
    /// First acknowledged (or responded to, which acknowledges).
    pub acknowledge_time: Option<i64>,
    /// When the current stage's response clock started.
    pub stage_start: i64,
    /// Pauses of the current stage's clock.
    pub pauses: Vec<(i64, Option<i64>)>,
    /// When the current stage was responded to.
    pub resolve_time: Option<i64>,
    /// When it was withdrawn, closed: the clocks stop there.
    pub end_time: Option<i64>,
    /// Stages left behind.
    pub stages: Vec<StageSpan>,
    /// Outcome (proto number; 0 until resolved).
    pub outcome: i32,
    /// Remedies (proto numbers).
    pub remedies: Vec<i32>,
    /// Root causes.
    pub root_causes: Vec<String>,
    /// Financial remedy in cents.
    pub financial_cents: i64,
    /// Approver of the financial remedy.
    pub financial_approver: String,
    /// External body.
    pub referral_body: String,
    /// Its reference.
    pub referral_reference: String,
    /// When referred.
    pub referral_time: Option<i64>,
    /// Links (name, kind).
    pub links: Vec<(String, i32)>,
}

/// Why a command cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Not allowed from the current status (reason INVALID_TRANSITION).
    #[error("{action} is not allowed when the complaint is {from}")]
    Invalid {
        /// The action tried.
        action: &'static str,
        /// The status it was tried from.
        from: Status,
    },
    /// The stage asked for is not later than the current one.
    #[error("the complaint can only move to a later stage")]
    NotLaterStage,
    /// The history does not start with RECEIVE, or has it twice.
    #[error("a complaint's history starts with exactly one RECEIVE")]
    NoIntake,
}

fn invalid(action: &'static str, from: Status) -> TransitionError {
    TransitionError::Invalid { action, from }
}

impl State {
    /// The state after intake.
    pub fn received(
        receive_time: i64,
        severity: i32,
        category: &str,
        unit: &str,
        senior: bool,
    ) -> State {
        State {
            status: Status::Received,
            stage: Stage::Frontline,
            severity,
            category: category.to_string(),
            unit: unit.to_string(),
            officer: String::new(),
            senior_queue: senior,
            receive_time,
            acknowledge_time: None,
            stage_start: receive_time,
            pauses: Vec::new(),
            resolve_time: None,
            end_time: None,
            stages: Vec::new(),
            outcome: 0,
            remedies: Vec::new(),
            root_causes: Vec::new(),
            financial_cents: 0,
            financial_approver: String::new(),
            referral_body: String::new(),
            referral_reference: String::new(),
            referral_time: None,
            links: Vec::new(),
        }
    }

    /// The state after `command` at `time`, or why it cannot happen. This is
    /// the transition table (docs/complaints.md shows it as a table).
    pub fn apply(&self, command: &Command, time: i64) -> Result<State, TransitionError> {
        use Status::*;
        let action = command.action();
        let from = self.status;
        let mut next = self.clone();
        match command {
            Command::Receive { .. } => return Err(TransitionError::NoIntake),
            Command::Acknowledge => {
                if !matches!(from, Received | Reopened) {
                    return Err(invalid(action, from));
                }
                next.status = Acknowledged;
                next.acknowledge_time.get_or_insert(time);
            }
            Command::Start => {
                if !matches!(from, Acknowledged | Reopened) {
                    return Err(invalid(action, from));
                }
                next.status = InProgress;
                next.acknowledge_time.get_or_insert(time);
            }
            Command::AwaitClient => {
                if from != InProgress {
                    return Err(invalid(action, from));
                }
                next.status = AwaitingClient;
                next.pauses.push((time, None));
            }
            Command::Resume => {
                if from != AwaitingClient {
                    return Err(invalid(action, from));
                }
                next.status = InProgress;
                next.end_pause(time);
            }
            Command::Resolve {
                outcome,
                remedies,
                root_causes,
                financial_cents,
                approver,
            } => {
                if !matches!(from, Received | Acknowledged | InProgress | Reopened) {
                    return Err(invalid(action, from));
                }
                next.status = Resolved;
                next.acknowledge_time.get_or_insert(time);
                next.resolve_time = Some(time);
                next.outcome = *outcome;
                next.remedies = remedies.clone();
                next.root_causes = root_causes.clone();
                next.financial_cents = *financial_cents;
                next.financial_approver = approver.clone();
            }
            Command::Close => {
                if from != Resolved {
                    return Err(invalid(action, from));
                }
                next.status = Closed;
                next.end_time = Some(time);
            }
            Command::Reopen => {
                if !matches!(from, Resolved | Closed) {
                    return Err(invalid(action, from));
                }
                next.leave_stage(time);
                next.status = Reopened;
                next.end_time = None;
                next.stage_start = time;
            }
            Command::Withdraw => {
                if !from.is_open() {
                    return Err(invalid(action, from));
                }
                next.end_pause(time);
                next.status = Withdrawn;
                next.end_time = Some(time);
            }
            Command::Escalate {
                to,
                referral_body,
                referral_reference,
            } => {
                if !(from.is_open() || from == Resolved) {
                    return Err(invalid(action, from));
                }
                if *to <= self.stage {
                    return Err(TransitionError::NotLaterStage);
                }
                next.end_pause(time);
                next.leave_stage(time);
                next.stage = *to;
                next.stage_start = time;
                next.status = InProgress;
                next.acknowledge_time.get_or_insert(time);
                if !referral_body.is_empty() {
                    next.referral_body = referral_body.clone();
                    next.referral_reference = referral_reference.clone();
                    next.referral_time = Some(time);
                }
            }
            Command::Assign { unit, officer } => {
                if !(from.is_open() || from == Resolved) {
                    return Err(invalid(action, from));
                }
                next.unit = unit.clone();
                next.officer = officer.clone();
            }
            Command::Reclassify {
                severity,
                category,
                unit,
                senior,
            } => {
                if !(from.is_open() || from == Resolved) {
                    return Err(invalid(action, from));
                }
                next.severity = *severity;
                next.category = category.clone();
                next.unit = unit.clone();
                next.senior_queue = *senior;
            }
            Command::Link { complaint, kind } => {
                if !next.links.iter().any(|(c, _)| c == complaint) {
                    next.links.push((complaint.clone(), *kind));
                }
            }
        }
        Ok(next)
    }

    fn end_pause(&mut self, time: i64) {
        if let Some(last) = self.pauses.last_mut()
            && last.1.is_none()
        {
            last.1 = Some(time.max(last.0));
        }
    }

    /// Files the current stage's clock away and clears its resolution.
    fn leave_stage(&mut self, time: i64) {
        self.stages.push(StageSpan {
            stage: self.stage,
            start: self.stage_start,
            pauses: std::mem::take(&mut self.pauses),
            end: self.resolve_time.unwrap_or(time),
        });
        self.resolve_time = None;
        self.outcome = 0;
        self.remedies.clear();
        self.root_causes.clear();
        self.financial_cents = 0;
        self.financial_approver.clear();
    }
}

/// Replays a history (commands with their times, oldest first).
pub fn replay<'a>(
    history: impl IntoIterator<Item = (&'a Command, i64)>,
) -> Result<State, TransitionError> {
    let mut iter = history.into_iter();
    let mut state = match iter.next() {
        Some((
            Command::Receive {
                receive_time,
                severity,
                category,
                unit,
                senior,
            },
            _,
        )) => State::received(*receive_time, *severity, category, unit, *senior),
        _ => return Err(TransitionError::NoIntake),
    };
    for (command, time) in iter {
        state = state.apply(command, time)?;
    }
    Ok(state)
}

/// The agency's complaint standard.
#[derive(Debug, Clone, PartialEq)]
pub struct Standard {
    /// Calendar id, or empty for the default calendar.
    pub calendar: String,
    /// Days to acknowledge.
    pub acknowledge_days: i64,
    /// Days to respond per stage, in stage order.
    pub response_days: [i64; 4],
    /// Target share on time.
    pub target_share: f64,
    /// Categories that go to the senior queue.
    pub senior_categories: Vec<String>,
    /// Revision, for the etag; 0 while the defaults apply.
    pub revision: i64,
    /// Last change.
    pub update_time: i64,
}

impl Default for Standard {
    fn default() -> Self {
        Standard {
            calendar: String::new(),
            acknowledge_days: 2,
            response_days: [5, 20, 20, 30],
            target_share: 0.9,
            senior_categories: Vec::new(),
            revision: 0,
            update_time: 0,
        }
    }
}

impl Standard {
    /// Days allowed to respond in `stage`.
    pub fn days(&self, stage: Stage) -> i64 {
        self.response_days[match stage {
            Stage::Frontline => 0,
            Stage::Investigation => 1,
            Stage::InternalReview => 2,
            Stage::ExternalReview => 3,
        }]
    }

    /// Whether intake of this severity and category goes to the senior queue,
    /// and why.
    pub fn senior_reason(&self, severity: i32, category: &str) -> Option<&'static str> {
        if severity == pb::Severity::Serious as i32 {
            Some("SERIOUS")
        } else if self
            .senior_categories
            .iter()
            .any(|c| c.eq_ignore_ascii_case(category))
        {
            Some("CATEGORY")
        } else {
            None
        }
    }

    /// Parses and checks a standard from the API.
    pub fn parse(s: &pb::ComplaintStandard, v: &mut Violations) -> Standard {
        let mut days = |field: &str, value: i32, default: i64| -> i64 {
            match value {
                0 => default,
                1..=365 => i64::from(value),
                _ => {
                    v.add(
                        format!("complaint_standard.{field}"),
                        "must be 1 to 365 working days",
                    );
                    default
                }
            }
        };
        let d = Standard::default();
        let acknowledge_days = days("acknowledge_days", s.acknowledge_days, d.acknowledge_days);
        let response_days = [
            days("frontline_days", s.frontline_days, d.response_days[0]),
            days(
                "investigation_days",
                s.investigation_days,
                d.response_days[1],
            ),
            days(
                "internal_review_days",
                s.internal_review_days,
                d.response_days[2],
            ),
            days(
                "external_review_days",
                s.external_review_days,
                d.response_days[3],
            ),
        ];
        let target_share = if s.target_share == 0.0 {
            d.target_share
        } else if (0.0..=1.0).contains(&s.target_share) {
            s.target_share
        } else {
            v.add("complaint_standard.target_share", "must be between 0 and 1");
            d.target_share
        };
        if s.senior_categories.len() > MAX_LIST {
            v.add("complaint_standard.senior_categories", "at most 50");
        }
        let mut senior_categories = Vec::new();
        for (i, c) in s.senior_categories.iter().enumerate() {
            match short_text(c, true) {
                Ok(c) => senior_categories.push(c),
                Err(e) => v.add(format!("complaint_standard.senior_categories[{i}]"), e),
            }
        }
        let calendar = if s.calendar.is_empty() {
            String::new()
        } else {
            match touchstone_platform::names::parse("agencies/{}/calendars/{}", &s.calendar, false)
            {
                Ok(ids) => ids[1].to_string(),
                Err(e) => {
                    v.add("complaint_standard.calendar", e.0);
                    String::new()
                }
            }
        };
        Standard {
            calendar,
            acknowledge_days,
            response_days,
            target_share,
            senior_categories,
            revision: 0,
            update_time: 0,
        }
    }
}

/// The calendar clocks run on when the agency has set none: UTC, Saturday
/// and Sunday off, no holidays.
pub fn default_calendar() -> Calendar {
    Calendar::new("UTC", &[6, 7], &[], None).unwrap_or_else(|_| unreachable!("UTC is bundled"))
}

/// A stored calendar's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarFields {
    /// Display name.
    pub display_name: String,
    /// IANA zone.
    pub time_zone: String,
    /// ISO weekdays off.
    pub weekend_days: Vec<u8>,
    /// yyyymmdd holidays, sorted.
    pub holidays: Vec<i64>,
    /// Close minute, 0 = none.
    pub close_minute: u16,
}

impl CalendarFields {
    /// Parses a calendar from the API, checking it builds.
    pub fn parse(c: &pb::Calendar, v: &mut Violations) -> CalendarFields {
        let display_name = match short_text(&c.display_name, false) {
            Ok(s) => s,
            Err(e) => {
                v.add("calendar.display_name", e);
                String::new()
            }
        };
        let mut weekend_days = Vec::new();
        for (i, d) in c.weekend_days.iter().enumerate() {
            match u8::try_from(*d) {
                Ok(d @ 1..=7) => weekend_days.push(d),
                _ => v.add(
                    format!("calendar.weekend_days[{i}]"),
                    "must be 1 (Monday) to 7 (Sunday)",
                ),
            }
        }
        if c.weekend_days.is_empty() {
            weekend_days = vec![6, 7];
        }
        weekend_days.sort_unstable();
        weekend_days.dedup();
        if c.holidays.len() > MAX_HOLIDAYS {
            v.add("calendar.holidays", "at most 2000 days");
        }
        let mut holidays = Vec::new();
        for (i, d) in c.holidays.iter().enumerate() {
            match touchstone_platform::times::date_key(d) {
                Some(k) => holidays.push(k),
                None => v.add(
                    format!("calendar.holidays[{i}]"),
                    "not a valid calendar date",
                ),
            }
        }
        holidays.sort_unstable();
        holidays.dedup();
        let close_minute = match u16::try_from(c.close_minute) {
            Ok(m) if m < 24 * 60 => m,
            _ => {
                v.add("calendar.close_minute", "must be 0 (none) to 1439");
                0
            }
        };
        let time_zone = c.time_zone.trim().to_string();
        let fields = CalendarFields {
            display_name,
            time_zone: if time_zone.is_empty() {
                "UTC".into()
            } else {
                time_zone
            },
            weekend_days,
            holidays,
            close_minute,
        };
        if v.is_empty()
            && let Err(e) = fields.calendar()
        {
            let field = match e {
                clock::CalendarError::UnknownTimeZone(_) => "calendar.time_zone",
                clock::CalendarError::NoWorkingDays | clock::CalendarError::BadWeekday(_) => {
                    "calendar.weekend_days"
                }
                clock::CalendarError::BadHoliday(_) => "calendar.holidays",
                clock::CalendarError::BadCloseTime(_) => "calendar.close_minute",
            };
            v.add(field, e.to_string());
        }
        fields
    }

    /// The working-day calendar.
    pub fn calendar(&self) -> Result<Calendar, clock::CalendarError> {
        Calendar::new(
            &self.time_zone,
            &self.weekend_days,
            &self.holidays,
            (self.close_minute > 0).then_some(self.close_minute),
        )
    }
}

/// The two clocks of a complaint, and the instants list filters use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clocks {
    /// Acknowledgement.
    pub acknowledgement: Clock,
    /// Response in the current stage.
    pub response: Clock,
    /// Allowed days of each.
    pub allowed: (i64, i64),
    /// The pending clock's due time (acknowledgement until acknowledged,
    /// then response); None when nothing is pending or the clock is stopped.
    pub due_time: Option<i64>,
    /// From when the pending clock is overdue; None likewise.
    pub overdue_from: Option<i64>,
}

impl Clocks {
    /// Whether the complaint is overdue at `now`: the one test that both
    /// GetComplaint and the `overdue` list filter (on the stored
    /// `overdue_from`) apply, so the two always agree.
    pub fn overdue(&self, now: i64) -> bool {
        self.overdue_from.is_some_and(|t| t <= now)
    }
}

fn pauses(p: &[(i64, Option<i64>)]) -> Vec<Pause> {
    p.iter().map(|&(from, to)| Pause { from, to }).collect()
}

/// Working days used by a stage span.
pub fn span_days(span: &StageSpan, cal: &Calendar, standard: &Standard) -> Clock {
    let allowed = standard.days(span.stage);
    clock::clock(
        cal,
        span.start,
        &pauses(&span.pauses),
        Some(span.end),
        span.end,
        allowed,
    )
}

impl State {
    /// The clocks at `now`.
    pub fn clocks(&self, cal: &Calendar, standard: &Standard, now: i64) -> Clocks {
        let ack_allowed = standard.acknowledge_days;
        let ack_done = self.acknowledge_time.or(self.end_time);
        let acknowledgement = clock::clock(cal, self.receive_time, &[], ack_done, now, ack_allowed);
        let resp_allowed = standard.days(self.stage);
        let resp_done = self.resolve_time.or(self.end_time);
        let response = clock::clock(
            cal,
            self.stage_start,
            &pauses(&self.pauses),
            resp_done,
            now,
            resp_allowed,
        );
        let pending = if !self.status.is_open() {
            None
        } else if self.acknowledge_time.is_none() {
            Some(acknowledgement)
        } else {
            Some(response)
        };
        // Both come from the pending clock itself (clock rules 6 and 7), so
        // the list columns stored at a change are what a later read shows.
        Clocks {
            acknowledgement,
            response,
            allowed: (ack_allowed, resp_allowed),
            due_time: pending.and_then(|c| c.due_time),
            overdue_from: pending.and_then(|c| c.overdue_from),
        }
    }
}

/// Checks a short text: trimmed, at most 200 characters, no control characters.
pub fn short_text(s: &str, required: bool) -> Result<String, &'static str> {
    let t = s.trim();
    if required && t.is_empty() {
        return Err("required");
    }
    if t.chars().count() > MAX_SHORT || t.chars().any(char::is_control) {
        return Err("at most 200 characters, no control characters");
    }
    Ok(t.to_string())
}

/// Checks a free text of at most `max` characters.
pub fn long_text(s: &str, max: usize) -> Result<String, String> {
    if s.chars().count() > max {
        return Err(format!("at most {max} characters"));
    }
    Ok(s.trim().to_string())
}

/// What a method does, for the role check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Take in a complaint.
    Intake,
    /// Import historic complaints from another system.
    Migrate,
    /// Read complaints (personal data).
    Read,
    /// Read the public state of complaints (no personal data).
    ReadStatus,
    /// Work a complaint.
    Work,
    /// Read calendars, the standard and the learning register (no personal data).
    ReadSettings,
    /// Manage calendars and the standard.
    Configure,
    /// Manage the learning register.
    Learn,
    /// Read the change feed.
    Feed,
}

impl Action {
    /// Roles allowed to do this.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Intake => &[Role::Officer, Role::SeniorOfficer, Role::Intake],
            Action::Migrate => &[Role::SeniorOfficer, Role::AgencyAdmin],
            Action::Read => &[Role::Officer, Role::SeniorOfficer],
            Action::ReadStatus => &[
                Role::Officer,
                Role::SeniorOfficer,
                Role::Analyst,
                Role::Service,
            ],
            Action::Work => &[Role::Officer, Role::SeniorOfficer],
            Action::ReadSettings => &[
                Role::Officer,
                Role::SeniorOfficer,
                Role::AgencyAdmin,
                Role::Analyst,
            ],
            Action::Configure => &[Role::AgencyAdmin],
            Action::Learn => &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
            Action::Feed => &[Role::Service, Role::AgencyAdmin],
        }
    }
}

/// Rules that need `senior_officer`, beyond the action's roles.
pub fn needs_senior(state: &State, command: &Command) -> Option<&'static str> {
    match command {
        Command::Close if state.severity == pb::Severity::Serious as i32 => {
            Some("only a senior_officer may close a serious complaint")
        }
        Command::Resolve { remedies, .. } if remedies.contains(&(pb::Remedy::Financial as i32)) => {
            Some("only a senior_officer may approve a financial remedy")
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn resolve() -> Command {
        Command::Resolve {
            outcome: pb::Outcome::Upheld as i32,
            remedies: vec![pb::Remedy::Apology as i32],
            root_causes: vec![],
            financial_cents: 0,
            approver: String::new(),
        }
    }

    fn commands() -> Vec<Command> {
        vec![
            Command::Acknowledge,
            Command::Start,
            Command::AwaitClient,
            Command::Resume,
            resolve(),
            Command::Close,
            Command::Reopen,
            Command::Withdraw,
            Command::Escalate {
                to: Stage::Investigation,
                referral_body: String::new(),
                referral_reference: String::new(),
            },
            Command::Escalate {
                to: Stage::ExternalReview,
                referral_body: "Ombudsman".into(),
                referral_reference: "OMB-1".into(),
            },
            Command::Assign {
                unit: "u".into(),
                officer: "o".into(),
            },
            Command::Reclassify {
                severity: 3,
                category: "c".into(),
                unit: "u".into(),
                senior: false,
            },
            Command::Link {
                complaint: "agencies/a/complaints/x".into(),
                kind: 1,
            },
        ]
    }

    fn at(status: Status) -> State {
        let mut s = State::received(0, 2, "c", "u", false);
        s.status = status;
        s
    }

    /// The documented table: (action, statuses it is allowed from, status after).
    fn table() -> Vec<(&'static str, Vec<Status>, Option<Status>)> {
        use Status::*;
        let open = vec![Received, Acknowledged, InProgress, AwaitingClient, Reopened];
        let mut open_or_resolved = open.clone();
        open_or_resolved.push(Resolved);
        vec![
            ("ACKNOWLEDGE", vec![Received, Reopened], Some(Acknowledged)),
            ("START", vec![Acknowledged, Reopened], Some(InProgress)),
            ("AWAIT_CLIENT", vec![InProgress], Some(AwaitingClient)),
            ("RESUME", vec![AwaitingClient], Some(InProgress)),
            (
                "RESOLVE",
                vec![Received, Acknowledged, InProgress, Reopened],
                Some(Resolved),
            ),
            ("CLOSE", vec![Resolved], Some(Closed)),
            ("REOPEN", vec![Resolved, Closed], Some(Reopened)),
            ("WITHDRAW", open.clone(), Some(Withdrawn)),
            ("ESCALATE", open_or_resolved.clone(), Some(InProgress)),
            ("ASSIGN", open_or_resolved.clone(), None),
            ("RECLASSIFY", open_or_resolved, None),
            ("LINK", Status::ALL.to_vec(), None),
        ]
    }

    #[test]
    fn every_legal_transition_works_and_every_illegal_one_is_refused() {
        let table = table();
        for command in commands() {
            let (_, allowed, after) = table
                .iter()
                .find(|(a, _, _)| *a == command.action())
                .unwrap();
            for status in Status::ALL {
                let result = at(status).apply(&command, 10);
                if allowed.contains(&status) {
                    let next =
                        result.unwrap_or_else(|e| panic!("{command:?} from {status:?}: {e}"));
                    assert_eq!(
                        next.status,
                        after.unwrap_or(status),
                        "{command:?} from {status:?}"
                    );
                } else {
                    assert_eq!(
                        result,
                        Err(TransitionError::Invalid {
                            action: command.action(),
                            from: status
                        }),
                        "{command:?} from {status:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn escalation_only_goes_forward() {
        let s = at(Status::InProgress).apply(
            &Command::Escalate {
                to: Stage::InternalReview,
                referral_body: String::new(),
                referral_reference: String::new(),
            },
            5,
        );
        let s = s.unwrap();
        assert_eq!(s.stage, Stage::InternalReview);
        assert_eq!(s.stage_start, 5);
        assert_eq!(s.stages.len(), 1);
        let back = s.apply(
            &Command::Escalate {
                to: Stage::Investigation,
                referral_body: String::new(),
                referral_reference: String::new(),
            },
            6,
        );
        assert_eq!(back, Err(TransitionError::NotLaterStage));
    }

    #[test]
    fn senior_rules() {
        let mut serious = at(Status::Resolved);
        serious.severity = pb::Severity::Serious as i32;
        assert!(needs_senior(&serious, &Command::Close).is_some());
        assert!(needs_senior(&at(Status::Resolved), &Command::Close).is_none());
        let financial = Command::Resolve {
            outcome: 1,
            remedies: vec![pb::Remedy::Financial as i32],
            root_causes: vec![],
            financial_cents: 10_000,
            approver: String::new(),
        };
        assert!(needs_senior(&at(Status::InProgress), &financial).is_some());
        let standard = Standard {
            senior_categories: vec!["Privacy".into()],
            ..Standard::default()
        };
        assert_eq!(standard.senior_reason(4, "x"), Some("SERIOUS"));
        assert_eq!(standard.senior_reason(2, "privacy"), Some("CATEGORY"));
        assert_eq!(standard.senior_reason(2, "other"), None);
    }

    /// Millis of an RFC 3339 instant with an explicit offset.
    fn instant(s: &str) -> i64 {
        s.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    /// Received, acknowledged and started Monday 1 June 2026 10:00 in
    /// Brisbane (UTC+10, no daylight saving), then `steps`.
    fn brisbane_case(steps: &[(Command, &str)]) -> (State, Calendar) {
        let cal = Calendar::new("Australia/Brisbane", &[6, 7], &[], None).unwrap();
        let t = instant("2026-06-01T10:00:00+10:00");
        let mut s = State::received(t, 2, "c", "u", false);
        s = s.apply(&Command::Acknowledge, t).unwrap();
        s = s.apply(&Command::Start, t).unwrap();
        for (command, at) in steps {
            s = s.apply(command, instant(at)).unwrap();
        }
        (s, cal)
    }

    fn frontline(days: i64) -> Standard {
        Standard {
            response_days: [days, 20, 20, 30],
            ..Standard::default()
        }
    }

    /// What GetComplaint shows at `now`: the pending clock's due time, and
    /// whether it is running and breached.
    fn shown(state: &State, cal: &Calendar, standard: &Standard, now: i64) -> (Option<i64>, bool) {
        let c = state.clocks(cal, standard, now);
        if !state.status.is_open() {
            return (None, false);
        }
        let pending = if state.acknowledge_time.is_none() {
            c.acknowledgement
        } else {
            c.response
        };
        (pending.due_time, !pending.stopped && pending.breached)
    }

    #[test]
    fn a_stopped_clock_has_no_due_date_even_when_its_days_are_used() {
        // Two days allowed: Tue 2 and Wed 3 used; paused Thu 4 09:00.
        let (s, cal) = brisbane_case(&[(Command::AwaitClient, "2026-06-04T09:00:00+10:00")]);
        let now = instant("2026-06-05T12:00:00+10:00");
        let c = s.clocks(&cal, &frontline(2), now);
        assert_eq!((c.response.used, c.response.stopped), (2, true));
        assert_eq!((c.response.due_day, c.response.due_time), (None, None));
        assert_eq!((c.due_time, c.overdue_from), (None, None));
        // Paused only after a breach: still no due date, breached, not overdue.
        let (s, cal) = brisbane_case(&[(Command::AwaitClient, "2026-06-05T09:00:00+10:00")]);
        let c = s.clocks(&cal, &frontline(2), now);
        assert_eq!((c.response.used, c.response.breached), (3, true));
        assert_eq!((c.response.due_day, c.response.due_time), (None, None));
        assert_eq!((c.due_time, c.overdue_from), (None, None));
    }

    #[test]
    fn overdue_waits_for_the_next_counted_day_after_a_pause() {
        // Four days allowed: Tue 2 .. Fri 5, due Fri 5. Paused on Mon 8, the
        // first working day after the due day, resumed on Saturday 13: Mon 8
        // to Fri 12 are lost, so the fifth day is counted on Mon 15 only.
        let (s, cal) = brisbane_case(&[
            (Command::AwaitClient, "2026-06-08T09:00:00+10:00"),
            (Command::Resume, "2026-06-13T10:00:00+10:00"),
        ]);
        let standard = frontline(4);
        let written = instant("2026-06-13T10:00:00+10:00");
        let stored = s.clocks(&cal, &standard, written);
        assert_eq!(stored.response.used, 4);
        assert_eq!(stored.due_time, Some(instant("2026-06-06T00:00:00+10:00")));
        assert_eq!(
            stored.overdue_from,
            Some(instant("2026-06-15T00:00:00+10:00"))
        );
        // What a list filter reads from the stored columns agrees with what
        // GetComplaint computes, hour by hour, until Wednesday.
        let mut now = written;
        while now < instant("2026-06-17T12:00:00+10:00") {
            let (due, overdue) = shown(&s, &cal, &standard, now);
            assert_eq!(s.clocks(&cal, &standard, now).overdue(now), overdue);
            assert_eq!(due, stored.due_time, "due time at {now}");
            assert_eq!(
                overdue,
                stored.overdue_from.is_some_and(|t| t <= now),
                "overdue at {now}"
            );
            now += 3_600_000;
        }
    }

    proptest! {
        /// Random command sequences: the history replays to the same state,
        /// closed stays closed unless reopened, withdrawn stays withdrawn,
        /// and clocks are never negative.
        #[test]
        fn random_sequences_keep_the_invariants(
            picks in proptest::collection::vec((0usize..13, 1i64..400_000_000), 0..40),
            now_offset in 0i64..2_000_000_000,
        ) {
            let all = commands();
            let start = 1_767_225_600_000; // 2026-01-01T00:00Z
            let intake = Command::Receive { receive_time: start, severity: 2, category: "c".into(), unit: "u".into(), senior: false };
            let mut state = State::received(start, 2, "c", "u", false);
            let mut history: Vec<(Command, i64)> = vec![(intake, start)];
            let mut time = start;
            for (i, step) in picks {
                time += step;
                let command = &all[i];
                let before = state.status;
                if let Ok(next) = state.apply(command, time) {
                        if before == Status::Closed {
                            prop_assert!(next.status == Status::Closed || *command == Command::Reopen);
                        }
                        prop_assert!(before != Status::Withdrawn || next.status == Status::Withdrawn);
                        state = next;
                        history.push((command.clone(), time));
                    }
            }
            let replayed = replay(history.iter().map(|(c, t)| (c, *t))).unwrap();
            prop_assert_eq!(&replayed, &state);
            let cal = Calendar::new("Australia/Sydney", &[6, 7], &[20260126], Some(17 * 60)).unwrap();
            let clocks = state.clocks(&cal, &Standard::default(), time + now_offset);
            prop_assert!(clocks.acknowledgement.used >= 0 && clocks.response.used >= 0);
            prop_assert!(clocks.acknowledgement.remaining >= 0 && clocks.response.remaining >= 0);
            for span in &state.stages {
                prop_assert!(span_days(span, &cal, &Standard::default()).used >= 0);
            }
        }
    }
}
