use super::*;
use crate::route::PlacementKind;
use crate::wire::row::{decode_block, decode_metric_name};

fn placement(n: usize) -> Placement {
    let nodes: Vec<String> = (0..n).map(|i| format!("10.0.0.{i}:8400")).collect();
    Placement::new(&nodes, PlacementKind::Rendezvous, 0)
}

/// Every row in the batch as (tenant, "name=value,…" with the metric name as `=value`, ts).
fn rows(batch: &Batch) -> Vec<(Tenant, String, i64)> {
    let mut out = Vec::new();
    for node in batch.nodes() {
        for row in decode_block(&node.bytes) {
            let row = row.unwrap();
            let (t, labels) = decode_metric_name(row.metric_name).unwrap();
            let text: Vec<String> = labels
                .map(|l| {
                    let l = l.unwrap();
                    format!(
                        "{}={}",
                        String::from_utf8_lossy(l.name),
                        String::from_utf8_lossy(l.value)
                    )
                })
                .collect();
            out.push((t, text.join(","), row.sample.timestamp_ms));
        }
    }
    out.sort();
    out
}

struct Setup {
    config: IngestConfig,
    placement: Placement,
    batch: Batch,
    scratch: IngestScratch,
}

impl Setup {
    fn new(config: IngestConfig) -> Setup {
        Setup {
            config,
            placement: placement(3),
            batch: Batch::new(3),
            scratch: IngestScratch::default(),
        }
    }

    fn run(&mut self, req: RequestConfig, f: impl FnOnce(&mut Ingest<'_>)) -> IngestStats {
        let mut ingest = Ingest::new(
            &self.config,
            req,
            &self.placement,
            &mut self.batch,
            &mut self.scratch,
        );
        f(&mut ingest);
        ingest.finish()
    }
}

fn fixed(protocol: Protocol) -> RequestConfig {
    RequestConfig::new(TenantMode::Fixed(Tenant::new(1, 2)), protocol)
}

fn s(ts: i64) -> [Sample; 1] {
    [Sample::new(ts, 1.0)]
}

/// Influx shape: tags then the metric name last.
fn influx<'a>(tags: &[Label<'a>], name: &'a [u8]) -> Vec<Label<'a>> {
    let mut v = tags.to_vec();
    v.push(Label::metric_name(name));
    v
}

fn relabeling(yaml: &str) -> IngestConfig {
    IngestConfig {
        relabel: Arc::new(RelabelConfig::parse(yaml).unwrap()),
        ..IngestConfig::default()
    }
}

#[test]
fn fast_path_passes_labels_as_given() {
    let mut t = Setup::new(IngestConfig::default());
    let st = t.run(fixed(Protocol::Standard), |i| {
        i.series(
            &[Label::metric_name(b"up"), Label::new(b"job", b"a")],
            &s(5),
        );
        i.series(&[], &s(6));
    });
    assert_eq!(
        rows(&t.batch),
        vec![(Tenant::new(1, 2), "=up,job=a".into(), 5)]
    );
    assert_eq!(
        (st.rows_received, st.rows_added, st.series_added),
        (2, 1, 1)
    );
    assert_eq!(st.rows_per_tenant, vec![(Tenant::new(1, 2), 1)]);
}

#[test]
fn extra_labels_follow_the_payload_and_precede_the_influx_name() {
    let mut t = Setup::new(IngestConfig::default());
    let extra = vec![OwnedLabel::new("env", "prod"), OwnedLabel::new("e", "")];
    t.run(
        fixed(Protocol::Standard).with_extra_labels(extra.clone()),
        |i| {
            i.series(
                &[Label::metric_name(b"foo"), Label::new(b"env", b"dev")],
                &s(1),
            )
        },
    );
    t.run(fixed(Protocol::Influx).with_extra_labels(extra), |i| {
        i.series_name_last(&influx(&[Label::new(b"host", b"a")], b"cpu_usage"), &s(2))
    });
    assert_eq!(
        rows(&t.batch),
        vec![
            (Tenant::new(1, 2), "=foo,env=dev,env=prod".into(), 1),
            (Tenant::new(1, 2), "host=a,env=prod,=cpu_usage".into(), 2),
        ]
    );
}

