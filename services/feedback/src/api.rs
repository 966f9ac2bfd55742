//! The gRPC face of the feedback service: each handler parses its request
//! into domain types, checks the caller, runs the change in one transaction
//! (with its idempotency record, audit record and outbox events), and maps
//! back. No SQL here.

use crate::domain::{
    self, Action, FollowUpStatus, ResponseInput, SurveyFields, SurveyState, SurveyTemplate,
};
use crate::error::Error;
use crate::peers::{Linkage, Register};
use crate::store::{self, FollowUpRecord, Inserted, ResponseRecord, SurveyRecord};
use futures::{Stream, StreamExt};
use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::oneshot;
use tonic::{Request, Status, Streaming};
use touchstone_api::Named;
use touchstone_api::common::v1::Event;
use touchstone_api::feedback::v1 as pb;
use touchstone_api::feedback::v1::feedback_service_server::FeedbackService;
use touchstone_auth::{Caller, Target, authorize};
use touchstone_crypto::MasterKey;
use touchstone_list::{ListError, ListParams, ListQuery};
use touchstone_platform::audit::Access;
use touchstone_platform::change::{self, Begun};
use touchstone_platform::db::{Db, Scope};
use touchstone_platform::error::{FieldViolation, Violations};
use touchstone_platform::idempotency;
use touchstone_platform::keyring::Keyring;
use touchstone_platform::outbox;
use touchstone_platform::statements::Statements;
use touchstone_platform::{names, times};

/// Rows of an import written per transaction.
const IMPORT_BATCH: usize = 200;
/// Checked batches of an import that may wait while others are written.
const IMPORT_READ_AHEAD: usize = 3;
/// Batches of an import written at once.
const IMPORT_WRITES: usize = 2;

/// The feedback service.
#[derive(Debug, Clone)]
pub struct Feedback {
    db: Db,
    keys: Arc<Keyring>,
    register: Register,
}

impl Feedback {
    /// The service over `db`, encrypting with keys from `keys`, asking
    /// `register` about clients.
    pub fn new(db: Db, master: MasterKey, register: Register) -> Self {
        let keys = Arc::new(Keyring::new(master, db.clone()));
        Self { db, keys, register }
    }

    /// Opens the write transaction of a state-changing call and claims its
    /// request id.
    async fn begin<'a, R: prost::Message + Default + Named>(
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

type Reply<T> = Result<tonic::Response<T>, Status>;

fn list_error(e: ListError) -> Error {
    Error::InvalidArgument(vec![FieldViolation::new(e.field, e.description)])
}

fn parse_name<'a>(field: &str, pattern: &str, value: &'a str) -> Result<Vec<&'a str>, Error> {
    names::parse(pattern, value, false).map_err(|e| Error::invalid(field, e.0))
}

fn parse_agency<'a>(field: &str, parent: &'a str) -> Result<&'a str, Error> {
    Ok(parse_name(field, "agencies/{}", parent)?[0])
}

fn parse_survey<'a>(field: &str, name: &'a str) -> Result<(&'a str, &'a str), Error> {
    let ids = parse_name(field, "agencies/{}/surveys/{}", name)?;
    Ok((ids[0], ids[1]))
}

fn chosen_id(field: &str, id: &str) -> Result<String, Error> {
    names::chosen_id(field, id).map_err(|v| Error::InvalidArgument(vec![v]))
}

fn check_etag(given: &str, revision: i64) -> Result<(), Error> {
    if !given.is_empty() && given != revision.to_string() {
        return Err(Error::StaleEtag);
    }
    Ok(())
}

fn mask_paths(mask: &Option<prost_types::FieldMask>) -> Vec<String> {
    mask.as_ref().map(|m| m.paths.clone()).unwrap_or_default()
}

fn survey_to_proto(r: &SurveyRecord) -> pb::Survey {
    pb::Survey {
        name: r.name(),
        state: r.state,
        version: r.version as i32,
        previous_version: r.previous_version.clone(),
        create_time: Some(times::timestamp(r.create_time)),
        update_time: Some(times::timestamp(r.update_time)),
        publish_time: times::timestamp_opt(r.publish_time),
        close_time: times::timestamp_opt(r.close_time),
        etag: r.revision.to_string(),
        ..r.fields.to_proto_fields()
    }
}

/// A response as `personal` callers see it (comments as written, client,
/// transaction, characteristics) or as everyone else does (analysis copy).
fn response_to_proto(r: &ResponseRecord, personal: bool) -> pb::Response {
    let answers = r
        .answers
        .iter()
        .map(|a| pb::Answer {
            question_key: a.key.clone(),
            score: a.score,
            yes: a.yes,
            choices: a.choices.clone(),
            text: if personal {
                r.originals
                    .as_ref()
                    .and_then(|o| o.get(&a.key).cloned())
                    .unwrap_or_default()
            } else {
                String::new()
            },
            masked_text: a.masked.clone(),
            sentiment: a.sentiment.unwrap_or(0.0),
            topics: a.topics.clone(),
        })
        .collect();
    pb::Response {
        name: r.name(),
        answers,
        channel: r.channel,
        unit: r.unit.clone(),
        submit_time: Some(times::timestamp(r.submit_time)),
        transaction_id: if personal {
            r.transaction_id.clone().unwrap_or_default()
        } else {
            String::new()
        },
        client: match (&r.client_id, personal) {
            (Some(c), true) => format!("agencies/{}/clients/{c}", r.agency),
            _ => String::new(),
        },
        contact_agreed: r.contact_agreed,
        characteristics: if personal { r.characteristics } else { None },
        sentiment: r.sentiment.unwrap_or(0.0),
        follow_up: r
            .follow_up_id
            .as_ref()
            .map(|f| format!("agencies/{}/followUps/{f}", r.agency))
            .unwrap_or_default(),
        create_time: Some(times::timestamp(r.create_time)),
        erased: r.erased,
    }
}

