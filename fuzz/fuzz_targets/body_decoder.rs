//! Arbitrary bytes as a request body under each `Content-Encoding`, pushed through
//! `BodyDecoder` in chunks. The first byte picks the encoding, stream or whole-body mode and
//! the chunk size. Never panics; pieces stay within `OUT_PIECE`; the whole-body cap holds; and
//! what comes out does not depend on where the chunks were cut.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::body::{BodyDecoder, BodyError, ContentEncoding, OUT_PIECE};

/// Output kept per run: enough for any real seed, small enough that a bomb stays cheap.
const KEEP: usize = 8 << 20;
/// The whole-body cap under test.
const WHOLE_MAX: usize = 1 << 20;

fn run(
    encoding: ContentEncoding,
    whole: bool,
    body: &[u8],
    step: usize,
) -> Result<Vec<u8>, BodyError> {
    let mut d = if whole {
        BodyDecoder::whole(encoding, WHOLE_MAX)
    } else {
        BodyDecoder::stream(encoding)
    };
    assert_eq!(d.encoding(), encoding);
    let mut out = Vec::new();
    let mut push = |p: &[u8]| -> Result<(), BodyError> {
        assert!(!p.is_empty() && p.len() <= OUT_PIECE);
        out.extend_from_slice(p);
        if whole {
            assert!(out.len() <= WHOLE_MAX);
        }
        if out.len() > KEEP {
            // Our own stop, not the decoder's: a stream has no cap of its own.
            return Err(BodyError::TooBig { limit: KEEP });
        }
        Ok(())
    };
    for c in body.chunks(step) {
        d.feed(c, &mut push)?;
    }
    d.finish(&mut push)?;
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, body)) = data.split_first() else {
        return;
    };
    let encoding = [
        ContentEncoding::Identity,
        ContentEncoding::Gzip,
        ContentEncoding::Deflate,
        ContentEncoding::Snappy,
        ContentEncoding::Zstd,
    ][usize::from(control % 5)];
    assert_eq!(ContentEncoding::parse(Some(encoding.name())), Ok(encoding));
    let whole = control & 8 != 0;
    let step = usize::from(control >> 4) + 1;
    let at_once = run(encoding, whole, body, body.len().max(1));
    let chunked = run(encoding, whole, body, step);
    match (at_once, chunked) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b);
            if encoding == ContentEncoding::Identity {
                assert_eq!(a, body);
            }
        }
        // A whole body is all or nothing, however it arrives.
        (a, b) if whole => assert_eq!(a.is_ok(), b.is_ok()),
        _ => {}
    }
});
