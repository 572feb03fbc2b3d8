//! What the hosts record while the simulation runs, for the checkers to judge afterwards.
//!
//! Everything lives in one `Rc<RefCell<Ledger>>` shared by all hosts: turmoil runs every host
//! on this thread, and the ledger (like the storage nodes' synced logs) must outlive a host's
//! crash. Only ordered maps are used, so iteration order never depends on a hash seed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shardgate_core::model::Sample;
use shardgate_core::route::series_hash;

use crate::trace::Trace;

pub type Shared = Rc<RefCell<Ledger>>;

/// One row, identified the way the checkers need it: the hash of its raw metric name (which is
/// also its shard key for every text format) and its sample. Clients never send the same
/// (series, timestamp) twice, so this names one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub series: u64,
    pub timestamp_ms: i64,
    pub value_bits: u64,
}

impl RowKey {
    pub fn new(metric_name: &[u8], sample: Sample) -> RowKey {
        RowKey {
            series: series_hash(metric_name),
            timestamp_ms: sample.timestamp_ms,
            value_bits: sample.value_bits,
        }
    }
}

/// The router's counters as the checkers need them, summed over a gateway's lifetimes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GatewayCounters {
    pub rows_pushed: u64,
    pub rows_sent: u64,
    pub rerouted_rows: u64,
    pub dropped_on_overload: u64,
    pub dropped_on_shutdown: u64,
    pub incompletely_replicated: u64,
    pub buffered_bytes: u64,
}

impl GatewayCounters {
    pub fn add(&mut self, o: &GatewayCounters) {
        self.rows_pushed += o.rows_pushed;
        self.rows_sent += o.rows_sent;
        self.rerouted_rows += o.rerouted_rows;
        self.dropped_on_overload += o.dropped_on_overload;
        self.dropped_on_shutdown += o.dropped_on_shutdown;
        self.incompletely_replicated += o.incompletely_replicated;
    }

    /// Rows the gateway admits it let go of under a configured policy.
    pub fn dropped(&self) -> u64 {
        self.dropped_on_overload + self.dropped_on_shutdown
    }
}

/// A storage node's log: rows survive a crash only up to the last sync.
#[derive(Clone, Debug, Default)]
pub struct StorageLog {
    rows: Vec<RowKey>,
    synced: usize,
}

impl StorageLog {
    pub fn append(&mut self, rows: &[RowKey]) {
        self.rows.extend_from_slice(rows);
    }

    pub fn sync(&mut self) {
        self.synced = self.rows.len();
    }

    /// Forget what was not synced; returns how many rows that was.
    pub fn crash(&mut self) -> usize {
        let lost = self.rows.len() - self.synced;
        self.rows.truncate(self.synced);
        lost
    }

    pub fn rows(&self) -> &[RowKey] {
        &self.rows
    }

    pub fn synced(&self) -> usize {
        self.synced
    }
}

/// Faults a storage node's software acts out itself (the network ones are turmoil's).
#[derive(Clone, Debug, Default)]
pub struct NodeFaults {
    pub read_only: bool,
    /// Extra delay before every reply.
    pub slow_ack: Duration,
    /// Close the connection on the next N blocks instead of replying.
    pub drop_before_ack: u32,
    /// The gateway side cuts the connection halfway through writing the next N blocks.
    pub cut_mid_block: u32,
    /// Bumped when a dropping partition heals: connections that lost bytes are dead, as TCP's
    /// user timeout would make them; the storage node closes every connection older than this.
    pub reset_epoch: u64,
    /// The software is stopped (crashed, not yet restarted).
    pub crashed: bool,
}

/// One connection as the gateway sees it: (its local address, the storage node's address).
pub type ConnKey = (SocketAddr, SocketAddr);

