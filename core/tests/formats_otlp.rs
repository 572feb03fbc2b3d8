//! OpenTelemetry: the golden vectors replayed through the OTLP parser and the ingest pipeline
//! (rows per storage node must be exactly what the real vminsert sent), plus properties of the
//! protobuf decoder (arbitrary bytes never panic, encoded gauges decode to the same rows).

mod support;

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use shardgate_core::formats::opentelemetry::{self, BodyKind, OtlpOptions};
use shardgate_core::formats::{Metadata, Sink};
use shardgate_core::ingest::{
    extra_labels, parse_tenant_mode, Ingest, IngestConfig, IngestScratch, Protocol, RequestConfig,
};
use shardgate_core::limits::Limits;
use shardgate_core::model::{Label, OwnedLabel, Sample, STALE_NAN_BITS};
use shardgate_core::relabel::RelabelConfig;
use shardgate_core::route::Batch;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/formats-extra/"
);

const FILES: &[&str] = &[
    "otlp-exponential-histogram",
    "otlp-firehose",
    "otlp-gauge-attributes",
    "otlp-histogram",
    "otlp-invalid",
    "otlp-no-timestamp",
    "otlp-prometheus-naming",
    "otlp-promote-flags",
    "otlp-push-path-gzip-zstd",
    "otlp-sum",
    "otlp-summary",
];

/// (node, raw metric name hex, timestamp, value bits hex)
type Row = support::PlacedRow;

fn options(v: &Value) -> OtlpOptions {
    let (mut naming, mut convert, mut underscore) = (false, false, true);
    let (mut all, mut scope) = (true, true);
    let (mut promote, mut ignore) = (Vec::new(), Vec::new());
    for f in v["flags"].as_array().unwrap() {
        let f = f.as_str().unwrap().trim_start_matches('-');
        let (name, value) = f.split_once('=').unwrap_or((f, "true"));
        let list = || value.split(',').map(String::from).collect::<Vec<_>>();
        match name {
            "opentelemetry.usePrometheusNaming" => naming = value == "true",
            "opentelemetry.convertMetricNamesToPrometheus" => convert = value == "true",
            "opentelemetry.labelNameUnderscoreSanitization" => underscore = value == "true",
            "opentelemetry.promoteAllResourceAttributes" => all = value == "true",
            "opentelemetry.promoteScopeMetadata" => scope = value == "true",
            "opentelemetry.promoteResourceAttributes" => promote = list(),
            "opentelemetry.ignoreResourceAttributes" => ignore = list(),
            other => panic!("flag {other} is not handled by this harness"),
        }
    }
    OtlpOptions::from_flags(naming, convert, underscore, all, &promote, &ignore, scope).unwrap()
}

fn run(name: &str) -> (Vec<Row>, Vec<Row>) {
    let path = format!("{VECTORS}{name}.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let opts = options(&v);
    let cluster = support::vector_cluster(&v);
    let placement = &cluster.placement;
    let config = IngestConfig {
        limits: Limits::default(),
        sort_labels: false,
        relabel: Arc::new(RelabelConfig::empty()),
        enable_metadata: true,
    };
    let mut batch = Batch::new(placement.len());
    let mut scratch = IngestScratch::default();
    for (i, send) in v["send"].as_array().unwrap().iter().enumerate() {
        let status = v["responses"][i]["status"].as_u64().unwrap();
        let url = send["http"].as_str().unwrap();
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let rest = path.strip_prefix("/insert/").unwrap();
        let (tenant, suffix) = rest.split_once('/').unwrap();
        assert!(
            matches!(
                suffix,
                "opentelemetry/v1/metrics" | "opentelemetry/api/v1/push"
            ),
            "{name}: {suffix}"
        );
        let tenant = parse_tenant_mode(tenant).unwrap();
        let args: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("extra_label="))
            .map(support::percent_decode)
            .collect();
        let extra = extra_labels(path, args.iter().map(String::as_str)).unwrap();
        let header = |h: &str| send["headers"].get(h).and_then(Value::as_str);
        let body = match send.get("body_hex") {
            Some(h) => hex::decode(h.as_str().unwrap()).unwrap(),
            None => send["body"].as_str().unwrap().as_bytes().to_vec(),
        };
        let kind = BodyKind::from_headers(
            header("Content-Type"),
            header("X-Amz-Firehose-Protocol-Version"),
        );
        let req = RequestConfig::new(tenant, Protocol::OpenTelemetry).with_extra_labels(extra);
        let rows_before = batch.rows();
        let mut ingest = Ingest::new(&config, req, placement, &mut batch, &mut scratch);
        let result = opentelemetry::parse_request(
            &body,
            header("Content-Encoding"),
            kind,
            opentelemetry::DEFAULT_MAX_REQUEST_SIZE,
            &opts,
            &mut ingest,
        );
        drop(ingest);
        match result {
            Ok(()) => assert!(
                status < 300,
                "{name}: input {i} accepted, vminsert said {status}"
            ),
            Err(e) => {
                assert_eq!(u64::from(e.http_status()), status, "{name}: input {i}: {e}");
                assert_eq!(batch.rows(), rows_before, "{name}: input {i} wrote rows");
                let want = v["responses"][i]["body"].as_str().unwrap();
                assert_eq!(
                    e.to_string(),
                    want.trim_end(),
                    "{name}: input {i}: error text"
                );
            }
        }
    }
    (
        cluster.placed_rows(&batch),
        support::expected_placed_rows(&v),
    )
}

