//! Faults through the real binaries on loopback: a storage node SIGKILLed mid-stream, a
//! read-only node, SIGTERM of the gateway under load, and a node that comes back. The
//! invariant in every case: a row whose request got a 2xx is on a live storage node afterwards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shardgate_core::model::Label;
use shardgate_core::route::{series_hash, Placement, PlacementKind};
use shardgate_core::wire::row::encode_metric_name;
use shardgate_core::Tenant;
use shardgate_e2e::{
    eventually, finish_slow_request, get, metric_value, metric_values, start_gateway, start_nodes,
    start_slow_request, storage_node_flag, temp_dir, try_http, try_raw_rows, wait_all_reachable,
    RawRow, StandInNode,
};

const TENANT: Tenant = Tenant {
    account_id: 5,
    project_id: 6,
};
const IMPORT: &str = "/insert/5:6/prometheus/api/v1/import/prometheus";
const BASE_TS: i64 = 1_700_000_000_000;

/// A row identity: raw metric name in hex and timestamp.
type RowKey = (String, i64);

/// The requests of one load generator: request `r` carries one sample for each of `series`
/// series of metric `metric`, all at timestamp `BASE_TS + r`, value `r * 10000 + s`.
#[derive(Clone)]
struct LoadShape {
    metric: &'static str,
    series: usize,
    /// Request numbers start here, so several generators never write the same row.
    first_request: usize,
}

impl LoadShape {
    fn body(&self, r: usize) -> String {
        let mut b = String::with_capacity(self.series * 48);
        for s in 0..self.series {
            b.push_str(&format!(
                "{}{{series=\"s{s}\",job=\"faults\"}} {} {}\n",
                self.metric,
                r * 10_000 + s,
                BASE_TS + r as i64
            ));
        }
        b
    }

    fn mnraw(&self, s: usize) -> Vec<u8> {
        let series = format!("s{s}");
        let mut mn = Vec::new();
        encode_metric_name(
            &mut mn,
            TENANT,
            &[
                Label::metric_name(self.metric.as_bytes()),
                Label::new(b"series", series.as_bytes()),
                Label::new(b"job", b"faults"),
            ],
        );
        mn
    }

    /// Every row of request `r` with its value bits.
    fn rows(&self, r: usize) -> Vec<(RowKey, String, Vec<u8>)> {
        (0..self.series)
            .map(|s| {
                let mn = self.mnraw(s);
                let bits = format!("{:016x}", ((r * 10_000 + s) as f64).to_bits());
                ((hex::encode(&mn), BASE_TS + r as i64), bits, mn)
            })
            .collect()
    }
}

/// What one request got: its number, when it finished, and the status (None for I/O errors).
#[derive(Clone, Copy, Debug)]
struct Outcome {
    request: usize,
    done: Instant,
    status: Option<u16>,
}

