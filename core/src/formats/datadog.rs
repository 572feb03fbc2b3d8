//! DataDog agent ingestion: `/api/v1/series` (JSON), `/api/v2/series` (JSON or protobuf),
//! `/api/beta/sketches` (protobuf) and the endpoints that only answer (spec: formats/datadog.md).
//!
//! Every body is read whole and fully decoded before the first series reaches the sink, because
//! vminsert writes nothing from a request that fails to decode anywhere.
//!
//! The JSON side copies Go's `encoding/json` as vminsert uses it: strict syntax checked before
//! any type is looked at, object keys matched case-insensitively, a duplicate key decoded *over*
//! the earlier value (slices keep and reuse their elements, so fields missing from the later
//! copy survive), `null` leaving a value alone, and type mismatches reported with Go's wording,
//! since the error text is what clients see in the 400 body.

use std::borrow::Cow;

use super::body::{decode_whole, BodyError, ContentEncoding};
use super::Sink;
use crate::model::{recycle_labels, Label, Sample};

/// `-datadog.maxInsertRequestSize` default: 64 MiB, for the raw and the decompressed body.
pub const DEFAULT_MAX_INSERT_REQUEST_SIZE: usize = 64 * 1024 * 1024;

/// The body of a successful v1/v2 series request (sketches answer with an empty body).
pub const SERIES_REPLY: &str = "{\"status\":\"ok\"}";

/// The value of a tag that has no `:`.
const NO_LABEL_VALUE: &[u8] = b"no_label_value";

/// How much of a body a decode error quotes. vminsert quotes the whole body; a 64 MiB quote in
/// a 400 reply (and in the log) helps nobody, so ours stops here.
const MAX_QUOTED_BODY: usize = 4096;

/// Deepest JSON nesting accepted, as Go's scanner (`exceeded max depth`).
const MAX_JSON_DEPTH: usize = 10_000;

/// The three ingestion endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    SeriesV1,
    SeriesV2,
    Sketches,
}

impl Endpoint {
    /// `vm_rows_inserted_total{type=...}`.
    pub fn rows_type(self) -> &'static str {
        match self {
            Endpoint::SeriesV1 => "datadogv1",
            Endpoint::SeriesV2 => "datadogv2",
            Endpoint::Sketches => "datadogsketches",
        }
    }

    /// The suffix after `datadog/`, as `vm_http_requests_total{path=...}` shows it.
    pub fn suffix(self) -> &'static str {
        match self {
            Endpoint::SeriesV1 => "api/v1/series",
            Endpoint::SeriesV2 => "api/v2/series",
            Endpoint::Sketches => "api/beta/sketches",
        }
    }

    /// The reply body on success (status 202).
    pub fn reply(self) -> &'static str {
        match self {
            Endpoint::Sketches => "",
            _ => SERIES_REPLY,
        }
    }
}

/// Endpoints that answer without reading the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stub {
    Validate,
    CheckRun,
    Intake,
    Metadata,
}

impl Stub {
    pub fn status(self) -> u16 {
        match self {
            Stub::CheckRun => 202,
            _ => 200,
        }
    }

    /// The JSON reply body.
    pub fn reply(self) -> &'static str {
        match self {
            Stub::Validate => "{\"valid\":true}",
            Stub::CheckRun => SERIES_REPLY,
            Stub::Intake | Stub::Metadata => "{}",
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Stub::Validate => "api/v1/validate",
            Stub::CheckRun => "api/v1/check_run",
            Stub::Intake => "intake",
            Stub::Metadata => "api/v1/metadata",
        }
    }
}

/// What a `datadog/…` insert suffix asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Ingest(Endpoint),
    Stub(Stub),
}

/// Match an insert suffix (`datadog/api/v1/series`, …). One trailing `/` is removed first, for
/// agents that add it.
pub fn route(suffix: &str) -> Option<Route> {
    let s = suffix.strip_prefix("datadog/")?;
    let s = s.strip_suffix('/').unwrap_or(s);
    Some(match s {
        "api/v1/series" => Route::Ingest(Endpoint::SeriesV1),
        "api/v2/series" => Route::Ingest(Endpoint::SeriesV2),
        "api/beta/sketches" => Route::Ingest(Endpoint::Sketches),
        "api/v1/validate" => Route::Stub(Stub::Validate),
        "api/v1/check_run" => Route::Stub(Stub::CheckRun),
        "intake" => Route::Stub(Stub::Intake),
        "api/v1/metadata" => Route::Stub(Stub::Metadata),
        _ => return None,
    })
}

/// The `-datadog.*` flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatadogOptions {
    /// `-datadog.sanitizeMetricName`.
    pub sanitize_metric_name: bool,
    /// `-datadog.maxInsertRequestSize`, for the raw and the decompressed body.
    pub max_request_size: usize,
}

impl Default for DatadogOptions {
    fn default() -> DatadogOptions {
        DatadogOptions {
            sanitize_metric_name: true,
            max_request_size: DEFAULT_MAX_INSERT_REQUEST_SIZE,
        }
    }
}

/// Everything that makes vminsert answer 400 to a DataDog request. Nothing from the request
/// has been handed to the sink in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatadogError {
    /// `Content-Encoding` unknown, body too big or corrupt; `raw_len` is the compressed size.
    Body {
        error: BodyError,
        raw_len: usize,
        max_size: usize,
    },
    /// The decompressed body does not decode. `what` is `POST` for v1, the `Content-Type` for
    /// v2 and `sketches` for sketches, as vminsert words it.
    Decode {
        what: String,
        size: usize,
        reason: String,
    },
}

impl DatadogError {
    pub fn http_status(&self) -> u16 {
        400
    }
}

impl std::fmt::Display for DatadogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cannot decode DataDog protocol data: ")?;
        match self {
            DatadogError::Body {
                error: e @ BodyError::UnsupportedEncoding(_),
                ..
            } => write!(f, "{e}"),
            DatadogError::Body {
                error,
                raw_len,
                max_size,
            } => write!(
                f,
                "cannot decompress data: {}",
                error.whole_body_text(*raw_len, *max_size)
            ),
            DatadogError::Decode { what, size, reason } => write!(
                f,
                "cannot unmarshal DataDog {what} request with size {size} bytes: {reason}"
            ),
        }
    }
}

impl std::error::Error for DatadogError {}

