//! `/api/v1/import/native`: never panics; the series decoded and the verdict do not depend on
//! how the body is chunked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::native::NativeParser;
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default, PartialEq, Debug)]
struct Rows(Vec<(Vec<Vec<u8>>, i64, u64)>);

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
}

fn run(data: &[u8], step: usize) -> (Rows, bool) {
    let mut p = NativeParser::new();
    let mut rows = Rows::default();
    let mut ok = true;
    for c in data.chunks(step) {
        if p.feed(c, &mut rows).is_err() {
            ok = false;
            break;
        }
    }
    ok = ok && p.finish(&mut rows).is_ok();
    (rows, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, body)) = data.split_first() else {
        return;
    };
    let a = run(body, body.len().max(1));
    let b = run(body, usize::from(step).max(1));
    assert_eq!(a, b);
});
