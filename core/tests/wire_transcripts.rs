//! Replays of the TCP transcripts recorded between real vminsert and real vmstorage
//! (shared/vectors/wire/). The client side must send the recorded handshake and framing bytes
//! exactly and blocks that decompress to the recorded blocks; the server side, fed the
//! recorded client bytes with any chunk borders, must answer with the recorded server bytes.

use std::collections::BTreeMap;

use shardgate_core::wire::codec::{decompress_bounded, HELLO_LEGACY, HELLO_RPC, RPC_WRITE_ROWS};
use shardgate_core::wire::row::{decode_block, decode_metric_name};
use shardgate_core::wire::{
    Bucket, LinkConfig, LinkEvent, NodeLink, Reply, ServerConfig, ServerConn, ServerEvent,
};
use shardgate_core::{Tenant, Time};
use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

const HANDSHAKE_C2S: usize = 14;

#[derive(Debug)]
struct Line {
    conn: u64,
    c2s: bool,
    bytes: Vec<u8>,
}

fn load(name: &str) -> Vec<Line> {
    let path = format!(
        "{}/../../shared/vectors/wire/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Line {
                conn: v["conn"].as_u64().unwrap(),
                c2s: match v["dir"].as_str().unwrap() {
                    "c2s" => true,
                    "s2c" => false,
                    other => panic!("dir {other}"),
                },
                bytes: hex::decode(v["hex"].as_str().unwrap()).unwrap(),
            }
        })
        .collect()
}

fn by_conn(lines: Vec<Line>) -> BTreeMap<u64, Vec<Line>> {
    let mut map: BTreeMap<u64, Vec<Line>> = BTreeMap::new();
    for line in lines {
        map.entry(line.conn).or_default().push(line);
    }
    map
}

fn concat(lines: &[Line], c2s: bool) -> Vec<u8> {
    lines
        .iter()
        .filter(|l| l.c2s == c2s)
        .flat_map(|l| l.bytes.clone())
        .collect()
}

/// Decode an unterminated zstd stream (flushed, never ended) as far as it goes.
fn decode_stream(mut src: &[u8]) -> Vec<u8> {
    let mut decoder = Decoder::new().unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let mut input = InBuffer::around(src);
        let mut output = OutBuffer::around(&mut buf[..]);
        decoder.run(&mut input, &mut output).unwrap();
        let (read, written) = (input.pos(), output.pos());
        out.extend_from_slice(&buf[..written]);
        src = &src[read..];
        if read == 0 && written == 0 {
            assert!(src.is_empty(), "zstd stream stalled");
            return out;
        }
    }
}

fn be64(b: &[u8]) -> usize {
    u64::from_be_bytes(b[..8].try_into().unwrap()) as usize
}

/// What a post-handshake client byte stream means: the RPC name (None in legacy mode) and
/// the blocks it carries, decompressed.
fn requests(data: &[u8], legacy: bool, compressed: bool) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    let plain = if compressed {
        decode_stream(data)
    } else {
        data.to_vec()
    };
    let mut rest = &plain[..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if legacy {
            let n = be64(rest);
            out.push((None, rest[8..8 + n].to_vec()));
            rest = &rest[8 + n..];
        } else {
            let name_len = be64(rest);
            let name = rest[8..8 + name_len].to_vec();
            let rest2 = &rest[8 + name_len..];
            let n = be64(rest2);
            let block = decompress_bounded(&rest2[8..8 + n], 1 << 20).unwrap();
            out.push((Some(name), block));
            rest = &rest2[8 + n..];
        }
    }
    out
}

fn drain(link: &mut NodeLink) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = link.poll_transmit() {
        out.extend(b);
    }
    out
}

fn events(link: &mut NodeLink) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

