//! The row encoding inside a block (spec: row-encoding.md).
//!
//! ```text
//! block := row*
//! row   := varuint(len(mnraw)) | mnraw | i64be(timestamp_ms) | u64be(value bits)
//! mnraw := u32be(accountID) | u32be(projectID) | (u16be(len) name u16be(len) value)*
//! ```
//! Encoding never escapes, never sorts and never fails: names and values longer than 65535
//! bytes are rejected earlier by the label limits. Decoding checks every length against the
//! bytes actually present, so a hostile block can neither panic nor make us allocate.

use crate::model::{Label, Sample, Tenant, METRIC_NAME_LABEL};

/// Bytes of a row besides its name: timestamp and value.
pub const ROW_TAIL_LEN: usize = 16;

/// Append the raw metric name of a series: tenant, then each label with a non-empty value.
/// A label named `__name__` is written with an empty name, as vminsert does.
pub fn encode_metric_name(buf: &mut Vec<u8>, tenant: Tenant, labels: &[Label<'_>]) {
    buf.extend_from_slice(&tenant.account_id.to_be_bytes());
    buf.extend_from_slice(&tenant.project_id.to_be_bytes());
    for label in labels {
        if label.value.is_empty() {
            continue;
        }
        let name = if label.name == METRIC_NAME_LABEL {
            &b""[..]
        } else {
            label.name
        };
        put_str16(buf, name);
        put_str16(buf, label.value);
    }
}

/// Append the shard key of a series: like the raw metric name but every label is kept as it
/// is (empty values included, `__name__` not renamed), because that is what vminsert hashes
/// for protocols that hash before they encode (sharding-and-replication.md §2).
pub fn encode_series_key(buf: &mut Vec<u8>, tenant: Tenant, labels: &[Label<'_>]) {
    buf.extend_from_slice(&tenant.account_id.to_be_bytes());
    buf.extend_from_slice(&tenant.project_id.to_be_bytes());
    for label in labels {
        put_str16(buf, label.name);
        put_str16(buf, label.value);
    }
}

fn put_str16(buf: &mut Vec<u8>, s: &[u8]) {
    // Lengths above u16 are filtered by label limits before encoding; truncating the prefix
    // here would corrupt the stream, so clamp the bytes as well to keep the frame parseable.
    let n = s.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(n as u16).to_be_bytes());
    buf.extend_from_slice(&s[..n]);
}

/// Append one row to a block.
pub fn encode_row(buf: &mut Vec<u8>, metric_name: &[u8], sample: Sample) {
    put_uvarint(buf, metric_name.len() as u64);
    buf.extend_from_slice(metric_name);
    buf.extend_from_slice(&sample.timestamp_ms.to_be_bytes());
    buf.extend_from_slice(&sample.value_bits.to_be_bytes());
}

/// The encoded size of a row with a name of `name_len` bytes.
pub fn row_len(name_len: usize) -> usize {
    uvarint_len(name_len as u64) + name_len + ROW_TAIL_LEN
}

pub fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

pub fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Read an unsigned LEB128 value. Returns the value and the bytes consumed.
pub fn get_uvarint(buf: &[u8]) -> Result<(u64, usize), RowError> {
    let mut v: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err(RowError::BadVarint);
        }
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok((v, i + 1));
        }
    }
    if buf.len() < 10 {
        Err(RowError::Truncated)
    } else {
        Err(RowError::BadVarint)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowError {
    /// The buffer ends inside a row.
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    BadVarint,
    /// A raw metric name shorter than its 8 tenant bytes, or a label running past its end.
    BadMetricName,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RowError::Truncated => "row truncated",
            RowError::BadVarint => "invalid varint in row",
            RowError::BadMetricName => "invalid raw metric name",
        })
    }
}

impl std::error::Error for RowError {}

/// One decoded row, borrowing its name from the block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowRef<'a> {
    pub metric_name: &'a [u8],
    pub sample: Sample,
}

/// Decode the first row of `buf`; returns it and the bytes it took.
pub fn decode_row(buf: &[u8]) -> Result<(RowRef<'_>, usize), RowError> {
    let (name_len, n) = get_uvarint(buf)?;
    let rest = &buf[n..];
    let name_len = usize::try_from(name_len).map_err(|_| RowError::Truncated)?;
    if rest.len() < ROW_TAIL_LEN || rest.len() - ROW_TAIL_LEN < name_len {
        return Err(RowError::Truncated);
    }
    let metric_name = &rest[..name_len];
    let tail = &rest[name_len..name_len + ROW_TAIL_LEN];
    let timestamp_ms = i64::from_be_bytes(tail[..8].try_into().expect("8 bytes"));
    let value_bits = u64::from_be_bytes(tail[8..].try_into().expect("8 bytes"));
    Ok((
        RowRef {
            metric_name,
            sample: Sample::from_bits(timestamp_ms, value_bits),
        },
        n + name_len + ROW_TAIL_LEN,
    ))
}

/// Iterate over the rows of a block. Stops at the first error, which it yields once.
pub fn decode_block(block: &[u8]) -> BlockRows<'_> {
    BlockRows {
        rest: block,
        failed: false,
    }
}

