//! Golden vectors for Prometheus text, remote write, JSON-lines and CSV import: every `send`
//! body goes through our body decoder and parser, a minimal stand-in for the ingest pipeline
//! (extra labels, empty values, `-sortLabels`) builds raw metric names, and the multiset of
//! rows must equal what the Go vminsert forwarded.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;
use shardgate_core::formats::body::{BodyDecoder, BodyError, ContentEncoding};
use shardgate_core::formats::csv::{CsvFormat, CsvParser};
use shardgate_core::formats::json_lines::JsonLinesParser;
use shardgate_core::formats::lines::LineTooLong;
use shardgate_core::formats::prometheus_text::{self, PromTextOptions, PromTextParser};
use shardgate_core::formats::{remote_write, Metadata, Sink};
use shardgate_core::model::{Label, OwnedLabel, Sample, Tenant};
use shardgate_core::wire::row::{decode_metric_name, encode_metric_name};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/");

/// Vectors of the formats this suite covers. Whole vectors that need the pipeline's flags
/// (limits, relabeling) are not listed here.
const FILES: &[&str] = &[
    "formats/prom-text-basic.json",
    "formats/prom-text-comments-blank-crlf.json",
    "formats/prom-text-duplicate-labels.json",
    "formats/prom-text-empty-label-values.json",
    "formats/prom-text-escapes.json",
    "formats/prom-text-extra-label.json",
    "formats/prom-text-gzip.json",
    "formats/prom-text-invalid-lines.json",
    "formats/prom-text-label-order.json",
    "formats/prom-text-sort-labels.json",
    "formats/prom-text-special-values.json",
    "formats/prom-text-timestamp-seconds-ms.json",
    "formats/prom-text-unicode-long.json",
    "formats/rw-basic.json",
    "formats/rw-empty-label-value-and-no-name.json",
    "formats/rw-garbage.json",
    "formats/rw-many-samples.json",
    "formats/rw-stale-nan.json",
    "formats/rw-zstd.json",
    "formats/json-import.json",
    "formats/json-import-invalid.json",
    "formats/csv-import.json",
    "formats/csv-import-time.json",
    "formats/csv-import-bad-format.json",
    "formats-extra/prom-text-encodings.json",
    "formats-extra/prom-text-timestamp-arg.json",
    "formats-extra/metadata-rw-and-text.json",
    "formats-extra/rw-native-histograms.json",
    "formats-extra/rw-codecs-and-paths.json",
    "formats-extra/rw-histogram-errors.json",
    "formats-extra/rw2-content-type.json",
    "formats-extra/truncated-compressed-bodies.json",
];

