//! Round trips of the row encoding for arbitrary series: empty values (dropped on encode),
//! bytes at and above 0x80, NUL, long values, any timestamp and any f64 bit pattern.

use proptest::prelude::*;
use shardgate_core::model::{Label, Sample, Tenant};
use shardgate_core::wire::row::{
    decode_block, decode_metric_name, encode_metric_name, encode_row, row_len,
};

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..16),
        1 => proptest::collection::vec(any::<u8>(), 0..max),
        1 => Just(Vec::new()),
        1 => Just(vec![0u8, 0x80, 0xff, 0x01, 0x02]),
    ]
}

type Series = (Tenant, Vec<(Vec<u8>, Vec<u8>)>);

fn series() -> impl Strategy<Value = Series> {
    (
        any::<(u32, u32)>().prop_map(|(a, p)| Tenant::new(a, p)),
        proptest::collection::vec((bytes(300), bytes(5000)), 0..12),
    )
}

proptest! {
    #[test]
    fn block_round_trips(rows in proptest::collection::vec((series(), any::<i64>(), any::<u64>()), 0..20)) {
        let mut block = Vec::new();
        let mut want = Vec::new();
        for ((tenant, labels), ts, bits) in &rows {
            let labels: Vec<Label> = labels.iter().map(|(n, v)| Label::new(n, v)).collect();
            let mut mn = Vec::new();
            encode_metric_name(&mut mn, *tenant, &labels);
            let before = block.len();
            encode_row(&mut block, &mn, Sample::from_bits(*ts, *bits));
            prop_assert_eq!(block.len() - before, row_len(mn.len()));
            // What must come back: the labels with a value, `__name__` renamed to "".
            let kept: Vec<(Vec<u8>, Vec<u8>)> = labels
                .iter()
                .filter(|l| !l.value.is_empty())
                .map(|l| {
                    let name = if l.name == b"__name__" { Vec::new() } else { l.name.to_vec() };
                    (name, l.value.to_vec())
                })
                .collect();
            want.push((*tenant, kept, *ts, *bits));
        }
        let got: Vec<_> = decode_block(&block).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got.len(), want.len());
        for (row, (tenant, kept, ts, bits)) in got.iter().zip(&want) {
            prop_assert_eq!(row.sample.timestamp_ms, *ts);
            prop_assert_eq!(row.sample.value_bits, *bits);
            let (t, labels) = decode_metric_name(row.metric_name).unwrap();
            prop_assert_eq!(t, *tenant);
            let labels: Vec<(Vec<u8>, Vec<u8>)> =
                labels.map(|l| l.map(|l| (l.name.to_vec(), l.value.to_vec()))).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(&labels, kept);
        }
    }

    #[test]
    fn decoding_garbage_never_panics(garbage in proptest::collection::vec(any::<u8>(), 0..512)) {
        for row in decode_block(&garbage).flatten() {
            if let Ok((_, labels)) = decode_metric_name(row.metric_name) {
                labels.for_each(drop);
            }
        }
    }
}
