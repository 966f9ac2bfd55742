//! Wire garbage against the real binary: every method of every service, enumerated from the
//! descriptor set (so a new RPC is covered without touching this file), gets bytes that are not
//! its request message, and a string field with a control character in it. Each must be
//! INVALID_ARGUMENT with an ErrorInfo (DESIGN §9), and the metrics must count them as such.
//! Also: each port's reflection lists only the services that port serves.

use std::collections::HashMap;
use std::time::Duration;

use prost::Message as _;
use prost::bytes::{Buf as _, BufMut as _, Bytes};
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet, MethodDescriptorProto};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_types::StatusExt as _;
use touchstone_e2e::{Up, http_get, touchstone_bin, within};

use crate::{TEST_TIMEOUT, mint_token, tempdir};

/// Sends and receives raw bytes, so the test chooses every byte on the wire.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// The messages of the descriptor set by full name (`.pkg.Name`).
struct Messages(HashMap<String, DescriptorProto>);

impl Messages {
    fn new(set: &FileDescriptorSet) -> Self {
        fn add(prefix: &str, m: &DescriptorProto, into: &mut HashMap<String, DescriptorProto>) {
            let full = format!("{prefix}.{}", m.name());
            for nested in &m.nested_type {
                add(&full, nested, into);
            }
            into.insert(full, m.clone());
        }
        let mut all = HashMap::new();
        for file in &set.file {
            for m in &file.message_type {
                add(&format!(".{}", file.package()), m, &mut all);
            }
        }
        Self(all)
    }

    /// The path (field numbers and names) to the first string field reachable from `message`
    /// through singular message fields, depth first.
    fn string_path(&self, message: &str, depth: usize) -> Option<Vec<(i32, String)>> {
        let m = self.0.get(message)?;
        if let Some(f) = m
            .field
            .iter()
            .find(|f| f.r#type() == Type::String && f.label() != Label::Repeated)
        {
            return Some(vec![(f.number(), f.name().to_string())]);
        }
        if depth > 4 {
            return None;
        }
        m.field
            .iter()
            .filter(|f| f.r#type() == Type::Message && f.label() != Label::Repeated)
            .find_map(|f| {
                let mut rest = self.string_path(f.type_name(), depth + 1)?;
                rest.insert(0, (f.number(), f.name().to_string()));
                Some(rest)
            })
    }

    /// A wire type that is wrong for the message's first field.
    fn wrong_wire_type(&self, message: &str) -> Option<Vec<u8>> {
        let f = self.0.get(message)?.field.first()?;
        let number = u32::try_from(f.number()).ok()?;
        Some(match f.r#type() {
            // A 32-bit field sent as a varint.
            Type::Fixed32 | Type::Sfixed32 | Type::Float => {
                let mut out = key(number, 0);
                out.push(1);
                out
            }
            // Everything else (varints, packed or not, and length-delimited) cannot be fixed32.
            _ => {
                let mut out = key(number, 5);
                out.extend_from_slice(&[1, 2, 3, 4]);
                out
            }
        })
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(number: u32, wire_type: u8) -> Vec<u8> {
    let mut out = Vec::new();
    varint((u64::from(number) << 3) | u64::from(wire_type), &mut out);
    out
}

/// `value` as the string at `path`, wrapped in each enclosing message.
fn nested_string(path: &[(i32, String)], value: &[u8]) -> Vec<u8> {
    let mut inner = value.to_vec();
    for (number, _) in path.iter().rev() {
        let number = u32::try_from(*number).expect("field numbers are positive");
        let mut out = key(number, 2);
        varint(inner.len() as u64, &mut out);
        out.extend_from_slice(&inner);
        inner = out;
    }
    inner
}

/// Calls `path` with one request message of `bytes`, whatever the method's streaming shape
/// (a bidirectional call is the same on the wire as each of the others), and returns the
/// status it ends with.
async fn call(channel: Channel, path: &str, bytes: Vec<u8>, token: &str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("the channel is ready");
    let mut request = tonic::Request::new(tokio_stream::iter([Bytes::from(bytes)]));
    let bearer: MetadataValue<_> = format!("Bearer {token}").parse().expect("header text");
    request.metadata_mut().insert("authorization", bearer);
    request.set_timeout(Duration::from_secs(30));
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(path).expect("a method path");
    match grpc.streaming(request, path, RawCodec).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return tonic::Status::ok("the call succeeded"),
                    Err(status) => return status,
                }
            }
        }
    }
}

fn service_of(package: &str) -> &str {
    package
        .strip_prefix("touchstone.")
        .and_then(|rest| rest.split('.').next())
        .unwrap_or(package)
}

