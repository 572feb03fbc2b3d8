//! `/api/v1/import` JSON lines: never panics; rows do not depend on chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::json_lines::JsonLinesParser;
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default, PartialEq, Debug)]
struct Rows(Vec<(Vec<Vec<u8>>, i64, u64)>, Vec<u64>);

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
}

fn run(data: &[u8], step: usize) -> Result<Rows, ()> {
    let mut p = JsonLinesParser::new(4096);
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
    if let (Ok(a), Ok(b)) = (
        run(body, body.len().max(1)),
        run(body, usize::from(step).max(1)),
    ) {
        assert_eq!(a, b);
    }
});
