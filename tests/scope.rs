//! Tenant scope under attack: every RPC of every service, enumerated from the descriptor
//! set (so a new RPC is covered without anyone remembering to add it), called against one
//! agency's resources with tokens holding every pair of roles in every agency scope.
//!
//! Two properties (DESIGN §4, "a role applies only in its own scope"):
//! - a token none of whose roles applies in the victim agency gets no data and changes
//!   nothing: no success that mentions the victim, no event in any of its change feeds;
//! - a token that holds a hub role for the victim plus agency roles elsewhere may do there
//!   only what the hub role alone may: whenever the hub-only token is refused, so is it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ReflectMessage, Value,
};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use touchstone_auth::{DevKey, Role, TokenRequest};
use touchstone_e2e::Up;

/// The agency whose data the sweep attacks.
const VICTIM: &str = "victimagency";
/// An agency the attacking tokens may belong to.
const OTHER: &str = "otheragency";
/// Written into the victim's personal data; must never come back to an outsider.
const MARKER: &str = "Zqvictimmarker";

/// Sends and receives raw message bytes, so that any method can be called from its
/// descriptor alone.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawCoder;

impl Encoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCoder;
    type Decoder = RawCoder;
    fn encoder(&mut self) -> RawCoder {
        RawCoder
    }
    fn decoder(&mut self) -> RawCoder {
        RawCoder
    }
}

/// What a call came to: OK with the response bytes, or an error code.
#[derive(Debug)]
enum Outcome {
    Ok(Vec<u8>),
    Err(Code, String),
}

impl Outcome {
    fn refused(&self) -> bool {
        matches!(
            self,
            Outcome::Err(
                Code::NotFound | Code::PermissionDenied | Code::Unauthenticated,
                _
            )
        )
    }

    fn mentions_victim(&self) -> bool {
        let hay = match self {
            Outcome::Ok(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Outcome::Err(_, message) => message.clone(),
        };
        hay.contains(VICTIM) || hay.contains(MARKER)
    }
}

/// The victim's resource names, by the resource word used in method names.
type Names = BTreeMap<&'static str, String>;

/// Resource words, longest first, so that `GetComplaintStandard` is not a `Complaint`.
const WORDS: &[&str] = &[
    "ComplaintStandard",
    "ComplaintHistory",
    "AuditRecord",
    "PeerGroup",
    "FollowUp",
    "Complaint",
    "Calendar",
    "Response",
    "Standard",
    "Contact",
    "Indicator",
    "Agencies",
    "Benchmark",
    "Dashboard",
    "Client",
    "Survey",
    "Agency",
    "Issue",
    "Need",
    "Unit",
];

fn resource_of(method: &str) -> &'static str {
    WORDS
        .iter()
        .find(|w| method.contains(*w))
        .copied()
        .unwrap_or("Agency")
}

/// The `name` and the `parent` a request of `method` should carry to reach the victim.
fn name_and_parent(method: &str, names: &Names) -> (String, String) {
    let agency = format!("agencies/{VICTIM}");
    let get = |k: &str| names.get(k).cloned().unwrap_or_else(|| agency.clone());
    match resource_of(method) {
        "Need" => (get("Need"), get("Client")),
        "Response" => (get("Response"), get("Survey")),
        "Contact" | "ComplaintHistory" => (get("Complaint"), get("Complaint")),
        "ComplaintStandard" => (format!("{agency}/complaintStandard"), agency),
        "Agencies" | "Indicator" | "Benchmark" | "Dashboard" => (agency.clone(), agency),
        word => (get(word), agency),
    }
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", UNIQUE.fetch_add(1, Ordering::Relaxed))
}

/// A request of `method` aimed at the victim's resources, as valid as can be guessed
/// from field names: real names in `name`/`parent`/resource fields, fresh ids, a date,
/// the first value of each enum. Validation after the role check does not matter here.
fn request_for(method: &MethodDescriptor, names: &Names) -> Vec<u8> {
    let (name, parent) = name_and_parent(method.name(), names);
    let mut msg = DynamicMessage::new(method.input());
    fill(&mut msg, &name, &parent, names, 0);
    msg.encode_to_vec()
}

