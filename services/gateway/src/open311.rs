//! The Open311 GeoReport v2 face of the gateway's HTTP listener, under
//! `/open311/v2/`: service discovery and the agency's service catalogue
//! (services and service definitions), in XML always and JSON too. Errors are
//! the spec's list of `{code, description}` with the HTTP status as code.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value as Json, json};
use std::collections::HashMap;
use std::sync::Arc;

use crate::api::Gateway;
use crate::domain::Jurisdiction;
use crate::store::Open311ServiceRow;

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

/// An Open311 error: its HTTP status and description.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl Failure {
    fn bad(description: impl Into<String>) -> Failure {
        Failure(StatusCode::BAD_REQUEST, description.into())
    }
}

/// The routes under `/open311/v2/`.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let v2 = Router::new()
        .route("/{file}", get(top))
        .route("/services/{file}", get(definition))
        .fallback(elsewhere)
        .with_state(gateway);
    Router::new().nest("/open311/v2", v2)
}

/// Any other path or method under the prefix: 404 in the spec's form.
async fn elsewhere(uri: axum::http::Uri) -> Response {
    let format = split(uri.path().rsplit('/').next().unwrap_or_default())
        .1
        .unwrap_or(Format::Xml);
    failure(
        format,
        Failure(StatusCode::NOT_FOUND, "no such resource".into()),
    )
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
        return failure(
            Format::Xml,
            Failure(StatusCode::NOT_FOUND, format!("no such resource: {file}")),
        );
    };
    let query = match arguments(query) {
        Ok(q) => q,
        Err(f) => return failure(format, f),
    };
    let answer = match stem {
        "discovery" => Ok(discovery(format, &headers)),
        "services" => services(&gateway, format, &query).await,
        _ => Err(Failure(
            StatusCode::NOT_FOUND,
            format!("no such resource: {file}"),
        )),
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
        return failure(
            Format::Xml,
            Failure(StatusCode::NOT_FOUND, format!("no such resource: {file}")),
        );
    };
    let run = async {
        let query = arguments(query)?;
        let agency = jurisdiction(&gateway, &query).await?;
        let service = gateway
            .open311_service(&agency, code)
            .await
            .map_err(|_| Failure::bad("the service list could not be read; try again"))?
            .ok_or_else(|| {
                Failure(
                    StatusCode::NOT_FOUND,
                    format!("service_code {code:?} was not found"),
                )
            })?;
        // A complaint takes no attributes beyond the standard fields.
        Ok(match format {
            Format::Json => body(
                format,
                json!({"service_code": service.id, "attributes": []}).to_string(),
            ),
            Format::Xml => body(
                format,
                xml(&format!(
                    "<service_definition><service_code>{}</service_code><attributes></attributes></service_definition>",
                    escape(&service.id)
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
        Ok(Jurisdiction::Unknown) => Err(Failure(
            StatusCode::NOT_FOUND,
            "jurisdiction_id provided was not found".into(),
        )),
        Err(_) => Err(Failure::bad("the directory could not be read; try again")),
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
        .map_err(|_| Failure::bad("the service list could not be read; try again"))?;
    Ok(match format {
        Format::Json => body(
            format,
            Json::Array(list.iter().map(service_json).collect()).to_string(),
        ),
        Format::Xml => {
            let inner: String = list.iter().map(service_xml).collect();
            body(format, xml(&format!("<services>{inner}</services>")))
        }
    })
}

fn service_json(s: &Open311ServiceRow) -> Json {
    json!({
        "service_code": s.id,
        "service_name": s.display_name,
        "description": s.description,
        "metadata": false,
        "type": "realtime",
        "keywords": s.keywords.join(", "),
        "group": s.group,
    })
}

fn service_xml(s: &Open311ServiceRow) -> String {
    format!(
        "<service><service_code>{}</service_code><service_name>{}</service_name>\
         <description>{}</description><metadata>false</metadata><type>realtime</type>\
         <keywords>{}</keywords><group>{}</group></service>",
        escape(&s.id),
        escape(&s.display_name),
        escape(&s.description),
        escape(&s.keywords.join(", ")),
        escape(&s.group),
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
        Format::Json => body(
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
        Format::Xml => body(
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

fn body(format: Format, text: String) -> Response {
    let mut r = text.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, content_type(format));
    r
}

/// The spec's error list with one error, under its HTTP status.
fn failure(format: Format, Failure(status, description): Failure) -> Response {
    let code = status.as_u16();
    let text = match format {
        Format::Json => json!([{"code": code, "description": description}]).to_string(),
        Format::Xml => xml(&format!(
            "<errors><error><code>{code}</code><description>{}</description></error></errors>",
            escape(&description)
        )),
    };
    let mut r = body(format, text);
    *r.status_mut() = status;
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
