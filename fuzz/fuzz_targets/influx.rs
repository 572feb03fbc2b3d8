//! Arbitrary bytes as an Influx line-protocol body. The first byte picks the flags, the
//! precision and the mode. Batch mode must either emit nothing (refused body) or agree with
//! stream mode line for line; the stream path goes through the line splitter in small chunks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser, Precision};
use shardgate_core::formats::lines::LineSplitter;
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

/// One row as owned (name, value) label pairs and its sample.
type Row = (Vec<(Vec<u8>, Vec<u8>)>, Sample);

#[derive(Default)]
struct Rows {
    rows: Vec<Row>,
    invalid: u64,
}

impl Sink for Rows {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        for s in samples {
            self.rows.push((
                labels
                    .iter()
                    .map(|l| (l.name.to_vec(), l.value.to_vec()))
                    .collect(),
                *s,
            ));
        }
    }
    fn invalid(&mut self, _: u64, _: &str) {
        self.invalid += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let precision =
        [b"".as_slice(), b"ns", b"us", b"ms", b"s", b"m", b"h"][usize::from(control % 7)];
    let opts = InfluxOptions {
        skip_single_field: control & 8 != 0,
        skip_measurement: control & 16 != 0,
        measurement_field_separator: if control & 32 != 0 { b"." } else { b"_" },
        db: if control & 64 != 0 { b"db1" } else { b"" },
        precision: Precision::from_query(precision),
        trim_timestamp_ms: if control & 128 != 0 { 1000 } else { 1 },
        ..InfluxOptions::default()
    };
    let now = 1_700_000_000_123;

    let mut batch = Rows::default();
    let refused = InfluxParser::new()
        .parse_batch(body, now, &opts, &mut batch)
        .is_err();

    let mut stream = Rows::default();
    let mut parser = InfluxParser::new();
    let mut splitter = LineSplitter::new(1 << 16);
    for chunk in body.chunks(7) {
        if splitter
            .feed(chunk, |n, line| {
                parser.parse_line(line, n, now, &opts, &mut stream);
            })
            .is_err()
        {
            return;
        }
    }
    let _ = splitter.finish(|n, line| {
        parser.parse_line(line, n, now, &opts, &mut stream);
    });

    if refused {
        assert!(batch.rows.is_empty());
        assert!(stream.invalid > 0);
    } else {
        assert_eq!(stream.invalid, 0);
        assert_eq!(batch.rows, stream.rows);
    }
    for (labels, _) in &stream.rows {
        // The metric name is always the last label, and only there.
        assert!(labels.last().is_some_and(|l| l.0.is_empty()));
        assert!(labels[..labels.len() - 1]
            .iter()
            .all(|l| !l.0.is_empty() && !l.1.is_empty()));
    }
});
