//! The HTTP side: the generic hyper-on-smol server, insert path parsing, the insert limiter and
//! the gateway's routes.

pub mod gateway;
pub mod limiter;
pub mod opentsdb;
pub mod route;
pub mod server;
