//! Reads the gateway's `/metrics` to tell when it has handed every row to the storage nodes.
//!
//! The gateway answers an insert once the rows are buffered, before they reach storage. CPU
//! spent pushing the tail of the buffers out would be missed if the measurement stopped at the
//! last HTTP answer, so the run waits until the send counters settle.

use std::io::Read;
use std::time::{Duration, Instant};

/// Row counters summed over all storage nodes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowCounters {
    pub sent: f64,
    pub pending: f64,
}

/// Sum `vm_rpc_rows_sent_total` and `vm_rpc_rows_pending` over the storage nodes, counting only
/// the metric rows (not metadata rows). `None` when the text has no such series: the target is
/// not a vminsert-like gateway.
pub fn parse_row_counters(text: &str) -> Option<RowCounters> {
    let mut c = RowCounters::default();
    let mut seen = false;
    for line in text.lines() {
        let (name, rest) = match line.find('{') {
            Some(i) => (&line[..i], &line[i..]),
            None => continue,
        };
        let target = match name {
            "vm_rpc_rows_sent_total" => &mut c.sent,
            "vm_rpc_rows_pending" => &mut c.pending,
            _ => continue,
        };
        let Some(close) = rest.rfind('}') else {
            continue;
        };
        let labels = &rest[..close];
        if labels.contains("rpc_call=") && !labels.contains("rpc_call=\"metric_rows\"") {
            continue;
        }
        if let Ok(v) = rest[close + 1..].trim().parse::<f64>() {
            *target += v;
            seen = true;
        }
    }
    seen.then_some(c)
}

/// Fetch and parse `<base>/metrics`.
pub fn scrape(agent: &ureq::Agent, base: &str) -> Option<RowCounters> {
    let resp = agent.get(&format!("{base}/metrics")).call().ok()?;
    let mut text = String::new();
    resp.into_reader()
        .take(16 << 20)
        .read_to_string(&mut text)
        .ok()?;
    parse_row_counters(&text)
}

/// Wait until the gateway has sent at least `expected_sent` rows (counted from the `before`
/// scrape) and has none pending, or until `timeout`. Returns whether it drained.
pub fn wait_drained(
    agent: &ureq::Agent,
    base: &str,
    before: RowCounters,
    expected_sent: u64,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(now) = scrape(agent, base) {
            if now.sent - before.sent >= expected_sent as f64 && now.pending <= 0.0 {
                return true;
            }
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_metric_rows_over_nodes_and_ignores_metadata_rows() {
        let text = "\
vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"a:1\",rpc_call=\"metric_rows\"} 10\n\
vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"b:1\",rpc_call=\"metric_rows\"} 32\n\
vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"b:1\",rpc_call=\"metricmetadata_rows\"} 1000\n\
vm_rpc_rows_pending{name=\"vminsert\",addr=\"a:1\",rpc_call=\"metric_rows\"} 3\n\
vm_rpc_rows_pending{name=\"vminsert\",addr=\"b:1\",rpc_call=\"metric_rows\"} 0\n\
vm_rpc_rows_sent_totalx{addr=\"b:1\"} 5\n\
vm_rows_inserted_total{type=\"prometheus\"} 99\n";
        assert_eq!(
            parse_row_counters(text),
            Some(RowCounters {
                sent: 42.0,
                pending: 3.0
            })
        );
        assert_eq!(parse_row_counters("vm_app_uptime_seconds 3\n"), None);
    }

    #[test]
    fn series_without_rpc_call_label_count() {
        let text = "vm_rpc_rows_sent_total{name=\"vminsert\",addr=\"a:1\"} 7\n";
        assert_eq!(parse_row_counters(text).map(|c| c.sent), Some(7.0));
    }
}
