//! Streaming line splitting for line-based bodies (spec: formats/common.md §7).
//!
//! The body arrives in chunks of any size. Complete lines are handed out straight from the
//! chunk (no copy); only the unfinished tail is carried, and that tail is bounded by the line
//! limit, so a stream never holds more than about `max_line_len` bytes of its own.

/// vminsert's line limit for Graphite, OpenTSDB telnet, CSV and Prometheus text: 256 KiB.
pub const DEFAULT_MAX_LINE_LEN: usize = 256 * 1024;
/// `-import.maxLineLen` default, for `/api/v1/import`: 10 MiB.
pub const IMPORT_MAX_LINE_LEN: usize = 10 * 1024 * 1024;

/// More than the limit piled up without a newline. vminsert stops reading the body and answers
/// 400 (TCP: closes the connection); lines handed out before stay ingested.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineTooLong {
    /// The 1-based number of the line that was too long.
    pub line: u64,
    pub max_line_len: usize,
}

impl std::fmt::Display for LineTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot read line #{}: the line is longer than {} bytes without a newline",
            self.line, self.max_line_len
        )
    }
}

impl std::error::Error for LineTooLong {}

/// Splits a chunked body into lines: `\n` ends a line and one trailing `\r` is removed. Empty
/// lines are handed out too (parsers skip them), so line numbers match the body.
#[derive(Debug)]
pub struct LineSplitter {
    tail: Vec<u8>,
    max_line_len: usize,
    /// Number of the next line to hand out (1-based).
    next_line: u64,
    failed: bool,
}

impl LineSplitter {
    pub fn new(max_line_len: usize) -> LineSplitter {
        LineSplitter {
            tail: Vec::new(),
            max_line_len,
            next_line: 1,
            failed: false,
        }
    }

    /// The 1-based number of the next line that will be handed out.
    pub fn next_line_no(&self) -> u64 {
        self.next_line
    }

    /// Bytes carried over from earlier chunks (an unfinished line).
    pub fn pending(&self) -> usize {
        self.tail.len()
    }

    /// Hand every line completed by `chunk` to `f(line_no, line)`. After an error the splitter
    /// stays failed: the caller is expected to abort the stream.
    pub fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(u64, &[u8])) -> Result<(), LineTooLong> {
        if self.failed {
            return Err(self.too_long());
        }
        let mut rest = chunk;
        if !self.tail.is_empty() {
            match memchr::memchr(b'\n', rest) {
                None => return self.carry(rest),
                Some(nl) => {
                    // vminsert checks the limit per read, so a long line completed by the read
                    // that brings its newline still goes through.
                    self.tail.extend_from_slice(&rest[..nl]);
                    let line = std::mem::take(&mut self.tail);
                    f(self.next_line, trim_cr(&line));
                    self.next_line += 1;
                    self.tail = line;
                    self.tail.clear();
                    rest = &rest[nl + 1..];
                }
            }
        }
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            f(self.next_line, trim_cr(&rest[..nl]));
            self.next_line += 1;
            rest = &rest[nl + 1..];
        }
        self.carry(rest)
    }

    fn carry(&mut self, rest: &[u8]) -> Result<(), LineTooLong> {
        if self.tail.len() + rest.len() > self.max_line_len {
            self.failed = true;
            self.tail = Vec::new();
            return Err(self.too_long());
        }
        self.tail.extend_from_slice(rest);
        Ok(())
    }

    fn too_long(&self) -> LineTooLong {
        LineTooLong {
            line: self.next_line,
            max_line_len: self.max_line_len,
        }
    }

    /// End of body: a last line without a newline is handed out as well.
    pub fn finish(&mut self, mut f: impl FnMut(u64, &[u8])) -> Result<(), LineTooLong> {
        if self.failed {
            return Err(self.too_long());
        }
        if !self.tail.is_empty() {
            let line = std::mem::take(&mut self.tail);
            f(self.next_line, trim_cr(&line));
            self.next_line += 1;
        }
        Ok(())
    }
}

/// Remove one trailing `\r`.
pub fn trim_cr(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

/// Split a whole in-memory body into lines with the same rules (for whole-body readers and
/// datagrams).
pub fn for_each_line(body: &[u8], mut f: impl FnMut(u64, &[u8])) {
    let mut n = 1;
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(nl) => (&rest[..nl], &rest[nl + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        f(n, trim_cr(line));
        n += 1;
        rest = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Lines = Vec<(u64, Vec<u8>)>;

    fn split(chunks: &[&[u8]], max: usize) -> (Lines, Result<(), LineTooLong>) {
        let mut s = LineSplitter::new(max);
        let mut out = Vec::new();
        for c in chunks {
            if let Err(e) = s.feed(c, |n, l| out.push((n, l.to_vec()))) {
                return (out, Err(e));
            }
        }
        let r = s.finish(|n, l| out.push((n, l.to_vec())));
        (out, r)
    }

    #[test]
    fn chunk_borders_do_not_matter() {
        let body = b"a 1\r\nbb 2\n\nccc 3\r\r\nlast";
        let (whole, _) = split(&[body], 100);
        for cut1 in 0..body.len() {
            for cut2 in cut1..body.len() {
                let (got, r) = split(&[&body[..cut1], &body[cut1..cut2], &body[cut2..]], 100);
                assert!(r.is_ok());
                assert_eq!(got, whole);
            }
        }
        let want: Vec<(u64, Vec<u8>)> = vec![
            (1, b"a 1".to_vec()),
            (2, b"bb 2".to_vec()),
            (3, b"".to_vec()),
            (4, b"ccc 3\r".to_vec()),
            (5, b"last".to_vec()),
        ];
        assert_eq!(whole, want);
    }

    #[test]
    fn overlong_partial_line_fails_after_earlier_lines() {
        let (got, r) = split(&[b"ok\nxxxx", b"xxxx"], 6);
        assert_eq!(got, vec![(1, b"ok".to_vec())]);
        assert_eq!(
            r,
            Err(LineTooLong {
                line: 2,
                max_line_len: 6
            })
        );
        // A long line that arrives whole with its newline is accepted, like vminsert.
        let (got, r) = split(&[b"0123456789\n"], 6);
        assert!(r.is_ok());
        assert_eq!(got.len(), 1);
    }
}
