//! The gRPC face of the kpi service: parse, authorize, one transaction, map back.

use crate::domain::{self, Dimension, Granularity, Indicator};
use crate::error::Error;
use crate::query::{self, Query};
use crate::store::{self, Filter, StandardRow};
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use time::Date;
use tonic::{Request, Response, Status};
use touchstone_api::common::v1::{self as common, Event};
use touchstone_api::kpi::v1 as pb;
use touchstone_api::kpi::v1::kpi_service_server::KpiService;
use touchstone_auth::{Caller, Role, Target, authorize};
use touchstone_crypto::MasterKey;
use touchstone_platform::change::{self, Begun};
use touchstone_platform::db::{Db, Scope};
use touchstone_platform::error::FieldViolation;
use touchstone_platform::keyring::Keyring;
use touchstone_platform::{idempotency, names, outbox, times};

/// Most points a series may have.
const MAX_POINTS: usize = 1000;
/// Most agencies in one cross-agency read.
const MAX_AGENCIES: usize = 500;
/// Longest title of a standard.
const MAX_TITLE: usize = 200;
/// Longest description of a standard.
const MAX_DESCRIPTION: usize = 2000;

/// The kpi service.
#[derive(Debug, Clone)]
pub struct Kpi {
    db: Db,
    keys: Arc<Keyring>,
    min_count: u64,
    tables: Arc<query::Cache>,
}

impl Kpi {
    /// The service over `db`, withholding figures from fewer than
    /// `min_count` observations.
    /// Data keys (for request fingerprints and stored responses) are stored
    /// in `db`, wrapped by `master`.
    pub fn new(db: Db, master: MasterKey, min_count: u64) -> Self {
        Self {
            keys: Arc::new(Keyring::new(master, db.clone())),
            db,
            min_count,
            tables: Arc::default(),
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

const READERS: &[Role] = &[
    Role::Analyst,
    Role::AgencyAdmin,
    Role::HubAdmin,
    Role::Service,
];

/// Most parts of one BatchGetFigures call.
const BATCH_PARTS: usize = 50;

fn parse_agency<'a>(field: &str, value: &'a str) -> Result<&'a str, Error> {
    Ok(names::parse_field(field, "agencies/{}", value)?[0])
}

fn parse_standard<'a>(field: &str, value: &'a str) -> Result<(&'a str, &'a str), Error> {
    let ids = names::parse_field(field, "agencies/{}/standards/{}", value)?;
    Ok((ids[0], ids[1]))
}

fn parse_indicator(field: &str, id: &str) -> Result<Indicator, Error> {
    domain::indicator(id).ok_or_else(|| Error::invalid(field, "not in the indicator catalogue"))
}

fn parse_date(field: &str, d: Option<&common::Date>) -> Result<Date, Error> {
    d.and_then(domain::wire_date)
        .ok_or_else(|| Error::invalid(field, "a real calendar date is required"))
}

fn parse_range(
    start: Option<&common::Date>,
    end: Option<&common::Date>,
) -> Result<(Date, Date), Error> {
    let (s, e) = (
        parse_date("start_date", start)?,
        parse_date("end_date", end)?,
    );
    if e < s {
        return Err(Error::invalid("end_date", "must not be before start_date"));
    }
    Ok((s, e))
}

/// Checks that a range is released on the grid (one period, or whole
/// periods of the granularity), naming the field that is off it.
fn check_grid(start: Date, end: Date, g: Granularity, field: &str) -> Result<(), Error> {
    domain::grid_level(start, end, g)
        .map(|_| ())
        .map_err(|why| Error::invalid(field, why))
}

fn parse_scope(field: &str, scope: Option<&pb::Scope>) -> Result<Filter, Error> {
    let Some(s) = scope else {
        return Ok(Filter::default());
    };
    if common::Channel::try_from(s.channel).is_err() {
        return Err(Error::invalid(&format!("{field}.channel"), "not a channel"));
    }
    for (name, v) in [("service", &s.service), ("unit", &s.unit)] {
        if v.len() > 200 {
            return Err(Error::invalid(
                &format!("{field}.{name}"),
                "at most 200 characters",
            ));
        }
    }
    Ok(Filter {
        service: s.service.clone(),
        unit: s.unit.clone(),
        channel: s.channel,
    })
}

