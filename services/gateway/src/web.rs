//! The web dashboard: its pages and assets, embedded in the binary (no CDN,
//! works offline), and the JSON API beside them. Each API route
//! authenticates the bearer token the way the gRPC interceptor does and
//! calls the same gateway methods as the gRPC service, then renders the
//! answer as JSON (enum values by name, dates as YYYY-MM-DD, times as RFC
//! 3339).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value as Json, json};
use std::sync::Arc;
use tonic::Code;
use tonic::service::Interceptor as _;
use tonic_types::StatusExt as _;
use touchstone_api::common::v1::Date;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::kpi::v1 as kpi;
use touchstone_auth::{AuthInterceptor, Caller, Verifier};

use crate::api::Gateway;
use crate::backends::CallContext;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

#[derive(Debug, Clone)]
struct App {
    gateway: Arc<Gateway>,
    auth: AuthInterceptor,
}

/// The dashboard's routes: `/` and its assets, and `/api/...`; the Open311
/// endpoints under `/open311/v2/`; and `/metrics` and `/healthz`
/// (`crate::ops`). Every request is measured.
pub fn router(gateway: Arc<Gateway>, verifier: Arc<Verifier>) -> Router {
    let open311 = crate::open311::router(gateway.clone());
    let desk = crate::desk::router(gateway.clone(), verifier.clone());
    let ops = crate::ops::Ops::new(gateway.db().clone());
    let app = App {
        gateway,
        auth: AuthInterceptor::new(verifier),
    };
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .route("/api/me", get(me))
        .route("/api/dashboard", get(dashboard))
        .route("/api/benchmark", get(benchmark))
        .route("/api/agencies", get(agencies))
        .route("/api/peer-groups", get(peer_groups))
        .route("/api/indicators", get(indicators))
        .fallback(|| async { error_response(&tonic::Status::not_found("no such page")) })
        .with_state(app)
        .merge(open311)
        .merge(desk)
        .merge(ops.routes())
        .layer(axum::middleware::from_fn_with_state(
            ops,
            crate::ops::measure,
        ))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The caller and the call context, from the `Authorization` header.
fn authenticate(app: &App, headers: &HeaderMap) -> Result<(Caller, CallContext), tonic::Status> {
    authenticate_with(&app.auth, headers)
}

/// The caller and the call context, from the `Authorization` header, as
/// the gRPC interceptor `auth` would authenticate it.
pub(crate) fn authenticate_with(
    auth: &AuthInterceptor,
    headers: &HeaderMap,
) -> Result<(Caller, CallContext), tonic::Status> {
    let mut request = tonic::Request::new(());
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                tonic::Status::unauthenticated("the authorization header is malformed")
            })?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut auth = auth.clone();
    let request = auth.call(request)?;
    let caller = Caller::from_request(&request)?;
    let ctx = CallContext::from_request(&request)?;
    Ok((caller, ctx))
}

fn http_code(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

pub(crate) fn error_response(status: &tonic::Status) -> Response {
    let details = status.get_error_details();
    let fields: Vec<Json> = details
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|v| json!({"field": v.field, "description": v.description}))
                .collect()
        })
        .unwrap_or_default();
    let reason = details.error_info().map(|i| i.reason.clone());
    let body = json!({"error": {
        "code": format!("{:?}", status.code()),
        "reason": reason,
        "message": status.message(),
        "fields": fields,
    }});
    (http_code(status.code()), axum::Json(body)).into_response()
}

fn answer<T>(r: Result<T, crate::error::Error>, render: impl FnOnce(&T) -> Json) -> Response {
    match r {
        Ok(v) => axum::Json(render(&v)).into_response(),
        Err(e) => error_response(&tonic::Status::from(e)),
    }
}

