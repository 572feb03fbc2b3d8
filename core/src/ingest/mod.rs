//! The ingest pipeline: what happens to every parsed series before it becomes rows in a
//! [`Batch`] (spec: formats/common.md §3, row-encoding.md §3–§5, sharding §2).
//!
//! A parser feeds an [`Ingest`] through the [`Sink`] trait. Per series, in vminsert's order:
//! extra labels are appended (path labels, then `extra_label` args; before the metric name for
//! Influx), relabeling runs if configured (on a `__name__`-form copy), the label limits drop the
//! series if it breaks one, `-sortLabels` sorts, the tenant is picked (multitenant mode), and the
//! series goes to [`Batch::add_series`] with the protocol's shard key.
//!
//! The common case (no relabeling, no extra labels, no sorting, a fixed tenant) hands the
//! parser's labels straight to the batch. The other cases reuse scratch vectors kept in an
//! [`IngestScratch`] across series and requests, so steady-state ingestion does not allocate.

pub mod extra;
pub mod tenant;

use std::sync::Arc;

pub use extra::{extra_labels, parse_extra_label, pushgateway_labels, ExtraLabelError};
pub use tenant::{
    looks_like_tenant, parse_tenant, parse_tenant_mode, take_tenant_from_labels,
    tenant_from_headers, TenantError, TenantMode,
};

use crate::formats::{Metadata, Sink};
use crate::limits::{LimitViolation, Limits};
use crate::model::{Label, OwnedLabel, Sample, Tenant, METRIC_NAME_LABEL};
use crate::relabel::{LabelSet, RelabelConfig};
use crate::route::{Batch, Placement, ShardKey};

/// The per-protocol differences the pipeline keeps (row-encoding.md §3.2, sharding §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Every format that encodes before it hashes: Prometheus text, JSON-lines import, CSV,
    /// native import, Graphite, OpenTSDB, DataDog, NewRelic, clusternative.
    Standard,
    /// Prometheus remote write: hashes the labels as given (a literal `__name__` included).
    RemoteWrite,
    /// OpenTelemetry: hashes the labels as given, like remote write.
    OpenTelemetry,
    /// Influx line protocol: the metric name comes last, after the extra labels. Without
    /// relabeling, `-maxLabelsPerTimeseries` does not count the name and `-sortLabels` leaves
    /// the name last. Parsers call [`Sink::series_name_last`].
    Influx,
    /// Zabbix connector: a series that breaks a label limit is counted but written anyway
    /// (unsorted), as vminsert does.
    Zabbix,
}

impl Protocol {
    pub fn shard_key(self) -> ShardKey {
        match self {
            Protocol::RemoteWrite | Protocol::OpenTelemetry => ShardKey::AsGiven,
            _ => ShardKey::MetricName,
        }
    }
}

/// Process-wide settings. The shell keeps the current one in an `Arc` and replaces it when
/// `-relabelConfig` is reloaded; each request works on the snapshot it started with.
#[derive(Clone, Debug, Default)]
pub struct IngestConfig {
    pub limits: Limits,
    /// `-sortLabels`.
    pub sort_labels: bool,
    /// `-relabelConfig` rules and `-usePromCompatibleNaming`.
    pub relabel: Arc<RelabelConfig>,
    /// `-enableMetadata` (vminsert's default is true): forward metrics metadata to the
    /// storage nodes' metadata connections.
    pub enable_metadata: bool,
}

/// Per-request settings.
#[derive(Clone, Debug)]
pub struct RequestConfig {
    pub tenant: TenantMode,
    /// Path labels then `extra_label` args ([`extra_labels`]); empty on TCP/UDP listeners.
    pub extra_labels: Vec<OwnedLabel>,
    pub protocol: Protocol,
}

impl RequestConfig {
    pub fn new(tenant: TenantMode, protocol: Protocol) -> RequestConfig {
        RequestConfig {
            tenant,
            extra_labels: Vec::new(),
            protocol,
        }
    }

    pub fn with_extra_labels(mut self, extra_labels: Vec<OwnedLabel>) -> RequestConfig {
        // Empty values are never appended (common.md §3 step 3).
        self.extra_labels = extra_labels;
        self.extra_labels.retain(|l| !l.value.is_empty());
        self
    }
}

/// Buffers reused from series to series and request to request (keep one per worker).
#[derive(Debug, Default)]
pub struct IngestScratch {
    labels: Vec<Label<'static>>,
    relabel: LabelSet,
}

