//! Round trips: rows printed in a format and parsed back come out the same, including the
//! exact value bits wherever the format can carry them (text formats turn every NaN into Go's
//! NaN, as vminsert does).

use proptest::prelude::*;
use shardgate_core::formats::csv::{self, CsvFormat};
use shardgate_core::formats::number::GO_NAN_BITS;
use shardgate_core::formats::prometheus_text::{self, PromTextOptions};
use shardgate_core::formats::{json_lines, Sink};
use shardgate_core::model::{Label, Sample};

type Row = (Vec<(Vec<u8>, Vec<u8>)>, i64, u64);

#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    invalid: Vec<(u64, String)>,
}

impl Sink for Rows {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        let l: Vec<_> = labels
            .iter()
            .map(|l| (l.name.to_vec(), l.value.to_vec()))
            .collect();
        for s in samples {
            self.rows.push((l.clone(), s.timestamp_ms, s.value_bits));
        }
    }
    fn invalid(&mut self, line: u64, reason: &str) {
        self.invalid.push((line, reason.to_string()));
    }
}

/// What a text format hands back for a value: NaN loses its payload.
fn text_bits(v: f64) -> u64 {
    if v.is_nan() {
        GO_NAN_BITS
    } else {
        v.to_bits()
    }
}

fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        (-1_000_000i64..1_000_000).prop_map(|x| x as f64 / 100.0),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(f64::from_bits(shardgate_core::model::STALE_NAN_BITS)),
    ]
}

fn ident() -> impl Strategy<Value = String> {
    "[a-zA-Z_][a-zA-Z0-9_:]{0,12}"
}

fn text_labels() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(
        ("[a-zA-Z_][a-zA-Z0-9_]{0,8}", "\\PC{0,12}|[\\\\\"\n x]{0,6}"),
        0..5,
    )
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

proptest! {
    #[test]
    fn prometheus_text(rows in proptest::collection::vec(
        (ident(), text_labels(), value(), 2_147_483_648i64..(1i64 << 52)), 1..20)
    ) {
        let mut body = String::new();
        for (name, labels, v, ts) in &rows {
            body.push_str(name);
            if !labels.is_empty() {
                let ls: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", prom_escape(v))).collect();
                body.push_str(&format!("{{{}}}", ls.join(",")));
            }
            body.push_str(&format!(" {v} {ts}\n"));
        }
        let mut got = Rows::default();
        prometheus_text::parse_body(body.as_bytes(), PromTextOptions::new(1), &mut got).unwrap();
        prop_assert_eq!(&got.invalid, &vec![]);
        let want: Vec<Row> = rows
            .iter()
            .map(|(name, labels, v, ts)| {
                let mut l = vec![(Vec::new(), name.as_bytes().to_vec())];
                l.extend(labels.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())));
                (l, *ts, text_bits(*v))
            })
            .collect();
        prop_assert_eq!(got.rows, want);
    }

    #[test]
    fn json_lines(lines in proptest::collection::vec(
        (proptest::collection::vec(("[a-z_]{1,8}", "\\PC{0,12}"), 1..5),
         proptest::collection::vec((value(), any::<i64>()), 1..5)), 1..10)
    ) {
        let mut body = String::new();
        for (labels, samples) in &lines {
            let metric: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), serde_json::to_string(v).unwrap()))
                .collect();
            let values: Vec<String> = samples
                .iter()
                .map(|(v, _)| match v {
                    v if v.is_nan() => "null".to_string(),
                    v if *v == f64::INFINITY => "\"Inf\"".to_string(),
                    v if *v == f64::NEG_INFINITY => "-Inf".to_string(),
                    v => format!("{v}"),
                })
                .collect();
            let ts: Vec<String> = samples.iter().map(|(_, t)| t.to_string()).collect();
            body.push_str(&format!(
                "{{\"metric\":{{{}}},\"values\":[{}],\"timestamps\":[{}]}}\n",
                metric.join(","),
                values.join(","),
                ts.join(",")
            ));
        }
        let mut got = Rows::default();
        json_lines::parse_body(body.as_bytes(), &mut got).unwrap();
        prop_assert_eq!(&got.invalid, &vec![]);
        let mut want = Vec::new();
        for (labels, samples) in &lines {
            let l: Vec<_> = labels.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
            for (v, t) in samples {
                want.push((l.clone(), *t, text_bits(*v)));
            }
        }
        prop_assert_eq!(got.rows, want);
    }

    #[test]
    fn csv(rows in proptest::collection::vec(
        (value(), "[^\r\n]{0,10}", "[^\r\n]{0,10}", any::<i64>().prop_filter("0 means now", |t| *t != 0)), 1..20)
    ) {
        let format = CsvFormat::parse(Some("3:label:a,1:metric:m,4:time:unix_ms,2:label:b")).unwrap();
        let mut body = String::new();
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        for (v, a, b, ts) in &rows {
            body.push_str(&format!("{v},{},{},{ts}\n", q(b), q(a)));
        }
        let mut got = Rows::default();
        csv::parse_body(body.as_bytes(), format, 1, &mut got).unwrap();
        prop_assert_eq!(&got.invalid, &vec![]);
        let want: Vec<Row> = rows
            .iter()
            .map(|(v, a, b, ts)| {
                let mut l = vec![(Vec::new(), b"m".to_vec())];
                // Empty label cells give no label.
                if !b.is_empty() {
                    l.push((b"b".to_vec(), b.as_bytes().to_vec()));
                }
                if !a.is_empty() {
                    l.push((b"a".to_vec(), a.as_bytes().to_vec()));
                }
                (l, *ts, text_bits(*v))
            })
            .collect();
        prop_assert_eq!(got.rows, want);
    }
}
