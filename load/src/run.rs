//! One measured load run and its report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::bodies::{self, Format, Workload};
use crate::client::{self, Target};
use crate::{cpu, metrics};

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Gateway base URL, e.g. `http://127.0.0.1:8480`.
    pub base_url: String,
    pub format: Format,
    pub workload: Workload,
    /// `0`, `42` or `42:7`.
    pub tenant: String,
    pub connections: usize,
    pub request_timeout: Duration,
    /// The gateway process whose CPU time is measured.
    pub gateway_pid: Option<u32>,
    /// How long to wait for the gateway to hand buffered rows to storage after the last answer.
    pub drain_timeout: Duration,
}

/// The result of a run.
#[derive(Clone, Debug)]
pub struct Report {
    pub format: Format,
    pub connections: usize,
    pub series: u64,
    pub batch: u64,
    /// Samples in requests the gateway accepted.
    pub samples: u64,
    /// From the first request until the last answer and, against a gateway that exposes its
    /// send counters, until every accepted row was sent to storage.
    pub seconds: f64,
    /// The HTTP part of `seconds` alone.
    pub http_seconds: f64,
    pub samples_per_sec: f64,
    /// The process measured.
    pub gateway_pid: Option<u32>,
    pub gateway_cpu_seconds: Option<f64>,
    pub cpu_seconds_per_million_samples: Option<f64>,
    pub requests: u64,
    pub failed_requests: u64,
    pub body_bytes: u64,
    /// `Some(true)` if the send counters confirmed every row left the gateway, `Some(false)` if
    /// they did not within the drain timeout, `None` if the target has no such counters.
    pub drained: Option<bool>,
    /// CPU of the spawned storage-node stand-ins (only with `--spawn`).
    pub storage_nodes_cpu_seconds: Option<f64>,
    /// Rows the spawned stand-ins hold after the run (only with `--spawn`).
    pub rows_stored: Option<u64>,
    pub generate_seconds: f64,
    pub errors: Vec<String>,
}

/// Generate the bodies, then send them and measure.
pub fn run(cfg: &LoadConfig) -> Result<Report, String> {
    if cfg.workload.samples == 0 || cfg.workload.series == 0 || cfg.workload.batch == 0 {
        return Err("--samples, --series and --batch must be positive".into());
    }
    let t = Instant::now();
    let bodies = Arc::new(bodies::generate(cfg.format, &cfg.workload));
    let generate_seconds = t.elapsed().as_secs_f64();

    let base = cfg.base_url.trim_end_matches('/');
    let target = Target {
        url: format!("{base}{}", cfg.format.path(&cfg.tenant)),
        headers: cfg
            .format
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        connections: cfg.connections,
        timeout: cfg.request_timeout,
    };
    let scrape_agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    let counters_before = metrics::scrape(&scrape_agent, base);
    let cpu_before = match cfg.gateway_pid {
        Some(pid) => Some(
            cpu::process_cpu(pid).map_err(|e| format!("cannot read CPU time of pid {pid}: {e}"))?,
        ),
        None => None,
    };

    let outcome = client::send_all(&target, bodies);

    let drain_started = Instant::now();
    let drained = counters_before.map(|before| {
        metrics::wait_drained(
            &scrape_agent,
            base,
            before,
            outcome.samples_accepted,
            cfg.drain_timeout,
        )
    });
    let drain = if drained.is_some() {
        drain_started.elapsed()
    } else {
        Duration::ZERO
    };
    let gateway_cpu_seconds = match (cfg.gateway_pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let after = cpu::process_cpu(pid)
                .map_err(|e| format!("cannot read CPU time of pid {pid} after the run: {e}"))?;
            Some(after.saturating_sub(before).as_secs_f64())
        }
        _ => None,
    };
    let seconds = (outcome.elapsed + drain).as_secs_f64();
    let samples = outcome.samples_accepted;
    Ok(Report {
        format: cfg.format,
        connections: cfg.connections,
        series: cfg.workload.series,
        batch: cfg.workload.batch,
        samples,
        seconds,
        http_seconds: outcome.elapsed.as_secs_f64(),
        samples_per_sec: if seconds > 0.0 {
            samples as f64 / seconds
        } else {
            0.0
        },
        cpu_seconds_per_million_samples: gateway_cpu_seconds
            .filter(|_| samples > 0)
            .map(|c| c / (samples as f64 / 1e6)),
        gateway_cpu_seconds,
        gateway_pid: cfg.gateway_pid,
        requests: outcome.requests,
        failed_requests: outcome.failed_requests,
        body_bytes: outcome.body_bytes,
        drained,
        storage_nodes_cpu_seconds: None,
        rows_stored: None,
        generate_seconds,
        errors: outcome.errors,
    })
}

