//! Zabbix connector NDJSON: never panics; rows do not depend on chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::zabbix::{ZabbixOptions, ZabbixParser};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

#[derive(Default, PartialEq, Debug)]
struct Rows(Vec<(Vec<Vec<u8>>, i64, u64)>, u64);

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
    fn invalid(&mut self, _: u64, _: &str) {
        self.1 += 1;
    }
}

fn run(data: &[u8], step: usize, opts: &ZabbixOptions) -> Result<Rows, ()> {
    let mut p = ZabbixParser::new(4096, opts.clone());
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
    // The low bit of the step byte turns on every label flag.
    let opts = if step & 1 == 1 {
        ZabbixOptions {
            add_groups_value: b"1".to_vec(),
            add_empty_tags_value: b"e".to_vec(),
            add_duplicate_tags_separator: b",".to_vec(),
        }
    } else {
        ZabbixOptions::default()
    };
    if let (Ok(a), Ok(b)) = (
        run(body, body.len().max(1), &opts),
        run(body, usize::from(step >> 1).max(1), &opts),
    ) {
        assert_eq!(a, b);
    }
});
