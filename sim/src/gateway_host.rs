//! A gateway: the real core ([`Gateway`]) behind a glue that mirrors the smol shell. One task
//! per storage connection (`ConnId`) carries bytes both ways; a driver loop drains
//! `poll_output` and sleeps until `poll_timeout` or until a task wakes it; one task per client
//! connection parses requests with the core's Prometheus text parser into a batch and pushes it.
//! Nothing here decides where a row goes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use shardgate_core::formats::prometheus_text::{parse_body, PromTextOptions};
use shardgate_core::formats::Sink;
use shardgate_core::gateway::{ConnId, Gateway, GatewayConfig, Output, PushError};
use shardgate_core::model::{Label, Sample, Tenant};
use shardgate_core::route::{Batch, Placement, ShardKey};
use shardgate_core::stats::RouterStats;
use shardgate_core::wire::row::decode_block;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};
use turmoil::net::{TcpListener, TcpStream};

use crate::ledger::{ConnKey, GatewayCounters, RowKey, Shared};
use crate::world::{now, tokio_deadline};

/// The port clients push to.
pub const CLIENT_PORT: u16 = 8480;
/// Largest client request the glue reads.
pub const MAX_REQUEST: usize = 1 << 20;
/// Longest a graceful restart waits for the old core to drain: past every request deadline
/// (60 s), so a core that follows its own deadlines always gets there. A core still holding
/// rows then is reported, since the rows it holds would be lost without a count.
const MAX_DRAIN: Duration = Duration::from_secs(90);
/// How often the driver looks at the ledger for a requested restart.
const POLL: Duration = Duration::from_millis(100);
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// Client reply bytes.
pub const REPLY_OK: u8 = 0;
pub const REPLY_SHUTTING_DOWN: u8 = 1;
pub const REPLY_BAD_REQUEST: u8 = 2;

#[derive(Clone)]
pub struct GatewayParams {
    pub index: usize,
    pub name: Rc<str>,
    pub config: GatewayConfig,
}

struct ConnHandle {
    /// Tells the task its bytes (and, by being dropped, that the core closed the connection).
    tx: mpsc::UnboundedSender<Bytes>,
    /// Distinguishes this task from an earlier one for the same `ConnId`.
    id: u64,
}

struct Core {
    gw: Gateway,
    conns: BTreeMap<ConnId, ConnHandle>,
    /// Connections the glue reported closed whose Close or Dial the core has not emitted yet:
    /// output the core queued before it heard of the close may still name them.
    reported_closed: BTreeSet<ConnId>,
    next_conn: u64,
    /// Set while a graceful restart drains the core.
    draining_since: Option<shardgate_core::Time>,
}

struct Host {
    ledger: Shared,
    p: GatewayParams,
    core: RefCell<Core>,
    /// Wakes the driver: something was fed into the core.
    wake: Notify,
    /// Bumped after every driver pass, so pushers blocked on overload retry.
    /// Woken whenever the core may have made room. A `Notify` wakes its waiters in the order
    /// they registered; tokio's `watch` picks a random shard per waiter, which would make the
    /// order of retried pushes differ from process to process.
    progress: Notify,
}

/// The gateway's software; turmoil calls it again if the host is restarted.
pub async fn run(ledger: Shared, p: GatewayParams) -> turmoil::Result {
    ledger.borrow_mut().event(&p.name, format_args!("start"));
    let core = Core {
        gw: Gateway::new(p.config.clone(), now()),
        conns: BTreeMap::new(),
        reported_closed: BTreeSet::new(),
        next_conn: 0,
        draining_since: None,
    };
    let host = Rc::new(Host {
        ledger,
        p,
        core: RefCell::new(core),
        wake: Notify::new(),
        progress: Notify::new(),
    });
    let listener = TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    tokio::task::spawn_local(accept_clients(host.clone(), listener));
    drive(host).await
}

