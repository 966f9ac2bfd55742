//! The feedback service's SQL, all of it, for SQLite and PostgreSQL alike.
//! Comments as written are sealed and opened here, at the edge of the
//! database, so no other layer sees ciphertext.

use crate::domain::{Definition, StoredAnswer, SurveyFields, Touchpoint, VolumeInput};
use crate::error::Error;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::{BTreeMap, HashMap};
use touchstone_api::register::v1::Characteristics;
use touchstone_crypto::DataKey;
use touchstone_list::{Field, FieldType, ListQuery, Schema};
use touchstone_platform::db::{Backend, Tx};
use touchstone_platform::keycheck::SealedColumn;
use touchstone_platform::outbox;
use touchstone_platform::statements::Statements;
use touchstone_platform::{CHANNELS, list_field as field};
use touchstone_platform::{list_bind, row_bool};

const SURVEY_STATES: &[(&str, i64)] = &[("DRAFT", 1), ("PUBLISHED", 2), ("CLOSED", 3)];
const FOLLOW_UP_STATUSES: &[(&str, i64)] = &[
    ("OPEN", 1),
    ("CONTACTED", 2),
    ("RESOLVED", 3),
    ("NO_ACTION", 4),
];

/// Survey fields that `ListSurveys` filters and orders on.
pub static SURVEY_SCHEMA: Schema = Schema {
    fields: &[
        field("state", "state", FieldType::Enum(SURVEY_STATES), true),
        field("touchpoint.service", "service", FieldType::Text, true),
        field("touchpoint.unit", "unit", FieldType::Text, true),
        field(
            "touchpoint.channel",
            "channel",
            FieldType::Enum(CHANNELS),
            false,
        ),
        field("touchpoint.stage", "stage", FieldType::Text, true),
        field("title", "title", FieldType::Text, true),
        field("create_time", "create_time", FieldType::Timestamp, true),
        field("update_time", "update_time", FieldType::Timestamp, true),
    ],
    id_column: "id",
    default_order: "create_time desc",
};

/// Response fields that `ListResponses` filters and orders on.
pub static RESPONSE_SCHEMA: Schema = Schema {
    fields: &[
        field("channel", "channel", FieldType::Enum(CHANNELS), false),
        field("unit", "unit", FieldType::Text, true),
        field("submit_time", "submit_time", FieldType::Timestamp, true),
        field("create_time", "create_time", FieldType::Timestamp, true),
        Field {
            name: "sentiment",
            column: "sentiment",
            ty: FieldType::Integer,
            sortable: false,
            nullable: true,
        },
        field("anonymous", "anonymous", FieldType::Bool, false),
    ],
    id_column: "id",
    default_order: "create_time desc",
};

/// Follow-up fields that `ListFollowUps` filters and orders on.
pub static FOLLOW_UP_SCHEMA: Schema = Schema {
    fields: &[
        field(
            "status",
            "status",
            FieldType::Enum(FOLLOW_UP_STATUSES),
            true,
        ),
        field("assignee", "assignee", FieldType::Text, true),
        field("survey_id", "survey_id", FieldType::Text, false),
        field("unit", "unit", FieldType::Text, true),
        field("due_date", "due_date", FieldType::Date, true),
        field("create_time", "create_time", FieldType::Timestamp, true),
        field("update_time", "update_time", FieldType::Timestamp, true),
    ],
    id_column: "id",
    default_order: "create_time desc",
};

fn lock_clause(tx: &Tx) -> &'static str {
    if tx.backend() == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    }
}

fn unique_violation(e: &sqlx::Error) -> bool {
    Error::is_unique_violation(e)
}

// ---------------------------------------------------------------- surveys

/// A stored survey.
#[derive(Debug, Clone)]
pub struct SurveyRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Caller-set fields.
    pub fields: SurveyFields,
    /// `SurveyState`.
    pub state: i32,
    /// Version number.
    pub version: i64,
    /// Name of the survey this is a version of, or "".
    pub previous_version: String,
    /// Created.
    pub create_time: i64,
    /// Changed.
    pub update_time: i64,
    /// Published.
    pub publish_time: Option<i64>,
    /// Closed.
    pub close_time: Option<i64>,
    /// Version for etags.
    pub revision: i64,
}

impl SurveyRecord {
    /// The resource name.
    pub fn name(&self) -> String {
        survey_name(&self.agency, &self.id)
    }
}

/// `agencies/{a}/surveys/{s}`.
pub fn survey_name(agency: &str, id: &str) -> String {
    format!("agencies/{agency}/surveys/{id}")
}

const SURVEY_COLUMNS: &str = "agency, id, title, description, state, service, unit, channel, \
    stage, definition, version, previous_version, create_time, update_time, publish_time, \
    close_time, revision";

