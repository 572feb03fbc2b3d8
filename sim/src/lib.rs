//! Deterministic simulation of shardgate under turmoil.
//!
//! The gateway hosts run the real core ([`shardgate_core::gateway::Gateway`]) behind a glue as
//! thin as the smol shell's; the storage nodes run the core's server side over an in-memory log.
//! A seed picks the cluster, the load and the faults; one seed gives one trace. After the run,
//! every checker in [`checkers`] looks at what the hosts recorded in the [`ledger`].

pub mod checkers;
pub mod client_host;
pub mod faults;
pub mod gateway_host;
pub mod ledger;
pub mod rng;
pub mod storage_host;
pub mod trace;
pub mod world;

pub use world::{run, FaultLevel, Overrides, RunSummary, SimConfig, Violation};
