//! Constants, framing and zstd helpers shared by both ends of a storage-node connection
//! (spec: wire-protocol.md §2–§5).

use std::io;
use std::time::Duration;

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

/// Hello of the current protocol generation ("RPC" mode).
pub const HELLO_RPC: &[u8; 11] = b"vminsert.03";
/// Hello of the legacy generation (streaming mode), spoken by vmstorage v1.35 … v1.128.
pub const HELLO_LEGACY: &[u8; 11] = b"vminsert.02";
/// The success token of every handshake step.
pub const HANDSHAKE_OK: &[u8; 2] = b"ok";

pub const RPC_WRITE_ROWS: &[u8] = b"writeRows_v1";
pub const RPC_WRITE_METADATA: &[u8] = b"writeMetadata_v1";

/// Reply text of a storage node that discarded the block because it is read-only.
pub const MSG_READ_ONLY: &str = "storage node is read-only mode";
/// Reply text for an RPC name the storage node does not know; it closes the connection after it.
pub const MSG_UNSUPPORTED_RPC: &str = "rpcName is not supported by server";

/// Legacy one-byte acknowledgements.
pub const ACK_OK: u8 = 0x01;
pub const ACK_READ_ONLY: u8 = 0x02;

/// Longest RPC name a server accepts.
pub const MAX_RPC_NAME_LEN: u64 = 128;
/// Longest block (compressed payload, and decompressed block) a server accepts: 100 MiB.
pub const MAX_BLOCK_LEN: usize = 100 * 1024 * 1024;
/// Longest reply text: a client refuses more, a server truncates to it.
pub const MAX_REPLY_LEN: usize = 64 * 1024;

/// zstd level vminsert uses for blocks and for the legacy stream.
pub const ZSTD_LEVEL: i32 = 1;

/// How much is decoded or buffered beyond what a parser has asked for.
pub(crate) const CHUNK: usize = 64 * 1024;

/// Which of the two connections to a storage node this is, and so which RPC it calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    /// Metric rows: `writeRows_v1`.
    Rows,
    /// Metrics metadata: `writeMetadata_v1` (never sent on a legacy connection).
    Metadata,
}

impl Bucket {
    pub fn rpc_name(self) -> &'static [u8] {
        match self {
            Bucket::Rows => RPC_WRITE_ROWS,
            Bucket::Metadata => RPC_WRITE_METADATA,
        }
    }

    pub fn from_rpc_name(name: &[u8]) -> Option<Bucket> {
        match name {
            RPC_WRITE_ROWS => Some(Bucket::Rows),
            RPC_WRITE_METADATA => Some(Bucket::Metadata),
            _ => None,
        }
    }
}

/// The client's deadline for one request: `max(len / 300000, 60)` seconds, where `len` is
/// the uncompressed block length. A big block gets about 300 kB/s.
pub fn request_timeout(block_len: usize) -> Duration {
    Duration::from_secs((block_len as u64 / 300_000).max(60))
}

/// Compress a block the way an RPC payload carries it: one standalone zstd frame, level 1.
pub fn compress_block(block: &[u8]) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(block, ZSTD_LEVEL)
}

/// Append `u64be name_len | name | u64be payload_len | payload`.
pub fn frame_rpc_request(out: &mut Vec<u8>, rpc_name: &[u8], payload: &[u8]) {
    out.reserve(16 + rpc_name.len() + payload.len());
    out.extend_from_slice(&(rpc_name.len() as u64).to_be_bytes());
    out.extend_from_slice(rpc_name);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A whole RPC request for `block`: framing plus the zstd-compressed block.
pub fn encode_rpc_request(rpc_name: &[u8], block: &[u8]) -> io::Result<Vec<u8>> {
    let payload = compress_block(block)?;
    let mut out = Vec::new();
    frame_rpc_request(&mut out, rpc_name, &payload);
    Ok(out)
}

/// An RPC reply: `u64be msg_len | msg`, the text truncated to 64 KiB. Empty means success.
pub fn encode_rpc_reply(msg: &[u8]) -> Vec<u8> {
    let msg = &msg[..msg.len().min(MAX_REPLY_LEN)];
    let mut out = Vec::with_capacity(8 + msg.len());
    out.extend_from_slice(&(msg.len() as u64).to_be_bytes());
    out.extend_from_slice(msg);
    out
}

/// Why a zstd payload could not be turned back into a block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecompressError {
    /// Not zstd, or corrupt.
    Corrupt(String),
    /// The payload ends inside a frame.
    Truncated,
    /// The block would be longer than the limit.
    TooLarge { limit: usize },
}