fn follow_up_to_proto(f: &FollowUpRecord) -> pb::FollowUp {
    pb::FollowUp {
        name: f.name(),
        survey: store::survey_name(&f.agency, &f.survey_id),
        response: store::response_name(&f.agency, &f.survey_id, &f.response_id),
        client: format!("agencies/{}/clients/{}", f.agency, f.client_id),
        reason: f.reason.clone(),
        status: f.status,
        assignee: f.assignee.clone(),
        due_date: Some(times::date_from_key(f.due_date)),
        unit: f.unit.clone(),
        channel: f.channel,
        create_time: Some(times::timestamp(f.create_time)),
        update_time: Some(times::timestamp(f.update_time)),
        close_time: times::timestamp_opt(f.close_time),
        etag: f.revision.to_string(),
    }
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

/// A response ready to write: the record, the follow-up it opens, and the
/// events that describe both.
struct Prepared {
    record: ResponseRecord,
    follow_up: Option<FollowUpRecord>,
    submitted: pb::ResponseSubmitted,
}

fn prepare(survey: &SurveyRecord, input: ResponseInput, link: Linkage, now: i64) -> Prepared {
    let id = names::new_id();
    let rule = domain::rule_met(&survey.fields.definition, &input);
    let follow_up = match (&rule, &link.client_id, input.contact_agreed) {
        (Some((reason, days)), Some(client), true) => Some(FollowUpRecord {
            agency: survey.agency.clone(),
            id: names::new_id(),
            survey_id: survey.id.clone(),
            response_id: id.clone(),
            client_id: client.clone(),
            reason: reason.clone(),
            status: FollowUpStatus::Open as i32,
            assignee: String::new(),
            // Due from when the client answered, not from when the response
            // reached us (an imported response is not given fresh days).
            due_date: domain::add_working_days(input.submit_time, *days),
            unit: input.unit.clone(),
            channel: input.channel,
            create_time: now,
            update_time: now,
            close_time: None,
            revision: 1,
        }),
        _ => None,
    };
    let record = ResponseRecord {
        agency: survey.agency.clone(),
        id,
        survey_id: survey.id.clone(),
        channel: input.channel,
        unit: input.unit.clone(),
        submit_time: input.submit_time,
        transaction_id: input.transaction_id.clone(),
        anonymous: link.client_id.is_none(),
        client_id: link.client_id,
        contact_agreed: input.contact_agreed,
        characteristics: link.characteristics,
        answers: input.answers.clone(),
        originals: Some(input.originals.clone()),
        sentiment: input.sentiment,
        follow_up_id: follow_up.as_ref().map(|f| f.id.clone()),
        erased: false,
        create_time: now,
    };
    let submitted = pb::ResponseSubmitted {
        survey: survey.name(),
        response: record.name(),
        touchpoint: Some(survey.fields.touchpoint.to_proto()),
        unit: record.unit.clone(),
        channel: record.channel,
        day: Some(times::date_from_key(domain::day_of(record.submit_time))),
        submit_time: Some(times::timestamp(record.submit_time)),
        scores: input
            .item_scores()
            .into_iter()
            .map(|(item, score)| pb::ItemScore { item, score })
            .collect(),
        segment: record.characteristics,
        anonymous: record.anonymous,
        sentiment: record.sentiment,
        topics: input.topics(),
    };
    Prepared {
        record,
        follow_up,
        submitted,
    }
}

fn opened_event(f: &FollowUpRecord) -> pb::FollowUpOpened {
    pb::FollowUpOpened {
        follow_up: f.name(),
        survey: store::survey_name(&f.agency, &f.survey_id),
        unit: f.unit.clone(),
        channel: f.channel,
        due_date: Some(times::date_from_key(f.due_date)),
    }
}

/// `FollowUpClosed` for a follow-up as it is once closed. Every path that
/// closes a follow-up (UpdateFollowUp, a client's erasure) announces it
/// with this, so that `follow_ups_closed_on_time` counts each close.
pub(crate) fn closed_event(f: &FollowUpRecord) -> pb::FollowUpClosed {
    pb::FollowUpClosed {
        follow_up: f.name(),
        survey: store::survey_name(&f.agency, &f.survey_id),
        status: f.status,
        unit: f.unit.clone(),
        channel: f.channel,
        open_time: Some(times::timestamp(f.create_time)),
        close_time: f.close_time.map(times::timestamp),
    }
}

fn due_date_changed_event(f: &FollowUpRecord, previous: i64) -> pb::FollowUpDueDateChanged {
    pb::FollowUpDueDateChanged {
        follow_up: f.name(),
        survey: store::survey_name(&f.agency, &f.survey_id),
        unit: f.unit.clone(),
        channel: f.channel,
        due_date: Some(times::date_from_key(f.due_date)),
        previous_due_date: Some(times::date_from_key(previous)),
    }
}

fn not_published() -> Error {
    Error::FailedPrecondition {
        reason: "SURVEY_NOT_PUBLISHED",
        message: "the survey is not published: it takes no responses",
    }
}

impl Feedback {
    async fn load_survey(&self, agency: &str, id: &str) -> Result<SurveyRecord, Error> {
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let survey = store::get_survey(&mut tx, agency, id, false)
            .await?
            .ok_or(Error::NotFound("survey"))?;
        tx.commit().await?;
        Ok(survey)
    }

    async fn link(
        &self,
        agency: &str,
        input: &ResponseInput,
        field: &str,
        deadline: Option<std::time::Duration>,
    ) -> Result<Linkage, Error> {
        match &input.client_id {
            None => Ok(Linkage::default()),
            Some(id) => self.register.linkage(agency, id, field, deadline).await,
        }
    }

    /// Creates a draft survey in an open change.
    async fn create_survey_in(
        change: &mut change::Change<'_>,
        agency: &str,
        id: &str,
        fields: SurveyFields,
        version: (i64, String),
    ) -> Result<SurveyRecord, Error> {
        let now = times::now_millis();
        let record = SurveyRecord {
            agency: agency.to_string(),
            id: id.to_string(),
            fields,
            state: SurveyState::Draft as i32,
            version: version.0,
            previous_version: version.1,
            create_time: now,
            update_time: now,
            publish_time: None,
            close_time: None,
            revision: 1,
        };
        store::insert_survey(&mut change.tx, &record).await?;
        Ok(record)
    }

    /// Moves a survey to `to` (publish or close).
    async fn transition(
        &self,
        caller: &Caller,
        name: &str,
        etag: &str,
        request_id: &str,
        fingerprint: String,
        to: SurveyState,
    ) -> Result<pb::Survey, Error> {
        let method = if to == SurveyState::Published {
            "PublishSurvey"
        } else {
            "CloseSurvey"
        };
        let (agency, id) = parse_survey("name", name)?;
        authorize(caller, Action::ManageSurveys.roles(), agency, Target::Named)?;
        let mut change = match self
            .begin(caller, agency, method, request_id, fingerprint)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut record = store::get_survey(&mut change.tx, agency, id, true)
            .await?
            .ok_or(Error::NotFound("survey"))?;
        check_etag(etag, record.revision)?;
        let from = SurveyState::try_from(record.state).unwrap_or(SurveyState::Unspecified);
        if !domain::survey_transition(from, to) {
            return Err(Error::FailedPrecondition {
                reason: "INVALID_TRANSITION",
                message: match to {
                    SurveyState::Published => "only a draft survey can be published",
                    _ => "only a published survey can be closed",
                },
            });
        }
        let now = times::now_millis();
        record.state = to as i32;
        record.update_time = now;
        match to {
            SurveyState::Published => record.publish_time = Some(now),
            _ => record.close_time = Some(now),
        }
        if !store::update_survey(&mut change.tx, &record).await? {
            return Err(Error::StaleEtag);
        }
        record.revision += 1;
        let survey_name = record.name();
        if to == SurveyState::Published {
            change.event(
                &survey_name,
                &pb::SurveyPublished {
                    survey: survey_name.clone(),
                    touchpoint: Some(record.fields.touchpoint.to_proto()),
                    items: record.fields.definition.items(),
                },
            );
        }
        Ok(change
            .finish(&survey_name, survey_to_proto(&record))
            .await?)
    }
}

/// One parsed import row waiting for its batch.
struct Row {
    index: i64,
    row_id: String,
    import_key: String,
    prepared: Prepared,
}

impl Row {
    /// The row's result: `outcome`, naming `response`, without violations.
    fn result(&self, outcome: pb::RowOutcome, response: String) -> pb::RowResult {
        pb::RowResult {
            row: self.index,
            row_id: self.row_id.clone(),
            outcome: outcome as i32,
            response,
            violations: Vec::new(),
        }
    }
}

/// Checked rows to write together, with their writes prepared when they
/// can be all new ([`Feedback::batch`]).
struct Batch {
    rows: Vec<Row>,
    all_new: Option<change::NewRows>,
}

/// A batch's write, in a task of its own. Stopped if the import ends before
/// it is awaited (the caller went away, or another batch failed and the
/// error is answered): its transaction then rolls back instead of storing
/// rows the caller is not told of. (A SQLite commit already begun runs on
/// in a task of its own, see `Db::commit_all`: all or nothing either way.)
struct WriteTask(tokio::task::JoinHandle<Result<Vec<pb::RowResult>, Error>>);

impl Future for WriteTask {
    type Output = Result<Vec<pb::RowResult>, Error>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or_else(|_| Err(Error::Unavailable("import batch write"))))
    }
}

