//! Prometheus remote write v1 (and VictoriaMetrics remote write, the same protobuf in zstd)
//! (spec: formats/prometheus-remote-write.md).
//!
//! The body is decompressed whole, then decoded by a small hand-written protobuf reader whose
//! labels borrow from the decompressed bytes. vminsert writes nothing from a request that has
//! any decode error, so the body is walked twice: once to validate, once to emit.

use std::io::Read;

use super::{Metadata, Sink};
use crate::model::{Label, Sample, METRIC_NAME_LABEL};

/// `-maxInsertRequestSize` default: 32 MiB, for the raw and the decompressed body.
pub const DEFAULT_MAX_INSERT_REQUEST_SIZE: usize = 32 * 1024 * 1024;

/// Everything that makes vminsert answer 400 to a remote-write request. Nothing from the
/// request is written in any of these cases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteWriteError {
    /// The raw or decompressed body is larger than `-maxInsertRequestSize`.
    TooBig { size: usize, max: usize },
    /// Neither codec could decode the body; the text names the first codec's error.
    Decompress(String),
    /// The protobuf could not be decoded.
    Protobuf { size: usize, reason: String },
    /// A TimeSeries carries samples and native histograms at once.
    SamplesAndHistograms { size: usize },
}

impl std::fmt::Display for RemoteWriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteWriteError::TooBig { size, max } => {
                write!(f, "too big request: {size} bytes; it mustn't exceed -maxInsertRequestSize={max} bytes")
            }
            RemoteWriteError::Decompress(e) => f.write_str(e),
            RemoteWriteError::Protobuf { size, reason } => {
                write!(f, "cannot unmarshal prompb.WriteRequest with size {size} bytes: {reason}")
            }
            RemoteWriteError::SamplesAndHistograms { size } => write!(
                f,
                "cannot unmarshal prompb.WriteRequest with size {size} bytes: cannot unmarshal timeseries: \
                 cannot have both samples and native histograms in the same TimeSeries"
            ),
        }
    }
}

impl std::error::Error for RemoteWriteError {}

impl RemoteWriteError {
    /// Every remote-write body error is a client error.
    pub fn http_status(&self) -> u16 {
        400
    }
}

type DecompressFn = fn(&[u8], usize) -> Result<Vec<u8>, String>;

fn snappy_decompress(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let corrupt = || {
        format!(
            "cannot decompress snappy-encoded request with length {}: snappy: corrupt input",
            body.len()
        )
    };
    let n = snap::raw::decompress_len(body).map_err(|_| corrupt())?;
    if n > max {
        return Err(format!(
            "cannot decompress snappy-encoded request with length {}: too big decompressed size: {n} bytes; \
             it mustn't exceed -maxInsertRequestSize={max} bytes",
            body.len()
        ));
    }
    snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|_| corrupt())
}

fn zstd_decompress(body: &[u8], max: usize) -> Result<Vec<u8>, String> {
    let err = |e: &dyn std::fmt::Display| {
        format!(
            "cannot decompress zstd-encoded request with length {}: {e}",
            body.len()
        )
    };
    let dec = zstd::stream::read::Decoder::with_buffer(body).map_err(|e| err(&e))?;
    let mut out = Vec::new();
    // Read one byte past the cap so an oversized body is noticed without decoding all of it.
    dec.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| err(&e))?;
    if out.len() > max {
        return Err(err(&format!(
            "decompressed size exceeds -maxInsertRequestSize={max} bytes"
        )));
    }
    Ok(out)
}

/// Decompress a remote-write body: `Content-Encoding: zstd` tries zstd then snappy (block
/// format); anything else tries snappy then zstd. Plain protobuf, gzip and framed snappy fail.
pub fn decompress(
    body: &[u8],
    content_encoding: Option<&str>,
    max_size: usize,
) -> Result<Vec<u8>, RemoteWriteError> {
    if body.len() > max_size {
        return Err(RemoteWriteError::TooBig {
            size: body.len(),
            max: max_size,
        });
    }
    let zstd_first = content_encoding == Some("zstd");
    let (first, second): (DecompressFn, DecompressFn) = if zstd_first {
        (zstd_decompress, snappy_decompress)
    } else {
        (snappy_decompress, zstd_decompress)
    };
    match first(body, max_size) {
        Ok(v) => Ok(v),
        Err(e) => second(body, max_size).map_err(|_| RemoteWriteError::Decompress(e)),
    }
}

