//! `/metrics` in Prometheus text under vminsert's names (spec: flags-and-endpoints.md §6).
//!
//! Shell-side counters (HTTP, rows per protocol) live in a [`Registry`] keyed by the full series
//! text. Core-side numbers come in as plain values through the `render_*` functions, so a
//! snapshot from `Gateway::stats()` plugs in without the renderer knowing the gateway.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::SystemTime;

use shardgate_core::stats::{NodeGauges, NodeStats, RouterStats};

/// Counters and gauges the shell updates itself.
#[derive(Default)]
pub struct Registry {
    series: Mutex<BTreeMap<String, f64>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Add `v` to the series `name{labels}` (created at 0).
    pub fn add(&self, series: &str, v: f64) {
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        match m.get_mut(series) {
            Some(x) => *x += v,
            None => {
                m.insert(series.to_string(), v);
            }
        }
    }

    pub fn inc(&self, series: &str) {
        self.add(series, 1.0);
    }

    pub fn set(&self, series: &str, v: f64) {
        let mut m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(series.to_string(), v);
    }

    pub fn get(&self, series: &str) -> f64 {
        let m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        m.get(series).copied().unwrap_or(0.0)
    }

    pub fn render(&self, out: &mut String) {
        let m = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in m.iter() {
            line(out, k, *v);
        }
    }
}

fn line(out: &mut String, series: &str, v: f64) {
    let _ = writeln!(out, "{series} {}", fmt_value(v));
}

fn fmt_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Escape a label value for the text format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Per storage node and bucket counters (§6.1). `bucket` is `metric_rows` or
/// `metricmetadata_rows`; the reachability gauges exist for `metric_rows` only.
pub fn render_node(out: &mut String, bucket: &str, addr: &str, s: &NodeStats, g: &NodeGauges) {
    let l = format!(
        "{{name=\"vminsert\",addr=\"{}\",rpc_call=\"{bucket}\"}}",
        escape(addr)
    );
    let n = |out: &mut String, name: &str, v: f64| line(out, &format!("{name}{l}"), v);
    n(out, "vm_rpc_rows_pushed_total", s.rows_pushed_total as f64);
    n(out, "vm_rpc_rows_sent_total", s.rows_sent_total as f64);
    n(out, "vm_rpc_rows_pending", g.rows_pending as f64);
    n(out, "vm_rpc_buf_pending_bytes", g.buf_pending_bytes as f64);
    n(
        out,
        "vm_rpc_send_duration_seconds_total",
        s.send_duration_total.as_secs_f64(),
    );
    n(out, "vm_rpc_dial_errors_total", s.dial_errors_total as f64);
    n(
        out,
        "vm_rpc_handshake_errors_total",
        s.handshake_errors_total as f64,
    );
    n(
        out,
        "vm_rpc_connection_errors_total",
        s.connection_errors_total as f64,
    );
    n(
        out,
        "vm_rpc_rows_dropped_on_overload_total",
        s.rows_dropped_on_overload_total as f64,
    );
    n(
        out,
        "vm_rpc_rows_rerouted_from_here_total",
        s.rows_rerouted_from_here_total as f64,
    );
    n(
        out,
        "vm_rpc_rows_rerouted_to_here_total",
        s.rows_rerouted_to_here_total as f64,
    );
    n(
        out,
        "vm_rpc_rows_dropped_on_unsupported_rpc",
        s.rows_dropped_on_unsupported_rpc as f64,
    );
    if bucket == "metric_rows" {
        n(
            out,
            "vm_rpc_vmstorage_is_reachable",
            u8::from(g.is_reachable) as f64,
        );
        n(
            out,
            "vm_rpc_vmstorage_is_read_only",
            u8::from(g.is_read_only) as f64,
        );
    }
}

/// Bucket-wide counters (`{name="vminsert"}`) plus every node of the bucket.
pub fn render_router(
    out: &mut String,
    bucket: &str,
    addrs: &[String],
    stats: &RouterStats,
    gauges: &[NodeGauges],
) {
    for (i, s) in stats.nodes.iter().enumerate() {
        let addr = addrs.get(i).map(String::as_str).unwrap_or("?");
        let g = gauges.get(i).copied().unwrap_or_default();
        render_node(out, bucket, addr, s, &g);
    }
    // The global series exist once in vminsert; we label them by bucket only for metadata,
    // where they would otherwise collide.
    if bucket == "metric_rows" {
        line(
            out,
            "vm_rpc_reroutes_total{name=\"vminsert\"}",
            stats.reroutes_total as f64,
        );
        line(
            out,
            "vm_rpc_rerouted_rows_processed_total{name=\"vminsert\"}",
            stats.rerouted_rows_processed_total as f64,
        );
        line(
            out,
            "vm_rpc_rows_incompletely_replicated_total{name=\"vminsert\"}",
            stats.rows_incompletely_replicated_total as f64,
        );
    }
}