/// Decompress and parse one request body. `content_type` matters for v2 only: exactly
/// `application/x-protobuf` selects protobuf, anything else JSON. `now_s` is the wall clock in
/// whole seconds, the default for v1/v2 JSON timestamps that are ≤ 0.
pub fn parse_request<S: Sink + ?Sized>(
    endpoint: Endpoint,
    raw: &[u8],
    content_encoding: Option<&str>,
    content_type: Option<&str>,
    now_s: i64,
    opts: &DatadogOptions,
    sink: &mut S,
) -> Result<(), DatadogError> {
    let max_size = opts.max_request_size;
    let body_err = |error| DatadogError::Body {
        error,
        raw_len: raw.len(),
        max_size,
    };
    let enc = ContentEncoding::parse(content_encoding).map_err(body_err)?;
    let decoded;
    let body = if enc == ContentEncoding::Identity {
        if raw.len() > max_size {
            return Err(body_err(BodyError::TooBig { limit: max_size }));
        }
        raw
    } else {
        decoded = decode_whole(raw, enc, max_size).map_err(body_err)?;
        &decoded[..]
    };
    match endpoint {
        Endpoint::SeriesV1 => parse_v1(body, now_s, opts, sink),
        Endpoint::SeriesV2 => parse_v2(body, content_type, now_s, opts, sink),
        Endpoint::Sketches => parse_sketches(body, opts, sink),
    }
}

// ---------------------------------------------------------------------------------------------
// Names and tags.

/// `-datadog.sanitizeMetricName`: runs of bytes outside `[0-9a-zA-Z_.]` become one `_`, runs of
/// `_` collapse, and every `_?\._?` becomes `.`. The result replaces `out`.
pub fn sanitize_metric_name(name: &[u8], out: &mut Vec<u8>) {
    out.clear();
    // Steps 1 and 2 together: any run of `_` and disallowed bytes becomes one `_`.
    for &c in name {
        let c = if c.is_ascii_alphanumeric() || c == b'.' {
            c
        } else {
            b'_'
        };
        if c == b'_' && out.last() == Some(&b'_') {
            continue;
        }
        out.push(c);
    }
    // Step 3, in place: leftmost, non-overlapping `_?\._?`.
    let (mut r, mut w) = (0, 0);
    while r < out.len() {
        let at_dot = out[r] == b'.' || (out[r] == b'_' && out.get(r + 1) == Some(&b'.'));
        if at_dot {
            r += if out[r] == b'_' { 2 } else { 1 };
            if out.get(r) == Some(&b'_') {
                r += 1;
            }
            out[w] = b'.';
        } else {
            out[w] = out[r];
            r += 1;
        }
        w += 1;
    }
    out.truncate(w);
}

/// Split `name:value` at the first `:`; no `:` gives `no_label_value`.
pub fn split_tag(tag: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b':', tag) {
        Some(i) => (&tag[..i], &tag[i + 1..]),
        None => (tag, NO_LABEL_VALUE),
    }
}

/// v1/v2 rename a `host` tag so it does not clash with the series' own host.
fn series_tag(tag: &[u8]) -> Label<'_> {
    let (name, value) = split_tag(tag);
    let name: &[u8] = if name == b"host" {
        b"exported_host"
    } else {
        name
    };
    Label::new(name, value)
}

/// Go's `int64(f)` on amd64: NaN and out-of-range values become the minimum int64.
fn go_f64_to_i64(f: f64) -> i64 {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if !(-TWO_63..TWO_63).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// Emission scratch: the sanitized name and the label list, reused from series to series.
struct Emitter {
    name: Vec<u8>,
    samples: Vec<Sample>,
    sanitize: bool,
}

impl Emitter {
    fn new(opts: &DatadogOptions) -> Emitter {
        Emitter {
            name: Vec::new(),
            samples: Vec::new(),
            sanitize: opts.sanitize_metric_name,
        }
    }

    fn set_name(&mut self, metric: &[u8]) {
        if self.sanitize {
            sanitize_metric_name(metric, &mut self.name);
        } else {
            self.name.clear();
            self.name.extend_from_slice(metric);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// v1 series (JSON).

#[derive(Default)]
struct V1Series<'a> {
    metric: Cow<'a, [u8]>,
    host: Cow<'a, [u8]>,
    device: Cow<'a, [u8]>,
    points: GoVec<[f64; 2]>,
    tags: GoVec<Cow<'a, [u8]>>,
}

/// Parse a decompressed `/api/v1/series` body.
pub fn parse_v1<S: Sink + ?Sized>(
    body: &[u8],
    now_s: i64,
    opts: &DatadogOptions,
    sink: &mut S,
) -> Result<(), DatadogError> {
    let mut series: GoVec<V1Series<'_>> = GoVec::default();
    let mut j = Json::new(body);
    j.document("datadogv1.Request", |j| {
        j.object("datadogv1.Request", |j, key| {
            if !key_is(key, "series") {
                return Ok(false);
            }
            j.field("series", |j| {
                j.vec(&mut series, "[]datadogv1.Series", |j, s| {
                    j.object("datadogv1.Series", |j, key| {
                        let known = if key_is(key, "metric") {
                            j.field("metric", |j| j.string(&mut s.metric))
                        } else if key_is(key, "host") {
                            j.field("host", |j| j.string(&mut s.host))
                        } else if key_is(key, "device") {
                            j.field("device", |j| j.string(&mut s.device))
                        } else if key_is(key, "points") {
                            j.field("points", |j| {
                                j.vec(&mut s.points, "[]datadogv1.Point", |j, p| {
                                    j.pair(p, "datadogv1.Point")
                                })
                            })
                        } else if key_is(key, "tags") {
                            j.field("tags", |j| {
                                j.vec(&mut s.tags, "[]string", |j, t| j.string(t))
                            })
                        } else {
                            return Ok(false);
                        };
                        known.map(|()| true)
                    })
                })
            })
            .map(|()| true)
        })
    })
    .map_err(|reason| decode_error("POST", body, reason))?;

    let mut em = Emitter::new(opts);
    let mut spare: Vec<Label<'static>> = Vec::new();
    for s in series.live() {
        em.set_name(&s.metric);
        let mut labels = recycle_labels(std::mem::take(&mut spare));
        labels.push(Label::metric_name(&em.name));
        push_nonempty(&mut labels, b"host", &s.host);
        push_nonempty(&mut labels, b"device", &s.device);
        labels.extend(s.tags.live().iter().map(|t| series_tag(t)));
        em.samples.clear();
        em.samples.extend(s.points.live().iter().map(|p| {
            let ts = if p[0] <= 0.0 { now_s as f64 } else { p[0] };
            Sample::new(go_f64_to_i64(ts * 1000.0), p[1])
        }));
        sink.series(&labels, &em.samples);
        spare = recycle_labels(labels);
    }
    Ok(())
}

fn push_nonempty<'a>(labels: &mut Vec<Label<'a>>, name: &'a [u8], value: &'a [u8]) {
    if !value.is_empty() {
        labels.push(Label::new(name, value));
    }
}

fn decode_error(what: &str, body: &[u8], reason: String) -> DatadogError {
    let cut = &body[..body.len().min(MAX_QUOTED_BODY)];
    let mut quoted = go_quote(cut);
    if cut.len() < body.len() {
        quoted.push_str("...");
    }
    DatadogError::Decode {
        what: what.to_string(),
        size: body.len(),
        reason: format!("cannot unmarshal {quoted}: {reason}"),
    }
}

// ---------------------------------------------------------------------------------------------
// v2 series (JSON or protobuf).

#[derive(Default, Clone, Copy)]
struct V2Point {
    timestamp: i64,
    value: f64,
}

#[derive(Default)]
struct Resource<'a> {
    name: Cow<'a, [u8]>,
    kind: Cow<'a, [u8]>,
}

#[derive(Default)]
struct V2Series<'a> {
    metric: Cow<'a, [u8]>,
    points: GoVec<V2Point>,
    resources: GoVec<Resource<'a>>,
    tags: GoVec<Cow<'a, [u8]>>,
    source_type_name: Cow<'a, [u8]>,
}

