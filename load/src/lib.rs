//! `shardgate-load`: pushes a fixed number of samples into a vminsert-compatible gateway over
//! several keep-alive connections and reports throughput and the gateway's CPU cost.
//!
//! The pieces are library modules so the binary stays a thin argument parser and the tests can
//! drive a whole run against the built-in sink.

pub mod bodies;
pub mod client;
pub mod cpu;
pub mod metrics;
pub mod run;
pub mod sink;
pub mod spawn;
