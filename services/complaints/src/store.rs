//! The complaints service's SQL, all of it, for SQLite and PostgreSQL alike.
//! Personal data (the complainant's contact details, narratives, notes and
//! contact summaries) is sealed and opened here, at the edge of the database.

use crate::domain::{CalendarFields, Command, Standard, State, Status};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use touchstone_crypto::DataKey;
use touchstone_list::{Field, FieldType, ListQuery, Schema};
use touchstone_platform::db::{Backend, Tx};
use touchstone_platform::keycheck::SealedColumn;
use touchstone_platform::{CHANNELS, list_field as field};
use touchstone_platform::{list_bind, row_bool};

const STATUSES: &[(&str, i64)] = &[
    ("RECEIVED", 1),
    ("ACKNOWLEDGED", 2),
    ("IN_PROGRESS", 3),
    ("AWAITING_CLIENT", 4),
    ("RESOLVED", 5),
    ("CLOSED", 6),
    ("WITHDRAWN", 7),
    ("REOPENED", 8),
];
const STAGES: &[(&str, i64)] = &[
    ("FRONTLINE", 1),
    ("INVESTIGATION", 2),
    ("INTERNAL_REVIEW", 3),
    ("EXTERNAL_REVIEW", 4),
];
const SEVERITIES: &[(&str, i64)] = &[("LOW", 1), ("MEDIUM", 2), ("HIGH", 3), ("SERIOUS", 4)];
const ISSUE_STATES: &[(&str, i64)] = &[("OPEN", 1), ("ACTIONED", 2), ("CLOSED", 3)];

/// Complaint fields that `ListComplaints` filters and orders on.
pub static COMPLAINT_SCHEMA: Schema = Schema {
    fields: &[
        field("status", "status", FieldType::Enum(STATUSES), true),
        field("stage", "stage", FieldType::Enum(STAGES), true),
        field("severity", "severity", FieldType::Enum(SEVERITIES), true),
        field("channel", "channel", FieldType::Enum(CHANNELS), false),
        field("officer", "officer", FieldType::Text, true),
        field("unit", "unit", FieldType::Text, true),
        field("category", "category", FieldType::Text, true),
        field("service", "service", FieldType::Text, false),
        field("client_id", "client_id", FieldType::Text, false),
        field("senior_queue", "senior_queue", FieldType::Bool, false),
        field("receive_time", "receive_time", FieldType::Timestamp, true),
        // Never NULL: the largest BIGINT when nothing is pending (see
        // DueColumns), so ordering by it can walk an index; filters treat
        // that value as no due time, as GetComplaint shows it.
        field("due_time", "due_time", FieldType::TimestampOrNever, true),
        Field {
            name: "overdue",
            column: "overdue_from",
            ty: FieldType::Passed,
            sortable: false,
            nullable: true,
        },
        field("update_time", "update_time", FieldType::Timestamp, true),
    ],
    id_column: "id",
    default_order: "receive_time desc",
};

/// Issue fields that `ListIssues` filters and orders on.
pub static ISSUE_SCHEMA: Schema = Schema {
    fields: &[
        field("state", "state", FieldType::Enum(ISSUE_STATES), true),
        field("owner", "owner", FieldType::Text, true),
        field("create_time", "create_time", FieldType::Timestamp, true),
        field("update_time", "update_time", FieldType::Timestamp, true),
    ],
    id_column: "id",
    default_order: "create_time desc",
};

/// Calendars list in id order.
pub static CALENDAR_SCHEMA: Schema = Schema {
    fields: &[field(
        "create_time",
        "create_time",
        FieldType::Timestamp,
        true,
    )],
    id_column: "id",
    default_order: "create_time",
};

/// The complainant's contact details, when given with the complaint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDetails {
    /// Name.
    pub display_name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: String,
}

/// A complaint's personal data: sealed as one document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Personal {
    /// Contact details given with the complaint.
    pub contact: Option<ContactDetails>,
    /// The narrative.
    pub description: String,
    /// Remedy sought.
    pub remedy_sought: String,
    /// Summary of the response.
    pub resolution_summary: String,
}

/// Needs copied from the register at intake (not sealed: they are filtered
/// and shown like the register's own non-identifying fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Needs {
    /// Accessibility needs (register enum numbers).
    pub needs: Vec<i32>,
    /// Interpreter needed.
    pub interpreter_needed: bool,
    /// Preferred language.
    pub preferred_language: String,
    /// Preferred channel (common enum number).
    pub preferred_channel: i32,
}

