//! The hub directory's SQL, in one place: agencies, units, peer groups and
//! their members. Rows are read in transactions scoped to an agency, or to
//! the hub scope ([`crate::domain::HUB`]) for hub-wide work.

use sqlx::Row;
use sqlx::any::AnyRow;
use touchstone_api::gateway::v1 as pb;
use touchstone_platform::db::Tx;
use touchstone_platform::times;

/// An agency row.
#[derive(Debug, Clone)]
pub struct AgencyRow {
    /// Agency id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// IANA time zone.
    pub time_zone: String,
    /// Benchmark consent (enum number).
    pub consent: i64,
    /// Revision (etag).
    pub revision: i64,
    /// Created, ms.
    pub create_time: i64,
    /// Updated, ms.
    pub update_time: i64,
}

impl AgencyRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(AgencyRow {
            id: r.try_get("id")?,
            display_name: r.try_get("display_name")?,
            time_zone: r.try_get("time_zone")?,
            consent: r.try_get("consent")?,
            revision: r.try_get("revision")?,
            create_time: r.try_get("create_time")?,
            update_time: r.try_get("update_time")?,
        })
    }

    /// The wire message.
    pub fn to_proto(&self) -> pb::Agency {
        pb::Agency {
            name: format!("agencies/{}", self.id),
            display_name: self.display_name.clone(),
            time_zone: self.time_zone.clone(),
            benchmark_consent: self.consent as i32,
            create_time: Some(times::timestamp(self.create_time)),
            update_time: Some(times::timestamp(self.update_time)),
            etag: etag(self.revision),
        }
    }
}

/// The etag of a revision.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}

const AGENCY_COLUMNS: &str =
    "id, display_name, time_zone, consent, revision, create_time, update_time";