async fn me(State(app): State<App>, headers: HeaderMap) -> Response {
    match authenticate(&app, &headers) {
        Ok((caller, _)) => axum::Json(json!({
            "subject": caller.subject,
            "agency": caller.agency,
            "roles": caller.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(s) => error_response(&s),
    }
}

#[derive(Debug, Deserialize)]
struct DashboardQuery {
    agency: Option<String>,
    period: Option<String>,
}

async fn dashboard(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<DashboardQuery>,
) -> Response {
    let (caller, ctx) = match authenticate(&app, &headers) {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    let agency = q
        .agency
        .filter(|a| !a.is_empty())
        .or_else(|| caller.agency.clone())
        .unwrap_or_default();
    let req = pb::GetDashboardRequest {
        agency: format!("agencies/{agency}"),
        period: q.period.unwrap_or_default(),
    };
    answer(
        app.gateway.dashboard(&caller, &ctx, req).await,
        dashboard_json,
    )
}

#[derive(Debug, Deserialize)]
struct BenchmarkQuery {
    indicator: Option<String>,
    period: Option<String>,
    peer_group: Option<String>,
}

async fn benchmark(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<BenchmarkQuery>,
) -> Response {
    let (caller, ctx) = match authenticate(&app, &headers) {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    let req = pb::GetBenchmarkRequest {
        indicator: q.indicator.unwrap_or_default(),
        period: q.period.unwrap_or_default(),
        peer_group: q.peer_group.unwrap_or_default(),
    };
    answer(
        app.gateway.benchmark(&caller, &ctx, req).await,
        benchmark_json,
    )
}

async fn agencies(State(app): State<App>, headers: HeaderMap) -> Response {
    let (caller, _) = match authenticate(&app, &headers) {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    let req = pb::ListAgenciesRequest {
        page_size: 1000,
        page_token: String::new(),
    };
    answer(app.gateway.list_agencies(&caller, req).await, |r| {
        json!({"agencies": r.agencies.iter().map(|a| json!({
            "name": a.name,
            "display_name": a.display_name,
            "time_zone": a.time_zone,
            "benchmark_consent": ename(pb::BenchmarkConsent::try_from(a.benchmark_consent).map(|e| e.as_str_name()), "BENCHMARK_CONSENT_"),
        })).collect::<Vec<_>>()})
    })
}

async fn peer_groups(State(app): State<App>, headers: HeaderMap) -> Response {
    let (caller, _) = match authenticate(&app, &headers) {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    let req = pb::ListPeerGroupsRequest {
        page_size: 1000,
        page_token: String::new(),
    };
    answer(app.gateway.list_peer_groups(&caller, req).await, |r| {
        json!({"peer_groups": r.peer_groups.iter().map(|g| json!({
            "name": g.name,
            "display_name": g.display_name,
            "agencies": g.agencies,
        })).collect::<Vec<_>>()})
    })
}

async fn indicators(State(app): State<App>, headers: HeaderMap) -> Response {
    let (_, ctx) = match authenticate(&app, &headers) {
        Ok(x) => x,
        Err(s) => return error_response(&s),
    };
    answer(
        app.gateway.indicators(&ctx).await,
        |r| json!({"indicators": r.indicators.iter().map(indicator_json).collect::<Vec<_>>()}),
    )
}

pub(crate) fn ename<E>(name: Result<&'static str, E>, prefix: &str) -> &'static str {
    name.map(|n| n.strip_prefix(prefix).unwrap_or(n))
        .unwrap_or("UNSPECIFIED")
}

pub(crate) fn date_json(d: Option<&Date>) -> Json {
    d.map_or(Json::Null, |d| {
        json!(format!("{:04}-{:02}-{:02}", d.year, d.month, d.day))
    })
}

pub(crate) fn time_json(t: Option<&prost_types::Timestamp>) -> Json {
    t.and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map_or(Json::Null, |t| json!(t.to_string()))
}

pub(crate) fn value_json(v: Option<&kpi::Value>) -> Json {
    v.map_or(Json::Null, |v| {
        json!({
            "n": v.n,
            "suppressed": v.suppressed,
            "value": v.value,
            "lower": v.lower,
            "upper": v.upper,
            "numerator": v.numerator,
            "denominator": v.denominator,
        })
    })
}

pub(crate) fn indicator_json(i: &kpi::Indicator) -> Json {
    json!({
        "id": i.id,
        "title": i.title,
        "formula": i.formula,
        "kind": ename(kpi::IndicatorKind::try_from(i.kind).map(|e| e.as_str_name()), "INDICATOR_KIND_"),
        "source": i.source,
    })
}

pub(crate) fn clock_json(c: Option<&cpb::Clock>) -> Json {
    c.map_or(Json::Null, |c| {
        json!({
            "allowed_days": c.allowed_days,
            "used_days": c.used_days,
            "remaining_days": c.remaining_days,
            "due_date": date_json(c.due_date.as_ref()),
            "due_time": time_json(c.due_time.as_ref()),
            "stopped": c.stopped,
            "breached": c.breached,
            "completed": c.completed,
        })
    })
}

pub(crate) fn stage(v: i32) -> &'static str {
    ename(cpb::Stage::try_from(v).map(|e| e.as_str_name()), "STAGE_")
}

pub(crate) fn severity(v: i32) -> &'static str {
    ename(
        cpb::Severity::try_from(v).map(|e| e.as_str_name()),
        "SEVERITY_",
    )
}

/// The dashboard as JSON.
pub fn dashboard_json(d: &pb::Dashboard) -> Json {
    let headlines: Vec<Json> = d
        .headlines
        .iter()
        .map(|h| {
            let line = h.line.clone().unwrap_or_default();
            let standard = line.standard.unwrap_or_default();
            json!({
                "standard": {
                    "name": standard.name,
                    "display_name": standard.display_name,
                    "description": standard.description,
                    "indicator": standard.indicator,
                    "comparator": ename(kpi::Comparator::try_from(standard.comparator).map(|e| e.as_str_name()), "COMPARATOR_"),
                    "target": standard.target,
                    "period": ename(kpi::Granularity::try_from(standard.period).map(|e| e.as_str_name()), "GRANULARITY_"),
                },
                "value": value_json(line.value.as_ref()),
                "verdict": ename(kpi::Verdict::try_from(line.verdict).map(|e| e.as_str_name()), "VERDICT_"),
                "previous": value_json(h.previous.as_ref()),
                "trend": ename(pb::Trend::try_from(h.trend).map(|e| e.as_str_name()), "TREND_"),
                "significant_change": h.significant_change,
            })
        })
        .collect();
    let complaints = d.complaints.as_ref().map_or(Json::Null, |c| {
        json!({
            "open": c.open,
            "overdue": c.overdue,
            "truncated": c.truncated,
            "counts": c.counts.iter().map(|x| json!({
                "stage": stage(x.stage),
                "severity": severity(x.severity),
                "open": x.open,
                "overdue": x.overdue,
            })).collect::<Vec<_>>(),
            "queue": c.queue.iter().map(|q| json!({
                "complaint": q.complaint,
                "unit": q.unit,
                "category": q.category,
                "stage": stage(q.stage),
                "severity": severity(q.severity),
                "status": ename(cpb::Status::try_from(q.status).map(|e| e.as_str_name()), "STATUS_"),
                "officer": q.officer,
                "receive_time": time_json(q.receive_time.as_ref()),
                "clock": clock_json(q.clock.as_ref()),
                "overdue": q.overdue,
            })).collect::<Vec<_>>(),
        })
    });
    let feedback = d.feedback.as_ref().map_or(Json::Null, |f| {
        json!({
            "response_rate": value_json(f.response_rate.as_ref()),
            "satisfaction": value_json(f.satisfaction.as_ref()),
            "nps": value_json(f.nps.as_ref()),
            "follow_ups_open": f.follow_ups_open,
            "follow_ups_overdue": f.follow_ups_overdue,
        })
    });
    json!({
        "agency": d.agency,
        "period": d.period,
        "start_date": date_json(d.start_date.as_ref()),
        "end_date": date_json(d.end_date.as_ref()),
        "min_count": d.min_count,
        "unreachable": d.unreachable,
        "withheld": d.withheld,
        "headlines": headlines,
        "complaints": complaints,
        "feedback": feedback,
        "topics": d.topics.iter().map(|t| json!({
            "topic": t.topic,
            "responses": t.responses,
            "mean_sentiment": t.mean_sentiment,
        })).collect::<Vec<_>>(),
        "equity": d.equity.iter().map(|g| {
            let s = g.segment.clone().unwrap_or_default();
            json!({
                "dimension": ename(kpi::Dimension::try_from(g.dimension).map(|e| e.as_str_name()), "DIMENSION_"),
                "segment": s.segment,
                "value": value_json(s.value.as_ref()),
                "gap": s.gap,
                "significant": s.significant,
                "p_value": s.p_value,
            })
        }).collect::<Vec<_>>(),
    })
}

/// The benchmark as JSON.
pub fn benchmark_json(b: &pb::Benchmark) -> Json {
    json!({
        "indicator": b.indicator.as_ref().map_or(Json::Null, indicator_json),
        "peer_group": b.peer_group,
        "period": b.period,
        "start_date": date_json(b.start_date.as_ref()),
        "end_date": date_json(b.end_date.as_ref()),
        "peer_median": b.peer_median,
        "higher_is_better": b.higher_is_better,
        "total_n": b.total_n,
        "pooled_value": b.pooled_value,
        "min_count": b.min_count,
        "unreachable": b.unreachable,
        "entries": b.entries.iter().map(|e| json!({
            "agency": e.agency,
            "label": e.label,
            "disclosure": ename(pb::Disclosure::try_from(e.disclosure).map(|x| x.as_str_name()), "DISCLOSURE_"),
            "value": value_json(e.value.as_ref()),
            "suppression": ename(pb::Suppression::try_from(e.suppression).map(|x| x.as_str_name()), "SUPPRESSION_"),
            "rank": e.rank,
            "quartile": e.quartile,
            "versus_median": ename(pb::Comparison::try_from(e.versus_median).map(|x| x.as_str_name()), "COMPARISON_"),
        })).collect::<Vec<_>>(),
    })
}
