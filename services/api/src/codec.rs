//! The codec of every generated client and server: tonic-prost's, plus the one check of a
//! request's bytes that every Touchstone service relies on (DESIGN §9).
//!
//! A request whose bytes do not decode as its message (a truncated varint, a wrong wire type,
//! a string that is not UTF-8) is the caller's fault: INVALID_ARGUMENT with an `ErrorInfo`
//! reason `MALFORMED_REQUEST`, never the INTERNAL that tonic-prost returns. A request that
//! decodes but carries a control character (anything `char::is_control` but tab, line feed and
//! carriage return) in any string field is INVALID_ARGUMENT with a `BadRequest` violation
//! naming the field path (`issue.description`, `client.external_references[1].id`):
//! PostgreSQL cannot store U+0000 and SQLite would, so the one rule here keeps both backends
//! answering alike, and no handler has to remember it field by field.
//!
//! The check walks the request's wire bytes with a table of string and message fields built
//! once from the descriptor set (`FILE_DESCRIPTOR_SET`); it allocates nothing on a clean
//! request. Responses decode as before (a client that receives bytes it cannot decode still
//! gets INTERNAL: that is the server's fault, not its caller's).

// The crate allows clippy's lints for the generated code; this module is written by hand.
#![warn(clippy::all, clippy::unwrap_used)]

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::LazyLock;

use prost::Message;
use prost::bytes::Buf as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf};
use tonic_prost::{ProstDecoder, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt as _};

/// `ErrorInfo.reason` of a request whose bytes are not a valid message.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";

/// `ErrorInfo.reason` of a request with a control character in a string field, as for any
/// other bad field.
pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";

/// What a string field of a request must not contain, said to the caller.
const CONTROL_CHARACTERS: &str =
    "must not contain control characters (tab, line feed and carriage return aside)";

/// Deeper than any Touchstone message nests; prost refuses deeper messages too.
const MAX_DEPTH: u32 = 100;

/// The codec named in `build.rs` (`codec_path`): tonic-prost's encoder, and a decoder that
/// checks requests as this module describes.
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Self {
            _types: PhantomData,
        }
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + prost::Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = Decoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        // Once per call (or stream), not per message.
        Decoder {
            request: SCHEMA.request(U::PACKAGE, U::NAME),
            _type: PhantomData,
        }
    }
}

/// Decodes `U`, checking it too when `U` is the request message of some RPC.
#[derive(Debug, Clone)]
pub struct Decoder<U> {
    /// `U`'s index in the schema when it is a request.
    request: Option<usize>,
    _type: PhantomData<U>,
}

