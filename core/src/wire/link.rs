//! The client side of one connection to one storage node for one bucket.
//!
//! ```text
//!            handle_connected                      final "ok" queued
//!   Idle ──────────────────────▶ Handshake ───────────────────────────▶ Ready ◀──┐
//!    ▲                            │   │  EOF at any step, or any failure        │ │ Acked /
//!    │ Failed (shell closes)      │   │  at the first "ok" (vminsert.03 only)   │ │ ReadOnly
//!    ├────────────────────────────┘   ▼                                   send_block
//!    │                           AwaitRedial ── handle_connected ──▶ Handshake   │ │
//!    │                           (Redial event)                  (vminsert.02)   ▼ │
//!    └───────────────────────────────────────────────────────────────────── InFlight
//! ```
//!
//! The link never touches a socket: the shell dials, reports it with
//! [`NodeLink::handle_connected`], writes what [`NodeLink::poll_transmit`] returns, feeds what
//! it reads to [`NodeLink::handle_input`], and closes the socket when the link says
//! [`LinkEvent::Redial`] or [`LinkEvent::Failed`]. Deadlines come out of
//! [`NodeLink::poll_timeout`]: the handshake deadline covers the whole handshake, and each
//! request gets `max(len/300000, 60)` seconds from the moment it is sent until its reply.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::Duration;

use bytes::Bytes;

use super::codec::{
    encode_rpc_request, request_timeout, Bucket, Inflow, ACK_OK, ACK_READ_ONLY, HANDSHAKE_OK,
    HELLO_LEGACY, HELLO_RPC, MAX_REPLY_LEN, MSG_READ_ONLY, MSG_UNSUPPORTED_RPC, ZSTD_LEVEL,
};
use crate::time::Time;

/// The caller's name for a block, echoed in the event that settles it.
pub type BlockId = u64;

#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub bucket: Bucket,
    /// `-rpc.handshakeTimeout`, default 5 s.
    pub handshake_timeout: Duration,
    /// `-rpc.disableCompression`: only affects a legacy connection (plain instead of a zstd
    /// stream).
    pub disable_compression: bool,
}

impl LinkConfig {
    pub fn new(bucket: Bucket) -> LinkConfig {
        LinkConfig {
            bucket,
            handshake_timeout: Duration::from_secs(5),
            disable_compression: false,
        }
    }
}

/// What the shell must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The storage node refused the current hello in a way that means "old version": close
    /// the socket, dial again and call [`NodeLink::handle_connected`]; the link then speaks
    /// `vminsert.02`. If that dial fails, call [`NodeLink::handle_closed`].
    Redial,
    /// Handshake complete; blocks may be sent.
    Ready,
    /// The storage node received the block.
    Acked(BlockId),
    /// The storage node is read-only and discarded the block; the connection stays usable.
    ReadOnly(BlockId),
    /// The connection is unusable: close the socket and treat the node as broken. `block` is
    /// the block that was in flight, if any, which should be offered to other nodes.
    Failed {
        block: Option<BlockId>,
        error: LinkError,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkError {
    /// The handshake failed (after any fallback): `vm_rpc_handshake_errors_total`.
    Handshake(HandshakeFailure),
    /// I/O, timeout or protocol error after the handshake: `vm_rpc_connection_errors_total`.
    Connection(ConnectionFailure),
    /// The storage node does not know this bucket's RPC: do not re-dial it for 120 s.
    UnsupportedRpc,
    /// The storage node replied with an error text and closes the connection.
    ServerError(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// The connection closed (or the re-dial for the legacy hello failed).
    Closed,
    Timeout,
    /// The storage node sent something other than the expected `ok`.
    UnexpectedReply,
    /// The local zstd stream could not be set up.
    Compression(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionFailure {
    Closed,
    Timeout,
    /// A legacy ack other than 1 or 2.
    BadAck(u8),
    /// An RPC reply longer than 64 KiB.
    ReplyTooLong(u64),
    /// Bytes arrived while no request was waiting for a reply.
    UnexpectedBytes,
    /// The storage node's zstd stream is corrupt.
    BadCompressedReply(String),
    /// The block could not be compressed locally.
    Compression(String),
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Handshake(h) => write!(f, "handshake failed: {h}"),
            LinkError::Connection(c) => write!(f, "connection error: {c}"),
            LinkError::UnsupportedRpc => f.write_str(MSG_UNSUPPORTED_RPC),
            LinkError::ServerError(msg) => write!(f, "storage node error: {msg}"),
        }
    }
}

impl std::fmt::Display for HandshakeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeFailure::Closed => f.write_str("connection closed"),
            HandshakeFailure::Timeout => f.write_str("timed out"),
            HandshakeFailure::UnexpectedReply => f.write_str("unexpected reply instead of \"ok\""),
            HandshakeFailure::Compression(e) => write!(f, "cannot set up zstd: {e}"),
        }
    }
}

