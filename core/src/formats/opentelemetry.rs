//! OpenTelemetry metrics over OTLP/HTTP: `ExportMetricsServiceRequest` protobuf, plain or in
//! the AWS Firehose JSON envelope (spec: formats/opentelemetry.md).
//!
//! The protobuf reader is hand-written and borrows names and string values from the
//! (decompressed) body; only converted values (numbers, JSON of arrays, flattened or
//! Prometheus-style names) are written into a per-request arena. vminsert writes nothing from
//! a small request that has a decode error anywhere, so the body is walked twice: once to
//! validate, once to emit.
//!
//! Every sample is handed to the sink as `__name__` (literally: OTLP hashes before it encodes),
//! then resource attributes, scope labels, point attributes and the per-type label.

use super::body::{decode_whole, BodyError, ContentEncoding};
use super::remote_write::format_go_e3;
use super::{Metadata, Sink};
use crate::model::{Label, Sample, METRIC_NAME_LABEL, STALE_NAN_BITS};

/// `-opentelemetry.maxRequestSize` default: 64 MiB, for the raw and the decompressed body.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 64 * 1024 * 1024;

/// Deepest nesting of arrays and key-value lists inside one attribute value. Go recurses
/// without a limit; we refuse deeper values rather than risk the stack.
const MAX_VALUE_DEPTH: usize = 64;

/// The `-opentelemetry.*` flags that shape rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OtlpOptions {
    /// `-opentelemetry.usePrometheusNaming`: metric names and label names.
    pub use_prometheus_naming: bool,
    /// `-opentelemetry.convertMetricNamesToPrometheus`: metric names only.
    pub convert_metric_names_to_prometheus: bool,
    /// `-opentelemetry.labelNameUnderscoreSanitization`.
    pub label_name_underscore_sanitization: bool,
    /// `-opentelemetry.promoteAllResourceAttributes`.
    pub promote_all_resource_attributes: bool,
    /// `-opentelemetry.promoteResourceAttributes` (used when promote-all is off).
    pub promote_resource_attributes: Vec<Vec<u8>>,
    /// `-opentelemetry.ignoreResourceAttributes` (used when promote-all is on).
    pub ignore_resource_attributes: Vec<Vec<u8>>,
    /// `-opentelemetry.promoteScopeMetadata`.
    pub promote_scope_metadata: bool,
}

impl Default for OtlpOptions {
    fn default() -> OtlpOptions {
        OtlpOptions {
            use_prometheus_naming: false,
            convert_metric_names_to_prometheus: false,
            label_name_underscore_sanitization: true,
            promote_all_resource_attributes: true,
            promote_resource_attributes: Vec::new(),
            ignore_resource_attributes: Vec::new(),
            promote_scope_metadata: true,
        }
    }
}

impl OtlpOptions {
    /// Options from flag values, refusing the combinations vminsert refuses at startup.
    #[allow(clippy::too_many_arguments)]
    pub fn from_flags(
        use_prometheus_naming: bool,
        convert_metric_names_to_prometheus: bool,
        label_name_underscore_sanitization: bool,
        promote_all_resource_attributes: bool,
        promote_resource_attributes: &[String],
        ignore_resource_attributes: &[String],
        promote_scope_metadata: bool,
    ) -> Result<OtlpOptions, String> {
        if promote_all_resource_attributes && !promote_resource_attributes.is_empty() {
            return Err(
                "-opentelemetry.promoteResourceAttributes cannot be set together with \
                 -opentelemetry.promoteAllResourceAttributes"
                    .to_string(),
            );
        }
        if !promote_all_resource_attributes && !ignore_resource_attributes.is_empty() {
            return Err("-opentelemetry.ignoreResourceAttributes requires \
                 -opentelemetry.promoteAllResourceAttributes"
                .to_string());
        }
        let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Ok(OtlpOptions {
            use_prometheus_naming,
            convert_metric_names_to_prometheus,
            label_name_underscore_sanitization,
            promote_all_resource_attributes,
            promote_resource_attributes: bytes(promote_resource_attributes),
            ignore_resource_attributes: bytes(ignore_resource_attributes),
            promote_scope_metadata,
        })
    }

    fn promotes(&self, key: &[u8]) -> bool {
        if self.promote_all_resource_attributes {
            !self.ignore_resource_attributes.iter().any(|k| k == key)
        } else {
            self.promote_resource_attributes.iter().any(|k| k == key)
        }
    }

    fn prometheus_metric_names(&self) -> bool {
        self.use_prometheus_naming || self.convert_metric_names_to_prometheus
    }
}

/// How a request body is to be read, from `Content-Type` and `X-Amz-Firehose-Protocol-Version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// OTLP protobuf (any content type other than exactly `application/json`).
    Protobuf,
    /// The AWS Firehose JSON envelope.
    Firehose,
    /// OTLP/JSON, which vminsert refuses with 400.
    UnsupportedJson,
}

impl BodyKind {
    pub fn from_headers(content_type: Option<&str>, firehose_version: Option<&str>) -> BodyKind {
        match content_type {
            Some("application/json") if firehose_version.is_some_and(|v| !v.is_empty()) => {
                BodyKind::Firehose
            }
            Some("application/json") => BodyKind::UnsupportedJson,
            _ => BodyKind::Protobuf,
        }
    }
}

/// Everything that makes vminsert answer 400 to an OTLP request. Nothing from the request is
/// handed to the sink in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OtlpError {
    UnsupportedJson,
    /// `Content-Encoding` unknown, body too big or corrupt.
    Body(BodyError),
    /// The Firehose envelope is not valid JSON, a record is not base64, or its pieces are
    /// malformed.
    Firehose(String),
    /// The protobuf could not be decoded.
    Protobuf {
        size: usize,
        reason: String,
    },
}

impl OtlpError {
    pub fn http_status(&self) -> u16 {
        400
    }
}

impl std::fmt::Display for OtlpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const PREFIX: &str = "cannot decode OpenTelemetry protocol data: ";
        match self {
            OtlpError::UnsupportedJson => f.write_str(
                "json encoding isn't supported for opentelemetry format. Use protobuf encoding",
            ),
            OtlpError::Body(e) => write!(f, "{PREFIX}cannot process request body: {e}"),
            OtlpError::Firehose(e) => write!(
                f,
                "{PREFIX}cannot process request body: cannot unmarshal Firehose JSON in request body: {e}"
            ),
            OtlpError::Protobuf { size, reason } => {
                write!(f, "{PREFIX}cannot unmarshal request from {size} bytes: {reason}")
            }
        }
    }
}

impl std::error::Error for OtlpError {}