impl Drop for WriteTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A batch's place among an import's writes, which may run at once: it
/// writes its rows only once the batch before it has written its own (or
/// failed), and tells the next one when it has, so that a row repeating
/// one of an earlier batch always meets it, and the first of the two is
/// the one stored.
struct Turn {
    before: Option<oneshot::Receiver<()>>,
    written: Written,
}

impl Turn {
    /// The next batch's turn, after the one `last` waits for; `last` then
    /// waits for this one.
    fn after(last: &mut Option<oneshot::Receiver<()>>) -> Turn {
        let (tell, told) = oneshot::channel();
        Turn {
            before: last.replace(told),
            written: Written(Arc::new(std::sync::Mutex::new(Some(tell)))),
        }
    }

    /// Waits for the batch before (written, failed or gone: either way it
    /// holds no row this one could meet first), and returns what tells the
    /// next batch that this one's rows are written. Dropped unfired, it
    /// tells the same.
    async fn wait(self) -> Written {
        if let Some(before) = self.before {
            let _ = before.await;
        }
        self.written
    }
}

/// Tells the next batch of an import that this one's rows are written.
#[derive(Clone)]
struct Written(Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>);

impl Written {
    fn fire(&self) {
        let tell = self.0.lock().ok().and_then(|mut t| t.take());
        if let Some(tell) = tell {
            let _ = tell.send(());
        }
    }
}

fn rejected(index: i64, row_id: &str, violations: Vec<FieldViolation>) -> pb::RowResult {
    pb::RowResult {
        row: index,
        row_id: row_id.to_string(),
        outcome: pb::RowOutcome::Rejected as i32,
        response: String::new(),
        violations: violations
            .into_iter()
            .map(|v| pb::RowViolation {
                field: v.field,
                description: v.description,
            })
            .collect(),
    }
}

fn violations_of(e: Error) -> Result<Vec<FieldViolation>, Error> {
    match e {
        Error::InvalidArgument(v) => Ok(v),
        Error::NotFound(what) => Ok(vec![FieldViolation::new(
            "parent",
            format!("{what} not found"),
        )]),
        Error::FailedPrecondition { message, .. } => {
            Ok(vec![FieldViolation::new("parent", message)])
        }
        Error::PermissionDenied(why) => Ok(vec![FieldViolation::new("parent", why)]),
        other => Err(other),
    }
}

