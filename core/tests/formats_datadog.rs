//! DataDog: the golden vectors replayed through the DataDog parsers and the ingest pipeline
//! (rows per storage node, statuses and error texts must be what the real vminsert produced),
//! the spec's edge cases against a collecting sink, and properties: arbitrary bytes never panic
//! and never half-write a request, and generated v1/v2/protobuf payloads decode to the series
//! they were built from.

mod support;

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::{json, Value};
use shardgate_core::formats::datadog::{self, DatadogOptions, Endpoint, Route, Stub};
use shardgate_core::formats::Sink;
use shardgate_core::ingest::{
    extra_labels, parse_tenant_mode, Ingest, IngestConfig, IngestScratch, Protocol, RequestConfig,
};
use shardgate_core::limits::Limits;
use shardgate_core::model::{Label, Sample};
use shardgate_core::relabel::RelabelConfig;
use shardgate_core::route::Batch;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/formats-extra/"
);

const FILES: &[&str] = &[
    "dd-json-invalid",
    "dd-multitenant",
    "dd-sketches",
    "dd-v1-default-timestamp",
    "dd-v1-names-and-quirks",
    "dd-v1-no-sanitize",
    "dd-v1-tags-host-device",
    "dd-v1-trailing-slash-tenant-extra-label",
    "dd-v2-json",
    "dd-v2-protobuf-content-type",
    "dd-v2-protobuf",
];

/// How much of a response body the recording kept.
const BODY_KEPT: usize = 300;

/// (node, raw metric name hex, timestamp, value bits hex)
type Row = support::PlacedRow;

fn options(v: &Value) -> DatadogOptions {
    let mut opts = DatadogOptions::default();
    for f in v["flags"].as_array().unwrap() {
        let f = f.as_str().unwrap().trim_start_matches('-');
        let (name, value) = f.split_once('=').unwrap_or((f, "true"));
        match name {
            "datadog.sanitizeMetricName" => opts.sanitize_metric_name = value == "true",
            other => panic!("flag {other} is not handled by this harness"),
        }
    }
    opts
}

fn run(name: &str) -> (Vec<Row>, Vec<Row>) {
    let path = format!("{VECTORS}{name}.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let opts = options(&v);
    let cluster = support::vector_cluster(&v);
    let placement = &cluster.placement;
    // The recording's clock, where a row took it; any value elsewhere.
    let now_s = v["expected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ts_now"].as_bool() == Some(true))
        .map_or(1_800_000_000, |r| r["ts"].as_i64().unwrap() / 1000);
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
        let want_body = v["responses"][i]["body"].as_str().unwrap();
        let url = send["http"].as_str().unwrap();
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let rest = path.strip_prefix("/insert/").unwrap();
        let (tenant, suffix) = rest.split_once('/').unwrap();
        let Some(Route::Ingest(endpoint)) = datadog::route(suffix) else {
            panic!("{name}: {suffix} is not an ingestion endpoint");
        };
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
        let req = RequestConfig::new(tenant, Protocol::Standard).with_extra_labels(extra);
        let rows_before = batch.rows();
        let mut ingest = Ingest::new(&config, req, placement, &mut batch, &mut scratch);
        let result = datadog::parse_request(
            endpoint,
            &body,
            header("Content-Encoding"),
            header("Content-Type"),
            now_s,
            &opts,
            &mut ingest,
        );
        drop(ingest);
        match result {
            Ok(()) => {
                assert_eq!(status, 202, "{name}: input {i} accepted");
                assert_eq!(endpoint.reply(), want_body, "{name}: input {i}: reply");
            }
            Err(e) => {
                assert_eq!(u64::from(e.http_status()), status, "{name}: input {i}: {e}");
                assert_eq!(batch.rows(), rows_before, "{name}: input {i} wrote rows");
                // The server adds a newline to error texts.
                let ours = format!("{e}\n");
                if want_body.chars().count() >= BODY_KEPT {
                    assert!(
                        ours.starts_with(want_body),
                        "{name}: input {i}: error text\n ours {ours:?}\n want {want_body:?}"
                    );
                } else {
                    assert_eq!(ours, want_body, "{name}: input {i}: error text");
                }
            }
        }
    }
    (
        cluster.placed_rows(&batch),
        support::expected_placed_rows(&v),
    )
}

