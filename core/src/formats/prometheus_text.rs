//! Prometheus text exposition import, `/api/v1/import/prometheus`
//! (spec: formats/prometheus-text-import.md).
//!
//! Labels come out as vminsert emits them: the metric name (empty label name) first, then the
//! label set in line order, duplicates and empty values included (the pipeline drops empty
//! values). Values are borrowed from the line unless they hold a backslash, in which case
//! they are unescaped into a scratch buffer.

use super::lines::{LineSplitter, LineTooLong, DEFAULT_MAX_LINE_LEN};
use super::number::{parse_float, parse_go_int};
use super::{Metadata, Sink};
use crate::model::{Label, Sample};

/// The request-level settings of one text import.
#[derive(Clone, Copy, Debug)]
pub struct PromTextOptions {
    /// Timestamp for samples that have none (or whose timestamp comes out as 0): the
    /// `timestamp` query argument if it is > 0, else the current time in ms; see
    /// [`default_timestamp`].
    pub default_timestamp_ms: i64,
    /// `-enableMetadata` (default true): report `# HELP` / `# TYPE` to [`Sink::metadata`].
    pub metadata: bool,
    pub max_line_len: usize,
}

impl PromTextOptions {
    pub fn new(default_timestamp_ms: i64) -> PromTextOptions {
        PromTextOptions {
            default_timestamp_ms,
            metadata: true,
            max_line_len: DEFAULT_MAX_LINE_LEN,
        }
    }
}

/// A `timestamp=` query argument that does not parse: 400 before the body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadTimestampArg(pub String);

impl std::fmt::Display for BadTimestampArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot parse `timestamp={}` query arg: strconv.ParseInt: parsing {:?}: invalid syntax",
            self.0, self.0
        )
    }
}

impl std::error::Error for BadTimestampArg {}

/// Parse the `timestamp` query argument (Go `strconv.ParseInt`). An empty or absent argument
/// is `None`.
pub fn parse_timestamp_arg(arg: &str) -> Result<Option<i64>, BadTimestampArg> {
    if arg.is_empty() {
        return Ok(None);
    }
    parse_go_int(arg.as_bytes())
        .map(Some)
        .ok_or_else(|| BadTimestampArg(arg.to_string()))
}

/// The default timestamp: the `timestamp` argument when it is > 0, the current time otherwise.
pub fn default_timestamp(arg: Option<i64>, now_ms: i64) -> i64 {
    match arg {
        Some(t) if t > 0 => t,
        _ => now_ms,
    }
}

/// Streaming parser for one request body.
#[derive(Debug)]
pub struct PromTextParser {
    splitter: LineSplitter,
    lines: PromTextLines,
}

impl PromTextParser {
    pub fn new(opts: PromTextOptions) -> PromTextParser {
        PromTextParser {
            splitter: LineSplitter::new(opts.max_line_len),
            lines: PromTextLines::new(opts.default_timestamp_ms, opts.metadata),
        }
    }

    /// Parse the lines `chunk` completes. A too-long line ends the stream with an error (400);
    /// what was handed to the sink before stays ingested.
    pub fn feed<S: Sink + ?Sized>(
        &mut self,
        chunk: &[u8],
        sink: &mut S,
    ) -> Result<(), LineTooLong> {
        let lines = &mut self.lines;
        self.splitter.feed(chunk, |n, l| lines.line(n, l, sink))
    }

    pub fn finish<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), LineTooLong> {
        let lines = &mut self.lines;
        let r = self.splitter.finish(|n, l| lines.line(n, l, sink));
        lines.finish(sink);
        r
    }
}

/// Parse a whole body held in memory.
pub fn parse_body<S: Sink + ?Sized>(
    body: &[u8],
    opts: PromTextOptions,
    sink: &mut S,
) -> Result<(), LineTooLong> {
    let mut p = PromTextParser::new(opts);
    p.feed(body, sink)?;
    p.finish(sink)
}

#[derive(Clone, Copy, Debug)]
enum Part {
    Line(usize, usize),
    Scratch(usize, usize),
}

