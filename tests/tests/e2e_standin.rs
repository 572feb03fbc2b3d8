//! The storage-node stand-in over real TCP: handshake, a rows block, export with exact bits,
//! read-only switching, and rebuilding from its log after a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use shardgate_core::model::{Label, Sample};
use shardgate_core::wire::codec::encode_rpc_request;
use shardgate_core::wire::row::{encode_metric_name, encode_row};
use shardgate_core::Tenant;
use shardgate_e2e::{get, http, temp_dir, Proc};

fn start_node(dir: &std::path::Path) -> (Proc, String, String) {
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
    (p, rpc, web)
}

fn handshake(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"vminsert.03").unwrap();
    let mut ok = [0u8; 2];
    s.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    s.write_all(&[0]).unwrap();
    let mut ok_flag = [0u8; 3];
    s.read_exact(&mut ok_flag).unwrap();
    assert_eq!(&ok_flag, b"ok\x00");
    s.write_all(b"ok").unwrap();
    s
}

fn send_block(s: &mut TcpStream, block: &[u8]) -> String {
    s.write_all(&encode_rpc_request(b"writeRows_v1", block).unwrap())
        .unwrap();
    let mut len = [0u8; 8];
    s.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u64::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).unwrap();
    String::from_utf8(msg).unwrap()
}

#[test]
fn stand_in_round_trip_with_exact_bits_and_restart() {
    let dir = temp_dir("standin");
    let (node, rpc, web) = start_node(&dir);
    let labels = [Label::metric_name(b"up"), Label::new(b"job", b"x")];
    let mut mn = Vec::new();
    encode_metric_name(&mut mn, Tenant::new(3, 4), &labels);
    let stale = f64::from_bits(0x7ff0_0000_0000_0002);
    let mut block = Vec::new();
    encode_row(&mut block, &mn, Sample::new(1_700_000_000_000, 1.5));
    encode_row(&mut block, &mn, Sample::new(1_700_000_000_001, stale));

    let mut conn = handshake(&rpc);
    assert_eq!(send_block(&mut conn, &block), "", "the block must be acked");

    let (status, raw) = get(&web, "/api/v1/export/raw");
    assert_eq!(status, 200);
    let rows: Vec<serde_json::Value> = raw
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["tenant"], "3:4");
    assert_eq!(rows[0]["name_hex"], hex::encode(&mn));
    assert_eq!(rows[0]["ts"], 1_700_000_000_000i64);
    assert_eq!(rows[0]["value_bits"], "3ff8000000000000");
    assert_eq!(rows[1]["value_bits"], "7ff0000000000002");
    let (_, export) = get(&web, "/api/v1/export");
    let series: serde_json::Value = serde_json::from_str(export.lines().next().unwrap()).unwrap();
    assert_eq!(
        series["metric"],
        serde_json::json!({"__name__": "up", "job": "x"})
    );
    assert_eq!(
        series["timestamps"],
        serde_json::json!([1_700_000_000_000i64, 1_700_000_000_001i64])
    );

    // Read-only: the block is refused with vmstorage's text and not stored.
    let (status, _) = http("POST", &web, "/readonly?enabled=1", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        send_block(&mut conn, &block),
        "storage node is read-only mode"
    );
    let (status, _) = http("POST", &web, "/readonly?enabled=0", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(send_block(&mut conn, &block), "");
    let (_, raw) = get(&web, "/api/v1/export/raw");
    assert_eq!(raw.lines().count(), 4);

    // Restart: rows come back from the log.
    drop(conn);
    drop(node);
    let (_node, _rpc, web) = start_node(&dir);
    let (_, raw2) = get(&web, "/api/v1/export/raw");
    assert_eq!(raw2, raw);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr1_makes_the_stand_in_read_only() {
    let dir = temp_dir("standin-sig");
    let (node, rpc, web) = start_node(&dir);
    node.signal("USR1");
    let on = shardgate_e2e::eventually(Duration::from_secs(5), || {
        let (_, b) = get(&web, "/readonly");
        b.contains("read_only=true").then_some(())
    });
    assert!(on.is_some());
    let mut conn = handshake(&rpc);
    let mut mn = Vec::new();
    encode_metric_name(&mut mn, Tenant::default(), &[Label::metric_name(b"m")]);
    let mut block = Vec::new();
    encode_row(&mut block, &mn, Sample::new(1, 1.0));
    assert_eq!(
        send_block(&mut conn, &block),
        "storage node is read-only mode"
    );
    node.signal("USR2");
    let off = shardgate_e2e::eventually(Duration::from_secs(5), || {
        let (_, b) = get(&web, "/readonly");
        b.contains("read_only=false").then_some(())
    });
    assert!(off.is_some());
    assert_eq!(send_block(&mut conn, &block), "");
    let _ = std::fs::remove_dir_all(&dir);
}
