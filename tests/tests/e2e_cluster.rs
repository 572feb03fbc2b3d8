//! shardgate + 3 shardgate-node processes on loopback: every row pushed over HTTP comes back
//! from the storage nodes with exact labels, timestamps and value bits, on the node the
//! placement picks; and the embedded mode serves the same round trip by itself.

use std::collections::BTreeSet;
use std::time::Duration;

use shardgate_core::model::Label;
use shardgate_core::route::{series_hash, Placement, PlacementKind};
use shardgate_core::wire::row::encode_metric_name;
use shardgate_core::Tenant;
use shardgate_e2e::{eventually, get, http, temp_dir, Proc};

struct Node {
    _proc: Proc,
    rpc: String,
    web: String,
}

fn start_node(dir: &std::path::Path) -> Node {
    let mut p = Proc::start(
        "shardgate-node",
        &[
            "-vminsertAddr=127.0.0.1:0".into(),
            "-httpListenAddr=127.0.0.1:0".into(),
            format!("-storageDataPath={}", dir.display()),
        ],
    );
    let rpc = p.wait_for(
        "accepting vminsert connections at ",
        Duration::from_secs(30),
    );
    let web = p.wait_for(
        "serving the stand-in HTTP API at http://",
        Duration::from_secs(30),
    );
    Node { _proc: p, rpc, web }
}