/// A stored complaint.
#[derive(Debug, Clone, PartialEq)]
pub struct ComplaintRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Register client id, or empty.
    pub client_id: String,
    /// ClientCheck (proto number).
    pub client_check: i32,
    /// Anonymous.
    pub anonymous: bool,
    /// Channel (proto number).
    pub channel: i32,
    /// Service complained about.
    pub service: String,
    /// Needs copied at intake.
    pub needs: Needs,
    /// State (what the history replays to).
    pub state: State,
    /// Personal data; None once redacted.
    pub personal: Option<Personal>,
    /// Redacted after the client's erasure.
    pub redacted: bool,
    /// Revision (etag).
    pub revision: i64,
    /// Created.
    pub create_time: i64,
    /// Last changed.
    pub update_time: i64,
}

impl ComplaintRecord {
    /// Resource name.
    pub fn name(&self) -> String {
        format!("agencies/{}/complaints/{}", self.agency, self.id)
    }
}

/// Instants the list filters use, computed from the clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct DueColumns {
    /// Nearest pending due time.
    pub due_time: Option<i64>,
    /// When the pending clock becomes overdue.
    pub overdue_from: Option<i64>,
}

impl DueColumns {
    /// The due time as stored: nothing pending is "due never", the largest
    /// BIGINT, which sorts last and matches no `due_time` comparison.
    pub fn stored_due_time(&self) -> i64 {
        self.due_time.unwrap_or(i64::MAX)
    }
}

/// The sealed columns, with their associated data as SQL (the same text as
/// [`aad`]), for the start-up key check.
pub const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "complaints",
        column: "personal",
        aad: "'complaints/' || agency || '/' || id || '/personal'",
    },
    SealedColumn {
        table: "complaint_history",
        column: "note",
        aad: "'complaints/' || agency || '/' || complaint_id || '/history/' || sequence",
    },
    SealedColumn {
        table: "complaint_contacts",
        column: "summary",
        aad: "'complaints/' || agency || '/' || complaint_id || '/contacts/' || id",
    },
];

fn aad(agency: &str, id: &str, what: &str) -> String {
    format!("complaints/{agency}/{id}/{what}")
}

fn seal_json<T: Serialize>(key: &DataKey, aad: &str, value: &T) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(value).map_err(|_| Error::Corrupt("personal data"))?;
    Ok(key.seal(aad.as_bytes(), &bytes))
}

fn open_json<T: for<'de> Deserialize<'de>>(
    key: &DataKey,
    aad: &str,
    sealed: &[u8],
) -> Result<T, Error> {
    let bytes = key
        .open(aad.as_bytes(), sealed)
        .map_err(|_| Error::Corrupt("personal data"))?;
    serde_json::from_slice(&bytes).map_err(|_| Error::Corrupt("personal data"))
}

fn open_text(key: &DataKey, aad: &str, sealed: Option<Vec<u8>>) -> Result<String, Error> {
    match sealed {
        None => Ok(String::new()),
        Some(s) => {
            let bytes = key
                .open(aad.as_bytes(), &s)
                .map_err(|_| Error::Corrupt("note"))?;
            String::from_utf8(bytes).map_err(|_| Error::Corrupt("note"))
        }
    }
}

const COMPLAINT_COLUMNS: &str = "agency, id, client_id, client_check, anonymous, channel, service, \
    accessibility, state, personal, redacted, revision, create_time, update_time";

/// A complaint from its row; its sealed personal document is opened only
/// when `key` is given (a basic read leaves it shut, `personal` None).
fn complaint_from_row(key: Option<&DataKey>, row: &AnyRow) -> Result<ComplaintRecord, Error> {
    let agency: String = row.try_get("agency")?;
    let id: String = row.try_get("id")?;
    let state: String = row.try_get("state")?;
    let needs: String = row.try_get("accessibility")?;
    let personal = match key {
        Some(key) => match row.try_get::<Option<Vec<u8>>, _>("personal")? {
            Some(s) => Some(open_json(key, &aad(&agency, &id, "personal"), &s)?),
            None => None,
        },
        None => None,
    };
    Ok(ComplaintRecord {
        client_id: row.try_get("client_id")?,
        client_check: row.try_get::<i64, _>("client_check")? as i32,
        anonymous: row_bool(row, "anonymous")?,
        channel: row.try_get::<i64, _>("channel")? as i32,
        service: row.try_get("service")?,
        needs: serde_json::from_str(&needs).map_err(|_| Error::Corrupt("needs"))?,
        state: serde_json::from_str(&state).map_err(|_| Error::Corrupt("state"))?,
        personal,
        redacted: row_bool(row, "redacted")?,
        revision: row.try_get("revision")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        agency,
        id,
    })
}

