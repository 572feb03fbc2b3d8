//! Remote write: decompression and protobuf decoding never panic; a failed request hands
//! nothing to the sink.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::{remote_write, Sink};
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
    let mut c = Count::default();
    match mode % 3 {
        0 => {
            if remote_write::parse(body, &mut c).is_err() {
                assert_eq!(c.0, 0);
            }
        }
        1 => {
            let _ = remote_write::parse_compressed(body, None, 1 << 20, &mut c);
        }
        _ => {
            let _ = remote_write::parse_compressed(body, Some("zstd"), 1 << 20, &mut c);
        }
    }
});
