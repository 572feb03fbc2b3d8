//! NewRelic events: never panics; a refused body hands nothing to the sink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::newrelic;
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        assert!(!labels.is_empty() && samples.len() == 1);
        self.0 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut sink = Count::default();
    if newrelic::parse_body(data, 1_700_000_000_000, &mut sink).is_err() {
        assert_eq!(sink.0, 0);
    }
});