#[derive(Default)]
struct Collect {
    extra: Vec<OwnedLabel>,
    sort: bool,
    tenant: Tenant,
    rows: Vec<(String, i64, u64)>,
    invalid: usize,
    metadata: Vec<(u32, Vec<u8>, Vec<u8>)>,
}

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        // The pipeline's part: extra labels after the format's, empty values dropped, an empty
        // label list dropped, optional sort.
        let mut all: Vec<Label<'_>> = labels
            .iter()
            .copied()
            .filter(|l| !l.value.is_empty())
            .collect();
        all.extend(
            self.extra
                .iter()
                .map(|l| l.as_label())
                .filter(|l| !l.value.is_empty()),
        );
        if all.is_empty() {
            return;
        }
        if self.sort {
            all.sort_by(|a, b| a.name.cmp(b.name));
        }
        let mut name = Vec::new();
        encode_metric_name(&mut name, self.tenant, &all);
        let hex = hex::encode(&name);
        for s in samples {
            self.rows.push((hex.clone(), s.timestamp_ms, s.value_bits));
        }
    }
    fn invalid(&mut self, _: u64, _: &str) {
        self.invalid += 1;
    }
    fn metadata(&mut self, m: &Metadata<'_>) {
        self.metadata
            .push((m.metric_type, m.family.to_vec(), m.help.to_vec()));
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

#[derive(Debug)]
enum Failure {
    Body(BodyError),
    Line(LineTooLong),
    Other(String),
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Self {
        Failure::Body(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Body(e) => e.fmt(f),
            Failure::Line(e) => e.fmt(f),
            Failure::Other(e) => f.write_str(e),
        }
    }
}

enum Stream {
    Prom(PromTextParser),
    Json(JsonLinesParser),
    Csv(CsvParser),
}

impl Stream {
    fn feed(&mut self, chunk: &[u8], sink: &mut Collect) -> Result<(), LineTooLong> {
        match self {
            Stream::Prom(p) => p.feed(chunk, sink),
            Stream::Json(p) => p.feed(chunk, sink),
            Stream::Csv(p) => p.feed(chunk, sink),
        }
    }
    fn finish(&mut self, sink: &mut Collect) -> Result<(), LineTooLong> {
        match self {
            Stream::Prom(p) => p.finish(sink),
            Stream::Json(p) => p.finish(sink),
            Stream::Csv(p) => p.finish(sink),
        }
    }
}

/// Decode and parse one streamed body, feeding it in small chunks to exercise chunk borders.
fn run_stream(
    mut stream: Stream,
    enc: Option<&str>,
    body: &[u8],
    sink: &mut Collect,
) -> Result<(), Failure> {
    let enc = ContentEncoding::parse(enc)?;
    let mut dec = BodyDecoder::stream(enc);
    let mut push =
        |piece: &[u8]| -> Result<(), Failure> { stream.feed(piece, sink).map_err(Failure::Line) };
    for chunk in body.chunks(13) {
        dec.feed(chunk, &mut push)?;
    }
    dec.finish(&mut push)?;
    stream.finish(sink).map_err(Failure::Line)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Process one send; `Ok(false)` when it is outside what this suite covers.
fn send(send: &Value, flags: &[String], sink: &mut Collect) -> Result<bool, Failure> {
    let Some(path) = send["http"].as_str() else {
        return Ok(false);
    };
    let (path, q) = path.split_once('?').unwrap_or((path, ""));
    let args = query(q);
    let rest = path.strip_prefix("/insert/").unwrap();
    let (tenant, suffix) = rest.split_once('/').unwrap_or((rest, ""));
    let tenant = match tenant.split_once(':') {
        _ if tenant == "multitenant" => return Ok(false),
        Some((a, p)) => Tenant::new(a.parse().unwrap(), p.parse().unwrap()),
        None => Tenant::new(tenant.parse().unwrap(), 0),
    };
    if args.iter().any(|(k, _)| k == "get_vm_proto_version") {
        // Answered by the HTTP shell without reading the body.
        return Ok(false);
    }
    sink.tenant = tenant;
    sink.sort = flags.iter().any(|f| f == "-sortLabels");
    sink.extra = args
        .iter()
        .filter(|(k, _)| k == "extra_label")
        .map(|(_, v)| {
            let (n, v) = v.split_once('=').unwrap();
            OwnedLabel::new(n, v)
        })
        .collect();
    let mut body = match (&send["body"], &send["body_hex"]) {
        (Value::String(s), _) => s.as_bytes().to_vec(),
        (_, Value::String(h)) => hex::decode(h).unwrap(),
        _ => Vec::new(),
    };
    if send["gzip"].as_bool() == Some(true) {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&body).unwrap();
        body = e.finish().unwrap();
    }
    let enc = send["headers"]["Content-Encoding"].as_str();
    let arg = |name: &str| {
        args.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match suffix {
        "prometheus" | "prometheus/" | "prometheus/api/v1/write" | "prometheus/api/v1/push" => {
            remote_write::parse_compressed(
                &body,
                enc,
                remote_write::DEFAULT_MAX_INSERT_REQUEST_SIZE,
                sink,
            )
            .map_err(|e| Failure::Other(e.to_string()))?;
        }
        s if s.starts_with("prometheus/api/v1/import/prometheus") => {
            let ts = prometheus_text::parse_timestamp_arg(arg("timestamp").unwrap_or(""))
                .map_err(|e| Failure::Other(e.to_string()))?;
            let opts = PromTextOptions::new(prometheus_text::default_timestamp(ts, now_ms()));
            run_stream(Stream::Prom(PromTextParser::new(opts)), enc, &body, sink)?;
        }
        "prometheus/api/v1/import" => {
            run_stream(Stream::Json(JsonLinesParser::default()), enc, &body, sink)?
        }
        "prometheus/api/v1/import/csv" => {
            let format =
                CsvFormat::parse(arg("format")).map_err(|e| Failure::Other(e.to_string()))?;
            run_stream(
                Stream::Csv(CsvParser::new(format, now_ms())),
                enc,
                &body,
                sink,
            )?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

type Row = (String, Option<i64>, u64);

fn label_pairs(name_hex: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let raw = hex::decode(name_hex).unwrap();
    let (_, labels) = decode_metric_name(&raw).unwrap();
    labels
        .map(|l| l.unwrap())
        .map(|l| (l.name.to_vec(), l.value.to_vec()))
        .collect()
}

fn check(file: &str) -> usize {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{VECTORS}{file}")).unwrap())
            .unwrap();
    let flags: Vec<String> = v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(
        flags.iter().all(|f| f == "-sortLabels"),
        "{file}: flags {flags:?} need the pipeline"
    );
    let mut sink = Collect::default();
    let mut skipped_extra: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut covered = 0;
    for (i, s) in v["send"].as_array().unwrap().iter().enumerate() {
        let want = &v["responses"][i];
        let status = want["status"].as_u64().unwrap();
        let before = sink.rows.len();
        match send(s, &flags, &mut sink) {
            Ok(false) => {
                let q = s["http"]
                    .as_str()
                    .unwrap_or("")
                    .split_once('?')
                    .map_or("", |x| x.1);
                for (k, val) in query(q) {
                    if k == "extra_label" {
                        let (n, val) = val.split_once('=').unwrap();
                        skipped_extra.push((n.as_bytes().to_vec(), val.as_bytes().to_vec()));
                    }
                }
            }
            Ok(true) => {
                covered += 1;
                assert!(
                    status < 300,
                    "{file} send #{i}: expected {status}, we accepted it"
                );
            }
            Err(e) => {
                covered += 1;
                assert_eq!(
                    status, 400,
                    "{file} send #{i}: expected {status}, we failed with {e}"
                );
                let body = want["body"].as_str().unwrap();
                assert!(
                    body.ends_with(&format!("{e}\n")),
                    "{file} send #{i}: vminsert said {body:?}, we say {e:?}"
                );
                // Remote write writes nothing from a failed request; streams keep what came
                // before the error.
                if s["http"].as_str().unwrap().contains("/api/v1/write") {
                    assert_eq!(
                        sink.rows.len(),
                        before,
                        "{file} send #{i}: rows from a failed request"
                    );
                }
            }
        }
    }
    let now = now_ms();
    let mut got: Vec<Row> = sink
        .rows
        .iter()
        .map(|(n, ts, bits)| {
            (
                n.clone(),
                if (ts - now).abs() < 60_000 {
                    None
                } else {
                    Some(*ts)
                },
                *bits,
            )
        })
        .collect();
    let mut want: Vec<Row> = v["expected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let labels = label_pairs(r["name_hex"].as_str().unwrap());
            !skipped_extra.iter().any(|x| labels.contains(x))
        })
        .map(|r| {
            let ts = if r["ts_now"].as_bool() == Some(true) {
                None
            } else {
                Some(r["ts"].as_i64().unwrap())
            };
            let bits = u64::from_str_radix(r["value_bits"].as_str().unwrap(), 16).unwrap();
            (r["name_hex"].as_str().unwrap().to_string(), ts, bits)
        })
        .collect();
    got.sort();
    want.sort();
    if got != want {
        let count = |rows: &[Row]| {
            let mut m: BTreeMap<Row, i32> = BTreeMap::new();
            for r in rows {
                *m.entry(r.clone()).or_default() += 1;
            }
            m
        };
        let (g, w) = (count(&got), count(&want));
        let missing: Vec<_> = w.iter().filter(|(k, n)| g.get(*k) != Some(n)).collect();
        let extra: Vec<_> = g.iter().filter(|(k, n)| w.get(*k) != Some(n)).collect();
        panic!("{file}: rows differ\nmissing: {missing:#?}\nunexpected: {extra:#?}");
    }
    if file.contains("metadata") {
        let text: Vec<_> = sink
            .metadata
            .iter()
            .filter(|m| m.1.starts_with(b"pm_"))
            .cloned()
            .collect();
        assert_eq!(
            text,
            vec![
                (1, b"pm_total".to_vec(), b"Total things.".to_vec()),
                (2, b"pm_g".to_vec(), Vec::new())
            ]
        );
        assert!(
            sink.metadata.iter().any(|m| m.1.starts_with(b"md_")),
            "{:?}",
            sink.metadata
        );
    }
    covered
}

#[test]
fn golden_vectors() {
    let mut total = 0;
    for f in FILES {
        let n = check(f);
        assert!(n > 0, "{f}: no send was covered");
        total += n;
    }
    assert!(total >= FILES.len());
}
