//! Where a row goes: series hashing, placement, per-node buffers, replication and rerouting.

pub mod batch;
pub mod ewma;
pub mod placement;
pub mod router;

pub use batch::{Batch, NodeRows, ShardKey};
pub use placement::{series_hash, NodeSet, Placement, PlacementKind, LOWER_LEVEL_SEED};
pub use router::{
    BlockId, Bucket, FailReason, NodeEvent, Output, PushError, Router, RouterConfig, RouterFault,
};