fn survey_from_row(row: &AnyRow) -> Result<SurveyRecord, Error> {
    let definition: String = row.try_get("definition")?;
    let definition: Definition =
        serde_json::from_str(&definition).map_err(|_| Error::Corrupt("survey definition"))?;
    Ok(SurveyRecord {
        agency: row.try_get("agency")?,
        id: row.try_get("id")?,
        fields: SurveyFields {
            title: row.try_get("title")?,
            description: row.try_get("description")?,
            touchpoint: Touchpoint {
                service: row.try_get("service")?,
                unit: row.try_get("unit")?,
                channel: row.try_get::<i64, _>("channel")? as i32,
                stage: row.try_get("stage")?,
            },
            definition,
        },
        state: row.try_get::<i64, _>("state")? as i32,
        version: row.try_get("version")?,
        previous_version: row.try_get("previous_version")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        publish_time: row.try_get("publish_time")?,
        close_time: row.try_get("close_time")?,
        revision: row.try_get("revision")?,
    })
}

fn definition_json(d: &Definition) -> Result<String, Error> {
    serde_json::to_string(d).map_err(|_| Error::Corrupt("encoding a survey definition"))
}

/// Inserts a new survey; ALREADY_EXISTS when the id is taken.
pub async fn insert_survey(tx: &mut Tx, r: &SurveyRecord) -> Result<(), Error> {
    let f = &r.fields;
    let inserted = sqlx::query(
        "INSERT INTO surveys (agency, id, title, description, state, service, unit, channel, \
         stage, definition, version, previous_version, create_time, update_time, publish_time, \
         close_time, revision) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL, NULL, 1)",
    )
    .bind(r.agency.as_str())
    .bind(r.id.as_str())
    .bind(f.title.as_str())
    .bind(f.description.as_str())
    .bind(i64::from(r.state))
    .bind(f.touchpoint.service.as_str())
    .bind(f.touchpoint.unit.as_str())
    .bind(i64::from(f.touchpoint.channel))
    .bind(f.touchpoint.stage.as_str())
    .bind(definition_json(&f.definition)?)
    .bind(r.version)
    .bind(r.previous_version.as_str())
    .bind(r.create_time)
    .bind(r.update_time)
    .execute(tx.conn())
    .await;
    match inserted {
        Err(e) if unique_violation(&e) => Err(Error::AlreadyExists("survey")),
        other => other.map(|_| ()).map_err(Error::from),
    }
}