/// Every method of every service: malformed bytes and control characters are INVALID_ARGUMENT
/// with an ErrorInfo in the service's domain, never INTERNAL, and counted so in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_refuses_wire_garbage_as_the_callers_error() {
    touchstone_bin();
    within(TEST_TIMEOUT, "wire garbage", async {
        let dir = tempdir();
        let up = Up::start(dir.path()).await;
        let token = mint_token(dir.path(), "officer").await;
        let set = FileDescriptorSet::decode(touchstone_api::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set decodes");
        let messages = Messages::new(&set);

        let mut methods: Vec<(String, &str, &MethodDescriptorProto)> = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let full = format!("{}.{}", file.package(), service.name());
                    methods.push((full, file.package(), method));
                }
            }
        }
        assert!(methods.len() > 50, "only {} methods found", methods.len());

        let mut failures = Vec::new();
        let mut with_strings = 0;
        for (service, package, method) in &methods {
            let name = service_of(package);
            let port = if name == "register" {
                up.port
            } else {
                up.port_of(name)
            };
            let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("a URL")
                .connect()
                .await
                .expect("connecting");
            let path = format!("/{service}/{}", method.name());
            let domain = format!("{name}.touchstone");
            let input = method.input_type();

            let mut cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
                // Field 1 as a varint whose last byte says "more follows".
                ("truncated varint", vec![0x08, 0xFF], None),
                // A length that runs past the end of the message.
                ("truncated length", vec![0x0A, 0x05, b'a'], None),
            ];
            if let Some(bytes) = messages.wrong_wire_type(input) {
                cases.push(("wrong wire type", bytes, None));
            }
            if let Some(field) = messages.string_path(input, 0) {
                with_strings += 1;
                let dotted = field
                    .iter()
                    .map(|(_, n)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(".");
                cases.push((
                    "invalid UTF-8",
                    nested_string(&field, &[b'a', 0xC3, 0x28]),
                    None,
                ));
                cases.push(("NUL", nested_string(&field, b"a\0b"), Some(dotted.clone())));
                cases.push(("ESC", nested_string(&field, b"\x1b[2J"), Some(dotted)));
            }

            for (what, bytes, field) in cases {
                let status = call(channel.clone(), &path, bytes, &token).await;
                let details = status.get_error_details();
                let info = details.error_info();
                let named = details
                    .bad_request()
                    .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
                    .unwrap_or_else(Vec::new);
                let ok = status.code() == Code::InvalidArgument
                    && info.is_some_and(|i| i.domain == domain && !i.reason.is_empty())
                    && field.as_ref().is_none_or(|f| named.contains(f));
                if !ok {
                    failures.push(format!(
                        "{path} {what}: {:?} {:?} info={info:?} fields={named:?} (expected {field:?})",
                        status.code(),
                        status.message(),
                    ));
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of the calls were not INVALID_ARGUMENT with ErrorInfo:\n{}",
            failures.len(),
            failures.join("\n")
        );
        assert!(
            with_strings * 2 > methods.len(),
            "too few methods with a string field ({with_strings} of {})",
            methods.len()
        );

        // The metrics count every one of them as the caller's error.
        for port in std::iter::once(up.port).chain(up.ports.iter().map(|(_, p)| *p)) {
            let (_, metrics) = http_get(port, "/metrics").await;
            assert!(
                metrics.contains(r#"code="INVALID_ARGUMENT""#),
                "port {port}: no INVALID_ARGUMENT counted\n{metrics}"
            );
            assert!(
                !metrics.contains(r#"code="INTERNAL""#),
                "port {port}: a request was counted INTERNAL\n{metrics}"
            );
        }
    })
    .await;
}

/// Each port's reflection names only its own service (plus health and reflection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_reflects_only_its_own_service() {
    touchstone_bin();
    within(TEST_TIMEOUT, "reflection per port", async {
        let dir = tempdir();
        let up = Up::start(dir.path()).await;
        let ports = std::iter::once(("register", up.port)).chain(up.ports.iter().copied());
        for (service, port) in ports {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .expect("a URL")
                .connect()
                .await
                .expect("connecting");
            let request = ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            };
            let mut responses = ServerReflectionClient::new(channel)
                .server_reflection_info(tokio_stream::iter(vec![request]))
                .await
                .expect("ServerReflectionInfo")
                .into_inner();
            let listed = match responses.message().await {
                Ok(Some(response)) => match response.message_response {
                    Some(MessageResponse::ListServicesResponse(list)) => list.service,
                    other => panic!("unexpected reflection response: {other:?}"),
                },
                other => panic!("no reflection response: {other:?}"),
            };
            let mut touchstone: Vec<String> = listed
                .into_iter()
                .map(|s| s.name)
                .filter(|n| n.starts_with("touchstone."))
                .collect();
            touchstone.sort();
            assert_eq!(
                touchstone.len(),
                1,
                "port of {service} lists {touchstone:?}"
            );
            assert!(
                touchstone[0].starts_with(&format!("touchstone.{service}.v1.")),
                "port of {service} lists {touchstone:?}"
            );
        }
    })
    .await;
}
