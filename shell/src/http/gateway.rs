//! The gateway's HTTP routes: built-ins, `/insert/<tenant>/<suffix>` and the formats.
//!
//! A format is a row of [`format_for`]: how its suffix matches, the `type` label of
//! `vm_rows_inserted_total`, the `path`/`protocol` labels of `vm_http_requests_total`, and how
//! its body is handled ([`Kind`]). Every series goes through the core ingest pipeline
//! ([`Ingest`]) under the config snapshot the request started with.
//!
//! Line formats are never read whole: the body is decoded and split into lines as it arrives,
//! and the batch is pushed part-way whenever one storage node's share passes the per-request
//! limit, so a request holds a few MiB at most whatever its size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use shardgate_core::formats::body::{
    decode_whole, BodyDecoder, BodyError, ContentEncoding, MAX_SNAPPY_STREAM_BODY,
    MAX_SNAPPY_STREAM_DECOMPRESSED, OUT_PIECE,
};
use shardgate_core::formats::csv::{CsvFormat, CsvLines};
use shardgate_core::formats::datadog;
use shardgate_core::formats::influx::{InfluxParser, Precision};
use shardgate_core::formats::json_lines::JsonLines;
use shardgate_core::formats::lines::{LineTooLong, DEFAULT_MAX_LINE_LEN};
use shardgate_core::formats::native::NativeParser;
use shardgate_core::formats::newrelic;
use shardgate_core::formats::opentelemetry::{self, BodyKind};
use shardgate_core::formats::prometheus_text::{self, PromTextLines};
use shardgate_core::formats::remote_write;
use shardgate_core::formats::zabbix::ZabbixLines;
use shardgate_core::ingest::{self, Ingest, IngestScratch, Protocol, RequestConfig};

use super::limiter::{Limiter, SlotTimeout, Turn};
use super::route::{self, InsertPath, PathError};
use super::server::{self, Handler, Resp};
use crate::metrics::Registry;
use crate::pipeline::{now_ms, InfluxLines, IngestShared, LineHandler, Lines};
use crate::storage::{PushFailure, Storage};

/// Settings the routes need, taken from flags once at startup.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub path_prefix: String,
    pub multitenancy_via_headers: bool,
    pub max_insert_request_size: usize,
    pub max_queue_duration: Duration,
    pub enable_metadata: bool,
    /// A client that sends nothing for this long loses its request.
    pub body_read_timeout: Duration,
}

/// How a route handles its request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    RemoteWrite,
    JsonImport,
    Csv,
    PromText,
    InfluxWrite,
    InfluxQuery,
    InfluxHealth,
    OpenTelemetry,
    Native,
    NewRelic,
    /// `newrelic` (agent connectivity check): 202, body ignored.
    NewRelicStub,
    /// `newrelic/inventory/deltas`: 202 with a fixed payload, body ignored.
    NewRelicInventory,
    Zabbix,
    /// DataDog series or sketches: read whole, 202 on success.
    Datadog(datadog::Endpoint),
    /// DataDog endpoints that answer without reading the body.
    DatadogStub(datadog::Stub),
}

#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// `vm_rows_inserted_total{type=...}`.
    pub rows_type: &'static str,
    /// `vm_http_requests_total{path=...}`.
    pub metric_path: &'static str,
    /// `vm_http_requests_total{protocol=...}`.
    pub protocol: &'static str,
    pub kind: Kind,
}

impl Format {
    fn ingest_protocol(self) -> Protocol {
        match self.kind {
            Kind::RemoteWrite => Protocol::RemoteWrite,
            Kind::InfluxWrite => Protocol::Influx,
            Kind::OpenTelemetry => Protocol::OpenTelemetry,
            Kind::Zabbix => Protocol::Zabbix,
            _ => Protocol::Standard,
        }
    }

    fn is_influx(self) -> bool {
        matches!(
            self.kind,
            Kind::InfluxWrite | Kind::InfluxQuery | Kind::InfluxHealth
        )
    }
}

const fn fmt(
    rows_type: &'static str,
    metric_path: &'static str,
    protocol: &'static str,
    kind: Kind,
) -> Format {
    Format {
        rows_type,
        metric_path,
        protocol,
        kind,
    }
}

