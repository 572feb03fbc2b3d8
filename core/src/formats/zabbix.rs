//! Zabbix connector: `/zabbixconnector/api/v1/history` (spec: formats/zabbix-connector.md).
//!
//! NDJSON, one item value per line. Only numeric items (types 0 and 3) become rows; every
//! other line is skipped and reported to the sink as invalid. Labels come out as `host`,
//! `hostname`, `__name__` (literally: the limit checks see that name, and the encoder writes it
//! as the metric name), `group_*`, `tag_*`. The pipeline writes Zabbix series even when they
//! break a label limit ([`crate::ingest::Protocol::Zabbix`]).

use super::lines::LineSplitter;
pub use super::lines::LineTooLong;
use super::newrelic::json::{self, Value};
use super::number::{parse_float, parse_int};
use super::Sink;
use crate::model::{recycle_labels, Label, Sample, METRIC_NAME_LABEL};

/// `-zabbixconnector.maxLineLen` default.
pub const DEFAULT_MAX_LINE_LEN: usize = 32 * 1024 * 1024;

/// The `-zabbixconnector.*` flags that shape labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZabbixOptions {
    /// `-zabbixconnector.addGroupsValue`: when non-empty, every host group `g` adds
    /// `group_<g>` with this value (and `groups` becomes required).
    pub add_groups_value: Vec<u8>,
    /// `-zabbixconnector.addEmptyTagsValue`: the value for tags with an empty value; when
    /// empty such tags are dropped.
    pub add_empty_tags_value: Vec<u8>,
    /// `-zabbixconnector.addDuplicateTagsSeparator`: when non-empty, values of a repeated tag
    /// are joined with it into one label.
    pub add_duplicate_tags_separator: Vec<u8>,
}

/// Streaming parser for one request body.
#[derive(Debug)]
pub struct ZabbixParser {
    splitter: LineSplitter,
    lines: ZabbixLines,
}

impl ZabbixParser {
    /// `max_line_len`: `-zabbixconnector.maxLineLen`.
    pub fn new(max_line_len: usize, options: ZabbixOptions) -> ZabbixParser {
        ZabbixParser {
            splitter: LineSplitter::new(max_line_len),
            lines: ZabbixLines::new(options),
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
pub fn parse_body<S: Sink + ?Sized>(
    body: &[u8],
    options: &ZabbixOptions,
    sink: &mut S,
) -> Result<(), LineTooLong> {
    let mut p = ZabbixParser::new(DEFAULT_MAX_LINE_LEN, options.clone());
    p.feed(body, sink)?;
    p.finish(sink)
}

fn non_empty<'a>(v: Option<&Value<'a>>) -> Option<json::Str<'a>> {
    match v {
        Some(Value::String(s)) if !s.raw.is_empty() => Some(*s),
        _ => None,
    }
}

/// The per-line parser, for callers that split lines themselves.
#[derive(Debug, Default)]
pub struct ZabbixLines {
    options: ZabbixOptions,
    text: Vec<u8>,
    /// (name start, value start, end) in `text`.
    spans: Vec<(usize, usize, usize)>,
    labels: Vec<Label<'static>>,
}

impl ZabbixLines {
    pub fn new(options: ZabbixOptions) -> ZabbixLines {
        ZabbixLines {
            options,
            ..ZabbixLines::default()
        }
    }

    /// One line without its newline (a trailing `\r` already removed).
    pub fn line<S: Sink + ?Sized>(&mut self, line_no: u64, line: &[u8], sink: &mut S) {
        if line.is_empty() {
            return;
        }
        let sample = match self.parse(line) {
            Ok(s) => s,
            Err(reason) => {
                sink.invalid(line_no, reason);
                return;
            }
        };
        let text = &self.text;
        let mut labels = recycle_labels(std::mem::take(&mut self.labels));
        labels.extend(
            self.spans
                .iter()
                .map(|&(a, b, c)| Label::new(&text[a..b], &text[b..c])),
        );
        sink.series(&labels, &[sample]);
        self.labels = recycle_labels(labels);
    }

    fn push_label(&mut self, prefix: &[u8], name: json::Str<'_>, value: &[u8]) {
        let a = self.text.len();
        self.text.extend_from_slice(prefix);
        name.unescape_into(&mut self.text);
        let b = self.text.len();
        self.text.extend_from_slice(value);
        self.spans.push((a, b, self.text.len()));
    }

