//! The router of one bucket: vminsert's netstorage for metric rows (or metadata) without the
//! sockets (sharding-and-replication.md §4–§9, wire-protocol.md §4.1, §6, §8).
//!
//! Rows arrive sorted by home node in a [`Batch`]. Each storage node has a shared buffer; a
//! node's send loop turns the whole buffer into one block and runs one replication job at a
//! time, placing copy 0 on the node itself and copy k on the next nodes in index order. The
//! gateway owns one link per storage node, reports what happens on it as [`NodeEvent`]s and
//! carries out the [`Output::Send`]s. A link carries one request at a time, so a copy that
//! wants a busy link queues for it (first come, first served).
//!
//! Nothing here blocks: where vminsert makes a producer wait, [`Router::push`] returns
//! [`PushError::Overload`] and leaves the rows it could not place in the batch.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::batch::{Batch, NodeRows};
use super::ewma::Saturation;
use super::placement::{series_hash, NodeSet, Placement};
use crate::stats::{NodeGauges, RouterStats};
use crate::time::Time;
use crate::wire::row::decode_row;

/// Identifies one request on one link: every send (copy or probe) gets a fresh id.
pub type BlockId = u64;

/// Which of the two independent sets of buffers and loops (§1) this router is: metric rows, or
/// metadata, which is never dropped on overload, is rerouted by family name and is dropped (as
/// if sent) on a legacy link.
pub use crate::wire::codec::Bucket;

#[derive(Clone, Debug)]
pub struct RouterConfig {
    pub bucket: Bucket,
    /// `-replicationFactor`, clamped to `1..=N`.
    pub replication_factor: usize,
    /// The shared per-node buffer limit (§4): also the largest block sent.
    pub node_buffer_limit: usize,
    /// All buffered bytes (shared buffers, blocks in flight or awaiting retry) stay within this.
    /// Raised to `node_buffer_limit` if smaller, so that one full block always fits.
    pub memory_budget: usize,
    /// How long an idle node's new data waits at most: the send loops' tick (200 ms).
    pub flush_interval: Duration,
    /// `-disableReroutingOnUnavailable`.
    pub disable_rerouting_on_unavailable: bool,
    /// `-dropSamplesOnOverload` (metric rows bucket only).
    pub drop_samples_on_overload: bool,
    /// How often a read-only node is probed with an empty block (30 s).
    pub readonly_probe_interval: Duration,
    /// `-disableRerouting`: no slowness rerouting. Slowness rerouting is only ever on with
    /// `replication_factor <= 1` (§6.2).
    pub disable_slowness_rerouting: bool,
    /// Deliberate bugs for the simulator's invariant checkers. Never set in production.
    #[doc(hidden)]
    pub fault: Option<RouterFault>,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            bucket: Bucket::Rows,
            replication_factor: 1,
            node_buffer_limit: 1 << 20,
            memory_budget: 64 << 20,
            flush_interval: Duration::from_millis(200),
            disable_rerouting_on_unavailable: false,
            drop_samples_on_overload: false,
            readonly_probe_interval: Duration::from_secs(30),
            disable_slowness_rerouting: false,
            fault: None,
        }
    }
}

/// Deliberate bugs, each of which a correct invariant checker must notice.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouterFault {
    /// The first block taken from a shared buffer vanishes without a count (lost rows).
    DropOneBlock,
    /// Jobs stop one copy short of the replication factor and count nothing (under-replication).
    SkipReplica,
    /// The first block fully replicated is sent once more as a new block (duplicates).
    DuplicateOneBlock,
}

/// Why a link failed, for the error counters of wire-protocol.md §8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// TCP connect failed (`vm_rpc_dial_errors_total`).
    Dial,
    /// Handshake failed (`vm_rpc_handshake_errors_total`).
    Handshake,
    /// I/O error, timeout, error reply or unsupported RPC while sending or probing
    /// (`vm_rpc_connection_errors_total`).
    Connection,
}