impl<U> tonic::codec::Decoder for Decoder<U>
where
    U: Message + prost::Name + Default,
{
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let Some(message) = self.request else {
            return ProstDecoder::<U>::default().decode(buf);
        };
        // tonic hands over one whole message in one contiguous buffer; taking it as `Bytes`
        // does not copy, and lets the walk and prost's decode both read it.
        let bytes = buf.copy_to_bytes(buf.remaining());
        let decoded = U::decode(bytes.clone()).map_err(|error| {
            malformed(
                U::PACKAGE,
                format!("the request is not a valid {}: {error}", U::NAME),
            )
        })?;
        let mut path = Path::default();
        match SCHEMA.scan(message, &bytes, &mut path, 0) {
            Ok(()) => Ok(Some(decoded)),
            Err(Finding::Control) => Err(bad_field(U::PACKAGE, path.text())),
            Err(Finding::Malformed) => Err(malformed(
                U::PACKAGE,
                format!("the request is not a valid {}", U::NAME),
            )),
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// `register.touchstone` for `touchstone.register.v1`: the domain the service's own errors use.
fn domain(package: &str) -> String {
    match package.split('.').collect::<Vec<_>>().as_slice() {
        ["touchstone", service, ..] => format!("{service}.touchstone"),
        _ => "touchstone".to_string(),
    }
}

fn malformed(package: &str, message: String) -> Status {
    let details = ErrorDetails::with_error_info(MALFORMED_REQUEST, domain(package), HashMap::new());
    Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

fn bad_field(package: &str, field: String) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(INVALID_ARGUMENT, domain(package), HashMap::new());
    details.add_bad_request_violation(field.clone(), CONTROL_CHARACTERS);
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!("invalid request: {field}"),
        details,
    )
}

/// Why a walk stopped.
#[derive(Debug, PartialEq, Eq)]
enum Finding {
    /// A string field holds a control character; the path names it.
    Control,
    /// The bytes are not a valid encoding (prost's decode found nothing, so this is a limit
    /// of the walk, e.g. nesting deeper than [`MAX_DEPTH`]).
    Malformed,
}

/// A field path built only when a walk finds something: the segments on the way down.
#[derive(Debug, Default)]
struct Path {
    segments: Vec<(String, Option<u32>)>,
}

impl Path {
    fn text(&self) -> String {
        let mut text = String::new();
        for (name, index) in self.segments.iter().rev() {
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(name);
            if let Some(i) = index {
                text.push_str(&format!("[{i}]"));
            }
        }
        text
    }
}

/// What the walk needs to know of one field.
#[derive(Debug, Clone)]
struct Field {
    number: u32,
    name: String,
    repeated: bool,
    kind: Kind,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Text,
    /// Index into [`Schema::messages`].
    Message(usize),
}

/// The string and message fields of one message, by field number.
#[derive(Debug, Default)]
struct Shape {
    fields: Vec<Field>,
}

impl Shape {
    fn field(&self, number: u32) -> Option<&Field> {
        self.fields
            .binary_search_by_key(&number, |f| f.number)
            .ok()
            .map(|i| &self.fields[i])
    }
}

/// Every message of the descriptor set, and which of them are RPC requests.
#[derive(Debug, Default)]
struct Schema {
    messages: Vec<Shape>,
    /// package → message name → index, for the messages some RPC takes as input.
    requests: HashMap<String, HashMap<String, usize>>,
}

static SCHEMA: LazyLock<Schema> = LazyLock::new(|| {
    // The set is generated by build.rs from the same protos as the code; if it did not decode,
    // no request would be checked, and the test below would say so.
    FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
        .map(|set| Schema::new(&set))
        .unwrap_or_default()
});

impl Schema {
    fn new(set: &FileDescriptorSet) -> Self {
        // First every message's full name (".pkg.Outer.Inner"), then their fields, which
        // refer to each other by those names.
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut found: Vec<&DescriptorProto> = Vec::new();
        for file in &set.file {
            let prefix = if file.package().is_empty() {
                String::new()
            } else {
                format!(".{}", file.package())
            };
            for message in &file.message_type {
                collect(&prefix, message, &mut index, &mut found);
            }
        }
        let messages = found
            .iter()
            .map(|message| {
                let mut fields: Vec<Field> = message
                    .field
                    .iter()
                    .filter_map(|f| {
                        let kind = match f.r#type() {
                            Type::String => Kind::Text,
                            Type::Message => Kind::Message(*index.get(f.type_name())?),
                            _ => return None,
                        };
                        Some(Field {
                            number: u32::try_from(f.number()).ok()?,
                            name: f.name().to_string(),
                            repeated: f.label() == Label::Repeated,
                            kind,
                        })
                    })
                    .collect();
                fields.sort_by_key(|f| f.number);
                Shape { fields }
            })
            .collect();
        let mut requests: HashMap<String, HashMap<String, usize>> = HashMap::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let full = method.input_type();
                    let Some(&i) = index.get(full) else { continue };
                    let (package, name) = full
                        .trim_start_matches('.')
                        .rsplit_once('.')
                        .unwrap_or(("", full.trim_start_matches('.')));
                    requests
                        .entry(package.to_string())
                        .or_default()
                        .insert(name.to_string(), i);
                }
            }
        }
        Self { messages, requests }
    }

    fn request(&self, package: &str, name: &str) -> Option<usize> {
        self.requests.get(package)?.get(name).copied()
    }

    /// Walks `bytes` as message `message`; on a finding, `path` holds the field's path.
    fn scan(
        &self,
        message: usize,
        mut bytes: &[u8],
        path: &mut Path,
        depth: u32,
    ) -> Result<(), Finding> {
        if depth > MAX_DEPTH {
            return Err(Finding::Malformed);
        }
        let shape = &self.messages[message];
        let whole = bytes;
        while !bytes.is_empty() {
            let at = whole.len() - bytes.len();
            let key = varint(&mut bytes)?;
            let number = u32::try_from(key >> 3).map_err(|_| Finding::Malformed)?;
            match key & 7 {
                0 => {
                    varint(&mut bytes)?;
                }
                1 => skip(&mut bytes, 8)?,
                5 => skip(&mut bytes, 4)?,
                2 => {
                    let len =
                        usize::try_from(varint(&mut bytes)?).map_err(|_| Finding::Malformed)?;
                    if len > bytes.len() {
                        return Err(Finding::Malformed);
                    }
                    let (value, rest) = bytes.split_at(len);
                    bytes = rest;
                    let Some(field) = shape.field(number) else {
                        continue;
                    };
                    let found = match field.kind {
                        Kind::Text => check_text(value),
                        Kind::Message(inner) => self.scan(inner, value, path, depth + 1),
                    };
                    if let Err(finding) = found {
                        // Only now count the field's earlier occurrences, for `[i]`: a clean
                        // request pays nothing for it.
                        let index = field.repeated.then(|| occurrences(&whole[..at], number));
                        path.segments.push((field.name.clone(), index));
                        return Err(finding);
                    }
                }
                3 => skip_group(&mut bytes, number, depth + 1)?,
                _ => return Err(Finding::Malformed),
            }
        }
        Ok(())
    }
}