    fn push_raw(&mut self, name: &[u8], value: json::Str<'_>) {
        let a = self.text.len();
        self.text.extend_from_slice(name);
        let b = self.text.len();
        value.unescape_into(&mut self.text);
        self.spans.push((a, b, self.text.len()));
    }

    fn parse(&mut self, line: &[u8]) -> Result<Sample, &'static str> {
        self.text.clear();
        self.spans.clear();
        let root = json::parse(line).map_err(|_| "cannot parse JSON")?;
        let Value::Object(fields) = &root else {
            return Err("the line is not a JSON object");
        };
        let get = |k: &[u8]| json::get(fields, k);
        let item_type = match get(b"type") {
            Some(Value::Number(t)) => parse_int(t).ok_or("type is not an integer")?,
            _ => return Err("missing or non-numeric type"),
        };
        if item_type != 0 && item_type != 3 {
            return Err("unsupported item type (only numeric types 0 and 3 are ingested)");
        }
        let Some(Value::Object(host)) = get(b"host") else {
            return Err("missing host object");
        };
        let host_host = non_empty(json::get(host, b"host")).ok_or("missing host.host")?;
        let host_name = non_empty(json::get(host, b"name")).ok_or("missing host.name")?;
        let name = non_empty(get(b"name")).ok_or("missing item name")?;
        let value = match get(b"value") {
            Some(Value::Number(t)) => parse_float(t).ok_or("value is not a number")?,
            _ => return Err("missing or non-numeric value"),
        };
        let int = |k: &[u8]| match get(k) {
            Some(Value::Number(t)) => parse_int(t),
            _ => None,
        };
        let clock = int(b"clock").ok_or("clock is not an integer")?;
        let ns = int(b"ns").ok_or("ns is not an integer")?;
        let ts = clock.wrapping_mul(1000).wrapping_add(ns / 1_000_000);

        self.push_raw(b"host", host_host);
        self.push_raw(b"hostname", host_name);
        self.push_raw(METRIC_NAME_LABEL, name);

        if !self.options.add_groups_value.is_empty() {
            let Some(Value::Array(groups)) = get(b"groups") else {
                return Err("missing groups array");
            };
            let v = std::mem::take(&mut self.options.add_groups_value);
            for g in groups {
                if let Value::String(g) = g {
                    if !g.raw.is_empty() {
                        self.push_label(b"group_", *g, &v);
                    }
                }
            }
            self.options.add_groups_value = v;
        }

        let Some(Value::Array(tags)) = get(b"item_tags") else {
            return Err("missing item_tags array");
        };
        let sep = std::mem::take(&mut self.options.add_duplicate_tags_separator);
        let empty_value = std::mem::take(&mut self.options.add_empty_tags_value);
        let first_tag = self.spans.len();
        let mut value_buf = Vec::new();
        for t in tags {
            let Value::Object(t) = t else {
                continue;
            };
            let tag = match json::get(t, b"tag") {
                Some(Value::String(s)) if !s.raw.is_empty() => *s,
                _ => continue,
            };
            value_buf.clear();
            if let Some(Value::String(v)) = json::get(t, b"value") {
                v.unescape_into(&mut value_buf);
            }
            if value_buf.is_empty() {
                if empty_value.is_empty() {
                    continue;
                }
                value_buf.extend_from_slice(&empty_value);
            }
            if !sep.is_empty() {
                if let Some(i) = self.find_tag(first_tag, tag) {
                    self.append_value(i, &sep, &value_buf);
                    continue;
                }
            }
            self.push_label(b"tag_", tag, &value_buf);
        }
        self.options.add_duplicate_tags_separator = sep;
        self.options.add_empty_tags_value = empty_value;
        Ok(Sample::new(ts, value))
    }

    /// The `tag_*` label (from `first`) for this tag, if one was added already.
    fn find_tag(&self, first: usize, tag: json::Str<'_>) -> Option<usize> {
        let mut want = b"tag_".to_vec();
        tag.unescape_into(&mut want);
        (first..self.spans.len()).find(|&i| {
            let (a, b, _) = self.spans[i];
            self.text[a..b] == want[..]
        })
    }

