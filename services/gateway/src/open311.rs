//! The Open311 GeoReport v2 face of the gateway's HTTP listener, under
//! `/open311/v2/`: service discovery, the agency's service catalogue
//! (services and service definitions), `POST requests` (a complaint through
//! the complaints API, or a survey response through the feedback API, with an
//! `api_key`), `GET requests`, `requests/{id}`
//! and `tokens/{id}` (public status, no key), in XML always and JSON too.
//! Errors are the spec's list of `{code, description}` with the HTTP status
//! as code.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::{Gateway, Open311View};
use crate::domain::{self, Jurisdiction, RequestQuery};
use crate::error::Error;
use crate::open311_form;
use crate::store::Open311ServiceRow;
use tonic_types::StatusExt;
use touchstone_platform::{names, times};

/// The version of this endpoint's behaviour that discovery announces.
const CHANGESET: &str = "2026-12-04T00:00:00Z";
/// The specification discovery points at.
const SPECIFICATION: &str = "http://wiki.open311.org/GeoReport_v2";

/// The formats a resource is asked for by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Xml,
    Json,
}

/// An Open311 error: its HTTP status and one description per error.
#[derive(Debug)]
struct Failure(StatusCode, Vec<String>);

impl Failure {
    fn new(status: StatusCode, description: impl Into<String>) -> Failure {
        Failure(status, vec![description.into()])
    }

    fn bad(description: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, description)
    }

    fn not_found(description: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, description)
    }

    /// One 400 error per bad field, each naming it.
    fn fields(violations: &[touchstone_platform::error::FieldViolation]) -> Failure {
        Failure(
            StatusCode::BAD_REQUEST,
            violations
                .iter()
                .map(|v| format!("{}: {}", v.field, v.description))
                .collect(),
        )
    }

    /// The Open311 form of a gateway error. Messages are the safe ones the
    /// gateway and the services give (no personal data); what is not the
    /// caller's fault is a 503 to retry, logged by its code only.
    fn from_error(e: Error) -> Failure {
        match e {
            Error::InvalidArgument(v) => Failure::fields(&v),
            Error::NotFound(what) => Failure::not_found(format!("{what} was not found")),
            Error::PermissionDenied(why) => Failure::new(StatusCode::FORBIDDEN, why),
            Error::RateLimited => Failure::new(
                StatusCode::TOO_MANY_REQUESTS,
                "the api_key's requests per minute are spent; retry in the next minute",
            ),
            Error::Backend(status) if status.code() == tonic::Code::InvalidArgument => {
                let details = status.get_error_details();
                match details.bad_request() {
                    Some(b) if !b.field_violations.is_empty() => Failure(
                        StatusCode::BAD_REQUEST,
                        b.field_violations
                            .iter()
                            .map(|v| {
                                format!(
                                    "refused by the service behind this endpoint: {}: {}",
                                    v.field, v.description
                                )
                            })
                            .collect(),
                    ),
                    _ => Failure::bad("the service behind this endpoint refused the request"),
                }
            }
            Error::Backend(status) => {
                tracing::warn!(code = ?status.code(), "open311: a service call failed");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "a service behind this endpoint is unavailable; try again",
                )
            }
            other => {
                tracing::warn!(error = %other, "open311: the gateway failed");
                Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the endpoint is unavailable; try again",
                )
            }
        }
    }
}

/// The routes under `/open311/v2/`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let v2 = Router::new()
        .route("/{file}", get(top).post(submit))
        .route("/services/{file}", get(definition))
        .route("/requests/{file}", get(one_request))
        .route("/tokens/{file}", get(token))
        .fallback(elsewhere)
        .with_state(gateway);
    Router::new().nest("/open311/v2", v2)
}

/// Any other path or method under the prefix: 404 in the spec's form.
async fn elsewhere(uri: axum::http::Uri) -> Response {
    let format = split(uri.path().rsplit('/').next().unwrap_or_default())
        .1
        .unwrap_or(Format::Xml);
    failure(format, Failure::not_found("no such resource"))
}

