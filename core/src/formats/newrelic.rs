//! NewRelic infrastructure agent: `/newrelic/infra/v2/metrics/events/bulk`
//! (spec: formats/newrelic.md).
//!
//! The body is `[{"Events":[{event}, …]}, …]`. In an event every non-empty string field is a
//! tag and every other numeric field is a sample named by its key; `timestamp` (a number) is the
//! event's time. The body is read whole and checked completely before anything is handed to
//! the sink, because any error refuses the whole request with nothing written.

use std::fmt;

use super::json_lines::unescape_json;
use super::number::parse_float;
use super::Sink;
use crate::model::{recycle_labels, Label, Sample};

/// `-newrelic.maxInsertRequestSize` default.
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 64 * 1024 * 1024;

/// The answer of the ingestion route and of the `newrelic` stub (202).
pub const OK_BODY: &str = "{\"status\":\"ok\"}";

/// The answer of the `newrelic/inventory/deltas` stub (202): version 1, empty state, no reset.
pub const INVENTORY_DELTAS_BODY: &str =
    "{\"payload\":{\"version\": 1, \"state\": {}, \"reset\": \"false\"}}";

/// A refused request (400). The text follows vminsert's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRelicError(pub String);

impl fmt::Display for NewRelicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot decode NewRelic data: cannot unmarshal NewRelic request: {}",
            self.0
        )
    }
}

impl std::error::Error for NewRelicError {}

/// Parse a whole (decompressed) body. `now_ms` gives the default timestamp (rounded down to
/// whole seconds, as vminsert's second clock does). Nothing reaches `sink` unless the whole
/// body is valid.
pub fn parse_body<S: Sink + ?Sized>(
    body: &[u8],
    now_ms: i64,
    sink: &mut S,
) -> Result<(), NewRelicError> {
    let root = json::parse(body).map_err(|e| NewRelicError(format!("cannot parse JSON: {e}")))?;
    let posts = match &root {
        json::Value::Array(a) => a,
        other => {
            return Err(NewRelicError(format!(
                "cannot find the top-level array of MetricPost objects: value doesn't contain array; it contains {}",
                other.type_name()
            )))
        }
    };
    // First pass: every check that can refuse the request.
    let mut timestamps = Vec::new();
    for post in posts {
        for event in events(post)? {
            timestamps.push(event_timestamp(event)?);
        }
    }
    let now_s_ms = now_ms.div_euclid(1000) * 1000;
    let mut emitter = Emitter::default();
    let mut ts = timestamps.into_iter();
    for post in posts {
        for event in events(post).expect("checked above") {
            let t = ts.next().flatten().filter(|&t| t != 0).unwrap_or(now_s_ms);
            emitter.event(event, t, sink);
        }
    }
    Ok(())
}

fn events<'v, 'a>(post: &'v json::Value<'a>) -> Result<&'v [json::Value<'a>], NewRelicError> {
    let json::Value::Object(fields) = post else {
        return Err(NewRelicError(format!(
            "cannot find MetricPost object: value doesn't contain object; it contains {}",
            post.type_name()
        )));
    };
    match json::get(fields, b"Events") {
        None => Ok(&[]),
        Some(json::Value::Array(events)) => {
            for e in events {
                if !matches!(e, json::Value::Object(_)) {
                    return Err(NewRelicError(format!(
                        "cannot parse MetricPost object: cannot unmarshal event: value doesn't contain object; it contains {}",
                        e.type_name()
                    )));
                }
            }
            Ok(events)
        }
        Some(other) => Err(NewRelicError(format!(
            "cannot parse MetricPost object: cannot find Events array in MetricPost object: value doesn't contain array; it contains {}",
            other.type_name()
        ))),
    }
}

/// The event's numeric `timestamp` in ms, `None` when it has none. Seconds below 2^32.
fn event_timestamp(event: &json::Value<'_>) -> Result<Option<i64>, NewRelicError> {
    let json::Value::Object(fields) = event else {
        return Ok(None);
    };
    let mut ts = None;
    for (key, v) in fields {
        if let (b"timestamp", json::Value::Number(tok)) = (key.raw, v) {
            let f = parse_float(tok).ok_or_else(|| {
                NewRelicError(format!(
                    "cannot parse MetricPost object: cannot parse timestamp {:?}",
                    String::from_utf8_lossy(tok)
                ))
            })?;
            let ms = if f < 4_294_967_296.0 { f * 1000.0 } else { f };
            ts = Some(ms as i64);
        }
    }
    Ok(ts)
}

