//! Arbitrary bytes as Graphite plaintext lines; the first byte picks the sanitizer and trim.
//! Every emitted series starts with a non-empty metric name and has no empty tag.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::graphite::{GraphiteOptions, GraphiteParser};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

struct Check;

impl Sink for Check {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        assert_eq!(samples.len(), 1);
        assert!(labels[0].name.is_empty() && !labels[0].value.is_empty());
        assert!(labels[1..]
            .iter()
            .all(|l| !l.name.is_empty() && !l.value.is_empty()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let opts = GraphiteOptions {
        sanitize_metric_name: control & 1 != 0,
        trim_timestamp_ms: if control & 2 != 0 { 60_000 } else { 1000 },
    };
    GraphiteParser::new().parse_block(body, 1, 1_700_000_000_123, &opts, &mut Check);
});
