//! OpenTSDB HTTP `/api/put` (spec: formats/opentsdb-http.md): one JSON data point object, or an
//! array of them.
//!
//! vminsert reads this JSON with a lenient parser (common.md §5.3): numbers are any run of
//! `0-9 . - + e E` or `NaN`/`Inf` (checked later with the strict float grammar), so `01`, `1.`,
//! `NaN` and `1e400` are accepted. No standard JSON crate accepts that, so the small reader here
//! follows those rules. It borrows everything from the body; only strings with escapes are
//! copied.
//!
//! A syntax error fails the request (400) before anything reaches the sink. A data point that
//! is well-formed JSON but not a valid point is reported to [`Sink::invalid`] and skipped.

use std::borrow::Cow;

use super::graphite::go_f64_to_i64;
use super::number::parse_float;
use super::opentsdb::opentsdb_millis;
use super::Sink;
use crate::model::{Label, Sample};

/// Flags that shape OpenTSDB HTTP rows.
#[derive(Clone, Copy, Debug)]
pub struct OpenTsdbHttpOptions {
    /// `-opentsdbhttpTrimTimestamp` in milliseconds (default 1 = off; applied only when above 1).
    pub trim_timestamp_ms: i64,
}

impl Default for OpenTsdbHttpOptions {
    fn default() -> Self {
        OpenTsdbHttpOptions {
            trim_timestamp_ms: 1,
        }
    }
}

/// The body is not valid (lenient) JSON: vminsert answers 400 and writes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the body where parsing stopped.
    pub offset: usize,
    pub reason: &'static str,
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot parse OpenTSDB JSON at byte {}: {}",
            self.offset, self.reason
        )
    }
}

impl std::error::Error for JsonError {}

/// Parse a whole `/api/put` body and hand every valid data point to the sink.
pub fn parse_body(
    body: &[u8],
    now_ms: i64,
    opts: &OpenTsdbHttpOptions,
    sink: &mut impl Sink,
) -> Result<(), JsonError> {
    let doc = parse_json(body)?;
    match &doc {
        Json::Array(items) => {
            for item in items {
                emit_point(item, now_ms, opts, sink);
            }
        }
        other => emit_point(other, now_ms, opts, sink),
    }
    Ok(())
}

fn emit_point(v: &Json<'_>, now_ms: i64, opts: &OpenTsdbHttpOptions, sink: &mut impl Sink) {
    match point(v) {
        Ok((metric, ts, value, tags)) => {
            let mut labels = Vec::with_capacity(1 + tags.len());
            labels.push(Label::metric_name(&metric));
            labels.extend(tags.iter().map(|(k, v)| Label::new(k, v)));
            let ts = opentsdb_millis(ts, now_ms, opts.trim_timestamp_ms, 1);
            sink.series(&labels, &[Sample::new(ts, value)]);
        }
        Err(reason) => sink.invalid(0, reason),
    }
}

type Point<'a> = (Cow<'a, [u8]>, i64, f64, Vec<(Cow<'a, [u8]>, Cow<'a, [u8]>)>);

fn point<'a>(v: &Json<'a>) -> Result<Point<'a>, &'static str> {
    let Json::Object(fields) = v else {
        return Err("a data point must be a JSON object");
    };
    let get = |name: &[u8]| {
        fields
            .iter()
            .find(|(k, _)| unescape(k).as_ref() == name)
            .map(|(_, v)| v)
    };
    let metric = match get(b"metric") {
        Some(Json::Str(raw)) => unescape(raw),
        _ => return Err("missing or non-string `metric`"),
    };
    if metric.is_empty() {
        return Err("empty `metric`");
    }
    let ts = match get(b"timestamp") {
        None => 0,
        Some(v) => go_f64_to_i64(number(v).ok_or("invalid `timestamp`")?),
    };
    let value = number(get(b"value").ok_or("missing `value`")?).ok_or("invalid `value`")?;
    let mut tags = Vec::new();
    match get(b"tags") {
        None => {}
        Some(Json::Object(pairs)) => {
            for (k, v) in pairs {
                let Json::Str(raw) = v else {
                    return Err("tag values must be strings");
                };
                let (k, v) = (unescape(k), unescape(raw));
                if !k.is_empty() && !v.is_empty() {
                    tags.push((k, v));
                }
            }
        }
        Some(_) => return Err("`tags` must be an object"),
    }
    Ok((metric, ts, value, tags))
}

/// A JSON number token, or a string holding a number, under the strict float grammar.
fn number(v: &Json<'_>) -> Option<f64> {
    match v {
        Json::Num(tok) => parse_float(tok),
        Json::Str(raw) => parse_float(&unescape(raw)),
        _ => None,
    }
}

