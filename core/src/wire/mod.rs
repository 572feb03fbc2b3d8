//! The vminsert → storage node protocol: row encoding, handshake, framing, the client-side
//! [`NodeLink`](link::NodeLink) and the server side used by the clusternative listener and the
//! storage-node stand-in (spec: wire-protocol.md, row-encoding.md).

pub mod row;
