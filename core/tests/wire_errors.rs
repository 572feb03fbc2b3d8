//! Failure paths of both ends: hostile or broken peers, deadlines, and the replies that are
//! not plain successes.

use std::time::Duration;

use shardgate_core::wire::codec::{
    compress_block, frame_rpc_request, DecompressError, HELLO_LEGACY, HELLO_RPC, MSG_READ_ONLY,
    MSG_UNSUPPORTED_RPC,
};
use shardgate_core::wire::link::{ConnectionFailure, HandshakeFailure};
use shardgate_core::wire::{
    Bucket, LinkConfig, LinkError, LinkEvent, NodeLink, Reply, SendError, ServerConfig, ServerConn,
    ServerError, ServerEvent,
};
use shardgate_core::Time;

const T0: Time = Time::from_millis(1_000);

fn secs(s: u64) -> Time {
    T0 + Duration::from_secs(s)
}

fn drain_server(server: &mut ServerConn) -> Vec<u8> {
    std::iter::from_fn(|| server.poll_transmit())
        .flatten()
        .collect()
}

fn server_events(server: &mut ServerConn) -> Vec<ServerEvent> {
    std::iter::from_fn(|| server.poll_event()).collect()
}

/// A server past the handshake; `client_flag` is the client's isCompressed byte.
fn handshaken(hello: &[u8], client_flag: u8, config: ServerConfig) -> ServerConn {
    let mut server = ServerConn::new(config, T0);
    server.handle_input(hello, T0);
    server.handle_input(&[client_flag], T0);
    server.handle_input(b"ok", T0);
    assert_eq!(drain_server(&mut server), b"okok\x00");
    let legacy = hello == HELLO_LEGACY;
    assert_eq!(
        server_events(&mut server),
        vec![ServerEvent::Handshaken { legacy }]
    );
    server
}