async fn drive(host: Rc<Host>) -> turmoil::Result {
    loop {
        let deadline = {
            let mut core = host.core.borrow_mut();
            let t = now();
            if core.gw.poll_timeout().is_some_and(|d| d <= t) {
                core.gw.handle_timeout(t);
                host.progress.notify_waiters();
            }
            drain_outputs(&host, &mut core);
            restart_step(&host, &mut core);
            sample(&host, &core.gw);
            core.gw.poll_timeout()
        };
        let sleep = match deadline {
            Some(d) => tokio::time::sleep_until(tokio_deadline(d)),
            None => tokio::time::sleep(POLL),
        };
        tokio::select! {
            biased;
            _ = host.wake.notified() => {}
            _ = sleep => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

fn drain_outputs(host: &Rc<Host>, core: &mut Core) {
    while let Some(out) = core.gw.poll_output() {
        match out {
            Output::Dial(conn) => {
                let (tx, rx) = mpsc::unbounded_channel();
                core.reported_closed.remove(&conn);
                core.next_conn += 1;
                let id = core.next_conn;
                if core.conns.insert(conn, ConnHandle { tx, id }).is_some() {
                    anomaly(host, format!("dial of {conn:?} while it is open"));
                }
                event(host, format_args!("dial {conn:?}"));
                tokio::task::spawn_local(conn_task(host.clone(), conn, id, rx));
            }
            Output::Transmit(conn, bytes) => match core.conns.get(&conn) {
                Some(h) => {
                    let _ = h.tx.send(bytes);
                }
                None if core.reported_closed.contains(&conn) => {}
                None => anomaly(host, format!("transmit on {conn:?}, which is not open")),
            },
            Output::Close(conn) => {
                event(host, format_args!("close {conn:?}"));
                core.conns.remove(&conn);
                core.reported_closed.remove(&conn);
            }
        }
    }
}

/// A graceful restart: stop taking pushes, drain, then start a fresh core.
fn restart_step(host: &Rc<Host>, core: &mut Core) {
    let t = now();
    let requested = host.ledger.borrow().restart_gateway[host.p.index];
    match core.draining_since {
        None if requested => {
            event(host, format_args!("graceful restart: begin shutdown"));
            core.gw.begin_shutdown(t);
            core.draining_since = Some(t);
            drain_outputs(host, core);
        }
        Some(since) if core.gw.is_drained() || t - since >= MAX_DRAIN => {
            let c = counters(&core.gw);
            if !core.gw.is_drained() {
                anomaly(
                    host,
                    format!(
                        "core not drained {MAX_DRAIN:?} after begin_shutdown ({} bytes buffered)",
                        c.buffered_bytes
                    ),
                );
            }
            {
                let mut l = host.ledger.borrow_mut();
                l.finished_gateways.push(c);
                l.current_gateways.remove(&host.p.index);
                l.restart_gateway[host.p.index] = false;
            }
            event(
                host,
                format_args!(
                    "graceful restart: drained={} after {:?}",
                    core.gw.is_drained(),
                    t - since
                ),
            );
            // Dropping the handles ends the connection tasks: the old core is gone.
            core.conns.clear();
            core.reported_closed.clear();
            core.gw = Gateway::new(host.p.config.clone(), t);
            core.draining_since = None;
        }
        _ => {}
    }
}

async fn conn_task(host: Rc<Host>, conn: ConnId, id: u64, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let current = |host: &Host| {
        host.core
            .borrow()
            .conns
            .get(&conn)
            .is_some_and(|h| h.id == id)
    };
    let addr = host.core.borrow().gw.placement().nodes()[conn.node].clone();
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(addr.as_str())).await {
        Ok(Ok(s)) => s,
        _ => {
            if current(&host) {
                event(&host, format_args!("dial {conn:?} failed"));
                let mut core = host.core.borrow_mut();
                core.conns.remove(&conn);
                core.reported_closed.insert(conn);
                core.gw.handle_dial_failed(conn, now());
                fed(&host);
            }
            return;
        }
    };
    let key: ConnKey = match (stream.local_addr(), stream.peer_addr()) {
        (Ok(l), Ok(p)) => (l, p),
        _ => return,
    };
    if !current(&host) {
        return;
    }
    event(&host, format_args!("dialed {conn:?} from {}", key.0));
    host.core.borrow_mut().gw.handle_dialed(conn, now());
    fed(&host);
    let epoch = host.ledger.borrow().node_faults[conn.node].reset_epoch;
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            biased;
            // A healed partition that lost segments: turmoil never retransmits, so this
            // connection has a hole; real TCP's user timeout would have killed it.
            _ = tokio::time::sleep(POLL) => {
                if host.ledger.borrow().node_faults[conn.node].reset_epoch != epoch {
                    event(&host, format_args!("fault: {conn:?} reset after partition"));
                    break;
                }
            }
            bytes = rx.recv() => {
                let Some(bytes) = bytes else { return };
                if cut_mid_block(&host, conn.node, bytes.len()) {
                    let _ = wr.write_all(&bytes[..bytes.len() / 2]).await;
                    event(&host, format_args!("fault: cut {conn:?} mid-block"));
                    break;
                }
                if wr.write_all(&bytes).await.is_err() {
                    break;
                }
            }
            r = rd.read(&mut buf) => {
                let n = match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if !current(&host) {
                    return;
                }
                // Counted only once handed to the core: the accounting checker holds the core
                // responsible for exactly the acks it was given.
                *host.ledger.borrow_mut().received.entry(key).or_default() += n as u64;
                host.core.borrow_mut().gw.handle_input(conn, &buf[..n], now());
                fed(&host);
            }
        }
    }
    if current(&host) {
        event(&host, format_args!("connection {conn:?} closed"));
        let mut core = host.core.borrow_mut();
        core.conns.remove(&conn);
        core.reported_closed.insert(conn);
        core.gw.handle_closed(conn, now());
        fed(&host);
    }
}

