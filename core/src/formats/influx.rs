//! InfluxDB line protocol (spec: formats/influx.md).
//!
//! One line gives one series per field. Labels come out in vminsert's order: tags in line
//! order, then the db label, then (added by the pipeline) extra labels, then the metric name
//! **last**. That is why every series goes to [`Sink::series_name_last`].
//!
//! Two ways to drive the parser, matching vminsert's two modes:
//! * stream mode (HTTP `Stream-Mode: 1`, TCP, UDP): [`InfluxParser::parse_line`] per line or
//!   [`InfluxParser::parse_stream`] per block of complete lines; bad lines go to
//!   [`Sink::invalid`] and are skipped;
//! * batch mode (HTTP default): [`InfluxParser::parse_batch`] over the whole body. The first bad
//!   line fails the request (400) and nothing from the body reaches the sink.

use super::lines::for_each_line;
use super::number::{parse_float, parse_float_lenient, parse_int, parse_uint};
use super::Sink;
use crate::model::{Label, Sample};

/// The `precision` query argument. Matching is exact; anything else means "guess".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    Ns,
    Us,
    Ms,
    S,
    M,
    H,
    /// Missing or unknown (`n`, `S`, …): the unit is guessed from the magnitude. TCP and UDP
    /// always guess.
    #[default]
    Auto,
}

/// `µ` (U+00B5) in UTF-8.
const MICRO_SIGN: &[u8] = b"\xc2\xb5";

impl Precision {
    pub fn from_query(arg: &[u8]) -> Precision {
        match arg {
            b"ns" => Precision::Ns,
            b"u" | b"us" | MICRO_SIGN => Precision::Us,
            b"ms" => Precision::Ms,
            b"s" => Precision::S,
            b"m" => Precision::M,
            b"h" => Precision::H,
            _ => Precision::Auto,
        }
    }

    /// Turn a line's timestamp (0 = absent) into milliseconds. Arithmetic wraps like Go's.
    pub fn to_millis(self, ts: i64, now_ms: i64) -> i64 {
        let coarse = |unit: i64| {
            if ts == 0 {
                now_ms - now_ms % unit
            } else {
                ts.wrapping_mul(unit)
            }
        };
        match self {
            Precision::Ns => {
                if ts == 0 {
                    now_ms
                } else {
                    ts / 1_000_000
                }
            }
            Precision::Us => {
                if ts == 0 {
                    now_ms
                } else {
                    ts / 1_000
                }
            }
            Precision::Ms => {
                if ts == 0 {
                    now_ms
                } else {
                    ts
                }
            }
            Precision::S => coarse(1_000),
            Precision::M => coarse(60_000),
            Precision::H => coarse(3_600_000),
            Precision::Auto => {
                if ts == 0 {
                    now_ms
                } else if ts >= 100_000_000_000_000_000 {
                    ts / 1_000_000
                } else if ts >= 100_000_000_000_000 {
                    ts / 1_000
                } else if ts >= 100_000_000_000 {
                    ts
                } else {
                    ts.wrapping_mul(1_000)
                }
            }
        }
    }
}

/// Flags and per-request arguments that shape the rows.
#[derive(Clone, Copy, Debug)]
pub struct InfluxOptions<'a> {
    /// `-influxMeasurementFieldSeparator` (default `_`, may be empty).
    pub measurement_field_separator: &'a [u8],
    /// `-influxSkipSingleField`.
    pub skip_single_field: bool,
    /// `-influxSkipMeasurement`.
    pub skip_measurement: bool,
    /// `-influxDBLabel` (default `db`).
    pub db_label: &'a [u8],
    /// The `db` query argument; empty on TCP/UDP, where no db label is ever added.
    pub db: &'a [u8],
    /// The `precision` query argument; [`Precision::Auto`] on TCP/UDP.
    pub precision: Precision,
    /// `-influxTrimTimestamp` in milliseconds (default 1 = off; applied only when above 1).
    pub trim_timestamp_ms: i64,
}

