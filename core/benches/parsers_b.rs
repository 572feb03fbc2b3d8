//! Parser throughput in input bytes per second: Influx (stream and batch), Graphite, OpenTSDB
//! telnet and OpenTSDB HTTP JSON, each over a body of about 1 MiB of realistic lines.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::formats::graphite::{GraphiteOptions, GraphiteParser};
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser};
use shardgate_core::formats::opentsdb::{OpenTsdbOptions, OpenTsdbParser};
use shardgate_core::formats::opentsdb_http::{self, OpenTsdbHttpOptions};
use shardgate_core::formats::Sink;
use shardgate_core::model::{Label, Sample};

/// Counts what it gets and touches every byte of the labels, like an encoder would.
#[derive(Default)]
struct Count {
    rows: u64,
    bytes: u64,
}

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.rows += samples.len() as u64;
        for l in labels {
            self.bytes += (l.name.len() + l.value.len()) as u64;
        }
    }
}

const NOW: i64 = 1_700_000_000_000;
const TARGET: usize = 1 << 20;

fn build(mut line: impl FnMut(usize) -> String) -> Vec<u8> {
    let mut body = String::with_capacity(TARGET + 1024);
    let mut i = 0;
    while body.len() < TARGET {
        body.push_str(&line(i));
        i += 1;
    }
    body.into_bytes()
}

fn influx_body() -> Vec<u8> {
    build(|i| {
        format!(
            "cpu,host=server{:04},region=eu-west-{},dc=dc\\ {} usage_user={}.25,usage_system={}i,idle=97.5,ok=true {}\n",
            i % 1000,
            i % 4,
            i % 3,
            i % 100,
            i % 7,
            1_700_000_000_000_000_000i64 + i as i64 * 1_000_000_000
        )
    })
}

fn graphite_body() -> Vec<u8> {
    build(|i| {
        format!(
            "servers.host{:04}.cpu.total.user;dc=eu;rack=r{} {}.5 {}\n",
            i % 1000,
            i % 40,
            i % 100,
            1_700_000_000 + i
        )
    })
}

fn opentsdb_body() -> Vec<u8> {
    build(|i| {
        format!(
            "put sys.cpu.user {} {}.5 host=web{:04} cpu={} dc=eu\n",
            1_700_000_000 + i,
            i % 100,
            i % 1000,
            i % 8
        )
    })
}

fn opentsdb_http_body() -> Vec<u8> {
    let mut body = b"[".to_vec();
    let mut i = 0;
    while body.len() < TARGET {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                r#"{{"metric":"sys.cpu.user","timestamp":{},"value":{}.5,"tags":{{"host":"web{:04}","cpu":"{}","dc":"eu"}}}}"#,
                1_700_000_000 + i,
                i % 100,
                i % 1000,
                i % 8
            )
            .as_bytes(),
        );
        i += 1;
    }
    body.push(b']');
    body
}

fn parsers(c: &mut Criterion) {
    let mut g = c.benchmark_group("parsers_b");

    let body = influx_body();
    g.throughput(Throughput::Bytes(body.len() as u64));
    let opts = InfluxOptions {
        db: b"telegraf",
        ..InfluxOptions::default()
    };
    let mut p = InfluxParser::new();
    g.bench_function("influx_stream", |b| {
        b.iter(|| {
            let mut sink = Count::default();
            p.parse_stream(black_box(&body), 1, NOW, &opts, &mut sink);
            sink.rows
        })
    });
    g.bench_function("influx_batch", |b| {
        b.iter(|| {
            let mut sink = Count::default();
            p.parse_batch(black_box(&body), NOW, &opts, &mut sink)
                .unwrap();
            sink.rows
        })
    });

    let body = graphite_body();
    g.throughput(Throughput::Bytes(body.len() as u64));
    let mut p = GraphiteParser::new();
    g.bench_function("graphite", |b| {
        b.iter(|| {
            let mut sink = Count::default();
            p.parse_block(
                black_box(&body),
                1,
                NOW,
                &GraphiteOptions::default(),
                &mut sink,
            );
            sink.rows
        })
    });

    let body = opentsdb_body();
    g.throughput(Throughput::Bytes(body.len() as u64));
    let mut p = OpenTsdbParser::new();
    g.bench_function("opentsdb_telnet", |b| {
        b.iter(|| {
            let mut sink = Count::default();
            p.parse_block(
                black_box(&body),
                1,
                NOW,
                &OpenTsdbOptions::default(),
                &mut sink,
            );
            sink.rows
        })
    });

    let body = opentsdb_http_body();
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("opentsdb_http", |b| {
        b.iter(|| {
            let mut sink = Count::default();
            opentsdb_http::parse_body(
                black_box(&body),
                NOW,
                &OpenTsdbHttpOptions::default(),
                &mut sink,
            )
            .unwrap();
            sink.rows
        })
    });
    g.finish();
}

criterion_group!(benches, parsers);
criterion_main!(benches);