/// A survey, or None; `lock` holds its row until commit (PostgreSQL).
pub async fn get_survey(
    tx: &mut Tx,
    agency: &str,
    id: &str,
    lock: bool,
) -> Result<Option<SurveyRecord>, Error> {
    let lock = if lock { lock_clause(tx) } else { "" };
    let sql = format!("SELECT {SURVEY_COLUMNS} FROM surveys WHERE agency = $1 AND id = $2{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| survey_from_row(&r)).transpose()
}

/// Writes a survey's fields, state and times if its revision is still the
/// one read; false when someone changed it first.
pub async fn update_survey(tx: &mut Tx, r: &SurveyRecord) -> Result<bool, Error> {
    let f = &r.fields;
    let n = sqlx::query(
        "UPDATE surveys SET title = $1, description = $2, state = $3, service = $4, unit = $5, \
         channel = $6, stage = $7, definition = $8, update_time = $9, publish_time = $10, \
         close_time = $11, revision = revision + 1 \
         WHERE agency = $12 AND id = $13 AND revision = $14",
    )
    .bind(f.title.as_str())
    .bind(f.description.as_str())
    .bind(i64::from(r.state))
    .bind(f.touchpoint.service.as_str())
    .bind(f.touchpoint.unit.as_str())
    .bind(i64::from(f.touchpoint.channel))
    .bind(f.touchpoint.stage.as_str())
    .bind(definition_json(&f.definition)?)
    .bind(r.update_time)
    .bind(r.publish_time)
    .bind(r.close_time)
    .bind(r.agency.as_str())
    .bind(r.id.as_str())
    .bind(r.revision)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// One page of surveys.
pub async fn list_surveys(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<SurveyRecord>, String), Error> {
    let (rows, next) =
        touchstone_platform::list_page(tx, SURVEY_COLUMNS, "surveys", agency, query).await?;
    let records = rows.iter().map(survey_from_row).collect::<Result<_, _>>()?;
    Ok((records, next))
}

// -------------------------------------------------------------- responses

/// A stored response.
#[derive(Debug, Clone)]
pub struct ResponseRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Survey id.
    pub survey_id: String,
    /// `Channel`.
    pub channel: i32,
    /// Unit.
    pub unit: String,
    /// Millis.
    pub submit_time: i64,
    /// Transaction id.
    pub transaction_id: Option<String>,
    /// Client id (kept only with consent).
    pub client_id: Option<String>,
    /// Contact agreed.
    pub contact_agreed: bool,
    /// Characteristics snapshot (only with consent to statistics).
    pub characteristics: Option<Characteristics>,
    /// Analysis copy of the answers.
    pub answers: Vec<StoredAnswer>,
    /// Comments as written, by question key; None once erased.
    pub originals: Option<BTreeMap<String, String>>,
    /// Mean comment sentiment.
    pub sentiment: Option<f64>,
    /// Linked to no client.
    pub anonymous: bool,
    /// Follow-up opened by this response.
    pub follow_up_id: Option<String>,
    /// The client was erased.
    pub erased: bool,
    /// Stored.
    pub create_time: i64,
}

impl ResponseRecord {
    /// The resource name.
    pub fn name(&self) -> String {
        response_name(&self.agency, &self.survey_id, &self.id)
    }
}

/// `agencies/{a}/surveys/{s}/responses/{r}`.
pub fn response_name(agency: &str, survey: &str, id: &str) -> String {
    format!("agencies/{agency}/surveys/{survey}/responses/{id}")
}

/// The sealed columns, with their associated data as SQL (the same text as
/// [`response_aad`]), for the start-up key check.
pub const SEALED: &[SealedColumn] = &[SealedColumn {
    table: "responses",
    column: "originals",
    aad: "'feedback/responses/' || agency || '/' || id",
}];

fn response_aad(agency: &str, id: &str) -> Vec<u8> {
    format!("feedback/responses/{agency}/{id}").into_bytes()
}

/// The `characteristics` column: a client's characteristics as stored with a
/// response (also written by bulk loaders).
pub fn characteristics_json(c: &Characteristics) -> String {
    format!(
        "[{},{},{},{},{},{}]",
        c.age_band,
        c.gender,
        c.disability,
        c.first_nations,
        c.culturally_linguistically_diverse,
        c.remote_location
    )
}

fn characteristics_from_json(s: &str) -> Result<Characteristics, Error> {
    let v: Vec<i32> = serde_json::from_str(s).map_err(|_| Error::Corrupt("characteristics"))?;
    let [age_band, gender, disability, first_nations, cald, remote] = v[..] else {
        return Err(Error::Corrupt("characteristics"));
    };
    Ok(Characteristics {
        age_band,
        gender,
        disability,
        first_nations,
        culturally_linguistically_diverse: cald,
        remote_location: remote,
    })
}

const RESPONSE_COLUMNS: &str = "agency, id, survey_id, channel, unit, submit_time, \
    transaction_id, client_id, contact_agreed, characteristics, answers, originals, sentiment, \
    anonymous, follow_up_id, erased, create_time";

fn response_from_row(key: &DataKey, row: &AnyRow) -> Result<ResponseRecord, Error> {
    let agency: String = row.try_get("agency")?;
    let id: String = row.try_get("id")?;
    let sealed: Option<Vec<u8>> = row.try_get("originals")?;
    let originals = match sealed {
        Some(bytes) => {
            let json = key
                .open(&response_aad(&agency, &id), &bytes)
                .map_err(|_| Error::Corrupt("comments do not decrypt"))?;
            Some(serde_json::from_slice(&json).map_err(|_| Error::Corrupt("comments"))?)
        }
        None => None,
    };
    let answers: String = row.try_get("answers")?;
    let characteristics: Option<String> = row.try_get("characteristics")?;
    let sentiment: Option<i64> = row.try_get("sentiment")?;
    let answers: Vec<StoredAnswer> =
        serde_json::from_str(&answers).map_err(|_| Error::Corrupt("answers"))?;
    // The stored integer is rounded; the answers keep the exact scores.
    let scores: Vec<f64> = answers.iter().filter_map(|a| a.sentiment).collect();
    let exact = (!scores.is_empty()).then(|| scores.iter().sum::<f64>() / scores.len() as f64);
    Ok(ResponseRecord {
        survey_id: row.try_get("survey_id")?,
        channel: row.try_get::<i64, _>("channel")? as i32,
        unit: row.try_get("unit")?,
        submit_time: row.try_get("submit_time")?,
        transaction_id: row.try_get("transaction_id")?,
        client_id: row.try_get("client_id")?,
        contact_agreed: row_bool(row, "contact_agreed")?,
        characteristics: characteristics
            .as_deref()
            .map(characteristics_from_json)
            .transpose()?,
        answers,
        originals,
        sentiment: exact.or(sentiment.map(|s| s as f64 / 100.0)),
        anonymous: row_bool(row, "anonymous")?,
        follow_up_id: row.try_get("follow_up_id")?,
        erased: row_bool(row, "erased")?,
        create_time: row.try_get("create_time")?,
        agency,
        id,
    })
}

/// What inserting a response found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created,
    /// A response with the same import key exists: its id.
    AlreadyImported(String),
    /// A response with the same transaction id exists.
    DuplicateTransaction,
}

