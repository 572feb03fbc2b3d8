//! Every golden placement vector: the core encodes each recorded series to the same bytes and
//! sends it to exactly the storage nodes the real vminsert did.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use shardgate_core::route::{series_hash, Placement, PlacementKind};
use shardgate_core::wire::row::{decode_metric_name, encode_metric_name};
use shardgate_core::Label;

fn vectors_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/vectors")
        .join(sub)
}

fn check_dir(sub: &str, kind: PlacementKind) {
    let dir = vectors_dir(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 27,
        "expected the placement vectors in {}",
        dir.display()
    );
    let mut series_checked = 0;
    for f in &files {
        series_checked += check_vector(f, kind);
    }
    assert!(
        series_checked > 27 * 100,
        "only {series_checked} series checked"
    );
}

fn check_vector(path: &Path, kind: PlacementKind) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let name = path.file_name().unwrap().to_string_lossy();
    let flag: Vec<String> = v["storage_node_flag"]
        .as_str()
        .unwrap()
        .split(',')
        .map(String::from)
        .collect();
    let addrs: Vec<String> = v["storage_nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect();
    let rf = v["replication_factor"].as_u64().unwrap() as usize;
    let placement = Placement::new(&flag, kind, 0);
    // The vector numbers nodes by their position in storage_nodes; map our index to that.
    let to_vector_node: Vec<usize> = placement
        .nodes()
        .iter()
        .map(|n| addrs.iter().position(|a| a == n).unwrap())
        .collect();

    // Each series (one name, one sample here) and the set of nodes that received it.
    let mut received: BTreeMap<(String, i64, String), BTreeSet<usize>> = BTreeMap::new();
    for row in v["expected_rows"].as_array().unwrap() {
        let key = (
            row["name_hex"].as_str().unwrap().to_string(),
            row["ts"].as_i64().unwrap(),
            row["value_bits"].as_str().unwrap().to_string(),
        );
        let node = row["node"].as_u64().unwrap() as usize;
        assert!(
            received.entry(key).or_default().insert(node),
            "{name}: duplicate row on one node"
        );
    }
    for ((name_hex, _, _), nodes) in &received {
        let mnraw = hex::decode(name_hex).unwrap();
        let (tenant, labels) = decode_metric_name(&mnraw).unwrap();
        let labels: Vec<Label> = labels.collect::<Result<_, _>>().unwrap();
        let mut encoded = Vec::new();
        encode_metric_name(&mut encoded, tenant, &labels);
        assert_eq!(
            hex::encode(&encoded),
            *name_hex,
            "{name}: re-encoding differs"
        );

        let primary = placement.primary(series_hash(&encoded));
        let ours: BTreeSet<usize> = placement
            .replicas(primary, rf)
            .map(|i| to_vector_node[i])
            .collect();
        assert_eq!(
            &ours, nodes,
            "{name}: series {name_hex} placed on {ours:?}, vminsert used {nodes:?}"
        );
    }
    received.len()
}

#[test]
fn rendezvous_vectors() {
    check_dir("placement/rendezvous", PlacementKind::Rendezvous);
}

#[test]
fn jump_vectors() {
    check_dir("placement/jump", PlacementKind::Jump);
}
