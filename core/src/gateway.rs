//! The whole gateway as one state machine: the router plus one storage-node connection per
//! (node, bucket). The shell and the simulator drive exactly this type: they dial when told,
//! carry bytes both ways and pass the time. Every decision is made here.
//!
//! Driving it: right after [`Gateway::new`] and after every `handle_*` call or
//! [`Gateway::push`], drain [`Gateway::poll_output`] until it returns `None` (the first dials
//! are queued by `new`), then sleep until [`Gateway::poll_timeout`] (or until the next input)
//! and call [`Gateway::handle_timeout`].
//!
//! Connection events are only meaningful for the socket the gateway last asked for. After it
//! emits [`Output::Close`] for a connection it ignores input and close reports for that
//! connection until the driver answers a later [`Output::Dial`]; a driver that handles one
//! connection's commands and socket in one sequential task satisfies this by construction.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::route::router::{self, FailReason, NodeEvent, Router, RouterConfig};
use crate::route::{Batch, Placement, PlacementKind};
use crate::time::Time;
use crate::wire::link::{LinkConfig, LinkError, LinkEvent, NodeLink, SendError};

pub use crate::route::router::PushError;
pub use crate::wire::codec::Bucket;

/// How long a storage node that answered "rpcName is not supported" is left alone.
const UNSUPPORTED_RPC_BACKOFF: Duration = Duration::from_secs(120);

/// One TCP connection the gateway wants: to storage node `node` (index in placement order) for
/// one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId {
    pub node: usize,
    pub bucket: Bucket,
}

#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `-storageNode` values exactly as given.
    pub storage_nodes: Vec<String>,
    pub placement: PlacementKind,
    /// 0, or `LOWER_LEVEL_SEED` when `-clusternativeListenAddr` is set.
    pub seed: u64,
    /// Buffers, replication, rerouting and overload policy of the metric rows bucket.
    pub router: RouterConfig,
    /// `-enableMetadata`: open the metadata connections and forward metrics metadata. The
    /// metadata bucket uses the rows bucket's settings, as vminsert does.
    pub enable_metadata: bool,
    /// `-rpc.handshakeTimeout`.
    pub handshake_timeout: Duration,
    /// `-rpc.disableCompression` (legacy connections only).
    pub disable_compression: bool,
    /// First delay before re-dialing a node whose dial or handshake failed; it doubles on each
    /// failure up to `max_redial_interval` and resets on success. vminsert re-dials every
    /// 200 ms; the cap keeps a long outage from costing a dial storm per gateway.
    pub redial_interval: Duration,
    pub max_redial_interval: Duration,
}