fn fill(msg: &mut DynamicMessage, name: &str, parent: &str, names: &Names, depth: usize) {
    let desc: MessageDescriptor = msg.descriptor();
    if desc.full_name().starts_with("google.protobuf.") {
        return;
    }
    for field in desc.fields() {
        if let Some(oneof) = field.containing_oneof()
            && oneof.fields().next().map(|f| f.number()) != Some(field.number())
        {
            continue;
        }
        if let Some(v) = value_for(&field, &desc, name, parent, names, depth) {
            msg.set_field(&field, v);
        }
    }
}

fn value_for(
    field: &FieldDescriptor,
    owner: &MessageDescriptor,
    name: &str,
    parent: &str,
    names: &Names,
    depth: usize,
) -> Option<Value> {
    let fname = field.name();
    if field.is_list() {
        if fname == "agencies" && field.kind() == Kind::String {
            let v = if owner.name() == "PeerGroup" {
                format!("agencies/{VICTIM}")
            } else {
                VICTIM.to_string()
            };
            return Some(Value::List(vec![Value::String(v)]));
        }
        return None;
    }
    if field.is_map() {
        return None;
    }
    Some(match field.kind() {
        Kind::String => Value::String(match fname {
            "name" if depth == 0 => name.to_string(),
            "name" => names
                .get(owner.name())
                .cloned()
                .unwrap_or_else(|| name.to_string()),
            "parent" => parent.to_string(),
            "agency" => format!("agencies/{VICTIM}"),
            "agency_id" => VICTIM.to_string(),
            "request_id" => unique("scope-probe-"),
            "indicator" => "complaints_received".into(),
            "filter" | "order_by" | "page_token" | "etag" | "period" => return None,
            f if f.ends_with("_id") => unique("probe"),
            "client" => names.get("Client")?.clone(),
            "complaint" => names.get("Complaint")?.clone(),
            "survey" => names.get("Survey")?.clone(),
            "peer_group" => names.get("PeerGroup")?.clone(),
            "standard" => names.get("Standard")?.clone(),
            _ => "probe text".into(),
        }),
        Kind::Enum(e) => Value::EnumNumber(e.values().find(|v| v.number() > 0)?.number()),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(match fname {
            "year" => 2026,
            "month" | "day" => 1,
            _ => return None,
        }),
        Kind::Message(m) if depth < 4 => {
            let mut sub = DynamicMessage::new(m);
            fill(&mut sub, name, parent, names, depth + 1);
            Value::Message(sub)
        }
        _ => return None,
    })
}

/// Calls `method` with `body` as `token`; a server stream yields its first message.
async fn call(channel: &Channel, method: &MethodDescriptor, body: Vec<u8>, token: &str) -> Outcome {
    let path: http::uri::PathAndQuery =
        format!("/{}/{}", method.parent_service().full_name(), method.name())
            .parse()
            .expect("a method path");
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    if let Err(e) = grpc.ready().await {
        return Outcome::Err(Code::Unavailable, e.to_string());
    }
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("header text");
    let result = if method.is_client_streaming() {
        let mut req = tonic::Request::new(tokio_stream::iter(vec![body]));
        req.metadata_mut().insert("authorization", bearer);
        req.set_timeout(Duration::from_secs(10));
        grpc.client_streaming(req, path, RawCodec)
            .await
            .map(|r| r.into_inner())
    } else if method.is_server_streaming() {
        let mut req = tonic::Request::new(body);
        req.metadata_mut().insert("authorization", bearer);
        match grpc.server_streaming(req, path, RawCodec).await {
            Err(s) => Err(s),
            Ok(r) => {
                let mut stream = r.into_inner();
                match tokio::time::timeout(Duration::from_millis(300), stream.message()).await {
                    Ok(Ok(Some(m))) => Ok(m),
                    Ok(Ok(None)) | Err(_) => Ok(Vec::new()),
                    Ok(Err(s)) => Err(s),
                }
            }
        }
    } else {
        let mut req = tonic::Request::new(body);
        req.metadata_mut().insert("authorization", bearer);
        req.set_timeout(Duration::from_secs(10));
        grpc.unary(req, path, RawCodec)
            .await
            .map(|r| r.into_inner())
    };
    match result {
        Ok(bytes) => Outcome::Ok(bytes),
        Err(s) => Outcome::Err(s.code(), s.message().to_string()),
    }
}