fn state_json(state: &State) -> Result<String, Error> {
    serde_json::to_string(state).map_err(|_| Error::Corrupt("state"))
}

/// Inserts a new complaint. A clash on a caller-chosen id is ALREADY_EXISTS.
pub async fn insert_complaint(
    tx: &mut Tx,
    key: &DataKey,
    r: &ComplaintRecord,
    due: DueColumns,
) -> Result<(), Error> {
    let personal = match &r.personal {
        Some(p) => Some(seal_json(key, &aad(&r.agency, &r.id, "personal"), p)?),
        None => None,
    };
    let s = &r.state;
    let result = sqlx::query(
        "INSERT INTO complaints (agency, id, client_id, client_check, anonymous, channel, service, \
         category, unit, officer, severity, status, stage, senior_queue, receive_time, due_time, \
         overdue_from, accessibility, state, personal, redacted, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
         $19, $20, $21, $22, $23, $24)",
    )
    .bind(&r.agency)
    .bind(&r.id)
    .bind(&r.client_id)
    .bind(i64::from(r.client_check))
    .bind(r.anonymous)
    .bind(i64::from(r.channel))
    .bind(&r.service)
    .bind(&s.category)
    .bind(&s.unit)
    .bind(&s.officer)
    .bind(i64::from(s.severity))
    .bind(s.status.proto() as i64)
    .bind(s.stage.proto() as i64)
    .bind(s.senior_queue)
    .bind(s.receive_time)
    .bind(due.stored_due_time())
    .bind(due.overdue_from)
    .bind(serde_json::to_string(&r.needs).map_err(|_| Error::Corrupt("needs"))?)
    .bind(state_json(s)?)
    .bind(personal)
    .bind(r.redacted)
    .bind(r.revision)
    .bind(r.create_time)
    .bind(r.update_time)
    .execute(tx.conn())
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if Error::is_unique_violation(&e) => Err(Error::AlreadyExists("complaint")),
        Err(e) => Err(e.into()),
    }
}

