//! What every ingestion path (HTTP routes, TCP/UDP listeners, clusternative) shares: the
//! process-wide ingest config that SIGHUP swaps, per-format flag values, the per-request push
//! threshold, `/metrics` accounting of ingest stats, and line framing over the core parsers.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use shardgate_core::formats::csv::CsvLines;
use shardgate_core::formats::datadog::DatadogOptions;
use shardgate_core::formats::graphite::{GraphiteOptions, GraphiteParser};
use shardgate_core::formats::influx::{InfluxOptions, InfluxParser, Precision};
use shardgate_core::formats::json_lines::JsonLines;
use shardgate_core::formats::lines::{LineSplitter, LineTooLong};
use shardgate_core::formats::opentelemetry::OtlpOptions;
use shardgate_core::formats::opentsdb::{OpenTsdbOptions, OpenTsdbParser};
use shardgate_core::formats::opentsdb_http::OpenTsdbHttpOptions;
use shardgate_core::formats::prometheus_text::PromTextLines;
use shardgate_core::ingest::{IngestConfig, IngestStats};
use shardgate_core::limits::{LimitViolation, Limits};
use shardgate_core::relabel::RelabelConfig;
use shardgate_core::route::Batch;

use crate::flags::Flags;
use crate::metrics::Registry;
use crate::storage::{PushFailure, Storage};
use crate::{error, info};