impl Feedback {
    /// Checks one import row and prepares it; a bad row becomes a result.
    async fn import_row(
        &self,
        caller: &Caller,
        agency: &mut Option<String>,
        surveys: &mut HashMap<String, SurveyRecord>,
        index: i64,
        row: pb::ImportResponsesRequest,
    ) -> Result<Result<Row, pb::RowResult>, Error> {
        let attempt = async {
            let (row_agency, survey_id) = parse_survey("parent", &row.parent)?;
            match agency {
                None => {
                    authorize(
                        caller,
                        Action::Submit.roles(),
                        row_agency,
                        Target::Collection,
                    )?;
                    *agency = Some(row_agency.to_string());
                }
                Some(a) if a != row_agency => {
                    return Err(Error::invalid(
                        "parent",
                        "every row of a stream must be for the same agency",
                    ));
                }
                Some(_) => {}
            }
            let mut v = Violations::new();
            domain::check_caller_key(&row.row_id, "row_id", &mut v);
            v.finish().map_err(Error::InvalidArgument)?;
            if !surveys.contains_key(survey_id) {
                let survey = self.load_survey(row_agency, survey_id).await?;
                surveys.insert(survey_id.to_string(), survey);
            }
            let Some(survey) = surveys.get(survey_id) else {
                return Err(Error::NotFound("survey"));
            };
            if survey.state != SurveyState::Published as i32 {
                return Err(not_published());
            }
            let Some(response) = row.response.as_ref() else {
                return Err(Error::invalid("response", "required"));
            };
            let now = times::now_millis();
            let input = domain::parse_response(
                response,
                row_agency,
                &survey.fields.definition,
                &survey.fields.touchpoint,
                "response",
                now,
            )?;
            let import_key = match (row.row_id.trim(), &input.transaction_id) {
                ("", Some(t)) => format!("t:{t}"),
                ("", None) => {
                    return Err(Error::invalid(
                        "row_id",
                        "a row needs a row_id or a response.transaction_id, so that a retried \
                         stream does not store it twice",
                    ));
                }
                (r, _) => format!("r:{r}"),
            };
            let link = self
                .link(row_agency, &input, "response.client", None)
                .await?;
            Ok(Row {
                index,
                row_id: row.row_id.clone(),
                import_key,
                prepared: prepare(survey, input, link, now),
            })
        };
        match attempt.await {
            Ok(row) => Ok(Ok(row)),
            Err(e) => Ok(Err(rejected(index, &row.row_id, violations_of(e)?))),
        }
    }

    /// Writes a batch of rows in one transaction; returns their results.
    /// A batch of checked rows, with its writes prepared as rows all new
    /// (see [`change::NewRows`]) when it can be: its agency's data key is
    /// cached. Prepared while the batch before
    /// it is written, so that the write holds the writer (or the server)
    /// only for the database's own work.
    fn batch(&self, caller: &Caller, agency: Option<&str>, rows: Vec<Row>) -> Batch {
        let all_new = agency.and_then(|agency| {
            if rows.is_empty() {
                return None;
            }
            let key = self.keys.cached_key_on(&self.db, agency)?;
            let keyed: Vec<(&ResponseRecord, Option<&str>)> = rows
                .iter()
                .map(|r| (&r.prepared.record, Some(r.import_key.as_str())))
                .collect();
            let mut s = Statements::new(self.db.backend());
            // An encoding error here is met again, and answered, when the
            // batch is written the usual way.
            store::push_new_responses(&mut s, &key, &keyed).ok()?;
            let names: Vec<String> = rows.iter().map(|r| r.prepared.record.name()).collect();
            // Follow-ups and events in the order the usual way writes them.
            let mut events: Vec<store::BatchEvent> = Vec::with_capacity(rows.len());
            for (r, name) in rows.iter().zip(&names) {
                if let Some(f) = &r.prepared.follow_up {
                    store::push_follow_up(&mut s, f).ok()?;
                    events.push(store::BatchEvent::new(&f.name(), &opened_event(f)));
                }
                events.push(store::BatchEvent::new(name, &r.prepared.submitted));
            }
            change::NewRows::new(s)
                .push_end(
                    access(caller, agency, "ImportResponses", ""),
                    &names,
                    &store::event_refs(&events),
                )
                .ok()?
        });
        Batch { rows, all_new }
    }

    async fn write_batch(
        &self,
        caller: &Caller,
        agency: &str,
        batch: Batch,
        turn: Turn,
    ) -> Result<Vec<pb::RowResult>, Error> {
        let Batch { rows, all_new } = batch;
        let written = turn.wait().await;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let signal = written.clone();
        if let Some(new) = all_new
            && new.commit(&self.db, agency, move || signal.fire()).await?
        {
            return Ok(rows
                .iter()
                .map(|row| row.result(pb::RowOutcome::Created, row.prepared.record.name()))
                .collect());
        }
        let mut tx = self.db.write(Scope::Agency(agency)).await?;
        let key = self.keys.data_key(&mut tx, agency).await?;
        let keyed: Vec<(&ResponseRecord, Option<&str>)> = rows
            .iter()
            .map(|r| (&r.prepared.record, Some(r.import_key.as_str())))
            .collect();
        let mut last = Statements::new(tx.backend());
        let outcomes = store::insert_responses(&mut tx, &key, &keyed, &mut last).await?;
        written.fire();
        let mut results = Vec::with_capacity(rows.len());
        let mut events = Vec::new();
        let mut created = Vec::new();
        for (row, outcome) in rows.iter().zip(outcomes) {
            let Prepared {
                record,
                follow_up,
                submitted,
            } = &row.prepared;
            let name = record.name();
            let result = |outcome: pb::RowOutcome, response: String, violations| pb::RowResult {
                violations,
                ..row.result(outcome, response)
            };
            match outcome {
                Inserted::Created => {
                    if let Some(f) = follow_up {
                        store::insert_follow_up(&mut tx, f).await?;
                        events.push(store::BatchEvent::new(&f.name(), &opened_event(f)));
                    }
                    events.push(store::BatchEvent::new(&name, submitted));
                    created.push(name.clone());
                    results.push(result(pb::RowOutcome::Created, name, Vec::new()));
                }
                Inserted::AlreadyImported(id) => results.push(result(
                    pb::RowOutcome::AlreadyImported,
                    store::response_name(agency, &record.survey_id, &id),
                    Vec::new(),
                )),
                Inserted::DuplicateTransaction => results.push(result(
                    pb::RowOutcome::Rejected,
                    String::new(),
                    vec![pb::RowViolation {
                        field: "response.transaction_id".into(),
                        description: "the survey already has a response for this transaction"
                            .into(),
                    }],
                )),
            }
        }
        // The scores, audit records and events as one request.
        change::commit_with(
            tx,
            last,
            access(caller, agency, "ImportResponses", ""),
            &created,
            &store::event_refs(&events),
        )
        .await?;
        Ok(results)
    }
}