#[test]
fn remote_write_name_counts_against_name_length_unless_relabeled() {
    let limits = Limits {
        max_label_name_len: 4,
        ..Limits::default()
    };
    let rw = [Label::new(b"__name__", b"m"), Label::new(b"a", b"b")];
    let mut t = Setup::new(IngestConfig {
        limits,
        ..IngestConfig::default()
    });
    let st = t.run(fixed(Protocol::RemoteWrite), |i| i.series(&rw, &s(1)));
    assert_eq!(st.too_long_label_name, 1);
    assert!(t.batch.is_empty());

    let mut t = Setup::new(IngestConfig {
        limits,
        ..relabeling("- action: labeldrop\n  regex: never\n")
    });
    let st = t.run(fixed(Protocol::RemoteWrite), |i| i.series(&rw, &s(1)));
    assert_eq!(st.ignored(LimitViolation::TooLongLabelName), 0);
    assert_eq!(
        rows(&t.batch),
        vec![(Tenant::new(1, 2), "=m,a=b".into(), 1)]
    );
}

#[test]
fn influx_name_is_not_counted_without_relabeling() {
    let limits = Limits {
        max_labels_per_timeseries: 3,
        max_label_value_len: 10,
        ..Limits::default()
    };
    let tags3 = [
        Label::new(b"a", b"1"),
        Label::new(b"b", b"2"),
        Label::new(b"c", b"3"),
    ];
    let mut t = Setup::new(IngestConfig {
        limits,
        ..IngestConfig::default()
    });
    let st = t.run(fixed(Protocol::Influx), |i| {
        i.series_name_last(&influx(&tags3, b"li_f"), &s(1));
        i.series_name_last(&influx(&tags3[..1], b"long_meas_x_f"), &s(2));
    });
    assert_eq!(rows(&t.batch).len(), 1);
    assert_eq!((st.too_many_labels, st.too_long_label_value), (0, 1));

    let mut t = Setup::new(IngestConfig {
        limits,
        ..relabeling("- action: labeldrop\n  regex: never\n")
    });
    let st = t.run(fixed(Protocol::Influx), |i| {
        i.series_name_last(&influx(&tags3, b"li_f"), &s(1));
        i.series_name_last(&influx(&tags3[..2], b"li_f"), &s(2));
    });
    assert_eq!(st.too_many_labels, 1);
    assert_eq!(
        rows(&t.batch),
        vec![(Tenant::new(1, 2), "a=1,b=2,=li_f".into(), 2)]
    );
}

#[test]
fn zabbix_writes_series_that_break_limits_but_counts_them() {
    let mut t = Setup::new(IngestConfig {
        limits: Limits {
            max_labels_per_timeseries: 2,
            ..Limits::default()
        },
        sort_labels: true,
        ..IngestConfig::default()
    });
    let labels = [
        Label::new(b"host", b"h"),
        Label::new(b"__name__", b"zl"),
        Label::new(b"b", b"2"),
    ];
    let st = t.run(fixed(Protocol::Zabbix), |i| i.series(&labels, &s(1)));
    assert_eq!(st.too_many_labels, 1);
    // Written, and not sorted.
    assert_eq!(
        rows(&t.batch),
        vec![(Tenant::new(1, 2), "host=h,=zl,b=2".into(), 1)]
    );
}

