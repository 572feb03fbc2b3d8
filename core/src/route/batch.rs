//! One request's rows, encoded and sorted by home node: what vminsert calls an insert context.
//!
//! The ingest pipeline calls [`Batch::add_series`] per series with its final labels; the batch
//! encodes the raw metric name once, hashes the shard key once, picks the home node and appends
//! one encoded row per sample to that node's buffer. The router then takes whole node buffers,
//! so the hot path is one encode, one hash and a memcpy per sample.

use super::placement::{series_hash, Placement};
use crate::model::{Label, Sample, Tenant};
use crate::wire::row::{encode_metric_name, encode_row, encode_series_key};

/// Which bytes a protocol hashes to place a series (sharding-and-replication.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShardKey {
    /// Hash the labels as the client gave them, a literal `__name__` included: remote write
    /// and OpenTelemetry hash before they encode.
    AsGiven,
    /// Hash the raw metric name as encoded: every other protocol encodes before it hashes.
    MetricName,
}

/// Encoded rows waiting for one storage node.
#[derive(Clone, Debug, Default)]
pub struct NodeRows {
    pub bytes: Vec<u8>,
    pub rows: u64,
}

#[derive(Debug)]
pub struct Batch {
    nodes: Vec<NodeRows>,
    /// Metrics metadata rows, grouped by home node the same way; created on first use because
    /// most requests carry none.
    metadata: Option<Box<Batch>>,
    metric_name: Vec<u8>,
    key: Vec<u8>,
    rows: u64,
    bytes: usize,
}

