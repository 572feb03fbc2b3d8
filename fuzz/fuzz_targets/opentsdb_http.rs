//! Arbitrary bytes as an OpenTSDB `/api/put` JSON body: a refused body emits nothing, and
//! every emitted point has a non-empty metric name first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::opentsdb_http::{parse_body, OpenTsdbHttpOptions};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        assert_eq!(samples.len(), 1);
        assert!(labels[0].name.is_empty() && !labels[0].value.is_empty());
        assert!(labels[1..]
            .iter()
            .all(|l| !l.name.is_empty() && !l.value.is_empty()));
        self.0 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sink = Count::default();
    if parse_body(
        data,
        1_700_000_000_123,
        &OpenTsdbHttpOptions::default(),
        &mut sink,
    )
    .is_err()
    {
        assert_eq!(sink.0, 0);
    }
});