/// The query's arguments; a query string that does not decode is a 400 in
/// the spec's form rather than the framework's plain text.
fn arguments(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<HashMap<String, String>, Failure> {
    query
        .map(|Query(q)| q)
        .map_err(|_| Failure::bad("the query string is not valid form encoding"))
}

/// Splits "services.json" into its stem and format; an unknown extension is
/// answered in XML, the format every server must speak.
fn split(file: &str) -> (&str, Option<Format>) {
    match file.rsplit_once('.') {
        Some((stem, "xml")) => (stem, Some(Format::Xml)),
        Some((stem, "json")) => (stem, Some(Format::Json)),
        Some((stem, _)) => (stem, None),
        None => (file, None),
    }
}

/// An optional argument: absent and empty are the same (the spec's rule).
fn arg<'a>(query: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    query.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

async fn top(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (stem, format) = split(&file);
    let Some(format) = format else {
        return failure(Format::Xml, Failure::not_found("no such resource"));
    };
    let query = match arguments(query) {
        Ok(q) => q,
        Err(f) => return failure(format, f),
    };
    let answer = match stem {
        "discovery" => Ok(discovery(format, &headers)),
        "services" => services(&gateway, format, &query).await,
        "requests" => requests(&gateway, format, &query).await,
        _ => Err(Failure::not_found("no such resource")),
    };
    answer.unwrap_or_else(|f| failure(format, f))
}

async fn definition(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let (code, format) = split(&file);
    let Some(format) = format else {
        return failure(Format::Xml, Failure::not_found("no such resource"));
    };
    let run = async {
        let query = arguments(query)?;
        let agency = jurisdiction(&gateway, &query).await?;
        let service = gateway
            .open311_service(&agency, code)
            .await
            .map_err(Failure::from_error)?
            .ok_or_else(|| Failure::not_found(format!("service_code {code:?} was not found")))?;
        // A complaint takes no attributes beyond the standard fields; a
        // survey's questions are its attributes.
        Ok(match format {
            Format::Json => body_of(
                format,
                json!({
                    "service_code": service.id,
                    "attributes": service
                        .attributes
                        .iter()
                        .enumerate()
                        .map(|(i, a)| attribute_json(i, a))
                        .collect::<Vec<_>>(),
                })
                .to_string(),
            ),
            Format::Xml => body_of(
                format,
                xml(&format!(
                    "<service_definition><service_code>{}</service_code><attributes>{}</attributes></service_definition>",
                    escape(&service.id),
                    service
                        .attributes
                        .iter()
                        .enumerate()
                        .map(|(i, a)| attribute_xml(i, a))
                        .collect::<String>(),
                )),
            ),
        })
    };
    run.await.unwrap_or_else(|f| failure(format, f))
}

/// The agency `jurisdiction_id` names (required when the hub has several).
async fn jurisdiction(
    gateway: &Gateway,
    query: &HashMap<String, String>,
) -> Result<String, Failure> {
    let asked = arg(query, "jurisdiction_id");
    match gateway.open311_jurisdiction(asked).await {
        Ok(Jurisdiction::Agency(a)) => Ok(a),
        Ok(Jurisdiction::Missing) => Err(Failure::bad(
            "jurisdiction_id was not provided: this endpoint serves several jurisdictions",
        )),
        Ok(Jurisdiction::Unknown) => {
            Err(Failure::not_found("jurisdiction_id provided was not found"))
        }
        Err(e) => Err(Failure::from_error(e)),
    }
}

async fn services(
    gateway: &Gateway,
    format: Format,
    query: &HashMap<String, String>,
) -> Result<Response, Failure> {
    let agency = jurisdiction(gateway, query).await?;
    let list = gateway
        .open311_services(&agency)
        .await
        .map_err(Failure::from_error)?;
    Ok(match format {
        Format::Json => body_of(
            format,
            Json::Array(list.iter().map(service_json).collect()).to_string(),
        ),
        Format::Xml => {
            let inner: String = list.iter().map(service_xml).collect();
            body_of(format, xml(&format!("<services>{inner}</services>")))
        }
    })
}

fn service_json(s: &Open311ServiceRow) -> Json {
    json!({
        "service_code": s.id,
        "service_name": s.display_name,
        "description": s.description,
        "metadata": !s.attributes.is_empty(),
        "type": "realtime",
        "keywords": s.keywords.join(", "),
        "group": s.group,
    })
}

fn service_xml(s: &Open311ServiceRow) -> String {
    format!(
        "<service><service_code>{}</service_code><service_name>{}</service_name>\
         <description>{}</description><metadata>{}</metadata><type>realtime</type>\
         <keywords>{}</keywords><group>{}</group></service>",
        escape(&s.id),
        escape(&s.display_name),
        escape(&s.description),
        !s.attributes.is_empty(),
        escape(&s.keywords.join(", ")),
        escape(&s.group),
    )
}

/// `POST requests.{xml,json}`: the api_key first (403 or 429 before
/// anything else is looked at), then every field, then the complaint.
async fn submit(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (stem, format) = split(&file);
    let format = match (stem, format) {
        ("requests", Some(f)) => f,
        (_, f) => {
            return failure(
                f.unwrap_or(Format::Xml),
                Failure::not_found("no such resource"),
            );
        }
    };
    let run = async {
        let form = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/x-www-form-urlencoded")
            });
        if !form {
            return Err(Failure::bad(
                "the body must be application/x-www-form-urlencoded",
            ));
        }
        // Fields in the query string count too: some clients send the
        // api_key and jurisdiction_id there.
        let mut pairs = open311_form::decode(uri.query().unwrap_or_default().as_bytes())
            .map_err(|v| Failure::fields(&[v]))?;
        pairs.extend(open311_form::decode(&body).map_err(|v| Failure::fields(&[v]))?);
        let key = pairs
            .iter()
            .find(|(n, _)| n == "api_key")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        let grant = gateway
            .verify_api_key(key)
            .await
            .map_err(Failure::from_error)?;
        let sub = open311_form::parse(&pairs).map_err(|v| Failure::fields(&v))?;
        let id = gateway
            .open311_submit(&grant, &sub)
            .await
            .map_err(|e| match e {
                Error::NotFound("service_code") => {
                    Failure::not_found(format!("service_code {:?} was not found", sub.service_code))
                }
                e => Failure::from_error(e),
            })?;
        let account = (!sub.account_id.is_empty()).then_some(sub.account_id.as_str());
        Ok(match format {
            Format::Json => body_of(
                format,
                json!([{
                    "service_request_id": id,
                    "service_notice": NOTICE,
                    "account_id": account,
                }])
                .to_string(),
            ),
            Format::Xml => body_of(
                format,
                xml(&format!(
                    "<service_requests><request><service_request_id>{}</service_request_id>\
                     <service_notice>{}</service_notice><account_id>{}</account_id>\
                     </request></service_requests>",
                    escape(&id),
                    escape(NOTICE),
                    escape(account.unwrap_or_default()),
                )),
            ),
        })
    };
    run.await.unwrap_or_else(|f| failure(format, f))
}

