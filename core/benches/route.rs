//! Hot-path costs of routing: series key + placement per series, `Batch::add_series` per
//! row, and cutting a shared buffer into blocks through the router.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::model::Sample;
use shardgate_core::route::{
    series_hash, Batch, NodeEvent, Output, Placement, PlacementKind, Router, RouterConfig, ShardKey,
};
use shardgate_core::wire::row::encode_metric_name;
use shardgate_core::{Label, Tenant, Time};

fn placement(n: usize) -> Arc<Placement> {
    let nodes: Vec<String> = (0..n).map(|i| format!("vmstorage-{i}:8400")).collect();
    Arc::new(Placement::new(&nodes, PlacementKind::Rendezvous, 0))
}

fn instances() -> Vec<String> {
    (0..1024)
        .map(|i| format!("host{i}.example.com:9100"))
        .collect()
}

fn bench_placement(c: &mut Criterion) {
    let p = placement(10);
    let inst = instances();
    let mut key = Vec::with_capacity(256);
    let mut i = 0usize;
    c.bench_function("series key + placement (10 nodes)", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            key.clear();
            let labels = [
                Label::metric_name(b"node_cpu_seconds_total"),
                Label::new(b"cpu", b"3"),
                Label::new(b"mode", b"idle"),
                Label::new(b"instance", inst[i].as_bytes()),
                Label::new(b"job", b"node"),
            ];
            encode_metric_name(&mut key, Tenant::default(), &labels);
            black_box(p.primary(series_hash(&key)))
        })
    });
}

fn bench_add_series(c: &mut Criterion) {
    let p = placement(10);
    let inst = instances();
    let mut batch = Batch::new(10);
    let mut i = 0usize;
    let mut g = c.benchmark_group("Batch::add_series");
    g.throughput(Throughput::Elements(1));
    g.bench_function("one row", |b| {
        b.iter(|| {
            i = (i + 1) & 1023;
            if i == 0 {
                batch.clear();
            }
            let labels = [
                Label::metric_name(b"node_cpu_seconds_total"),
                Label::new(b"cpu", b"3"),
                Label::new(b"mode", b"idle"),
                Label::new(b"instance", inst[i].as_bytes()),
                Label::new(b"job", b"node"),
            ];
            black_box(batch.add_series(
                &p,
                Tenant::default(),
                &labels,
                ShardKey::MetricName,
                &[Sample::new(1_700_000_000_000, 1.0)],
            ))
        })
    });
    g.finish();
}

fn bench_blocks(c: &mut Criterion) {
    let p = placement(3);
    let inst = instances();
    let mut template = Batch::new(3);
    for (k, name) in inst.iter().enumerate() {
        let labels = [
            Label::metric_name(b"http_requests_total"),
            Label::new(b"instance", name.as_bytes()),
            Label::new(b"job", b"api"),
        ];
        template.add_series(
            &p,
            Tenant::default(),
            &labels,
            ShardKey::MetricName,
            &[Sample::new(k as i64, 1.0)],
        );
    }
    let bytes = template.bytes() as u64;
    let mut router = Router::new(p.clone(), RouterConfig::default(), Time::ZERO);
    for i in 0..3 {
        router.handle_node_event(i, NodeEvent::Ready { legacy: false }, Time::ZERO);
    }
    let mut now = Time::ZERO;
    let mut g = c.benchmark_group("router push + block + ack");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("1024 rows, 3 nodes", |b| {
        b.iter(|| {
            let mut batch = Batch::new(3);
            for i in 0..3 {
                batch.put_node(i, template.nodes()[i].clone());
            }
            router.push(&mut batch, now).unwrap();
            now = now + std::time::Duration::from_millis(200);
            router.handle_timeout(now);
            while let Some(Output::Send { node, block, .. }) = router.poll_output() {
                router.handle_node_event(node, NodeEvent::Acked(block), now);
            }
            assert!(router.is_drained());
        })
    });
    g.finish();
}

criterion_group!(benches, bench_placement, bench_add_series, bench_blocks);
criterion_main!(benches);
