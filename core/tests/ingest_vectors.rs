//! Golden vectors through the real parsers and the ingest pipeline: the rows each storage node
//! received must be exactly the rows the recorded vminsert sent (extra labels, Pushgateway path
//! labels, limits, `-sortLabels`, tenants from paths, headers and labels, relabeling).
//!
//! The harness routes each input the way vminsert does (tenant segment or headers), builds the
//! pipeline per request and feeds the body to the format's parser. Inputs of formats this
//! harness does not drive (OTLP, DataDog, Zabbix, compressed JSON import) make the vector
//! partial: then our rows must be a sub-multiset of the recorded ones, and at least one row of
//! ours must be checked.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser, Precision};
use shardgate_core::formats::{json_lines, prometheus_text, remote_write};
use shardgate_core::ingest::{
    extra_labels, looks_like_tenant, parse_tenant_mode, tenant_from_headers, Ingest, IngestConfig,
    IngestScratch, IngestStats, Protocol, RequestConfig,
};
use shardgate_core::limits::Limits;
use shardgate_core::relabel::RelabelConfig;
use shardgate_core::route::Batch;
use shardgate_core::wire::row::decode_block;

/// The "current time" the harness passes to parsers; rows carrying it are the vector's
/// `ts_now` rows.
const NOW_MS: i64 = 1_234_567;

fn vector_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors")
        .join(name)
}

type Row = (usize, String, Option<i64>, String);

struct Flags {
    config: IngestConfig,
    tenant_headers: bool,
}

