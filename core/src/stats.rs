//! Plain counters the shell renders on /metrics under vminsert's names.
//!
//! The core only counts; the shell owns names, labels and rendering. Field names follow the
//! series they feed (flags-and-endpoints.md §6.1) so the mapping stays obvious.

use std::time::Duration;

/// Counters of one storage node in one bucket, labelled `{addr=..., rpc_call=...}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// `vm_rpc_rows_pushed_total`: rows whose home is this node, counted once when they leave
    /// the request (placed, rerouted or dropped), never again when a push is retried.
    pub rows_pushed_total: u64,
    /// `vm_rpc_rows_sent_total`: rows this node acknowledged, replicas and rerouted rows included.
    pub rows_sent_total: u64,
    /// `vm_rpc_send_duration_seconds_total`: from handing a block to the link to its outcome.
    pub send_duration_total: Duration,
    /// `vm_rpc_dial_errors_total`.
    pub dial_errors_total: u64,
    /// `vm_rpc_handshake_errors_total`.
    pub handshake_errors_total: u64,
    /// `vm_rpc_connection_errors_total`: broken connections during a send or a probe.
    pub connection_errors_total: u64,
    /// `vm_rpc_rows_dropped_on_overload_total` (`-dropSamplesOnOverload`).
    pub rows_dropped_on_overload_total: u64,
    /// `vm_rpc_rows_rerouted_from_here_total`.
    pub rows_rerouted_from_here_total: u64,
    /// `vm_rpc_rows_rerouted_to_here_total`.
    pub rows_rerouted_to_here_total: u64,
    /// `vm_rpc_rows_dropped_on_unsupported_rpc` (no `_total`): metadata for a legacy link.
    pub rows_dropped_on_unsupported_rpc: u64,
    /// Rows of a single row larger than the shared buffer limit, which no block may carry.
    /// vminsert cannot produce such rows (its label limits keep rows far below 1 MiB); we count
    /// them instead of stalling the request forever. Not a vminsert series.
    pub rows_dropped_too_large_total: u64,
}

/// Counters of one bucket (metric rows or metadata), labelled `{name="vminsert"}`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    /// Per storage node, by node index.
    pub nodes: Vec<NodeStats>,
    /// `vm_rpc_reroutes_total`: reroute operations (one per pushed buffer that was rerouted).
    pub reroutes_total: u64,
    /// `vm_rpc_rerouted_rows_processed_total`: rows placed by rerouting.
    pub rerouted_rows_processed_total: u64,
    /// `vm_rpc_rows_incompletely_replicated_total`.
    pub rows_incompletely_replicated_total: u64,
    /// Rows no replica could take during the final pass of a graceful shutdown (vminsert only
    /// logs "dropping N rows on graceful shutdown"; we also count them).
    pub rows_dropped_on_shutdown_total: u64,
}

impl RouterStats {
    pub fn new(nodes: usize) -> RouterStats {
        RouterStats {
            nodes: vec![NodeStats::default(); nodes],
            ..RouterStats::default()
        }
    }

    /// Rows dropped on purpose or by necessity, over all nodes: what a loss check allows for.
    pub fn rows_dropped_total(&self) -> u64 {
        self.rows_dropped_on_shutdown_total
            + self
                .nodes
                .iter()
                .map(|n| {
                    n.rows_dropped_on_overload_total
                        + n.rows_dropped_too_large_total
                        + n.rows_dropped_on_unsupported_rpc
                })
                .sum::<u64>()
    }
}

/// Gauges of one storage node, computed on demand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeGauges {
    /// `vm_rpc_rows_pending`: rows in the node's shared buffer.
    pub rows_pending: u64,
    /// `vm_rpc_buf_pending_bytes`: bytes in the node's shared buffer.
    pub buf_pending_bytes: u64,
    /// `vm_rpc_vmstorage_is_reachable` (metric rows bucket only): not broken.
    pub is_reachable: bool,
    /// `vm_rpc_vmstorage_is_read_only` (metric rows bucket only).
    pub is_read_only: bool,
}