impl Part {
    fn get<'a>(self, line: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Part::Line(a, b) => &line[a..b],
            Part::Scratch(a, b) => &scratch[a..b],
        }
    }
}

#[derive(Debug)]
struct PendingMeta {
    name: Vec<u8>,
    help: Option<Vec<u8>>,
    metric_type: Option<u32>,
}

/// The per-line parser, for callers that split lines themselves.
#[derive(Debug)]
pub struct PromTextLines {
    default_ts: i64,
    metadata: bool,
    scratch: Vec<u8>,
    parts: Vec<(Part, Part)>,
    labels: Vec<Label<'static>>,
    pending_meta: Option<PendingMeta>,
}

fn is_ws(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_ws(s[i]) {
        i += 1;
    }
    i
}

fn trim_end(s: &[u8]) -> &[u8] {
    let mut e = s.len();
    while e > 0 && is_ws(s[e - 1]) {
        e -= 1;
    }
    &s[..e]
}

fn trim_start(s: &[u8]) -> &[u8] {
    &s[skip_ws(s, 0)..]
}

/// Index of the closing quote of a string whose opening quote is at `open`: the first `"`
/// with an even number of backslashes right before it.
fn closing_quote(s: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    loop {
        let q = i + memchr::memchr(b'"', &s[i..])?;
        let mut bs = 0;
        while q - bs > open + 1 && s[q - bs - 1] == b'\\' {
            bs += 1;
        }
        if bs % 2 == 0 {
            return Some(q);
        }
        i = q + 1;
    }
}

/// The text format's unescaping: `\\`, `\"`, `\n`; any other escape keeps both bytes.
pub fn unescape_into(out: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c == b'\\' && i + 1 < s.len() {
            match s[i + 1] {
                b'\\' => out.push(b'\\'),
                b'"' => out.push(b'"'),
                b'n' => out.push(b'\n'),
                other => {
                    out.push(b'\\');
                    out.push(other);
                }
            }
            i += 2;
        } else {
            out.push(c);
            i += 1;
        }
    }
}

/// Go's float64 → int64 conversion on amd64: NaN and out-of-range values become i64::MIN.
pub(crate) fn go_f64_to_i64(f: f64) -> i64 {
    if !(-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        i64::MIN
    } else {
        f as i64
    }
}

/// Text format timestamp: seconds when `-2^31 <= t < 2^31`, milliseconds otherwise.
fn timestamp_ms(t: f64) -> i64 {
    if (-2_147_483_648.0..2_147_483_648.0).contains(&t) {
        go_f64_to_i64(t * 1000.0)
    } else {
        go_f64_to_i64(t)
    }
}

fn metric_type(s: &[u8]) -> Option<u32> {
    Some(match s {
        b"counter" => 1,
        b"gauge" => 2,
        b"histogram" => 3,
        b"gaugehistogram" => 4,
        b"summary" => 5,
        b"info" => 6,
        b"stateset" => 7,
        b"untyped" | b"unknown" => 0,
        _ => return None,
    })
}

impl PromTextLines {
    pub fn new(default_timestamp_ms: i64, metadata: bool) -> PromTextLines {
        PromTextLines {
            default_ts: default_timestamp_ms,
            metadata,
            scratch: Vec::new(),
            parts: Vec::new(),
            labels: Vec::new(),
            pending_meta: None,
        }
    }

    /// Parse one line (without its newline; one trailing `\r` already removed).
    pub fn line<S: Sink + ?Sized>(&mut self, line_no: u64, line: &[u8], sink: &mut S) {
        let start = skip_ws(line, 0);
        let line = &line[start..];
        if line.is_empty() {
            return;
        }
        if line[0] == b'#' {
            if self.metadata {
                self.meta_line(line, sink);
            }
            return;
        }
        self.scratch.clear();
        self.parts.clear();
        match self.sample_line(line) {
            Ok((name, value, ts)) => {
                let mut labels = crate::model::recycle_labels(std::mem::take(&mut self.labels));
                let scratch = &self.scratch;
                labels.push(Label::metric_name(name.get(line, scratch)));
                for (n, v) in &self.parts {
                    labels.push(Label::new(n.get(line, scratch), v.get(line, scratch)));
                }
                let ts = if ts == 0 { self.default_ts } else { ts };
                sink.series(&labels, &[Sample::from_bits(ts, value.to_bits())]);
                self.labels = crate::model::recycle_labels(labels);
            }
            Err(reason) => sink.invalid(line_no, reason),
        }
    }