/// Most parameters to bind to one multi-row statement. PostgreSQL allows
/// 65,535 and each statement is a round trip, so large ones pay. SQLite
/// allows 32,766, but binding by position looks each parameter's name up in
/// a list (sqlite3_bind_parameter_name), so the cost of a statement grows
/// with the square of its parameters: small statements are cheaper there.
fn params_per_statement(backend: Backend) -> usize {
    match backend {
        Backend::Sqlite => 10_000,
        Backend::Postgres => 30_000,
    }
}

/// Inserts responses of one agency (with their import keys) in as few
/// statements as the parameter limits allow, and adds the inserts of the
/// stored ones' standard-item scores to `scores` (sent with the rest of the
/// change's last writes, see `Statements`); reports each row's outcome in
/// order. Duplicates are reported, never raised (a raised one would abort a
/// PostgreSQL transaction).
pub async fn insert_responses(
    tx: &mut Tx,
    key: &DataKey,
    rows: &[(&ResponseRecord, Option<&str>)],
    scores: &mut Statements,
) -> Result<Vec<Inserted>, Error> {
    let Some((first, _)) = rows.first() else {
        return Ok(Vec::new());
    };
    let agency = first.agency.as_str();
    let limit = params_per_statement(tx.backend());
    let mut inserted: std::collections::HashSet<String> = std::collections::HashSet::new();
    for chunk in rows.chunks(limit / RESPONSE_INSERT_COLUMNS) {
        let mut insert = Statements::new(tx.backend());
        push_response_rows(&mut insert, key, chunk, " ON CONFLICT DO NOTHING")?;
        let stored = insert.execute(tx).await?;
        if stored == chunk.len() as u64 {
            inserted.extend(chunk.iter().map(|(r, _)| r.id.clone()));
            continue;
        }
        // Some clashed (a retried row, a repeated transaction id): the rows
        // now holding this chunk's new ids are the ones it stored (ids are
        // fresh, so no other row has one). Rarely needed, so not returned
        // by the insert itself, which would cost a row per response.
        let backend = tx.backend();
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| backend.param(i + 2)).collect();
        let sql = format!(
            "SELECT id FROM responses WHERE agency = {} AND id IN ({})",
            backend.param(1),
            placeholders.join(", ")
        );
        let mut q = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql)).bind(agency);
        for (r, _) in chunk {
            q = q.bind(r.id.as_str());
        }
        inserted.extend(q.fetch_all(tx.conn()).await?);
    }
    // Rows not inserted clashed on their import key (already imported) or
    // on their transaction id.
    let missed: Vec<&str> = rows
        .iter()
        .filter(|(r, _)| !inserted.contains(&r.id))
        .filter_map(|(_, k)| *k)
        .collect();
    let mut existing: HashMap<(String, String), String> = HashMap::new();
    for chunk in missed.chunks(limit - 1) {
        let backend = tx.backend();
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| backend.param(i + 2)).collect();
        let sql = format!(
            "SELECT survey_id, import_key, id FROM responses WHERE agency = {} AND import_key IN ({})",
            backend.param(1),
            placeholders.join(", ")
        );
        let mut q =
            sqlx::query_as::<_, (String, String, String)>(sqlx::AssertSqlSafe(sql)).bind(agency);
        for k in chunk {
            q = q.bind(*k);
        }
        for (survey, import_key, id) in q.fetch_all(tx.conn()).await? {
            existing.insert((survey, import_key), id);
        }
    }
    push_scores(
        scores,
        rows.iter()
            .map(|(r, _)| *r)
            .filter(|r| inserted.contains(&r.id)),
    )?;
    Ok(rows
        .iter()
        .map(|(r, k)| {
            if inserted.contains(&r.id) {
                return Inserted::Created;
            }
            match k.and_then(|k| existing.get(&(r.survey_id.clone(), k.to_string()))) {
                Some(id) => Inserted::AlreadyImported(id.clone()),
                None => Inserted::DuplicateTransaction,
            }
        })
        .collect())
}

/// Columns of a response's row, as [`push_response_rows`] inserts it.
const RESPONSE_INSERT_COLUMNS: usize = 18;