/// Whether a v2 body is protobuf: only this exact `Content-Type` says so.
pub fn v2_is_protobuf(content_type: Option<&str>) -> bool {
    content_type == Some("application/x-protobuf")
}

/// Parse a decompressed `/api/v2/series` body.
pub fn parse_v2<S: Sink + ?Sized>(
    body: &[u8],
    content_type: Option<&str>,
    now_s: i64,
    opts: &DatadogOptions,
    sink: &mut S,
) -> Result<(), DatadogError> {
    let what = content_type.unwrap_or("");
    let series = if v2_is_protobuf(content_type) {
        v2_protobuf(body).map_err(|e| decode_error(what, body, e.0))?
    } else {
        let mut s = v2_json(body).map_err(|e| decode_error(what, body, e))?;
        // The JSON path alone defaults a missing timestamp to now.
        for s in s.live_mut() {
            for p in s.points.live_mut() {
                if p.timestamp <= 0 {
                    p.timestamp = now_s;
                }
            }
        }
        s
    };
    let mut em = Emitter::new(opts);
    let mut spare: Vec<Label<'static>> = Vec::new();
    for s in series.live() {
        em.set_name(&s.metric);
        let mut labels = recycle_labels(std::mem::take(&mut spare));
        labels.push(Label::metric_name(&em.name));
        labels.extend(
            s.resources
                .live()
                .iter()
                .map(|r| Label::new(&r.kind, &r.name)),
        );
        labels.extend(s.tags.live().iter().map(|t| series_tag(t)));
        push_nonempty(&mut labels, b"source_type_name", &s.source_type_name);
        em.samples.clear();
        em.samples.extend(
            s.points
                .live()
                .iter()
                .map(|p| Sample::new(p.timestamp.wrapping_mul(1000), p.value)),
        );
        sink.series(&labels, &em.samples);
        spare = recycle_labels(labels);
    }
    Ok(())
}

fn v2_json(body: &[u8]) -> Result<GoVec<V2Series<'_>>, String> {
    let mut series: GoVec<V2Series<'_>> = GoVec::default();
    let mut j = Json::new(body);
    j.document("datadogv2.Request", |j| {
        j.object("datadogv2.Request", |j, key| {
            if !key_is(key, "series") {
                return Ok(false);
            }
            j.field("series", |j| {
                j.vec(&mut series, "[]datadogv2.Series", |j, s| {
                    j.object("datadogv2.Series", |j, key| {
                        let known = if key_is(key, "metric") {
                            j.field("metric", |j| j.string(&mut s.metric))
                        } else if key_is(key, "points") {
                            j.field("points", |j| {
                                j.vec(&mut s.points, "[]datadogv2.Point", |j, p| {
                                    j.object("datadogv2.Point", |j, key| {
                                        let known = if key_is(key, "timestamp") {
                                            j.field("timestamp", |j| j.int64(&mut p.timestamp))
                                        } else if key_is(key, "value") {
                                            j.field("value", |j| j.float64(&mut p.value))
                                        } else {
                                            return Ok(false);
                                        };
                                        known.map(|()| true)
                                    })
                                })
                            })
                        } else if key_is(key, "resources") {
                            j.field("resources", |j| {
                                j.vec(&mut s.resources, "[]datadogv2.Resource", |j, r| {
                                    j.object("datadogv2.Resource", |j, key| {
                                        let known = if key_is(key, "name") {
                                            j.field("name", |j| j.string(&mut r.name))
                                        } else if key_is(key, "type") {
                                            j.field("type", |j| j.string(&mut r.kind))
                                        } else {
                                            return Ok(false);
                                        };
                                        known.map(|()| true)
                                    })
                                })
                            })
                        } else if key_is(key, "tags") {
                            j.field("tags", |j| {
                                j.vec(&mut s.tags, "[]string", |j, t| j.string(t))
                            })
                        } else if key_is(key, "source_type_name") {
                            j.field("source_type_name", |j| j.string(&mut s.source_type_name))
                        } else {
                            return Ok(false);
                        };
                        known.map(|()| true)
                    })
                })
            })
            .map(|()| true)
        })
    })?;
    Ok(series)
}

fn v2_protobuf(body: &[u8]) -> R<GoVec<V2Series<'_>>> {
    let mut out: GoVec<V2Series<'_>> = GoVec::default();
    let mut r = Reader::new(body);
    while let Some((num, wt)) = r.field()? {
        if num != 1 {
            r.skip(wt)?;
            continue;
        }
        let msg = r.msg(wt)?;
        let s = within("series", v2_pb_series(msg))?;
        out.items.push(s);
        out.len += 1;
    }
    Ok(out)
}