/// Registers `message` and its nested messages under `prefix`.
fn collect<'a>(
    prefix: &str,
    message: &'a DescriptorProto,
    index: &mut HashMap<String, usize>,
    found: &mut Vec<&'a DescriptorProto>,
) {
    let full = format!("{prefix}.{}", message.name());
    index.insert(full.clone(), found.len());
    found.push(message);
    for nested in &message.nested_type {
        collect(&full, nested, index, found);
    }
}

/// How often length-delimited field `number` occurs in `bytes`, a prefix of a message that
/// the walk has already been over.
fn occurrences(mut bytes: &[u8], number: u32) -> u32 {
    let mut count = 0;
    while let Ok(key) = varint(&mut bytes) {
        let skipped = match key & 7 {
            0 => varint(&mut bytes).map(drop),
            1 => skip(&mut bytes, 8),
            5 => skip(&mut bytes, 4),
            2 => match varint(&mut bytes).map(usize::try_from) {
                Ok(Ok(len)) => {
                    count += u32::from(key >> 3 == u64::from(number));
                    skip(&mut bytes, len)
                }
                _ => Err(Finding::Malformed),
            },
            3 => u32::try_from(key >> 3)
                .map_err(|_| Finding::Malformed)
                .and_then(|n| skip_group(&mut bytes, n, 0)),
            _ => Err(Finding::Malformed),
        };
        if skipped.is_err() {
            break;
        }
    }
    count
}

/// A string field's value: UTF-8 (prost has checked) without control characters.
fn check_text(value: &[u8]) -> Result<(), Finding> {
    // Control characters are U+0000–U+001F, U+007F and U+0080–U+009F. The first two ranges are
    // single bytes; the last is encoded as 0xC2 0x80–0x9F. A first pass without branches (the
    // compiler vectorises it) clears almost every value; only text with a byte that could be
    // part of one (tab and line feed included) is looked at closely.
    let suspect = value.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == 0x7F) | (b == 0xC2)
    });
    if !suspect {
        return Ok(());
    }
    let mut previous = 0u8;
    for &b in value {
        let control = match b {
            b'\t' | b'\n' | b'\r' => false,
            0x00..=0x1F | 0x7F => true,
            0x80..=0x9F => previous == 0xC2,
            _ => false,
        };
        if control {
            return Err(Finding::Control);
        }
        previous = b;
    }
    Ok(())
}

fn varint(bytes: &mut &[u8]) -> Result<u64, Finding> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first().ok_or(Finding::Malformed)?;
        *bytes = rest;
        value |= u64::from(b & 0x7F) << shift;
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(Finding::Malformed)
}

fn skip(bytes: &mut &[u8], n: usize) -> Result<(), Finding> {
    if bytes.len() < n {
        return Err(Finding::Malformed);
    }
    *bytes = &bytes[n..];
    Ok(())
}