    /// Join `value` onto label `i`'s value. The label keeps its position, so its bytes are
    /// moved to the end of `text` first when it is not the last one there.
    fn append_value(&mut self, i: usize, sep: &[u8], value: &[u8]) {
        let (a, b, c) = self.spans[i];
        if c != self.text.len() {
            let start = self.text.len();
            self.text.extend_from_within(a..c);
            self.spans[i] = (start, start + (b - a), self.text.len());
        }
        self.text.extend_from_slice(sep);
        self.text.extend_from_slice(value);
        self.spans[i].2 = self.text.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row = (Vec<(String, String)>, i64, f64);

    #[derive(Default)]
    struct Rows {
        rows: Vec<Row>,
        invalid: u64,
    }

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
            self.rows
                .push((l, samples[0].timestamp_ms, samples[0].value()));
        }
        fn invalid(&mut self, _: u64, _: &str) {
            self.invalid += 1;
        }
    }

    const L: &str = r#"{"host":{"host":"h1","name":"Host One"},"groups":["G1","G2"],"item_tags":[{"tag":"app","value":"web"},{"tag":"app","value":"db"},{"tag":"empty","value":""}],"itemid":1,"name":"cpu.load","clock":1700000000,"ns":123456789,"value":1.5,"type":0}"#;

    fn run(body: &str, o: &ZabbixOptions) -> Rows {
        let mut r = Rows::default();
        parse_body(body.as_bytes(), o, &mut r).unwrap();
        r
    }

    fn names(r: &Rows) -> Vec<String> {
        r.rows[0]
            .0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect()
    }

    #[test]
    fn spec_edge_cases() {
        let d = ZabbixOptions::default();
        let r = run(L, &d);
        assert_eq!(
            names(&r),
            [
                "host=h1",
                "hostname=Host One",
                "__name__=cpu.load",
                "tag_app=web",
                "tag_app=db"
            ]
        );
        assert_eq!((r.rows[0].1, r.rows[0].2), (1_700_000_000_123, 1.5));
        let r = run(
            &L.replace(r#""type":0"#, r#""type":3"#).replace("1.5", "7"),
            &d,
        );
        assert_eq!(r.rows[0].2, 7.0);
        for bad in [
            L.replace(r#""type":0"#, r#""type":1"#),
            L.replace(r#""type":0"#, r#""type":4"#),
            "not json".to_string(),
            L.replace(r#""name":"cpu.load""#, r#""name":"""#),
            L.replace(r#""item_tags":[{"tag":"app","value":"web"},{"tag":"app","value":"db"},{"tag":"empty","value":""}]"#, r#""item_tags":null"#),
            L.replace("1.5", r#""3""#),
            L.replace("1700000000,", "1700000000.5,"),
        ] {
            let r = run(&bad, &d);
            assert!(r.rows.is_empty(), "{bad}");
            assert_eq!(r.invalid, 1, "{bad}");
        }
        let r = run(
            r#"{"host":{"host":"h1","name":"n"},"name":"m","clock":1700000000,"ns":0,"value":2,"type":0,"item_tags":[]}"#,
            &d,
        );
        assert_eq!(names(&r), ["host=h1", "hostname=n", "__name__=m"]);
        let flags = ZabbixOptions {
            add_groups_value: b"1".to_vec(),
            add_empty_tags_value: b"yes".to_vec(),
            add_duplicate_tags_separator: b",".to_vec(),
        };
        let r = run(L, &flags);
        assert_eq!(
            names(&r),
            [
                "host=h1",
                "hostname=Host One",
                "__name__=cpu.load",
                "group_G1=1",
                "group_G2=1",
                "tag_app=web,db",
                "tag_empty=yes"
            ]
        );
        let r = run(&L.replace(r#""groups":["G1","G2"],"#, ""), &flags);
        assert!(r.rows.is_empty());
        let r = run(&L.replace(r#"["G1","G2"]"#, "null"), &flags);
        assert!(r.rows.is_empty());
    }

    #[test]
    fn duplicate_tags_merge_across_other_tags() {
        let tags: Vec<String> = [
            "a=x", "b=1", "c=2", "d=3", "e=4", "f=5", "g=6", "h=7", "a=y",
        ]
        .iter()
        .map(|t| {
            let (k, v) = t.split_once('=').unwrap();
            format!(r#"{{"tag":"{k}","value":"{v}"}}"#)
        })
        .collect();
        let line = format!(
            r#"{{"host":{{"host":"h","name":"n"}},"name":"m","clock":1,"ns":0,"value":1,"type":0,"item_tags":[{}]}}"#,
            tags.join(",")
        );
        let o = ZabbixOptions {
            add_duplicate_tags_separator: b",".to_vec(),
            ..Default::default()
        };
        let r = run(&line, &o);
        let n = names(&r);
        assert_eq!(n[3], "tag_a=x,y");
        assert_eq!(n[4], "tag_b=1");
        assert_eq!(n.len(), 11);
    }
}
