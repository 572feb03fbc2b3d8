//! Arbitrary storage-node bytes into a NodeLink that dialed and, once ready, keeps sending
//! blocks. The first byte picks the generation (current, or legacy after a fallback), the
//! bucket, compression and the chunk size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::wire::{Bucket, LinkConfig, LinkEvent, NodeLink};
use shardgate_core::Time;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let now = Time::from_millis(1);
    let bucket = if control & 2 == 0 {
        Bucket::Rows
    } else {
        Bucket::Metadata
    };
    let mut config = LinkConfig::new(bucket);
    config.disable_compression = control & 4 != 0;
    let mut link = NodeLink::new(config);
    link.handle_connected(now);
    if control & 1 != 0 {
        link.handle_closed(now);
        assert_eq!(link.poll_event(), Some(LinkEvent::Redial));
        link.handle_connected(now);
    }
    let chunk = usize::from(control >> 3) + 1;
    let mut next_id = 0u64;
    for piece in rest.chunks(chunk) {
        if link.is_ready() {
            let block = vec![next_id as u8; (next_id % 5) as usize];
            let _ = link.send_block(next_id, &block, now);
            next_id += 1;
        }
        link.handle_input(piece, now);
        while link.poll_transmit().is_some() {}
        while let Some(ev) = link.poll_event() {
            if let LinkEvent::Failed { .. } | LinkEvent::Redial = ev {
                assert!(!link.is_connected());
            }
        }
    }
    if let Some(deadline) = link.poll_timeout() {
        link.handle_timeout(deadline);
    }
    link.handle_closed(now);
    while link.poll_event().is_some() {}
});