#[derive(Default)]
pub struct Ledger {
    pub trace: Trace,
    /// Rows a gateway took (push returned them as taken), with how many times.
    pub accepted: BTreeMap<RowKey, u32>,
    /// Storage nodes that replied success for a block carrying the row.
    pub acked: BTreeMap<RowKey, BTreeSet<usize>>,
    /// Success replies by connection: where the reply ends in the server's output, and its rows.
    pub acks_by_conn: BTreeMap<ConnKey, Vec<(u64, Vec<RowKey>)>>,
    /// Bytes the gateway side read off each connection (and handed to the core).
    pub received: BTreeMap<ConnKey, u64>,
    /// Counters of gateway lifetimes that ended (graceful restarts).
    pub finished_gateways: Vec<GatewayCounters>,
    /// Latest counters of each running gateway.
    pub current_gateways: BTreeMap<usize, GatewayCounters>,
    /// Highest buffered-bytes value ever seen, and when.
    pub max_buffered: (u64, Duration),
    pub logs: Vec<StorageLog>,
    pub node_faults: Vec<NodeFaults>,
    /// A graceful restart requested for gateway i.
    pub restart_gateway: Vec<bool>,
    /// Acked rows that a storage crash took away before they were synced.
    pub lost_in_crash: u64,
    /// Things that must never happen whatever the faults (protocol errors from our own peer).
    pub anomalies: Vec<String>,
    pub requests_sent: u64,
    pub requests_refused: u64,
    pub rows_generated: u64,
    /// Set when the world starts its final drain; clients stop.
    pub load_done: bool,
}

impl Ledger {
    pub fn new(nodes: usize, gateways: usize) -> Ledger {
        Ledger {
            logs: vec![StorageLog::default(); nodes],
            node_faults: vec![NodeFaults::default(); nodes],
            restart_gateway: vec![false; gateways],
            ..Ledger::default()
        }
    }

    /// Record an event of the host that is running now.
    pub fn event(&mut self, host: &str, what: std::fmt::Arguments<'_>) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        self.trace.record(at, host, what);
    }

    /// Record an event of the world (between steps, where no host is running).
    pub fn event_at(&mut self, at: Duration, host: &str, what: std::fmt::Arguments<'_>) {
        self.trace.record(at, host, what);
    }

    /// Counters summed over every gateway lifetime so far.
    pub fn counters(&self) -> GatewayCounters {
        let mut sum = GatewayCounters::default();
        for c in self
            .finished_gateways
            .iter()
            .chain(self.current_gateways.values())
        {
            sum.add(c);
        }
        sum
    }

    /// Rows whose success reply reached a gateway.
    pub fn delivered_acks(&self) -> BTreeSet<RowKey> {
        let mut out = BTreeSet::new();
        for (conn, acks) in &self.acks_by_conn {
            let got = self.received.get(conn).copied().unwrap_or(0);
            for (end, rows) in acks {
                if *end <= got {
                    out.extend(rows.iter().copied());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: i64) -> RowKey {
        RowKey {
            series: 1,
            timestamp_ms: i,
            value_bits: 0,
        }
    }

    #[test]
    fn crash_keeps_only_synced_rows() {
        let mut log = StorageLog::default();
        log.append(&[row(1), row(2)]);
        log.sync();
        log.append(&[row(3)]);
        assert_eq!(log.crash(), 1);
        assert_eq!(log.rows(), &[row(1), row(2)]);
        assert_eq!(log.crash(), 0);
    }

    #[test]
    fn only_acks_the_gateway_read_count_as_delivered() {
        let mut l = Ledger::new(1, 1);
        let conn: ConnKey = (
            "10.0.0.1:50000".parse().unwrap(),
            "10.0.0.2:8400".parse().unwrap(),
        );
        l.acks_by_conn
            .insert(conn, vec![(13, vec![row(1)]), (21, vec![row(2)])]);
        l.received.insert(conn, 20);
        assert_eq!(
            l.delivered_acks().into_iter().collect::<Vec<_>>(),
            vec![row(1)]
        );
    }
}
