//! Native import, NewRelic and the Zabbix connector: the golden vectors replayed through the
//! parsers and the ingest pipeline (rows per storage node must be exactly what the real
//! vminsert sent, statuses and error texts as it answered), plus properties of the native
//! decoder (arbitrary bytes never panic, encoded blocks decode to the same samples whatever the
//! chunking).

mod support;

use std::sync::Arc;

use proptest::prelude::*;
use serde_json::Value;
use shardgate_core::formats::body::{decode_whole, BodyDecoder, BodyError, ContentEncoding};
use shardgate_core::formats::native::{self, NativeError, NativeParser};
use shardgate_core::formats::zabbix::{self, ZabbixOptions, ZabbixParser};
use shardgate_core::formats::{newrelic, Sink};
use shardgate_core::ingest::{
    extra_labels, parse_tenant_mode, Ingest, IngestConfig, IngestScratch, Protocol, RequestConfig,
};
use shardgate_core::limits::Limits;
use shardgate_core::model::{Label, Sample};
use shardgate_core::relabel::RelabelConfig;
use shardgate_core::route::Batch;
use shardgate_core::wire::row::decode_block;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/formats-extra/"
);

const FILES: &[&str] = &[
    "native-extra-label-gzip",
    "native-header-range",
    "native-invalid",
    "native-multitenant",
    "native-roundtrip",
    "native-truncated",
    "nr-events",
    "nr-events-invalid",
    "nr-events-timestamp-forms",
    "zabbix-basic",
    "zabbix-flags",
    "zabbix-zstd-tenant-extra-label",
    "limit-labels-influx-zabbix-quirks",
];

/// (node, raw metric name hex, timestamp or None for "now", value bits hex)
type Row = (usize, String, Option<i64>, String);

const NOW_MS: i64 = 1_795_549_429_321;

struct Flags {
    limits: Limits,
    zabbix: ZabbixOptions,
}

fn flags(v: &Value) -> Flags {
    let mut f = Flags {
        limits: Limits::default(),
        zabbix: ZabbixOptions::default(),
    };
    for flag in v["flags"].as_array().unwrap() {
        let flag = flag.as_str().unwrap().trim_start_matches('-');
        let (name, value) = flag.split_once('=').unwrap();
        let bytes = value.as_bytes().to_vec();
        match name {
            "maxLabelsPerTimeseries" => f.limits.max_labels_per_timeseries = value.parse().unwrap(),
            "zabbixconnector.addGroupsValue" => f.zabbix.add_groups_value = bytes,
            "zabbixconnector.addEmptyTagsValue" => f.zabbix.add_empty_tags_value = bytes,
            "zabbixconnector.addDuplicateTagsSeparator" => {
                f.zabbix.add_duplicate_tags_separator = bytes
            }
            other => panic!("flag {other} is not handled by this harness"),
        }
    }
    f
}

/// Decode a streamed body the way the gateway does, in small pieces.
fn stream<E: From<BodyError>>(
    body: &[u8],
    enc: ContentEncoding,
    mut out: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    let mut dec = BodyDecoder::stream(enc);
    for part in body.chunks(5) {
        dec.feed(part, &mut |p: &[u8]| {
            // Re-chunk decompressed pieces too, so record borders fall anywhere.
            p.chunks(3).try_for_each(&mut out)
        })?;
    }
    dec.finish(&mut |p: &[u8]| p.chunks(3).try_for_each(&mut out))
}

#[derive(Debug)]
enum Failure {
    Native(NativeError),
    Body(BodyError),
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Failure {
        Failure::Body(e)
    }
}

