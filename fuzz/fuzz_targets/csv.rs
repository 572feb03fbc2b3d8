//! CSV import: the `format=` argument and the body (separated by the first newline) never
//! make the parser panic, and Go time layouts never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::csv::{self, go_time, CsvFormat};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        assert!(!labels.is_empty());
        self.0 += samples.len();
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (format, body) = text.split_once('\n').unwrap_or((text, ""));
    if let Some((layout, value)) = format.split_once('|') {
        let _ = go_time::parse(layout, value);
    }
    if let Ok(f) = CsvFormat::parse(Some(format)) {
        let _ = csv::parse_body(body.as_bytes(), f, 1, &mut Count(0));
    }
});
