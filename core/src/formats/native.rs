//! `/api/v1/import/native`: the block stream that `/api/v1/export/native` produces
//! (spec: formats/native-import.md, row-encoding.md §7).
//!
//! The stream is a 16-byte time range followed by records `u32be nameLen | name | u32be blockLen
//! | block`. [`NativeParser`] is fed the (decompressed) body in arbitrary pieces and holds at most
//! one record part (≤ 1 MiB) at a time. Every complete record becomes one series right away, so
//! records before a bad or truncated one stay written, as vminsert keeps them.
//!
//! A block carries timestamps and decimal mantissas, each column encoded with one of the storage
//! codecs: a constant, an arithmetic progression, zig-zag varint deltas ("nearest delta"),
//! varint deltas of deltas ("nearest delta2"), or either delta form zstd-compressed. A value is
//! `mantissa × 10^scale`, with three reserved mantissas standing for +Inf, -Inf and the
//! staleness marker.

use std::fmt;

use super::number::pow10;
use super::Sink;
use crate::model::{recycle_labels, Label, Sample, STALE_NAN_BITS};

/// Cap on `nameLen` and on `blockLen` (vminsert refuses larger parts with 400).
pub const MAX_PART_LEN: usize = 1024 * 1024;

/// Rows one block may declare. Storage never writes blocks above 8192 rows and its block header
/// check allows twice that; without this cap a few bytes of constant-encoded block could ask
/// for billions of rows.
pub const MAX_ROWS_PER_BLOCK: u64 = 2 * 8192;

/// Why a native stream was refused (always 400). The text follows vminsert's wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NativeError(pub String);

impl fmt::Display for NativeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NativeError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Header,
    NameLen,
    Name(usize),
    BlockLen,
    Block(usize),
}

/// Streaming decoder for one request body.
#[derive(Debug)]
pub struct NativeParser {
    part: Part,
    /// Bytes of the current part gathered so far.
    buf: Vec<u8>,
    /// The complete name of the record whose block is being read.
    name: Vec<u8>,
    min_ts: i64,
    max_ts: i64,
    failed: Option<NativeError>,
    scratch: RecordScratch,
}

impl Default for NativeParser {
    fn default() -> Self {
        NativeParser::new()
    }
}

/// Decode a whole body held in memory.
pub fn parse_body<S: Sink + ?Sized>(body: &[u8], sink: &mut S) -> Result<(), NativeError> {
    let mut p = NativeParser::new();
    p.feed(body, sink)?;
    p.finish(sink)
}

impl NativeParser {
    pub fn new() -> NativeParser {
        NativeParser {
            part: Part::Header,
            buf: Vec::new(),
            name: Vec::new(),
            min_ts: 0,
            max_ts: 0,
            failed: None,
            scratch: RecordScratch::default(),
        }
    }

    fn need(&self) -> usize {
        match self.part {
            Part::Header => 16,
            Part::NameLen | Part::BlockLen => 4,
            Part::Name(n) | Part::Block(n) => n,
        }
    }