impl std::fmt::Display for DecompressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecompressError::Corrupt(e) => write!(f, "cannot decompress zstd payload: {e}"),
            DecompressError::Truncated => f.write_str("zstd payload ends inside a frame"),
            DecompressError::TooLarge { limit } => {
                write!(f, "decompressed block exceeds {limit} bytes")
            }
        }
    }
}

impl std::error::Error for DecompressError {}

/// Decompress a payload of one or more zstd frames, refusing more than `limit` output bytes.
///
/// The output grows with what the frames really produce, never with a declared content size,
/// so a small payload that claims (or expands to) gigabytes costs at most `limit + 1` bytes.
pub fn decompress_bounded(src: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let corrupt = |e: io::Error| DecompressError::Corrupt(e.to_string());
    let mut out: Vec<u8> = Vec::new();
    if src.is_empty() {
        return Ok(out);
    }
    let mut decoder = Decoder::new().map_err(corrupt)?;
    let mut input = InBuffer::around(src);
    let mut frame_open;
    loop {
        if out.len() == out.capacity() {
            if out.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            // Doubling, but never past limit + 1: one byte more than allowed proves the excess.
            let grow = out.len().max(CHUNK).min(limit + 1 - out.len());
            out.reserve_exact(grow);
        }
        let before_in = input.pos();
        let before_out = out.len();
        let hint = {
            let pos = out.len();
            let mut output = OutBuffer::around_pos(&mut out, pos);
            decoder.run(&mut input, &mut output).map_err(corrupt)?
        };
        if out.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        frame_open = hint != 0;
        let progressed = input.pos() != before_in || out.len() != before_out;
        if !progressed {
            if input.pos() < src.len() {
                return Err(DecompressError::Corrupt(
                    "zstd decoder made no progress".into(),
                ));
            }
            break;
        }
        if input.pos() == src.len() && !frame_open {
            break;
        }
    }
    if frame_open {
        return Err(DecompressError::Truncated);
    }
    Ok(out)
}

/// A byte queue with a read cursor whose growth follows what really arrived, capped by what
/// the parser said it needs, so a declared length never turns into an allocation by itself.
#[derive(Default)]
pub(crate) struct Buf {
    data: Vec<u8>,
    start: usize,
}

impl Buf {
    pub(crate) fn len(&self) -> usize {
        self.data.len() - self.start
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.data[self.start..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.data.len());
        if self.start == self.data.len() {
            self.data.clear();
            self.start = 0;
        }
    }

    /// Append `bytes`; `need` is how many bytes the reader wants in total right now.
    pub(crate) fn extend(&mut self, bytes: &[u8], need: usize) {
        if self.data.capacity() - self.data.len() < bytes.len() {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            }
            let len = self.data.len();
            if self.data.capacity() - len < bytes.len() {
                let doubling = len.max(CHUNK);
                let wanted = need.saturating_sub(len).max(CHUNK);
                self.data
                    .reserve_exact(doubling.min(wanted).max(bytes.len()));
            }
        }
        self.data.extend_from_slice(bytes);
    }
}

/// The receiving half of a connection: bytes as they came off the socket, and, once the peer
/// announced a zstd stream, the decoder that turns them into protocol bytes. Parsers ask for
/// the `n` bytes they need with [`Inflow::fill`]; only that much is decoded, so the decoded
/// buffer stays within the current frame's length plus one chunk.
#[derive(Default)]
pub(crate) struct Inflow {
    raw: Buf,
    plain: Buf,
    decoder: Option<Box<Decoder<'static>>>,
    scratch: Vec<u8>,
    need: usize,
}

