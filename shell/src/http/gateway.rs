//! The gateway's HTTP routes: built-ins, `/insert/<tenant>/<suffix>` and the formats.
//!
//! A format is a row of [`FORMATS`]: how its suffix matches, the `type` label of
//! `vm_rows_inserted_total`, the `path`/`protocol` labels of `vm_http_requests_total`, which
//! bytes it hashes ([`ShardKey`]) and how its body is read. Adding a format is one row plus
//! one arm in [`App::run_format`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use shardgate_core::formats::body::{BodyDecoder, BodyError, ContentEncoding};
use shardgate_core::formats::lines::LineTooLong;
use shardgate_core::formats::prometheus_text::{self, PromTextOptions, PromTextParser};
use shardgate_core::formats::{remote_write, Sink};
use shardgate_core::model::{Label, Sample};
use shardgate_core::route::{Batch, Placement, ShardKey};
use shardgate_core::Tenant;

use super::limiter::Limiter;
use super::route::{self, InsertPath, PathError, TenantSel};
use super::server::{self, Handler, Resp};
use crate::metrics::Registry;
use crate::storage::{PushFailure, Storage};

/// Settings the routes need, taken from flags once at startup.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub path_prefix: String,
    pub multitenancy_via_headers: bool,
    pub max_insert_request_size: usize,
    pub max_queue_duration: Duration,
    pub enable_metadata: bool,
    pub max_labels_per_timeseries: usize,
    pub max_label_name_len: usize,
    pub max_label_value_len: usize,
    /// A client that sends nothing for this long loses its request.
    pub body_read_timeout: Duration,
}

/// How a format reads its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyKind {
    /// Whole body in memory, capped by `-maxInsertRequestSize`.
    Whole,
    /// Decoded and parsed chunk by chunk; batches are pushed as they fill.
    Stream,
}

#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// `vm_rows_inserted_total{type=...}`.
    pub rows_type: &'static str,
    /// `vm_http_requests_total{path=...}`.
    pub metric_path: &'static str,
    /// `vm_http_requests_total{protocol=...}`.
    pub protocol: &'static str,
    pub shard_key: ShardKey,
    pub body: BodyKind,
}

const REMOTE_WRITE: Format = Format {
    rows_type: "promremotewrite",
    metric_path: "/insert/{}/prometheus/",
    protocol: "promremotewrite",
    shard_key: ShardKey::AsGiven,
    body: BodyKind::Whole,
};

const PROM_TEXT: Format = Format {
    rows_type: "prometheus",
    metric_path: "/insert/{}/prometheus/api/v1/import/prometheus",
    protocol: "prometheusimport",
    shard_key: ShardKey::MetricName,
    body: BodyKind::Stream,
};

/// Pick the format for an insert suffix.
pub fn format_for(suffix: &str) -> Option<Format> {
    match suffix {
        "prometheus" | "prometheus/" | "prometheus/api/v1/write" | "prometheus/api/v1/push" => {
            Some(REMOTE_WRITE)
        }
        s if s.starts_with("prometheus/api/v1/import/prometheus") => Some(PROM_TEXT),
        _ => None,
    }
}

/// Encoded rows waiting in a request are pushed once they reach this size (the lower bound
/// of vminsert's per-request buffer, sharding spec §4).
const PUSH_THRESHOLD: usize = 1024 * 1024;

pub struct App {
    pub cfg: HttpConfig,
    pub metrics: Arc<Registry>,
    pub limiter: Arc<Limiter>,
    pub storage: Arc<Storage>,
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
struct Fail(StatusCode, String);

impl Fail {
    fn bad(msg: impl Into<String>) -> Fail {
        Fail(StatusCode::BAD_REQUEST, msg.into())
    }
}

impl From<PushFailure> for Fail {
    fn from(p: PushFailure) -> Fail {
        Fail(StatusCode::SERVICE_UNAVAILABLE, p.to_string())
    }
}

impl App {
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req, peer| {
            let me = me.clone();
            Box::pin(async move { me.handle(req, peer).await })
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        self.metrics.inc("vm_http_requests_all_total");
        let full_path = req.uri().path().to_string();
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
        if req.method() == hyper::Method::OPTIONS {
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
                let verbose = req.uri().query().is_some_and(|q| q.contains("verbose=true"));
                return if verbose { server::text(StatusCode::OK, "") } else { server::empty(StatusCode::NO_CONTENT) };
            }
            "/-/healthy" => return server::text(StatusCode::OK, "VictoriaMetrics is Healthy.\n"),
            "/-/ready" => return server::text(StatusCode::OK, "VictoriaMetrics is Ready.\n"),
            "/robots.txt" => return server::text(StatusCode::OK, "User-agent: *\nDisallow: /\n"),
            "/" if req.method() == hyper::Method::GET => {
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
        let headers = req.headers();
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
        match self.insert(req, &ip, format).await {
            Ok(resp) => resp,
            Err(Fail(status, msg)) => {
                self.metrics
                    .inc(&format!("vm_http_request_errors_total{labels}"));
                crate::warn!("remoteAddr: {peer}; requestURI: {full_path}; {msg}");
                server::error_text(status, &msg)
            }
        }
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
            "vm_concurrent_insert_capacity {}\nvm_concurrent_insert_current {}\n",
            self.limiter.capacity(),
            self.limiter.current()
        ));
        (self.extra_metrics)(&mut out);
        crate::metrics::render_process(&mut out, self.start, &crate::version());
        out
    }