/// What the gateway saw on a storage node's link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Dial and handshake succeeded: the node is no longer broken (it stays read-only if it
    /// was). `legacy`: the link speaks `vminsert.02`, which cannot carry metadata.
    Ready { legacy: bool },
    /// The node acknowledged this block (or probe).
    Acked(BlockId),
    /// The node answered read-only to this block (or probe) and discarded it.
    ReadOnly(BlockId),
    /// The link is down; whatever was in flight on it (`block`, if any) was not acknowledged.
    Failed {
        block: Option<BlockId>,
        reason: FailReason,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `bytes` (an uncompressed block of `rows` rows) to storage node `node` and report
    /// the outcome with `block`. Empty `bytes` is a read-only probe.
    Send {
        node: usize,
        block: BlockId,
        bytes: Bytes,
        rows: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushError {
    /// Not everything could be placed now; the batch keeps the rest. Retry after the next
    /// event or timeout has been handled (vminsert's producers would block here).
    Overload,
    /// Graceful shutdown has begun: the request gets HTTP 503.
    ShuttingDown,
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PushError::Overload => "storage nodes cannot take more data now",
            PushError::ShuttingDown => {
                "cannot send data to storage nodes because of graceful shutdown"
            }
        })
    }
}

impl std::error::Error for PushError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Copy { owner: usize },
    Probe,
}

#[derive(Clone, Copy, Debug)]
struct InFlight {
    block: BlockId,
    purpose: Purpose,
    since: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    /// Between two steps of the attempt loop; never seen outside a call.
    Deciding,
    /// The chosen replica is ready but its link is busy; `seq` orders the queue.
    WaitLink {
        target: usize,
        seq: u64,
    },
    InFlight {
        target: usize,
    },
    /// No copy stored after N attempts: the whole block goes again at the next tick.
    Retry,
}

/// One run of §5.1 `send_to_replicas` for a block of the owner's shared buffer.
#[derive(Debug)]
struct Job {
    block: Bytes,
    rows: u64,
    copy: usize,
    next: usize,
    attempts: usize,
    used: NodeSet,
    state: JobState,
}

#[derive(Debug)]
struct Node {
    broken: bool,
    /// No dial has finished yet (neither `Ready` nor `Failed`). vminsert's nodes start out
    /// ready and buffer until their first dial, so rows for such a node wait instead of being
    /// rerouted: a gateway that just started must not scatter series away from home.
    first_dial_pending: bool,
    read_only: bool,
    legacy: bool,
    shared: Vec<u8>,
    shared_rows: u64,
    spare: Vec<u8>,
    job: Option<Job>,
    link: Option<InFlight>,
    next_probe: Option<Time>,
    saturation: Saturation,
    last_attempt_end: Time,
}

pub struct Router {
    placement: Arc<Placement>,
    config: RouterConfig,
    replicas: usize,
    slowness_rerouting: bool,
    nodes: Vec<Node>,
    buffered: usize,
    next_block: BlockId,
    next_seq: u64,
    next_tick: Time,
    shutting_down: bool,
    out: VecDeque<Output>,
    stats: RouterStats,
    fault_armed: bool,
}