fn mint(key: &DevKey, agency: Option<&str>, agencies: Option<&[&str]>, roles: &[Role]) -> String {
    let mut t = TokenRequest::new(
        unique("scope-user-"),
        agency.map(str::to_owned),
        roles.to_vec(),
    );
    t.agencies = agencies.map(|a| a.iter().map(|s| s.to_string()).collect());
    key.mint(&t).expect("minting a token")
}

/// Every method of every Touchstone service, with the channel of the port serving it.
fn methods(up: &Up) -> Vec<(MethodDescriptor, u16)> {
    let pool = DescriptorPool::decode(touchstone_api::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut out = Vec::new();
    for service in pool.services() {
        let port = match service.package_name() {
            "touchstone.register.v1" => up.port,
            "touchstone.complaints.v1" => up.port_of("complaints"),
            "touchstone.feedback.v1" => up.port_of("feedback"),
            "touchstone.kpi.v1" => up.port_of("kpi"),
            "touchstone.gateway.v1" => up.port_of("gateway"),
            other => panic!("a service of an unknown package {other}: add its port here"),
        };
        out.extend(service.methods().map(|m| (m, port)));
    }
    assert!(out.len() > 80, "the descriptor set lists every RPC");
    out
}

async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("a URL")
        .connect()
        .await
        .expect("connecting")
}

/// Creates the victim agency and one of each of its resources, as its own officers and
/// the hub would; returns their names.
async fn seed(up: &Up, key: &DevKey) -> Names {
    use touchstone_api::complaints::v1 as cpb;
    use touchstone_api::feedback::v1 as fpb;
    use touchstone_api::gateway::v1 as gpb;
    use touchstone_api::register::v1 as rpb;
    let hub = mint(key, None, Some(&["*"]), &[Role::HubAdmin]);
    let owner = mint(
        key,
        Some(VICTIM),
        None,
        &[
            Role::Officer,
            Role::SeniorOfficer,
            Role::AgencyAdmin,
            Role::Analyst,
        ],
    );
    fn req<T>(m: T, token: &str) -> tonic::Request<T> {
        let mut r = tonic::Request::new(m);
        let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
        r.metadata_mut().insert("authorization", bearer);
        r
    }
    let agency = format!("agencies/{VICTIM}");
    let mut names = Names::new();
    names.insert("Agency", agency.clone());

    let mut gateway = gpb::gateway_service_client::GatewayServiceClient::new(
        channel(up.port_of("gateway")).await,
    );
    for (id, consent) in [(VICTIM, 3), (OTHER, 3)] {
        gateway
            .create_agency(req(
                gpb::CreateAgencyRequest {
                    agency_id: id.into(),
                    request_id: unique("seed-"),
                    agency: Some(gpb::Agency {
                        display_name: format!("Agency {id}"),
                        time_zone: "Pacific/Auckland".into(),
                        benchmark_consent: consent,
                        ..Default::default()
                    }),
                },
                &hub,
            ))
            .await
            .expect("CreateAgency");
    }
    let unit = gateway
        .create_unit(req(
            gpb::CreateUnitRequest {
                parent: agency.clone(),
                unit_id: "north".into(),
                request_id: unique("seed-"),
                unit: Some(gpb::Unit {
                    display_name: "North".into(),
                    ..Default::default()
                }),
            },
            &owner,
        ))
        .await
        .expect("CreateUnit")
        .into_inner();
    names.insert("Unit", unit.name);
    let group = gateway
        .create_peer_group(req(
            gpb::CreatePeerGroupRequest {
                peer_group_id: "victims".into(),
                request_id: unique("seed-"),
                peer_group: Some(gpb::PeerGroup {
                    display_name: "Victims".into(),
                    agencies: vec![agency.clone()],
                    ..Default::default()
                }),
            },
            &hub,
        ))
        .await
        .expect("CreatePeerGroup")
        .into_inner();
    names.insert("PeerGroup", group.name);

    let mut register = rpb::register_service_client::RegisterServiceClient::new(up.channel().await);
    let client = register
        .create_client(req(
            rpb::CreateClientRequest {
                parent: agency.clone(),
                client_id: "victim-client".into(),
                request_id: unique("seed-"),
                client: Some(rpb::Client {
                    kind: rpb::ClientKind::Person as i32,
                    given_names: MARKER.into(),
                    family_name: "Victim".into(),
                    email: "victim@example.org".into(),
                    ..Default::default()
                }),
            },
            &owner,
        ))
        .await
        .expect("CreateClient")
        .into_inner();
    names.insert("Client", client.name.clone());
    let need = register
        .create_need(req(
            rpb::CreateNeedRequest {
                parent: client.name.clone(),
                need_id: "victim-need".into(),
                request_id: unique("seed-"),
                need: Some(rpb::Need {
                    category: "housing".into(),
                    description: MARKER.into(),
                    ..Default::default()
                }),
            },
            &owner,
        ))
        .await
        .expect("CreateNeed")
        .into_inner();
    names.insert("Need", need.name);

    let mut complaints = cpb::complaints_service_client::ComplaintsServiceClient::new(
        channel(up.port_of("complaints")).await,
    );
    let complaint = complaints
        .create_complaint(req(
            cpb::CreateComplaintRequest {
                parent: agency.clone(),
                complaint_id: "victim-complaint".into(),
                request_id: unique("seed-"),
                complaint: Some(cpb::Complaint {
                    complainant: Some(cpb::Complainant {
                        who: Some(cpb::complainant::Who::Client(client.name.clone())),
                    }),
                    channel: touchstone_api::common::v1::Channel::Web as i32,
                    category: "delay".into(),
                    description: format!("{MARKER} waited eleven weeks."),
                    ..Default::default()
                }),
            },
            &owner,
        ))
        .await
        .expect("CreateComplaint")
        .into_inner();
    names.insert("Complaint", complaint.name);
    let issue = complaints
        .create_issue(req(
            cpb::CreateIssueRequest {
                parent: agency.clone(),
                issue_id: "victim-issue".into(),
                request_id: unique("seed-"),
                issue: Some(cpb::Issue {
                    title: "Slow renewals".into(),
                    description: "Renewals wait for a second check.".into(),
                    ..Default::default()
                }),
            },
            &owner,
        ))
        .await
        .expect("CreateIssue")
        .into_inner();
    names.insert("Issue", issue.name);

    let mut feedback = fpb::feedback_service_client::FeedbackServiceClient::new(
        channel(up.port_of("feedback")).await,
    );
    let surveys = feedback
        .create_template_surveys(req(
            fpb::CreateTemplateSurveysRequest {
                parent: agency.clone(),
                templates: vec![fpb::SurveyTemplate::Nps as i32],
                touchpoint: Some(fpb::Touchpoint {
                    service: "renewal".into(),
                    channel: touchstone_api::common::v1::Channel::Web as i32,
                    ..Default::default()
                }),
                request_id: unique("seed-"),
            },
            &owner,
        ))
        .await
        .expect("CreateTemplateSurveys")
        .into_inner()
        .surveys;
    let survey = surveys.first().expect("one survey").name.clone();
    names.insert("Survey", survey);
    names
}