impl Outcome {
    fn acked(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Push requests back to back until `stop`, `max` requests, or (when `stop_on_refused`) the
/// gateway stops answering.
fn spawn_load(
    gateway: String,
    shape: LoadShape,
    max: usize,
    stop: Arc<AtomicBool>,
    stop_on_refused: bool,
) -> JoinHandle<Vec<Outcome>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut io_errors = 0;
        for r in shape.first_request..shape.first_request + max {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let status = try_http("POST", &gateway, IMPORT, &[], shape.body(r).as_bytes())
                .ok()
                .map(|(s, _)| s);
            out.push(Outcome {
                request: r,
                done: Instant::now(),
                status,
            });
            if status.is_none() {
                io_errors += 1;
                if stop_on_refused && io_errors >= 20 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        out
    })
}

/// The rows every acked request must have delivered: key → (value bits, raw name).
fn acked_rows(shape: &LoadShape, outcomes: &[Outcome]) -> BTreeMap<RowKey, (String, Vec<u8>)> {
    outcomes
        .iter()
        .filter(|o| o.acked())
        .flat_map(|o| shape.rows(o.request))
        .map(|(k, bits, mn)| (k, (bits, mn)))
        .collect()
}

/// Row key → value bits over these nodes' exports (nodes that do not answer are skipped).
fn rows_on(nodes: &[&StandInNode]) -> HashMap<RowKey, String> {
    let mut m = HashMap::new();
    for n in nodes {
        for (name, ts, bits) in try_raw_rows(&n.web).unwrap_or_default() {
            m.insert((name, ts), bits);
        }
    }
    m
}

/// Wait until every wanted row is on one of `nodes` (or 30 s pass), then name the missing
/// and the wrong ones.
fn check_delivered(
    wanted: &BTreeMap<RowKey, (String, Vec<u8>)>,
    nodes: &[&StandInNode],
) -> Result<(), String> {
    let missing = |have: &HashMap<RowKey, String>| -> Vec<RowKey> {
        wanted
            .keys()
            .filter(|k| !have.contains_key(*k))
            .cloned()
            .collect()
    };
    let have = eventually(Duration::from_secs(30), || {
        let have = rows_on(nodes);
        missing(&have).is_empty().then_some(have)
    })
    .unwrap_or_else(|| rows_on(nodes));
    let lost = missing(&have);
    if !lost.is_empty() {
        return Err(format!(
            "{} of {} acked rows are on no live node; first few: {:?}",
            lost.len(),
            wanted.len(),
            &lost[..lost.len().min(5)]
        ));
    }
    for (k, (bits, _)) in wanted {
        if &have[k] != bits {
            return Err(format!(
                "row {k:?} has value bits {} instead of {bits}",
                have[k]
            ));
        }
    }
    Ok(())
}

fn metrics(gateway: &str) -> String {
    let (status, page) = get(gateway, "/metrics");
    assert_eq!(status, 200);
    page
}

fn addr_label(node: &StandInNode) -> String {
    format!("addr=\"{}\"", node.rpc)
}

#[test]
fn sigkill_of_a_storage_node_mid_stream_loses_no_acked_row_with_two_replicas() {
    let base = temp_dir("faults-kill");
    let mut nodes = start_nodes(&base, 3);
    let (mut gw, addr) = start_gateway(&[
        format!("-storageNode={}", storage_node_flag(&nodes)),
        "-replicationFactor=2".into(),
    ]);
    assert!(
        wait_all_reachable(&addr, 3, Duration::from_secs(20)),
        "storage nodes never became reachable"
    );

    let shape = LoadShape {
        metric: "fault_kill",
        series: 300,
        first_request: 0,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let load = spawn_load(addr.clone(), shape.clone(), 100_000, stop.clone(), false);
    std::thread::sleep(Duration::from_millis(1500));
    let victim = 1;
    let killed_at = Instant::now();
    nodes[victim].kill();
    std::thread::sleep(Duration::from_millis(2500));
    stop.store(true, Ordering::SeqCst);
    let outcomes = load.join().expect("load thread");

    let before = outcomes.iter().filter(|o| o.done < killed_at).count();
    let after = outcomes.iter().filter(|o| o.done > killed_at).count();
    assert!(
        before > 10 && after > 10,
        "the load did not span the kill: {before} requests before, {after} after"
    );
    eprintln!(
        "{} requests ({before} before the kill, {after} after)",
        outcomes.len()
    );
    // Two nodes are left for two replicas: vminsert reroutes and keeps answering 2xx.
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.acked()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while two nodes were up; first: {:?}",
        failed.len(),
        outcomes.len(),
        failed.first()
    );

    let wanted = acked_rows(&shape, &outcomes);
    let live: Vec<&StandInNode> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, n)| n)
        .collect();
    if let Err(e) = check_delivered(&wanted, &live) {
        panic!("after SIGKILL of one node: {e}");
    }

    let page = metrics(&addr);
    let victim_addr = addr_label(&nodes[victim]);
    assert_eq!(
        metric_value(&page, "vm_rpc_vmstorage_is_reachable", &[&victim_addr]),
        Some(0.0),
        "the killed node must show as unreachable"
    );
    let rerouted_from = metric_value(
        &page,
        "vm_rpc_rows_rerouted_from_here_total",
        &[&victim_addr],
    )
    .unwrap_or(0.0);
    let reroutes = metric_value(&page, "vm_rpc_reroutes_total", &[]).unwrap_or(0.0);
    assert!(
        rerouted_from > 0.0 && reroutes > 0.0,
        "rows for the killed node must be rerouted: rerouted_from_here={rerouted_from}, reroutes_total={reroutes}"
    );
    assert_eq!(
        metric_value(&page, "vm_rpc_rows_incompletely_replicated_total", &[]),
        Some(0.0),
        "two live nodes can always hold two replicas"
    );
    let dial_errors =
        metric_value(&page, "vm_rpc_dial_errors_total", &[&victim_addr]).unwrap_or(0.0);
    let conn_errors =
        metric_value(&page, "vm_rpc_connection_errors_total", &[&victim_addr]).unwrap_or(0.0);
    assert!(
        dial_errors + conn_errors > 0.0,
        "the dead node's broken link or failed re-dials must be counted"
    );

    // Stop the gateway, then read the dead node's log too: every acked row must have two
    // copies on distinct nodes (acked copies are fsynced before the ack).
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    let revived = StandInNode::start(&nodes[victim].dir);
    let mut copies: HashMap<RowKey, BTreeSet<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let rows = if i == victim {
            revived.raw_rows()
        } else {
            n.raw_rows()
        };
        for (name, ts, _) in rows {
            copies.entry((name, ts)).or_default().insert(i);
        }
    }
    let single: Vec<_> = wanted
        .keys()
        .filter(|k| copies.get(*k).map_or(0, |s| s.len()) < 2)
        .collect();
    assert!(
        single.is_empty(),
        "{} of {} acked rows have fewer than 2 copies with -replicationFactor=2; first: {:?}",
        single.len(),
        wanted.len(),
        single.first()
    );
    drop(revived);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn read_only_node_gets_no_rows_and_nothing_is_lost() {
    let base = temp_dir("faults-ro");
    let nodes = start_nodes(&base, 3);
    let (mut gw, addr) = start_gateway(&[format!("-storageNode={}", storage_node_flag(&nodes))]);
    assert!(wait_all_reachable(&addr, 3, Duration::from_secs(20)));
    let ro = 0;
    nodes[ro].set_read_only(true);

    let shape = LoadShape {
        metric: "fault_ro",
        series: 200,
        first_request: 0,
    };
    let mut outcomes = Vec::new();
    let mut push = |r: usize| {
        let (status, body) = try_http("POST", &addr, IMPORT, &[], shape.body(r).as_bytes())
            .unwrap_or_else(|e| panic!("request {r}: {e}"));
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
        outcomes.push(Outcome {
            request: r,
            done: Instant::now(),
            status: Some(status),
        });
    };
    // First requests: the gateway learns about read-only mode from the node's reply.
    for r in 0..10 {
        push(r);
    }
    let ro_addr = addr_label(&nodes[ro]);
    let seen = eventually(Duration::from_secs(10), || {
        let page = metrics(&addr);
        (metric_value(&page, "vm_rpc_vmstorage_is_read_only", &[&ro_addr]) == Some(1.0))
            .then_some(())
    });
    assert!(
        seen.is_some(),
        "vm_rpc_vmstorage_is_read_only never became 1 for the read-only node:\n{}",
        metric_values(&metrics(&addr), "vm_rpc_vmstorage_is_read_only")
            .iter()
            .map(|(l, v)| format!("{l} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Later requests are rerouted row by row before they reach the node.
    for r in 10..20 {
        push(r);
    }

    let wanted = acked_rows(&shape, &outcomes);
    let writable: Vec<&StandInNode> = nodes.iter().skip(1).collect();
    if let Err(e) = check_delivered(&wanted, &writable) {
        panic!("with one read-only node: {e}");
    }
    assert!(
        nodes[ro].raw_rows().is_empty(),
        "the read-only node stored rows"
    );
    // Exactly once: nothing failed, so nothing may be written twice either.
    let mut all: Vec<RawRow> = writable.iter().flat_map(|n| n.raw_rows()).collect();
    all.sort();
    let total = all.len();
    all.dedup();
    assert_eq!(total, all.len(), "some rows were written twice");
    assert_eq!(total, wanted.len());

    let page = metrics(&addr);
    for (i, n) in nodes.iter().enumerate() {
        let want = if i == ro { 1.0 } else { 0.0 };
        assert_eq!(
            metric_value(&page, "vm_rpc_vmstorage_is_read_only", &[&addr_label(n)]),
            Some(want),
            "node {i}"
        );
        assert_eq!(
            metric_value(&page, "vm_rpc_vmstorage_is_reachable", &[&addr_label(n)]),
            Some(1.0),
            "a read-only node is still reachable (node {i})"
        );
    }
    let rerouted_from =
        metric_value(&page, "vm_rpc_rows_rerouted_from_here_total", &[&ro_addr]).unwrap_or(0.0);
    let rerouted_to: f64 = nodes
        .iter()
        .skip(1)
        .map(|n| {
            metric_value(
                &page,
                "vm_rpc_rows_rerouted_to_here_total",
                &[&addr_label(n)],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert!(
        rerouted_from > 0.0 && rerouted_from == rerouted_to,
        "rerouted_from_here={rerouted_from} rerouted_to_here={rerouted_to}"
    );
    assert_eq!(
        metric_value(&page, "vm_rpc_rows_sent_total", &[&ro_addr]),
        Some(0.0),
        "no row may count as sent to the read-only node"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn sigterm_under_load_delivers_every_acked_row_and_exits_zero() {
    let base = temp_dir("faults-term");
    let nodes = start_nodes(&base, 2);
    let (mut gw, addr) = start_gateway(&[format!("-storageNode={}", storage_node_flag(&nodes))]);
    assert!(wait_all_reachable(&addr, 2, Duration::from_secs(20)));

    // Two clients with large requests, so some are in flight when the signal comes.
    let shapes = [
        LoadShape {
            metric: "fault_term",
            series: 2000,
            first_request: 0,
        },
        LoadShape {
            metric: "fault_term",
            series: 2000,
            first_request: 1_000_000,
        },
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = shapes
        .iter()
        .map(|s| spawn_load(addr.clone(), s.clone(), 100_000, stop.clone(), true))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    // A request still sending its body when the signal comes is in flight: it gets
    // -http.maxGracefulShutdownDuration (7 s) to finish, and its rows must be delivered.
    let slow_shape = LoadShape {
        metric: "fault_term_slow",
        series: 500,
        first_request: 0,
    };
    let slow_body = slow_shape.body(0);
    let half = slow_body.len() / 2;
    let slow = start_slow_request(&addr, IMPORT, slow_body.as_bytes(), half);
    std::thread::sleep(Duration::from_millis(200));
    let term_at = Instant::now();
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(700));
    let (slow_status, slow_resp) = finish_slow_request(slow, &slow_body.as_bytes()[half..]);
    assert_eq!(
        slow_status, 204,
        "a request in flight at SIGTERM must be served: {slow_resp}"
    );
    let code = gw.wait_exit(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Vec<Outcome>> = loads
        .into_iter()
        .map(|l| l.join().expect("load thread"))
        .collect();
    assert_eq!(
        code,
        Some(0),
        "the gateway must exit 0 after SIGTERM; log:\n{}",
        gw.seen.join("\n")
    );

    let mut wanted = BTreeMap::new();
    let mut acked_before = 0;
    for (shape, outs) in shapes.iter().zip(&outcomes) {
        acked_before += outs
            .iter()
            .filter(|o| o.acked() && o.done < term_at)
            .count();
        wanted.extend(acked_rows(shape, outs));
    }
    assert!(acked_before > 2, "too little load before SIGTERM");
    wanted.extend(acked_rows(
        &slow_shape,
        &[Outcome {
            request: 0,
            done: Instant::now(),
            status: Some(slow_status),
        }],
    ));
    let all: Vec<&Outcome> = outcomes.iter().flatten().collect();
    eprintln!(
        "{} requests: {} acked before SIGTERM, {} acked after, {} refused with a status, {} I/O errors",
        all.len(),
        acked_before,
        all.iter().filter(|o| o.acked() && o.done >= term_at).count(),
        all.iter().filter(|o| !o.acked() && o.status.is_some()).count(),
        all.iter().filter(|o| o.status.is_none()).count()
    );
    let live: Vec<&StandInNode> = nodes.iter().collect();
    if let Err(e) = check_delivered(&wanted, &live) {
        panic!("after SIGTERM of the gateway: {e}");
    }
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_node_that_comes_back_gets_its_rows_again() {
    let base = temp_dir("faults-back");
    let mut nodes = start_nodes(&base, 3);
    let flag = storage_node_flag(&nodes);
    let (mut gw, addr) = start_gateway(&[format!("-storageNode={flag}")]);
    assert!(wait_all_reachable(&addr, 3, Duration::from_secs(20)));

    let victim = 2;
    let (rpc, web, dir) = (
        nodes[victim].rpc.clone(),
        nodes[victim].web.clone(),
        nodes[victim].dir.clone(),
    );
    let victim_addr = format!("addr=\"{rpc}\"");
    nodes[victim].kill();
    let down = eventually(Duration::from_secs(10), || {
        (metric_value(
            &metrics(&addr),
            "vm_rpc_vmstorage_is_reachable",
            &[&victim_addr],
        ) == Some(0.0))
        .then_some(())
    });
    assert!(down.is_some(), "the gateway never noticed the node died");

    let shape = LoadShape {
        metric: "fault_back",
        series: 300,
        first_request: 0,
    };
    let push = |r: usize| {
        let (status, body) = try_http("POST", &addr, IMPORT, &[], shape.body(r).as_bytes())
            .unwrap_or_else(|e| panic!("request {r}: {e}"));
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    };
    for r in 0..5 {
        push(r);
    }
    let phase_a: BTreeMap<_, _> = (0..5)
        .flat_map(|r| shape.rows(r))
        .map(|(k, b, mn)| (k, (b, mn)))
        .collect();
    if let Err(e) = check_delivered(&phase_a, &nodes.iter().take(2).collect::<Vec<_>>()) {
        panic!("while the node was down: {e}");
    }

    // Same address and data directory: the gateway's re-dial loop must find it.
    nodes[victim] = StandInNode::start_at(&dir, &rpc, &web);
    let up = eventually(Duration::from_secs(15), || {
        (metric_value(
            &metrics(&addr),
            "vm_rpc_vmstorage_is_reachable",
            &[&victim_addr],
        ) == Some(1.0))
        .then_some(())
    });
    assert!(
        up.is_some(),
        "the gateway never reconnected to the restarted node"
    );
    for r in 5..10 {
        push(r);
    }
    let phase_b: BTreeMap<_, _> = (5..10)
        .flat_map(|r| shape.rows(r))
        .map(|(k, b, mn)| (k, (b, mn)))
        .collect();
    let all: Vec<&StandInNode> = nodes.iter().collect();
    if let Err(e) = check_delivered(&phase_b, &all) {
        panic!("after the node came back: {e}");
    }

    // Once it is back, a row whose home is the node goes there and nowhere else.
    let strings: Vec<String> = flag.split(',').map(str::to_string).collect();
    let placement = Placement::new(&strings, PlacementKind::Rendezvous, 0);
    let on_victim: BTreeSet<RowKey> = nodes[victim]
        .raw_rows()
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect();
    let others: Vec<&StandInNode> = nodes.iter().take(2).collect();
    let on_others: BTreeSet<RowKey> = rows_on(&others).into_keys().collect();
    let mut homed_here = 0;
    for (k, (_, mn)) in &phase_b {
        let home = &placement.nodes()[placement.primary(series_hash(mn))];
        if *home == rpc {
            homed_here += 1;
            assert!(
                on_victim.contains(k) && !on_others.contains(k),
                "row {k:?} belongs to the restarted node but did not land only there"
            );
        } else {
            assert!(!on_victim.contains(k), "row {k:?} landed on the wrong node");
        }
    }
    assert!(
        homed_here > 0,
        "no series of the test has its home on the restarted node"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn with_every_node_down_requests_wait_then_503_and_a_returning_node_unblocks_them() {
    let base = temp_dir("faults-alldown");
    let mut nodes = start_nodes(&base, 2);
    let (mut gw, addr) = start_gateway(&[
        format!("-storageNode={}", storage_node_flag(&nodes)),
        "-insert.maxQueueDuration=3s".into(),
    ]);
    assert!(wait_all_reachable(&addr, 2, Duration::from_secs(20)));
    let saved: Vec<(String, String, std::path::PathBuf)> = nodes
        .iter()
        .map(|n| (n.rpc.clone(), n.web.clone(), n.dir.clone()))
        .collect();
    for n in nodes.iter_mut() {
        n.kill();
    }
    let down = eventually(Duration::from_secs(10), || {
        let page = metrics(&addr);
        let v = metric_values(&page, "vm_rpc_vmstorage_is_reachable");
        (v.len() == 2 && v.iter().all(|(_, x)| *x == 0.0)).then_some(())
    });
    assert!(down.is_some(), "the gateway never noticed both nodes died");

    // Nowhere to put the rows: the request waits -insert.maxQueueDuration, then 503.
    let shape = LoadShape {
        metric: "fault_alldown",
        series: 100,
        first_request: 0,
    };
    let t0 = Instant::now();
    let (status, body) = try_http("POST", &addr, IMPORT, &[], shape.body(0).as_bytes())
        .expect("the gateway answers while every node is down");
    let waited = t0.elapsed();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(15),
        "the request should wait about -insert.maxQueueDuration=3s, waited {waited:?}"
    );
    assert_eq!(
        get(&addr, "/health").0,
        200,
        "the gateway itself stays healthy"
    );

    // A request that is waiting when a node returns goes through.
    let waiting = {
        let addr = addr.clone();
        let body = shape.body(1);
        std::thread::spawn(move || try_http("POST", &addr, IMPORT, &[], body.as_bytes()))
    };
    std::thread::sleep(Duration::from_millis(800));
    let (rpc, web, dir) = &saved[0];
    nodes[0] = StandInNode::start_at(dir, rpc, web);
    let (status, body) = waiting
        .join()
        .expect("waiting request thread")
        .expect("waiting request");
    assert_eq!(
        status,
        204,
        "a node came back within -insert.maxQueueDuration: {}",
        String::from_utf8_lossy(&body)
    );
    let wanted: BTreeMap<_, _> = shape
        .rows(1)
        .into_iter()
        .map(|(k, b, mn)| (k, (b, mn)))
        .collect();
    if let Err(e) = check_delivered(&wanted, &[&nodes[0]]) {
        panic!("after one node came back: {e}");
    }

    gw.signal("TERM");
    assert_eq!(
        gw.wait_exit(Duration::from_secs(30)),
        Some(0),
        "exit 0 even with a storage node still down"
    );
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn a_read_only_node_that_turns_writable_gets_rows_again_after_the_probe() {
    let base = temp_dir("faults-ro-back");
    let nodes = start_nodes(&base, 3);
    let flag = storage_node_flag(&nodes);
    let (mut gw, addr) = start_gateway(&[format!("-storageNode={flag}")]);
    assert!(wait_all_reachable(&addr, 3, Duration::from_secs(20)));
    let ro = 1;
    let ro_addr = addr_label(&nodes[ro]);
    nodes[ro].signal_read_only(true);

    let shape = LoadShape {
        metric: "fault_ro_back",
        series: 200,
        first_request: 0,
    };
    let push = |r: usize| {
        let (status, body) = try_http("POST", &addr, IMPORT, &[], shape.body(r).as_bytes())
            .unwrap_or_else(|e| panic!("request {r}: {e}"));
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    };
    push(0);
    let seen = eventually(Duration::from_secs(10), || {
        (metric_value(
            &metrics(&addr),
            "vm_rpc_vmstorage_is_read_only",
            &[&ro_addr],
        ) == Some(1.0))
        .then_some(())
    });
    assert!(seen.is_some(), "the gateway never saw the node read-only");

    // vmstorage leaves read-only mode silently; the gateway finds out with its probe, sent
    // every 30 s + U[0, 3 s) (spec sharding-and-replication.md §8).
    nodes[ro].signal_read_only(false);
    let back = eventually(Duration::from_secs(40), || {
        (metric_value(
            &metrics(&addr),
            "vm_rpc_vmstorage_is_read_only",
            &[&ro_addr],
        ) == Some(0.0))
        .then_some(())
    });
    assert!(
        back.is_some(),
        "the read-only gauge did not clear within 40 s of the node turning writable"
    );
    for r in 1..4 {
        push(r);
    }
    let wanted: BTreeMap<_, _> = (0..4)
        .flat_map(|r| shape.rows(r))
        .map(|(k, b, mn)| (k, (b, mn)))
        .collect();
    if let Err(e) = check_delivered(&wanted, &nodes.iter().collect::<Vec<_>>()) {
        panic!("around a read-only period: {e}");
    }
    let strings: Vec<String> = flag.split(',').map(str::to_string).collect();
    let placement = Placement::new(&strings, PlacementKind::Rendezvous, 0);
    let on_ro: BTreeSet<RowKey> = nodes[ro]
        .raw_rows()
        .into_iter()
        .map(|(n, t, _)| (n, t))
        .collect();
    let mut homed = 0;
    for r in 1..4 {
        for (k, _, mn) in shape.rows(r) {
            if placement.nodes()[placement.primary(series_hash(&mn))] == nodes[ro].rpc {
                homed += 1;
                assert!(
                    on_ro.contains(&k),
                    "row {k:?} did not go back to its home node"
                );
            }
        }
    }
    assert!(homed > 0);
    assert!(
        !shape.rows(0).iter().any(|(k, _, _)| on_ro.contains(k)),
        "rows pushed while the node was read-only must not be on it"
    );
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}