/// What one request did, for the shell to add to its `/metrics` counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IngestStats {
    /// Samples the parser handed over (vminsert's `vm_rows_inserted_total{type=...}` counts
    /// these, before limits and relabeling).
    pub rows_received: u64,
    /// Samples that became rows in the batch.
    pub rows_added: u64,
    /// Series that became rows in the batch.
    pub series_added: u64,
    /// Series dropped by the label limits, by [`LimitViolation`] (`vm_rows_ignored_total`).
    /// Zabbix series are counted here even though they are written.
    pub too_many_labels: u64,
    pub too_long_label_name: u64,
    pub too_long_label_value: u64,
    /// Series dropped by relabeling (`vm_relabel_metrics_dropped_total`).
    pub relabel_dropped: u64,
    /// Lines or items the parser could not use (`vm_rows_invalid_total{type=...}`).
    pub rows_invalid: u64,
    /// The first invalid line and its reason, for a rate-limited log line.
    pub first_invalid: Option<(u64, String)>,
    /// Metadata entries the parser handed over.
    pub metadata_received: u64,
    /// Metadata entries that became rows in the batch (`vm_metadata_inserted_total`).
    pub metadata_added: u64,
    /// Metadata entries with a field over 65535 bytes
    /// (`vm_rows_ignored_total{reason="too_long_metric_metadata_value"}`).
    pub metadata_too_long: u64,
    /// Rows added per tenant.
    pub rows_per_tenant: Vec<(Tenant, u64)>,
}

impl IngestStats {
    /// Series dropped for this reason.
    pub fn ignored(&self, v: LimitViolation) -> u64 {
        match v {
            LimitViolation::TooManyLabels => self.too_many_labels,
            LimitViolation::TooLongLabelName => self.too_long_label_name,
            LimitViolation::TooLongLabelValue => self.too_long_label_value,
        }
    }

    fn count_ignored(&mut self, v: LimitViolation) {
        match v {
            LimitViolation::TooManyLabels => self.too_many_labels += 1,
            LimitViolation::TooLongLabelName => self.too_long_label_name += 1,
            LimitViolation::TooLongLabelValue => self.too_long_label_value += 1,
        }
    }

    fn count_tenant(&mut self, t: Tenant, rows: u64) {
        if let Some(last) = self.rows_per_tenant.last_mut() {
            if last.0 == t {
                last.1 += rows;
                return;
            }
        }
        match self.rows_per_tenant.iter_mut().find(|e| e.0 == t) {
            Some(e) => e.1 += rows,
            None => self.rows_per_tenant.push((t, rows)),
        }
    }
}

/// The pipeline for one request: a [`Sink`] that puts series into a batch.
pub struct Ingest<'a> {
    config: &'a IngestConfig,
    request: RequestConfig,
    placement: &'a Placement,
    batch: &'a mut Batch,
    scratch: &'a mut IngestScratch,
    stats: IngestStats,
}