fn scope_proto(f: &Filter) -> pb::Scope {
    pb::Scope {
        service: f.service.clone(),
        unit: f.unit.clone(),
        channel: f.channel,
    }
}

fn parse_dimension(field: &str, d: i32, indicator: &Indicator) -> Result<Dimension, Error> {
    let dim = Dimension::from_proto(d).ok_or_else(|| Error::invalid(field, "not a dimension"))?;
    if matches!(dim, Dimension::Segment(_)) && !indicator.segmentable() {
        return Err(Error::invalid(
            field,
            "this indicator cannot be split by respondents' characteristics",
        ));
    }
    Ok(dim)
}

fn point_proto(p: &query::Point) -> pb::Point {
    pb::Point {
        start_date: Some(domain::date_proto(p.period.0)),
        end_date: Some(domain::date_proto(p.period.1)),
        value: Some(domain::value_proto(&p.estimate)),
        significant_change: p.test.is_some_and(|t| t.significant()),
        p_value: p.test.map(|t| t.p_value),
    }
}

fn etag(revision: i64) -> String {
    revision.to_string()
}

fn standard_proto(agency: &str, s: &StandardRow) -> pb::Standard {
    pb::Standard {
        name: format!("agencies/{agency}/standards/{}", s.id),
        display_name: s.display_name.clone(),
        description: s.description.clone(),
        indicator: s.indicator.clone(),
        scope: Some(scope_proto(&s.filter)),
        comparator: s.comparator,
        target: s.target,
        period: s.period,
        published: s.published,
        create_time: Some(times::timestamp(s.create_time)),
        update_time: Some(times::timestamp(s.update_time)),
        etag: etag(s.revision),
    }
}

/// Checks and copies the fields of `s` named by `paths` (all when empty)
/// onto `row`.
fn apply_standard(row: &mut StandardRow, s: &pb::Standard, paths: &[String]) -> Result<(), Error> {
    let all = paths.is_empty();
    let wants = |p: &str| all || paths.iter().any(|x| x == p);
    let known = [
        "display_name",
        "description",
        "indicator",
        "scope",
        "comparator",
        "target",
        "period",
        "published",
    ];
    if let Some(bad) = paths.iter().find(|p| !known.contains(&p.as_str())) {
        return Err(Error::invalid(
            "update_mask",
            format!("{bad} is not a field that can be changed"),
        ));
    }
    let mut bad: Vec<FieldViolation> = Vec::new();
    if wants("display_name") {
        let t = s.display_name.trim();
        if t.is_empty() || t.chars().count() > MAX_TITLE {
            bad.push(FieldViolation::new(
                "standard.display_name",
                "1 to 200 characters",
            ));
        }
        row.display_name = t.to_string();
    }
    if wants("description") {
        if s.description.chars().count() > MAX_DESCRIPTION {
            bad.push(FieldViolation::new(
                "standard.description",
                "at most 2000 characters",
            ));
        }
        row.description = s.description.clone();
    }
    if wants("indicator") {
        if domain::indicator(&s.indicator).is_none() {
            bad.push(FieldViolation::new(
                "standard.indicator",
                "not in the indicator catalogue",
            ));
        }
        row.indicator = s.indicator.clone();
    }
    if wants("scope") {
        match parse_scope("standard.scope", s.scope.as_ref()) {
            Ok(f) => row.filter = f,
            Err(Error::InvalidArgument(v)) => bad.extend(v),
            Err(e) => return Err(e),
        }
    }
    if wants("comparator") {
        if !matches!(
            pb::Comparator::try_from(s.comparator),
            Ok(pb::Comparator::AtLeast | pb::Comparator::AtMost)
        ) {
            bad.push(FieldViolation::new(
                "standard.comparator",
                "AT_LEAST or AT_MOST",
            ));
        }
        row.comparator = s.comparator;
    }
    if wants("target") {
        if !s.target.is_finite() {
            bad.push(FieldViolation::new("standard.target", "a finite number"));
        }
        row.target = s.target;
    }
    if wants("period") {
        if !matches!(
            pb::Granularity::try_from(s.period),
            Ok(pb::Granularity::Month | pb::Granularity::Quarter | pb::Granularity::Year)
        ) {
            bad.push(FieldViolation::new(
                "standard.period",
                "MONTH, QUARTER or YEAR",
            ));
        }
        row.period = s.period;
    }
    if wants("published") {
        row.published = s.published;
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Error::InvalidArgument(bad))
    }
}

