//! `shardgate-node`: a storage-node stand-in for tests and demos. Not a database.

use std::sync::Arc;

use shardgate::flags::{self, NODE_FLAGS};
use shardgate::http::server::{self, ServerControl, ServerLimits};
use shardgate::standin::StandIn;
use shardgate::{fatal, info};
use shardgate_core::wire::ServerConfig;

const ABOUT: &str = "shardgate-node is a STAND-IN for a VictoriaMetrics storage node, for tests and demos. \
It is NOT a database: it accepts vminsert connections, appends every rows block to one log file \
(fsynced before the ack), keeps all rows in memory and returns them from /api/v1/export (JSON lines, \
one per series) and /api/v1/export/raw (one line per row with exact bits). It has no retention, \
no deduplication, no index and no query language.";

fn main() {
    let f = flags::parse_or_exit(NODE_FLAGS, ABOUT);
    if let Err(e) = shardgate::log::set_level(f.str("loggerLevel")) {
        fatal!("{e}");
    }
    let standin = match StandIn::open(
        std::path::Path::new(f.str("storageDataPath")),
        f.bool("readOnly"),
    ) {
        Ok(s) => s,
        Err(e) => fatal!(
            "cannot open -storageDataPath={:?}: {e}",
            f.str("storageDataPath")
        ),
    };
    let exec = shardgate::runtime::executor();
    let vminsert = server::bind(f.str("vminsertAddr")).unwrap_or_else(|e| fatal!("{e}"));
    let http_addrs: Vec<String> = if f.list("httpListenAddr").is_empty() {
        vec![":8482".into()]
    } else {
        f.list("httpListenAddr").to_vec()
    };
    let cfg = ServerConfig {
        handshake_timeout: f.duration("rpc.handshakeTimeout"),
        ..ServerConfig::default()
    };
    info!(
        "accepting vminsert connections at {}",
        vminsert
            .get_ref()
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default()
    );
    exec.spawn(standin.clone().serve_vminsert(vminsert, exec.clone(), cfg))
        .detach();
    let ctl = ServerControl::new();
    for a in &http_addrs {
        let l = server::bind(a).unwrap_or_else(|e| fatal!("{e}"));
        info!(
            "serving the stand-in HTTP API at http://{}/api/v1/export",
            l.get_ref()
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        exec.spawn(server::serve(
            l,
            exec.clone(),
            ServerLimits::default(),
            ctl.clone(),
            standin.http_handler(),
        ))
        .detach();
    }
    let signals = shardgate::runtime::signals(&[
        signal_hook::consts::SIGUSR1,
        signal_hook::consts::SIGUSR2,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]);
    let s = Arc::clone(&standin);
    smol::block_on(exec.run(async move {
        while let Ok(sig) = signals.recv().await {
            match sig {
                signal_hook::consts::SIGUSR1 => s.set_read_only(true),
                signal_hook::consts::SIGUSR2 => s.set_read_only(false),
                _ => {
                    info!("received signal {sig}; stopping (every acked row is already on disk)");
                    return;
                }
            }
        }
    }));
}