impl Default for InfluxOptions<'static> {
    fn default() -> Self {
        InfluxOptions {
            measurement_field_separator: b"_",
            skip_single_field: false,
            skip_measurement: false,
            db_label: b"db",
            db: b"",
            precision: Precision::Auto,
            trim_timestamp_ms: 1,
        }
    }
}

/// Why batch mode refused a body: the first bad line. It reads as vminsert's message:
/// `incorrect influx line "<the body from the bad line on>": <reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfluxError {
    /// 1-based line number within the body.
    pub line: u64,
    /// What is wrong with the line, in vminsert's words where known (the vectors show
    /// `cannot find Whitespace I in "bad"` and `missing field value for "line"`).
    pub reason: String,
    /// The body from the start of the bad line to its end, as vminsert quotes it, cut at
    /// [`MAX_QUOTED_REST`] bytes so a huge body cannot make a huge error text.
    pub rest: Vec<u8>,
    /// Whether `rest` was cut.
    pub rest_cut: bool,
}

/// The most of the remaining body an [`InfluxError`] quotes.
pub const MAX_QUOTED_REST: usize = 4096;

impl std::fmt::Display for InfluxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cut = if self.rest_cut { "..." } else { "" };
        write!(
            f,
            "incorrect influx line {}{cut}: {}",
            go_quote(&self.rest),
            self.reason
        )
    }
}

impl std::error::Error for InfluxError {}

/// Bytes either in the source being parsed or in the parser's unescape buffer. Spans instead
/// of slices let parsed lines pile up (batch mode) while the buffers still grow.
#[derive(Clone, Copy, Debug)]
enum Span {
    Src(usize, usize),
    Scratch(usize, usize),
}

impl Span {
    fn get<'a>(self, src: &'a [u8], scratch: &'a [u8]) -> &'a [u8] {
        match self {
            Span::Src(a, b) => &src[a..b],
            Span::Scratch(a, b) => &scratch[a..b],
        }
    }

