//! Ingestion formats: one module per format, each turning client bytes into series and samples.
//!
//! A parser knows nothing about tenants, limits, relabeling or placement. It hands every series
//! it finds to a [`Sink`], with the labels in the order vminsert's handler for that format
//! produces them (row-encoding.md §3.2), and reports bad lines to the same sink. The ingest
//! pipeline implements `Sink`; tests implement it with a plain collector.

use crate::model::{Label, Sample};

/// Where parsed series go.
pub trait Sink {
    /// One series and its samples. `labels` borrow from the request or from the parser's scratch
    /// space and are only valid during the call.
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]);

    /// A line or item that could not be parsed. `line` is 1-based where the format has lines,
    /// 0 otherwise. Parsing continues with the next line where the format allows it.
    fn invalid(&mut self, line: u64, reason: &str) {
        let _ = (line, reason);
    }
}