/// Returns (ours, expected); rows of inputs this file does not own are left out of both.
fn run(name: &str) -> (Vec<Row>, Vec<Row>) {
    let path = format!("{VECTORS}{name}.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let f = flags(&v);
    let support::VectorCluster {
        placement,
        to_vector_node,
        replication_factor: rf,
    } = support::vector_cluster(&v);
    let config = IngestConfig {
        limits: f.limits,
        sort_labels: false,
        relabel: Arc::new(RelabelConfig::empty()),
        enable_metadata: true,
    };
    let mut batch = Batch::new(placement.len());
    let mut scratch = IngestScratch::default();
    let mut skipped_other = false;
    for (i, send) in v["send"].as_array().unwrap().iter().enumerate() {
        let want_status = v["responses"][i]["status"].as_u64().unwrap();
        let want_body = v["responses"][i]["body"].as_str().unwrap();
        let url = send["http"].as_str().unwrap();
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let rest = path.strip_prefix("/insert/").unwrap();
        let (tenant, suffix) = rest.split_once('/').unwrap();
        let protocol = match suffix {
            "prometheus/api/v1/import/native" | "newrelic/infra/v2/metrics/events/bulk" => {
                Protocol::Standard
            }
            "zabbixconnector/api/v1/history" => Protocol::Zabbix,
            _ => {
                skipped_other = true;
                continue;
            }
        };
        let tenant = parse_tenant_mode(tenant).unwrap();
        let args: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("extra_label="))
            .map(support::percent_decode)
            .collect();
        let extra = extra_labels(path, args.iter().map(String::as_str)).unwrap();
        let body = match send.get("body_hex") {
            Some(h) => hex::decode(h.as_str().unwrap()).unwrap(),
            None => send["body"].as_str().unwrap().as_bytes().to_vec(),
        };
        let enc = ContentEncoding::parse(
            send["headers"]
                .get("Content-Encoding")
                .and_then(Value::as_str),
        )
        .unwrap();
        let req = RequestConfig::new(tenant, protocol).with_extra_labels(extra);
        let rows_before = batch.rows();
        let mut ingest = Ingest::new(&config, req, &placement, &mut batch, &mut scratch);
        let result: Result<(), String> = match suffix {
            "prometheus/api/v1/import/native" => {
                let mut p = NativeParser::new();
                stream(&body, enc, |piece| {
                    p.feed(piece, &mut ingest).map_err(Failure::Native)
                })
                .and_then(|()| p.finish(&mut ingest).map_err(Failure::Native))
                .map_err(|e| match e {
                    Failure::Native(e) => e.to_string(),
                    Failure::Body(e) => e.to_string(),
                })
            }
            "newrelic/infra/v2/metrics/events/bulk" => {
                let data = decode_whole(&body, enc, newrelic::DEFAULT_MAX_REQUEST_SIZE).unwrap();
                newrelic::parse_body(&data, NOW_MS, &mut ingest).map_err(|e| e.to_string())
            }
            _ => {
                let mut p = ZabbixParser::new(zabbix::DEFAULT_MAX_LINE_LEN, f.zabbix.clone());
                stream(&body, enc, |piece| {
                    p.feed(piece, &mut ingest)
                        .map_err(|e| Failure::Native(NativeError(e.to_string())))
                })
                .and_then(|()| {
                    p.finish(&mut ingest)
                        .map_err(|e| Failure::Native(NativeError(e.to_string())))
                })
                .map_err(|e| format!("{e:?}"))
            }
        };
        let stats = ingest.finish();
        match result {
            Ok(()) => assert!(
                want_status < 300,
                "{name}: input {i} accepted, vminsert said {want_status}"
            ),
            Err(e) => {
                assert_eq!(want_status, 400, "{name}: input {i}: {e}");
                assert_eq!(e, want_body.trim_end(), "{name}: input {i}: error text");
                if protocol != Protocol::Standard || suffix.starts_with("newrelic") {
                    assert_eq!(batch.rows(), rows_before, "{name}: input {i} wrote rows");
                }
            }
        }
        if name == "zabbix-basic" {
            // Types 1 and 4, bad JSON, empty name, null item_tags, string value, fractional
            // clock, string type, empty visible name.
            assert_eq!(stats.rows_invalid, 9, "{name}");
        }
    }
    let mut ours = Vec::new();
    for (node, node_rows) in batch.nodes().iter().enumerate() {
        for row in decode_block(&node_rows.bytes) {
            let row = row.unwrap();
            let ts = row.sample.timestamp_ms;
            for replica in placement.replicas(node, rf) {
                ours.push((
                    to_vector_node[replica],
                    hex::encode(row.metric_name),
                    // "now" is NOW_MS rounded down to seconds in these formats.
                    (ts != NOW_MS / 1000 * 1000).then_some(ts),
                    format!("{:016x}", row.sample.value_bits),
                ));
            }
        }
    }
    ours.sort();
    let mut expected: Vec<Row> = v["expected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            // The limit-labels vector also holds an Influx input; keep only Zabbix rows.
            !skipped_other || r["name_hex"].as_str().unwrap().contains("686f73746e616d65")
        })
        .map(|r| {
            let now = r["ts_now"].as_bool().unwrap_or(false);
            (
                r["node"].as_u64().unwrap() as usize,
                r["name_hex"].as_str().unwrap().to_string(),
                (!now).then(|| r["ts"].as_i64().unwrap()),
                r["value_bits"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    expected.sort();
    (ours, expected)
}

#[test]
fn vectors_replay_through_parsers_and_pipeline() {
    let mut total = 0;
    for name in FILES {
        let (ours, expected) = run(name);
        total += ours.len();
        if ours != expected {
            let missing: Vec<_> = expected.iter().filter(|r| !ours.contains(r)).collect();
            let extra: Vec<_> = ours.iter().filter(|r| !expected.contains(r)).collect();
            panic!("{name}: rows differ\nmissing: {missing:#?}\nunexpected: {extra:#?}");
        }
    }
    // Native: 16 rows in three vectors, 8 in the narrowed range, 13 before the truncation;
    // NewRelic 4+4; Zabbix 4+2+1+1.
    assert_eq!(total, 16 * 3 + 8 + 13 + 8 + 8, "rows replayed");
}

#[test]
fn every_vector_of_these_formats_is_replayed() {
    let mut on_disk: Vec<String> = std::fs::read_dir(VECTORS)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            let n = n.strip_suffix(".json")?;
            (n.starts_with("native-") || n.starts_with("nr-") || n.starts_with("zabbix-"))
                .then(|| n.to_string())
        })
        .collect();
    on_disk.sort();
    let mut ours: Vec<String> = FILES
        .iter()
        .filter(|n| !n.starts_with("limit-"))
        .map(|n| n.to_string())
        .collect();
    ours.sort();
    assert_eq!(on_disk, ours);
}

// ---------------------------------------------------------------------------------------------
// A native encoder for the properties below: nearest-delta columns, optionally zstd'd, or the
// constant forms when they fit.

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn escape(out: &mut Vec<u8>, s: &[u8]) {
    for &c in s {
        match c {
            0..=2 => out.extend_from_slice(&[0, b'0' + c]),
            c => out.push(c),
        }
    }
    out.push(1);
}

/// Encode one column; returns (marshal type, data).
fn column(vals: &[i64], zstd_it: bool, delta2: bool) -> (u8, Vec<u8>) {
    let mut data = Vec::new();
    if vals.iter().all(|&v| v == vals[0]) {
        return (3, data);
    }
    if delta2 && vals.len() >= 2 {
        let mut d1 = vals[1].wrapping_sub(vals[0]);
        put_varint(&mut data, d1);
        for w in vals[1..].windows(2) {
            let d = w[1].wrapping_sub(w[0]);
            put_varint(&mut data, d.wrapping_sub(d1));
            d1 = d;
        }
    } else {
        for w in vals.windows(2) {
            put_varint(&mut data, w[1].wrapping_sub(w[0]));
        }
    }
    let mt = match (zstd_it, delta2) {
        (true, true) => 1,
        (true, false) => 4,
        (false, true) => 5,
        (false, false) => 6,
    };
    if zstd_it {
        data = zstd::bulk::compress(&data, 1).unwrap();
    }
    (mt, data)
}

/// One series as the encoder writes it.
#[derive(Clone, Debug)]
struct Rec {
    group: Vec<u8>,
    tags: Vec<(Vec<u8>, Vec<u8>)>,
    ts: Vec<i64>,
    mantissas: Vec<i64>,
    scale: i16,
    zstd_it: bool,
    delta2: bool,
}

fn encode_record(out: &mut Vec<u8>, r: &Rec) {
    let Rec {
        group,
        tags,
        ts,
        mantissas,
        scale,
        zstd_it,
        delta2,
    } = r;
    let (scale, zstd_it, delta2) = (*scale, *zstd_it, *delta2);
    let mut name = Vec::new();
    escape(&mut name, group);
    for (k, v) in tags {
        escape(&mut name, k);
        escape(&mut name, v);
    }
    out.extend_from_slice(&(name.len() as u32).to_be_bytes());
    out.extend_from_slice(&name);
    let mut block = Vec::new();
    put_varint(&mut block, ts[0]);
    put_varint(&mut block, *ts.last().unwrap());
    put_varint(&mut block, mantissas[0]);
    put_uvarint(&mut block, ts.len() as u64);
    put_varint(&mut block, scale.into());
    let (tmt, tdata) = column(ts, zstd_it, delta2);
    let (vmt, vdata) = column(mantissas, zstd_it, !delta2);
    block.extend_from_slice(&[tmt, vmt, 64]);
    put_uvarint(&mut block, tdata.len() as u64);
    block.extend_from_slice(&tdata);
    put_uvarint(&mut block, vdata.len() as u64);
    block.extend_from_slice(&vdata);
    out.extend_from_slice(&(block.len() as u32).to_be_bytes());
    out.extend_from_slice(&block);
}

fn header(min: i64, max: i64) -> Vec<u8> {
    let zz = |v: i64| (((v << 1) ^ (v >> 63)) as u64).to_be_bytes();
    let mut h = zz(min).to_vec();
    h.extend_from_slice(&zz(max));
    h
}

type Series = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(i64, u64)>);

