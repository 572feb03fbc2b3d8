//! `/api/v1/import`: VictoriaMetrics JSON lines (spec: formats/vmimport-jsonl.md).
//!
//! vminsert reads these lines with a lenient JSON parser (fastjson, common.md §5.3) that
//! accepts number tokens such as `NaN`, `-Inf`, `01` or `1.` which no RFC 8259 parser takes,
//! so this module carries its own small JSON scanner with the same leniency. Labels borrow
//! from the line; only strings with escapes are unescaped into a scratch buffer.

use super::lines::{LineSplitter, LineTooLong, IMPORT_MAX_LINE_LEN};
use super::number::{go_nan, parse_float, parse_int};
use super::Sink;
use crate::model::{Label, Sample};

const MAX_DEPTH: usize = 300;

/// Streaming parser for one request body.
#[derive(Debug)]
pub struct JsonLinesParser {
    splitter: LineSplitter,
    lines: JsonLines,
}

impl Default for JsonLinesParser {
    fn default() -> Self {
        JsonLinesParser::new(IMPORT_MAX_LINE_LEN)
    }
}

impl JsonLinesParser {
    /// `max_line_len`: `-import.maxLineLen` (default 10 MiB).
    pub fn new(max_line_len: usize) -> JsonLinesParser {
        JsonLinesParser {
            splitter: LineSplitter::new(max_line_len),
            lines: JsonLines::default(),
        }
    }

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
        self.splitter.finish(|n, l| lines.line(n, l, sink))
    }
}

/// Parse a whole body held in memory.
pub fn parse_body<S: Sink + ?Sized>(body: &[u8], sink: &mut S) -> Result<(), LineTooLong> {
    let mut p = JsonLinesParser::default();
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

/// The per-line parser, for callers that split lines themselves.
#[derive(Debug, Default)]
pub struct JsonLines {
    scratch: Vec<u8>,
    parts: Vec<(Part, Part)>,
    samples: Vec<Sample>,
    labels: Vec<Label<'static>>,
}

impl JsonLines {
    pub fn line<S: Sink + ?Sized>(&mut self, line_no: u64, line: &[u8], sink: &mut S) {
        if line.is_empty() {
            return;
        }
        self.scratch.clear();
        self.parts.clear();
        self.samples.clear();
        if let Err(reason) = self.parse(line) {
            sink.invalid(line_no, reason);
            return;
        }
        let mut labels = crate::model::recycle_labels(std::mem::take(&mut self.labels));
        for (n, v) in &self.parts {
            labels.push(Label::new(
                n.get(line, &self.scratch),
                v.get(line, &self.scratch),
            ));
        }
        sink.series(&labels, &self.samples);
        self.labels = crate::model::recycle_labels(labels);
    }

    fn parse(&mut self, line: &[u8]) -> Result<(), &'static str> {
        let mut j = Scanner { s: line, i: 0 };
        j.ws();
        let top = j.value(0)?;
        j.ws();
        if j.i != line.len() {
            return Err("unexpected trailing data after the JSON object");
        }
        if top.kind != Kind::Object {
            return Err("missing `metric` object");
        }
        let (mut metric, mut values, mut timestamps) = (None, None, None);
        for (k, v) in ObjectIter::new(line, top) {
            // Lookups return the first occurrence of a key, like fastjson's Get.
            let key = key_bytes(line, k, &mut self.scratch);
            let slot = match key.as_ref() {
                b"metric" => &mut metric,
                b"values" => &mut values,
                b"timestamps" => &mut timestamps,
                _ => continue,
            };
            slot.get_or_insert(v);
        }
        let metric = metric
            .filter(|m| m.kind == Kind::Object)
            .ok_or("missing `metric` object")?;
        for (k, v) in ObjectIter::new(line, metric) {
            let name = string_part(line, k, &mut self.scratch);
            if name.get(line, &self.scratch).is_empty() {
                continue;
            }
            // Non-string label values become empty, so the pipeline drops them.
            let value = if v.kind == Kind::String {
                string_part(line, v, &mut self.scratch)
            } else {
                Part::Line(0, 0)
            };
            self.parts.push((name, value));
        }
        if self.parts.is_empty() {
            return Err("missing tags");
        }
        let values = values
            .filter(|v| v.kind == Kind::Array)
            .ok_or("missing `values` array")?;
        let timestamps = timestamps
            .filter(|v| v.kind == Kind::Array)
            .ok_or("missing `timestamps` array")?;
        for v in ArrayIter::new(line, values) {
            let value = match v.kind {
                Kind::Number => parse_float(&line[v.start..v.end]).ok_or("cannot parse a value")?,
                Kind::Null => go_nan(),
                Kind::String => {
                    let mut tmp = Vec::new();
                    let s = raw_string(line, v);
                    let s = if v.escaped {
                        unescape_json(&mut tmp, s);
                        &tmp[..]
                    } else {
                        s
                    };
                    special_value(s).ok_or("a string value must be Inf, -Inf or NaN")?
                }
                _ => return Err("a value must be a number, null or a special string"),
            };
            self.samples.push(Sample::from_bits(0, value.to_bits()));
        }
        if self.samples.is_empty() {
            return Err("`values` array is empty");
        }
        let mut n = 0;
        for t in ArrayIter::new(line, timestamps) {
            if t.kind != Kind::Number {
                return Err("a timestamp must be an integer number of milliseconds");
            }
            let ts = parse_int(&line[t.start..t.end])
                .ok_or("a timestamp must be an integer number of milliseconds")?;
            if let Some(s) = self.samples.get_mut(n) {
                s.timestamp_ms = ts;
            }
            n += 1;
        }
        if n == 0 {
            return Err("`timestamps` array is empty");
        }
        if n != self.samples.len() {
            return Err("`values` and `timestamps` have different lengths");
        }
        Ok(())
    }
}

