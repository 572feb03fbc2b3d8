//! OpenTSDB telnet `put` lines (spec: formats/opentsdb-telnet.md):
//! `put <metric> <timestamp> <value> [tag=value …]`.
//!
//! Only the space is a separator (a tab is not). Labels: the metric name first, then tags in
//! line order. TCP and UDP only; bad lines are skipped.

use super::graphite::go_f64_to_i64;
use super::influx::trim;
use super::number::parse_float;
use super::Sink;
use crate::model::{Label, Sample};

/// Flags that shape OpenTSDB telnet rows.
#[derive(Clone, Copy, Debug)]
pub struct OpenTsdbOptions {
    /// `-opentsdbTrimTimestamp` in milliseconds (default 1000 = off; applied only when above 1 s).
    pub trim_timestamp_ms: i64,
}

impl Default for OpenTsdbOptions {
    fn default() -> Self {
        OpenTsdbOptions {
            trim_timestamp_ms: 1000,
        }
    }
}

/// OpenTSDB's rule for telling seconds from milliseconds: a value with any of bits 32..62 set
/// is milliseconds. Negative values have those bits set, so they count as milliseconds.
const SECOND_MASK: i64 = 0x7FFF_FFFF_0000_0000;

/// Timestamp (0 = absent) to milliseconds, shared with the HTTP `/api/put` parser.
pub(crate) fn opentsdb_millis(ts: i64, now_ms: i64, trim_ms: i64, trim_threshold_ms: i64) -> i64 {
    let ts = if ts == 0 { now_ms.div_euclid(1000) } else { ts };
    let ts = if ts & SECOND_MASK == 0 {
        ts.wrapping_mul(1000)
    } else {
        ts
    };
    trim(ts, trim_ms, trim_threshold_ms)
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&b| b != b' ').unwrap_or(s.len());
    &s[n..]
}

