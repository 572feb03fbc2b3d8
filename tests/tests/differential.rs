//! Differential test against a second real implementation: Debian's `victoria-metrics` 1.79.5
//! single node (installed by `.ci/run`, started here on loopback).
//!
//! A seeded generator makes at least 300 inputs per format, valid and broken, and each input
//! goes to both victoria-metrics and `shardgate` (which writes to recording storage nodes in
//! this test). Then the series sets must be equal: victoria-metrics' `/api/v1/export` against
//! the same export built from the rows the nodes received. The only differences allowed are
//! the ones in [`KNOWN_DIFFERENCES`], each naming the spec section that explains why today's
//! vminsert differs from v1.79; an entry that no longer matches anything fails the test too.
//!
//! Every generated input carries its own metric-name prefix (`p17_…` is Prometheus text input
//! 17), so any differing series is traced back to the input that made it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use support::export::{render_labels, Labels, NowWindow, SeriesSet, Ts, Value};
use support::node::RecordingNode;
use support::{free_port, http_request, send_tcp, shardgate_bin, unix_ms, Server};

const SEED: u64 = 0x5eed_1790;
const PER_FORMAT: usize = 300;
const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Format {
    PromText,
    RemoteWrite,
    JsonLines,
    Csv,
    Influx,
    Graphite,
    OpenTsdbTelnet,
    OpenTsdbHttp,
}

const FORMATS: [Format; 8] = [
    Format::PromText,
    Format::RemoteWrite,
    Format::JsonLines,
    Format::Csv,
    Format::Influx,
    Format::Graphite,
    Format::OpenTsdbTelnet,
    Format::OpenTsdbHttp,
];

impl Format {
    /// The metric-name prefix letter that ties a series to its input.
    fn prefix(self) -> char {
        match self {
            Format::PromText => 'p',
            Format::RemoteWrite => 'r',
            Format::JsonLines => 'j',
            Format::Csv => 'c',
            Format::Influx => 'i',
            Format::Graphite => 'g',
            Format::OpenTsdbTelnet => 'o',
            Format::OpenTsdbHttp => 'h',
        }
    }

    fn from_prefix(c: char) -> Option<Format> {
        FORMATS.into_iter().find(|f| f.prefix() == c)
    }
}

/// One generated input.
struct Input {
    format: Format,
    idx: usize,
    /// What the generator meant to make: `valid-…` or `broken-…`.
    kind: &'static str,
    /// Query string for the HTTP formats (CSV `format=`, Influx `precision=`), without `?`.
    query: String,
    body: Vec<u8>,
}

/// A difference between v1.79 and today's vminsert that this test accepts, by the inputs that
/// show it.
struct KnownDifference {
    name: &'static str,
    /// The spec section describing today's behaviour.
    spec: &'static str,
    format: Format,
    kinds: &'static [&'static str],
}

const KNOWN_DIFFERENCES: &[KnownDifference] = &[KnownDifference {
    name: "influx batch request with a bad line is rejected whole",
    spec: "formats/influx.md \"Batch vs stream mode\" and \"Errors and status\": in batch mode \
           any line error answers 400 and nothing from the body is written; v1.79 skipped the \
           bad line and wrote the others",
    format: Format::Influx,
    kinds: &["broken-after-valid"],
}];

