//! Series sets as an export shows them: labels (metric name as `__name__`, sorted) and the
//! (timestamp, value) samples of each series. Both sides of the differential test are brought
//! to this form: the recording nodes from their raw rows, victoria-metrics from the JSON lines
//! of `/api/v1/export`.

use std::collections::{BTreeMap, BTreeSet};

use shardgate_core::wire::row::decode_metric_name;

use super::node::Row;

/// Labels sorted by name then value; the metric name is the `__name__` label.
pub type Labels = Vec<(String, String)>;

/// A sample value as both sides can agree on it: victoria-metrics stores floats as decimals
/// with a limited mantissa, so values compare at 12 significant digits; NaNs compare by kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Value {
    Num(String),
    NaN,
    StaleNaN,
    PosInf,
    NegInf,
}

impl Value {
    pub fn from_f64(v: f64) -> Value {
        if v.to_bits() == shardgate_core::model::STALE_NAN_BITS {
            Value::StaleNaN
        } else if v.is_nan() {
            Value::NaN
        } else if v == f64::INFINITY {
            Value::PosInf
        } else if v == f64::NEG_INFINITY {
            Value::NegInf
        } else if v == 0.0 {
            Value::Num("0".into())
        } else {
            Value::Num(format!("{v:.11e}"))
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Num(s) => f.write_str(s),
            Value::NaN => f.write_str("NaN"),
            Value::StaleNaN => f.write_str("StaleNaN"),
            Value::PosInf => f.write_str("+Inf"),
            Value::NegInf => f.write_str("-Inf"),
        }
    }
}

/// A timestamp; those within the run's wall-clock window are "now" (the input had none, and
/// each side used its own clock).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ts {
    At(i64),
    Now,
}

impl std::fmt::Display for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ts::At(t) => write!(f, "@{t}"),
            Ts::Now => f.write_str("@now"),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesSet {
    pub series: BTreeMap<Labels, BTreeSet<(Ts, Value)>>,
}

/// The wall-clock window of a run, in Unix milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct NowWindow {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl NowWindow {
    fn ts(&self, t: i64) -> Ts {
        if t >= self.from_ms && t <= self.to_ms {
            Ts::Now
        } else {
            Ts::At(t)
        }
    }
}

impl SeriesSet {
    pub fn insert(&mut self, labels: Labels, ts: Ts, value: Value) {
        self.series.entry(labels).or_default().insert((ts, value));
    }

    /// What an export of these raw rows shows: the tenant is dropped (the single-node
    /// comparison runs everything as tenant 0:0), the metric name becomes `__name__`, and, as
    /// vmstorage does (row-encoding.md, "value"), the staleness marker is kept while every other
    /// NaN is dropped. The JSON export prints the marker as a plain `NaN`.
    pub fn from_rows(rows: &[Row], now: NowWindow) -> SeriesSet {
        let mut set = SeriesSet::default();
        for row in rows {
            let v = f64::from_bits(row.bits);
            if v.is_nan() && row.bits != shardgate_core::model::STALE_NAN_BITS {
                continue;
            }
            let labels = match labels_of(&row.name) {
                Ok(l) => l,
                Err(e) => vec![(
                    "<undecodable>".into(),
                    format!("{e}: {}", hex::encode(&row.name)),
                )],
            };
            let value = match Value::from_f64(v) {
                Value::StaleNaN => Value::NaN,
                other => other,
            };
            set.insert(labels, now.ts(row.ts), value);
        }
        set
    }

    /// Parse victoria-metrics' `/api/v1/export` JSON lines.
    pub fn from_export(text: &str, now: NowWindow) -> Result<SeriesSet, String> {
        let mut set = SeriesSet::default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let line = quote_special_values(line);
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("export line {line:?}: {e}"))?;
            let metric = v["metric"]
                .as_object()
                .ok_or_else(|| format!("no metric object in {line:?}"))?;
            let mut labels: Labels = metric
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect();
            labels.sort();
            let values = v["values"].as_array().ok_or("no values array")?;
            let stamps = v["timestamps"].as_array().ok_or("no timestamps array")?;
            if values.len() != stamps.len() {
                return Err(format!("values and timestamps differ in length: {line:?}"));
            }
            for (val, ts) in values.iter().zip(stamps) {
                let ts = ts.as_i64().ok_or_else(|| format!("bad timestamp {ts}"))?;
                let val = match val {
                    serde_json::Value::Number(n) => Value::from_f64(n.as_f64().unwrap_or(f64::NAN)),
                    serde_json::Value::String(s) => match s.as_str() {
                        "NaN" => Value::NaN,
                        "+Inf" | "Inf" => Value::PosInf,
                        "-Inf" => Value::NegInf,
                        other => return Err(format!("bad value {other:?}")),
                    },
                    other => return Err(format!("bad value {other}")),
                };
                set.insert(labels.clone(), now.ts(ts), val);
            }
        }
        Ok(set)
    }
}

pub fn labels_of(mnraw: &[u8]) -> Result<Labels, String> {
    let (_tenant, it) = decode_metric_name(mnraw).map_err(|e| e.to_string())?;
    let mut labels = Labels::new();
    for l in it {
        let l = l.map_err(|e| e.to_string())?;
        let name = if l.name.is_empty() {
            "__name__".to_string()
        } else {
            String::from_utf8_lossy(l.name).into_owned()
        };
        labels.push((name, String::from_utf8_lossy(l.value).into_owned()));
    }
    labels.sort();
    Ok(labels)
}

/// victoria-metrics writes NaN and infinities as bare tokens, which are not JSON. They can only
/// occur inside the `values` array: a JSON string cannot hold an unescaped `"values":[`.
fn quote_special_values(line: &str) -> String {
    let Some(start) = line.rfind("\"values\":[") else {
        return line.to_string();
    };
    let start = start + "\"values\":[".len();
    let Some(len) = line[start..].find(']') else {
        return line.to_string();
    };
    let quoted: Vec<String> = line[start..start + len]
        .split(',')
        .map(|v| match v.trim() {
            t @ ("NaN" | "+Inf" | "-Inf" | "Inf") => format!("\"{t}\""),
            t => t.to_string(),
        })
        .collect();
    format!(
        "{}{}{}",
        &line[..start],
        quoted.join(","),
        &line[start + len..]
    )
}

pub fn render_labels(labels: &Labels) -> String {
    let name = labels
        .iter()
        .find(|(k, _)| k == "__name__")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k != "__name__")
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}