/// The sequences of the victim's change feeds, as a `service` token of all agencies sees
/// them: any change to the victim shows here.
async fn feed_heads(up: &Up, key: &DevKey) -> Vec<usize> {
    let service = mint(key, None, Some(&["*"]), &[Role::Service]);
    let mut heads = Vec::new();
    for (method, port) in methods(up) {
        if method.name() != "ListEvents" {
            continue;
        }
        let mut all = 0;
        let mut after = 0i64;
        loop {
            let mut m = DynamicMessage::new(method.input());
            m.set_field_by_name("after_sequence", Value::I64(after));
            m.set_field_by_name("page_size", Value::I32(1000));
            let out = call(&channel(port).await, &method, m.encode_to_vec(), &service).await;
            let Outcome::Ok(bytes) = out else {
                panic!("ListEvents as service: {out:?}")
            };
            let page = DynamicMessage::decode(method.output(), bytes.as_slice()).expect("events");
            let events = page.get_field_by_name("events").expect("events field");
            let events = events.as_list().expect("a list");
            if events.is_empty() {
                break;
            }
            for e in events {
                let e = e.as_message().expect("an event");
                if e.get_field_by_name("agency")
                    .and_then(|v| v.as_str().map(|s| s == VICTIM))
                    .unwrap_or(false)
                {
                    all += 1;
                }
                after = e
                    .get_field_by_name("sequence")
                    .and_then(|v| v.as_i64())
                    .expect("a sequence");
            }
        }
        heads.push(all);
    }
    heads
}

#[derive(Debug)]
struct Token {
    label: String,
    bearer: String,
    /// The same token without its agency roles (only the hub roles that apply in the
    /// victim), when it has a hub role there.
    hub_only: Option<String>,
}