fn v2_pb_series(msg: &[u8]) -> R<V2Series<'_>> {
    let mut s = V2Series::default();
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => {
                let m = r.msg(wt)?;
                let mut res = Resource::default();
                let mut rr = Reader::new(m);
                within(
                    "resource",
                    (|| {
                        while let Some((num, wt)) = rr.field()? {
                            match num {
                                1 => res.kind = Cow::Borrowed(rr.msg(wt)?),
                                2 => res.name = Cow::Borrowed(rr.msg(wt)?),
                                _ => rr.skip(wt)?,
                            }
                        }
                        Ok(())
                    })(),
                )?;
                s.resources.push(res);
            }
            2 => s.metric = Cow::Borrowed(r.msg(wt)?),
            3 => s.tags.push(Cow::Borrowed(r.msg(wt)?)),
            4 => {
                let m = r.msg(wt)?;
                let mut p = V2Point::default();
                let mut pr = Reader::new(m);
                within(
                    "point",
                    (|| {
                        while let Some((num, wt)) = pr.field()? {
                            match num {
                                1 => p.value = f64::from_bits(pr.fixed64_of(wt)?),
                                2 => p.timestamp = pr.varint_of(wt)? as i64,
                                _ => pr.skip(wt)?,
                            }
                        }
                        Ok(())
                    })(),
                )?;
                s.points.push(p);
            }
            7 => s.source_type_name = Cow::Borrowed(r.msg(wt)?),
            _ => r.skip(wt)?,
        }
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------------
// Sketches (protobuf).

#[derive(Default)]
struct Dogsketch {
    ts: i64,
    cnt: i64,
    min: f64,
    max: f64,
    sum: f64,
    k: Vec<i32>,
    n: Vec<u32>,
}

#[derive(Default)]
struct Sketch<'a> {
    metric: &'a [u8],
    host: &'a [u8],
    tags: Vec<&'a [u8]>,
    dogsketches: Vec<Dogsketch>,
}

const QUANTILES: [(f64, &[u8]); 5] = [
    (0.5, b"0.5"),
    (0.75, b"0.75"),
    (0.9, b"0.9"),
    (0.95, b"0.95"),
    (0.99, b"0.99"),
];

/// Parse a decompressed `/api/beta/sketches` body. Each sketch becomes five quantile series
/// and `.sum`/`.count`/`.min`/`.max`, one sample per dogsketch, with `host` ahead of the name.
pub fn parse_sketches<S: Sink + ?Sized>(
    body: &[u8],
    opts: &DatadogOptions,
    sink: &mut S,
) -> Result<(), DatadogError> {
    let sketches = sketch_payload(body).map_err(|e| DatadogError::Decode {
        what: "sketches".to_string(),
        size: body.len(),
        reason: e.0,
    })?;
    let mut em = Emitter::new(opts);
    let mut full_name = Vec::new();
    let mut spare: Vec<Label<'static>> = Vec::new();
    for sk in &sketches {
        em.set_name(sk.metric);
        for (q, q_text) in QUANTILES {
            let mut labels = recycle_labels(std::mem::take(&mut spare));
            push_nonempty(&mut labels, b"host", sk.host);
            labels.push(Label::metric_name(&em.name));
            labels.push(Label::new(b"quantile", q_text));
            labels.extend(sketch_tags(&sk.tags));
            em.samples.clear();
            em.samples.extend(
                sk.dogsketches
                    .iter()
                    .map(|d| Sample::new(d.ts.wrapping_mul(1000), quantile(d, q))),
            );
            sink.series(&labels, &em.samples);
            spare = recycle_labels(labels);
        }
        type Pick = fn(&Dogsketch) -> f64;
        let stats: [(&[u8], Pick); 4] = [
            (b".sum", |d| d.sum),
            (b".count", |d| d.cnt as f64),
            (b".min", |d| d.min),
            (b".max", |d| d.max),
        ];
        for (suffix, pick) in stats {
            full_name.clear();
            full_name.extend_from_slice(&em.name);
            full_name.extend_from_slice(suffix);
            let mut labels = recycle_labels(std::mem::take(&mut spare));
            push_nonempty(&mut labels, b"host", sk.host);
            labels.push(Label::metric_name(&full_name));
            labels.extend(sketch_tags(&sk.tags));
            em.samples.clear();
            em.samples.extend(
                sk.dogsketches
                    .iter()
                    .map(|d| Sample::new(d.ts.wrapping_mul(1000), pick(d))),
            );
            sink.series(&labels, &em.samples);
            spare = recycle_labels(labels);
        }
    }
    Ok(())
}

/// Sketch tags: split like series tags, but a `host` tag keeps its name.
fn sketch_tags<'t>(tags: &'t [&'t [u8]]) -> impl Iterator<Item = Label<'t>> + 't {
    tags.iter().map(|t| {
        let (n, v) = split_tag(t);
        Label::new(n, v)
    })
}

fn sketch_payload(body: &[u8]) -> R<Vec<Sketch<'_>>> {
    let mut out = Vec::new();
    let mut r = Reader::new(body);
    while let Some((num, wt)) = r.field()? {
        if num != 1 {
            r.skip(wt)?;
            continue;
        }
        let msg = r.msg(wt)?;
        out.push(within("sketch", read_sketch(msg))?);
    }
    Ok(out)
}

fn read_sketch(msg: &[u8]) -> R<Sketch<'_>> {
    let mut s = Sketch::default();
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => s.metric = r.msg(wt)?,
            2 => s.host = r.msg(wt)?,
            4 => s.tags.push(r.msg(wt)?),
            7 => {
                let m = r.msg(wt)?;
                s.dogsketches.push(within("dogsketch", read_dogsketch(m))?);
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(s)
}

fn read_dogsketch(msg: &[u8]) -> R<Dogsketch> {
    let mut d = Dogsketch::default();
    let mut r = Reader::new(msg);
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => d.ts = r.varint_of(wt)? as i64,
            2 => d.cnt = r.varint_of(wt)? as i64,
            3 => d.min = f64::from_bits(r.fixed64_of(wt)?),
            4 => d.max = f64::from_bits(r.fixed64_of(wt)?),
            6 => d.sum = f64::from_bits(r.fixed64_of(wt)?),
            7 => r.varints(wt, |v| {
                let v = v as u32;
                d.k.push(((v >> 1) as i32) ^ -((v & 1) as i32));
            })?,
            8 => r.varints(wt, |v| d.n.push(v as u32))?,
            _ => r.skip(wt)?,
        }
    }
    Ok(d)
}

/// DDSketch's relative accuracy 1/128 gives this bucket growth factor.
const GAMMA: f64 = 1.0 + 2.0 / 128.0;
/// Key offset of the agent's sketches (its minimum indexable value is about 1e-9).
const BIAS: i64 = 1338;

fn key_to_value(k: i32) -> f64 {
    if k <= -32767 {
        f64::NEG_INFINITY
    } else if k >= 32767 {
        f64::INFINITY
    } else if k == 0 {
        0.0
    } else if k < 0 {
        -key_to_value(-k)
    } else {
        go_pow_int(GAMMA, i64::from(k) - BIAS)
    }
}