/// Decompress and parse a remote-write body into `sink`.
pub fn parse_compressed<S: Sink + ?Sized>(
    body: &[u8],
    content_encoding: Option<&str>,
    max_size: usize,
    sink: &mut S,
) -> Result<(), RemoteWriteError> {
    let raw = decompress(body, content_encoding, max_size)?;
    parse(&raw, sink)
}

/// Parse a decompressed `WriteRequest`. On error nothing has been handed to the sink.
pub fn parse<S: Sink + ?Sized>(body: &[u8], sink: &mut S) -> Result<(), RemoteWriteError> {
    let mut state = State::default();
    walk::<S>(body, &mut state, None).map_err(|e| e.into_error(body.len()))?;
    walk(body, &mut state, Some(sink)).map_err(|e| e.into_error(body.len()))
}

enum DecodeError {
    Proto(&'static str),
    Both,
}

impl DecodeError {
    fn into_error(self, size: usize) -> RemoteWriteError {
        match self {
            DecodeError::Proto(reason) => RemoteWriteError::Protobuf {
                size,
                reason: reason.to_string(),
            },
            DecodeError::Both => RemoteWriteError::SamplesAndHistograms { size },
        }
    }
}

type R<T> = Result<T, DecodeError>;

const WT_VARINT: u8 = 0;
const WT_I64: u8 = 1;
const WT_LEN: u8 = 2;
const WT_I32: u8 = 5;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(i) else {
                return Err(DecodeError::Proto("unexpected end of varint"));
            };
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Ok(v);
            }
        }
        Err(DecodeError::Proto("varint is too long"))
    }

    fn fixed64(&mut self) -> R<u64> {
        if self.buf.len() < 8 {
            return Err(DecodeError::Proto("unexpected end of fixed64"));
        }
        let (a, b) = self.buf.split_at(8);
        self.buf = b;
        Ok(u64::from_le_bytes(a.try_into().expect("8 bytes")))
    }

    fn bytes(&mut self) -> R<&'a [u8]> {
        let n = self.varint()?;
        if n > self.buf.len() as u64 {
            return Err(DecodeError::Proto(
                "length-delimited field runs past the end of the message",
            ));
        }
        let (a, b) = self.buf.split_at(n as usize);
        self.buf = b;
        Ok(a)
    }

    /// The next field's number and wire type, `None` at the end of the message.
    fn field(&mut self) -> R<Option<(u64, u8)>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let num = key >> 3;
        if num == 0 {
            return Err(DecodeError::Proto("field number 0"));
        }
        Ok(Some((num, (key & 7) as u8)))
    }

    fn skip(&mut self, wt: u8) -> R<()> {
        match wt {
            WT_VARINT => self.varint().map(drop),
            WT_I64 => self.fixed64().map(drop),
            WT_LEN => self.bytes().map(drop),
            WT_I32 => {
                if self.buf.len() < 4 {
                    return Err(DecodeError::Proto("unexpected end of fixed32"));
                }
                self.buf = &self.buf[4..];
                Ok(())
            }
            _ => Err(DecodeError::Proto("unsupported wire type")),
        }
    }
}

fn expect(wt: u8, want: u8) -> R<()> {
    if wt == want {
        Ok(())
    } else {
        Err(DecodeError::Proto("unexpected wire type for a known field"))
    }
}

fn zigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reusable buffers across series.
#[derive(Default)]
struct State {
    samples: Vec<Sample>,
    hist: Histogram,
    scratch: Vec<u8>,
}

fn walk<'a, S: Sink + ?Sized>(body: &'a [u8], st: &mut State, mut sink: Option<&mut S>) -> R<()> {
    let mut r = Reader { buf: body };
    let mut labels: Vec<Label<'a>> = Vec::new();
    let mut histograms: Vec<&'a [u8]> = Vec::new();
    let mut metadata: Vec<&'a [u8]> = Vec::new();
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => {
                expect(wt, WT_LEN)?;
                let ts = r.bytes()?;
                labels.clear();
                histograms.clear();
                st.samples.clear();
                read_series(ts, &mut labels, &mut st.samples, &mut histograms)?;
                if !st.samples.is_empty() && !histograms.is_empty() {
                    return Err(DecodeError::Both);
                }
                for h in &histograms {
                    read_histogram(h, &mut st.hist)?;
                    if let Some(sink) = sink.as_deref_mut() {
                        emit_histogram(&labels, &st.hist, &mut st.scratch, sink);
                    }
                }
                if !st.samples.is_empty() {
                    if let Some(sink) = sink.as_deref_mut() {
                        sink.series(&labels, &st.samples);
                    }
                }
            }
            3 => {
                expect(wt, WT_LEN)?;
                let m = r.bytes()?;
                if sink.is_some() {
                    metadata.push(m);
                } else {
                    read_metadata(m)?;
                }
            }
            _ => r.skip(wt)?,
        }
    }
    if let Some(sink) = sink {
        // Metadata goes to storage after all samples, as vminsert does.
        for m in metadata {
            sink.metadata(&read_metadata(m)?);
        }
    }
    Ok(())
}