/// Read and parse a `-relabelConfig` file. URLs are refused: shardgate has no HTTP client.
pub fn load_relabel(path: &str, prom_compatible_naming: bool) -> Result<RelabelConfig, String> {
    let rules = if path.is_empty() {
        RelabelConfig::empty()
    } else {
        if path.starts_with("http://") || path.starts_with("https://") {
            return Err(format!(
                "cannot read -relabelConfig={path:?}: fetching relabel rules from a URL is not supported; use a file"
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read -relabelConfig={path:?}: {e}"))?;
        RelabelConfig::parse(&text)
            .map_err(|e| format!("cannot parse -relabelConfig={path:?}: {e}"))?
    };
    Ok(rules.with_prom_compatible_naming(prom_compatible_naming))
}

/// The ingest settings from flags, relabel file included.
pub fn ingest_config_from_flags(f: &Flags) -> Result<IngestConfig, String> {
    let limits = Limits::from_flags(
        f.int("maxLabelsPerTimeseries"),
        f.int("maxLabelNameLen"),
        f.int("maxLabelValueLen"),
    )?;
    let relabel = load_relabel(f.str("relabelConfig"), f.bool("usePromCompatibleNaming"))?;
    Ok(IngestConfig {
        limits,
        sort_labels: f.bool("sortLabels"),
        relabel: Arc::new(relabel),
        enable_metadata: f.bool("enableMetadata"),
    })
}

/// Flag values that shape rows of one format or another.
#[derive(Clone, Debug)]
pub struct FormatConfig {
    pub influx_separator: Vec<u8>,
    pub influx_skip_single_field: bool,
    pub influx_skip_measurement: bool,
    pub influx_db_label: Vec<u8>,
    pub influx_trim_ms: i64,
    pub influx_max_line_size: usize,
    pub influx_max_request_size: usize,
    pub influx_force_stream_mode: bool,
    pub influx_database_names: Vec<String>,
    pub graphite: GraphiteOptions,
    pub opentsdb: OpenTsdbOptions,
    pub opentsdb_http: OpenTsdbHttpOptions,
    pub opentsdb_http_max_request_size: usize,
    pub import_max_line_len: usize,
    pub csv_trim_ms: i64,
    pub otlp: OtlpOptions,
    pub otlp_max_request_size: usize,
    /// `-datadog.sanitizeMetricName` and `-datadog.maxInsertRequestSize`.
    pub datadog: DatadogOptions,
    pub newrelic_max_request_size: usize,
    pub zabbix: shardgate_core::formats::zabbix::ZabbixOptions,
    pub zabbix_max_line_len: usize,
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

impl FormatConfig {
    /// The format flags; an inconsistent combination is an error that stops startup.
    pub fn from_flags(f: &Flags) -> Result<FormatConfig, String> {
        let names = f.list("influx.databaseNames");
        let otlp = OtlpOptions::from_flags(
            f.bool("opentelemetry.usePrometheusNaming"),
            f.bool("opentelemetry.convertMetricNamesToPrometheus"),
            f.bool("opentelemetry.labelNameUnderscoreSanitization"),
            f.bool("opentelemetry.promoteAllResourceAttributes"),
            f.list("opentelemetry.promoteResourceAttributes"),
            f.list("opentelemetry.ignoreResourceAttributes"),
            f.bool("opentelemetry.promoteScopeMetadata"),
        )?;
        Ok(FormatConfig {
            influx_separator: f.str("influxMeasurementFieldSeparator").as_bytes().to_vec(),
            influx_skip_single_field: f.bool("influxSkipSingleField"),
            influx_skip_measurement: f.bool("influxSkipMeasurement"),
            influx_db_label: f.str("influxDBLabel").as_bytes().to_vec(),
            influx_trim_ms: millis(f.duration("influxTrimTimestamp")),
            influx_max_line_size: f.bytes("influx.maxLineSize") as usize,
            influx_max_request_size: f.bytes("influx.maxRequestSize") as usize,
            influx_force_stream_mode: f.bool("influx.forceStreamMode"),
            influx_database_names: if names.is_empty() {
                vec!["_internal".to_string()]
            } else {
                names.to_vec()
            },
            graphite: GraphiteOptions {
                sanitize_metric_name: f.bool("graphite.sanitizeMetricName"),
                trim_timestamp_ms: millis(f.duration("graphiteTrimTimestamp")),
            },
            opentsdb: OpenTsdbOptions {
                trim_timestamp_ms: millis(f.duration("opentsdbTrimTimestamp")),
            },
            opentsdb_http: OpenTsdbHttpOptions {
                trim_timestamp_ms: millis(f.duration("opentsdbhttpTrimTimestamp")),
            },
            opentsdb_http_max_request_size: f.bytes("opentsdbhttp.maxInsertRequestSize") as usize,
            import_max_line_len: f.bytes("import.maxLineLen") as usize,
            csv_trim_ms: millis(f.duration("csvTrimTimestamp")),
            otlp,
            otlp_max_request_size: f.bytes("opentelemetry.maxRequestSize") as usize,
            datadog: DatadogOptions {
                sanitize_metric_name: f.bool("datadog.sanitizeMetricName"),
                max_request_size: f.bytes("datadog.maxInsertRequestSize") as usize,
            },
            newrelic_max_request_size: f.bytes("newrelic.maxInsertRequestSize") as usize,
            zabbix: shardgate_core::formats::zabbix::ZabbixOptions {
                add_groups_value: f.str("zabbixconnector.addGroupsValue").as_bytes().to_vec(),
                add_empty_tags_value: f
                    .str("zabbixconnector.addEmptyTagsValue")
                    .as_bytes()
                    .to_vec(),
                add_duplicate_tags_separator: f
                    .str("zabbixconnector.addDuplicateTagsSeparator")
                    .as_bytes()
                    .to_vec(),
            },
            zabbix_max_line_len: f.bytes("zabbixconnector.maxLineLen") as usize,
        })
    }

    /// Influx options for a request (`db`/`precision` are empty/auto on TCP and UDP).
    pub fn influx<'a>(&'a self, db: &'a [u8], precision: Precision) -> InfluxOptions<'a> {
        InfluxOptions {
            measurement_field_separator: &self.influx_separator,
            skip_single_field: self.influx_skip_single_field,
            skip_measurement: self.influx_skip_measurement,
            db_label: &self.influx_db_label,
            db,
            precision,
            trim_timestamp_ms: self.influx_trim_ms,
        }
    }
}

/// The wall clock in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// State shared by every ingestion path.
pub struct IngestShared {
    config: RwLock<Arc<IngestConfig>>,
    pub metrics: Arc<Registry>,
    pub storage: Arc<Storage>,
    pub formats: FormatConfig,
    /// A request's buffer for one storage node is pushed once it reaches this many bytes
    /// (sharding spec §4: `clamp(A/4/C/N, 1 MiB, 30 MiB)`).
    pub push_threshold: usize,
    /// `-insert.maxQueueDuration`: how long a push may wait on full buffers.
    pub max_queue_duration: Duration,
    relabel_path: String,
    prom_compatible_naming: bool,
    /// The relabel file's text as last loaded, for `-relabelConfigCheckInterval`.
    relabel_text: std::sync::Mutex<Option<String>>,
}

impl IngestShared {
    // Called once, from main, with values taken straight from flags.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: IngestConfig,
        metrics: Arc<Registry>,
        storage: Arc<Storage>,
        formats: FormatConfig,
        push_threshold: usize,
        max_queue_duration: Duration,
        relabel_path: String,
        prom_compatible_naming: bool,
    ) -> IngestShared {
        let shared = IngestShared {
            config: RwLock::new(Arc::new(config)),
            metrics,
            storage,
            formats,
            push_threshold: push_threshold.max(1),
            max_queue_duration,
            relabel_text: std::sync::Mutex::new(std::fs::read_to_string(&relabel_path).ok()),
            relabel_path,
            prom_compatible_naming,
        };
        if !shared.relabel_path.is_empty() {
            shared
                .metrics
                .set("vm_relabel_config_last_reload_successful", 1.0);
            shared.metrics.set(
                "vm_relabel_config_last_reload_success_timestamp_seconds",
                now_ms() as f64 / 1000.0,
            );
            shared.metrics.add("vm_relabel_config_reloads_total", 0.0);
            shared
                .metrics
                .add("vm_relabel_config_reloads_errors_total", 0.0);
        }
        shared
    }

    /// The config a new request or block works with.
    pub fn config(&self) -> Arc<IngestConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Re-read `-relabelConfig` (SIGHUP). A file that fails to load keeps the old rules.
    pub fn reload_relabel(&self) -> Result<(), String> {
        if self.relabel_path.is_empty() {
            return Ok(());
        }
        self.metrics.inc("vm_relabel_config_reloads_total");
        match load_relabel(&self.relabel_path, self.prom_compatible_naming) {
            Ok(rules) => {
                let mut cur = self.config.write().unwrap_or_else(|p| p.into_inner());
                let mut next = IngestConfig::clone(&cur);
                next.relabel = Arc::new(rules);
                *cur = Arc::new(next);
                drop(cur);
                self.metrics
                    .set("vm_relabel_config_last_reload_successful", 1.0);
                self.metrics.set(
                    "vm_relabel_config_last_reload_success_timestamp_seconds",
                    now_ms() as f64 / 1000.0,
                );
                info!("reloaded -relabelConfig={:?}", self.relabel_path);
                Ok(())
            }
            Err(e) => {
                self.metrics.inc("vm_relabel_config_reloads_errors_total");
                self.metrics
                    .set("vm_relabel_config_last_reload_successful", 0.0);
                error!("{e}; keeping the previous relabeling rules");
                Err(e)
            }
        }
    }

    /// `-relabelConfigCheckInterval`: reload only when the file's text changed.
    pub fn reload_relabel_if_changed(&self) {
        if self.relabel_path.is_empty() {
            return;
        }
        let text = std::fs::read_to_string(&self.relabel_path).ok();
        {
            let mut last = self.relabel_text.lock().unwrap_or_else(|p| p.into_inner());
            if *last == text {
                return;
            }
            *last = text;
        }
        let _ = self.reload_relabel();
    }

    /// Whether a request's batch must be pushed before it grows further.
    pub fn over_threshold(&self, batch: &Batch) -> bool {
        batch
            .nodes()
            .iter()
            .any(|n| n.bytes.len() >= self.push_threshold)
    }

    /// Push a batch, waiting on full buffers up to `-insert.maxQueueDuration`.
    pub async fn push(&self, batch: &mut Batch) -> Result<(), PushFailure> {
        if batch.is_empty() {
            return Ok(());
        }
        self.storage
            .push(batch, Instant::now() + self.max_queue_duration)
            .await
    }

    /// Add one request's (or block's) stats to `/metrics`.
    pub fn account(&self, rows_type: &str, stats: &IngestStats) {
        let m = &self.metrics;
        m.add(
            &format!("vm_rows_inserted_total{{type=\"{rows_type}\"}}"),
            stats.rows_received as f64,
        );
        for (t, n) in &stats.rows_per_tenant {
            m.add(
                &format!(
                    "vm_tenant_inserted_rows_total{{type=\"{rows_type}\",accountID=\"{}\",projectID=\"{}\"}}",
                    t.account_id, t.project_id
                ),
                *n as f64,
            );
        }
        if stats.rows_invalid > 0 {
            m.add(
                &format!("vm_rows_invalid_total{{type=\"{rows_type}\"}}"),
                stats.rows_invalid as f64,
            );
            if let Some((line, reason)) = &stats.first_invalid {
                crate::warn!(
                    "skipped {} invalid {rows_type} rows; the first one at line {line}: {reason}",
                    stats.rows_invalid
                );
            }
        }
        for v in LimitViolation::ALL {
            let n = stats.ignored(v);
            if n > 0 {
                m.add(
                    &format!("vm_rows_ignored_total{{reason=\"{}\"}}", v.reason()),
                    n as f64,
                );
            }
        }
        if stats.metadata_too_long > 0 {
            m.add(
                "vm_rows_ignored_total{reason=\"too_long_metric_metadata_value\"}",
                stats.metadata_too_long as f64,
            );
        }
        if stats.relabel_dropped > 0 {
            m.add(
                "vm_relabel_metrics_dropped_total",
                stats.relabel_dropped as f64,
            );
        }
        if stats.metadata_received > 0 {
            m.add(
                &format!("vm_metadata_rows_inserted_total{{type=\"{rows_type}\"}}"),
                stats.metadata_received as f64,
            );
        }
    }
}

/// One parsed line's worth of work for a line format; [`Lines`] does the framing.
pub trait LineHandler: Send {
    fn line(&mut self, line_no: u64, line: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>);
    fn finish(&mut self, _sink: &mut shardgate_core::ingest::Ingest<'_>) {}
}

impl LineHandler for PromTextLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        PromTextLines::line(self, n, l, sink)
    }
    fn finish(&mut self, sink: &mut shardgate_core::ingest::Ingest<'_>) {
        PromTextLines::finish(self, sink)
    }
}

impl LineHandler for JsonLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        JsonLines::line(self, n, l, sink)
    }
}