/// The `q` quantile of one dogsketch, as vminsert interpolates it inside the bucket.
fn quantile(d: &Dogsketch, q: f64) -> f64 {
    if d.cnt == 0 || d.k.len() != d.n.len() {
        return 0.0;
    }
    let rank = (q * (d.cnt - 1) as f64).round_ties_even();
    let mut acc = 0.0;
    for (i, (&k, &n)) in d.k.iter().zip(&d.n).enumerate() {
        acc += f64::from(n);
        if acc <= rank {
            continue;
        }
        let w = (acc - rank) / f64::from(n);
        let base = key_to_value(k);
        let lo = if i == 0 { d.min } else { base };
        let hi = base * GAMMA;
        return lo * w + hi * (1.0 - w);
    }
    d.max
}

/// Go's `math.Pow(x, y)` for a finite `x > 0` and an integral `y`: repeated squaring of the
/// mantissa with a separate binary exponent. Copied step for step so the quantiles have the
/// same bits as vminsert's, which a libm `powi` does not promise.
fn go_pow_int(x: f64, y: i64) -> f64 {
    if y == 0 {
        return 1.0;
    }
    let (mut x1, mut xe) = frexp(x);
    let mut a1 = 1.0;
    let mut ae: i64 = 0;
    let mut i = y.unsigned_abs();
    while i != 0 {
        if !(-(1 << 12)..=(1 << 12)).contains(&xe) {
            // Catastrophic overflow: the result is 0 or Inf whatever the rest.
            ae += xe;
            break;
        }
        if i & 1 == 1 {
            a1 *= x1;
            ae += xe;
        }
        x1 *= x1;
        xe <<= 1;
        if x1 < 0.5 {
            x1 += x1;
            xe -= 1;
        }
        i >>= 1;
    }
    if y < 0 {
        a1 = 1.0 / a1;
        ae = -ae;
    }
    ldexp(a1, ae)
}

/// Go's `math.Frexp` for a finite non-zero value: `f = frac × 2^exp`, `frac` in [0.5, 1).
fn frexp(f: f64) -> (f64, i64) {
    if f == 0.0 || !f.is_finite() {
        return (f, 0);
    }
    let (f, mut exp) = normalize(f);
    let mut x = f.to_bits();
    exp += ((x >> 52) & 0x7ff) as i64 - 1022;
    x &= !(0x7ff << 52);
    x |= 1022 << 52;
    (f64::from_bits(x), exp)
}

fn normalize(f: f64) -> (f64, i64) {
    if f.abs() < f64::MIN_POSITIVE {
        (f * (1u64 << 52) as f64, -52)
    } else {
        (f, 0)
    }
}

/// Go's `math.Ldexp`.
fn ldexp(frac: f64, exp: i64) -> f64 {
    if frac == 0.0 || !frac.is_finite() {
        return frac;
    }
    let (frac, e) = normalize(frac);
    let mut exp = exp.saturating_add(e);
    let mut x = frac.to_bits();
    exp = exp.saturating_add(((x >> 52) & 0x7ff) as i64 - 1023);
    if exp < -1075 {
        return 0.0f64.copysign(frac);
    }
    if exp > 1023 {
        return if frac < 0.0 {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        };
    }
    let mut m = 1.0;
    if exp < -1022 {
        exp += 53;
        m = 1.0 / (1u64 << 53) as f64;
    }
    x &= !(0x7ff << 52);
    x |= ((exp + 1023) as u64) << 52;
    m * f64::from_bits(x)
}

// ---------------------------------------------------------------------------------------------
// Go slices as `encoding/json` fills them.

/// A slice decoded the way Go decodes into an existing one: element `i` is decoded over
/// whatever the backing array holds there, and the length is set to the number of elements
/// seen. Only an empty JSON array or `null` drops the backing array.
struct GoVec<T> {
    items: Vec<T>,
    len: usize,
}

impl<T> Default for GoVec<T> {
    fn default() -> GoVec<T> {
        GoVec {
            items: Vec::new(),
            len: 0,
        }
    }
}

impl<T> GoVec<T> {
    fn live(&self) -> &[T] {
        &self.items[..self.len]
    }

    fn live_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }

    fn push(&mut self, v: T) {
        self.items.truncate(self.len);
        self.items.push(v);
        self.len += 1;
    }
}

// ---------------------------------------------------------------------------------------------
// A strict JSON reader with Go `encoding/json` semantics and messages.

/// A syntax error: fatal, and it wins over any type error (Go validates before decoding).
type JResult<T> = Result<T, String>;

enum Seg {
    Field(&'static str),
    Index(usize),
}

struct Json<'a> {
    b: &'a [u8],
    pos: usize,
    path: Vec<Seg>,
    /// The first type mismatch; Go keeps decoding and reports it at the end.
    type_error: Option<String>,
}

const EOF: &str = "unexpected end of JSON input";

fn invalid(c: u8, context: &str) -> String {
    format!("invalid character {} {context}", go_quote_char(c))
}

/// Go's `quoteChar`: the byte read as a Latin-1 rune, quoted with single quotes.
fn go_quote_char(c: u8) -> String {
    match c {
        b'\'' => "'\\''".to_string(),
        b'"' => "'\"'".to_string(),
        _ => {
            let mut s = String::from("'");
            push_escaped_rune(&mut s, char::from(c), false);
            s.push('\'');
            s
        }
    }
}

/// Whether a key names a field: exact, or equal under Go's case folding (which also maps the
/// Kelvin sign to `k` and the long s to `s`). Field names are ASCII.
fn key_is(key: &[u8], field: &str) -> bool {
    if key == field.as_bytes() {
        return true;
    }
    let mut want = field.bytes();
    for c in String::from_utf8_lossy(key).chars() {
        let c = match c {
            '\u{212A}' => 'k',
            '\u{017F}' => 's',
            c if c.is_ascii() => c.to_ascii_lowercase(),
            _ => return false,
        };
        if want.next().map(|w| w.to_ascii_lowercase()) != Some(c as u8) {
            return false;
        }
    }
    want.next().is_none()
}

