//! Invariant checkers. Each one looks at the finished run's ledger and either passes or names
//! what broke; all of them run after every simulation, in the order below.

use shardgate_core::route::Placement;

use crate::ledger::Ledger;

pub mod accounting;
pub mod budget;
pub mod delivery;
pub mod placement;
pub mod replication;

/// An invariant that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub invariant: &'static str,
    pub detail: String,
}

impl Finding {
    pub fn new(invariant: &'static str, detail: String) -> Finding {
        Finding { invariant, detail }
    }
}

/// What the checkers need besides the ledger.
pub struct Context<'a> {
    pub ledger: &'a Ledger,
    pub placement: &'a Placement,
    pub replication_factor: usize,
    pub memory_budget: u64,
    /// No fault was injected in the whole run: every node stayed healthy.
    pub healthy: bool,
    /// Slowness rerouting is on (RF = 1 and not disabled), so a healthy run may move rows.
    pub slowness_rerouting: bool,
}

/// Run every checker; the first failure wins.
pub fn check_all(cx: &Context<'_>) -> Result<(), Finding> {
    delivery::check(cx)?;
    replication::check(cx)?;
    placement::check(cx)?;
    budget::check(cx)?;
    accounting::check(cx)?;
    Ok(())
}

/// A few examples of a set of rows, for a finding's text.
pub(crate) fn examples<'a, T: std::fmt::Debug + 'a>(items: impl Iterator<Item = &'a T>) -> String {
    let v: Vec<String> = items.take(3).map(|x| format!("{x:?}")).collect();
    v.join(", ")
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::ledger::{GatewayCounters, RowKey};

    pub fn three_nodes() -> Placement {
        let n: Vec<String> = ["n0:8400", "n1:8400", "n2:8400"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        Placement::new(&n, shardgate_core::route::PlacementKind::Rendezvous, 0)
    }

    pub fn row(series: u64, ts: i64) -> RowKey {
        RowKey {
            series,
            timestamp_ms: ts,
            value_bits: 0,
        }
    }

    pub fn accept(l: &mut Ledger, r: RowKey) {
        *l.accepted.entry(r).or_default() += 1;
    }

    pub fn ack(l: &mut Ledger, r: RowKey, node: usize) {
        l.acked.entry(r).or_default().insert(node);
    }

    pub fn counters(l: &mut Ledger, c: GatewayCounters) {
        l.current_gateways.insert(0, c);
    }

    pub fn cx<'a>(l: &'a Ledger, p: &'a Placement, rf: usize) -> Context<'a> {
        Context {
            ledger: l,
            placement: p,
            replication_factor: rf,
            memory_budget: 1 << 20,
            healthy: false,
            slowness_rerouting: false,
        }
    }
}