/// Decompress, unwrap (Firehose) and parse one request body.
pub fn parse_request<S: Sink + ?Sized>(
    raw: &[u8],
    content_encoding: Option<&str>,
    kind: BodyKind,
    max_size: usize,
    opts: &OtlpOptions,
    sink: &mut S,
) -> Result<(), OtlpError> {
    if kind == BodyKind::UnsupportedJson {
        return Err(OtlpError::UnsupportedJson);
    }
    let enc = ContentEncoding::parse(content_encoding).map_err(OtlpError::Body)?;
    let decoded;
    let body = if enc == ContentEncoding::Identity {
        if raw.len() > max_size {
            return Err(OtlpError::Body(BodyError::TooBig { limit: max_size }));
        }
        raw
    } else {
        decoded = decode_whole(raw, enc, max_size).map_err(OtlpError::Body)?;
        &decoded[..]
    };
    match kind {
        BodyKind::Firehose => {
            let msg = firehose_message(body).map_err(OtlpError::Firehose)?;
            parse(&msg, opts, sink)
        }
        _ => parse(body, opts, sink),
    }
}

/// Parse a decompressed `ExportMetricsServiceRequest`. On error nothing has been handed to the
/// sink.
pub fn parse<S: Sink + ?Sized>(
    body: &[u8],
    opts: &OtlpOptions,
    sink: &mut S,
) -> Result<(), OtlpError> {
    let err = |e: PbError| OtlpError::Protobuf {
        size: body.len(),
        reason: e.0,
    };
    let mut conv = Converter::new(opts);
    conv.request::<S>(body, None).map_err(err)?;
    let mut conv = Converter::new(opts);
    conv.request(body, Some(sink)).map_err(err)
}

/// The Firehose reply body for a request that carried `X-Amz-Firehose-Request-Id`.
pub fn firehose_reply(request_id: &str, now_ms: i64) -> String {
    let mut out = String::from("{\"requestId\":");
    let mut q = Vec::new();
    json_quote(&mut q, request_id.as_bytes());
    out.push_str(&String::from_utf8_lossy(&q));
    out.push_str(&format!(",\"timestamp\":{now_ms}}}"));
    out
}

// ---------------------------------------------------------------------------------------------
// Firehose envelope.

/// Decode `{"records":[{"data":"<base64>"}…]}` (keys matched case-insensitively, the last
/// duplicate winning, as Go's `encoding/json` does) and join every record's
/// uvarint-length-prefixed pieces into one protobuf message.
pub fn firehose_message(body: &[u8]) -> Result<Vec<u8>, String> {
    use serde::de::Deserializer as _;
    let mut de = serde_json::Deserializer::from_slice(body);
    let (records, bad_base64) = de
        .deserialize_option(EnvelopeVisitor)
        .and_then(|r| de.end().map(|()| r))
        .map_err(|e| e.to_string())?;
    // Like Go, a bad base64 string does not stop decoding; it is reported once the JSON is
    // known to be well-formed.
    if let Some((i, at)) = bad_base64 {
        return Err(format!(
            "json: cannot unmarshal string into Go struct field .records.{i}.data of type []uint8: \
             illegal base64 data at input byte {at}"
        ));
    }
    let mut out = Vec::new();
    for (i, data) in records.iter().enumerate() {
        let mut rest: &[u8] = data;
        while !rest.is_empty() {
            let mut n: u64 = 0;
            let mut used = 0;
            loop {
                let Some(&b) = rest.get(used) else {
                    return Err(format!("record {i}: truncated length prefix"));
                };
                if used == 5 {
                    return Err(format!("record {i}: length prefix longer than 5 bytes"));
                }
                n |= u64::from(b & 0x7f) << (7 * used);
                used += 1;
                if b < 0x80 {
                    break;
                }
            }
            rest = &rest[used..];
            if n > rest.len() as u64 {
                return Err(format!(
                    "record {i}: piece of {n} bytes runs past the end of the record ({} bytes left)",
                    rest.len()
                ));
            }
            let (piece, tail) = rest.split_at(n as usize);
            out.extend_from_slice(piece);
            rest = tail;
        }
    }
    Ok(out)
}

struct EnvelopeVisitor;

impl<'de> serde::de::Visitor<'de> for EnvelopeVisitor {
    /// The records' data, and the first record whose base64 was bad (index, byte offset).
    type Value = (Vec<Vec<u8>>, Option<(usize, usize)>);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Firehose request object")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), None))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok((Vec::new(), None))
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut records = Vec::new();
        let mut bad = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.eq_ignore_ascii_case("records") {
                let list = map.next_value::<Option<Vec<Record>>>()?.unwrap_or_default();
                records.clear();
                for (i, r) in list.into_iter().enumerate() {
                    match r.0 {
                        Ok(data) => records.push(data),
                        Err(at) => {
                            bad = bad.or(Some((i, at)));
                        }
                    }
                }
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok((records, bad))
    }
}

/// One record's decoded data, or the offset of its first bad base64 byte.
struct Record(Result<Vec<u8>, usize>);

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Record;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a Firehose record object")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Record, E> {
                Ok(Record(Ok(Vec::new())))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Record, A::Error> {
                let mut data = Ok(Vec::new());
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key.eq_ignore_ascii_case("data") {
                        data = match map.next_value::<Option<std::borrow::Cow<'de, str>>>()? {
                            None => Ok(Vec::new()),
                            Some(s) => base64_decode(s.as_bytes()),
                        };
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(Record(data))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------------------------
// Base64 (standard alphabet, padded), as Go's `base64.StdEncoding`.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(out: &mut Vec<u8>, data: &[u8]) {
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[((n >> shift) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
    }
}

/// Decode padded standard base64; `\r` and `\n` are skipped as Go does. The error is the
/// offset of the first bad byte.
fn base64_decode(input: &[u8]) -> Result<Vec<u8>, usize> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut quad = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    let mut last_quad_at = 0;
    for (at, &c) in input.iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            continue;
        }
        if n == 0 {
            last_quad_at = at;
        }
        if pad > 0 && (c != b'=' || n == 0) {
            return Err(at);
        }
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' if n >= 2 => {
                pad += 1;
                0
            }
            _ => return Err(at),
        };
        quad[n] = v;
        n += 1;
        if n == 4 {
            let x = (u32::from(quad[0]) << 18)
                | (u32::from(quad[1]) << 12)
                | (u32::from(quad[2]) << 6)
                | u32::from(quad[3]);
            let bytes = [(x >> 16) as u8, (x >> 8) as u8, x as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
            n = 0;
            if pad > 0 {
                // Only line breaks may follow the padding.
                pad = 4;
            }
        }
    }
    if n != 0 {
        return Err(last_quad_at.max(input.len().saturating_sub(n)));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Protobuf reading.

/// A decode error, with the messages it happened in as a `cannot unmarshal X: ` chain.
#[derive(Debug)]
struct PbError(String);

impl From<&'static str> for PbError {
    fn from(s: &'static str) -> PbError {
        PbError(s.to_string())
    }
}

type R<T> = Result<T, PbError>;

/// Run `f` on a nested message, naming it in the error chain as vminsert does.
fn within<T>(what: &str, r: R<T>) -> R<T> {
    r.map_err(|e| PbError(format!("cannot unmarshal {what}: {}", e.0)))
}

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