/// Whether this write is the one a `CutMidBlock` fault cuts: only requests (longer than any
/// handshake message) count.
fn cut_mid_block(host: &Host, node: usize, len: usize) -> bool {
    let mut l = host.ledger.borrow_mut();
    let f = &mut l.node_faults[node];
    if f.cut_mid_block > 0 && len > 16 {
        f.cut_mid_block -= 1;
        return true;
    }
    false
}

async fn accept_clients(host: Rc<Host>, listener: TcpListener) {
    while let Ok((stream, _)) = listener.accept().await {
        tokio::task::spawn_local(client_conn(host.clone(), stream));
    }
}

/// One client connection: requests are `u32be len | u32be account | u32be project | text`,
/// each answered by one byte.
async fn client_conn(host: Rc<Host>, mut stream: TcpStream) {
    let mut body = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(8..=MAX_REQUEST).contains(&len) {
            let _ = stream.write_all(&[REPLY_BAD_REQUEST]).await;
            return;
        }
        body.resize(len, 0);
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let reply = handle_request(&host, &body).await;
        if stream.write_all(&[reply]).await.is_err() {
            return;
        }
    }
}

async fn handle_request(host: &Rc<Host>, body: &[u8]) -> u8 {
    let tenant = Tenant::new(
        u32::from_be_bytes(body[0..4].try_into().expect("4 bytes")),
        u32::from_be_bytes(body[4..8].try_into().expect("4 bytes")),
    );
    let (mut batch, placement) = {
        let core = host.core.borrow();
        (core.gw.new_batch(), core.gw.placement().clone())
    };
    let mut sink = BatchSink {
        batch: &mut batch,
        placement: &placement,
        tenant,
    };
    let ts = now().as_micros() as i64 / 1000;
    if parse_body(&body[8..], PromTextOptions::new(ts), &mut sink).is_err() {
        return REPLY_BAD_REQUEST;
    }
    let mut waiting = batch_rows(&batch);
    loop {
        let progress = host.progress.notified();
        tokio::pin!(progress);
        progress.as_mut().enable();
        let result = {
            let mut core = host.core.borrow_mut();
            let result = core.gw.push(&mut batch, now());
            drain_outputs(host, &mut core);
            sample(host, &core.gw);
            result
        };
        let left = batch_rows(&batch);
        record_accepted(host, &waiting, &left, result);
        waiting = left;
        match result {
            Ok(()) => return REPLY_OK,
            Err(PushError::ShuttingDown) => return REPLY_SHUTTING_DOWN,
            // vminsert blocks the request until the router makes room.
            Err(PushError::Overload) => {
                progress.await;
            }
        }
    }
}