/// Adds the insert of `rows` (at most one statement's parameters) to `s`,
/// the originals sealed with `key`; `tail` ends the statement (e.g. an
/// `ON CONFLICT` clause).
fn push_response_rows(
    s: &mut Statements,
    key: &DataKey,
    rows: &[(&ResponseRecord, Option<&str>)],
    tail: &str,
) -> Result<(), Error> {
    let mut values = Vec::with_capacity(rows.len());
    for (r, import_key) in rows {
        let sealed = match &r.originals {
            Some(o) if !o.is_empty() => {
                let json =
                    serde_json::to_vec(o).map_err(|_| Error::Corrupt("encoding comments"))?;
                Some(key.seal(&response_aad(&r.agency, &r.id), &json))
            }
            _ => None,
        };
        let answers =
            serde_json::to_string(&r.answers).map_err(|_| Error::Corrupt("encoding answers"))?;
        let row = [
            s.value(r.agency.clone())?,
            s.value(r.id.clone())?,
            s.value(r.survey_id.clone())?,
            s.value(i64::from(r.channel))?,
            s.value(r.unit.clone())?,
            s.value(r.submit_time)?,
            s.value(r.transaction_id.clone())?,
            s.value(import_key.map(str::to_string))?,
            s.value(r.client_id.clone())?,
            s.value(r.contact_agreed)?,
            s.value(r.characteristics.as_ref().map(characteristics_json))?,
            s.value(answers)?,
            s.value(sealed)?,
            s.value(r.sentiment.map(|s| (s * 100.0).round() as i64))?,
            s.value(r.anonymous)?,
            s.value(r.follow_up_id.clone())?,
            s.value(r.erased)?,
            s.value(r.create_time)?,
        ];
        debug_assert_eq!(row.len(), RESPONSE_INSERT_COLUMNS);
        values.push(format!("({})", row.join(", ")));
    }
    s.push(format!(
        "INSERT INTO responses (agency, id, survey_id, channel, unit, submit_time, \
         transaction_id, import_key, client_id, contact_agreed, characteristics, answers, \
         originals, sentiment, anonymous, follow_up_id, erased, create_time) VALUES {}{tail}",
        values.join(", ")
    ));
    Ok(())
}

/// Adds the inserts of `responses`' standard-item scores to `s`.
fn push_scores<'r>(
    s: &mut Statements,
    responses: impl Iterator<Item = &'r ResponseRecord>,
) -> Result<(), Error> {
    let stored: Vec<(&ResponseRecord, i32, i32)> = responses
        .flat_map(|r| {
            r.answers
                .iter()
                .filter(|a| a.item != 0)
                .filter_map(move |a| a.score.map(|s| (r, a.item, s)))
        })
        .collect();
    // Chunks of at most 3,000 parameters (see `change::commit_with`).
    for chunk in stored.chunks(500) {
        let mut values = Vec::with_capacity(chunk.len());
        for (r, item, score) in chunk {
            values.push(format!(
                "({}, {}, {}, {}, {}, {})",
                s.value(r.agency.clone())?,
                s.value(r.id.clone())?,
                s.value(r.survey_id.clone())?,
                s.value(i64::from(*item))?,
                s.value(i64::from(*score))?,
                s.value(r.submit_time)?,
            ));
        }
        s.push(format!(
            "INSERT INTO response_scores (agency, response_id, survey_id, item, score, submit_time) \
             VALUES {}",
            values.join(", ")
        ));
    }
    Ok(())
}

/// Adds to `s` the inserts of `rows`, every one new, and of their scores,
/// **without** `ON CONFLICT`: a row that clashes with a stored one (one
/// imported before, a repeated transaction id) fails the whole request with
/// a unique violation (see `change::NewRows`), and the batch is then written
/// by [`insert_responses`], which tells those rows apart.
pub fn push_new_responses(
    s: &mut Statements,
    key: &DataKey,
    rows: &[(&ResponseRecord, Option<&str>)],
) -> Result<(), Error> {
    for chunk in rows.chunks(params_per_statement(s.backend()) / RESPONSE_INSERT_COLUMNS) {
        push_response_rows(s, key, chunk, "")?;
    }
    push_scores(s, rows.iter().map(|(r, _)| *r))
}