#[derive(Default)]
struct Emitter {
    text: Vec<u8>,
    tags: Vec<(usize, usize, usize)>,
    labels: Vec<Label<'static>>,
}

impl Emitter {
    fn event<S: Sink + ?Sized>(&mut self, event: &json::Value<'_>, ts: i64, sink: &mut S) {
        let json::Value::Object(fields) = event else {
            return;
        };
        self.text.clear();
        self.tags.clear();
        for (key, v) in fields {
            if let json::Value::String(s) = v {
                if key.raw.is_empty() || s.raw.is_empty() {
                    continue;
                }
                let a = self.text.len();
                key.unescape_into(&mut self.text);
                let b = self.text.len();
                s.unescape_into(&mut self.text);
                self.tags.push((a, b, self.text.len()));
            }
        }
        let tag_end = self.text.len();
        for (key, v) in fields {
            let json::Value::Number(tok) = v else {
                continue;
            };
            if key.raw.is_empty() || key.raw == b"timestamp" {
                continue;
            }
            self.text.truncate(tag_end);
            key.unescape_into(&mut self.text);
            // A token the JSON scanner takes but the float grammar refuses counts as 0.
            let value = parse_float(tok).unwrap_or(0.0);
            let text = &self.text;
            let mut labels = recycle_labels(std::mem::take(&mut self.labels));
            labels.push(Label::metric_name(&text[tag_end..]));
            labels.extend(
                self.tags
                    .iter()
                    .map(|&(a, b, c)| Label::new(&text[a..b], &text[b..c])),
            );
            sink.series(&labels, &[Sample::new(ts, value)]);
            self.labels = recycle_labels(labels);
        }
    }
}

/// A small JSON tree with fastjson's leniency (common.md §5.3): number tokens are kept raw (any
/// run of `0-9 . - + e E`, or a signed `nan`/`inf`), strings are kept escaped, lookups return
/// the first of duplicate keys, nesting is limited to 300 levels.
pub(crate) mod json {
    use super::unescape_json;

