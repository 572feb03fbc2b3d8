//! Arbitrary client bytes into a storage-node connection, cut at arbitrary borders. The
//! first byte picks how the input starts (raw, or after a valid handshake of either
//! generation) and the chunk size; every block is answered so parsing continues.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::wire::{Reply, ServerConfig, ServerConn, ServerEvent};
use shardgate_core::Time;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let now = Time::from_millis(1);
    let config = ServerConfig {
        max_block_len: 1 << 20,
        ..ServerConfig::default()
    };
    let mut server = ServerConn::new(config, now);
    let prefix: &[u8] = match control & 3 {
        0 => b"",
        1 => b"vminsert.03\x00ok",
        2 => b"vminsert.02\x00ok",
        _ => b"vminsert.02\x01ok",
    };
    let chunk = usize::from(control >> 2) + 1;
    let input: Vec<u8> = prefix.iter().chain(rest).copied().collect();
    let mut replies = 0u32;
    for piece in input.chunks(chunk) {
        server.handle_input(piece, now);
        while let Some(ev) = server.poll_event() {
            if let ServerEvent::Block { request, block, .. } = ev {
                assert!(block.len() <= 1 << 20);
                replies += 1;
                // Every third block meets a read-only node.
                let reply = match replies % 3 {
                    0 => Reply::ReadOnly,
                    _ => Reply::Ok,
                };
                server.reply(request, reply);
            }
        }
        while server.poll_transmit().is_some() {}
    }
    server.handle_timeout(Time::from_millis(10_000));
    server.handle_closed(now);
    while server.poll_event().is_some() {}
});