/// A response, or None.
pub async fn get_response(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    survey_id: &str,
    id: &str,
) -> Result<Option<ResponseRecord>, Error> {
    let sql = format!(
        "SELECT {RESPONSE_COLUMNS} FROM responses WHERE agency = $1 AND survey_id = $2 AND id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(survey_id)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| response_from_row(key, &r)).transpose()
}

/// One page of responses of one survey, or of every survey (None).
pub async fn list_responses(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    survey_id: Option<&str>,
    query: &ListQuery,
) -> Result<(Vec<ResponseRecord>, String), Error> {
    // Two statements rather than `($2 = '' OR survey_id = $2)`: a plan made
    // for both cases uses no index for either (a cached generic plan on
    // PostgreSQL), and a list across surveys then sorts all of an agency's
    // responses for every page.
    let survey = match survey_id {
        Some(_) => "survey_id = $2",
        None => "$2 = ''",
    };
    let sql = format!(
        "SELECT {RESPONSE_COLUMNS} FROM responses WHERE agency = $1 AND {survey} \
         AND ({}) ORDER BY {} LIMIT {}",
        query.where_sql(),
        query.order_sql(),
        query.fetch_limit()
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(survey_id.unwrap_or("").to_string());
    for p in query.params() {
        q = list_bind(q, p);
    }
    let mut rows = q.fetch_all(tx.conn()).await?;
    let next = query.finish(&mut rows)?;
    let records = rows
        .iter()
        .map(|r| response_from_row(key, r))
        .collect::<Result<_, _>>()?;
    Ok((records, next))
}

/// What erasing a client changed: the responses that named them, and the
/// follow-ups that were still open and are now closed with no action.
#[derive(Debug, Default)]
pub struct Erased {
    /// Names of the responses touched.
    pub responses: Vec<String>,
    /// The follow-ups closed, as they are after closing.
    pub closed: Vec<FollowUpRecord>,
}

/// Removes what ties a client's responses to them: the comments as written
/// are dropped (the masked analysis copy and the scores stay, so statistics
/// stay whole), and their open follow-ups close as NO_ACTION at `now`.
pub async fn erase_client(
    tx: &mut Tx,
    agency: &str,
    client_id: &str,
    now: i64,
) -> Result<Erased, Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT survey_id, id FROM responses WHERE agency = $1 AND client_id = $2")
            .bind(agency)
            .bind(client_id)
            .fetch_all(tx.conn())
            .await?;
    sqlx::query(
        "UPDATE responses SET originals = NULL, erased = TRUE WHERE agency = $1 AND client_id = $2",
    )
    .bind(agency)
    .bind(client_id)
    .execute(tx.conn())
    .await?;
    // An open follow-up can no longer be worked: nobody may contact the
    // client. Read first, so that the caller can announce each close.
    let open = format!(
        "SELECT {FOLLOW_UP_COLUMNS} FROM follow_ups WHERE agency = $1 AND client_id = $2 \
         AND status IN (1, 2) ORDER BY id"
    );
    let mut closed = sqlx::query(sqlx::AssertSqlSafe(open))
        .bind(agency)
        .bind(client_id)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(follow_up_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(
        "UPDATE follow_ups SET status = 4, close_time = COALESCE(close_time, $1), update_time = $1, \
         revision = revision + 1 WHERE agency = $2 AND client_id = $3 AND status IN (1, 2)",
    )
    .bind(now)
    .bind(agency)
    .bind(client_id)
    .execute(tx.conn())
    .await?;
    for f in &mut closed {
        f.status = crate::domain::FollowUpStatus::NoAction as i32;
        f.close_time = Some(f.close_time.unwrap_or(now));
        f.update_time = now;
        f.revision += 1;
    }
    Ok(Erased {
        responses: rows
            .into_iter()
            .map(|(survey, id)| response_name(agency, &survey, &id))
            .collect(),
        closed,
    })
}

/// An outbox event of a batch: the resource it is about and its payload.
#[derive(Debug, Clone)]
pub struct BatchEvent {
    name: String,
    pending: outbox::Pending,
}

impl BatchEvent {
    /// An event about `name`.
    pub fn new<M: prost::Name>(name: &str, payload: &M) -> Self {
        Self {
            name: name.to_string(),
            pending: outbox::Pending::new(payload),
        }
    }
}

/// A batch's events as (name, payload) pairs.
pub fn event_refs(events: &[BatchEvent]) -> Vec<(&str, &outbox::Pending)> {
    events
        .iter()
        .map(|e| (e.name.as_str(), &e.pending))
        .collect()
}

/// Appends a batch's events, in as few statements as possible.
pub async fn append_events(tx: &mut Tx, agency: &str, events: &[BatchEvent]) -> Result<(), Error> {
    let events: Vec<(&str, &outbox::Pending)> = events
        .iter()
        .map(|e| (e.name.as_str(), &e.pending))
        .collect();
    outbox::append_all(tx, agency, &events).await?;
    Ok(())
}

// ---------------------------------------------------------------- volumes

/// Inserts a volume record.
pub async fn insert_volume(
    tx: &mut Tx,
    agency: &str,
    survey_id: &str,
    id: &str,
    v: &VolumeInput,
    now: i64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO volumes (agency, id, survey_id, start_date, end_date, customers_served, \
         customers_offered, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(agency)
    .bind(id)
    .bind(survey_id)
    .bind(v.start)
    .bind(v.end)
    .bind(v.served)
    .bind(v.offered)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

// ------------------------------------------------------------- follow-ups

/// A stored follow-up.
#[derive(Debug, Clone)]
pub struct FollowUpRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Survey id.
    pub survey_id: String,
    /// Response id.
    pub response_id: String,
    /// Client id.
    pub client_id: String,
    /// Which rule.
    pub reason: String,
    /// `FollowUpStatus`.
    pub status: i32,
    /// Assignee.
    pub assignee: String,
    /// yyyymmdd.
    pub due_date: i64,
    /// Unit.
    pub unit: String,
    /// `Channel`.
    pub channel: i32,
    /// Created.
    pub create_time: i64,
    /// Changed.
    pub update_time: i64,
    /// Closed.
    pub close_time: Option<i64>,
    /// Version.
    pub revision: i64,
}

impl FollowUpRecord {
    /// The resource name.
    pub fn name(&self) -> String {
        format!("agencies/{}/followUps/{}", self.agency, self.id)
    }
}

const FOLLOW_UP_COLUMNS: &str = "agency, id, survey_id, response_id, client_id, reason, status, \
    assignee, due_date, unit, channel, create_time, update_time, close_time, revision";

fn follow_up_from_row(row: &AnyRow) -> Result<FollowUpRecord, Error> {
    Ok(FollowUpRecord {
        agency: row.try_get("agency")?,
        id: row.try_get("id")?,
        survey_id: row.try_get("survey_id")?,
        response_id: row.try_get("response_id")?,
        client_id: row.try_get("client_id")?,
        reason: row.try_get("reason")?,
        status: row.try_get::<i64, _>("status")? as i32,
        assignee: row.try_get("assignee")?,
        due_date: row.try_get("due_date")?,
        unit: row.try_get("unit")?,
        channel: row.try_get::<i64, _>("channel")? as i32,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        close_time: row.try_get("close_time")?,
        revision: row.try_get("revision")?,
    })
}

/// Inserts a follow-up.
pub async fn insert_follow_up(tx: &mut Tx, f: &FollowUpRecord) -> Result<(), Error> {
    let mut s = Statements::new(tx.backend());
    push_follow_up(&mut s, f)?;
    s.execute(tx).await?;
    Ok(())
}

/// Adds the insert of a new follow-up to `s`.
pub fn push_follow_up(s: &mut Statements, f: &FollowUpRecord) -> Result<(), Error> {
    let sql = format!(
        "INSERT INTO follow_ups (agency, id, survey_id, response_id, client_id, reason, status, \
         assignee, due_date, unit, channel, create_time, update_time, close_time, revision) \
         VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, NULL, 1)",
        s.value(f.agency.clone())?,
        s.value(f.id.clone())?,
        s.value(f.survey_id.clone())?,
        s.value(f.response_id.clone())?,
        s.value(f.client_id.clone())?,
        s.value(f.reason.clone())?,
        s.value(i64::from(f.status))?,
        s.value(f.assignee.clone())?,
        s.value(f.due_date)?,
        s.value(f.unit.clone())?,
        s.value(i64::from(f.channel))?,
        s.value(f.create_time)?,
        s.value(f.create_time)?,
    );
    s.push(sql);
    Ok(())
}

/// An agency's follow-ups still to work (open or contacted), and those of
/// them due before `as_of` (yyyymmdd): one statement over the index on
/// (agency, status, due_date).
pub async fn count_open_follow_ups(
    tx: &mut Tx,
    agency: &str,
    as_of: i64,
) -> Result<(i64, i64), Error> {
    use crate::domain::FollowUpStatus as S;
    let (open, overdue): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN due_date < $2 THEN 1 ELSE 0 END), 0) \
         FROM follow_ups WHERE agency = $1 AND status IN ($3, $4)",
    )
    .bind(agency)
    .bind(as_of)
    .bind(i64::from(S::Open as i32))
    .bind(i64::from(S::Contacted as i32))
    .fetch_one(tx.conn())
    .await?;
    Ok((open, overdue))
}

