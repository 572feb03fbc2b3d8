//! Real remote-write clients against the real gateway: Debian's Prometheus 2.42 and vmagent
//! 1.79.5 scrape themselves every second and remote-write to shardgate; their series must show
//! up on the stand-in storage nodes within 30 s, Prometheus' on the node vminsert would pick.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use shardgate_core::model::Label;
use shardgate_core::route::{series_hash, Placement, PlacementKind};
use shardgate_core::wire::row::{decode_metric_name, encode_series_key};
use shardgate_e2e::{
    eventually, free_port, start_gateway, start_nodes, storage_node_flag, temp_dir, try_raw_rows,
    wait_all_reachable, KillOnDrop, StandInNode,
};

/// The client binary, or a failure that says how to get it (these tests never skip).
fn client_binary(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.exists(),
        "{path} is missing: install it as .ci/run does (apt-get install -y --no-install-recommends {package})"
    );
    p
}

/// Start a client with its output in `dir/<name>.log`, killed when the guard drops.
fn spawn_client(bin: &Path, args: &[String], dir: &Path, name: &str) -> (KillOnDrop, PathBuf) {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("client log");
    let err = out.try_clone().expect("client log");
    let child = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", bin.display()));
    (KillOnDrop(child), log)
}

fn tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A stored series: tenant, labels (the empty name spelled `__name__`), and which node holds it.
#[derive(Debug)]
struct StoredSeries {
    tenant: shardgate_core::Tenant,
    labels: Vec<(String, String)>,
    node: usize,
}

impl StoredSeries {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every distinct series on the nodes, keyed by raw metric name.
fn stored_series(nodes: &[StandInNode]) -> BTreeMap<String, StoredSeries> {
    let mut out = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for (name_hex, _, _) in try_raw_rows(&n.web).unwrap_or_default() {
            if out.contains_key(&name_hex) {
                continue;
            }
            let mn = hex::decode(&name_hex).expect("hex name");
            let (tenant, labels) = decode_metric_name(&mn).expect("stored metric name");
            let labels = labels
                .map(|l| {
                    let l = l.expect("stored label");
                    let name = if l.name.is_empty() {
                        "__name__".to_string()
                    } else {
                        String::from_utf8_lossy(l.name).into_owned()
                    };
                    (name, String::from_utf8_lossy(l.value).into_owned())
                })
                .collect();
            out.insert(
                name_hex,
                StoredSeries {
                    tenant,
                    labels,
                    node: i,
                },
            );
        }
    }
    out
}

/// Wait up to 30 s until every `(metric name, job)` pair is stored; the series seen last.
fn wait_for_series(
    nodes: &[StandInNode],
    wanted: &[(&str, &str)],
) -> Result<BTreeMap<String, StoredSeries>, Vec<String>> {
    let missing = |s: &BTreeMap<String, StoredSeries>| -> Vec<String> {
        wanted
            .iter()
            .filter(|(name, job)| {
                !s.values()
                    .any(|x| x.label("__name__") == Some(name) && x.label("job") == Some(job))
            })
            .map(|(n, j)| format!("{n}{{job={j:?}}}"))
            .collect()
    };
    let found = eventually(Duration::from_secs(30), || {
        let s = stored_series(nodes);
        missing(&s).is_empty().then_some(s)
    });
    match found {
        Some(s) => Ok(s),
        None => Err(missing(&stored_series(nodes))),
    }
}