#[derive(Clone, Copy)]
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn varint(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(i) else {
                return Err(PbError::from(
                    "cannot read the next field: unexpected end of varint",
                ));
            };
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err("cannot read the next field: varint is too long".into())
    }

    fn fixed64(&mut self) -> R<u64> {
        let Some((a, b)) = self.buf.split_first_chunk::<8>() else {
            return Err(PbError::from(
                "cannot read the next field: unexpected end of fixed64",
            ));
        };
        self.buf = b;
        Ok(u64::from_le_bytes(*a))
    }

    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(PbError(format!(
                "cannot read the next field: cannot read field from {} bytes; need at least {n} bytes",
                self.buf.len()
            )));
        }
        let (a, b) = self.buf.split_at(n as usize);
        self.buf = b;
        Ok(a)
    }

    /// The next field's number and wire type, `None` at the end of the message.
    fn field(&mut self) -> R<Option<(u64, u8)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let num = key >> 3;
        if num == 0 {
            return Err(PbError::from("field number 0"));
        }
        Ok(Some((num, (key & 7) as u8)))
    }

    fn skip(&mut self, wt: u8) -> R<()> {
        match wt {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.fixed64().map(drop),
            WT_LEN => self.bytes().map(drop),
            WT_I32 => {
                if self.buf.len() < 4 {
                    return Err(PbError::from(
                        "cannot read the next field: unexpected end of fixed32",
                    ));
                }
                self.buf = &self.buf[4..];
                Ok(())
            }
            _ => Err("cannot read the next field: unsupported wire type".into()),
        }
    }

    /// A length-delimited field of a known number.
    fn msg(&mut self, wt: u8) -> R<&'a [u8]> {
        expect(wt, WT_LEN)?;
        self.bytes()
    }

    fn f64(&mut self, wt: u8) -> R<f64> {
        expect(wt, WT_I64)?;
        Ok(f64::from_bits(self.fixed64()?))
    }

    fn u64_fixed(&mut self, wt: u8) -> R<u64> {
        expect(wt, WT_I64)?;
        self.fixed64()
    }

    fn uvarint(&mut self, wt: u8) -> R<u64> {
        expect(wt, WT_VARINT)?;
        self.varint()
    }

    fn sint32(&mut self, wt: u8) -> R<i32> {
        let v = self.uvarint(wt)? as u32;
        Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
    }

    /// A singular field where the first occurrence wins: later ones are skipped unchecked.
    fn first_msg(&mut self, wt: u8, slot: &mut Option<&'a [u8]>) -> R<()> {
        if slot.is_some() {
            return self.skip(wt);
        }
        *slot = Some(self.msg(wt)?);
        Ok(())
    }
}

fn expect(wt: u8, want: u8) -> R<()> {
    if wt == want {
        Ok(())
    } else {
        Err("unexpected wire type for a known field".into())
    }
}

/// Repeated fixed64 (`double` or `fixed64`), packed or not.
fn read_fixed64s(r: &mut Reader<'_>, wt: u8, out: &mut Vec<u64>) -> R<()> {
    match wt {
        WT_I64 => out.push(r.fixed64()?),
        WT_LEN => {
            let p = r.bytes()?;
            if p.len() % 8 != 0 {
                return Err(PbError::from(
                    "packed fixed64 field is not a multiple of 8 bytes",
                ));
            }
            out.extend(
                p.chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes"))),
            );
        }
        _ => {
            return Err(PbError::from(
                "unexpected wire type for a repeated fixed64 field",
            ))
        }
    }
    Ok(())
}

/// Repeated uint64 varints, packed or not.
fn read_varints(r: &mut Reader<'_>, wt: u8, out: &mut Vec<u64>) -> R<()> {
    match wt {
        WT_VARINT => out.push(r.varint()?),
        WT_LEN => {
            let mut p = Reader::new(r.bytes()?);
            while !p.buf.is_empty() {
                out.push(p.varint()?);
            }
        }
        _ => {
            return Err(PbError::from(
                "unexpected wire type for a repeated uint64 field",
            ))
        }
    }
    Ok(())
}

/// One `AnyValue`, with nested arrays and lists left undecoded.
#[derive(Clone, Copy, Debug)]
enum Any<'a> {
    None,
    Str(&'a [u8]),
    Bool(bool),
    Int(i64),
    Double(f64),
    Array(&'a [u8]),
    KvList(&'a [u8]),
    Bytes(&'a [u8]),
}

fn read_any(msg: &[u8]) -> R<Any<'_>> {
    let mut v = Any::None;
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        v = match num {
            1 => Any::Str(r.msg(wt)?),
            2 => Any::Bool(r.uvarint(wt)? != 0),
            3 => Any::Int(r.uvarint(wt)? as i64),
            4 => Any::Double(r.f64(wt)?),
            5 => Any::Array(r.msg(wt)?),
            6 => Any::KvList(r.msg(wt)?),
            7 => Any::Bytes(r.msg(wt)?),
            _ => {
                r.skip(wt)?;
                continue;
            }
        };
    }
    Ok(v)
}

/// `KeyValue`: key and value, each `None` when absent (first occurrence wins).
/// A `KeyValue`'s key and value message, each `None` when absent.
type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

fn read_kv(msg: &[u8]) -> R<KeyValue<'_>> {
    let (mut key, mut value) = (None, None);
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => r.first_msg(wt, &mut key)?,
            2 => r.first_msg(wt, &mut value)?,
            _ => r.skip(wt)?,
        }
    }
    Ok((key, value))
}

// ---------------------------------------------------------------------------------------------
// Number and string formatting.

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest round trip, never an exponent.
fn format_f(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: shortest digits, with a signed exponent of at
/// least two digits when the decimal exponent is below -4 or at least 6 (Go's rule for the
/// shortest precision).
fn format_g(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    if !v.is_finite() {
        return format_f(out, v);
    }
    let sci = format!("{v:e}");
    let (mant, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let exp: i32 = exp.parse().expect("{:e} exponent is an integer");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        let _ = write!(out, "{mant}e{sign}{:02}", exp.unsigned_abs());
    } else {
        let _ = write!(out, "{v}");
    }
}

/// A JSON string as Go's `strconv.Quote` writes it when escaping is needed.
fn json_quote(out: &mut Vec<u8>, s: &[u8]) {
    use std::io::Write;
    out.push(b'"');
    let mut rest = s;
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(v) => (v, None),
            Err(e) => {
                let (v, tail) = rest.split_at(e.valid_up_to());
                (
                    std::str::from_utf8(v).expect("checked prefix"),
                    tail.first().copied(),
                )
            }
        };
        for c in valid.chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\x07' => out.extend_from_slice(b"\\a"),
                '\x08' => out.extend_from_slice(b"\\b"),
                '\x0c' => out.extend_from_slice(b"\\f"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                '\t' => out.extend_from_slice(b"\\t"),
                '\x0b' => out.extend_from_slice(b"\\v"),
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    if (c as u32) < 0x10000 {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        let _ = write!(out, "\\U{:08x}", c as u32);
                    }
                }
                c => {
                    let mut b = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                }
            }
        }
        let skip = valid.len();
        match bad {
            Some(b) => {
                let _ = write!(out, "\\x{b:02x}");
                rest = &rest[skip + 1..];
            }
            None => rest = &[],
        }
    }
    out.push(b'"');
}