impl std::fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectionFailure::Closed => f.write_str("connection closed by the storage node"),
            ConnectionFailure::Timeout => f.write_str("timed out waiting for the reply"),
            ConnectionFailure::BadAck(b) => write!(f, "unexpected ack {b}; want 1 or 2"),
            ConnectionFailure::ReplyTooLong(n) => {
                write!(f, "reply of {n} bytes exceeds {MAX_REPLY_LEN}")
            }
            ConnectionFailure::UnexpectedBytes => {
                f.write_str("unexpected bytes while no request was in flight")
            }
            ConnectionFailure::BadCompressedReply(e) => write!(f, "corrupt zstd reply stream: {e}"),
            ConnectionFailure::Compression(e) => write!(f, "cannot compress block: {e}"),
        }
    }
}

impl std::error::Error for LinkError {}

/// Why [`NodeLink::send_block`] refused a block; the link's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SendError {
    /// No handshake yet, or a request is already in flight.
    NotReady,
    /// Metadata on a legacy connection: the legacy protocol cannot carry it. vminsert drops
    /// such blocks (`vm_rpc_rows_dropped_on_unsupported_rpc`).
    MetadataOnLegacy,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotReady => f.write_str("connection not ready"),
            SendError::MetadataOnLegacy => {
                f.write_str("legacy storage node cannot receive metadata")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// A block compressed ahead of time, so the zstd work can happen outside whatever lock guards
/// the link. It keeps the raw block too, because a legacy connection compresses in its stream.
#[derive(Clone, Debug)]
pub struct PreparedBlock {
    bucket: Bucket,
    block: Bytes,
    rpc_request: Vec<u8>,
}

impl PreparedBlock {
    pub fn new(bucket: Bucket, block: Bytes) -> io::Result<PreparedBlock> {
        let rpc_request = encode_rpc_request(bucket.rpc_name(), &block)?;
        Ok(PreparedBlock {
            bucket,
            block,
            rpc_request,
        })
    }

    pub fn block(&self) -> &Bytes {
        &self.block
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HandshakeStep {
    FirstOk,
    SecondOk,
    ServerFlag,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Idle,
    AwaitRedial,
    Handshake {
        legacy: bool,
        step: HandshakeStep,
        deadline: Time,
    },
    Ready,
    InFlight {
        block: BlockId,
        deadline: Time,
    },
}

pub struct NodeLink {
    config: LinkConfig,
    state: State,
    legacy: bool,
    inflow: Inflow,
    /// The legacy zstd stream towards the node; flushed, never ended, after each block.
    encoder: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    transmit: VecDeque<Vec<u8>>,
    events: VecDeque<LinkEvent>,
}

impl NodeLink {
    pub fn new(config: LinkConfig) -> NodeLink {
        NodeLink {
            config,
            state: State::Idle,
            legacy: false,
            inflow: Inflow::default(),
            encoder: None,
            transmit: VecDeque::new(),
            events: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// The shell's dial succeeded: start the handshake. After a [`LinkEvent::Redial`] this
    /// sends the legacy hello, otherwise the current one.
    pub fn handle_connected(&mut self, now: Time) {
        let legacy = self.state == State::AwaitRedial;
        if let State::InFlight { block, .. } = self.state {
            // The shell replaced the socket under a pending request; its block must not vanish.
            self.events.push_back(LinkEvent::Failed {
                block: Some(block),
                error: LinkError::Connection(ConnectionFailure::Closed),
            });
        }
        self.drop_connection();
        self.state = State::Handshake {
            legacy,
            step: HandshakeStep::FirstOk,
            deadline: now + self.config.handshake_timeout,
        };
        let hello = if legacy { HELLO_LEGACY } else { HELLO_RPC };
        self.transmit.push_back(hello.to_vec());
    }

    /// Bytes read from the socket; chunk borders are arbitrary.
    pub fn handle_input(&mut self, bytes: &[u8], _now: Time) {
        match self.state {
            // Leftovers of a socket we already gave up on.
            State::Idle | State::AwaitRedial => return,
            _ => {}
        }
        self.inflow.push(bytes);
        self.process_input();
    }

    /// EOF or an I/O error on the socket.
    pub fn handle_closed(&mut self, _now: Time) {
        match self.state {
            State::Idle => {}
            State::AwaitRedial => self.fail(None, LinkError::Handshake(HandshakeFailure::Closed)),
            State::Handshake { legacy, step, .. } => {
                self.handshake_failed(legacy, step, true, HandshakeFailure::Closed)
            }
            State::Ready => self.fail(None, LinkError::Connection(ConnectionFailure::Closed)),
            State::InFlight { block, .. } => self.fail(
                Some(block),
                LinkError::Connection(ConnectionFailure::Closed),
            ),
        }
    }

    pub fn handle_timeout(&mut self, now: Time) {
        match self.state {
            State::Handshake {
                legacy,
                step,
                deadline,
            } if now >= deadline => {
                self.handshake_failed(legacy, step, false, HandshakeFailure::Timeout)
            }
            State::InFlight { block, deadline } if now >= deadline => self.fail(
                Some(block),
                LinkError::Connection(ConnectionFailure::Timeout),
            ),
            _ => {}
        }
    }

    /// Handshake done and no request in flight.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The block waiting for its reply, if any.
    pub fn in_flight(&self) -> Option<BlockId> {
        match self.state {
            State::InFlight { block, .. } => Some(block),
            _ => None,
        }
    }

    /// Whether the link holds a connection (handshaking or established).
    pub fn is_connected(&self) -> bool {
        !matches!(self.state, State::Idle | State::AwaitRedial)
    }

    /// Whether the current connection speaks the legacy `vminsert.02` protocol.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// Send one block; an empty block is the read-only probe. One request at a time.
    pub fn send_block(&mut self, id: BlockId, block: &[u8], now: Time) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.legacy {
            self.send_legacy(id, block, now);
        } else {
            match encode_rpc_request(self.config.bucket.rpc_name(), block) {
                Ok(request) => self.start_request(id, request, block.len(), now),
                Err(e) => self.fail(
                    Some(id),
                    LinkError::Connection(ConnectionFailure::Compression(e.to_string())),
                ),
            }
        }
        Ok(())
    }

    /// Like [`NodeLink::send_block`] with the zstd work already done.
    pub fn send_prepared(
        &mut self,
        id: BlockId,
        prepared: PreparedBlock,
        now: Time,
    ) -> Result<(), SendError> {
        self.check_can_send()?;
        if self.legacy || prepared.bucket != self.config.bucket {
            self.send_legacy_or_rpc(id, &prepared.block, now);
        } else {
            let len = prepared.block.len();
            self.start_request(id, prepared.rpc_request, len, now);
        }
        Ok(())
    }

    /// Next bytes to write to the socket, in order.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmit.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// When [`NodeLink::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Time> {
        match self.state {
            State::Handshake { deadline, .. } | State::InFlight { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    fn check_can_send(&self) -> Result<(), SendError> {
        if self.state != State::Ready {
            return Err(SendError::NotReady);
        }
        if self.legacy && self.config.bucket == Bucket::Metadata {
            return Err(SendError::MetadataOnLegacy);
        }
        Ok(())
    }

    fn send_legacy_or_rpc(&mut self, id: BlockId, block: &[u8], now: Time) {
        // A prepared block for the wrong bucket is re-encoded rather than sent under the
        // wrong RPC name.
        let _ = self.send_block(id, block, now);
    }

    fn send_legacy(&mut self, id: BlockId, block: &[u8], now: Time) {
        let header = (block.len() as u64).to_be_bytes();
        let bytes = match self.encoder.as_mut() {
            None => {
                let mut out = Vec::with_capacity(8 + block.len());
                out.extend_from_slice(&header);
                out.extend_from_slice(block);
                Ok(out)
            }
            Some(encoder) => encoder
                .write_all(&header)
                .and_then(|()| encoder.write_all(block))
                .and_then(|()| encoder.flush())
                .map(|()| std::mem::take(encoder.get_mut())),
        };
        match bytes {
            Ok(bytes) => self.start_request(id, bytes, block.len(), now),
            Err(e) => self.fail(
                Some(id),
                LinkError::Connection(ConnectionFailure::Compression(e.to_string())),
            ),
        }
    }

    fn start_request(&mut self, id: BlockId, bytes: Vec<u8>, block_len: usize, now: Time) {
        self.transmit.push_back(bytes);
        self.state = State::InFlight {
            block: id,
            deadline: now + request_timeout(block_len),
        };
    }

    fn process_input(&mut self) {
        loop {
            let progressed = match self.state {
                State::Handshake { legacy, step, .. } => self.process_handshake(legacy, step),
                State::Ready => {
                    match self.inflow.fill(1) {
                        Ok([]) => {}
                        Ok(_) => self.fail(
                            None,
                            LinkError::Connection(ConnectionFailure::UnexpectedBytes),
                        ),
                        Err(e) => self.fail(
                            None,
                            LinkError::Connection(ConnectionFailure::BadCompressedReply(
                                e.to_string(),
                            )),
                        ),
                    }
                    false
                }
                State::InFlight { block, .. } => self.process_reply(block),
                State::Idle | State::AwaitRedial => false,
            };
            if !progressed {
                return;
            }
        }
    }

    /// Consume one handshake step if its bytes are there; true if the state moved on.
    fn process_handshake(&mut self, legacy: bool, step: HandshakeStep) -> bool {
        let want = match step {
            HandshakeStep::FirstOk | HandshakeStep::SecondOk => 2,
            HandshakeStep::ServerFlag => 1,
        };
        // Handshake bytes are always plain: the zstd stream starts after them.
        let Ok(available) = self.inflow.fill(want) else {
            self.handshake_failed(legacy, step, false, HandshakeFailure::UnexpectedReply);
            return false;
        };
        let got = &available[..available.len().min(want)];
        if step != HandshakeStep::ServerFlag && !HANDSHAKE_OK.starts_with(got) {
            self.handshake_failed(legacy, step, false, HandshakeFailure::UnexpectedReply);
            return false;
        }
        if got.len() < want {
            return false;
        }
        let flag = got[0];
        self.inflow.consume(want);
        let deadline = match self.state {
            State::Handshake { deadline, .. } => deadline,
            _ => return false,
        };
        let next = |step| State::Handshake {
            legacy,
            step,
            deadline,
        };
        match step {
            HandshakeStep::FirstOk => {
                let compressed = legacy && !self.config.disable_compression;
                self.transmit.push_back(vec![u8::from(compressed)]);
                self.state = next(HandshakeStep::SecondOk);
            }
            HandshakeStep::SecondOk => self.state = next(HandshakeStep::ServerFlag),
            HandshakeStep::ServerFlag => {
                if let Err(e) = self.finish_handshake(legacy, flag != 0) {
                    self.fail(
                        None,
                        LinkError::Handshake(HandshakeFailure::Compression(e.to_string())),
                    );
                    return false;
                }
                self.transmit.push_back(HANDSHAKE_OK.to_vec());
                self.state = State::Ready;
                self.events.push_back(LinkEvent::Ready);
            }
        }
        true
    }

    fn finish_handshake(&mut self, legacy: bool, server_compressed: bool) -> io::Result<()> {
        if server_compressed {
            self.inflow.enable_zstd()?;
        }
        self.legacy = legacy;
        if legacy && !self.config.disable_compression {
            self.encoder = Some(zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?);
        }
        Ok(())
    }

    /// Settle the in-flight block if its whole reply is there; true if it was settled.
    fn process_reply(&mut self, block: BlockId) -> bool {
        let bad_stream = |e: io::Error| {
            LinkError::Connection(ConnectionFailure::BadCompressedReply(e.to_string()))
        };
        if self.legacy {
            let ack = match self.inflow.fill(1) {
                Ok([]) => return false,
                Ok(bytes) => bytes[0],
                Err(e) => {
                    self.fail(Some(block), bad_stream(e));
                    return false;
                }
            };
            self.inflow.consume(1);
            match ack {
                ACK_OK => self.settle(LinkEvent::Acked(block)),
                ACK_READ_ONLY => self.settle(LinkEvent::ReadOnly(block)),
                other => self.fail(
                    Some(block),
                    LinkError::Connection(ConnectionFailure::BadAck(other)),
                ),
            }
            return self.state == State::Ready;
        }
        let msg_len = match self.inflow.fill(8) {
            Ok(bytes) if bytes.len() >= 8 => {
                u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
            }
            Ok(_) => return false,
            Err(e) => {
                self.fail(Some(block), bad_stream(e));
                return false;
            }
        };
        if msg_len > MAX_REPLY_LEN as u64 {
            self.fail(
                Some(block),
                LinkError::Connection(ConnectionFailure::ReplyTooLong(msg_len)),
            );
            return false;
        }
        let total = 8 + msg_len as usize;
        let msg = match self.inflow.fill(total) {
            Ok(bytes) if bytes.len() >= total => bytes[8..total].to_vec(),
            Ok(_) => return false,
            Err(e) => {
                self.fail(Some(block), bad_stream(e));
                return false;
            }
        };
        self.inflow.consume(total);
        if msg.is_empty() {
            self.settle(LinkEvent::Acked(block));
        } else if msg == MSG_READ_ONLY.as_bytes() {
            self.settle(LinkEvent::ReadOnly(block));
        } else if msg == MSG_UNSUPPORTED_RPC.as_bytes() {
            self.fail(Some(block), LinkError::UnsupportedRpc);
        } else {
            let text = String::from_utf8_lossy(&msg).into_owned();
            self.fail(Some(block), LinkError::ServerError(text));
        }
        self.state == State::Ready
    }

    fn settle(&mut self, event: LinkEvent) {
        self.state = State::Ready;
        self.events.push_back(event);
    }

    /// Spec §2.3: the current hello falls back to the legacy one when the connection hit EOF
    /// at any step, or when anything went wrong while waiting for the very first `ok`.
    fn handshake_failed(
        &mut self,
        legacy: bool,
        step: HandshakeStep,
        eof: bool,
        failure: HandshakeFailure,
    ) {
        if !legacy && (eof || step == HandshakeStep::FirstOk) {
            self.drop_connection();
            self.state = State::AwaitRedial;
            self.events.push_back(LinkEvent::Redial);
        } else {
            self.fail(None, LinkError::Handshake(failure));
        }
    }

    fn fail(&mut self, block: Option<BlockId>, error: LinkError) {
        self.drop_connection();
        self.state = State::Idle;
        self.events.push_back(LinkEvent::Failed { block, error });
    }

    fn drop_connection(&mut self) {
        self.inflow.reset();
        self.encoder = None;
        self.transmit.clear();
        self.legacy = false;
    }
}
