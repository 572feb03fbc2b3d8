//! Replays the golden vectors recorded from the real vminsert against the `shardgate` binary.
//!
//! For each vector: recording storage nodes (in this test, on the core's server side of the
//! protocol) listen on the vector's `storage_nodes` addresses, `shardgate` starts with the
//! command line the recording vminsert had (fixed listener ports, see the vectors README), the
//! inputs go out in order, and then the HTTP statuses (and the start of each body) and the rows
//! each node received (a multiset of name bytes, timestamp and value bits; "now" within a
//! minute) must equal the recording.
//!
//! The vectors use fixed ports, so they run one after another under one lock, and every port
//! is released (gateway killed and reaped, node listeners joined) before the next vector.
//!
//! The gateway binary is `<target>/<profile>/shardgate`, beside the `deps/` folder holding this
//! test: `cargo test --workspace` builds it; otherwise run `cargo build -p shardgate --bins`.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::node::{RecordingNode, Row};
use support::{
    check_port_free, gzip, http_request, render_metric_name, send_tcp, send_udp, shardgate_bin,
    unix_ms, vectors_dir, workspace_root, Server,
};

/// The fixed ports of the recording session (vectors README).
const HTTP_ADDR: &str = "127.0.0.1:9490";
const GRAPHITE_ADDR: &str = "127.0.0.1:2003";
const INFLUX_ADDR: &str = "127.0.0.1:8089";
const OPENTSDB_ADDR: &str = "127.0.0.1:4242";
const OPENTSDB_HTTP_ADDR: &str = "127.0.0.1:4243";

/// Both tests bind the same fixed ports.
static FIXED_PORTS: Mutex<()> = Mutex::new(());

/// How long rows may take to reach the nodes; the gateway flushes within about 200 ms.
const ROWS_DEADLINE: Duration = Duration::from_secs(5);
/// How much of each response body the recording kept.
const BODY_KEPT: usize = 300;
/// If no further row reached any node for this long, the gateway is not going to send more.
const NOTHING_ARRIVED: Duration = Duration::from_millis(1500);
/// After the expected rows arrived, how long to keep listening for unexpected extra rows.
const SETTLE: Duration = Duration::from_millis(250);
/// A row recorded with `ts_now` matches a timestamp this close to the replay's wall clock.
const NOW_SLACK_MS: i64 = 60_000;

#[derive(Clone, Debug)]
struct ExpectedRow {
    node: usize,
    name: Vec<u8>,
    ts: i64,
    bits: u64,
    now: bool,
}

#[test]
fn every_format_vector_replays_identically() {
    let _ports = FIXED_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let bin = shardgate_bin();
    let outcomes = run_dir(&bin, "formats");
    assert!(
        outcomes.len() >= 40,
        "expected the formats/ vectors, found {}",
        outcomes.len()
    );
    let failed: Vec<&(String, Result<(), String>)> =
        outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    if !failed.is_empty() {
        let mut msg = format!(
            "{} of {} vectors in formats/ differ from the recording:\n",
            failed.len(),
            outcomes.len()
        );
        for (name, r) in &failed {
            msg.push_str(&format!("\n== {name}\n{}\n", r.as_ref().err().unwrap()));
        }
        panic!("{msg}");
    }
}

/// Vectors of formats-extra/ allowed to differ, each with the reason (none today). The list is
/// asserted exactly: a listed vector that passes fails this test, so it only ever shrinks.
const EXTRA_NOT_IMPLEMENTED: &[(&str, &str)] = &[];