    /// Feed the next piece of the decompressed body. After an error the parser stays failed.
    pub fn feed<S: Sink + ?Sized>(
        &mut self,
        mut chunk: &[u8],
        sink: &mut S,
    ) -> Result<(), NativeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        loop {
            let need = self.need();
            if self.buf.len() < need {
                if chunk.is_empty() {
                    return Ok(());
                }
                let take = (need - self.buf.len()).min(chunk.len());
                self.buf.extend_from_slice(&chunk[..take]);
                chunk = &chunk[take..];
                if self.buf.len() < need {
                    return Ok(());
                }
            }
            if let Err(e) = self.complete(sink) {
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
    }

    /// The current part is complete in `buf`.
    fn complete<S: Sink + ?Sized>(&mut self, sink: &mut S) -> Result<(), NativeError> {
        let b = &self.buf;
        self.part = match self.part {
            Part::Header => {
                self.min_ts = zigzag_be(&b[..8]);
                self.max_ts = zigzag_be(&b[8..16]);
                Part::NameLen
            }
            Part::NameLen => {
                let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if n > MAX_PART_LEN {
                    return Err(NativeError(format!(
                        "too big metricName size; got {n}; shouldn't exceed {MAX_PART_LEN}"
                    )));
                }
                Part::Name(n)
            }
            Part::Name(_) => {
                std::mem::swap(&mut self.name, &mut self.buf);
                Part::BlockLen
            }
            Part::BlockLen => {
                let n = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
                if n > MAX_PART_LEN {
                    return Err(NativeError(format!(
                        "too big native block size; got {n}; shouldn't exceed {MAX_PART_LEN}"
                    )));
                }
                Part::Block(n)
            }
            Part::Block(_) => {
                self.scratch
                    .record(&self.name, &self.buf, self.min_ts, self.max_ts, sink)
                    .map_err(|e| NativeError(format!("error when processing native block: {e}")))?;
                Part::NameLen
            }
        };
        self.buf.clear();
        // Do not keep a MiB-sized buffer around for a stream of small records.
        if self.buf.capacity() > 2 * MAX_PART_LEN {
            self.buf.shrink_to(64 * 1024);
        }
        Ok(())
    }

    /// The end of the body: it must fall on a record boundary.
    pub fn finish<S: Sink + ?Sized>(&mut self, _sink: &mut S) -> Result<(), NativeError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let eof = if self.buf.is_empty() {
            "EOF"
        } else {
            "unexpected EOF"
        };
        let msg = match self.part {
            Part::NameLen if self.buf.is_empty() => return Ok(()),
            Part::Header => format!("cannot read time range: {eof}"),
            Part::NameLen => format!("cannot read metricName size: {eof}"),
            Part::Name(n) => format!("cannot read metricName with size {n} bytes: {eof}"),
            Part::BlockLen => format!("cannot read native block size: {eof}"),
            Part::Block(n) => format!("cannot read native block with size {n} bytes: {eof}"),
        };
        let e = NativeError(msg);
        self.failed = Some(e.clone());
        Err(e)
    }
}

/// Buffers reused from record to record.
#[derive(Debug, Default)]
struct RecordScratch {
    text: Vec<u8>,
    spans: Vec<(usize, usize)>,
    labels: Vec<Label<'static>>,
    block: DecodedBlock,
    samples: Vec<Sample>,
}

impl RecordScratch {
    fn record<S: Sink + ?Sized>(
        &mut self,
        name: &[u8],
        block: &[u8],
        min_ts: i64,
        max_ts: i64,
        sink: &mut S,
    ) -> Result<(), String> {
        unescape_name(name, &mut self.text, &mut self.spans)
            .map_err(|e| format!("cannot unmarshal metricName from {} bytes: {e}", name.len()))?;
        let tail = decode_block(block, &mut self.block).map_err(|e| {
            format!(
                "cannot unmarshal native block from {} bytes: {e}",
                block.len()
            )
        })?;
        if tail > 0 {
            return Err(format!(
                "unexpected non-empty tail left after unmarshaling native block from {} bytes; len(tail)={tail} bytes",
                block.len()
            ));
        }
        let d = &self.block;
        // The samples are sorted, so the stream's time range trims both ends.
        let mut lo = 0;
        let mut hi = d.timestamps.len();
        while lo < hi && d.timestamps[lo] < min_ts {
            lo += 1;
        }
        while hi > lo && d.timestamps[hi - 1] > max_ts {
            hi -= 1;
        }
        self.samples.clear();
        self.samples.extend(
            d.timestamps[lo..hi]
                .iter()
                .zip(&d.values[lo..hi])
                .map(|(&t, &v)| Sample::from_bits(t, v.to_bits())),
        );
        let text = &self.text;
        let mut labels = recycle_labels(std::mem::take(&mut self.labels));
        let mut spans = self.spans.iter().map(|&(a, b)| &text[a..b]);
        if let Some(group) = spans.next() {
            labels.push(Label::metric_name(group));
        }
        while let (Some(k), Some(v)) = (spans.next(), spans.next()) {
            labels.push(Label::new(k, v));
        }
        sink.series(&labels, &self.samples);
        self.labels = recycle_labels(labels);
        Ok(())
    }
}

/// Split an escaped metric name (row-encoding.md §7 without the tenant) into the unescaped
/// metric group followed by key/value pairs: `spans` index into `text`.
fn unescape_name(
    src: &[u8],
    text: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Result<(), &'static str> {
    text.clear();
    spans.clear();
    let mut rest = unescape_one(src, text, spans)?;
    while !rest.is_empty() {
        rest = unescape_one(rest, text, spans).map_err(|_| "cannot unmarshal tag key")?;
        rest = unescape_one(rest, text, spans).map_err(|_| "cannot unmarshal tag value")?;
    }
    Ok(())
}