impl<'a> Json<'a> {
    fn new(b: &'a [u8]) -> Json<'a> {
        Json {
            b,
            pos: 0,
            path: Vec::new(),
            type_error: None,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    /// The whole body: one value, then only whitespace. A type error is reported once the
    /// body is known to be well-formed.
    fn document(
        &mut self,
        ty: &'static str,
        f: impl FnOnce(&mut Self) -> JResult<()>,
    ) -> JResult<()> {
        self.ws();
        match self.peek() {
            None => return Err(EOF.into()),
            Some(b'{') => f(self)?,
            Some(_) => self.decode_other(ty)?,
        }
        self.ws();
        if let Some(c) = self.peek() {
            return Err(invalid(c, "after top-level value"));
        }
        match self.type_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Descend into a struct field for error messages.
    fn field(
        &mut self,
        name: &'static str,
        f: impl FnOnce(&mut Self) -> JResult<()>,
    ) -> JResult<()> {
        self.path.push(Seg::Field(name));
        let r = f(self);
        self.path.pop();
        r
    }

    fn type_mismatch(&mut self, value: &str, ty: &str) {
        if self.type_error.is_some() {
            return;
        }
        let mut path = String::new();
        for seg in &self.path {
            path.push('.');
            match seg {
                Seg::Field(f) => path.push_str(f),
                Seg::Index(i) => path.push_str(&i.to_string()),
            }
        }
        let into = match self.path.last() {
            None => "Go value".to_string(),
            Some(Seg::Field(_)) => format!("Go struct field Request{path}"),
            Some(Seg::Index(_)) => format!("Request{path}"),
        };
        self.type_error = Some(format!(
            "json: cannot unmarshal {value} into {into} of type {ty}"
        ));
    }

    /// A value of the wrong kind for `ty` (or `null`, which changes nothing): checked and
    /// skipped.
    fn decode_other(&mut self, ty: &str) -> JResult<()> {
        let kind = match self.peek() {
            None => return Err(EOF.into()),
            Some(b'n') => None,
            Some(b'"') => Some("string"),
            Some(b'{') => Some("object"),
            Some(b'[') => Some("array"),
            Some(b't' | b'f') => Some("bool"),
            Some(b'-' | b'0'..=b'9') => Some("number"),
            Some(c) => return Err(invalid(c, "looking for beginning of value")),
        };
        self.skip_value()?;
        if let Some(kind) = kind {
            self.type_mismatch(kind, ty);
        }
        Ok(())
    }

    /// An object decoded into a struct: `field` gets each key and decodes its value, or
    /// returns false for an unknown key, whose value is then skipped.
    fn object(
        &mut self,
        ty: &'static str,
        mut field: impl FnMut(&mut Self, &[u8]) -> JResult<bool>,
    ) -> JResult<()> {
        self.ws();
        if self.peek() != Some(b'{') {
            return self.decode_other(ty);
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            match self.peek() {
                None => return Err(EOF.into()),
                Some(b'"') => {}
                Some(c) => return Err(invalid(c, "looking for beginning of object key string")),
            }
            let key = self.string_literal()?;
            self.ws();
            match self.peek() {
                None => return Err(EOF.into()),
                Some(b':') => self.pos += 1,
                Some(c) => return Err(invalid(c, "after object key")),
            }
            self.ws();
            if !field(self, &key)? {
                self.skip_value()?;
            }
            self.ws();
            match self.peek() {
                None => return Err(EOF.into()),
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(c) => return Err(invalid(c, "after object key:value pair")),
            }
        }
    }

    /// An array decoded into a Go slice.
    fn vec<T: Default>(
        &mut self,
        v: &mut GoVec<T>,
        ty: &'static str,
        mut elem: impl FnMut(&mut Self, &mut T) -> JResult<()>,
    ) -> JResult<()> {
        self.ws();
        match self.peek() {
            Some(b'[') => {}
            Some(b'n') => {
                self.literal(b"null")?;
                *v = GoVec::default();
                return Ok(());
            }
            _ => return self.decode_other(ty),
        }
        self.pos += 1;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            *v = GoVec::default();
            return Ok(());
        }
        let mut i = 0;
        loop {
            if i == v.items.len() {
                v.items.push(T::default());
            }
            self.path.push(Seg::Index(i));
            let r = elem(self, &mut v.items[i]);
            self.path.pop();
            r?;
            i += 1;
            self.ws();
            match self.peek() {
                None => return Err(EOF.into()),
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    v.len = i;
                    return Ok(());
                }
                Some(c) => return Err(invalid(c, "after array element")),
            }
        }
    }

    /// An array decoded into Go's `[2]float64`: extra elements ignored, missing ones zeroed.
    fn pair(&mut self, p: &mut [f64; 2], ty: &'static str) -> JResult<()> {
        self.ws();
        if self.peek() != Some(b'[') {
            return self.decode_other(ty);
        }
        self.pos += 1;
        self.ws();
        let mut i = 0;
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                if i < 2 {
                    self.path.push(Seg::Index(i));
                    let r = self.float64(&mut p[i]);
                    self.path.pop();
                    r?;
                } else {
                    self.ws();
                    self.skip_value()?;
                }
                i += 1;
                self.ws();
                match self.peek() {
                    None => return Err(EOF.into()),
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    Some(c) => return Err(invalid(c, "after array element")),
                }
            }
        }
        for v in p.iter_mut().skip(i) {
            *v = 0.0;
        }
        Ok(())
    }

    fn string(&mut self, slot: &mut Cow<'a, [u8]>) -> JResult<()> {
        self.ws();
        if self.peek() != Some(b'"') {
            return self.decode_other("string");
        }
        *slot = self.string_literal()?;
        Ok(())
    }