#[test]
fn vectors_replay_through_parser_and_pipeline() {
    for name in FILES {
        let (ours, expected) = run(name);
        assert!(!expected.is_empty(), "{name}: vector without rows");
        if ours != expected {
            let missing: Vec<_> = expected.iter().filter(|r| !ours.contains(r)).collect();
            let extra: Vec<_> = ours.iter().filter(|r| !expected.contains(r)).collect();
            panic!("{name}: rows differ\nmissing: {missing:#?}\nunexpected: {extra:#?}");
        }
    }
}

#[test]
fn every_otlp_vector_is_replayed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(VECTORS)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_prefix("otlp-")?;
            Some(n.strip_suffix(".json")?.to_string())
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, FILES);
}

// ---------------------------------------------------------------------------------------------
// A tiny protobuf encoder for the properties below.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field_bytes(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    varint(out, num << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn field_fixed64(out: &mut Vec<u8>, num: u64, v: u64) {
    varint(out, num << 3 | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn field_varint(out: &mut Vec<u8>, num: u64, v: u64) {
    varint(out, num << 3);
    varint(out, v);
}

fn key_value(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut any = Vec::new();
    field_bytes(&mut any, 1, value);
    let mut kv = Vec::new();
    field_bytes(&mut kv, 1, key);
    field_bytes(&mut kv, 2, &any);
    kv
}

#[derive(Clone, Debug)]
struct Gauge {
    name: Vec<u8>,
    attrs: Vec<(Vec<u8>, Vec<u8>)>,
    ns: u64,
    value: f64,
    stale: bool,
}

fn encode(resource: &[(Vec<u8>, Vec<u8>)], gauges: &[Gauge]) -> Vec<u8> {
    let mut res = Vec::new();
    for (k, v) in resource {
        field_bytes(&mut res, 1, &key_value(k, v));
    }
    let mut scope_metrics = Vec::new();
    for g in gauges {
        let mut point = Vec::new();
        for (k, v) in &g.attrs {
            field_bytes(&mut point, 7, &key_value(k, v));
        }
        field_fixed64(&mut point, 3, g.ns);
        field_fixed64(&mut point, 4, g.value.to_bits());
        if g.stale {
            field_varint(&mut point, 8, 1);
        }
        let mut gauge = Vec::new();
        field_bytes(&mut gauge, 1, &point);
        let mut metric = Vec::new();
        // Data before the name: the name is looked up, not streamed.
        field_bytes(&mut metric, 5, &gauge);
        field_bytes(&mut metric, 1, &g.name);
        field_bytes(&mut scope_metrics, 2, &metric);
    }
    let mut rm = Vec::new();
    field_bytes(&mut rm, 2, &scope_metrics);
    field_bytes(&mut rm, 1, &res);
    let mut req = Vec::new();
    field_bytes(&mut req, 1, &rm);
    req
}

type CollectedRow = (Vec<OwnedLabel>, Sample);

#[derive(Default)]
struct Collect {
    rows: Vec<CollectedRow>,
    metadata: Vec<(u32, Vec<u8>)>,
}

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        let ls: Vec<OwnedLabel> = labels
            .iter()
            .map(|l| OwnedLabel::new(l.name, l.value))
            .collect();
        for s in samples {
            self.rows.push((ls.clone(), *s));
        }
    }
    fn metadata(&mut self, m: &Metadata<'_>) {
        self.metadata.push((m.metric_type, m.family.to_vec()));
    }
}

fn token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 1..12)
}

