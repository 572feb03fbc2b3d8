//! DataDog: decompression, the Go-style JSON reader and both protobuf decoders never panic; a
//! failed request hands nothing to the sink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::datadog::{self, DatadogOptions, Endpoint};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let opts = DatadogOptions {
        sanitize_metric_name: mode & 8 == 0,
        max_request_size: 1 << 20,
    };
    let (endpoint, content_type) = match mode % 4 {
        0 => (Endpoint::SeriesV1, None),
        1 => (Endpoint::SeriesV2, Some("application/json")),
        2 => (Endpoint::SeriesV2, Some("application/x-protobuf")),
        _ => (Endpoint::Sketches, None),
    };
    let encoding = match (mode >> 4) % 3 {
        0 => None,
        1 => Some("deflate"),
        _ => Some("zstd"),
    };
    let mut c = Count::default();
    let result = datadog::parse_request(
        endpoint,
        body,
        encoding,
        content_type,
        1_700_000_000,
        &opts,
        &mut c,
    );
    if result.is_err() {
        assert_eq!(c.0, 0);
    }
});