    fn float64(&mut self, slot: &mut f64) -> JResult<()> {
        self.ws();
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return self.decode_other("float64");
        }
        let tok = self.number()?;
        // The grammar was checked, so this is a plain decimal; Go and Rust both round
        // correctly, and both give an out-of-range error only as infinity.
        match std::str::from_utf8(tok)
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
        {
            Some(v) if v.is_finite() => *slot = v,
            _ => {
                let value = format!("number {}", String::from_utf8_lossy(tok));
                self.type_mismatch(&value, "float64");
            }
        }
        Ok(())
    }

    fn int64(&mut self, slot: &mut i64) -> JResult<()> {
        self.ws();
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return self.decode_other("int64");
        }
        let tok = self.number()?;
        match std::str::from_utf8(tok)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
        {
            Some(v) => *slot = v,
            None => {
                let value = format!("number {}", String::from_utf8_lossy(tok));
                self.type_mismatch(&value, "int64");
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &'static [u8]) -> JResult<()> {
        let name = std::str::from_utf8(word).unwrap_or("");
        for (i, &want) in word.iter().enumerate() {
            match self.b.get(self.pos + i) {
                None => return Err(EOF.into()),
                Some(&c) if c == want => {}
                Some(&c) => {
                    return Err(invalid(
                        c,
                        &format!("in literal {name} (expecting {})", go_quote_char(want)),
                    ))
                }
            }
        }
        self.pos += word.len();
        Ok(())
    }

    /// A number token, checked against RFC 8259.
    fn number(&mut self) -> JResult<&'a [u8]> {
        let start = self.pos;
        let digit = |j: &Self| matches!(j.peek(), Some(b'0'..=b'9'));
        let need_digit = |j: &Self| match j.peek() {
            None => Err(String::from(EOF)),
            Some(b'0'..=b'9') => Ok(()),
            Some(c) => Err(invalid(c, "in numeric literal")),
        };
        if self.peek() == Some(b'-') {
            self.pos += 1;
            need_digit(self)?;
        }
        if self.peek() == Some(b'0') {
            self.pos += 1;
        } else {
            while digit(self) {
                self.pos += 1;
            }
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            need_digit(self)?;
            while digit(self) {
                self.pos += 1;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            need_digit(self)?;
            while digit(self) {
                self.pos += 1;
            }
        }
        Ok(&self.b[start..self.pos])
    }

    /// A string literal at `"`, unescaped; invalid UTF-8 becomes U+FFFD byte by byte, as Go
    /// does.
    fn string_literal(&mut self) -> JResult<Cow<'a, [u8]>> {
        self.pos += 1;
        let start = self.pos;
        // Fast path: no escapes, valid UTF-8.
        let mut i = start;
        loop {
            match self.b.get(i) {
                None => return Err(EOF.into()),
                Some(b'"') => {
                    let s = &self.b[start..i];
                    if std::str::from_utf8(s).is_ok() {
                        self.pos = i + 1;
                        return Ok(Cow::Borrowed(s));
                    }
                    break;
                }
                Some(b'\\') => break,
                Some(&c) if c < 0x20 => return Err(invalid(c, "in string literal")),
                Some(_) => i += 1,
            }
        }
        let mut out: Vec<u8> = Vec::with_capacity(i - start + 8);
        let mut i = start;
        let mut buf = [0u8; 4];
        loop {
            let Some(&c) = self.b.get(i) else {
                return Err(EOF.into());
            };
            match c {
                b'"' => {
                    self.pos = i + 1;
                    return Ok(Cow::Owned(out));
                }
                b'\\' => {
                    let Some(&e) = self.b.get(i + 1) else {
                        return Err(EOF.into());
                    };
                    i += 2;
                    let simple = match e {
                        b'"' | b'\\' | b'/' => Some(e),
                        b'b' => Some(8),
                        b'f' => Some(12),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(invalid(e, "in string escape code")),
                    };
                    if let Some(s) = simple {
                        out.push(s);
                        continue;
                    }
                    let u = self.hex4(i)?;
                    i += 4;
                    let mut ch = char::from_u32(u32::from(u));
                    if (0xD800..0xE000).contains(&u) {
                        ch = None;
                        // A surrogate pair is two escapes; anything else is U+FFFD.
                        if (0xD800..0xDC00).contains(&u)
                            && self.b.get(i) == Some(&b'\\')
                            && self.b.get(i + 1) == Some(&b'u')
                        {
                            if let Ok(lo) = self.hex4(i + 2) {
                                if (0xDC00..0xE000).contains(&lo) {
                                    let c = 0x10000
                                        + ((u32::from(u) - 0xD800) << 10)
                                        + (u32::from(lo) - 0xDC00);
                                    ch = char::from_u32(c);
                                    i += 6;
                                }
                            }
                        }
                    }
                    let ch = ch.unwrap_or('\u{FFFD}');
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c if c < 0x20 => return Err(invalid(c, "in string literal")),
                c if c < 0x80 => {
                    out.push(c);
                    i += 1;
                }
                _ => match decode_rune(&self.b[i..]) {
                    Some(w) => {
                        out.extend_from_slice(&self.b[i..i + w]);
                        i += w;
                    }
                    None => {
                        out.extend_from_slice("\u{FFFD}".as_bytes());
                        i += 1;
                    }
                },
            }
        }
    }

    /// Four hex digits at `at` (inside a `\u` escape).
    fn hex4(&self, at: usize) -> JResult<u16> {
        let mut v: u16 = 0;
        for k in 0..4 {
            let Some(&c) = self.b.get(at + k) else {
                return Err(EOF.into());
            };
            let d = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(invalid(c, "in \\u hexadecimal character escape")),
            };
            v = v << 4 | u16::from(d);
        }
        Ok(v)
    }

    /// Check and skip one value of any kind, without recursion.
    fn skip_value(&mut self) -> JResult<()> {
        // Open containers: true for an object.
        let mut stack: Vec<bool> = Vec::new();
        loop {
            self.ws();
            // A value.
            match self.peek() {
                None => return Err(EOF.into()),
                Some(b'{') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        if stack.len() >= MAX_JSON_DEPTH {
                            return Err("exceeded max depth".into());
                        }
                        stack.push(true);
                        self.object_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        if stack.len() >= MAX_JSON_DEPTH {
                            return Err("exceeded max depth".into());
                        }
                        stack.push(false);
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string_literal()?;
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                }
                Some(c) => return Err(invalid(c, "looking for beginning of value")),
            }
            // After a value: close containers or move to the next element.
            loop {
                let Some(&is_object) = stack.last() else {
                    return Ok(());
                };
                self.ws();
                match (self.peek(), is_object) {
                    (None, _) => return Err(EOF.into()),
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.ws();
                        self.object_key()?;
                        break;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.pos += 1;
                        stack.pop();
                    }
                    (Some(c), true) => return Err(invalid(c, "after object key:value pair")),
                    (Some(c), false) => return Err(invalid(c, "after array element")),
                }
            }
        }
    }

    /// `"key" :` inside an object being skipped.
    fn object_key(&mut self) -> JResult<()> {
        self.ws();
        match self.peek() {
            None => return Err(EOF.into()),
            Some(b'"') => {}
            Some(c) => return Err(invalid(c, "looking for beginning of object key string")),
        }
        self.string_literal()?;
        self.ws();
        match self.peek() {
            None => Err(EOF.into()),
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(c) => Err(invalid(c, "after object key")),
        }
    }
}

/// The width of the valid UTF-8 sequence at the start of `s`, if there is one.
fn decode_rune(s: &[u8]) -> Option<usize> {
    let w = match s.first()? {
        0x00..=0x7f => 1,
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => return None,
    };
    let seq = s.get(..w)?;
    std::str::from_utf8(seq).ok().map(|_| w)
}

// ---------------------------------------------------------------------------------------------
// Go's `%q`.