#[test]
fn series_sets_match_victoria_metrics_1_79() {
    let vm_bin = Path::new(VICTORIA_METRICS);
    assert!(
        vm_bin.is_file(),
        "{VICTORIA_METRICS} is missing: install Debian's victoria-metrics package \
         (`apt-get install victoria-metrics`, as .ci/run does); this test needs it"
    );
    let gw_bin = shardgate_bin();
    let inputs = generate();
    for f in FORMATS {
        let n = inputs.iter().filter(|i| i.format == f).count();
        assert!(n >= PER_FORMAT, "{f:?}: only {n} inputs generated");
    }

    let data = std::env::temp_dir().join(format!("shardgate-differential-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data).expect("create the victoria-metrics data dir");

    let vm = Endpoints::free();
    let mut vm_proc = Server::start(
        "victoria-metrics",
        vm_bin,
        &[
            format!("-storageDataPath={}", data.display()),
            format!("-httpListenAddr={}", vm.http),
            format!("-graphiteListenAddr={}", vm.graphite),
            format!("-influxListenAddr={}", vm.influx),
            format!("-opentsdbListenAddr={}", vm.opentsdb),
            format!("-opentsdbHTTPListenAddr={}", vm.opentsdb_http),
            // The generated timestamps are from 2023; the default retention is one month.
            "-retentionPeriod=100y".into(),
            "-loggerLevel=ERROR".into(),
        ],
        &data,
    );
    vm_proc
        .wait_http_ok(&vm.http, "/health", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    let nodes: Vec<RecordingNode> = (0..3)
        .map(|_| {
            RecordingNode::start(&format!("127.0.0.1:{}", free_port()))
                .unwrap_or_else(|e| panic!("{e}"))
        })
        .collect();
    let gw = Endpoints::free();
    let storage: Vec<&str> = nodes.iter().map(|n| n.addr.as_str()).collect();
    let mut gw_proc = Server::start(
        "shardgate",
        &gw_bin,
        &[
            format!("-storageNode={}", storage.join(",")),
            format!("-httpListenAddr={}", gw.http),
            format!("-graphiteListenAddr={}", gw.graphite),
            format!("-influxListenAddr={}", gw.influx),
            format!("-opentsdbListenAddr={}", gw.opentsdb),
            format!("-opentsdbHTTPListenAddr={}", gw.opentsdb_http),
        ],
        &support::workspace_root(),
    );
    gw_proc
        .wait_http_ok(&gw.http, "/health", Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{e}"));

    let started = Instant::now();
    // victoria-metrics reads a clock cached once per second and rounds Graphite and OpenTSDB
    // "now" down to the second, so its "now" may be up to 2 s before the run started.
    let window_from = unix_ms() - 5_000;
    let mut status_diffs: BTreeMap<(Format, &str, String, String), usize> = BTreeMap::new();
    let mut send_errors = Vec::new();
    for f in FORMATS {
        let batch: Vec<&Input> = inputs.iter().filter(|i| i.format == f).collect();
        match f {
            // The line protocols over TCP: one connection per format and target, inputs in
            // order, each ending with a newline so that one cannot spill into the next.
            Format::Graphite | Format::OpenTsdbTelnet => {
                let all: Vec<u8> = batch.iter().flat_map(|i| i.body.clone()).collect();
                for (who, ep) in [("victoria-metrics", &vm), ("shardgate", &gw)] {
                    let addr = if f == Format::Graphite {
                        &ep.graphite
                    } else {
                        &ep.opentsdb
                    };
                    if let Err(e) = send_tcp(addr, &all) {
                        send_errors.push(format!("{f:?} to {who}: {e}"));
                    }
                }
            }
            _ => {
                for input in batch {
                    let a = send_http(&vm, input, false);
                    let b = send_http(&gw, input, true);
                    match (a, b) {
                        (Ok(a), Ok(b)) => {
                            if class(a) != class(b) {
                                *status_diffs
                                    .entry((f, input.kind, a.to_string(), b.to_string()))
                                    .or_default() += 1;
                            }
                        }
                        (a, b) => send_errors.push(format!(
                            "{f:?} input {} ({}): victoria-metrics {a:?}, shardgate {b:?}",
                            input.idx, input.kind
                        )),
                    }
                }
            }
        }
    }
    println!(
        "sent {} inputs to both in {} ms",
        inputs.len(),
        started.elapsed().as_millis()
    );

    let window = NowWindow {
        from_ms: window_from,
        to_ms: unix_ms() + 60_000,
    };
    let gw_set = settle_nodes(&nodes, window);
    let vm_set = settle_vm(&vm, window).unwrap_or_else(|e| {
        panic!(
            "cannot export from victoria-metrics: {e}\n{}",
            vm_proc.log_tail(2000)
        )
    });
    println!(
        "victoria-metrics exported {} series, the storage nodes {}",
        vm_set.series.len(),
        gw_set.series.len()
    );

    let report = compare(&inputs, &vm_set, &gw_set);
    let mut msg = String::new();
    if !send_errors.is_empty() {
        let _ = writeln!(msg, "inputs that could not be sent:");
        for e in send_errors.iter().take(20) {
            let _ = writeln!(msg, "  {e}");
        }
    }
    for e in nodes.iter().flat_map(|n| n.errors()) {
        let _ = writeln!(msg, "storage node protocol problem: {e}");
    }
    // Statuses are not part of the contract with v1.79 (its error handling differs), but they
    // are shown so that a change is visible.
    if !status_diffs.is_empty() {
        println!("HTTP status classes that differ (format, kind, v1.79, shardgate): count");
        for ((f, kind, a, b), n) in &status_diffs {
            println!("  {f:?} {kind}: {a} vs {b}: {n}");
        }
    }
    for (k, n) in &report.excused {
        println!(
            "known difference {:?} explained {n} input(s)",
            KNOWN_DIFFERENCES[*k].name
        );
    }
    for (k, kd) in KNOWN_DIFFERENCES.iter().enumerate() {
        if !report.excused.contains_key(&k) {
            let _ = writeln!(
                msg,
                "known difference {:?} ({}) no longer shows; remove it from KNOWN_DIFFERENCES",
                kd.name, kd.spec
            );
        }
    }
    msg.push_str(&report.unexplained);
    drop(gw_proc);
    drop(vm_proc);
    for n in nodes {
        n.stop();
    }
    let _ = std::fs::remove_dir_all(&data);
    assert!(
        msg.is_empty(),
        "shardgate and victoria-metrics 1.79 differ:\n{msg}"
    );
}

struct Endpoints {
    http: String,
    graphite: String,
    influx: String,
    opentsdb: String,
    opentsdb_http: String,
}

impl Endpoints {
    fn free() -> Endpoints {
        let a = || format!("127.0.0.1:{}", free_port());
        Endpoints {
            http: a(),
            graphite: a(),
            influx: a(),
            opentsdb: a(),
            opentsdb_http: a(),
        }
    }
}

fn class(status: u16) -> u16 {
    status / 100
}

fn send_http(ep: &Endpoints, input: &Input, gateway: bool) -> Result<u16, String> {
    let (path, headers): (&str, Vec<(String, String)>) = match (input.format, gateway) {
        (Format::PromText, false) => ("/api/v1/import/prometheus", vec![]),
        (Format::PromText, true) => ("/insert/0/prometheus/api/v1/import/prometheus", vec![]),
        (Format::RemoteWrite, g) => (
            if g {
                "/insert/0/prometheus/api/v1/write"
            } else {
                "/api/v1/write"
            },
            vec![
                ("Content-Encoding".into(), "snappy".into()),
                ("Content-Type".into(), "application/x-protobuf".into()),
                ("X-Prometheus-Remote-Write-Version".into(), "0.1.0".into()),
            ],
        ),
        (Format::JsonLines, false) => ("/api/v1/import", vec![]),
        (Format::JsonLines, true) => ("/insert/0/prometheus/api/v1/import", vec![]),
        (Format::Csv, false) => ("/api/v1/import/csv", vec![]),
        (Format::Csv, true) => ("/insert/0/prometheus/api/v1/import/csv", vec![]),
        (Format::Influx, false) => ("/write", vec![]),
        (Format::Influx, true) => ("/insert/0/influx/write", vec![]),
        (Format::OpenTsdbHttp, false) => ("/api/put", vec![]),
        (Format::OpenTsdbHttp, true) => ("/insert/0/opentsdb/api/put", vec![]),
        (Format::Graphite | Format::OpenTsdbTelnet, _) => return Err("not an HTTP format".into()),
    };
    let addr = if input.format == Format::OpenTsdbHttp {
        &ep.opentsdb_http
    } else {
        &ep.http
    };
    let full = if input.query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", input.query)
    };
    http_request(addr, "POST", &full, &headers, &input.body).map(|r| r.status)
}

/// The nodes' export once the row counts stop changing.
fn settle_nodes(nodes: &[RecordingNode], window: NowWindow) -> SeriesSet {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = usize::MAX;
    let mut stable_since = Instant::now();
    loop {
        let n: usize = nodes.iter().map(|n| n.row_count()).sum();
        if n != last {
            last = n;
            stable_since = Instant::now();
        }
        if stable_since.elapsed() >= Duration::from_millis(700) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let rows: Vec<_> = nodes.iter().flat_map(|n| n.rows()).collect();
    SeriesSet::from_rows(&rows, window)
}

/// victoria-metrics' export after a forced flush, once two exports in a row agree.
fn settle_vm(vm: &Endpoints, window: NowWindow) -> Result<SeriesSet, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<SeriesSet> = None;
    loop {
        let r = http_request(&vm.http, "GET", "/internal/force_flush", &[], b"")?;
        if r.status != 200 {
            return Err(format!("force_flush answered {}", r.status));
        }
        let end_s = unix_ms() / 1000 + 86_400;
        // The second selector finds the series without a metric name (they carry `src`).
        let path = format!(
            "/api/v1/export?match%5B%5D=%7B__name__%21%3D%22%22%7D\
             &match%5B%5D=%7Bsrc%21%3D%22%22%7D&start=0&end={end_s}"
        );
        let r = http_request(&vm.http, "GET", &path, &[], b"")?;
        if r.status != 200 {
            return Err(format!(
                "export answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        let set = SeriesSet::from_export(&String::from_utf8_lossy(&r.body), window)?;
        if last.as_ref() == Some(&set) || Instant::now() >= deadline {
            return Ok(set);
        }
        last = Some(set);
        std::thread::sleep(Duration::from_millis(700));
    }
}

struct Report {
    /// Known difference index → inputs it explained.
    excused: BTreeMap<usize, usize>,
    unexplained: String,
}

/// Which input a series came from: the first label value that starts with a format prefix and
/// the input number (`p17_…`).
fn input_of(labels: &Labels) -> Option<(Format, usize)> {
    let mut names: Vec<&str> = labels
        .iter()
        .filter(|(k, _)| k == "__name__")
        .map(|(_, v)| v.as_str())
        .collect();
    names.extend(labels.iter().map(|(_, v)| v.as_str()));
    names.into_iter().find_map(|v| {
        let mut chars = v.chars();
        let format = Format::from_prefix(chars.next()?)?;
        let digits: String = chars.clone().take_while(|c| c.is_ascii_digit()).collect();
        let after = chars.nth(digits.len());
        if digits.is_empty() || after != Some('_') {
            return None;
        }
        Some((format, digits.parse().ok()?))
    })
}

fn compare(inputs: &[Input], vm: &SeriesSet, gw: &SeriesSet) -> Report {
    type Side = BTreeSet<(Ts, Value)>;
    type Differing<'a> = Vec<(&'a Labels, &'a Side, &'a Side)>;
    let empty = Side::new();
    // Input → the series where the two sides differ.
    let mut by_input: BTreeMap<Option<(Format, usize)>, Differing> = BTreeMap::new();
    let keys: BTreeSet<&Labels> = vm.series.keys().chain(gw.series.keys()).collect();
    for labels in keys {
        let a = vm.series.get(labels).unwrap_or(&empty);
        let b = gw.series.get(labels).unwrap_or(&empty);
        if a != b {
            by_input
                .entry(input_of(labels))
                .or_default()
                .push((labels, a, b));
        }
    }
    let mut excused = BTreeMap::new();
    // (format, kind) → inputs that differ, and the first of them spelled out.
    let mut groups: BTreeMap<(Option<Format>, &str), (usize, String)> = BTreeMap::new();
    for (who, diffs) in &by_input {
        let input = who.and_then(|(f, idx)| inputs.iter().find(|i| i.format == f && i.idx == idx));
        if let Some(input) = input {
            let known = KNOWN_DIFFERENCES
                .iter()
                .position(|k| k.format == input.format && k.kinds.contains(&input.kind));
            if let Some(k) = known {
                *excused.entry(k).or_insert(0) += 1;
                continue;
            }
        }
        let key = match input {
            Some(i) => (Some(i.format), i.kind),
            None => (None, "series not traceable to an input"),
        };
        let entry = groups.entry(key).or_insert_with(|| (0, String::new()));
        entry.0 += 1;
        if entry.0 > 1 {
            continue;
        }
        if let Some(i) = input {
            let _ = writeln!(
                entry.1,
                "  e.g. input {}, query {:?}, body {:?}",
                i.idx,
                i.query,
                preview(&i.body)
            );
        }
        for (labels, a, b) in diffs.iter().take(5) {
            let _ = writeln!(
                entry.1,
                "    {}\n      victoria-metrics: {}\n      shardgate:        {}",
                render_labels(labels),
                samples(a),
                samples(b)
            );
        }
    }
    let mut unexplained = String::new();
    if !groups.is_empty() {
        let total: usize = groups.values().map(|(n, _)| n).sum();
        let _ = writeln!(
            unexplained,
            "{total} input(s) differ with no known difference to explain them, by format and kind:"
        );
        for ((f, kind), (n, example)) in &groups {
            let _ = write!(unexplained, "\n== {f:?} {kind}: {n} input(s)\n{example}");
        }
    }
    Report {
        excused,
        unexplained,
    }
}

fn samples(s: &BTreeSet<(Ts, Value)>) -> String {
    if s.is_empty() {
        return "(absent)".into();
    }
    s.iter()
        .map(|(t, v)| format!("{v} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn preview(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    if s.chars().count() > 300 {
        format!("{}…", s.chars().take(300).collect::<String>())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// Generators. Each input gets a kind; about two thirds are valid.

const BASE_MS: i64 = 1_700_000_000_000;

struct Gen {
    rng: ChaCha8Rng,
}

impl Gen {
    fn pick<'a, T: ?Sized>(&mut self, xs: &'a [&'a T]) -> &'a T {
        xs.choose(&mut self.rng).expect("non-empty choice")
    }

    fn ts_ms(&mut self) -> i64 {
        BASE_MS + self.rng.gen_range(0..10_000_000)
    }

    fn ts_s(&mut self) -> i64 {
        BASE_MS / 1000 + self.rng.gen_range(0..10_000)
    }

    /// Values within a range victoria-metrics stores exactly: it keeps a series' samples as
    /// decimals with one shared exponent per block, so mixing 1e15 and 1e-3 in one series would
    /// lose digits there, a storage artifact this test is not about.
    fn value(&mut self) -> &'static str {
        self.pick(&[
            "0", "1", "-1", "1.5", "42", "-3.25", "100000", "1e3", "2.5e-3", "0.1", "123.456",
            "-0.75", "1e-7", "65536",
        ])
    }

    fn label_name(&mut self) -> &'static str {
        self.pick(&["host", "dc", "job", "instance", "le", "zone", "a_b"])
    }

    fn label_value(&mut self) -> &'static str {
        self.pick(&[
            "a",
            "b1",
            "us-east-1",
            "x.y",
            "10.0.0.1:9100",
            "ü",
            "0.5",
            "web",
        ])
    }

    /// 0–3 distinct labels.
    fn labels(&mut self) -> Vec<(&'static str, &'static str)> {
        let n = self.rng.gen_range(0..4);
        let mut out: Vec<(&'static str, &'static str)> = Vec::new();
        for _ in 0..n {
            let k = self.label_name();
            if out.iter().all(|(x, _)| *x != k) {
                out.push((k, self.label_value()));
            }
        }
        out
    }

    fn metric(&mut self, f: Format, idx: usize) -> String {
        let base = self.pick(&["cpu", "mem_used", "req_total", "temp_c", "up"]);
        format!("{}{idx}_{base}", f.prefix())
    }

    /// True for about two inputs in three.
    fn valid(&mut self) -> bool {
        self.rng.gen_bool(0.65)
    }
}

fn generate() -> Vec<Input> {
    let mut g = Gen {
        rng: ChaCha8Rng::seed_from_u64(SEED),
    };
    let mut out = Vec::new();
    for f in FORMATS {
        for idx in 0..PER_FORMAT {
            let (kind, query, body) = match f {
                Format::PromText => gen_prom(&mut g, idx),
                Format::RemoteWrite => gen_rw(&mut g, idx),
                Format::JsonLines => gen_json(&mut g, idx),
                Format::Csv => gen_csv(&mut g, idx),
                Format::Influx => gen_influx(&mut g, idx),
                Format::Graphite => gen_graphite(&mut g, idx),
                Format::OpenTsdbTelnet => gen_opentsdb(&mut g, idx),
                Format::OpenTsdbHttp => gen_opentsdb_http(&mut g, idx),
            };
            out.push(Input {
                format: f,
                idx,
                kind,
                query,
                body,
            });
        }
    }
    out
}

type Generated = (&'static str, String, Vec<u8>);

fn prom_labels(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{{{}}}", inner.join(","))
}

fn gen_prom(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::PromText, idx);
    let labels = prom_labels(&g.labels());
    let v = g.value();
    let ts = g.ts_ms();
    let (kind, text) = if g.valid() {
        match g.rng.gen_range(0..6) {
            0 => ("valid", format!("{name}{labels} {v} {ts}\n")),
            1 => ("valid-no-timestamp", format!("{name}{labels} {v}\n")),
            2 => (
                "valid-comments",
                format!("# HELP {name} help\n# TYPE {name} gauge\n\n{name}{labels} {v} {ts}\n"),
            ),
            3 => (
                "valid-two-series",
                format!(
                    "{name}{{k=\"1\"}} {v} {ts}\n{name}{{k=\"2\"}} {v} {}\n",
                    ts + 1
                ),
            ),
            4 => ("valid-special-value", {
                let sv = g.pick(&["NaN", "+Inf", "-Inf"]);
                format!("{name}{labels} {sv} {ts}\n")
            }),
            _ => ("valid-crlf", format!("{name}{labels} {v} {ts}\r\n")),
        }
    } else {
        match g.rng.gen_range(0..6) {
            0 => ("broken-missing-value", format!("{name}{labels}\n")),
            1 => ("broken-bad-value", format!("{name}{labels} abc {ts}\n")),
            2 => (
                "broken-unclosed-brace",
                format!("{name}{{a=\"b\" {v} {ts}\n"),
            ),
            3 => ("broken-unquoted-label", format!("{name}{{a=b}} {v} {ts}\n")),
            4 => ("broken-bad-timestamp", format!("{name} {v} 12x\n")),
            _ => (
                "broken-after-valid",
                format!("{name}{labels} {v} {ts}\n}}{{ garbage\n"),
            ),
        }
    };
    (kind, String::new(), text.into_bytes())
}

// A remote-write body by hand: WriteRequest{1: TimeSeries{1: Label{1,2}, 2: Sample{1 double,
// 2 int64}}}, snappy block format.
fn pb_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn pb_bytes(buf: &mut Vec<u8>, field: u64, data: &[u8]) {
    pb_varint(buf, field << 3 | 2);
    pb_varint(buf, data.len() as u64);
    buf.extend_from_slice(data);
}

fn pb_series(labels: &[(String, String)], samples: &[(f64, i64)]) -> Vec<u8> {
    let mut ts = Vec::new();
    for (k, v) in labels {
        let mut l = Vec::new();
        pb_bytes(&mut l, 1, k.as_bytes());
        pb_bytes(&mut l, 2, v.as_bytes());
        pb_bytes(&mut ts, 1, &l);
    }
    for (v, t) in samples {
        let mut s = Vec::new();
        pb_varint(&mut s, 1 << 3 | 1);
        s.extend_from_slice(&v.to_le_bytes());
        pb_varint(&mut s, 2 << 3);
        pb_varint(&mut s, *t as u64);
        pb_bytes(&mut ts, 2, &s);
    }
    ts
}

fn snappy(data: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(data)
        .expect("snappy into memory")
}

fn gen_rw(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::RemoteWrite, idx);
    let mut labels: Vec<(String, String)> = vec![("__name__".into(), name.clone())];
    labels.extend(
        g.labels()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let n = g.rng.gen_range(1..4);
    let samples: Vec<(f64, i64)> = (0..n)
        .map(|_| {
            let v: f64 = g.value().parse().expect("generator values parse");
            (v, g.ts_ms())
        })
        .collect();
    let mut req = Vec::new();
    let (kind, body) = if g.valid() {
        match g.rng.gen_range(0..4) {
            0 => {
                pb_bytes(&mut req, 1, &pb_series(&labels, &samples));
                ("valid", snappy(&req))
            }
            1 => {
                let mut other = labels.clone();
                other.push(("replica".into(), "2".into()));
                pb_bytes(&mut req, 1, &pb_series(&labels, &samples));
                pb_bytes(&mut req, 1, &pb_series(&other, &samples));
                ("valid-two-series", snappy(&req))
            }
            2 => {
                let stale = f64::from_bits(shardgate_core::model::STALE_NAN_BITS);
                pb_bytes(&mut req, 1, &pb_series(&labels, &[(stale, samples[0].1)]));
                ("valid-stale-nan", snappy(&req))
            }
            _ => {
                // No metric name: the series is traced by the `src` label instead.
                let nameless = vec![
                    ("src".to_string(), format!("r{idx}_src")),
                    ("job".to_string(), "x".to_string()),
                ];
                pb_bytes(&mut req, 1, &pb_series(&nameless, &samples));
                ("valid-no-metric-name", snappy(&req))
            }
        }
    } else {
        pb_bytes(&mut req, 1, &pb_series(&labels, &samples));
        match g.rng.gen_range(0..3) {
            0 => ("broken-not-snappy", req),
            1 => {
                let cut = req.len() / 2;
                ("broken-truncated-protobuf", snappy(&req[..cut]))
            }
            _ => {
                let junk: Vec<u8> = (0..g.rng.gen_range(1..40)).map(|_| g.rng.gen()).collect();
                ("broken-garbage", junk)
            }
        }
    };
    (kind, String::new(), body)
}

fn json_metric(name: Option<&str>, labels: &[(&str, &str)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(n) = name {
        parts.push(format!("\"__name__\":\"{n}\""));
    }
    parts.extend(labels.iter().map(|(k, v)| format!("\"{k}\":\"{v}\"")));
    format!("{{{}}}", parts.join(","))
}

fn gen_json(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::JsonLines, idx);
    let labels = g.labels();
    let n = g.rng.gen_range(1..4);
    let values: Vec<&str> = (0..n).map(|_| g.value()).collect();
    let stamps: Vec<String> = (0..n).map(|_| g.ts_ms().to_string()).collect();
    let m = json_metric(Some(&name), &labels);
    let line = |vals: &str, ts: &str| {
        format!("{{\"metric\":{m},\"values\":[{vals}],\"timestamps\":[{ts}]}}\n")
    };
    let (kind, text) = if g.valid() {
        match g.rng.gen_range(0..3) {
            0 => ("valid", line(&values.join(","), &stamps.join(","))),
            1 => (
                "valid-two-lines",
                format!(
                    "{}{{\"metric\":{},\"values\":[1],\"timestamps\":[{}]}}\n",
                    line(&values.join(","), &stamps.join(",")),
                    json_metric(Some(&name), &[("k", "2")]),
                    stamps[0]
                ),
            ),
            _ => ("valid-null-value", line("null", &stamps[0])),
        }
    } else {
        match g.rng.gen_range(0..5) {
            0 => (
                "broken-length-mismatch",
                line(&format!("{},7", values.join(",")), &stamps.join(",")),
            ),
            1 => (
                "broken-no-metric",
                format!("{{\"values\":[1],\"timestamps\":[{}]}}\n", stamps[0]),
            ),
            2 => ("broken-json", format!("{{\"metric\":{m},\"values\":[1\n")),
            3 => ("broken-string-value", line("\"1\"", &stamps[0])),
            _ => (
                "broken-after-valid",
                format!(
                    "{}{{not json}}\n",
                    line(&values.join(","), &stamps.join(","))
                ),
            ),
        }
    };
    (kind, String::new(), text.into_bytes())
}

fn gen_csv(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::Csv, idx);
    let v = g.value();
    let host = g.label_value();
    let ts = g.ts_ms();
    let fmt_ms = format!("format=1:metric:{name},2:label:host,3:time:unix_ms");
    let (kind, query, text) = if g.valid() {
        match g.rng.gen_range(0..5) {
            0 => ("valid", fmt_ms, format!("{v},{host},{ts}\n")),
            1 => (
                "valid-two-rows",
                fmt_ms,
                format!("{v},{host},{ts}\n{v},other,{}\n", ts + 1),
            ),
            2 => (
                "valid-unix-s",
                format!("format=1:metric:{name},2:label:host,3:time:unix_s"),
                format!("{v},{host},{}\n", ts / 1000),
            ),
            3 => (
                "valid-rfc3339",
                format!("format=1:metric:{name},2:time:rfc3339"),
                format!("{v},2023-11-14T22:13:{:02}Z\n", idx % 60),
            ),
            _ => (
                "valid-no-time",
                format!("format=2:metric:{name},1:label:host"),
                format!("{host},{v}\n"),
            ),
        }
    } else {
        match g.rng.gen_range(0..4) {
            0 => ("broken-bad-value", fmt_ms, format!("abc,{host},{ts}\n")),
            1 => ("broken-missing-column", fmt_ms, format!("{v}\n")),
            2 => ("broken-bad-time", fmt_ms, format!("{v},{host},xyz\n")),
            _ => (
                "broken-format-arg",
                "format=1:metric,3:time:unix_ms".to_string(),
                format!("{v},{host},{ts}\n"),
            ),
        }
    };
    (kind, query, text.into_bytes())
}

fn gen_influx(g: &mut Gen, idx: usize) -> Generated {
    let m = format!("i{idx}_m");
    let tags: String = g
        .labels()
        .iter()
        .map(|(k, v)| format!(",{k}={v}"))
        .collect();
    let v = g.value();
    let ts_ns = g.ts_ms() * 1_000_000;
    let (kind, query, text) = if g.valid() {
        match g.rng.gen_range(0..6) {
            0 => ("valid", String::new(), format!("{m}{tags} f={v} {ts_ns}\n")),
            1 => (
                "valid-multi-field",
                String::new(),
                format!("{m}{tags} f={v},g=2i,h=true {ts_ns}\n"),
            ),
            2 => (
                "valid-no-timestamp",
                String::new(),
                format!("{m}{tags} f={v}\n"),
            ),
            3 => (
                "valid-precision-ms",
                "precision=ms".into(),
                format!("{m}{tags} f={v} {}\n", ts_ns / 1_000_000),
            ),
            4 => (
                "valid-string-field",
                String::new(),
                format!("{m}{tags} s=\"text\",f={v} {ts_ns}\n"),
            ),
            _ => (
                "valid-escaped-tag",
                String::new(),
                format!("{m},t=a\\ b\\,c f={v} {ts_ns}\n"),
            ),
        }
    } else {
        match g.rng.gen_range(0..4) {
            0 => ("broken-no-fields", String::new(), format!("{m}{tags}\n")),
            1 => (
                "broken-bad-field",
                String::new(),
                format!("{m}{tags} f=abc {ts_ns}\n"),
            ),
            2 => (
                "broken-bad-timestamp",
                String::new(),
                format!("{m} f={v} 12x\n"),
            ),
            _ => (
                "broken-after-valid",
                String::new(),
                format!("{m} f={v} {ts_ns}\nbroken line here\n"),
            ),
        }
    };
    (kind, query, text.into_bytes())
}

fn gen_graphite(g: &mut Gen, idx: usize) -> Generated {
    let name = format!("g{idx}_{}", g.pick(&["cpu.user", "disk.sda.io", "x"]));
    let v = g.value();
    let ts = g.ts_s();
    let (kind, text) = if g.valid() {
        match g.rng.gen_range(0..5) {
            0 => ("valid", format!("{name} {v} {ts}\n")),
            1 => {
                let (k, lv) = (g.label_name(), g.label_value());
                ("valid-tags", format!("{name};{k}={lv} {v} {ts}\n"))
            }
            2 => ("valid-no-timestamp", format!("{name} {v}\n")),
            3 => ("valid-fractional-timestamp", format!("{name} {v} {ts}.5\n")),
            _ => ("valid-minus-one-timestamp", format!("{name} {v} -1\n")),
        }
    } else {
        match g.rng.gen_range(0..3) {
            0 => ("broken-missing-value", format!("{name}\n")),
            1 => ("broken-bad-value", format!("{name} abc {ts}\n")),
            _ => ("broken-bad-timestamp", format!("{name} {v} 12x\n")),
        }
    };
    (kind, String::new(), text.into_bytes())
}

fn gen_opentsdb(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::OpenTsdbTelnet, idx);
    let v = g.value();
    let ts = g.ts_s();
    let (k, lv) = (g.label_name(), g.label_value());
    let (kind, text) = if g.valid() {
        match g.rng.gen_range(0..4) {
            0 => ("valid", format!("put {name} {ts} {v} {k}={lv}\n")),
            1 => (
                "valid-ms-timestamp",
                format!("put {name} {}123 {v} {k}={lv}\n", ts),
            ),
            2 => (
                "valid-two-tags",
                format!("put {name} {ts} {v} {k}={lv} extra=1\n"),
            ),
            _ => ("valid-no-tags", format!("put {name} {ts} {v}\n")),
        }
    } else {
        match g.rng.gen_range(0..4) {
            0 => ("broken-no-put", format!("{name} {ts} {v} {k}={lv}\n")),
            1 => (
                "broken-bad-value",
                format!("put {name} {ts} abc {k}={lv}\n"),
            ),
            2 => (
                "broken-bad-timestamp",
                format!("put {name} 12x {v} {k}={lv}\n"),
            ),
            _ => ("broken-missing-fields", format!("put {name}\n")),
        }
    };
    (kind, String::new(), text.into_bytes())
}

fn gen_opentsdb_http(g: &mut Gen, idx: usize) -> Generated {
    let name = g.metric(Format::OpenTsdbHttp, idx);
    let v = g.value();
    let ts = g.ts_s();
    let (k, lv) = (g.label_name(), g.label_value());
    let obj = |ts: String, v: &str| {
        format!("{{\"metric\":\"{name}\",\"timestamp\":{ts},\"value\":{v},\"tags\":{{\"{k}\":\"{lv}\"}}}}")
    };
    let (kind, text) = if g.valid() {
        match g.rng.gen_range(0..4) {
            0 => ("valid", obj(ts.to_string(), v)),
            1 => (
                "valid-array",
                format!(
                    "[{},{}]",
                    obj(ts.to_string(), v),
                    obj((ts + 1).to_string(), "2")
                ),
            ),
            2 => ("valid-ms-timestamp", obj(format!("{ts}456"), v)),
            _ => (
                "valid-no-tags",
                format!("{{\"metric\":\"{name}\",\"timestamp\":{ts},\"value\":{v}}}"),
            ),
        }
    } else {
        match g.rng.gen_range(0..4) {
            0 => ("broken-json", format!("{{\"metric\":\"{name}\",")),
            1 => (
                "broken-no-metric",
                format!("{{\"timestamp\":{ts},\"value\":{v},\"tags\":{{\"a\":\"b\"}}}}"),
            ),
            2 => ("broken-string-value", obj(ts.to_string(), "\"abc\"")),
            _ => (
                "broken-no-value",
                format!("{{\"metric\":\"{name}\",\"timestamp\":{ts},\"tags\":{{\"a\":\"b\"}}}}"),
            ),
        }
    };
    (kind, String::new(), text.into_bytes())
}