/// Rows still in the batch, with how many times each appears.
fn batch_rows(batch: &Batch) -> BTreeMap<RowKey, u32> {
    let mut out = BTreeMap::new();
    for node in batch.nodes() {
        for r in decode_block(&node.bytes).flatten() {
            *out.entry(RowKey::new(r.metric_name, r.sample)).or_default() += 1;
        }
    }
    out
}

fn record_accepted(
    host: &Host,
    before: &BTreeMap<RowKey, u32>,
    after: &BTreeMap<RowKey, u32>,
    result: Result<(), PushError>,
) {
    let mut l = host.ledger.borrow_mut();
    let mut taken = 0u64;
    for (row, &n) in before {
        let k = n - after.get(row).copied().unwrap_or(0).min(n);
        if k > 0 {
            *l.accepted.entry(*row).or_default() += k;
            taken += u64::from(k);
        }
    }
    l.event(
        &host.p.name,
        format_args!(
            "push {} rows: took {taken}, {result:?}",
            before.values().sum::<u32>()
        ),
    );
}

struct BatchSink<'a> {
    batch: &'a mut Batch,
    placement: &'a Placement,
    tenant: Tenant,
}

impl Sink for BatchSink<'_> {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.batch.add_series(
            self.placement,
            self.tenant,
            labels,
            ShardKey::MetricName,
            samples,
        );
    }
}

/// Record the core's counters and the buffered-bytes high-water mark.
fn sample(host: &Host, gw: &Gateway) {
    let c = counters(gw);
    let mut l = host.ledger.borrow_mut();
    if c.buffered_bytes > l.max_buffered.0 {
        l.max_buffered = (c.buffered_bytes, turmoil::sim_elapsed().unwrap_or_default());
    }
    l.current_gateways.insert(host.p.index, c);
}

/// The gateway's counters in the checkers' terms.
pub fn counters(gw: &Gateway) -> GatewayCounters {
    from_router_stats(gw.router().stats(), gw.router().buffered_bytes())
}

/// Map the router's metric-rows counters onto what the checkers use.
pub fn from_router_stats(s: &RouterStats, buffered_bytes: usize) -> GatewayCounters {
    let per_node =
        |f: fn(&shardgate_core::stats::NodeStats) -> u64| s.nodes.iter().map(f).sum::<u64>();
    GatewayCounters {
        rows_pushed: per_node(|n| n.rows_pushed_total),
        rows_sent: per_node(|n| n.rows_sent_total),
        rerouted_rows: per_node(|n| n.rows_rerouted_from_here_total),
        dropped_on_overload: per_node(|n| {
            n.rows_dropped_on_overload_total
                + n.rows_dropped_too_large_total
                + n.rows_dropped_on_unsupported_rpc
        }),
        dropped_on_shutdown: s.rows_dropped_on_shutdown_total,
        incompletely_replicated: s.rows_incompletely_replicated_total,
        buffered_bytes: buffered_bytes as u64,
    }
}

/// Something was fed into the core: the driver drains its output, and pushers blocked on
/// overload try again.
fn fed(host: &Host) {
    host.wake.notify_one();
    host.progress.notify_waiters();
}

fn event(host: &Host, what: std::fmt::Arguments<'_>) {
    host.ledger.borrow_mut().event(&host.p.name, what);
}

fn anomaly(host: &Host, what: String) {
    let mut l = host.ledger.borrow_mut();
    l.event(&host.p.name, format_args!("ANOMALY {what}"));
    l.anomalies.push(format!("{}: {what}", host.p.name));
}
