//! A block from a lower-level vminsert: arbitrary bytes as rows. Never panics; a block that
//! decodes is ingested in full, and every row lands on the storage node its name hashes to.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardgate_core::formats::clusternative::ingest_block;
use shardgate_core::ingest::TenantMode;
use shardgate_core::ingest::{Ingest, IngestConfig, IngestScratch, Protocol, RequestConfig};
use shardgate_core::model::Tenant;
use shardgate_core::route::{series_hash, Batch, Placement, PlacementKind, LOWER_LEVEL_SEED};
use shardgate_core::wire::row::decode_block;

fuzz_target!(|data: &[u8]| {
    let nodes: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:8400")).collect();
    let placement = Placement::new(&nodes, PlacementKind::Rendezvous, LOWER_LEVEL_SEED);
    let config = IngestConfig::default();
    let mut batch = Batch::new(nodes.len());
    let mut scratch = IngestScratch::default();
    let mut ingest = Ingest::new(
        &config,
        RequestConfig::new(TenantMode::Fixed(Tenant::default()), Protocol::Standard),
        &placement,
        &mut batch,
        &mut scratch,
    );
    let mut labels = Vec::new();
    let result = ingest_block(data, &mut ingest, &mut labels);
    let received = ingest.stats().rows_received;
    drop(ingest);
    match result {
        Ok(rows) => assert_eq!(rows, received),
        // Rows before the bad one are kept, so the error names the row after them.
        Err(e) => assert_eq!(e.row, received + 1),
    }
    assert!(batch.rows() <= received);
    for (node, rows) in batch.nodes().iter().enumerate() {
        for row in decode_block(&rows.bytes) {
            // What we encoded must decode again.
            let row = row.expect("a row we encoded decodes");
            assert_eq!(placement.primary(series_hash(row.metric_name)), node);
        }
    }
});