    /// Flush the metadata entry still waiting for a possible HELP/TYPE partner.
    pub fn finish<S: Sink + ?Sized>(&mut self, sink: &mut S) {
        if let Some(m) = self.pending_meta.take() {
            sink.metadata(&Metadata {
                metric_type: m.metric_type.unwrap_or(0),
                family: &m.name,
                help: m.help.as_deref().unwrap_or(b""),
                unit: b"",
                account_id: 0,
                project_id: 0,
            });
        }
    }

    fn meta_line<S: Sink + ?Sized>(&mut self, line: &[u8], sink: &mut S) {
        let Some(rest) = line.strip_prefix(b"# ") else {
            return;
        };
        let is_help = rest.starts_with(b"HELP");
        if !is_help && !rest.starts_with(b"TYPE") {
            return;
        }
        let rest = &rest[4..];
        if !rest.first().is_some_and(|&c| is_ws(c)) {
            return;
        }
        let rest = trim_start(rest);
        let name_end = rest.iter().position(|&c| is_ws(c)).unwrap_or(rest.len());
        let (name, rest) = rest.split_at(name_end);
        let text = trim_start(rest);
        if name.is_empty() || text.is_empty() {
            return;
        }
        let merge_ok = |m: &PendingMeta| {
            m.name == name
                && if is_help {
                    m.help.is_none()
                } else {
                    m.metric_type.is_none()
                }
        };
        if !self.pending_meta.as_ref().is_some_and(merge_ok) {
            // Validate before flushing, so a bad TYPE does not split a HELP/TYPE pair.
            if !is_help && metric_type(trim_end(text)).is_none() {
                return;
            }
            self.finish(sink);
            self.pending_meta = Some(PendingMeta {
                name: name.to_vec(),
                help: None,
                metric_type: None,
            });
        }
        let m = self.pending_meta.as_mut().expect("set above");
        if is_help {
            let mut help = Vec::with_capacity(text.len());
            unescape_into(&mut help, text);
            m.help = Some(help);
        } else if let Some(t) = metric_type(trim_end(text)) {
            m.metric_type = Some(t);
        }
    }

