//! Request bodies for every supported ingestion format, generated up front.
//!
//! All formats describe the same workload: sample `k` (0-based, `k < samples`) belongs to series
//! `k % series` and to round `k / series`; a round is one scrape of every series, `step_ms` apart.
//! Requests carry `batch` consecutive samples each, so with the defaults (20,000 series, 10,000
//! samples per request) every request holds one sample of half of the series.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;

/// The ingestion format the load is sent in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text exposition to `/api/v1/import/prometheus`.
    Prometheus,
    /// Prometheus remote write (protobuf + snappy) to `/api/v1/write`.
    RemoteWrite,
    /// Influx line protocol to `/influx/write`, millisecond timestamps.
    Influx,
    /// VictoriaMetrics JSON lines to `/api/v1/import`.
    JsonLines,
    /// CSV to `/api/v1/import/csv`.
    Csv,
}

/// The `format` query argument that CSV bodies are written for.
pub const CSV_FORMAT: &str =
    "1:label:instance,2:label:job,3:label:series,4:metric:load_metric,5:time:unix_ms";

/// Metric names cycle through this many values so the load has several metric families, as a
/// real scrape does, while the `series` label keeps every series distinct.
const METRIC_NAMES: u64 = 50;
/// Series per `instance` label value, like the targets of one scrape job.
const SERIES_PER_INSTANCE: u64 = 100;

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Ok(match s {
            "prometheus" | "prometheus-text" | "text" => Format::Prometheus,
            "remote-write" | "remotewrite" | "rw" => Format::RemoteWrite,
            "influx" => Format::Influx,
            "jsonl" | "json" | "vmimport" => Format::JsonLines,
            "csv" => Format::Csv,
            _ => {
                return Err(format!(
                    "unknown format {s:?}; want prometheus, remote-write, influx, jsonl or csv"
                ))
            }
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Prometheus => "prometheus",
            Format::RemoteWrite => "remote-write",
            Format::Influx => "influx",
            Format::JsonLines => "jsonl",
            Format::Csv => "csv",
        })
    }
}

impl Format {
    /// Path and query of the insert endpoint for `tenant` (`0`, `7` or `7:3`).
    pub fn path(self, tenant: &str) -> String {
        let suffix = match self {
            Format::Prometheus => "prometheus/api/v1/import/prometheus".to_string(),
            Format::RemoteWrite => "prometheus/api/v1/write".to_string(),
            Format::Influx => "influx/write?precision=ms".to_string(),
            Format::JsonLines => "prometheus/api/v1/import".to_string(),
            Format::Csv => format!("prometheus/api/v1/import/csv?format={CSV_FORMAT}"),
        };
        format!("/insert/{tenant}/{suffix}")
    }

    /// Request headers a real client of this format sends.
    pub fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Format::RemoteWrite => &[
                ("Content-Type", "application/x-protobuf"),
                ("Content-Encoding", "snappy"),
                ("X-Prometheus-Remote-Write-Version", "0.1.0"),
            ],
            Format::Prometheus | Format::Influx => &[("Content-Type", "text/plain")],
            Format::JsonLines => &[("Content-Type", "application/jsonl")],
            Format::Csv => &[("Content-Type", "text/csv")],
        }
    }
}

/// What to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Total samples over all requests.
    pub samples: u64,
    /// Distinct series the samples are spread over.
    pub series: u64,
    /// Samples per request.
    pub batch: u64,
    /// Timestamp of the first round.
    pub start_ms: i64,
    /// Distance between rounds.
    pub step_ms: i64,
}

impl Workload {
    /// Rounds needed to send every sample (the last may be partial).
    pub fn rounds(&self) -> u64 {
        self.samples.div_ceil(self.series.max(1))
    }

    /// Number of requests the workload needs.
    pub fn requests(&self) -> u64 {
        self.samples.div_ceil(self.batch.max(1))
    }

