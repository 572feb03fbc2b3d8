//! Native import, NewRelic and Zabbix decoding throughput into a sink that only counts. The
//! native stream repeats the records of a real vmselect export (the golden vector's body), so
//! every codec it uses is exercised.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use shardgate_core::formats::zabbix::{self, ZabbixOptions};
use shardgate_core::formats::{native, newrelic, Sink};
use shardgate_core::model::{Label, Sample};

struct Count(usize);

impl Sink for Count {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.0 += labels.len() + samples.len();
    }
}

const ROUNDTRIP: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/formats-extra/native-roundtrip.json"
));

fn native_body() -> Vec<u8> {
    let v: serde_json::Value = serde_json::from_str(ROUNDTRIP).unwrap();
    let one = hex::decode(v["send"][0]["body_hex"].as_str().unwrap()).unwrap();
    let (header, records) = one.split_at(16);
    let mut body = header.to_vec();
    while body.len() < 1 << 20 {
        body.extend_from_slice(records);
    }
    body
}

fn newrelic_body() -> Vec<u8> {
    let mut events = Vec::new();
    for i in 0..2000 {
        events.push(format!(
            r#"{{"eventType":"SystemSample","timestamp":{},"entityKey":"host{}","cpuPercent":{}.5,"memoryUsedBytes":{},"diskUsedPercent":12.25,"hostname":"h{}"}}"#,
            1_700_000_000 + i,
            i % 50,
            i % 100,
            i * 4096,
            i % 50
        ));
    }
    format!(r#"[{{"EntityID":1,"Events":[{}]}}]"#, events.join(",")).into_bytes()
}

fn zabbix_body() -> Vec<u8> {
    let mut body = String::new();
    for i in 0..5000 {
        body.push_str(&format!(
            r#"{{"host":{{"host":"h{}","name":"Host {}"}},"groups":["G1","G2"],"item_tags":[{{"tag":"app","value":"web"}},{{"tag":"component","value":"cpu"}}],"itemid":{},"name":"system.cpu.load[all,avg1]","clock":{},"ns":123456789,"value":{}.25,"type":0}}"#,
            i % 40,
            i % 40,
            i,
            1_700_000_000 + i,
            i % 9
        ));
        body.push('\n');
    }
    body.into_bytes()
}

fn bench(c: &mut Criterion) {
    let native = native_body();
    let mut g = c.benchmark_group("native");
    g.throughput(Throughput::Bytes(native.len() as u64));
    g.bench_function("vmselect_export_1MiB", |b| {
        b.iter(|| {
            let mut n = Count(0);
            native::parse_body(black_box(&native), &mut n).unwrap();
            n.0
        })
    });
    g.finish();

    let nr = newrelic_body();
    let mut g = c.benchmark_group("newrelic");
    g.throughput(Throughput::Bytes(nr.len() as u64));
    g.bench_function("infra_events", |b| {
        b.iter(|| {
            let mut n = Count(0);
            newrelic::parse_body(black_box(&nr), 0, &mut n).unwrap();
            n.0
        })
    });
    g.finish();

    let zb = zabbix_body();
    let opts = ZabbixOptions::default();
    let mut g = c.benchmark_group("zabbix");
    g.throughput(Throughput::Bytes(zb.len() as u64));
    g.bench_function("history_lines", |b| {
        b.iter(|| {
            let mut n = Count(0);
            zabbix::parse_body(black_box(&zb), &opts, &mut n).unwrap();
            n.0
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