/// A follow-up, or None; `lock` holds its row until commit (PostgreSQL).
pub async fn get_follow_up(
    tx: &mut Tx,
    agency: &str,
    id: &str,
    lock: bool,
) -> Result<Option<FollowUpRecord>, Error> {
    let lock = if lock { lock_clause(tx) } else { "" };
    let sql =
        format!("SELECT {FOLLOW_UP_COLUMNS} FROM follow_ups WHERE agency = $1 AND id = $2{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| follow_up_from_row(&r)).transpose()
}

/// Writes a follow-up's status, assignee, due date and times if its
/// revision is unchanged.
pub async fn update_follow_up(tx: &mut Tx, f: &FollowUpRecord) -> Result<bool, Error> {
    let n = sqlx::query(
        "UPDATE follow_ups SET status = $1, assignee = $2, due_date = $3, update_time = $4, \
         close_time = $5, revision = revision + 1 WHERE agency = $6 AND id = $7 AND revision = $8",
    )
    .bind(i64::from(f.status))
    .bind(f.assignee.as_str())
    .bind(f.due_date)
    .bind(f.update_time)
    .bind(f.close_time)
    .bind(f.agency.as_str())
    .bind(f.id.as_str())
    .bind(f.revision)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// One page of follow-ups.
pub async fn list_follow_ups(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<FollowUpRecord>, String), Error> {
    let (rows, next) =
        touchstone_platform::list_page(tx, FOLLOW_UP_COLUMNS, "follow_ups", agency, query).await?;
    let records = rows
        .iter()
        .map(follow_up_from_row)
        .collect::<Result<_, _>>()?;
    Ok((records, next))
}

// -----------------------------------------------------------------

/// What the A-11 files of one quarter are made of, read in one transaction.
#[derive(Debug, Default)]
pub struct A11Data {
    /// Surveys with a response or a volume in the quarter.
    pub surveys: Vec<SurveyRecord>,
    /// (survey id, item, score, answers).
    pub counts: Vec<(String, i32, i32, i64)>,
    /// (survey id, responses).
    pub respondents: Vec<(String, i64)>,
    /// (survey id, customers served, customers offered).
    pub volumes: Vec<(String, i64, i64)>,
    /// (external id: the transaction id, else the response id; survey id;
    /// answers), by submit time then id.
    pub responses: Vec<(String, String, Vec<StoredAnswer>)>,
}

/// The A-11 data of responses submitted between two times (millis, start
/// inclusive, end exclusive) and volumes whose period starts between two
/// days (yyyymmdd, inclusive).
pub async fn a11_data(
    tx: &mut Tx,
    agency: &str,
    (from, until): (i64, i64),
    (first_day, last_day): (i64, i64),
) -> Result<A11Data, Error> {
    let surveys = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SURVEY_COLUMNS} FROM surveys WHERE agency = $1 AND (\
         id IN (SELECT survey_id FROM responses WHERE agency = $1 AND submit_time >= $2 \
         AND submit_time < $3) OR id IN (SELECT survey_id FROM volumes WHERE agency = $1 \
         AND start_date >= $4 AND start_date <= $5)) ORDER BY id"
    )))
    .bind(agency)
    .bind(from)
    .bind(until)
    .bind(first_day)
    .bind(last_day)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(survey_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let counts = sqlx::query(
        "SELECT survey_id, item, score, COUNT(*) AS n FROM response_scores \
         WHERE agency = $1 AND submit_time >= $2 AND submit_time < $3 \
         GROUP BY survey_id, item, score",
    )
    .bind(agency)
    .bind(from)
    .bind(until)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get("survey_id")?,
            row.try_get::<i64, _>("item")? as i32,
            row.try_get::<i64, _>("score")? as i32,
            row.try_get::<i64, _>("n")?,
        ))
    })
    .collect::<Result<Vec<_>, Error>>()?;
    let volumes = sqlx::query(
        "SELECT survey_id, CAST(SUM(customers_served) AS BIGINT) AS served, \
         CAST(SUM(customers_offered) AS BIGINT) AS offered FROM volumes \
         WHERE agency = $1 AND start_date >= $2 AND start_date <= $3 GROUP BY survey_id",
    )
    .bind(agency)
    .bind(first_day)
    .bind(last_day)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(|row| {
        Ok((
            row.try_get("survey_id")?,
            row.try_get::<i64, _>("served")?,
            row.try_get::<i64, _>("offered")?,
        ))
    })
    .collect::<Result<Vec<_>, Error>>()?;
    let responses = sqlx::query(
        "SELECT id, transaction_id, survey_id, answers FROM responses \
         WHERE agency = $1 AND submit_time >= $2 AND submit_time < $3 ORDER BY submit_time, id",
    )
    .bind(agency)
    .bind(from)
    .bind(until)
    .fetch_all(tx.conn())
    .await?
    .iter()
    .map(|row| {
        let answers: String = row.try_get("answers")?;
        let answers: Vec<StoredAnswer> =
            serde_json::from_str(&answers).map_err(|_| Error::Corrupt("response answers"))?;
        let transaction: Option<String> = row.try_get("transaction_id")?;
        let external = match transaction {
            Some(t) if !t.is_empty() => t,
            _ => row.try_get("id")?,
        };
        Ok((external, row.try_get::<String, _>("survey_id")?, answers))
    })
    .collect::<Result<Vec<_>, Error>>()?;
    let mut respondents: BTreeMap<String, i64> = BTreeMap::new();
    for (_, survey, _) in &responses {
        *respondents.entry(survey.clone()).or_default() += 1;
    }
    Ok(A11Data {
        surveys,
        counts,
        respondents: respondents.into_iter().collect(),
        volumes,
        responses,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_valid() {
        for s in [&SURVEY_SCHEMA, &RESPONSE_SCHEMA, &FOLLOW_UP_SCHEMA] {
            s.validate().expect("valid schema");
        }
    }

    #[test]
    fn characteristics_round_trip() {
        let c = Characteristics {
            age_band: 3,
            gender: 1,
            disability: 2,
            first_nations: 0,
            culturally_linguistically_diverse: 1,
            remote_location: 3,
        };
        assert_eq!(
            characteristics_from_json(&characteristics_json(&c)).ok(),
            Some(c)
        );
    }
}
