//! Bad requests through the real gateway: each gets vminsert's status and message, is counted
//! on /metrics, writes nothing, and does not disturb a well-formed request from another client
//! sent in between, whose rows arrive on the storage nodes bit for bit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use shardgate_core::model::Label;
use shardgate_core::wire::row::encode_metric_name;
use shardgate_core::Tenant;
use shardgate_e2e::{
    eventually, finish_slow_request, get, metric_value, remote_write_proto, start_gateway,
    start_nodes, start_slow_request, storage_node_flag, temp_dir, try_http, try_raw_rows,
    wait_all_reachable, StandInNode,
};

const TS: i64 = 1_700_000_000_000;
const REMOTE_WRITE: &str = "/insert/3:4/prometheus/api/v1/write";
const TEXT_IMPORT: &str = "/insert/3:4/prometheus/api/v1/import/prometheus";
/// `vm_http_request_errors_total` of the remote-write route.
const RW_ERRORS: [&str; 2] = [
    "path=\"/insert/{}/prometheus/\"",
    "protocol=\"promremotewrite\"",
];

fn snappy(b: &[u8]) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(b)
        .expect("snappy compress")
}

type Row = (String, i64, String);

/// The well-behaved client: each call sends `n` fresh series (remote write or text import,
/// alternating) and remembers the exact rows that must arrive.
struct GoodClient {
    gateway: String,
    calls: usize,
    want: BTreeSet<Row>,
}

impl GoodClient {
    fn new(gateway: &str) -> GoodClient {
        GoodClient {
            gateway: gateway.to_string(),
            calls: 0,
            want: BTreeSet::new(),
        }
    }

    fn expect_row(&mut self, name: &str, call: &str, i: usize, ts: i64, v: f64) {
        let idx = i.to_string();
        let mut mn = Vec::new();
        encode_metric_name(
            &mut mn,
            Tenant::new(3, 4),
            &[
                Label::metric_name(name.as_bytes()),
                Label::new(b"call", call.as_bytes()),
                Label::new(b"i", idx.as_bytes()),
            ],
        );
        self.want
            .insert((hex::encode(mn), ts, format!("{:016x}", v.to_bits())));
    }

    /// Send one well-formed request, remote write and text import in turn; it must succeed.
    fn send(&mut self, n: usize) {
        self.send_kind(n, self.calls % 2 == 1);
    }