#[test]
fn prometheus_remote_write_reaches_the_storage_nodes() {
    let prometheus = client_binary("/usr/bin/prometheus", "prometheus");
    let base = temp_dir("prometheus");
    let nodes = start_nodes(&base, 2);
    let flag = storage_node_flag(&nodes);
    let (_gw, addr) = start_gateway(&[format!("-storageNode={flag}")]);
    assert!(wait_all_reachable(&addr, 2, Duration::from_secs(20)));

    let port = free_port();
    let cfg = base.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: prom-self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             \x20 - job_name: gateway\n    static_configs:\n      - targets: ['{addr}']\n\
             remote_write:\n  - url: http://{addr}/insert/0/prometheus/api/v1/write\n    queue_config:\n      batch_send_deadline: 1s\n      min_backoff: 100ms\n      max_backoff: 1s\n"
        ),
    )
    .expect("write prometheus.yml");
    let (_client, log) = spawn_client(
        &prometheus,
        &[
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", base.join("tsdb").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
        &base,
        "prometheus",
    );

    let series = wait_for_series(
        &nodes,
        &[
            ("prometheus_build_info", "prom-self"),
            ("up", "prom-self"),
            ("up", "gateway"),
            ("vm_app_version", "gateway"),
        ],
    )
    .unwrap_or_else(|missing| {
        panic!(
            "series from Prometheus never arrived: {missing:?}\nprometheus log:\n{}",
            tail(&log)
        )
    });

    // Remote write hashes the labels as sent (`__name__` spelled out), so every series sits on
    // the node vminsert would have picked for that key, and in tenant 0:0.
    let strings: Vec<String> = flag.split(',').map(str::to_string).collect();
    let placement = Placement::new(&strings, PlacementKind::Rendezvous, 0);
    let mut misplaced = Vec::new();
    for s in series.values() {
        assert_eq!(s.tenant, shardgate_core::Tenant::new(0, 0));
        let labels: Vec<Label<'_>> = s
            .labels
            .iter()
            .map(|(n, v)| Label::new(n.as_bytes(), v.as_bytes()))
            .collect();
        let mut key = Vec::new();
        encode_series_key(&mut key, s.tenant, &labels);
        let home = &placement.nodes()[placement.primary(series_hash(&key))];
        if *home != nodes[s.node].rpc {
            misplaced.push(format!("{:?} on {}", s.labels, nodes[s.node].rpc));
        }
    }
    assert!(
        misplaced.is_empty(),
        "{} of {} Prometheus series are not on their home node: {:?}",
        misplaced.len(),
        series.len(),
        &misplaced[..misplaced.len().min(3)]
    );
    let on_each: Vec<usize> = (0..nodes.len())
        .map(|i| series.values().filter(|s| s.node == i).count())
        .collect();
    assert!(
        on_each.iter().all(|&n| n > 0),
        "hundreds of series should reach both nodes: {on_each:?}"
    );
    drop(_client);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn vmagent_remote_write_reaches_the_storage_nodes() {
    let vmagent = client_binary("/usr/bin/vmagent", "victoria-metrics");
    let base = temp_dir("vmagent");
    let nodes = start_nodes(&base, 2);
    let (_gw, addr) = start_gateway(&[format!("-storageNode={}", storage_node_flag(&nodes))]);
    assert!(wait_all_reachable(&addr, 2, Duration::from_secs(20)));

    let port = free_port();
    let cfg = base.join("scrape.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: vmagent-self\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             \x20 - job_name: gateway\n    static_configs:\n      - targets: ['{addr}']\n"
        ),
    )
    .expect("write scrape.yml");
    let (_client, log) = spawn_client(
        &vmagent,
        &[
            format!("-promscrape.config={}", cfg.display()),
            format!("-httpListenAddr=127.0.0.1:{port}"),
            format!("-remoteWrite.url=http://{addr}/insert/42:7/prometheus/api/v1/write"),
            format!("-remoteWrite.tmpDataPath={}", base.join("queue").display()),
            "-remoteWrite.flushInterval=1s".into(),
        ],
        &base,
        "vmagent",
    );

    let series = wait_for_series(
        &nodes,
        &[
            ("vm_app_version", "vmagent-self"),
            ("up", "vmagent-self"),
            ("up", "gateway"),
            ("vm_rpc_vmstorage_is_reachable", "gateway"),
        ],
    )
    .unwrap_or_else(|missing| {
        panic!(
            "series from vmagent never arrived: {missing:?}\nvmagent log:\n{}",
            tail(&log)
        )
    });
    for s in series.values() {
        assert_eq!(
            s.tenant,
            shardgate_core::Tenant::new(42, 7),
            "the URL tenant applies to every series: {:?}",
            s.labels
        );
        assert!(
            s.labels.iter().all(|(_, v)| !v.is_empty()),
            "empty label values must not be stored: {:?}",
            s.labels
        );
    }
    // The gateway's own gauge went through scrape → remote write → storage with its labels.
    let reach = series
        .values()
        .find(|s| {
            s.label("__name__") == Some("vm_rpc_vmstorage_is_reachable")
                && s.label("addr") == Some(nodes[0].rpc.as_str())
        })
        .expect("the reachability gauge of node 0");
    assert_eq!(reach.label("rpc_call"), Some("metric_rows"));
    drop(_client);
    let _ = std::fs::remove_dir_all(&base);
}