/// Pick the format for an insert suffix.
pub fn format_for(suffix: &str) -> Option<Format> {
    Some(match suffix {
        "prometheus" | "prometheus/" | "prometheus/api/v1/write" | "prometheus/api/v1/push" => fmt(
            "promremotewrite",
            "/insert/{}/prometheus/",
            "promremotewrite",
            Kind::RemoteWrite,
        ),
        "prometheus/api/v1/import" => fmt(
            "vmimport",
            "/insert/{}/prometheus/api/v1/import",
            "vmimport",
            Kind::JsonImport,
        ),
        "prometheus/api/v1/import/csv" => fmt(
            "csvimport",
            "/insert/{}/prometheus/api/v1/import/csv",
            "csvimport",
            Kind::Csv,
        ),
        s if s.starts_with("prometheus/api/v1/import/prometheus") => fmt(
            "prometheus",
            "/insert/{}/prometheus/api/v1/import/prometheus",
            "prometheusimport",
            Kind::PromText,
        ),
        "influx/write" | "influx/api/v2/write" => fmt(
            "influx",
            "/insert/{}/influx/write",
            "influx",
            Kind::InfluxWrite,
        ),
        "influx/query" => fmt(
            "influx",
            "/insert/{}/influx/query",
            "influx",
            Kind::InfluxQuery,
        ),
        "influx/health" => fmt(
            "influx",
            "/insert/{}/influx/health",
            "influx",
            Kind::InfluxHealth,
        ),
        "opentelemetry/v1/metrics" | "opentelemetry/api/v1/push" => fmt(
            "opentelemetry",
            "/insert/{}/opentelemetry/v1/metrics",
            "opentelemetry",
            Kind::OpenTelemetry,
        ),
        "prometheus/api/v1/import/native" => fmt(
            "native",
            "/insert/{}/prometheus/api/v1/import/native",
            "nativeimport",
            Kind::Native,
        ),
        "newrelic/infra/v2/metrics/events/bulk" => fmt(
            "newrelic",
            "/insert/{}/newrelic/infra/v2/metrics/events/bulk",
            "newrelic",
            Kind::NewRelic,
        ),
        "newrelic" => fmt(
            "newrelic",
            "/insert/{}/newrelic",
            "newrelic",
            Kind::NewRelicStub,
        ),
        "newrelic/inventory/deltas" => fmt(
            "newrelic",
            "/insert/{}/newrelic/inventory/deltas",
            "newrelic",
            Kind::NewRelicInventory,
        ),
        "zabbixconnector/api/v1/history" => fmt(
            "zabbixconnector",
            "/insert/{}/zabbixconnector/api/v1/history",
            "zabbixconnector",
            Kind::Zabbix,
        ),
        s if s.starts_with("datadog/") => return datadog_format(s),
        _ => return None,
    })
}

/// The DataDog routes; one trailing `/` is allowed.
fn datadog_format(suffix: &str) -> Option<Format> {
    use datadog::{Endpoint, Route, Stub};
    let route = datadog::route(suffix)?;
    let path = match route {
        Route::Ingest(Endpoint::SeriesV1) => "/insert/{}/datadog/api/v1/series",
        Route::Ingest(Endpoint::SeriesV2) => "/insert/{}/datadog/api/v2/series",
        Route::Ingest(Endpoint::Sketches) => "/insert/{}/datadog/api/beta/sketches",
        Route::Stub(Stub::Validate) => "/insert/{}/datadog/api/v1/validate",
        Route::Stub(Stub::CheckRun) => "/insert/{}/datadog/api/v1/check_run",
        Route::Stub(Stub::Intake) => "/insert/{}/datadog/intake",
        Route::Stub(Stub::Metadata) => "/insert/{}/datadog/api/v1/metadata",
    };
    Some(match route {
        Route::Ingest(e) => fmt(e.rows_type(), path, "datadog", Kind::Datadog(e)),
        Route::Stub(s) => fmt("datadog", path, "datadog", Kind::DatadogStub(s)),
    })
}

pub struct App {
    pub cfg: HttpConfig,
    pub metrics: Arc<Registry>,
    pub limiter: Arc<Limiter>,
    pub storage: Arc<Storage>,
    pub ingest: Arc<IngestShared>,
    /// False while `-http.shutdownDelay` runs: `/health` answers 503.
    pub healthy: AtomicBool,
    pub flags_text: String,
    /// Extra `/metrics` lines (gateway stats, flags), rendered on demand.
    pub extra_metrics: Box<dyn Fn(&mut String) + Send + Sync>,
    /// `/api/v1/export` in the embedded mode: `(raw) -> body`.
    pub export: Option<Box<dyn Fn(bool) -> String + Send + Sync>>,
    pub start: SystemTime,
}

/// A failed request: status and text.
pub struct Fail(pub StatusCode, pub String);

