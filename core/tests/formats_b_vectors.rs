//! The golden vectors for Influx, Graphite and OpenTSDB (telnet and HTTP), replayed through our
//! parsers: the rows (raw metric name, timestamp, value bits) must be exactly the multiset the
//! real vminsert sent to its storage nodes, and every refused request must be refused by us.
//!
//! Routing, decompression and the tenant are done here in a few lines, because they belong to
//! other modules; what is under test is the parsers and the label order they produce.

use std::io::Read;

use serde_json::Value;
use shardgate_core::formats::graphite::{GraphiteOptions, GraphiteParser};
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser, Precision};
use shardgate_core::formats::opentsdb::{OpenTsdbOptions, OpenTsdbParser};
use shardgate_core::formats::opentsdb_http::{self, OpenTsdbHttpOptions};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample, Tenant};
use shardgate_core::wire::row::encode_metric_name;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/");

const FILES: &[&str] = &[
    "formats/graphite-fractional-ts.json",
    "formats/graphite-tags.json",
    "formats/graphite-tcp.json",
    "formats/graphite-udp.json",
    "formats/influx-basic.json",
    "formats/influx-escapes.json",
    "formats/influx-field-types.json",
    "formats/influx-invalid-line.json",
    "formats/influx-measurement-sep.json",
    "formats/influx-no-db.json",
    "formats/influx-precision.json",
    "formats/influx-single-field-value.json",
    "formats/influx-skip-measurement.json",
    "formats/influx-skip-single-field.json",
    "formats/influx-tcp.json",
    "formats/influx-udp.json",
    "formats/influx-v2-bucket.json",
    "formats/opentsdb-http-put-single.json",
    "formats/opentsdb-http-put.json",
    "formats/opentsdb-telnet.json",
    "formats-extra/influx-encodings.json",
    "formats-extra/influx-query-health.json",
    "formats-extra/influx-stream-mode.json",
];

/// (raw metric name hex, timestamp ms, value bits)
type Row = (String, i64, u64);

struct Collect {
    tenant: Tenant,
    rows: Vec<Row>,
    invalid: usize,
}

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        let mut name = Vec::new();
        encode_metric_name(&mut name, self.tenant, labels);
        for s in samples {
            self.rows
                .push((hex::encode(&name), s.timestamp_ms, s.value_bits));
        }
    }
    fn invalid(&mut self, _: u64, _: &str) {
        self.invalid += 1;
    }
}

#[derive(Default)]
struct Flags {
    separator: Option<Vec<u8>>,
    skip_single_field: bool,
    skip_measurement: bool,
}

fn flags(v: &Value) -> Flags {
    let mut f = Flags::default();
    for flag in v["flags"].as_array().unwrap() {
        let flag = flag.as_str().unwrap();
        if let Some(sep) = flag.strip_prefix("-influxMeasurementFieldSeparator=") {
            f.separator = Some(sep.as_bytes().to_vec());
        } else if flag == "-influxSkipSingleField" {
            f.skip_single_field = true;
        } else if flag == "-influxSkipMeasurement" {
            f.skip_measurement = true;
        } else {
            panic!("flag {flag} is not understood by this test");
        }
    }
    f
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `/insert/{tenant}/{suffix}?{query}` → (tenant, suffix, query pairs)
fn route(url: &str) -> (Tenant, String, Vec<(String, Vec<u8>)>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    assert_eq!(parts.next(), Some("insert"));
    let tenant = parts.next().unwrap();
    let (a, p) = tenant.split_once(':').unwrap_or((tenant, "0"));
    let tenant = Tenant::new(a.parse().unwrap(), p.parse().unwrap());
    let suffix = parts.next().unwrap().to_string();
    let args = query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), percent_decode(v))
        })
        .collect();
    (tenant, suffix, args)
}

fn body(send: &Value) -> Vec<u8> {
    match (send.get("body"), send.get("body_hex")) {
        (Some(b), _) => b.as_str().unwrap().as_bytes().to_vec(),
        (None, Some(h)) => hex::decode(h.as_str().unwrap()).unwrap(),
        _ => panic!("send without a body"),
    }
}