fn read_series<'a>(
    msg: &'a [u8],
    labels: &mut Vec<Label<'a>>,
    samples: &mut Vec<Sample>,
    histograms: &mut Vec<&'a [u8]>,
) -> R<()> {
    let mut r = Reader { buf: msg };
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => {
                expect(wt, WT_LEN)?;
                let mut lr = Reader { buf: r.bytes()? };
                let mut label = Label::new(b"", b"");
                while let Some((n, w)) = lr.field()? {
                    match n {
                        1 => {
                            expect(w, WT_LEN)?;
                            label.name = lr.bytes()?;
                        }
                        2 => {
                            expect(w, WT_LEN)?;
                            label.value = lr.bytes()?;
                        }
                        _ => lr.skip(w)?,
                    }
                }
                labels.push(label);
            }
            2 => {
                expect(wt, WT_LEN)?;
                let mut sr = Reader { buf: r.bytes()? };
                let mut s = Sample::from_bits(0, 0);
                while let Some((n, w)) = sr.field()? {
                    match n {
                        1 => {
                            expect(w, WT_I64)?;
                            s.value_bits = sr.fixed64()?;
                        }
                        2 => {
                            expect(w, WT_VARINT)?;
                            s.timestamp_ms = sr.varint()? as i64;
                        }
                        _ => sr.skip(w)?,
                    }
                }
                samples.push(s);
            }
            4 => {
                expect(wt, WT_LEN)?;
                histograms.push(r.bytes()?);
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

fn read_metadata(msg: &[u8]) -> R<Metadata<'_>> {
    let mut m = Metadata {
        metric_type: 0,
        family: b"",
        help: b"",
        unit: b"",
        account_id: 0,
        project_id: 0,
    };
    let mut r = Reader { buf: msg };
    while let Some((num, wt)) = r.field()? {
        match num {
            1 | 11 | 12 => {
                expect(wt, WT_VARINT)?;
                let v = r.varint()? as u32;
                match num {
                    1 => m.metric_type = v,
                    11 => m.account_id = v,
                    _ => m.project_id = v,
                }
            }
            2 => {
                expect(wt, WT_LEN)?;
                m.family = r.bytes()?;
            }
            4 => {
                expect(wt, WT_LEN)?;
                m.help = r.bytes()?;
            }
            5 => {
                expect(wt, WT_LEN)?;
                m.unit = r.bytes()?;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(m)
}

/// One decoded native histogram.
#[derive(Default, Debug)]
struct Histogram {
    count_int: u64,
    count_float: Option<f64>,
    sum: f64,
    schema: i32,
    zero_threshold: f64,
    zero_count_int: u64,
    zero_count_float: Option<f64>,
    neg_spans: Vec<(i32, u32)>,
    neg_deltas: Vec<i64>,
    neg_counts: Vec<f64>,
    pos_spans: Vec<(i32, u32)>,
    pos_deltas: Vec<i64>,
    pos_counts: Vec<f64>,
    timestamp_ms: i64,
}

fn read_spans(r: &mut Reader<'_>, wt: u8, out: &mut Vec<(i32, u32)>) -> R<()> {
    expect(wt, WT_LEN)?;
    let mut sr = Reader { buf: r.bytes()? };
    let (mut offset, mut length) = (0i32, 0u32);
    while let Some((n, w)) = sr.field()? {
        match n {
            1 => {
                expect(w, WT_VARINT)?;
                offset = zigzag(u64::from(sr.varint()? as u32)) as i32;
            }
            2 => {
                expect(w, WT_VARINT)?;
                length = sr.varint()? as u32;
            }
            _ => sr.skip(w)?,
        }
    }
    out.push((offset, length));
    Ok(())
}

fn read_deltas(r: &mut Reader<'_>, wt: u8, out: &mut Vec<i64>) -> R<()> {
    match wt {
        WT_VARINT => out.push(zigzag(r.varint()?)),
        WT_LEN => {
            let mut pr = Reader { buf: r.bytes()? };
            while !pr.buf.is_empty() {
                out.push(zigzag(pr.varint()?));
            }
        }
        _ => return Err(DecodeError::Proto("unexpected wire type for bucket deltas")),
    }
    Ok(())
}

fn read_counts(r: &mut Reader<'_>, wt: u8, out: &mut Vec<f64>) -> R<()> {
    match wt {
        WT_I64 => out.push(f64::from_bits(r.fixed64()?)),
        WT_LEN => {
            let mut pr = Reader { buf: r.bytes()? };
            if pr.buf.len() & 7 != 0 {
                return Err(DecodeError::Proto(
                    "packed doubles are not a multiple of 8 bytes",
                ));
            }
            while !pr.buf.is_empty() {
                out.push(f64::from_bits(pr.fixed64()?));
            }
        }
        _ => return Err(DecodeError::Proto("unexpected wire type for bucket counts")),
    }
    Ok(())
}

fn read_histogram(msg: &[u8], h: &mut Histogram) -> R<()> {
    h.count_int = 0;
    h.count_float = None;
    h.sum = 0.0;
    h.schema = 0;
    h.zero_threshold = 0.0;
    h.zero_count_int = 0;
    h.zero_count_float = None;
    h.timestamp_ms = 0;
    for v in [&mut h.neg_spans, &mut h.pos_spans] {
        v.clear();
    }
    for v in [&mut h.neg_deltas, &mut h.pos_deltas] {
        v.clear();
    }
    for v in [&mut h.neg_counts, &mut h.pos_counts] {
        v.clear();
    }
    let mut r = Reader { buf: msg };
    while let Some((num, wt)) = r.field()? {
        match num {
            1 => {
                expect(wt, WT_VARINT)?;
                h.count_int = r.varint()?;
            }
            2 => {
                expect(wt, WT_I64)?;
                h.count_float = Some(f64::from_bits(r.fixed64()?));
            }
            3 => {
                expect(wt, WT_I64)?;
                h.sum = f64::from_bits(r.fixed64()?);
            }
            4 => {
                expect(wt, WT_VARINT)?;
                h.schema = zigzag(u64::from(r.varint()? as u32)) as i32;
            }
            5 => {
                expect(wt, WT_I64)?;
                h.zero_threshold = f64::from_bits(r.fixed64()?);
            }
            6 => {
                expect(wt, WT_VARINT)?;
                h.zero_count_int = r.varint()?;
            }
            7 => {
                expect(wt, WT_I64)?;
                h.zero_count_float = Some(f64::from_bits(r.fixed64()?));
            }
            8 => read_spans(&mut r, wt, &mut h.neg_spans)?,
            9 => read_deltas(&mut r, wt, &mut h.neg_deltas)?,
            10 => read_counts(&mut r, wt, &mut h.neg_counts)?,
            11 => read_spans(&mut r, wt, &mut h.pos_spans)?,
            12 => read_deltas(&mut r, wt, &mut h.pos_deltas)?,
            13 => read_counts(&mut r, wt, &mut h.pos_counts)?,
            15 => {
                expect(wt, WT_VARINT)?;
                h.timestamp_ms = r.varint()? as i64;
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(())
}

/// Go's `%.3e`: three fraction digits and an exponent with a sign and at least two digits.
pub fn format_go_e3(out: &mut Vec<u8>, v: f64) {
    use std::io::Write;
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    let s = format!("{v:.3e}");
    let (mant, exp) = s.split_once('e').expect("{:e} always has an exponent");
    let (sign, digits) = match exp.strip_prefix('-') {
        Some(d) => ('-', d),
        None => ('+', exp),
    };
    let _ = write!(out, "{mant}e{sign}{digits:0>2}");
}

struct Bucket {
    lo: f64,
    hi: f64,
    count: f64,
}

/// Walk one side's spans and counts the way vminsert does: stop quietly when counts run out.
fn buckets(
    spans: &[(i32, u32)],
    deltas: &[i64],
    counts: &[f64],
    base: f64,
    mut f: impl FnMut(Bucket),
) {
    let mut idx: i64 = 0;
    let mut k = 0usize;
    let mut running: i64 = 0;
    for &(offset, length) in spans {
        idx += i64::from(offset);
        for _ in 0..length {
            let count = if !counts.is_empty() {
                let Some(&c) = counts.get(k) else { return };
                c
            } else {
                let Some(&d) = deltas.get(k) else { return };
                running = running.wrapping_add(d);
                running as f64
            };
            k += 1;
            let hi = base.powf(idx as f64);
            f(Bucket {
                lo: hi / base,
                hi,
                count,
            });
            idx += 1;
        }
    }
}

fn emit_histogram<S: Sink + ?Sized>(
    labels: &[Label<'_>],
    h: &Histogram,
    scratch: &mut Vec<u8>,
    sink: &mut S,
) {
    let Some(name_at) = labels.iter().position(|l| l.name == METRIC_NAME_LABEL) else {
        return;
    };
    let name = labels[name_at].value;
    if name.is_empty() {
        return;
    }
    let ts = h.timestamp_ms;
    let count = h.count_float.unwrap_or(h.count_int as f64);
    let zero_count = h.zero_count_float.unwrap_or(h.zero_count_int as f64);
    let mut out: Vec<Label<'_>> = labels.to_vec();
    let with_suffix = |suffix: &[u8]| [name, suffix].concat();
    let count_name = with_suffix(b"_count");
    let sum_name = with_suffix(b"_sum");
    let bucket_name = with_suffix(b"_bucket");
    out[name_at].value = &count_name;
    sink.series(&out, &[Sample::new(ts, count)]);
    out[name_at].value = &sum_name;
    sink.series(&out, &[Sample::new(ts, h.sum)]);
    out[name_at].value = &bucket_name;
    let mut emit_bucket = |lo: f64, hi: f64, count: f64| {
        scratch.clear();
        format_go_e3(scratch, lo);
        scratch.extend_from_slice(b"...");
        format_go_e3(scratch, hi);
        let mut with_range: Vec<Label<'_>> = Vec::with_capacity(out.len() + 1);
        with_range.extend_from_slice(&out);
        with_range.push(Label::new(b"vmrange", scratch));
        sink.series(&with_range, &[Sample::new(ts, count)]);
    };
    if zero_count > 0.0 {
        emit_bucket(-h.zero_threshold, h.zero_threshold, zero_count);
    }
    let base = 2f64.powf(2f64.powf(-f64::from(h.schema)));
    buckets(&h.pos_spans, &h.pos_deltas, &h.pos_counts, base, |b| {
        if b.count > 0.0 {
            emit_bucket(b.lo, b.hi, b.count);
        }
    });
    buckets(&h.neg_spans, &h.neg_deltas, &h.neg_counts, base, |b| {
        if b.count > 0.0 {
            emit_bucket(-b.hi, -b.lo, b.count);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_exponent_format() {
        let f = |v: f64| {
            let mut o = Vec::new();
            format_go_e3(&mut o, v);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(f(1.0), "1.000e+00");
        assert_eq!(f(std::f64::consts::FRAC_1_SQRT_2), "7.071e-01");
        assert_eq!(f(-2.0), "-2.000e+00");
        assert_eq!(f(1e100), "1.000e+100");
        assert_eq!(f(-0.0), "-0.000e+00");
        assert_eq!(f(f64::INFINITY), "+Inf");
    }

    #[derive(Default)]
    struct Count(usize);
    impl Sink for Count {
        fn series(&mut self, _: &[Label<'_>], s: &[Sample]) {
            self.0 += s.len();
        }
    }

    #[test]
    fn bad_protobuf_writes_nothing() {
        // A valid series followed by a truncated one.
        let mut body = vec![
            0x0a, 0x0d, 0x0a, 0x07, 0x0a, 0x01, b'a', 0x12, 0x02, b'x', b'y', 0x12, 0x02, 0x10,
            0x01,
        ];
        let mut c = Count::default();
        parse(&body, &mut c).unwrap();
        assert_eq!(c.0, 1);
        body.extend_from_slice(&[0x0a, 0x05, 0x0a]);
        let mut c = Count::default();
        assert!(matches!(
            parse(&body, &mut c),
            Err(RemoteWriteError::Protobuf { .. })
        ));
        assert_eq!(c.0, 0);
        // Group wire types are errors.
        assert!(parse(&[0x0b], &mut c).is_err());
    }

    #[test]
    fn decompress_caps_and_fallbacks() {
        let raw = b"\x0a\x00".repeat(100);
        let snappy = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
        let zstd = zstd::bulk::compress(&raw, 1).unwrap();
        assert_eq!(decompress(&snappy, None, 1 << 20).unwrap(), raw);
        assert_eq!(decompress(&snappy, Some("zstd"), 1 << 20).unwrap(), raw);
        assert_eq!(decompress(&zstd, None, 1 << 20).unwrap(), raw);
        assert!(matches!(
            decompress(&snappy, None, 100),
            Err(RemoteWriteError::Decompress(_))
        ));
        assert!(matches!(
            decompress(&zstd, None, 100),
            Err(RemoteWriteError::Decompress(_))
        ));
        let e = decompress(&raw, None, 1 << 20).unwrap_err();
        assert!(e.to_string().contains("snappy: corrupt input"), "{e}");
        assert!(matches!(
            decompress(&raw, None, 10),
            Err(RemoteWriteError::TooBig { .. })
        ));
    }
}
