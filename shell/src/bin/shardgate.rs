//! `shardgate`: a drop-in replacement for vminsert.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use shardgate::flags::{self, Flags, GATEWAY_FLAGS};
use shardgate::http::gateway::{App, HttpConfig};
use shardgate::http::limiter::Limiter;
use shardgate::http::opentsdb::OpenTsdbHttp;
use shardgate::http::server::{self, ServerControl, ServerLimits};
use shardgate::listeners::{self, LineProtocol, ListenerCtx};
use shardgate::metrics::Registry;
use shardgate::pipeline::{self, FormatConfig, IngestShared};
use shardgate::standin::{self, StandIn};
use shardgate::storage::{DialConfig, Storage};
use shardgate::{fatal, info, warn};
use shardgate_core::gateway::GatewayConfig;
use shardgate_core::route::{PlacementKind, LOWER_LEVEL_SEED};
use shardgate_core::wire::ServerConfig;

const ABOUT: &str = "shardgate accepts metrics over vminsert's HTTP APIs and spreads them over VictoriaMetrics storage nodes \
exactly as vminsert does. Without -storageNode it starts two embedded stand-in storage nodes for a quick try.";

/// Total memory of the host or the cgroup, whichever is smaller.
fn system_memory() -> u64 {
    let mem_total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
        })
        .map_or(8 << 30, |kb| kb * 1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    cgroup.map_or(mem_total, |c| c.min(mem_total))
}

/// `-memory.allowedBytes`, or `-memory.allowedPercent` of the system or cgroup memory.
fn allowed_memory(f: &Flags) -> u64 {
    if f.bytes("memory.allowedBytes") > 0 {
        f.bytes("memory.allowedBytes")
    } else {
        (system_memory() as f64 * f.float("memory.allowedPercent") / 100.0) as u64
    }
}

/// A request's buffer for one storage node is pushed at this size (sharding spec §4).
fn per_request_push_threshold(f: &Flags, max_concurrent: usize, nodes: usize) -> usize {
    let per = allowed_memory(f) / 4 / max_concurrent.max(1) as u64 / nodes.max(1) as u64;
    per.clamp(1 << 20, 30 << 20) as usize
}

fn gateway_config(f: &Flags, storage_nodes: Vec<String>) -> GatewayConfig {
    let allowed = allowed_memory(f);
    let n = storage_nodes.len().max(1) as u64;
    let node_buffer_limit = (allowed / 4 / n / 2).clamp(1 << 20, 30 << 20) as usize;
    let placement = f
        .str("storageNode.placement")
        .parse::<PlacementKind>()
        .unwrap_or_else(|e| fatal!("invalid -storageNode.placement: {e}"));
    let mut g = GatewayConfig::new(storage_nodes);
    g.placement = placement;
    g.seed = if f.str("clusternativeListenAddr").is_empty() {
        0
    } else {
        LOWER_LEVEL_SEED
    };
    g.handshake_timeout = f.duration("rpc.handshakeTimeout");
    g.disable_compression = f.bool("rpc.disableCompression");
    g.enable_metadata = f.bool("enableMetadata");
    // vminsert re-dials a down node on every 200 ms tick.
    g.redial_interval = Duration::from_millis(200);
    g.router.replication_factor = f.int("replicationFactor").max(1) as usize;
    g.router.node_buffer_limit = node_buffer_limit;
    g.router.memory_budget = (allowed / 4) as usize;
    g.router.disable_rerouting_on_unavailable = f.bool("disableReroutingOnUnavailable");
    g.router.disable_slowness_rerouting = f.bool("disableRerouting");
    g.router.drop_samples_on_overload = f.bool("dropSamplesOnOverload");
    g
}