pub struct BlockRows<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Iterator for BlockRows<'a> {
    type Item = Result<RowRef<'a>, RowError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match decode_row(self.rest) {
            Ok((row, n)) => {
                self.rest = &self.rest[n..];
                Some(Ok(row))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Split a raw metric name into its tenant and labels. The labels borrow from `mnraw`.
pub fn decode_metric_name(mnraw: &[u8]) -> Result<(Tenant, MetricNameLabels<'_>), RowError> {
    if mnraw.len() < 8 {
        return Err(RowError::BadMetricName);
    }
    let account_id = u32::from_be_bytes(mnraw[..4].try_into().expect("4 bytes"));
    let project_id = u32::from_be_bytes(mnraw[4..8].try_into().expect("4 bytes"));
    Ok((
        Tenant {
            account_id,
            project_id,
        },
        MetricNameLabels {
            rest: &mnraw[8..],
            failed: false,
        },
    ))
}

pub struct MetricNameLabels<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> MetricNameLabels<'a> {
    fn take_str16(&mut self) -> Option<&'a [u8]> {
        if self.rest.len() < 2 {
            return None;
        }
        let n = u16::from_be_bytes([self.rest[0], self.rest[1]]) as usize;
        if self.rest.len() - 2 < n {
            return None;
        }
        let s = &self.rest[2..2 + n];
        self.rest = &self.rest[2 + n..];
        Some(s)
    }
}

impl<'a> Iterator for MetricNameLabels<'a> {
    type Item = Result<Label<'a>, RowError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let label = self.take_str16().and_then(|name| {
            Some(Label {
                name,
                value: self.take_str16()?,
            })
        });
        match label {
            Some(l) => Some(Ok(l)),
            None => {
                self.failed = true;
                Some(Err(RowError::BadMetricName))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::STALE_NAN_BITS;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn example_1_up_job_node() {
        let mut mn = Vec::new();
        encode_metric_name(
            &mut mn,
            Tenant::new(0, 0),
            &[Label::metric_name(b"up"), Label::new(b"job", b"node")],
        );
        let mut row = Vec::new();
        encode_row(&mut row, &mn, Sample::new(1_700_000_000_000, 1.0));
        assert_eq!(
            hex(&row),
            "19000000000000000000000002757000036a6f6200046e6f64650000018bcfe568003ff0000000000000"
        );
        assert_eq!(row.len(), row_len(mn.len()));
    }

    #[test]
    fn example_2_remote_write_labels() {
        let labels = [
            Label::new(b"__name__", b"http_requests_total"),
            Label::new(b"method", b"GET"),
            Label::new(b"code", b"200"),
            Label::new(b"empty", b""),
        ];
        let mut mn = Vec::new();
        encode_metric_name(&mut mn, Tenant::new(42, 7), &labels);
        let mut row = Vec::new();
        encode_row(&mut row, &mn, Sample::new(1_700_000_015_000, 1027.0));
        assert_eq!(row.len(), 72);
        assert_eq!(
            hex(&row),
            concat!(
                "37",
                "0000002a000000070000",
                "0013687474705f72657175657374735f746f74616c",
                "00066d6574686f64000347455400",
                "04636f64650003323030",
                "0000018bcfe5a298",
                "40900c0000000000"
            )
        );
    }

    #[test]
    fn example_3_two_byte_varint_control_bytes_stale_nan() {
        let host = vec![b'h'; 100];
        let labels = [
            Label::metric_name(b"temp"),
            Label::new(b"note", b"a\x00b\x01c\x02"),
            Label::new(b"host", &host),
        ];
        let mut mn = Vec::new();
        encode_metric_name(&mut mn, Tenant::new(1, 0), &labels);
        assert_eq!(mn.len(), 138);
        let mut row = Vec::new();
        encode_row(&mut row, &mn, Sample::from_bits(-1, STALE_NAN_BITS));
        assert_eq!(row.len(), 156);
        assert_eq!(&row[..2], &[0x8a, 0x01]);
        assert_eq!(
            &row[140..],
            &hex_to_bytes("ffffffffffffffff7ff0000000000002")[..]
        );
        let (back, n) = decode_row(&row).unwrap();
        assert_eq!(n, row.len());
        assert_eq!(back.metric_name, &mn[..]);
        assert_eq!(back.sample.value_bits, STALE_NAN_BITS);
        let (tenant, labels_back) = decode_metric_name(back.metric_name).unwrap();
        assert_eq!(tenant, Tenant::new(1, 0));
        let got: Vec<_> = labels_back.collect::<Result<_, _>>().unwrap();
        assert_eq!(got, labels.to_vec());
    }

    #[test]
    fn series_key_keeps_dunder_name_and_empty_values() {
        let labels = [Label::new(b"__name__", b"up"), Label::new(b"e", b"")];
        let mut key = Vec::new();
        encode_series_key(&mut key, Tenant::new(0, 0), &labels);
        assert_eq!(
            hex(&key),
            "000000000000000000085f5f6e616d655f5f00027570000165".to_string() + "0000"
        );
    }

    #[test]
    fn truncated_rows_are_errors() {
        let mut row = Vec::new();
        encode_row(&mut row, b"\0\0\0\0\0\0\0\0", Sample::new(1, 1.0));
        for cut in 0..row.len() {
            assert!(decode_row(&row[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(decode_row(&[0xff; 11]).unwrap_err(), RowError::BadVarint);
        let block: Vec<_> = decode_block(&row[..row.len() - 1]).collect();
        assert_eq!(block, vec![Err(RowError::Truncated)]);
        assert!(decode_metric_name(b"\0\0\0").is_err());
        let bad: Vec<_> = decode_metric_name(b"\0\0\0\0\0\0\0\0\0\x05ab")
            .unwrap()
            .1
            .collect();
        assert_eq!(bad, vec![Err(RowError::BadMetricName)]);
    }

    fn hex_to_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
