//! Request body decoding by `Content-Encoding` (spec: formats/common.md §6).
//!
//! [`BodyDecoder`] is push-based and sans-IO: compressed chunks go in, decompressed pieces of
//! at most [`OUT_PIECE`] bytes come out through a callback, so a stream holds a bounded amount
//! of memory whatever the compression ratio. Snappy is the exception: its block format needs
//! the whole body, which vminsert caps at 56,000,000 compressed bytes.
//!
//! Streaming endpoints treat a gzip, zlib or zstd body that stops early as a clean end of
//! input (what was decoded stays ingested), as vminsert does; whole-body readers fail instead.

use flate2::{Crc, Decompress, FlushDecompress, Status};

/// Largest piece handed to the callback.
pub const OUT_PIECE: usize = 64 * 1024;
/// vminsert's cap on a snappy body read for a streaming endpoint (compressed bytes).
pub const MAX_SNAPPY_STREAM_BODY: usize = 56_000_000;
/// Cap on the decompressed size of such a snappy body: vminsert has no separate cap, this is
/// ours so a small snappy header cannot make us allocate without bound.
pub const MAX_SNAPPY_STREAM_DECOMPRESSED: usize = 256 * 1024 * 1024;
/// Largest gzip member header (file name, comment, extra field) we are willing to buffer.
const MAX_GZIP_HEADER: usize = 64 * 1024;

/// A body encoding vminsert accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentEncoding {
    Identity,
    Gzip,
    /// zlib-wrapped deflate (RFC 1950), not raw deflate.
    Deflate,
    /// Snappy block format (not the framed stream format).
    Snappy,
    Zstd,
}

impl ContentEncoding {
    /// Match the header exactly and case-sensitively; anything unknown is a 400.
    pub fn parse(header: Option<&str>) -> Result<ContentEncoding, BodyError> {
        Ok(match header.unwrap_or("") {
            "" | "none" | "identity" => ContentEncoding::Identity,
            "gzip" => ContentEncoding::Gzip,
            "deflate" => ContentEncoding::Deflate,
            "snappy" => ContentEncoding::Snappy,
            "zstd" => ContentEncoding::Zstd,
            other => return Err(BodyError::UnsupportedEncoding(other.to_string())),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            ContentEncoding::Identity => "none",
            ContentEncoding::Gzip => "gzip",
            ContentEncoding::Deflate => "deflate",
            ContentEncoding::Snappy => "snappy",
            ContentEncoding::Zstd => "zstd",
        }
    }
}

/// Body errors; every one of them is a 400.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyError {
    /// `Content-Encoding` is none of the accepted values.
    UnsupportedEncoding(String),
    /// The raw or decompressed body went over the cap.
    TooBig { limit: usize },
    /// The compressed data is corrupt (or, for whole bodies and snappy, cut short).
    Corrupt {
        encoding: ContentEncoding,
        detail: String,
    },
}

impl BodyError {
    pub fn http_status(&self) -> u16 {
        400
    }

    /// The text vminsert gives for a body it decompressed whole: a zstd failure names the
    /// compressed length and the size cap, as its block decoder does.
    pub fn whole_body_text(&self, raw_len: usize, max_size: usize) -> String {
        match self {
            BodyError::Corrupt {
                encoding: ContentEncoding::Zstd,
                detail,
            } => format!(
                "cannot decompress zstd block with len={raw_len} and maxDataSizeBytes={max_size}: \
                 {detail}"
            ),
            other => other.to_string(),
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::UnsupportedEncoding(e) => write!(f, "unsupported contentType: {e}"),
            BodyError::TooBig { limit } => {
                write!(
                    f,
                    "too big request body; it mustn't exceed -maxInsertRequestSize={limit} bytes"
                )
            }
            BodyError::Corrupt {
                encoding: ContentEncoding::Snappy,
                detail,
            } => {
                write!(f, "cannot decode snappy-encoded data block: {detail}")
            }
            BodyError::Corrupt { encoding, detail } => {
                write!(
                    f,
                    "cannot decompress {}-encoded data: {detail}",
                    encoding.name()
                )
            }
        }
    }
}

impl std::error::Error for BodyError {}

enum GzState {
    Header(Vec<u8>),
    Body(Box<Decompress>, Crc),
    Trailer(Vec<u8>, Crc),
}

enum Codec {
    Identity,
    Gzip(GzState),
    Zlib(Box<Decompress>, bool),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
    Snappy(Vec<u8>),
}

/// Push-based body decoder for one request.
pub struct BodyDecoder {
    encoding: ContentEncoding,
    codec: Codec,
    /// Cap on decompressed bytes (whole-body readers); `None` for streams.
    max_out: Option<usize>,
    out_total: usize,
    /// Whether a body that stops early is an error (whole-body) or a clean end (stream).
    strict_end: bool,
    out: Vec<u8>,
    /// zstd is in the middle of a frame (more input needed to finish it).
    zstd_mid_frame: bool,
    gzip_members: u32,
}