fn main() {
    let f = flags::parse_or_exit(GATEWAY_FLAGS, ABOUT);
    if let Err(e) = shardgate::log::set_level(f.str("loggerLevel")) {
        fatal!("{e}");
    }
    info!("starting {}", shardgate::version());
    let ingest_config = pipeline::ingest_config_from_flags(&f).unwrap_or_else(|e| fatal!("{e}"));
    let exec = shardgate::runtime::executor();
    let start = SystemTime::now();

    // Embedded mode: two stand-in storage nodes on loopback, reached through the same TCP path.
    let mut embedded: Vec<Arc<StandIn>> = Vec::new();
    let storage_nodes: Vec<String> = if f.list("storageNode").is_empty() {
        let base = std::path::PathBuf::from(f.str("storageDataPath"));
        let mut addrs = Vec::new();
        for i in 0..2 {
            let dir = base.join(format!("node-{i}"));
            let s = StandIn::open(&dir, false)
                .unwrap_or_else(|e| fatal!("cannot open {}: {e}", dir.display()));
            let l = server::bind("127.0.0.1:0").unwrap_or_else(|e| fatal!("{e}"));
            let addr = l.get_ref().local_addr().unwrap_or_else(|e| fatal!("{e}"));
            exec.spawn(
                s.clone()
                    .serve_vminsert(l, exec.clone(), ServerConfig::default()),
            )
            .detach();
            addrs.push(addr.to_string());
            embedded.push(s);
        }
        addrs
    } else {
        f.list("storageNode").to_vec()
    };
    if let Err(e) = shardgate::storage::validate_storage_nodes(&storage_nodes) {
        fatal!("{e}");
    }

    let max_concurrent = match f.int("maxConcurrentInserts") {
        n if n > 0 => n as usize,
        _ => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let dial = DialConfig {
        dial_timeout: f.duration("vmstorageDialTimeout"),
        user_timeout: f.duration("vmstorageUserTimeout"),
        enable_tcp6: f.bool("enableTCP6"),
    };
    let node_count = storage_nodes.len();
    let storage = Storage::start(gateway_config(&f, storage_nodes), dial, exec.clone())
        .unwrap_or_else(|e| fatal!("{e}"));
    let metrics = Arc::new(Registry::new());
    let limiter = Limiter::new(max_concurrent);
    let ingest = Arc::new(IngestShared::new(
        ingest_config,
        metrics.clone(),
        storage.clone(),
        FormatConfig::from_flags(&f).unwrap_or_else(|e| fatal!("{e}")),
        per_request_push_threshold(&f, max_concurrent, node_count),
        f.duration("insert.maxQueueDuration"),
        f.str("relabelConfig").to_string(),
        f.bool("usePromCompatibleNaming"),
    ));

    let export: Option<Box<dyn Fn(bool) -> String + Send + Sync>> = if embedded.is_empty() {
        None
    } else {
        let nodes = embedded.clone();
        Some(Box::new(move |raw| {
            let rows: Vec<_> = nodes.iter().flat_map(|n| n.rows()).collect();
            if raw {
                standin::export_raw_lines(&rows)
            } else {
                standin::export_json_lines(&rows)
            }
        }))
    };
    let flag_entries = f.entries();
    let stats_storage = storage.clone();
    let app = Arc::new(App {
        cfg: HttpConfig {
            path_prefix: f.str("http.pathPrefix").to_string(),
            multitenancy_via_headers: f.bool("enableMultitenancyViaHeaders"),
            max_insert_request_size: f.bytes("maxInsertRequestSize") as usize,
            max_queue_duration: f.duration("insert.maxQueueDuration"),
            enable_metadata: f.bool("enableMetadata"),
            body_read_timeout: f
                .duration("http.idleConnTimeout")
                .max(Duration::from_secs(1)),
        },
        metrics: metrics.clone(),
        limiter: limiter.clone(),
        storage: storage.clone(),
        ingest: ingest.clone(),
        healthy: AtomicBool::new(true),
        flags_text: f.render(),
        extra_metrics: Box::new(move |out| {
            let (stats, gauges) = stats_storage.with_gateway(|gw| {
                let r = gw.router();
                let gauges: Vec<_> = (0..r.node_count()).map(|i| r.node_gauges(i)).collect();
                (r.stats().clone(), gauges)
            });
            shardgate::metrics::render_router(
                out,
                "metric_rows",
                stats_storage.addrs(),
                &stats,
                &gauges,
            );
            for (name, value, set) in &flag_entries {
                out.push_str(&format!(
                    "flag{{name=\"{name}\",value=\"{}\",is_set=\"{set}\"}} 1\n",
                    shardgate::metrics::escape(value)
                ));
            }
        }),
        export,
        start,
    });

    let ctl = ServerControl::new();
    let limits = ServerLimits {
        keep_alive: !f.bool("http.disableKeepAlive"),
        ..ServerLimits::default()
    };
    let listen: Vec<String> = if f.list("httpListenAddr").is_empty() {
        vec![":8480".into()]
    } else {
        f.list("httpListenAddr").to_vec()
    };
    let mut bound = Vec::new();
    for a in &listen {
        let l = server::bind(a).unwrap_or_else(|e| fatal!("{e}"));
        let local = l.get_ref().local_addr().unwrap_or_else(|e| fatal!("{e}"));
        info!("started server at http://{local}/");
        bound.push(local);
        exec.spawn(server::serve(
            l,
            exec.clone(),
            limits.clone(),
            ctl.clone(),
            app.handler(),
        ))
        .detach();
    }
    let body_read_timeout = f
        .duration("http.idleConnTimeout")
        .max(Duration::from_secs(1));
    let lctx = ListenerCtx {
        ingest: ingest.clone(),
        limiter: limiter.clone(),
        exec: exec.clone(),
    };
    let tsdb_http = Arc::new(OpenTsdbHttp {
        ingest: ingest.clone(),
        limiter: limiter.clone(),
        body_read_timeout,
    });
    let tsdb_limits = ServerLimits {
        header_read_timeout: Duration::from_secs(5),
        ..limits.clone()
    };
    for (flag, proto) in [
        ("graphiteListenAddr", LineProtocol::Graphite),
        ("influxListenAddr", LineProtocol::Influx),
        ("opentsdbListenAddr", LineProtocol::OpenTsdb),
    ] {
        let addr = f.str(flag);
        if addr.is_empty() {
            continue;
        }
        let http = (proto == LineProtocol::OpenTsdb).then(|| (tsdb_http.handler(), ctl.clone()));
        listeners::start_line_listener(&lctx, proto, addr, http)
            .unwrap_or_else(|e| fatal!("-{flag}: {e}"));
    }
    if !f.str("opentsdbHTTPListenAddr").is_empty() {
        let l = server::bind(f.str("opentsdbHTTPListenAddr")).unwrap_or_else(|e| fatal!("{e}"));
        let local = l.get_ref().local_addr().unwrap_or_else(|e| fatal!("{e}"));
        info!("started OpenTSDB HTTP server at http://{local}/");
        exec.spawn(server::serve(
            l,
            exec.clone(),
            tsdb_limits,
            ctl.clone(),
            tsdb_http.handler(),
        ))
        .detach();
    }
    if !f.str("clusternativeListenAddr").is_empty() {
        let l = server::bind(f.str("clusternativeListenAddr")).unwrap_or_else(|e| fatal!("{e}"));
        let local = l.get_ref().local_addr().unwrap_or_else(|e| fatal!("{e}"));
        info!("accepting clusternative connections at {local}");
        let cfg = ServerConfig {
            handshake_timeout: f.duration("rpc.handshakeTimeout"),
            ..ServerConfig::default()
        };
        exec.spawn(listeners::serve_clusternative(lctx.clone(), l, cfg))
            .detach();
    }
    if !embedded.is_empty() {
        let a = bound.first().map(|a| a.to_string()).unwrap_or_default();
        info!(
            "no -storageNode given: running two embedded stand-in storage nodes under {:?}; send data to http://{a}/insert/0/prometheus/api/v1/import/prometheus (or /insert/0/prometheus/api/v1/write) and read it back from http://{a}/api/v1/export",
            f.str("storageDataPath")
        );
    }

    let signals = shardgate::runtime::signals(&[
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]);
    let shutdown_delay = f.duration("http.shutdownDelay");
    let grace = f.duration("http.maxGracefulShutdownDuration");
    let flush = f.duration("rpc.shutdownFlushTimeout");
    let relabel = f.str("relabelConfig").to_string();
    let reload = ingest.clone();
    let check_every = f.duration("relabelConfigCheckInterval");
    if !relabel.is_empty() && !check_every.is_zero() {
        let ingest = ingest.clone();
        exec.spawn(async move {
            loop {
                async_io::Timer::after(check_every).await;
                ingest.reload_relabel_if_changed();
            }
        })
        .detach();
    }
    smol::block_on(exec.run(async move {
        while let Ok(sig) = signals.recv().await {
            if sig == signal_hook::consts::SIGHUP {
                if relabel.is_empty() {
                    info!("received SIGHUP; -relabelConfig is not set, nothing to reload");
                } else {
                    info!("received SIGHUP; reloading -relabelConfig={relabel:?}");
                    // A failure is logged and counted there; the old rules stay.
                    let _ = reload.reload_relabel();
                }
                continue;
            }
            info!("received signal {sig}; starting graceful shutdown");
            break;
        }
        app.healthy.store(false, std::sync::atomic::Ordering::SeqCst);
        if !shutdown_delay.is_zero() {
            info!("waiting -http.shutdownDelay={shutdown_delay:?} with /health answering 503");
            async_io::Timer::after(shutdown_delay).await;
        }
        ctl.stop_accepting();
        if !ctl.wait_idle(grace).await {
            warn!("{} requests still in flight after -http.maxGracefulShutdownDuration={grace:?}", ctl.in_flight());
        }
        info!("flushing buffered rows to storage nodes (up to -rpc.shutdownFlushTimeout={flush:?})");
        let drained = storage.shutdown(flush).await;
        let (dropped, pending) = storage.with_gateway(|gw| {
            let r = gw.router();
            let pending: u64 = (0..r.node_count()).map(|i| r.node_gauges(i).rows_pending).sum();
            (r.stats().rows_dropped_total(), pending)
        });
        if drained && dropped == 0 {
            info!("all buffered rows were delivered; exiting");
        } else {
            warn!("graceful shutdown: {pending} rows still buffered and {dropped} rows dropped in total were not delivered to storage nodes (-rpc.shutdownFlushTimeout={flush:?})");
        }
    }));
}
