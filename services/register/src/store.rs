//! The register's SQL, all of it, for SQLite and PostgreSQL alike. Personal
//! data is sealed and opened here, at the edge of the database, so no other
//! layer ever sees ciphertext and nothing below this layer sees plaintext.

use crate::domain::{ClientFields, NeedFields, NeedPersonal, Personal};
use crate::error::Error;
use sqlx::Row;
use sqlx::any::AnyRow;
use std::collections::HashMap;
use touchstone_crypto::DataKey;
use touchstone_list::{Field, FieldType, ListQuery, Schema};
use touchstone_platform::CHANNELS;
use touchstone_platform::db::{Backend, Tx};
use touchstone_platform::keycheck::SealedColumn;
use touchstone_platform::statements::Statements;
use touchstone_platform::{list_bind, row_bool};

const CLIENT_COLUMNS: &str = "agency, id, kind, preferred_channel, preferred_language, \
    interpreter_needed, accessibility_needs, personal, erased, erase_time, create_time, \
    update_time, revision";

const KINDS: &[(&str, i64)] = &[("PERSON", 1), ("ORGANISATION", 2)];
const NEED_STATUSES: &[(&str, i64)] = &[("OPEN", 1), ("MET", 2), ("NO_LONGER_NEEDED", 3)];

/// Client fields that `ListClients` filters and orders on. Personal data is
/// encrypted, so it is searchable only through `SearchClients`.
pub static CLIENT_SCHEMA: Schema = Schema {
    fields: &[
        Field {
            name: "kind",
            column: "kind",
            ty: FieldType::Enum(KINDS),
            sortable: false,
            nullable: false,
        },
        Field {
            name: "preferred_channel",
            column: "preferred_channel",
            ty: FieldType::Enum(CHANNELS),
            sortable: false,
            nullable: false,
        },
        Field {
            name: "preferred_language",
            column: "preferred_language",
            ty: FieldType::Text,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "interpreter_needed",
            column: "interpreter_needed",
            ty: FieldType::Bool,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "erased",
            column: "erased",
            ty: FieldType::Bool,
            sortable: false,
            nullable: false,
        },
        Field {
            name: "create_time",
            column: "create_time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
        Field {
            name: "update_time",
            column: "update_time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
    ],
    id_column: "id",
    default_order: "create_time desc",
};

/// Need fields that `ListNeeds` filters and orders on.
pub static NEED_SCHEMA: Schema = Schema {
    fields: &[
        Field {
            name: "category",
            column: "category",
            ty: FieldType::Text,
            sortable: true,
            nullable: false,
        },
        Field {
            name: "status",
            column: "status",
            ty: FieldType::Enum(NEED_STATUSES),
            sortable: true,
            nullable: false,
        },
        Field {
            name: "next_review_date",
            column: "next_review_date",
            ty: FieldType::Date,
            sortable: true,
            nullable: true,
        },
        Field {
            name: "create_time",
            column: "create_time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
        Field {
            name: "update_time",
            column: "update_time",
            ty: FieldType::Timestamp,
            sortable: true,
            nullable: false,
        },
    ],
    id_column: "id",
    default_order: "create_time desc",
};

/// A stored client, its personal data opened.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    /// Agency.
    pub agency: String,
    /// Id.
    pub id: String,
    /// Fields; personal data is empty once erased.
    pub fields: ClientFields,
    /// Whether erased.
    pub erased: bool,
    /// When erased.
    pub erase_time: Option<i64>,
    /// Created.
    pub create_time: i64,
    /// Last changed.
    pub update_time: i64,
    /// Version, for etags.
    pub revision: i64,
}

impl ClientRecord {
    /// The resource name.
    pub fn name(&self) -> String {
        client_name(&self.agency, &self.id)
    }
}

/// `agencies/{a}/clients/{c}`.
pub fn client_name(agency: &str, id: &str) -> String {
    format!("agencies/{agency}/clients/{id}")
}

/// The sealed columns, with their associated data as SQL (the same text as
/// [`client_aad`] and [`need_aad`]), for the start-up key check.
pub const SEALED: &[SealedColumn] = &[
    SealedColumn {
        table: "clients",
        column: "personal",
        aad: "'register/clients/' || agency || '/' || id",
    },
    SealedColumn {
        table: "needs",
        column: "personal",
        aad: "'register/needs/' || agency || '/' || id",
    },
];

fn client_aad(agency: &str, id: &str) -> Vec<u8> {
    format!("register/clients/{agency}/{id}").into_bytes()
}

fn need_aad(agency: &str, id: &str) -> Vec<u8> {
    format!("register/needs/{agency}/{id}").into_bytes()
}

fn seal_json<T: serde::Serialize>(key: &DataKey, aad: &[u8], value: &T) -> Result<Vec<u8>, Error> {
    let json = serde_json::to_vec(value).map_err(|_| Error::Corrupt("encoding personal data"))?;
    Ok(key.seal(aad, &json))
}

fn open_json<T: serde::de::DeserializeOwned>(
    key: &DataKey,
    aad: &[u8],
    sealed: &[u8],
) -> Result<T, Error> {
    let json = key
        .open(aad, sealed)
        .map_err(|_| Error::Corrupt("personal data does not decrypt"))?;
    serde_json::from_slice(&json).map_err(|_| Error::Corrupt("personal data does not decode"))
}

fn client_from_row(key: &DataKey, row: &AnyRow) -> Result<ClientRecord, Error> {
    let agency: String = row.try_get("agency")?;
    let id: String = row.try_get("id")?;
    let sealed: Option<Vec<u8>> = row.try_get("personal")?;
    let personal = match sealed {
        Some(bytes) => open_json::<Personal>(key, &client_aad(&agency, &id), &bytes)?,
        None => Personal::default(),
    };
    let needs_json: String = row.try_get("accessibility_needs")?;
    let accessibility_needs: Vec<i32> =
        serde_json::from_str(&needs_json).map_err(|_| Error::Corrupt("accessibility needs"))?;
    Ok(ClientRecord {
        fields: ClientFields {
            kind: row.try_get::<i64, _>("kind")? as i32,
            preferred_channel: row.try_get::<i64, _>("preferred_channel")? as i32,
            preferred_language: row.try_get("preferred_language")?,
            interpreter_needed: row_bool(row, "interpreter_needed")?,
            accessibility_needs,
            personal,
        },
        erased: row_bool(row, "erased")?,
        erase_time: row.try_get("erase_time")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        revision: row.try_get("revision")?,
        agency,
        id,
    })
}

async fn replace_lookups(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
    fields: &ClientFields,
) -> Result<(), Error> {
    sqlx::query("DELETE FROM client_lookup WHERE agency = $1 AND client_id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    insert_lookups(tx, key, agency, id, fields).await
}

/// Writes a client's search digests in one statement (each statement is a
/// round trip made while SQLite's writer waits).
async fn insert_lookups(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
    fields: &ClientFields,
) -> Result<(), Error> {
    let mut s = Statements::new(tx.backend());
    push_lookups(&mut s, key, agency, id, fields)?;
    s.execute(tx).await?;
    Ok(())
}

/// Adds the statement inserting a client's lookup digests to `s` (none
/// when the client has nothing to search by).
fn push_lookups(
    s: &mut Statements,
    key: &DataKey,
    agency: &str,
    id: &str,
    fields: &ClientFields,
) -> Result<(), Error> {
    let keys = fields.search_keys();
    if keys.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(keys.len());
    for (kind, value) in &keys {
        rows.push(format!(
            "({}, {}, {}, {})",
            s.value(agency.to_string())?,
            s.value(*kind)?,
            s.value(key.blind_index(kind, value))?,
            s.value(id.to_string())?
        ));
    }
    s.push(format!(
        "INSERT INTO client_lookup (agency, kind, digest, client_id) VALUES {} \
         ON CONFLICT DO NOTHING",
        rows.join(", ")
    ));
    Ok(())
}

/// Adds the insert of a new client and its lookup digests to `s` (a
/// change's writes, see `Change::writes`); when the id is taken, `s` fails
/// with a unique violation (see [`Error::is_unique_violation`]).
pub fn push_insert_client(
    s: &mut Statements,
    key: &DataKey,
    agency: &str,
    id: &str,
    fields: &ClientFields,
    now: i64,
) -> Result<ClientRecord, Error> {
    let sealed = seal_json(key, &client_aad(agency, id), &fields.personal)?;
    let needs = serde_json::to_string(&fields.accessibility_needs)
        .map_err(|_| Error::Corrupt("accessibility needs"))?;
    let sql = format!(
        "INSERT INTO clients (agency, id, kind, preferred_channel, preferred_language, \
         interpreter_needed, accessibility_needs, personal, erased, erase_time, create_time, \
         update_time, revision) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, FALSE, NULL, {}, {}, 1)",
        s.value(agency.to_string())?,
        s.value(id.to_string())?,
        s.value(i64::from(fields.kind))?,
        s.value(i64::from(fields.preferred_channel))?,
        s.value(fields.preferred_language.clone())?,
        s.value(fields.interpreter_needed)?,
        s.value(needs)?,
        s.value(sealed)?,
        s.value(now)?,
        s.value(now)?,
    );
    s.push(sql);
    push_lookups(s, key, agency, id, fields)?;
    Ok(ClientRecord {
        agency: agency.to_string(),
        id: id.to_string(),
        fields: fields.clone(),
        erased: false,
        erase_time: None,
        create_time: now,
        update_time: now,
        revision: 1,
    })
}

/// A client, or None.
pub async fn get_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<Option<ClientRecord>, Error> {
    select_client(tx, key, agency, id, "").await
}

/// A client and its consent history (oldest first), or None, read in one
/// statement, so that a read made only of it needs no transaction (see
/// `Db::read_one`).
pub async fn get_client_with_history(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<Option<(ClientRecord, Vec<ConsentChange>)>, Error> {
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let client: Vec<String> = CLIENT_COLUMNS
            .split(',')
            .map(|c| format!("c.{}", c.trim()))
            .collect();
        format!(
            "SELECT {}, h.purpose AS h_purpose, h.granted AS h_granted, \
             h.change_time AS h_change_time, h.actor AS h_actor, h.source AS h_source \
             FROM clients c LEFT JOIN consent_changes h \
             ON h.agency = c.agency AND h.client_id = c.id \
             WHERE c.agency = $1 AND c.id = $2 ORDER BY h.change_time, h.id",
            client.join(", ")
        )
    });
    let rows = sqlx::query(sqlx::AssertSqlSafe(SQL.as_str()))
        .bind(agency)
        .bind(id)
        .fetch_all(tx.conn())
        .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let record = client_from_row(key, first)?;
    let mut history = Vec::with_capacity(rows.len());
    for row in &rows {
        // A client without history has one row, its history columns NULL.
        let Some(purpose) = row.try_get::<Option<i64>, _>("h_purpose")? else {
            continue;
        };
        history.push(ConsentChange {
            purpose: purpose as i32,
            granted: row_bool(row, "h_granted")?,
            change_time: row.try_get("h_change_time")?,
            actor: row.try_get("h_actor")?,
            source: row.try_get("h_source")?,
        });
    }
    Ok(Some((record, history)))
}

/// A client, or None, its row locked until commit on PostgreSQL (SQLite's
/// single writer needs no lock).
pub async fn get_client_for_update(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
) -> Result<Option<ClientRecord>, Error> {
    let lock = if tx.backend() == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    select_client(tx, key, agency, id, lock).await
}

async fn select_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    id: &str,
    lock: &str,
) -> Result<Option<ClientRecord>, Error> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE agency = $1 AND id = $2{lock}");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| client_from_row(key, &r)).transpose()
}