fn unescape_one<'a>(
    src: &'a [u8],
    text: &mut Vec<u8>,
    spans: &mut Vec<(usize, usize)>,
) -> Result<&'a [u8], &'static str> {
    let end = memchr::memchr(1, src).ok_or("cannot find the end of tag value")?;
    let start = text.len();
    let mut s = &src[..end];
    while let Some(i) = memchr::memchr(0, s) {
        text.extend_from_slice(&s[..i]);
        let c = match s.get(i + 1) {
            None => return Err("missing escaped char"),
            Some(b'0') => 0,
            Some(b'1') => 1,
            Some(b'2') => 2,
            Some(_) => return Err("unsupported escaped char"),
        };
        text.push(c);
        s = &s[i + 2..];
    }
    text.extend_from_slice(s);
    spans.push((start, text.len()));
    Ok(&src[end + 1..])
}

/// 8 big-endian bytes holding a zig-zag encoded int64.
fn zigzag_be(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    unzigzag(u64::from_be_bytes(a))
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Unsigned LEB128 with Go's overflow rule (at most 10 bytes, the 10th at most 1).
fn uvarint(src: &[u8]) -> Option<(u64, usize)> {
    let mut x = 0u64;
    for (i, &b) in src.iter().enumerate().take(10) {
        if b < 0x80 {
            if i == 9 && b > 1 {
                return None;
            }
            return Some((x | u64::from(b) << (7 * i), i + 1));
        }
        x |= u64::from(b & 0x7f) << (7 * i);
    }
    None
}

fn varint(src: &[u8]) -> Option<(i64, usize)> {
    uvarint(src).map(|(u, n)| (unzigzag(u), n))
}

/// One decoded block: ascending timestamps and their values.
#[derive(Debug, Default)]
pub struct DecodedBlock {
    pub timestamps: Vec<i64>,
    pub values: Vec<f64>,
    mantissas: Vec<i64>,
    deltas: Vec<i64>,
    unzstd: Vec<u8>,
}

/// The reserved mantissas (storage's decimal encoding).
const MANTISSA_INF: i64 = i64::MAX;
const MANTISSA_NEG_INF: i64 = i64::MIN;
const MANTISSA_STALE_NAN: i64 = i64::MAX - 1;

/// Decode a portable block into `out`; returns how many bytes were left after it.
pub fn decode_block(src: &[u8], out: &mut DecodedBlock) -> Result<usize, String> {
    let mut pos = 0;
    let next_varint = |what: &str, pos: &mut usize| {
        let (v, n) = varint(&src[*pos..]).ok_or_else(|| format!("cannot unmarshal {what}"))?;
        *pos += n;
        Ok::<i64, String>(v)
    };
    let min_ts = next_varint("minTimestamp", &mut pos)?;
    let max_ts = next_varint("maxTimestamp", &mut pos)?;
    let first_value = next_varint("firstValue", &mut pos)?;
    let (rows, n) = uvarint(&src[pos..]).ok_or("cannot unmarshal rowsCount")?;
    pos += n;
    if rows > u64::from(u32::MAX) {
        return Err(format!(
            "got too big rowsCount={rows}; it mustn't exceed {}",
            u32::MAX
        ));
    }
    let scale = next_varint("scale", &mut pos)?;
    let scale = i16::try_from(scale).map_err(|_| format!("scale={scale} is outside int16"))?;
    let [ts_type, value_type, precision_bits] = match src.get(pos..pos + 3) {
        Some(&[a, b, c]) => [a, b, c],
        _ => return Err("cannot unmarshal marshal types and precisionBits".into()),
    };
    pos += 3;
    let ts_data = bytes_field(src, &mut pos).ok_or("cannot read timestampsData")?;
    let values_data = bytes_field(src, &mut pos).ok_or("cannot read valuesData")?;
    if rows == 0 {
        return Err("invalid blockHeader: RowsCount in block header cannot be zero".into());
    }
    if rows > MAX_ROWS_PER_BLOCK {
        return Err(format!(
            "invalid blockHeader: too big RowsCount; got {rows}; cannot exceed {MAX_ROWS_PER_BLOCK}"
        ));
    }
    for mt in [ts_type, value_type] {
        if mt > 6 {
            return Err(format!(
                "invalid blockHeader: MarshalType should be in range [0..6]; got {mt}"
            ));
        }
    }
    if !(1..=64).contains(&precision_bits) {
        return Err(format!(
            "invalid blockHeader: precisionBits must be in the range [1...64]; got {precision_bits}"
        ));
    }
    let rows = rows as usize;
    let DecodedBlock {
        timestamps,
        values,
        mantissas,
        deltas,
        unzstd,
    } = out;
    decode_ints(ts_data, ts_type, min_ts, rows, timestamps, deltas, unzstd)
        .map_err(|e| format!("invalid data: cannot unmarshal timestamps: {e}"))?;
    if precision_bits < 64 {
        // Lossy timestamps may come back out of order; storage restores the order this way.
        if max_ts < min_ts {
            return Err(format!(
                "invalid data: maxTimestamp={max_ts} is smaller than minTimestamp={min_ts}"
            ));
        }
        ensure_non_decreasing(timestamps, min_ts, max_ts);
    }
    decode_ints(
        values_data,
        value_type,
        first_value,
        rows,
        mantissas,
        deltas,
        unzstd,
    )
    .map_err(|e| format!("invalid data: cannot unmarshal values: {e}"))?;
    decimal_to_float(mantissas, scale, values);
    Ok(src.len() - pos)
}

fn bytes_field<'a>(src: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let (n, k) = uvarint(&src[*pos..])?;
    let start = *pos + k;
    let end = start.checked_add(usize::try_from(n).ok()?)?;
    let b = src.get(start..end)?;
    *pos = end;
    Some(b)
}

