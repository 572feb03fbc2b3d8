//! What the golden-vector tests of the core share: reading a vector's cluster and decoding the
//! percent-escapes of its URLs.

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use serde_json::Value;
use shardgate_core::route::{Placement, PlacementKind};

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
