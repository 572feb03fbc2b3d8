//! The vminsert → storage node protocol (spec: wire-protocol.md, row-encoding.md).
//!
//! * [`row`]: the row encoding inside a block.
//! * [`codec`]: constants, request/reply framing and bounded zstd helpers.
//! * [`link`]: [`NodeLink`](link::NodeLink), the client side of one connection to one storage
//!   node for one bucket (rows or metadata): handshake with fallback from `vminsert.03` to
//!   `vminsert.02`, one request at a time, replies mapped to acked / read-only / failed.
//! * [`server`]: [`ServerConn`](server::ServerConn), the server side used by the
//!   clusternative listener and by storage-node stand-ins.
//!
//! Both are sans-IO state machines: bytes in through `handle_input`, bytes out through
//! `poll_transmit`, deadlines through `poll_timeout`/`handle_timeout`, with the current
//! [`Time`](crate::Time) passed in.

pub mod codec;
pub mod link;
pub mod row;
pub mod server;

pub use codec::Bucket;
pub use link::{BlockId, LinkConfig, LinkError, LinkEvent, NodeLink, PreparedBlock, SendError};
pub use server::{Reply, RequestId, ServerConfig, ServerConn, ServerError, ServerEvent};