/// Decode one column of `rows` int64s.
fn decode_ints(
    src: &[u8],
    marshal_type: u8,
    first: i64,
    rows: usize,
    dst: &mut Vec<i64>,
    deltas: &mut Vec<i64>,
    unzstd: &mut Vec<u8>,
) -> Result<(), String> {
    dst.clear();
    match marshal_type {
        // zstd, then nearest delta2 (1) or nearest delta (4).
        1 | 4 => {
            // Each of the rows-1 varints takes at most 10 bytes: anything larger is bad anyway.
            let cap = rows.saturating_mul(10) + 16;
            unzstd.clear();
            let data = zstd::bulk::decompress(src, cap)
                .map_err(|e| format!("cannot decompress zstd data: {e}"))?;
            *unzstd = data;
            if marshal_type == 1 {
                nearest_delta2(unzstd, first, rows, dst, deltas)
            } else {
                nearest_delta(unzstd, first, rows, dst, deltas)
            }
        }
        2 => {
            let (d, n) = varint(src).ok_or("cannot unmarshal delta value for delta const")?;
            if n != src.len() {
                return Err(format!(
                    "unexpected trailing data after delta const (d={d}): {} bytes",
                    src.len() - n
                ));
            }
            let mut v = first;
            for _ in 0..rows {
                dst.push(v);
                v = v.wrapping_add(d);
            }
            Ok(())
        }
        3 => {
            if !src.is_empty() {
                return Err(format!(
                    "unexpected data left in const encoding: {} bytes",
                    src.len()
                ));
            }
            dst.resize(rows, first);
            Ok(())
        }
        5 => nearest_delta2(src, first, rows, dst, deltas),
        6 => nearest_delta(src, first, rows, dst, deltas),
        other => Err(format!("unknown MarshalType={other}")),
    }
}

/// Exactly `n` zig-zag varints, and nothing after them.
fn varints(src: &[u8], n: usize, out: &mut Vec<i64>) -> Result<(), String> {
    out.clear();
    let mut pos = 0;
    for i in 0..n {
        let (v, k) = varint(&src[pos..])
            .ok_or_else(|| format!("cannot unmarshal varint #{i} out of {n}"))?;
        out.push(v);
        pos += k;
    }
    if pos != src.len() {
        return Err(format!(
            "unexpected tail left after unmarshaling {n} items: {} bytes",
            src.len() - pos
        ));
    }
    Ok(())
}

fn nearest_delta(
    src: &[u8],
    first: i64,
    rows: usize,
    dst: &mut Vec<i64>,
    deltas: &mut Vec<i64>,
) -> Result<(), String> {
    varints(src, rows - 1, deltas)?;
    let mut v = first;
    dst.push(v);
    for &d in deltas.iter() {
        v = v.wrapping_add(d);
        dst.push(v);
    }
    Ok(())
}