/// What a POST's answer tells the sender.
const NOTICE: &str =
    "Received as a complaint; the agency acknowledges it within its published timeframe.";

/// `GET requests.{xml,json}`.
async fn requests(
    gateway: &Gateway,
    format: Format,
    query: &HashMap<String, String>,
) -> Result<Response, Failure> {
    let agency = jurisdiction(gateway, query).await?;
    let parsed = RequestQuery::parse(|n| arg(query, n).map(str::to_string), times::now_millis())
        .map_err(|v| Failure::fields(&v))?;
    let views = gateway
        .open311_requests(&agency, &parsed)
        .await
        .map_err(Failure::from_error)?;
    Ok(request_list(format, &views))
}

/// `GET requests/{id}.{xml,json}`: a list of one, or 404.
async fn one_request(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    by_id(
        &gateway,
        &file,
        query,
        "service_request_id",
        |format, _, view| request_list(format, std::slice::from_ref(view)),
    )
    .await
}

/// `GET tokens/{token}.{xml,json}`. Every POST answers its
/// service_request_id at once, so the token of a request is its id: this
/// answers the id for any id it knows, as the spec's token call would.
async fn token(
    State(gateway): State<Arc<Gateway>>,
    Path(file): Path<String>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    by_id(&gateway, &file, query, "token", |format, token, view| {
        let id = &view.row.id;
        match format {
            Format::Json => body_of(
                format,
                json!([{"service_request_id": id, "token": token}]).to_string(),
            ),
            Format::Xml => body_of(
                format,
                xml(&format!(
                    "<service_requests><request><service_request_id>{}</service_request_id>\
                     <token>{}</token></request></service_requests>",
                    escape(id),
                    escape(token)
                )),
            ),
        }
    })
    .await
}