impl LineHandler for CsvLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        CsvLines::line(self, n, l, sink)
    }
}

/// Influx stream mode: lines are skipped when bad.
pub struct InfluxLines {
    pub parser: InfluxParser,
    pub formats: Arc<IngestShared>,
    pub db: Vec<u8>,
    pub precision: Precision,
}

impl LineHandler for InfluxLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        let opts = self.formats.formats.influx(&self.db, self.precision);
        self.parser.parse_line(l, n, now_ms(), &opts, sink);
    }
}

pub struct GraphiteLines {
    pub parser: GraphiteParser,
    pub opts: GraphiteOptions,
}

impl LineHandler for GraphiteLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        self.parser.parse_line(l, n, now_ms(), &self.opts, sink);
    }
}

pub struct OpenTsdbLines {
    pub parser: OpenTsdbParser,
    pub opts: OpenTsdbOptions,
}

impl LineHandler for OpenTsdbLines {
    fn line(&mut self, n: u64, l: &[u8], sink: &mut shardgate_core::ingest::Ingest<'_>) {
        self.parser.parse_line(l, n, now_ms(), &self.opts, sink);
    }
}

/// A line format over a chunked stream: only an unfinished line is carried between chunks,
/// and it is bounded by the line limit.
pub struct Lines<H> {
    splitter: LineSplitter,
    pub handler: H,
}

impl<H: LineHandler> Lines<H> {
    pub fn new(max_line_len: usize, handler: H) -> Lines<H> {
        Lines {
            splitter: LineSplitter::new(max_line_len),
            handler,
        }
    }

    pub fn feed(
        &mut self,
        piece: &[u8],
        sink: &mut shardgate_core::ingest::Ingest<'_>,
    ) -> Result<(), LineTooLong> {
        let h = &mut self.handler;
        self.splitter.feed(piece, |n, l| h.line(n, l, sink))
    }

    pub fn finish(
        &mut self,
        sink: &mut shardgate_core::ingest::Ingest<'_>,
    ) -> Result<(), LineTooLong> {
        let h = &mut self.handler;
        let r = self.splitter.finish(|n, l| h.line(n, l, sink));
        h.finish(sink);
        r
    }
}
