//! Rows from another vminsert (the clusternative listener of a lower-level vminsert): a block
//! of encoded rows, each carrying its own tenant in the raw metric name.
//!
//! Each row is decoded back into labels, metric name first and the other labels in the order
//! they arrived (row-encoding.md §3.2), and ingested again under its own tenant so that
//! relabeling, limits and `-sortLabels` apply before it is re-sharded with the lower-level seed.

use crate::ingest::{Ingest, TenantMode};
use crate::model::{Label, METRIC_NAME_LABEL};
use crate::wire::row::{decode_block, decode_metric_name, RowError};

use super::Sink;

/// Ingest every row of `block`. Rows before a malformed one are kept; the error names the row.
pub fn ingest_block(
    block: &[u8],
    ingest: &mut Ingest<'_>,
    labels: &mut Vec<Label<'static>>,
) -> Result<u64, ClusternativeError> {
    let mut rows = 0u64;
    let mut scratch = std::mem::take(labels);
    for (i, row) in decode_block(block).enumerate() {
        let row = row.map_err(|e| ClusternativeError {
            row: i as u64 + 1,
            error: e,
        })?;
        let (tenant, parsed) =
            decode_metric_name(row.metric_name).map_err(|e| ClusternativeError {
                row: i as u64 + 1,
                error: e,
            })?;
        let mut current: Vec<Label<'_>> = crate::model::recycle_labels(scratch);
        let mut name = None;
        for label in parsed {
            let label = label.map_err(|e| ClusternativeError {
                row: i as u64 + 1,
                error: e,
            })?;
            if name.is_none() && (label.name.is_empty() || label.name == METRIC_NAME_LABEL) {
                name = Some(Label::metric_name(label.value));
            } else {
                current.push(label);
            }
        }
        if let Some(n) = name {
            current.insert(0, n);
        }
        ingest.set_tenant(TenantMode::Fixed(tenant));
        ingest.series(&current, &[row.sample]);
        rows += 1;
        scratch = crate::model::recycle_labels(current);
    }
    *labels = scratch;
    Ok(rows)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusternativeError {
    /// 1-based row number in the block.
    pub row: u64,
    pub error: RowError,
}

impl std::fmt::Display for ClusternativeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot decode row #{} of a clusternative block: {}",
            self.row, self.error
        )
    }
}

impl std::error::Error for ClusternativeError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{IngestConfig, IngestScratch, Protocol, RequestConfig};
    use crate::model::{Sample, Tenant};
    use crate::route::{series_hash, Batch, Placement, PlacementKind, LOWER_LEVEL_SEED};
    use crate::wire::row::{encode_metric_name, encode_row};

    #[test]
    fn rows_keep_their_tenant_and_are_resharded_with_the_seed() {
        let nodes: Vec<String> = (0..3).map(|i| format!("10.0.0.{i}:8400")).collect();
        let placement = Placement::new(&nodes, PlacementKind::Rendezvous, LOWER_LEVEL_SEED);
        let mut block = Vec::new();
        let mut names = Vec::new();
        for i in 0..50u32 {
            let v = format!("h{i}");
            // The name label placed second on purpose: it must come out first.
            let labels = [
                Label::new(b"host", v.as_bytes()),
                Label::metric_name(b"cpu"),
            ];
            let mut mn = Vec::new();
            encode_metric_name(&mut mn, Tenant::new(i % 3, 7), &labels);
            encode_row(&mut block, &mn, Sample::new(i64::from(i), 0.5));
            let mut want = Vec::new();
            encode_metric_name(&mut want, Tenant::new(i % 3, 7), &[labels[1], labels[0]]);
            names.push(want);
        }
        let config = IngestConfig::default();
        let mut batch = Batch::new(3);
        let mut scratch = IngestScratch::default();
        let mut ingest = Ingest::new(
            &config,
            RequestConfig::new(TenantMode::Fixed(Tenant::default()), Protocol::Standard),
            &placement,
            &mut batch,
            &mut scratch,
        );
        let mut labels = Vec::new();
        assert_eq!(ingest_block(&block, &mut ingest, &mut labels).unwrap(), 50);
        drop(ingest);
        assert_eq!(batch.rows(), 50);
        for (node, rows) in batch.nodes().iter().enumerate() {
            for row in decode_block(&rows.bytes) {
                let row = row.unwrap();
                assert!(names.iter().any(|n| n == row.metric_name));
                assert_eq!(placement.primary(series_hash(row.metric_name)), node);
            }
        }
        let mut bad = block.clone();
        bad.truncate(bad.len() - 3);
        let mut batch = Batch::new(3);
        let mut ingest = Ingest::new(
            &config,
            RequestConfig::new(TenantMode::Fixed(Tenant::default()), Protocol::Standard),
            &placement,
            &mut batch,
            &mut scratch,
        );
        let err = ingest_block(&bad, &mut ingest, &mut labels).unwrap_err();
        assert_eq!(err.row, 50);
    }
}