/// Inserts an agency; a clash is the caller's to report.
pub async fn insert_agency(tx: &mut Tx, a: &AgencyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_agencies (id, display_name, time_zone, consent, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&a.id)
    .bind(&a.display_name)
    .bind(&a.time_zone)
    .bind(a.consent)
    .bind(a.revision)
    .bind(a.create_time)
    .bind(a.update_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Writes an agency's changeable fields and revision.
pub async fn update_agency(tx: &mut Tx, a: &AgencyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hub_agencies SET display_name = $2, time_zone = $3, consent = $4, revision = $5, \
         update_time = $6 WHERE id = $1",
    )
    .bind(&a.id)
    .bind(&a.display_name)
    .bind(&a.time_zone)
    .bind(a.consent)
    .bind(a.revision)
    .bind(a.update_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// One agency.
pub async fn get_agency(tx: &mut Tx, id: &str) -> Result<Option<AgencyRow>, sqlx::Error> {
    let sql = format!("SELECT {AGENCY_COLUMNS} FROM hub_agencies WHERE id = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| AgencyRow::from_row(&r))
        .transpose()
}

/// Agencies after `after` by id, at most `limit`.
pub async fn list_agencies(
    tx: &mut Tx,
    after: &str,
    limit: i64,
) -> Result<Vec<AgencyRow>, sqlx::Error> {
    let sql =
        format!("SELECT {AGENCY_COLUMNS} FROM hub_agencies WHERE id > $1 ORDER BY id LIMIT $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(AgencyRow::from_row)
        .collect()
}

/// A unit row.
#[derive(Debug, Clone)]
pub struct UnitRow {
    /// Agency id.
    pub agency: String,
    /// Unit id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Revision (etag).
    pub revision: i64,
    /// Created, ms.
    pub create_time: i64,
    /// Updated, ms.
    pub update_time: i64,
}

impl UnitRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(UnitRow {
            agency: r.try_get("agency")?,
            id: r.try_get("id")?,
            display_name: r.try_get("display_name")?,
            revision: r.try_get("revision")?,
            create_time: r.try_get("create_time")?,
            update_time: r.try_get("update_time")?,
        })
    }

    /// The wire message.
    pub fn to_proto(&self) -> pb::Unit {
        pb::Unit {
            name: format!("agencies/{}/units/{}", self.agency, self.id),
            display_name: self.display_name.clone(),
            create_time: Some(times::timestamp(self.create_time)),
            update_time: Some(times::timestamp(self.update_time)),
            etag: etag(self.revision),
        }
    }
}

const UNIT_COLUMNS: &str = "agency, id, display_name, revision, create_time, update_time";

/// Inserts a unit.
pub async fn insert_unit(tx: &mut Tx, u: &UnitRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_units (agency, id, display_name, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&u.agency)
    .bind(&u.id)
    .bind(&u.display_name)
    .bind(u.revision)
    .bind(u.create_time)
    .bind(u.update_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Writes a unit's name and revision.
pub async fn update_unit(tx: &mut Tx, u: &UnitRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hub_units SET display_name = $3, revision = $4, update_time = $5 \
         WHERE agency = $1 AND id = $2",
    )
    .bind(&u.agency)
    .bind(&u.id)
    .bind(&u.display_name)
    .bind(u.revision)
    .bind(u.update_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Removes a unit.
pub async fn delete_unit(tx: &mut Tx, agency: &str, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM hub_units WHERE agency = $1 AND id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// One unit.
pub async fn get_unit(tx: &mut Tx, agency: &str, id: &str) -> Result<Option<UnitRow>, sqlx::Error> {
    let sql = format!("SELECT {UNIT_COLUMNS} FROM hub_units WHERE agency = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| UnitRow::from_row(&r))
        .transpose()
}

/// An agency's units after `after`, at most `limit`.
pub async fn list_units(
    tx: &mut Tx,
    agency: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<UnitRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {UNIT_COLUMNS} FROM hub_units WHERE agency = $1 AND id > $2 ORDER BY id LIMIT $3"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(after)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(UnitRow::from_row)
        .collect()
}

/// A peer group with its members.
#[derive(Debug, Clone)]
pub struct PeerGroupRow {
    /// Peer group id.
    pub id: String,
    /// Display name.
    pub display_name: String,
    /// Member agency ids, in the order given.
    pub members: Vec<String>,
    /// Revision (etag).
    pub revision: i64,
    /// Created, ms.
    pub create_time: i64,
    /// Updated, ms.
    pub update_time: i64,
}

impl PeerGroupRow {
    /// The wire message.
    pub fn to_proto(&self) -> pb::PeerGroup {
        pb::PeerGroup {
            name: format!("peerGroups/{}", self.id),
            display_name: self.display_name.clone(),
            agencies: self
                .members
                .iter()
                .map(|a| format!("agencies/{a}"))
                .collect(),
            create_time: Some(times::timestamp(self.create_time)),
            update_time: Some(times::timestamp(self.update_time)),
            etag: etag(self.revision),
        }
    }
}

/// Inserts a peer group and its members.
pub async fn insert_peer_group(tx: &mut Tx, g: &PeerGroupRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_peer_groups (id, display_name, revision, create_time, update_time) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&g.id)
    .bind(&g.display_name)
    .bind(g.revision)
    .bind(g.create_time)
    .bind(g.update_time)
    .execute(tx.conn())
    .await?;
    write_members(tx, &g.id, &g.members).await
}

async fn write_members(tx: &mut Tx, group: &str, members: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM hub_peer_group_members WHERE peer_group = $1")
        .bind(group)
        .execute(tx.conn())
        .await?;
    for (position, agency) in members.iter().enumerate() {
        sqlx::query(
            "INSERT INTO hub_peer_group_members (peer_group, agency, position) VALUES ($1, $2, $3)",
        )
        .bind(group)
        .bind(agency)
        .bind(position as i64)
        .execute(tx.conn())
        .await?;
    }
    Ok(())
}

/// Writes a peer group's name, members and revision.
pub async fn update_peer_group(tx: &mut Tx, g: &PeerGroupRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hub_peer_groups SET display_name = $2, revision = $3, update_time = $4 WHERE id = $1",
    )
    .bind(&g.id)
    .bind(&g.display_name)
    .bind(g.revision)
    .bind(g.update_time)
    .execute(tx.conn())
    .await?;
    write_members(tx, &g.id, &g.members).await
}

/// Removes a peer group and its members.
pub async fn delete_peer_group(tx: &mut Tx, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM hub_peer_group_members WHERE peer_group = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM hub_peer_groups WHERE id = $1")
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// One peer group.
pub async fn get_peer_group(tx: &mut Tx, id: &str) -> Result<Option<PeerGroupRow>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT id, display_name, revision, create_time, update_time FROM hub_peer_groups WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(tx.conn())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let members = members(tx, id).await?;
    Ok(Some(PeerGroupRow {
        id: row.try_get("id")?,
        display_name: row.try_get("display_name")?,
        members,
        revision: row.try_get("revision")?,
        create_time: row.try_get("create_time")?,
        update_time: row.try_get("update_time")?,
    }))
}

async fn members(tx: &mut Tx, group: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query("SELECT agency FROM hub_peer_group_members WHERE peer_group = $1 ORDER BY position")
        .bind(group)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(|r| r.try_get("agency"))
        .collect()
}

/// Peer groups after `after` by id, at most `limit`; only those with
/// `member` among their agencies when given.
pub async fn list_peer_groups(
    tx: &mut Tx,
    member: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<Vec<PeerGroupRow>, sqlx::Error> {
    let rows = match member {
        Some(agency) => {
            sqlx::query(
                "SELECT g.id FROM hub_peer_groups g JOIN hub_peer_group_members m \
                 ON m.peer_group = g.id WHERE m.agency = $1 AND g.id > $2 ORDER BY g.id LIMIT $3",
            )
            .bind(agency)
            .bind(after)
            .bind(limit)
            .fetch_all(tx.conn())
            .await?
        }
        None => {
            sqlx::query("SELECT id FROM hub_peer_groups WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(after)
                .bind(limit)
                .fetch_all(tx.conn())
                .await?
        }
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = r.try_get("id")?;
        if let Some(g) = get_peer_group(tx, &id).await? {
            out.push(g);
        }
    }
    Ok(out)
}

/// The agencies among `ids` that exist, with their rows.
pub async fn agencies_in(tx: &mut Tx, ids: &[String]) -> Result<Vec<AgencyRow>, sqlx::Error> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(a) = get_agency(tx, id).await? {
            out.push(a);
        }
    }
    Ok(out)
}

// ---- API keys ----

/// An API key as stored: its hash, never the key.
#[derive(Debug, Clone)]
pub struct ApiKeyRow {
    /// Agency.
    pub agency: String,
    /// Key id.
    pub id: String,
    /// The system it is for.
    pub display_name: String,
    /// SHA-256 of the key, hex.
    pub key_hash: String,
    /// Requests per minute.
    pub requests_per_minute: i64,
    /// Millis.
    pub create_time: i64,
    /// Millis, once revoked.
    pub revoke_time: Option<i64>,
}

impl ApiKeyRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(ApiKeyRow {
            agency: r.try_get("agency")?,
            id: r.try_get("id")?,
            display_name: r.try_get("display_name")?,
            key_hash: r.try_get("key_hash")?,
            requests_per_minute: r.try_get("requests_per_minute")?,
            create_time: r.try_get("create_time")?,
            revoke_time: r.try_get("revoke_time")?,
        })
    }

    /// The resource name.
    pub fn name(&self) -> String {
        format!("agencies/{}/apiKeys/{}", self.agency, self.id)
    }

    /// The wire message, without the key.
    pub fn to_proto(&self) -> pb::ApiKey {
        pb::ApiKey {
            name: self.name(),
            display_name: self.display_name.clone(),
            requests_per_minute: self.requests_per_minute as i32,
            create_time: Some(times::timestamp(self.create_time)),
            revoke_time: self.revoke_time.map(times::timestamp),
            key: String::new(),
        }
    }
}

const API_KEY_COLUMNS: &str =
    "agency, id, display_name, key_hash, requests_per_minute, create_time, revoke_time";

/// Inserts a key.
pub async fn insert_api_key(tx: &mut Tx, k: &ApiKeyRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_api_keys (agency, id, display_name, key_hash, requests_per_minute, \
         create_time, revoke_time) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
    )
    .bind(&k.agency)
    .bind(&k.id)
    .bind(&k.display_name)
    .bind(&k.key_hash)
    .bind(k.requests_per_minute)
    .bind(k.create_time)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// A key by agency and id.
pub async fn get_api_key(
    tx: &mut Tx,
    agency: &str,
    id: &str,
) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM hub_api_keys WHERE agency = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| ApiKeyRow::from_row(&r))
        .transpose()
}

/// The key with this hash, in any agency (read in the all-agencies scope:
/// the key is what names the agency).
pub async fn find_api_key(tx: &mut Tx, key_hash: &str) -> Result<Option<ApiKeyRow>, sqlx::Error> {
    let sql = format!("SELECT {API_KEY_COLUMNS} FROM hub_api_keys WHERE key_hash = $1");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(key_hash)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| ApiKeyRow::from_row(&r))
        .transpose()
}

/// An agency's keys after `after`, at most `limit`.
pub async fn list_api_keys(
    tx: &mut Tx,
    agency: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ApiKeyRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {API_KEY_COLUMNS} FROM hub_api_keys WHERE agency = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(after)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(ApiKeyRow::from_row)
        .collect()
}

/// Marks a key revoked (once: a second revocation keeps the first time).
pub async fn revoke_api_key(
    tx: &mut Tx,
    agency: &str,
    id: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE hub_api_keys SET revoke_time = $3 \
         WHERE agency = $1 AND id = $2 AND revoke_time IS NULL",
    )
    .bind(agency)
    .bind(id)
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(())
}