/// (name_hex, ts, value_bits) of every row a stand-in holds.
fn raw_rows(web: &str) -> BTreeSet<(String, i64, String)> {
    let (status, body) = get(web, "/api/v1/export/raw");
    assert_eq!(status, 200);
    body.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["name_hex"].as_str().unwrap().to_string(),
                v["ts"].as_i64().unwrap(),
                v["value_bits"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn text_body(n: usize) -> (String, Vec<(Vec<u8>, i64, u64)>) {
    let mut body = String::new();
    let mut want = Vec::new();
    for i in 0..n {
        // Short decimals convert exactly in every float parser (longer ones may differ by an
        // ULP from Go's, spec formats/common.md §5.1).
        let text = match i % 4 {
            0 => format!("{}.5", i),
            1 => format!("-{i}"),
            2 => "1e300".to_string(),
            _ => format!("{}.25", i),
        };
        let value: f64 = text.parse().unwrap();
        let ts = 1_700_000_000_000 + i as i64;
        body.push_str(&format!(
            "e2e_metric{{series=\"s{i}\",job=\"e2e\"}} {text} {ts}\n"
        ));
        let mut mn = Vec::new();
        let series = format!("s{i}");
        let labels = [
            Label::metric_name(b"e2e_metric"),
            Label::new(b"series", series.as_bytes()),
            Label::new(b"job", b"e2e"),
        ];
        encode_metric_name(&mut mn, Tenant::new(7, 9), &labels);
        want.push((mn, ts, value.to_bits()));
    }
    (body, want)
}

#[test]
fn rows_pushed_over_http_come_back_exactly_from_three_nodes() {
    let base = temp_dir("cluster");
    let nodes: Vec<Node> = (0..3)
        .map(|i| start_node(&base.join(format!("n{i}"))))
        .collect();
    let storage_flag = nodes
        .iter()
        .map(|n| n.rpc.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut gw = Proc::start(
        "shardgate",
        &[
            format!("-storageNode={storage_flag}"),
            "-httpListenAddr=127.0.0.1:0".into(),
        ],
    );
    let addr = gw.wait_for("started server at http://", Duration::from_secs(30));
    // Push only once every node is connected, so no row is rerouted away from its home node.
    let all_up = eventually(Duration::from_secs(20), || {
        let (_, m) = get(&addr, "/metrics");
        (m.matches("vm_rpc_vmstorage_is_reachable{").count() == 3
            && !m
                .lines()
                .any(|l| l.starts_with("vm_rpc_vmstorage_is_reachable{") && l.ends_with(" 0")))
        .then_some(())
    });
    assert!(all_up.is_some(), "storage nodes never became reachable");

    let (body, want) = text_body(300);
    let (status, resp) = http(
        "POST",
        &addr,
        "/insert/7:9/prometheus/api/v1/import/prometheus",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&resp));

    // Where each row must land: rendezvous over the -storageNode strings, text import hashes
    // the raw metric name.
    let strings: Vec<String> = nodes.iter().map(|n| n.rpc.clone()).collect();
    let placement = Placement::new(&strings, PlacementKind::Rendezvous, 0);
    let mut expected: Vec<BTreeSet<(String, i64, String)>> = vec![BTreeSet::new(); 3];
    for (mn, ts, bits) in &want {
        let home = &placement.nodes()[placement.primary(series_hash(mn))];
        let i = strings.iter().position(|s| s == home).unwrap();
        expected[i].insert((hex::encode(mn), *ts, format!("{bits:016x}")));
    }
    assert!(
        expected.iter().all(|e| !e.is_empty()),
        "300 series should touch every node"
    );
    for (i, node) in nodes.iter().enumerate() {
        let got = eventually(Duration::from_secs(20), || {
            let r = raw_rows(&node.web);
            (r.len() >= expected[i].len()).then_some(r)
        })
        .unwrap_or_else(|| raw_rows(&node.web));
        assert_eq!(got, expected[i], "node {i} holds the wrong rows");
    }

    // Remote write must be refused with 400 for a garbage body, and the gateway keeps serving.
    let (status, _) = http(
        "POST",
        &addr,
        "/insert/0/prometheus/api/v1/write",
        &[],
        b"not snappy",
    );
    assert_eq!(status, 400);
    let (status, metrics) = get(&addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("vm_rows_inserted_total{type=\"prometheus\"} 300"),
        "{metrics}"
    );
    assert!(metrics.contains("process_resident_memory_bytes"));

    // Graceful shutdown: exit 0.
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn embedded_mode_round_trip() {
    let dir = temp_dir("embedded");
    let mut gw = Proc::start(
        "shardgate",
        &[
            "-httpListenAddr=127.0.0.1:0".into(),
            format!("-storageDataPath={}", dir.display()),
        ],
    );
    let addr = gw.wait_for("started server at http://", Duration::from_secs(30));
    gw.wait_for("embedded stand-in storage nodes", Duration::from_secs(10));
    let (body, want) = text_body(40);
    let (status, _) = http(
        "POST",
        &addr,
        "/insert/7:9/prometheus/api/v1/import/prometheus",
        &[],
        body.as_bytes(),
    );
    assert_eq!(status, 204);
    let want: BTreeSet<_> = want
        .iter()
        .map(|(mn, ts, b)| (hex::encode(mn), *ts, format!("{b:016x}")))
        .collect();
    let got = eventually(Duration::from_secs(20), || {
        let r = raw_rows(&addr);
        (r.len() >= want.len()).then_some(r)
    })
    .unwrap_or_else(|| raw_rows(&addr));
    assert_eq!(got, want);
    let (_, export) = get(&addr, "/api/v1/export");
    assert_eq!(export.lines().count(), 40);
    assert!(export.contains("\"__name__\":\"e2e_metric\""));
    gw.signal("INT");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn http_routes_and_statuses() {
    let dir = temp_dir("routes");
    let mut gw = Proc::start(
        "shardgate",
        &[
            "-httpListenAddr=127.0.0.1:0".into(),
            format!("-storageDataPath={}", dir.display()),
        ],
    );
    let addr = gw.wait_for("started server at http://", Duration::from_secs(30));
    assert_eq!(get(&addr, "/health"), (200, "OK".to_string()));
    let (s, b) = get(&addr, "/no/such/path");
    assert_eq!(s, 400);
    assert!(b.contains("unsupported path requested"), "{b}");
    let (s, b) = http(
        "POST",
        &addr,
        "/insert/1:2:3/prometheus/api/v1/import/prometheus",
        &[],
        b"m 1\n",
    );
    assert_eq!(s, 400);
    let b = String::from_utf8_lossy(&b);
    assert!(b.contains("auth error"), "{b}");
    let (s, _) = http(
        "POST",
        &addr,
        "/insert/0/prometheus/api/v1/import/prometheus?extra_label=novalue",
        &[],
        b"m 1\n",
    );
    assert_eq!(s, 400);
    let (s, b) = get(
        &addr,
        "/insert/0/prometheus/api/v1/write?get_vm_proto_version=1",
    );
    assert_eq!((s, b.as_str()), (200, "1"));
    let (s, flags) = get(&addr, "/flags");
    assert_eq!(s, 200);
    assert!(
        flags.contains("-storageNode.placement=\"rendezvous\""),
        "{flags}"
    );
    let (_, metrics) = get(&addr, "/metrics");
    assert!(
        metrics.contains("vm_http_request_errors_total{path=\"*\",reason=\"unsupported\"} 1"),
        "{metrics}"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