/// `"Inf"`, `"-infinity"`, `"NaN"`, `"null"`… inside a JSON string.
fn special_value(s: &[u8]) -> Option<f64> {
    let (neg, rest) = match s.strip_prefix(b"-") {
        Some(r) => (true, r),
        None => (false, s),
    };
    match rest {
        b"infinity" | b"Infinity" | b"Inf" | b"inf" => Some(if neg {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        }),
        b"null" | b"Null" | b"nan" | b"NaN" => Some(go_nan()),
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Object,
    Array,
    String,
    Number,
    True,
    False,
    Null,
}

/// A scanned value: its kind and byte range (strings include their quotes).
#[derive(Clone, Copy, Debug)]
struct Val {
    kind: Kind,
    start: usize,
    end: usize,
    escaped: bool,
}

fn raw_string(line: &[u8], v: Val) -> &[u8] {
    &line[v.start + 1..v.end - 1]
}

fn string_part(line: &[u8], v: Val, scratch: &mut Vec<u8>) -> Part {
    if v.escaped {
        let a = scratch.len();
        unescape_json(scratch, raw_string(line, v));
        Part::Scratch(a, scratch.len())
    } else {
        Part::Line(v.start + 1, v.end - 1)
    }
}

fn key_bytes<'a>(line: &'a [u8], v: Val, tmp: &mut Vec<u8>) -> std::borrow::Cow<'a, [u8]> {
    if v.escaped {
        let a = tmp.len();
        unescape_json(tmp, raw_string(line, v));
        let k = tmp[a..].to_vec();
        tmp.truncate(a);
        std::borrow::Cow::Owned(k)
    } else {
        std::borrow::Cow::Borrowed(raw_string(line, v))
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() < 4 {
        return None;
    }
    let mut v = 0u32;
    for &c in &s[..4] {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut b = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
}

/// fastjson's best-effort unescaping: unknown or malformed escapes are kept as they are.
pub fn unescape_json(out: &mut Vec<u8>, s: &[u8]) {
    let mut i = 0;
    while i < s.len() {
        let Some(bs) = memchr::memchr(b'\\', &s[i..]) else {
            out.extend_from_slice(&s[i..]);
            return;
        };
        out.extend_from_slice(&s[i..i + bs]);
        i += bs;
        let Some(&e) = s.get(i + 1) else {
            out.push(b'\\');
            return;
        };
        let simple = match e {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
            continue;
        }
        if e != b'u' {
            out.extend_from_slice(&s[i..i + 2]);
            i += 2;
            continue;
        }
        if s.len() - i < 6 {
            out.extend_from_slice(&s[i..]);
            return;
        }
        let Some(x) = hex4(&s[i + 2..]) else {
            out.extend_from_slice(&s[i..i + 2]);
            i += 2;
            continue;
        };
        if !(0xd800..0xe000).contains(&x) {
            push_char(out, char::from_u32(x).unwrap_or('\u{fffd}'));
            i += 6;
            continue;
        }
        let y = if s.len() - i >= 12 && s[i + 6] == b'\\' && s[i + 7] == b'u' {
            hex4(&s[i + 8..])
        } else {
            None
        };
        let Some(y) = y else {
            out.extend_from_slice(&s[i..i + 6]);
            i += 6;
            continue;
        };
        let c = if (0xd800..0xdc00).contains(&x) && (0xdc00..0xe000).contains(&y) {
            char::from_u32(0x10000 + ((x - 0xd800) << 10) + (y - 0xdc00)).unwrap_or('\u{fffd}')
        } else {
            '\u{fffd}'
        };
        push_char(out, c);
        i += 12;
    }
}

struct Scanner<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && matches!(self.s[self.i], b' ' | b'\t' | b'\r' | b'\n') {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn string(&mut self) -> Result<Val, &'static str> {
        let start = self.i;
        let mut i = self.i + 1;
        let mut escaped = false;
        loop {
            let Some(p) = memchr::memchr2(b'"', b'\\', &self.s[i.min(self.s.len())..]) else {
                return Err("missing closing quote");
            };
            let p = i + p;
            if self.s[p] == b'"' {
                self.i = p + 1;
                return Ok(Val {
                    kind: Kind::String,
                    start,
                    end: p + 1,
                    escaped,
                });
            }
            escaped = true;
            i = p + 2;
        }
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Result<Val, &'static str> {
        if self.s[self.i..].starts_with(word) {
            let start = self.i;
            self.i += word.len();
            Ok(Val {
                kind,
                start,
                end: self.i,
                escaped: false,
            })
        } else {
            Err("unexpected value")
        }
    }

    fn number(&mut self) -> Result<Val, &'static str> {
        let start = self.i;
        let rest = &self.s[start..];
        let run = rest
            .iter()
            .position(|&c| !(c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')))
            .unwrap_or(rest.len());
        let mut end = start + run;
        if run == 0 || (run == 1 && matches!(rest[0], b'-' | b'+')) {
            let word = rest.get(run..run + 3).ok_or("unexpected value")?;
            if !(word.eq_ignore_ascii_case(b"inf") || word.eq_ignore_ascii_case(b"nan")) {
                return Err("unexpected value");
            }
            end = start + run + 3;
        }
        self.i = end;
        Ok(Val {
            kind: Kind::Number,
            start,
            end,
            escaped: false,
        })
    }

    fn value(&mut self, depth: usize) -> Result<Val, &'static str> {
        let start = self.i;
        match self.peek().ok_or("unexpected end of JSON")? {
            b'{' => {
                if depth >= MAX_DEPTH {
                    return Err("too deep nesting");
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                } else {
                    loop {
                        if self.peek() != Some(b'"') {
                            return Err("missing object key");
                        }
                        self.string()?;
                        self.ws();
                        if self.peek() != Some(b':') {
                            return Err("missing ':' after an object key");
                        }
                        self.i += 1;
                        self.ws();
                        self.value(depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.ws();
                            }
                            Some(b'}') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err("missing ',' or '}' in an object"),
                        }
                    }
                }
                Ok(Val {
                    kind: Kind::Object,
                    start,
                    end: self.i,
                    escaped: false,
                })
            }
            b'[' => {
                if depth >= MAX_DEPTH {
                    return Err("too deep nesting");
                }
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                } else {
                    loop {
                        self.value(depth + 1)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.ws();
                            }
                            Some(b']') => {
                                self.i += 1;
                                break;
                            }
                            _ => return Err("missing ',' or ']' in an array"),
                        }
                    }
                }
                Ok(Val {
                    kind: Kind::Array,
                    start,
                    end: self.i,
                    escaped: false,
                })
            }
            b'"' => self.string(),
            b't' => self.literal(b"true", Kind::True),
            b'f' => self.literal(b"false", Kind::False),
            b'n' if self.s[self.i..].starts_with(b"null") => self.literal(b"null", Kind::Null),
            _ => self.number(),
        }
    }
}

