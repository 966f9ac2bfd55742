//! The gRPC handlers: parse each request into domain values, check the
//! caller's roles and agency, then read or change the directory or fan out
//! to the other services. The web dashboard's JSON API calls the same
//! methods.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::gateway::v1::gateway_service_server::GatewayService;
use touchstone_api::kpi::v1 as kpi;
use touchstone_api::register::v1 as rpb;
use touchstone_auth::{Caller, Denied, Role, Target, authorize};
use touchstone_platform::change::{self, Begun};
use touchstone_platform::crypto::MasterKey;
use touchstone_platform::db::{Db, Scope};
use touchstone_platform::error::Violations;
use touchstone_platform::idempotency::fingerprint;
use touchstone_platform::keyring::Keyring;
use touchstone_platform::names;
use touchstone_platform::times;

use crate::backends::{Backends, CallContext, Failure, classify};
use crate::cache::{self, Dashboards};
use crate::domain::{self, HUB, MemberFigure, Period};
use crate::error::Error;
use crate::open311_form::Submission;
use crate::store::{self, AgencyRow, PeerGroupRow, UnitRow};

/// Open complaints, in the complaints service's filter language.
const OPEN_COMPLAINTS: &str = "status != RESOLVED AND status != CLOSED AND status != WITHDRAWN";
/// Open complaints a dashboard lists, due first.
const QUEUE_LENGTH: i32 = 50;
/// At most this many responses are read for a dashboard's topics.
const MAX_TOPIC_RESPONSES: usize = 5_000;
/// Topics shown on a dashboard.
const TOP_TOPICS: usize = 10;
/// The characteristics a dashboard looks for equity gaps in.
const EQUITY_DIMENSIONS: [kpi::Dimension; 6] = [
    kpi::Dimension::AgeBand,
    kpi::Dimension::Gender,
    kpi::Dimension::Disability,
    kpi::Dimension::FirstNations,
    kpi::Dimension::CulturallyLinguisticallyDiverse,
    kpi::Dimension::RemoteLocation,
];
/// The satisfaction indicator dashboards and equity views use.
pub const SATISFACTION: &str = "share_satisfied.a11_satisfaction";

/// The gateway service.
#[derive(Debug, Clone)]
pub struct Gateway {
    db: Db,
    keys: Arc<Keyring>,
    backends: Backends,
    min_count: u64,
    limiter: Arc<domain::KeyLimiter>,
    /// Fan-out reads (GetDashboard, GetBenchmark) running at once: each
    /// makes several backend calls, so admitting as many as cheap calls
    /// (the server's limit) would let them all miss their deadlines
    /// together under overload instead of some finishing.
    fan_outs: Arc<tokio::sync::Semaphore>,
    /// Whole dashboards kept a moment for their caller (`cache`).
    dashboards: Arc<Dashboards>,
}

/// Fan-out reads per CPU the gateway runs at once.
const FAN_OUTS_PER_CPU: usize = 4;
/// How long a fan-out read waits, in order, for its turn before it is
/// refused with RESOURCE_EXHAUSTED. Short: a call waiting holds one of the
/// caller's HTTP/2 streams, and under overload its other calls queue for
/// those (at 50 x 1,000 in flight, admitted dashboards' p99 was 6.0 s with a
/// 1 s wait, 5.0 s with this one).
const FAN_OUT_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// What a valid API key allows: the `intake` role of one agency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key's agency.
    pub agency: String,
    /// The key's resource name (for audit: who wrote).
    pub key: String,
}

/// What Open311 shows of one request: its record here, its complaint's
/// public status, and the names it is shown with.
#[derive(Debug, Clone)]
pub struct Open311View {
    /// The record.
    pub row: store::Open311RequestRow,
    /// The complaint's public status; none for a survey response, which
    /// needs nothing done.
    pub status: Option<cpb::ComplaintStatus>,
    /// The service's name (its code once the service is gone).
    pub service_name: String,
    /// The agency's name: agency_responsible.
    pub agency_name: String,
    /// The agency's time zone, for datetimes.
    pub time_zone: String,
}

impl Open311View {
    fn of(row: store::Open311RequestRow, status: Option<cpb::ComplaintStatus>) -> Open311View {
        Open311View {
            row,
            status,
            service_name: String::new(),
            agency_name: String::new(),
            time_zone: String::new(),
        }
    }

    /// Open until the complaint is resolved, closed or withdrawn; a survey
    /// response is closed once received.
    pub fn is_open(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            !matches!(
                cpb::Status::try_from(s.status),
                Ok(cpb::Status::Resolved | cpb::Status::Closed | cpb::Status::Withdrawn)
            )
        })
    }
}

/// Unreachable backends and withheld sections of a partial answer (AIP-217).
#[derive(Debug, Default)]
struct Partial {
    unreachable: BTreeSet<&'static str>,
    withheld: BTreeSet<&'static str>,
}

impl Partial {
    /// The value of a backend call, or None with the failure noted.
    fn take<T>(
        &mut self,
        backend: &'static str,
        section: &'static str,
        r: Result<T, Status>,
    ) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(status) => {
                match classify(&status) {
                    Failure::Unreachable => {
                        if self.unreachable.insert(backend) {
                            tracing::warn!(backend, code = ?status.code(), "backend unreachable");
                        }
                    }
                    Failure::Withheld => {
                        self.withheld.insert(section);
                    }
                    Failure::Empty if status.code() == tonic::Code::InvalidArgument => {
                        // The gateway built a request the backend refuses: a bug here.
                        tracing::warn!(backend, section, "backend refused the gateway's request");
                    }
                    Failure::Empty => {
                        tracing::debug!(backend, code = ?status.code(), "backend had nothing");
                    }
                }
                None
            }
        }
    }
}

fn agency_of<'a>(field: &str, name: &'a str) -> Result<&'a str, Error> {
    Ok(names::parse_field(field, "agencies/{}", name)?[0])
}

fn page_size(requested: i32) -> Result<i64, Error> {
    touchstone_list::page_size(requested)
        .map(|n| n as i64)
        .map_err(|e| Error::invalid(e.field, e.description))
}

/// Page tokens are the last id of the page, hex-encoded.
fn decode_token(token: &str) -> Result<String, Error> {
    let bad = || Error::invalid("page_token", "is not a token from a previous response");
    if !token.len().is_multiple_of(2) {
        return Err(bad());
    }
    let bytes: Result<Vec<u8>, _> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
        .collect();
    String::from_utf8(bytes.map_err(|_| bad())?).map_err(|_| bad())
}

fn encode_token(last: &str) -> String {
    last.bytes().map(|b| format!("{b:02x}")).collect()
}

fn next_token<T>(rows: &mut Vec<T>, limit: i64, id: impl Fn(&T) -> &str) -> String {
    if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode_token(id(r))).unwrap_or_default()
    } else {
        String::new()
    }
}

fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&str],
) -> Result<Vec<String>, Error> {
    let paths: Vec<String> = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        return Ok(allowed.iter().map(|s| s.to_string()).collect());
    }
    for p in &paths {
        if !allowed.contains(&p.as_str()) {
            return Err(Error::invalid(
                "update_mask",
                format!("may name only {}", allowed.join(", ")),
            ));
        }
    }
    Ok(paths)
}

fn check_etag(given: &str, revision: i64) -> Result<(), Error> {
    if !given.is_empty() && given != store::etag(revision) {
        return Err(Error::StaleEtag);
    }
    Ok(())
}

fn consent_of(value: i32, field: &str) -> Result<pb::BenchmarkConsent, Error> {
    match pb::BenchmarkConsent::try_from(value) {
        Ok(pb::BenchmarkConsent::Unspecified) => Ok(pb::BenchmarkConsent::None),
        Ok(c) => Ok(c),
        Err(_) => Err(Error::invalid(field, "is not a benchmark consent")),
    }
}

/// Roles that read an agency's dashboard.
const DASHBOARD_ROLES: &[Role] = &[
    Role::Officer,
    Role::SeniorOfficer,
    Role::Analyst,
    Role::AgencyAdmin,
];

/// Roles of an agency that see the peer groups it belongs to and their benchmarks.
const PEER_ROLES: &[Role] = &[Role::Analyst, Role::AgencyAdmin];

/// Whether `caller` acts as hub_admin in every member agency: only then may it manage a
/// peer group or see it as the hub does (DESIGN §4: hub resources are scoped like agencies).
fn hub_admin_of_all(caller: &Caller, members: &[String]) -> bool {
    !members.is_empty() && members.iter().all(|m| caller.acts_as(Role::HubAdmin, m))
}

/// Whether `caller` may see `group`: as hub_admin of every member, or as an analyst or
/// agency_admin of a member agency.
fn peer_group_visible(caller: &Caller, group: &PeerGroupRow) -> bool {
    hub_admin_of_all(caller, &group.members)
        || caller.agency.as_deref().is_some_and(|a| {
            group.members.iter().any(|m| m == a) && caller.acts_as_any(PEER_ROLES, a)
        })
}

fn rfc3339_day(d: jiff::civil::Date) -> String {
    format!("{:04}-{:02}-{:02}T00:00:00Z", d.year(), d.month(), d.day())
}

impl Gateway {
    /// The gateway's own database.
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The channels to the services, for routes that forward a caller's
    /// request as it is (the web dashboard's complaint desk).
    pub(crate) fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The service over its directory database and the backends it joins.
    /// Data keys (for request fingerprints and stored responses) are stored
    /// in `db`, wrapped by `master`.
    pub fn new(db: Db, master: MasterKey, backends: Backends, min_count: u64) -> Gateway {
        Gateway {
            keys: Arc::new(Keyring::new(master, db.clone())),
            db,
            backends,
            min_count: min_count.max(1),
            limiter: Arc::new(domain::KeyLimiter::default()),
            fan_outs: Arc::new(tokio::sync::Semaphore::new(
                FAN_OUTS_PER_CPU
                    * std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            )),
            dashboards: Dashboards::new(std::time::Duration::ZERO),
        }
    }

    /// The same service keeping each whole dashboard for `ttl` for its
    /// caller (see `cache`); zero, as `new` makes it, keeps none.
    pub fn with_dashboard_cache(mut self, ttl: std::time::Duration) -> Gateway {
        self.dashboards = Dashboards::new(ttl);
        self
    }