/// An array or key-value list as compact JSON.
fn json_value(out: &mut Vec<u8>, v: Any<'_>, depth: usize) -> R<()> {
    use std::io::Write;
    if depth > MAX_VALUE_DEPTH {
        return Err(PbError::from("attribute value nested too deeply"));
    }
    match v {
        Any::None => out.extend_from_slice(b"null"),
        Any::Str(s) => json_quote(out, s),
        Any::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Any::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Any::Double(d) => format_g(out, d),
        Any::Bytes(b) => {
            out.push(b'"');
            base64_encode(out, b);
            out.push(b'"');
        }
        Any::Array(msg) => {
            out.push(b'[');
            let mut r = Reader::new(msg);
            let mut first = true;
            while let Some((num, wt)) = r.field()? {
                if num != 1 {
                    r.skip(wt)?;
                    continue;
                }
                let item = read_any(r.msg(wt)?)?;
                if !first {
                    out.push(b',');
                }
                first = false;
                json_value(out, item, depth + 1)?;
            }
            out.push(b']');
        }
        Any::KvList(msg) => {
            // An ordered map: a repeated key replaces the earlier value in its place.
            let mut entries: Vec<(&[u8], Any<'_>)> = Vec::new();
            let mut r = Reader::new(msg);
            while let Some((num, wt)) = r.field()? {
                if num != 1 {
                    r.skip(wt)?;
                    continue;
                }
                let (k, val) = read_kv(r.msg(wt)?)?;
                let k = k.unwrap_or(b"");
                let val = match val {
                    Some(m) => read_any(m)?,
                    None => Any::None,
                };
                match entries.iter_mut().find(|e| e.0 == k) {
                    Some(e) => e.1 = val,
                    None => entries.push((k, val)),
                }
            }
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_quote(out, k);
                out.push(b':');
                json_value(out, val, depth + 1)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Names.

fn unit_word(u: &[u8]) -> &[u8] {
    match u {
        b"d" => b"days",
        b"h" => b"hours",
        b"min" => b"minutes",
        b"s" => b"seconds",
        b"ms" => b"milliseconds",
        b"us" => b"microseconds",
        b"ns" => b"nanoseconds",
        b"By" => b"bytes",
        b"KiBy" => b"kibibytes",
        b"MiBy" => b"mebibytes",
        b"GiBy" => b"gibibytes",
        b"TiBy" => b"tibibytes",
        b"KBy" => b"kilobytes",
        b"MBy" => b"megabytes",
        b"GBy" => b"gigabytes",
        b"TBy" => b"terabytes",
        b"m" => b"meters",
        b"V" => b"volts",
        b"A" => b"amperes",
        b"J" => b"joules",
        b"W" => b"watts",
        b"g" => b"grams",
        b"Cel" => b"celsius",
        b"Hz" => b"hertz",
        b"1" => b"",
        b"%" => b"percent",
        other => other,
    }
}

fn per_unit_word(u: &[u8]) -> &[u8] {
    match u {
        b"s" => b"second",
        b"m" => b"minute",
        b"h" => b"hour",
        b"d" => b"day",
        b"w" => b"week",
        b"mo" => b"month",
        b"y" => b"year",
        other => other,
    }
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&c| c != b' ').map_or(start, |e| e + 1);
    &s[start..end]
}

/// The Prometheus-style metric name (opentelemetry.md "Metric names").
fn prometheus_metric_name(out: &mut Vec<u8>, name: &[u8], unit: &[u8], kind: MetricKind) {
    let mut tokens: Vec<&[u8]> = name
        .split(|c| matches!(c, b'/' | b'_' | b'.' | b'-' | b':' | b' '))
        .filter(|t| !t.is_empty())
        .collect();
    let (main, per) = match unit.iter().position(|&c| c == b'/') {
        Some(i) => (&unit[..i], &unit[i + 1..]),
        None => (unit, &b""[..]),
    };
    let (main, per) = (trim_spaces(main), trim_spaces(per));
    if !main.is_empty() && !main.contains(&b'{') {
        let w = unit_word(main);
        if !w.is_empty() && !tokens.contains(&w) {
            tokens.push(w);
        }
    }
    if !per.is_empty() && !per.contains(&b'{') {
        let w = per_unit_word(per);
        if !tokens.contains(&w) {
            tokens.push(b"per");
            tokens.push(w);
        }
    }
    let suffix: Option<&[u8]> = match kind {
        MetricKind::Sum { monotonic: true } => Some(b"total"),
        MetricKind::Gauge | MetricKind::Sum { monotonic: false } if unit == b"1" => Some(b"ratio"),
        _ => None,
    };
    if let Some(s) = suffix {
        tokens.retain(|t| *t != s);
        tokens.push(s);
    }
    for (i, t) in tokens.iter().enumerate() {
        if i > 0 {
            out.push(b'_');
        }
        out.extend_from_slice(t);
    }
}

/// Rewrite a label name in place the `-opentelemetry.usePrometheusNaming` way.
fn prometheus_label_name(name: &mut Vec<u8>, underscore_sanitization: bool) {
    for c in name.iter_mut() {
        if !(c.is_ascii_alphanumeric() || *c == b'_') {
            *c = b'_';
        }
    }
    if name.first().is_some_and(u8::is_ascii_digit) {
        name.splice(0..0, *b"key_");
    } else if underscore_sanitization && name.starts_with(b"_") && !name.starts_with(b"__") {
        name.splice(0..0, *b"key");
    }
}

// ---------------------------------------------------------------------------------------------
// Conversion.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MetricKind {
    Gauge,
    Sum {
        monotonic: bool,
    },
    Histogram,
    ExponentialHistogram,
    Summary,
    /// A Metric with no data field: metadata only.
    Empty,
}

/// Bytes borrowed from the body or written into the arena.
#[derive(Clone, Copy, Debug)]
enum Piece<'a> {
    In(&'a [u8]),
    Arena(usize, usize),
}

impl<'a> Piece<'a> {
    fn get<'s>(self, arena: &'s [u8]) -> &'s [u8]
    where
        'a: 's,
    {
        match self {
            Piece::In(b) => b,
            Piece::Arena(at, len) => &arena[at..at + len],
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct LabelPiece<'a> {
    name: Piece<'a>,
    value: Piece<'a>,
}

/// The labels of the data points being converted, and where converted text lives.
struct Converter<'o, 'a> {
    opts: &'o OtlpOptions,
    arena: Vec<u8>,
    labels: Vec<LabelPiece<'a>>,
    /// Resolved labels handed to the sink; kept empty between calls so its allocation can be
    /// re-typed to each call's lifetime.
    out: Vec<Label<'static>>,
    /// `<name>`, `<name>_count`, `<name>_sum`, `<name>_bucket` of the current metric.
    names: Vec<u8>,
    name_ends: [usize; 4],
    value: Vec<u8>,
    u64s: Vec<u64>,
    f64s: Vec<u64>,
    attrs: Vec<&'a [u8]>,
    metadata_seen: Vec<Vec<u8>>,
}

/// Which name of the current metric a sample carries.
#[derive(Clone, Copy)]
enum Suffix {
    None = 0,
    Count = 1,
    Sum = 2,
    Bucket = 3,
}

impl<'o, 'a> Converter<'o, 'a> {
    fn new(opts: &'o OtlpOptions) -> Converter<'o, 'a> {
        Converter {
            opts,
            arena: Vec::new(),
            labels: Vec::new(),
            out: Vec::new(),
            names: Vec::new(),
            name_ends: [0; 4],
            value: Vec::new(),
            u64s: Vec::new(),
            f64s: Vec::new(),
            attrs: Vec::new(),
            metadata_seen: Vec::new(),
        }
    }

    fn request<S: Sink + ?Sized>(&mut self, body: &'a [u8], mut sink: Option<&mut S>) -> R<()> {
        let mut r = Reader::new(body);
        while let Some((num, wt)) = r.field()? {
            match num {
                1 => {
                    let rm = r.msg(wt)?;
                    within(
                        "ResourceMetrics",
                        self.resource_metrics(rm, sink.as_deref_mut()),
                    )?;
                }
                _ => r.skip(wt)?,
            }
        }
        Ok(())
    }

    fn resource_metrics<S: Sink + ?Sized>(
        &mut self,
        msg: &'a [u8],
        mut sink: Option<&mut S>,
    ) -> R<()> {
        let mut resource = None;
        let mut r = Reader::new(msg);
        // The resource may follow its scopes on the wire; find it first.
        while let Some((num, wt)) = r.field()? {
            match num {
                1 => r.first_msg(wt, &mut resource)?,
                2 => {
                    r.msg(wt)?;
                }
                _ => r.skip(wt)?,
            }
        }
        self.arena.clear();
        self.labels.clear();
        if let Some(res) = resource {
            let mut rr = Reader::new(res);
            while let Some((num, wt)) = rr.field()? {
                match num {
                    1 => {
                        let kv = rr.msg(wt)?;
                        self.push_attribute(kv, b"", true)?;
                    }
                    _ => rr.skip(wt)?,
                }
            }
        }
        let resource_labels = self.labels.len();
        let resource_arena = self.arena.len();
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                2 => {
                    let sm = r.msg(wt)?;
                    self.labels.truncate(resource_labels);
                    self.arena.truncate(resource_arena);
                    within("ScopeMetrics", self.scope_metrics(sm, sink.as_deref_mut()))?;
                }
                _ => r.skip(wt)?,
            }
        }
        Ok(())
    }

    fn scope_metrics<S: Sink + ?Sized>(
        &mut self,
        msg: &'a [u8],
        mut sink: Option<&mut S>,
    ) -> R<()> {
        let mut scope = None;
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                1 => r.first_msg(wt, &mut scope)?,
                2 => {
                    r.msg(wt)?;
                }
                _ => r.skip(wt)?,
            }
        }
        if let Some(scope) = scope {
            let (mut name, mut version) = (None, None);
            self.attrs.clear();
            let mut sr = Reader::new(scope);
            while let Some((num, wt)) = sr.field()? {
                match num {
                    1 => sr.first_msg(wt, &mut name)?,
                    2 => sr.first_msg(wt, &mut version)?,
                    3 => {
                        let kv = sr.msg(wt)?;
                        self.attrs.push(kv);
                    }
                    _ => sr.skip(wt)?,
                }
            }
            if self.opts.promote_scope_metadata {
                let label = self.label_name(&[b"scope.name"]);
                self.labels.push(LabelPiece {
                    name: label,
                    value: Piece::In(name.unwrap_or(b"unknown")),
                });
                let label = self.label_name(&[b"scope.version"]);
                self.labels.push(LabelPiece {
                    name: label,
                    value: Piece::In(version.unwrap_or(b"unknown")),
                });
                for i in 0..self.attrs.len() {
                    let kv = self.attrs[i];
                    self.push_attribute(kv, b"scope.attributes.", false)?;
                }
            } else {
                // Still decoded: a malformed attribute fails the request either way.
                for i in 0..self.attrs.len() {
                    read_kv(self.attrs[i])?;
                }
            }
        }
        let scope_labels = self.labels.len();
        let scope_arena = self.arena.len();
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                2 => {
                    let m = r.msg(wt)?;
                    self.labels.truncate(scope_labels);
                    self.arena.truncate(scope_arena);
                    within("Metric", self.metric(m, sink.as_deref_mut()))?;
                }
                _ => r.skip(wt)?,
            }
        }
        Ok(())
    }

    fn metric<S: Sink + ?Sized>(&mut self, msg: &'a [u8], mut sink: Option<&mut S>) -> R<()> {
        let (mut name, mut description, mut unit) = (None, None, None);
        let mut data: [Option<&'a [u8]>; 5] = [None; 5];
        let mut prom_type: Option<&'a [u8]> = None;
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                1 => r.first_msg(wt, &mut name)?,
                2 => r.first_msg(wt, &mut description)?,
                3 => r.first_msg(wt, &mut unit)?,
                5 => r.first_msg(wt, &mut data[0])?,
                7 => r.first_msg(wt, &mut data[1])?,
                9 => r.first_msg(wt, &mut data[2])?,
                10 => r.first_msg(wt, &mut data[3])?,
                11 => r.first_msg(wt, &mut data[4])?,
                12 => {
                    let (k, v) = read_kv(r.msg(wt)?)?;
                    if k == Some(b"prometheus.type") {
                        if let Some(Any::Str(s)) = v.map(read_any).transpose()? {
                            prom_type = Some(s);
                        }
                    }
                }
                _ => r.skip(wt)?,
            }
        }
        let Some(name) = name else {
            return Err(PbError::from("missing metric name"));
        };
        let unit = unit.unwrap_or(b"");
        let (kind, data) = match data {
            [Some(d), ..] => (MetricKind::Gauge, d),
            [None, Some(d), ..] => (
                MetricKind::Sum {
                    monotonic: sum_is_monotonic(d)?,
                },
                d,
            ),
            [None, None, Some(d), ..] => (MetricKind::Histogram, d),
            [None, None, None, Some(d), _] => (MetricKind::ExponentialHistogram, d),
            [None, None, None, None, Some(d)] => (MetricKind::Summary, d),
            _ => (MetricKind::Empty, &b""[..]),
        };
        self.names.clear();
        if self.opts.prometheus_metric_names() {
            prometheus_metric_name(&mut self.names, name, unit, kind);
        } else {
            self.names.extend_from_slice(name);
        }
        let base = self.names.len();
        self.name_ends[0] = base;
        for (i, suffix) in [&b"_count"[..], b"_sum", b"_bucket"]
            .into_iter()
            .enumerate()
        {
            self.names.extend_from_within(..base);
            self.names.extend_from_slice(suffix);
            self.name_ends[i + 1] = self.names.len();
        }
        let metric_labels = self.labels.len();
        let metric_arena = self.arena.len();
        let mut r = Reader::new(data);
        while let Some((num, wt)) = r.field()? {
            if num != 1 {
                r.skip(wt)?;
                continue;
            }
            let point = r.msg(wt)?;
            self.labels.truncate(metric_labels);
            self.arena.truncate(metric_arena);
            let sink = sink.as_deref_mut();
            match kind {
                MetricKind::Gauge | MetricKind::Sum { .. } => {
                    within("NumberDataPoint", self.number_point(point, sink))?
                }
                MetricKind::Histogram => {
                    within("HistogramDataPoint", self.histogram_point(point, sink))?
                }
                MetricKind::ExponentialHistogram => within(
                    "ExponentialHistogramDataPoint",
                    self.exp_histogram_point(point, sink),
                )?,
                MetricKind::Summary => within("SummaryDataPoint", self.summary_point(point, sink))?,
                MetricKind::Empty => {}
            }
        }
        if let Some(sink) = sink {
            let family = &self.names[..base];
            if !self.metadata_seen.iter().any(|f| f == family) {
                self.metadata_seen.push(family.to_vec());
                let metric_type = match (prom_type, kind) {
                    (Some(b"unknown"), _) => 0,
                    (Some(b"info"), _) => 6,
                    (Some(b"stateset"), _) => 7,
                    (_, MetricKind::Sum { monotonic: true }) => 1,
                    (_, MetricKind::Gauge | MetricKind::Sum { .. }) => 2,
                    (_, MetricKind::Histogram | MetricKind::ExponentialHistogram) => 3,
                    (_, MetricKind::Summary) => 5,
                    (_, MetricKind::Empty) => 0,
                };
                sink.metadata(&Metadata {
                    metric_type,
                    family,
                    help: description.unwrap_or(b""),
                    unit,
                    account_id: 0,
                    project_id: 0,
                });
            }
        }
        Ok(())
    }

    /// A label name made of `parts`, rewritten for Prometheus if configured. Borrowed from the
    /// body when nothing changes.
    fn label_name(&mut self, parts: &[&'a [u8]]) -> Piece<'a> {
        if !self.opts.use_prometheus_naming && parts.len() == 1 {
            return Piece::In(parts[0]);
        }
        let mut name: Vec<u8> = parts.concat();
        if self.opts.use_prometheus_naming {
            prometheus_label_name(&mut name, self.opts.label_name_underscore_sanitization);
        }
        let at = self.arena.len();
        self.arena.extend_from_slice(&name);
        Piece::Arena(at, name.len())
    }

    /// Labels of one `KeyValue` (none, one, or several for a flattened key-value list).
    fn push_attribute(&mut self, kv: &'a [u8], prefix: &'static [u8], resource: bool) -> R<()> {
        let (Some(key), Some(value)) = read_kv(kv)? else {
            return Ok(());
        };
        let value = read_any(value)?;
        if resource && !self.opts.promotes(key) {
            // Still decoded: a malformed value fails the request either way.
            return self.validate_any(value, 0);
        }
        let mut path: Vec<&'a [u8]> = Vec::with_capacity(3);
        if !prefix.is_empty() {
            path.push(prefix);
        }
        path.push(key);
        self.push_value(&mut path, value, 0)
    }

    fn validate_any(&mut self, v: Any<'a>, depth: usize) -> R<()> {
        if matches!(v, Any::Array(_) | Any::KvList(_)) {
            self.value.clear();
            json_value(&mut self.value, v, depth)?;
        }
        Ok(())
    }

    fn push_value(&mut self, path: &mut Vec<&'a [u8]>, v: Any<'a>, depth: usize) -> R<()> {
        use std::io::Write;
        if depth > MAX_VALUE_DEPTH {
            return Err(PbError::from("attribute value nested too deeply"));
        }
        let value = match v {
            Any::None => return Ok(()),
            Any::Str(s) => Piece::In(s),
            Any::KvList(msg) => {
                let mut r = Reader::new(msg);
                while let Some((num, wt)) = r.field()? {
                    if num != 1 {
                        r.skip(wt)?;
                        continue;
                    }
                    let (Some(k), Some(val)) = read_kv(r.msg(wt)?)? else {
                        continue;
                    };
                    let val = read_any(val)?;
                    path.push(b".");
                    path.push(k);
                    self.push_value(path, val, depth + 1)?;
                    path.truncate(path.len() - 2);
                }
                return Ok(());
            }
            other => {
                let at = self.arena.len();
                match other {
                    Any::Bool(b) => {
                        self.arena
                            .extend_from_slice(if b { b"true" } else { b"false" })
                    }
                    Any::Int(i) => {
                        let _ = write!(self.arena, "{i}");
                    }
                    Any::Double(d) => format_f(&mut self.arena, d),
                    Any::Bytes(b) => base64_encode(&mut self.arena, b),
                    arr => json_value(&mut self.arena, arr, depth)?,
                }
                Piece::Arena(at, self.arena.len() - at)
            }
        };
        let name = self.label_name(path);
        self.labels.push(LabelPiece { name, value });
        Ok(())
    }

    /// Add the point attributes collected in `self.attrs`.
    fn push_point_attributes(&mut self) -> R<()> {
        for i in 0..self.attrs.len() {
            let kv = self.attrs[i];
            self.push_attribute(kv, b"", false)?;
        }
        Ok(())
    }

    /// Hand one sample to the sink: the current metric's name with `suffix`, the current
    /// labels, and an optional per-type label.
    fn emit<S: Sink + ?Sized>(
        &mut self,
        sink: &mut S,
        suffix: Suffix,
        extra: Option<(&[u8], &[u8])>,
        ts: i64,
        bits: u64,
    ) {
        let i = suffix as usize;
        let start = if i == 0 { 0 } else { self.name_ends[i - 1] };
        let name = &self.names[start..self.name_ends[i]];
        let mut out: Vec<Label<'_>> = std::mem::take(&mut self.out);
        out.push(Label::new(METRIC_NAME_LABEL, name));
        out.extend(self.labels.iter().map(|l| Label {
            name: l.name.get(&self.arena),
            value: l.value.get(&self.arena),
        }));
        if let Some((n, v)) = extra {
            out.push(Label::new(n, v));
        }
        sink.series(&out, &[Sample::from_bits(ts, bits)]);
        out.clear();
        self.out = out.into_iter().map(|_| Label::new(b"", b"")).collect();
    }

    fn number_point<S: Sink + ?Sized>(&mut self, msg: &'a [u8], sink: Option<&mut S>) -> R<()> {
        self.attrs.clear();
        let (mut ns, mut bits, mut flags) = (0u64, 0f64.to_bits(), 0u64);
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                7 => {
                    let kv = r.msg(wt)?;
                    self.attrs.push(kv);
                }
                3 => ns = r.u64_fixed(wt)?,
                4 => bits = r.f64(wt)?.to_bits(),
                6 => bits = (r.u64_fixed(wt)? as i64 as f64).to_bits(),
                8 => flags = r.uvarint(wt)?,
                _ => r.skip(wt)?,
            }
        }
        self.push_point_attributes()?;
        if let Some(sink) = sink {
            let bits = if flags & 1 != 0 { STALE_NAN_BITS } else { bits };
            self.emit(sink, Suffix::None, None, ns_to_ms(ns), bits);
        }
        Ok(())
    }

    fn histogram_point<S: Sink + ?Sized>(&mut self, msg: &'a [u8], sink: Option<&mut S>) -> R<()> {
        self.attrs.clear();
        self.u64s.clear();
        self.f64s.clear();
        let (mut ns, mut count, mut sum, mut flags) = (0u64, 0u64, None, 0u64);
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                9 => {
                    let kv = r.msg(wt)?;
                    self.attrs.push(kv);
                }
                3 => ns = r.u64_fixed(wt)?,
                4 => count = r.u64_fixed(wt)?,
                5 => sum = Some(r.f64(wt)?),
                6 => read_fixed64s(&mut r, wt, &mut self.u64s)?,
                7 => read_fixed64s(&mut r, wt, &mut self.f64s)?,
                10 => flags = r.uvarint(wt)?,
                _ => r.skip(wt)?,
            }
        }
        self.push_point_attributes()?;
        let Some(sink) = sink else { return Ok(()) };
        // No buckets, or buckets that do not match the bounds: vminsert writes nothing.
        if self.u64s.is_empty() || self.u64s.len() != self.f64s.len() + 1 {
            return Ok(());
        }
        let ts = ns_to_ms(ns);
        let stale = flags & 1 != 0;
        let val = |v: f64| if stale { STALE_NAN_BITS } else { v.to_bits() };
        self.emit(sink, Suffix::Count, None, ts, val(count as f64));
        if let Some(sum) = sum {
            self.emit(sink, Suffix::Sum, None, ts, val(sum));
        }
        let mut cumulative: u64 = 0;
        for i in 0..self.f64s.len() {
            cumulative = cumulative.wrapping_add(self.u64s[i]);
            let mut le = std::mem::take(&mut self.value);
            le.clear();
            format_f(&mut le, f64::from_bits(self.f64s[i]));
            self.emit(
                sink,
                Suffix::Bucket,
                Some((b"le", &le)),
                ts,
                val(cumulative as f64),
            );
            self.value = le;
        }
        let total = self.u64s.iter().fold(0u64, |a, &b| a.wrapping_add(b));
        self.emit(
            sink,
            Suffix::Bucket,
            Some((b"le", b"+Inf")),
            ts,
            val(total as f64),
        );
        Ok(())
    }

    fn exp_histogram_point<S: Sink + ?Sized>(
        &mut self,
        msg: &'a [u8],
        sink: Option<&mut S>,
    ) -> R<()> {
        self.attrs.clear();
        let (mut ns, mut count, mut sum, mut flags) = (0u64, 0u64, None, 0u64);
        let (mut scale, mut zero_count, mut zero_threshold) = (0i32, 0u64, 0f64);
        let (mut positive, mut negative) = (None, None);
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                1 => {
                    let kv = r.msg(wt)?;
                    self.attrs.push(kv);
                }
                3 => ns = r.u64_fixed(wt)?,
                4 => count = r.u64_fixed(wt)?,
                5 => sum = Some(r.f64(wt)?),
                6 => scale = r.sint32(wt)?,
                7 => zero_count = r.u64_fixed(wt)?,
                8 => positive = Some(r.msg(wt)?),
                9 => negative = Some(r.msg(wt)?),
                10 => flags = r.uvarint(wt)?,
                14 => zero_threshold = r.f64(wt)?,
                _ => r.skip(wt)?,
            }
        }
        // Both sides are decoded before anything is emitted so a bad one fails the request.
        self.u64s.clear();
        let pos_offset = match positive {
            Some(b) => read_buckets(b, &mut self.u64s)?,
            None => 0,
        };
        let pos_len = self.u64s.len();
        let neg_offset = match negative {
            Some(b) => read_buckets(b, &mut self.u64s)?,
            None => 0,
        };
        self.push_point_attributes()?;
        let Some(sink) = sink else { return Ok(()) };
        let ts = ns_to_ms(ns);
        let stale = flags & 1 != 0;
        let val = |v: f64| if stale { STALE_NAN_BITS } else { v.to_bits() };
        self.emit(sink, Suffix::Count, None, ts, val(count as f64));
        if let Some(sum) = sum {
            self.emit(sink, Suffix::Sum, None, ts, val(sum));
        }
        let mut range = std::mem::take(&mut self.value);
        let mut bucket = |me: &mut Self, lo: f64, hi: f64, n: u64| {
            range.clear();
            format_go_e3(&mut range, lo);
            range.extend_from_slice(b"...");
            format_go_e3(&mut range, hi);
            me.emit(
                sink,
                Suffix::Bucket,
                Some((b"vmrange", &range)),
                ts,
                val(n as f64),
            );
        };
        if zero_count > 0 {
            bucket(self, -zero_threshold, zero_threshold, zero_count);
        }
        let ratio = 2f64.powf(-f64::from(scale));
        let base = 2f64.powf(ratio);
        let counts = std::mem::take(&mut self.u64s);
        let sides = [
            (pos_offset, &counts[..pos_len], false),
            (neg_offset, &counts[pos_len..], true),
        ];
        for (offset, side, negative) in sides {
            let start = 2f64.powf(f64::from(offset) * ratio);
            for (i, &n) in side.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let lower = start * base.powf(i as f64);
                let upper = lower * base;
                if negative {
                    bucket(self, -upper, -lower, n);
                } else {
                    bucket(self, lower, upper, n);
                }
            }
        }
        self.u64s = counts;
        self.value = range;
        Ok(())
    }

    fn summary_point<S: Sink + ?Sized>(&mut self, msg: &'a [u8], sink: Option<&mut S>) -> R<()> {
        self.attrs.clear();
        self.f64s.clear();
        let (mut ns, mut count, mut sum, mut flags) = (0u64, 0u64, 0f64, 0u64);
        let mut r = Reader::new(msg);
        while let Some((num, wt)) = r.field()? {
            match num {
                7 => {
                    let kv = r.msg(wt)?;
                    self.attrs.push(kv);
                }
                3 => ns = r.u64_fixed(wt)?,
                4 => count = r.u64_fixed(wt)?,
                5 => sum = r.f64(wt)?,
                6 => {
                    let (mut q, mut v) = (0f64, 0f64);
                    let mut qr = Reader::new(r.msg(wt)?);
                    while let Some((n, w)) = qr.field()? {
                        match n {
                            1 => q = qr.f64(w)?,
                            2 => v = qr.f64(w)?,
                            _ => qr.skip(w)?,
                        }
                    }
                    self.f64s.push(q.to_bits());
                    self.f64s.push(v.to_bits());
                }
                8 => flags = r.uvarint(wt)?,
                _ => r.skip(wt)?,
            }
        }
        self.push_point_attributes()?;
        let Some(sink) = sink else { return Ok(()) };
        let ts = ns_to_ms(ns);
        let stale = flags & 1 != 0;
        let val = |v: f64| if stale { STALE_NAN_BITS } else { v.to_bits() };
        self.emit(sink, Suffix::Count, None, ts, val(count as f64));
        self.emit(sink, Suffix::Sum, None, ts, val(sum));
        let quantiles = std::mem::take(&mut self.f64s);
        let mut q = std::mem::take(&mut self.value);
        for pair in quantiles.chunks_exact(2) {
            q.clear();
            format_f(&mut q, f64::from_bits(pair[0]));
            let v = val(f64::from_bits(pair[1]));
            self.emit(sink, Suffix::None, Some((b"quantile", &q)), ts, v);
        }
        self.value = q;
        self.f64s = quantiles;
        Ok(())
    }
}