impl Batch {
    pub fn new(node_count: usize) -> Batch {
        Batch {
            nodes: vec![NodeRows::default(); node_count.max(1)],
            metadata: None,
            metric_name: Vec::with_capacity(256),
            key: Vec::new(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Add a series and its samples. Returns false, adding nothing, for a series that has no
    /// label left to encode (vminsert skips those silently).
    pub fn add_series(
        &mut self,
        placement: &Placement,
        tenant: Tenant,
        labels: &[Label<'_>],
        shard_key: ShardKey,
        samples: &[Sample],
    ) -> bool {
        self.metric_name.clear();
        encode_metric_name(&mut self.metric_name, tenant, labels);
        if self.metric_name.len() <= 8 {
            return false;
        }
        let node = if placement.len() <= 1 {
            0
        } else {
            let h = match shard_key {
                ShardKey::MetricName => series_hash(&self.metric_name),
                ShardKey::AsGiven => {
                    self.key.clear();
                    encode_series_key(&mut self.key, tenant, labels);
                    series_hash(&self.key)
                }
            };
            placement.primary(h)
        };
        let out = &mut self.nodes[node];
        let before = out.bytes.len();
        for &s in samples {
            encode_row(&mut out.bytes, &self.metric_name, s);
        }
        out.rows += samples.len() as u64;
        self.rows += samples.len() as u64;
        self.bytes += out.bytes.len() - before;
        true
    }

    /// Add one metrics metadata entry (row-encoding.md §6). Its shard key is the whole
    /// encoded row (sharding-and-replication.md §2). Returns false, adding nothing, when a
    /// field is longer than 65535 bytes.
    pub fn add_metadata(
        &mut self,
        placement: &Placement,
        tenant: Tenant,
        metric_type: u32,
        family: &[u8],
        help: &[u8],
        unit: &[u8],
    ) -> bool {
        if [family, help, unit]
            .iter()
            .any(|f| f.len() > usize::from(u16::MAX))
        {
            return false;
        }
        let node_count = self.nodes.len();
        let md = self
            .metadata
            .get_or_insert_with(|| Box::new(Batch::new(node_count)));
        let row = &mut md.metric_name;
        row.clear();
        row.extend_from_slice(&tenant.account_id.to_be_bytes());
        row.extend_from_slice(&tenant.project_id.to_be_bytes());
        row.extend_from_slice(&metric_type.to_be_bytes());
        for field in [family, help, unit] {
            row.extend_from_slice(&(field.len() as u16).to_be_bytes());
            row.extend_from_slice(field);
        }
        let node = if placement.len() <= 1 {
            0
        } else {
            placement.primary(series_hash(row))
        };
        let out = &mut md.nodes[node];
        out.bytes.extend_from_slice(&md.metric_name);
        out.rows += 1;
        md.rows += 1;
        md.bytes += md.metric_name.len();
        true
    }

    /// The metadata rows of this batch, if any were added.
    pub fn metadata_mut(&mut self) -> Option<&mut Batch> {
        self.metadata.as_deref_mut().filter(|m| !m.is_empty())
    }

    /// Rows in the batch, over all nodes.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Encoded bytes in the batch, over all nodes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// No metric rows and no metadata left.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 && self.metadata.as_ref().is_none_or(|m| m.rows == 0)
    }

    /// The rows waiting for each home node, by node index.
    pub fn nodes(&self) -> &[NodeRows] {
        &self.nodes
    }

    /// Take node `i`'s rows, leaving an empty buffer (its capacity is handed over too; the
    /// router gives buffers back through [`Batch::put_node`]).
    pub fn take_node(&mut self, i: usize) -> NodeRows {
        let taken = std::mem::take(&mut self.nodes[i]);
        self.rows -= taken.rows;
        self.bytes -= taken.bytes.len();
        taken
    }

    /// Give node `i` a buffer back after [`Batch::take_node`]: rows the router could not place
    /// yet (they stay in the batch for the next attempt), or an emptied buffer whose capacity
    /// the next request reuses.
    pub fn put_node(&mut self, i: usize, rows: NodeRows) {
        self.rows += rows.rows;
        self.bytes += rows.bytes.len();
        let slot = &mut self.nodes[i];
        if slot.bytes.is_empty() && slot.rows == 0 {
            *slot = rows;
        } else {
            slot.bytes.extend_from_slice(&rows.bytes);
            slot.rows += rows.rows;
        }
    }

    /// Empty the batch, keeping its allocations for the next request.
    pub fn clear(&mut self) {
        for n in &mut self.nodes {
            n.bytes.clear();
            n.rows = 0;
        }
        self.rows = 0;
        self.bytes = 0;
        if let Some(m) = &mut self.metadata {
            m.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::placement::PlacementKind;

    fn three() -> Placement {
        let n: Vec<String> = ["10.0.0.1:8400", "10.0.0.2:8400", "10.0.0.3:8400"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Placement::new(&n, PlacementKind::Rendezvous, 0)
    }

    #[test]
    fn text_and_remote_write_place_the_same_series_differently() {
        // Examples A and B of the sharding spec: same series, different shard keys.
        let p = three();
        let mut b = Batch::new(3);
        let text = [
            Label::metric_name(b"up"),
            Label::new(b"job", b"node"),
            Label::new(b"instance", b"host1:9100"),
        ];
        let rw = [
            Label::new(b"__name__", b"up"),
            Label::new(b"job", b"node"),
            Label::new(b"instance", b"host1:9100"),
        ];
        assert!(b.add_series(
            &p,
            Tenant::default(),
            &text,
            ShardKey::MetricName,
            &[Sample::new(1, 1.0)]
        ));
        assert!(b.add_series(
            &p,
            Tenant::default(),
            &rw,
            ShardKey::AsGiven,
            &[Sample::new(2, 1.0), Sample::new(3, 1.0)]
        ));
        assert_eq!(b.nodes()[1].rows, 1);
        assert_eq!(b.nodes()[2].rows, 2);
        assert_eq!(b.rows(), 3);
        // Both encode to the same raw metric name.
        assert_eq!(b.nodes()[1].bytes[..48], b.nodes()[2].bytes[..48]);
        let taken = b.take_node(2);
        assert_eq!((taken.rows, b.rows()), (2, 1));
        assert_eq!(b.bytes(), b.nodes()[1].bytes.len());
    }

    #[test]
    fn metadata_row_and_home_match_spec_example_f() {
        let p = three();
        let mut b = Batch::new(3);
        assert!(b.add_metadata(
            &p,
            Tenant::default(),
            1,
            b"http_requests_total",
            b"Total requests",
            b""
        ));
        let md = b.metadata_mut().unwrap();
        assert_eq!(md.rows(), 1);
        let want = "0000000000000000000000010013687474705f72657175657374735f746f74616c000e546f74616c2072657175657374730000";
        let got: String = md.nodes()[1]
            .bytes
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect();
        assert_eq!(got, want);
        assert!(!b.is_empty());
        assert!(!b.add_metadata(&p, Tenant::default(), 1, &vec![b'x'; 70000], b"", b""));
    }

    #[test]
    fn series_without_labels_is_skipped() {
        let p = three();
        let mut b = Batch::new(3);
        assert!(!b.add_series(
            &p,
            Tenant::default(),
            &[Label::new(b"a", b"")],
            ShardKey::MetricName,
            &[Sample::new(1, 1.0)]
        ));
        assert!(b.is_empty());
    }
}