#[test]
fn extra_vectors_replay_except_unimplemented_formats() {
    let _ports = FIXED_PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let bin = shardgate_bin();
    let outcomes = run_dir(&bin, "formats-extra");
    assert!(
        outcomes.len() >= 50,
        "expected the formats-extra/ vectors, found {}",
        outcomes.len()
    );
    let known: BTreeMap<&str, &str> = EXTRA_NOT_IMPLEMENTED.iter().copied().collect();
    let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
    let mut problems = String::new();
    for listed in known.keys() {
        if !names.contains(listed) {
            problems.push_str(&format!(
                "\n== {listed}: listed as not implemented but no such vector exists\n"
            ));
        }
    }
    for (name, r) in &outcomes {
        match (r, known.get(name.as_str())) {
            (Ok(()), Some(format)) => problems.push_str(&format!(
                "\n== {name}: passes now; remove it from EXTRA_NOT_IMPLEMENTED ({format})\n"
            )),
            (Err(diff), None) => problems.push_str(&format!("\n== {name}\n{diff}\n")),
            (Err(diff), Some(format)) => {
                // Shown so that a listed vector failing for another reason is noticed.
                let first: Vec<&str> = diff.lines().take(3).collect();
                println!(
                    "{name}: fails as listed ({format}):\n  {}",
                    first.join("\n  ")
                );
            }
            (Ok(()), None) => {}
        }
    }
    assert!(
        problems.is_empty(),
        "formats-extra/ replay does not match the expected set of failures:\n{problems}"
    );
}

/// Replays every vector of a folder, in name order; (name, Ok or a readable diff).
fn run_dir(bin: &Path, sub: &str) -> Vec<(String, Result<(), String>)> {
    let dir = vectors_dir(sub);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", f.display()));
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", f.display()));
        let name = v["name"].as_str().unwrap_or("?").to_string();
        let started = Instant::now();
        let r = run_vector(bin, &v);
        println!(
            "{sub}/{name}: {} ({} ms)",
            if r.is_ok() { "pass" } else { "FAIL" },
            started.elapsed().as_millis()
        );
        out.push((name, r));
    }
    out
}

