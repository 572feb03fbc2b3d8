//! Parser throughput in input bytes per second: Prometheus text, remote write (decoding only
//! and with snappy), JSON lines, CSV, and the streaming body decoder.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::formats::body::{BodyDecoder, BodyError, ContentEncoding};
use shardgate_core::formats::csv::{self, CsvFormat};
use shardgate_core::formats::prometheus_text::{self, PromTextOptions};
use shardgate_core::formats::{json_lines, remote_write, Sink};
use shardgate_core::model::{Label, Sample};

/// Touches what a real sink would read, so the parser's work is not optimised away.
#[derive(Default)]
struct Count {
    samples: usize,
    label_bytes: usize,
}

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.samples += samples.len();
        self.label_bytes += labels
            .iter()
            .map(|l| l.name.len() + l.value.len())
            .sum::<usize>();
    }
}

const SERIES: usize = 10_000;

fn prom_body() -> Vec<u8> {
    let mut b = String::new();
    b.push_str("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
    for i in 0..SERIES {
        b.push_str(&format!(
            "http_requests_total{{job=\"api\",instance=\"10.0.{}.{}:9100\",code=\"200\",path=\"/v1/q\\\"x\\\"\"}} {}.5 1700000000{:03}\n",
            i / 256,
            i % 256,
            i,
            i % 1000
        ));
    }
    b.into_bytes()
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_bytes(b: &mut Vec<u8>, field: u8, data: &[u8]) {
    b.push(field << 3 | 2);
    put_varint(b, data.len() as u64);
    b.extend_from_slice(data);
}

fn rw_body() -> Vec<u8> {
    let mut req = Vec::new();
    for i in 0..SERIES {
        let mut ts = Vec::new();
        for (n, v) in [
            ("__name__", "node_cpu_seconds_total".to_string()),
            ("job", "node".to_string()),
            ("instance", format!("10.0.{}.{}:9100", i / 256, i % 256)),
            ("mode", "idle".to_string()),
        ] {
            let mut l = Vec::new();
            put_bytes(&mut l, 1, n.as_bytes());
            put_bytes(&mut l, 2, v.as_bytes());
            put_bytes(&mut ts, 1, &l);
        }
        let mut s = vec![0x09];
        s.extend_from_slice(&(i as f64).to_le_bytes());
        s.push(0x10);
        put_varint(&mut s, 1_700_000_000_000 + i as u64);
        put_bytes(&mut ts, 2, &s);
        put_bytes(&mut req, 1, &ts);
    }
    req
}

fn json_body() -> Vec<u8> {
    let mut b = String::new();
    for i in 0..SERIES / 10 {
        b.push_str(&format!(
            "{{\"metric\":{{\"__name__\":\"up\",\"job\":\"api\",\"instance\":\"host-{i}\"}},\"values\":[1,2,3,4,5,6,7,8,9,10.5],\"timestamps\":[1700000000000,1700000001000,1700000002000,1700000003000,1700000004000,1700000005000,1700000006000,1700000007000,1700000008000,1700000009000]}}\n"
        ));
    }
    b.into_bytes()
}

fn csv_body() -> Vec<u8> {
    let mut b = String::new();
    for i in 0..SERIES {
        b.push_str(&format!(
            "GOOG{},{}.23,{}.56,NYSE,{}\n",
            i % 100,
            i,
            i,
            1_700_000_000 + i
        ));
    }
    b.into_bytes()
}

fn benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("parsers_a");

    let prom = prom_body();
    g.throughput(Throughput::Bytes(prom.len() as u64));
    g.bench_function("prometheus_text", |b| {
        b.iter(|| {
            let mut s = Count::default();
            prometheus_text::parse_body(black_box(&prom), PromTextOptions::new(1), &mut s).unwrap();
            s
        })
    });

    let rw = rw_body();
    g.throughput(Throughput::Bytes(rw.len() as u64));
    g.bench_function("remote_write_protobuf", |b| {
        b.iter(|| {
            let mut s = Count::default();
            remote_write::parse(black_box(&rw), &mut s).unwrap();
            s
        })
    });
    let rw_snappy = snap::raw::Encoder::new().compress_vec(&rw).unwrap();
    g.throughput(Throughput::Bytes(rw_snappy.len() as u64));
    g.bench_function("remote_write_snappy", |b| {
        b.iter(|| {
            let mut s = Count::default();
            remote_write::parse_compressed(black_box(&rw_snappy), None, 64 << 20, &mut s).unwrap();
            s
        })
    });

    let json = json_body();
    g.throughput(Throughput::Bytes(json.len() as u64));
    g.bench_function("json_lines", |b| {
        b.iter(|| {
            let mut s = Count::default();
            json_lines::parse_body(black_box(&json), &mut s).unwrap();
            s
        })
    });

    let csv_data = csv_body();
    let format = CsvFormat::parse(Some(
        "2:metric:ask,3:metric:bid,1:label:ticker,4:label:market,5:time:unix_s",
    ))
    .unwrap();
    g.throughput(Throughput::Bytes(csv_data.len() as u64));
    g.bench_function("csv", |b| {
        b.iter(|| {
            let mut s = Count::default();
            csv::parse_body(black_box(&csv_data), format.clone(), 1, &mut s).unwrap();
            s
        })
    });

    let gz = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(&prom).unwrap();
        e.finish().unwrap()
    };
    g.throughput(Throughput::Bytes(prom.len() as u64));
    g.bench_function("prometheus_text_gzip_stream", |b| {
        b.iter(|| {
            let mut s = Count::default();
            let mut p = prometheus_text::PromTextParser::new(PromTextOptions::new(1));
            let mut d = BodyDecoder::stream(ContentEncoding::Gzip);
            let mut push = |piece: &[u8]| -> Result<(), BodyError> {
                p.feed(piece, &mut s).unwrap();
                Ok(())
            };
            for chunk in gz.chunks(16 * 1024) {
                d.feed(chunk, &mut push).unwrap();
            }
            d.finish(&mut push).unwrap();
            p.finish(&mut s).unwrap();
            s
        })
    });
    g.finish();
}

criterion_group!(parsers, benches);
criterion_main!(parsers);