#[test]
fn sort_uses_the_names_of_the_moment() {
    let mut t = Setup::new(IngestConfig {
        sort_labels: true,
        ..IngestConfig::default()
    });
    t.run(fixed(Protocol::RemoteWrite), |i| {
        i.series(
            &[
                Label::new(b"z", b"1"),
                Label::new(b"__name__", b"m"),
                Label::new(b"B", b"2"),
                Label::new(b"a", b"3"),
            ],
            &s(1),
        )
    });
    t.run(fixed(Protocol::Influx), |i| {
        i.series_name_last(
            &influx(&[Label::new(b"z", b"1"), Label::new(b"a", b"2")], b"n"),
            &s(2),
        )
    });
    t.run(fixed(Protocol::Standard), |i| {
        i.series(
            &[
                Label::metric_name(b"ord"),
                Label::new(b"z", b"1"),
                Label::new(b"a", b"2"),
            ],
            &s(3),
        )
    });
    assert_eq!(
        rows(&t.batch),
        vec![
            (Tenant::new(1, 2), "=ord,a=2,z=1".into(), 3),
            // `__name__` sorts after uppercase names and is written with an empty name there.
            (Tenant::new(1, 2), "B=2,=m,a=3,z=1".into(), 1),
            (Tenant::new(1, 2), "a=2,z=1,=n".into(), 2),
        ]
    );
}

#[test]
fn multitenant_takes_the_tenant_after_limits() {
    let mut t = Setup::new(IngestConfig {
        limits: Limits {
            max_labels_per_timeseries: 2,
            ..Limits::default()
        },
        ..IngestConfig::default()
    });
    let st = t.run(
        RequestConfig::new(TenantMode::Multitenant, Protocol::Standard),
        |i| {
            i.series(
                &[Label::metric_name(b"a"), Label::new(b"vm_account_id", b"5")],
                &s(1),
            );
            // Three labels before the tenant labels are stripped: over the limit.
            i.series(
                &[
                    Label::metric_name(b"b"),
                    Label::new(b"vm_account_id", b"5"),
                    Label::new(b"vm_project_id", b"6"),
                ],
                &s(2),
            );
            i.series(&[Label::metric_name(b"c")], &s(3));
        },
    );
    assert_eq!(st.too_many_labels, 1);
    assert_eq!(
        rows(&t.batch),
        vec![
            (Tenant::new(0, 0), "=c".into(), 3),
            (Tenant::new(5, 0), "=a".into(), 1),
        ]
    );
    assert_eq!(st.rows_per_tenant.len(), 2);
}

#[test]
fn relabel_drop_is_counted() {
    let mut t = Setup::new(relabeling(
        "- action: drop\n  source_labels: [__name__]\n  regex: 'x.*'\n",
    ));
    let st = t.run(fixed(Protocol::Standard), |i| {
        i.series(&[Label::metric_name(b"xy")], &s(1));
        i.series(&[Label::metric_name(b"ok")], &s(2));
    });
    assert_eq!((st.relabel_dropped, st.rows_added), (1, 1));
}

#[test]
fn scratch_vectors_are_reused() {
    let mut t = Setup::new(IngestConfig::default());
    let extra = vec![OwnedLabel::new("x", "1")];
    t.run(
        fixed(Protocol::Standard).with_extra_labels(extra.clone()),
        |i| i.series(&[Label::metric_name(b"a")], &s(1)),
    );
    let cap = t.scratch.labels.capacity();
    assert!(cap >= 2);
    t.run(fixed(Protocol::Standard).with_extra_labels(extra), |i| {
        for k in 0..10 {
            i.series(&[Label::metric_name(b"a")], &s(k));
        }
    });
    assert_eq!(t.scratch.labels.capacity(), cap);
    assert_eq!(t.batch.rows(), 11);
}

#[test]
fn invalid_lines_are_counted() {
    let mut t = Setup::new(IngestConfig::default());
    let st = t.run(fixed(Protocol::Standard), |i| {
        i.invalid(3, "bad");
        i.invalid(4, "worse");
    });
    assert_eq!(st.rows_invalid, 2);
    assert_eq!(st.first_invalid, Some((3, "bad".to_string())));
}

#[test]
fn protocols_pick_their_shard_key() {
    assert_eq!(Protocol::RemoteWrite.shard_key(), ShardKey::AsGiven);
    assert_eq!(Protocol::OpenTelemetry.shard_key(), ShardKey::AsGiven);
    assert_eq!(Protocol::Influx.shard_key(), ShardKey::MetricName);
    assert_eq!(Protocol::Standard.shard_key(), ShardKey::MetricName);
}