/// Quote bytes as Go's `%q` does: printable runes as they are, the usual escapes, `\xNN` for
/// bytes that are not UTF-8.
pub fn go_quote(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    let mut i = 0;
    while i < b.len() {
        match decode_rune(&b[i..]) {
            Some(w) => {
                let c = std::str::from_utf8(&b[i..i + w])
                    .ok()
                    .and_then(|t| t.chars().next())
                    .unwrap_or('\u{FFFD}');
                push_escaped_rune(&mut s, c, true);
                i += w;
            }
            None => {
                s.push_str(&format!("\\x{:02x}", b[i]));
                i += 1;
            }
        }
    }
    s.push('"');
    s
}

fn push_escaped_rune(s: &mut String, c: char, double_quoted: bool) {
    match c {
        '"' if double_quoted => s.push_str("\\\""),
        '\'' if !double_quoted => s.push_str("\\'"),
        '\\' => s.push_str("\\\\"),
        '\u{7}' => s.push_str("\\a"),
        '\u{8}' => s.push_str("\\b"),
        '\u{c}' => s.push_str("\\f"),
        '\n' => s.push_str("\\n"),
        '\r' => s.push_str("\\r"),
        '\t' => s.push_str("\\t"),
        '\u{b}' => s.push_str("\\v"),
        c if is_go_print(c) => s.push(c),
        c if (c as u32) < 0x20 || c == '\u{7f}' => s.push_str(&format!("\\x{:02x}", c as u32)),
        c if (c as u32) < 0x10000 => s.push_str(&format!("\\u{:04x}", c as u32)),
        c => s.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// An approximation of Go's `unicode.IsPrint` without the Unicode tables: control, format,
/// space (other than U+0020) and private-use characters are not printable.
fn is_go_print(c: char) -> bool {
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    let u = c as u32;
    !(c.is_control()
        || c.is_whitespace()
        || u == 0xAD
        || (0x600..=0x605).contains(&u)
        || (0x200B..=0x200F).contains(&u)
        || (0x202A..=0x202E).contains(&u)
        || (0x2060..=0x206F).contains(&u)
        || u == 0xFEFF
        || (0xFFF9..=0xFFFB).contains(&u)
        || (0xE000..=0xF8FF).contains(&u)
        || u >= 0xF0000
        || (0xE0000..=0xE007F).contains(&u))
}

// ---------------------------------------------------------------------------------------------
// Protobuf reading.

/// A protobuf decode error, with the messages it happened in as a `cannot unmarshal X: ` chain.
#[derive(Debug)]
struct PbError(String);

impl From<&'static str> for PbError {
    fn from(s: &'static str) -> PbError {
        PbError(s.to_string())
    }
}

type R<T> = Result<T, PbError>;

fn within<T>(what: &str, r: R<T>) -> R<T> {
    r.map_err(|e| PbError(format!("cannot unmarshal {what}: {}", e.0)))
}

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

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
                return Err("cannot read the next field: unexpected end of varint".into());
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
            return Err("cannot read the next field: unexpected end of fixed64".into());
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
            return Err("cannot read the next field: field number 0".into());
        }
        Ok(Some((num, (key & 7) as u8)))
    }

    fn skip(&mut self, wt: u8) -> R<()> {
        match wt {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.fixed64().map(drop),
            WT_LEN => self.bytes().map(drop),
            WT_I32 => match self.buf.get(4..) {
                Some(rest) => {
                    self.buf = rest;
                    Ok(())
                }
                None => Err("cannot read the next field: unexpected end of fixed32".into()),
            },
            _ => Err("cannot read the next field: unsupported wire type".into()),
        }
    }

    fn msg(&mut self, wt: u8) -> R<&'a [u8]> {
        expect(wt, WT_LEN)?;
        self.bytes()
    }

    fn fixed64_of(&mut self, wt: u8) -> R<u64> {
        expect(wt, WT_I64)?;
        self.fixed64()
    }

    fn varint_of(&mut self, wt: u8) -> R<u64> {
        expect(wt, WT_VARINT)?;
        self.varint()
    }

    /// A repeated varint field, packed or not.
    fn varints(&mut self, wt: u8, mut f: impl FnMut(u64)) -> R<()> {
        match wt {
            WT_VARINT => f(self.varint()?),
            WT_LEN => {
                let mut p = Reader::new(self.bytes()?);
                while !p.buf.is_empty() {
                    f(p.varint()?);
                }
            }
            _ => return Err("unexpected wire type for a known field".into()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_examples() {
        let mut out = Vec::new();
        for (input, want) in [
            ("My Metric!!name..x_.y", "My_Metric_name..x.y"),
            ("a-b/c__d._e", "a_b_c_d.e"),
            ("_._._", ".."),
            ("ok.name_1", "ok.name_1"),
            ("é", "_"),
            ("", ""),
        ] {
            sanitize_metric_name(input.as_bytes(), &mut out);
            assert_eq!(String::from_utf8_lossy(&out), want, "{input}");
        }
    }

    #[test]
    fn tags_split_at_first_colon() {
        assert_eq!(split_tag(b"a:b:c"), (&b"a"[..], &b"b:c"[..]));
        assert_eq!(split_tag(b"role"), (&b"role"[..], NO_LABEL_VALUE));
        assert_eq!(split_tag(b":x"), (&b""[..], &b"x"[..]));
    }

    #[test]
    fn go_pow_matches_exact_powers() {
        assert_eq!(go_pow_int(2.0, 10), 1024.0);
        assert_eq!(go_pow_int(2.0, -3), 0.125);
        assert_eq!(go_pow_int(GAMMA, 0), 1.0);
        assert_eq!(go_pow_int(GAMMA, 1), GAMMA);
        assert_eq!(go_pow_int(GAMMA, 50000), f64::INFINITY);
        assert_eq!(go_pow_int(GAMMA, -50000), 0.0);
        assert_eq!(ldexp(0.5, -1074), 0.0);
        assert_eq!(ldexp(0.5, -1073), f64::from_bits(1));
        assert_eq!(frexp(f64::from_bits(1)), (0.5, -1073));
    }

    #[test]
    fn quoting_like_go() {
        assert_eq!(
            go_quote(b"a\"b\\\n\x00\x80\xe2\xcf\xaa"),
            "\"a\\\"b\\\\\\n\\x00\\x80\\xe2\u{3ea}\""
        );
        assert_eq!(go_quote_char(b'x'), "'x'");
        assert_eq!(go_quote_char(b'\''), "'\\''");
        assert_eq!(go_quote_char(1), "'\\x01'");
    }

    #[test]
    fn keys_fold() {
        assert!(key_is(b"Metric", "metric"));
        assert!(key_is("\u{17F}eries".as_bytes(), "series"));
        assert!(!key_is(b"metrics", "metric"));
        assert!(!key_is(b"metri", "metric"));
    }
}