// ---- Open311 services ----

/// A complaint category offered as an Open311 service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open311ServiceRow {
    /// Agency.
    pub agency: String,
    /// The Open311 service_code.
    pub id: String,
    /// service_name.
    pub display_name: String,
    /// description.
    pub description: String,
    /// group.
    pub group: String,
    /// keywords, in order.
    pub keywords: Vec<String>,
    /// The complaint category.
    pub complaint_category: String,
    /// The complaint's service.
    pub complaint_service: String,
    /// Millis.
    pub create_time: i64,
    /// Instead of a complaint category: the survey answered, by name.
    pub survey: String,
    /// The survey's questions as Open311 attributes.
    pub attributes: Vec<crate::domain::Open311Attribute>,
}

impl Open311ServiceRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        let keywords: String = r.try_get("keywords")?;
        let attributes: String = r.try_get("attributes")?;
        Ok(Open311ServiceRow {
            agency: r.try_get("agency")?,
            id: r.try_get("id")?,
            display_name: r.try_get("display_name")?,
            description: r.try_get("description")?,
            group: r.try_get("group_name")?,
            keywords: serde_json::from_str(&keywords)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
            complaint_category: r.try_get("complaint_category")?,
            complaint_service: r.try_get("complaint_service")?,
            create_time: r.try_get("create_time")?,
            survey: r.try_get("survey")?,
            attributes: serde_json::from_str(&attributes)
                .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        })
    }

    /// The wire message.
    pub fn to_proto(&self) -> pb::Open311Service {
        pb::Open311Service {
            name: format!("agencies/{}/open311Services/{}", self.agency, self.id),
            display_name: self.display_name.clone(),
            description: self.description.clone(),
            group: self.group.clone(),
            keywords: self.keywords.clone(),
            complaint_category: self.complaint_category.clone(),
            complaint_service: self.complaint_service.clone(),
            create_time: Some(times::timestamp(self.create_time)),
            survey: self.survey.clone(),
        }
    }
}