/// The whole-body decoders of common.md §6; `None` means vminsert answers 400.
fn decompress(encoding: &str, raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    match encoding {
        "" | "none" | "identity" => out.extend_from_slice(raw),
        "gzip" => {
            flate2::read::MultiGzDecoder::new(raw)
                .read_to_end(&mut out)
                .ok()?;
        }
        "deflate" => {
            flate2::read::ZlibDecoder::new(raw)
                .read_to_end(&mut out)
                .ok()?;
        }
        "zstd" => out = zstd::decode_all(raw).ok()?,
        "snappy" => out = snap::raw::Decoder::new().decompress_vec(raw).ok()?,
        _ => return None,
    }
    Some(out)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Replay one vector's inputs; returns the rows and checks every response status.
fn replay(file: &str, v: &Value) -> Vec<Row> {
    let f = flags(v);
    let now = now_ms();
    let mut rows = Vec::new();
    let sends = v["send"].as_array().unwrap();
    let responses = v["responses"].as_array().unwrap();
    assert_eq!(sends.len(), responses.len(), "{file}");
    for (send, resp) in sends.iter().zip(responses) {
        let raw = body(send);
        let header = |name: &str| {
            send.get("headers")
                .and_then(|h| h.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        if let Some(proto) = send.get("tcp").or_else(|| send.get("udp")) {
            assert_eq!(resp["status"], "sent", "{file}");
            let mut sink = Collect {
                tenant: Tenant::default(),
                rows: Vec::new(),
                invalid: 0,
            };
            match proto.as_str().unwrap() {
                "graphite" => GraphiteParser::new().parse_block(
                    &raw,
                    1,
                    now,
                    &GraphiteOptions::default(),
                    &mut sink,
                ),
                "opentsdb" => OpenTsdbParser::new().parse_block(
                    &raw,
                    1,
                    now,
                    &OpenTsdbOptions::default(),
                    &mut sink,
                ),
                "influx" => {
                    let opts = influx_options(&f, b"", Precision::Auto);
                    InfluxParser::new().parse_stream(&raw, 1, now, &opts, &mut sink)
                }
                other => panic!("{file}: protocol {other}"),
            }
            assert_eq!(sink.invalid, 0, "{file}");
            rows.extend(sink.rows);
            continue;
        }
        let status = resp["status"].as_u64().unwrap();
        let (tenant, suffix, args) = route(send["http"].as_str().unwrap());
        let arg = |name: &str| {
            args.iter()
                .find(|(k, _)| k == name)
                .map_or(&b""[..], |(_, v)| v.as_slice())
        };
        let mut sink = Collect {
            tenant,
            rows: Vec::new(),
            invalid: 0,
        };
        let got_status = match suffix.as_str() {
            "influx/query" | "influx/health" => 200,
            "api/put" | "opentsdb/api/put" => {
                assert_eq!(send["port"], "opentsdbhttp", "{file}");
                let data = decompress(header("Content-Encoding"), &raw);
                match data.map(|d| {
                    opentsdb_http::parse_body(&d, now, &OpenTsdbHttpOptions::default(), &mut sink)
                }) {
                    Some(Ok(())) => 204,
                    _ => 400,
                }
            }
            "influx/write" | "influx/api/v2/write" => {
                match decompress(header("Content-Encoding"), &raw) {
                    None => 400,
                    Some(data) => {
                        let opts =
                            influx_options(&f, arg("db"), Precision::from_query(arg("precision")));
                        let mut p = InfluxParser::new();
                        if header("Stream-Mode") == "1" {
                            p.parse_stream(&data, 1, now, &opts, &mut sink);
                            204
                        } else if p.parse_batch(&data, now, &opts, &mut sink).is_ok() {
                            204
                        } else {
                            assert!(
                                sink.rows.is_empty(),
                                "{file}: a refused batch must not emit rows"
                            );
                            400
                        }
                    }
                }
            }
            other => panic!("{file}: route {other}"),
        };
        assert_eq!(got_status, status, "{file}: {}", send["http"]);
        rows.extend(sink.rows);
    }
    rows
}

fn influx_options<'a>(f: &'a Flags, db: &'a [u8], precision: Precision) -> InfluxOptions<'a> {
    let mut o = InfluxOptions {
        db,
        precision,
        ..InfluxOptions::default()
    };
    if let Some(sep) = &f.separator {
        o.measurement_field_separator = sep;
    }
    o.skip_single_field = f.skip_single_field;
    o.skip_measurement = f.skip_measurement;
    o
}

#[test]
fn vectors_match_real_vminsert() {
    let mut checked = 0;
    for file in FILES {
        let path = format!("{VECTORS}{file}");
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut got = replay(file, &v);
        let now = now_ms();
        let mut want = Vec::new();
        for r in v["expected_rows"].as_array().unwrap() {
            let name = r["name_hex"].as_str().unwrap().to_string();
            let bits = u64::from_str_radix(r["value_bits"].as_str().unwrap(), 16).unwrap();
            let ts = r["ts"].as_i64().unwrap();
            if r.get("ts_now").and_then(Value::as_bool) == Some(true) {
                // The recording's clock is not ours: match such a row by name and value, with
                // our timestamp within a minute of now.
                let i = got
                    .iter()
                    .position(|g| g.0 == name && g.2 == bits && (g.1 - now).abs() < 60_000)
                    .unwrap_or_else(|| panic!("{file}: no current-time row for {name}"));
                got.remove(i);
            } else {
                want.push((name, ts, bits));
            }
        }
        got.sort();
        want.sort();
        assert_eq!(got, want, "{file}");
        checked += 1;
    }
    assert_eq!(checked, FILES.len());
}