fn parse_flags(v: &Value) -> Flags {
    let mut limits = Limits::default();
    let mut sort_labels = false;
    let mut relabel = RelabelConfig::empty();
    let mut prom_naming = false;
    let mut tenant_headers = true;
    for f in v["flags"].as_array().unwrap() {
        let f = f.as_str().unwrap().trim_start_matches('-');
        let (name, value) = f.split_once('=').unwrap_or((f, "true"));
        match name {
            "maxLabelsPerTimeseries" => {
                limits.max_labels_per_timeseries = value.parse::<i64>().unwrap().max(0) as usize
            }
            "maxLabelNameLen" => limits.max_label_name_len = value.parse().unwrap(),
            "maxLabelValueLen" => limits.max_label_value_len = value.parse().unwrap(),
            "sortLabels" => sort_labels = value == "true",
            "usePromCompatibleNaming" => prom_naming = value == "true",
            "enableMultitenancyViaHeaders" => tenant_headers = value == "true",
            "relabelConfig" => {
                // Relative to the project's root, which is the crate's parent.
                let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(value);
                let text = std::fs::read_to_string(&p)
                    .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
                relabel = RelabelConfig::parse(&text).unwrap();
            }
            other => panic!("flag {other} is not handled by this harness"),
        }
    }
    Flags {
        config: IngestConfig {
            limits,
            sort_labels,
            relabel: Arc::new(relabel.with_prom_compatible_naming(prom_naming)),
            enable_metadata: true,
        },
        tenant_headers,
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap();
                out.push(h);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

enum Format {
    Text,
    Influx,
    RemoteWrite,
    JsonLines,
}

/// A routed input: its pipeline settings, its format and its query arguments.
type Routed = (RequestConfig, Format, Vec<(String, String)>);

/// Route one input; Err(text) is a 400, Ok(None) an input this harness does not drive.
fn route(send: &Value, flags: &Flags) -> Result<Option<Routed>, String> {
    let url = send["http"].as_str().unwrap();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let args: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let rest = path
        .trim_start_matches('/')
        .strip_prefix("insert/")
        .ok_or("not an insert path")?;
    let (seg, after) = rest.split_once('/').unwrap_or((rest, ""));
    let header = |h: &str| send["headers"].get(h).and_then(Value::as_str);
    let (tenant, suffix) = if !flags.tenant_headers || looks_like_tenant(seg) {
        (parse_tenant_mode(seg).map_err(|e| e.to_string())?, after)
    } else {
        (
            tenant_from_headers(header("AccountID"), header("ProjectID"))
                .map_err(|e| e.to_string())?,
            rest,
        )
    };
    let suffix = suffix.replace("//", "/");
    let (format, protocol) = match suffix.as_str() {
        "prometheus/api/v1/import/prometheus" => (Format::Text, Protocol::Standard),
        s if s.starts_with("prometheus/api/v1/import/prometheus/") => {
            (Format::Text, Protocol::Standard)
        }
        "influx/write" | "influx/api/v2/write" => (Format::Influx, Protocol::Influx),
        "prometheus/api/v1/write" | "prometheus" | "prometheus/api/v1/push" => {
            (Format::RemoteWrite, Protocol::RemoteWrite)
        }
        "prometheus/api/v1/import" => (Format::JsonLines, Protocol::Standard),
        s if s.starts_with("opentelemetry/")
            || s.starts_with("datadog/")
            || s.starts_with("zabbixconnector/") =>
        {
            return Ok(None)
        }
        _ => return Err(format!("unsupported path requested: {path:?}")),
    };
    let extra = extra_labels(
        path,
        args.iter()
            .filter(|(k, _)| k == "extra_label")
            .map(|(_, v)| v.as_str()),
    )
    .map_err(|e| e.to_string())?;
    let compressed = header("Content-Encoding").is_some_and(|e| !e.is_empty());
    if compressed && !matches!(format, Format::RemoteWrite) || send.get("gzip").is_some() {
        return Ok(None);
    }
    Ok(Some((
        RequestConfig::new(tenant, protocol).with_extra_labels(extra),
        format,
        args,
    )))
}

fn body(send: &Value) -> Vec<u8> {
    match send.get("body_hex") {
        Some(h) => hex::decode(h.as_str().unwrap()).unwrap(),
        None => send["body"].as_str().unwrap().as_bytes().to_vec(),
    }
}

struct Outcome {
    rows: Vec<Row>,
    partial: bool,
    stats: Vec<IngestStats>,
}

fn run_vector(name: &str) -> (Outcome, Vec<Row>) {
    let v: Value = serde_json::from_slice(&std::fs::read(vector_path(name)).unwrap()).unwrap();
    let flags = parse_flags(&v);
    let support::VectorCluster {
        placement,
        to_vector_node,
        replication_factor: rf,
    } = support::vector_cluster(&v);

    let mut batch = Batch::new(placement.len());
    let mut scratch = IngestScratch::default();
    let mut partial = false;
    let mut stats = Vec::new();
    for (i, send) in v["send"].as_array().unwrap().iter().enumerate() {
        let status = v["responses"][i]["status"].as_u64().unwrap();
        let routed = route(send, &flags);
        if status >= 400 {
            let e = routed
                .err()
                .unwrap_or_else(|| panic!("{name}: input {i} should be refused (status {status})"));
            let want = v["responses"][i]["body"].as_str().unwrap().trim_end();
            assert_eq!(e, want, "{name}: input {i}: error text");
            continue;
        }
        let Some((req, format, args)) = routed.unwrap_or_else(|e| panic!("{name}: input {i}: {e}"))
        else {
            partial = true;
            continue;
        };
        let data = body(send);
        let mut ingest = Ingest::new(&flags.config, req, &placement, &mut batch, &mut scratch);
        match format {
            Format::Text => prometheus_text::parse_body(
                &data,
                prometheus_text::PromTextOptions::new(NOW_MS),
                &mut ingest,
            )
            .unwrap(),
            Format::JsonLines => json_lines::parse_body(&data, &mut ingest).unwrap(),
            Format::RemoteWrite => remote_write::parse_compressed(
                &data,
                send["headers"]
                    .get("Content-Encoding")
                    .and_then(Value::as_str),
                32 << 20,
                &mut ingest,
            )
            .unwrap(),
            Format::Influx => {
                let arg = |k: &str| {
                    args.iter()
                        .find(|(n, _)| n == k)
                        .map(|(_, v)| v.as_bytes())
                        .unwrap_or(b"")
                };
                let opts = InfluxOptions {
                    db: arg("db"),
                    precision: Precision::from_query(arg("precision")),
                    ..InfluxOptions::default()
                };
                InfluxParser::new()
                    .parse_batch(&data, NOW_MS, &opts, &mut ingest)
                    .unwrap();
            }
        }
        stats.push(ingest.finish());
    }

    let mut rows = Vec::new();
    for (node, node_rows) in batch.nodes().iter().enumerate() {
        for row in decode_block(&node_rows.bytes) {
            let row = row.unwrap();
            let ts = row.sample.timestamp_ms;
            for replica in placement.replicas(node, rf) {
                rows.push((
                    to_vector_node[replica],
                    hex::encode(row.metric_name),
                    (ts != NOW_MS).then_some(ts),
                    format!("{:016x}", row.sample.value_bits),
                ));
            }
        }
    }
    rows.sort();
    let mut expected: Vec<Row> = v["expected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let now = r.get("ts_now").and_then(Value::as_bool).unwrap_or(false);
            (
                r["node"].as_u64().unwrap() as usize,
                r["name_hex"].as_str().unwrap().to_string(),
                (!now).then(|| r["ts"].as_i64().unwrap()),
                r["value_bits"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    expected.sort();
    (
        Outcome {
            rows,
            partial,
            stats,
        },
        expected,
    )
}

fn check(name: &str) -> Outcome {
    let (ours, expected) = run_vector(name);
    if ours.partial {
        let mut left: BTreeMap<&Row, usize> = BTreeMap::new();
        for r in &expected {
            *left.entry(r).or_default() += 1;
        }
        for r in &ours.rows {
            let n = left.get_mut(r).filter(|n| **n > 0);
            let n = n.unwrap_or_else(|| panic!("{name}: row not recorded: {r:?}"));
            *n -= 1;
        }
        assert!(!ours.rows.is_empty(), "{name}: no row checked");
    } else {
        assert_eq!(ours.rows, expected, "{name}: rows per storage node");
    }
    ours
}

#[test]
fn extra_labels_and_pushgateway_paths() {
    check("formats/prom-text-extra-label.json");
    check("formats-extra/pushgateway-paths.json");
    check("formats-extra/pushgateway-errors.json");
}

#[test]
fn sort_labels() {
    check("formats/prom-text-sort-labels.json");
}

#[test]
fn tenants_from_paths_headers_and_labels() {
    for v in [
        "formats/tenant-account-only.json",
        "formats/tenant-account-project.json",
        "formats/tenant-invalid.json",
        "formats/tenant-multitenant-labels.json",
        "formats-extra/tenant-headers.json",
        "formats-extra/tenant-headers-disabled.json",
        "formats-extra/tenant-header-multitenant-and-invalid.json",
        "formats-extra/multitenant-influx-json.json",
        "formats-extra/rw-multitenant.json",
    ] {
        check(v);
    }
}

#[test]
fn label_limits() {
    let o = check("formats-extra/limit-labels-text-rw.json");
    assert!(o.partial, "the DataDog input is not driven here");
    let dropped: u64 = o.stats.iter().map(|s| s.too_many_labels).sum();
    assert_eq!(dropped, 2, "text and remote-write series over the limit");
    let o = check("formats-extra/limit-label-name-len.json");
    let dropped: u64 = o.stats.iter().map(|s| s.too_long_label_name).sum();
    // text abcde, remote write, JSON import, Influx abcde (OTLP is not driven here).
    assert_eq!(dropped, 4);
    let o = check("formats-extra/limit-label-value-len.json");
    let dropped: u64 = o.stats.iter().map(|s| s.too_long_label_value).sum();
    // Two text series (a long value, an 11-byte name) and two Influx ones (a long tag value,
    // a 13-byte `long_meas_x_f` name checked on its own).
    assert_eq!(dropped, 4);
    check("formats-extra/limit-labels-influx-zabbix-quirks.json");
}

#[test]
fn relabeling() {
    for v in [
        "formats-extra/relabel-text.json",
        "formats-extra/relabel-keep-rename.json",
        "formats-extra/relabel-influx-limit.json",
        "formats-extra/relabel-prom-compatible-naming.json",
        "formats-extra/relabel-rw-influx-dd.json",
    ] {
        check(v);
    }
    let o = check("formats-extra/relabel-text.json");
    assert_eq!(o.stats[0].relabel_dropped, 1, "drop_me_now");
}