/// A parsed JSON value. Strings and keys stay raw (escapes not yet decoded); numbers stay as
/// their token.
#[derive(Debug)]
enum Json<'a> {
    Object(Vec<(&'a [u8], Json<'a>)>),
    Array(Vec<Json<'a>>),
    Str(&'a [u8]),
    Num(&'a [u8]),
    Bool,
    Null,
}

const MAX_DEPTH: usize = 300;

fn parse_json(s: &[u8]) -> Result<Json<'_>, JsonError> {
    let mut r = Reader { s, pos: 0 };
    r.skip_ws();
    let v = r.value(0)?;
    r.skip_ws();
    if r.pos != s.len() {
        return Err(r.err("unexpected data after the top-level value"));
    }
    Ok(v)
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: &'static str) -> JsonError {
        JsonError {
            offset: self.pos,
            reason,
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn value(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(self.err("too deep nesting"));
        }
        let rest = &self.s[self.pos..];
        match rest.first() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => {
                self.pos += 1;
                self.object(depth)
            }
            Some(b'[') => {
                self.pos += 1;
                self.array(depth)
            }
            Some(b'"') => {
                self.pos += 1;
                Ok(Json::Str(self.string()?))
            }
            Some(b't') => self.literal(b"true", Json::Bool),
            Some(b'f') => self.literal(b"false", Json::Bool),
            Some(b'n') if rest.starts_with(b"null") => self.literal(b"null", Json::Null),
            Some(b'n') if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case(b"nan") => {
                self.pos += 3;
                Ok(Json::Num(&rest[..3]))
            }
            Some(b'n') => Err(self.err("unexpected value")),
            Some(_) => self.number(),
        }
    }

    fn literal(&mut self, word: &[u8], v: Json<'a>) -> Result<Json<'a>, JsonError> {
        if self.s[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(v)
        } else {
            Err(self.err("unexpected value"))
        }
    }

    fn number(&mut self) -> Result<Json<'a>, JsonError> {
        let rest = &self.s[self.pos..];
        let n = rest
            .iter()
            .position(|&c| !matches!(c, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'))
            .unwrap_or(rest.len());
        let signed = n == 1 && matches!(rest[0], b'-' | b'+');
        if n == 0 || signed {
            // Only `Inf`/`NaN` (any case, exactly three letters) may follow here.
            let word = rest
                .get(n..n + 3)
                .ok_or_else(|| self.err("unexpected character"))?;
            if word.eq_ignore_ascii_case(b"inf") || word.eq_ignore_ascii_case(b"nan") {
                self.pos += n + 3;
                return Ok(Json::Num(&rest[..n + 3]));
            }
            if n == 0 {
                return Err(self.err("unexpected character"));
            }
        }
        self.pos += n;
        Ok(Json::Num(&rest[..n]))
    }

    /// After the opening quote: the raw bytes up to the first quote preceded by an even number
    /// of backslashes.
    fn string(&mut self) -> Result<&'a [u8], JsonError> {
        let start = self.pos;
        let mut from = start;
        loop {
            let Some(q) = memchr::memchr(b'"', &self.s[from..]).map(|i| from + i) else {
                self.pos = self.s.len();
                return Err(self.err("missing closing '\"'"));
            };
            let mut k = q;
            while k > from && self.s[k - 1] == b'\\' {
                k -= 1;
            }
            if (q - k) % 2 == 0 {
                self.pos = q + 1;
                return Ok(&self.s[start..q]);
            }
            from = q + 1;
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let mut pairs = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(pairs));
        }
        loop {
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("missing '\"' before an object key"));
            }
            self.pos += 1;
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return Err(self.err("missing ':' after an object key"));
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            pairs.push((key, v));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(pairs));
                }
                _ => return Err(self.err("missing ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json<'a>, JsonError> {
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.err("missing ',' or ']' in an array")),
            }
        }
    }
}

fn hex4(s: &[u8]) -> Option<u16> {
    if s.len() < 4 || !s[..4].iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(&s[..4]).ok()?, 16).ok()
}

fn push_char(dst: &mut Vec<u8>, c: char) {
    let mut b = [0u8; 4];
    dst.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
}