/// Writes a client's new fields if its revision is still `revision`;
/// returns false when someone else changed it first.
pub async fn update_client(
    tx: &mut Tx,
    key: &DataKey,
    record: &ClientRecord,
    fields: &ClientFields,
    now: i64,
) -> Result<bool, Error> {
    let sealed = seal_json(
        key,
        &client_aad(&record.agency, &record.id),
        &fields.personal,
    )?;
    let needs = serde_json::to_string(&fields.accessibility_needs)
        .map_err(|_| Error::Corrupt("accessibility needs"))?;
    let n = sqlx::query(
        "UPDATE clients SET kind = $1, preferred_channel = $2, preferred_language = $3, \
         interpreter_needed = $4, accessibility_needs = $5, personal = $6, update_time = $7, \
         revision = revision + 1 WHERE agency = $8 AND id = $9 AND revision = $10 AND NOT erased",
    )
    .bind(i64::from(fields.kind))
    .bind(i64::from(fields.preferred_channel))
    .bind(fields.preferred_language.as_str())
    .bind(fields.interpreter_needed)
    .bind(needs)
    .bind(sealed)
    .bind(now)
    .bind(record.agency.as_str())
    .bind(record.id.as_str())
    .bind(record.revision)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if n == 1 {
        replace_lookups(tx, key, &record.agency, &record.id, fields).await?;
    }
    Ok(n == 1)
}

