//! The shardgate runtime: listeners, storage-node connections, flags and /metrics on smol.

pub mod flags;
pub mod http;
pub mod listeners;
pub mod log;
pub mod metrics;
pub mod pipeline;
pub mod runtime;
pub mod standin;
pub mod storage;

/// `shardgate-<version>`, the line `-version` prints and `vm_app_version` carries.
pub fn version() -> String {
    format!("shardgate-v{}", env!("CARGO_PKG_VERSION"))
}