/// Process metrics from `/proc/self` (§6.4), plus app version/uptime.
pub fn render_process(out: &mut String, start: SystemTime, version: &str) {
    let now = SystemTime::now();
    let start_s = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    line(
        out,
        &format!(
            "vm_app_version{{version=\"{}\",short_version=\"{}\"}}",
            escape(version),
            escape(version)
        ),
        1.0,
    );
    line(out, "vm_app_start_timestamp", start_s as f64);
    line(
        out,
        "vm_app_uptime_seconds",
        now.duration_since(start)
            .unwrap_or_default()
            .as_secs_f64()
            .floor(),
    );
    line(
        out,
        "vm_available_cpu_cores",
        std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
    );
    if let Some(p) = read_proc_stat() {
        line(out, "process_cpu_seconds_user", p.utime);
        line(out, "process_cpu_seconds_system", p.stime);
        line(out, "process_cpu_seconds_total", p.utime + p.stime);
        line(out, "process_resident_memory_bytes", p.rss_bytes);
        line(out, "process_virtual_memory_bytes", p.vsize);
        line(out, "process_num_threads", p.threads);
        line(out, "process_start_time_seconds", start_s as f64);
    }
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        line(out, "process_open_fds", d.count() as f64);
    }
}

struct ProcStat {
    utime: f64,
    stime: f64,
    threads: f64,
    vsize: f64,
    rss_bytes: f64,
}

/// Fields of `/proc/self/stat` after the command name (which may hold spaces).
fn read_proc_stat() -> Option<ProcStat> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat(&s)
}

fn parse_proc_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Field 3 (state) is f[0]; utime is field 14 → f[11].
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    // Linux reports clock ticks; USER_HZ is 100 on every mainstream architecture.
    const TICKS: f64 = 100.0;
    const PAGE: f64 = 4096.0;
    Some(ProcStat {
        utime: num(11)? / TICKS,
        stime: num(12)? / TICKS,
        threads: num(17)?,
        vsize: num(20)?,
        rss_bytes: num(21)? * PAGE,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_renders_sorted_series() {
        let r = Registry::new();
        r.inc("vm_http_requests_total{path=\"/metrics\"}");
        r.add("vm_rows_inserted_total{type=\"prometheus\"}", 3.0);
        r.inc("vm_http_requests_total{path=\"/metrics\"}");
        let mut out = String::new();
        r.render(&mut out);
        assert_eq!(
            out,
            "vm_http_requests_total{path=\"/metrics\"} 2\nvm_rows_inserted_total{type=\"prometheus\"} 3\n"
        );
    }

    #[test]
    fn node_series_carry_vminsert_labels() {
        let s = NodeStats {
            rows_sent_total: 7,
            ..NodeStats::default()
        };
        let g = NodeGauges {
            is_reachable: true,
            ..NodeGauges::default()
        };
        let mut out = String::new();
        render_node(&mut out, "metric_rows", "10.0.0.1:8400", &s, &g);
        assert!(out.contains(
            "vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"10.0.0.1:8400\",rpc_call=\"metric_rows\"} 7\n"
        ));
        assert!(out.contains("vm_rpc_vmstorage_is_reachable{name=\"vminsert\",addr=\"10.0.0.1:8400\",rpc_call=\"metric_rows\"} 1\n"));
        let mut meta = String::new();
        render_node(&mut meta, "metricmetadata_rows", "a:1", &s, &g);
        assert!(!meta.contains("is_reachable"));
        assert!(meta.contains("vm_rpc_rows_dropped_on_unsupported_rpc{"));
    }

    #[test]
    fn proc_stat_fields() {
        let s = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 1000000 300 0";
        let p = parse_proc_stat(s).unwrap();
        assert_eq!((p.utime, p.stime), (2.5, 0.5));
        assert_eq!(p.threads, 9.0);
        assert_eq!(p.vsize, 1_000_000.0);
        assert_eq!(p.rss_bytes, 300.0 * 4096.0);
        let mut out = String::new();
        render_process(&mut out, SystemTime::now(), "v");
        assert!(out.contains("process_resident_memory_bytes "));
        assert!(out.contains("process_cpu_seconds_total "));
    }
}
