//! NodeLink talking to ServerConn through arbitrary chunk borders, in every protocol mode.

use proptest::prelude::*;
use shardgate_core::wire::{
    Bucket, LinkConfig, LinkEvent, NodeLink, Reply, ServerConfig, ServerConn, ServerEvent,
};
use shardgate_core::Time;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Rpc,
    LegacyZstd,
    LegacyPlain,
}

/// Cuts byte streams at the borders a test chose.
struct Chunker {
    sizes: Vec<usize>,
    next: usize,
}

impl Chunker {
    fn cut<'a>(&mut self, mut bytes: &'a [u8]) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let n = self.sizes[self.next % self.sizes.len()].clamp(1, bytes.len());
            self.next += 1;
            out.push(&bytes[..n]);
            bytes = &bytes[n..];
        }
        out
    }
}

struct Pair {
    link: NodeLink,
    server: ServerConn,
    chunker: Chunker,
    now: Time,
    received: Vec<(Bucket, Vec<u8>)>,
    link_events: Vec<LinkEvent>,
    server_events: Vec<ServerEvent>,
    replies: Vec<Reply>,
}

impl Pair {
    fn new(mode: Mode, bucket: Bucket, chunk_sizes: Vec<usize>) -> Pair {
        let now = Time::from_millis(1);
        let mut config = LinkConfig::new(bucket);
        config.disable_compression = matches!(mode, Mode::LegacyPlain);
        let mut link = NodeLink::new(config);
        link.handle_connected(now);
        if !matches!(mode, Mode::Rpc) {
            // An old storage node closes on the current hello; the link asks for a re-dial.
            link.handle_closed(now);
            assert_eq!(link.poll_event(), Some(LinkEvent::Redial));
            while link.poll_transmit().is_some() {}
            link.handle_connected(now);
        }
        Pair {
            link,
            server: ServerConn::new(ServerConfig::default(), now),
            chunker: Chunker {
                sizes: chunk_sizes,
                next: 0,
            },
            now,
            received: Vec::new(),
            link_events: Vec::new(),
            server_events: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// Move bytes both ways until neither side has anything to say.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            while let Some(bytes) = self.link.poll_transmit() {
                moved = true;
                for piece in self.chunker.cut(&bytes) {
                    self.server.handle_input(piece, self.now);
                }
            }
            while let Some(ev) = self.server.poll_event() {
                moved = true;
                if let ServerEvent::Block {
                    request,
                    bucket,
                    block,
                } = &ev
                {
                    self.received.push((*bucket, block.clone()));
                    let reply = self.replies.get(self.received.len() - 1).cloned();
                    self.server.reply(*request, reply.unwrap_or(Reply::Ok));
                }
                self.server_events.push(ev);
            }
            while let Some(bytes) = self.server.poll_transmit() {
                moved = true;
                for piece in self.chunker.cut(&bytes) {
                    self.link.handle_input(piece, self.now);
                }
            }
            while let Some(ev) = self.link.poll_event() {
                moved = true;
                self.link_events.push(ev);
            }
            if !moved {
                return;
            }
        }
    }
}

fn run(mode: Mode, blocks: &[Vec<u8>], read_only: &[bool], chunks: Vec<usize>) {
    let mut pair = Pair::new(mode, Bucket::Rows, chunks);
    pair.replies = read_only
        .iter()
        .map(|&ro| if ro { Reply::ReadOnly } else { Reply::Ok })
        .collect();
    pair.pump();
    let legacy = !matches!(mode, Mode::Rpc);
    assert_eq!(pair.link_events, vec![LinkEvent::Ready]);
    assert_eq!(pair.server_events, vec![ServerEvent::Handshaken { legacy }]);
    assert_eq!(pair.link.is_legacy(), legacy);
    pair.link_events.clear();
    for (i, block) in blocks.iter().enumerate() {
        pair.link.send_block(i as u64, block, pair.now).unwrap();
        assert!(!pair.link.is_ready());
        pair.pump();
        assert!(pair.link.is_ready());
    }
    let sent: Vec<(Bucket, Vec<u8>)> = blocks.iter().map(|b| (Bucket::Rows, b.clone())).collect();
    assert_eq!(pair.received, sent);
    let expected: Vec<LinkEvent> = (0..blocks.len())
        .map(|i| {
            if read_only.get(i).copied().unwrap_or(false) {
                LinkEvent::ReadOnly(i as u64)
            } else {
                LinkEvent::Acked(i as u64)
            }
        })
        .collect();
    assert_eq!(pair.link_events, expected);
}

fn block_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..4000),
        // Compressible blocks make zstd emit multi-byte matches and long frames.
        (any::<u8>(), 0usize..200_000).prop_map(|(b, n)| vec![b; n]),
        Just(Vec::new()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn blocks_survive_any_chunking(
        blocks in proptest::collection::vec(block_strategy(), 1..5),
        read_only in proptest::collection::vec(any::<bool>(), 0..5),
        chunks in proptest::collection::vec(1usize..3000, 1..6),
        mode in prop_oneof![Just(Mode::Rpc), Just(Mode::LegacyZstd), Just(Mode::LegacyPlain)],
    ) {
        run(mode, &blocks, &read_only, chunks);
    }
}

#[test]
fn large_blocks_in_every_mode() {
    // Several MiB, partly incompressible, so every buffer goes through many chunks.
    let mut block = Vec::new();
    let mut x: u32 = 12345;
    for i in 0..3_000_000u32 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        block.push(if i % 3 == 0 { (x >> 24) as u8 } else { b'a' });
    }
    for mode in [Mode::Rpc, Mode::LegacyZstd, Mode::LegacyPlain] {
        run(
            mode,
            &[block.clone(), Vec::new(), block.clone()],
            &[false, true],
            vec![65536, 1, 7000],
        );
    }
}

#[test]
fn metadata_goes_under_its_rpc_name() {
    let mut pair = Pair::new(Mode::Rpc, Bucket::Metadata, vec![10]);
    pair.pump();
    pair.link
        .send_block(7, b"metadata block", pair.now)
        .unwrap();
    pair.pump();
    assert_eq!(
        pair.received,
        vec![(Bucket::Metadata, b"metadata block".to_vec())]
    );
    assert_eq!(pair.link_events.last(), Some(&LinkEvent::Acked(7)));
}

#[test]
fn prepared_blocks_are_sent_like_plain_ones() {
    for mode in [Mode::Rpc, Mode::LegacyZstd] {
        let mut pair = Pair::new(mode, Bucket::Rows, vec![3]);
        pair.pump();
        let block = bytes::Bytes::from_static(b"prepared outside the lock");
        let prepared =
            shardgate_core::wire::PreparedBlock::new(Bucket::Rows, block.clone()).unwrap();
        pair.link.send_prepared(1, prepared, pair.now).unwrap();
        pair.pump();
        assert_eq!(pair.received, vec![(Bucket::Rows, block.to_vec())]);
        assert_eq!(pair.link_events.last(), Some(&LinkEvent::Acked(1)));
    }
}