/// Decode escapes the forgiving way vminsert's JSON reader does: unknown or broken escapes stay
/// as they are, a broken surrogate pair becomes U+FFFD.
fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    let Some(first) = memchr::memchr(b'\\', raw) else {
        return Cow::Borrowed(raw);
    };
    let mut out = Vec::with_capacity(raw.len());
    out.extend_from_slice(&raw[..first]);
    let mut s = &raw[first + 1..];
    while let Some((&ch, rest)) = s.split_first() {
        s = rest;
        match ch {
            b'"' | b'\\' | b'/' => out.push(ch),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'u' => match hex4(s) {
                None => out.extend_from_slice(b"\\u"),
                Some(x) => {
                    let hi = &s[..4];
                    s = &s[4..];
                    if !(0xD800..0xE000).contains(&x) {
                        push_char(&mut out, char::from_u32(u32::from(x)).unwrap_or('\u{FFFD}'));
                    } else {
                        match (s.starts_with(b"\\u"), s.get(2..).and_then(hex4)) {
                            (true, Some(y)) => {
                                let c = if (0xD800..0xDC00).contains(&x)
                                    && (0xDC00..0xE000).contains(&y)
                                {
                                    let cp = 0x10000
                                        + ((u32::from(x) - 0xD800) << 10)
                                        + (u32::from(y) - 0xDC00);
                                    char::from_u32(cp).unwrap_or('\u{FFFD}')
                                } else {
                                    '\u{FFFD}'
                                };
                                push_char(&mut out, c);
                                s = &s[6..];
                            }
                            _ => {
                                out.extend_from_slice(b"\\u");
                                out.extend_from_slice(hi);
                            }
                        }
                    }
                }
            },
            other => out.extend_from_slice(&[b'\\', other]),
        }
        match memchr::memchr(b'\\', s) {
            None => {
                out.extend_from_slice(s);
                break;
            }
            Some(n) => {
                out.extend_from_slice(&s[..n]);
                s = &s[n + 1..];
            }
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::number::GO_NAN_BITS;

    #[derive(Default)]
    struct Collect {
        rows: Vec<String>,
        bits: Vec<u64>,
        invalid: usize,
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
                self.bits.push(s.value_bits);
            }
        }
        fn invalid(&mut self, _: u64, _: &str) {
            self.invalid += 1;
        }
    }

    const NOW: i64 = 1_800_000_123_456;

    fn run(body: &str) -> Result<Collect, JsonError> {
        let mut c = Collect::default();
        parse_body(
            body.as_bytes(),
            NOW,
            &OpenTsdbHttpOptions::default(),
            &mut c,
        )?;
        Ok(c)
    }

    #[test]
    fn spec_edge_cases() {
        let t = 1_700_000_000_000i64;
        let c =
            run(r#"{"metric":"m","timestamp":1700000000,"value":1.5,"tags":{"a":"b"}}"#).unwrap();
        assert_eq!(c.rows, [format!("=m,a=b 1.5 @{t}")]);
        let c = run(
            r#"[{"metric":"m","timestamp":1700000000123,"value":"2.5","tags":{"a":"b","e":""}}]"#,
        )
        .unwrap();
        assert_eq!(c.rows, ["=m,a=b 2.5 @1700000000123"]);
        let c = run(r#"[{"metric":"n","value":3}]"#).unwrap();
        assert_eq!(c.rows, [format!("=n 3 @{}", NOW / 1000 * 1000)]);
        let c = run(
            r#"[{"metric":"","value":1},{"metric":"x","timestamp":null,"value":1},{"metric":"y","timestamp":1700000000,"value":1,"tags":{"k":1}},5]"#,
        )
        .unwrap();
        assert_eq!((c.rows.len(), c.invalid), (0, 4));
        let c = run(r#"{"metric":"m","timestamp":1.7e9,"value":NaN}"#).unwrap();
        assert_eq!(c.rows, [format!("=m NaN @{t}")]);
        assert_eq!(c.bits, [GO_NAN_BITS]);
        assert!(run(r#"{"metric":"m","timestamp":1700000000,"value":1} trailing"#).is_err());
        let c = run(r#""str""#).unwrap();
        assert_eq!((c.rows.len(), c.invalid), (0, 1));
        let c = run(r#"{"metric":"m","metric":"m2","timestamp":1700000000,"value":1}"#).unwrap();
        assert_eq!(c.rows, [format!("=m 1 @{t}")]);
        let c = run(r#"[{"metric":"m","timestamp":1700000000,"value":01},{"metric":"m","timestamp":1700000000,"value":1e400}]"#)
            .unwrap();
        assert_eq!(c.rows, [format!("=m 1 @{t}"), format!("=m inf @{t}")]);
    }

    #[test]
    fn lenient_tokens_and_escapes() {
        let c = run(" [ {\"m\\u0065tric\" : \"a\\tb\\u00e9\\ud83d\\ude00\\q\", \"value\" : -Inf , \"tags\":{\"k\":\"v\",\"k\":\"w\"}} ,\r\n{\"metric\":\"x\",\"value\":+1}, {\"metric\":\"x\",\"value\":\"1e3\",\"timestamp\":\"1700000000\"} ] ")
            .unwrap();
        assert_eq!(
            c.rows,
            [
                format!(
                    "=a\tb\u{e9}\u{1F600}\\q,k=v,k=w -inf @{}",
                    NOW / 1000 * 1000
                ),
                "=x 1000 @1700000000000".to_string()
            ]
        );
        assert_eq!(c.invalid, 1);
        for bad in [
            "",
            "[",
            "{\"a\":1,}",
            "[1,]",
            "{\"metric\":Infinity}",
            "nul",
            "{'a':1}",
            "\"abc",
            "[1 2]",
            "tru",
        ] {
            assert!(run(bad).is_err(), "{bad:?}");
        }
        let deep = "[".repeat(300) + &"]".repeat(300);
        assert!(run(&deep).is_ok());
        let deeper = "[".repeat(301) + &"]".repeat(301);
        assert!(run(&deeper).is_err());
        assert!(run(&"[".repeat(100_000)).is_err());
    }
}
