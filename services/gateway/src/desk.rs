//! The dashboard's working routes: an indicator's trend, the complaint desk
//! (filter the queue, open a complaint, act on it) and feedback follow-ups.
//! Each route forwards to the owning service's gRPC API with the caller's
//! own token, so that service decides roles, agency, etags and request ids
//! exactly as it does for any other caller; the gateway only turns JSON into
//! the request message and the answer back into JSON.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt as _};
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::feedback::v1 as fpb;
use touchstone_api::kpi::v1 as kpi;
use touchstone_auth::{AuthInterceptor, Caller, Verifier};

use crate::api::Gateway;
use crate::backends::CallContext;
use crate::web::{self, authenticate_with, error_response};

#[derive(Debug, Clone)]
struct Desk {
    gateway: Arc<Gateway>,
    auth: AuthInterceptor,
}

/// The routes, merged into the dashboard's router.
pub fn router(gateway: Arc<Gateway>, verifier: Arc<Verifier>) -> Router {
    let desk = Desk {
        gateway,
        auth: AuthInterceptor::new(verifier),
    };
    Router::new()
        .route("/api/trend", get(trend))
        .route(
            "/api/complaints",
            get(list_complaints).post(record_complaint),
        )
        .route("/api/complaints/{id}", get(get_complaint))
        .route("/api/complaints/{id}/{action}", post(act_on_complaint))
        .route("/api/follow-ups", get(list_follow_ups))
        .route("/api/follow-ups/{id}", post(update_follow_up))
        .with_state(desk)
}

/// INVALID_ARGUMENT naming the field, as the services answer.
fn invalid(field: &str, description: &str) -> tonic::Status {
    tonic::Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {field}"),
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// The caller, its call context and its agency (the tenant every path here
/// lives in).
fn enter(desk: &Desk, headers: &HeaderMap) -> Result<(Caller, CallContext, String), Box<Response>> {
    let (caller, ctx) =
        authenticate_with(&desk.auth, headers).map_err(|s| Box::new(error_response(&s)))?;
    let agency = caller.agency.clone().ok_or_else(|| {
        Box::new(error_response(&tonic::Status::permission_denied(
            "the token names no agency; the complaint desk works within one agency",
        )))
    })?;
    Ok((caller, ctx, agency))
}

fn reply<T>(r: Result<T, tonic::Status>, render: impl FnOnce(&T) -> Json) -> Response {
    match r {
        Ok(v) => axum::Json(render(&v)).into_response(),
        Err(s) => error_response(&s),
    }
}

/// An id in a path: letters, digits, `-` and `_` only, so that it cannot
/// reach another resource's name.
fn check_id(field: &str, id: &str) -> Result<(), tonic::Status> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid(field, "must be an id of letters, digits, - and _"));
    }
    Ok(())
}

/// An enum value by its short name (`IN_PROGRESS`), case-insensitive.
fn enum_by_name(
    field: &str,
    prefix: &str,
    value: &str,
    parse: fn(&str) -> Option<i32>,
) -> Result<i32, tonic::Status> {
    let full = format!(
        "{prefix}{}",
        value.trim().to_ascii_uppercase().replace([' ', '-'], "_")
    );
    parse(&full)
        .filter(|v| *v != 0)
        .ok_or_else(|| invalid(field, "is not one of the allowed values"))
}

// ---- trends ----

#[derive(Debug, Deserialize)]
struct TrendQuery {
    indicator: Option<String>,
    granularity: Option<String>,
    periods: Option<u32>,
}