    /// Series and timestamp of sample `k`.
    pub fn sample(&self, k: u64) -> (u64, i64, f64) {
        let series = self.series.max(1);
        let s = k % series;
        let round = k / series;
        let ts = self
            .start_ms
            .saturating_add((round as i64).saturating_mul(self.step_ms));
        (s, ts, value(s, round))
    }
}

/// Deterministic values with a fractional part, so the float formatter and parser do real work
/// (an all-integer load would flatter text formats).
fn value(series: u64, round: u64) -> f64 {
    let x = (series.wrapping_mul(7919) + round.wrapping_mul(104_729)) % 1_000_000;
    x as f64 / 4.0
}

/// The labels of series `s`, metric name first, then the rest sorted by name.
pub fn series_labels(s: u64) -> [(&'static str, String); 4] {
    [
        ("__name__", metric_name(s)),
        ("instance", format!("host-{}", s / SERIES_PER_INSTANCE)),
        ("job", "load".to_string()),
        ("series", s.to_string()),
    ]
}

fn metric_name(s: u64) -> String {
    format!("load_metric_{}", s % METRIC_NAMES)
}

/// One pre-generated request.
#[derive(Clone, Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub samples: u64,
}

/// Generate every request body of `w` in `format`.
pub fn generate(format: Format, w: &Workload) -> Vec<Body> {
    let batch = w.batch.max(1);
    let mut out = Vec::with_capacity(usize::try_from(w.requests()).unwrap_or(0).min(1 << 20));
    let mut first = 0;
    while first < w.samples {
        let end = first.saturating_add(batch).min(w.samples);
        let bytes = match format {
            Format::Prometheus => prometheus_text(w, first, end),
            Format::RemoteWrite => remote_write(w, first, end),
            Format::Influx => influx(w, first, end),
            Format::JsonLines => json_lines(w, first, end),
            Format::Csv => csv(w, first, end),
        };
        out.push(Body {
            bytes,
            samples: end - first,
        });
        first = end;
    }
    out
}