impl std::fmt::Debug for BodyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyDecoder")
            .field("encoding", &self.encoding)
            .field("out_total", &self.out_total)
            .finish()
    }
}

fn corrupt(encoding: ContentEncoding, detail: impl std::fmt::Display) -> BodyError {
    BodyError::Corrupt {
        encoding,
        detail: detail.to_string(),
    }
}

/// Length of a complete gzip member header at the start of `b`, `None` if more bytes are needed.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>, BodyError> {
    let bad = |d: &str| corrupt(ContentEncoding::Gzip, d);
    if b.len() < 10 {
        if b.len() >= 2 && b[..2] != [0x1f, 0x8b] || b.len() >= 3 && b[2] != 8 {
            return Err(bad("gzip: invalid header"));
        }
        return Ok(None);
    }
    if b[..3] != [0x1f, 0x8b, 8] {
        return Err(bad("gzip: invalid header"));
    }
    let flags = b[3];
    let mut i = 10;
    if flags & 4 != 0 {
        let Some(x) = b.get(i..i + 2) else {
            return Ok(None);
        };
        i += 2 + usize::from(u16::from_le_bytes([x[0], x[1]]));
        if i > b.len() {
            return Ok(None);
        }
    }
    for bit in [8u8, 16] {
        if flags & bit != 0 {
            match memchr::memchr(0, &b[i..]) {
                Some(z) => i += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 2 != 0 {
        i += 2;
        if i > b.len() {
            return Ok(None);
        }
    }
    Ok(Some(i))
}

impl BodyDecoder {
    /// A decoder for a streaming endpoint: no cap on the decompressed size (the line limit
    /// bounds memory), an early end of gzip/zlib/zstd data is a clean end.
    pub fn stream(encoding: ContentEncoding) -> BodyDecoder {
        BodyDecoder::new(encoding, None, false)
    }

    /// A decoder for a whole-body reader: at most `max_size` decompressed bytes, and data that
    /// stops early is an error.
    pub fn whole(encoding: ContentEncoding, max_size: usize) -> BodyDecoder {
        BodyDecoder::new(encoding, Some(max_size), true)
    }

    fn new(encoding: ContentEncoding, max_out: Option<usize>, strict_end: bool) -> BodyDecoder {
        let codec = match encoding {
            ContentEncoding::Identity => Codec::Identity,
            ContentEncoding::Gzip => Codec::Gzip(GzState::Header(Vec::new())),
            ContentEncoding::Deflate => Codec::Zlib(Box::new(Decompress::new(true)), false),
            ContentEncoding::Snappy => Codec::Snappy(Vec::new()),
            ContentEncoding::Zstd => {
                // Creating a zstd context only fails on allocation failure.
                Codec::Zstd(Box::new(
                    zstd::stream::raw::Decoder::new().expect("zstd decoder context"),
                ))
            }
        };
        BodyDecoder {
            encoding,
            codec,
            max_out,
            out_total: 0,
            strict_end,
            out: Vec::new(),
            zstd_mid_frame: false,
            gzip_members: 0,
        }
    }

    pub fn encoding(&self) -> ContentEncoding {
        self.encoding
    }

    fn emit<E: From<BodyError>>(
        &mut self,
        piece: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        if piece.is_empty() {
            return Ok(());
        }
        self.out_total += piece.len();
        if let Some(max) = self.max_out {
            if self.out_total > max {
                return Err(BodyError::TooBig { limit: max }.into());
            }
        }
        out(piece)
    }

    /// Decode `chunk`, handing decompressed pieces to `out`.
    pub fn feed<E: From<BodyError>>(
        &mut self,
        chunk: &[u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let enc = self.encoding;
        let mut buf = std::mem::take(&mut self.out);
        buf.resize(OUT_PIECE, 0);
        let r = self.feed_inner(enc, chunk, &mut buf, out);
        self.out = buf;
        r
    }

    fn feed_inner<E: From<BodyError>>(
        &mut self,
        enc: ContentEncoding,
        chunk: &[u8],
        buf: &mut [u8],
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut input = chunk;
        match &mut self.codec {
            Codec::Identity => {
                for piece in chunk.chunks(OUT_PIECE) {
                    self.emit(piece, out)?;
                }
            }
            Codec::Snappy(acc) => {
                if acc.len() + chunk.len()
                    > MAX_SNAPPY_STREAM_BODY.min(self.max_out.unwrap_or(usize::MAX))
                {
                    return Err(BodyError::TooBig {
                        limit: MAX_SNAPPY_STREAM_BODY,
                    }
                    .into());
                }
                acc.extend_from_slice(chunk);
            }
            Codec::Zlib(..) => {
                while !input.is_empty() {
                    let Codec::Zlib(d, done) = &mut self.codec else {
                        unreachable!()
                    };
                    if *done {
                        // Bytes after the end of the zlib stream are ignored.
                        return Ok(());
                    }
                    let (in0, out0) = (d.total_in(), d.total_out());
                    let st = d
                        .decompress(input, buf, FlushDecompress::None)
                        .map_err(|e| corrupt(enc, e))?;
                    let used = (d.total_in() - in0) as usize;
                    let made = (d.total_out() - out0) as usize;
                    if st == Status::StreamEnd {
                        *done = true;
                    }
                    input = &input[used..];
                    self.emit(&buf[..made], out)?;
                    if used == 0 && made == 0 && st != Status::StreamEnd {
                        return Err(corrupt(enc, "cannot make progress").into());
                    }
                }
            }
            Codec::Zstd(_) => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let mut inb = InBuffer::around(input);
                loop {
                    let Codec::Zstd(d) = &mut self.codec else {
                        unreachable!()
                    };
                    let mut outb = OutBuffer::around(&mut *buf);
                    let hint = d.run(&mut inb, &mut outb).map_err(|e| corrupt(enc, e))?;
                    let made = outb.pos();
                    self.zstd_mid_frame = hint != 0;
                    let piece_full = made == buf.len();
                    self.emit(&buf[..made], out)?;
                    if inb.pos() == inb.src.len() && !piece_full {
                        break;
                    }
                }
            }
            Codec::Gzip(_) => {
                while !input.is_empty() {
                    let Codec::Gzip(state) = &mut self.codec else {
                        unreachable!()
                    };
                    match state {
                        GzState::Header(h) => {
                            let before = h.len();
                            let take = input.len().min(MAX_GZIP_HEADER + 1 - before);
                            h.extend_from_slice(&input[..take]);
                            match gzip_header_len(h)? {
                                Some(n) => {
                                    input = &input[n - before..];
                                    *state =
                                        GzState::Body(Box::new(Decompress::new(false)), Crc::new());
                                }
                                None if h.len() > MAX_GZIP_HEADER => {
                                    return Err(corrupt(enc, "gzip: header is too long").into())
                                }
                                None => input = &input[take..],
                            }
                        }
                        GzState::Body(d, crc) => {
                            let (in0, out0) = (d.total_in(), d.total_out());
                            let st = d
                                .decompress(input, buf, FlushDecompress::None)
                                .map_err(|e| corrupt(enc, e))?;
                            let used = (d.total_in() - in0) as usize;
                            let made = (d.total_out() - out0) as usize;
                            crc.update(&buf[..made]);
                            input = &input[used..];
                            if st == Status::StreamEnd {
                                let crc = std::mem::replace(crc, Crc::new());
                                *state = GzState::Trailer(Vec::with_capacity(8), crc);
                            } else if used == 0 && made == 0 {
                                return Err(corrupt(enc, "cannot make progress").into());
                            }
                            self.emit(&buf[..made], out)?;
                        }
                        GzState::Trailer(t, crc) => {
                            let take = input.len().min(8 - t.len());
                            t.extend_from_slice(&input[..take]);
                            input = &input[take..];
                            if t.len() == 8 {
                                let want_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                                let want_len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                                if want_crc != crc.sum() || want_len != crc.amount() {
                                    return Err(corrupt(enc, "gzip: invalid checksum").into());
                                }
                                // Concatenated members are read as one stream.
                                *state = GzState::Header(Vec::new());
                                self.gzip_members += 1;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// End of the body.
    pub fn finish<E: From<BodyError>>(
        &mut self,
        out: &mut impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let enc = self.encoding;
        let cut_short = match &mut self.codec {
            Codec::Identity => false,
            Codec::Snappy(acc) => {
                let acc = std::mem::take(acc);
                if acc.is_empty() {
                    return Ok(());
                }
                let snappy_err = |_| corrupt(enc, "snappy: corrupt input");
                let n = snap::raw::decompress_len(&acc).map_err(snappy_err)?;
                let cap = self.max_out.unwrap_or(MAX_SNAPPY_STREAM_DECOMPRESSED);
                if n > cap {
                    return Err(BodyError::TooBig { limit: cap }.into());
                }
                let data = snap::raw::Decoder::new()
                    .decompress_vec(&acc)
                    .map_err(snappy_err)?;
                for piece in data.chunks(OUT_PIECE) {
                    self.emit(piece, out)?;
                }
                false
            }
            Codec::Zlib(_, done) => !*done,
            Codec::Zstd(_) => self.zstd_mid_frame,
            Codec::Gzip(GzState::Header(h)) => self.gzip_members == 0 || !h.is_empty(),
            Codec::Gzip(_) => true,
        };
        if cut_short && self.strict_end {
            return Err(corrupt(enc, "unexpected EOF").into());
        }
        Ok(())
    }
}

/// Decode a whole body held in memory (whole-body readers), capped at `max_size` bytes both
/// raw and decompressed.
pub fn decode_whole(
    body: &[u8],
    encoding: ContentEncoding,
    max_size: usize,
) -> Result<Vec<u8>, BodyError> {
    if body.len() > max_size {
        return Err(BodyError::TooBig { limit: max_size });
    }
    if encoding == ContentEncoding::Identity {
        return Ok(body.to_vec());
    }
    let mut d = BodyDecoder::whole(encoding, max_size);
    let mut out = Vec::new();
    let mut push = |p: &[u8]| -> Result<(), BodyError> {
        out.extend_from_slice(p);
        Ok(())
    };
    d.feed(body, &mut push)?;
    d.finish(&mut push)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(b: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(b).unwrap();
        e.finish().unwrap()
    }

    fn stream(enc: ContentEncoding, body: &[u8], step: usize) -> Result<Vec<u8>, BodyError> {
        let mut d = BodyDecoder::stream(enc);
        let mut out = Vec::new();
        let mut push = |p: &[u8]| -> Result<(), BodyError> {
            assert!(p.len() <= OUT_PIECE);
            out.extend_from_slice(p);
            Ok(())
        };
        for c in body.chunks(step.max(1)) {
            d.feed(c, &mut push)?;
        }
        d.finish(&mut push)?;
        Ok(out)
    }

    #[test]
    fn every_encoding_any_chunking() {
        let plain: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("m{{i=\"{i}\"}} {i}\n").into_bytes())
            .collect();
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&plain).unwrap();
        let zlib = z.finish().unwrap();
        let mut two_members = gzip(&plain[..1000]);
        two_members.extend(gzip(&plain[1000..]));
        let cases = [
            (ContentEncoding::Identity, plain.clone()),
            (ContentEncoding::Gzip, two_members),
            (ContentEncoding::Deflate, zlib),
            (
                ContentEncoding::Zstd,
                zstd::bulk::compress(&plain, 3).unwrap(),
            ),
            (
                ContentEncoding::Snappy,
                snap::raw::Encoder::new().compress_vec(&plain).unwrap(),
            ),
        ];
        for (enc, body) in cases {
            for step in [1usize, 7, 4096, body.len()] {
                if step == 1 && body.len() > 100_000 {
                    continue;
                }
                assert_eq!(
                    stream(enc, &body, step).unwrap(),
                    plain,
                    "{enc:?} step {step}"
                );
            }
            assert_eq!(decode_whole(&body, enc, plain.len()).unwrap(), plain);
            assert!(matches!(
                decode_whole(&body, enc, plain.len() - 1),
                Err(BodyError::TooBig { .. })
            ));
        }
    }

    #[test]
    fn truncation_is_clean_for_streams_only() {
        let plain = b"a 1\nb 2\n".repeat(10);
        let gz = gzip(&plain);
        let cut = &gz[..gz.len() - 4];
        assert_eq!(stream(ContentEncoding::Gzip, cut, 5).unwrap(), plain);
        assert!(decode_whole(cut, ContentEncoding::Gzip, 1 << 20).is_err());
        let zs = zstd::bulk::compress(&plain, 3).unwrap();
        assert!(decode_whole(&zs[..zs.len() - 2], ContentEncoding::Zstd, 1 << 20).is_err());
        assert!(stream(ContentEncoding::Zstd, &zs[..zs.len() - 2], 5).is_ok());
        let sn = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        let e = stream(ContentEncoding::Snappy, &sn[..sn.len() - 3], 5).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot decode snappy-encoded data block: snappy: corrupt input"
        );
        let mut bad = gzip(&plain);
        let n = bad.len();
        bad[n - 8] ^= 1;
        assert!(stream(ContentEncoding::Gzip, &bad, 3).is_err());
    }

    #[test]
    fn encoding_names() {
        assert_eq!(
            ContentEncoding::parse(None).unwrap(),
            ContentEncoding::Identity
        );
        assert_eq!(
            ContentEncoding::parse(Some("none")).unwrap(),
            ContentEncoding::Identity
        );
        for bad in ["br", "GZIP", "gzip, deflate"] {
            let e = ContentEncoding::parse(Some(bad)).unwrap_err();
            assert_eq!(e.to_string(), format!("unsupported contentType: {bad}"));
        }
    }
}