fn last_error(server: &mut ServerConn) -> ServerError {
    match server_events(server).pop() {
        Some(ServerEvent::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[test]
fn server_health_check_and_garbage_hello() {
    let mut server = ServerConn::new(ServerConfig::default(), T0);
    server.handle_closed(T0);
    assert_eq!(server_events(&mut server), vec![ServerEvent::HealthCheck]);

    let mut server = ServerConn::new(ServerConfig::default(), T0);
    server.handle_input(b"GET / HTTP/1.1\r\n\r\n", T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BadHello(b"GET / HTTP/".to_vec())
    );
    assert!(server.is_closed());
    assert!(drain_server(&mut server).is_empty());

    let mut server = ServerConn::new(ServerConfig::default(), T0);
    server.handle_input(b"vminsert.01", T0);
    assert!(matches!(last_error(&mut server), ServerError::BadHello(_)));
}

#[test]
fn server_rejects_bad_final_ok_and_truncated_handshake() {
    let mut server = ServerConn::new(ServerConfig::default(), T0);
    server.handle_input(HELLO_RPC, T0);
    server.handle_input(b"\x00no", T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BadHandshake(b"no".to_vec())
    );

    let mut server = ServerConn::new(ServerConfig::default(), T0);
    server.handle_input(b"vmins", T0);
    server.handle_closed(T0);
    assert_eq!(last_error(&mut server), ServerError::UnexpectedEof);
}

#[test]
fn server_handshake_timeout() {
    let mut server = ServerConn::new(ServerConfig::default(), T0);
    assert_eq!(server.poll_timeout(), Some(secs(5)));
    server.handle_input(HELLO_RPC, T0);
    server.handle_timeout(secs(4));
    assert!(server_events(&mut server).is_empty());
    server.handle_timeout(secs(5));
    assert_eq!(last_error(&mut server), ServerError::HandshakeTimeout);
    assert_eq!(server.poll_timeout(), None);

    // Once handshaken, an idle connection has no deadline.
    let server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    assert_eq!(server.poll_timeout(), None);
}

#[test]
fn server_refuses_oversized_rpc_lengths() {
    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    server.handle_input(&u64::MAX.to_be_bytes(), T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::RpcNameTooLong(u64::MAX)
    );

    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    server.handle_input(&129u64.to_be_bytes(), T0);
    assert_eq!(last_error(&mut server), ServerError::RpcNameTooLong(129));

    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let mut req = Vec::new();
    req.extend_from_slice(&12u64.to_be_bytes());
    req.extend_from_slice(b"writeRows_v1");
    req.extend_from_slice(&(100 * 1024 * 1024 + 1u64).to_be_bytes());
    server.handle_input(&req, T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BlockTooLarge(100 * 1024 * 1024 + 1)
    );
    // The client hears why before the connection closes.
    let reply = drain_server(&mut server);
    assert!(reply.len() > 8);
    assert!(String::from_utf8_lossy(&reply[8..]).contains("too big"));
}

#[test]
fn server_waits_for_a_declared_payload_without_failing() {
    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let mut req = Vec::new();
    req.extend_from_slice(&12u64.to_be_bytes());
    req.extend_from_slice(b"writeRows_v1");
    req.extend_from_slice(&(90 * 1024 * 1024u64).to_be_bytes());
    req.extend_from_slice(b"only a few bytes");
    server.handle_input(&req, T0);
    assert!(server_events(&mut server).is_empty());
    server.handle_closed(T0);
    assert_eq!(last_error(&mut server), ServerError::UnexpectedEof);
}

#[test]
fn server_answers_unknown_rpc_and_closes() {
    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let mut req = Vec::new();
    frame_rpc_request(
        &mut req,
        b"writeSomething_v9",
        &compress_block(b"").unwrap(),
    );
    server.handle_input(&req, T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::UnsupportedRpc("writeSomething_v9".into())
    );
    let reply = drain_server(&mut server);
    assert_eq!(
        &reply[..8],
        &(MSG_UNSUPPORTED_RPC.len() as u64).to_be_bytes()
    );
    assert_eq!(&reply[8..], MSG_UNSUPPORTED_RPC.as_bytes());
    assert!(server.is_closed());
}

#[test]
fn server_rejects_bad_and_oversized_payloads() {
    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let mut req = Vec::new();
    frame_rpc_request(&mut req, b"writeRows_v1", b"this is not a zstd frame");
    server.handle_input(&req, T0);
    assert!(matches!(
        last_error(&mut server),
        ServerError::BadPayload(DecompressError::Corrupt(_))
    ));

    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let frame = compress_block(b"a block that will be cut short").unwrap();
    let mut req = Vec::new();
    frame_rpc_request(&mut req, b"writeRows_v1", &frame[..frame.len() - 3]);
    server.handle_input(&req, T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BadPayload(DecompressError::Truncated)
    );

    // A small payload that expands past the limit.
    let config = ServerConfig {
        max_block_len: 1 << 20,
        ..ServerConfig::default()
    };
    let mut server = handshaken(HELLO_RPC, 0, config);
    let bomb = compress_block(&vec![0u8; 8 << 20]).unwrap();
    assert!(bomb.len() < 4096);
    let mut req = Vec::new();
    frame_rpc_request(&mut req, b"writeRows_v1", &bomb);
    server.handle_input(&req, T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BadPayload(DecompressError::TooLarge { limit: 1 << 20 })
    );
}

#[test]
fn server_legacy_limits_and_bad_stream() {
    let mut server = handshaken(HELLO_LEGACY, 0, ServerConfig::default());
    server.handle_input(&u64::MAX.to_be_bytes(), T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BlockTooLarge(u64::MAX)
    );

    let mut server = handshaken(HELLO_LEGACY, 1, ServerConfig::default());
    server.handle_input(b"\x00\x00\x00\x00\x00\x00\x00\x05hello", T0);
    assert!(matches!(last_error(&mut server), ServerError::BadStream(_)));

    // A legacy stream that expands beyond the limit is refused at the length prefix,
    // before the block is decoded.
    let config = ServerConfig {
        max_block_len: 1 << 20,
        ..ServerConfig::default()
    };
    let mut server = handshaken(HELLO_LEGACY, 1, config);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 1).unwrap();
    std::io::Write::write_all(&mut enc, &(64u64 << 20).to_be_bytes()).unwrap();
    std::io::Write::write_all(&mut enc, &vec![0u8; 4 << 20]).unwrap();
    std::io::Write::flush(&mut enc).unwrap();
    server.handle_input(enc.get_ref(), T0);
    assert_eq!(
        last_error(&mut server),
        ServerError::BlockTooLarge(64 << 20)
    );
}

#[test]
fn server_legacy_acks_and_probe() {
    let mut server = handshaken(HELLO_LEGACY, 0, ServerConfig::default());
    // The read-only probe of a legacy connection: eight zero bytes.
    server.handle_input(&[0; 8], T0);
    let ServerEvent::Block { request, block, .. } = server.poll_event().unwrap() else {
        panic!("no block");
    };
    assert!(block.is_empty());
    server.reply(request, Reply::ReadOnly);
    assert_eq!(drain_server(&mut server), [2]);
    server.handle_input(&[0, 0, 0, 0, 0, 0, 0, 1, 9], T0);
    let ServerEvent::Block { request, block, .. } = server.poll_event().unwrap() else {
        panic!("no block");
    };
    assert_eq!(block, [9]);
    server.reply(request, Reply::Ok);
    assert_eq!(drain_server(&mut server), [1]);
    server.handle_input(&[0, 0, 0], T0);
    server.handle_closed(T0);
    assert_eq!(last_error(&mut server), ServerError::UnexpectedEof);
}

#[test]
fn server_error_reply_closes() {
    let mut server = handshaken(HELLO_RPC, 0, ServerConfig::default());
    let mut req = Vec::new();
    frame_rpc_request(&mut req, b"writeRows_v1", &compress_block(b"x").unwrap());
    server.handle_input(&req, T0);
    let ServerEvent::Block { request, .. } = server.poll_event().unwrap() else {
        panic!("no block");
    };
    server.reply(
        request,
        Reply::Error("cannot process insert request: timeout".into()),
    );
    let reply = drain_server(&mut server);
    assert_eq!(&reply[8..], b"cannot process insert request: timeout");
    assert!(server.is_closed());
    assert!(matches!(last_error(&mut server), ServerError::Replied(_)));
}

#[test]
fn server_refuses_a_client_that_floods_before_the_reply() {
    let config = ServerConfig {
        max_block_len: 1024,
        ..ServerConfig::default()
    };
    let mut server = handshaken(HELLO_RPC, 0, config);
    let mut req = Vec::new();
    frame_rpc_request(&mut req, b"writeRows_v1", &compress_block(b"x").unwrap());
    server.handle_input(&req, T0);
    assert!(matches!(
        server.poll_event(),
        Some(ServerEvent::Block { .. })
    ));
    let junk = vec![0u8; 64 * 1024];
    for _ in 0..3 {
        server.handle_input(&junk, T0);
    }
    assert!(matches!(
        last_error(&mut server),
        ServerError::TooMuchPendingInput(_)
    ));
}

// ---------------------------------------------------------------- client side

fn drain(link: &mut NodeLink) -> Vec<u8> {
    std::iter::from_fn(|| link.poll_transmit())
        .flatten()
        .collect()
}

fn events(link: &mut NodeLink) -> Vec<LinkEvent> {
    std::iter::from_fn(|| link.poll_event()).collect()
}

fn connected(bucket: Bucket, legacy: bool, disable_compression: bool) -> NodeLink {
    let mut config = LinkConfig::new(bucket);
    config.disable_compression = disable_compression;
    let mut link = NodeLink::new(config);
    link.handle_connected(T0);
    if legacy {
        link.handle_closed(T0);
        assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
        link.handle_connected(T0);
    }
    link
}

fn ready(bucket: Bucket, legacy: bool, disable_compression: bool, server_flag: u8) -> NodeLink {
    let mut link = connected(bucket, legacy, disable_compression);
    link.handle_input(b"okok", T0);
    link.handle_input(&[server_flag], T0);
    assert_eq!(events(&mut link), vec![LinkEvent::Ready]);
    drain(&mut link);
    link
}

fn failed(link: &mut NodeLink) -> (Option<u64>, LinkError) {
    match events(link).pop() {
        Some(LinkEvent::Failed { block, error }) => (block, error),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn client_handshake_bytes() {
    let mut link = connected(Bucket::Rows, false, false);
    assert_eq!(drain(&mut link), HELLO_RPC);
    link.handle_input(b"o", T0);
    assert!(drain(&mut link).is_empty());
    link.handle_input(b"k", T0);
    assert_eq!(drain(&mut link), [0]);
    link.handle_input(b"ok\x00", T0);
    assert_eq!(drain(&mut link), b"ok");
    assert!(link.is_ready());

    let mut link = connected(Bucket::Rows, true, false);
    assert_eq!(drain(&mut link), HELLO_LEGACY);
    link.handle_input(b"ok", T0);
    assert_eq!(drain(&mut link), [1]);

    let mut link = connected(Bucket::Rows, true, true);
    drain(&mut link);
    link.handle_input(b"ok", T0);
    assert_eq!(drain(&mut link), [0]);
}

#[test]
fn client_falls_back_only_where_the_spec_says() {
    // Wrong bytes at the first "ok": fall back.
    let mut link = connected(Bucket::Rows, false, false);
    link.handle_input(b"no", T0);
    assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
    assert!(drain(&mut link).is_empty());
    // Timeout at the first "ok": fall back, and the re-dial gets a fresh deadline.
    let mut link = connected(Bucket::Rows, false, false);
    assert_eq!(link.poll_timeout(), Some(secs(5)));
    link.handle_timeout(secs(5));
    assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
    link.handle_connected(secs(6));
    assert_eq!(drain(&mut link), HELLO_LEGACY);
    assert_eq!(link.poll_timeout(), Some(secs(11)));
    // EOF at a later step: fall back.
    let mut link = connected(Bucket::Rows, false, false);
    link.handle_input(b"okok", T0);
    link.handle_closed(T0);
    assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
    // Wrong bytes at a later step: handshake error.
    let mut link = connected(Bucket::Rows, false, false);
    link.handle_input(b"okxx", T0);
    assert_eq!(
        failed(&mut link),
        (
            None,
            LinkError::Handshake(HandshakeFailure::UnexpectedReply)
        )
    );
    // Timeout at a later step: handshake error.
    let mut link = connected(Bucket::Rows, false, false);
    link.handle_input(b"ok", T0);
    link.handle_timeout(secs(4));
    assert!(events(&mut link).is_empty());
    link.handle_timeout(secs(5));
    assert_eq!(
        failed(&mut link),
        (None, LinkError::Handshake(HandshakeFailure::Timeout))
    );
    // Any failure of the legacy attempt: handshake error, and the next dial starts over.
    let mut link = connected(Bucket::Rows, true, false);
    link.handle_closed(T0);
    assert_eq!(
        failed(&mut link),
        (None, LinkError::Handshake(HandshakeFailure::Closed))
    );
    link.handle_connected(T0);
    assert_eq!(drain(&mut link), HELLO_RPC);
    // A re-dial that fails.
    let mut link = connected(Bucket::Rows, false, false);
    link.handle_closed(T0);
    assert_eq!(events(&mut link), vec![LinkEvent::Redial]);
    link.handle_closed(T0);
    assert_eq!(
        failed(&mut link),
        (None, LinkError::Handshake(HandshakeFailure::Closed))
    );
}

fn rpc_reply(msg: &[u8]) -> Vec<u8> {
    let mut out = (msg.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(msg);
    out
}

#[test]
fn client_maps_rpc_replies() {
    let mut link = ready(Bucket::Rows, false, false, 0);
    assert_eq!(link.poll_timeout(), None);
    link.send_block(1, b"", T0).unwrap();
    // The read-only probe: the bucket's RPC name and zstd(empty).
    let mut probe = Vec::new();
    frame_rpc_request(
        &mut probe,
        b"writeRows_v1",
        &[0x28, 0xb5, 0x2f, 0xfd, 0x20, 0, 1, 0, 0],
    );
    assert_eq!(drain(&mut link), probe);
    assert_eq!(link.send_block(2, b"x", T0), Err(SendError::NotReady));
    assert_eq!(link.poll_timeout(), Some(secs(60)));
    link.handle_input(&rpc_reply(MSG_READ_ONLY.as_bytes()), T0);
    assert_eq!(events(&mut link), vec![LinkEvent::ReadOnly(1)]);
    assert!(link.is_ready());

    link.send_block(2, b"x", T0).unwrap();
    link.handle_input(&rpc_reply(MSG_UNSUPPORTED_RPC.as_bytes()), T0);
    assert_eq!(failed(&mut link), (Some(2), LinkError::UnsupportedRpc));
    assert!(!link.is_connected());

    let mut link = ready(Bucket::Metadata, false, false, 0);
    link.send_block(3, b"x", T0).unwrap();
    link.handle_input(&rpc_reply(b"cannot process insert request"), T0);
    assert_eq!(
        failed(&mut link),
        (
            Some(3),
            LinkError::ServerError("cannot process insert request".into())
        )
    );

    let mut link = ready(Bucket::Rows, false, false, 0);
    link.send_block(4, b"x", T0).unwrap();
    link.handle_input(&(64 * 1024 + 1u64).to_be_bytes(), T0);
    assert_eq!(
        failed(&mut link),
        (
            Some(4),
            LinkError::Connection(ConnectionFailure::ReplyTooLong(64 * 1024 + 1))
        )
    );
}

#[test]
fn client_maps_legacy_acks() {
    let mut link = ready(Bucket::Rows, true, true, 0);
    link.send_block(1, b"", T0).unwrap();
    assert_eq!(drain(&mut link), [0; 8]);
    link.handle_input(&[2], T0);
    assert_eq!(events(&mut link), vec![LinkEvent::ReadOnly(1)]);
    link.send_block(2, b"ab", T0).unwrap();
    assert_eq!(drain(&mut link), [0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
    link.handle_input(&[1], T0);
    assert_eq!(events(&mut link), vec![LinkEvent::Acked(2)]);
    link.send_block(3, b"ab", T0).unwrap();
    link.handle_input(&[3], T0);
    assert_eq!(
        failed(&mut link),
        (Some(3), LinkError::Connection(ConnectionFailure::BadAck(3)))
    );
    // Metadata cannot travel on a legacy connection.
    let mut link = ready(Bucket::Metadata, true, false, 0);
    assert_eq!(
        link.send_block(1, b"m", T0),
        Err(SendError::MetadataOnLegacy)
    );
    assert!(link.is_ready());
}

#[test]
fn client_request_deadline_and_eof() {
    let mut link = ready(Bucket::Rows, false, false, 0);
    let big = vec![0u8; 30_000_000];
    link.send_block(1, &big, T0).unwrap();
    assert_eq!(link.poll_timeout(), Some(secs(100)));
    link.handle_timeout(secs(99));
    assert!(events(&mut link).is_empty());
    link.handle_timeout(secs(100));
    assert_eq!(
        failed(&mut link),
        (Some(1), LinkError::Connection(ConnectionFailure::Timeout))
    );
    assert!(drain(&mut link).is_empty());

    let mut link = ready(Bucket::Rows, false, false, 0);
    link.send_block(2, b"x", T0).unwrap();
    link.handle_input(&[0, 0, 0], T0);
    link.handle_closed(T0);
    assert_eq!(
        failed(&mut link),
        (Some(2), LinkError::Connection(ConnectionFailure::Closed))
    );

    // A socket replaced under a pending request still settles that request.
    let mut link = ready(Bucket::Rows, false, false, 0);
    link.send_block(5, b"x", T0).unwrap();
    link.handle_connected(T0);
    assert_eq!(
        failed(&mut link),
        (Some(5), LinkError::Connection(ConnectionFailure::Closed))
    );
    assert_eq!(drain(&mut link), HELLO_RPC);

    let mut link = ready(Bucket::Rows, false, false, 0);
    link.handle_input(b"?", T0);
    assert_eq!(
        failed(&mut link),
        (
            None,
            LinkError::Connection(ConnectionFailure::UnexpectedBytes)
        )
    );
}

#[test]
fn client_honours_a_compressing_server() {
    let mut link = ready(Bucket::Rows, false, false, 1);
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    for id in 1..=3u64 {
        link.send_block(id, b"x", T0).unwrap();
        let reply = if id == 2 {
            rpc_reply(MSG_READ_ONLY.as_bytes())
        } else {
            rpc_reply(b"")
        };
        std::io::Write::write_all(&mut enc, &reply).unwrap();
        std::io::Write::flush(&mut enc).unwrap();
        let bytes = std::mem::take(enc.get_mut());
        for b in &bytes {
            link.handle_input(std::slice::from_ref(b), T0);
        }
        let expected = if id == 2 {
            LinkEvent::ReadOnly(id)
        } else {
            LinkEvent::Acked(id)
        };
        assert_eq!(events(&mut link), vec![expected]);
    }
    // A corrupt stream breaks the connection.
    link.send_block(4, b"x", T0).unwrap();
    link.handle_input(b"garbage garbage garbage", T0);
    assert!(matches!(
        failed(&mut link),
        (
            Some(4),
            LinkError::Connection(ConnectionFailure::BadCompressedReply(_))
        )
    ));
}