fn tokens(key: &DevKey) -> Vec<Token> {
    let mut sets: Vec<Vec<Role>> = Vec::new();
    for (i, a) in Role::ALL.iter().enumerate() {
        sets.push(vec![*a]);
        for b in &Role::ALL[i + 1..] {
            sets.push(vec![*a, *b]);
        }
    }
    let scopes: [Option<&[&str]>; 4] = [
        None,
        Some(&[OTHER]),
        Some(&[VICTIM]),
        Some(&[OTHER, VICTIM]),
    ];
    let mut out = Vec::new();
    for roles in &sets {
        for agency in [None, Some(OTHER)] {
            for scope in scopes {
                let hub: Vec<Role> = roles
                    .iter()
                    .copied()
                    .filter(|r| matches!(r, Role::HubAdmin | Role::Service))
                    .collect();
                let reaches = scope.is_some_and(|s| s.contains(&VICTIM));
                if reaches && hub.len() == roles.len() {
                    // A hub-only token scoped to the victim may act there: the second
                    // property covers it through the mixed tokens.
                    continue;
                }
                out.push(Token {
                    label: format!("roles {roles:?}, agency {agency:?}, agencies {scope:?}"),
                    bearer: mint(key, agency, scope, roles),
                    hub_only: (reaches && !hub.is_empty()).then(|| mint(key, agency, scope, &hub)),
                });
            }
        }
    }
    out
}

async fn sweep(data_dir: &Path) {
    let up = Up::start(data_dir).await;
    let key = DevKey::load_or_create(data_dir).expect("the development key");
    let names = seed(&up, &key).await;
    let before = feed_heads(&up, &key).await;
    let methods = methods(&up);
    let mut channels = BTreeMap::new();
    for (_, port) in &methods {
        if !channels.contains_key(port) {
            channels.insert(*port, channel(*port).await);
        }
    }
    let mut breaches = Vec::new();
    let mut calls = 0;
    for token in tokens(&key) {
        // One token's calls all at once (one connection per port, multiplexed); within a
        // method the hub-only call comes first.
        let probes = methods.iter().map(|(method, port)| {
            let ch = &channels[port];
            let token = &token;
            let names = &names;
            async move {
                let body = request_for(method, names);
                let what = format!(
                    "{}/{} with {}",
                    method.parent_service().name(),
                    method.name(),
                    token.label
                );
                match &token.hub_only {
                    None => {
                        let out = call(ch, method, body, &token.bearer).await;
                        let leaked = match &out {
                            Outcome::Ok(_) => out.mentions_victim(),
                            Outcome::Err(_, m) => m.contains(MARKER),
                        };
                        (
                            1,
                            leaked.then(|| format!("{what}: answered with the victim's data")),
                        )
                    }
                    Some(hub_only) => {
                        // If the hub role alone is refused, the mixed token may not reach
                        // the victim either (it may still act in its own agency).
                        let alone = call(ch, method, body.clone(), hub_only).await;
                        let mixed = call(ch, method, body, &token.bearer).await;
                        let crossed = alone.refused()
                            && matches!(mixed, Outcome::Ok(_))
                            && mixed.mentions_victim();
                        (
                            2,
                            crossed.then(|| {
                                format!(
                                    "{what}: reached the victim where the hub role alone is \
                                     refused ({alone:?})"
                                )
                            }),
                        )
                    }
                }
            }
        });
        for (n, breach) in futures::future::join_all(probes).await {
            calls += n;
            breaches.extend(breach);
        }
    }
    let after = feed_heads(&up, &key).await;
    assert!(
        breaches.is_empty(),
        "{} of {calls} calls crossed the tenant boundary:\n{}",
        breaches.len(),
        breaches.join("\n")
    );
    // The hub-only tokens may legitimately change hub resources of the victim (a peer
    // group, its directory entry), which are not in the data services' feeds; nothing
    // else may have changed.
    assert_eq!(before, after, "a token changed the victim's data");
}

/// The sweep on the embedded default.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_combination_crosses_a_tenant() {
    touchstone_e2e::touchstone_bin();
    let dir = tempfile::Builder::new()
        .prefix("touchstone-scope-")
        .tempdir()
        .expect("a temporary directory");
    touchstone_e2e::within(
        Duration::from_secs(600),
        "the scope sweep",
        sweep(dir.path()),
    )
    .await;
}