impl Router {
    /// Every node starts broken: nothing is sent to it before its link reports
    /// [`NodeEvent::Ready`].
    pub fn new(placement: Arc<Placement>, mut config: RouterConfig, now: Time) -> Router {
        let n = placement.len().max(1);
        let replicas = config.replication_factor.clamp(1, n);
        config.node_buffer_limit = config.node_buffer_limit.max(1);
        config.memory_budget = config.memory_budget.max(config.node_buffer_limit);
        if config.flush_interval.is_zero() {
            config.flush_interval = Duration::from_millis(200);
        }
        if config.readonly_probe_interval.is_zero() {
            config.readonly_probe_interval = Duration::from_secs(30);
        }
        let slowness_rerouting = !config.disable_slowness_rerouting && replicas <= 1;
        let nodes = (0..n)
            .map(|_| Node {
                broken: true,
                first_dial_pending: true,
                read_only: false,
                legacy: false,
                shared: Vec::new(),
                shared_rows: 0,
                spare: Vec::new(),
                job: None,
                link: None,
                next_probe: None,
                saturation: Saturation::default(),
                last_attempt_end: now,
            })
            .collect();
        Router {
            placement,
            replicas,
            slowness_rerouting,
            nodes,
            buffered: 0,
            next_block: 1,
            next_seq: 0,
            next_tick: now + config.flush_interval,
            shutting_down: false,
            out: VecDeque::new(),
            stats: RouterStats::new(n),
            fault_armed: config.fault.is_some(),
            config,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    pub fn placement(&self) -> &Arc<Placement> {
        &self.placement
    }

    /// The effective replication factor (clamped to `1..=N`).
    pub fn replicas(&self) -> usize {
        self.replicas
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Not broken and not read-only.
    pub fn is_ready(&self, node: usize) -> bool {
        self.nodes
            .get(node)
            .is_some_and(|s| !s.broken && !s.read_only)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Bytes held: shared buffers plus blocks in flight or awaiting retry.
    pub fn buffered_bytes(&self) -> usize {
        self.buffered
    }

    /// Nothing buffered and nothing in flight.
    pub fn is_drained(&self) -> bool {
        self.buffered == 0 && self.nodes.iter().all(|s| s.job.is_none())
    }

    pub fn stats(&self) -> &RouterStats {
        &self.stats
    }

    pub fn node_gauges(&self, node: usize) -> NodeGauges {
        let s = &self.nodes[node];
        NodeGauges {
            rows_pending: s.shared_rows,
            buf_pending_bytes: s.shared.len() as u64,
            is_reachable: !s.broken,
            is_read_only: s.read_only,
        }
    }

    /// The saturation average of a node's link (0 while warming up), §6.2.
    pub fn saturation(&self, node: usize) -> f64 {
        self.nodes[node].saturation.value()
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The next moment [`Router::handle_timeout`] has work: a flush tick while some data or a
    /// failed block waits for one, or a read-only probe.
    pub fn poll_timeout(&self) -> Option<Time> {
        let tick_needed = self.nodes.iter().any(|s| match &s.job {
            None => !s.shared.is_empty(),
            Some(j) => j.state == JobState::Retry,
        });
        let tick = tick_needed.then_some(self.next_tick);
        let probe = if self.shutting_down {
            None
        } else {
            self.nodes
                .iter()
                .filter(|s| s.read_only)
                .filter_map(|s| s.next_probe)
                .min()
        };
        match (tick, probe) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Move the rows of `batch` towards their storage nodes. On error the batch keeps exactly
    /// the rows not yet placed (none are lost or placed twice), so the caller can retry.
    ///
    /// `_now` is unused today: rows pushed to an idle node wait for the next tick, so a push
    /// never sends by itself. It stays for symmetry and for time-based admission later.
    pub fn push(&mut self, batch: &mut Batch, _now: Time) -> Result<(), PushError> {
        if self.shutting_down {
            return Err(PushError::ShuttingDown);
        }
        let mut overloaded = false;
        debug_assert_eq!(
            batch.nodes().len(),
            self.nodes.len(),
            "batch for another node list"
        );
        for i in 0..batch.nodes().len() {
            if batch.nodes()[i].rows == 0 {
                continue;
            }
            let mut rows = batch.take_node(i);
            self.push_node(i % self.nodes.len(), &mut rows);
            if rows.rows > 0 {
                overloaded = true;
            } else {
                rows.bytes.clear();
            }
            batch.put_node(i, rows);
        }
        if overloaded {
            Err(PushError::Overload)
        } else {
            Ok(())
        }
    }

    /// §6 `push` for node `home`: consumes from the front of `rows` what it places or drops.
    fn push_node(&mut self, home: usize, rows: &mut NodeRows) {
        self.drop_too_large_head(home, rows);
        if rows.rows == 0 {
            return;
        }
        // Fast path: the whole buffer fits the home node's shared buffer.
        if self.is_ready(home) && self.fits(home, rows.bytes.len()) {
            self.append_shared(home, home, &rows.bytes, rows.rows);
            self.stats.nodes[home].rows_pushed_total += rows.rows;
            rows.bytes.clear();
            rows.rows = 0;
            return;
        }
        if self.nodes[home].first_dial_pending {
            return;
        }
        if self.config.bucket == Bucket::Rows
            && self.config.drop_samples_on_overload
            && !self.nodes[home].read_only
        {
            let st = &mut self.stats.nodes[home];
            st.rows_pushed_total += rows.rows;
            st.rows_dropped_on_overload_total += rows.rows;
            rows.bytes.clear();
            rows.rows = 0;
            return;
        }
        if !self.is_ready(home) {
            if self.nodes.len() == 1 || self.config.disable_rerouting_on_unavailable {
                return;
            }
            self.reroute_to_ready(home, rows);
        } else if self.allow_slowness_reroute(home) {
            self.reroute_to_free(home, rows);
        } else {
            // Ready but full: take what fits, row by row, so a buffer larger than the node
            // limit is split instead of waiting forever (§4 edge case).
            self.append_prefix(home, rows);
        }
    }

    /// Rows longer than the node limit can never form a block; drop them (counted) rather
    /// than stall the request.
    fn drop_too_large_head(&mut self, home: usize, rows: &mut NodeRows) {
        let limit = self.config.node_buffer_limit;
        let mut off = 0;
        let mut dropped = 0;
        while off < rows.bytes.len() {
            let (len, _) = split_row(self.config.bucket, &rows.bytes[off..]);
            if len <= limit {
                break;
            }
            off += len;
            dropped += 1;
        }
        if dropped > 0 {
            rows.bytes.drain(..off);
            rows.rows -= dropped.min(rows.rows);
            if rows.bytes.is_empty() {
                dropped += rows.rows;
                rows.rows = 0;
            }
            let st = &mut self.stats.nodes[home];
            st.rows_pushed_total += dropped;
            st.rows_dropped_too_large_total += dropped;
        }
    }

    fn fits(&self, node: usize, len: usize) -> bool {
        self.nodes[node].shared.len() + len <= self.config.node_buffer_limit
            && self.buffered + len <= self.config.memory_budget
    }

    fn append_shared(&mut self, node: usize, home: usize, bytes: &[u8], rows: u64) {
        let s = &mut self.nodes[node];
        s.shared.extend_from_slice(bytes);
        s.shared_rows += rows;
        self.buffered += bytes.len();
        if node != home {
            self.stats.nodes[home].rows_rerouted_from_here_total += rows;
            self.stats.nodes[node].rows_rerouted_to_here_total += rows;
        }
    }

    fn append_prefix(&mut self, home: usize, rows: &mut NodeRows) {
        let bucket = self.config.bucket;
        let mut off = 0;
        let mut n = 0u64;
        while off < rows.bytes.len() {
            let (len, _) = split_row(bucket, &rows.bytes[off..]);
            if !self.fits(home, off + len) {
                break;
            }
            off += len;
            n += 1;
        }
        self.consume(home, home, rows, off, n);
    }

    fn consume(&mut self, node: usize, home: usize, rows: &mut NodeRows, len: usize, n: u64) {
        if n == 0 {
            return;
        }
        self.append_shared(node, home, &rows.bytes[..len], n);
        self.stats.nodes[home].rows_pushed_total += n;
        rows.bytes.drain(..len);
        rows.rows = rows.rows.saturating_sub(n);
        if rows.bytes.is_empty() {
            rows.rows = 0;
        }
    }

    fn not_ready(&self) -> NodeSet {
        let mut set = NodeSet::new(self.nodes.len());
        for (i, s) in self.nodes.iter().enumerate() {
            if s.broken || s.read_only {
                set.insert(i);
            }
        }
        set
    }

    /// §6.1: each row goes to the node rendezvous picks for its raw name among ready nodes.
    fn reroute_to_ready(&mut self, home: usize, rows: &mut NodeRows) {
        let excl = self.not_ready();
        if excl.count() >= self.nodes.len() {
            // Every node is unavailable: vminsert waits for one to come back.
            return;
        }
        self.stats.reroutes_total += 1;
        let bucket = self.config.bucket;
        let mut off = 0;
        let mut placed = 0u64;
        while off < rows.bytes.len() {
            let (len, key) = split_row(bucket, &rows.bytes[off..]);
            let h = series_hash(key);
            let mut t = self.placement.select(h, &excl);
            if !self.fits(t, len) {
                if !self.slowness_rerouting {
                    break;
                }
                let mut excl2 = excl.clone();
                excl2.insert(t);
                if excl2.count() >= self.nodes.len() {
                    break;
                }
                t = self.placement.select(h, &excl2);
                if !self.fits(t, len) {
                    break;
                }
            }
            self.place_row(home, t, &rows.bytes[off..off + len]);
            off += len;
            placed += 1;
        }
        self.finish_reroute(rows, off, placed);
    }

    fn place_row(&mut self, home: usize, t: usize, row: &[u8]) {
        self.append_shared(t, home, row, 1);
        self.stats.rerouted_rows_processed_total += 1;
        self.stats.nodes[home].rows_pushed_total += 1;
    }

    fn finish_reroute(&mut self, rows: &mut NodeRows, off: usize, placed: u64) {
        rows.bytes.drain(..off);
        rows.rows = rows.rows.saturating_sub(placed);
        if rows.bytes.is_empty() {
            rows.rows = 0;
        }
    }

    /// §6.2 `allow_slowness_reroute`: only the slowest ready node of a cluster that is not
    /// overloaded sheds rows, and only when it is clearly slower than the next slowest.
    fn allow_slowness_reroute(&self, source: usize) -> bool {
        if !self.slowness_rerouting {
            return false;
        }
        let src = self.nodes[source].saturation.value();
        if src == 0.0 {
            return false;
        }
        let mut sats = Vec::with_capacity(self.nodes.len());
        for (i, s) in self.nodes.iter().enumerate() {
            if !self.is_ready(i) {
                continue;
            }
            let v = s.saturation.value();
            if v == 0.0 || v > src {
                return false;
            }
            sats.push(v);
        }
        let n = sats.len();
        if n < 3 {
            return false;
        }
        sats.sort_by(f64::total_cmp);
        let p = sats[n - 1 - (n / 10).max(1)];
        p <= 0.6 && src >= 1.2 * p
    }

    /// §6.2 `reroute_to_free`: rows stay on the source while it has room, else go to the
    /// rendezvous choice among the other ready nodes.
    fn reroute_to_free(&mut self, source: usize, rows: &mut NodeRows) {
        self.stats.reroutes_total += 1;
        let mut excl = self.not_ready();
        excl.insert(source);
        let bucket = self.config.bucket;
        let mut off = 0;
        let mut placed = 0u64;
        while off < rows.bytes.len() {
            let (len, key) = split_row(bucket, &rows.bytes[off..]);
            let t = if self.fits(source, len) {
                source
            } else {
                let t = self.placement.select(series_hash(key), &excl);
                if !self.is_ready(t) || !self.fits(t, len) {
                    break;
                }
                t
            };
            self.place_row(source, t, &rows.bytes[off..off + len]);
            off += len;
            placed += 1;
        }
        self.finish_reroute(rows, off, placed);
    }

    pub fn handle_node_event(&mut self, node: usize, event: NodeEvent, now: Time) {
        if node >= self.nodes.len() {
            return;
        }
        match event {
            NodeEvent::Ready { legacy } => {
                // Copies only queue for ready nodes and a failed block waits for the next
                // tick (§5), so nothing moves until then.
                let s = &mut self.nodes[node];
                s.broken = false;
                s.first_dial_pending = false;
                s.legacy = legacy;
            }
            NodeEvent::Acked(block) => {
                let Some(done) = self.take_in_flight(node, Some(block), now) else {
                    return;
                };
                match done.purpose {
                    Purpose::Probe => {
                        let s = &mut self.nodes[node];
                        s.read_only = false;
                        s.next_probe = None;
                        self.dispatch_link(node, now);
                    }
                    Purpose::Copy { owner } => {
                        let rows = self.nodes[owner].job.as_ref().map_or(0, |j| j.rows);
                        self.stats.nodes[node].rows_sent_total += rows;
                        // Hand the freed link to whoever queued first before the owner's job
                        // (or its next block) may claim it again.
                        self.dispatch_link(node, now);
                        self.copy_stored(owner, node, now);
                    }
                }
            }
            NodeEvent::ReadOnly(block) => {
                let Some(done) = self.take_in_flight(node, Some(block), now) else {
                    return;
                };
                let s = &mut self.nodes[node];
                if !s.read_only {
                    s.read_only = true;
                    s.next_probe = Some(now + self.config.readonly_probe_interval);
                }
                self.requeue_waiters(node, now);
                if let Purpose::Copy { owner } = done.purpose {
                    self.advance(owner, now);
                }
            }
            NodeEvent::Failed { block: _, reason } => {
                let st = &mut self.stats.nodes[node];
                match reason {
                    FailReason::Dial => st.dial_errors_total += 1,
                    FailReason::Handshake => st.handshake_errors_total += 1,
                    FailReason::Connection => st.connection_errors_total += 1,
                }
                self.nodes[node].broken = true;
                self.nodes[node].first_dial_pending = false;
                // The connection is gone, so whatever it carried will never be acknowledged,
                // whether or not the gateway named it.
                let done = self.take_in_flight(node, None, now);
                self.requeue_waiters(node, now);
                if let Some(InFlight {
                    purpose: Purpose::Copy { owner },
                    ..
                }) = done
                {
                    self.advance(owner, now);
                }
            }
        }
    }

    /// Free `node`'s link if it carries `block` (or anything, for `None`), and account for
    /// the time the request took.
    fn take_in_flight(
        &mut self,
        node: usize,
        block: Option<BlockId>,
        now: Time,
    ) -> Option<InFlight> {
        let s = &mut self.nodes[node];
        let f = s.link?;
        if block.is_some_and(|b| b != f.block) {
            // A stale or unknown id: ignore it rather than misattribute the outcome.
            return None;
        }
        s.link = None;
        let took = now.saturating_since(f.since);
        let since_last = now.saturating_since(s.last_attempt_end);
        if !since_last.is_zero() {
            s.saturation
                .add(took.as_secs_f64() / since_last.as_secs_f64());
        }
        s.last_attempt_end = now;
        self.stats.nodes[node].send_duration_total += took;
        if let Purpose::Copy { owner } = f.purpose {
            if let Some(j) = self.nodes[owner].job.as_mut() {
                debug_assert_eq!(j.state, JobState::InFlight { target: node });
                j.state = JobState::Deciding;
            }
        }
        Some(f)
    }

    /// Copies queued for `node`'s link lose their chance: their attempt at `node` failed.
    fn requeue_waiters(&mut self, node: usize, now: Time) {
        loop {
            let next = self
                .waiters(node)
                .min_by_key(|&(_, seq)| seq)
                .map(|(owner, _)| owner);
            let Some(owner) = next else { return };
            self.advance(owner, now);
        }
    }

    fn waiters(&self, target: usize) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.nodes.iter().enumerate().filter_map(move |(i, s)| {
            match s.job.as_ref().map(|j| j.state) {
                Some(JobState::WaitLink { target: t, seq }) if t == target => Some((i, seq)),
                _ => None,
            }
        })
    }

    /// Give an idle link to the copy that has waited longest for it.
    fn dispatch_link(&mut self, target: usize, now: Time) {
        if self.nodes[target].link.is_some() || !self.is_ready(target) {
            return;
        }
        let next = self
            .waiters(target)
            .min_by_key(|&(_, seq)| seq)
            .map(|(owner, _)| owner);
        if let Some(owner) = next {
            self.send_copy(owner, target, now);
        }
    }

    fn send_copy(&mut self, owner: usize, target: usize, now: Time) {
        let Some(job) = self.nodes[owner].job.as_mut() else {
            return;
        };
        let block = self.next_block;
        self.next_block += 1;
        job.state = JobState::InFlight { target };
        let out = Output::Send {
            node: target,
            block,
            bytes: job.block.clone(),
            rows: job.rows,
        };
        self.nodes[target].link = Some(InFlight {
            block,
            purpose: Purpose::Copy { owner },
            since: now,
        });
        self.out.push_back(out);
    }

    /// A copy of `owner`'s block is stored on `target`.
    fn copy_stored(&mut self, owner: usize, target: usize, now: Time) {
        let owner_n = self.nodes.len();
        let skip_replica = self.config.fault == Some(RouterFault::SkipReplica);
        let Some(job) = self.nodes[owner].job.as_mut() else {
            return;
        };
        job.used.insert(target);
        job.copy += 1;
        let wanted = if skip_replica && self.replicas > 1 {
            self.replicas - 1
        } else {
            self.replicas
        };
        if job.copy >= wanted {
            if self.config.fault == Some(RouterFault::DuplicateOneBlock) && self.fault_armed {
                self.fault_armed = false;
                job.copy = 0;
                job.next = owner;
                job.attempts = 0;
                job.used.clear();
                job.state = JobState::Retry;
                self.advance(owner, now);
                return;
            }
            self.finish_job(owner, now);
            return;
        }
        job.next = (owner + job.copy) % owner_n;
        job.attempts = 0;
        self.advance(owner, now);
    }

    /// §5.1's attempt loop for the owner's current copy: pick the next candidate node, send to
    /// it when its link is idle, or queue for the link.
    fn advance(&mut self, owner: usize, now: Time) {
        let n = self.nodes.len();
        loop {
            let Some(job) = self.nodes[owner].job.as_mut() else {
                return;
            };
            job.state = JobState::Deciding;
            job.attempts += 1;
            if job.attempts > n {
                if job.copy == 0 {
                    self.job_failed(owner, now);
                } else {
                    self.stats.rows_incompletely_replicated_total += job.rows;
                    self.finish_job(owner, now);
                }
                return;
            }
            let t = job.next % n;
            job.next = (t + 1) % n;
            if job.used.contains(t) || !self.is_ready(t) {
                continue;
            }
            if self.config.bucket == Bucket::Metadata && self.nodes[t].legacy {
                // A legacy link cannot carry metadata: vminsert drops the block for that
                // node and counts it as sent (wire-protocol.md §5).
                let rows = self.nodes[owner].job.as_ref().map_or(0, |j| j.rows);
                self.stats.nodes[t].rows_dropped_on_unsupported_rpc += rows;
                self.copy_stored(owner, t, now);
                return;
            }
            if self.nodes[t].link.is_none() && self.waiters(t).next().is_none() {
                self.send_copy(owner, t, now);
            } else {
                let seq = self.next_seq;
                self.next_seq += 1;
                if let Some(job) = self.nodes[owner].job.as_mut() {
                    job.state = JobState::WaitLink { target: t, seq };
                }
            }
            return;
        }
    }

    /// Nothing stored anywhere: retry the whole block at the next tick, or drop it during the
    /// final pass of a shutdown.
    fn job_failed(&mut self, owner: usize, now: Time) {
        if self.shutting_down {
            let rows = self.nodes[owner].job.as_ref().map_or(0, |j| j.rows);
            self.stats.rows_dropped_on_shutdown_total += rows;
            self.finish_job(owner, now);
            return;
        }
        if let Some(job) = self.nodes[owner].job.as_mut() {
            job.state = JobState::Retry;
        }
    }

    /// The job is over. A send loop whose buffer refilled meanwhile goes again at once;
    /// one that finds it empty sleeps until the next tick (§5).
    fn finish_job(&mut self, owner: usize, now: Time) {
        if let Some(job) = self.nodes[owner].job.take() {
            self.buffered -= job.block.len();
            if let Ok(m) = job.block.try_into_mut() {
                // Reuse the allocation once the gateway has let go of the block, as
                // vminsert's send loop alternates between two buffers.
                let mut v: Vec<u8> = m.into();
                v.clear();
                self.nodes[owner].spare = v;
            }
        }
        if !self.nodes[owner].shared.is_empty() {
            self.start_job(owner, now);
        }
    }

    fn start_job(&mut self, owner: usize, now: Time) {
        let n = self.nodes.len();
        let s = &mut self.nodes[owner];
        if s.job.is_some() || s.shared.is_empty() {
            return;
        }
        let spare = std::mem::take(&mut s.spare);
        let bytes = std::mem::replace(&mut s.shared, spare);
        let rows = std::mem::take(&mut s.shared_rows);
        if self.config.fault == Some(RouterFault::DropOneBlock) && self.fault_armed {
            self.fault_armed = false;
            self.buffered -= bytes.len();
            return;
        }
        s.job = Some(Job {
            block: Bytes::from(bytes),
            rows,
            copy: 0,
            next: owner,
            attempts: 0,
            used: NodeSet::new(n),
            state: JobState::Deciding,
        });
        self.advance(owner, now);
    }

    fn restart_job(&mut self, owner: usize, now: Time) {
        if let Some(job) = self.nodes[owner].job.as_mut() {
            if job.state != JobState::Retry {
                return;
            }
            job.copy = 0;
            job.next = owner;
            job.attempts = 0;
            job.used.clear();
        }
        self.advance(owner, now);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        if now >= self.next_tick {
            let iv = self.config.flush_interval.as_micros().max(1) as u64;
            let behind = now.as_micros() - self.next_tick.as_micros();
            self.next_tick = self.next_tick + Duration::from_micros((behind / iv + 1) * iv);
            for owner in 0..self.nodes.len() {
                match self.nodes[owner].job.as_ref().map(|j| j.state) {
                    None => self.start_job(owner, now),
                    Some(JobState::Retry) => self.restart_job(owner, now),
                    Some(_) => {}
                }
            }
        }
        if self.shutting_down {
            return;
        }
        for node in 0..self.nodes.len() {
            let s = &mut self.nodes[node];
            let due = s.read_only && s.next_probe.is_some_and(|t| t <= now);
            if !due {
                continue;
            }
            s.next_probe = Some(now + self.config.readonly_probe_interval);
            // No connection, or the previous probe still out: skip this round (§6).
            if s.broken || s.link.is_some() {
                continue;
            }
            let block = self.next_block;
            self.next_block += 1;
            s.link = Some(InFlight {
                block,
                purpose: Purpose::Probe,
                since: now,
            });
            self.out.push_back(Output::Send {
                node,
                block,
                bytes: Bytes::new(),
                rows: 0,
            });
        }
    }

    /// Graceful shutdown: refuse new rows and make one final pass over every buffer now.
    /// Blocks that no replica can take are dropped and counted; probes stop.
    pub fn begin_shutdown(&mut self, now: Time) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        for owner in 0..self.nodes.len() {
            match self.nodes[owner].job.as_ref().map(|j| j.state) {
                None => self.start_job(owner, now),
                Some(JobState::Retry) => self.restart_job(owner, now),
                Some(_) => {}
            }
        }
    }
}

/// The length of the first row of `buf` and the bytes a reroute hashes for it: the raw metric
/// name of a metric row, the family name of a metadata row (§6.1). A malformed tail (which our
/// own encoder never produces) is treated as one row so that nothing can loop or panic.
fn split_row(bucket: Bucket, buf: &[u8]) -> (usize, &[u8]) {
    match bucket {
        Bucket::Rows => match decode_row(buf) {
            Ok((row, n)) if n > 0 => (n, row.metric_name),
            _ => (buf.len(), buf),
        },
        Bucket::Metadata => split_metadata_row(buf).unwrap_or((buf.len(), buf)),
    }
}

fn split_metadata_row(buf: &[u8]) -> Option<(usize, &[u8])> {
    let mut off = 12;
    let mut family: &[u8] = &[];
    for field in 0..3 {
        let len = u16::from_be_bytes(buf.get(off..off + 2)?.try_into().ok()?) as usize;
        let s = buf.get(off + 2..off + 2 + len)?;
        if field == 0 {
            family = s;
        }
        off += 2 + len;
    }
    Some((off, family))
}
