//! Round trips: rows printed in Influx, Graphite or OpenTSDB syntax (with the escaping each
//! format needs) parse back to the same labels, timestamps and value bits.

use proptest::prelude::*;
use shardgate_core::formats::graphite::{GraphiteOptions, GraphiteParser};
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser, Precision};
use shardgate_core::formats::opentsdb::{OpenTsdbOptions, OpenTsdbParser};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, OwnedLabel, Sample};

type Row = (Vec<OwnedLabel>, i64, u64);

#[derive(Default)]
struct Collect {
    rows: Vec<Row>,
    invalid: Vec<(u64, String)>,
}

impl Sink for Collect {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        for s in samples {
            let ls = labels
                .iter()
                .map(|l| OwnedLabel::new(l.name, l.value))
                .collect();
            self.rows.push((ls, s.timestamp_ms, s.value_bits));
        }
    }
    fn invalid(&mut self, line: u64, reason: &str) {
        self.invalid.push((line, reason.to_string()));
    }
}

const NOW: i64 = 1_700_000_000_000;

/// Bytes that need escaping in Influx plus ordinary ones; never a newline, never a quote
/// (quotes switch the line to quote mode, covered by the unit tests).
fn influx_token() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            Just(b' '),
            Just(b','),
            Just(b'='),
            Just(b'\\'),
            b'a'..=b'z',
            0x80u8..=0xff
        ],
        1..8,
    )
}

fn influx_escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if matches!(b, b' ' | b',' | b'=' | b'\\') {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// Any finite float, or an integer sent with the `i` suffix.
#[derive(Clone, Debug)]
enum FieldValue {
    Float(f64),
    Int(i64),
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
    ]
}

proptest! {
    #[test]
    fn influx_round_trip(
        lines in proptest::collection::vec((
            influx_token().prop_filter("not a comment", |m| m[0] != b'#'),
            proptest::collection::vec((influx_token(), influx_token()), 0..4),
            proptest::collection::vec((influx_token(), field_value()), 1..4),
            1i64..4_000_000_000_000,
        ), 1..5)
    ) {
        let mut body = Vec::new();
        let mut want: Vec<Row> = Vec::new();
        for (measurement, tags, fields, ts) in &lines {
            influx_escape(&mut body, measurement);
            for (k, v) in tags {
                body.push(b',');
                influx_escape(&mut body, k);
                body.push(b'=');
                influx_escape(&mut body, v);
            }
            body.push(b' ');
            for (i, (k, v)) in fields.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                influx_escape(&mut body, k);
                body.push(b'=');
                match v {
                    FieldValue::Float(f) => body.extend_from_slice(format!("{f}").as_bytes()),
                    FieldValue::Int(n) => body.extend_from_slice(format!("{n}i").as_bytes()),
                }
                let mut name = measurement.clone();
                name.push(b'_');
                name.extend_from_slice(k);
                let mut labels: Vec<OwnedLabel> = tags.iter().map(|(k, v)| OwnedLabel::new(k.clone(), v.clone())).collect();
                labels.push(OwnedLabel::new(b"".to_vec(), name));
                let bits = match v {
                    FieldValue::Float(f) => f.to_bits(),
                    FieldValue::Int(n) => (*n as f64).to_bits(),
                };
                want.push((labels, *ts, bits));
            }
            body.extend_from_slice(format!(" {ts}\n").as_bytes());
        }
        let opts = InfluxOptions { precision: Precision::Ms, ..InfluxOptions::default() };
        let mut got = Collect::default();
        let r = InfluxParser::new().parse_batch(&body, NOW, &opts, &mut got);
        prop_assert!(r.is_ok(), "{:?} {}", r, String::from_utf8_lossy(&body));
        prop_assert_eq!(got.rows, want);
    }

    #[test]
    fn graphite_round_trip(
        lines in proptest::collection::vec((
            "[a-zA-Z0-9_.:#-]{1,10}( [a-z]{1,3})?",
            proptest::collection::vec(("[a-zA-Z0-9_.-]{1,6}", "[a-zA-Z0-9_.=-]{1,6}"), 0..4),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            1i64..4_000_000_000,
            prop_oneof![Just(" "), Just("\t"), Just("  \t ")],
        ), 1..5)
    ) {
        let mut body = String::new();
        let mut want: Vec<Row> = Vec::new();
        for (path, tags, value, ts, ws) in &lines {
            body.push_str(path);
            let mut labels = vec![OwnedLabel::new(b"".to_vec(), path.as_bytes().to_vec())];
            for (k, v) in tags {
                body.push_str(&format!(";{k}={v}"));
                labels.push(OwnedLabel::new(k.as_bytes().to_vec(), v.as_bytes().to_vec()));
            }
            body.push_str(&format!("{ws}{value}{ws}{ts}\r\n"));
            want.push((labels, ts * 1000, value.to_bits()));
        }
        let mut got = Collect::default();
        GraphiteParser::new().parse_block(body.as_bytes(), 1, NOW, &GraphiteOptions::default(), &mut got);
        prop_assert!(got.invalid.is_empty(), "{:?}", got.invalid);
        prop_assert_eq!(got.rows, want);
    }

    #[test]
    fn opentsdb_round_trip(
        lines in proptest::collection::vec((
            "[a-zA-Z0-9_./\t-]{1,10}",
            proptest::collection::vec(("[a-zA-Z0-9_.\t-]{1,6}", "[a-zA-Z0-9_.=\t-]{1,6}"), 0..4),
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            prop_oneof![1i64..4_294_967_296, 4_294_967_296i64..4_000_000_000_000],
        ), 1..5)
    ) {
        let mut body = String::new();
        let mut want: Vec<Row> = Vec::new();
        for (metric, tags, value, ts) in &lines {
            body.push_str(&format!("put {metric} {ts} {value}"));
            let mut labels = vec![OwnedLabel::new(b"".to_vec(), metric.as_bytes().to_vec())];
            for (k, v) in tags {
                body.push_str(&format!(" {k}={v}"));
                labels.push(OwnedLabel::new(k.as_bytes().to_vec(), v.as_bytes().to_vec()));
            }
            body.push('\n');
            let ms = if *ts < 4_294_967_296 { ts * 1000 } else { *ts };
            want.push((labels, ms, value.to_bits()));
        }
        let mut got = Collect::default();
        OpenTsdbParser::new().parse_block(body.as_bytes(), 1, NOW, &OpenTsdbOptions::default(), &mut got);
        prop_assert!(got.invalid.is_empty(), "{:?}", got.invalid);
        prop_assert_eq!(got.rows, want);
    }

    /// Whatever the bytes, the parsers neither panic nor emit a series without labels
    /// (except Influx, whose nameless series are a documented quirk).
    #[test]
    fn arbitrary_bytes_do_not_panic(body in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut c = Collect::default();
        InfluxParser::new().parse_stream(&body, 1, NOW, &InfluxOptions::default(), &mut c);
        let _ = InfluxParser::new().parse_batch(&body, NOW, &InfluxOptions::default(), &mut c);
        GraphiteParser::new().parse_block(&body, 1, NOW, &GraphiteOptions::default(), &mut c);
        OpenTsdbParser::new().parse_block(&body, 1, NOW, &OpenTsdbOptions::default(), &mut c);
        let _ = shardgate_core::formats::opentsdb_http::parse_body(&body, NOW, &Default::default(), &mut c);
    }
}