    async fn insert(
        &self,
        req: Request<Incoming>,
        ip: &InsertPath,
        format: Format,
    ) -> Result<Resp, Fail> {
        let query = req.uri().query().unwrap_or("").to_string();
        if format.rows_type == "promremotewrite"
            && route::query_arg(&query, "get_vm_proto_version").is_some_and(|v| !v.is_empty())
        {
            return Ok(server::text(StatusCode::OK, "1"));
        }
        let extra = route::extra_labels(&query).map_err(Fail::bad)?;
        let deadline = Instant::now() + self.cfg.max_queue_duration;
        let (_slot, waited) = match self.limiter.acquire(deadline).await {
            Ok(x) => x,
            Err(()) => {
                self.metrics.inc("vm_concurrent_insert_limit_reached_total");
                self.metrics.inc("vm_concurrent_insert_limit_timeout_total");
                return Err(Fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "cannot handle more than {} concurrent inserts during {:?}; possible solutions: increase -insert.maxQueueDuration, increase -maxConcurrentInserts, add more vminsert instances",
                        self.limiter.capacity(),
                        self.cfg.max_queue_duration
                    ),
                ));
            }
        };
        if waited {
            self.metrics.inc("vm_concurrent_insert_limit_reached_total");
        }
        let encoding_header = req
            .headers()
            .get(hyper::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = req.into_body();
        let (mut batch, placement) = self.storage.new_batch();
        let mut sink = BatchSink::new(&self.cfg, &placement, ip.tenant, &extra, format.shard_key);
        let status = match format.body {
            BodyKind::Whole => {
                let raw = server::read_whole(
                    &mut body,
                    self.cfg.max_insert_request_size,
                    self.cfg.body_read_timeout,
                )
                .await
                .map_err(Fail::bad)?;
                remote_write::parse_compressed(
                    &raw,
                    encoding_header.as_deref(),
                    self.cfg.max_insert_request_size,
                    &mut sink.with(&mut batch),
                )
                .map_err(|e| Fail::bad(e.to_string()))?;
                self.storage
                    .push(&mut batch, deadline_after(self.cfg.max_queue_duration))
                    .await?;
                StatusCode::NO_CONTENT
            }
            BodyKind::Stream => {
                let enc = ContentEncoding::parse(encoding_header.as_deref())
                    .map_err(|e| Fail::bad(e.to_string()))?;
                let ts_arg = route::query_arg(&query, "timestamp").unwrap_or_default();
                let ts_arg =
                    prometheus_text::parse_timestamp_arg(&String::from_utf8_lossy(&ts_arg))
                        .map_err(|e| Fail::bad(e.to_string()))?;
                let now_ms = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis() as i64;
                let mut opts =
                    PromTextOptions::new(prometheus_text::default_timestamp(ts_arg, now_ms));
                opts.metadata = self.cfg.enable_metadata;
                let mut parser = PromTextParser::new(opts);
                let mut dec = BodyDecoder::stream(enc);
                while let Some(chunk) = server::next_chunk(&mut body, self.cfg.body_read_timeout)
                    .await
                    .map_err(Fail::bad)?
                {
                    {
                        let mut s = sink.with(&mut batch);
                        dec.feed::<StreamError>(&chunk, &mut |piece: &[u8]| {
                            parser.feed(piece, &mut s).map_err(StreamError::Line)
                        })
                        .map_err(|e| Fail::bad(e.to_string()))?;
                    }
                    if batch.bytes() >= PUSH_THRESHOLD {
                        self.storage
                            .push(&mut batch, deadline_after(self.cfg.max_queue_duration))
                            .await?;
                    }
                }
                {
                    let mut s = sink.with(&mut batch);
                    dec.finish::<StreamError>(&mut |piece: &[u8]| {
                        parser.feed(piece, &mut s).map_err(StreamError::Line)
                    })
                    .map_err(|e| Fail::bad(e.to_string()))?;
                    parser
                        .finish(&mut s)
                        .map_err(|e| Fail::bad(StreamError::Line(e).to_string()))?;
                }
                if !batch.is_empty() {
                    self.storage
                        .push(&mut batch, deadline_after(self.cfg.max_queue_duration))
                        .await?;
                }
                if ip.suffix.contains("/metrics/job") {
                    StatusCode::OK
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        };
        self.account(format, ip.tenant, &sink);
        Ok(server::empty(status))
    }

    fn account(&self, format: Format, tenant: TenantSel, sink: &BatchSink<'_>) {
        let t = format.rows_type;
        self.metrics.add(
            &format!("vm_rows_inserted_total{{type=\"{t}\"}}"),
            sink.rows_read as f64,
        );
        if let TenantSel::One(tn) = tenant {
            self.metrics.add(
                &format!(
                    "vm_tenant_inserted_rows_total{{type=\"{t}\",accountID=\"{}\",projectID=\"{}\"}}",
                    tn.account_id, tn.project_id
                ),
                sink.rows_read as f64,
            );
        }
        if sink.invalid > 0 {
            self.metrics.add(
                &format!("vm_rows_invalid_total{{type=\"{t}\"}}"),
                sink.invalid as f64,
            );
        }
        for (reason, n) in [
            ("too_many_labels", sink.ignored[0]),
            ("too_long_label_name", sink.ignored[1]),
            ("too_long_label_value", sink.ignored[2]),
        ] {
            if n > 0 {
                self.metrics.add(
                    &format!("vm_rows_ignored_total{{reason=\"{reason}\"}}"),
                    n as f64,
                );
            }
        }
    }
}

fn deadline_after(d: Duration) -> Instant {
    Instant::now() + d
}

enum StreamError {
    Body(BodyError),
    Line(LineTooLong),
}

impl From<BodyError> for StreamError {
    fn from(e: BodyError) -> StreamError {
        StreamError::Body(e)
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Body(e) => write!(f, "{e}"),
            StreamError::Line(e) => write!(f, "{e}"),
        }
    }
}

