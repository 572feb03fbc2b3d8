//! Graphite plaintext (spec: formats/graphite.md): `path[;tag=value…] value [timestamp]`.
//!
//! TCP and UDP only; bad lines are skipped. Labels: the metric name first, then tags in line
//! order. Timestamps are seconds (a fraction is truncated); there is no millisecond detection.

use super::influx::trim;
use super::number::parse_float;
use super::Sink;
use crate::model::{Label, Sample};

/// Flags that shape Graphite rows.
#[derive(Clone, Copy, Debug)]
pub struct GraphiteOptions {
    /// `-graphite.sanitizeMetricName`.
    pub sanitize_metric_name: bool,
    /// `-graphiteTrimTimestamp` in milliseconds (default 1000 = off; applied only when above 1 s).
    pub trim_timestamp_ms: i64,
}

impl Default for GraphiteOptions {
    fn default() -> Self {
        GraphiteOptions {
            sanitize_metric_name: false,
            trim_timestamp_ms: 1000,
        }
    }
}

/// Reusable state: buffers for sanitized names and the label list.
#[derive(Debug, Default)]
pub struct GraphiteParser {
    sanitized: Vec<u8>,
    /// End offsets in `sanitized`: the path first, then one per tag key.
    ends: Vec<usize>,
    tags: Vec<(usize, usize, usize, usize)>,
    labels: Vec<Label<'static>>,
}

fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    &s[n..]
}

fn trim_end(s: &[u8]) -> &[u8] {
    let n = s.iter().rposition(|&b| !is_ws(b)).map_or(0, |i| i + 1);
    &s[..n]
}

/// Go's `int64(f)` on amd64: truncation, and the "integer indefinite" value (i64::MIN) for NaN
/// and anything out of range.
pub(crate) fn go_f64_to_i64(f: f64) -> i64 {
    // 2^63, exact in an f64.
    let limit = -(i64::MIN as f64);
    if f.is_nan() || !(-limit..limit).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// vminsert's sanitizer: collapse runs of `.`, then every character outside
/// `[a-zA-Z0-9:_.]` becomes `_`. Go applies a regexp, which works per UTF-8 character (an
/// invalid byte counts as one character), so `é` becomes one `_`, not two.
fn sanitize(dst: &mut Vec<u8>, s: &[u8]) {
    let mut prev_dot = false;
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            let b = if c.is_ascii_alphanumeric() || c == ':' || c == '_' || c == '.' {
                c as u8
            } else {
                b'_'
            };
            if b == b'.' && prev_dot {
                continue;
            }
            prev_dot = b == b'.';
            dst.push(b);
        }
        for _ in chunk.invalid() {
            dst.push(b'_');
            prev_dot = false;
        }
    }
}

impl GraphiteParser {
    pub fn new() -> GraphiteParser {
        GraphiteParser::default()
    }

    /// One line, with `\n` and one trailing `\r` already removed. Returns whether it was good
    /// (blank lines are good and emit nothing); a bad line goes to [`Sink::invalid`].
    pub fn parse_line(
        &mut self,
        line: &[u8],
        line_no: u64,
        now_ms: i64,
        opts: &GraphiteOptions,
        sink: &mut impl Sink,
    ) -> bool {
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
        opts: &GraphiteOptions,
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
        opts: &GraphiteOptions,
        sink: &mut impl Sink,
    ) -> Result<(), &'static str> {
        let s = trim_start(line);
        if s.is_empty() {
            return Ok(());
        }
        let s = trim_end(s);
        let n = s
            .iter()
            .rposition(|&b| is_ws(b))
            .ok_or("cannot find the space before the value")?;
        let mut ts_text = &s[n + 1..];
        let head = trim_end(&s[..n]);
        let (metric_and_tags, value_text) = match head.iter().rposition(|&b| is_ws(b)) {
            None => {
                let v = ts_text;
                ts_text = b"";
                (trim_start(head), v)
            }
            Some(m) => (trim_end(trim_start(&head[..m])), &head[m + 1..]),
        };

        let (path, tags) = match memchr::memchr(b';', metric_and_tags) {
            None => (metric_and_tags, &b""[..]),
            Some(i) => (&metric_and_tags[..i], &metric_and_tags[i + 1..]),
        };
        self.sanitized.clear();
        self.ends.clear();
        self.tags.clear();
        let mut has_tags = memchr::memchr(b';', metric_and_tags).is_some();
        let mut rest = tags;
        while has_tags {
            let (tag, next) = match memchr::memchr(b';', rest) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            let (k, v) = match memchr::memchr(b'=', tag) {
                Some(i) => (&tag[..i], &tag[i + 1..]),
                None => (tag, &b""[..]),
            };
            if !k.is_empty() && !v.is_empty() {
                let k_off = offset(metric_and_tags, k);
                let v_off = offset(metric_and_tags, v);
                self.tags
                    .push((k_off, k_off + k.len(), v_off, v_off + v.len()));
            }
            match next {
                Some(n) => rest = n,
                None => has_tags = false,
            }
        }
        if path.is_empty() {
            return Err("empty metric name");
        }

