//! What flows through everything: tenants, labels and samples.

/// A tenant of the cluster: `accountID:projectID`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tenant {
    pub account_id: u32,
    pub project_id: u32,
}

impl Tenant {
    pub const fn new(account_id: u32, project_id: u32) -> Tenant {
        Tenant {
            account_id,
            project_id,
        }
    }
}

impl std::fmt::Display for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.account_id, self.project_id)
    }
}

/// The label name that carries the metric name in Prometheus-style label sets. On the wire the
/// metric name is a label with an empty name instead.
pub const METRIC_NAME_LABEL: &[u8] = b"__name__";

/// One label of a series. Names and values are raw bytes: the wire has no escaping and the
/// parsers hand over whatever bytes the client sent (after unescaping the format's own syntax).
/// An empty name means "the metric name".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
}

impl<'a> Label<'a> {
    pub const fn new(name: &'a [u8], value: &'a [u8]) -> Label<'a> {
        Label { name, value }
    }

    /// The metric name label in its on-wire form (empty name).
    pub const fn metric_name(value: &'a [u8]) -> Label<'a> {
        Label { name: b"", value }
    }
}

/// Hand an emptied label vector's allocation from one borrow lifetime to another, so parsers
/// can keep one scratch vector across lines without holding a borrow of the previous line. The
/// map never runs (the vector is cleared first) and the standard library reuses the buffer for
/// a same-layout in-place collect.
pub fn recycle_labels<'b>(mut v: Vec<Label<'_>>) -> Vec<Label<'b>> {
    v.clear();
    v.into_iter().map(|_| Label::new(b"", b"")).collect()
}

/// An owned label, for places that must outlive the request buffer (relabeling output, tests).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OwnedLabel {
    pub name: Vec<u8>,
    pub value: Vec<u8>,
}

impl OwnedLabel {
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> OwnedLabel {
        OwnedLabel {
            name: name.into(),
            value: value.into(),
        }
    }

    pub fn as_label(&self) -> Label<'_> {
        Label {
            name: &self.name,
            value: &self.value,
        }
    }
}

/// One sample: milliseconds since the Unix epoch and the exact bits of an f64. Keeping the
/// bits (not the float) guarantees NaN payloads such as Prometheus' staleness marker survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub value_bits: u64,
}

impl Sample {
    pub const fn new(timestamp_ms: i64, value: f64) -> Sample {
        Sample {
            timestamp_ms,
            value_bits: value.to_bits(),
        }
    }

    pub const fn from_bits(timestamp_ms: i64, value_bits: u64) -> Sample {
        Sample {
            timestamp_ms,
            value_bits,
        }
    }

    pub const fn value(&self) -> f64 {
        f64::from_bits(self.value_bits)
    }
}

/// Prometheus' staleness marker, a NaN with a payload that storage keeps.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
