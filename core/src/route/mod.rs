//! Where a row goes: series hashing, placement, per-node buffers, replication and rerouting.
