//! Every ingestion format through the real `shardgate` binary: HTTP routes, the TCP and UDP
//! listeners, OpenTSDB HTTP on both of its ports, clusternative between two gateways, relabel
//! reload on SIGHUP, and a 64 MiB streamed body whose memory stays bounded.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shardgate_core::wire::row::decode_block;
use shardgate_core::wire::{Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::Time;
use shardgate_e2e::{eventually, get, http, temp_dir, Proc};

const T: i64 = 1_700_000_000_000;

/// Addresses a gateway printed at startup.
struct Gateway {
    proc: Proc,
    http: String,
    graphite: String,
    influx: String,
    opentsdb: String,
    opentsdb_http: String,
    clusternative: String,
}

/// An embedded-mode gateway (two in-process stand-in storage nodes, `/api/v1/export`) with
/// every listener on an ephemeral port.
fn start_gateway(dir: &std::path::Path, extra: &[String]) -> Gateway {
    let mut args = vec![
        "-httpListenAddr=127.0.0.1:0".to_string(),
        format!("-storageDataPath={}", dir.display()),
        "-graphiteListenAddr=127.0.0.1:0".into(),
        "-influxListenAddr=127.0.0.1:0".into(),
        "-opentsdbListenAddr=127.0.0.1:0".into(),
        "-opentsdbHTTPListenAddr=127.0.0.1:0".into(),
        "-clusternativeListenAddr=127.0.0.1:0".into(),
    ];
    args.extend_from_slice(extra);
    let mut p = Proc::start("shardgate", &args);
    let t = Duration::from_secs(60);
    // Log lines in the order main prints them.
    let http = p.wait_for("started server at http://", t);
    let graphite = p.wait_for("started graphite TCP and UDP server at ", t);
    let influx = p.wait_for("started influx TCP and UDP server at ", t);
    let opentsdb = p.wait_for("started opentsdb TCP and UDP server at ", t);
    let opentsdb_http = p.wait_for("started OpenTSDB HTTP server at http://", t);
    let clusternative = p.wait_for("accepting clusternative connections at ", t);
    Gateway {
        proc: p,
        http,
        graphite,
        influx,
        opentsdb,
        opentsdb_http,
        clusternative,
    }
}

/// Series exported by the embedded stand-ins: metric name → (labels, tenant, samples).
type Exported = BTreeMap<String, (serde_json::Value, String, Vec<(i64, f64)>)>;

fn export(addr: &str) -> Exported {
    let (status, body) = get(addr, "/api/v1/export");
    assert_eq!(status, 200, "{body}");
    let mut out: Exported = BTreeMap::new();
    for line in body.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let name = v["metric"]["__name__"].as_str().unwrap_or("").to_string();
        let samples: Vec<(i64, f64)> = v["timestamps"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["values"].as_array().unwrap())
            .map(|(t, x)| (t.as_i64().unwrap(), x.as_f64().unwrap()))
            .collect();
        let e = out.entry(name).or_insert((
            v["metric"].clone(),
            v["tenant"].as_str().unwrap().to_string(),
            Vec::new(),
        ));
        e.2.extend(samples);
    }
    out
}

/// Wait until every name in `want` is exported; the export.
fn wait_for_series(addr: &str, want: &[&str]) -> Exported {
    eventually(Duration::from_secs(20), || {
        let e = export(addr);
        want.iter().all(|n| e.contains_key(*n)).then_some(e)
    })
    .unwrap_or_else(|| {
        let e = export(addr);
        let missing: Vec<_> = want.iter().filter(|n| !e.contains_key(**n)).collect();
        panic!("series {missing:?} never arrived; have {:?}", e.keys())
    })
}

fn tcp_send(addr: &str, data: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(data).unwrap();
}

fn udp_send(addr: &str, data: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.send_to(data, addr).unwrap();
}

fn metric_value(addr: &str, series: &str) -> f64 {
    let (_, body) = get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

/// Status and raw response head of one request (for headers the helper does not return).
fn http_head(addr: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let text = String::from_utf8_lossy(&resp).to_string();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, text)
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

fn zlib(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A remote-write body with one series `rw{a="b"}` and one sample, snappy-compressed.
fn remote_write_body() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push(tag);
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
    }
    let label = |n: &[u8], v: &[u8]| {
        let mut l = Vec::new();
        field(&mut l, 0x0a, n);
        field(&mut l, 0x12, v);
        l
    };
    let mut sample = vec![0x09];
    sample.extend_from_slice(&7.5f64.to_le_bytes());
    sample.push(0x10);
    let mut ts = T as u64;
    while ts >= 0x80 {
        sample.push((ts as u8) | 0x80);
        ts >>= 7;
    }
    sample.push(ts as u8);
    let mut series = Vec::new();
    field(&mut series, 0x0a, &label(b"__name__", b"rw"));
    field(&mut series, 0x0a, &label(b"a", b"b"));
    field(&mut series, 0x12, &sample);
    let mut req = Vec::new();
    field(&mut req, 0x0a, &series);
    snap::raw::Encoder::new().compress_vec(&req).unwrap()
}