    /// A quoted string starting at `open`: its range, unescaped into the scratch buffer when
    /// it holds a backslash. Returns the part and the index after the closing quote.
    fn quoted(&mut self, line: &[u8], open: usize) -> Result<(Part, usize), &'static str> {
        let close = closing_quote(line, open).ok_or("missing closing quote for a label value")?;
        let raw = &line[open + 1..close];
        let part = if memchr::memchr(b'\\', raw).is_some() {
            let a = self.scratch.len();
            unescape_into(&mut self.scratch, raw);
            Part::Scratch(a, self.scratch.len())
        } else {
            Part::Line(open + 1, close)
        };
        Ok((part, close + 1))
    }

    fn sample_line(&mut self, line: &[u8]) -> Result<(Part, f64, i64), &'static str> {
        let mut name: Option<Part> = None;
        let rest_start;
        if let Some(brace) = memchr::memchr(b'{', line) {
            let n = trim_end(&line[..brace]);
            if !n.is_empty() {
                name = Some(Part::Line(0, n.len()));
            }
            let mut i = self.label_set(line, brace + 1, &mut name)?;
            if i < line.len() && line[i] == b' ' {
                i += 1;
            }
            rest_start = i;
        } else {
            let ws = line.iter().position(|&c| is_ws(c)).ok_or("missing value")?;
            name = Some(Part::Line(0, ws));
            rest_start = ws;
        }
        let name = name.ok_or("missing metric name")?;
        let mut rest = trim_start(&line[rest_start..]);
        if let Some(h) = memchr::memchr(b'#', rest) {
            rest = &rest[..h];
        }
        if rest.is_empty() {
            return Err("missing value");
        }
        let vend = rest.iter().position(|&c| is_ws(c)).unwrap_or(rest.len());
        let value = parse_float(&rest[..vend]).ok_or("cannot parse value")?;
        let ts_text = trim_end(trim_start(&rest[vend..]));
        let ts = if ts_text.is_empty() {
            0
        } else {
            timestamp_ms(parse_float(ts_text).ok_or("cannot parse timestamp")?)
        };
        Ok((name, value, ts))
    }

    /// Parse a label set starting right after `{`; returns the index after `}`.
    fn label_set(
        &mut self,
        line: &[u8],
        mut i: usize,
        name: &mut Option<Part>,
    ) -> Result<usize, &'static str> {
        loop {
            i = skip_ws(line, i);
            let Some(q) = memchr::memchr(b'"', &line[i..]).map(|q| i + q) else {
                return if line.get(i) == Some(&b'}') {
                    Ok(i + 1)
                } else {
                    Err("missing closing curly brace or a quoted label value")
                };
            };
            let key = trim_end(&line[i..q]);
            let label_name;
            let value_open;
            if key.is_empty() {
                let (qpart, after) = self.quoted(line, q)?;
                let j = skip_ws(line, after);
                match line.get(j) {
                    Some(b',') | Some(b'}') => {
                        if name.is_some() {
                            return Err("metric name is set twice");
                        }
                        *name = Some(qpart);
                        i = j;
                        if line[j] == b',' && j + 1 < line.len() {
                            i = j + 1;
                        }
                        continue;
                    }
                    Some(b'=') => {
                        label_name = qpart;
                        value_open = skip_ws(line, j + 1);
                    }
                    _ => return Err("missing '=' after a quoted label name"),
                }
            } else {
                if key.last() != Some(&b'=') {
                    return Err("missing '=' after a label name");
                }
                let k = &key[..key.len() - 1];
                let a = i + (k.len() - trim_start(k).len());
                let b = i + trim_end(k).len();
                label_name = Part::Line(a, b.max(a));
                value_open = q;
            }
            if line.get(value_open) != Some(&b'"') {
                return Err("label value must start with a quote");
            }
            let (value, after) = self.quoted(line, value_open)?;
            if !label_name.get(line, &self.scratch).is_empty() {
                self.parts.push((label_name, value));
            }
            i = skip_ws(line, after);
            match line.get(i) {
                Some(b'}') => return Ok(i + 1),
                Some(b',') => i += 1,
                _ => return Err("missing comma between labels"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (Vec<(String, String)>, i64, u64);

    #[derive(Default)]
    struct Rows {
        rows: Vec<Row>,
        invalid: Vec<u64>,
        meta: Vec<(u32, String, String)>,
    }

    impl Sink for Rows {
        fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
            let l: Vec<_> = labels
                .iter()
                .map(|l| {
                    (
                        String::from_utf8_lossy(l.name).into_owned(),
                        String::from_utf8_lossy(l.value).into_owned(),
                    )
                })
                .collect();
            for s in samples {
                self.rows.push((l.clone(), s.timestamp_ms, s.value_bits));
            }
        }
        fn invalid(&mut self, line: u64, _: &str) {
            self.invalid.push(line);
        }
        fn metadata(&mut self, m: &Metadata<'_>) {
            self.meta.push((
                m.metric_type,
                String::from_utf8_lossy(m.family).into_owned(),
                String::from_utf8_lossy(m.help).into_owned(),
            ));
        }
    }

    const T: i64 = 1_700_000_000_000;

    fn parse(body: &str, default_ts: i64) -> Rows {
        let mut r = Rows::default();
        parse_body(body.as_bytes(), PromTextOptions::new(default_ts), &mut r).unwrap();
        r
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn spec_edge_cases() {
        let r = parse("m{a=\"b\"} 1 1700000000000\nm2 2 1700000000\nm3 3 1700000000.5\nm4  4\t1700000000123  \n", 5);
        let ts: Vec<i64> = r.rows.iter().map(|x| x.1).collect();
        assert_eq!(ts, vec![T, T, T + 500, T + 123]);

        let r = parse("m 1\nm2 2 0\nm3 3 -1\n", T);
        let ts: Vec<i64> = r.rows.iter().map(|x| x.1).collect();
        assert_eq!(ts, vec![T, T, -1000]);

        let r = parse(
            "m{a=\"x\\\"y\\\\z\\n\",b=\"\",c=\"\\q\"} 1 1700000000000",
            0,
        );
        assert_eq!(
            r.rows[0].0,
            l(&[("", "m"), ("a", "x\"y\\z\n"), ("b", ""), ("c", "\\q")])
        );

        let r = parse("  m{ a = \"b\" , } 1 1700000000000 # comment", 0);
        assert_eq!(r.rows[0].0, l(&[("", "m"), ("a", "b")]));
        assert_eq!(r.rows[0].1, T);

        let r = parse("m 5 # {trace_id=\"1\"} 2 3", 0);
        assert_eq!(r.rows[0].0, l(&[("", "m 5 #"), ("trace_id", "1")]));
        assert_eq!((r.rows[0].1, f64::from_bits(r.rows[0].2)), (3000, 2.0));

        let r = parse("{\"my.metric\",a=\"b\"} 1 1\n{\"my.metric\",\"x.y\"=\"z\"} 2 1\n{a=\"b\"} 3 1\nm{\"q\",} 1\n", 0);
        assert_eq!(r.rows.len(), 2);
        assert_eq!(r.rows[0].0, l(&[("", "my.metric"), ("a", "b")]));
        assert_eq!(r.rows[1].0, l(&[("", "my.metric"), ("x.y", "z")]));
        assert_eq!(r.invalid, vec![3, 4]);

        let r = parse("m +Inf 1\nm -inf 1\nm NaN 1\nm +1 1\nm .5 1\nm 1e-3 1\n", 0);
        let v: Vec<f64> = r.rows.iter().map(|x| f64::from_bits(x.2)).collect();
        assert_eq!(v[..2], [f64::INFINITY, f64::NEG_INFINITY]);
        assert!(v[2].is_nan());
        assert_eq!(v[3..], [0.5, 0.001]);
        assert_eq!(r.invalid, vec![4]);

        let r = parse(
            "m{a=\"b\"}7 1\nm {a=\"b\"} 8 1\nfoo bar{a=\"b\"} 9 1\nm{a b=\"c\"} 10 1\n",
            0,
        );
        assert_eq!(r.rows[1].0, l(&[("", "m"), ("a", "b")]));
        assert_eq!(r.rows[2].0, l(&[("", "foo bar"), ("a", "b")]));
        assert_eq!(r.rows[3].0, l(&[("", "m"), ("a b", "c")]));

        let r = parse("m{a=\"b\",c} 1\nm{a=b} 2\nm{a=\"b\" 3\nm\nm \nm 5 1 6\n", 0);
        assert!(r.rows.is_empty());
        assert_eq!(r.invalid, vec![1, 2, 3, 4, 5, 6]);

        let r = parse("m 1 2147483647\nm 2 2147483648\nm 3 1e3\nm 4 -0.5\n", 0);
        let ts: Vec<i64> = r.rows.iter().map(|x| x.1).collect();
        assert_eq!(ts, vec![2147483647000, 2147483648, 1000000, -500]);

        let r = parse("m{a=\"b\",,c=\"d\"} 1 1\n", 0);
        assert_eq!(r.rows[0].0, l(&[("", "m"), ("a", "b"), (",c", "d")]));
    }

    #[test]
    fn metadata_merges_help_and_type() {
        let r = parse("# HELP a Total \\n things.\n# TYPE a counter\n# TYPE b gauge\n#HELP c x\n# HELP d\n# TYPE e bogus\n", 0);
        assert_eq!(
            r.meta,
            vec![
                (1, "a".to_string(), "Total \n things.".to_string()),
                (2, "b".to_string(), String::new())
            ]
        );
    }
}