/// The next space-separated token and what follows the space, if there is a space.
fn split_space(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', s) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Reusable state: the label list.
#[derive(Debug, Default)]
pub struct OpenTsdbParser {
    labels: Vec<Label<'static>>,
}

impl OpenTsdbParser {
    pub fn new() -> OpenTsdbParser {
        OpenTsdbParser::default()
    }

    /// One line, with `\n` and one trailing `\r` already removed. Returns whether it was good
    /// (an empty line is good and emits nothing); a bad line goes to [`Sink::invalid`].
    pub fn parse_line(
        &mut self,
        line: &[u8],
        line_no: u64,
        now_ms: i64,
        opts: &OpenTsdbOptions,
        sink: &mut impl Sink,
    ) -> bool {
        if line.is_empty() {
            return true;
        }
        match self.parse(line, now_ms, opts, sink) {
            Ok(()) => true,
            Err(reason) => {
                sink.invalid(line_no, reason);
                false
            }
        }
    }

    /// A block of complete lines (a last line without `\n` counts as complete).
    pub fn parse_block(
        &mut self,
        block: &[u8],
        first_line_no: u64,
        now_ms: i64,
        opts: &OpenTsdbOptions,
        sink: &mut impl Sink,
    ) {
        super::lines::for_each_line(block, |n, line| {
            self.parse_line(line, first_line_no + n - 1, now_ms, opts, sink);
        });
    }

    fn parse(
        &mut self,
        line: &[u8],
        now_ms: i64,
        opts: &OpenTsdbOptions,
        sink: &mut impl Sink,
    ) -> Result<(), &'static str> {
        let s = trim_spaces(line)
            .strip_prefix(b"put ")
            .ok_or("missing `put ` prefix")?;
        let (metric, rest) = split_space(trim_spaces(s));
        let rest = rest.ok_or("cannot find the space between metric and timestamp")?;
        if metric.is_empty() {
            return Err("empty metric name");
        }
        let (ts_text, rest) = split_space(trim_spaces(rest));
        let rest = rest.ok_or("cannot find the space between timestamp and value")?;
        let ts = go_f64_to_i64(parse_float(ts_text).ok_or("cannot parse the timestamp")?);
        let (value_text, mut tags) = split_space(trim_spaces(rest));
        let value = parse_float(value_text).ok_or("cannot parse the value")?;

        let mut labels = crate::model::recycle_labels(std::mem::take(&mut self.labels));
        labels.push(Label::metric_name(metric));
        let mut result = Ok(());
        while let Some(t) = tags {
            let (tag, next) = split_space(trim_spaces(t));
            tags = next;
            if tag.is_empty() {
                continue;
            }
            let Some(eq) = memchr::memchr(b'=', tag) else {
                result = Err("tag without '='");
                break;
            };
            let (k, v) = (&tag[..eq], &tag[eq + 1..]);
            if !k.is_empty() && !v.is_empty() {
                labels.push(Label::new(k, v));
            }
        }
        if result.is_ok() {
            let ts = opentsdb_millis(ts, now_ms, opts.trim_timestamp_ms, 1000);
            sink.series(&labels, &[Sample::new(ts, value)]);
        }
        self.labels = crate::model::recycle_labels(labels);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        rows: Vec<String>,
        invalid: Vec<u64>,
    }

    impl Sink for Collect {
        fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
            let ls: Vec<String> = labels
                .iter()
                .map(|l| {
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(l.name),
                        String::from_utf8_lossy(l.value)
                    )
                })
                .collect();
            for s in samples {
                self.rows.push(format!(
                    "{} {} @{}",
                    ls.join(","),
                    s.value(),
                    s.timestamp_ms
                ));
            }
        }
        fn invalid(&mut self, line: u64, _: &str) {
            self.invalid.push(line);
        }
    }

    const NOW: i64 = 1_800_000_123_456;

    fn run(body: &str, opts: &OpenTsdbOptions) -> Collect {
        let mut c = Collect::default();
        OpenTsdbParser::new().parse_block(body.as_bytes(), 1, NOW, opts, &mut c);
        c
    }

    #[test]
    fn spec_edge_cases() {
        let t = 1_700_000_000_000i64;
        let body = "put sys.cpu 1700000000 1.5 host=a\nput sys.cpu 1700000000123 2 host=a\n\
                    put  sys.cpu   1700000000   3   host=a  \nput m 1700000000 4 a= =b c=d=e\n\
                    put m 1700000000 5 novalue\nput m 1700000001 6\nput m 0 7\nput m 1700000000.7 8\n\
                    put m 1.7e9 9\nput m 4294967295 10\nput m 4294967296 11\nput\tm 1700000000 12\n\
                    put m\t1700000000 13\nPUT m 1700000000 14\nput m 1700000000 vm_account_id=5\n\n   \nput m -5 1\n";
        let c = run(body, &OpenTsdbOptions::default());
        assert_eq!(
            c.rows,
            [
                format!("=sys.cpu,host=a 1.5 @{t}"),
                "=sys.cpu,host=a 2 @1700000000123".to_string(),
                format!("=sys.cpu,host=a 3 @{t}"),
                format!("=m,c=d=e 4 @{t}"),
                "=m 6 @1700000001000".to_string(),
                format!("=m 7 @{}", NOW / 1000 * 1000),
                format!("=m 8 @{t}"),
                format!("=m 9 @{t}"),
                "=m 10 @4294967295000".to_string(),
                "=m 11 @4294967296".to_string(),
                "=m 1 @-5".to_string(),
            ]
        );
        assert_eq!(c.invalid, [5, 12, 13, 14, 15, 17]);
    }

    #[test]
    fn trim_applies_to_seconds_and_millis() {
        let c = run(
            "put m 1700000059 15\nput m 1700000059123 16",
            &OpenTsdbOptions {
                trim_timestamp_ms: 60_000,
            },
        );
        assert_eq!(c.rows, ["=m 15 @1700000040000", "=m 16 @1700000040000"]);
    }
}