impl Fail {
    pub fn bad(msg: impl Into<String>) -> Fail {
        Fail(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<SlotTimeout> for Fail {
    fn from(e: SlotTimeout) -> Fail {
        Fail(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl From<PushFailure> for Fail {
    fn from(p: PushFailure) -> Fail {
        Fail(StatusCode::SERVICE_UNAVAILABLE, p.to_string())
    }
}

/// Why a streamed body stopped.
pub enum StreamError {
    Read(String),
    Body(BodyError),
    Line(LineTooLong),
    Push(PushFailure),
    /// No insert slot came back after a read within `-insert.maxQueueDuration`.
    Slot(SlotTimeout),
}

impl From<BodyError> for StreamError {
    fn from(e: BodyError) -> StreamError {
        StreamError::Body(e)
    }
}

impl StreamError {
    /// The response, with the format's message prefix on client errors.
    pub fn into_fail(self, prefix: &str) -> Fail {
        match self {
            StreamError::Push(p) => p.into(),
            StreamError::Slot(e) => e.into(),
            StreamError::Read(e) => Fail::bad(format!("{prefix}{e}")),
            StreamError::Body(e) => Fail::bad(format!("{prefix}{e}")),
            StreamError::Line(e) => Fail::bad(format!("{prefix}{e}")),
        }
    }
}

/// Compressed bytes fed to the decoder between two threshold checks: small enough that a
/// highly compressed body cannot put more than about a MiB of rows into the batch at once.
fn decode_step(enc: ContentEncoding) -> usize {
    match enc {
        ContentEncoding::Identity | ContentEncoding::Snappy => OUT_PIECE,
        // Deflate expands at most ~1032x.
        ContentEncoding::Gzip | ContentEncoding::Deflate => 1024,
        // zstd can expand far more; keep each step tiny.
        ContentEncoding::Zstd => 64,
    }
}

/// One read of a streamed body: the insert slot is given back while the read waits on the
/// client and held again before the caller parses or pushes what came (formats/common.md §8).
async fn read_chunk(
    body: &mut Incoming,
    read_timeout: Duration,
    turn: &mut Turn,
) -> Result<Option<bytes::Bytes>, StreamError> {
    turn.release();
    let chunk = server::next_chunk(body, read_timeout)
        .await
        .map_err(StreamError::Read)?;
    turn.hold().await.map_err(StreamError::Slot)?;
    Ok(chunk)
}

/// Whole-body formats wait for the first body bytes without an insert slot, then hold one
/// through reading the rest, parsing and pushing (formats/common.md §8): a client that sent
/// only its request head holds no slot.
pub async fn read_whole_body(
    body: &mut Incoming,
    limit: usize,
    read_timeout: Duration,
    turn: &mut Turn,
) -> Result<Vec<u8>, StreamError> {
    let first = server::next_chunk(body, read_timeout)
        .await
        .map_err(StreamError::Read)?;
    turn.hold().await.map_err(StreamError::Slot)?;
    match first {
        None => Ok(Vec::new()),
        Some(first) => server::read_rest(body, first, limit, read_timeout)
            .await
            .map_err(StreamError::Read),
    }
}

/// Decode `body` by `enc` and feed it to `lines` as it arrives, pushing the batch part-way
/// whenever a storage node's share passes the per-request threshold. Rows parsed before an
/// error stay in the batch (vminsert keeps blocks parsed before a bad one). `turn` is given
/// back around every read and held while parsing and pushing; it is held on a normal return.
pub async fn stream_lines<H: LineHandler>(
    shared: &IngestShared,
    body: &mut Incoming,
    read_timeout: Duration,
    turn: &mut Turn,
    enc: ContentEncoding,
    lines: &mut Lines<H>,
    sink: &mut Ingest<'_>,
) -> Result<(), StreamError> {
    if enc == ContentEncoding::Snappy {
        // The block format needs the whole body; vminsert caps it the same way.
        let mut raw = Vec::new();
        while let Some(chunk) = read_chunk(body, read_timeout, turn).await? {
            if raw.len() + chunk.len() > MAX_SNAPPY_STREAM_BODY {
                return Err(StreamError::Body(BodyError::TooBig {
                    limit: MAX_SNAPPY_STREAM_BODY,
                }));
            }
            raw.extend_from_slice(&chunk);
        }
        if raw.is_empty() {
            return lines.finish(sink).map_err(StreamError::Line);
        }
        let corrupt = |_| {
            StreamError::Body(BodyError::Corrupt {
                encoding: ContentEncoding::Snappy,
                detail: "snappy: corrupt input".into(),
            })
        };
        let n = snap::raw::decompress_len(&raw).map_err(corrupt)?;
        if n > MAX_SNAPPY_STREAM_DECOMPRESSED {
            return Err(StreamError::Body(BodyError::TooBig {
                limit: MAX_SNAPPY_STREAM_DECOMPRESSED,
            }));
        }
        let data = snap::raw::Decoder::new()
            .decompress_vec(&raw)
            .map_err(corrupt)?;
        drop(raw);
        for piece in data.chunks(OUT_PIECE) {
            lines.feed(piece, sink).map_err(StreamError::Line)?;
            if shared.over_threshold(sink.batch()) {
                shared.push(sink.batch()).await.map_err(StreamError::Push)?;
            }
        }
        return lines.finish(sink).map_err(StreamError::Line);
    }
    let step = decode_step(enc);
    let mut dec = BodyDecoder::stream(enc);
    while let Some(chunk) = read_chunk(body, read_timeout, turn).await? {
        for part in chunk.chunks(step) {
            dec.feed::<StreamError>(part, &mut |piece: &[u8]| {
                lines.feed(piece, sink).map_err(StreamError::Line)
            })?;
            if shared.over_threshold(sink.batch()) {
                shared.push(sink.batch()).await.map_err(StreamError::Push)?;
            }
        }
    }
    dec.finish::<StreamError>(&mut |piece: &[u8]| {
        lines.feed(piece, sink).map_err(StreamError::Line)
    })?;
    lines.finish(sink).map_err(StreamError::Line)
}

/// Native import: the decoded body goes to the record decoder as it arrives, and the batch is
/// pushed part-way like for line formats. Records completed before an error stay in the batch.
async fn stream_native(
    shared: &IngestShared,
    body: &mut Incoming,
    read_timeout: Duration,
    turn: &mut Turn,
    enc: ContentEncoding,
    sink: &mut Ingest<'_>,
) -> Result<(), StreamError> {
    let mut parser = NativeParser::new();
    let step = decode_step(enc);
    let mut dec = BodyDecoder::stream(enc);
    let native_err = |e: shardgate_core::formats::native::NativeError| StreamError::Read(e.0);
    while let Some(chunk) = read_chunk(body, read_timeout, turn).await? {
        for part in chunk.chunks(step) {
            dec.feed::<StreamError>(part, &mut |piece: &[u8]| {
                parser.feed(piece, sink).map_err(native_err)
            })?;
            if shared.over_threshold(sink.batch()) {
                shared.push(sink.batch()).await.map_err(StreamError::Push)?;
            }
        }
    }
    dec.finish::<StreamError>(&mut |piece: &[u8]| parser.feed(piece, sink).map_err(native_err))?;
    parser.finish(sink).map_err(native_err)
}

impl crate::pipeline::LineHandler for ZabbixLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut Ingest<'_>) {
        ZabbixLines::line(self, n, l, sink)
    }
}

const INFLUX_DOCS: &str =
    "; see https://docs.victoriametrics.com/victoriametrics/integrations/influxdb/";

impl App {
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req, peer| {
            let me = me.clone();
            Box::pin(async move { me.handle(req, peer).await })
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let (parts, mut body) = req.into_parts();
        let resp = self.route(&parts, &mut body, peer).await;
        let drain_timeout = self.cfg.body_read_timeout.min(server::DRAIN_TIMEOUT);
        server::finish_body(&parts.headers, &mut body, resp, drain_timeout).await
    }

    async fn route(&self, req: &Parts, body: &mut Incoming, peer: SocketAddr) -> Resp {
        self.metrics.inc("vm_http_requests_all_total");
        // Go routes on the decoded path; path labels and tenants are read from it too.
        let full_path = route::path_decode(req.uri.path());
        let path = if self.cfg.path_prefix.is_empty() {
            full_path.clone()
        } else {
            let prefix = self.cfg.path_prefix.trim_end_matches('/');
            match full_path.strip_prefix(prefix) {
                Some("") => {
                    let mut r = server::empty(StatusCode::FOUND);
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("{prefix}/")) {
                        r.headers_mut().insert(hyper::header::LOCATION, v);
                    }
                    return r;
                }
                Some(rest) => rest.to_string(),
                None => {
                    return server::error_text(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "missing -http.pathPrefix={:?} in the requested path {full_path:?}",
                            self.cfg.path_prefix
                        ),
                    )
                }
            }
        };
        if req.method == hyper::Method::OPTIONS {
            let mut r = server::empty(StatusCode::NO_CONTENT);
            for h in [
                "access-control-allow-origin",
                "access-control-allow-methods",
                "access-control-allow-headers",
            ] {
                r.headers_mut()
                    .insert(h, hyper::header::HeaderValue::from_static("*"));
            }
            return r;
        }
        match path.as_str() {
            "/health" => {
                return if self.healthy.load(Ordering::SeqCst) {
                    server::text(StatusCode::OK, "OK")
                } else {
                    server::error_text(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down")
                }
            }
            "/metrics" => {
                self.metrics.inc("vm_http_requests_total{path=\"/metrics\"}");
                return server::with_type(StatusCode::OK, "text/plain; charset=utf-8", self.render_metrics());
            }
            "/flags" => return server::text(StatusCode::OK, self.flags_text.clone()),
            "/ping" => {
                let verbose = req.uri.query().is_some_and(|q| q.contains("verbose=true"));
                return if verbose { server::text(StatusCode::OK, "") } else { server::empty(StatusCode::NO_CONTENT) };
            }
            "/-/healthy" => return server::text(StatusCode::OK, "VictoriaMetrics is Healthy.\n"),
            "/-/ready" => return server::text(StatusCode::OK, "VictoriaMetrics is Ready.\n"),
            "/robots.txt" => return server::text(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
            "/" if req.method == hyper::Method::GET => {
                return server::with_type(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    "<h2>shardgate</h2>A drop-in replacement for vminsert. See <a href=\"metrics\">/metrics</a>, <a href=\"flags\">/flags</a>.\n",
                )
            }
            p if p.ends_with("/favicon.ico") => {
                self.metrics.inc("vm_http_requests_total{path=\"*/favicon.ico\"}");
                return server::empty(StatusCode::NO_CONTENT);
            }
            "/api/v1/export" | "/api/v1/export/raw" if self.export.is_some() => {
                let raw = path.ends_with("/raw");
                let body = (self.export.as_ref().expect("checked"))(raw);
                return server::with_type(StatusCode::OK, "application/jsonl", body);
            }
            _ => {}
        }
        let headers = &req.headers;
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (acc, proj) = (h("AccountID"), h("ProjectID"));
        let ip = match route::parse_insert_path(
            &path,
            self.cfg.multitenancy_via_headers,
            (acc.as_deref(), proj.as_deref()),
        ) {
            Ok(ip) => ip,
            Err(PathError::NotMine) => return self.unsupported(&path),
            Err(PathError::Message(m)) => return server::error_text(StatusCode::BAD_REQUEST, &m),
        };
        let Some(format) = format_for(&ip.suffix) else {
            return self.unsupported(&path);
        };
        let labels = format!(
            "{{path=\"{}\",protocol=\"{}\"}}",
            format.metric_path, format.protocol
        );
        self.metrics.inc(&format!("vm_http_requests_total{labels}"));
        let mut resp = match self.insert(req, body, &full_path, &ip, format).await {
            Ok(resp) => resp,
            Err(Fail(status, msg)) => {
                self.metrics
                    .inc(&format!("vm_http_request_errors_total{labels}"));
                crate::warn!("remoteAddr: {peer}; requestURI: {full_path}; {msg}");
                if format.kind == Kind::Zabbix {
                    // Zabbix answers every error with 400 and a JSON body.
                    let body = serde_json::json!({ "error": msg }).to_string();
                    server::with_type(StatusCode::BAD_REQUEST, "application/json", body)
                } else {
                    server::error_text(status, &msg)
                }
            }
        };
        if format.is_influx() {
            resp.headers_mut().insert(
                "x-influxdb-version",
                hyper::header::HeaderValue::from_static("1.8.0"),
            );
        }
        resp
    }

    /// Influx over HTTP streams its body with `Stream-Mode: 1` or `-influx.forceStreamMode`,
    /// and reads it whole otherwise.
    fn influx_stream_mode(&self, headers: &hyper::HeaderMap) -> bool {
        self.ingest.formats.influx_force_stream_mode
            || headers.get("stream-mode").map(|v| v.as_bytes()) == Some(b"1")
    }

    fn unsupported(&self, path: &str) -> Resp {
        self.metrics
            .inc("vm_http_request_errors_total{path=\"*\",reason=\"unsupported\"}");
        server::error_text(
            StatusCode::BAD_REQUEST,
            &format!("unsupported path requested: {path:?}"),
        )
    }

    fn render_metrics(&self) -> String {
        let mut out = String::new();
        self.metrics.render(&mut out);
        out.push_str(&format!(
            "vm_concurrent_insert_capacity {}\nvm_concurrent_insert_current {}\nvm_concurrent_insert_limit_reached_total {}\nvm_concurrent_insert_limit_timeout_total {}\n",
            self.limiter.capacity(),
            self.limiter.current(),
            self.limiter.limit_reached_total(),
            self.limiter.limit_timeout_total()
        ));
        (self.extra_metrics)(&mut out);
        crate::metrics::render_process(&mut out, self.start, &crate::version());
        out
    }

    /// The `/influx/query` answer: the configured database names.
    fn influx_query_body(&self) -> String {
        let names: Vec<String> = self
            .ingest
            .formats
            .influx_database_names
            .iter()
            .map(|n| format!("[{}]", serde_json::Value::String(n.clone())))
            .collect();
        format!(
            "{{\"results\":[{{\"statement_id\":0,\"series\":[{{\"name\":\"databases\",\"columns\":[\"name\"],\"values\":[{}]}}]}}]}}",
            names.join(",")
        )
    }

    async fn insert(
        &self,
        req: &Parts,
        body: &mut Incoming,
        full_path: &str,
        ip: &InsertPath,
        format: Format,
    ) -> Result<Resp, Fail> {
        match format.kind {
            Kind::InfluxQuery => {
                return Ok(server::with_type(
                    StatusCode::OK,
                    "application/json",
                    self.influx_query_body(),
                ))
            }
            Kind::NewRelicStub => {
                return Ok(server::with_type(
                    StatusCode::ACCEPTED,
                    "application/json",
                    newrelic::OK_BODY,
                ))
            }
            Kind::NewRelicInventory => {
                return Ok(server::with_type(
                    StatusCode::ACCEPTED,
                    "application/json",
                    newrelic::INVENTORY_DELTAS_BODY,
                ))
            }
            Kind::InfluxHealth => {
                return Ok(server::with_type(
                    StatusCode::OK,
                    "application/json",
                    "{\"name\":\"influxdb\", \"message\":\"ready for queries and writes\", \"status\":\"pass\", \"checks\":[]}",
                ))
            }
            Kind::DatadogStub(stub) => {
                return Ok(server::with_type(
                    StatusCode::from_u16(stub.status()).unwrap_or(StatusCode::OK),
                    "application/json",
                    stub.reply(),
                ))
            }
            _ => {}
        }
        let query = req.uri.query().unwrap_or("").to_string();
        if format.kind == Kind::RemoteWrite
            && route::query_arg(&query, "get_vm_proto_version").is_some_and(|v| !v.is_empty())
        {
            return Ok(server::text(StatusCode::OK, "1"));
        }
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let encoding_header = header("content-encoding");
        let otlp_kind = BodyKind::from_headers(
            header("content-type").as_deref(),
            header("x-amz-firehose-protocol-version").as_deref(),
        );
        let influx_prefix = "cannot process influx line protocol data: ";
        let with_influx_docs = |f: Fail| {
            if format.kind == Kind::InfluxWrite && f.0 == StatusCode::BAD_REQUEST {
                Fail(f.0, format!("{}{INFLUX_DOCS}", f.1))
            } else {
                f
            }
        };

        // Everything that can be refused without the body, before a slot is taken.
        let extra_args: Vec<String> = route::query_pairs(&query)
            .into_iter()
            .filter(|(k, _)| k == b"extra_label")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect();
        let extra = ingest::extra_labels(full_path, extra_args.iter().map(String::as_str))
            .map_err(|e| with_influx_docs(Fail::bad(e.to_string())))?;
        let enc = match format.kind {
            // Remote write picks its codec from the header itself.
            Kind::RemoteWrite => ContentEncoding::Identity,
            _ => ContentEncoding::parse(encoding_header.as_deref()).map_err(|e| {
                let prefix = match format.kind {
                    Kind::PromText => "cannot decode Prometheus text exposition data: ",
                    Kind::InfluxWrite => influx_prefix,
                    Kind::Datadog(_) => "cannot decode DataDog protocol data: ",
                    _ => "",
                };
                with_influx_docs(Fail::bad(format!("{prefix}{e}")))
            })?,
        };
        let csv_format = if format.kind == Kind::Csv {
            let arg = route::query_arg(&query, "format")
                .map(|v| String::from_utf8_lossy(&v).into_owned());
            Some(CsvFormat::parse(arg.as_deref()).map_err(|e| Fail::bad(e.to_string()))?)
        } else {
            None
        };
        let prom_ts = if format.kind == Kind::PromText {
            let arg = route::query_arg(&query, "timestamp").unwrap_or_default();
            prometheus_text::parse_timestamp_arg(&String::from_utf8_lossy(&arg))
                .map_err(|e| Fail::bad(e.to_string()))?
        } else {
            None
        };

        // Streaming formats take their slot up front and give it back around every read;
        // whole-body ones take it once the first body bytes are in.
        let mut turn = Turn::new(&self.limiter, self.cfg.max_queue_duration);
        let whole_body = match format.kind {
            Kind::RemoteWrite | Kind::OpenTelemetry | Kind::NewRelic | Kind::Datadog(_) => true,
            Kind::InfluxWrite => !self.influx_stream_mode(&req.headers),
            _ => false,
        };
        if !whole_body {
            turn.hold().await?;
        }

        let shared = &*self.ingest;
        let config = shared.config();
        let (mut batch, placement) = self.storage.new_batch();
        let mut scratch = IngestScratch::default();
        let request =
            RequestConfig::new(ip.tenant, format.ingest_protocol()).with_extra_labels(extra);
        let mut sink = Ingest::new(&config, request, &placement, &mut batch, &mut scratch);
        let timeout = self.cfg.body_read_timeout;
        let started = Instant::now();
        let parsed: Result<(), Fail> = match format.kind {
            Kind::RemoteWrite => {
                match read_whole_body(body, self.cfg.max_insert_request_size, timeout, &mut turn)
                    .await
                {
                    Err(e) => Err(e.into_fail("")),
                    Ok(raw) => remote_write::parse_compressed(
                        &raw,
                        encoding_header.as_deref(),
                        self.cfg.max_insert_request_size,
                        &mut sink,
                    )
                    .map_err(|e| {
                        let status = StatusCode::from_u16(e.http_status())
                            .unwrap_or(StatusCode::BAD_REQUEST);
                        Fail(
                            status,
                            format!(
                                "cannot read prometheus remote_write data from client in {} seconds: {e}",
                                started.elapsed().as_secs()
                            ),
                        )
                    }),
                }
            }
            Kind::PromText => {
                let default_ts = prometheus_text::default_timestamp(prom_ts, now_ms());
                let mut lines = Lines::new(
                    DEFAULT_MAX_LINE_LEN,
                    PromTextLines::new(default_ts, self.cfg.enable_metadata),
                );
                stream_lines(shared, body, timeout, &mut turn, enc, &mut lines, &mut sink)
                    .await
                    .map_err(|e| e.into_fail("cannot decode Prometheus text exposition data: "))
            }
            Kind::JsonImport => {
                let mut lines =
                    Lines::new(shared.formats.import_max_line_len, JsonLines::default());
                stream_lines(shared, body, timeout, &mut turn, enc, &mut lines, &mut sink)
                    .await
                    .map_err(|e| e.into_fail("cannot parse JSON lines: "))
            }
            Kind::Csv => {
                let mut csv = CsvLines::new(csv_format.expect("parsed above"), now_ms());
                csv.trim_ms = shared.formats.csv_trim_ms;
                let mut lines = Lines::new(DEFAULT_MAX_LINE_LEN, csv);
                stream_lines(shared, body, timeout, &mut turn, enc, &mut lines, &mut sink)
                    .await
                    .map_err(|e| e.into_fail("cannot parse CSV data: "))
            }
            Kind::InfluxWrite => {
                let db = route::query_arg(&query, "db").unwrap_or_default();
                let precision = Precision::from_query(
                    &route::query_arg(&query, "precision").unwrap_or_default(),
                );
                if self.influx_stream_mode(&req.headers) {
                    let mut lines = Lines::new(
                        shared.formats.influx_max_line_size,
                        InfluxLines {
                            parser: InfluxParser::new(),
                            formats: self.ingest.clone(),
                            db,
                            precision,
                        },
                    );
                    stream_lines(shared, body, timeout, &mut turn, enc, &mut lines, &mut sink)
                        .await
                        .map_err(|e| with_influx_docs(e.into_fail(influx_prefix)))
                } else {
                    let max = shared.formats.influx_max_request_size;
                    match read_whole_body(body, max, timeout, &mut turn).await {
                        Err(e) => Err(with_influx_docs(e.into_fail(influx_prefix))),
                        Ok(raw) => match decode_whole(&raw, enc, max) {
                            Err(e) => Err(with_influx_docs(Fail::bad(format!(
                                "{influx_prefix}cannot decompress data: {}",
                                e.whole_body_text(raw.len(), max)
                            )))),
                            Ok(data) => {
                                drop(raw);
                                let opts = shared.formats.influx(&db, precision);
                                InfluxParser::new()
                                    .parse_batch(&data, now_ms(), &opts, &mut sink)
                                    .map_err(|e| {
                                        with_influx_docs(Fail::bad(format!("{influx_prefix}{e}")))
                                    })
                            }
                        },
                    }
                }
            }
            Kind::OpenTelemetry => {
                let opts = &shared.formats.otlp;
                let max = shared.formats.otlp_max_request_size;
                match read_whole_body(body, max, timeout, &mut turn).await {
                    Err(e) => Err(e.into_fail("cannot decode OpenTelemetry protocol data: ")),
                    Ok(raw) => opentelemetry::parse_request(
                        &raw,
                        encoding_header.as_deref(),
                        otlp_kind,
                        max,
                        opts,
                        &mut sink,
                    )
                    .map_err(|e| Fail::bad(e.to_string())),
                }
            }
            Kind::Native => stream_native(shared, body, timeout, &mut turn, enc, &mut sink)
                .await
                .map_err(|e| e.into_fail("")),
            Kind::NewRelic => {
                let max = shared.formats.newrelic_max_request_size;
                match read_whole_body(body, max, timeout, &mut turn).await {
                    Err(e) => Err(e.into_fail("cannot decode NewRelic data: ")),
                    Ok(raw) => match decode_whole(&raw, enc, max) {
                        Err(e) => Err(Fail::bad(format!("cannot decode NewRelic data: {e}"))),
                        Ok(data) => {
                            drop(raw);
                            newrelic::parse_body(&data, now_ms(), &mut sink)
                                .map_err(|e| Fail::bad(e.to_string()))
                        }
                    },
                }
            }
            Kind::Zabbix => {
                let mut lines = Lines::new(
                    shared.formats.zabbix_max_line_len,
                    ZabbixLines::new(shared.formats.zabbix.clone()),
                );
                stream_lines(shared, body, timeout, &mut turn, enc, &mut lines, &mut sink)
                    .await
                    .map_err(|e| e.into_fail("cannot parse Zabbix connector data: "))
            }
            Kind::Datadog(endpoint) => {
                let opts = &shared.formats.datadog;
                match read_whole_body(body, opts.max_request_size, timeout, &mut turn).await {
                    Err(e) => Err(e.into_fail("cannot decode DataDog protocol data: ")),
                    Ok(raw) => datadog::parse_request(
                        endpoint,
                        &raw,
                        encoding_header.as_deref(),
                        header("content-type").as_deref(),
                        now_ms().div_euclid(1000),
                        opts,
                        &mut sink,
                    )
                    .map_err(|e| Fail::bad(e.to_string())),
                }
            }
            Kind::InfluxQuery
            | Kind::InfluxHealth
            | Kind::NewRelicStub
            | Kind::NewRelicInventory
            | Kind::DatadogStub(_) => Ok(()),
        };
        let stats = sink.finish();
        shared.account(format.rows_type, &stats);
        // Rows parsed before an error are kept, as vminsert keeps blocks parsed before it. A
        // read error leaves the slot given back; pushing needs it again.
        let pushed = if batch.is_empty() {
            Ok(())
        } else {
            match turn.hold().await {
                Ok(()) => shared.push(&mut batch).await.map_err(Fail::from),
                Err(e) => Err(Fail::from(e)),
            }
        };
        parsed?;
        pushed?;
        let status = match format.kind {
            Kind::PromText
                if ip
                    .suffix
                    .starts_with("prometheus/api/v1/import/prometheus/metrics/job/") =>
            {
                StatusCode::OK
            }
            Kind::OpenTelemetry => {
                if otlp_kind == BodyKind::Firehose {
                    if let Some(id) =
                        header("x-amz-firehose-request-id").filter(|id| !id.is_empty())
                    {
                        let reply = opentelemetry::firehose_reply(&id, now_ms());
                        return Ok(server::with_type(StatusCode::OK, "application/json", reply));
                    }
                }
                StatusCode::OK
            }
            Kind::NewRelic => {
                return Ok(server::with_type(
                    StatusCode::ACCEPTED,
                    "application/json",
                    newrelic::OK_BODY,
                ))
            }
            Kind::Zabbix => StatusCode::OK,
            Kind::Datadog(endpoint) => {
                let reply = endpoint.reply();
                return Ok(if reply.is_empty() {
                    server::empty(StatusCode::ACCEPTED)
                } else {
                    server::with_type(StatusCode::ACCEPTED, "application/json", reply)
                });
            }
            _ => StatusCode::NO_CONTENT,
        };
        Ok(server::empty(status))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_pick_formats() {
        for s in [
            "prometheus",
            "prometheus/",
            "prometheus/api/v1/write",
            "prometheus/api/v1/push",
        ] {
            assert_eq!(format_for(s).unwrap().kind, Kind::RemoteWrite, "{s}");
        }
        let f = format_for("prometheus/api/v1/import/prometheus/metrics/job/x").unwrap();
        assert_eq!((f.rows_type, f.kind), ("prometheus", Kind::PromText));
        assert_eq!(
            format_for("prometheus/api/v1/import").unwrap().kind,
            Kind::JsonImport
        );
        assert_eq!(
            format_for("prometheus/api/v1/import/csv").unwrap().kind,
            Kind::Csv
        );
        assert_eq!(
            format_for("influx/api/v2/write").unwrap().kind,
            Kind::InfluxWrite
        );
        assert_eq!(format_for("influx/query").unwrap().kind, Kind::InfluxQuery);
        assert!(format_for("influx/health").unwrap().is_influx());
        assert!(format_for("prometheus/api/v1/writes").is_none());
        assert!(format_for("prometheus/api/v1/import/csv/").is_none());
        assert!(format_for("nope").is_none());
    }

    #[test]
    fn compressed_input_is_fed_in_small_steps() {
        assert!(decode_step(ContentEncoding::Zstd) * 32 * 1024 <= 4 << 20);
        assert!(decode_step(ContentEncoding::Gzip) * 1032 <= 2 << 20);
    }
}