/// The first and last day of the series: `periods` whole months (or quarters) ending with
/// the current one. KPI figures are released on the grid of periods only (docs/kpi.md), so
/// the range starts and ends on period boundaries; weeks are not on the grid.
fn trend_range(
    today: jiff::civil::Date,
    granularity: kpi::Granularity,
    periods: u32,
) -> Result<(jiff::civil::Date, jiff::civil::Date), tonic::Status> {
    let months = match granularity {
        kpi::Granularity::Quarter => 3,
        _ => 1,
    };
    let first = today.first_of_month();
    // The current period's first month: for quarters, January, April, July or October.
    let current = first
        .checked_sub(jiff::Span::new().months(i64::from((today.month() - 1) % months)))
        .map_err(|_| invalid("periods", "reaches before the calendar starts"))?;
    let back = i64::from(periods.saturating_sub(1)) * i64::from(months);
    let start = current
        .checked_sub(jiff::Span::new().months(back))
        .map_err(|_| invalid("periods", "reaches before the calendar starts"))?;
    let end = current
        .checked_add(jiff::Span::new().months(i64::from(months)))
        .and_then(|next| next.yesterday())
        .map_err(|_| invalid("periods", "reaches past the calendar's end"))?;
    Ok((start, end))
}

async fn trend(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Query(q): Query<TrendQuery>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let indicator = q.indicator.unwrap_or_default();
    if indicator.is_empty() {
        return error_response(&invalid("indicator", "required, an indicator id"));
    }
    let granularity = match q.granularity.as_deref().unwrap_or("month") {
        "month" => kpi::Granularity::Month,
        "quarter" => kpi::Granularity::Quarter,
        _ => return error_response(&invalid("granularity", "month or quarter")),
    };
    let periods = q.periods.unwrap_or(12);
    if !(2..=60).contains(&periods) {
        return error_response(&invalid("periods", "from 2 to 60"));
    }
    let today = crate::domain::today_in("UTC");
    let (start, end) = match trend_range(today, granularity, periods) {
        Ok(r) => r,
        Err(s) => return error_response(&s),
    };
    let req = kpi::QueryIndicatorRequest {
        agency: format!("agencies/{agency}"),
        indicator: indicator.clone(),
        start_date: Some(crate::domain::wire_date(start)),
        end_date: Some(crate::domain::wire_date(end)),
        granularity: granularity as i32,
        group_by: kpi::Dimension::Unspecified as i32,
        scope: None,
    };
    let mut client = desk.gateway.backends().kpi();
    let r = ctx.run(client.query_indicator(ctx.request(req))).await;
    reply(r, |r| {
        let points: Vec<Json> = r
            .series
            .first()
            .map(|s| {
                s.points
                    .iter()
                    .map(|p| {
                        json!({
                            "start_date": web::date_json(p.start_date.as_ref()),
                            "end_date": web::date_json(p.end_date.as_ref()),
                            "value": web::value_json(p.value.as_ref()),
                            "significant_change": p.significant_change,
                            "p_value": p.p_value,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        json!({
            "indicator": r.indicator.as_ref().map_or(Json::Null, web::indicator_json),
            "granularity": if granularity == kpi::Granularity::Quarter { "quarter" } else { "month" },
            "higher_is_better": crate::domain::higher_is_better(&indicator),
            "min_count": r.min_count,
            "points": points,
        })
    })
}

// ---- complaints ----

#[derive(Debug, Deserialize)]
struct ComplaintsQuery {
    officer: Option<String>,
    unit: Option<String>,
    category: Option<String>,
    stage: Option<String>,
    status: Option<String>,
    overdue: Option<String>,
    page_token: Option<String>,
}

/// Statuses of a complaint still being worked on.
const OPEN_STATUSES: &str = "(status = RECEIVED OR status = ACKNOWLEDGED OR status = IN_PROGRESS OR status = AWAITING_CLIENT OR status = REOPENED)";

/// The AIP-160 filter for the queue's filters. Text values are quoted and
/// may not hold a quote or backslash; enum values must be known names.
fn complaints_filter(q: &ComplaintsQuery) -> Result<String, tonic::Status> {
    let mut terms = Vec::new();
    for (field, value) in [
        ("officer", &q.officer),
        ("unit", &q.unit),
        ("category", &q.category),
    ] {
        let Some(v) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
            continue;
        };
        if v.contains(['"', '\\']) || v.chars().any(char::is_control) || v.len() > 200 {
            return Err(invalid(field, "at most 200 characters, without quotes"));
        }
        terms.push(format!("{field} = \"{v}\""));
    }
    if let Some(stage) = q.stage.as_deref().filter(|v| !v.is_empty()) {
        let v = enum_by_name("stage", "STAGE_", stage, |s| {
            cpb::Stage::from_str_name(s).map(|e| e as i32)
        })?;
        terms.push(format!("stage = {}", web::stage(v)));
    }
    match q.status.as_deref().unwrap_or("open") {
        "" | "any" => {}
        "open" => terms.push(OPEN_STATUSES.to_string()),
        other => {
            let v = enum_by_name("status", "STATUS_", other, |s| {
                cpb::Status::from_str_name(s).map(|e| e as i32)
            })?;
            let name = cpb::Status::try_from(v)
                .map(|e| e.as_str_name())
                .unwrap_or("");
            terms.push(format!(
                "status = {}",
                name.strip_prefix("STATUS_").unwrap_or(name)
            ));
        }
    }
    match q.overdue.as_deref().unwrap_or("") {
        "" => {}
        "true" => terms.push("overdue = true".into()),
        "false" => terms.push("overdue = false".into()),
        _ => return Err(invalid("overdue", "true or false")),
    }
    Ok(terms.join(" AND "))
}

async fn list_complaints(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Query(q): Query<ComplaintsQuery>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let filter = match complaints_filter(&q) {
        Ok(f) => f,
        Err(s) => return error_response(&s),
    };
    let req = cpb::ListComplaintsRequest {
        parent: format!("agencies/{agency}"),
        page_size: 50,
        page_token: q.page_token.unwrap_or_default(),
        filter,
        order_by: "due_time".into(),
        assigned_to_me: false,
        // Officers at the desk see the complaints as the API shows them.
        view: cpb::ComplaintView::Full as i32,
    };
    let mut client = desk.gateway.backends().complaints();
    let r = ctx.run(client.list_complaints(ctx.request(req))).await;
    reply(r, |r| {
        json!({
            "complaints": r.complaints.iter().map(|c| {
                let item = crate::domain::queue_item(c);
                json!({
                    "complaint": c.name,
                    "unit": c.unit,
                    "category": c.category,
                    "stage": web::stage(c.stage),
                    "severity": web::severity(c.severity),
                    "status": status_name(c.status),
                    "officer": item.officer,
                    "receive_time": web::time_json(c.receive_time.as_ref()),
                    "clock": web::clock_json(item.clock.as_ref()),
                    "overdue": item.overdue,
                })
            }).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
        })
    })
}

fn status_name(v: i32) -> &'static str {
    web::ename(cpb::Status::try_from(v).map(|e| e.as_str_name()), "STATUS_")
}

fn complaint_name(agency: &str, id: &str) -> String {
    format!("agencies/{agency}/complaints/{id}")
}

/// A complaint as the desk shows it: the complainant only as what kind of
/// complainant it is (the register holds the person).
fn complaint_json(c: &cpb::Complaint) -> Json {
    let complainant = match c.complainant.as_ref().and_then(|x| x.who.as_ref()) {
        Some(cpb::complainant::Who::Client(client)) => json!({"client": client}),
        Some(cpb::complainant::Who::Anonymous(_)) => json!({"anonymous": true}),
        Some(cpb::complainant::Who::Contact(_)) => json!({"contact_details": true}),
        None => Json::Null,
    };
    let assignment = c.assignment.clone().unwrap_or_default();
    json!({
        "name": c.name,
        "complainant": complainant,
        "client_check": web::ename(cpb::ClientCheck::try_from(c.client_check).map(|e| e.as_str_name()), "CLIENT_CHECK_"),
        "channel": web::ename(touchstone_api::common::v1::Channel::try_from(c.channel).map(|e| e.as_str_name()), "CHANNEL_"),
        "receive_time": web::time_json(c.receive_time.as_ref()),
        "unit": c.unit,
        "service": c.service,
        "category": c.category,
        "description": c.description,
        "remedy_sought": c.remedy_sought,
        "severity": web::severity(c.severity),
        "stage": web::stage(c.stage),
        "status": status_name(c.status),
        "assignment": {"unit": assignment.unit, "officer": assignment.officer},
        "senior_queue": c.senior_queue,
        "resolution": c.resolution.as_ref().map_or(Json::Null, |r| json!({
            "outcome": web::ename(cpb::Outcome::try_from(r.outcome).map(|e| e.as_str_name()), "OUTCOME_"),
            "summary": r.summary,
        })),
        "links": c.links.iter().map(|l| json!({
            "complaint": l.complaint,
            "kind": web::ename(cpb::complaint_link::Kind::try_from(l.kind).map(|e| e.as_str_name()), "KIND_"),
        })).collect::<Vec<_>>(),
        "referral": c.referral.as_ref().map_or(Json::Null, |r| json!({"body": r.body, "reference": r.reference})),
        "acknowledgement_clock": web::clock_json(c.acknowledgement_clock.as_ref()),
        "response_clock": web::clock_json(c.response_clock.as_ref()),
        "overdue": crate::domain::overdue(c),
        "redacted": c.redacted,
        "update_time": web::time_json(c.update_time.as_ref()),
        "etag": c.etag,
    })
}

async fn get_complaint(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(s) = check_id("complaint", &id) {
        return error_response(&s);
    }
    let name = complaint_name(&agency, &id);
    let backends = desk.gateway.backends();
    let (mut a, mut b, mut c) = (
        backends.complaints(),
        backends.complaints(),
        backends.complaints(),
    );
    let (complaint, history, contacts) = tokio::join!(
        ctx.run(a.get_complaint(ctx.request(cpb::GetComplaintRequest { name: name.clone() }))),
        ctx.run(
            b.list_complaint_history(ctx.request(cpb::ListComplaintHistoryRequest {
                parent: name.clone()
            }))
        ),
        ctx.run(c.list_contacts(ctx.request(cpb::ListContactsRequest {
            parent: name.clone()
        }))),
    );
    let joined = complaint.and_then(|c| Ok((c, history?, contacts?)));
    reply(joined, |(c, history, contacts)| {
        json!({
            "complaint": complaint_json(c),
            "history": history.entries.iter().map(|e| json!({
                "sequence": e.sequence,
                "action": e.action,
                "actor": e.actor,
                "time": web::time_json(e.time.as_ref()),
                "from_status": status_name(e.from_status),
                "to_status": status_name(e.to_status),
                "from_stage": web::stage(e.from_stage),
                "to_stage": web::stage(e.to_stage),
                "note": e.note,
            })).collect::<Vec<_>>(),
            "contacts": contacts.contacts.iter().map(|x| json!({
                "channel": web::ename(touchstone_api::common::v1::Channel::try_from(x.channel).map(|e| e.as_str_name()), "CHANNEL_"),
                "direction": web::ename(cpb::contact::Direction::try_from(x.direction).map(|e| e.as_str_name()), "DIRECTION_"),
                "contact_time": web::time_json(x.contact_time.as_ref()),
                "summary": x.summary,
                "officer": x.officer,
            })).collect::<Vec<_>>(),
        })
    })
}

/// What an action carries: the etag the officer saw and the request id of
/// this attempt (a retry sends the same one), and the action's own fields.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionBody {
    etag: String,
    request_id: String,
    note: String,
    outcome: String,
    summary: String,
    stage: String,
    unit: String,
    officer: String,
    channel: String,
    direction: String,
}

/// A complaint an officer takes down (by phone, at a counter): the
/// complainant is a register client (`client`: its id or resource name) or
/// no one (`anonymous`); the rest as `CreateComplaint` takes it. The
/// complaints service checks the client with the register, in this call's
/// trace.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RecordBody {
    request_id: String,
    client: String,
    anonymous: bool,
    channel: String,
    category: String,
    service: String,
    unit: String,
    description: String,
    remedy_sought: String,
}

async fn record_complaint(
    State(desk): State<Desk>,
    headers: HeaderMap,
    body: Option<axum::Json<RecordBody>>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let Some(axum::Json(b)) = body else {
        return error_response(&invalid(
            "body",
            "a JSON object with the complaint's fields",
        ));
    };
    let forget = desk.gateway.agency_changing(&agency);
    let r = record(&desk, &ctx, &agency, b).await;
    drop(forget);
    reply(r, |c| json!({"complaint": complaint_json(c)}))
}

async fn record(
    desk: &Desk,
    ctx: &CallContext,
    agency: &str,
    b: RecordBody,
) -> Result<cpb::Complaint, tonic::Status> {
    let who = match (b.client.is_empty(), b.anonymous) {
        (false, false) => {
            let prefix = format!("agencies/{agency}/clients/");
            let id = b.client.strip_prefix(&prefix).unwrap_or(&b.client);
            check_id("client", id)?;
            cpb::complainant::Who::Client(format!("{prefix}{id}"))
        }
        (true, true) => cpb::complainant::Who::Anonymous(true),
        _ => {
            return Err(invalid(
                "client",
                "name the register client, or set anonymous (not both)",
            ));
        }
    };
    let channel = enum_by_name("channel", "CHANNEL_", &b.channel, |s| {
        touchstone_api::common::v1::Channel::from_str_name(s).map(|e| e as i32)
    })?;
    let req = cpb::CreateComplaintRequest {
        parent: format!("agencies/{agency}"),
        complaint: Some(cpb::Complaint {
            complainant: Some(cpb::Complainant { who: Some(who) }),
            channel,
            category: b.category,
            service: b.service,
            unit: b.unit,
            description: b.description,
            remedy_sought: b.remedy_sought,
            ..Default::default()
        }),
        request_id: b.request_id,
        ..Default::default()
    };
    let mut client = desk.gateway.backends().complaints();
    ctx.run(client.create_complaint(ctx.request(req))).await
}

async fn act_on_complaint(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Option<axum::Json<ActionBody>>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(s) = check_id("complaint", &id) {
        return error_response(&s);
    }
    let Some(axum::Json(b)) = body else {
        return error_response(&invalid("body", "a JSON object with etag and request_id"));
    };
    let name = complaint_name(&agency, &id);
    let forget = desk.gateway.agency_changing(&agency);
    let r = act(&desk, &ctx, name, &action, b).await;
    drop(forget);
    reply(r, |c| json!({"complaint": complaint_json(c)}))
}

async fn act(
    desk: &Desk,
    ctx: &CallContext,
    name: String,
    action: &str,
    b: ActionBody,
) -> Result<cpb::Complaint, tonic::Status> {
    let mut client = desk.gateway.backends().complaints();
    let (etag, request_id, note) = (b.etag, b.request_id, b.note);
    match action {
        "acknowledge" => {
            let req = cpb::AcknowledgeComplaintRequest {
                name,
                note,
                etag,
                request_id,
            };
            ctx.run(client.acknowledge_complaint(ctx.request(req)))
                .await
        }
        "start" => {
            let req = cpb::StartComplaintRequest {
                name,
                note,
                etag,
                request_id,
            };
            ctx.run(client.start_complaint(ctx.request(req))).await
        }
        "await-client" => {
            let req = cpb::AwaitClientRequest {
                name,
                note,
                etag,
                request_id,
            };
            ctx.run(client.await_client(ctx.request(req))).await
        }
        "resume" => {
            let req = cpb::ResumeComplaintRequest {
                name,
                note,
                etag,
                request_id,
            };
            ctx.run(client.resume_complaint(ctx.request(req))).await
        }
        "resolve" => {
            let outcome = enum_by_name("outcome", "OUTCOME_", &b.outcome, |s| {
                cpb::Outcome::from_str_name(s).map(|e| e as i32)
            })?;
            let req = cpb::ResolveComplaintRequest {
                name,
                resolution: Some(cpb::Resolution {
                    outcome,
                    summary: b.summary,
                    ..Default::default()
                }),
                note,
                etag,
                request_id,
            };
            ctx.run(client.resolve_complaint(ctx.request(req))).await
        }
        "escalate" => {
            let stage = enum_by_name("stage", "STAGE_", &b.stage, |s| {
                cpb::Stage::from_str_name(s).map(|e| e as i32)
            })?;
            let req = cpb::EscalateComplaintRequest {
                name,
                stage,
                referral: None,
                note,
                etag,
                request_id,
            };
            ctx.run(client.escalate_complaint(ctx.request(req))).await
        }
        "assign" => {
            let req = cpb::AssignComplaintRequest {
                name,
                assignment: Some(cpb::Assignment {
                    unit: b.unit,
                    officer: b.officer,
                }),
                note,
                etag,
                request_id,
            };
            ctx.run(client.assign_complaint(ctx.request(req))).await
        }
        "contact" => {
            let channel = enum_by_name("channel", "CHANNEL_", &b.channel, |s| {
                touchstone_api::common::v1::Channel::from_str_name(s).map(|e| e as i32)
            })?;
            let direction = enum_by_name("direction", "DIRECTION_", &b.direction, |s| {
                cpb::contact::Direction::from_str_name(s).map(|e| e as i32)
            })?;
            let now = jiff::Timestamp::now();
            let req = cpb::CreateContactRequest {
                parent: name.clone(),
                contact: Some(cpb::Contact {
                    channel,
                    direction,
                    contact_time: Some(prost_types::Timestamp {
                        seconds: now.as_second(),
                        nanos: now.subsec_nanosecond(),
                    }),
                    summary: note,
                    ..Default::default()
                }),
                request_id,
            };
            ctx.run(client.create_contact(ctx.request(req))).await?;
            // The answer is the complaint as it now stands, like every other action.
            ctx.run(client.get_complaint(ctx.request(cpb::GetComplaintRequest { name })))
                .await
        }
        _ => Err(tonic::Status::not_found(
            "no such complaint action; one of acknowledge, start, await-client, resume, resolve, escalate, assign, contact",
        )),
    }
}

// ---- follow-ups ----

#[derive(Debug, Deserialize)]
struct FollowUpsQuery {
    status: Option<String>,
    page_token: Option<String>,
}

fn follow_up_status(v: i32) -> &'static str {
    web::ename(
        fpb::FollowUpStatus::try_from(v).map(|e| e.as_str_name()),
        "FOLLOW_UP_STATUS_",
    )
}

fn follow_up_json(f: &fpb::FollowUp) -> Json {
    json!({
        "name": f.name,
        "survey": f.survey,
        "reason": f.reason,
        "status": follow_up_status(f.status),
        "assignee": f.assignee,
        "due_date": web::date_json(f.due_date.as_ref()),
        "unit": f.unit,
        "channel": web::ename(touchstone_api::common::v1::Channel::try_from(f.channel).map(|e| e.as_str_name()), "CHANNEL_"),
        "create_time": web::time_json(f.create_time.as_ref()),
        "etag": f.etag,
    })
}

async fn list_follow_ups(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Query(q): Query<FollowUpsQuery>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let filter = match q.status.as_deref().unwrap_or("open") {
        "" | "any" => String::new(),
        "open" => "(status = OPEN OR status = CONTACTED)".to_string(),
        other => match enum_by_name("status", "FOLLOW_UP_STATUS_", other, |s| {
            fpb::FollowUpStatus::from_str_name(s).map(|e| e as i32)
        }) {
            Ok(v) => format!("status = {}", follow_up_status(v)),
            Err(s) => return error_response(&s),
        },
    };
    let req = fpb::ListFollowUpsRequest {
        parent: format!("agencies/{agency}"),
        page_size: 100,
        page_token: q.page_token.unwrap_or_default(),
        filter,
        order_by: "due_date".into(),
    };
    let mut client = desk.gateway.backends().feedback();
    let r = ctx.run(client.list_follow_ups(ctx.request(req))).await;
    reply(r, |r| {
        json!({
            "follow_ups": r.follow_ups.iter().map(follow_up_json).collect::<Vec<_>>(),
            "next_page_token": r.next_page_token,
        })
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FollowUpBody {
    etag: String,
    request_id: String,
    status: Option<String>,
    assignee: Option<String>,
    due_date: Option<String>,
}

async fn update_follow_up(
    State(desk): State<Desk>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<axum::Json<FollowUpBody>>,
) -> Response {
    let (_, ctx, agency) = match enter(&desk, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    if let Err(s) = check_id("follow_up", &id) {
        return error_response(&s);
    }
    let Some(axum::Json(b)) = body else {
        return error_response(&invalid("body", "a JSON object with etag and request_id"));
    };
    let mut follow_up = fpb::FollowUp {
        name: format!("agencies/{agency}/followUps/{id}"),
        etag: b.etag,
        ..Default::default()
    };
    let mut paths = Vec::new();
    if let Some(status) = b.status {
        match enum_by_name("status", "FOLLOW_UP_STATUS_", &status, |s| {
            fpb::FollowUpStatus::from_str_name(s).map(|e| e as i32)
        }) {
            Ok(v) => follow_up.status = v,
            Err(s) => return error_response(&s),
        }
        paths.push("status".to_string());
    }
    if let Some(assignee) = b.assignee {
        follow_up.assignee = assignee;
        paths.push("assignee".to_string());
    }
    if let Some(due) = b.due_date {
        match due.parse::<jiff::civil::Date>() {
            Ok(d) => follow_up.due_date = Some(crate::domain::wire_date(d)),
            Err(_) => return error_response(&invalid("due_date", "a date as YYYY-MM-DD")),
        }
        paths.push("due_date".to_string());
    }
    if paths.is_empty() {
        return error_response(&invalid(
            "body",
            "change at least one of status, assignee, due_date",
        ));
    }
    let req = fpb::UpdateFollowUpRequest {
        follow_up: Some(follow_up),
        update_mask: Some(prost_types::FieldMask { paths }),
        request_id: b.request_id,
    };
    let mut client = desk.gateway.backends().feedback();
    let forget = desk.gateway.agency_changing(&agency);
    let r = ctx.run(client.update_follow_up(ctx.request(req))).await;
    drop(forget);
    reply(r, |f| json!({"follow_up": follow_up_json(f)}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> ComplaintsQuery {
        ComplaintsQuery {
            officer: None,
            unit: None,
            category: None,
            stage: None,
            status: None,
            overdue: None,
            page_token: None,
        }
    }

    #[test]
    fn the_queue_filter_quotes_text_and_checks_enums() {
        assert_eq!(
            complaints_filter(&query()).ok().as_deref(),
            Some(OPEN_STATUSES)
        );
        let q = ComplaintsQuery {
            officer: Some("dev-user".into()),
            stage: Some("investigation".into()),
            status: Some("awaiting client".into()),
            overdue: Some("true".into()),
            ..query()
        };
        assert_eq!(
            complaints_filter(&q).ok().as_deref(),
            Some(
                r#"officer = "dev-user" AND stage = INVESTIGATION AND status = AWAITING_CLIENT AND overdue = true"#
            )
        );
        let bad = ComplaintsQuery {
            unit: Some(r#"x" OR unit = "y"#.into()),
            ..query()
        };
        assert!(complaints_filter(&bad).is_err());
        let bad = ComplaintsQuery {
            stage: Some("nowhere".into()),
            ..query()
        };
        assert!(complaints_filter(&bad).is_err());
    }

    #[test]
    fn a_trend_starts_and_ends_on_the_grid() {
        let d = jiff::civil::date(2026, 12, 4);
        assert_eq!(
            trend_range(d, kpi::Granularity::Month, 12).ok(),
            Some((
                jiff::civil::date(2026, 1, 1),
                jiff::civil::date(2026, 12, 31)
            ))
        );
        assert_eq!(
            trend_range(jiff::civil::date(2026, 2, 10), kpi::Granularity::Month, 2).ok(),
            Some((
                jiff::civil::date(2026, 1, 1),
                jiff::civil::date(2026, 2, 28)
            ))
        );
        // 2026-12-04 is in Q4; eight quarters back starts in Q1 2025.
        assert_eq!(
            trend_range(d, kpi::Granularity::Quarter, 8).ok(),
            Some((
                jiff::civil::date(2025, 1, 1),
                jiff::civil::date(2026, 12, 31)
            ))
        );
        assert_eq!(
            trend_range(jiff::civil::date(2026, 5, 31), kpi::Granularity::Quarter, 2).ok(),
            Some((
                jiff::civil::date(2026, 1, 1),
                jiff::civil::date(2026, 6, 30)
            ))
        );
    }
}