#[tonic::async_trait]
impl FeedbackService for Feedback {
    #[tracing::instrument(skip_all)]
    async fn create_survey(&self, request: Request<pb::CreateSurveyRequest>) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ManageSurveys.roles(),
                agency,
                Target::Collection,
            )?;
            let Some(survey) = req.survey.as_ref() else {
                return Err(Error::invalid("survey", "required"));
            };
            let fields = SurveyFields::parse(survey, "survey")?;
            let id = chosen_id("survey_id", &req.survey_id)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateSurvey",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let record =
                Self::create_survey_in(&mut change, agency, &id, fields, (1, String::new()))
                    .await?;
            Ok(change
                .finish(&record.name(), survey_to_proto(&record))
                .await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn create_template_surveys(
        &self,
        request: Request<pb::CreateTemplateSurveysRequest>,
    ) -> Reply<pb::CreateTemplateSurveysResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ManageSurveys.roles(),
                agency,
                Target::Collection,
            )?;
            let mut templates = Vec::new();
            let mut v = Violations::new();
            for (i, t) in req.templates.iter().enumerate() {
                match SurveyTemplate::try_from(*t) {
                    Ok(SurveyTemplate::Unspecified) | Err(_) => {
                        v.add(format!("templates[{i}]"), "not a known template")
                    }
                    Ok(t) if !templates.contains(&t) => templates.push(t),
                    Ok(_) => v.add(format!("templates[{i}]"), "named twice"),
                }
            }
            v.finish().map_err(Error::InvalidArgument)?;
            if templates.is_empty() {
                templates = vec![
                    SurveyTemplate::A11,
                    SurveyTemplate::Csat,
                    SurveyTemplate::Nps,
                    SurveyTemplate::Ces,
                ];
            }
            let mut all = Vec::new();
            for t in templates {
                let Some((title, definition)) = domain::template(t) else {
                    continue;
                };
                let proto = SurveyFields {
                    title,
                    description: String::new(),
                    touchpoint: domain::Touchpoint::default(),
                    definition,
                }
                .to_proto_fields();
                let proto = pb::Survey {
                    touchpoint: req.touchpoint.clone(),
                    ..proto
                };
                all.push(SurveyFields::parse(&proto, "touchpoint")?);
            }
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateTemplateSurveys",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let mut surveys = Vec::new();
            for fields in all {
                let id = names::new_id();
                let record =
                    Self::create_survey_in(&mut change, agency, &id, fields, (1, String::new()))
                        .await?;
                surveys.push(survey_to_proto(&record));
            }
            let response = pb::CreateTemplateSurveysResponse {
                name: req.parent.clone(),
                surveys,
            };
            Ok::<_, Error>(change.finish(&req.parent, response).await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_survey(&self, request: Request<pb::GetSurveyRequest>) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, id) = parse_survey("name", &req.name)?;
            authorize(&caller, Action::ReadSurveys.roles(), agency, Target::Named)?;
            Ok::<_, Error>(survey_to_proto(&self.load_survey(agency, id).await?))
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_surveys(
        &self,
        request: Request<pb::ListSurveysRequest>,
    ) -> Reply<pb::ListSurveysResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::ReadSurveys.roles(),
                agency,
                Target::Collection,
            )?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::SURVEY_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let (records, next_page_token) = store::list_surveys(&mut tx, agency, &query).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::ListSurveysResponse {
                surveys: records.iter().map(survey_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_survey(&self, request: Request<pb::UpdateSurveyRequest>) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.survey.as_ref() else {
                return Err(Error::invalid("survey", "required"));
            };
            let (agency, id) = parse_survey("survey.name", &patch.name)?;
            authorize(
                &caller,
                Action::ManageSurveys.roles(),
                agency,
                Target::Named,
            )?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "UpdateSurvey",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let mut record = store::get_survey(&mut change.tx, agency, id, true)
                .await?
                .ok_or(Error::NotFound("survey"))?;
            check_etag(&patch.etag, record.revision)?;
            if record.state == SurveyState::Closed as i32 {
                return Err(Error::FailedPrecondition {
                    reason: "SURVEY_CLOSED",
                    message: "a closed survey does not change",
                });
            }
            let next = record
                .fields
                .apply_mask(patch, &mask_paths(&req.update_mask))?;
            if record.state != SurveyState::Draft as i32
                && next.definition.questions != record.fields.definition.questions
            {
                return Err(Error::FailedPrecondition {
                    reason: "SURVEY_PUBLISHED",
                    message: "a published survey's questions never change; create a new version",
                });
            }
            record.fields = next;
            record.update_time = times::now_millis();
            if !store::update_survey(&mut change.tx, &record).await? {
                return Err(Error::StaleEtag);
            }
            record.revision += 1;
            Ok(change
                .finish(&record.name(), survey_to_proto(&record))
                .await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn publish_survey(
        &self,
        request: Request<pb::PublishSurveyRequest>,
    ) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let survey = self
            .transition(
                &caller,
                &req.name,
                &req.etag,
                &req.request_id,
                idempotency::fingerprint(&req),
                SurveyState::Published,
            )
            .await?;
        Ok(tonic::Response::new(survey))
    }

    #[tracing::instrument(skip_all)]
    async fn close_survey(&self, request: Request<pb::CloseSurveyRequest>) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let survey = self
            .transition(
                &caller,
                &req.name,
                &req.etag,
                &req.request_id,
                idempotency::fingerprint(&req),
                SurveyState::Closed,
            )
            .await?;
        Ok(tonic::Response::new(survey))
    }

    #[tracing::instrument(skip_all)]
    async fn create_survey_version(
        &self,
        request: Request<pb::CreateSurveyVersionRequest>,
    ) -> Reply<pb::Survey> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, source_id) = parse_survey("name", &req.name)?;
            authorize(
                &caller,
                Action::ManageSurveys.roles(),
                agency,
                Target::Named,
            )?;
            let id = chosen_id("survey_id", &req.survey_id)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "CreateSurveyVersion",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let source = store::get_survey(&mut change.tx, agency, source_id, false)
                .await?
                .ok_or(Error::NotFound("survey"))?;
            if source.state == SurveyState::Draft as i32 {
                return Err(Error::FailedPrecondition {
                    reason: "SURVEY_IS_DRAFT",
                    message: "a draft survey is edited in place; versions are made of published surveys",
                });
            }
            let record = Self::create_survey_in(
                &mut change,
                agency,
                &id,
                source.fields.clone(),
                (source.version + 1, source.name()),
            )
            .await?;
            Ok(change
                .finish(&record.name(), survey_to_proto(&record))
                .await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn submit_response(
        &self,
        request: Request<pb::SubmitResponseRequest>,
    ) -> Reply<pb::Response> {
        let caller = Caller::from_request(&request)?;
        let deadline = touchstone_server::deadline::remaining(&request);
        let req = request.into_inner();
        let run = async {
            let (agency, survey_id) = parse_survey("parent", &req.parent)?;
            authorize(&caller, Action::Submit.roles(), agency, Target::Named)?;
            let Some(response) = req.response.as_ref() else {
                return Err(Error::invalid("response", "required"));
            };
            let survey = self.load_survey(agency, survey_id).await?;
            if survey.state != SurveyState::Published as i32 {
                // A retry of a response accepted before the survey closed
                // still gets its first answer (AIP-155); anything else is
                // refused, and the claim rolls back with the transaction.
                let begun = self
                    .begin::<pb::Response>(
                        &caller,
                        agency,
                        "SubmitResponse",
                        &req.request_id,
                        idempotency::fingerprint(&req),
                    )
                    .await?;
                if let Begun::Replay(r) = begun {
                    return Ok(r);
                }
                return Err(not_published());
            }
            let now = times::now_millis();
            let input = domain::parse_response(
                response,
                agency,
                &survey.fields.definition,
                &survey.fields.touchpoint,
                "response",
                now,
            )?;
            let link = self
                .link(agency, &input, "response.client", deadline)
                .await?;
            // Only new rows (the response, its scores, a follow-up): one
            // request when the agency's key is cached (`change::write_new`).
            // The only row that can clash is the response, on its survey's
            // transaction id (ids are fresh).
            let prepared = prepare(&survey, input, link, now);
            let personal = caller.acts_as_any(Action::SeePersonal.roles(), agency);
            change::write_new(
                &self.db,
                &self.keys,
                &caller,
                agency,
                "SubmitResponse",
                &req.request_id,
                idempotency::fingerprint(&req),
                |key, s| {
                    store::push_new_responses(s, key, &[(&prepared.record, None)])?;
                    let mut events = Vec::new();
                    if let Some(f) = &prepared.follow_up {
                        store::push_follow_up(s, f)?;
                        events.push((f.name(), outbox::Pending::new(&opened_event(f))));
                    }
                    let name = prepared.record.name();
                    events.push((name.clone(), outbox::Pending::new(&prepared.submitted)));
                    Ok::<_, Error>(change::Written {
                        resource: name,
                        response: response_to_proto(&prepared.record, personal),
                        events,
                    })
                },
                || Error::AlreadyExists("a response for this transaction"),
            )
            .await
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_response(&self, request: Request<pb::GetResponseRequest>) -> Reply<pb::Response> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let ids = parse_name("name", "agencies/{}/surveys/{}/responses/{}", &req.name)?;
            let (agency, survey_id, id) = (ids[0], ids[1], ids[2]);
            authorize(
                &caller,
                Action::ReadResponses.roles(),
                agency,
                Target::Named,
            )?;
            let personal = caller.acts_as_any(Action::SeePersonal.roles(), agency);
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.keys.data_key(&mut tx, agency).await?;
            let record = store::get_response(&mut tx, &key, agency, survey_id, id)
                .await?
                .ok_or(Error::NotFound("response"))?;
            tx.commit().await?;
            if personal {
                self.db
                    .audit_reads(
                        access(&caller, agency, "GetResponse", &req.name),
                        &[&req.name],
                    )
                    .await?;
            }
            Ok::<_, Error>(response_to_proto(&record, personal))
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_responses(
        &self,
        request: Request<pb::ListResponsesRequest>,
    ) -> Reply<pb::ListResponsesResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let ids = names::parse("agencies/{}/surveys/{}", &req.parent, true)
                .map_err(|e| Error::invalid("parent", e.0))?;
            let (agency, survey) = (ids[0], ids[1]);
            if agency == "-" {
                return Err(Error::invalid("parent", "the agency cannot be a wildcard"));
            }
            authorize(
                &caller,
                Action::ReadResponses.roles(),
                agency,
                if survey != "-" {
                    Target::Named
                } else {
                    Target::Collection
                },
            )?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::RESPONSE_SCHEMA, &req.parent, &params, 3)
                .map_err(list_error)?;
            let view = pb::ResponseView::try_from(req.view)
                .map_err(|_| Error::invalid("view", "an unknown view"))?;
            let personal = view != pb::ResponseView::Basic
                && caller.acts_as_any(Action::SeePersonal.roles(), agency);
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let key = self.keys.data_key(&mut tx, agency).await?;
            let survey_id = (survey != "-").then_some(survey);
            let (records, next_page_token) =
                store::list_responses(&mut tx, &key, agency, survey_id, &query).await?;
            tx.commit().await?;
            if personal {
                let names: Vec<String> = records.iter().map(ResponseRecord::name).collect();
                self.db
                    .audit_reads(access(&caller, agency, "ListResponses", ""), &names)
                    .await?;
            }
            Ok::<_, Error>(pb::ListResponsesResponse {
                responses: records
                    .iter()
                    .map(|r| response_to_proto(r, personal))
                    .collect(),
                next_page_token,
            })
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn import_responses(
        &self,
        request: Request<Streaming<pb::ImportResponsesRequest>>,
    ) -> Reply<pb::ImportResponsesResponse> {
        let caller = Caller::from_request(&request)?;
        if !caller.has_any(Action::Submit.roles()) {
            return Err(Error::from(touchstone_auth::Denied::Roles).into());
        }
        let mut stream = request.into_inner();
        let mut agency: Option<String> = None;
        let mut surveys: HashMap<String, SurveyRecord> = HashMap::new();
        let mut results: Vec<pb::RowResult> = Vec::new();
        let mut batch: Vec<Row> = Vec::new();
        let mut index: i64 = 0;
        // Batches are written while the next ones are read and checked: a
        // write waits mostly on the database (SQLite's thread, or the
        // server), the checks on this task's CPU. Up to `IMPORT_WRITES`
        // batches are written at once, each in a task of its own, and up to
        // `IMPORT_READ_AHEAD` checked batches wait their turn, so the stream
        // is read on (and its sender not held up by HTTP/2 flow control)
        // while batches are written. A batch writes its rows only once the
        // batch before it has written its own ([`Turn`]), so a row that
        // repeats one of an earlier batch meets it: on SQLite the earlier
        // batch's writes come first under the writer lock; on PostgreSQL the
        // later insert waits for the earlier transaction's unique key, then
        // clashes with it once it commits.
        let mut writing: VecDeque<WriteTask> = VecDeque::new();
        let mut checked: VecDeque<Batch> = VecDeque::new();
        let mut last_written: Option<oneshot::Receiver<()>> = None;
        let caller = &caller;
        loop {
            while writing.len() < IMPORT_WRITES
                && let Some(a) = &agency
                && let Some(next) = checked.pop_front()
            {
                let a = a.clone();
                let this = self.clone();
                let who = caller.clone();
                let turn = Turn::after(&mut last_written);
                writing.push_back(WriteTask(tokio::spawn(async move {
                    this.write_batch(&who, &a, next, turn).await
                })));
            }
            let message = match writing.front_mut() {
                Some(write) if checked.len() >= IMPORT_READ_AHEAD => {
                    let written = write.await;
                    writing.pop_front();
                    results.extend(written?);
                    continue;
                }
                Some(write) => tokio::select! {
                    biased;
                    written = write => {
                        writing.pop_front();
                        results.extend(written?);
                        continue;
                    }
                    message = stream.next() => message,
                },
                None => stream.next().await,
            };
            let Some(message) = message else {
                break;
            };
            let row = match message {
                Ok(row) => row,
                Err(e) => {
                    // The batches being written are finished, not cut short.
                    for write in writing {
                        write.await?;
                    }
                    return Err(e);
                }
            };
            if index as usize >= domain::MAX_IMPORT_ROWS {
                results.push(rejected(
                    index,
                    &row.row_id,
                    vec![FieldViolation::new(
                        "row",
                        format!(
                            "a stream takes at most {} rows; send the rest in another",
                            domain::MAX_IMPORT_ROWS
                        ),
                    )],
                ));
                index += 1;
                continue;
            }
            match self
                .import_row(caller, &mut agency, &mut surveys, index, row)
                .await
            {
                Ok(Ok(row)) => batch.push(row),
                Ok(Err(result)) => results.push(result),
                Err(e) => {
                    for write in writing {
                        write.await?;
                    }
                    return Err(e.into());
                }
            }
            index += 1;
            if batch.len() >= IMPORT_BATCH {
                let rows = std::mem::take(&mut batch);
                checked.push_back(self.batch(caller, agency.as_deref(), rows));
            }
        }
        checked.push_back(self.batch(caller, agency.as_deref(), batch));
        for write in writing {
            results.extend(write.await?);
        }
        if let Some(a) = &agency {
            for next in checked {
                let turn = Turn::after(&mut last_written);
                results.extend(self.write_batch(caller, a, next, turn).await?);
            }
        }
        results.sort_by_key(|r| r.row);
        let count =
            |o: pb::RowOutcome| results.iter().filter(|r| r.outcome == o as i32).count() as i64;
        Ok(tonic::Response::new(pb::ImportResponsesResponse {
            created: count(pb::RowOutcome::Created),
            already_imported: count(pb::RowOutcome::AlreadyImported),
            rejected: count(pb::RowOutcome::Rejected),
            results,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_volumes(
        &self,
        request: Request<pb::RecordVolumesRequest>,
    ) -> Reply<pb::Volume> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let (agency, survey_id) = parse_survey("parent", &req.parent)?;
            authorize(
                &caller,
                Action::RecordVolumes.roles(),
                agency,
                Target::Named,
            )?;
            let Some(volume) = req.volume.as_ref() else {
                return Err(Error::invalid("volume", "required"));
            };
            let input = domain::parse_volume(volume, "volume")?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "RecordVolumes",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let survey = store::get_survey(&mut change.tx, agency, survey_id, false)
                .await?
                .ok_or(Error::NotFound("survey"))?;
            let id = names::new_id();
            let now = times::now_millis();
            store::insert_volume(&mut change.tx, agency, survey_id, &id, &input, now).await?;
            let name = format!("{}/volumes/{id}", survey.name());
            let start_date = Some(times::date_from_key(input.start));
            let end_date = Some(times::date_from_key(input.end));
            change.event(
                &name,
                &pb::VolumesRecorded {
                    survey: survey.name(),
                    volume: name.clone(),
                    touchpoint: Some(survey.fields.touchpoint.to_proto()),
                    start_date,
                    end_date,
                    customers_served: input.served,
                    customers_offered: input.offered,
                },
            );
            let reply = pb::Volume {
                name: name.clone(),
                start_date,
                end_date,
                customers_served: input.served,
                customers_offered: input.offered,
                create_time: Some(times::timestamp(now)),
            };
            Ok(change.finish(&name, reply).await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_follow_up(&self, request: Request<pb::GetFollowUpRequest>) -> Reply<pb::FollowUp> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let ids = parse_name("name", "agencies/{}/followUps/{}", &req.name)?;
            let (agency, id) = (ids[0], ids[1]);
            authorize(&caller, Action::FollowUps.roles(), agency, Target::Named)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let record = store::get_follow_up(&mut tx, agency, id, false)
                .await?
                .ok_or(Error::NotFound("follow-up"))?;
            tx.commit().await?;
            self.db
                .audit_reads(
                    access(&caller, agency, "GetFollowUp", &req.name),
                    &[&req.name],
                )
                .await?;
            Ok::<_, Error>(follow_up_to_proto(&record))
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn list_follow_ups(
        &self,
        request: Request<pb::ListFollowUpsRequest>,
    ) -> Reply<pb::ListFollowUpsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::FollowUps.roles(),
                agency,
                Target::Collection,
            )?;
            let params = ListParams {
                filter: &req.filter,
                order_by: &req.order_by,
                page_size: req.page_size,
                page_token: &req.page_token,
            };
            let query = ListQuery::plan(&store::FOLLOW_UP_SCHEMA, &req.parent, &params, 2)
                .map_err(list_error)?;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let (records, next_page_token) =
                store::list_follow_ups(&mut tx, agency, &query).await?;
            let names: Vec<String> = records.iter().map(FollowUpRecord::name).collect();
            tx.commit().await?;
            self.db
                .audit_reads(access(&caller, agency, "ListFollowUps", ""), &names)
                .await?;
            Ok::<_, Error>(pb::ListFollowUpsResponse {
                follow_ups: records.iter().map(follow_up_to_proto).collect(),
                next_page_token,
            })
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn summarize_follow_ups(
        &self,
        request: Request<pb::SummarizeFollowUpsRequest>,
    ) -> Reply<pb::SummarizeFollowUpsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(
                &caller,
                Action::FollowUps.roles(),
                agency,
                Target::Collection,
            )?;
            let as_of = match &req.as_of {
                None => times::today_key(),
                Some(d) => times::date_key(d)
                    .ok_or_else(|| Error::invalid("as_of", "not a calendar date"))?,
            };
            // Counts only: nothing personal is read, so nothing is audited.
            let mut tx = self.db.read_one(Scope::Agency(agency)).await?;
            let (open, overdue) = store::count_open_follow_ups(&mut tx, agency, as_of).await?;
            tx.commit().await?;
            Ok::<_, Error>(pb::SummarizeFollowUpsResponse { open, overdue })
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn update_follow_up(
        &self,
        request: Request<pb::UpdateFollowUpRequest>,
    ) -> Reply<pb::FollowUp> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let Some(patch) = req.follow_up.as_ref() else {
                return Err(Error::invalid("follow_up", "required"));
            };
            let ids = parse_name("follow_up.name", "agencies/{}/followUps/{}", &patch.name)?;
            let (agency, id) = (ids[0], ids[1]);
            authorize(&caller, Action::FollowUps.roles(), agency, Target::Named)?;
            let mut paths = mask_paths(&req.update_mask);
            if paths.is_empty() || paths.iter().any(|p| p == "*") {
                paths = vec!["status".into(), "assignee".into(), "due_date".into()];
            }
            let mut v = Violations::new();
            let mut status = None;
            let mut assignee = None;
            let mut due = None;
            for p in &paths {
                match p.as_str() {
                    "status" => match FollowUpStatus::try_from(patch.status) {
                        Ok(FollowUpStatus::Unspecified) | Err(_) => v.add(
                            "follow_up.status",
                            "one of OPEN, CONTACTED, RESOLVED, NO_ACTION",
                        ),
                        Ok(s) => status = Some(s),
                    },
                    "assignee" => {
                        let a = patch.assignee.trim();
                        if a.chars().count() > domain::MAX_LABEL || a.chars().any(char::is_control)
                        {
                            v.add("follow_up.assignee", "at most 100 printable characters");
                        }
                        assignee = Some(a.to_string());
                    }
                    "due_date" => match patch.due_date.as_ref().and_then(times::date_key) {
                        Some(d) => due = Some(d),
                        None => v.add("follow_up.due_date", "a real calendar date"),
                    },
                    other => v.add(
                        "update_mask",
                        format!("{other:?} is not an updatable field"),
                    ),
                }
            }
            v.finish().map_err(Error::InvalidArgument)?;
            let mut change = match self
                .begin(
                    &caller,
                    agency,
                    "UpdateFollowUp",
                    &req.request_id,
                    idempotency::fingerprint(&req),
                )
                .await?
            {
                Begun::Replay(r) => return Ok(r),
                Begun::Fresh(c) => c,
            };
            let mut record = store::get_follow_up(&mut change.tx, agency, id, true)
                .await?
                .ok_or(Error::NotFound("follow-up"))?;
            check_etag(&patch.etag, record.revision)?;
            let from = FollowUpStatus::try_from(record.status).unwrap_or(FollowUpStatus::Open);
            if domain::is_closed(from) {
                return Err(Error::FailedPrecondition {
                    reason: "FOLLOW_UP_CLOSED",
                    message: "the follow-up is closed",
                });
            }
            let now = times::now_millis();
            let to = status.unwrap_or(from);
            if !domain::follow_up_transition(from, to) {
                return Err(Error::FailedPrecondition {
                    reason: "INVALID_TRANSITION",
                    message: "a contacted follow-up cannot be reopened",
                });
            }
            record.status = to as i32;
            if let Some(a) = assignee {
                record.assignee = a;
            }
            let previous_due = record.due_date;
            if let Some(d) = due {
                record.due_date = d;
            }
            record.update_time = now;
            if domain::is_closed(to) {
                record.close_time = Some(now);
            }
            if !store::update_follow_up(&mut change.tx, &record).await? {
                return Err(Error::StaleEtag);
            }
            record.revision += 1;
            let name = record.name();
            // The KPI judges a close against the due date in force, so a
            // changed date goes out first (also when the same call closes).
            if record.due_date != previous_due {
                change.event(&name, &due_date_changed_event(&record, previous_due));
            }
            if domain::is_closed(to) {
                change.event(&name, &closed_event(&record));
            }
            Ok(change.finish(&name, follow_up_to_proto(&record)).await?)
        };
        Ok(tonic::Response::new(run.await?))
    }

    #[tracing::instrument(skip_all)]
    async fn get_a11_report(
        &self,
        request: Request<pb::GetA11ReportRequest>,
    ) -> Reply<pb::A11Report> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let run = async {
            let agency = parse_agency("parent", &req.parent)?;
            authorize(&caller, Action::Report.roles(), agency, Target::Collection)?;
            let q = domain::parse_quarter(&req.quarter).ok_or_else(|| {
                Error::invalid("quarter", "a quarter such as 2026Q3, 2026-Q3 or FY2027Q1")
            })?;
            let from = day_start_millis(q.first_day);
            let until = day_start_millis(q.last_day) + 86_400_000;
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let data =
                store::a11_data(&mut tx, agency, (from, until), (q.first_day, q.last_day)).await?;
            tx.commit().await?;
            Ok::<_, Error>(crate::a11::report(
                &req.parent,
                req.quarter.trim(),
                (q.fiscal_year, q.fiscal_quarter),
                &data,
            ))
        };
        Ok(tonic::Response::new(run.await?))
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
        Ok(tonic::Response::new(pb::ListEventsResponse {
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
        Ok(tonic::Response::new(Box::pin(stream)))
    }
}

/// Milliseconds at 00:00 UTC of a yyyymmdd day.
fn day_start_millis(key: i64) -> i64 {
    let d = times::date_from_key(key);
    time::Month::try_from(d.month as u8)
        .ok()
        .and_then(|m| time::Date::from_calendar_date(d.year, m, d.day as u8).ok())
        .map_or(0, |date| {
            date.midnight().assume_utc().unix_timestamp() * 1000
        })
}