#[test]
fn golden_vectors_replay() {
    let mut failed = Vec::new();
    for name in FILES {
        let (ours, expected) = run(name);
        if ours != expected {
            eprintln!("== {name}\n ours: {ours:#?}\n want: {expected:#?}");
            failed.push(*name);
        }
    }
    assert!(failed.is_empty(), "rows differ for {failed:?}");
}

// ---------------------------------------------------------------------------------------------
// A collecting sink and the spec's edge cases.

#[derive(Debug, Clone, PartialEq)]
struct Series {
    labels: Vec<(String, String)>,
    samples: Vec<(i64, u64)>,
}

#[derive(Default)]
struct Collect(Vec<Series>);

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0.push(Series {
            labels: labels
                .iter()
                .map(|l| {
                    (
                        String::from_utf8_lossy(l.name).into_owned(),
                        String::from_utf8_lossy(l.value).into_owned(),
                    )
                })
                .collect(),
            samples: samples
                .iter()
                .map(|s| (s.timestamp_ms, s.value_bits))
                .collect(),
        });
    }
}

const T: i64 = 1_700_000_000_000;
const NOW_S: i64 = 1_750_000_000;

fn parse(
    endpoint: Endpoint,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Vec<Series>, String> {
    let mut c = Collect::default();
    datadog::parse_request(
        endpoint,
        body,
        None,
        content_type,
        NOW_S,
        &DatadogOptions::default(),
        &mut c,
    )
    .map_err(|e| e.to_string())?;
    Ok(c.0)
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn samples(pairs: &[(i64, f64)]) -> Vec<(i64, u64)> {
    pairs.iter().map(|&(t, v)| (t, v.to_bits())).collect()
}

#[test]
fn v1_labels_in_order_and_tag_rules() {
    let body = br#"{"series":[{"metric":"system.load.1","host":"h1","device":"sda","tags":["env:prod","host:other","role","a:b:c","y:",":x"],"points":[[1700000000,1.5],[1700000001.5,2]]}]}"#;
    let got = parse(Endpoint::SeriesV1, body, Some("application/json")).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].labels,
        labels(&[
            ("", "system.load.1"),
            ("host", "h1"),
            ("device", "sda"),
            ("env", "prod"),
            ("exported_host", "other"),
            ("role", "no_label_value"),
            ("a", "b:c"),
            ("y", ""),
            ("", "x"),
        ])
    );
    assert_eq!(got[0].samples, samples(&[(T, 1.5), (T + 1500, 2.0)]));
}

#[test]
fn v1_default_timestamp_keys_and_extra_elements() {
    let body = br#"{"series":[{"Metric":"My Metric!!name..x_.y","POINTS":[[0,1],[1700000000,2,99],[-3],[]]}]}"#;
    let got = parse(Endpoint::SeriesV1, body, None).unwrap();
    assert_eq!(got[0].labels, labels(&[("", "My_Metric_name..x.y")]));
    assert_eq!(
        got[0].samples,
        samples(&[
            (NOW_S * 1000, 1.0),
            (T, 2.0),
            (NOW_S * 1000, 0.0),
            (NOW_S * 1000, 0.0)
        ])
    );
}

#[test]
fn v1_duplicate_key_decodes_over_the_first() {
    // Go decodes the second "series" into the slice the first one filled: fields the second
    // copy lacks survive.
    let body = br#"{"series":[{"metric":"a","host":"h","points":[[1700000000,1]]}],"series":[{"metric":"b"}]}"#;
    let got = parse(Endpoint::SeriesV1, body, None).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].labels, labels(&[("", "b"), ("host", "h")]));
    assert_eq!(got[0].samples, samples(&[(T, 1.0)]));
    // `null` changes nothing; an empty array empties.
    let body = br#"{"series":[{"metric":"a","points":[[1700000000,1]]}],"series":[{"metric":null,"points":[]}]}"#;
    let got = parse(Endpoint::SeriesV1, body, None).unwrap();
    assert_eq!(got[0].labels, labels(&[("", "a")]));
    assert!(got[0].samples.is_empty());
}