    fn send_kind(&mut self, n: usize, text: bool) {
        self.calls += 1;
        let call = self.calls.to_string();
        let ts = TS + self.calls as i64;
        let (path, body, name) = if !text {
            let series: Vec<_> = (0..n)
                .map(|i| {
                    (
                        vec![
                            ("__name__".to_string(), "good_rw".to_string()),
                            ("call".to_string(), call.clone()),
                            ("i".to_string(), i.to_string()),
                        ],
                        vec![(ts, i as f64 + 0.5)],
                    )
                })
                .collect();
            (
                REMOTE_WRITE,
                snappy(&remote_write_proto(&series)),
                "good_rw",
            )
        } else {
            let mut b = String::new();
            for i in 0..n {
                b.push_str(&format!(
                    "good_text{{call=\"{call}\",i=\"{i}\"}} {}.5 {ts}\n",
                    i
                ));
            }
            (TEXT_IMPORT, b.into_bytes(), "good_text")
        };
        for i in 0..n {
            self.expect_row(name, &call, i, ts, i as f64 + 0.5);
        }
        let (status, resp) = try_http("POST", &self.gateway, path, &[], &body)
            .unwrap_or_else(|e| panic!("good request {call}: {e}"));
        assert!(
            status == 204,
            "good request {call} to {path} got {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    /// Every good row is on the nodes exactly once with its exact bits, and nothing else is.
    fn check(&self, nodes: &[StandInNode]) {
        let all = |nodes: &[StandInNode]| -> Vec<Row> {
            nodes
                .iter()
                .flat_map(|n| try_raw_rows(&n.web).unwrap_or_default())
                .collect()
        };
        let got = eventually(Duration::from_secs(20), || {
            let rows = all(nodes);
            (rows.len() >= self.want.len()).then_some(rows)
        })
        .unwrap_or_else(|| all(nodes));
        let set: BTreeSet<Row> = got.iter().cloned().collect();
        let missing: Vec<_> = self.want.difference(&set).collect();
        let extra: Vec<_> = set.difference(&self.want).collect();
        assert!(
            missing.is_empty() && extra.is_empty() && got.len() == self.want.len(),
            "stored rows differ from the good requests: {} missing (e.g. {:?}), {} unexpected (e.g. {:?}), {} stored for {} wanted",
            missing.len(),
            missing.first(),
            extra.len(),
            extra.first(),
            got.len(),
            self.want.len()
        );
    }
}

fn metrics(gateway: &str) -> String {
    let (status, page) = get(gateway, "/metrics");
    assert_eq!(status, 200);
    page
}

fn counter(gateway: &str, name: &str, needles: &[&str]) -> f64 {
    metric_value(&metrics(gateway), name, needles).unwrap_or(0.0)
}

/// Send a bad request; check its status and that the body names the problem.
fn expect_refusal(gateway: &str, path: &str, body: &[u8], status: u16, text: &str) {
    let (got, resp) =
        try_http("POST", gateway, path, &[], body).unwrap_or_else(|e| panic!("{path}: {e}"));
    let resp = String::from_utf8_lossy(&resp);
    assert_eq!(got, status, "{path}: {resp}");
    assert!(
        resp.contains(text),
        "{path}: the error should mention {text:?}, got {resp:?}"
    );
    assert!(
        resp.ends_with('\n'),
        "{path}: vminsert ends error texts with a newline: {resp:?}"
    );
}

fn cluster(
    extra: &[&str],
) -> (
    std::path::PathBuf,
    Vec<StandInNode>,
    shardgate_e2e::Proc,
    String,
) {
    let base = temp_dir("bad");
    let nodes = start_nodes(&base, 2);
    let mut args = vec![format!("-storageNode={}", storage_node_flag(&nodes))];
    args.extend(extra.iter().map(|s| s.to_string()));
    let (gw, addr) = start_gateway(&args);
    assert!(wait_all_reachable(&addr, 2, Duration::from_secs(20)));
    (base, nodes, gw, addr)
}

#[test]
fn bad_tenants_paths_sizes_and_bodies_are_refused_and_counted() {
    let (base, nodes, mut gw, addr) = cluster(&["-maxInsertRequestSize=4000"]);
    let mut good = GoodClient::new(&addr);
    good.send(20);

    let all_before = counter(&addr, "vm_http_requests_all_total", &[]);
    let unsupported = ["path=\"*\"", "reason=\"unsupported\""];
    let unsupported_before = counter(&addr, "vm_http_request_errors_total", &unsupported);
    let rw_errors_before = counter(&addr, "vm_http_request_errors_total", &RW_ERRORS);
    let mut requests = 0.0;

    // Tenants: a token that looks like a tenant but does not parse is an auth error.
    for tenant in ["abc:1", "1:2:3", "4294967296:0", "1:-1"] {
        let path = format!("/insert/{tenant}/prometheus/api/v1/write");
        let body = snappy(&remote_write_proto(&[(
            vec![("__name__".into(), "bad_tenant".into())],
            vec![(TS, 1.0)],
        )]));
        expect_refusal(&addr, &path, &body, 400, "auth error");
        requests += 1.0;
        good.send(10);
    }
    // `abc` does not look like a tenant, so it is the start of the suffix (tenant from the
    // headers), and `abc/prometheus/...` is no route of vminsert's.
    for path in [
        "/insert/abc/prometheus/api/v1/write",
        "/api/v1/no-such-thing",
        "/insert/0/no-such-format",
        "/insert/0/prometheus/api/v1/writes",
    ] {
        expect_refusal(&addr, path, b"x 1\n", 400, "unsupported path requested");
        requests += 1.0;
        good.send(10);
    }
    assert_eq!(
        counter(&addr, "vm_http_request_errors_total", &unsupported) - unsupported_before,
        4.0,
        "every unknown route counts in vm_http_request_errors_total{{path=\"*\",reason=\"unsupported\"}}"
    );

    // Remote write over -maxInsertRequestSize: raw body too big, and a small body that
    // decompresses to more than the limit.
    // Pseudo-random label values, so snappy cannot shrink the body under the limit.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let big_series: Vec<_> = (0..200)
        .map(|i| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (
                vec![
                    ("__name__".to_string(), "too_big".to_string()),
                    (
                        "r".to_string(),
                        format!("{x:016x}{:016x}", x.rotate_left(29)),
                    ),
                ],
                vec![(TS + i, i as f64 * 1.25)],
            )
        })
        .collect();
    let raw_big = snappy(&remote_write_proto(&big_series));
    assert!(raw_big.len() > 4000);
    expect_refusal(&addr, REMOTE_WRITE, &raw_big, 400, "maxInsertRequestSize");
    good.send(10);
    let bomb = snappy(&remote_write_proto(&[(
        vec![
            ("__name__".into(), "too_big".into()),
            ("pad".into(), "a".repeat(20_000)),
        ],
        vec![(TS, 1.0)],
    )]));
    assert!(
        bomb.len() < 4000,
        "the compressed body itself fits the limit"
    );
    let (status, resp) = try_http("POST", &addr, REMOTE_WRITE, &[], &bomb).unwrap();
    assert_eq!(
        status,
        400,
        "decompressed size over -maxInsertRequestSize must be refused: {}",
        String::from_utf8_lossy(&resp)
    );
    good.send(10);

    // Undecodable remote write: not snappy; snappy of a broken protobuf after a good series
    // (nothing of the request may be written); zstd/gzip-looking garbage.
    let mut broken = remote_write_proto(&[(
        vec![("__name__".into(), "half_good".into())],
        vec![(TS, 2.0)],
    )]);
    broken.extend_from_slice(&[0x0a, 0x7f, 0x01]); // field 1, length 127, 1 byte present
    for body in [
        b"not snappy at all".to_vec(),
        snappy(&broken),
        vec![0x1f, 0x8b, 8, 0, 0],
    ] {
        let (status, resp) = try_http("POST", &addr, REMOTE_WRITE, &[], &body).unwrap();
        assert_eq!(
            status,
            400,
            "undecodable remote write: {}",
            String::from_utf8_lossy(&resp)
        );
        good.send(10);
    }
    // A text import larger than -maxInsertRequestSize is fine: that limit is remote write's.
    good.send_kind(200, true);
    requests += 5.0;

    assert_eq!(
        counter(&addr, "vm_http_request_errors_total", &RW_ERRORS) - rw_errors_before,
        5.0,
        "the five refused remote-write bodies count as errors of that route"
    );
    let all_after = counter(&addr, "vm_http_requests_all_total", &[]);
    assert!(
        all_after - all_before >= requests,
        "vm_http_requests_all_total grew by {} for {requests} bad requests",
        all_after - all_before
    );
    // Refused requests insert nothing: only the good client's rows are counted.
    let page = metrics(&addr);
    let inserted = metric_value(
        &page,
        "vm_rows_inserted_total",
        &["type=\"promremotewrite\""],
    )
    .unwrap_or(0.0)
        + metric_value(&page, "vm_rows_inserted_total", &["type=\"prometheus\""]).unwrap_or(0.0);
    assert_eq!(inserted, good.want.len() as f64, "vm_rows_inserted_total");

    good.check(&nodes);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

fn wait_slots_taken(gateway: &str, n: f64) {
    let taken = eventually(Duration::from_secs(10), || {
        (counter(gateway, "vm_concurrent_insert_current", &[]) == n).then_some(())
    });
    assert!(
        taken.is_some(),
        "vm_concurrent_insert_current never reached {n}"
    );
}

#[test]
fn too_many_concurrent_inserts_get_503_after_the_queue_wait() {
    let (base, nodes, mut gw, addr) =
        cluster(&["-maxConcurrentInserts=1", "-insert.maxQueueDuration=100ms"]);
    let page = metrics(&addr);
    assert_eq!(
        metric_value(&page, "vm_concurrent_insert_capacity", &[]),
        Some(1.0)
    );
    let mut good = GoodClient::new(&addr);
    good.send(10);

    // A remote-write client that has started its body holds the only slot while it trickles.
    let mut slow_rows = GoodClient::new(&addr);
    let series: Vec<_> = (0..50)
        .map(|i| {
            (
                vec![
                    ("__name__".to_string(), "good_rw".to_string()),
                    ("call".to_string(), "101".to_string()),
                    ("i".to_string(), i.to_string()),
                ],
                vec![(TS + 101, i as f64 + 0.5)],
            )
        })
        .collect();
    for i in 0..50 {
        slow_rows.expect_row("good_rw", "101", i, TS + 101, i as f64 + 0.5);
    }
    let slow_body = snappy(&remote_write_proto(&series));
    let slow = start_slow_request(&addr, REMOTE_WRITE, &slow_body, 1);
    wait_slots_taken(&addr, 1.0);

    let timeouts_before = counter(&addr, "vm_concurrent_insert_limit_timeout_total", &[]);
    let errors_before = counter(&addr, "vm_http_request_errors_total", &RW_ERRORS);
    let refused_body = snappy(&remote_write_proto(&[(
        vec![("__name__".into(), "refused_by_limit".into())],
        vec![(TS, 1.0)],
    )]));
    let t0 = Instant::now();
    let (status, resp) = try_http("POST", &addr, REMOTE_WRITE, &[], &refused_body).unwrap();
    let waited = t0.elapsed();
    let resp = String::from_utf8_lossy(&resp);
    assert_eq!(status, 503, "{resp}");
    assert!(resp.contains("maxConcurrentInserts"), "{resp}");
    assert!(
        waited >= Duration::from_millis(90) && waited < Duration::from_secs(5),
        "the request must wait -insert.maxQueueDuration=100ms for a slot, waited {waited:?}"
    );
    let page = metrics(&addr);
    assert_eq!(
        metric_value(&page, "vm_concurrent_insert_limit_timeout_total", &[]).unwrap_or(0.0)
            - timeouts_before,
        1.0
    );
    assert!(
        metric_value(&page, "vm_concurrent_insert_limit_reached_total", &[]).unwrap_or(0.0) >= 1.0
    );
    assert_eq!(
        metric_value(&page, "vm_http_request_errors_total", &RW_ERRORS).unwrap_or(0.0)
            - errors_before,
        1.0
    );

    // The slow client finishes and its rows arrive; then the slot is free again.
    let (status, text) = finish_slow_request(slow, &slow_body[1..]);
    assert_eq!(status, 204, "{text}");
    wait_slots_taken(&addr, 0.0);
    good.send(10);
    good.send(10);
    good.want.extend(slow_rows.want.iter().cloned());
    good.check(&nodes);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

/// vminsert (formats/common.md §8): a whole-body reader (remote write) waits for the first
/// body byte before it takes an insert slot, so a client that sent only its request head holds
/// none and cannot starve the others.
#[test]
fn remote_write_client_without_body_bytes_holds_no_insert_slot() {
    let (base, nodes, mut gw, addr) =
        cluster(&["-maxConcurrentInserts=1", "-insert.maxQueueDuration=100ms"]);
    let mut good = GoodClient::new(&addr);
    let body = snappy(&remote_write_proto(&[(
        vec![("__name__".into(), "stalled_rw".into())],
        vec![(TS, 1.0)],
    )]));
    let stalled = start_slow_request(&addr, REMOTE_WRITE, &body, 0);
    std::thread::sleep(Duration::from_millis(300));
    good.send(5);
    good.send(5);
    let (status, text) = finish_slow_request(stalled, &body);
    assert_eq!(status, 204, "{text}");
    let mut mn = Vec::new();
    encode_metric_name(
        &mut mn,
        Tenant::new(3, 4),
        &[Label::metric_name(b"stalled_rw")],
    );
    good.want
        .insert((hex::encode(mn), TS, format!("{:016x}", 1f64.to_bits())));
    good.check(&nodes);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}

/// vminsert (formats/common.md §8): a streaming reader (text import) gives its insert slot back
/// while it waits on the socket, so a client that pauses mid-body holds no slot.
#[test]
fn text_import_client_pausing_mid_body_holds_no_insert_slot() {
    let (base, nodes, mut gw, addr) =
        cluster(&["-maxConcurrentInserts=1", "-insert.maxQueueDuration=100ms"]);
    let mut good = GoodClient::new(&addr);
    let text = b"stalled_text{a=\"1\"} 1 1700000000000\nstalled_text{a=\"2\"} 2 1700000000000\n";
    let stalled = start_slow_request(&addr, TEXT_IMPORT, text, 20);
    std::thread::sleep(Duration::from_millis(300));
    good.send(5);
    good.send(5);
    let (status, resp) = finish_slow_request(stalled, &text[20..]);
    assert_eq!(status, 204, "{resp}");
    for v in [1.0f64, 2.0] {
        let mut mn = Vec::new();
        let a = format!("{v}");
        encode_metric_name(
            &mut mn,
            Tenant::new(3, 4),
            &[
                Label::metric_name(b"stalled_text"),
                Label::new(b"a", a.as_bytes()),
            ],
        );
        good.want
            .insert((hex::encode(mn), TS, format!("{:016x}", v.to_bits())));
    }
    good.check(&nodes);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(30)), Some(0));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&base);
}