/// Writes a complaint's changed state, narratives and due columns, if its
/// revision is still `r.revision - 1`.
pub async fn update_complaint(
    tx: &mut Tx,
    key: &DataKey,
    r: &ComplaintRecord,
    due: DueColumns,
) -> Result<bool, Error> {
    let personal = match &r.personal {
        Some(p) => Some(seal_json(key, &aad(&r.agency, &r.id, "personal"), p)?),
        None => None,
    };
    let s = &r.state;
    let n = sqlx::query(
        "UPDATE complaints SET client_id = $1, client_check = $2, channel = $3, service = $4, \
         category = $5, unit = $6, officer = $7, severity = $8, status = $9, stage = $10, \
         senior_queue = $11, due_time = $12, overdue_from = $13, accessibility = $14, state = $15, \
         personal = $16, redacted = $17, revision = $18, update_time = $19 \
         WHERE agency = $20 AND id = $21 AND revision = $22",
    )
    .bind(&r.client_id)
    .bind(i64::from(r.client_check))
    .bind(i64::from(r.channel))
    .bind(&r.service)
    .bind(&s.category)
    .bind(&s.unit)
    .bind(&s.officer)
    .bind(i64::from(s.severity))
    .bind(s.status.proto() as i64)
    .bind(s.stage.proto() as i64)
    .bind(s.senior_queue)
    .bind(due.stored_due_time())
    .bind(due.overdue_from)
    .bind(serde_json::to_string(&r.needs).map_err(|_| Error::Corrupt("needs"))?)
    .bind(state_json(s)?)
    .bind(personal)
    .bind(r.redacted)
    .bind(r.revision)
    .bind(r.update_time)
    .bind(&r.agency)
    .bind(&r.id)
    .bind(r.revision - 1)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Loads a complaint.
pub async fn get_complaint(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<Option<ComplaintRecord>, Error> {
    select_complaint(tx, key, agency, id, "").await
}

/// Loads a complaint and locks its row until commit (PostgreSQL; SQLite has
/// one writer), so that concurrent changes queue instead of clashing.
pub async fn lock_complaint(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<Option<ComplaintRecord>, Error> {
    let lock = if tx.backend() == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    select_complaint(tx, key, agency, id, lock).await
}

async fn select_complaint(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
    lock: &str,
) -> Result<Option<ComplaintRecord>, Error> {
    let sql =
        format!("SELECT {COMPLAINT_COLUMNS} FROM complaints WHERE agency = $1 AND id = $2{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| complaint_from_row(Some(key), &r)).transpose()
}

/// Whether a complaint exists (for links).
pub async fn complaint_exists(tx: &mut Tx, agency: &str, id: &str) -> Result<bool, Error> {
    let n: Option<i64> =
        sqlx::query_scalar("SELECT revision FROM complaints WHERE agency = $1 AND id = $2")
            .bind(agency)
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    Ok(n.is_some())
}

/// One page of complaints. `officer`, when given, keeps the caller's queue.
/// One page of complaints; `key` None reads them without opening their
/// personal documents (the basic view).
pub async fn list_complaints(
    tx: &mut Tx,
    key: Option<&DataKey>,
    agency: &str,
    officer: Option<&str>,
    query: &ListQuery,
) -> Result<(Vec<ComplaintRecord>, String), Error> {
    // The query was planned with its placeholders after these.
    let officer_sql = if officer.is_some() {
        " AND officer = $2"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {COMPLAINT_COLUMNS}, receive_time, due_time, status, stage, severity, officer, unit, \
         category FROM complaints WHERE agency = $1{officer_sql} AND ({}) ORDER BY {} LIMIT {}",
        query.where_sql(),
        query.order_sql(),
        query.fetch_limit()
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    if let Some(o) = officer {
        q = q.bind(o);
    }
    for p in query.params() {
        q = list_bind(q, p);
    }
    let mut rows = q.fetch_all(tx.conn()).await?;
    let next = query.finish(&mut rows)?;
    let records = rows
        .iter()
        .map(|r| complaint_from_row(key, r))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((records, next))
}

/// One stored history entry.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRow {
    /// Position, from 1.
    pub sequence: i64,
    /// Actor.
    pub actor: String,
    /// When.
    pub time: i64,
    /// What.
    pub command: Command,
    /// Status before.
    pub from_status: i32,
    /// Status after.
    pub to_status: i32,
    /// Stage before.
    pub from_stage: i32,
    /// Stage after.
    pub to_stage: i32,
    /// Note (opened), or empty.
    pub note: String,
}

/// Appends one history entry.
pub async fn append_history(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    complaint: &str,
    entry: &HistoryRow,
) -> Result<(), Error> {
    let note = (!entry.note.is_empty()).then(|| {
        key.seal(
            aad(agency, complaint, &format!("history/{}", entry.sequence)).as_bytes(),
            entry.note.as_bytes(),
        )
    });
    let command = serde_json::to_string(&entry.command).map_err(|_| Error::Corrupt("history"))?;
    sqlx::query(
        "INSERT INTO complaint_history (agency, complaint_id, sequence, action, actor, time, \
         command, from_status, to_status, from_stage, to_stage, note) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(agency)
    .bind(complaint)
    .bind(entry.sequence)
    .bind(entry.command.action())
    .bind(&entry.actor)
    .bind(entry.time)
    .bind(command)
    .bind(i64::from(entry.from_status))
    .bind(i64::from(entry.to_status))
    .bind(i64::from(entry.from_stage))
    .bind(i64::from(entry.to_stage))
    .bind(note)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The number of history entries of a complaint.
pub async fn history_len(tx: &mut Tx, agency: &str, complaint: &str) -> Result<i64, Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM complaint_history WHERE agency = $1 AND complaint_id = $2",
    )
    .bind(agency)
    .bind(complaint)
    .fetch_one(tx.conn())
    .await?;
    Ok(n)
}

/// A complaint's history, oldest first.
pub async fn history(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    complaint: &str,
) -> Result<Vec<HistoryRow>, Error> {
    let rows = sqlx::query(
        "SELECT sequence, actor, time, command, from_status, to_status, from_stage, to_stage, note \
         FROM complaint_history WHERE agency = $1 AND complaint_id = $2 ORDER BY sequence",
    )
    .bind(agency)
    .bind(complaint)
    .fetch_all(tx.conn())
    .await?;
    rows.iter()
        .map(|r| {
            let sequence: i64 = r.try_get("sequence")?;
            let command: String = r.try_get("command")?;
            Ok(HistoryRow {
                sequence,
                actor: r.try_get("actor")?,
                time: r.try_get("time")?,
                command: serde_json::from_str(&command).map_err(|_| Error::Corrupt("history"))?,
                from_status: r.try_get::<i64, _>("from_status")? as i32,
                to_status: r.try_get::<i64, _>("to_status")? as i32,
                from_stage: r.try_get::<i64, _>("from_stage")? as i32,
                to_stage: r.try_get::<i64, _>("to_stage")? as i32,
                note: open_text(
                    key,
                    &aad(agency, complaint, &format!("history/{sequence}")),
                    r.try_get("note")?,
                )?,
            })
        })
        .collect()
}

/// A stored contact-log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactRow {
    /// Id.
    pub id: String,
    /// Channel.
    pub channel: i32,
    /// Direction.
    pub direction: i32,
    /// When.
    pub contact_time: i64,
    /// Summary (opened), empty once redacted.
    pub summary: String,
    /// Officer.
    pub officer: String,
    /// Recorded.
    pub create_time: i64,
}

/// Records a contact.
pub async fn insert_contact(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    complaint: &str,
    c: &ContactRow,
) -> Result<(), Error> {
    let summary = key.seal(
        aad(agency, complaint, &format!("contacts/{}", c.id)).as_bytes(),
        c.summary.as_bytes(),
    );
    let result = sqlx::query(
        "INSERT INTO complaint_contacts (agency, complaint_id, id, channel, direction, contact_time, \
         summary, officer, create_time) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(agency)
    .bind(complaint)
    .bind(&c.id)
    .bind(i64::from(c.channel))
    .bind(i64::from(c.direction))
    .bind(c.contact_time)
    .bind(summary)
    .bind(&c.officer)
    .bind(c.create_time)
    .execute(tx.conn())
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if Error::is_unique_violation(&e) => Err(Error::AlreadyExists("contact")),
        Err(e) => Err(e.into()),
    }
}

/// A complaint's contact log, oldest first.
pub async fn contacts(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    complaint: &str,
) -> Result<Vec<ContactRow>, Error> {
    let rows = sqlx::query(
        "SELECT id, channel, direction, contact_time, summary, officer, create_time \
         FROM complaint_contacts WHERE agency = $1 AND complaint_id = $2 \
         ORDER BY contact_time, id",
    )
    .bind(agency)
    .bind(complaint)
    .fetch_all(tx.conn())
    .await?;
    rows.iter()
        .map(|r| {
            let id: String = r.try_get("id")?;
            Ok(ContactRow {
                summary: open_text(
                    key,
                    &aad(agency, complaint, &format!("contacts/{id}")),
                    r.try_get("summary")?,
                )?,
                channel: r.try_get::<i64, _>("channel")? as i32,
                direction: r.try_get::<i64, _>("direction")? as i32,
                contact_time: r.try_get("contact_time")?,
                officer: r.try_get("officer")?,
                create_time: r.try_get("create_time")?,
                id,
            })
        })
        .collect()
}

/// Removes the personal data of every complaint made by `client_id` (after
/// the register erased the client): contact details, narratives, notes and
/// contact summaries. The cases stay for statistics. Returns their ids.
pub async fn redact_client(
    tx: &mut Tx,
    agency: &str,
    client_id: &str,
    now: i64,
) -> Result<Vec<String>, Error> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM complaints WHERE agency = $1 AND client_id = $2 ORDER BY id",
    )
    .bind(agency)
    .bind(client_id)
    .fetch_all(tx.conn())
    .await?;
    for id in &ids {
        sqlx::query(
            "UPDATE complaints SET personal = NULL, redacted = $1, revision = revision + 1, \
             update_time = $2 WHERE agency = $3 AND id = $4",
        )
        .bind(true)
        .bind(now)
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
        sqlx::query(
            "UPDATE complaint_history SET note = NULL WHERE agency = $1 AND complaint_id = $2",
        )
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
        sqlx::query(
            "UPDATE complaint_contacts SET summary = NULL WHERE agency = $1 AND complaint_id = $2",
        )
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    }
    Ok(ids)
}

/// Complaints whose client reference awaits a check, across agencies
/// (agency, id, client id), oldest first.
pub async fn pending_checks(
    tx: &mut Tx,
    limit: i64,
) -> Result<Vec<(String, String, String)>, Error> {
    Ok(sqlx::query_as(
        "SELECT agency, id, client_id FROM complaints WHERE client_check = 2 \
         ORDER BY create_time LIMIT $1",
    )
    .bind(limit)
    .fetch_all(tx.conn())
    .await?)
}

/// Records the answer to a pending client check (and the needs it copied);
/// false when the complaint is gone or no longer pending.
pub async fn settle_client_check(
    tx: &mut Tx,
    agency: &str,
    id: &str,
    check: i32,
    needs: &Needs,
    now: i64,
) -> Result<bool, Error> {
    let n = sqlx::query(
        "UPDATE complaints SET client_check = $1, accessibility = $2, revision = revision + 1, \
         update_time = $3 WHERE agency = $4 AND id = $5 AND client_check = 2",
    )
    .bind(i64::from(check))
    .bind(serde_json::to_string(needs).map_err(|_| Error::Corrupt("needs"))?)
    .bind(now)
    .bind(agency)
    .bind(id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Open complaints of an agency (for recomputing due columns after the
/// calendar or standard changed).
pub async fn open_complaints(tx: &mut Tx, agency: &str) -> Result<Vec<(String, State)>, Error> {
    let open: Vec<i64> = Status::ALL
        .iter()
        .filter(|s| s.is_open())
        .map(|s| s.proto() as i64)
        .collect();
    let list = open
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!("SELECT id, state FROM complaints WHERE agency = $1 AND status IN ({list})");
    let rows: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .fetch_all(tx.conn())
        .await?;
    rows.into_iter()
        .map(|(id, s)| {
            Ok((
                id,
                serde_json::from_str(&s).map_err(|_| Error::Corrupt("state"))?,
            ))
        })
        .collect()
}

/// Sets the due columns of one complaint.
pub async fn set_due(tx: &mut Tx, agency: &str, id: &str, due: DueColumns) -> Result<(), Error> {
    sqlx::query(
        "UPDATE complaints SET due_time = $1, overdue_from = $2 WHERE agency = $3 AND id = $4",
    )
    .bind(due.stored_due_time())
    .bind(due.overdue_from)
    .bind(agency)
    .bind(id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A stored calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalendarRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Fields.
    pub fields: CalendarFields,
    /// Revision.
    pub revision: i64,
    /// Created.
    pub create_time: i64,
    /// Changed.
    pub update_time: i64,
}

impl CalendarRecord {
    /// Resource name.
    pub fn name(&self) -> String {
        format!("agencies/{}/calendars/{}", self.agency, self.id)
    }
}

fn calendar_from_row(r: &AnyRow) -> Result<CalendarRecord, Error> {
    let fields: String = r.try_get("fields")?;
    Ok(CalendarRecord {
        agency: r.try_get("agency")?,
        id: r.try_get("id")?,
        fields: serde_json::from_str(&fields).map_err(|_| Error::Corrupt("calendar"))?,
        revision: r.try_get("revision")?,
        create_time: r.try_get("create_time")?,
        update_time: r.try_get("update_time")?,
    })
}

/// Inserts a calendar.
pub async fn insert_calendar(tx: &mut Tx, c: &CalendarRecord) -> Result<(), Error> {
    let result = sqlx::query(
        "INSERT INTO calendars (agency, id, fields, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&c.agency)
    .bind(&c.id)
    .bind(serde_json::to_string(&c.fields).map_err(|_| Error::Corrupt("calendar"))?)
    .bind(c.revision)
    .bind(c.create_time)
    .bind(c.update_time)
    .execute(tx.conn())
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if Error::is_unique_violation(&e) => Err(Error::AlreadyExists("calendar")),
        Err(e) => Err(e.into()),
    }
}

/// Replaces a calendar's fields if its revision is still `c.revision - 1`.
pub async fn update_calendar(tx: &mut Tx, c: &CalendarRecord) -> Result<bool, Error> {
    let n = sqlx::query(
        "UPDATE calendars SET fields = $1, revision = $2, update_time = $3 \
         WHERE agency = $4 AND id = $5 AND revision = $6",
    )
    .bind(serde_json::to_string(&c.fields).map_err(|_| Error::Corrupt("calendar"))?)
    .bind(c.revision)
    .bind(c.update_time)
    .bind(&c.agency)
    .bind(&c.id)
    .bind(c.revision - 1)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Loads a calendar.
pub async fn get_calendar(
    tx: &mut Tx,
    agency: &str,
    id: &str,
) -> Result<Option<CalendarRecord>, Error> {
    let row = sqlx::query(
        "SELECT agency, id, fields, revision, create_time, update_time FROM calendars \
         WHERE agency = $1 AND id = $2",
    )
    .bind(agency)
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    row.as_ref().map(calendar_from_row).transpose()
}

/// One page of calendars.
pub async fn list_calendars(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<CalendarRecord>, String), Error> {
    let (rows, next) = touchstone_platform::list_page(
        tx,
        "agency, id, fields, revision, create_time, update_time",
        "calendars",
        agency,
        query,
    )
    .await?;
    let out = rows
        .iter()
        .map(calendar_from_row)
        .collect::<Result<_, _>>()?;
    Ok((out, next))
}

#[derive(Serialize, Deserialize)]
struct StandardJson {
    calendar: String,
    acknowledge_days: i64,
    response_days: [i64; 4],
    target_share: f64,
    senior_categories: Vec<String>,
}

/// The agency's standard, or the defaults.
pub async fn get_standard(tx: &mut Tx, agency: &str) -> Result<Standard, Error> {
    let row: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT fields, revision, update_time FROM complaint_standards WHERE agency = $1",
    )
    .bind(agency)
    .fetch_optional(tx.conn())
    .await?;
    let Some((fields, revision, update_time)) = row else {
        return Ok(Standard::default());
    };
    let j: StandardJson = serde_json::from_str(&fields).map_err(|_| Error::Corrupt("standard"))?;
    Ok(Standard {
        calendar: j.calendar,
        acknowledge_days: j.acknowledge_days,
        response_days: j.response_days,
        target_share: j.target_share,
        senior_categories: j.senior_categories,
        revision,
        update_time,
    })
}

/// Stores the agency's standard if its revision is still `s.revision - 1`.
pub async fn put_standard(tx: &mut Tx, agency: &str, s: &Standard) -> Result<bool, Error> {
    let fields = serde_json::to_string(&StandardJson {
        calendar: s.calendar.clone(),
        acknowledge_days: s.acknowledge_days,
        response_days: s.response_days,
        target_share: s.target_share,
        senior_categories: s.senior_categories.clone(),
    })
    .map_err(|_| Error::Corrupt("standard"))?;
    let n = if s.revision == 1 {
        sqlx::query(
            "INSERT INTO complaint_standards (agency, fields, revision, update_time) \
             VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(agency)
        .bind(fields)
        .bind(s.revision)
        .bind(s.update_time)
        .execute(tx.conn())
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "UPDATE complaint_standards SET fields = $1, revision = $2, update_time = $3 \
             WHERE agency = $4 AND revision = $5",
        )
        .bind(fields)
        .bind(s.revision)
        .bind(s.update_time)
        .bind(agency)
        .bind(s.revision - 1)
        .execute(tx.conn())
        .await?
        .rows_affected()
    };
    Ok(n == 1)
}

/// A stored issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Linked complaint names.
    pub complaints: Vec<String>,
    /// Recommended solution.
    pub recommended_solution: String,
    /// Owner.
    pub owner: String,
    /// State (proto number).
    pub state: i32,
    /// Revision.
    pub revision: i64,
    /// Created.
    pub create_time: i64,
    /// Changed.
    pub update_time: i64,
}

impl IssueRecord {
    /// Resource name.
    pub fn name(&self) -> String {
        format!("agencies/{}/issues/{}", self.agency, self.id)
    }
}

const ISSUE_COLUMNS: &str = "agency, id, title, description, complaints, recommended_solution, \
    owner, state, revision, create_time, update_time";

fn issue_from_row(r: &AnyRow) -> Result<IssueRecord, Error> {
    let complaints: String = r.try_get("complaints")?;
    Ok(IssueRecord {
        agency: r.try_get("agency")?,
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        description: r.try_get("description")?,
        complaints: serde_json::from_str(&complaints).map_err(|_| Error::Corrupt("issue"))?,
        recommended_solution: r.try_get("recommended_solution")?,
        owner: r.try_get("owner")?,
        state: r.try_get::<i64, _>("state")? as i32,
        revision: r.try_get("revision")?,
        create_time: r.try_get("create_time")?,
        update_time: r.try_get("update_time")?,
    })
}

/// Inserts an issue.
pub async fn insert_issue(tx: &mut Tx, i: &IssueRecord) -> Result<(), Error> {
    let result = sqlx::query(
        "INSERT INTO issues (agency, id, title, description, complaints, recommended_solution, \
         owner, state, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&i.agency)
    .bind(&i.id)
    .bind(&i.title)
    .bind(&i.description)
    .bind(serde_json::to_string(&i.complaints).map_err(|_| Error::Corrupt("issue"))?)
    .bind(&i.recommended_solution)
    .bind(&i.owner)
    .bind(i64::from(i.state))
    .bind(i.revision)
    .bind(i.create_time)
    .bind(i.update_time)
    .execute(tx.conn())
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if Error::is_unique_violation(&e) => Err(Error::AlreadyExists("issue")),
        Err(e) => Err(e.into()),
    }
}

/// Updates an issue if its revision is still `i.revision - 1`.
pub async fn update_issue(tx: &mut Tx, i: &IssueRecord) -> Result<bool, Error> {
    let n = sqlx::query(
        "UPDATE issues SET title = $1, description = $2, complaints = $3, recommended_solution = $4, \
         owner = $5, state = $6, revision = $7, update_time = $8 \
         WHERE agency = $9 AND id = $10 AND revision = $11",
    )
    .bind(&i.title)
    .bind(&i.description)
    .bind(serde_json::to_string(&i.complaints).map_err(|_| Error::Corrupt("issue"))?)
    .bind(&i.recommended_solution)
    .bind(&i.owner)
    .bind(i64::from(i.state))
    .bind(i.revision)
    .bind(i.update_time)
    .bind(&i.agency)
    .bind(&i.id)
    .bind(i.revision - 1)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Loads an issue.
pub async fn get_issue(tx: &mut Tx, agency: &str, id: &str) -> Result<Option<IssueRecord>, Error> {
    let sql = format!("SELECT {ISSUE_COLUMNS} FROM issues WHERE agency = $1 AND id = $2");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.as_ref().map(issue_from_row).transpose()
}

/// One page of issues.
pub async fn list_issues(
    tx: &mut Tx,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<IssueRecord>, String), Error> {
    let (rows, next) =
        touchstone_platform::list_page(tx, ISSUE_COLUMNS, "issues", agency, query).await?;
    let out = rows.iter().map(issue_from_row).collect::<Result<_, _>>()?;
    Ok((out, next))
}

/// Open complaints of `agency` per (stage, severity), as proto numbers:
/// (stage, severity, open, overdue at `now`). Overdue as the list filter
/// `overdue = true` decides it (`overdue_from` passed).
pub async fn tally_open(
    tx: &mut Tx,
    agency: &str,
    now: i64,
) -> Result<Vec<(i32, i32, i64, i64)>, sqlx::Error> {
    let open: Vec<String> = crate::domain::Status::ALL
        .iter()
        .filter(|s| s.is_open())
        .map(|s| (s.proto() as i64).to_string())
        .collect();
    let sql = format!(
        "SELECT CAST(stage AS BIGINT), CAST(severity AS BIGINT), CAST(COUNT(*) AS BIGINT), \
         CAST(SUM(CASE WHEN overdue_from IS NOT NULL AND overdue_from <= $2 THEN 1 ELSE 0 END) AS BIGINT) \
         FROM complaints WHERE agency = $1 AND status IN ({}) \
         GROUP BY stage, severity ORDER BY stage, severity",
        open.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(now)
        .fetch_all(tx.conn())
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>(0)? as i32,
                r.try_get::<i64, _>(1)? as i32,
                r.try_get(2)?,
                r.try_get(3)?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_are_valid() {
        COMPLAINT_SCHEMA.validate().expect("complaints");
        ISSUE_SCHEMA.validate().expect("issues");
        CALENDAR_SCHEMA.validate().expect("calendars");
    }
}

/// The public part of a stored complaint: what replays its clocks, without
/// the sealed personal data (never read, so never opened).
#[derive(Debug, Clone)]
pub struct PublicState {
    /// Id.
    pub id: String,
    /// Service complained about.
    pub service: String,
    /// State.
    pub state: State,
    /// Last changed.
    pub update_time: i64,
}

/// The public state of the complaints of `agency` with these ids (those
/// found, in no particular order).
pub async fn public_states(
    tx: &mut Tx,
    agency: &str,
    ids: &[&str],
) -> Result<Vec<PublicState>, Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT id, service, state, update_time FROM complaints WHERE agency = $1 AND id IN ({})",
        marks.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    for id in ids {
        query = query.bind(*id);
    }
    let rows = query.fetch_all(tx.conn()).await?;
    rows.iter()
        .map(|r| {
            let state: String = r.try_get("state")?;
            Ok(PublicState {
                id: r.try_get("id")?,
                service: r.try_get("service")?,
                state: serde_json::from_str(&state).map_err(|_| Error::Corrupt("state"))?,
                update_time: r.try_get("update_time")?,
            })
        })
        .collect()
}