fn gauge() -> impl Strategy<Value = Gauge> {
    (
        token(),
        proptest::collection::vec((token(), token()), 0..4),
        any::<u64>(),
        any::<f64>(),
        any::<bool>(),
    )
        .prop_map(|(name, attrs, ns, value, stale)| Gauge {
            name,
            attrs,
            ns,
            value,
            stale,
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut c = Collect::default();
        if opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).is_err() {
            prop_assert!(c.rows.is_empty());
        }
        let naming = OtlpOptions { use_prometheus_naming: true, ..OtlpOptions::default() };
        let _ = opentelemetry::parse(&body, &naming, &mut Collect::default());
    }

    #[test]
    fn mutated_requests_never_panic(
        gauges in proptest::collection::vec(gauge(), 1..4),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = encode(&[], &gauges);
        let i = at.index(body.len());
        body[i] = byte;
        let mut c = Collect::default();
        if opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).is_err() {
            prop_assert!(c.rows.is_empty());
        }
    }

    #[test]
    fn encoded_gauges_decode_to_the_same_rows(
        resource in proptest::collection::vec((token(), token()), 0..3),
        gauges in proptest::collection::vec(gauge(), 0..6),
    ) {
        let body = encode(&resource, &gauges);
        let mut c = Collect::default();
        opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).unwrap();
        let expected: Vec<CollectedRow> = gauges
            .iter()
            .map(|g| {
                let mut labels = vec![OwnedLabel::new("__name__", g.name.clone())];
                labels.extend(resource.iter().map(|(k, v)| OwnedLabel::new(k.clone(), v.clone())));
                labels.extend(g.attrs.iter().map(|(k, v)| OwnedLabel::new(k.clone(), v.clone())));
                let bits = if g.stale { STALE_NAN_BITS } else { g.value.to_bits() };
                (labels, Sample::from_bits((g.ns / 1_000_000) as i64, bits))
            })
            .collect();
        prop_assert_eq!(c.rows, expected);
        // One metadata entry per distinct name, as a gauge.
        let mut names: Vec<Vec<u8>> = gauges.iter().map(|g| g.name.clone()).collect();
        names.dedup();
        let mut distinct = Vec::new();
        for n in names {
            if !distinct.contains(&n) {
                distinct.push(n);
            }
        }
        let want: Vec<(u32, Vec<u8>)> = distinct.into_iter().map(|n| (2, n)).collect();
        prop_assert_eq!(c.metadata, want);
    }
}

#[test]
fn missing_name_fails_the_whole_request() {
    let good = Gauge {
        name: b"good".to_vec(),
        attrs: vec![],
        ns: 1_000_000,
        value: 1.0,
        stale: false,
    };
    let mut body = encode(&[], std::slice::from_ref(&good));
    let mut c = Collect::default();
    opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).unwrap();
    assert_eq!(c.rows.len(), 1);
    // A second ResourceMetrics whose only metric has no name.
    let mut metric = Vec::new();
    field_bytes(&mut metric, 2, b"help");
    let mut sm = Vec::new();
    field_bytes(&mut sm, 2, &metric);
    let mut rm = Vec::new();
    field_bytes(&mut rm, 2, &sm);
    field_bytes(&mut body, 1, &rm);
    let mut c = Collect::default();
    let e = opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).unwrap_err();
    assert!(e.to_string().contains("missing metric name"), "{e}");
    assert!(c.rows.is_empty() && c.metadata.is_empty());
}

#[test]
fn wrong_wire_type_on_a_known_field_fails() {
    // ExportMetricsServiceRequest field 1 as a varint.
    let mut c = Collect::default();
    assert!(opentelemetry::parse(&[0x08, 0x01], &OtlpOptions::default(), &mut c).is_err());
    // Unknown fields of every wire type are skipped.
    let mut body = Vec::new();
    field_varint(&mut body, 7, 3);
    field_fixed64(&mut body, 8, 3);
    field_bytes(&mut body, 9, b"xyz");
    body.extend_from_slice(&[0x55, 1, 2, 3, 4]); // field 10, fixed32
    opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).unwrap();
    // Group wire types are errors.
    assert!(opentelemetry::parse(&[0x0b], &OtlpOptions::default(), &mut c).is_err());
}

#[test]
fn deeply_nested_values_are_refused_not_overflowed() {
    // An array inside an array ... 10000 deep.
    let mut any = Vec::new();
    field_bytes(&mut any, 1, b"x");
    for _ in 0..10_000 {
        let mut arr = Vec::new();
        field_bytes(&mut arr, 1, &any);
        any.clear();
        field_bytes(&mut any, 5, &arr);
    }
    let mut kv = Vec::new();
    field_bytes(&mut kv, 1, b"k");
    field_bytes(&mut kv, 2, &any);
    let mut res = Vec::new();
    field_bytes(&mut res, 1, &kv);
    let mut rm = Vec::new();
    field_bytes(&mut rm, 1, &res);
    let mut body = Vec::new();
    field_bytes(&mut body, 1, &rm);
    let mut c = Collect::default();
    assert!(opentelemetry::parse(&body, &OtlpOptions::default(), &mut c).is_err());
}