/// The request a `{id}.{format}` path names, answered by `answer` in the
/// format asked (with the id as given); a 404 naming `what` when unknown.
async fn by_id(
    gateway: &Gateway,
    file: &str,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    what: &str,
    answer: impl FnOnce(Format, &str, &Open311View) -> Response,
) -> Response {
    let (id, format) = split(file);
    let Some(format) = format else {
        return failure(Format::Xml, Failure::not_found("no such resource"));
    };
    let run = async {
        let query = arguments(query)?;
        let agency = jurisdiction(gateway, &query).await?;
        let view = find(gateway, &agency, id, what).await?;
        Ok(answer(format, id, &view))
    };
    run.await.unwrap_or_else(|f| failure(format, f))
}

/// The request with this id, or a 404 naming `what`.
async fn find(
    gateway: &Gateway,
    agency: &str,
    id: &str,
    what: &str,
) -> Result<Open311View, Failure> {
    let unknown = || Failure::not_found(format!("{what} {id:?} was not found"));
    if names::check_id(id).is_err() {
        return Err(unknown());
    }
    match gateway.open311_request(agency, id).await {
        Ok(view) => Ok(view),
        Err(Error::NotFound(_)) => Err(unknown()),
        Err(e) => Err(Failure::from_error(e)),
    }
}

/// What Open311 publishes of a request: no names, email, phone or
/// description (the citizen's own words may hold personal data).
fn request_fields(v: &Open311View) -> Vec<(&'static str, Option<String>)> {
    let time = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(times::millis)
            .map(|ms| domain::open311_datetime(ms, &v.time_zone))
    };
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let requested = domain::open311_datetime(v.row.requested_time, &v.time_zone);
    let (notes, updated, expected) = match &v.status {
        Some(s) => (
            domain::open311_status_notes(s),
            time(&s.update_time),
            time(&s.response_due_time),
        ),
        // A survey response: nothing is owed once it is in.
        None => (
            "Feedback received".to_string(),
            Some(requested.clone()),
            None,
        ),
    };
    vec![
        ("service_request_id", Some(v.row.id.clone())),
        (
            "status",
            Some(if v.is_open() { "open" } else { "closed" }.into()),
        ),
        ("status_notes", Some(notes)),
        ("service_name", Some(v.service_name.clone())),
        ("service_code", Some(v.row.service_code.clone())),
        ("agency_responsible", Some(v.agency_name.clone())),
        ("service_notice", None),
        ("requested_datetime", Some(requested)),
        ("updated_datetime", updated),
        ("expected_datetime", expected),
        ("address", some(&v.row.address_string)),
        ("address_id", some(&v.row.address_id)),
        ("zipcode", None),
        ("lat", some(&v.row.latitude)),
        ("long", some(&v.row.longitude)),
        ("media_url", None),
    ]
}

fn request_list(format: Format, views: &[Open311View]) -> Response {
    match format {
        Format::Json => {
            let list = views
                .iter()
                .map(|v| {
                    let mut object = serde_json::Map::new();
                    for (name, value) in request_fields(v) {
                        let value = match (name, value) {
                            (_, None) => Json::Null,
                            // Coordinates are numbers in JSON, as given.
                            ("lat" | "long", Some(s)) => {
                                serde_json::from_str(&s).unwrap_or(Json::String(s))
                            }
                            (_, Some(s)) => Json::String(s),
                        };
                        object.insert(name.to_string(), value);
                    }
                    Json::Object(object)
                })
                .collect();
            body_of(format, Json::Array(list).to_string())
        }
        Format::Xml => {
            let inner: String = views
                .iter()
                .map(|v| {
                    let fields: String = request_fields(v)
                        .into_iter()
                        .map(|(name, value)| {
                            format!("<{name}>{}</{name}>", escape(&value.unwrap_or_default()))
                        })
                        .collect();
                    format!("<request>{fields}</request>")
                })
                .collect();
            body_of(
                format,
                xml(&format!("<service_requests>{inner}</service_requests>")),
            )
        }
    }
}

