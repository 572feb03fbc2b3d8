//! shardgate-core: everything vminsert decides, with no sockets, threads, clocks or async.
//!
//! Bytes and the current [`Time`] come in as arguments; bytes to send, replies and the next
//! deadline come out of `poll_*` calls. The same code runs under the smol shell, the turmoil
//! simulator and plain unit-test loops.

pub mod formats;
pub mod gateway;
pub mod ingest;
pub mod model;
pub mod route;
pub mod stats;
pub mod time;
pub mod wire;

pub use model::{Label, Tenant};
pub use time::Time;
pub mod limits;
pub mod relabel;