impl GatewayConfig {
    pub fn new(storage_nodes: Vec<String>) -> GatewayConfig {
        GatewayConfig {
            storage_nodes,
            placement: PlacementKind::Rendezvous,
            seed: 0,
            router: RouterConfig::default(),
            enable_metadata: true,
            handshake_timeout: Duration::from_secs(5),
            disable_compression: false,
            redial_interval: Duration::from_millis(200),
            max_redial_interval: Duration::from_secs(2),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection for `ConnId`; report `handle_dialed` or `handle_dial_failed`.
    Dial(ConnId),
    /// Write these bytes, in order, on the connection.
    Transmit(ConnId, Bytes),
    /// Close the connection.
    Close(ConnId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    /// No socket. Dial at `redial_at`.
    Down { redial_at: Time },
    /// A `Dial` was emitted and not answered yet.
    Dialing,
    /// The socket is up (handshaking or ready).
    Open,
}

struct Conn {
    id: ConnId,
    link: NodeLink,
    state: ConnState,
    backoff: Duration,
}

/// One bucket: its router and one connection per storage node.
struct Lane {
    router: Router,
    conns: Vec<Conn>,
}

pub struct Gateway {
    placement: Arc<Placement>,
    /// The metric rows lane first, then the metadata lane when metadata is enabled.
    lanes: Vec<Lane>,
    out: VecDeque<Output>,
    redial_interval: Duration,
    max_redial_interval: Duration,
    metadata_dropped: u64,
}

impl Gateway {
    pub fn new(config: GatewayConfig, now: Time) -> Gateway {
        let placement = Arc::new(Placement::new(
            &config.storage_nodes,
            config.placement,
            config.seed,
        ));
        let mut buckets = vec![Bucket::Rows];
        if config.enable_metadata {
            buckets.push(Bucket::Metadata);
        }
        let lanes = buckets
            .into_iter()
            .map(|bucket| {
                let mut router_config = config.router.clone();
                router_config.bucket = bucket;
                if bucket == Bucket::Metadata {
                    // Only metric rows are ever dropped on overload (sharding spec §7), and the
                    // simulator's deliberate bugs target the rows lane alone.
                    router_config.drop_samples_on_overload = false;
                    router_config.fault = None;
                }
                let conns = (0..placement.len())
                    .map(|node| {
                        let mut link_config = LinkConfig::new(bucket);
                        link_config.handshake_timeout = config.handshake_timeout;
                        link_config.disable_compression = config.disable_compression;
                        Conn {
                            id: ConnId { node, bucket },
                            link: NodeLink::new(link_config),
                            state: ConnState::Down { redial_at: now },
                            backoff: config.redial_interval,
                        }
                    })
                    .collect();
                Lane {
                    router: Router::new(placement.clone(), router_config, now),
                    conns,
                }
            })
            .collect();
        let mut gw = Gateway {
            placement,
            lanes,
            out: VecDeque::new(),
            redial_interval: config.redial_interval,
            max_redial_interval: config.max_redial_interval,
            metadata_dropped: 0,
        };
        gw.dial_due(now);
        gw
    }

    /// Placement for building batches (`Batch::add_series`).
    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// A fresh batch sized for this cluster.
    pub fn new_batch(&self) -> Batch {
        Batch::new(self.placement.len())
    }

    /// The metric rows router: its counters and per-node gauges feed /metrics.
    pub fn router(&self) -> &Router {
        &self.lanes[0].router
    }

    /// The metadata router, when `-enableMetadata` is on.
    pub fn metadata_router(&self) -> Option<&Router> {
        self.lanes.get(1).map(|l| &l.router)
    }

    /// Metadata rows dropped because the metadata connections could not take them when pushed.
    pub fn metadata_dropped_total(&self) -> u64 {
        self.metadata_dropped
    }

    /// Hand a batch's rows (and metadata) to the storage nodes' buffers. On `Overload` the
    /// batch keeps what was not taken: call again after the gateway has made progress.
    pub fn push(&mut self, batch: &mut Batch, now: Time) -> Result<(), PushError> {
        let result = self.lanes[0].router.push(batch, now);
        if let Some(md) = batch.metadata_mut() {
            match self.lanes.get_mut(1) {
                Some(lane) => {
                    // Metadata never holds up a request: what its lane cannot take now (its
                    // nodes are all down, or answer "rpcName is not supported" like v1.129)
                    // is dropped and counted, where vminsert would block every request that
                    // carries metadata (wire-protocol.md §9).
                    if lane.router.push(md, now) == Err(PushError::Overload) {
                        self.metadata_dropped += md.rows();
                        md.clear();
                    }
                }
                // Metadata is off: what the parsers found is not forwarded.
                None => md.clear(),
            }
        }
        self.pump(now);
        result
    }

    pub fn handle_dialed(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.state != ConnState::Dialing {
            return;
        }
        c.state = ConnState::Open;
        c.link.handle_connected(now);
        self.pump(now);
    }

    pub fn handle_dial_failed(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.state != ConnState::Dialing {
            return;
        }
        if c.link.is_connected() {
            // The re-dial of a legacy fallback failed: the link turns that into a handshake
            // failure, which the event path handles.
            c.link.handle_closed(now);
        } else {
            c.state = ConnState::Open;
            self.fail_conn(conn, FailReason::Dial, None, now, None);
        }
        self.pump(now);
    }

    pub fn handle_input(&mut self, conn: ConnId, bytes: &[u8], now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.state != ConnState::Open {
            return;
        }
        c.link.handle_input(bytes, now);
        self.pump(now);
    }

    /// EOF or an I/O error on the connection.
    pub fn handle_closed(&mut self, conn: ConnId, now: Time) {
        let Some(c) = self.conn_mut(conn) else { return };
        if c.state != ConnState::Open {
            return;
        }
        c.link.handle_closed(now);
        self.pump(now);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        for lane in &mut self.lanes {
            lane.router.handle_timeout(now);
            for c in &mut lane.conns {
                if c.state == ConnState::Open {
                    c.link.handle_timeout(now);
                }
            }
        }
        self.dial_due(now);
        self.pump(now);
    }

    /// Stop taking pushes and flush everything; `is_drained` tells when done.
    pub fn begin_shutdown(&mut self, now: Time) {
        for lane in &mut self.lanes {
            lane.router.begin_shutdown(now);
        }
        self.pump(now);
    }

    /// Nothing is buffered or in flight any more.
    pub fn is_drained(&self) -> bool {
        self.lanes.iter().all(|l| l.router.is_drained())
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        self.lanes
            .iter()
            .flat_map(|lane| {
                let links = lane.conns.iter().filter_map(|c| match c.state {
                    ConnState::Down { redial_at } => Some(redial_at),
                    ConnState::Open => c.link.poll_timeout(),
                    ConnState::Dialing => None,
                });
                links.chain(lane.router.poll_timeout())
            })
            .min()
    }

    fn lane_index(bucket: Bucket) -> usize {
        match bucket {
            Bucket::Rows => 0,
            Bucket::Metadata => 1,
        }
    }

    fn conn_mut(&mut self, conn: ConnId) -> Option<&mut Conn> {
        self.lanes
            .get_mut(Self::lane_index(conn.bucket))?
            .conns
            .get_mut(conn.node)
    }

    fn dial_due(&mut self, now: Time) {
        for lane in &mut self.lanes {
            for c in &mut lane.conns {
                if let ConnState::Down { redial_at } = c.state {
                    if redial_at <= now {
                        c.state = ConnState::Dialing;
                        self.out.push_back(Output::Dial(c.id));
                    }
                }
            }
        }
    }

    /// The connection is unusable: close it, tell the router, and schedule the next dial, no
    /// sooner than `not_before` when given.
    fn fail_conn(
        &mut self,
        conn: ConnId,
        reason: FailReason,
        block: Option<u64>,
        now: Time,
        not_before: Option<Duration>,
    ) {
        let lane = &mut self.lanes[Self::lane_index(conn.bucket)];
        let c = &mut lane.conns[conn.node];
        if c.state == ConnState::Open && reason != FailReason::Dial {
            self.out.push_back(Output::Close(c.id));
        }
        let delay = not_before.unwrap_or(c.backoff);
        c.state = ConnState::Down {
            redial_at: now + delay,
        };
        c.backoff = (c.backoff * 2).min(self.max_redial_interval);
        lane.router
            .handle_node_event(conn.node, NodeEvent::Failed { block, reason }, now);
    }

    /// Move everything that can move: router sends into links, link events into the router,
    /// until neither has anything left; then queue the bytes the links want written.
    fn pump(&mut self, now: Time) {
        loop {
            let mut progressed = false;
            for lane in &mut self.lanes {
                while let Some(router::Output::Send {
                    node, block, bytes, ..
                }) = lane.router.poll_output()
                {
                    progressed = true;
                    let event = match lane.conns[node].link.send_block(block, &bytes, now) {
                        Ok(()) => continue,
                        // A legacy storage node cannot take metadata; vminsert drops it as
                        // sent (the router counts it).
                        Err(SendError::MetadataOnLegacy) => NodeEvent::Acked(block),
                        // The router only sends to links it was told are ready and idle; if
                        // they disagree, trust the link and let the block go elsewhere.
                        Err(SendError::NotReady) => NodeEvent::Failed {
                            block: Some(block),
                            reason: FailReason::Connection,
                        },
                    };
                    lane.router.handle_node_event(node, event, now);
                }
            }
            for l in 0..self.lanes.len() {
                for node in 0..self.lanes[l].conns.len() {
                    while let Some(event) = self.lanes[l].conns[node].link.poll_event() {
                        progressed = true;
                        let id = self.lanes[l].conns[node].id;
                        self.handle_link_event(id, event, now);
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        for lane in &mut self.lanes {
            for c in &mut lane.conns {
                while let Some(bytes) = c.link.poll_transmit() {
                    self.out
                        .push_back(Output::Transmit(c.id, Bytes::from(bytes)));
                }
            }
        }
    }

    fn handle_link_event(&mut self, conn: ConnId, event: LinkEvent, now: Time) {
        let l = Self::lane_index(conn.bucket);
        let node = conn.node;
        match event {
            LinkEvent::Redial => {
                self.out.push_back(Output::Close(conn));
                self.out.push_back(Output::Dial(conn));
                self.lanes[l].conns[node].state = ConnState::Dialing;
            }
            LinkEvent::Ready => {
                let c = &mut self.lanes[l].conns[node];
                c.backoff = self.redial_interval;
                let legacy = c.link.is_legacy();
                self.lanes[l]
                    .router
                    .handle_node_event(node, NodeEvent::Ready { legacy }, now);
            }
            LinkEvent::Acked(block) => {
                self.lanes[l]
                    .router
                    .handle_node_event(node, NodeEvent::Acked(block), now)
            }
            LinkEvent::ReadOnly(block) => {
                self.lanes[l]
                    .router
                    .handle_node_event(node, NodeEvent::ReadOnly(block), now)
            }
            LinkEvent::Failed { block, error } => {
                let (reason, wait) = match error {
                    LinkError::Handshake(_) => (FailReason::Handshake, None),
                    LinkError::UnsupportedRpc => {
                        (FailReason::Connection, Some(UNSUPPORTED_RPC_BACKOFF))
                    }
                    LinkError::Connection(_) | LinkError::ServerError(_) => {
                        (FailReason::Connection, None)
                    }
                };
                self.fail_conn(conn, reason, block, now, wait);
            }
        }
    }
}
