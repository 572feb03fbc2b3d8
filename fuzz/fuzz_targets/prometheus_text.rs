//! Prometheus text import: never panics, and the rows do not depend on how the body is
//! chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::prometheus_text::{PromTextOptions, PromTextParser};
use shardgate_core::formats::{Metadata, Sink};
use shardgate_core::model::{Label, Sample};

#[derive(Default, PartialEq, Debug)]
struct Rows(Vec<(Vec<Vec<u8>>, i64, u64)>, Vec<u64>, usize);

impl Sink for Rows {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        let l: Vec<Vec<u8>> = labels
            .iter()
            .flat_map(|l| [l.name.to_vec(), l.value.to_vec()])
            .collect();
        for s in samples {
            self.0.push((l.clone(), s.timestamp_ms, s.value_bits));
        }
    }
    fn invalid(&mut self, line: u64, _: &str) {
        self.1.push(line);
    }
    fn metadata(&mut self, _: &Metadata<'_>) {
        self.2 += 1;
    }
}

fn run(data: &[u8], step: usize) -> Result<Rows, ()> {
    let mut opts = PromTextOptions::new(1);
    opts.max_line_len = 4096;
    let mut p = PromTextParser::new(opts);
    let mut rows = Rows::default();
    for c in data.chunks(step) {
        p.feed(c, &mut rows).map_err(drop)?;
    }
    p.finish(&mut rows).map_err(drop)?;
    Ok(rows)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let whole = run(body, body.len().max(1));
    let chunked = run(body, usize::from(step).max(1));
    if let (Ok(a), Ok(b)) = (whole, chunked) {
        assert_eq!(a, b);
    }
});