#[derive(Default)]
struct Collect(Vec<Series>);

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0.push((
            labels
                .iter()
                .map(|l| (l.name.to_vec(), l.value.to_vec()))
                .collect(),
            samples
                .iter()
                .map(|s| (s.timestamp_ms, s.value_bits))
                .collect(),
        ));
    }
}

fn label_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()], 0..6)
}

prop_compose! {
    fn record()(
        group in label_bytes(),
        tags in prop::collection::vec((label_bytes(), label_bytes()), 0..4),
        start in -1_000_000_000_000i64..2_000_000_000_000,
        steps in prop::collection::vec(0i64..100_000, 0..40),
        mantissas in prop::collection::vec(-1_000_000_000i64..1_000_000_000, 41),
        scale in -5i16..5,
        zstd_it in any::<bool>(),
        delta2 in any::<bool>(),
    ) -> Rec {
        let mut ts = vec![start];
        for s in steps {
            ts.push(ts.last().unwrap() + s);
        }
        let m = mantissas[..ts.len()].to_vec();
        Rec { group, tags, ts, mantissas: m, scale, zstd_it, delta2 }
    }
}

fn to_f64(m: i64, scale: i16) -> f64 {
    let p = 10f64.powi(scale.unsigned_abs().into());
    if scale < 0 {
        m as f64 / p
    } else {
        m as f64 * p
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..300), step in 1usize..40) {
        let mut sink = Collect::default();
        let mut p = NativeParser::new();
        let mut r = Ok(());
        for c in body.chunks(step) {
            r = r.and_then(|()| p.feed(c, &mut sink));
        }
        let _ = r.and_then(|()| p.finish(&mut sink));
        let mut sink = Collect::default();
        let _ = newrelic::parse_body(&body, 0, &mut sink);
        let _ = zabbix::parse_body(&body, &ZabbixOptions::default(), &mut sink);
    }

    #[test]
    fn arbitrary_records_after_a_valid_header_never_panic(
        records in prop::collection::vec((label_bytes(), prop::collection::vec(any::<u8>(), 0..60)), 0..4)
    ) {
        let mut body = header(i64::MIN, i64::MAX);
        for (name, block) in &records {
            body.extend_from_slice(&(name.len() as u32).to_be_bytes());
            body.extend_from_slice(name);
            body.extend_from_slice(&(block.len() as u32).to_be_bytes());
            body.extend_from_slice(block);
        }
        let _ = native::parse_body(&body, &mut Collect::default());
    }

    #[test]
    fn encoded_records_decode_to_the_same_series(
        records in prop::collection::vec(record(), 1..4),
        step in 1usize..64,
    ) {
        let mut body = header(i64::MIN, i64::MAX);
        let mut want = Vec::new();
        for r in &records {
            encode_record(&mut body, r);
            let mut labels = vec![(Vec::new(), r.group.clone())];
            labels.extend(r.tags.iter().cloned());
            let samples = r.ts.iter().zip(&r.mantissas).map(|(&t, &m)| (t, to_f64(m, r.scale).to_bits())).collect();
            want.push((labels, samples));
        }
        let mut sink = Collect::default();
        let mut p = NativeParser::new();
        for c in body.chunks(step) {
            p.feed(c, &mut sink).unwrap();
        }
        p.finish(&mut sink).unwrap();
        prop_assert_eq!(&sink.0, &want);
        // Cut anywhere inside the last record: an error, and every earlier record is kept.
        let cut = body.len() - 1;
        let mut sink = Collect::default();
        prop_assert!(native::parse_body(&body[..cut], &mut sink).is_err());
        prop_assert_eq!(&sink.0[..], &want[..want.len() - 1]);
    }

    #[test]
    fn the_time_range_trims_both_ends(lo in 0usize..10, hi in 0usize..10) {
        let ts: Vec<i64> = (0..10).map(|i| 1000 * i).collect();
        let m: Vec<i64> = (0..10).collect();
        let (min, max) = (ts[lo.min(hi)], ts[lo.max(hi)]);
        let mut body = header(min, max);
        let r = Rec { group: b"m".to_vec(), tags: vec![], ts: ts.clone(), mantissas: m, scale: 0, zstd_it: false, delta2: true };
        encode_record(&mut body, &r);
        let mut sink = Collect::default();
        native::parse_body(&body, &mut sink).unwrap();
        let got: Vec<i64> = sink.0[0].1.iter().map(|s| s.0).collect();
        prop_assert_eq!(got, ts[lo.min(hi)..=lo.max(hi)].to_vec());
    }
}