impl Inflow {
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let need = if self.decoder.is_some() {
            CHUNK
        } else {
            self.need
        };
        self.raw.extend(bytes, need);
    }

    /// From now on the received bytes (including any already buffered) are one zstd stream.
    pub(crate) fn enable_zstd(&mut self) -> io::Result<()> {
        self.decoder = Some(Box::new(Decoder::new()?));
        Ok(())
    }

    /// The protocol bytes available, after decoding until there are at least `n` of them or
    /// the input runs out.
    pub(crate) fn fill(&mut self, n: usize) -> io::Result<&[u8]> {
        self.need = n;
        let Some(decoder) = self.decoder.as_mut() else {
            return Ok(self.raw.as_slice());
        };
        if self.scratch.is_empty() {
            self.scratch = vec![0; CHUNK];
        }
        while self.plain.len() < n {
            let room = (n - self.plain.len()).min(CHUNK);
            let mut input = InBuffer::around(self.raw.as_slice());
            let mut output = OutBuffer::around(&mut self.scratch[..room]);
            decoder.run(&mut input, &mut output)?;
            let (read, written) = (input.pos(), output.pos());
            self.raw.consume(read);
            self.plain.extend(&self.scratch[..written], n);
            if read == 0 && written == 0 {
                break;
            }
        }
        Ok(self.plain.as_slice())
    }

    /// Drop `n` protocol bytes that the parser has used.
    pub(crate) fn consume(&mut self, n: usize) {
        if self.decoder.is_some() {
            self.plain.consume(n)
        } else {
            self.raw.consume(n)
        }
    }

    /// Everything held, decoded or not.
    pub(crate) fn buffered(&self) -> usize {
        self.raw.len() + self.plain.len()
    }

    pub(crate) fn reset(&mut self) {
        *self = Inflow::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_block_compresses_to_the_documented_frame() {
        assert_eq!(
            compress_block(b"").unwrap(),
            [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0, 1, 0, 0]
        );
    }

    #[test]
    fn decompresses_concatenated_frames() {
        let mut src = compress_block(b"hello ").unwrap();
        src.extend(compress_block(b"world").unwrap());
        assert_eq!(decompress_bounded(&src, 100).unwrap(), b"hello world");
    }

    #[test]
    fn refuses_output_past_the_limit() {
        let big = vec![7u8; 1_000_000];
        let src = compress_block(&big).unwrap();
        assert!(src.len() < 1000);
        assert_eq!(
            decompress_bounded(&src, 999_999),
            Err(DecompressError::TooLarge { limit: 999_999 })
        );
        assert_eq!(decompress_bounded(&src, 1_000_000).unwrap(), big);
    }

    #[test]
    fn reports_truncated_and_corrupt_frames() {
        let src = compress_block(b"some bytes that form a block").unwrap();
        assert_eq!(
            decompress_bounded(&src[..src.len() - 2], 1000),
            Err(DecompressError::Truncated)
        );
        assert!(matches!(
            decompress_bounded(b"definitely not zstd", 1000),
            Err(DecompressError::Corrupt(_))
        ));
    }

    #[test]
    fn reply_text_is_truncated() {
        let long = vec![b'x'; MAX_REPLY_LEN + 10];
        let reply = encode_rpc_reply(&long);
        assert_eq!(reply.len(), 8 + MAX_REPLY_LEN);
        assert_eq!(&reply[..8], &(MAX_REPLY_LEN as u64).to_be_bytes());
    }

    #[test]
    fn inflow_decodes_only_what_is_asked() {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
        std::io::Write::write_all(&mut enc, &vec![1u8; 10 * CHUNK]).unwrap();
        std::io::Write::flush(&mut enc).unwrap();
        let stream = enc.get_ref().clone();
        let mut inflow = Inflow::default();
        inflow.enable_zstd().unwrap();
        inflow.push(&stream);
        assert_eq!(inflow.fill(10).unwrap().len(), 10);
        assert!(inflow.plain.len() <= 10);
        inflow.consume(10);
        assert_eq!(inflow.fill(10 * CHUNK).unwrap().len(), 10 * CHUNK - 10);
    }
}