#[test]
fn every_format_round_trips() {
    let dir = temp_dir("formats");
    let g = start_gateway(&dir, &[]);
    let a = g.http.as_str();
    let post =
        |path: &str, headers: &[(&str, &str)], body: &[u8]| http("POST", a, path, headers, body).0;

    // HTTP formats, each with its vminsert status.
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus?extra_label=env=prod",
            &[],
            format!("text1{{a=\"b\"}} 1 {T}\n").as_bytes()
        ),
        204
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus/metrics/job/j1/instance/i1",
            &[],
            format!("text2 2 {T}\n").as_bytes()
        ),
        200
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[("Content-Encoding", "gzip")],
            &gzip(format!("text_gzip 3 {T}\n").as_bytes())
        ),
        204
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[("Content-Encoding", "deflate")],
            &zlib(format!("text_deflate 4 {T}\n").as_bytes())
        ),
        204
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[("Content-Encoding", "snappy")],
            &snap::raw::Encoder::new()
                .compress_vec(format!("text_snappy 5 {T}\n").as_bytes())
                .unwrap()
        ),
        204
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[("Content-Encoding", "br")],
            b"x 1\n"
        ),
        400
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/write",
            &[],
            &remote_write_body()
        ),
        204
    );
    assert_eq!(
        post("/insert/0/prometheus/api/v1/write", &[], b"garbage"),
        400
    );
    assert_eq!(
        post(
            "/insert/1:2/prometheus/api/v1/import",
            &[],
            format!("{{\"metric\":{{\"__name__\":\"json1\",\"x\":\"y\"}},\"values\":[6],\"timestamps\":[{T}]}}\n")
                .as_bytes()
        ),
        204
    );
    assert_eq!(
        post(
            "/insert/0/prometheus/api/v1/import/csv?format=1:metric:csv1,2:label:host,3:time:unix_ms",
            &[],
            format!("7,h1,{T}\n").as_bytes()
        ),
        204
    );
    assert_eq!(
        post("/insert/0/prometheus/api/v1/import/csv", &[], b"1\n"),
        400
    );
    let (status, head) = http_head(
        a,
        "/insert/5/influx/write?db=mydb",
        format!("inf,t=1 f=8 {}\n", T / 1000).as_bytes(),
    );
    assert_eq!(status, 204);
    assert!(
        head.to_ascii_lowercase()
            .contains("x-influxdb-version: 1.8.0"),
        "{head}"
    );
    assert_eq!(
        post(
            "/insert/0/influx/api/v2/write",
            &[("Stream-Mode", "1")],
            format!("inf2 f=9 {}\nbad\n", T / 1000).as_bytes()
        ),
        204
    );
    assert_eq!(post("/insert/0/influx/write", &[], b"bad line\n"), 400);
    let (status, body) = get(a, "/insert/0/influx/query?q=show+databases");
    assert_eq!(
        (status, body.contains("\"_internal\"")),
        (200, true),
        "{body}"
    );
    let (status, body) = get(a, "/insert/0/influx/health");
    assert_eq!((status, body.contains("\"pass\"")), (200, true), "{body}");
    // Header tenancy.
    assert_eq!(
        post(
            "/insert/prometheus/api/v1/import/prometheus",
            &[("AccountID", "9"), ("ProjectID", "8")],
            format!("text_hdr 10 {T}\n").as_bytes()
        ),
        204
    );

    // OpenTSDB HTTP on its own listener and on the telnet port.
    let put = |addr: &str, path: &str, name: &str, v: u32| {
        http(
            "POST",
            addr,
            path,
            &[],
            format!(
                "{{\"metric\":\"{name}\",\"timestamp\":{},\"value\":{v},\"tags\":{{\"h\":\"x\"}}}}",
                T / 1000
            )
            .as_bytes(),
        )
        .0
    };
    assert_eq!(
        put(&g.opentsdb_http, "/insert/3/api/put", "tsdbhttp1", 11),
        204
    );
    assert_eq!(
        put(
            &g.opentsdb_http,
            "/insert/0/opentsdb/api/put?extra_label=e=1",
            "tsdbhttp2",
            12
        ),
        204
    );
    assert_eq!(put(&g.opentsdb_http, "/api/put", "never", 1), 400);
    assert_eq!(put(&g.opentsdb, "/insert/0/api/put", "tsdbhttp3", 13), 204);

    // TCP and UDP listeners: multitenant labels.
    let s = T / 1000;
    tcp_send(
        &g.graphite,
        format!("gr_tcp;vm_account_id=4;k=v 14 {s}\n").as_bytes(),
    );
    udp_send(&g.graphite, format!("gr_udp 15 {s}\n").as_bytes());
    tcp_send(
        &g.influx,
        format!("inf_tcp,vm_project_id=6 f=16 {s}\n").as_bytes(),
    );
    udp_send(&g.influx, format!("inf_udp f=17 {s}\n").as_bytes());
    tcp_send(
        &g.opentsdb,
        format!("put tsdb_tcp {s} 18 h=a\nput bad\n").as_bytes(),
    );
    udp_send(&g.opentsdb, format!("put tsdb_udp {s} 19\n").as_bytes());

    let want = [
        "text1",
        "text2",
        "text_gzip",
        "text_deflate",
        "text_snappy",
        "rw",
        "json1",
        "csv1",
        "inf_f",
        "inf2_f",
        "text_hdr",
        "tsdbhttp1",
        "tsdbhttp2",
        "tsdbhttp3",
        "gr_tcp",
        "gr_udp",
        "inf_tcp_f",
        "inf_udp_f",
        "tsdb_tcp",
        "tsdb_udp",
    ];
    let e = wait_for_series(a, &want);
    let check = |name: &str, labels: serde_json::Value, tenant: &str, value: f64| {
        let (l, t, s) = &e[name];
        assert_eq!((l, t.as_str()), (&labels, tenant), "{name}");
        assert_eq!(s, &vec![(T, value)], "{name}");
    };
    use serde_json::json;
    check(
        "text1",
        json!({"__name__":"text1","a":"b","env":"prod"}),
        "0:0",
        1.0,
    );
    check(
        "text2",
        json!({"__name__":"text2","job":"j1","instance":"i1"}),
        "0:0",
        2.0,
    );
    check("text_gzip", json!({"__name__":"text_gzip"}), "0:0", 3.0);
    check(
        "text_deflate",
        json!({"__name__":"text_deflate"}),
        "0:0",
        4.0,
    );
    check("text_snappy", json!({"__name__":"text_snappy"}), "0:0", 5.0);
    check("rw", json!({"__name__":"rw","a":"b"}), "0:0", 7.5);
    check("json1", json!({"__name__":"json1","x":"y"}), "1:2", 6.0);
    check("csv1", json!({"__name__":"csv1","host":"h1"}), "0:0", 7.0);
    check(
        "inf_f",
        json!({"__name__":"inf_f","t":"1","db":"mydb"}),
        "5:0",
        8.0,
    );
    check("inf2_f", json!({"__name__":"inf2_f"}), "0:0", 9.0);
    check("text_hdr", json!({"__name__":"text_hdr"}), "9:8", 10.0);
    check(
        "tsdbhttp1",
        json!({"__name__":"tsdbhttp1","h":"x"}),
        "3:0",
        11.0,
    );
    check(
        "tsdbhttp2",
        json!({"__name__":"tsdbhttp2","h":"x","e":"1"}),
        "0:0",
        12.0,
    );
    check(
        "tsdbhttp3",
        json!({"__name__":"tsdbhttp3","h":"x"}),
        "0:0",
        13.0,
    );
    check("gr_tcp", json!({"__name__":"gr_tcp","k":"v"}), "4:0", 14.0);
    check("gr_udp", json!({"__name__":"gr_udp"}), "0:0", 15.0);
    check("inf_tcp_f", json!({"__name__":"inf_tcp_f"}), "0:6", 16.0);
    check("inf_udp_f", json!({"__name__":"inf_udp_f"}), "0:0", 17.0);
    check(
        "tsdb_tcp",
        json!({"__name__":"tsdb_tcp","h":"a"}),
        "0:0",
        18.0,
    );
    check("tsdb_udp", json!({"__name__":"tsdb_udp"}), "0:0", 19.0);
    assert!(!e.contains_key("never"));

    // Stats under vminsert's names.
    for (series, at_least) in [
        ("vm_rows_inserted_total{type=\"prometheus\"}", 6.0),
        ("vm_rows_inserted_total{type=\"promremotewrite\"}", 1.0),
        ("vm_rows_inserted_total{type=\"vmimport\"}", 1.0),
        ("vm_rows_inserted_total{type=\"csvimport\"}", 1.0),
        ("vm_rows_inserted_total{type=\"influx\"}", 4.0),
        ("vm_rows_inserted_total{type=\"graphite\"}", 2.0),
        ("vm_rows_inserted_total{type=\"opentsdb\"}", 2.0),
        ("vm_rows_inserted_total{type=\"opentsdbhttp\"}", 3.0),
        ("vm_rows_invalid_total{type=\"influx\"}", 1.0),
        ("vm_rows_invalid_total{type=\"opentsdb\"}", 1.0),
        (
            "vm_tenant_inserted_rows_total{type=\"vmimport\",accountID=\"1\",projectID=\"2\"}",
            1.0,
        ),
    ] {
        let v = metric_value(a, series);
        assert!(v >= at_least, "{series} = {v}, want >= {at_least}");
    }
    drop(g);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn label_limits_are_counted_and_enforced() {
    let dir = temp_dir("formats-limits");
    let g = start_gateway(&dir, &["-maxLabelsPerTimeseries=2".into()]);
    let body = format!("too_many{{a=\"1\",b=\"2\"}} 1 {T}\nfits{{a=\"1\"}} 2 {T}\n");
    assert_eq!(
        http(
            "POST",
            &g.http,
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[],
            body.as_bytes()
        )
        .0,
        204
    );
    let e = wait_for_series(&g.http, &["fits"]);
    assert!(!e.contains_key("too_many"));
    assert_eq!(
        metric_value(&g.http, "vm_rows_ignored_total{reason=\"too_many_labels\"}"),
        1.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clusternative_rows_are_reingested_by_a_lower_level_gateway() {
    let dir = temp_dir("formats-lower");
    let lower = start_gateway(&dir, &[]);
    // The upper gateway treats the lower one's clusternative port as its storage node.
    let mut upper = Proc::start(
        "shardgate",
        &[
            "-httpListenAddr=127.0.0.1:0".into(),
            format!("-storageNode={}", lower.clusternative),
        ],
    );
    let up = upper.wait_for("started server at http://", Duration::from_secs(60));
    let body = format!("cn1{{a=\"b\"}} 1 {T}\ncn2 2 {T}\n");
    assert_eq!(
        http(
            "POST",
            &up,
            "/insert/7:8/prometheus/api/v1/import/prometheus",
            &[],
            body.as_bytes()
        )
        .0,
        204
    );
    let e = wait_for_series(&lower.http, &["cn1", "cn2"]);
    assert_eq!(e["cn1"].0, serde_json::json!({"__name__":"cn1","a":"b"}));
    assert_eq!(e["cn1"].1, "7:8");
    assert_eq!(e["cn2"].2, vec![(T, 2.0)]);
    assert_eq!(
        metric_value(
            &lower.http,
            "vm_rows_inserted_total{type=\"clusternative\"}"
        ),
        2.0
    );
    assert_eq!(metric_value(&lower.http, "vm_vminsert_conns"), 2.0);
    drop(upper);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sighup_reloads_relabel_rules_and_keeps_them_on_a_bad_file() {
    let dir = temp_dir("formats-relabel");
    let rules = dir.join("relabel.yml");
    let write_rules = |label: &str| {
        std::fs::write(
            &rules,
            format!("- target_label: {label}\n  replacement: set\n"),
        )
        .unwrap()
    };
    write_rules("first");
    let mut g = start_gateway(&dir, &[format!("-relabelConfig={}", rules.display())]);
    let send = |name: &str| {
        let body = format!("{name} 1 {T}\n");
        assert_eq!(
            http(
                "POST",
                &g.http,
                "/insert/0/prometheus/api/v1/import/prometheus",
                &[],
                body.as_bytes()
            )
            .0,
            204
        );
    };
    send("before");
    write_rules("second");
    g.proc.signal("HUP");
    g.proc
        .wait_for("reloaded -relabelConfig", Duration::from_secs(10));
    send("after");
    std::fs::write(&rules, "- action: [not, a, string]\n").unwrap();
    g.proc.signal("HUP");
    g.proc.wait_for(
        "keeping the previous relabeling rules",
        Duration::from_secs(10),
    );
    send("after_bad");
    let e = wait_for_series(&g.http, &["before", "after", "after_bad"]);
    assert_eq!(
        e["before"].0,
        serde_json::json!({"__name__":"before","first":"set"})
    );
    assert_eq!(
        e["after"].0,
        serde_json::json!({"__name__":"after","second":"set"})
    );
    assert_eq!(
        e["after_bad"].0,
        serde_json::json!({"__name__":"after_bad","second":"set"})
    );
    assert_eq!(
        metric_value(&g.http, "vm_relabel_config_reloads_total"),
        2.0
    );
    assert_eq!(
        metric_value(&g.http, "vm_relabel_config_reloads_errors_total"),
        1.0
    );
    assert_eq!(
        metric_value(&g.http, "vm_relabel_config_last_reload_successful"),
        0.0
    );
    drop(g);

    // A bad file at startup is fatal and named.
    let (code, _, stderr) = shardgate_e2e::run(
        "shardgate",
        &[
            "-httpListenAddr=127.0.0.1:0",
            &format!("-storageDataPath={}", dir.display()),
            &format!("-relabelConfig={}", rules.display()),
        ],
    );
    assert_ne!(code, Some(0));
    assert!(stderr.contains("relabel.yml"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A storage node that acknowledges every block and keeps only a row count.
fn counting_node() -> (String, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let rows = Arc::new(AtomicU64::new(0));
    let counter = rows.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut sc = ServerConn::new(ServerConfig::default(), Time::ZERO);
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    while let Some(ev) = sc.poll_event() {
                        if let ServerEvent::Block { request, block, .. } = ev {
                            let n = decode_block(&block).count() as u64;
                            counter.fetch_add(n, Ordering::SeqCst);
                            sc.reply(request, Reply::Ok);
                        }
                    }
                    while let Some(out) = sc.poll_transmit() {
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                    if sc.is_closed() {
                        return;
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => sc.handle_closed(Time::ZERO),
                        Ok(n) => sc.handle_input(&buf[..n], Time::ZERO),
                    }
                }
            });
        }
    });
    (addr, rows)
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn a_64_mib_streamed_text_body_keeps_memory_bounded() {
    let (node, rows) = counting_node();
    let mut p = Proc::start(
        "shardgate",
        &[
            "-httpListenAddr=127.0.0.1:0".into(),
            format!("-storageNode={node}"),
            "-memory.allowedBytes=64MiB".into(),
        ],
    );
    let addr = p.wait_for("started server at http://", Duration::from_secs(60));
    // Warm up so the baseline includes connections and first allocations.
    let warm = format!("warm 1 {T}\n");
    assert_eq!(
        http(
            "POST",
            &addr,
            "/insert/0/prometheus/api/v1/import/prometheus",
            &[],
            warm.as_bytes()
        )
        .0,
        204
    );
    let before = vm_hwm_kib(p.child.id());

    // ~256-byte lines with distinct series, generated while sending.
    const TOTAL: usize = 64 << 20;
    let pad = "v".repeat(200);
    let line = |i: usize| format!("big_{}{{k=\"{pad}{i:012}\"}} {i} {T}\n", i % 97);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
    write!(
        s,
        "POST /insert/0/prometheus/api/v1/import/prometheus HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {TOTAL}\r\n\r\n"
    )
    .unwrap();
    let mut sent = 0usize;
    let mut lines_sent = 0u64;
    let mut chunk = Vec::with_capacity(64 * 1024 + 512);
    let mut i = 0usize;
    while sent < TOTAL {
        chunk.clear();
        while chunk.len() < 64 * 1024 {
            let l = line(i);
            i += 1;
            if sent + chunk.len() + l.len() > TOTAL {
                // Pad the tail with newlines (empty lines) to hit the exact length.
                chunk.resize(TOTAL - sent, b'\n');
                break;
            }
            chunk.extend_from_slice(l.as_bytes());
            lines_sent += 1;
        }
        s.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head = String::from_utf8_lossy(&resp);
    assert!(head.starts_with("HTTP/1.1 204"), "{head}");
    let after = vm_hwm_kib(p.child.id());
    let growth_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    eprintln!("peak RSS growth while streaming 64 MiB: {growth_mib:.1} MiB");
    assert!(
        growth_mib < 64.0,
        "peak RSS grew by {growth_mib:.1} MiB while streaming a 64 MiB body ({before} kB -> {after} kB)"
    );
    // Everything arrived (plus the warm-up row).
    let all = eventually(Duration::from_secs(60), || {
        (rows.load(Ordering::SeqCst) == lines_sent + 1).then_some(())
    });
    assert!(
        all.is_some(),
        "storage node got {} rows, want {}",
        rows.load(Ordering::SeqCst),
        lines_sent + 1
    );
}