#[test]
fn oversized_and_malformed_records_are_refused() {
    let ok = {
        let mut b = header(0, 10);
        let r = Rec {
            group: b"m".to_vec(),
            tags: vec![],
            ts: vec![1, 2],
            mantissas: vec![1, 2],
            scale: 0,
            zstd_it: false,
            delta2: false,
        };
        encode_record(&mut b, &r);
        b
    };
    native::parse_body(&ok, &mut Collect::default()).unwrap();
    // A block declaring more rows than storage allows, in a handful of bytes.
    let mut huge = header(0, 10);
    huge.extend_from_slice(&2u32.to_be_bytes());
    huge.extend_from_slice(b"m\x01");
    let mut block = Vec::new();
    put_varint(&mut block, 0);
    put_varint(&mut block, 10);
    put_varint(&mut block, 1);
    put_uvarint(&mut block, 1 << 31);
    put_varint(&mut block, 0);
    block.extend_from_slice(&[3, 3, 64, 0, 0]);
    huge.extend_from_slice(&(block.len() as u32).to_be_bytes());
    huge.extend_from_slice(&block);
    let e = native::parse_body(&huge, &mut Collect::default()).unwrap_err();
    assert!(e.to_string().contains("RowsCount"), "{e}");
    // blockLen over 1 MiB.
    let mut big = header(0, 10);
    big.extend_from_slice(&2u32.to_be_bytes());
    big.extend_from_slice(b"m\x01");
    big.extend_from_slice(&(2u32 << 20).to_be_bytes());
    let e = native::parse_body(&big, &mut Collect::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "too big native block size; got 2097152; shouldn't exceed 1048576"
    );
    // A bad escape in the name.
    let mut bad = header(0, 10);
    bad.extend_from_slice(&3u32.to_be_bytes());
    bad.extend_from_slice(b"m\x00\x01");
    bad.extend_from_slice(&ok[16 + 4 + 2..]);
    assert!(native::parse_body(&bad, &mut Collect::default()).is_err());
}