/// The label pipeline between a parser and a batch: extra labels, empty values dropped, limits,
/// multitenant tenant labels (spec formats/common.md §3). Relabeling and `-sortLabels` are not
/// here; the core ingest pipeline (core/src/ingest.rs) replaces this once it lands.
struct BatchSink<'a> {
    cfg: &'a HttpConfig,
    placement: &'a Placement,
    tenant: TenantSel,
    extra: &'a [(Vec<u8>, Vec<u8>)],
    shard_key: ShardKey,
    rows_read: u64,
    invalid: u64,
    ignored: [u64; 3],
}

struct BoundSink<'s, 'a> {
    sink: &'s mut BatchSink<'a>,
    batch: &'s mut Batch,
}

impl<'a> BatchSink<'a> {
    fn new(
        cfg: &'a HttpConfig,
        placement: &'a Arc<Placement>,
        tenant: TenantSel,
        extra: &'a [(Vec<u8>, Vec<u8>)],
        shard_key: ShardKey,
    ) -> BatchSink<'a> {
        BatchSink {
            cfg,
            placement,
            tenant,
            extra,
            shard_key,
            rows_read: 0,
            invalid: 0,
            ignored: [0; 3],
        }
    }

    fn with<'s>(&'s mut self, batch: &'s mut Batch) -> BoundSink<'s, 'a> {
        BoundSink { sink: self, batch }
    }
}

impl Sink for BoundSink<'_, '_> {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        let s = &mut *self.sink;
        s.rows_read += samples.len() as u64;
        let mut ls: Vec<Label<'_>> = labels
            .iter()
            .filter(|l| !l.value.is_empty())
            .copied()
            .collect();
        for (n, v) in s.extra {
            if !v.is_empty() {
                ls.push(Label::new(n, v));
            }
        }
        if ls.is_empty() {
            return;
        }
        let cfg = s.cfg;
        if cfg.max_labels_per_timeseries > 0 && ls.len() > cfg.max_labels_per_timeseries {
            s.ignored[0] += 1;
            return;
        }
        if ls.iter().any(|l| l.name.len() > cfg.max_label_name_len) {
            s.ignored[1] += 1;
            return;
        }
        if ls.iter().any(|l| l.value.len() > cfg.max_label_value_len) {
            s.ignored[2] += 1;
            return;
        }
        let tenant = match s.tenant {
            TenantSel::One(t) => t,
            TenantSel::Multitenant => {
                let mut t = Tenant::default();
                for l in &ls {
                    let num = || {
                        std::str::from_utf8(l.value)
                            .ok()
                            .and_then(|v| v.parse::<u32>().ok())
                            .unwrap_or(0)
                    };
                    match l.name {
                        b"vm_account_id" | b"VictoriaMetrics_AccountID" => t.account_id = num(),
                        b"vm_project_id" | b"VictoriaMetrics_ProjectID" => t.project_id = num(),
                        _ => {}
                    }
                }
                ls.retain(|l| l.name != b"vm_account_id" && l.name != b"vm_project_id");
                t
            }
        };
        self.batch
            .add_series(s.placement, tenant, &ls, s.shard_key, samples);
    }

    fn invalid(&mut self, _line: u64, _reason: &str) {
        self.sink.invalid += 1;
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
            assert_eq!(format_for(s).unwrap().rows_type, "promremotewrite", "{s}");
        }
        let f = format_for("prometheus/api/v1/import/prometheus/metrics/job/x").unwrap();
        assert_eq!(
            (f.rows_type, f.shard_key),
            ("prometheus", ShardKey::MetricName)
        );
        assert!(format_for("prometheus/api/v1/writes").is_none());
        assert!(format_for("nope").is_none());
    }
}