/// One page of clients.
pub async fn list_clients(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    query: &ListQuery,
) -> Result<(Vec<ClientRecord>, String), Error> {
    let (rows, next) =
        touchstone_platform::list_page(tx, CLIENT_COLUMNS, "clients", agency, query).await?;
    let records = rows
        .iter()
        .map(|r| client_from_row(key, r))
        .collect::<Result<_, _>>()?;
    Ok((records, next))
}

/// Clients whose normalised `kind` value hashes to the same digest.
pub async fn search_clients(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    kind: &str,
    normalised: &str,
    limit: i64,
) -> Result<Vec<ClientRecord>, Error> {
    // One digest per key of the agency: clients indexed under an older key
    // (a repaired database) are found too.
    let digests = key.blind_indexes(kind, normalised);
    let backend = tx.backend();
    let in_list = (0..digests.len())
        .map(|i| backend.param(3 + i))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {} FROM clients c JOIN client_lookup l ON l.agency = c.agency AND l.client_id = c.id \
         WHERE l.agency = {} AND l.kind = {} AND l.digest IN ({in_list}) ORDER BY c.id LIMIT {}",
        CLIENT_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", "),
        backend.param(1),
        backend.param(2),
        backend.param(3 + digests.len()),
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(kind);
    for digest in digests {
        query = query.bind(digest);
    }
    let rows = query.bind(limit).fetch_all(tx.conn()).await?;
    rows.iter().map(|r| client_from_row(key, r)).collect()
}