        let ts = if ts_text.is_empty() {
            0
        } else {
            go_f64_to_i64(parse_float(ts_text).ok_or("cannot parse the timestamp")?)
        };
        let value = parse_float(value_text).ok_or("cannot parse the value")?;
        let secs = if ts == 0 || ts == -1 {
            now_ms.div_euclid(1000)
        } else {
            ts
        };
        let ts = trim(secs.wrapping_mul(1000), opts.trim_timestamp_ms, 1000);

        if opts.sanitize_metric_name {
            sanitize(&mut self.sanitized, path);
            self.ends.push(self.sanitized.len());
            for &(ka, kb, _, _) in &self.tags {
                sanitize(&mut self.sanitized, &metric_and_tags[ka..kb]);
                self.ends.push(self.sanitized.len());
            }
        }
        let mut labels = crate::model::recycle_labels(std::mem::take(&mut self.labels));
        let key = |i: usize, a: usize, b: usize| -> &[u8] {
            if opts.sanitize_metric_name {
                let from = if i == 0 { 0 } else { self.ends[i - 1] };
                &self.sanitized[from..self.ends[i]]
            } else {
                &metric_and_tags[a..b]
            }
        };
        labels.push(Label::metric_name(key(0, 0, path.len())));
        for (i, &(ka, kb, va, vb)) in self.tags.iter().enumerate() {
            labels.push(Label::new(key(i + 1, ka, kb), &metric_and_tags[va..vb]));
        }
        sink.series(&labels, &[Sample::new(ts, value)]);
        self.labels = crate::model::recycle_labels(labels);
        Ok(())
    }
}

fn offset(outer: &[u8], inner: &[u8]) -> usize {
    inner.as_ptr() as usize - outer.as_ptr() as usize
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

    fn run(body: &str, opts: &GraphiteOptions) -> Collect {
        let mut c = Collect::default();
        GraphiteParser::new().parse_block(body.as_bytes(), 1, NOW, opts, &mut c);
        c
    }

    #[test]
    fn spec_edge_cases() {
        let d = GraphiteOptions::default();
        let t = 1_700_000_000_000i64;
        let body = "foo.bar;a=b;c;d=;=e;f=g=h 2 1700000000\nfoo.bar\t3\t1700000000\r\n  foo bar   4   1700000000  \n\
                    foo 5 1700000000.9\nfoo 6 1.7e9\nfoo 7 -1\nbar 8 0\nbaz 9\nfoo 1e3 1700000000\nfoo +1 1700000000\n\
                    foo abc 1700000000\n# comment 1 1700000000\n;x=y 1 1700000000\nfoo 1 1700000000 extra\n\
                    foo;a=b;a=c 1 1700000000\nfoo;__name__=override 1 1700000000\n\n   \n";
        let c = run(body, &d);
        let now_s = NOW / 1000 * 1000;
        assert_eq!(
            c.rows,
            [
                format!("=foo.bar,a=b,f=g=h 2 @{t}"),
                format!("=foo.bar 3 @{t}"),
                format!("=foo bar 4 @{t}"),
                format!("=foo 5 @{t}"),
                format!("=foo 6 @{t}"),
                format!("=foo 7 @{now_s}"),
                format!("=bar 8 @{now_s}"),
                format!("=baz 9 @{now_s}"),
                format!("=foo 1000 @{t}"),
                format!("=# comment 1 @{t}"),
                format!("=foo,a=b,a=c 1 @{t}"),
                format!("=foo,__name__=override 1 @{t}"),
            ]
        );
        assert_eq!(c.invalid, [10, 11, 13, 14]);
    }

    #[test]
    fn sanitize_and_trim() {
        let o = GraphiteOptions {
            sanitize_metric_name: true,
            trim_timestamp_ms: 60_000,
        };
        let c = run(
            "foo..bar-baz@x;t-k=v-1 1 1700000059\nm\u{e9}...x;\u{e9}=\u{e9} 2 1700000000",
            &o,
        );
        assert_eq!(
            c.rows,
            [
                "=foo.bar_baz_x,t_k=v-1 1 @1700000040000",
                "=m_.x,_=\u{e9} 2 @1699999980000"
            ]
        );
        // A trim step under a second is a no-op for Graphite.
        let c = run(
            "foo 1 1700000059",
            &GraphiteOptions {
                sanitize_metric_name: false,
                trim_timestamp_ms: 500,
            },
        );
        assert_eq!(c.rows, ["=foo 1 @1700000059000"]);
    }

    #[test]
    fn odd_lines_do_not_panic() {
        let c = run(
            "a\n 1\n\t\n;\n; 1\nx 1 nan\nx 1 1e300\nx nan 1\n",
            &GraphiteOptions::default(),
        );
        assert_eq!(c.rows.len(), 3);
        assert_eq!(go_f64_to_i64(f64::NAN), i64::MIN);
        assert_eq!(go_f64_to_i64(1.7e9 + 0.9), 1_700_000_000);
    }
}