    fn is_empty(self) -> bool {
        match self {
            Span::Src(a, b) | Span::Scratch(a, b) => a == b,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Tag {
    key: Span,
    value: Span,
}

#[derive(Clone, Copy, Debug)]
struct Field {
    key: Span,
    value: f64,
}

#[derive(Clone, Debug)]
struct ParsedLine {
    measurement: Span,
    tags: std::ops::Range<usize>,
    fields: std::ops::Range<usize>,
    /// 0 when absent, as in vminsert.
    timestamp: i64,
}

/// Reusable parser state: unescape buffer, parsed tags and fields, the metric-name buffer and
/// the label list. Keep one per connection or worker to avoid allocating per line.
#[derive(Debug, Default)]
pub struct InfluxParser {
    scratch: Vec<u8>,
    tags: Vec<Tag>,
    fields: Vec<Field>,
    lines: Vec<ParsedLine>,
    name: Vec<u8>,
    name_ends: Vec<usize>,
    labels: Vec<Label<'static>>,
}

impl InfluxParser {
    pub fn new() -> InfluxParser {
        InfluxParser::default()
    }

    /// Stream mode, one line (`\n` and one trailing `\r` already removed, as
    /// [`super::lines::LineSplitter`] hands them out). A bad line goes to [`Sink::invalid`].
    /// Returns whether the line was good (empty and comment lines are good and emit nothing).
    pub fn parse_line(
        &mut self,
        line: &[u8],
        line_no: u64,
        now_ms: i64,
        opts: &InfluxOptions<'_>,
        sink: &mut impl Sink,
    ) -> bool {
        self.clear();
        let ok = match self.parse_into(line, 0, line.len()) {
            Ok(()) => true,
            Err(reason) => {
                sink.invalid(line_no, &reason);
                false
            }
        };
        self.emit(line, now_ms, opts, sink);
        ok
    }

    /// Stream mode over a block of complete lines (a trailing line without `\n` counts as
    /// complete). `first_line_no` numbers the block's first line. Bad lines are skipped.
    pub fn parse_stream(
        &mut self,
        block: &[u8],
        first_line_no: u64,
        now_ms: i64,
        opts: &InfluxOptions<'_>,
        sink: &mut impl Sink,
    ) {
        self.clear();
        let base = block.as_ptr() as usize;
        for_each_line(block, |n, line| {
            let start = line.as_ptr() as usize - base;
            if let Err(reason) = self.parse_into(block, start, start + line.len()) {
                sink.invalid(first_line_no + n - 1, &reason);
            }
        });
        self.emit(block, now_ms, opts, sink);
    }

    /// Batch mode: the whole (decompressed) body. Either every line is good and all rows go to
    /// the sink, or the first bad line is returned and the sink sees nothing (vminsert: 400).
    pub fn parse_batch(
        &mut self,
        body: &[u8],
        now_ms: i64,
        opts: &InfluxOptions<'_>,
        sink: &mut impl Sink,
    ) -> Result<(), InfluxError> {
        self.clear();
        let base = body.as_ptr() as usize;
        let mut first_error = None;
        for_each_line(body, |n, line| {
            if first_error.is_some() {
                return;
            }
            let start = line.as_ptr() as usize - base;
            if let Err(reason) = self.parse_into(body, start, start + line.len()) {
                let rest = &body[start..];
                let kept = rest.len().min(MAX_QUOTED_REST);
                first_error = Some(InfluxError {
                    line: n,
                    reason,
                    rest: rest[..kept].to_vec(),
                    rest_cut: kept < rest.len(),
                });
            }
        });
        if let Some(e) = first_error {
            self.clear();
            return Err(e);
        }
        self.emit(body, now_ms, opts, sink);
        Ok(())
    }

    fn clear(&mut self) {
        self.scratch.clear();
        self.tags.clear();
        self.fields.clear();
        self.lines.clear();
    }

    /// Parse `src[start..end]` (one line without its newline) and record it. On error nothing
    /// is recorded.
    fn parse_into(&mut self, src: &[u8], start: usize, end: usize) -> Result<(), String> {
        let line = &src[start..end];
        if line.is_empty() || line[0] == b'#' {
            return Ok(());
        }
        let (tags0, fields0, scratch0) = (self.tags.len(), self.fields.len(), self.scratch.len());
        let r = self.parse_fields(src, start, end);
        match r {
            Ok((measurement, timestamp)) => {
                self.lines.push(ParsedLine {
                    measurement,
                    tags: tags0..self.tags.len(),
                    fields: fields0..self.fields.len(),
                    timestamp,
                });
                Ok(())
            }
            Err(e) => {
                self.tags.truncate(tags0);
                self.fields.truncate(fields0);
                self.scratch.truncate(scratch0);
                Err(e)
            }
        }
    }

    fn parse_fields(
        &mut self,
        src: &[u8],
        start: usize,
        end: usize,
    ) -> Result<(Span, i64), String> {
        let line = &src[start..end];
        let sp = next_unescaped(line, b' ')
            .ok_or_else(|| format!("cannot find Whitespace I in {}", go_quote(line)))?;
        let mt_end = start + sp;
        let mut rest = start + sp + 1;
        while rest < end && src[rest] == b' ' {
            rest += 1;
        }

        // Measurement and tags.
        let mt = &src[start..mt_end];
        let measurement = match next_unescaped(mt, b',') {
            None => self.unescape(src, start, mt_end),
            Some(c) => {
                let mut pos = start + c + 1;
                loop {
                    let chunk = &src[pos..mt_end];
                    let tag_end = next_unescaped(chunk, b',').map_or(mt_end, |n| pos + n);
                    let tag = &src[pos..tag_end];
                    let eq = next_unescaped(tag, b'=')
                        .ok_or_else(|| format!("missing tag value for {}", go_quote(tag)))?;
                    let key = self.unescape(src, pos, pos + eq);
                    let value = self.unescape(src, pos + eq + 1, tag_end);
                    if !key.is_empty() && !value.is_empty() {
                        self.tags.push(Tag { key, value });
                    }
                    if tag_end == mt_end {
                        break;
                    }
                    pos = tag_end + 1;
                }
                self.unescape(src, start, start + c)
            }
        };

        // Fields, then the timestamp.
        let rest_s = &src[rest..end];
        let quoted = next_unescaped(rest_s, b'"').is_some();
        let (fields_end, ts_text) = match next_unquoted(rest_s, b' ', quoted) {
            None => (end, None),
            Some(n) => {
                let mut t = rest + n + 1;
                while t < end && src[t] == b' ' {
                    t += 1;
                }
                (rest + n, Some(&src[t..end]))
            }
        };
        let http_hint = ts_text.is_some_and(|t| t.starts_with(b"HTTP/"));
        let mut pos = rest;
        loop {
            let chunk = &src[pos..fields_end];
            let field_end = next_unquoted(chunk, b',', quoted).map_or(fields_end, |n| pos + n);
            if let Err(e) = self.parse_field(src, pos, field_end, quoted) {
                return Err(if http_hint { HTTP_HINT.to_string() } else { e });
            }
            if field_end == fields_end {
                break;
            }
            pos = field_end + 1;
        }
        let timestamp = match ts_text {
            None | Some(b"") => 0,
            Some(t) => match parse_int(t) {
                Some(ts) => ts,
                None if t.starts_with(b"HTTP/") => return Err(HTTP_HINT.to_string()),
                None => {
                    return Err(format!(
                        "cannot parse timestamp {}: it must be an integer",
                        go_quote(t)
                    ))
                }
            },
        };
        Ok((measurement, timestamp))
    }

    fn parse_field(
        &mut self,
        src: &[u8],
        start: usize,
        end: usize,
        quoted: bool,
    ) -> Result<(), String> {
        let field = &src[start..end];
        let eq = next_unescaped(field, b'=')
            .ok_or_else(|| format!("missing field value for {}", go_quote(field)))?;
        let key = self.unescape(src, start, start + eq);
        if key.is_empty() {
            return Err("field key cannot be empty".into());
        }
        let value = parse_field_value(&src[start + eq + 1..end], quoted).map_err(|e| {
            format!(
                "cannot parse field value for {}: {e}",
                go_quote(&field[..eq])
            )
        })?;
        self.fields.push(Field { key, value });
        Ok(())
    }

    /// vminsert's unescaping: `\` before space, `,`, `=` or `\` is dropped; any other `\` stays.
    fn unescape(&mut self, src: &[u8], start: usize, end: usize) -> Span {
        let s = &src[start..end];
        let Some(first) = memchr::memchr(b'\\', s) else {
            return Span::Src(start, end);
        };
        let from = self.scratch.len();
        self.scratch.extend_from_slice(&s[..first]);
        let mut i = first;
        while i < s.len() {
            let c = s[i];
            if c == b'\\' {
                match s.get(i + 1) {
                    Some(&n @ (b' ' | b',' | b'=' | b'\\')) => {
                        self.scratch.push(n);
                        i += 2;
                    }
                    Some(&n) => {
                        self.scratch.extend_from_slice(&[b'\\', n]);
                        i += 2;
                    }
                    None => {
                        self.scratch.push(b'\\');
                        i += 1;
                    }
                }
            } else {
                self.scratch.push(c);
                i += 1;
            }
        }
        Span::Scratch(from, self.scratch.len())
    }

    fn emit(&mut self, src: &[u8], now_ms: i64, opts: &InfluxOptions<'_>, sink: &mut impl Sink) {
        let mut spare = std::mem::take(&mut self.labels);
        let mut name = std::mem::take(&mut self.name);
        let mut name_ends = std::mem::take(&mut self.name_ends);
        for line in &self.lines {
            let measurement = line.measurement.get(src, &self.scratch);
            let ts = trim(
                opts.precision.to_millis(line.timestamp, now_ms),
                opts.trim_timestamp_ms,
                1,
            );
            let fields = &self.fields[line.fields.clone()];

            // Every field's full name first, so the labels can borrow them all at once.
            let skip_field_key =
                !measurement.is_empty() && fields.len() == 1 && opts.skip_single_field;
            let prefix: &[u8] = if opts.skip_measurement {
                b""
            } else {
                measurement
            };
            let sep = if !prefix.is_empty() && !skip_field_key {
                opts.measurement_field_separator
            } else {
                b""
            };
            name.clear();
            name_ends.clear();
            for field in fields {
                name.extend_from_slice(prefix);
                name.extend_from_slice(sep);
                if !skip_field_key {
                    name.extend_from_slice(field.key.get(src, &self.scratch));
                }
                name_ends.push(name.len());
            }

            let mut labels = crate::model::recycle_labels(spare);
            let mut has_db = false;
            for tag in &self.tags[line.tags.clone()] {
                let key = tag.key.get(src, &self.scratch);
                has_db |= key == opts.db_label;
                labels.push(Label::new(key, tag.value.get(src, &self.scratch)));
            }
            if !has_db && !opts.db.is_empty() {
                labels.push(Label::new(opts.db_label, opts.db));
            }
            let mut from = 0;
            for (field, &to) in fields.iter().zip(&name_ends) {
                labels.push(Label::metric_name(&name[from..to]));
                sink.series_name_last(&labels, &[Sample::new(ts, field.value)]);
                labels.pop();
                from = to;
            }
            spare = crate::model::recycle_labels(labels);
        }
        self.labels = spare;
        self.name = name;
        self.name_ends = name_ends;
    }
}

const HTTP_HINT: &str =
    "looks like an HTTP request sent to the Influx TCP port; send HTTP to the HTTP port instead";

/// `ts - ts % d` when the trim step is above the flag's no-op threshold.
pub(crate) fn trim(ts: i64, trim_ms: i64, threshold_ms: i64) -> i64 {
    if trim_ms > threshold_ms {
        ts - ts % trim_ms
    } else {
        ts
    }
}

fn parse_field_value(s: &[u8], quoted: bool) -> Result<f64, String> {
    let Some(&last) = s.last() else {
        return Err("field value cannot be empty".into());
    };
    if quoted && s[0] == b'"' {
        if s.len() < 2 || last != b'"' {
            return Err(format!(
                "missing closing quote for quoted field value {}",
                go_quote(s)
            ));
        }
        // Agents sometimes send numbers as strings; anything else becomes 0.
        return Ok(parse_float_lenient(&s[1..s.len() - 1]));
    }
    match last {
        b'i' => parse_int(&s[..s.len() - 1])
            .map(|v| v as f64)
            .ok_or_else(|| format!("cannot parse int value {}", go_quote(s))),
        b'u' => parse_uint(&s[..s.len() - 1])
            .map(|v| v as f64)
            .ok_or_else(|| format!("cannot parse uint value {}", go_quote(s))),
        _ => Ok(match s {
            b"t" | b"T" | b"true" | b"True" | b"TRUE" => 1.0,
            b"f" | b"F" | b"false" | b"False" | b"FALSE" => 0.0,
            _ => parse_float(s).unwrap_or(0.0),
        }),
    }
}

/// Go's `%q` of bytes, which vminsert's error texts use: printable text as is, `"` and `\`
/// escaped, the usual C escapes, `\xNN` for other ASCII controls and for bytes that are not
/// UTF-8, `\uNNNN`/`\UNNNNNNNN` for other non-printable characters.
fn go_quote(s: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                ' ' => out.push(' '),
                c if c.is_ascii() && !c.is_ascii_graphic() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                // Go prints letters, marks, numbers, punctuation and symbols; other spaces,
                // controls and format characters are escaped.
                c if c.is_control() || c.is_whitespace() || c == '\u{feff}' => {
                    if (c as u32) < 0x10000 {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    } else {
                        let _ = write!(out, "\\U{:08x}", c as u32);
                    }
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
    out
}

/// The first `ch` not preceded by an odd run of backslashes.
fn next_unescaped(s: &[u8], ch: u8) -> Option<usize> {
    let mut from = 0;
    loop {
        let n = from + memchr::memchr(ch, &s[from..])?;
        let mut k = n;
        while k > from && s[k - 1] == b'\\' {
            k -= 1;
        }
        if (n - k) % 2 == 0 {
            return Some(n);
        }
        from = n + 1;
    }
}

/// Like [`next_unescaped`], but when the text has quotes, a candidate with an odd number of
/// quotes before it (counted from where the scan resumed) is inside a string: skip to after
/// the closing quote and go on.
fn next_unquoted(s: &[u8], ch: u8, quoted: bool) -> Option<usize> {
    if !quoted {
        return next_unescaped(s, ch);
    }
    let mut from = 0;
    loop {
        let n = from + next_unescaped(&s[from..], ch)?;
        if !in_quote(&s[from..n]) {
            return Some(n);
        }
        let after = n + 1;
        let q = after + next_unescaped(&s[after..], b'"')?;
        from = q + 1;
    }
}

fn in_quote(mut s: &[u8]) -> bool {
    let mut inside = false;
    while let Some(n) = next_unescaped(s, b'"') {
        inside = !inside;
        s = &s[n + 1..];
    }
    inside
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OwnedLabel;

    #[derive(Default)]
    struct Collect {
        rows: Vec<(Vec<OwnedLabel>, i64, f64)>,
        invalid: Vec<(u64, String)>,
    }

    impl Sink for Collect {
        fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
            for s in samples {
                let l = labels.iter().filter(|l| !l.value.is_empty());
                self.rows.push((
                    l.map(|l| OwnedLabel::new(l.name, l.value)).collect(),
                    s.timestamp_ms,
                    s.value(),
                ));
            }
        }
        fn invalid(&mut self, line: u64, reason: &str) {
            self.invalid.push((line, reason.to_string()));
        }
    }

    const T: i64 = 1_700_000_000_000;
    const NOW: i64 = 1_800_000_123_456;

    fn show(rows: &[(Vec<OwnedLabel>, i64, f64)]) -> Vec<String> {
        rows.iter()
            .map(|(ls, ts, v)| {
                let ls: Vec<String> = ls
                    .iter()
                    .map(|l| {
                        format!(
                            "{}={}",
                            String::from_utf8_lossy(&l.name),
                            String::from_utf8_lossy(&l.value)
                        )
                    })
                    .collect();
                format!("{} {v} @{ts}", ls.join(","))
            })
            .collect()
    }

    fn stream(body: &str, opts: &InfluxOptions<'_>) -> Collect {
        let mut c = Collect::default();
        InfluxParser::new().parse_stream(body.as_bytes(), 1, NOW, opts, &mut c);
        c
    }

    fn batch(body: &str, opts: &InfluxOptions<'_>) -> Result<Vec<String>, InfluxError> {
        let mut c = Collect::default();
        InfluxParser::new().parse_batch(body.as_bytes(), NOW, opts, &mut c)?;
        Ok(show(&c.rows))
    }

    #[test]
    fn spec_edge_cases() {
        let d = InfluxOptions::default();
        assert_eq!(
            batch("m,a=b,c= f=1 1700000000000000000", &d).unwrap(),
            [format!("a=b,=m_f 1 @{T}")]
        );
        assert_eq!(
            batch(r"m\ x,t\,k=v\=1 f\ 1=1 1700000000", &d).unwrap(),
            [format!("t,k=v=1,=m x_f 1 1 @{T}")]
        );
        assert_eq!(
            batch("m s=\"hello\",n=2,b=tRue,o=+5,h=.5 1700000000", &d).unwrap(),
            ["=m_s 0", "=m_n 2", "=m_b 0", "=m_o 0", "=m_h 0.5"].map(|s| format!("{s} @{T}"))
        );
        let ms = InfluxOptions {
            precision: Precision::Ms,
            ..d
        };
        assert_eq!(
            batch("m f=1 1700000000", &ms).unwrap(),
            ["=m_f 1 @1700000000"]
        );
        let h = InfluxOptions {
            precision: Precision::H,
            ..d
        };
        assert_eq!(
            batch("m f=1 472222", &h).unwrap(),
            ["=m_f 1 @1699999200000"]
        );
        let db = InfluxOptions { db: b"mydb", ..d };
        assert_eq!(
            batch("m f=1 1700000000\nm,db=x g=1 1700000000", &db).unwrap(),
            [format!("db=mydb,=m_f 1 @{T}"), format!("db=x,=m_g 1 @{T}")]
        );
        assert_eq!(
            batch(" f=1 1700000000", &d).unwrap(),
            [format!("=f 1 @{T}")]
        );
        assert_eq!(
            batch(",t=1 f=1 1700000000", &d).unwrap(),
            [format!("t=1,=f 1 @{T}")]
        );
        assert_eq!(batch("m f=1 1700000000 ", &d).unwrap_err().line, 1);
        assert_eq!(
            batch("m f=1 1700000000\nbad\nm g=2 1700000000", &d)
                .unwrap_err()
                .line,
            2
        );
        let s = stream(
            "m f=1 1700000000\nbad\nm g=2 1700000000\nm h=3 1700000000 ",
            &d,
        );
        assert_eq!(
            show(&s.rows),
            [format!("=m_f 1 @{T}"), format!("=m_g 2 @{T}")]
        );
        assert_eq!(s.invalid.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(
            batch("m,t=\"q r\" f=1", &d).unwrap(),
            [format!("t=\"q,=m_r\" f 1 @{NOW}")]
        );
        for bad in [
            "m f=1.5i",
            "m f=9223372036854775808i",
            "m\tf=1 1",
            "m,a f=1",
            "m =1",
            "m f=",
            "m,a=b 1",
        ] {
            assert!(batch(bad, &d).is_err(), "{bad}");
        }
        let o = InfluxOptions {
            skip_single_field: true,
            measurement_field_separator: b".",
            trim_timestamp_ms: 1000,
            ..d
        };
        assert_eq!(
            batch("m,z=1,a=2 f=1 1700000000123\nm f=1,g=2 1700000000999", &o).unwrap(),
            [
                format!("z=1,a=2,=m 1 @{T}"),
                format!("=m.f 1 @{T}"),
                format!("=m.g 2 @{T}")
            ]
        );
        let o = InfluxOptions {
            skip_single_field: true,
            skip_measurement: true,
            ..d
        };
        assert_eq!(
            batch("m,a=1 f=1 1700000000", &o).unwrap(),
            [format!("a=1 1 @{T}")]
        );
    }

    #[test]
    fn timestamps_and_comments() {
        let d = InfluxOptions::default();
        let s = InfluxOptions {
            precision: Precision::S,
            ..d
        };
        assert_eq!(
            batch("m f=1", &s).unwrap(),
            [format!("=m_f 1 @{}", NOW - NOW % 1000)]
        );
        assert_eq!(batch("m f=1 0", &d).unwrap(), [format!("=m_f 1 @{NOW}")]);
        assert_eq!(batch("m f=1 -5", &d).unwrap(), ["=m_f 1 @-5000"]);
        assert_eq!(
            batch("# c\r\n\nm f=1 1700000000000\r\n", &d).unwrap(),
            [format!("=m_f 1 @{T}")]
        );
        assert_eq!(Precision::from_query("µ".as_bytes()), Precision::Us);
        assert_eq!(Precision::from_query(b"n"), Precision::Auto);
    }

    #[test]
    fn quoted_fields() {
        let d = InfluxOptions::default();
        assert_eq!(
            batch("m s=\"a b,c=d\",n=3i 1700000000", &d).unwrap(),
            [format!("=m_s 0 @{T}"), format!("=m_n 3 @{T}")]
        );
        assert_eq!(
            batch("m s=\"12.5\" 1700000000", &d).unwrap(),
            [format!("=m_s 12.5 @{T}")]
        );
        assert!(batch("m s=\"abc 1700000000", &d).is_err());
        assert_eq!(
            batch("m f=1\\ ,g=2u 1700000000", &d).unwrap(),
            [format!("=m_f 0 @{T}"), format!("=m_g 2 @{T}")]
        );
    }

    #[test]
    fn http_hint() {
        let mut c = Collect::default();
        let ok = InfluxParser::new().parse_line(
            b"GET /write HTTP/1.1",
            7,
            NOW,
            &InfluxOptions::default(),
            &mut c,
        );
        assert!(!ok);
        assert_eq!(c.invalid.len(), 1);
        assert_eq!(c.invalid[0].0, 7);
        assert_eq!(c.invalid[0].1, HTTP_HINT);
    }

    /// The recorded vminsert answers to refused Influx batch bodies carry our error text
    /// between the route's prefix and the docs hint.
    #[test]
    fn batch_errors_read_like_the_recorded_responses() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/");
        let mut checked = 0;
        for file in [
            "formats/influx-invalid-line.json",
            "formats-extra/influx-stream-mode.json",
        ] {
            let text = std::fs::read_to_string(format!("{dir}{file}")).expect("vector file");
            let v: serde_json::Value = serde_json::from_str(&text).expect("vector json");
            let sends = v["send"].as_array().expect("send");
            let responses = v["responses"].as_array().expect("responses");
            for (send, resp) in sends.iter().zip(responses) {
                if resp["status"] != 400 {
                    continue;
                }
                let body = send["body"].as_str().expect("text body").as_bytes();
                let err = InfluxParser::new()
                    .parse_batch(
                        body,
                        NOW,
                        &InfluxOptions::default(),
                        &mut Collect::default(),
                    )
                    .expect_err(file);
                let recorded = resp["body"].as_str().expect("response body");
                let inner = recorded
                    .strip_prefix("cannot process influx line protocol data: ")
                    .and_then(|r| r.split_once("; see "))
                    .map(|(inner, _)| inner)
                    .unwrap_or_else(|| panic!("{file}: unexpected shape {recorded:?}"));
                assert_eq!(err.to_string(), inner, "{file}");
                checked += 1;
            }
        }
        assert_eq!(checked, 2, "both recorded refusals were compared");
    }

    #[test]
    fn line_errors_quote_the_offending_text() {
        let d = InfluxOptions::default();
        let err = |body: &str| batch(body, &d).unwrap_err();
        assert_eq!(
            err("m,a f=1").reason,
            "missing tag value for \"a\"",
            "a tag without '='"
        );
        assert_eq!(err("m =1").reason, "field key cannot be empty");
        assert!(err("m f=1.5i").reason.contains("\"f\""), "names the field");
        assert!(err("m f=1 1.7e9").reason.contains("\"1.7e9\""));
        let e = err("ok f=1\nm\tf=1\r\nlast f=2\n");
        assert_eq!(e.line, 2);
        assert_eq!(
            e.to_string(),
            "incorrect influx line \"m\\tf=1\\r\\nlast f=2\\n\": cannot find Whitespace I in \"m\\tf=1\""
        );
        assert_eq!(
            err("m a b").to_string(),
            "incorrect influx line \"m a b\": missing field value for \"a\""
        );
        // A huge body is quoted only in part.
        let long = format!("bad\n{}", "m f=1\n".repeat(10_000));
        let e = err(&long);
        assert!(e.rest_cut && e.rest.len() == MAX_QUOTED_REST);
        assert!(e.to_string().len() < 2 * MAX_QUOTED_REST);
    }

    #[test]
    fn go_quoting() {
        assert_eq!(go_quote(b"a \"b\"\\"), r#""a \"b\"\\""#);
        assert_eq!(go_quote(b"\x00\x7f\xff"), r#""\x00\x7f\xff""#);
        assert_eq!(go_quote("é\u{a0}".as_bytes()), "\"é\\u00a0\"");
        assert_eq!(go_quote(b"\x07\x08\x0c\x0b"), r#""\a\b\f\v""#);
    }
}