/// A survey question as the spec's attribute (order from 1).
fn attribute_json(i: usize, a: &domain::Open311Attribute) -> Json {
    json!({
        "variable": true,
        "code": a.code,
        "datatype": a.datatype(),
        "required": a.required,
        "datatype_description": a.datatype_description(),
        "order": i + 1,
        "description": a.description,
        "values": a
            .choices
            .iter()
            .map(|(key, name)| json!({"key": key, "name": name}))
            .collect::<Vec<_>>(),
    })
}

fn attribute_xml(i: usize, a: &domain::Open311Attribute) -> String {
    let values: String = a
        .choices
        .iter()
        .map(|(key, name)| {
            format!(
                "<value><key>{}</key><name>{}</name></value>",
                escape(key),
                escape(name)
            )
        })
        .collect();
    format!(
        "<attribute><variable>true</variable><code>{}</code><datatype>{}</datatype>\
         <required>{}</required><datatype_description>{}</datatype_description>\
         <order>{}</order><description>{}</description><values>{values}</values></attribute>",
        escape(&a.code),
        a.datatype(),
        a.required,
        escape(&a.datatype_description()),
        i + 1,
        escape(&a.description),
    )
}

/// Service discovery: this endpoint, its formats, whom to ask for a key.
fn discovery(format: Format, headers: &HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let url = format!("http://{host}/open311/v2");
    let contact = "The agency's Touchstone administrator";
    let key_service =
        "API keys are issued by each agency's agency_admin (touchstone api-keys create)";
    match format {
        Format::Json => body_of(
            format,
            json!({
                "changeset": CHANGESET,
                "contact": contact,
                "key_service": key_service,
                "endpoints": [{
                    "specification": SPECIFICATION,
                    "url": url,
                    "changeset": CHANGESET,
                    "type": "production",
                    "formats": ["text/xml", "application/json"],
                }],
            })
            .to_string(),
        ),
        Format::Xml => body_of(
            format,
            xml(&format!(
                "<discovery><changeset>{CHANGESET}</changeset><contact>{}</contact>\
                 <key_service>{}</key_service><endpoints><endpoint>\
                 <specification>{SPECIFICATION}</specification><url>{}</url>\
                 <changeset>{CHANGESET}</changeset><type>production</type>\
                 <formats><format>text/xml</format><format>application/json</format></formats>\
                 </endpoint></endpoints></discovery>",
                escape(contact),
                escape(key_service),
                escape(&url),
            )),
        ),
    }
}

/// An XML document: the declaration the spec requires, then the element.
fn xml(element: &str) -> String {
    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{element}")
}

/// Escapes text for an XML element.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn content_type(format: Format) -> HeaderValue {
    HeaderValue::from_static(match format {
        Format::Xml => "text/xml; charset=utf-8",
        Format::Json => "application/json; charset=utf-8",
    })
}

fn body_of(format: Format, text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, content_type(format));
    r
}

/// The spec's error list, one error per description, under its HTTP
/// status.
fn failure(format: Format, Failure(status, descriptions): Failure) -> Response {
    let code = status.as_u16();
    let text = match format {
        Format::Json => Json::Array(
            descriptions
                .iter()
                .map(|d| json!({"code": code, "description": d}))
                .collect(),
        )
        .to_string(),
        Format::Xml => {
            let inner: String = descriptions
                .iter()
                .map(|d| {
                    format!(
                        "<error><code>{code}</code><description>{}</description></error>",
                        escape(d)
                    )
                })
                .collect();
            xml(&format!("<errors>{inner}</errors>"))
        }
    };
    let mut r = body_of(format, text);
    *r.status_mut() = status;
    if status == StatusCode::TOO_MANY_REQUESTS {
        // The rate is counted per clock minute: the next one starts then.
        let wait = 60 - (times::now_millis() / 1000).rem_euclid(60);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_escaping() {
        assert_eq!(split("services.json"), ("services", Some(Format::Json)));
        assert_eq!(split("services.xml"), ("services", Some(Format::Xml)));
        assert_eq!(split("services.csv"), ("services", None));
        assert_eq!(split("services"), ("services", None));
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        let mut q = HashMap::new();
        q.insert("jurisdiction_id".to_string(), "  ".to_string());
        assert_eq!(arg(&q, "jurisdiction_id"), None);
    }
}