/// Samples `first..end` grouped by series, in order of first appearance.
fn group(w: &Workload, first: u64, end: u64) -> Vec<(u64, Vec<(i64, f64)>)> {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut groups: Vec<(u64, Vec<(i64, f64)>)> = Vec::new();
    for k in first..end {
        let (s, ts, v) = w.sample(k);
        let i = *index.entry(s).or_insert_with(|| {
            groups.push((s, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((ts, v));
    }
    groups
}

fn prometheus_text(w: &Workload, first: u64, end: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(((end - first) * 80) as usize);
    for k in first..end {
        let (s, ts, v) = w.sample(k);
        let [(_, name), (_, instance), _, _] = series_labels(s);
        // Writes into a Vec cannot fail.
        let _ = writeln!(
            b,
            "{name}{{instance=\"{instance}\",job=\"load\",series=\"{s}\"}} {v} {ts}"
        );
    }
    b
}

fn influx(w: &Workload, first: u64, end: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(((end - first) * 80) as usize);
    for k in first..end {
        let (s, ts, v) = w.sample(k);
        // Measurement `load` + field `metric_N` gives the same metric name as the other formats.
        let _ = writeln!(
            b,
            "load,instance=host-{},job=load,series={s} metric_{}={v} {ts}",
            s / SERIES_PER_INSTANCE,
            s % METRIC_NAMES
        );
    }
    b
}

fn csv(w: &Workload, first: u64, end: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(((end - first) * 48) as usize);
    for k in first..end {
        let (s, ts, v) = w.sample(k);
        let _ = writeln!(b, "host-{},load,{s},{v},{ts}", s / SERIES_PER_INSTANCE);
    }
    b
}

fn json_lines(w: &Workload, first: u64, end: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(((end - first) * 100) as usize);
    for (s, points) in group(w, first, end) {
        let [(_, name), (_, instance), _, _] = series_labels(s);
        let _ = write!(
            b,
            "{{\"metric\":{{\"__name__\":\"{name}\",\"instance\":\"{instance}\",\"job\":\"load\",\"series\":\"{s}\"}},\"values\":["
        );
        for (i, (_, v)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(b, "{sep}{v}");
        }
        b.extend_from_slice(b"],\"timestamps\":[");
        for (i, (ts, _)) in points.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(b, "{sep}{ts}");
        }
        b.extend_from_slice(b"]}\n");
    }
    b
}

/// Hand-written Prometheus remote write messages (prometheus/prompb `types.proto` and
/// `remote.proto`, only the fields a sample push uses).
pub mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

fn remote_write(w: &Workload, first: u64, end: u64) -> Vec<u8> {
    use prost::Message;
    let timeseries = group(w, first, end)
        .into_iter()
        .map(|(s, points)| prompb::TimeSeries {
            labels: series_labels(s)
                .into_iter()
                .map(|(name, value)| prompb::Label {
                    name: name.to_string(),
                    value,
                })
                .collect(),
            samples: points
                .into_iter()
                .map(|(timestamp, value)| prompb::Sample { value, timestamp })
                .collect(),
        })
        .collect();
    let raw = prompb::WriteRequest { timeseries }.encode_to_vec();
    // Remote write uses snappy's block format, not the framed stream format.
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy block compression of an in-memory buffer cannot fail below 4 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use shardgate_core::formats::Sink;
    use shardgate_core::model::{Label, Sample};
    use std::collections::BTreeSet;

    /// Collects what a shardgate-core parser found: distinct label sets and sample count.
    #[derive(Default)]
    struct Collect {
        series: BTreeSet<Vec<(Vec<u8>, Vec<u8>)>>,
        samples: u64,
        invalid: Vec<String>,
        timestamps: BTreeSet<i64>,
    }

    impl Sink for Collect {
        fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
            let mut key: Vec<_> = labels
                .iter()
                .map(|l| (l.name.to_vec(), l.value.to_vec()))
                .collect();
            key.sort();
            self.series.insert(key);
            self.samples += samples.len() as u64;
            self.timestamps
                .extend(samples.iter().map(|s| s.timestamp_ms));
        }
        fn invalid(&mut self, line: u64, reason: &str) {
            self.invalid.push(format!("line {line}: {reason}"));
        }
    }

    const START: i64 = 1_700_000_000_000;

    fn workload(samples: u64, series: u64, batch: u64) -> Workload {
        Workload {
            samples,
            series,
            batch,
            start_ms: START,
            step_ms: 1000,
        }
    }

    fn parse(format: Format, body: &[u8], sink: &mut Collect) {
        use shardgate_core::formats::{csv, influx, json_lines, prometheus_text, remote_write};
        match format {
            Format::Prometheus => {
                prometheus_text::parse_body(body, prometheus_text::PromTextOptions::new(1), sink)
                    .unwrap()
            }
            Format::RemoteWrite => {
                let raw = snap::raw::Decoder::new().decompress_vec(body).unwrap();
                remote_write::parse(&raw, sink).unwrap()
            }
            Format::Influx => {
                let opts = influx::InfluxOptions {
                    precision: influx::Precision::from_query(b"ms"),
                    ..Default::default()
                };
                influx::InfluxParser::new()
                    .parse_batch(body, 1, &opts, sink)
                    .unwrap()
            }
            Format::JsonLines => json_lines::parse_body(body, sink).unwrap(),
            Format::Csv => {
                let f = csv::CsvFormat::parse(Some(CSV_FORMAT)).unwrap();
                csv::parse_body(body, f, 1, sink).unwrap()
            }
        }
    }

    /// Every format, parsed back by the gateway's own parsers, yields exactly the samples,
    /// series and timestamps the workload describes.
    #[test]
    fn every_format_parses_back_to_the_workload() {
        // 2,500 samples over 1,000 series in batches of 300: partial last round and last batch,
        // and batches that straddle a round boundary.
        let w = workload(2_500, 1_000, 300);
        for format in [
            Format::Prometheus,
            Format::RemoteWrite,
            Format::Influx,
            Format::JsonLines,
            Format::Csv,
        ] {
            let bodies = generate(format, &w);
            assert_eq!(bodies.len(), 9, "{format}");
            assert_eq!(bodies.iter().map(|b| b.samples).sum::<u64>(), 2_500);
            assert_eq!(bodies.last().unwrap().samples, 100);
            let mut sink = Collect::default();
            for b in &bodies {
                parse(format, &b.bytes, &mut sink);
            }
            assert!(sink.invalid.is_empty(), "{format}: {:?}", sink.invalid);
            assert_eq!(sink.samples, 2_500, "{format}");
            assert_eq!(sink.series.len(), 1_000, "{format}");
            let want: BTreeSet<i64> = [START, START + 1000, START + 2000].into();
            assert_eq!(sink.timestamps, want, "{format}");
        }
    }

    #[test]
    fn prometheus_text_has_one_line_per_sample_with_the_series_labels() {
        let w = workload(30, 20, 30);
        let bodies = generate(Format::Prometheus, &w);
        assert_eq!(bodies.len(), 1);
        let text = String::from_utf8(bodies[0].bytes.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 30);
        assert!(
            lines[21].starts_with("load_metric_1{instance=\"host-0\",job=\"load\",series=\"1\"} "),
            "{}",
            lines[21]
        );
        assert!(lines[21].ends_with(" 1700000001000"), "{}", lines[21]);
    }

    #[test]
    fn remote_write_decodes_with_prost_into_the_right_samples() {
        let w = workload(25_000, 20_000, 10_000);
        let bodies = generate(Format::RemoteWrite, &w);
        assert_eq!(bodies.len(), 3);
        let mut samples = 0;
        let mut series = BTreeSet::new();
        for b in &bodies {
            let raw = snap::raw::Decoder::new().decompress_vec(&b.bytes).unwrap();
            let req = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
            let n: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
            assert_eq!(n as u64, b.samples);
            for ts in &req.timeseries {
                assert_eq!(ts.labels[0].name, "__name__");
                let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
                assert_eq!(names, ["__name__", "instance", "job", "series"]);
                series.insert(ts.labels[3].value.clone());
            }
            samples += n;
        }
        assert_eq!(samples, 25_000);
        assert_eq!(series.len(), 20_000);
        // The third request holds round 1: 5,000 samples of series 0..5000, one each.
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&bodies[2].bytes)
            .unwrap();
        let req = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 5_000);
        assert_eq!(req.timeseries[0].samples[0].timestamp, START + 1000);
    }

    #[test]
    fn batches_larger_than_the_series_count_group_samples_per_series() {
        let w = workload(100, 10, 100);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&generate(Format::RemoteWrite, &w)[0].bytes)
            .unwrap();
        let req = prompb::WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(req.timeseries.len(), 10);
        assert!(req.timeseries.iter().all(|t| t.samples.len() == 10));
        let ts: Vec<i64> = req.timeseries[3]
            .samples
            .iter()
            .map(|s| s.timestamp)
            .collect();
        assert_eq!(ts, (0..10).map(|r| START + r * 1000).collect::<Vec<_>>());
    }

    #[test]
    fn format_names_round_trip_and_paths_carry_the_tenant() {
        for f in [
            Format::Prometheus,
            Format::RemoteWrite,
            Format::Influx,
            Format::JsonLines,
            Format::Csv,
        ] {
            assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
        }
        assert!("graphite".parse::<Format>().is_err());
        assert_eq!(
            Format::Prometheus.path("5:7"),
            "/insert/5:7/prometheus/api/v1/import/prometheus"
        );
        assert_eq!(
            Format::RemoteWrite.path("0"),
            "/insert/0/prometheus/api/v1/write"
        );
    }
}
