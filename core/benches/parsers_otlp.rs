//! OTLP protobuf decoding throughput: a typical SDK export (resource attributes, a scope, many
//! gauges and histograms with point attributes) into a sink that only counts.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::formats::opentelemetry::{self, OtlpOptions};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
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

fn fixed_field(out: &mut Vec<u8>, num: u64, v: u64) {
    varint(out, num << 3 | 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn kv(key: &str, value: &str) -> Vec<u8> {
    let mut any = Vec::new();
    bytes_field(&mut any, 1, value.as_bytes());
    let mut kv = Vec::new();
    bytes_field(&mut kv, 1, key.as_bytes());
    bytes_field(&mut kv, 2, &any);
    kv
}

fn request() -> Vec<u8> {
    let mut resource = Vec::new();
    for (k, v) in [
        ("service.name", "checkout"),
        (
            "service.instance.id",
            "8d5c6d1e-3a0b-4b7e-9a3c-1f2e3d4c5b6a",
        ),
        ("host.name", "ip-10-0-12-34"),
        ("k8s.pod.name", "checkout-7d9f8b6c5-xk2lp"),
        ("telemetry.sdk.language", "go"),
    ] {
        bytes_field(&mut resource, 1, &kv(k, v));
    }
    let mut scope = Vec::new();
    bytes_field(
        &mut scope,
        1,
        b"go.opentelemetry.io/contrib/instrumentation/net/http",
    );
    bytes_field(&mut scope, 2, b"0.49.0");
    let mut sm = Vec::new();
    bytes_field(&mut sm, 1, &scope);
    let ns = 1_700_000_000_123_456_789u64;
    for m in 0..100 {
        let mut gauge = Vec::new();
        for p in 0..10 {
            let mut point = Vec::new();
            bytes_field(
                &mut point,
                7,
                &kv("http.route", &format!("/api/v1/items/{p}")),
            );
            bytes_field(&mut point, 7, &kv("http.method", "GET"));
            bytes_field(&mut point, 7, &kv("http.status_code", "200"));
            fixed_field(&mut point, 3, ns);
            fixed_field(&mut point, 4, (m as f64 * 1.5 + p as f64).to_bits());
            bytes_field(&mut gauge, 1, &point);
        }
        let mut metric = Vec::new();
        bytes_field(
            &mut metric,
            1,
            format!("app.requests.inflight.{m}").as_bytes(),
        );
        bytes_field(&mut metric, 5, &gauge);
        bytes_field(&mut sm, 2, &metric);
    }
    for m in 0..20 {
        let mut hist = Vec::new();
        for p in 0..5 {
            let mut point = Vec::new();
            bytes_field(
                &mut point,
                9,
                &kv("http.route", &format!("/api/v1/items/{p}")),
            );
            fixed_field(&mut point, 3, ns);
            fixed_field(&mut point, 4, 100);
            fixed_field(&mut point, 5, 12.5f64.to_bits());
            let counts: Vec<u8> = (0..11u64).flat_map(|c| c.to_le_bytes()).collect();
            bytes_field(&mut point, 6, &counts);
            let bounds: Vec<u8> = (0..10)
                .flat_map(|b| (0.005 * f64::from(1 << b)).to_bits().to_le_bytes())
                .collect();
            bytes_field(&mut point, 7, &bounds);
            bytes_field(&mut hist, 1, &point);
        }
        let mut metric = Vec::new();
        bytes_field(
            &mut metric,
            1,
            format!("http.server.duration.{m}").as_bytes(),
        );
        bytes_field(&mut metric, 3, b"s");
        bytes_field(&mut metric, 9, &hist);
        bytes_field(&mut sm, 2, &metric);
    }
    let mut rm = Vec::new();
    bytes_field(&mut rm, 1, &resource);
    bytes_field(&mut rm, 2, &sm);
    let mut req = Vec::new();
    bytes_field(&mut req, 1, &rm);
    req
}

fn benches(c: &mut Criterion) {
    let body = request();
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Bytes(body.len() as u64));
    for (name, opts) in [
        ("default", OtlpOptions::default()),
        (
            "prometheus_naming",
            OtlpOptions {
                use_prometheus_naming: true,
                ..OtlpOptions::default()
            },
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sink = Count(0);
                opentelemetry::parse(black_box(&body), &opts, &mut sink).unwrap();
                sink.0
            })
        });
    }
    g.finish();
}

criterion_group!(parsers, benches);
criterion_main!(parsers);