/// Drive a link through one recorded connection whose handshake succeeded. Before each
/// server chunk, the link must have sent exactly the handshake bytes the real client had
/// sent by then; after the handshake, each recorded request is re-sent through the link and
/// compared by meaning, and each reply must settle it as acked.
fn replay_client(link: &mut NodeLink, lines: &[Line], legacy: bool, compressed: bool) {
    let mut t = Time::from_millis(1000);
    link.handle_connected(t);
    let mut recorded = Vec::new();
    let mut ours = drain(link);
    let mut sent_requests = 0;
    let mut next_id = 1u64;
    let mut ready = false;
    for line in lines {
        t = t + std::time::Duration::from_millis(1);
        if line.c2s {
            recorded.extend_from_slice(&line.bytes);
            continue;
        }
        // The real client had sent `recorded` when this server chunk arrived.
        let hs = recorded.len().min(HANDSHAKE_C2S);
        assert_eq!(
            hex::encode(&ours[..ours.len().min(HANDSHAKE_C2S)]),
            hex::encode(&recorded[..hs])
        );
        if recorded.len() > HANDSHAKE_C2S {
            let theirs = requests(&recorded[HANDSHAKE_C2S..], legacy, compressed);
            while sent_requests < theirs.len() {
                let (name, block) = &theirs[sent_requests];
                if let Some(name) = name {
                    assert_eq!(name, &link.config().bucket.rpc_name());
                }
                assert!(link.is_ready());
                link.send_block(next_id, block, t).unwrap();
                next_id += 1;
                ours.extend(drain(link));
                let mine = requests(&ours[HANDSHAKE_C2S..], legacy, compressed);
                assert_eq!(mine[sent_requests], theirs[sent_requests]);
                if !legacy && !compressed {
                    // Framing bytes before the payload are fixed: compare them exactly.
                    let name_len = 8 + be64(&recorded[HANDSHAKE_C2S..]);
                    assert_eq!(
                        ours[HANDSHAKE_C2S..HANDSHAKE_C2S + name_len],
                        recorded[HANDSHAKE_C2S..HANDSHAKE_C2S + name_len]
                    );
                }
                sent_requests += 1;
            }
        }
        link.handle_input(&line.bytes, t);
        ours.extend(drain(link));
        for ev in events(link) {
            match ev {
                LinkEvent::Ready => {
                    assert!(!ready);
                    ready = true;
                }
                LinkEvent::Acked(id) => assert_eq!(id, next_id - 1),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(
        hex::encode(&ours[..HANDSHAKE_C2S]),
        hex::encode(&recorded[..HANDSHAKE_C2S])
    );
    assert!(ready, "handshake did not complete");
    assert!(link.is_ready());
    assert_eq!(link.is_legacy(), legacy);
    assert_eq!(
        requests(&ours[HANDSHAKE_C2S..], legacy, compressed),
        requests(&recorded[HANDSHAKE_C2S..], legacy, compressed)
    );
}

/// Feed the recorded client bytes to a server, re-chunked every `chunk` bytes, and answer
/// every block with OK. Returns what it sent and the blocks it received.
fn replay_server(lines: &[Line], chunk: usize) -> (Vec<u8>, Vec<Vec<u8>>, Vec<bool>) {
    let t = Time::from_millis(5);
    let mut server = ServerConn::new(ServerConfig::default(), t);
    let c2s = concat(lines, true);
    let mut sent = Vec::new();
    let mut blocks = Vec::new();
    let mut handshakes = Vec::new();
    for piece in c2s.chunks(chunk) {
        server.handle_input(piece, t);
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Handshaken { legacy } => handshakes.push(legacy),
                ServerEvent::Block {
                    request,
                    bucket,
                    block,
                } => {
                    assert_eq!(bucket, Bucket::Rows);
                    blocks.push(block);
                    server.reply(request, Reply::Ok);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        while let Some(b) = server.poll_transmit() {
            sent.extend(b);
        }
    }
    server.handle_closed(t);
    assert_eq!(server.poll_event(), Some(ServerEvent::Closed));
    (sent, blocks, handshakes)
}

type Row = (Tenant, Vec<(Vec<u8>, Vec<u8>)>, i64, u64);

fn rows(block: &[u8]) -> Vec<Row> {
    decode_block(block)
        .map(|r| {
            let r = r.unwrap();
            let (tenant, labels) = decode_metric_name(r.metric_name).unwrap();
            let labels = labels
                .map(|l| l.unwrap())
                .map(|l| (l.name.to_vec(), l.value.to_vec()));
            (
                tenant,
                labels.collect(),
                r.sample.timestamp_ms,
                r.sample.value_bits,
            )
        })
        .collect()
}

#[test]
fn rpc_client_matches_recording() {
    let conns = by_conn(load("rpc-v03-current.jsonl"));
    assert_eq!(conns.len(), 2);
    for (conn, lines) in &conns {
        let c2s = concat(lines, true);
        assert_eq!(&c2s[..11], HELLO_RPC);
        let carries_rows = c2s
            .windows(RPC_WRITE_ROWS.len())
            .any(|w| w == RPC_WRITE_ROWS);
        // The idle connection is the metadata one; either bucket handshakes the same way.
        let bucket = if carries_rows {
            Bucket::Rows
        } else {
            Bucket::Metadata
        };
        let mut link = NodeLink::new(LinkConfig::new(bucket));
        replay_client(&mut link, lines, false, false);
        assert!(
            link.poll_timeout().is_none(),
            "conn {conn}: idle link keeps a deadline"
        );
    }
}

#[test]
fn legacy_client_matches_recording() {
    let conns = by_conn(load("legacy-v02-v1.79.jsonl"));
    let lines = &conns[&1];
    // A v1.79 client never tried vminsert.03; reach the legacy hello through the fallback.
    let mut link = NodeLink::new(LinkConfig::new(Bucket::Rows));
    link.handle_connected(Time::ZERO);
    assert_eq!(drain(&mut link), HELLO_RPC);
    link.handle_closed(Time::ZERO);
    assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
    assert_awaiting_redial(&mut link);
    replay_client(&mut link, lines, true, true);
}

fn assert_awaiting_redial(link: &mut NodeLink) {
    assert!(!link.is_connected());
    assert!(link.poll_timeout().is_none());
    assert!(
        link.poll_transmit().is_none(),
        "bytes queued for a dropped socket"
    );
}

#[test]
fn fallback_client_matches_recording() {
    let conns = by_conn(load("fallback-v03-to-v02.jsonl"));
    // conns 1, 2: vminsert.03 refused by closing; conns 3, 4: the re-dials with vminsert.02.
    let refused: Vec<_> = conns
        .iter()
        .filter(|(_, l)| l.iter().all(|l| l.c2s))
        .collect();
    assert_eq!(refused.len(), 2);
    for (_, lines) in &refused {
        assert_eq!(concat(lines, true), HELLO_RPC);
    }
    for (refused_conn, redial_conn) in [(1, 3), (2, 4)] {
        let redial = &conns[&redial_conn];
        let c2s = concat(redial, true);
        assert_eq!(&c2s[..11], HELLO_LEGACY);
        let bucket = if c2s.len() > HANDSHAKE_C2S {
            Bucket::Rows
        } else {
            Bucket::Metadata
        };
        let mut link = NodeLink::new(LinkConfig::new(bucket));
        let t = Time::from_millis(10);
        link.handle_connected(t);
        assert_eq!(drain(&mut link), concat(&conns[&refused_conn], true));
        link.handle_closed(t);
        assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
        assert_awaiting_redial(&mut link);
        replay_client(&mut link, redial, true, true);
        if bucket == Bucket::Metadata {
            assert_eq!(
                link.send_block(9, b"", t),
                Err(shardgate_core::wire::SendError::MetadataOnLegacy)
            );
        }
    }
}

#[test]
fn server_answers_rpc_recording() {
    let conns = by_conn(load("rpc-v03-current.jsonl"));
    for lines in conns.values() {
        for chunk in [1, 2, 3, 5, 13, 1 << 20] {
            let (sent, blocks, handshakes) = replay_server(lines, chunk);
            assert_eq!(
                hex::encode(sent),
                hex::encode(concat(lines, false)),
                "chunk {chunk}"
            );
            assert_eq!(handshakes, vec![false]);
            let c2s = concat(lines, true);
            let expected: Vec<Vec<u8>> = requests(&c2s[HANDSHAKE_C2S..], false, false)
                .into_iter()
                .map(|(_, b)| b)
                .collect();
            assert_eq!(blocks, expected);
        }
    }
    // The one request carries two rows for tenant 1:2.
    let (_, blocks, _) = replay_server(&conns[&2], 7);
    let got = rows(&blocks[0]);
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|r| r.0 == Tenant::new(1, 2)));
}

#[test]
fn server_answers_legacy_recordings() {
    let legacy = by_conn(load("legacy-v02-v1.79.jsonl"));
    let fallback = by_conn(load("fallback-v03-to-v02.jsonl"));
    for lines in [&legacy[&1], &fallback[&3], &fallback[&4]] {
        for chunk in [1, 2, 4, 11, 1 << 20] {
            let (sent, blocks, handshakes) = replay_server(lines, chunk);
            assert_eq!(
                hex::encode(sent),
                hex::encode(concat(lines, false)),
                "chunk {chunk}"
            );
            assert_eq!(handshakes, vec![true]);
            let c2s = concat(lines, true);
            let expected: Vec<Vec<u8>> = if c2s.len() > HANDSHAKE_C2S {
                requests(&c2s[HANDSHAKE_C2S..], true, true)
                    .into_iter()
                    .map(|(_, b)| b)
                    .collect()
            } else {
                Vec::new()
            };
            assert_eq!(blocks, expected);
        }
    }
    // The fallback recording's row: wire_test{a="b"} 1.5 for tenant 1:2.
    let (_, blocks, _) = replay_server(&fallback[&3], 3);
    let got = rows(&blocks[0]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, Tenant::new(1, 2));
    assert_eq!(
        got[0].1,
        vec![
            (b"".to_vec(), b"wire_test".to_vec()),
            (b"a".to_vec(), b"b".to_vec())
        ]
    );
    assert_eq!(f64::from_bits(got[0].3), 1.5);
    // The v1.79 recording carries rows too, all decodable.
    let (_, blocks, _) = replay_server(&legacy[&1], 1);
    assert!(!rows(&blocks[0]).is_empty());
}