impl Kpi {
    /// BatchGetFigures: the parts checked to name one agency the caller may
    /// read, then answered concurrently, each as its own method would.
    async fn batch(
        &self,
        caller: &Caller,
        req: pb::BatchGetFiguresRequest,
    ) -> Result<pb::BatchGetFiguresResponse, Error> {
        let parts = req.queries.len() + req.charter_reports.len() + req.equity_reports.len();
        if parts == 0 {
            return Err(Error::invalid("queries", "a batch needs at least one part"));
        }
        if parts > BATCH_PARTS {
            return Err(Error::invalid(
                "queries",
                format!("a batch has at most {BATCH_PARTS} parts in all"),
            ));
        }
        let named = req
            .queries
            .iter()
            .enumerate()
            .map(|(i, q)| (format!("queries[{i}].agency"), q.agency.as_str()))
            .chain(
                req.charter_reports
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("charter_reports[{i}].agency"), c.agency.as_str())),
            )
            .chain(
                req.equity_reports
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (format!("equity_reports[{i}].agency"), e.agency.as_str())),
            );
        let mut agency: Option<&str> = None;
        for (field, name) in named {
            let this = parse_agency(&field, name)?;
            match agency {
                None => agency = Some(this),
                Some(first) if first != this => {
                    return Err(Error::invalid(
                        &field,
                        "every part must name the same agency",
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(agency) = agency {
            authorize(caller, READERS, agency, Target::Collection)?;
        }
        fn part_error(e: Error) -> pb::PartError {
            let status = Status::from(e);
            pb::PartError {
                code: status.code() as i32,
                message: status.message().to_string(),
            }
        }
        let queries = futures::future::join_all(
            req.queries
                .into_iter()
                .map(|q| self.query_indicator(caller, q)),
        );
        let charters = futures::future::join_all(
            req.charter_reports
                .into_iter()
                .map(|c| self.charter(caller, c)),
        );
        let equity = futures::future::join_all(
            req.equity_reports
                .into_iter()
                .map(|e| self.equity(caller, e)),
        );
        let (queries, charters, equity) = futures::join!(queries, charters, equity);
        use pb::charter_report_result::Result as C;
        use pb::equity_report_result::Result as E;
        use pb::query_indicator_result::Result as Q;
        Ok(pb::BatchGetFiguresResponse {
            queries: queries
                .into_iter()
                .map(|r| pb::QueryIndicatorResult {
                    result: Some(r.map_or_else(|e| Q::Error(part_error(e)), Q::Response)),
                })
                .collect(),
            charter_reports: charters
                .into_iter()
                .map(|r| pb::CharterReportResult {
                    result: Some(r.map_or_else(|e| C::Error(part_error(e)), C::Report)),
                })
                .collect(),
            equity_reports: equity
                .into_iter()
                .map(|r| pb::EquityReportResult {
                    result: Some(r.map_or_else(|e| E::Error(part_error(e)), E::Report)),
                })
                .collect(),
        })
    }

    async fn query_indicator(
        &self,
        caller: &Caller,
        req: pb::QueryIndicatorRequest,
    ) -> Result<pb::QueryIndicatorResponse, Error> {
        let agency = parse_agency("agency", &req.agency)?;
        authorize(caller, READERS, agency, Target::Collection)?;
        let indicator = parse_indicator("indicator", &req.indicator)?;
        let (start, end) = parse_range(req.start_date.as_ref(), req.end_date.as_ref())?;
        let granularity = Granularity::from_proto(req.granularity)
            .ok_or_else(|| Error::invalid("granularity", "not a granularity"))?;
        let group = parse_dimension("group_by", req.group_by, &indicator)?;
        let filter = parse_scope("scope", req.scope.as_ref())?;
        check_grid(
            start,
            end,
            granularity,
            if matches!(granularity, Granularity::Whole | Granularity::Week) {
                "granularity"
            } else {
                "start_date"
            },
        )?;
        if domain::periods(start, end, granularity).1.len() > MAX_POINTS {
            return Err(Error::invalid(
                "granularity",
                "the range has more than 1000 periods of this length",
            ));
        }
        let q = Query {
            agency,
            indicator: &indicator,
            start,
            end,
            granularity,
            group,
            filter: &filter,
            k: self.min_count,
            cache: &self.tables,
        };
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let series = query::series(&mut tx, &q).await?;
        tx.commit().await?;
        Ok(pb::QueryIndicatorResponse {
            indicator: Some(indicator.to_proto()),
            series: series
                .iter()
                .map(|(group, points)| pb::Series {
                    group: group.clone(),
                    points: points.iter().map(point_proto).collect(),
                })
                .collect(),
            min_count: self.min_count as i64,
        })
    }

    async fn across(
        &self,
        caller: &Caller,
        req: pb::QueryIndicatorAcrossAgenciesRequest,
    ) -> Result<pb::QueryIndicatorAcrossAgenciesResponse, Error> {
        if !caller.has_any(&[Role::HubAdmin, Role::Service]) {
            return Err(Error::PermissionDenied(
                "only hub_admin and service may read across agencies",
            ));
        }
        if req.agencies.is_empty() || req.agencies.len() > MAX_AGENCIES {
            return Err(Error::invalid("agencies", "1 to 500 agency ids"));
        }
        for (i, a) in req.agencies.iter().enumerate() {
            names::check_id(a).map_err(|e| Error::invalid(&format!("agencies[{i}]"), e.0))?;
            if !caller.acts_as_any(&[Role::HubAdmin, Role::Service], a) {
                return Err(Error::PermissionDenied(
                    "the caller's token does not cover every agency",
                ));
            }
        }
        let indicator = parse_indicator("indicator", &req.indicator)?;
        let (start, end) = parse_range(req.start_date.as_ref(), req.end_date.as_ref())?;
        check_grid(start, end, Granularity::Whole, "start_date")?;
        let filter = parse_scope("scope", req.scope.as_ref())?;
        let mut values = Vec::with_capacity(req.agencies.len());
        for agency in &req.agencies {
            let q = Query {
                agency,
                indicator: &indicator,
                start,
                end,
                granularity: Granularity::Whole,
                group: Dimension::None,
                filter: &filter,
                k: self.min_count,
                cache: &self.tables,
            };
            let mut tx = self.db.read(Scope::Agency(agency)).await?;
            let e = query::whole(&mut tx, &q).await?;
            tx.commit().await?;
            values.push(pb::AgencyValue {
                agency: agency.clone(),
                value: Some(domain::value_proto(&e)),
            });
        }
        Ok(pb::QueryIndicatorAcrossAgenciesResponse {
            values,
            min_count: self.min_count as i64,
        })
    }

    async fn charter(
        &self,
        caller: &Caller,
        req: pb::GetCharterReportRequest,
    ) -> Result<pb::CharterReport, Error> {
        let agency = parse_agency("agency", &req.agency)?;
        authorize(caller, READERS, agency, Target::Collection)?;
        let granularity = match pb::Granularity::try_from(req.period) {
            Ok(pb::Granularity::Month) => Granularity::Month,
            Ok(pb::Granularity::Quarter) => Granularity::Quarter,
            Ok(pb::Granularity::Year) => Granularity::Year,
            _ => return Err(Error::invalid("period", "MONTH, QUARTER or YEAR")),
        };
        let day = parse_date("date", req.date.as_ref())?;
        let start = granularity.start_of(day);
        let end = granularity.next(start) - time::Duration::days(1);
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let standards = store::standards(&mut tx, agency, "", 10_000, true).await?;
        let mut lines = Vec::with_capacity(standards.len());
        for s in &standards {
            let Some(indicator) = domain::indicator(&s.indicator) else {
                continue;
            };
            let q = Query {
                agency,
                indicator: &indicator,
                start,
                end,
                granularity: Granularity::Whole,
                group: Dimension::None,
                filter: &s.filter,
                k: self.min_count,
                cache: &self.tables,
            };
            let e = query::whole(&mut tx, &q).await?;
            let comparator =
                pb::Comparator::try_from(s.comparator).unwrap_or(pb::Comparator::AtLeast);
            let verdict = match e.value {
                Some(v) if domain::meets(comparator, v, s.target) => pb::Verdict::Met,
                Some(_) => pb::Verdict::NotMet,
                None => pb::Verdict::InsufficientData,
            };
            lines.push(pb::CharterLine {
                standard: Some(standard_proto(agency, s)),
                value: Some(domain::value_proto(&e)),
                verdict: verdict as i32,
            });
        }
        tx.commit().await?;
        Ok(pb::CharterReport {
            agency: req.agency.clone(),
            start_date: Some(domain::date_proto(start)),
            end_date: Some(domain::date_proto(end)),
            lines,
            min_count: self.min_count as i64,
        })
    }

    async fn equity(
        &self,
        caller: &Caller,
        req: pb::GetEquityReportRequest,
    ) -> Result<pb::EquityReport, Error> {
        let agency = parse_agency("agency", &req.agency)?;
        authorize(caller, READERS, agency, Target::Collection)?;
        let indicator = parse_indicator("indicator", &req.indicator)?;
        let (start, end) = parse_range(req.start_date.as_ref(), req.end_date.as_ref())?;
        let dimension = parse_dimension("dimension", req.dimension, &indicator)?;
        if dimension == Dimension::None {
            return Err(Error::invalid("dimension", "a dimension is required"));
        }
        let filter = parse_scope("scope", req.scope.as_ref())?;
        check_grid(start, end, Granularity::Whole, "start_date")?;
        let q = Query {
            agency,
            indicator: &indicator,
            start,
            end,
            granularity: Granularity::Whole,
            group: dimension,
            filter: &filter,
            k: self.min_count,
            cache: &self.tables,
        };
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let (whole, segments) = query::equity(&mut tx, &q).await?;
        tx.commit().await?;
        Ok(pb::EquityReport {
            indicator: Some(indicator.to_proto()),
            whole: Some(domain::value_proto(&whole)),
            segments: segments
                .iter()
                .map(|s| pb::SegmentValue {
                    segment: s.label.clone(),
                    value: Some(domain::value_proto(&s.estimate)),
                    gap: s.gap,
                    significant: s.test.is_some_and(|t| t.significant()),
                    p_value: s.test.map(|t| t.p_value),
                })
                .collect(),
            min_count: self.min_count as i64,
        })
    }

    async fn create_standard(
        &self,
        caller: &Caller,
        req: pb::CreateStandardRequest,
    ) -> Result<pb::Standard, Error> {
        let agency = parse_agency("parent", &req.parent)?;
        authorize(caller, &[Role::AgencyAdmin], agency, Target::Collection)?;
        let id = names::chosen_id("standard_id", &req.standard_id)?;
        let given = req.standard.clone().unwrap_or_default();
        let now = times::now_millis();
        let mut row = StandardRow {
            id,
            display_name: String::new(),
            description: String::new(),
            indicator: String::new(),
            filter: Filter::default(),
            comparator: 0,
            target: 0.0,
            period: 0,
            published: false,
            revision: 1,
            create_time: now,
            update_time: now,
        };
        apply_standard(&mut row, &given, &[])?;
        let begun = change::begin::<pb::Standard>(
            &self.db,
            &self.keys,
            caller,
            agency,
            "CreateStandard",
            &req.request_id,
            idempotency::fingerprint(&req),
        )
        .await?;
        let mut c = match begun {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        if !store::insert_standard(&mut c.tx, agency, &row).await? {
            return Err(Error::AlreadyExists("standard"));
        }
        let out = standard_proto(agency, &row);
        Ok(c.finish(&out.name.clone(), out).await?)
    }

    async fn get_standard(
        &self,
        caller: &Caller,
        req: pb::GetStandardRequest,
    ) -> Result<pb::Standard, Error> {
        let (agency, id) = parse_standard("name", &req.name)?;
        authorize(caller, READERS, agency, Target::Named)?;
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let row = store::standard(&mut tx, agency, id).await?;
        tx.commit().await?;
        row.map(|r| standard_proto(agency, &r))
            .ok_or(Error::NotFound("standard"))
    }

    async fn list_standards(
        &self,
        caller: &Caller,
        req: pb::ListStandardsRequest,
    ) -> Result<pb::ListStandardsResponse, Error> {
        let agency = parse_agency("parent", &req.parent)?;
        authorize(caller, READERS, agency, Target::Collection)?;
        let params = touchstone_list::ListParams {
            filter: &req.filter,
            order_by: &req.order_by,
            page_size: req.page_size,
            page_token: &req.page_token,
        };
        let query =
            touchstone_list::ListQuery::plan(&store::STANDARD_SCHEMA, &req.parent, &params, 2)?;
        let mut tx = self.db.read(Scope::Agency(agency)).await?;
        let (rows, next) = store::list_standards(&mut tx, agency, &query).await?;
        tx.commit().await?;
        Ok(pb::ListStandardsResponse {
            standards: rows.iter().map(|r| standard_proto(agency, r)).collect(),
            next_page_token: next,
        })
    }

    async fn update_standard(
        &self,
        caller: &Caller,
        req: pb::UpdateStandardRequest,
    ) -> Result<pb::Standard, Error> {
        let given = req
            .standard
            .clone()
            .ok_or_else(|| Error::invalid("standard", "required"))?;
        let (agency, id) = parse_standard("standard.name", &given.name)?;
        authorize(caller, &[Role::AgencyAdmin], agency, Target::Named)?;
        let paths = req
            .update_mask
            .as_ref()
            .map(|m| m.paths.clone())
            .unwrap_or_default();
        let begun = change::begin::<pb::Standard>(
            &self.db,
            &self.keys,
            caller,
            agency,
            "UpdateStandard",
            &req.request_id,
            idempotency::fingerprint(&req),
        )
        .await?;
        let mut c = match begun {
            Begun::Replay(r) => return Ok(r),
            Begun::Fresh(c) => c,
        };
        let mut row = store::standard(&mut c.tx, agency, id)
            .await?
            .ok_or(Error::NotFound("standard"))?;
        if !given.etag.is_empty() && given.etag != etag(row.revision) {
            return Err(Error::StaleEtag);
        }
        let expected = row.revision;
        apply_standard(&mut row, &given, &paths)?;
        row.revision += 1;
        row.update_time = times::now_millis();
        if !store::update_standard(&mut c.tx, agency, &row, expected).await? {
            return Err(Error::StaleEtag);
        }
        let out = standard_proto(agency, &row);
        Ok(c.finish(&out.name.clone(), out).await?)
    }

    async fn delete_standard(
        &self,
        caller: &Caller,
        req: pb::DeleteStandardRequest,
    ) -> Result<pb::DeleteStandardResponse, Error> {
        let (agency, id) = parse_standard("name", &req.name)?;
        authorize(caller, &[Role::AgencyAdmin], agency, Target::Named)?;
        let revision = match req.etag.as_str() {
            "" => None,
            e => Some(e.parse::<i64>().map_err(|_| Error::StaleEtag)?),
        };
        let mut tx = self.db.write(Scope::Agency(agency)).await?;
        let exists = store::standard(&mut tx, agency, id).await?.is_some();
        if !exists {
            return Err(Error::NotFound("standard"));
        }
        if !store::delete_standard(&mut tx, agency, id, revision).await? {
            return Err(Error::StaleEtag);
        }
        tx.commit().await?;
        Ok(pb::DeleteStandardResponse {})
    }
}

#[tonic::async_trait]
impl KpiService for Kpi {
    async fn list_indicators(
        &self,
        request: Request<pb::ListIndicatorsRequest>,
    ) -> Reply<pb::ListIndicatorsResponse> {
        Caller::from_request(&request)?;
        Ok(Response::new(pb::ListIndicatorsResponse {
            indicators: domain::catalogue()
                .iter()
                .map(Indicator::to_proto)
                .collect(),
        }))
    }

    async fn query_indicator(
        &self,
        request: Request<pb::QueryIndicatorRequest>,
    ) -> Reply<pb::QueryIndicatorResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.query_indicator(&caller, request.into_inner()).await?,
        ))
    }

    async fn query_indicator_across_agencies(
        &self,
        request: Request<pb::QueryIndicatorAcrossAgenciesRequest>,
    ) -> Reply<pb::QueryIndicatorAcrossAgenciesResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.across(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_charter_report(
        &self,
        request: Request<pb::GetCharterReportRequest>,
    ) -> Reply<pb::CharterReport> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.charter(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_equity_report(
        &self,
        request: Request<pb::GetEquityReportRequest>,
    ) -> Reply<pb::EquityReport> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.equity(&caller, request.into_inner()).await?,
        ))
    }

    async fn batch_get_figures(
        &self,
        request: Request<pb::BatchGetFiguresRequest>,
    ) -> Reply<pb::BatchGetFiguresResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.batch(&caller, request.into_inner()).await?,
        ))
    }

    async fn create_standard(
        &self,
        request: Request<pb::CreateStandardRequest>,
    ) -> Reply<pb::Standard> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.create_standard(&caller, request.into_inner()).await?,
        ))
    }

    async fn get_standard(&self, request: Request<pb::GetStandardRequest>) -> Reply<pb::Standard> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.get_standard(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_standards(
        &self,
        request: Request<pb::ListStandardsRequest>,
    ) -> Reply<pb::ListStandardsResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.list_standards(&caller, request.into_inner()).await?,
        ))
    }

    async fn update_standard(
        &self,
        request: Request<pb::UpdateStandardRequest>,
    ) -> Reply<pb::Standard> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.update_standard(&caller, request.into_inner()).await?,
        ))
    }

    async fn delete_standard(
        &self,
        request: Request<pb::DeleteStandardRequest>,
    ) -> Reply<pb::DeleteStandardResponse> {
        let caller = Caller::from_request(&request)?;
        Ok(Response::new(
            self.delete_standard(&caller, request.into_inner()).await?,
        ))
    }

    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Reply<pb::ListEventsResponse> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = &[Role::Service, Role::AgencyAdmin];
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

    async fn watch_events(
        &self,
        request: Request<pb::WatchEventsRequest>,
    ) -> Reply<Self::WatchEventsStream> {
        let caller = Caller::from_request(&request)?;
        let req = request.into_inner();
        let allowed = &[Role::Service, Role::AgencyAdmin];
        let stream = outbox::watch_for(self.db.clone(), &caller, allowed, req.after_sequence)
            .map_err(Error::from)?
            .map(|item| item.map_err(|e| Status::from(Error::Database(e))));
        Ok(Response::new(Box::pin(stream)))
    }
}