/// Pairs of an already validated object.
struct ObjectIter<'a> {
    sc: Scanner<'a>,
    end: usize,
}

impl<'a> ObjectIter<'a> {
    fn new(s: &'a [u8], obj: Val) -> ObjectIter<'a> {
        ObjectIter {
            sc: Scanner {
                s,
                i: obj.start + 1,
            },
            end: obj.end - 1,
        }
    }
}

impl Iterator for ObjectIter<'_> {
    type Item = (Val, Val);
    fn next(&mut self) -> Option<(Val, Val)> {
        let sc = &mut self.sc;
        sc.ws();
        if sc.peek() == Some(b',') {
            sc.i += 1;
            sc.ws();
        }
        if sc.i >= self.end {
            return None;
        }
        let k = sc.string().ok()?;
        sc.ws();
        sc.i += 1; // ':'
        sc.ws();
        let v = sc.value(0).ok()?;
        Some((k, v))
    }
}

/// Elements of an already validated array.
struct ArrayIter<'a> {
    sc: Scanner<'a>,
    end: usize,
}

impl<'a> ArrayIter<'a> {
    fn new(s: &'a [u8], arr: Val) -> ArrayIter<'a> {
        ArrayIter {
            sc: Scanner {
                s,
                i: arr.start + 1,
            },
            end: arr.end - 1,
        }
    }
}

impl Iterator for ArrayIter<'_> {
    type Item = Val;
    fn next(&mut self) -> Option<Val> {
        let sc = &mut self.sc;
        sc.ws();
        if sc.peek() == Some(b',') {
            sc.i += 1;
            sc.ws();
        }
        if sc.i >= self.end {
            return None;
        }
        sc.value(0).ok()
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
    }