fn run_vector(bin: &Path, v: &Value) -> Result<(), String> {
    let nodes_addrs: Vec<String> = v["storage_nodes"]
        .as_array()
        .ok_or("vector has no storage_nodes")?
        .iter()
        .map(|a| a.as_str().unwrap_or_default().to_string())
        .collect();
    let expected = expected_rows(v)?;

    for (addr, udp) in [
        (HTTP_ADDR, false),
        (OPENTSDB_HTTP_ADDR, false),
        (GRAPHITE_ADDR, true),
        (INFLUX_ADDR, true),
        (OPENTSDB_ADDR, true),
    ] {
        check_port_free(addr, udp)?;
    }
    let nodes = nodes_addrs
        .iter()
        .map(|a| RecordingNode::start(a))
        .collect::<Result<Vec<_>, _>>()?;

    let mut args = vec![
        format!(
            "-storageNode={}",
            v["storage_node_flag"].as_str().unwrap_or("")
        ),
        format!(
            "-replicationFactor={}",
            v["replication_factor"].as_u64().unwrap_or(1)
        ),
        format!("-graphiteListenAddr={GRAPHITE_ADDR}"),
        format!("-influxListenAddr={INFLUX_ADDR}"),
        format!("-opentsdbListenAddr={OPENTSDB_ADDR}"),
        format!("-opentsdbHTTPListenAddr={OPENTSDB_HTTP_ADDR}"),
        format!("-httpListenAddr={HTTP_ADDR}"),
    ];
    for f in v["flags"].as_array().into_iter().flatten() {
        args.push(f.as_str().unwrap_or_default().to_string());
    }
    let mut gw = Server::start("shardgate", bin, &args, &workspace_root());
    gw.wait_http_ok(HTTP_ADDR, "/health", Duration::from_secs(10))?;

    let window_from = unix_ms() - NOW_SLACK_MS;
    let mut problems = Vec::new();
    let sends = v["send"].as_array().ok_or("vector has no send")?;
    let responses = v["responses"].as_array().ok_or("vector has no responses")?;
    if sends.len() != responses.len() {
        return Err("send and responses differ in length".into());
    }
    // A vector whose replies carry the recording's clock says so in its note.
    let statuses_only = v["note"]
        .as_str()
        .is_some_and(|n| n.contains("compare statuses only"));
    for (i, (send, want)) in sends.iter().zip(responses).enumerate() {
        if let Err(e) = send_one(i, send, want, statuses_only) {
            problems.push(e);
        }
    }

    // Wait until every node has at least its expected number of rows, then a little longer to
    // catch rows that should not be there.
    let mut want_per_node = vec![0usize; nodes.len()];
    for r in &expected {
        if let Some(n) = want_per_node.get_mut(r.node) {
            *n += 1;
        }
    }
    let mut last_total = 0;
    let mut last_change = Instant::now();
    let waiting_since = Instant::now();
    while waiting_since.elapsed() < ROWS_DEADLINE
        && nodes
            .iter()
            .zip(&want_per_node)
            .any(|(n, want)| n.row_count() < *want)
    {
        // The gateway flushes within about 200 ms: when no new row came for this long, the
        // missing ones are not coming, and a failing vector need not sit out the deadline.
        let total: usize = nodes.iter().map(|n| n.row_count()).sum();
        if total != last_total {
            last_total = total;
            last_change = Instant::now();
        } else if last_change.elapsed() > NOTHING_ARRIVED {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(SETTLE);
    let window_to = unix_ms() + NOW_SLACK_MS;

    for (i, node) in nodes.iter().enumerate() {
        let want: Vec<&ExpectedRow> = expected.iter().filter(|r| r.node == i).collect();
        let got = node.rows();
        problems.extend(compare_node(i, &want, got, window_from, window_to));
        for e in node.errors() {
            problems.push(format!("node {i} saw a protocol problem: {e}"));
        }
    }
    if expected.iter().any(|r| r.node >= nodes.len()) {
        problems.push("an expected row names a node the vector does not start".into());
    }
    let log = gw.log_tail(1500);
    gw.stop();
    for n in nodes {
        n.stop();
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}\n  -- gateway stderr (tail):\n{}",
            problems.join("\n"),
            indent(&log)
        ))
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn expected_rows(v: &Value) -> Result<Vec<ExpectedRow>, String> {
    let mut out = Vec::new();
    for r in v["expected_rows"].as_array().ok_or("no expected_rows")? {
        let bits = r["value_bits"].as_str().ok_or("row without value_bits")?;
        out.push(ExpectedRow {
            node: r["node"].as_u64().ok_or("row without node")? as usize,
            name: hex::decode(r["name_hex"].as_str().ok_or("row without name_hex")?)
                .map_err(|e| format!("bad name_hex: {e}"))?,
            ts: r["ts"].as_i64().ok_or("row without ts")?,
            bits: u64::from_str_radix(bits, 16).map_err(|e| format!("bad value_bits: {e}"))?,
            now: r["ts_now"].as_bool().unwrap_or(false),
        });
    }
    Ok(out)
}

/// Send input `i` and check its response against the recording.
fn send_one(i: usize, send: &Value, want: &Value, statuses_only: bool) -> Result<(), String> {
    let body: Vec<u8> = if let Some(h) = send["body_hex"].as_str() {
        hex::decode(h).map_err(|e| format!("input {i}: bad body_hex: {e}"))?
    } else {
        send["body"].as_str().unwrap_or("").as_bytes().to_vec()
    };
    if let Some(path) = send["http"].as_str() {
        let body = if send["gzip"].as_bool() == Some(true) {
            gzip(&body)
        } else {
            body
        };
        let addr = match send["port"].as_str() {
            None => HTTP_ADDR,
            Some("opentsdbhttp") => OPENTSDB_HTTP_ADDR,
            Some(other) => return Err(format!("input {i}: unknown port {other:?}")),
        };
        let method = send["method"].as_str().unwrap_or("POST");
        let headers: Vec<(String, String)> = send["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let resp = http_request(addr, method, path, &headers, &body)
            .map_err(|e| format!("input {i} ({method} {path}): {e}"))?;
        let want_status = want["status"].as_u64().unwrap_or(0);
        let want_body = want["body"].as_str();
        let got_body = String::from_utf8_lossy(&resp.body);
        let mut bad = Vec::new();
        if u64::from(resp.status) != want_status {
            bad.push(format!("status {} (want {want_status})", resp.status));
        }
        if let Some(w) = want_body.filter(|_| !statuses_only) {
            // The recording keeps the first 300 characters of a body; shorter ones are whole.
            let same = if w.chars().count() >= BODY_KEPT {
                got_body.starts_with(w)
            } else {
                got_body == w
            };
            if !same {
                bad.push(format!("body {got_body:?}\n      want {w:?}"));
            }
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(format!("input {i} ({method} {path}): {}", bad.join("; ")))
        }
    } else if let Some(proto) = send["tcp"].as_str() {
        send_tcp(listener_addr(proto)?, &body).map_err(|e| format!("input {i} (tcp {proto}): {e}"))
    } else if let Some(proto) = send["udp"].as_str() {
        let addr = listener_addr(proto)?;
        // UDP cannot tell whether anyone listens; the TCP side of the listener can.
        std::net::TcpStream::connect(addr)
            .map_err(|e| format!("input {i} (udp {proto}): no listener at {addr}: {e}"))?;
        send_udp(addr, &body).map_err(|e| format!("input {i} (udp {proto}): {e}"))
    } else {
        Err(format!("input {i}: unknown kind of input {send}"))
    }
}

fn listener_addr(proto: &str) -> Result<&'static str, String> {
    match proto {
        "graphite" => Ok(GRAPHITE_ADDR),
        "influx" => Ok(INFLUX_ADDR),
        "opentsdb" => Ok(OPENTSDB_ADDR),
        other => Err(format!("unknown listener {other:?}")),
    }
}

/// Multiset comparison of one node's rows; returns readable differences.
fn compare_node(
    node: usize,
    want: &[&ExpectedRow],
    got: Vec<Row>,
    now_from: i64,
    now_to: i64,
) -> Vec<String> {
    let mut left: BTreeMap<Row, usize> = BTreeMap::new();
    for r in got {
        *left.entry(r).or_default() += 1;
    }
    let mut missing = Vec::new();
    let take = |left: &mut BTreeMap<Row, usize>, key: &Row| -> bool {
        match left.get_mut(key) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(_) => {
                left.remove(key);
                true
            }
            None => false,
        }
    };
    for w in want.iter().filter(|w| !w.now) {
        let key = Row {
            name: w.name.clone(),
            ts: w.ts,
            bits: w.bits,
        };
        if !take(&mut left, &key) {
            missing.push(describe(&key, false));
        }
    }
    for w in want.iter().filter(|w| w.now) {
        let found = left
            .keys()
            .find(|r| r.name == w.name && r.bits == w.bits && r.ts >= now_from && r.ts <= now_to)
            .cloned();
        match found {
            Some(k) => {
                take(&mut left, &k);
            }
            None => missing.push(describe(
                &Row {
                    name: w.name.clone(),
                    ts: w.ts,
                    bits: w.bits,
                },
                true,
            )),
        }
    }
    let mut out = Vec::new();
    const SHOW: usize = 12;
    for (what, list) in [("missing", missing), ("unexpected", unexpected_list(&left))] {
        if list.is_empty() {
            continue;
        }
        out.push(format!("node {node}: {} {what} row(s):", list.len()));
        for l in list.iter().take(SHOW) {
            out.push(format!("    {what} {l}"));
        }
        if list.len() > SHOW {
            out.push(format!("    … and {} more", list.len() - SHOW));
        }
    }
    out
}

fn unexpected_list(left: &BTreeMap<Row, usize>) -> Vec<String> {
    left.iter()
        .flat_map(|(r, n)| std::iter::repeat_n(describe(r, false), *n))
        .collect()
}

fn describe(r: &Row, now: bool) -> String {
    let ts = if now {
        "@now".to_string()
    } else {
        format!("@{}", r.ts)
    };
    format!(
        "{} {ts} = {} (bits {:016x}; name {})",
        render_metric_name(&r.name),
        f64::from_bits(r.bits),
        r.bits,
        hex::encode(&r.name)
    )
}