    /// Something in `agency` is being changed through the gateway: its
    /// kept dashboards are forgotten when the returned guard is dropped
    /// (the change done, failed or given up).
    pub(crate) fn agency_changing(&self, agency: &str) -> cache::ForgetWhenDone {
        self.dashboards.forget_when_done(agency)
    }

    /// A turn to run a fan-out read (see `fan_outs`).
    async fn fan_out_turn(
        &self,
        ctx: &CallContext,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Error> {
        // Never past the caller's own time.
        let wait = FAN_OUT_WAIT.min(ctx.remaining());
        match tokio::time::timeout(wait, self.fan_outs.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Error::FanOutsExhausted),
        }
    }

    async fn begin<'a, R: prost::Message + Default + touchstone_api::Named>(
        &self,
        caller: &'a Caller,
        scope: &'a str,
        method: &'static str,
        request_id: &'a str,
        fingerprint: String,
    ) -> Result<Begun<'a, R>, Error> {
        Ok(change::begin(
            &self.db,
            &self.keys,
            caller,
            scope,
            method,
            request_id,
            fingerprint,
        )
        .await?)
    }

    // ---- agencies ----

    async fn create_agency(
        &self,
        caller: &Caller,
        req: pb::CreateAgencyRequest,
    ) -> Result<pb::Agency, Error> {
        if !caller.has_role(Role::HubAdmin) {
            return Err(Denied::Roles.into());
        }
        let agency = req.agency.clone().unwrap_or_default();
        let mut v = Violations::new();
        if let Err(e) = names::check_id(&req.agency_id) {
            v.add("agency_id", e.to_string());
        }
        if let Err(e) = domain::check_display_name(&agency.display_name) {
            v.add("agency.display_name", e);
        }
        if let Err(e) = domain::check_time_zone(&agency.time_zone) {
            v.add("agency.time_zone", e);
        }
        let consent = consent_of(agency.benchmark_consent, "agency.benchmark_consent");
        if let Err(Error::InvalidArgument(mut e)) = consent {
            v.add(e.remove(0).field, "is not a benchmark consent");
            return Err(Error::InvalidArgument(v.finish().err().unwrap_or_default()));
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let consent = consent?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::Agency>(caller, HUB, "CreateAgency", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_agency(&mut change.tx, &req.agency_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists("agency"));
        }
        let now = times::now_millis();
        let row = AgencyRow {
            id: req.agency_id.clone(),
            display_name: agency.display_name.trim().to_string(),
            time_zone: agency.time_zone.clone(),
            consent: consent as i64,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        store::insert_agency(&mut change.tx, &row)
            .await
            .map_err(|e| {
                if Error::is_unique_violation(&e) {
                    Error::AlreadyExists("agency")
                } else {
                    Error::Database(e)
                }
            })?;
        let out = row.to_proto();
        let name = out.name.clone();
        // A dashboard of it kept from before (in UTC) is not kept on.
        let _forget = self.agency_changing(&req.agency_id);
        Ok(change.finish(&name, out).await?)
    }

    async fn get_agency(&self, caller: &Caller, name: &str) -> Result<pb::Agency, Error> {
        let id = agency_of("name", name)?;
        authorize(caller, &Role::ALL, id, Target::Collection)?;
        let mut tx = self.db.read(Scope::Agency(id)).await?;
        store::get_agency(&mut tx, id)
            .await?
            .map(|a| a.to_proto())
            .ok_or(Error::NotFound("agency"))
    }

    pub(crate) async fn list_agencies(
        &self,
        caller: &Caller,
        req: pb::ListAgenciesRequest,
    ) -> Result<pb::ListAgenciesResponse, Error> {
        let limit = page_size(req.page_size)?;
        let after = decode_token(&req.page_token)?;
        let mut rows = if caller.has_role(Role::HubAdmin) {
            let mut tx = self.db.read(Scope::Agency(HUB)).await?;
            store::list_agencies(&mut tx, &after, limit + 1)
                .await?
                .into_iter()
                .filter(|a| caller.acts_in(&a.id))
                .collect()
        } else {
            let Some(own) = caller.agency.as_deref() else {
                return Ok(pb::ListAgenciesResponse::default());
            };
            let mut tx = self.db.read(Scope::Agency(own)).await?;
            store::get_agency(&mut tx, own)
                .await?
                .into_iter()
                .filter(|a| a.id.as_str() > after.as_str())
                .collect::<Vec<_>>()
        };
        let next_page_token = next_token(&mut rows, limit, |a| &a.id);
        Ok(pb::ListAgenciesResponse {
            agencies: rows.iter().map(AgencyRow::to_proto).collect(),
            next_page_token,
        })
    }

    async fn update_agency(
        &self,
        caller: &Caller,
        req: pb::UpdateAgencyRequest,
    ) -> Result<pb::Agency, Error> {
        let agency = req.agency.clone().unwrap_or_default();
        let id = agency_of("agency.name", &agency.name)?.to_string();
        authorize(caller, &[Role::HubAdmin], &id, Target::Collection)?;
        let paths = mask_paths(
            req.update_mask.as_ref(),
            &["display_name", "time_zone", "benchmark_consent"],
        )?;
        let mut v = Violations::new();
        for p in &paths {
            match p.as_str() {
                "display_name" => {
                    if let Err(e) = domain::check_display_name(&agency.display_name) {
                        v.add("agency.display_name", e);
                    }
                }
                "time_zone" => {
                    if let Err(e) = domain::check_time_zone(&agency.time_zone) {
                        v.add("agency.time_zone", e);
                    }
                }
                _ => {
                    if consent_of(agency.benchmark_consent, "").is_err() {
                        v.add("agency.benchmark_consent", "is not a benchmark consent");
                    }
                }
            }
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::Agency>(caller, HUB, "UpdateAgency", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut row = store::get_agency(&mut change.tx, &id)
            .await?
            .ok_or(Error::NotFound("agency"))?;
        check_etag(&agency.etag, row.revision)?;
        for p in &paths {
            match p.as_str() {
                "display_name" => row.display_name = agency.display_name.trim().to_string(),
                "time_zone" => row.time_zone = agency.time_zone.clone(),
                _ => row.consent = consent_of(agency.benchmark_consent, "")? as i64,
            }
        }
        row.revision += 1;
        row.update_time = times::now_millis();
        store::update_agency(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        // Its time zone sets the dashboards' current period.
        let _forget = self.agency_changing(&id);
        Ok(change.finish(&name, out).await?)
    }

    // ---- units ----

    async fn create_unit(
        &self,
        caller: &Caller,
        req: pb::CreateUnitRequest,
    ) -> Result<pb::Unit, Error> {
        let agency = agency_of("parent", &req.parent)?.to_string();
        authorize(caller, &[Role::AgencyAdmin], &agency, Target::Collection)?;
        let unit = req.unit.clone().unwrap_or_default();
        let mut v = Violations::new();
        if let Err(e) = names::check_id(&req.unit_id) {
            v.add("unit_id", e.to_string());
        }
        if let Err(e) = domain::check_display_name(&unit.display_name) {
            v.add("unit.display_name", e);
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::Unit>(caller, &agency, "CreateUnit", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_agency(&mut change.tx, &agency).await?.is_none() {
            return Err(Error::FailedPrecondition {
                reason: "AGENCY_NOT_IN_DIRECTORY",
                message: "the agency is not in the hub directory; a hub_admin adds it first",
            });
        }
        if store::get_unit(&mut change.tx, &agency, &req.unit_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists("unit"));
        }
        let now = times::now_millis();
        let row = UnitRow {
            agency: agency.clone(),
            id: req.unit_id.clone(),
            display_name: unit.display_name.trim().to_string(),
            revision: 1,
            create_time: now,
            update_time: now,
        };
        store::insert_unit(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        Ok(change.finish(&name, out).await?)
    }

    async fn get_unit(&self, caller: &Caller, name: &str) -> Result<pb::Unit, Error> {
        let ids = names::parse_field("name", "agencies/{}/units/{}", name)?;
        authorize(caller, &Role::ALL, ids[0], Target::Collection)?;
        let mut tx = self.db.read(Scope::Agency(ids[0])).await?;
        store::get_unit(&mut tx, ids[0], ids[1])
            .await?
            .map(|u| u.to_proto())
            .ok_or(Error::NotFound("unit"))
    }

    async fn list_units(
        &self,
        caller: &Caller,
        req: pb::ListUnitsRequest,
    ) -> Result<pb::ListUnitsResponse, Error> {
        let agency = agency_of("parent", &req.parent)?;
        authorize(caller, &Role::ALL, agency, Target::Collection)?;
        let limit = page_size(req.page_size)?;
        let after = decode_token(&req.page_token)?;
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let mut rows = store::list_units(&mut tx, agency, &after, limit + 1).await?;
        let next_page_token = next_token(&mut rows, limit, |u| &u.id);
        Ok(pb::ListUnitsResponse {
            units: rows.iter().map(UnitRow::to_proto).collect(),
            next_page_token,
        })
    }

    async fn update_unit(
        &self,
        caller: &Caller,
        req: pb::UpdateUnitRequest,
    ) -> Result<pb::Unit, Error> {
        let unit = req.unit.clone().unwrap_or_default();
        let ids = names::parse_field("unit.name", "agencies/{}/units/{}", &unit.name)?;
        let (agency, id) = (ids[0].to_string(), ids[1].to_string());
        authorize(caller, &[Role::AgencyAdmin], &agency, Target::Collection)?;
        mask_paths(req.update_mask.as_ref(), &["display_name"])?;
        domain::check_display_name(&unit.display_name)
            .map_err(|e| Error::invalid("unit.display_name", e))?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::Unit>(caller, &agency, "UpdateUnit", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut row = store::get_unit(&mut change.tx, &agency, &id)
            .await?
            .ok_or(Error::NotFound("unit"))?;
        check_etag(&unit.etag, row.revision)?;
        row.display_name = unit.display_name.trim().to_string();
        row.revision += 1;
        row.update_time = times::now_millis();
        store::update_unit(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        Ok(change.finish(&name, out).await?)
    }

    async fn delete_unit(&self, caller: &Caller, req: pb::DeleteUnitRequest) -> Result<(), Error> {
        let ids = names::parse_field("name", "agencies/{}/units/{}", &req.name)?;
        authorize(caller, &[Role::AgencyAdmin], ids[0], Target::Collection)?;
        let mut tx = self.db.write(Scope::Agency(ids[0])).await?;
        let row = store::get_unit(&mut tx, ids[0], ids[1])
            .await?
            .ok_or(Error::NotFound("unit"))?;
        check_etag(&req.etag, row.revision)?;
        store::delete_unit(&mut tx, ids[0], ids[1]).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- API keys ----

    async fn create_api_key(
        &self,
        caller: &Caller,
        req: pb::CreateApiKeyRequest,
    ) -> Result<pb::ApiKey, Error> {
        let agency = agency_of("parent", &req.parent)?.to_string();
        authorize(caller, &[Role::AgencyAdmin], &agency, Target::Collection)?;
        let key = req.api_key.clone().unwrap_or_default();
        let mut v = Violations::new();
        if let Err(e) = names::check_id(&req.api_key_id) {
            v.add("api_key_id", e.to_string());
        }
        if let Err(e) = domain::check_display_name(&key.display_name) {
            v.add("api_key.display_name", e);
        }
        let rate = domain::key_rate(key.requests_per_minute);
        if let Err(e) = &rate {
            v.add("api_key.requests_per_minute", e.clone());
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::ApiKey>(caller, &agency, "CreateApiKey", &req.request_id, fp)
            .await?
        {
            // The secret is not kept, so a retry answers without it.
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_agency(&mut change.tx, &agency).await?.is_none() {
            return Err(Error::FailedPrecondition {
                reason: "AGENCY_NOT_IN_DIRECTORY",
                message: "the agency is not in the hub directory; a hub_admin adds it first",
            });
        }
        if store::get_api_key(&mut change.tx, &agency, &req.api_key_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists("api key"));
        }
        let secret = domain::new_api_key();
        let row = store::ApiKeyRow {
            agency: agency.clone(),
            id: req.api_key_id.clone(),
            display_name: key.display_name.trim().to_string(),
            key_hash: domain::api_key_hash(&secret),
            requests_per_minute: i64::from(rate.unwrap_or(domain::DEFAULT_KEY_RATE)),
            create_time: times::now_millis(),
            revoke_time: None,
        };
        store::insert_api_key(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        let mut out = change.finish(&name, out).await?;
        out.key = secret;
        Ok(out)
    }

    async fn list_api_keys(
        &self,
        caller: &Caller,
        req: pb::ListApiKeysRequest,
    ) -> Result<pb::ListApiKeysResponse, Error> {
        let agency = agency_of("parent", &req.parent)?;
        authorize(caller, &[Role::AgencyAdmin], agency, Target::Collection)?;
        let limit = page_size(req.page_size)?;
        let after = decode_token(&req.page_token)?;
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let mut rows = store::list_api_keys(&mut tx, agency, &after, limit + 1).await?;
        let next_page_token = next_token(&mut rows, limit, |k| &k.id);
        Ok(pb::ListApiKeysResponse {
            api_keys: rows.iter().map(store::ApiKeyRow::to_proto).collect(),
            next_page_token,
        })
    }

    async fn revoke_api_key(
        &self,
        caller: &Caller,
        req: pb::RevokeApiKeyRequest,
    ) -> Result<pb::ApiKey, Error> {
        let ids = names::parse_field("name", "agencies/{}/apiKeys/{}", &req.name)?;
        let (agency, id) = (ids[0].to_string(), ids[1].to_string());
        authorize(caller, &[Role::AgencyAdmin], &agency, Target::Named)?;
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::ApiKey>(caller, &agency, "RevokeApiKey", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_api_key(&mut change.tx, &agency, &id)
            .await?
            .is_none()
        {
            return Err(Error::NotFound("api key"));
        }
        store::revoke_api_key(&mut change.tx, &agency, &id, times::now_millis()).await?;
        let row = store::get_api_key(&mut change.tx, &agency, &id)
            .await?
            .ok_or(Error::NotFound("api key"))?;
        let out = row.to_proto();
        Ok(change.finish(&req.name, out).await?)
    }

    /// Checks an API key presented by an agency system: it must exist, not
    /// be revoked, and be within its rate. The answer names its agency; the
    /// key may act there with the `intake` role only.
    pub async fn verify_api_key(&self, key: &str) -> Result<KeyGrant, Error> {
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::PermissionDenied("an api_key is required"));
        }
        let mut tx = self.db.read(Scope::AllAgencies).await?;
        let row = store::find_api_key(&mut tx, &domain::api_key_hash(key)).await?;
        tx.commit().await?;
        let row = match row {
            Some(r) if r.revoke_time.is_none() => r,
            // Unknown and revoked keys read the same, so a caller cannot
            // tell a guessed key from a revoked one.
            _ => return Err(Error::PermissionDenied("the api_key is not valid")),
        };
        let name = row.name();
        let rate = i32::try_from(row.requests_per_minute).unwrap_or(domain::DEFAULT_KEY_RATE);
        if !self.limiter.admit(&name, rate, times::now_millis()) {
            return Err(Error::RateLimited);
        }
        Ok(KeyGrant {
            agency: row.agency,
            key: name,
        })
    }

    // ---- Open311 services ----

    async fn create_open311_service(
        &self,
        caller: &Caller,
        ctx: &CallContext,
        req: pb::CreateOpen311ServiceRequest,
    ) -> Result<pb::Open311Service, Error> {
        let agency = agency_of("parent", &req.parent)?.to_string();
        authorize(caller, &[Role::AgencyAdmin], &agency, Target::Collection)?;
        let service = req.open311_service.clone().unwrap_or_default();
        let mut v = Violations::new();
        if let Err(e) = names::check_id(&req.open311_service_id) {
            v.add("open311_service_id", e.to_string());
        }
        if let Err(e) = domain::check_display_name(&service.display_name) {
            v.add("open311_service.display_name", e);
        }
        domain::check_open311_service(&service, &mut v);
        v.finish().map_err(Error::InvalidArgument)?;
        let attributes = match service.survey.trim() {
            "" => Vec::new(),
            survey => self.survey_attributes(ctx, &agency, survey).await?,
        };
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::Open311Service>(
                caller,
                &agency,
                "CreateOpen311Service",
                &req.request_id,
                fp,
            )
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_agency(&mut change.tx, &agency).await?.is_none() {
            return Err(Error::FailedPrecondition {
                reason: "AGENCY_NOT_IN_DIRECTORY",
                message: "the agency is not in the hub directory; a hub_admin adds it first",
            });
        }
        if store::get_open311_service(&mut change.tx, &agency, &req.open311_service_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists("open311 service"));
        }
        let row = store::Open311ServiceRow {
            agency: agency.clone(),
            id: req.open311_service_id.clone(),
            display_name: service.display_name.trim().to_string(),
            description: service.description.trim().to_string(),
            group: service.group.trim().to_string(),
            keywords: service
                .keywords
                .iter()
                .map(|k| k.trim().to_string())
                .collect(),
            complaint_category: service.complaint_category.trim().to_string(),
            complaint_service: service.complaint_service.trim().to_string(),
            create_time: times::now_millis(),
            survey: service.survey.trim().to_string(),
            attributes,
        };
        store::insert_open311_service(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        Ok(change.finish(&name, out).await?)
    }

    /// The questions of a published survey of `agency` as Open311
    /// attributes, read with the caller's token (an agency_admin may read
    /// its surveys).
    async fn survey_attributes(
        &self,
        ctx: &CallContext,
        agency: &str,
        survey: &str,
    ) -> Result<Vec<domain::Open311Attribute>, Error> {
        let ids = names::parse_field("open311_service.survey", "agencies/{}/surveys/{}", survey)?;
        if ids[0] != agency {
            return Err(Error::invalid(
                "open311_service.survey",
                "must be a survey of the same agency",
            ));
        }
        let found = ctx
            .run(
                self.backends
                    .feedback()
                    .get_survey(ctx.request(fpb::GetSurveyRequest {
                        name: survey.to_string(),
                    })),
            )
            .await;
        let found = match found {
            Ok(s) => s,
            Err(status) if status.code() == tonic::Code::NotFound => {
                return Err(Error::invalid("open311_service.survey", "no such survey"));
            }
            Err(status) => return Err(Error::Backend(status)),
        };
        if found.state != fpb::SurveyState::Published as i32 {
            return Err(Error::FailedPrecondition {
                reason: "SURVEY_NOT_PUBLISHED",
                message: "only a published survey can be an Open311 service",
            });
        }
        Ok(domain::Open311Attribute::of_survey(&found))
    }

    async fn list_open311_services(
        &self,
        caller: &Caller,
        req: pb::ListOpen311ServicesRequest,
    ) -> Result<pb::ListOpen311ServicesResponse, Error> {
        let agency = agency_of("parent", &req.parent)?;
        authorize(caller, &[Role::AgencyAdmin], agency, Target::Collection)?;
        let limit = page_size(req.page_size)?;
        let after = decode_token(&req.page_token)?;
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let mut rows = store::list_open311_services(&mut tx, agency, &after, limit + 1).await?;
        let next_page_token = next_token(&mut rows, limit, |k| &k.id);
        Ok(pb::ListOpen311ServicesResponse {
            open311_services: rows
                .iter()
                .map(store::Open311ServiceRow::to_proto)
                .collect(),
            next_page_token,
        })
    }

    async fn delete_open311_service(
        &self,
        caller: &Caller,
        req: pb::DeleteOpen311ServiceRequest,
    ) -> Result<(), Error> {
        let ids = names::parse_field("name", "agencies/{}/open311Services/{}", &req.name)?;
        authorize(caller, &[Role::AgencyAdmin], ids[0], Target::Named)?;
        let mut tx = self.db.write(Scope::Agency(ids[0])).await?;
        if store::get_open311_service(&mut tx, ids[0], ids[1])
            .await?
            .is_none()
        {
            return Err(Error::NotFound("open311 service"));
        }
        store::delete_open311_service(&mut tx, ids[0], ids[1]).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The agency an Open311 `jurisdiction_id` names: the id given, which
    /// must be in the directory; or, when none is given, the hub's only
    /// agency. Open311 lists its services to anyone, so this needs no caller.
    pub async fn open311_jurisdiction(
        &self,
        jurisdiction_id: Option<&str>,
    ) -> Result<domain::Jurisdiction, Error> {
        let mut tx = self.db.read(Scope::AllAgencies).await?;
        let found = match jurisdiction_id {
            Some(id) => match store::get_agency(&mut tx, id).await? {
                Some(a) => domain::Jurisdiction::Agency(a.id),
                None => domain::Jurisdiction::Unknown,
            },
            None => {
                let mut two = store::list_agencies(&mut tx, "", 2).await?;
                match (two.len(), two.pop()) {
                    (1, Some(a)) => domain::Jurisdiction::Agency(a.id),
                    _ => domain::Jurisdiction::Missing,
                }
            }
        };
        tx.commit().await?;
        Ok(found)
    }

    /// An agency's Open311 services, by code (every one: a public catalogue).
    pub async fn open311_services(
        &self,
        agency: &str,
    ) -> Result<Vec<store::Open311ServiceRow>, Error> {
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let mut all = Vec::new();
        loop {
            let after = all
                .last()
                .map(|s: &store::Open311ServiceRow| s.id.clone())
                .unwrap_or_default();
            let page = store::list_open311_services(&mut tx, agency, &after, 1000).await?;
            let done = page.len() < 1000;
            all.extend(page);
            if done {
                break;
            }
        }
        tx.commit().await?;
        Ok(all)
    }

    /// One Open311 service of an agency.
    pub async fn open311_service(
        &self,
        agency: &str,
        code: &str,
    ) -> Result<Option<store::Open311ServiceRow>, Error> {
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let found = store::get_open311_service(&mut tx, agency, code).await?;
        tx.commit().await?;
        Ok(found)
    }

    // ---- Open311 requests ----

    /// Takes in an Open311 `POST requests` made with `grant`'s key: a
    /// complaint of the service's category, created through the complaints
    /// API by the gateway acting as the key's `intake` (so it gets its
    /// clocks, events and sealed personal fields), and the request's public
    /// record here. Answers the service_request_id (the complaint's id). A
    /// retry of the same POST (same key, device_id or account_id, and
    /// fields) within [`domain::OPEN311_RETRY_WINDOW_MILLIS`] answers the
    /// first id and creates nothing.
    pub async fn open311_submit(
        &self,
        grant: &KeyGrant,
        sub: &Submission,
    ) -> Result<String, Error> {
        let agency = grant.agency.as_str();
        if sub.jurisdiction_id.as_deref().is_some_and(|j| j != agency) {
            return Err(Error::PermissionDenied(
                "the api_key is not valid for this jurisdiction_id",
            ));
        }
        let service = self
            .open311_service(agency, &sub.service_code)
            .await?
            .ok_or(Error::NotFound("service_code"))?;
        let answers = if service.survey.is_empty() {
            if let Some(code) = sub.attributes.keys().next() {
                return Err(Error::invalid(
                    &format!("attribute[{code}]"),
                    "this service takes no attributes",
                ));
            }
            None
        } else {
            Some(
                domain::open311_answers(&service.attributes, sub)
                    .map_err(Error::InvalidArgument)?,
            )
        };
        let now = times::now_millis();
        let retry_key = if sub.identifies_sender() {
            let mut tx = self.db.write(Scope::Agency(agency)).await?;
            let key = self.keys.data_key(&mut tx, agency).await?;
            let retry_key = key.blind_index(
                "open311_retry",
                &domain::open311_retry_text(&grant.key, sub),
            );
            let since = now - domain::OPEN311_RETRY_WINDOW_MILLIS;
            let first = store::find_open311_retry(&mut tx, agency, &retry_key, since).await?;
            tx.commit().await?;
            if let Some(first) = first {
                return Ok(first.id);
            }
            retry_key
        } else {
            String::new()
        };
        let ctx = CallContext::acting_as(
            &self.backends.service_token,
            Role::Intake,
            agency,
            &grant.key,
        )
        .map_err(Error::Backend)?;
        let request_id = domain::open311_request_id(&retry_key, now);
        let _forget = self.agency_changing(agency);
        let (id, requested_time) = match answers {
            Some(answers) => {
                self.submit_response(&ctx, &service, answers, request_id)
                    .await?
            }
            None => {
                self.submit_complaint(&ctx, agency, &service, sub, request_id)
                    .await?
            }
        };
        let (latitude, longitude) = sub.location.lat_long.clone().unwrap_or_default();
        let row = store::Open311RequestRow {
            agency: agency.to_string(),
            id: id.clone(),
            service_code: service.id.clone(),
            api_key: grant.key.rsplit('/').next().unwrap_or_default().to_string(),
            retry_key,
            latitude,
            longitude,
            address_string: sub.location.address_string.clone(),
            address_id: sub.location.address_id.clone(),
            requested_time: requested_time.unwrap_or(now),
            survey: service.survey.clone(),
        };
        let mut tx = self.db.write(Scope::Agency(agency)).await?;
        store::insert_open311_request(&mut tx, &row).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A survey response of the service's survey, through the feedback API
    /// as the key's intake: its id and submit time. The request's contact
    /// details are not passed on: a survey response is anonymous.
    async fn submit_response(
        &self,
        ctx: &CallContext,
        service: &store::Open311ServiceRow,
        answers: Vec<fpb::Answer>,
        request_id: String,
    ) -> Result<(String, Option<i64>), Error> {
        let made = ctx
            .run(self.backends.feedback().submit_response(ctx.request(
                fpb::SubmitResponseRequest {
                    parent: service.survey.clone(),
                    response: Some(fpb::Response {
                        answers,
                        channel: touchstone_api::common::v1::Channel::Web as i32,
                        ..Default::default()
                    }),
                    request_id,
                },
            )))
            .await
            .map_err(Error::Backend)?;
        let id = made.name.rsplit('/').next().unwrap_or_default().to_string();
        Ok((id, made.submit_time.as_ref().and_then(times::millis)))
    }

    /// A complaint of the service's category, through the complaints API as
    /// the key's intake: its id and receive time.
    async fn submit_complaint(
        &self,
        ctx: &CallContext,
        agency: &str,
        service: &store::Open311ServiceRow,
        sub: &Submission,
        request_id: String,
    ) -> Result<(String, Option<i64>), Error> {
        let who = if sub.name.is_empty() && sub.email.is_empty() && sub.phone.is_empty() {
            cpb::complainant::Who::Anonymous(true)
        } else {
            cpb::complainant::Who::Contact(cpb::ContactDetails {
                display_name: sub.name.clone(),
                email: sub.email.clone(),
                phone: sub.phone.clone(),
            })
        };
        let made = ctx
            .run(self.backends.complaints().create_complaint(ctx.request(
                cpb::CreateComplaintRequest {
                    parent: format!("agencies/{agency}"),
                    complaint: Some(cpb::Complaint {
                        complainant: Some(cpb::Complainant { who: Some(who) }),
                        channel: touchstone_api::common::v1::Channel::Web as i32,
                        service: service.complaint_service.clone(),
                        category: service.complaint_category.clone(),
                        description: sub.narrative(),
                        severity: cpb::Severity::Medium as i32,
                        ..Default::default()
                    }),
                    complaint_id: String::new(),
                    request_id,
                },
            )))
            .await
            .map_err(Error::Backend)?;
        let id = made.name.rsplit('/').next().unwrap_or_default().to_string();
        Ok((id, made.receive_time.as_ref().and_then(times::millis)))
    }

    /// Open311 requests of `agency` as `GET requests` asks for them, each
    /// with its complaint's public status (read by the gateway on its own
    /// behalf: no personal data, no audit record).
    pub async fn open311_requests(
        &self,
        agency: &str,
        query: &domain::RequestQuery,
    ) -> Result<Vec<Open311View>, Error> {
        let ctx = CallContext::own(&self.backends.service_token).map_err(Error::Backend)?;
        let mut out = Vec::new();
        if let Some(ids) = &query.ids {
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let rows = store::open311_requests_by_id(&mut tx, agency, ids).await?;
            tx.commit().await?;
            out.extend(self.with_statuses(&ctx, agency, rows).await?);
            return self.named(agency, out).await;
        }
        let page_size = query.page_size;
        let mut skip = (query.page - 1).saturating_mul(page_size);
        // Without a status filter the page is the page of rows; with one,
        // rows are read in chunks and kept while their status matches.
        let (mut offset, chunk) = match query.open {
            None => (std::mem::take(&mut skip), page_size),
            Some(_) => (0, domain::OPEN311_MAX_PAGE),
        };
        loop {
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let rows = store::list_open311_requests(
                &mut tx,
                agency,
                &query.codes,
                query.window,
                offset,
                chunk,
            )
            .await?;
            tx.commit().await?;
            let read = rows.len() as i64;
            for view in self.with_statuses(&ctx, agency, rows).await? {
                if query.open.is_some_and(|open| open != view.is_open()) {
                    continue;
                }
                if skip > 0 {
                    skip -= 1;
                    continue;
                }
                out.push(view);
                if out.len() as i64 >= page_size {
                    return self.named(agency, out).await;
                }
            }
            if read < chunk || query.open.is_none() {
                return self.named(agency, out).await;
            }
            offset += chunk;
        }
    }

    /// One Open311 request of `agency`.
    pub async fn open311_request(&self, agency: &str, id: &str) -> Result<Open311View, Error> {
        let query = domain::RequestQuery::ids(vec![id.to_string()]);
        self.open311_requests(agency, &query)
            .await?
            .pop()
            .ok_or(Error::NotFound("service_request_id"))
    }

    /// Rows joined with their complaints' statuses (rows whose complaint
    /// the complaints service does not know are left out).
    async fn with_statuses(
        &self,
        ctx: &CallContext,
        agency: &str,
        rows: Vec<store::Open311RequestRow>,
    ) -> Result<Vec<Open311View>, Error> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(domain::OPEN311_MAX_PAGE as usize) {
            let names: Vec<String> = chunk
                .iter()
                .filter(|r| r.survey.is_empty())
                .map(|r| format!("agencies/{agency}/complaints/{}", r.id))
                .collect();
            if names.is_empty() {
                out.extend(chunk.iter().map(|row| Open311View::of(row.clone(), None)));
                continue;
            }
            let found = ctx
                .run(
                    self.backends
                        .complaints()
                        .get_complaint_statuses(ctx.request(cpb::GetComplaintStatusesRequest {
                            parent: format!("agencies/{agency}"),
                            names,
                        })),
                )
                .await
                .map_err(Error::Backend)?;
            let mut by_name: BTreeMap<String, cpb::ComplaintStatus> = found
                .statuses
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect();
            for row in chunk {
                if !row.survey.is_empty() {
                    out.push(Open311View::of(row.clone(), None));
                    continue;
                }
                let name = format!("agencies/{agency}/complaints/{}", row.id);
                if let Some(status) = by_name.remove(&name) {
                    out.push(Open311View::of(row.clone(), Some(status)));
                }
            }
        }
        Ok(out)
    }

    /// Fills in the names Open311 shows: the service's and the agency's,
    /// and the agency's time zone for the datetimes.
    async fn named(
        &self,
        agency: &str,
        mut views: Vec<Open311View>,
    ) -> Result<Vec<Open311View>, Error> {
        if views.is_empty() {
            return Ok(views);
        }
        let services: BTreeMap<String, String> = self
            .open311_services(agency)
            .await?
            .into_iter()
            .map(|s| (s.id, s.display_name))
            .collect();
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let found = store::get_agency(&mut tx, agency).await?;
        tx.commit().await?;
        let (agency_name, time_zone) = found
            .map(|a| (a.display_name, a.time_zone))
            .unwrap_or_else(|| (agency.to_string(), "UTC".into()));
        for v in &mut views {
            v.service_name = services
                .get(&v.row.service_code)
                .cloned()
                .unwrap_or_else(|| v.row.service_code.clone());
            v.agency_name.clone_from(&agency_name);
            v.time_zone.clone_from(&time_zone);
        }
        Ok(views)
    }

    // ---- peer groups ----

    /// Checks members: agencies/{a}, no repeats, each in the directory.
    async fn check_members(&self, field: &str, members: &[String]) -> Result<Vec<String>, Error> {
        let mut v = Violations::new();
        let mut ids = Vec::new();
        if members.is_empty() {
            v.add(field, "at least one agency");
        }
        if members.len() > 500 {
            v.add(field, "at most 500 agencies");
        }
        for (i, m) in members.iter().enumerate() {
            match names::parse_field(&format!("{field}[{i}]"), "agencies/{}", m) {
                Ok(parts) if ids.iter().any(|x| x == parts[0]) => {
                    v.add(format!("{field}[{i}]"), "repeats an agency");
                }
                Ok(parts) => ids.push(parts[0].to_string()),
                Err(e) => v.add(e.field, e.description),
            }
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let mut v = Violations::new();
        let mut tx = self.db.read(Scope::Agency(HUB)).await?;
        let known = store::agencies_in(&mut tx, &ids).await?;
        for (i, id) in ids.iter().enumerate() {
            if !known.iter().any(|a| &a.id == id) {
                v.add(
                    format!("{field}[{i}]"),
                    "is not an agency of the hub directory",
                );
            }
        }
        v.finish().map_err(Error::InvalidArgument)?;
        Ok(ids)
    }

    async fn create_peer_group(
        &self,
        caller: &Caller,
        req: pb::CreatePeerGroupRequest,
    ) -> Result<pb::PeerGroup, Error> {
        if !caller.has_role(Role::HubAdmin) {
            return Err(Denied::Roles.into());
        }
        let group = req.peer_group.clone().unwrap_or_default();
        names::check_id(&req.peer_group_id)
            .map_err(|e| Error::invalid("peer_group_id", e.to_string()))?;
        domain::check_display_name(&group.display_name)
            .map_err(|e| Error::invalid("peer_group.display_name", e))?;
        let members = self
            .check_members("peer_group.agencies", &group.agencies)
            .await?;
        if !hub_admin_of_all(caller, &members) {
            return Err(Error::PermissionDenied(
                "a hub_admin groups only agencies its token covers",
            ));
        }
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::PeerGroup>(caller, HUB, "CreatePeerGroup", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if store::get_peer_group(&mut change.tx, &req.peer_group_id)
            .await?
            .is_some()
        {
            return Err(Error::AlreadyExists("peer group"));
        }
        let now = times::now_millis();
        let row = PeerGroupRow {
            id: req.peer_group_id.clone(),
            display_name: group.display_name.trim().to_string(),
            members,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        store::insert_peer_group(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        Ok(change.finish(&name, out).await?)
    }

    /// A peer group the caller may see (see [`peer_group_visible`]); any other is
    /// NOT_FOUND, so that its existence stays private.
    async fn visible_peer_group(&self, caller: &Caller, id: &str) -> Result<PeerGroupRow, Error> {
        let mut tx = self.db.read(Scope::Agency(HUB)).await?;
        store::get_peer_group(&mut tx, id)
            .await?
            .filter(|g| peer_group_visible(caller, g))
            .ok_or(Error::NotFound("peer group"))
    }

    pub(crate) async fn list_peer_groups(
        &self,
        caller: &Caller,
        req: pb::ListPeerGroupsRequest,
    ) -> Result<pb::ListPeerGroupsResponse, Error> {
        let limit = page_size(req.page_size)?;
        let after = decode_token(&req.page_token)?;
        let own = caller
            .agency
            .as_deref()
            .filter(|a| caller.acts_as_any(PEER_ROLES, a));
        let member = if caller.has_role(Role::HubAdmin) {
            None
        } else if own.is_some() {
            own
        } else {
            return Err(Error::PermissionDenied(
                "peer groups are for hub_admin, analyst and agency_admin",
            ));
        };
        // A hub_admin sees only groups inside its scope: read on past the ones it may not
        // see until the page is full.
        let mut tx = self.db.read(Scope::Agency(HUB)).await?;
        let mut rows = Vec::new();
        let mut cursor = after;
        loop {
            let batch = store::list_peer_groups(&mut tx, member, &cursor, limit + 1).await?;
            let exhausted = (batch.len() as i64) < limit + 1;
            if let Some(last) = batch.last() {
                cursor = last.id.clone();
            }
            rows.extend(batch.into_iter().filter(|g| peer_group_visible(caller, g)));
            if exhausted || rows.len() as i64 > limit {
                break;
            }
        }
        rows.truncate(limit as usize + 1);
        let next_page_token = next_token(&mut rows, limit, |g| &g.id);
        Ok(pb::ListPeerGroupsResponse {
            peer_groups: rows.iter().map(PeerGroupRow::to_proto).collect(),
            next_page_token,
        })
    }

    async fn update_peer_group(
        &self,
        caller: &Caller,
        req: pb::UpdatePeerGroupRequest,
    ) -> Result<pb::PeerGroup, Error> {
        if !caller.has_role(Role::HubAdmin) {
            return Err(Denied::Roles.into());
        }
        let group = req.peer_group.clone().unwrap_or_default();
        let id =
            names::parse_field("peer_group.name", "peerGroups/{}", &group.name)?[0].to_string();
        let paths = mask_paths(req.update_mask.as_ref(), &["display_name", "agencies"])?;
        let mut members = None;
        for p in &paths {
            if p == "display_name" {
                domain::check_display_name(&group.display_name)
                    .map_err(|e| Error::invalid("peer_group.display_name", e))?;
            } else {
                let m = self
                    .check_members("peer_group.agencies", &group.agencies)
                    .await?;
                if !hub_admin_of_all(caller, &m) {
                    return Err(Error::PermissionDenied(
                        "a hub_admin groups only agencies its token covers",
                    ));
                }
                members = Some(m);
            }
        }
        let fp = fingerprint(&req);
        let mut change = match self
            .begin::<pb::PeerGroup>(caller, HUB, "UpdatePeerGroup", &req.request_id, fp)
            .await?
        {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut row = store::get_peer_group(&mut change.tx, &id)
            .await?
            .filter(|g| hub_admin_of_all(caller, &g.members))
            .ok_or(Error::NotFound("peer group"))?;
        check_etag(&group.etag, row.revision)?;
        if paths.iter().any(|p| p == "display_name") {
            row.display_name = group.display_name.trim().to_string();
        }
        if let Some(m) = members {
            row.members = m;
        }
        row.revision += 1;
        row.update_time = times::now_millis();
        store::update_peer_group(&mut change.tx, &row).await?;
        let out = row.to_proto();
        let name = out.name.clone();
        Ok(change.finish(&name, out).await?)
    }

    async fn delete_peer_group(
        &self,
        caller: &Caller,
        req: pb::DeletePeerGroupRequest,
    ) -> Result<(), Error> {
        if !caller.has_role(Role::HubAdmin) {
            return Err(Denied::Roles.into());
        }
        let id = names::parse_field("name", "peerGroups/{}", &req.name)?[0];
        let mut tx = self.db.write(Scope::Agency(HUB)).await?;
        let row = store::get_peer_group(&mut tx, id)
            .await?
            .filter(|g| hub_admin_of_all(caller, &g.members))
            .ok_or(Error::NotFound("peer group"))?;
        check_etag(&req.etag, row.revision)?;
        store::delete_peer_group(&mut tx, id).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- dashboard ----

    /// The agency's time zone from the directory (UTC when it is not there).
    async fn time_zone(&self, agency: &str) -> Result<String, Error> {
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        Ok(store::get_agency(&mut tx, agency)
            .await?
            .map(|a| a.time_zone)
            .unwrap_or_else(|| "UTC".into()))
    }

    /// An agency's dashboard: every backend at once, within the caller's
    /// time; or the same caller's same dashboard of a moment ago (`cache`).
    pub async fn dashboard(
        &self,
        caller: &Caller,
        ctx: &CallContext,
        req: pb::GetDashboardRequest,
    ) -> Result<pb::Dashboard, Error> {
        let agency = agency_of("agency", &req.agency)?.to_string();
        authorize(caller, DASHBOARD_ROLES, &agency, Target::Collection)?;
        // Checked, and in its one spelling, before anything is kept under it
        // (none: the current quarter in the agency's time zone, which a
        // non-empty period does not depend on).
        let period = if req.period.trim().is_empty() {
            None
        } else {
            Some(
                Period::parse(&req.period, domain::today_in("UTC"))
                    .map_err(|e| Error::invalid("period", e))?,
            )
        };
        let key = cache::Key {
            caller: caller.clone(),
            agency: agency.clone(),
            period: period.map(|p| p.to_string()).unwrap_or_default(),
        };
        // The service and context are cloned only when the dashboard is
        // computed, not for an answer kept.
        let compute = || {
            let (gateway, own) = (self.clone(), ctx.clone());
            async move {
                gateway
                    .compute_dashboard(&own, agency, period)
                    .await
                    .map_err(Status::from)
            }
        };
        self.dashboards
            .get(key, ctx.deadline(), compute)
            .await
            .map_err(Error::Backend)
    }

    /// An authorized caller's dashboard of `period` (none: the current
    /// quarter), computed.
    async fn compute_dashboard(
        &self,
        ctx: &CallContext,
        agency: String,
        period: Option<Period>,
    ) -> Result<pb::Dashboard, Error> {
        let tz = self.time_zone(&agency).await?;
        let today = domain::today_in(&tz);
        let period = period.unwrap_or_else(|| Period::quarter_of(today));
        // Checked and authorized first: a bad request is told so even
        // while every turn is taken.
        let _turn = self.fan_out_turn(ctx).await?;
        let (kpi, complaints, follow_ups, topics) = futures::join!(
            self.kpi_part(ctx, &agency, period),
            self.open_complaints(ctx, &agency),
            self.open_follow_ups(ctx, &agency, today),
            self.topics(ctx, &agency, period),
        );
        let mut partial = Partial::default();
        let (start, end) = period.bounds();
        let mut out = pb::Dashboard {
            agency: format!("agencies/{agency}"),
            period: period.to_string(),
            start_date: Some(domain::wire_date(start)),
            end_date: Some(domain::wire_date(end)),
            min_count: self.min_count as i64,
            ..Default::default()
        };
        let mut feedback = pb::FeedbackSummary::default();
        kpi.fill(&mut out, &mut feedback, &mut partial);
        out.complaints = partial.take("complaints", "complaints", complaints);
        if let Some((open, overdue)) = partial.take("feedback", "follow_ups", follow_ups) {
            feedback.follow_ups_open = open;
            feedback.follow_ups_overdue = overdue;
        }
        out.feedback = Some(feedback);
        out.topics = partial
            .take("feedback", "topics", topics)
            .unwrap_or_default();
        out.unreachable = partial.unreachable.iter().map(|s| s.to_string()).collect();
        out.withheld = partial.withheld.iter().map(|s| s.to_string()).collect();
        Ok(out)
    }

    /// The dashboard's figures from the KPI service in one BatchGetFigures
    /// call: the charter reports of the period and the one before, three
    /// feedback indicators, and the equity report per dimension. Each part
    /// keeps its own outcome, so one withheld or failed part leaves the rest.
    async fn kpi_part(&self, ctx: &CallContext, agency: &str, period: Period) -> KpiPart {
        let name = format!("agencies/{agency}");
        let (start, end) = period.bounds();
        let charter = |p: Period| kpi::GetCharterReportRequest {
            agency: name.clone(),
            period: p.granularity() as i32,
            date: Some(domain::wire_date(p.bounds().0)),
        };
        let query = |indicator: &str| kpi::QueryIndicatorRequest {
            agency: name.clone(),
            indicator: indicator.to_string(),
            start_date: Some(domain::wire_date(start)),
            end_date: Some(domain::wire_date(end)),
            ..Default::default()
        };
        let equity = |d: kpi::Dimension| kpi::GetEquityReportRequest {
            agency: name.clone(),
            indicator: SATISFACTION.into(),
            start_date: Some(domain::wire_date(start)),
            end_date: Some(domain::wire_date(end)),
            dimension: d as i32,
            scope: None,
        };
        let req = kpi::BatchGetFiguresRequest {
            queries: vec![query("response_rate"), query(SATISFACTION), query("nps")],
            charter_reports: vec![charter(period), charter(period.previous())],
            equity_reports: EQUITY_DIMENSIONS.iter().map(|&d| equity(d)).collect(),
        };
        let mut client = self.backends.kpi();
        let answer = ctx.run(client.batch_get_figures(ctx.request(req))).await;
        KpiPart::from_batch(answer)
    }

    async fn open_complaints(
        &self,
        ctx: &CallContext,
        agency: &str,
    ) -> Result<pb::ComplaintSummary, Status> {
        // Counts from the complaints service (no complaint leaves it, so no
        // audit record), and only the 50 due first as records, in the basic
        // view.
        let mut client = self.backends.complaints();
        let summary = cpb::SummarizeComplaintsRequest {
            parent: format!("agencies/{agency}"),
        };
        let queue = cpb::ListComplaintsRequest {
            parent: format!("agencies/{agency}"),
            page_size: QUEUE_LENGTH,
            page_token: String::new(),
            filter: OPEN_COMPLAINTS.into(),
            order_by: "due_time".into(),
            assigned_to_me: false,
            // The queue shows no personal data, so it reads none: no
            // complaint document is opened and no read is audited.
            view: cpb::ComplaintView::Basic as i32,
        };
        let mut other = client.clone();
        let (tallies, first) = tokio::try_join!(
            ctx.run(client.summarize_complaints(ctx.request(summary))),
            ctx.run(other.list_complaints(ctx.request(queue))),
        )?;
        let counts: Vec<pb::ComplaintCount> = tallies
            .tallies
            .iter()
            .map(|t| pb::ComplaintCount {
                stage: t.stage,
                severity: t.severity,
                open: t.open,
                overdue: t.overdue,
            })
            .collect();
        let open = counts.iter().map(|c| c.open).sum();
        let overdue = counts.iter().map(|c| c.overdue).sum();
        let mut queue: Vec<pb::QueueItem> =
            first.complaints.iter().map(domain::queue_item).collect();
        let due = |q: &pb::QueueItem| {
            q.clock
                .as_ref()
                .and_then(|c| c.due_time)
                .map_or(i64::MAX, |t| times::millis(&t).unwrap_or(i64::MAX))
        };
        queue.sort_by_key(|q| (!q.overdue, due(q)));
        Ok(pb::ComplaintSummary {
            open,
            overdue,
            counts,
            queue,
            truncated: false,
        })
    }

    async fn open_follow_ups(
        &self,
        ctx: &CallContext,
        agency: &str,
        today: jiff::civil::Date,
    ) -> Result<(i64, i64), Status> {
        // Counts from the feedback service: no follow-up (each names a
        // client) leaves it, so none is read or audited to be counted.
        let mut client = self.backends.feedback();
        let req = fpb::SummarizeFollowUpsRequest {
            parent: format!("agencies/{agency}"),
            as_of: Some(domain::wire_date(today)),
        };
        let counts = ctx
            .run(client.summarize_follow_ups(ctx.request(req)))
            .await?;
        Ok((counts.open, counts.overdue))
    }

    async fn topics(
        &self,
        ctx: &CallContext,
        agency: &str,
        period: Period,
    ) -> Result<Vec<pb::TopicCount>, Status> {
        let mut client = self.backends.feedback();
        let (start, end) = period.bounds();
        let after_end = end.tomorrow().unwrap_or(end);
        let filter = format!(
            "submit_time >= \"{}\" AND submit_time < \"{}\"",
            rfc3339_day(start),
            rfc3339_day(after_end)
        );
        let mut responses = Vec::new();
        let mut token = String::new();
        loop {
            let req = fpb::ListResponsesRequest {
                parent: format!("agencies/{agency}/surveys/-"),
                page_size: 1000,
                page_token: token,
                filter: filter.clone(),
                // The period's latest first, read through the responses'
                // index by submit time (not a sort of the agency's all).
                order_by: "submit_time desc".into(),
                // Topics are counted, no comment as written is needed: no
                // personal data is read, so none is audited.
                view: fpb::ResponseView::Basic as i32,
            };
            let page = ctx.run(client.list_responses(ctx.request(req))).await?;
            responses.extend(page.responses);
            token = page.next_page_token;
            if token.is_empty() || responses.len() >= MAX_TOPIC_RESPONSES {
                break;
            }
        }
        Ok(domain::count_topics(&responses, TOP_TOPICS))
    }

    /// The dashboard's backend calls made one after another, for the
    /// benchmark that measures what the parallel fan-out saves.
    pub async fn dashboard_sequential(
        &self,
        ctx: &CallContext,
        agency: &str,
        period: Period,
    ) -> usize {
        let today = domain::today_in("UTC");
        let mut ok = 0;
        ok += usize::from(self.kpi_part_sequential(ctx, agency, period).await);
        ok += usize::from(self.open_complaints(ctx, agency).await.is_ok());
        ok += usize::from(self.open_follow_ups(ctx, agency, today).await.is_ok());
        ok += usize::from(self.topics(ctx, agency, period).await.is_ok());
        ok
    }

    async fn kpi_part_sequential(&self, ctx: &CallContext, agency: &str, period: Period) -> bool {
        let name = format!("agencies/{agency}");
        let (start, end) = period.bounds();
        let mut client = self.backends.kpi();
        let mut ok = true;
        for p in [period, period.previous()] {
            let req = kpi::GetCharterReportRequest {
                agency: name.clone(),
                period: p.granularity() as i32,
                date: Some(domain::wire_date(p.bounds().0)),
            };
            ok &= ctx
                .run(client.get_charter_report(ctx.request(req)))
                .await
                .is_ok();
        }
        for indicator in ["response_rate", SATISFACTION, "nps"] {
            let req = kpi::QueryIndicatorRequest {
                agency: name.clone(),
                indicator: indicator.into(),
                start_date: Some(domain::wire_date(start)),
                end_date: Some(domain::wire_date(end)),
                ..Default::default()
            };
            ok &= ctx
                .run(client.query_indicator(ctx.request(req)))
                .await
                .is_ok();
        }
        for d in EQUITY_DIMENSIONS {
            let req = kpi::GetEquityReportRequest {
                agency: name.clone(),
                indicator: SATISFACTION.into(),
                start_date: Some(domain::wire_date(start)),
                end_date: Some(domain::wire_date(end)),
                dimension: d as i32,
                scope: None,
            };
            ok &= ctx
                .run(client.get_equity_report(ctx.request(req)))
                .await
                .is_ok();
        }
        ok
    }

    // ---- benchmark ----

    /// One indicator across a peer group, under disclosure control.
    pub async fn benchmark(
        &self,
        caller: &Caller,
        ctx: &CallContext,
        req: pb::GetBenchmarkRequest,
    ) -> Result<pb::Benchmark, Error> {
        let mut v = Violations::new();
        if req.indicator.is_empty() || req.indicator.len() > 100 {
            v.add(
                "indicator",
                "required, a catalogue id such as share_satisfied.a11_satisfaction",
            );
        }
        let group_id = match names::parse_field("peer_group", "peerGroups/{}", &req.peer_group) {
            Ok(ids) => ids[0].to_string(),
            Err(e) => {
                v.add(e.field, e.description);
                String::new()
            }
        };
        let period = Period::parse(&req.period, domain::today_in("UTC"));
        if let Err(e) = &period {
            v.add("period", e.clone());
        }
        v.finish().map_err(Error::InvalidArgument)?;
        let period = period.map_err(|e| Error::invalid("period", e))?;
        if !caller.has_role(Role::HubAdmin) && !caller.has_any(PEER_ROLES) {
            return Err(Error::PermissionDenied(
                "benchmarks are for analyst, agency_admin and hub_admin",
            ));
        }
        let _turn = self.fan_out_turn(ctx).await?;
        let group = self.visible_peer_group(caller, &group_id).await?;
        // The hub's view (every member named as consent allows) only for a hub_admin of
        // every member; otherwise the view of the caller's own member agency.
        let hub = hub_admin_of_all(caller, &group.members);
        let mut tx = self.db.read(Scope::Agency(HUB)).await?;
        let rows = store::agencies_in(&mut tx, &group.members).await?;
        drop(tx);
        let viewer = if hub { None } else { caller.agency.clone() };
        if let Some(own) = &viewer {
            let consent = rows.iter().find(|a| &a.id == own).map_or(0, |a| a.consent);
            if consent <= pb::BenchmarkConsent::None as i64 {
                return Err(Error::FailedPrecondition {
                    reason: "BENCHMARK_CONSENT_REQUIRED",
                    message: "an agency sees benchmarks only when it takes part in them (benchmark_consent ANONYMOUS or NAMED)",
                });
            }
        }
        let consenting: Vec<&AgencyRow> = rows
            .iter()
            .filter(|a| {
                a.consent == pb::BenchmarkConsent::Anonymous as i64
                    || a.consent == pb::BenchmarkConsent::Named as i64
            })
            .collect();
        let (start, end) = period.bounds();
        let mut out = pb::Benchmark {
            peer_group: group.to_proto().name,
            period: period.to_string(),
            start_date: Some(domain::wire_date(start)),
            end_date: Some(domain::wire_date(end)),
            higher_is_better: domain::higher_is_better(&req.indicator),
            min_count: self.min_count as i64,
            ..Default::default()
        };
        // A hub_admin's own token reaches the agencies; an agency's does
        // not, so the gateway reads on its own behalf and discloses only
        // what the rules allow.
        let across = if hub {
            ctx.clone()
        } else {
            ctx.with_token(&self.backends.service_token)
                .map_err(Error::Backend)?
        };
        let mut catalogue_client = self.backends.kpi();
        let mut values_client = self.backends.kpi();
        let query = kpi::QueryIndicatorAcrossAgenciesRequest {
            agencies: consenting.iter().map(|a| a.id.clone()).collect(),
            indicator: req.indicator.clone(),
            start_date: Some(domain::wire_date(start)),
            end_date: Some(domain::wire_date(end)),
            scope: None,
        };
        let (catalogue, values) = futures::join!(
            ctx.run(catalogue_client.list_indicators(ctx.request(kpi::ListIndicatorsRequest {}))),
            async {
                if query.agencies.is_empty() {
                    Ok(kpi::QueryIndicatorAcrossAgenciesResponse::default())
                } else {
                    across
                        .run(
                            values_client
                                .query_indicator_across_agencies(across.request(query.clone())),
                        )
                        .await
                }
            },
        );
        let (catalogue, values) = match (catalogue, values) {
            (Ok(c), Ok(v)) => (c, v),
            (Err(s), _) | (_, Err(s)) => {
                return match classify(&s) {
                    Failure::Unreachable => {
                        out.unreachable = vec!["kpi".into()];
                        Ok(out)
                    }
                    _ => Err(Error::Backend(s)),
                };
            }
        };
        let indicator = catalogue
            .indicators
            .into_iter()
            .find(|i| i.id == req.indicator)
            .ok_or_else(|| Error::invalid("indicator", "is not in the indicator catalogue"))?;
        let kind =
            kpi::IndicatorKind::try_from(indicator.kind).unwrap_or(kpi::IndicatorKind::Unspecified);
        let k = self.min_count.max(values.min_count.max(0) as u64);
        let by_agency: BTreeMap<String, kpi::Value> = values
            .values
            .into_iter()
            .filter_map(|v| Some((v.agency, v.value?)))
            .collect();
        let members: Vec<MemberFigure> = consenting
            .iter()
            .map(|a| MemberFigure {
                agency: a.id.clone(),
                display_name: a.display_name.clone(),
                consent: pb::BenchmarkConsent::try_from(a.consent as i32)
                    .unwrap_or(pb::BenchmarkConsent::Anonymous),
                value: by_agency.get(&a.id).cloned(),
            })
            .collect();
        let disclosed =
            domain::disclose(&members, viewer.as_deref(), k, kind, out.higher_is_better);
        out.indicator = Some(indicator);
        out.entries = disclosed.entries;
        out.peer_median = disclosed.median;
        out.total_n = disclosed.total_n;
        out.pooled_value = disclosed.pooled;
        out.min_count = k as i64;
        Ok(out)
    }

    /// The KPI catalogue, with the caller's token.
    pub async fn indicators(
        &self,
        ctx: &CallContext,
    ) -> Result<kpi::ListIndicatorsResponse, Error> {
        let mut client = self.backends.kpi();
        ctx.run(client.list_indicators(ctx.request(kpi::ListIndicatorsRequest {})))
            .await
            .map_err(Error::Backend)
    }

    // ---- export ----

    /// Everything the services hold about one client.
    pub async fn export(
        &self,
        caller: &Caller,
        ctx: &CallContext,
        req: pb::ExportClientDataRequest,
    ) -> Result<pb::ClientDataExport, Error> {
        let ids = names::parse_field("client", "agencies/{}/clients/{}", &req.client)?;
        let agency = ids[0].to_string();
        authorize(
            caller,
            &[Role::Officer, Role::SeniorOfficer],
            &agency,
            Target::Collection,
        )?;
        let client = req.client.clone();
        let mut register = self.backends.register();
        let (reg, complaints, responses, follow_ups) = futures::join!(
            ctx.run(
                register.export_client(ctx.request(rpb::ExportClientRequest {
                    name: client.clone()
                }))
            ),
            self.client_complaints(ctx, &agency, &client),
            self.client_responses(ctx, &agency, &client),
            self.client_follow_ups(ctx, &agency, &client),
        );
        let mut unreachable = BTreeSet::new();
        let register = keep(&mut unreachable, "register", reg)?;
        let complaints = keep(&mut unreachable, "complaints", complaints)?.unwrap_or_default();
        let responses = keep(&mut unreachable, "feedback", responses)?.unwrap_or_default();
        let follow_ups = keep(&mut unreachable, "feedback", follow_ups)?.unwrap_or_default();
        Ok(pb::ClientDataExport {
            client,
            register,
            complaints,
            responses,
            follow_ups,
            unreachable: unreachable.iter().map(|s| s.to_string()).collect(),
            export_time: Some(times::timestamp(times::now_millis())),
        })
    }

    /// The client's complaints (filtered by the complaints service on the
    /// client's id, so only they are read and audited); running out of time
    /// counts as unreachable, since a partial list must not pass for a whole
    /// one.
    async fn client_complaints(
        &self,
        ctx: &CallContext,
        agency: &str,
        client: &str,
    ) -> Result<Vec<cpb::Complaint>, Status> {
        use cpb::complainant::Who;
        let mut api = self.backends.complaints();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let id = client.rsplit('/').next().unwrap_or_default();
            let req = cpb::ListComplaintsRequest {
                parent: format!("agencies/{agency}"),
                page_size: 1000,
                page_token: token,
                filter: format!("client_id = \"{id}\""),
                ..Default::default()
            };
            let page = ctx.run(api.list_complaints(ctx.request(req))).await?;
            out.extend(page.complaints.into_iter().filter(|c| {
                matches!(c.complainant.as_ref().and_then(|w| w.who.as_ref()), Some(Who::Client(x)) if x == client)
            }));
            token = page.next_page_token;
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The client's responses (only those kept with consent name a client).
    async fn client_responses(
        &self,
        ctx: &CallContext,
        agency: &str,
        client: &str,
    ) -> Result<Vec<fpb::Response>, Status> {
        let mut api = self.backends.feedback();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = fpb::ListResponsesRequest {
                parent: format!("agencies/{agency}/surveys/-"),
                page_size: 1000,
                page_token: token,
                filter: "anonymous = false".into(),
                order_by: String::new(),
                view: fpb::ResponseView::Full as i32,
            };
            let page = ctx.run(api.list_responses(ctx.request(req))).await?;
            out.extend(page.responses.into_iter().filter(|r| r.client == client));
            token = page.next_page_token;
            if token.is_empty() {
                return Ok(out);
            }
        }
    }

    async fn client_follow_ups(
        &self,
        ctx: &CallContext,
        agency: &str,
        client: &str,
    ) -> Result<Vec<fpb::FollowUp>, Status> {
        let mut api = self.backends.feedback();
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = fpb::ListFollowUpsRequest {
                parent: format!("agencies/{agency}"),
                page_size: 1000,
                page_token: token,
                ..Default::default()
            };
            let page = ctx.run(api.list_follow_ups(ctx.request(req))).await?;
            out.extend(page.follow_ups.into_iter().filter(|f| f.client == client));
            token = page.next_page_token;
            if token.is_empty() {
                return Ok(out);
            }
        }
    }
}

/// A part of an export: its value, nothing (its backend named as
/// unreachable), or the backend's refusal, which fails the whole export.
fn keep<T>(
    unreachable: &mut BTreeSet<&'static str>,
    backend: &'static str,
    r: Result<T, Status>,
) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(s) if classify(&s) == Failure::Unreachable => {
            unreachable.insert(backend);
            Ok(None)
        }
        Err(s) => Err(Error::Backend(s)),
    }
}

/// What the KPI service said for a dashboard.
struct KpiPart {
    now: Result<kpi::CharterReport, Status>,
    before: Result<kpi::CharterReport, Status>,
    rate: Result<Option<kpi::Value>, Status>,
    satisfaction: Result<Option<kpi::Value>, Status>,
    nps: Result<Option<kpi::Value>, Status>,
    equity: Vec<(kpi::Dimension, Result<kpi::EquityReport, Status>)>,
}

/// A part's error as the status its own method would have returned.
fn part_status(e: kpi::PartError) -> Status {
    Status::new(tonic::Code::from(e.code), e.message)
}

impl KpiPart {
    /// The parts of a BatchGetFigures answer (or its failure, for every
    /// part), in the order `kpi_part` asked for them.
    fn from_batch(answer: Result<kpi::BatchGetFiguresResponse, Status>) -> KpiPart {
        use kpi::charter_report_result::Result as C;
        use kpi::equity_report_result::Result as E;
        use kpi::query_indicator_result::Result as Q;
        let missing = || Status::internal("the KPI service answered fewer parts than asked");
        let (queries, charters, equity) = match answer {
            Ok(r) => (
                r.queries
                    .into_iter()
                    .map(|q| match q.result {
                        Some(Q::Response(r)) => Ok(r
                            .series
                            .into_iter()
                            .next()
                            .and_then(|s| s.points.into_iter().next())
                            .and_then(|p| p.value)),
                        Some(Q::Error(e)) => Err(part_status(e)),
                        None => Err(missing()),
                    })
                    .collect::<Vec<_>>(),
                r.charter_reports
                    .into_iter()
                    .map(|c| match c.result {
                        Some(C::Report(r)) => Ok(r),
                        Some(C::Error(e)) => Err(part_status(e)),
                        None => Err(missing()),
                    })
                    .collect::<Vec<_>>(),
                r.equity_reports
                    .into_iter()
                    .map(|e| match e.result {
                        Some(E::Report(r)) => Ok(r),
                        Some(E::Error(e)) => Err(part_status(e)),
                        None => Err(missing()),
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(status) => (
                vec![Err(status.clone()); 3],
                vec![Err(status.clone()); 2],
                vec![Err(status); EQUITY_DIMENSIONS.len()],
            ),
        };
        let mut queries = queries.into_iter();
        let mut charters = charters.into_iter();
        let mut equity = equity.into_iter();
        let mut next_query = || queries.next().unwrap_or_else(|| Err(missing()));
        let (rate, satisfaction, nps) = (next_query(), next_query(), next_query());
        let mut next_charter = || charters.next().unwrap_or_else(|| Err(missing()));
        let (now, before) = (next_charter(), next_charter());
        let equity = EQUITY_DIMENSIONS
            .iter()
            .map(|&d| (d, equity.next().unwrap_or_else(|| Err(missing()))))
            .collect();
        KpiPart {
            now,
            before,
            rate,
            satisfaction,
            nps,
            equity,
        }
    }

    fn fill(
        self,
        out: &mut pb::Dashboard,
        feedback: &mut pb::FeedbackSummary,
        partial: &mut Partial,
    ) {
        let before = partial.take("kpi", "charter", self.before);
        if let Some(now) = partial.take("kpi", "charter", self.now) {
            out.min_count = out.min_count.max(now.min_count);
            let previous: BTreeMap<String, kpi::Value> = before
                .map(|b| {
                    b.lines
                        .into_iter()
                        .filter_map(|l| Some((l.standard?.name, l.value?)))
                        .collect()
                })
                .unwrap_or_default();
            out.headlines = now
                .lines
                .into_iter()
                .map(|line| {
                    let prev = line
                        .standard
                        .as_ref()
                        .and_then(|s| previous.get(&s.name))
                        .cloned();
                    let (trend, significant) = domain::trend(line.value.as_ref(), prev.as_ref());
                    pb::Headline {
                        line: Some(line),
                        previous: prev,
                        trend: trend as i32,
                        significant_change: significant,
                    }
                })
                .collect();
        }
        feedback.response_rate = partial.take("kpi", "feedback", self.rate).flatten();
        feedback.satisfaction = partial.take("kpi", "feedback", self.satisfaction).flatten();
        feedback.nps = partial.take("kpi", "feedback", self.nps).flatten();
        for (dimension, report) in self.equity {
            if let Some(report) = partial.take("kpi", "equity", report) {
                out.equity
                    .extend(report.segments.into_iter().map(|s| pb::EquityGap {
                        dimension: dimension as i32,
                        segment: Some(s),
                    }));
            }
        }
    }
}

fn caller_and<T>(request: Request<T>) -> Result<(Caller, CallContext, T), Status> {
    let caller = Caller::from_request(&request)?;
    let ctx = CallContext::from_request(&request)?;
    Ok((caller, ctx, request.into_inner()))
}

#[tonic::async_trait]
impl GatewayService for Gateway {
    async fn create_agency(
        &self,
        r: Request<pb::CreateAgencyRequest>,
    ) -> Result<Response<pb::Agency>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::create_agency(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn get_agency(
        &self,
        r: Request<pb::GetAgencyRequest>,
    ) -> Result<Response<pb::Agency>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::get_agency(self, &caller, &r.into_inner().name).await?,
        ))
    }

    async fn list_agencies(
        &self,
        r: Request<pb::ListAgenciesRequest>,
    ) -> Result<Response<pb::ListAgenciesResponse>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::list_agencies(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn update_agency(
        &self,
        r: Request<pb::UpdateAgencyRequest>,
    ) -> Result<Response<pb::Agency>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::update_agency(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn create_unit(
        &self,
        r: Request<pb::CreateUnitRequest>,
    ) -> Result<Response<pb::Unit>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::create_unit(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn get_unit(&self, r: Request<pb::GetUnitRequest>) -> Result<Response<pb::Unit>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::get_unit(self, &caller, &r.into_inner().name).await?,
        ))
    }

    async fn list_units(
        &self,
        r: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::list_units(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn update_unit(
        &self,
        r: Request<pb::UpdateUnitRequest>,
    ) -> Result<Response<pb::Unit>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::update_unit(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn create_api_key(
        &self,
        r: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::create_api_key(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn list_api_keys(
        &self,
        r: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::list_api_keys(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn revoke_api_key(
        &self,
        r: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::revoke_api_key(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn create_open311_service(
        &self,
        r: Request<pb::CreateOpen311ServiceRequest>,
    ) -> Result<Response<pb::Open311Service>, Status> {
        let (caller, ctx, req) = caller_and(r)?;
        Ok(Response::new(
            Gateway::create_open311_service(self, &caller, &ctx, req).await?,
        ))
    }

    async fn list_open311_services(
        &self,
        r: Request<pb::ListOpen311ServicesRequest>,
    ) -> Result<Response<pb::ListOpen311ServicesResponse>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::list_open311_services(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn delete_open311_service(
        &self,
        r: Request<pb::DeleteOpen311ServiceRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::from_request(&r)?;
        Gateway::delete_open311_service(self, &caller, r.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn delete_unit(&self, r: Request<pb::DeleteUnitRequest>) -> Result<Response<()>, Status> {
        let caller = Caller::from_request(&r)?;
        Gateway::delete_unit(self, &caller, r.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn create_peer_group(
        &self,
        r: Request<pb::CreatePeerGroupRequest>,
    ) -> Result<Response<pb::PeerGroup>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::create_peer_group(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn get_peer_group(
        &self,
        r: Request<pb::GetPeerGroupRequest>,
    ) -> Result<Response<pb::PeerGroup>, Status> {
        let caller = Caller::from_request(&r)?;
        let id = names::parse_field("name", "peerGroups/{}", &r.get_ref().name)
            .map_err(Error::from)?[0]
            .to_string();
        Ok(Response::new(
            self.visible_peer_group(&caller, &id).await?.to_proto(),
        ))
    }

    async fn list_peer_groups(
        &self,
        r: Request<pb::ListPeerGroupsRequest>,
    ) -> Result<Response<pb::ListPeerGroupsResponse>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::list_peer_groups(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn update_peer_group(
        &self,
        r: Request<pb::UpdatePeerGroupRequest>,
    ) -> Result<Response<pb::PeerGroup>, Status> {
        let caller = Caller::from_request(&r)?;
        Ok(Response::new(
            Gateway::update_peer_group(self, &caller, r.into_inner()).await?,
        ))
    }

    async fn delete_peer_group(
        &self,
        r: Request<pb::DeletePeerGroupRequest>,
    ) -> Result<Response<()>, Status> {
        let caller = Caller::from_request(&r)?;
        Gateway::delete_peer_group(self, &caller, r.into_inner()).await?;
        Ok(Response::new(()))
    }

    async fn get_dashboard(
        &self,
        r: Request<pb::GetDashboardRequest>,
    ) -> Result<Response<pb::Dashboard>, Status> {
        let (caller, ctx, req) = caller_and(r)?;
        Ok(Response::new(self.dashboard(&caller, &ctx, req).await?))
    }

    async fn get_benchmark(
        &self,
        r: Request<pb::GetBenchmarkRequest>,
    ) -> Result<Response<pb::Benchmark>, Status> {
        let (caller, ctx, req) = caller_and(r)?;
        Ok(Response::new(self.benchmark(&caller, &ctx, req).await?))
    }

    async fn export_client_data(
        &self,
        r: Request<pb::ExportClientDataRequest>,
    ) -> Result<Response<pb::ClientDataExport>, Status> {
        let (caller, ctx, req) = caller_and(r)?;
        Ok(Response::new(self.export(&caller, &ctx, req).await?))
    }
}