#[test]
fn v1_errors_like_go() {
    let cases: &[(&[u8], &str)] = &[
        (br#"{"series":[{"points":[[1,"4"]]}]}"#, "json: cannot unmarshal string into Request.series.0.points.0.1 of type float64"),
        (br#"{"series":{}}"#, "json: cannot unmarshal object into Go struct field Request.series of type []datadogv1.Series"),
        (br#"{"series":[{"tags":[1]}]}"#, "json: cannot unmarshal number into Request.series.0.tags.0 of type string"),
        (br#"{"series":[{"points":[[1e400,1]]}]}"#, "json: cannot unmarshal number 1e400 into Request.series.0.points.0.0 of type float64"),
        (br#"[]"#, "json: cannot unmarshal array into Go value of type datadogv1.Request"),
        (b"", "unexpected end of JSON input"),
        (br#"{"series":[01]}"#, "invalid character '1' after array element"),
        (br#"{"series" 1}"#, "invalid character '1' after object key"),
        (br#"{"series":[],}"#, "invalid character '}' looking for beginning of object key string"),
        (br#"{"series":tru}"#, "invalid character '}' in literal true (expecting 'e')"),
        (br#"{"a":"\q"}"#, "invalid character 'q' in string escape code"),
        (b"{\"a\":\"\x01\"}", "invalid character '\\x01' in string literal"),
        (br#"{} x"#, "invalid character 'x' after top-level value"),
        (br#"{"a":-}"#, "invalid character '}' in numeric literal"),
        // A syntax error anywhere wins over an earlier type error, as Go checks syntax first.
        (br#"{"series":[{"metric":1}],"x":[}"#, "invalid character '}' looking for beginning of value"),
    ];
    for (body, want) in cases {
        let e = parse(Endpoint::SeriesV1, body, None).unwrap_err();
        assert!(
            e.ends_with(want),
            "{:?}: {e}\n want …{want}",
            String::from_utf8_lossy(body)
        );
        assert!(e.starts_with(&format!(
            "cannot decode DataDog protocol data: cannot unmarshal DataDog POST request with size {} bytes: cannot unmarshal \"",
            body.len()
        )));
    }
    // A body of nothing but `null` decodes to nothing.
    assert!(parse(Endpoint::SeriesV1, b" null ", None)
        .unwrap()
        .is_empty());
}

#[test]
fn v2_json_resources_and_defaults() {
    let body = br#"{"series":[{"metric":"sys.cpu","points":[{"timestamp":1700000000,"value":1.5},{"timestamp":0,"value":2}],"resources":[{"name":"h1","type":"host"},{"name":"x","type":""}],"tags":["env:prod","host:z","solo"],"source_type_name":"src"}]}"#;
    let got = parse(Endpoint::SeriesV2, body, Some("application/json")).unwrap();
    assert_eq!(
        got[0].labels,
        labels(&[
            ("", "sys.cpu"),
            ("host", "h1"),
            ("", "x"),
            ("env", "prod"),
            ("exported_host", "z"),
            ("solo", "no_label_value"),
            ("source_type_name", "src"),
        ])
    );
    assert_eq!(got[0].samples, samples(&[(T, 1.5), (NOW_S * 1000, 2.0)]));
    let e = parse(
        Endpoint::SeriesV2,
        br#"{"series":[{"points":[{"timestamp":1.5}]}]}"#,
        Some("text/plain"),
    )
    .unwrap_err();
    assert!(e.contains("DataDog text/plain request"), "{e}");
    assert!(e.ends_with("json: cannot unmarshal number 1.5 into Go struct field Request.series.0.points.0.timestamp of type int64"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Protobuf encoding helpers.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    varint(out, num << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn double_field(out: &mut Vec<u8>, num: u64, v: f64) {
    varint(out, num << 3 | 1);
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn varint_field(out: &mut Vec<u8>, num: u64, v: u64) {
    varint(out, num << 3);
    varint(out, v);
}

struct PbSeries<'a> {
    metric: &'a str,
    resources: &'a [(&'a str, &'a str)],
    tags: &'a [&'a str],
    points: &'a [(f64, i64)],
    source_type_name: &'a str,
}

fn v2_protobuf(series: &[PbSeries<'_>]) -> Vec<u8> {
    let mut payload = Vec::new();
    for s in series {
        let mut m = Vec::new();
        for (kind, name) in s.resources {
            let mut r = Vec::new();
            bytes_field(&mut r, 1, kind.as_bytes());
            bytes_field(&mut r, 2, name.as_bytes());
            bytes_field(&mut m, 1, &r);
        }
        bytes_field(&mut m, 2, s.metric.as_bytes());
        for t in s.tags {
            bytes_field(&mut m, 3, t.as_bytes());
        }
        for &(value, ts) in s.points {
            let mut p = Vec::new();
            double_field(&mut p, 1, value);
            varint_field(&mut p, 2, ts as u64);
            bytes_field(&mut m, 4, &p);
        }
        varint_field(&mut m, 5, 3); // type: ignored
        bytes_field(&mut m, 7, s.source_type_name.as_bytes());
        bytes_field(&mut payload, 1, &m);
    }
    payload
}

#[test]
fn v2_protobuf_only_for_the_exact_content_type() {
    let body = v2_protobuf(&[PbSeries {
        metric: "pb.metric",
        resources: &[("host", "h9")],
        tags: &["k:v"],
        points: &[(3.5, 1_700_000_000), (4.5, 0)],
        source_type_name: "stn",
    }]);
    let got = parse(Endpoint::SeriesV2, &body, Some("application/x-protobuf")).unwrap();
    assert_eq!(
        got[0].labels,
        labels(&[
            ("", "pb.metric"),
            ("host", "h9"),
            ("k", "v"),
            ("source_type_name", "stn")
        ])
    );
    // No default timestamp on the protobuf path.
    assert_eq!(got[0].samples, samples(&[(T, 3.5), (0, 4.5)]));
    let e = parse(
        Endpoint::SeriesV2,
        &body,
        Some("application/x-protobuf; charset=utf-8"),
    )
    .unwrap_err();
    assert!(e.contains("looking for beginning of value"), "{e}");
    // A known field with the wrong wire type fails the request.
    let mut bad = Vec::new();
    varint_field(&mut bad, 2, 7);
    let mut payload = Vec::new();
    bytes_field(&mut payload, 1, &bad);
    assert!(parse(Endpoint::SeriesV2, &payload, Some("application/x-protobuf")).is_err());
}

/// (ts_s, cnt, min, max, sum, k, n)
type Dogsketch = (i64, i64, f64, f64, f64, Vec<i32>, Vec<u32>);

fn sketch_payload(metric: &str, host: &str, tags: &[&str], sketches: &[Dogsketch]) -> Vec<u8> {
    let mut s = Vec::new();
    bytes_field(&mut s, 1, metric.as_bytes());
    bytes_field(&mut s, 2, host.as_bytes());
    for t in tags {
        bytes_field(&mut s, 4, t.as_bytes());
    }
    for (ts, cnt, min, max, sum, k, n) in sketches {
        let mut d = Vec::new();
        varint_field(&mut d, 1, *ts as u64);
        varint_field(&mut d, 2, *cnt as u64);
        double_field(&mut d, 3, *min);
        double_field(&mut d, 4, *max);
        double_field(&mut d, 6, *sum);
        let mut packed = Vec::new();
        for &k in k {
            varint(&mut packed, u64::from(((k << 1) ^ (k >> 31)) as u32));
        }
        bytes_field(&mut d, 7, &packed);
        let mut packed = Vec::new();
        for &n in n {
            varint(&mut packed, u64::from(n));
        }
        bytes_field(&mut d, 8, &packed);
        bytes_field(&mut s, 7, &d);
    }
    let mut payload = Vec::new();
    bytes_field(&mut payload, 1, &s);
    payload
}

#[test]
fn sketches_series_and_quantiles() {
    let body = sketch_payload(
        "sk.m",
        "hostA",
        &["env:prod", "host:tagged"],
        &[(
            1_700_000_000,
            4,
            1.0,
            8.0,
            15.0,
            vec![1338, 1400],
            vec![2, 2],
        )],
    );
    let got = parse(Endpoint::Sketches, &body, None).unwrap();
    let names: Vec<(&str, &str)> = got
        .iter()
        .map(|s| {
            let q = s
                .labels
                .iter()
                .find(|l| l.0 == "quantile")
                .map_or("", |l| l.1.as_str());
            (s.labels[1].1.as_str(), q)
        })
        .collect();
    assert_eq!(
        names,
        [
            ("sk.m", "0.5"),
            ("sk.m", "0.75"),
            ("sk.m", "0.9"),
            ("sk.m", "0.95"),
            ("sk.m", "0.99"),
            ("sk.m.sum", ""),
            ("sk.m.count", ""),
            ("sk.m.min", ""),
            ("sk.m.max", ""),
        ]
    );
    assert_eq!(
        got[0].labels,
        labels(&[
            ("host", "hostA"),
            ("", "sk.m"),
            ("quantile", "0.5"),
            ("env", "prod"),
            ("host", "tagged")
        ])
    );
    let value = |i: usize| f64::from_bits(got[i].samples[0].1);
    assert!((value(0) - 2.614_988_148_096).abs() < 1e-9, "{}", value(0));
    assert_eq!(value(0), value(1));
    assert!((value(2) - 2.635_417_743_003).abs() < 1e-9, "{}", value(2));
    assert_eq!(
        [value(5), value(6), value(7), value(8)],
        [15.0, 4.0, 1.0, 8.0]
    );
    assert!(got.iter().all(|s| s.samples[0].0 == T));
    // cnt 0, or k and n of different lengths: quantile 0.
    for (cnt, k, n) in [(0, vec![1400], vec![1]), (3, vec![1400, 1401], vec![3])] {
        let body = sketch_payload("m", "", &[], &[(1, cnt, 1.0, 2.0, 3.0, k, n)]);
        let got = parse(Endpoint::Sketches, &body, None).unwrap();
        assert_eq!(got[0].labels[0], ("".to_string(), "m".to_string()));
        assert!(got[..5].iter().all(|s| s.samples == [(1000, 0)]));
    }
}

#[test]
fn routes_and_stubs() {
    assert_eq!(
        datadog::route("datadog/api/v1/series/"),
        Some(Route::Ingest(Endpoint::SeriesV1))
    );
    assert_eq!(
        datadog::route("datadog/intake/"),
        Some(Route::Stub(Stub::Intake))
    );
    assert_eq!(datadog::route("datadog/api/v1/series//"), None);
    assert_eq!(datadog::route("datadog/api/v3/series"), None);
    assert_eq!(datadog::route("api/v1/series"), None);
    assert_eq!(
        (Stub::Validate.status(), Stub::Validate.reply()),
        (200, "{\"valid\":true}")
    );
    assert_eq!(
        (Stub::CheckRun.status(), Stub::CheckRun.reply()),
        (202, "{\"status\":\"ok\"}")
    );
    assert_eq!(
        (Stub::Metadata.status(), Stub::Metadata.reply()),
        (200, "{}")
    );
}

#[test]
fn bodies_are_decompressed_and_capped() {
    use std::io::Write;
    let plain = br#"{"series":[{"metric":"z","points":[[1700000000,1]]}]}"#;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(plain).unwrap();
    let zlib = z.finish().unwrap();
    let opts = DatadogOptions::default();
    let mut c = Collect::default();
    datadog::parse_request(
        Endpoint::SeriesV1,
        &zlib,
        Some("deflate"),
        None,
        NOW_S,
        &opts,
        &mut c,
    )
    .unwrap();
    assert_eq!(c.0.len(), 1);
    let small = DatadogOptions {
        max_request_size: plain.len() - 1,
        ..DatadogOptions::default()
    };
    let mut c = Collect::default();
    assert!(datadog::parse_request(
        Endpoint::SeriesV1,
        &zlib,
        Some("deflate"),
        None,
        NOW_S,
        &small,
        &mut c
    )
    .is_err());
    assert!(
        datadog::parse_request(Endpoint::SeriesV1, plain, None, None, NOW_S, &small, &mut c)
            .is_err()
    );
    let e = datadog::parse_request(
        Endpoint::SeriesV1,
        plain,
        Some("br"),
        None,
        NOW_S,
        &opts,
        &mut c,
    )
    .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert!(c.0.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Properties.

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..400), which in 0u8..4) {
        let (endpoint, ct) = match which {
            0 => (Endpoint::SeriesV1, None),
            1 => (Endpoint::SeriesV2, Some("application/json")),
            2 => (Endpoint::SeriesV2, Some("application/x-protobuf")),
            _ => (Endpoint::Sketches, None),
        };
        let mut c = Count::default();
        let r = datadog::parse_request(endpoint, &body, None, ct, NOW_S, &DatadogOptions::default(), &mut c);
        if r.is_err() {
            prop_assert_eq!(c.0, 0);
        }
    }

    #[test]
    fn json_like_bytes_never_panic(body in "[\\[\\]{}\":,0-9a-z.eE+\\- \\\\nul]{0,120}") {
        let mut c = Count::default();
        let r = datadog::parse_request(Endpoint::SeriesV1, body.as_bytes(), None, None, NOW_S, &DatadogOptions::default(), &mut c);
        if r.is_err() {
            prop_assert_eq!(c.0, 0);
        }
        let mut c = Count::default();
        let r = datadog::parse_request(Endpoint::SeriesV2, body.as_bytes(), None, None, NOW_S, &DatadogOptions::default(), &mut c);
        if r.is_err() {
            prop_assert_eq!(c.0, 0);
        }
    }

    #[test]
    fn generated_v1_and_v2_decode_to_their_series(
        series in proptest::collection::vec(
            (
                "[a-z][a-z0-9_.]{0,12}",
                "[a-z0-9]{0,4}",
                proptest::collection::vec(("[a-z]{1,5}", "[a-z0-9:é\"\\\\]{1,6}"), 0..4),
                proptest::collection::vec((1i64..4_000_000_000, -1e6f64..1e6), 1..4),
            ),
            0..5,
        )
    ) {
        let mut v1 = Vec::new();
        let mut v2 = Vec::new();
        let mut want = Vec::new();
        for (metric, host, tags, points) in &series {
            let tag_strings: Vec<String> = tags.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            v1.push(json!({"metric": metric, "host": host, "tags": tag_strings,
                "points": points.iter().map(|(t, v)| json!([t, v])).collect::<Vec<_>>()}));
            v2.push(json!({"metric": metric, "resources": [{"type": "host", "name": host}],
                "tags": tag_strings,
                "points": points.iter().map(|(t, v)| json!({"timestamp": t, "value": v})).collect::<Vec<_>>()}));
            let mut l = vec![(String::new(), metric.clone())];
            if !host.is_empty() {
                l.push(("host".to_string(), host.clone()));
            }
            for (k, v) in tags {
                // Split at the first ':', which is the one after the name.
                let k = if k == "host" { "exported_host".to_string() } else { k.clone() };
                l.push((k, v.clone()));
            }
            want.push((l, points.iter().map(|&(t, v)| (t * 1000, v.to_bits())).collect::<Vec<_>>()));
        }
        let sanitize_off = DatadogOptions { sanitize_metric_name: false, ..DatadogOptions::default() };
        for (endpoint, body) in [
            (Endpoint::SeriesV1, json!({"series": v1}).to_string()),
            (Endpoint::SeriesV2, json!({"series": v2}).to_string()),
        ] {
            let mut c = Collect::default();
            datadog::parse_request(endpoint, body.as_bytes(), None, None, NOW_S, &sanitize_off, &mut c).unwrap();
            let got: Vec<_> = c.0.into_iter().map(|s| {
                let l: Vec<_> = s.labels.into_iter().filter(|(_, v)| !v.is_empty()).collect();
                (l, s.samples)
            }).collect();
            prop_assert_eq!(&got, &want);
        }
    }
}