/// Removes a client's personal data and everything that could find or
/// recover it; keeps the pseudonymous id and the non-identifying fields.
pub async fn erase_client(tx: &mut Tx, agency: &str, id: &str, now: i64) -> Result<bool, Error> {
    let n = sqlx::query(
        "UPDATE clients SET personal = NULL, erased = TRUE, erase_time = $1, update_time = $1, \
         preferred_language = '', interpreter_needed = FALSE, accessibility_needs = '[]', \
         revision = revision + 1 WHERE agency = $2 AND id = $3 AND NOT erased",
    )
    .bind(now)
    .bind(agency)
    .bind(id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    sqlx::query("DELETE FROM client_lookup WHERE agency = $1 AND client_id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    // How consent was given is free text and may name people.
    sqlx::query("UPDATE consent_changes SET source = '' WHERE agency = $1 AND client_id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    sqlx::query("UPDATE needs SET personal = NULL WHERE agency = $1 AND client_id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(n == 1)
}

/// A consent grant or withdrawal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// `ConsentPurpose`.
    pub purpose: i32,
    /// Granted or withdrawn.
    pub granted: bool,
    /// When.
    pub change_time: i64,
    /// Who recorded it.
    pub actor: String,
    /// How it was given.
    pub source: String,
}

/// Appends a consent change.
pub async fn insert_consent_change(
    tx: &mut Tx,
    agency: &str,
    client_id: &str,
    change: &ConsentChange,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO consent_changes (agency, id, client_id, purpose, granted, change_time, actor, source) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(agency)
    .bind(touchstone_platform::names::new_id())
    .bind(client_id)
    .bind(i64::from(change.purpose))
    .bind(change.granted)
    .bind(change.change_time)
    .bind(change.actor.as_str())
    .bind(change.source.as_str())
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Consent histories of several clients, oldest first per client.
pub async fn consent_histories(
    tx: &mut Tx,
    agency: &str,
    client_ids: &[&str],
) -> Result<HashMap<String, Vec<ConsentChange>>, Error> {
    let mut out: HashMap<String, Vec<ConsentChange>> = HashMap::new();
    if client_ids.is_empty() {
        return Ok(out);
    }
    let placeholders: Vec<String> = (0..client_ids.len())
        .map(|i| format!("${}", i + 2))
        .collect();
    let sql = format!(
        "SELECT client_id, purpose, granted, change_time, actor, source FROM consent_changes \
         WHERE agency = $1 AND client_id IN ({}) ORDER BY change_time, id",
        placeholders.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    for id in client_ids {
        q = q.bind(*id);
    }
    for row in q.fetch_all(tx.conn()).await? {
        let client: String = row.try_get("client_id")?;
        out.entry(client).or_default().push(ConsentChange {
            purpose: row.try_get::<i64, _>("purpose")? as i32,
            granted: row_bool(&row, "granted")?,
            change_time: row.try_get("change_time")?,
            actor: row.try_get("actor")?,
            source: row.try_get("source")?,
        });
    }
    Ok(out)
}

/// Bumps a client's revision and update time (a consent changed).
pub async fn touch_client(tx: &mut Tx, agency: &str, id: &str, now: i64) -> Result<(), Error> {
    sqlx::query("UPDATE clients SET update_time = $1, revision = revision + 1 WHERE agency = $2 AND id = $3")
        .bind(now)
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// A stored needs record, opened.
#[derive(Debug, Clone)]
pub struct NeedRecord {
    /// Agency.
    pub agency: String,
    /// Client id.
    pub client_id: String,
    /// Id.
    pub id: String,
    /// Fields (personal part empty once the client was erased).
    pub fields: NeedFields,
    /// Created.
    pub create_time: i64,
    /// Changed.
    pub update_time: i64,
    /// Version.
    pub revision: i64,
}

impl NeedRecord {
    /// The resource name.
    pub fn name(&self) -> String {
        format!(
            "agencies/{}/clients/{}/needs/{}",
            self.agency, self.client_id, self.id
        )
    }
}

const NEED_COLUMNS: &str = "agency, id, client_id, category, status, next_review_date, personal, \
    create_time, update_time, revision";

fn need_from_row(key: &DataKey, row: &AnyRow) -> Result<NeedRecord, Error> {
    let agency: String = row.try_get("agency")?;
    let id: String = row.try_get("id")?;
    let sealed: Option<Vec<u8>> = row.try_get("personal")?;
    let personal = match sealed {
        Some(bytes) => open_json::<NeedPersonal>(key, &need_aad(&agency, &id), &bytes)?,
        None => NeedPersonal::default(),
    };
    Ok(NeedRecord {
        client_id: row.try_get("client_id")?,
        fields: NeedFields {
            category: row.try_get("category")?,
            status: row.try_get::<i64, _>("status")? as i32,
            next_review_date: row.try_get("next_review_date")?,
            personal,
        },
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
        revision: row.try_get("revision")?,
        agency,
        id,
    })
}

/// Inserts a needs record.
pub async fn insert_need(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    client_id: &str,
    id: &str,
    fields: &NeedFields,
    now: i64,
) -> Result<NeedRecord, Error> {
    let sealed = seal_json(key, &need_aad(agency, id), &fields.personal)?;
    let inserted = sqlx::query(
        "INSERT INTO needs (agency, id, client_id, category, status, next_review_date, personal, \
         create_time, update_time, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, 1)",
    )
    .bind(agency)
    .bind(id)
    .bind(client_id)
    .bind(fields.category.as_str())
    .bind(i64::from(fields.status))
    .bind(fields.next_review_date)
    .bind(sealed)
    .bind(now)
    .execute(tx.conn())
    .await;
    match inserted {
        Err(e) if Error::is_unique_violation(&e) => return Err(Error::AlreadyExists("need")),
        other => {
            other?;
        }
    }
    Ok(NeedRecord {
        agency: agency.to_string(),
        client_id: client_id.to_string(),
        id: id.to_string(),
        fields: fields.clone(),
        create_time: now,
        update_time: now,
        revision: 1,
    })
}

/// A needs record of a client, or None.
pub async fn get_need(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    client_id: &str,
    id: &str,
) -> Result<Option<NeedRecord>, Error> {
    let sql = format!(
        "SELECT {NEED_COLUMNS} FROM needs WHERE agency = $1 AND client_id = $2 AND id = $3"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(client_id)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?;
    row.map(|r| need_from_row(key, &r)).transpose()
}

/// Writes a need's new fields if its revision is unchanged.
pub async fn update_need(
    tx: &mut Tx,
    key: &DataKey,
    record: &NeedRecord,
    fields: &NeedFields,
    now: i64,
) -> Result<bool, Error> {
    let sealed = seal_json(key, &need_aad(&record.agency, &record.id), &fields.personal)?;
    let n = sqlx::query(
        "UPDATE needs SET category = $1, status = $2, next_review_date = $3, personal = $4, \
         update_time = $5, revision = revision + 1 WHERE agency = $6 AND id = $7 AND revision = $8",
    )
    .bind(fields.category.as_str())
    .bind(i64::from(fields.status))
    .bind(fields.next_review_date)
    .bind(sealed)
    .bind(now)
    .bind(record.agency.as_str())
    .bind(record.id.as_str())
    .bind(record.revision)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Deletes a need if its revision is unchanged.
pub async fn delete_need(tx: &mut Tx, record: &NeedRecord) -> Result<bool, Error> {
    let n = sqlx::query("DELETE FROM needs WHERE agency = $1 AND id = $2 AND revision = $3")
        .bind(record.agency.as_str())
        .bind(record.id.as_str())
        .bind(record.revision)
        .execute(tx.conn())
        .await?
        .rows_affected();
    Ok(n == 1)
}

/// One page of needs, of one client or (client_id None) of every client.
pub async fn list_needs(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    client_id: Option<&str>,
    extra: &str,
    query: &ListQuery,
) -> Result<(Vec<NeedRecord>, String), Error> {
    let sql = format!(
        "SELECT {NEED_COLUMNS} FROM needs WHERE agency = $1 AND ($2 = '' OR client_id = $2) \
         {extra} AND ({}) ORDER BY {} LIMIT {}",
        query.where_sql(),
        query.order_sql(),
        query.fetch_limit()
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(client_id.unwrap_or("").to_string());
    for p in query.params() {
        q = list_bind(q, p);
    }
    let mut rows = q.fetch_all(tx.conn()).await?;
    let next = query.finish(&mut rows)?;
    let records = rows
        .iter()
        .map(|r| need_from_row(key, r))
        .collect::<Result<_, _>>()?;
    Ok((records, next))
}

/// Every need of a client, oldest first.
pub async fn needs_of_client(
    tx: &mut Tx,
    key: &DataKey,
    agency: &str,
    client_id: &str,
) -> Result<Vec<NeedRecord>, Error> {
    let sql = format!(
        "SELECT {NEED_COLUMNS} FROM needs WHERE agency = $1 AND client_id = $2 ORDER BY create_time, id"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(client_id)
        .fetch_all(tx.conn())
        .await?;
    rows.iter().map(|r| need_from_row(key, r)).collect()
}
