//! What the golden-vector tests of the core share: reading a vector's cluster and decoding the
//! percent-escapes of its URLs.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use serde_json::Value;
use shardgate_core::route::{Batch, Placement, PlacementKind};
use shardgate_core::wire::row::decode_block;

/// The storage nodes of a vector as the core places onto them.
pub struct VectorCluster {
    pub placement: Placement,
    /// Our node index → the vector's node number (its position in `storage_nodes`).
    pub to_vector_node: Vec<usize>,
    pub replication_factor: usize,
}

/// Rendezvous placement over the vector's `-storageNode` flag as it was given.
pub fn vector_cluster(v: &Value) -> VectorCluster {
    let flag_nodes: Vec<String> = v["storage_node_flag"]
        .as_str()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let addrs: Vec<&str> = v["storage_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let placement = Placement::new(&flag_nodes, PlacementKind::Rendezvous, 0);
    let to_vector_node = placement
        .nodes()
        .iter()
        .map(|n| addrs.iter().position(|a| a == n).unwrap())
        .collect();
    VectorCluster {
        placement,
        to_vector_node,
        replication_factor: v["replication_factor"].as_u64().unwrap() as usize,
    }
}

/// A row as the vectors record it: node number, raw metric name (hex), timestamp, value bits (hex).
pub type PlacedRow = (usize, String, i64, String);

impl VectorCluster {
    /// Every row of `batch` on its home node and its replicas, sorted, numbered as in the vector.
    pub fn placed_rows(&self, batch: &Batch) -> Vec<PlacedRow> {
        let mut out = Vec::new();
        for (node, node_rows) in batch.nodes().iter().enumerate() {
            for row in decode_block(&node_rows.bytes) {
                let row = row.unwrap();
                for replica in self.placement.replicas(node, self.replication_factor) {
                    out.push((
                        self.to_vector_node[replica],
                        hex::encode(row.metric_name),
                        row.sample.timestamp_ms,
                        format!("{:016x}", row.sample.value_bits),
                    ));
                }
            }
        }
        out.sort();
        out
    }
}

/// The vector's `expected_rows`, sorted.
pub fn expected_placed_rows(v: &Value) -> Vec<PlacedRow> {
    let mut rows: Vec<PlacedRow> = v["expected_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["node"].as_u64().unwrap() as usize,
                r["name_hex"].as_str().unwrap().to_string(),
                r["ts"].as_i64().unwrap(),
                r["value_bits"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

/// `%XX` escapes decoded; everything else kept.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}
