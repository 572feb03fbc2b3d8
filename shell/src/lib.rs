//! The shardgate runtime: listeners, storage-node connections, flags and /metrics on smol.
