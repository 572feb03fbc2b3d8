//! `/api/v1/import/csv` with its `format=` column spec (spec: formats/csv-import.md).

use super::lines::{LineSplitter, LineTooLong, DEFAULT_MAX_LINE_LEN};
use super::number::{parse_float, parse_int};
use super::Sink;
use crate::model::{Label, Sample};

/// The largest column position `format=` accepts.
pub const MAX_COLUMN_POS: usize = 65536;

/// A `format` argument vminsert refuses: 400 before the body is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvFormatError(pub String);

impl std::fmt::Display for CsvFormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot parse the provided csv format: {}", self.0)
    }
}

impl std::error::Error for CsvFormatError {}

/// How a `time` column is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    UnixS,
    UnixMs,
    UnixNs,
    Rfc3339,
    /// A Go reference-time layout (`2006-01-02 15:04:05`).
    Custom(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    Metric(Vec<u8>),
    Label(Vec<u8>),
    Time(TimeFormat),
}

/// A parsed `format=` argument: the descriptor of each column, by 0-based index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvFormat {
    columns: Vec<Option<Column>>,
}

/// Go's `%q` of a list of strings, for error texts that match vminsert's.
fn go_quote_list(parts: &[&str]) -> String {
    let q: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
    format!("[{}]", q.join(" "))
}

/// Go's `strconv.Atoi`: an optional sign, then decimal digits.
fn go_atoi(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    if digits.starts_with('+') {
        return None;
    }
    parse_int(digits.as_bytes())
}

impl CsvFormat {
    /// Parse `format=`. `None` (argument absent) is an error as well.
    pub fn parse(format: Option<&str>) -> Result<CsvFormat, CsvFormatError> {
        let format = format
            .filter(|f| !f.is_empty())
            .ok_or_else(|| CsvFormatError("missing `format` query arg".into()))?;
        let mut columns: Vec<Option<Column>> = Vec::new();
        let (mut has_metric, mut has_time) = (false, false);
        for (n, entry) in format.split(',').enumerate() {
            let n = n + 1;
            let parts: Vec<&str> = entry.splitn(3, ':').collect();
            if parts.len() != 3 {
                return Err(CsvFormatError(format!(
                    "entry #{n} must have the following form: <column_pos>:<column_type>:<extension>; got {}",
                    go_quote_list(&parts)
                )));
            }
            let pos = go_atoi(parts[0]).ok_or_else(|| {
                CsvFormatError(format!("cannot parse column_pos from entry #{n} {entry:?}"))
            })?;
            if pos <= 0 || pos as usize > MAX_COLUMN_POS {
                return Err(CsvFormatError(format!(
                    "column_pos in entry #{n} must be in the range [1..{MAX_COLUMN_POS}]; got {pos}"
                )));
            }
            let ext = parts[2];
            let col = match parts[1] {
                "metric" => {
                    if ext.is_empty() {
                        return Err(CsvFormatError(format!("metric name cannot be empty in entry #{n} {entry:?}")));
                    }
                    has_metric = true;
                    Column::Metric(ext.as_bytes().to_vec())
                }
                "label" => {
                    if ext.is_empty() {
                        return Err(CsvFormatError(format!("label name cannot be empty in entry #{n} {entry:?}")));
                    }
                    Column::Label(ext.as_bytes().to_vec())
                }
                "time" => {
                    if has_time {
                        return Err(CsvFormatError(format!("duplicate time column in entry #{n} {entry:?}")));
                    }
                    has_time = true;
                    Column::Time(match ext {
                        "unix_s" => TimeFormat::UnixS,
                        "unix_ms" => TimeFormat::UnixMs,
                        "unix_ns" => TimeFormat::UnixNs,
                        "rfc3339" => TimeFormat::Rfc3339,
                        _ => match ext.strip_prefix("custom:") {
                            Some(layout) => TimeFormat::Custom(layout.to_string()),
                            None => {
                                return Err(CsvFormatError(format!(
                                    "unsupported time format {ext:?} in entry #{n}; supported: unix_s, unix_ms, \
                                     unix_ns, rfc3339, custom:<layout>"
                                )))
                            }
                        },
                    })
                }
                other => {
                    return Err(CsvFormatError(format!(
                        "unknown column type {other:?} in entry #{n} {entry:?}; supported: metric, label, time"
                    )))
                }
            };
            let idx = pos as usize - 1;
            if columns.len() <= idx {
                columns.resize(idx + 1, None);
            }
            if columns[idx].is_some() {
                return Err(CsvFormatError(format!(
                    "duplicate column_pos {pos} in entry #{n} {entry:?}"
                )));
            }
            columns[idx] = Some(col);
        }
        if !has_metric {
            return Err(CsvFormatError(
                "missing metric column; at least one `<pos>:metric:<name>` is required".into(),
            ));
        }
        Ok(CsvFormat { columns })
    }