impl Report {
    /// One line for a person.
    pub fn human(&self) -> String {
        let mut s = format!(
            "{}: {} samples in {:.3} s = {:.0} samples/s over {} connections ({} requests, {} failed, {:.1} MiB of bodies)",
            self.format,
            self.samples,
            self.seconds,
            self.samples_per_sec,
            self.connections,
            self.requests,
            self.failed_requests,
            self.body_bytes as f64 / (1 << 20) as f64,
        );
        let pid = self.gateway_pid.unwrap_or(0);
        match (
            self.gateway_cpu_seconds,
            self.cpu_seconds_per_million_samples,
        ) {
            (Some(c), Some(per)) => s.push_str(&format!(
                "; gateway (pid {pid}) CPU {c:.3} s = {per:.3} CPU-s per million samples"
            )),
            (Some(c), None) => s.push_str(&format!("; gateway (pid {pid}) CPU {c:.3} s")),
            _ => s.push_str("; gateway CPU not measured (no --pid)"),
        }
        if let Some(n) = self.storage_nodes_cpu_seconds {
            s.push_str(&format!("; storage-node stand-ins CPU {n:.3} s"));
        }
        match self.rows_stored {
            Some(n) if n == self.samples => s.push_str("; all rows stored"),
            Some(n) => s.push_str(&format!(
                "; WARNING: the storage nodes hold {n} rows, not {}",
                self.samples
            )),
            None => {}
        }
        if self.drained == Some(false) {
            s.push_str("; WARNING: the gateway still had unsent rows at the end");
        }
        s
    }

    /// The machine-readable form (`--json`).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": self.format.to_string(),
            "connections": self.connections,
            "series": self.series,
            "batch": self.batch,
            "samples": self.samples,
            "seconds": self.seconds,
            "http_seconds": self.http_seconds,
            "samples_per_sec": self.samples_per_sec,
            "gateway_pid": self.gateway_pid,
            "gateway_cpu_seconds": self.gateway_cpu_seconds,
            "cpu_seconds_per_million_samples": self.cpu_seconds_per_million_samples,
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "body_bytes": self.body_bytes,
            "drained": self.drained,
            "storage_nodes_cpu_seconds": self.storage_nodes_cpu_seconds,
            "rows_stored": self.rows_stored,
            "generate_seconds": self.generate_seconds,
            "errors": self.errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Sink;

    fn config(url: String, format: Format, samples: u64) -> LoadConfig {
        LoadConfig {
            base_url: url,
            format,
            workload: Workload {
                samples,
                series: 1_000,
                batch: 700,
                start_ms: 1_700_000_000_000,
                step_ms: 1000,
            },
            tenant: "0".into(),
            connections: 3,
            request_timeout: Duration::from_secs(10),
            gateway_pid: Some(std::process::id()),
            drain_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_run_against_the_sink_sends_every_body_once() {
        let sink = Sink::start(Arc::new(|_| 204)).unwrap();
        let cfg = config(sink.url(), Format::Prometheus, 10_000);
        let r = run(&cfg).unwrap();
        assert_eq!(r.requests, 15);
        assert_eq!(r.failed_requests, 0);
        assert_eq!(r.samples, 10_000);
        let expected: u64 = bodies::generate(cfg.format, &cfg.workload)
            .iter()
            .map(|b| b.bytes.len() as u64)
            .sum();
        assert_eq!(r.body_bytes, expected);
        let stats = &sink.stats;
        use std::sync::atomic::Ordering::Relaxed;
        assert_eq!(stats.inserts.load(Relaxed), 15);
        assert_eq!(stats.body_bytes.load(Relaxed), expected);
        // Keep-alive: one connection per thread, plus none for the (404) metrics scrape's reuse.
        assert!(
            stats.connections.load(Relaxed) <= 4,
            "{:?}",
            stats.connections
        );
        assert!(r.gateway_cpu_seconds.is_some());
        assert_eq!(r.drained, None);
        let j = r.json();
        assert_eq!(j["samples"], 10_000);
        assert_eq!(j["failed_requests"], 0);
        assert!(j["samples_per_sec"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn refused_requests_are_counted_and_their_samples_are_not() {
        // Every third insert is refused.
        let sink = Sink::start(Arc::new(|n| if n % 3 == 2 { 400 } else { 204 })).unwrap();
        let r = run(&config(sink.url(), Format::RemoteWrite, 7_000)).unwrap();
        assert_eq!(r.requests, 10);
        assert_eq!(r.failed_requests, 3);
        assert_eq!(r.samples, 4_900);
        assert!(r.errors[0].contains("HTTP 400"), "{:?}", r.errors);
        assert!(r.human().contains("3 failed"), "{}", r.human());
    }

    #[test]
    fn an_unreachable_gateway_fails_every_request() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cfg = config(format!("http://127.0.0.1:{port}"), Format::Influx, 1_400);
        cfg.gateway_pid = None;
        let r = run(&cfg).unwrap();
        assert_eq!((r.requests, r.failed_requests, r.samples), (2, 2, 0));
        assert_eq!(r.cpu_seconds_per_million_samples, None);
    }
}