const OPEN311_COLUMNS: &str = "agency, id, display_name, description, group_name, keywords, \
    complaint_category, complaint_service, create_time, survey, attributes";

/// Inserts an Open311 service.
pub async fn insert_open311_service(tx: &mut Tx, s: &Open311ServiceRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_open311_services (agency, id, display_name, description, group_name, \
         keywords, complaint_category, complaint_service, create_time, survey, attributes) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&s.agency)
    .bind(&s.id)
    .bind(&s.display_name)
    .bind(&s.description)
    .bind(&s.group)
    .bind(serde_json::to_string(&s.keywords).unwrap_or_else(|_| "[]".into()))
    .bind(&s.complaint_category)
    .bind(&s.complaint_service)
    .bind(s.create_time)
    .bind(&s.survey)
    .bind(serde_json::to_string(&s.attributes).unwrap_or_else(|_| "[]".into()))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// An Open311 service by agency and code.
pub async fn get_open311_service(
    tx: &mut Tx,
    agency: &str,
    id: &str,
) -> Result<Option<Open311ServiceRow>, sqlx::Error> {
    let sql =
        format!("SELECT {OPEN311_COLUMNS} FROM hub_open311_services WHERE agency = $1 AND id = $2");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| Open311ServiceRow::from_row(&r))
        .transpose()
}

/// An agency's Open311 services after `after`, at most `limit`.
pub async fn list_open311_services(
    tx: &mut Tx,
    agency: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<Open311ServiceRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {OPEN311_COLUMNS} FROM hub_open311_services WHERE agency = $1 AND id > $2 \
         ORDER BY id LIMIT $3"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(after)
        .bind(limit)
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(Open311ServiceRow::from_row)
        .collect()
}

/// Removes an Open311 service.
pub async fn delete_open311_service(
    tx: &mut Tx,
    agency: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM hub_open311_services WHERE agency = $1 AND id = $2")
        .bind(agency)
        .bind(id)
        .execute(tx.conn())
        .await?;
    Ok(())
}

// ---- Open311 requests ----

