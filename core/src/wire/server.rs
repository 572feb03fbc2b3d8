//! The server side of one vminsert connection: what a storage node (or the clusternative
//! listener, or a test stand-in) runs for each accepted socket.
//!
//! ```text
//!   Hello ─▶ ClientFlag ─▶ ClientOk ─▶ Ready ──Block event──▶ AwaitReply ──reply()──▶ Ready
//!     │ 11 bytes   "ok"      "ok" 00    "ok"  │                                   │
//!     └─ EOF before any byte: HealthCheck     └─ framing error / EOF ─▶ Closed ◀──┘ Reply::Error
//! ```
//!
//! The server reads the next request only after the previous one was answered, as vmstorage
//! does; a client that keeps sending meanwhile is buffered up to one maximal request and then
//! refused. Every length read from the peer is checked before anything is buffered for it,
//! and payloads are decompressed with a hard output limit, so hostile bytes produce a
//! [`ServerEvent::Error`], never a panic or a large allocation.

use std::collections::VecDeque;
use std::time::Duration;

use super::codec::{
    decompress_bounded, encode_rpc_reply, Bucket, DecompressError, Inflow, ACK_OK, ACK_READ_ONLY,
    CHUNK, HANDSHAKE_OK, HELLO_LEGACY, HELLO_RPC, MAX_BLOCK_LEN, MAX_RPC_NAME_LEN, MSG_READ_ONLY,
    MSG_UNSUPPORTED_RPC,
};
use crate::time::Time;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `-rpc.handshakeTimeout`, default 5 s.
    pub handshake_timeout: Duration,
    /// Largest compressed payload and decompressed block accepted; 100 MiB in vmstorage.
    pub max_block_len: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            handshake_timeout: Duration::from_secs(5),
            max_block_len: MAX_BLOCK_LEN,
        }
    }
}

/// Names one received block so its reply goes to the right request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(u64);

/// How the storage node answers a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Received and queued.
    Ok,
    /// Discarded because the node is read-only; the connection stays open.
    ReadOnly,
    /// Failure: the text goes to an RPC client (a legacy client gets nothing), and the
    /// connection is closed once the transmit queue is written.
    Error(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerEvent {
    /// The handshake completed; `legacy` is true for `vminsert.02`.
    Handshaken { legacy: bool },
    /// A whole block arrived; answer it with [`ServerConn::reply`].
    Block {
        request: RequestId,
        bucket: Bucket,
        block: Vec<u8>,
    },
    /// EOF before the first byte: a TCP health check. Close silently.
    HealthCheck,
    /// The client closed the connection between requests.
    Closed,
    /// Write what is left in the transmit queue, then close the connection.
    Error(ServerError),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerError {
    /// The first 11 bytes are neither `vminsert.03` nor `vminsert.02`.
    BadHello(Vec<u8>),
    /// The client's closing `ok` was something else.
    BadHandshake(Vec<u8>),
    HandshakeTimeout,
    /// EOF in the middle of the handshake or of a request.
    UnexpectedEof,
    RpcNameTooLong(u64),
    /// The RPC name is unknown; the client was told `rpcName is not supported by server`.
    UnsupportedRpc(String),
    BlockTooLarge(u64),
    BadPayload(DecompressError),
    /// The client's zstd stream is corrupt.
    BadStream(String),
    /// The client kept sending while its request waited for a reply.
    TooMuchPendingInput(usize),
    /// The stand-in answered [`Reply::Error`].
    Replied(String),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::BadHello(h) => {
                write!(f, "unexpected hello {:?}", String::from_utf8_lossy(h))
            }
            ServerError::BadHandshake(b) => {
                write!(
                    f,
                    "unexpected handshake reply {:?}; want \"ok\"",
                    String::from_utf8_lossy(b)
                )
            }
            ServerError::HandshakeTimeout => f.write_str("handshake timed out"),
            ServerError::UnexpectedEof => f.write_str("unexpected EOF from the client"),
            ServerError::RpcNameTooLong(n) => {
                write!(f, "rpc name of {n} bytes exceeds {MAX_RPC_NAME_LEN}")
            }
            ServerError::UnsupportedRpc(name) => write!(f, "unsupported rpc {name:?}"),
            ServerError::BlockTooLarge(n) => write!(f, "too big packet size: {n}"),
            ServerError::BadPayload(e) => write!(f, "{e}"),
            ServerError::BadStream(e) => write!(f, "cannot decompress client stream: {e}"),
            ServerError::TooMuchPendingInput(n) => {
                write!(f, "client sent {n} bytes while its request was unanswered")
            }
            ServerError::Replied(msg) => write!(f, "replied with error: {msg}"),
        }
    }
}

impl std::error::Error for ServerError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Hello,
    ClientFlag { legacy: bool },
    ClientOk { legacy: bool, compressed: bool },
    Ready { legacy: bool },
    AwaitReply { legacy: bool, request: RequestId },
    Closed,
}

