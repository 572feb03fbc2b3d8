//! OpenTSDB HTTP `/api/put`, served on `-opentsdbHTTPListenAddr` and on the HTTP half of
//! `-opentsdbListenAddr` (spec: formats/opentsdb-http.md). Only the strict
//! `/insert/<tenant>/api/put` (or `/insert/<tenant>/opentsdb/api/put`) form is accepted; the
//! tenant headers are not consulted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, StatusCode};
use shardgate_core::formats::body::{decode_whole, ContentEncoding};
use shardgate_core::formats::opentsdb_http;
use shardgate_core::ingest::{self, Ingest, IngestScratch, Protocol, RequestConfig};

use super::gateway::{read_whole_body, Fail};
use super::limiter::{Limiter, Turn};
use super::route::{self, PathError};
use super::server::{self, Handler, Resp};
use crate::pipeline::{now_ms, IngestShared};

const ROWS_TYPE: &str = "opentsdbhttp";
const METRIC_LABELS: &str = "{path=\"/insert/{}/api/put\",protocol=\"opentsdbhttp\"}";

pub struct OpenTsdbHttp {
    pub ingest: Arc<IngestShared>,
    pub limiter: Arc<Limiter>,
    /// A client that sends nothing for this long loses its request.
    pub body_read_timeout: Duration,
}

impl OpenTsdbHttp {
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req, peer| {
            let me = me.clone();
            Box::pin(async move { me.handle(req, peer).await })
        })
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>, peer: SocketAddr) -> Resp {
        let metrics = &self.ingest.metrics;
        let (parts, mut body) = req.into_parts();
        let path = route::path_decode(parts.uri.path());
        metrics.inc(&format!("vm_http_requests_total{METRIC_LABELS}"));
        let resp = match self.put(&parts, &mut body, &path).await {
            Ok(()) => server::empty(StatusCode::NO_CONTENT),
            Err(Fail(status, msg)) => {
                metrics.inc(&format!("vm_http_request_errors_total{METRIC_LABELS}"));
                crate::warn!("remoteAddr: {peer}; requestURI: {path}; {msg}");
                server::error_text(status, &msg)
            }
        };
        let drain_timeout = self.body_read_timeout.min(server::DRAIN_TIMEOUT);
        server::finish_body(&parts.headers, &mut body, resp, drain_timeout).await
    }

    async fn put(&self, req: &Parts, body: &mut Incoming, path: &str) -> Result<(), Fail> {
        let ip = match route::parse_insert_path(path, false, (None, None)) {
            Ok(ip) => ip,
            Err(PathError::NotMine) => {
                return Err(Fail::bad(format!("unsupported path requested: {path:?}")))
            }
            Err(PathError::Message(m)) => return Err(Fail::bad(m)),
        };
        if ip.suffix != "api/put" && ip.suffix != "opentsdb/api/put" {
            return Err(Fail::bad(format!("unsupported path requested: {path:?}")));
        }
        let query = req.uri.query().unwrap_or("").to_string();
        let extra_args: Vec<String> = route::query_pairs(&query)
            .into_iter()
            .filter(|(k, _)| k == b"extra_label")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned())
            .collect();
        let extra = ingest::extra_labels(path, extra_args.iter().map(String::as_str))
            .map_err(|e| Fail::bad(e.to_string()))?;
        let enc = ContentEncoding::parse(
            req.headers
                .get(hyper::header::CONTENT_ENCODING)
                .and_then(|v| v.to_str().ok()),
        )
        .map_err(|e| Fail::bad(e.to_string()))?;
        let shared = &*self.ingest;
        let max = shared.formats.opentsdb_http_max_request_size;
        let mut turn = Turn::new(&self.limiter, shared.max_queue_duration);
        let raw = read_whole_body(body, max, self.body_read_timeout, &mut turn)
            .await
            .map_err(|e| e.into_fail(""))?;
        let data = decode_whole(&raw, enc, max).map_err(|e| Fail::bad(e.to_string()))?;
        drop(raw);
        let config = shared.config();
        let (mut batch, placement) = shared.storage.new_batch();
        let mut scratch = IngestScratch::default();
        let request = RequestConfig::new(ip.tenant, Protocol::Standard).with_extra_labels(extra);
        let mut sink = Ingest::new(&config, request, &placement, &mut batch, &mut scratch);
        let parsed =
            opentsdb_http::parse_body(&data, now_ms(), &shared.formats.opentsdb_http, &mut sink)
                .map_err(|e| Fail::bad(e.to_string()));
        let stats = sink.finish();
        shared.account(ROWS_TYPE, &stats);
        parsed?;
        shared.push(&mut batch).await?;
        Ok(())
    }
}