impl<'a> Ingest<'a> {
    pub fn new(
        config: &'a IngestConfig,
        request: RequestConfig,
        placement: &'a Placement,
        batch: &'a mut Batch,
        scratch: &'a mut IngestScratch,
    ) -> Ingest<'a> {
        Ingest {
            config,
            request,
            placement,
            batch,
            scratch,
            stats: IngestStats::default(),
        }
    }

    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Change the tenant for the series that follow: the clusternative listener receives rows of
    /// many tenants in one block, each carrying its own.
    pub fn set_tenant(&mut self, tenant: TenantMode) {
        self.request.tenant = tenant;
    }

    /// The batch being filled (the shell may push it part-way through a long stream).
    pub fn batch(&mut self) -> &mut Batch {
        self.batch
    }

    pub fn finish(self) -> IngestStats {
        self.stats
    }

    fn add(&mut self, parsed: &[Label<'_>], name_last: Option<&[u8]>, samples: &[Sample]) {
        let rows = samples.len() as u64;
        self.stats.rows_received += rows;
        if samples.is_empty() {
            return;
        }
        let config = self.config;
        let protocol = self.request.protocol;
        let relabel = config.relabel.is_active();

        // Labels with empty values never enter the pipeline (common.md §3): they are neither
        // encoded nor part of the shard key.
        let has_empty_value = parsed.iter().any(|l| l.value.is_empty());
        if !relabel
            && !has_empty_value
            && name_last.is_none()
            && self.request.extra_labels.is_empty()
            && !config.sort_labels
        {
            if let TenantMode::Fixed(tenant) = self.request.tenant {
                // The common case: the parser's labels go to the batch as they are.
                if parsed.is_empty() {
                    return;
                }
                if let Err(v) = config.limits.check(parsed) {
                    self.stats.count_ignored(v);
                    if protocol != Protocol::Zabbix {
                        return;
                    }
                }
                emit(
                    self.batch,
                    self.placement,
                    &mut self.stats,
                    protocol.shard_key(),
                    tenant,
                    parsed,
                    samples,
                );
                return;
            }
        }

        let mut list: Vec<Label<'_>> = std::mem::take(&mut self.scratch.labels);
        list.clear();
        let extra = &self.request.extra_labels;
        if relabel {
            let set = &mut self.scratch.relabel;
            set.clear();
            let mut push = |name: &[u8], value: &[u8]| {
                let name = if name.is_empty() {
                    METRIC_NAME_LABEL
                } else {
                    name
                };
                set.push(name, value);
            };
            parsed
                .iter()
                .filter(|l| !l.value.is_empty())
                .for_each(|l| push(l.name, l.value));
            extra.iter().for_each(|l| push(&l.name, &l.value));
            if let Some(name) = name_last.filter(|n| !n.is_empty()) {
                push(b"", name);
            }
            if !config.relabel.apply(set) {
                self.stats.relabel_dropped += 1;
                recycle(&mut self.scratch.labels, list);
                return;
            }
            list.extend(self.scratch.relabel.labels().iter().map(|l| Label {
                name: if l.name == METRIC_NAME_LABEL {
                    b""
                } else {
                    &l.name
                },
                value: &l.value,
            }));
        } else {
            list.extend(parsed.iter().filter(|l| !l.value.is_empty()));
            list.extend(extra.iter().map(OwnedLabel::as_label));
        }
        // Without relabeling Influx checks the tags as a set and its name on its own.
        let name_apart = if relabel { None } else { name_last };
        let name_apart = name_apart.filter(|n| !n.is_empty());

        if list.is_empty() && name_apart.is_none() {
            recycle(&mut self.scratch.labels, list);
            return;
        }
        let verdict = config.limits.check(&list).and_then(|()| match name_apart {
            Some(n) => config.limits.check_label(&Label::metric_name(n)),
            None => Ok(()),
        });
        if let Err(v) = verdict {
            self.stats.count_ignored(v);
            if protocol != Protocol::Zabbix {
                recycle(&mut self.scratch.labels, list);
                return;
            }
        } else if config.sort_labels {
            // Stable, so duplicate names keep their order (Go's sort is stable only for short
            // series; see COMPATIBILITY).
            list.sort_by(|a, b| a.name.cmp(b.name));
        }
        let tenant = match self.request.tenant {
            TenantMode::Fixed(t) => t,
            TenantMode::Multitenant => take_tenant_from_labels(&mut list),
        };
        if let Some(n) = name_apart {
            list.push(Label::metric_name(n));
        }
        if !list.is_empty() {
            emit(
                self.batch,
                self.placement,
                &mut self.stats,
                protocol.shard_key(),
                tenant,
                &list,
                samples,
            );
        }
        recycle(&mut self.scratch.labels, list);
    }
}

/// Put one series into the batch and count it.
fn emit(
    batch: &mut Batch,
    placement: &Placement,
    stats: &mut IngestStats,
    key: ShardKey,
    tenant: Tenant,
    labels: &[Label<'_>],
    samples: &[Sample],
) {
    if batch.add_series(placement, tenant, labels, key, samples) {
        let rows = samples.len() as u64;
        stats.rows_added += rows;
        stats.series_added += 1;
        stats.count_tenant(tenant, rows);
    }
}

/// Hand a scratch vector back for the next series. The vector is empty, so re-typing it to the
/// `'static` slot reuses its allocation without touching any element.
fn recycle(slot: &mut Vec<Label<'static>>, mut v: Vec<Label<'_>>) {
    v.clear();
    *slot = v.into_iter().map(|_| Label::new(b"", b"")).collect();
}

impl Sink for Ingest<'_> {
    fn series(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        self.add(labels, None, samples);
    }

    /// Influx: the last label is the metric name (its value may be empty: no name). Extra labels
    /// go before it.
    fn series_name_last(&mut self, labels: &[Label<'_>], samples: &[Sample]) {
        match labels.split_last() {
            Some((name, tags)) if name.name.is_empty() => self.add(tags, Some(name.value), samples),
            _ => self.add(labels, Some(b""), samples),
        }
    }

    fn invalid(&mut self, line: u64, reason: &str) {
        self.stats.rows_invalid += 1;
        if self.stats.first_invalid.is_none() {
            // Bounded: a reason is parser text, but it may quote client bytes.
            let reason: String = reason.chars().take(512).collect();
            self.stats.first_invalid = Some((line, reason));
        }
    }

    fn metadata(&mut self, m: &Metadata<'_>) {
        self.stats.metadata_received += 1;
        if !self.config.enable_metadata {
            return;
        }
        let tenant = match self.request.tenant {
            TenantMode::Fixed(t) => t,
            // A metadata record carries its own tenant in multitenant mode (row-encoding.md §6).
            TenantMode::Multitenant => Tenant::new(m.account_id, m.project_id),
        };
        if self.batch.add_metadata(
            self.placement,
            tenant,
            m.metric_type,
            m.family,
            m.help,
            m.unit,
        ) {
            self.stats.metadata_added += 1;
        } else {
            self.stats.metadata_too_long += 1;
        }
    }
}

#[cfg(test)]
mod tests;
