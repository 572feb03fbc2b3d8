//! Ingestion formats: one module per format, each turning client bytes into series and samples.
//!
//! A parser knows nothing about tenants, limits, relabeling or placement. It hands every series
//! it finds to a [`Sink`], with the labels in the order vminsert's handler for that format
//! produces them (row-encoding.md §3.2), and reports bad lines to the same sink. The ingest
//! pipeline implements `Sink`; tests implement it with a plain collector.

use crate::model::{Label, Sample};

/// Where parsed series go.
pub trait Sink {
    /// One series and its samples. `labels` borrow from the request or from the parser's scratch
    /// space and are only valid during the call.
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]);

    /// A line or item that could not be parsed. `line` is 1-based where the format has lines,
    /// 0 otherwise. Parsing continues with the next line where the format allows it.
    fn invalid(&mut self, line: u64, reason: &str) {
        let _ = (line, reason);
    }

    /// A series whose **last** label is the metric name (empty label name; its value may be
    /// empty, meaning "no metric name"). Influx emits this shape: extra labels belong *before*
    /// the name, and with no relabeling the label limits skip the name and a series left with
    /// no labels is still forwarded (row-encoding.md §3.2, influx.md "Limits quirk"). The
    /// default treats it as an ordinary series, which is exact when there are no extra labels.
    fn series_name_last(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.series(labels, samples)
    }

    /// One metric metadata entry (remote write `MetricMetadata`, Prometheus text `# HELP` /
    /// `# TYPE`). The pipeline decides whether metadata is enabled and drops entries with a
    /// field longer than 65535 bytes (row-encoding.md §6).
    fn metadata(&mut self, m: &Metadata<'_>) {
        let _ = m;
    }
}

/// A metric metadata entry as a parser found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata<'a> {
    /// Prometheus metric type: 0 unknown, 1 counter, 2 gauge, 3 histogram, 4 gaugehistogram,
    /// 5 summary, 6 info, 7 stateset (the numbering of the storage metadata row).
    pub metric_type: u32,
    pub family: &'a [u8],
    pub help: &'a [u8],
    pub unit: &'a [u8],
    /// Remote write fields 11/12 (VictoriaMetrics extension): the tenant of this entry in
    /// multitenant mode. 0 when absent and for every other format.
    pub account_id: u32,
    pub project_id: u32,
}

pub mod body;
pub mod csv;
pub mod json_lines;
pub mod lines;
pub mod number;
pub mod prometheus_text;
pub mod remote_write;

pub mod clusternative;
pub mod datadog;
pub mod graphite;
pub mod influx;
pub mod native;
pub mod newrelic;
pub mod opentelemetry;
pub mod opentsdb;
pub mod opentsdb_http;
pub mod zabbix;
