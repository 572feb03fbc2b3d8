//! DataDog decoding throughput: a v1 JSON payload as the agent sends it (hosts, devices, a
//! dozen tags, a few points per series), the same series as v2 protobuf, and sketches, into a
//! sink that only counts.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::formats::datadog::{self, DatadogOptions};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
}

const SERIES: usize = 2000;

fn tags(i: usize) -> Vec<String> {
    (0..12)
        .map(|t| format!("tag{t}:value-{}", (i * 7 + t) % 50))
        .collect()
}

fn v1_body() -> Vec<u8> {
    let mut out = String::from("{\"series\":[");
    for i in 0..SERIES {
        if i > 0 {
            out.push(',');
        }
        let tags: Vec<String> = tags(i).iter().map(|t| format!("\"{t}\"")).collect();
        out.push_str(&format!(
            "{{\"metric\":\"system.disk.used-{}\",\"host\":\"host-{}\",\"device\":\"sd{}\",\"type\":\"gauge\",\"interval\":10,\"tags\":[{}],\"points\":[[1700000000,{}.5],[1700000010,{}],[1700000020,{}]]}}",
            i % 100,
            i % 40,
            i % 4,
            tags.join(","),
            i,
            i * 2,
            i * 3
        ));
    }
    out.push_str("]}");
    out.into_bytes()
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, num: u64, b: &[u8]) {
    varint(out, num << 3 | 2);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn double_field(out: &mut Vec<u8>, num: u64, v: f64) {
    varint(out, num << 3 | 1);
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn v2_protobuf() -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..SERIES {
        let mut m = Vec::new();
        let mut r = Vec::new();
        bytes_field(&mut r, 1, b"host");
        bytes_field(&mut r, 2, format!("host-{}", i % 40).as_bytes());
        bytes_field(&mut m, 1, &r);
        bytes_field(
            &mut m,
            2,
            format!("system.disk.used-{}", i % 100).as_bytes(),
        );
        for t in tags(i) {
            bytes_field(&mut m, 3, t.as_bytes());
        }
        for k in 0..3u64 {
            let mut p = Vec::new();
            double_field(&mut p, 1, i as f64 + k as f64);
            varint(&mut p, 2 << 3);
            varint(&mut p, 1_700_000_000 + 10 * k);
            bytes_field(&mut m, 4, &p);
        }
        bytes_field(&mut payload, 1, &m);
    }
    payload
}

fn sketches() -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..SERIES / 4 {
        let mut s = Vec::new();
        bytes_field(&mut s, 1, format!("request.latency-{}", i % 50).as_bytes());
        bytes_field(&mut s, 2, format!("host-{}", i % 40).as_bytes());
        for t in tags(i) {
            bytes_field(&mut s, 4, t.as_bytes());
        }
        for k in 0..3u64 {
            let mut d = Vec::new();
            varint(&mut d, 1 << 3);
            varint(&mut d, 1_700_000_000 + 10 * k);
            varint(&mut d, 2 << 3);
            varint(&mut d, 64);
            double_field(&mut d, 3, 0.5);
            double_field(&mut d, 4, 90.0);
            double_field(&mut d, 6, 1234.0);
            let mut keys = Vec::new();
            let mut counts = Vec::new();
            for b in 0..16u64 {
                varint(&mut keys, (1338 + 20 * b) << 1);
                varint(&mut counts, 4);
            }
            bytes_field(&mut d, 7, &keys);
            bytes_field(&mut d, 8, &counts);
            bytes_field(&mut s, 7, &d);
        }
        bytes_field(&mut payload, 1, &s);
    }
    payload
}

fn bench(c: &mut Criterion) {
    let opts = DatadogOptions::default();
    let mut g = c.benchmark_group("datadog");
    let v1 = v1_body();
    g.throughput(Throughput::Bytes(v1.len() as u64));
    g.bench_function("v1_json", |b| {
        b.iter(|| {
            let mut n = Count(0);
            datadog::parse_v1(black_box(&v1), 1_700_000_000, &opts, &mut n).unwrap();
            n.0
        })
    });
    let v2 = v2_protobuf();
    g.throughput(Throughput::Bytes(v2.len() as u64));
    g.bench_function("v2_protobuf", |b| {
        b.iter(|| {
            let mut n = Count(0);
            datadog::parse_v2(
                black_box(&v2),
                Some("application/x-protobuf"),
                1_700_000_000,
                &opts,
                &mut n,
            )
            .unwrap();
            n.0
        })
    });
    let sk = sketches();
    g.throughput(Throughput::Bytes(sk.len() as u64));
    g.bench_function("sketches", |b| {
        b.iter(|| {
            let mut n = Count(0);
            datadog::parse_sketches(black_box(&sk), &opts, &mut n).unwrap();
            n.0
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