    const MAX_DEPTH: usize = 300;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Str<'a> {
        /// The bytes between the quotes, escapes not yet resolved.
        pub raw: &'a [u8],
    }

    impl Str<'_> {
        pub fn has_escapes(&self) -> bool {
            memchr::memchr(b'\\', self.raw).is_some()
        }

        pub fn unescape_into(&self, out: &mut Vec<u8>) {
            if self.has_escapes() {
                unescape_json(out, self.raw);
            } else {
                out.extend_from_slice(self.raw);
            }
        }

        /// Whether the unescaped string equals `s`.
        pub fn is(&self, s: &[u8]) -> bool {
            if !self.has_escapes() {
                return self.raw == s;
            }
            let mut tmp = Vec::new();
            unescape_json(&mut tmp, self.raw);
            tmp == s
        }
    }

    #[derive(Clone, Debug, PartialEq)]
    pub enum Value<'a> {
        Null,
        Bool(bool),
        Number(&'a [u8]),
        String(Str<'a>),
        Array(Vec<Value<'a>>),
        Object(Vec<(Str<'a>, Value<'a>)>),
    }

    impl Value<'_> {
        pub fn type_name(&self) -> &'static str {
            match self {
                Value::Null => "null",
                Value::Bool(true) => "true",
                Value::Bool(false) => "false",
                Value::Number(_) => "number",
                Value::String(_) => "string",
                Value::Array(_) => "array",
                Value::Object(_) => "object",
            }
        }
    }

    /// The first value under `key`.
    pub fn get<'v, 'a>(fields: &'v [(Str<'a>, Value<'a>)], key: &[u8]) -> Option<&'v Value<'a>> {
        fields.iter().find(|(k, _)| k.is(key)).map(|(_, v)| v)
    }

    pub fn parse(s: &[u8]) -> Result<Value<'_>, String> {
        let mut p = Parser { s, i: 0 };
        p.ws();
        let v = p.value(0)?;
        p.ws();
        if p.i != s.len() {
            return Err(format!("unexpected tail at offset {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        s: &'a [u8],
        i: usize,
    }

    impl<'a> Parser<'a> {
        fn ws(&mut self) {
            while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.s.get(self.i) {
                self.i += 1;
            }
        }

        fn err<T>(&self, what: &str) -> Result<T, String> {
            Err(format!("{what} at offset {}", self.i))
        }

        fn value(&mut self, depth: usize) -> Result<Value<'a>, String> {
            if depth > MAX_DEPTH {
                return self.err("too deep nesting");
            }
            let rest = &self.s[self.i..];
            match rest.first() {
                None => self.err("cannot parse empty string"),
                Some(b'{') => self.object(depth),
                Some(b'[') => self.array(depth),
                Some(b'"') => Ok(Value::String(self.string()?)),
                Some(b't') if rest.starts_with(b"true") => {
                    self.i += 4;
                    Ok(Value::Bool(true))
                }
                Some(b'f') if rest.starts_with(b"false") => {
                    self.i += 5;
                    Ok(Value::Bool(false))
                }
                Some(b'n') if rest.starts_with(b"null") => {
                    self.i += 4;
                    Ok(Value::Null)
                }
                Some(_) => self.number(),
            }
        }

        fn number(&mut self) -> Result<Value<'a>, String> {
            let rest = &self.s[self.i..];
            let n = rest
                .iter()
                .position(|c| !matches!(c, b'0'..=b'9' | b'.' | b'-' | b'+' | b'e' | b'E'))
                .unwrap_or(rest.len());
            let signed = matches!(rest.first(), Some(b'-' | b'+'));
            if n == 0 || (n == 1 && signed) {
                if let Some(w) = rest.get(n..n + 3) {
                    if w.eq_ignore_ascii_case(b"inf") || w.eq_ignore_ascii_case(b"nan") {
                        self.i += n + 3;
                        return Ok(Value::Number(&rest[..n + 3]));
                    }
                }
                return self.err("unexpected char");
            }
            self.i += n;
            Ok(Value::Number(&rest[..n]))
        }

        fn string(&mut self) -> Result<Str<'a>, String> {
            let start = self.i + 1;
            let mut j = start;
            loop {
                match memchr::memchr2(b'"', b'\\', &self.s[j..]) {
                    None => return self.err("missing closing '\"'"),
                    Some(k) if self.s[j + k] == b'"' => {
                        self.i = j + k + 1;
                        return Ok(Str {
                            raw: &self.s[start..j + k],
                        });
                    }
                    // Skip the escaped byte, whatever it is.
                    Some(k) => j += k + 2,
                }
                if j > self.s.len() {
                    return self.err("missing closing '\"'");
                }
            }
        }

        fn object(&mut self, depth: usize) -> Result<Value<'a>, String> {
            self.i += 1;
            self.ws();
            let mut fields = Vec::new();
            if self.s.get(self.i) == Some(&b'}') {
                self.i += 1;
                return Ok(Value::Object(fields));
            }
            loop {
                if self.s.get(self.i) != Some(&b'"') {
                    return self.err("cannot find opening '\"' for object key");
                }
                let key = self.string()?;
                self.ws();
                if self.s.get(self.i) != Some(&b':') {
                    return self.err("missing ':' after object key");
                }
                self.i += 1;
                self.ws();
                let v = self.value(depth + 1)?;
                fields.push((key, v));
                self.ws();
                match self.s.get(self.i) {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b'}') => {
                        self.i += 1;
                        return Ok(Value::Object(fields));
                    }
                    _ => return self.err("missing ',' or '}' in object"),
                }
            }
        }

        fn array(&mut self, depth: usize) -> Result<Value<'a>, String> {
            self.i += 1;
            self.ws();
            let mut items = Vec::new();
            if self.s.get(self.i) == Some(&b']') {
                self.i += 1;
                return Ok(Value::Array(items));
            }
            loop {
                items.push(self.value(depth + 1)?);
                self.ws();
                match self.s.get(self.i) {
                    Some(b',') => {
                        self.i += 1;
                        self.ws();
                    }
                    Some(b']') => {
                        self.i += 1;
                        return Ok(Value::Array(items));
                    }
                    _ => return self.err("missing ',' or ']' in array"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (Vec<(String, String)>, i64, f64);

    #[derive(Default)]
    struct Rows(Vec<Row>);

    impl Sink for Rows {
        fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
            let l = labels
                .iter()
                .map(|l| {
                    (
                        String::from_utf8_lossy(l.name).into_owned(),
                        String::from_utf8_lossy(l.value).into_owned(),
                    )
                })
                .collect();
            self.0
                .push((l, samples[0].timestamp_ms, samples[0].value()));
        }
    }

    const NOW: i64 = 1_800_000_000_456;

    fn run(body: &str) -> Result<Rows, NewRelicError> {
        let mut r = Rows::default();
        parse_body(body.as_bytes(), NOW, &mut r).map(|()| r)
    }

    fn l(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn spec_edge_cases() {
        let r = run(r#"[{"EntityID":1,"Events":[{"eventType":"SystemSample","timestamp":1700000000,"cpuPercent":25.5,"entityKey":"host1","empty":"","flag":true,"obj":{"a":1},"nul":null}]}]"#).unwrap();
        assert_eq!(
            r.0,
            [(
                l(&[
                    ("", "cpuPercent"),
                    ("eventType", "SystemSample"),
                    ("entityKey", "host1")
                ]),
                1_700_000_000_000,
                25.5
            )]
        );
        let r = run(r#"[{"Events":[{"eventType":"S","timestamp":1700000000123,"m":1}]}]"#).unwrap();
        assert_eq!(r.0[0].1, 1_700_000_000_123);
        let r = run(r#"[{"Events":[{"eventType":"S","m":2,"timestamp":"1700000000"}]}]"#).unwrap();
        assert_eq!(
            r.0,
            [(
                l(&[("", "m"), ("eventType", "S"), ("timestamp", "1700000000")]),
                1_800_000_000_000,
                2.0
            )]
        );
        let r = run(r#"[{"Events":[{"eventType":"S","timestamp":1700000000,"":5,"n":-1e3}]}]"#)
            .unwrap();
        assert_eq!(
            r.0,
            [(
                l(&[("", "n"), ("eventType", "S")]),
                1_700_000_000_000,
                -1000.0
            )]
        );
        assert!(run(r#"{"Events":[]}"#).is_err());
        assert!(run(r#"[{"Events":{}}]"#).is_err());
        assert!(
            run(r#"[{"events":[{"eventType":"S","timestamp":1700000000,"m":1}]}]"#)
                .unwrap()
                .0
                .is_empty()
        );
        assert!(
            run(r#"[{"Events":[{"eventType":"S","timestamp":1700000000,"m":1}]}, 5]"#).is_err()
        );
        let r = run(r#"[{"Events":[{"eventType":"S","timestamp":true,"m":1}]}]"#).unwrap();
        assert_eq!(r.0[0].1, 1_800_000_000_000);
        let r = run(r#"[{"Events":[{"eventType":"S","timestamp":-5,"m":1}]}]"#).unwrap();
        assert_eq!(r.0[0].1, -5000);
    }

    #[test]
    fn lenient_tokens_and_escapes() {
        let r = run(r#"[{"Events":[{"k\u0041":"v\n","m":1e,"n":NaN,"o":01}]}]"#).unwrap();
        assert_eq!(r.0.len(), 3);
        assert_eq!(r.0[0].0, l(&[("", "m"), ("kA", "v\n")]));
        assert_eq!(r.0[0].2, 0.0);
        assert!(r.0[1].2.is_nan());
        assert_eq!(r.0[2].2, 1.0);
        assert!(run(r#"[{"Events":[{"timestamp":1e,"m":1}]}]"#).is_err());
        assert!(run("[1,]").is_err());
        assert!(run("[] x").is_err());
        assert!(run(&"[".repeat(400)).is_err());
    }
}