/// A request taken in through Open311: its complaint's id and what Open311
/// shows of it beside the complaint's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open311RequestRow {
    /// Agency.
    pub agency: String,
    /// The complaint's id: the service_request_id.
    pub id: String,
    /// The service_code it was made to.
    pub service_code: String,
    /// The API key's id.
    pub api_key: String,
    /// Keyed hash under which a retry finds it; empty when the sender gave
    /// no device_id or account_id.
    pub retry_key: String,
    /// Latitude as given, or empty.
    pub latitude: String,
    /// Longitude as given, or empty.
    pub longitude: String,
    /// address_string, or empty.
    pub address_string: String,
    /// address_id, or empty.
    pub address_id: String,
    /// When it was received, millis.
    pub requested_time: i64,
    /// The survey it answered (a response of it, with id `id`); empty for a
    /// complaint.
    pub survey: String,
}

impl Open311RequestRow {
    fn from_row(r: &AnyRow) -> Result<Self, sqlx::Error> {
        Ok(Open311RequestRow {
            agency: r.try_get("agency")?,
            id: r.try_get("id")?,
            service_code: r.try_get("service_code")?,
            api_key: r.try_get("api_key")?,
            retry_key: r.try_get("retry_key")?,
            latitude: r.try_get("latitude")?,
            longitude: r.try_get("longitude")?,
            address_string: r.try_get("address_string")?,
            address_id: r.try_get("address_id")?,
            requested_time: r.try_get("requested_time")?,
            survey: r.try_get("survey")?,
        })
    }
}

const REQUEST_COLUMNS: &str = "agency, id, service_code, api_key, retry_key, latitude, longitude, \
    address_string, address_id, requested_time, survey";

/// Records a request; a second record of the same complaint (a retry that
/// raced the first) changes nothing.
pub async fn insert_open311_request(tx: &mut Tx, r: &Open311RequestRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO hub_open311_requests (agency, id, service_code, api_key, retry_key, \
         latitude, longitude, address_string, address_id, requested_time, survey) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (agency, id) DO NOTHING",
    )
    .bind(&r.agency)
    .bind(&r.id)
    .bind(&r.service_code)
    .bind(&r.api_key)
    .bind(&r.retry_key)
    .bind(&r.latitude)
    .bind(&r.longitude)
    .bind(&r.address_string)
    .bind(&r.address_id)
    .bind(r.requested_time)
    .bind(&r.survey)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// The newest request recorded under `retry_key` since `since`.
pub async fn find_open311_retry(
    tx: &mut Tx,
    agency: &str,
    retry_key: &str,
    since: i64,
) -> Result<Option<Open311RequestRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM hub_open311_requests \
         WHERE agency = $1 AND retry_key = $2 AND requested_time >= $3 \
         ORDER BY requested_time DESC LIMIT 1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(retry_key)
        .bind(since)
        .fetch_optional(tx.conn())
        .await?
        .map(|r| Open311RequestRow::from_row(&r))
        .transpose()
}

/// The requests of `agency` with these ids (those found).
pub async fn open311_requests_by_id(
    tx: &mut Tx,
    agency: &str,
    ids: &[String],
) -> Result<Vec<Open311RequestRow>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let marks: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM hub_open311_requests WHERE agency = $1 AND id IN ({}) \
         ORDER BY requested_time DESC, id DESC",
        marks.join(", ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(agency);
    for id in ids {
        query = query.bind(id);
    }
    query
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(Open311RequestRow::from_row)
        .collect()
}

/// Requests of `agency` received in [`from`, `to`), of the given service
/// codes (all when empty), newest first, `limit` from `offset`.
pub async fn list_open311_requests(
    tx: &mut Tx,
    agency: &str,
    codes: &[String],
    (from, to): (i64, i64),
    offset: i64,
    limit: i64,
) -> Result<Vec<Open311RequestRow>, sqlx::Error> {
    let marks: Vec<String> = (0..codes.len()).map(|i| format!("${}", i + 6)).collect();
    let by_code = if codes.is_empty() {
        String::new()
    } else {
        format!(" AND service_code IN ({})", marks.join(", "))
    };
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM hub_open311_requests \
         WHERE agency = $1 AND requested_time >= $2 AND requested_time < $3{by_code} \
         ORDER BY requested_time DESC, id DESC LIMIT $4 OFFSET $5"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(agency)
        .bind(from)
        .bind(to)
        .bind(limit)
        .bind(offset);
    for code in codes {
        query = query.bind(code);
    }
    query
        .fetch_all(tx.conn())
        .await?
        .iter()
        .map(Open311RequestRow::from_row)
        .collect()
}