    /// Number of columns a line needs (the largest position).
    pub fn max_pos(&self) -> usize {
        self.columns.len()
    }
}

/// Parse a time cell into milliseconds.
pub fn parse_time(tf: &TimeFormat, cell: &[u8]) -> Option<i64> {
    match tf {
        TimeFormat::UnixS => {
            let s = parse_int(cell)?;
            (s <= 9_223_372_036_854_775).then(|| s.wrapping_mul(1000))
        }
        TimeFormat::UnixMs => parse_int(cell),
        TimeFormat::UnixNs => parse_int(cell).map(|ns| ns / 1_000_000),
        TimeFormat::Rfc3339 => go_time::parse(go_time::RFC3339, std::str::from_utf8(cell).ok()?),
        TimeFormat::Custom(layout) => go_time::parse(layout, std::str::from_utf8(cell).ok()?),
    }
}

/// Streaming CSV parser for one request body.
#[derive(Debug)]
pub struct CsvParser {
    splitter: LineSplitter,
    lines: CsvLines,
}

impl CsvParser {
    /// `default_timestamp_ms`: the current time, for rows whose timestamp is 0 or missing.
    pub fn new(format: CsvFormat, default_timestamp_ms: i64) -> CsvParser {
        CsvParser {
            splitter: LineSplitter::new(DEFAULT_MAX_LINE_LEN),
            lines: CsvLines::new(format, default_timestamp_ms),
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
    format: CsvFormat,
    default_timestamp_ms: i64,
    sink: &mut S,
) -> Result<(), LineTooLong> {
    let mut p = CsvParser::new(format, default_timestamp_ms);
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
#[derive(Debug)]
pub struct CsvLines {
    format: CsvFormat,
    default_ts: i64,
    /// `-csvTrimTimestamp` in ms; values ≤ 1 leave timestamps alone.
    pub trim_ms: i64,
    first_line_seen: bool,
    scratch: Vec<u8>,
    cells: Vec<Part>,
    metrics: Vec<(usize, f64)>,
    labels: Vec<Label<'static>>,
}

enum LineError {
    /// A cell value failed to parse: on the first line this marks a header.
    Value(&'static str),
    Other(&'static str),
}

impl CsvLines {
    pub fn new(format: CsvFormat, default_timestamp_ms: i64) -> CsvLines {
        CsvLines {
            format,
            default_ts: default_timestamp_ms,
            trim_ms: 1,
            first_line_seen: false,
            scratch: Vec::new(),
            cells: Vec::new(),
            metrics: Vec::new(),
            labels: Vec::new(),
        }
    }

    pub fn line<S: Sink + ?Sized>(&mut self, line_no: u64, line: &[u8], sink: &mut S) {
        if line.is_empty() {
            return;
        }
        let first = !self.first_line_seen;
        self.first_line_seen = true;
        let ts = match self.parse(line) {
            Ok(ts) => ts,
            // A first line whose values do not parse is taken for a header and dropped quietly.
            Err(LineError::Value(_)) if first => return,
            Err(LineError::Value(r)) | Err(LineError::Other(r)) => {
                sink.invalid(line_no, r);
                return;
            }
        };
        if self.metrics.is_empty() {
            return;
        }
        let mut ts = if ts == 0 { self.default_ts } else { ts };
        if self.trim_ms > 1 {
            ts -= ts % self.trim_ms;
        }
        let mut labels = crate::model::recycle_labels(std::mem::take(&mut self.labels));
        labels.push(Label::metric_name(b""));
        for (i, cell) in self.cells.iter().enumerate() {
            if let Some(Column::Label(name)) = &self.format.columns[i] {
                let v = cell.get(line, &self.scratch);
                if !v.is_empty() {
                    labels.push(Label::new(name, v));
                }
            }
        }
        for &(col, value) in &self.metrics {
            if let Some(Column::Metric(name)) = &self.format.columns[col] {
                labels[0] = Label::metric_name(name);
                sink.series(&labels, &[Sample::new(ts, value)]);
            }
        }
        self.labels = crate::model::recycle_labels(labels);
    }

    /// Split the line into its first `max_pos` cells and read them; returns the timestamp.
    fn parse(&mut self, line: &[u8]) -> Result<i64, LineError> {
        self.scratch.clear();
        self.cells.clear();
        self.metrics.clear();
        let max_pos = self.format.max_pos();
        let mut i = 0;
        let mut ts = 0;
        let mut more = true;
        while more && self.cells.len() < max_pos {
            let (cell, next, has_more) = self.cell(line, i)?;
            i = next;
            more = has_more;
            let col = self.cells.len();
            self.cells.push(cell);
            let v = cell.get(line, &self.scratch);
            if v.is_empty() {
                continue;
            }
            match &self.format.columns[col] {
                Some(Column::Time(tf)) => {
                    ts = parse_time(tf, v).ok_or(LineError::Value("cannot parse time"))?
                }
                Some(Column::Metric(_)) => {
                    let f = parse_float(v).ok_or(LineError::Value("cannot parse metric value"))?;
                    self.metrics.push((col, f));
                }
                _ => {}
            }
        }
        if self.cells.len() < max_pos {
            return Err(LineError::Other("too few columns"));
        }
        Ok(ts)
    }

    /// One cell starting at `i`: its bytes, the index after it and whether a `,` followed.
    fn cell(&mut self, line: &[u8], i: usize) -> Result<(Part, usize, bool), LineError> {
        match line.get(i) {
            Some(&q) if q == b'"' || q == b'\'' => {
                let start = self.scratch.len();
                let mut j = i + 1;
                let mut copied = false;
                loop {
                    let p = memchr::memchr(q, &line[j..])
                        .ok_or(LineError::Other("missing closing quote"))?
                        + j;
                    if line.get(p + 1) == Some(&q) {
                        self.scratch.extend_from_slice(&line[j..=p]);
                        copied = true;
                        j = p + 2;
                        continue;
                    }
                    let part = if copied {
                        self.scratch.extend_from_slice(&line[j..p]);
                        Part::Scratch(start, self.scratch.len())
                    } else {
                        Part::Line(i + 1, p)
                    };
                    return match line.get(p + 1) {
                        None => Ok((part, p + 1, false)),
                        Some(b',') => Ok((part, p + 2, true)),
                        Some(_) => Err(LineError::Other("unexpected text after a closing quote")),
                    };
                }
            }
            _ => match memchr::memchr(b',', &line[i..]) {
                Some(c) => Ok((Part::Line(i, i + c), i + c + 1, true)),
                None => Ok((Part::Line(i, line.len()), line.len(), false)),
            },
        }
    }
}

/// Parsing with Go reference-time layouts (`2006-01-02T15:04:05Z07:00`), as `time.Parse` does
/// with UTC as the default zone. Covers the layout elements Go documents.
pub mod go_time {
    pub const RFC3339: &str = "2006-01-02T15:04:05Z07:00";

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Std {
        LongMonth,
        Month,
        NumMonth,
        ZeroMonth,
        LongWeekDay,
        WeekDay,
        Day,
        UnderDay,
        ZeroDay,
        UnderYearDay,
        ZeroYearDay,
        Hour,
        Hour12,
        ZeroHour12,
        Minute,
        ZeroMinute,
        Second,
        ZeroSecond,
        LongYear,
        Year,
        PM,
        Pm,
        TZ,
        Iso8601TZ,
        Iso8601SecondsTZ,
        Iso8601ShortTZ,
        Iso8601ColonTZ,
        Iso8601ColonSecondsTZ,
        NumTZ,
        NumSecondsTz,
        NumShortTZ,
        NumColonTZ,
        NumColonSecondsTZ,
        FracSecond0(usize),
        FracSecond9,
    }

    /// Split the layout at its next element: (literal prefix, element, rest).
    fn next_std(layout: &str) -> (&str, Option<Std>, &str) {
        let b = layout.as_bytes();
        let mut i = 0;
        while i < b.len() {
            // Bytes, not `str`: `i` walks through multi-byte characters of the literal text,
            // and every element starts with an ASCII byte, so the splits below stay on
            // character boundaries.
            let rest = &b[i..];
            let hit: Option<(Std, usize)> = match b[i] {
                b'J' if rest.starts_with(b"January") => Some((Std::LongMonth, 7)),
                b'J' if rest.starts_with(b"Jan") => Some((Std::Month, 3)),
                b'M' if rest.starts_with(b"Monday") => Some((Std::LongWeekDay, 6)),
                b'M' if rest.starts_with(b"Mon") => Some((Std::WeekDay, 3)),
                b'M' if rest.starts_with(b"MST") => Some((Std::TZ, 3)),
                b'0' if rest.len() >= 2 && (b'1'..=b'6').contains(&b[i + 1]) => Some((
                    match b[i + 1] {
                        b'1' => Std::ZeroMonth,
                        b'2' => Std::ZeroDay,
                        b'3' => Std::ZeroHour12,
                        b'4' => Std::ZeroMinute,
                        b'5' => Std::ZeroSecond,
                        _ => Std::Year,
                    },
                    2,
                )),
                b'0' if rest.starts_with(b"002") => Some((Std::ZeroYearDay, 3)),
                b'1' if rest.starts_with(b"15") => Some((Std::Hour, 2)),
                b'1' => Some((Std::NumMonth, 1)),
                b'2' if rest.starts_with(b"2006") => Some((Std::LongYear, 4)),
                b'2' => Some((Std::Day, 1)),
                b'_' if rest.starts_with(b"_2006") => {
                    // "_2006" is a literal underscore followed by a year.
                    return (&layout[..i + 1], Some(Std::LongYear), &layout[i + 5..]);
                }
                b'_' if rest.starts_with(b"__2") => Some((Std::UnderYearDay, 3)),
                b'_' if rest.starts_with(b"_2") => Some((Std::UnderDay, 2)),
                b'3' => Some((Std::Hour12, 1)),
                b'4' => Some((Std::Minute, 1)),
                b'5' => Some((Std::Second, 1)),
                b'P' if rest.starts_with(b"PM") => Some((Std::PM, 2)),
                b'p' if rest.starts_with(b"pm") => Some((Std::Pm, 2)),
                b'-' => [
                    ("-07:00:00", Std::NumColonSecondsTZ),
                    ("-070000", Std::NumSecondsTz),
                    ("-07:00", Std::NumColonTZ),
                    ("-0700", Std::NumTZ),
                    ("-07", Std::NumShortTZ),
                ]
                .iter()
                .find(|(p, _)| rest.starts_with(p.as_bytes()))
                .map(|(p, s)| (*s, p.len())),
                b'Z' => [
                    ("Z07:00:00", Std::Iso8601ColonSecondsTZ),
                    ("Z070000", Std::Iso8601SecondsTZ),
                    ("Z07:00", Std::Iso8601ColonTZ),
                    ("Z0700", Std::Iso8601TZ),
                    ("Z07", Std::Iso8601ShortTZ),
                ]
                .iter()
                .find(|(p, _)| rest.starts_with(p.as_bytes()))
                .map(|(p, s)| (*s, p.len())),
                b'.' | b',' if rest.len() >= 2 && (b[i + 1] == b'0' || b[i + 1] == b'9') => {
                    let ch = b[i + 1];
                    let mut j = i + 1;
                    while j < b.len() && b[j] == ch {
                        j += 1;
                    }
                    if j < b.len() && b[j].is_ascii_digit() {
                        None
                    } else {
                        let std = if ch == b'0' {
                            Std::FracSecond0(j - i - 1)
                        } else {
                            Std::FracSecond9
                        };
                        Some((std, j - i))
                    }
                }
                _ => None,
            };
            if let Some((std, n)) = hit {
                return (&layout[..i], Some(std), &layout[i + n..]);
            }
            i += 1;
        }
        (layout, None, "")
    }

    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];

    fn lookup(names: &[&str], value: &str, abbr: bool) -> Option<(usize, usize)> {
        for (i, n) in names.iter().enumerate() {
            let n = if abbr { &n[..3] } else { n };
            // Compared as bytes: the value may hold a multi-byte character where the name ends.
            if value
                .as_bytes()
                .get(..n.len())
                .is_some_and(|v| v.eq_ignore_ascii_case(n.as_bytes()))
            {
                return Some((i, n.len()));
            }
        }
        None
    }

    /// Up to two digits; `fixed` demands exactly two.
    fn getnum(v: &str, fixed: bool) -> Option<(i64, &str)> {
        let b = v.as_bytes();
        if !b.first()?.is_ascii_digit() {
            return None;
        }
        if !b.get(1).is_some_and(|c| c.is_ascii_digit()) {
            if fixed {
                return None;
            }
            return Some((i64::from(b[0] - b'0'), &v[1..]));
        }
        Some((
            i64::from(b[0] - b'0') * 10 + i64::from(b[1] - b'0'),
            &v[2..],
        ))
    }

    fn getnum3(v: &str, fixed: bool) -> Option<(i64, &str)> {
        let b = v.as_bytes();
        let mut n = 0;
        let mut i = 0;
        while i < 3 && i < b.len() && b[i].is_ascii_digit() {
            n = n * 10 + i64::from(b[i] - b'0');
            i += 1;
        }
        if i == 0 || (fixed && i != 3) {
            return None;
        }
        Some((n, &v[i..]))
    }

    /// Match a literal; a space matches one or more spaces, as in Go.
    fn skip<'a>(mut value: &'a str, mut prefix: &str) -> Option<&'a str> {
        while !prefix.is_empty() {
            if prefix.as_bytes()[0] == b' ' {
                if !value.is_empty() && value.as_bytes()[0] != b' ' {
                    return None;
                }
                prefix = prefix.trim_start_matches(' ');
                value = value.trim_start_matches(' ');
                continue;
            }
            // Whole characters, so a multi-byte one is never cut in half.
            let c = prefix.chars().next()?;
            value = value.strip_prefix(c)?;
            prefix = &prefix[c.len_utf8()..];
        }
        Some(value)
    }

    fn digits_at(v: &str, n: usize) -> Option<i64> {
        let s = v.get(..n)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    }

    fn frac_nanos(digits: &str) -> i64 {
        let mut ns: i64 = 0;
        for (k, c) in digits.bytes().enumerate() {
            if k >= 9 {
                break;
            }
            ns = ns * 10 + i64::from(c - b'0');
        }
        for _ in digits.len()..9 {
            ns *= 10;
        }
        ns
    }

    fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
        let y = if m <= 2 { y - 1 } else { y };
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    }

    fn is_leap(y: i64) -> bool {
        y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
    }

    fn days_in(m: i64, y: i64) -> i64 {
        match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    /// `time.Parse(layout, value)` in UTC, as Unix milliseconds. `None` where Go errors.
    pub fn parse(layout: &str, value: &str) -> Option<i64> {
        let (mut layout, mut value) = (layout, value);
        let (mut year, mut month, mut day, mut yday) = (1i64, -1i64, -1i64, -1i64);
        let (mut hour, mut min, mut sec, mut nsec) = (0i64, 0i64, 0i64, 0i64);
        let mut pm: Option<bool> = None;
        let mut offset: i64 = 0;
        loop {
            let (prefix, std, suffix) = next_std(layout);
            value = skip(value, prefix)?;
            let Some(std) = std else {
                if !value.is_empty() {
                    return None;
                }
                break;
            };
            layout = suffix;
            match std {
                Std::Year => {
                    let y = digits_at(value, 2)?;
                    value = &value[2..];
                    year = if y >= 69 { y + 1900 } else { y + 2000 };
                }
                Std::LongYear => {
                    year = digits_at(value, 4)?;
                    value = &value[4..];
                }
                Std::Month | Std::LongMonth => {
                    let (m, n) = lookup(&MONTHS, value, std == Std::Month)?;
                    month = m as i64 + 1;
                    value = &value[n..];
                }
                Std::NumMonth | Std::ZeroMonth => {
                    let (m, v) = getnum(value, std == Std::ZeroMonth)?;
                    if !(1..=12).contains(&m) {
                        return None;
                    }
                    month = m;
                    value = v;
                }
                Std::WeekDay | Std::LongWeekDay => {
                    let (_, n) = lookup(&DAYS, value, std == Std::WeekDay)?;
                    value = &value[n..];
                }
                Std::Day | Std::UnderDay | Std::ZeroDay => {
                    if std == Std::UnderDay && value.starts_with(' ') {
                        value = &value[1..];
                    }
                    let (d, v) = getnum(value, std == Std::ZeroDay)?;
                    day = d;
                    value = v;
                }
                Std::UnderYearDay | Std::ZeroYearDay => {
                    for _ in 0..2 {
                        if std == Std::UnderYearDay && value.starts_with(' ') {
                            value = &value[1..];
                        }
                    }
                    let (d, v) = getnum3(value, std == Std::ZeroYearDay)?;
                    if !(1..=366).contains(&d) {
                        return None;
                    }
                    yday = d;
                    value = v;
                }
                Std::Hour => {
                    let (h, v) = getnum(value, false)?;
                    if h >= 24 {
                        return None;
                    }
                    hour = h;
                    value = v;
                }
                Std::Hour12 | Std::ZeroHour12 => {
                    let (h, v) = getnum(value, std == Std::ZeroHour12)?;
                    if h > 12 {
                        return None;
                    }
                    hour = h;
                    value = v;
                }
                Std::Minute | Std::ZeroMinute => {
                    let (m, v) = getnum(value, std == Std::ZeroMinute)?;
                    if m >= 60 {
                        return None;
                    }
                    min = m;
                    value = v;
                }
                Std::Second | Std::ZeroSecond => {
                    let (s, v) = getnum(value, std == Std::ZeroSecond)?;
                    if s >= 60 {
                        return None;
                    }
                    sec = s;
                    value = v;
                    // A fraction after the seconds is accepted even when the layout has none.
                    let b = value.as_bytes();
                    if b.len() >= 2 && (b[0] == b'.' || b[0] == b',') && b[1].is_ascii_digit() {
                        if let (_, Some(Std::FracSecond0(_) | Std::FracSecond9), _) =
                            next_std(layout)
                        {
                            continue;
                        }
                        let n = 1 + b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                        nsec = frac_nanos(&value[1..n]);
                        value = &value[n..];
                    }
                }
                Std::PM | Std::Pm => {
                    let p = value.get(..2)?;
                    pm = Some(match p {
                        "PM" | "pm" if std == Std::PM || std == Std::Pm => true,
                        "AM" | "am" => false,
                        _ => return None,
                    });
                    value = &value[2..];
                }
                Std::FracSecond0(n) => {
                    let b = value.as_bytes();
                    if b.len() < n + 1
                        || (b[0] != b'.' && b[0] != b',')
                        || !b[1..=n].iter().all(u8::is_ascii_digit)
                    {
                        return None;
                    }
                    nsec = frac_nanos(&value[1..=n]);
                    value = &value[n + 1..];
                }
                Std::FracSecond9 => {
                    let b = value.as_bytes();
                    if b.len() < 2 || (b[0] != b'.' && b[0] != b',') || !b[1].is_ascii_digit() {
                        // The fraction may be left out.
                        continue;
                    }
                    let n = 1 + b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
                    nsec = frac_nanos(&value[1..n]);
                    value = &value[n..];
                }
                Std::TZ => {
                    if value.starts_with("UTC") {
                        value = &value[3..];
                    } else {
                        let n = value.bytes().take_while(|c| c.is_ascii_uppercase()).count();
                        if n < 3 {
                            return None;
                        }
                        value = &value[n..];
                    }
                }
                tz => {
                    let iso = matches!(
                        tz,
                        Std::Iso8601TZ
                            | Std::Iso8601SecondsTZ
                            | Std::Iso8601ShortTZ
                            | Std::Iso8601ColonTZ
                            | Std::Iso8601ColonSecondsTZ
                    );
                    if iso && value.starts_with('Z') {
                        value = &value[1..];
                        offset = 0;
                        continue;
                    }
                    let sign = match value.as_bytes().first()? {
                        b'+' => 1,
                        b'-' => -1,
                        _ => return None,
                    };
                    let v = &value[1..];
                    let (colon, with_sec, short) = match tz {
                        Std::NumColonTZ | Std::Iso8601ColonTZ => (true, false, false),
                        Std::NumColonSecondsTZ | Std::Iso8601ColonSecondsTZ => (true, true, false),
                        Std::NumShortTZ | Std::Iso8601ShortTZ => (false, false, true),
                        Std::NumSecondsTz | Std::Iso8601SecondsTZ => (false, true, false),
                        _ => (false, false, false),
                    };
                    let hh = digits_at(v, 2)?;
                    let mut v = &v[2..];
                    let mut mm = 0;
                    let mut ss = 0;
                    if !short {
                        if colon {
                            v = v.strip_prefix(':')?;
                        }
                        mm = digits_at(v, 2)?;
                        v = &v[2..];
                        if with_sec {
                            if colon {
                                v = v.strip_prefix(':')?;
                            }
                            ss = digits_at(v, 2)?;
                            v = &v[2..];
                        }
                    }
                    if hh > 24 || mm > 60 || ss > 60 {
                        return None;
                    }
                    offset = sign * (hh * 3600 + mm * 60 + ss);
                    value = v;
                }
            }
        }
        match pm {
            Some(true) if hour < 12 => hour += 12,
            Some(false) if hour == 12 => hour = 0,
            _ => {}
        }
        if yday >= 0 {
            let (mut m, mut d) = (1, yday);
            if d > if is_leap(year) { 366 } else { 365 } {
                return None;
            }
            while d > days_in(m, year) {
                d -= days_in(m, year);
                m += 1;
            }
            if (month >= 0 && month != m) || (day >= 0 && day != d) {
                return None;
            }
            month = m;
            day = d;
        }
        let month = if month < 0 { 1 } else { month };
        let day = if day < 0 { 1 } else { day };
        if day < 1 || day > days_in(month, year) {
            return None;
        }
        let secs =
            days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec - offset;
        Some(secs * 1000 + nsec / 1_000_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_layouts_with_multibyte_text_never_panic() {
        // Found by the csv fuzz target: the layout's literal text held a multi-byte character,
        // and the layout, the literal matching and the month lookup all cut strings in the
        // middle of one.
        let p = |l: &str, v: &str| go_time::parse(l, v);
        assert_eq!(p("200Z-09\u{e5}70:00", "2023-10-K1"), None);
        assert_eq!(
            p(
                "2006\u{5e74}01\u{6708}02\u{65e5}",
                "2023\u{5e74}11\u{6708}14\u{65e5}"
            ),
            Some(1_699_920_000_000)
        );
        assert_eq!(p("2006\u{5e74}", "2023\u{5e75}"), None);
        assert_eq!(p("January", "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"), None);
        assert_eq!(p("Jan 2006", "\u{e9}\u{e9} 2023"), None);
    }

    #[test]
    fn go_layouts() {
        let p = |l: &str, v: &str| go_time::parse(l, v);
        assert_eq!(
            p(go_time::RFC3339, "2023-11-14T22:13:20Z"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            p(go_time::RFC3339, "2023-11-14T22:13:20.5+01:00"),
            Some(1_699_996_400_500)
        );
        assert_eq!(p(go_time::RFC3339, "2023-11-14 22:13:20"), None);
        assert_eq!(p(go_time::RFC3339, "2023-11-14T22:13:20"), None);
        assert_eq!(
            p("2006-01-02 15:04:05", "2023-11-14 22:13:20"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            p("02/Jan/2006:15:04:05 -0700", "14/Nov/2023:23:13:20 +0100"),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            p("Jan _2 06 3:04PM", "Nov 14 23 10:13PM"),
            Some(1_699_999_980_000)
        );
        assert_eq!(p("2006-01-02", "2023-02-30"), None);
        assert_eq!(
            p("2006-01-02T15:04:05.000Z", "2023-11-14T22:13:20.123Z"),
            Some(1_700_000_000_123)
        );
        assert_eq!(p("2006-01-02", "1969-12-31"), Some(-86_400_000));
    }

    #[test]
    fn format_errors() {
        let e = CsvFormat::parse(Some("2:metric")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot parse the provided csv format: entry #1 must have the following form: \
             <column_pos>:<column_type>:<extension>; got [\"2\" \"metric\"]"
        );
        assert!(CsvFormat::parse(Some("1:metric:v,1:label:x")).is_err());
        assert!(CsvFormat::parse(Some("1:metric:v,3:time:unix_s,4:time:unix_s")).is_err());
        assert!(CsvFormat::parse(None).is_err());
        assert!(CsvFormat::parse(Some("1:label:x")).is_err());
        assert!(CsvFormat::parse(Some("0:metric:x")).is_err());
        assert!(CsvFormat::parse(Some("65537:metric:x")).is_err());
        assert_eq!(CsvFormat::parse(Some("+02:metric:x")).unwrap().max_pos(), 2);
        assert!(CsvFormat::parse(Some("1:time:custom:15:04")).is_err()); // no metric column
    }

    type Row = (Vec<(String, String)>, i64, f64);

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
                self.rows.push((l.clone(), s.timestamp_ms, s.value()));
            }
        }
        fn invalid(&mut self, line: u64, _: &str) {
            self.invalid.push(line);
        }
    }

    fn run(format: &str, body: &str) -> Rows {
        let mut r = Rows::default();
        parse_body(
            body.as_bytes(),
            CsvFormat::parse(Some(format)).unwrap(),
            42,
            &mut r,
        )
        .unwrap();
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
        const T: i64 = 1_700_000_000_000;
        let r = run(
            "2:metric:ask,3:metric:bid,1:label:ticker,4:label:market,5:time:unix_s",
            "GOOG,1.23,4.56,NYSE,1700000000\nMSFT,3.21,,NASDAQ,1700000001",
        );
        assert_eq!(r.rows.len(), 3);
        assert_eq!(
            r.rows[0],
            (
                l(&[("", "ask"), ("ticker", "GOOG"), ("market", "NYSE")]),
                T,
                1.23
            )
        );
        assert_eq!(r.rows[1].0[0].1, "bid");
        assert_eq!(
            r.rows[2],
            (
                l(&[("", "ask"), ("ticker", "MSFT"), ("market", "NASDAQ")]),
                T + 1000,
                3.21
            )
        );

        let r = run(
            "1:label:ticker,2:metric:v,3:time:unix_ms",
            "ticker,v,time\nA,1,1700000000000\n",
        );
        assert_eq!((r.rows.len(), r.invalid.len()), (1, 0));
        let r = run(
            "1:label:ticker,2:metric:v,3:time:unix_ms",
            "A,1,1700000000000\nticker,v,time\n",
        );
        assert_eq!((r.rows.len(), r.invalid.clone()), (1, vec![2]));

        let r = run(
            "1:label:t,2:metric:v",
            "\"a,b\",1\n'q''x',2\n\"c\"\"d\",3\n\"e\"x,4\n\"f,5\n",
        );
        let ts: Vec<_> = r.rows.iter().map(|x| (x.0[1].1.clone(), x.1)).collect();
        assert_eq!(
            ts,
            vec![("a,b".into(), 42), ("q'x".into(), 42), ("c\"d".into(), 42)]
        );
        assert_eq!(r.invalid, vec![4, 5]);

        let r = run("1:label:t,3:metric:v", "a,1\nb,2,3\nc,3,4,5,6\n");
        assert_eq!(r.invalid, vec![1]);
        assert_eq!(
            r.rows.iter().map(|x| x.2).collect::<Vec<_>>(),
            vec![3.0, 4.0]
        );

        let r = run(
            "1:metric:v,2:time:unix_s",
            "1,1700000000.5\nabc,1700000000\n",
        );
        assert_eq!((r.rows.len(), r.invalid.clone()), (0, vec![2]));
        let r = run("1:metric:v,2:time:unix_s", "1,0\n");
        assert_eq!(r.rows[0].1, 42);
        let r = run(
            "1:metric:v,2:label:__name__,3:time:unix_s",
            "1,other,1700000000\n",
        );
        assert_eq!(r.rows[0].0, l(&[("", "v"), ("__name__", "other")]));
        let r = run("1:metric:v,2:time:unix_ns", "1,1700000000123999999\n");
        assert_eq!(r.rows[0].1, T + 123);
        // A line whose metric cells are all empty gives nothing and is not an error.
        let r = run("1:metric:v,2:label:x", "1,a\n,b\n");
        assert_eq!((r.rows.len(), r.invalid.len()), (1, 0));
    }
}
