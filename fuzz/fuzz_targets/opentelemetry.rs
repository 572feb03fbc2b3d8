//! OpenTelemetry: decompression, the Firehose envelope and protobuf decoding never panic; a
//! failed request hands nothing to the sink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::opentelemetry::{self, BodyKind, OtlpOptions};
use shardgate_core::formats::{Metadata, Sink};
use shardgate_core::model::{Label, Sample};

#[derive(Default)]
struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
    fn metadata(&mut self, _: &Metadata<'_>) {
        self.0 += 1;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let opts = OtlpOptions {
        use_prometheus_naming: mode & 4 != 0,
        promote_scope_metadata: mode & 8 == 0,
        ..OtlpOptions::default()
    };
    let mut c = Count::default();
    let result = match mode % 4 {
        0 => opentelemetry::parse(body, &opts, &mut c),
        1 => opentelemetry::parse_request(body, None, BodyKind::Firehose, 1 << 20, &opts, &mut c),
        2 => opentelemetry::parse_request(
            body,
            Some("gzip"),
            BodyKind::Protobuf,
            1 << 20,
            &opts,
            &mut c,
        ),
        _ => opentelemetry::parse_request(
            body,
            Some("zstd"),
            BodyKind::Protobuf,
            1 << 20,
            &opts,
            &mut c,
        ),
    };
    if result.is_err() {
        assert_eq!(c.0, 0);
    }
});
