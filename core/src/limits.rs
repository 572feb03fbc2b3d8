//! Per-series label limits (`-maxLabelsPerTimeseries`, `-maxLabelNameLen`, `-maxLabelValueLen`).
//!
//! A series that breaks a limit is dropped whole, never truncated, and counted under
//! `vm_rows_ignored_total{reason=...}` (row-encoding.md §5). The checks look at the labels exactly
//! as they are at that point of the pipeline, so a remote-write `__name__` (8 bytes) counts
//! against `-maxLabelNameLen` while a text-format metric name (empty name) does not: that is what
//! vminsert does and what the golden vectors record.

use crate::model::Label;

/// Why a series was dropped by the label limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitViolation {
    TooManyLabels,
    TooLongLabelName,
    TooLongLabelValue,
}

impl LimitViolation {
    /// The `reason` label value of `vm_rows_ignored_total`.
    pub const fn reason(self) -> &'static str {
        match self {
            LimitViolation::TooManyLabels => "too_many_labels",
            LimitViolation::TooLongLabelName => "too_long_label_name",
            LimitViolation::TooLongLabelValue => "too_long_label_value",
        }
    }

    pub const ALL: [LimitViolation; 3] = [
        LimitViolation::TooManyLabels,
        LimitViolation::TooLongLabelName,
        LimitViolation::TooLongLabelValue,
    ];
}

/// The three label limits, in bytes and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most labels a series may have, the metric name included; 0 turns the check off
    /// (`-maxLabelsPerTimeseries` ≤ 0).
    pub max_labels_per_timeseries: usize,
    /// Longest label name in bytes (`-maxLabelNameLen`, 1..=65535).
    pub max_label_name_len: usize,
    /// Longest label value in bytes, the metric name included (`-maxLabelValueLen`, 1..=65535).
    pub max_label_value_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_labels_per_timeseries: 40,
            max_label_name_len: 256,
            max_label_value_len: 4096,
        }
    }
}

impl Limits {
    /// Build from the flag values as vminsert takes them: a labels limit ≤ 0 means no limit,
    /// and the two lengths must be within 1..=65535 (they bound u16 length prefixes on the wire).
    pub fn from_flags(
        max_labels_per_timeseries: i64,
        max_label_name_len: i64,
        max_label_value_len: i64,
    ) -> Result<Limits, String> {
        let len = |flag: &str, v: i64| -> Result<usize, String> {
            if (1..=65535).contains(&v) {
                Ok(v as usize)
            } else {
                Err(format!("-{flag}={v} is out of the allowed range 1..65535"))
            }
        };
        Ok(Limits {
            max_labels_per_timeseries: usize::try_from(max_labels_per_timeseries.max(0))
                .unwrap_or(usize::MAX),
            max_label_name_len: len("maxLabelNameLen", max_label_name_len)?,
            max_label_value_len: len("maxLabelValueLen", max_label_value_len)?,
        })
    }

    /// Check a whole series: the label count first, then each label's name and value in order.
    pub fn check(&self, labels: &[Label<'_>]) -> Result<(), LimitViolation> {
        if self.max_labels_per_timeseries > 0 && labels.len() > self.max_labels_per_timeseries {
            return Err(LimitViolation::TooManyLabels);
        }
        labels.iter().try_for_each(|l| self.check_label(l))
    }

    /// Check one label's name and value lengths.
    pub fn check_label(&self, label: &Label<'_>) -> Result<(), LimitViolation> {
        if label.name.len() > self.max_label_name_len {
            return Err(LimitViolation::TooLongLabelName);
        }
        if label.value.len() > self.max_label_value_len {
            return Err(LimitViolation::TooLongLabelValue);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_includes_the_metric_name() {
        let l = Limits {
            max_labels_per_timeseries: 3,
            ..Limits::default()
        };
        let three = [
            Label::metric_name(b"m"),
            Label::new(b"a", b"1"),
            Label::new(b"b", b"2"),
        ];
        assert_eq!(l.check(&three), Ok(()));
        let mut four = three.to_vec();
        four.push(Label::new(b"c", b"3"));
        assert_eq!(l.check(&four), Err(LimitViolation::TooManyLabels));
        let off = Limits {
            max_labels_per_timeseries: 0,
            ..l
        };
        assert_eq!(off.check(&four), Ok(()));
    }

    #[test]
    fn literal_name_label_counts_against_name_length() {
        let l = Limits {
            max_label_name_len: 4,
            ..Limits::default()
        };
        assert_eq!(l.check(&[Label::metric_name(b"x")]), Ok(()));
        assert_eq!(
            l.check(&[Label::new(b"__name__", b"x")]),
            Err(LimitViolation::TooLongLabelName)
        );
    }

    #[test]
    fn metric_name_counts_against_value_length() {
        let l = Limits {
            max_label_value_len: 10,
            ..Limits::default()
        };
        assert_eq!(l.check(&[Label::metric_name(b"name_10ch")]), Ok(()));
        assert_eq!(
            l.check(&[Label::metric_name(b"name_of_11c")]),
            Err(LimitViolation::TooLongLabelValue)
        );
    }

    #[test]
    fn flags_are_range_checked() {
        assert_eq!(
            Limits::from_flags(-1, 256, 4096).unwrap(),
            Limits {
                max_labels_per_timeseries: 0,
                max_label_name_len: 256,
                max_label_value_len: 4096
            }
        );
        assert!(Limits::from_flags(40, 0, 4096).is_err());
        assert!(Limits::from_flags(40, 256, 65536).is_err());
        assert_eq!(LimitViolation::TooManyLabels.reason(), "too_many_labels");
    }
}