fn nearest_delta2(
    src: &[u8],
    first: i64,
    rows: usize,
    dst: &mut Vec<i64>,
    deltas: &mut Vec<i64>,
) -> Result<(), String> {
    if rows < 2 {
        // Storage never writes this form for a single row.
        return Err(format!("nearest delta2 needs at least 2 rows; got {rows}"));
    }
    varints(src, rows - 1, deltas)?;
    let mut v = first;
    dst.push(v);
    let mut d1 = deltas[0];
    v = v.wrapping_add(d1);
    dst.push(v);
    for &d2 in &deltas[1..] {
        d1 = d1.wrapping_add(d2);
        v = v.wrapping_add(d1);
        dst.push(v);
    }
    Ok(())
}

/// Pin the first timestamp to `min`, make the run non-decreasing, and pin the tail to `max`.
fn ensure_non_decreasing(a: &mut [i64], min: i64, max: i64) {
    let Some(first) = a.first_mut() else {
        return;
    };
    *first = min;
    let mut prev = min;
    for v in a.iter_mut().skip(1) {
        if *v < prev {
            *v = prev;
        }
        prev = *v;
    }
    for v in a.iter_mut().rev() {
        if *v > max {
            *v = max;
        } else {
            break;
        }
    }
    if let Some(last) = a.last_mut() {
        *last = max;
    }
}

/// `mantissa × 10^scale` with storage's arithmetic: a negative scale divides by 10^-scale (more
/// precise than multiplying by a fraction), and the reserved mantissas become ±Inf and the
/// staleness marker.
fn decimal_to_float(mantissas: &[i64], scale: i16, out: &mut Vec<f64>) {
    out.clear();
    if mantissas.iter().all(|&m| m == 0) {
        out.resize(mantissas.len(), 0.0);
        return;
    }
    let e = i32::from(scale);
    let e10 = pow10(e.abs());
    out.extend(mantissas.iter().map(|&m| match m {
        MANTISSA_INF => f64::INFINITY,
        MANTISSA_NEG_INF => f64::NEG_INFINITY,
        MANTISSA_STALE_NAN => f64::from_bits(STALE_NAN_BITS),
        m if e == 0 => m as f64,
        m if e < 0 => m as f64 / e10,
        m => m as f64 * e10,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_bad_names() {
        let (mut t, mut s) = (Vec::new(), Vec::new());
        unescape_name(b"m\x000x\x01k\x002\x01v\x001\x01", &mut t, &mut s).unwrap();
        let parts: Vec<&[u8]> = s.iter().map(|&(a, b)| &t[a..b]).collect();
        assert_eq!(parts, [&b"m\x00x"[..], b"k\x02", b"v\x01"]);
        unescape_name(b"\x01", &mut t, &mut s).unwrap();
        assert_eq!(s.len(), 1);
        for bad in [
            &b""[..],
            b"m",
            b"m\x01k\x01",
            b"m\x003\x01",
            b"m\x00\x01",
            b"m\x01k\x01v",
        ] {
            assert!(unescape_name(bad, &mut t, &mut s).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reserved_mantissas_and_scales() {
        let mut out = Vec::new();
        decimal_to_float(
            &[1, -225, MANTISSA_INF, MANTISSA_NEG_INF, MANTISSA_STALE_NAN],
            -2,
            &mut out,
        );
        assert_eq!(out[0], 0.01);
        assert_eq!(out[1], -2.25);
        assert_eq!(out[2], f64::INFINITY);
        assert_eq!(out[3], f64::NEG_INFINITY);
        assert_eq!(out[4].to_bits(), STALE_NAN_BITS);
        decimal_to_float(&[0, 0], 400, &mut out);
        assert_eq!(out, [0.0, 0.0]);
        decimal_to_float(&[3, 0], 2, &mut out);
        assert_eq!(out, [300.0, 0.0]);
    }

    #[test]
    fn lossy_timestamps_are_put_back_in_order() {
        let mut a = [5, 3, 9, 8, 20];
        ensure_non_decreasing(&mut a, 4, 10);
        assert_eq!(a, [4, 4, 9, 9, 10]);
    }

    #[test]
    fn varint_overflow_is_refused() {
        assert_eq!(uvarint(&[0x80; 10]), None);
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(
            uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Some((u64::MAX, 10))
        );
        assert_eq!(varint(&[0x03]), Some((-2, 1)));
    }
}