/// Skips a (deprecated) group up to its end tag; no Touchstone field is a group, so its
/// contents are unknown fields.
fn skip_group(bytes: &mut &[u8], number: u32, depth: u32) -> Result<(), Finding> {
    if depth > MAX_DEPTH {
        return Err(Finding::Malformed);
    }
    loop {
        let key = varint(bytes)?;
        let inner = u32::try_from(key >> 3).map_err(|_| Finding::Malformed)?;
        match key & 7 {
            0 => {
                varint(bytes)?;
            }
            1 => skip(bytes, 8)?,
            5 => skip(bytes, 4)?,
            2 => {
                let len = usize::try_from(varint(bytes)?).map_err(|_| Finding::Malformed)?;
                skip(bytes, len)?;
            }
            3 => skip_group(bytes, inner, depth + 1)?,
            4 if inner == number => return Ok(()),
            _ => return Err(Finding::Malformed),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::register::v1 as register;

    fn scan<M: prost::Name>(bytes: &[u8]) -> Result<(), (Finding, String)> {
        let message = SCHEMA.request(M::PACKAGE, M::NAME).unwrap();
        let mut path = Path::default();
        SCHEMA
            .scan(message, bytes, &mut path, 0)
            .map_err(|f| (f, path.text()))
    }

    #[test]
    fn every_request_message_is_known() {
        let set = FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let methods: usize = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .map(|s| s.method.len())
            .sum();
        assert!(methods > 50, "{methods}");
        for service in set.file.iter().flat_map(|f| &f.service) {
            for method in &service.method {
                let full = method.input_type().trim_start_matches('.');
                let (package, name) = full.rsplit_once('.').unwrap();
                assert!(
                    SCHEMA.request(package, name).is_some(),
                    "{full} is not checked"
                );
            }
        }
    }

    #[test]
    fn control_characters_are_found_with_their_path() {
        let mut request = register::CreateClientRequest {
            parent: "agencies/a".into(),
            client: Some(register::Client {
                given_names: "Ana\u{0}".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            scan::<register::CreateClientRequest>(&request.encode_to_vec()),
            Err((Finding::Control, "client.given_names".to_string()))
        );

        for bad in ["\u{1}", "\u{1b}[31m", "\u{7f}", "a\u{85}b", "\u{9f}"] {
            request.client.as_mut().unwrap().given_names = bad.into();
            assert!(
                scan::<register::CreateClientRequest>(&request.encode_to_vec()).is_err(),
                "{bad:?}"
            );
        }
        for good in ["Ana\tMaria\r\n", "Māori ñ 漢字 🙂", "\u{a0}\u{c2}", ""] {
            request.client.as_mut().unwrap().given_names = good.into();
            assert_eq!(
                scan::<register::CreateClientRequest>(&request.encode_to_vec()),
                Ok(()),
                "{good:?}"
            );
        }
    }

    #[test]
    fn repeated_fields_are_named_with_their_index() {
        let request = register::CreateClientRequest {
            client: Some(register::Client {
                external_references: vec![
                    register::ExternalReference {
                        system: "crm".into(),
                        id: "1".into(),
                    },
                    register::ExternalReference {
                        system: "crm".into(),
                        id: "2\u{0}".into(),
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            scan::<register::CreateClientRequest>(&request.encode_to_vec()),
            Err((
                Finding::Control,
                "client.external_references[1].id".to_string()
            ))
        );
    }

    #[test]
    fn the_walk_never_panics_on_arbitrary_bytes() {
        // A fixed xorshift sequence: arbitrary bytes, truncated and nested encodings alike,
        // walked as every request message.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let requests: Vec<usize> = SCHEMA
            .requests
            .values()
            .flat_map(|names| names.values().copied())
            .collect();
        for round in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && !bytes.is_empty() {
                // Mostly valid-looking keys: field 1-15, wire types 0-5.
                bytes[0] = ((next() % 15 + 1) << 3) as u8 | (next() % 6) as u8;
            }
            let message = requests[round % requests.len()];
            let mut path = Path::default();
            let _ = SCHEMA.scan(message, &bytes, &mut path, 0);
            let _ = path.text();
            let _ = occurrences(&bytes, 1);
        }
    }

    #[test]
    fn domains_follow_the_package() {
        assert_eq!(domain("touchstone.kpi.v1"), "kpi.touchstone");
        assert_eq!(domain("grpc.health.v1"), "touchstone");
    }
}