pub struct ServerConn {
    config: ServerConfig,
    state: State,
    handshake_deadline: Time,
    seen_input: bool,
    next_request: u64,
    inflow: Inflow,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<ServerEvent>,
}

impl ServerConn {
    /// A freshly accepted connection; the handshake deadline starts now.
    pub fn new(config: ServerConfig, now: Time) -> ServerConn {
        let handshake_deadline = now + config.handshake_timeout;
        ServerConn {
            config,
            state: State::Hello,
            handshake_deadline,
            seen_input: false,
            next_request: 0,
            inflow: Inflow::default(),
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn handle_input(&mut self, bytes: &[u8], _now: Time) {
        if self.state == State::Closed || bytes.is_empty() {
            return;
        }
        self.seen_input = true;
        self.inflow.push(bytes);
        self.process_input();
        // A well-behaved client waits for each reply, so at most one request is ever
        // buffered; anything beyond that is a client we will not hold in memory.
        let limit = self.config.max_block_len + 2 * CHUNK;
        let buffered = self.inflow.buffered();
        if self.state != State::Closed && buffered > limit {
            self.close_with(ServerError::TooMuchPendingInput(buffered));
        }
    }

    /// EOF or an I/O error on the socket.
    pub fn handle_closed(&mut self, _now: Time) {
        let event = match self.state {
            State::Closed => return,
            State::Hello if !self.seen_input => ServerEvent::HealthCheck,
            State::Ready { .. } if self.inflow.buffered() == 0 => ServerEvent::Closed,
            // The block already went out as an event; the reply just has nowhere to go.
            State::AwaitReply { .. } => ServerEvent::Closed,
            _ => ServerEvent::Error(ServerError::UnexpectedEof),
        };
        self.state = State::Closed;
        self.inflow.reset();
        self.events.push_back(event);
    }

    pub fn handle_timeout(&mut self, now: Time) {
        if self.in_handshake() && now >= self.handshake_deadline {
            self.close_with(ServerError::HandshakeTimeout);
        }
    }

    /// Answer the block of `request`. Replies to anything but the pending request are ignored.
    pub fn reply(&mut self, request: RequestId, reply: Reply) {
        let State::AwaitReply {
            legacy,
            request: pending,
        } = self.state
        else {
            return;
        };
        if pending != request {
            return;
        }
        let bytes = match (&reply, legacy) {
            (Reply::Ok, false) => encode_rpc_reply(b""),
            (Reply::ReadOnly, false) => encode_rpc_reply(MSG_READ_ONLY.as_bytes()),
            (Reply::Error(msg), false) => encode_rpc_reply(msg.as_bytes()),
            (Reply::Ok, true) => vec![ACK_OK],
            (Reply::ReadOnly, true) => vec![ACK_READ_ONLY],
            (Reply::Error(_), true) => Vec::new(),
        };
        if !bytes.is_empty() {
            self.transmit.push_back(bytes);
        }
        if let Reply::Error(msg) = reply {
            self.close_with(ServerError::Replied(msg));
            return;
        }
        self.state = State::Ready { legacy };
        self.process_input();
    }

    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Time> {
        self.in_handshake().then_some(self.handshake_deadline)
    }

    /// True once the connection is finished: write the transmit queue, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The protocol generation, once the hello was read.
    pub fn is_legacy(&self) -> Option<bool> {
        match self.state {
            State::ClientFlag { legacy }
            | State::ClientOk { legacy, .. }
            | State::Ready { legacy }
            | State::AwaitReply { legacy, .. } => Some(legacy),
            State::Hello | State::Closed => None,
        }
    }

    fn in_handshake(&self) -> bool {
        matches!(
            self.state,
            State::Hello | State::ClientFlag { .. } | State::ClientOk { .. }
        )
    }

    fn close_with(&mut self, error: ServerError) {
        self.state = State::Closed;
        self.inflow.reset();
        self.events.push_back(ServerEvent::Error(error));
    }

    /// Send an error text to an RPC client before closing, as vmstorage does for failures
    /// after it has read the RPC name.
    fn refuse_request(&mut self, error: ServerError) {
        self.transmit
            .push_back(encode_rpc_reply(error.to_string().as_bytes()));
        self.close_with(error);
    }

    fn process_input(&mut self) {
        while self.step() {}
    }

    /// Handle one message if it is complete; true if the state moved on.
    fn step(&mut self) -> bool {
        match self.state {
            State::Hello => {
                let Some(hello) = self.take_plain(HELLO_RPC.len()) else {
                    return false;
                };
                let legacy = match &hello[..] {
                    h if h == HELLO_RPC => false,
                    h if h == HELLO_LEGACY => true,
                    _ => {
                        self.close_with(ServerError::BadHello(hello));
                        return false;
                    }
                };
                self.transmit.push_back(HANDSHAKE_OK.to_vec());
                self.state = State::ClientFlag { legacy };
                true
            }
            State::ClientFlag { legacy } => {
                let Some(flag) = self.take_plain(1) else {
                    return false;
                };
                let mut reply = HANDSHAKE_OK.to_vec();
                // Our replies are never compressed.
                reply.push(0);
                self.transmit.push_back(reply);
                self.state = State::ClientOk {
                    legacy,
                    compressed: flag[0] != 0,
                };
                true
            }
            State::ClientOk { legacy, compressed } => {
                let Some(ok) = self.take_plain(HANDSHAKE_OK.len()) else {
                    return false;
                };
                if ok != HANDSHAKE_OK {
                    self.close_with(ServerError::BadHandshake(ok));
                    return false;
                }
                if compressed {
                    if let Err(e) = self.inflow.enable_zstd() {
                        self.close_with(ServerError::BadStream(e.to_string()));
                        return false;
                    }
                }
                self.state = State::Ready { legacy };
                self.events.push_back(ServerEvent::Handshaken { legacy });
                true
            }
            State::Ready { legacy: true } => self.step_legacy(),
            State::Ready { legacy: false } => self.step_rpc(),
            State::AwaitReply { .. } | State::Closed => false,
        }
    }

    /// Handshake bytes: exactly `n`, or None if they have not all arrived.
    fn take_plain(&mut self, n: usize) -> Option<Vec<u8>> {
        let bytes = self.inflow.fill(n).ok()?;
        if bytes.len() < n {
            return None;
        }
        let out = bytes[..n].to_vec();
        self.inflow.consume(n);
        Some(out)
    }

    /// `Ok(None)`: not all there yet.
    fn peek_u64(&mut self, at: usize) -> Result<Option<u64>, ServerError> {
        let bytes = self
            .inflow
            .fill(at + 8)
            .map_err(|e| ServerError::BadStream(e.to_string()))?;
        Ok(bytes
            .get(at..at + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes"))))
    }

    fn step_legacy(&mut self) -> bool {
        let block_len = match self.peek_u64(0) {
            Ok(Some(n)) => n,
            Ok(None) => return false,
            Err(e) => {
                self.close_with(e);
                return false;
            }
        };
        if block_len > self.config.max_block_len as u64 {
            self.close_with(ServerError::BlockTooLarge(block_len));
            return false;
        }
        let total = 8 + block_len as usize;
        let block = match self.inflow.fill(total) {
            Ok(bytes) if bytes.len() >= total => bytes[8..total].to_vec(),
            Ok(_) => return false,
            Err(e) => {
                self.close_with(ServerError::BadStream(e.to_string()));
                return false;
            }
        };
        self.inflow.consume(total);
        self.deliver(true, Bucket::Rows, block);
        true
    }

    fn step_rpc(&mut self) -> bool {
        let name_len = match self.peek_u64(0) {
            Ok(Some(n)) => n,
            Ok(None) => return false,
            Err(e) => {
                self.close_with(e);
                return false;
            }
        };
        if name_len > MAX_RPC_NAME_LEN {
            self.close_with(ServerError::RpcNameTooLong(name_len));
            return false;
        }
        let name_end = 8 + name_len as usize;
        let bucket = match self.inflow.fill(name_end) {
            Ok(bytes) if bytes.len() >= name_end => {
                let name = &bytes[8..name_end];
                Bucket::from_rpc_name(name)
                    .ok_or_else(|| String::from_utf8_lossy(name).into_owned())
            }
            Ok(_) => return false,
            Err(e) => {
                self.close_with(ServerError::BadStream(e.to_string()));
                return false;
            }
        };
        let bucket = match bucket {
            Ok(bucket) => bucket,
            Err(name) => {
                self.transmit
                    .push_back(encode_rpc_reply(MSG_UNSUPPORTED_RPC.as_bytes()));
                self.close_with(ServerError::UnsupportedRpc(name));
                return false;
            }
        };
        let payload_len = match self.peek_u64(name_end) {
            Ok(Some(n)) => n,
            Ok(None) => return false,
            Err(e) => {
                self.close_with(e);
                return false;
            }
        };
        if payload_len > self.config.max_block_len as u64 {
            self.refuse_request(ServerError::BlockTooLarge(payload_len));
            return false;
        }
        let start = name_end + 8;
        let total = start + payload_len as usize;
        let limit = self.config.max_block_len;
        let block = match self.inflow.fill(total) {
            Ok(bytes) if bytes.len() >= total => decompress_bounded(&bytes[start..total], limit),
            Ok(_) => return false,
            Err(e) => {
                self.close_with(ServerError::BadStream(e.to_string()));
                return false;
            }
        };
        self.inflow.consume(total);
        match block {
            Ok(block) => {
                self.deliver(false, bucket, block);
                true
            }
            Err(e) => {
                self.refuse_request(ServerError::BadPayload(e));
                false
            }
        }
    }

    fn deliver(&mut self, legacy: bool, bucket: Bucket, block: Vec<u8>) {
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.state = State::AwaitReply { legacy, request };
        self.events.push_back(ServerEvent::Block {
            request,
            bucket,
            block,
        });
    }
}