    fn parse(body: &str) -> Rows {
        let mut r = Rows::default();
        parse_body(body.as_bytes(), &mut r).unwrap();
        r
    }

    #[test]
    fn spec_edge_cases() {
        let r = parse(r#"{"metric":{"__name__":"m","a":1,"b":"x"},"values":[1],"timestamps":[5]}"#);
        assert_eq!(r.rows[0].0.len(), 3);
        assert_eq!(r.rows[0].0[1].1, "");

        let r = parse(
            r#"{"metric":{"__name__":"m","":"x"},"values":[null,"Inf","-inf","NaN","nan",3],"timestamps":[1,2,3,4,5,6]}"#,
        );
        let v: Vec<u64> = r.rows.iter().map(|x| x.2).collect();
        assert_eq!(r.rows[0].0.len(), 1);
        assert_eq!(
            v,
            vec![
                0x7ff8000000000001,
                f64::INFINITY.to_bits(),
                f64::NEG_INFINITY.to_bits(),
                0x7ff8000000000001,
                0x7ff8000000000001,
                3f64.to_bits()
            ]
        );

        let r = parse(concat!(
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[\"1.5\"],\"timestamps\":[1]}\n",
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[1],\"timestamps\":[1.7e12]}\n",
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[1,2],\"timestamps\":[1]}\n",
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[],\"timestamps\":[]}\n",
            "{\"metric\":{\"__name__\":\"q\"},\"values\":[Inf,-Inf,NaN],\"timestamps\":[1,2,3]}\r\n",
            "\n  \n",
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[1],\"timestamps\":[1]} x\n",
            "{\"metric\":{\"__name__\":\"m\"},\"values\":[Infinity],\"timestamps\":[1]}\n",
            "{\"metric\":{\"__name__\":\"m\",\"__name__\":\"dup\"},\"values\":[1],\"timestamps\":[1],\"values\":[5]}\n",
        ));
        assert_eq!(r.invalid, vec![1, 2, 3, 4, 7, 8, 9]);
        assert_eq!(r.rows.len(), 4);
        assert_eq!(
            r.rows[3].0,
            vec![
                ("__name__".into(), "m".into()),
                ("__name__".into(), "dup".into())
            ]
        );
        assert_eq!(r.rows[3].2, 1f64.to_bits());

        let r = parse(
            r#"{"metric":{"__name__":"a\"b\u00e9\ud83d\ude00\q"},"values":[01,1.],"timestamps":[1,2]}"#,
        );
        assert_eq!(r.rows[0].0[0].1, "a\"b\u{e9}\u{1f600}\\q");
        assert_eq!(r.rows[1].2, 1f64.to_bits());
    }
}
