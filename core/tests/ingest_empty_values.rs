//! Empty-valued labels are dropped before the shard key is built (common.md §3), which decides
//! the node of remote-write series such as those of the golden vector
//! `formats/rw-empty-label-value-and-no-name`.

use shardgate_core::formats::Sink;
use shardgate_core::ingest::{
    Ingest, IngestConfig, IngestScratch, Protocol, RequestConfig, TenantMode,
};
use shardgate_core::model::{Label, Sample, Tenant};
use shardgate_core::route::{Batch, Placement, PlacementKind};

#[test]
fn remote_write_series_with_empty_values_land_where_vminsert_put_them() {
    let nodes: Vec<String> = (1..=3).map(|i| format!("127.0.0.1:1900{i}")).collect();
    let placement = Placement::new(&nodes, PlacementKind::Rendezvous, 0);
    let config = IngestConfig::default();
    let mut batch = Batch::new(3);
    let mut scratch = IngestScratch::default();
    let mut ingest = Ingest::new(
        &config,
        RequestConfig::new(TenantMode::Fixed(Tenant::default()), Protocol::RemoteWrite),
        &placement,
        &mut batch,
        &mut scratch,
    );
    ingest.series(
        &[Label::new(b"job", b"x"), Label::new(b"empty", b"")],
        &[Sample::new(1, 1.0)],
    );
    ingest.series(
        &[Label::new(b"__name__", b""), Label::new(b"k", b"v")],
        &[Sample::new(1, 2.0)],
    );
    drop(ingest);
    // The vector recorded both rows on node 2 (127.0.0.1:19003).
    assert_eq!(batch.nodes()[2].rows, 2);
    assert_eq!(batch.rows(), 2);
}