fn ns_to_ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn sum_is_monotonic(msg: &[u8]) -> R<bool> {
    let mut monotonic = false;
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            3 => monotonic = r.uvarint(wt)? != 0,
            _ => r.skip(wt)?,
        }
    }
    Ok(monotonic)
}

/// `Buckets`: the offset, with the counts appended to `out`.
fn read_buckets(msg: &[u8], out: &mut Vec<u64>) -> R<i32> {
    let mut offset = 0;
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => offset = r.sint32(wt)?,
            2 => read_varints(&mut r, wt, out)?,
            _ => r.skip(wt)?,
        }
    }
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut o = Vec::new();
        f(&mut o);
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn doubles_format_like_go() {
        assert_eq!(s(|o| format_f(o, 1.5)), "1.5");
        assert_eq!(s(|o| format_f(o, 1e-7)), "0.0000001");
        assert_eq!(s(|o| format_f(o, 1e21)), "1000000000000000000000");
        assert_eq!(s(|o| format_f(o, f64::NEG_INFINITY)), "-Inf");
        assert_eq!(s(|o| format_f(o, f64::NAN)), "NaN");
        assert_eq!(s(|o| format_g(o, 1e21)), "1e+21");
        assert_eq!(s(|o| format_g(o, 2.5)), "2.5");
        assert_eq!(s(|o| format_g(o, 123456.0)), "123456");
        assert_eq!(s(|o| format_g(o, 1e6)), "1e+06");
        assert_eq!(s(|o| format_g(o, 1234567.0)), "1.234567e+06");
        assert_eq!(s(|o| format_g(o, 1e-5)), "1e-05");
        assert_eq!(s(|o| format_g(o, 0.0001)), "0.0001");
    }

    #[test]
    fn base64_round_trips_and_rejects() {
        for data in [
            &b""[..],
            b"\x01",
            b"\x01\x02",
            b"\x01\x02\x03",
            b"hello world",
        ] {
            let mut e = Vec::new();
            base64_encode(&mut e, data);
            assert_eq!(base64_decode(&e).unwrap(), data, "{e:?}");
        }
        assert_eq!(s(|o| base64_encode(o, b"\x01\x02")), "AQI=");
        assert_eq!(base64_decode(b"!!notbase64"), Err(0));
        assert!(base64_decode(b"AQI").is_err());
        assert!(base64_decode(b"AQ=I").is_err());
        assert_eq!(base64_decode(b"AQ\nI=").unwrap(), b"\x01\x02");
    }

    #[test]
    fn prometheus_names() {
        let n = |name: &str, unit: &str, kind| {
            let mut o = Vec::new();
            prometheus_metric_name(&mut o, name.as_bytes(), unit.as_bytes(), kind);
            String::from_utf8(o).unwrap()
        };
        let counter = MetricKind::Sum { monotonic: true };
        assert_eq!(
            n("http.server.duration", "ms", MetricKind::Gauge),
            "http_server_duration_milliseconds"
        );
        assert_eq!(n("x.total.y", "{req}/s", counter), "x_y_per_second_total");
        assert_eq!(n("reqs", "1", counter), "reqs_total");
        assert_eq!(n("ratio.g", "1", MetricKind::Gauge), "g_ratio");
        assert_eq!(
            n("bytes.per.sec", "By/s", MetricKind::Gauge),
            "bytes_per_sec_per_second"
        );
        assert_eq!(n("hh", "KiBy", MetricKind::Histogram), "hh_kibibytes");
        let l = |name: &str| {
            let mut v = name.as_bytes().to_vec();
            prometheus_label_name(&mut v, true);
            String::from_utf8(v).unwrap()
        };
        assert_eq!(l("service.name"), "service_name");
        assert_eq!(l("_k"), "key_k");
        assert_eq!(l("1x"), "key_1x");
        assert_eq!(l("__r"), "__r");
    }

    #[test]
    fn go_quoting() {
        assert_eq!(
            s(|o| json_quote(o, b"a\"b\\\n\x01\xff")),
            r#""a\"b\\\n\x01\xff""#
        );
        assert_eq!(s(|o| json_quote(o, "é".as_bytes())), "\"é\"");
    }

    #[test]
    fn firehose_pieces() {
        assert_eq!(
            firehose_message(br#"{"Records":[{"DATA":"AkJD"}]}"#).unwrap(),
            b"BC"
        );
        assert!(firehose_message(br#"{"records":[{"data":"AkI="}]}"#).is_err());
        assert!(firehose_message(br#"{"records":[{"data":"!!notbase64"}]}"#).is_err());
        assert!(firehose_message(br#"{"records":[{"data":5}]}"#).is_err());
        assert_eq!(firehose_message(b"null").unwrap(), b"");
        assert_eq!(
            firehose_reply("a\"b", 5),
            r#"{"requestId":"a\"b","timestamp":5}"#
        );
    }

    #[test]
    fn body_kinds() {
        use BodyKind::*;
        assert_eq!(BodyKind::from_headers(None, None), Protobuf);
        assert_eq!(
            BodyKind::from_headers(Some("application/json"), None),
            UnsupportedJson
        );
        assert_eq!(
            BodyKind::from_headers(Some("application/json"), Some("")),
            UnsupportedJson
        );
        assert_eq!(
            BodyKind::from_headers(Some("application/json"), Some("1.0")),
            Firehose
        );
        assert_eq!(
            BodyKind::from_headers(Some("application/json; charset=utf-8"), Some("1.0")),
            Protobuf
        );
    }

    #[test]
    fn startup_flag_combinations() {
        let list = vec!["a".to_string()];
        assert!(OtlpOptions::from_flags(false, false, true, true, &list, &[], true).is_err());
        assert!(OtlpOptions::from_flags(false, false, true, false, &[], &list, true).is_err());
        let o = OtlpOptions::from_flags(false, false, true, false, &list, &[], true).unwrap();
        assert!(o.promotes(b"a") && !o.promotes(b"b"));
        let o = OtlpOptions::from_flags(false, false, true, true, &[], &list, true).unwrap();
        assert!(!o.promotes(b"a") && o.promotes(b"b"));
    }
}
