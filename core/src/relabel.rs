//! `-relabelConfig`: Prometheus-style relabeling rules applied to every ingested series
//! (spec: formats/common.md §3 step 4 and §10), plus `-usePromCompatibleNaming`.
//!
//! Rules work on a [`LabelSet`] in Prometheus form: the metric name is the label `__name__`.
//! The ingest pipeline converts to that form, calls [`RelabelConfig::apply`] and converts back.
//! Regexes are anchored (`^(?:re)$`) except where an action replaces every match inside a
//! string (`replace_all`, `labelmap_all`). Label values missing from a series read as `""`.
//!
//! Parsing is strict, as vminsert's is: unknown fields, unknown actions, a missing field an
//! action needs, a bad regex or a bad `if` selector are errors naming the rule, so an operator
//! sees them at startup (and a SIGHUP reload can keep the old rules).

use std::collections::BTreeMap;
use std::fmt;

use regex::bytes::{Captures, Regex};
use serde_norway::Value;
use xxhash_rust::xxh64::xxh64;

use crate::model::{OwnedLabel, METRIC_NAME_LABEL};

/// A relabeling config error, with the rule it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelabelError(String);

impl fmt::Display for RelabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RelabelError {}

fn err<T>(msg: impl Into<String>) -> Result<T, RelabelError> {
    Err(RelabelError(msg.into()))
}

/// The relabeling that runs on every series: the rules from `-relabelConfig` and the
/// `-usePromCompatibleNaming` switch. Immutable once built; the shell swaps whole configs
/// (behind an `Arc`) on SIGHUP.
#[derive(Clone, Debug, Default)]
pub struct RelabelConfig {
    rules: Vec<Rule>,
    prom_compatible_naming: bool,
}

impl RelabelConfig {
    /// No rules, no renaming: relabeling is off.
    pub fn empty() -> RelabelConfig {
        RelabelConfig::default()
    }

    /// Parse a `-relabelConfig` file: a YAML list of rules. An empty file means no rules.
    pub fn parse(yaml: &str) -> Result<RelabelConfig, RelabelError> {
        let doc: Value = serde_norway::from_str(yaml)
            .map_err(|e| RelabelError(format!("cannot parse relabel config YAML: {e}")))?;
        let items = match doc {
            Value::Null => Vec::new(),
            Value::Sequence(items) => items,
            _ => return err("relabel config must be a YAML list of rules"),
        };
        let rules = items
            .iter()
            .enumerate()
            .map(|(i, v)| Rule::parse(i + 1, v))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RelabelConfig {
            rules,
            prom_compatible_naming: false,
        })
    }

    /// Turn `-usePromCompatibleNaming` on or off.
    pub fn with_prom_compatible_naming(mut self, on: bool) -> RelabelConfig {
        self.prom_compatible_naming = on;
        self
    }

    /// Whether series go through relabeling at all: at least one rule, or the renaming switch.
    /// When false the pipeline skips the `__name__` conversion entirely, which matters for the
    /// label limits and the shard key of remote write (common.md §3, sharding spec §2).
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty() || self.prom_compatible_naming
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Relabel one series in place. Returns false when the series is dropped (by a rule, or
    /// because no label is left).
    pub fn apply(&self, set: &mut LabelSet) -> bool {
        if self.prom_compatible_naming {
            sanitize_names(set);
        }
        for rule in &self.rules {
            if !rule.apply(set) {
                set.clear();
                return false;
            }
        }
        if !self.rules.is_empty() {
            // Labels starting with `__` are scratch space for rules (Prometheus convention).
            set.retain(|l| !l.name.starts_with(b"__") || l.name == METRIC_NAME_LABEL);
        }
        set.retain(|l| !l.name.is_empty() && !l.value.is_empty());
        !set.is_empty()
    }
}

/// A series' labels while relabeling, plus scratch buffers. Reused from series to series: the
/// label entries keep their byte buffers, so steady-state relabeling allocates little.
#[derive(Clone, Debug, Default)]
pub struct LabelSet {
    items: Vec<OwnedLabel>,
    len: usize,
    joined: Vec<u8>,
    buf: Vec<u8>,
    buf2: Vec<u8>,
}

impl LabelSet {
    pub fn new() -> LabelSet {
        LabelSet::default()
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The labels in order.
    pub fn labels(&self) -> &[OwnedLabel] {
        &self.items[..self.len]
    }

    /// Append a label (duplicates allowed, order kept).
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        if self.len < self.items.len() {
            let slot = &mut self.items[self.len];
            slot.name.clear();
            slot.name.extend_from_slice(name);
            slot.value.clear();
            slot.value.extend_from_slice(value);
        } else {
            self.items.push(OwnedLabel::new(name, value));
        }
        self.len += 1;
    }

    /// The value of the first label with this name.
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.labels()
            .iter()
            .find(|l| l.name == name)
            .map(|l| &l.value[..])
    }

    fn value_or_empty(&self, name: &[u8]) -> &[u8] {
        self.get(name).unwrap_or(b"")
    }

    /// Set the first label with this name, or append it.
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        match self.items[..self.len].iter_mut().find(|l| l.name == name) {
            Some(l) => {
                l.value.clear();
                l.value.extend_from_slice(value);
            }
            None => self.push(name, value),
        }
    }

    /// Keep the labels for which `keep` is true, in order. Removed entries go to the spare area
    /// so their buffers are reused.
    pub fn retain(&mut self, mut keep: impl FnMut(&OwnedLabel) -> bool) {
        let mut w = 0;
        for i in 0..self.len {
            if keep(&self.items[i]) {
                self.items.swap(i, w);
                w += 1;
            }
        }
        self.len = w;
    }

    fn join_into(&self, sources: &[Vec<u8>], sep: &[u8], out: &mut Vec<u8>) {
        out.clear();
        for (i, s) in sources.iter().enumerate() {
            if i > 0 {
                out.extend_from_slice(sep);
            }
            out.extend_from_slice(self.value_or_empty(s));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Replace,
    ReplaceAll,
    Keep,
    Drop,
    KeepMetrics,
    DropMetrics,
    KeepEqual,
    DropEqual,
    KeepIfEqual,
    DropIfEqual,
    KeepIfContains,
    DropIfContains,
    HashMod,
    LabelMap,
    LabelMapAll,
    LabelDrop,
    LabelKeep,
    Lowercase,
    Uppercase,
    Graphite,
}

impl Action {
    fn parse(s: &str) -> Option<Action> {
        Some(match s.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "replace_all" => Action::ReplaceAll,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keep_metrics" => Action::KeepMetrics,
            "drop_metrics" => Action::DropMetrics,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "keep_if_equal" => Action::KeepIfEqual,
            "drop_if_equal" => Action::DropIfEqual,
            "keep_if_contains" => Action::KeepIfContains,
            "drop_if_contains" => Action::DropIfContains,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labelmap_all" => Action::LabelMapAll,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            "graphite" => Action::Graphite,
            _ => return None,
        })
    }
}

/// A relabeling regex: the operator's pattern, anchored for whole-value matches and as written
/// for actions that replace every match.
#[derive(Clone, Debug)]
struct Pattern {
    anchored: Regex,
    unanchored: Regex,
}

impl Pattern {
    fn new(re: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern {
            anchored: Regex::new(&format!("^(?:{re})$"))?,
            unanchored: Regex::new(re)?,
        })
    }
}

#[derive(Clone, Debug)]
struct Rule {
    selector: Option<Selector>,
    action: Action,
    source_labels: Vec<Vec<u8>>,
    separator: Vec<u8>,
    target_label: Vec<u8>,
    /// False when the rule gave no `regex`: the default `(.*)` lets several actions skip
    /// matching altogether (as vminsert does, which also makes values with a newline pass).
    regex_given: bool,
    regex: Pattern,
    modulus: u64,
    replacement: Vec<u8>,
    replacement_has_group: bool,
    replacement_has_label_ref: bool,
    target_has_group: bool,
    graphite: Option<GraphiteRule>,
}

const RULE_FIELDS: &[&str] = &[
    "if",
    "action",
    "source_labels",
    "separator",
    "target_label",
    "regex",
    "modulus",
    "replacement",
    "match",
    "labels",
];

fn scalar(v: &Value, field: &str, index: usize) -> Result<Option<String>, RelabelError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        _ => err(format!("rule #{index}: `{field}` must be a string")),
    }
}

fn string_list(v: &Value, field: &str, index: usize) -> Result<Vec<String>, RelabelError> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Sequence(items) => items
            .iter()
            .map(|x| {
                scalar(x, field, index)?.ok_or_else(|| {
                    RelabelError(format!("rule #{index}: `{field}` has an empty item"))
                })
            })
            .collect(),
        other => Ok(scalar(other, field, index)?.into_iter().collect()),
    }
}

impl Rule {
    fn parse(index: usize, v: &Value) -> Result<Rule, RelabelError> {
        let Some(map) = v.as_mapping() else {
            return err(format!("rule #{index}: must be a YAML mapping"));
        };
        let mut fields: BTreeMap<String, &Value> = BTreeMap::new();
        for (k, val) in map.iter() {
            let Some(k) = k.as_str() else {
                return err(format!("rule #{index}: field names must be strings"));
            };
            if !RULE_FIELDS.contains(&k) {
                return err(format!(
                    "rule #{index}: unknown field {k:?}; known fields: {}",
                    RULE_FIELDS.join(", ")
                ));
            }
            fields.insert(k.to_string(), val);
        }
        let get = |name: &str| -> Result<Option<String>, RelabelError> {
            fields
                .get(name)
                .map_or(Ok(None), |v| scalar(v, name, index))
        };

        let action_name = get("action")?.unwrap_or_else(|| "replace".to_string());
        let Some(action) = Action::parse(&action_name) else {
            return err(format!("rule #{index}: unknown action {action_name:?}"));
        };
        let ctx = format!("rule #{index} (action {action_name})");

        let source_labels: Vec<Vec<u8>> = match fields.get("source_labels") {
            Some(v) => string_list(v, "source_labels", index)?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
            None => Vec::new(),
        };
        let separator = get("separator")?.unwrap_or_else(|| ";".to_string());
        let target_label = get("target_label")?.unwrap_or_default();
        let regex_src = match fields.get("regex") {
            // A list of regexes means any of them, as in vminsert.
            Some(Value::Sequence(_)) => {
                Some(string_list(fields["regex"], "regex", index)?.join("|"))
            }
            Some(v) => scalar(v, "regex", index)?,
            None => None,
        };
        let regex_given = regex_src.is_some();
        let regex_str = regex_src.unwrap_or_else(|| "(.*)".to_string());
        let regex = Pattern::new(&regex_str)
            .map_err(|e| RelabelError(format!("{ctx}: cannot parse regex {regex_str:?}: {e}")))?;
        let modulus = match fields.get("modulus") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().ok_or_else(|| {
                RelabelError(format!("{ctx}: `modulus` must be a positive integer"))
            })?,
        };
        let replacement = get("replacement")?.unwrap_or_else(|| "$1".to_string());
        let selector = match fields.get("if") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let mut alternatives = Vec::new();
                for s in string_list(v, "if", index)? {
                    let sel = Selector::parse(&s).map_err(|e| {
                        RelabelError(format!("{ctx}: cannot parse `if` selector {s:?}: {e}"))
                    })?;
                    alternatives.extend(sel.groups);
                }
                Some(Selector {
                    groups: alternatives,
                })
            }
        };

        let need = |ok: bool, what: &str| -> Result<(), RelabelError> {
            if ok {
                Ok(())
            } else {
                err(format!("{ctx}: {what}"))
            }
        };
        let has_sources = !source_labels.is_empty();
        let has_target = !target_label.is_empty();
        match action {
            Action::Replace => need(has_target, "missing `target_label`")?,
            Action::ReplaceAll => {
                need(has_sources, "missing `source_labels`")?;
                need(has_target, "missing `target_label`")?;
            }
            Action::KeepMetrics | Action::DropMetrics => {
                need(
                    !has_sources,
                    "`source_labels` must be empty; the metric name is used",
                )?;
                need(regex_given, "missing `regex`")?;
            }
            Action::KeepEqual | Action::DropEqual => {
                need(has_sources, "missing `source_labels`")?;
                need(has_target, "missing `target_label`")?;
                need(!regex_given, "`regex` cannot be used")?;
            }
            Action::KeepIfEqual | Action::DropIfEqual => {
                need(
                    source_labels.len() >= 2,
                    "`source_labels` must contain at least two labels",
                )?;
                need(!has_target, "`target_label` cannot be used")?;
                need(!regex_given, "`regex` cannot be used")?;
            }
            Action::KeepIfContains | Action::DropIfContains => {
                need(has_sources, "missing `source_labels`")?;
                need(has_target, "missing `target_label`")?;
                need(!regex_given, "`regex` cannot be used")?;
            }
            Action::HashMod => {
                need(has_sources, "missing `source_labels`")?;
                need(has_target, "missing `target_label`")?;
                need(modulus > 0, "`modulus` must be greater than 0")?;
            }
            Action::Lowercase | Action::Uppercase => {
                need(has_sources, "missing `source_labels`")?;
                need(has_target, "missing `target_label`")?;
            }
            Action::LabelDrop | Action::LabelKeep => {
                need(!has_sources, "`source_labels` cannot be used")?;
                need(!has_target, "`target_label` cannot be used")?;
            }
            Action::LabelMap | Action::LabelMapAll | Action::Keep | Action::Drop => {}
            Action::Graphite => {}
        }
        let graphite = if action == Action::Graphite {
            let m = get("match")?.unwrap_or_default();
            need(!m.is_empty(), "missing `match`")?;
            let labels = match fields.get("labels") {
                Some(Value::Mapping(map)) => {
                    let mut out = BTreeMap::new();
                    for (k, v) in map.iter() {
                        let (Some(k), Some(v)) =
                            (scalar(k, "labels", index)?, scalar(v, "labels", index)?)
                        else {
                            return err(format!("{ctx}: `labels` has an empty entry"));
                        };
                        out.insert(k, v);
                    }
                    out
                }
                _ => return err(format!("{ctx}: missing `labels` mapping")),
            };
            need(!labels.is_empty(), "missing `labels`")?;
            Some(GraphiteRule::new(&m, &labels))
        } else {
            if fields.contains_key("match") || fields.contains_key("labels") {
                return err(format!(
                    "{ctx}: `match` and `labels` belong to action graphite"
                ));
            }
            None
        };

        Ok(Rule {
            selector,
            action,
            source_labels,
            separator: separator.into_bytes(),
            replacement_has_group: replacement.contains('$'),
            replacement_has_label_ref: replacement.contains("{{"),
            target_has_group: target_label.contains('$'),
            target_label: target_label.into_bytes(),
            regex_given,
            regex,
            modulus,
            replacement: replacement.into_bytes(),
            graphite,
        })
    }

    /// Apply to one series; false drops it.
    fn apply(&self, set: &mut LabelSet) -> bool {
        if let Some(sel) = &self.selector {
            if !sel.matches(set) {
                // A `keep` rule keeps only what its selector matches.
                return self.action != Action::Keep;
            }
        }
        match self.action {
            Action::Replace => self.replace(set),
            Action::ReplaceAll => {
                let mut joined = std::mem::take(&mut set.joined);
                set.join_into(&self.source_labels, &self.separator, &mut joined);
                if self.regex.unanchored.is_match(&joined) {
                    let out = self
                        .regex
                        .unanchored
                        .replace_all(&joined, &self.replacement[..]);
                    set.set(&self.target_label, &out);
                }
                set.joined = joined;
            }
            Action::Keep | Action::Drop => {
                let matched = if self.regex_given {
                    let mut joined = std::mem::take(&mut set.joined);
                    set.join_into(&self.source_labels, &self.separator, &mut joined);
                    let m = self.regex.anchored.is_match(&joined);
                    set.joined = joined;
                    m
                } else {
                    true
                };
                return matched == (self.action == Action::Keep);
            }
            Action::KeepMetrics | Action::DropMetrics => {
                let m = self
                    .regex
                    .anchored
                    .is_match(set.value_or_empty(METRIC_NAME_LABEL));
                return m == (self.action == Action::KeepMetrics);
            }
            Action::KeepEqual | Action::DropEqual => {
                let mut joined = std::mem::take(&mut set.joined);
                set.join_into(&self.source_labels, &self.separator, &mut joined);
                let eq = joined == set.value_or_empty(&self.target_label);
                set.joined = joined;
                return eq == (self.action == Action::KeepEqual);
            }
            Action::KeepIfEqual | Action::DropIfEqual => {
                let first = set.value_or_empty(&self.source_labels[0]);
                let eq = self.source_labels[1..]
                    .iter()
                    .all(|s| set.value_or_empty(s) == first);
                return eq == (self.action == Action::KeepIfEqual);
            }
            Action::KeepIfContains | Action::DropIfContains => {
                let target = set.value_or_empty(&self.target_label);
                let all = self
                    .source_labels
                    .iter()
                    .all(|s| contains(target, set.value_or_empty(s)));
                return all == (self.action == Action::KeepIfContains);
            }
            Action::HashMod => {
                let mut joined = std::mem::take(&mut set.joined);
                set.join_into(&self.source_labels, &self.separator, &mut joined);
                let h = xxh64(&joined, 0) % self.modulus;
                set.joined = joined;
                set.set(&self.target_label, h.to_string().as_bytes());
            }
            Action::LabelMap => {
                let mut name = std::mem::take(&mut set.buf);
                let mut value = std::mem::take(&mut set.buf2);
                // Labels added by this rule are not mapped again.
                for i in 0..set.len {
                    let l = &set.items[i];
                    let Some(caps) = self.regex.anchored.captures(&l.name) else {
                        continue;
                    };
                    name.clear();
                    caps.expand(&self.replacement, &mut name);
                    value.clear();
                    value.extend_from_slice(&l.value);
                    set.set(&name, &value);
                }
                set.buf = name;
                set.buf2 = value;
            }
            Action::LabelMapAll => {
                for l in &mut set.items[..set.len] {
                    if self.regex.unanchored.is_match(&l.name) {
                        let renamed = self
                            .regex
                            .unanchored
                            .replace_all(&l.name, &self.replacement[..])
                            .into_owned();
                        l.name = renamed;
                    }
                }
            }
            Action::LabelDrop | Action::LabelKeep => {
                let keep_matching = self.action == Action::LabelKeep;
                let re = &self.regex.anchored;
                set.retain(|l| re.is_match(&l.name) == keep_matching);
            }
            Action::Lowercase | Action::Uppercase => {
                let mut joined = std::mem::take(&mut set.joined);
                set.join_into(&self.source_labels, &self.separator, &mut joined);
                let mut out = std::mem::take(&mut set.buf);
                change_case(&joined, self.action == Action::Uppercase, &mut out);
                set.set(&self.target_label, &out);
                set.joined = joined;
                set.buf = out;
            }
            Action::Graphite => {
                if let Some(g) = &self.graphite {
                    g.apply(set);
                }
            }
        }
        true
    }

    fn replace(&self, set: &mut LabelSet) {
        let mut replacement_buf = std::mem::take(&mut set.buf2);
        let replacement: &[u8] = if self.replacement_has_label_ref {
            fill_label_refs(set, &self.replacement, &mut replacement_buf);
            &replacement_buf
        } else {
            &self.replacement
        };
        let mut joined = std::mem::take(&mut set.joined);
        set.join_into(&self.source_labels, &self.separator, &mut joined);
        if !self.regex_given && !self.target_has_group {
            if replacement == b"$1" {
                // Copy the joined sources as they are.
                set.set(&self.target_label, &joined);
            } else if !self.replacement_has_group {
                set.set(&self.target_label, replacement);
            } else {
                self.replace_slow(set, &joined, replacement);
            }
        } else {
            self.replace_slow(set, &joined, replacement);
        }
        set.joined = joined;
        set.buf2 = replacement_buf;
    }

    fn replace_slow(&self, set: &mut LabelSet, joined: &[u8], replacement: &[u8]) {
        let Some(caps) = self.regex.anchored.captures(joined) else {
            return;
        };
        let mut value = std::mem::take(&mut set.buf);
        value.clear();
        caps.expand(replacement, &mut value);
        if self.target_has_group {
            let mut name = Vec::new();
            expand_into(&caps, &self.target_label, &mut name);
            set.set(&name, &value);
        } else {
            set.set(&self.target_label, &value);
        }
        set.buf = value;
    }
}

fn expand_into(caps: &Captures<'_>, template: &[u8], out: &mut Vec<u8>) {
    caps.expand(template, out);
}

/// Replace `{{name}}` in a replacement with the value of label `name` (vminsert extension).
fn fill_label_refs(set: &LabelSet, template: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut rest = template;
    while let Some(start) = find(rest, b"{{") {
        let after = &rest[start + 2..];
        let Some(end) = find(after, b"}}") else {
            break;
        };
        out.extend_from_slice(&rest[..start]);
        let name = after[..end].trim_ascii();
        out.extend_from_slice(set.value_or_empty(name));
        rest = &after[end + 2..];
    }
    out.extend_from_slice(rest);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || find(hay, needle).is_some()
}

/// Upper- or lower-case as Go's `strings.ToUpper`/`ToLower` do: per character, simple case
/// mapping (a character whose mapping has several characters stays as it is), invalid UTF-8
/// becomes U+FFFD.
fn change_case(src: &[u8], upper: bool, out: &mut Vec<u8>) {
    out.clear();
    if src.is_ascii() {
        out.extend_from_slice(src);
        if upper {
            out.make_ascii_uppercase();
        } else {
            out.make_ascii_lowercase();
        }
        return;
    }
    let text = String::from_utf8_lossy(src);
    let mut tmp = [0u8; 4];
    for c in text.chars() {
        let mapped = if upper {
            single(c.to_uppercase())
        } else {
            single(c.to_lowercase())
        };
        out.extend_from_slice(mapped.unwrap_or(c).encode_utf8(&mut tmp).as_bytes());
    }
}

fn single(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    if it.next().is_some() {
        None
    } else {
        Some(c)
    }
}

/// `-usePromCompatibleNaming`: `_` for every character outside `[a-zA-Z0-9_:]` in the metric
/// name and outside `[a-zA-Z0-9_]` in other label names; one `_` per character (a multi-byte
/// UTF-8 character or one invalid byte).
fn sanitize_names(set: &mut LabelSet) {
    let mut out = std::mem::take(&mut set.buf);
    for l in &mut set.items[..set.len] {
        let is_name = l.name == METRIC_NAME_LABEL;
        let field = if is_name { &mut l.value } else { &mut l.name };
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || (is_name && b == b':');
        if field.iter().all(|&b| ok(b)) {
            continue;
        }
        out.clear();
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b < 0x80 {
                out.push(if ok(b) { b } else { b'_' });
                i += 1;
                continue;
            }
            out.push(b'_');
            i += utf8_char_len(&field[i..]);
        }
        std::mem::swap(field, &mut out);
    }
    set.buf = out;
}

/// Length of the UTF-8 character at the start of `s`, or 1 for an invalid byte (as Go decodes).
fn utf8_char_len(s: &[u8]) -> usize {
    let want = match s[0] {
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => return 1,
    };
    match s.get(..want) {
        Some(c) if std::str::from_utf8(c).is_ok() => want,
        _ => 1,
    }
}

/// A series selector from an `if:` field: `metric{label="v", other=~"re"}`, with `or` between
/// matcher groups and a list of selectors meaning any of them.
#[derive(Clone, Debug)]
struct Selector {
    /// Any group matches → the selector matches; a group matches when all its matchers do.
    groups: Vec<Vec<Matcher>>,
}

#[derive(Clone, Debug)]
struct Matcher {
    name: Vec<u8>,
    op: MatchOp,
}

#[derive(Clone, Debug)]
enum MatchOp {
    Eq(Vec<u8>),
    Ne(Vec<u8>),
    Re(Regex),
    NotRe(Regex),
}

impl Matcher {
    fn matches(&self, set: &LabelSet) -> bool {
        let v = set.value_or_empty(&self.name);
        match &self.op {
            MatchOp::Eq(x) => v == &x[..],
            MatchOp::Ne(x) => v != &x[..],
            MatchOp::Re(re) => re.is_match(v),
            MatchOp::NotRe(re) => !re.is_match(v),
        }
    }
}

impl Selector {
    fn matches(&self, set: &LabelSet) -> bool {
        self.groups.iter().any(|g| g.iter().all(|m| m.matches(set)))
    }

    fn parse(s: &str) -> Result<Selector, String> {
        let mut p = SelectorParser {
            s: s.as_bytes(),
            i: 0,
        };
        p.ws();
        let metric = p.ident();
        p.ws();
        let mut groups: Vec<Vec<Matcher>> = Vec::new();
        if p.eat(b'{') {
            let mut group = Vec::new();
            loop {
                p.ws();
                if p.eat(b'}') {
                    break;
                }
                let name = p.ident();
                if name.is_empty() {
                    return Err(format!("expected a label name at offset {}", p.i));
                }
                if name.eq_ignore_ascii_case(b"or") && !group.is_empty() {
                    groups.push(std::mem::take(&mut group));
                    continue;
                }
                p.ws();
                let op = if p.eat_str(b"=~") {
                    1
                } else if p.eat_str(b"!~") {
                    2
                } else if p.eat_str(b"!=") {
                    3
                } else if p.eat(b'=') {
                    0
                } else {
                    return Err(format!("expected =, !=, =~ or !~ at offset {}", p.i));
                };
                p.ws();
                let value = p.string()?;
                let re = |v: &[u8]| -> Result<Regex, String> {
                    let text = std::str::from_utf8(v).map_err(|_| "regex is not UTF-8")?;
                    Regex::new(&format!("^(?:{text})$")).map_err(|e| e.to_string())
                };
                let op = match op {
                    0 => MatchOp::Eq(value),
                    3 => MatchOp::Ne(value),
                    1 => MatchOp::Re(re(&value)?),
                    _ => MatchOp::NotRe(re(&value)?),
                };
                group.push(Matcher { name, op });
                p.ws();
                if p.eat(b',') {
                    continue;
                }
                p.ws();
                if p.peek() == Some(b'}') {
                    continue;
                }
                if p.s[p.i..].len() >= 2 && p.s[p.i..p.i + 2].eq_ignore_ascii_case(b"or") {
                    p.i += 2;
                    groups.push(std::mem::take(&mut group));
                    continue;
                }
                return Err(format!("expected `,`, `or` or `}}` at offset {}", p.i));
            }
            groups.push(group);
        } else if metric.is_empty() {
            return Err("empty selector".to_string());
        } else {
            groups.push(Vec::new());
        }
        p.ws();
        if p.i != p.s.len() {
            return Err(format!("unexpected text at offset {}", p.i));
        }
        if !metric.is_empty() {
            for g in &mut groups {
                g.insert(
                    0,
                    Matcher {
                        name: METRIC_NAME_LABEL.to_vec(),
                        op: MatchOp::Eq(metric.clone()),
                    },
                );
            }
        }
        Ok(Selector { groups })
    }
}

struct SelectorParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl SelectorParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn ws(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.i += 1;
        }
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn eat_str(&mut self, t: &[u8]) -> bool {
        if self.s[self.i..].starts_with(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn ident(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'.' {
                out.push(b);
                self.i += 1;
            } else if b == b'\\' && self.i + 1 < self.s.len() {
                out.push(self.s[self.i + 1]);
                self.i += 2;
            } else {
                break;
            }
        }
        out
    }
    fn string(&mut self) -> Result<Vec<u8>, String> {
        let Some(q) = self.peek().filter(|b| matches!(b, b'"' | b'\'' | b'`')) else {
            return Err(format!("expected a quoted string at offset {}", self.i));
        };
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                return Err("unterminated string".to_string());
            };
            self.i += 1;
            if b == q {
                return Ok(out);
            }
            if b != b'\\' || q == b'`' {
                out.push(b);
                continue;
            }
            let Some(e) = self.peek() else {
                return Err("unterminated string".to_string());
            };
            self.i += 1;
            match e {
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'r' => out.push(b'\r'),
                b'x' => {
                    let hex = self
                        .s
                        .get(self.i..self.i + 2)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or("bad \\x escape")?;
                    out.push(hex);
                    self.i += 2;
                }
                b'u' => {
                    let c = self
                        .s
                        .get(self.i..self.i + 4)
                        .and_then(|h| std::str::from_utf8(h).ok())
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .ok_or("bad \\u escape")?;
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                    self.i += 4;
                }
                // `\\`, `\"`, `\'` and anything else: the character itself.
                other => out.push(other),
            }
        }
    }
}

/// The `graphite` action: match the metric name against a Graphite-style glob (`*` matches a
/// run of characters without a dot) and set labels from `$N` templates over the matched parts
/// (`$0` is the whole name).
#[derive(Clone, Debug)]
struct GraphiteRule {
    /// Literal parts and `None` for `*`, in order.
    parts: Vec<Option<Vec<u8>>>,
    /// Target label and its template, sorted by label name.
    labels: Vec<(Vec<u8>, Vec<TemplatePart>)>,
}

#[derive(Clone, Debug)]
enum TemplatePart {
    Literal(Vec<u8>),
    Group(usize),
}

impl GraphiteRule {
    fn new(pattern: &str, labels: &BTreeMap<String, String>) -> GraphiteRule {
        let mut parts = Vec::new();
        for (i, lit) in pattern.split('*').enumerate() {
            if i > 0 {
                parts.push(None);
            }
            if !lit.is_empty() {
                parts.push(Some(lit.as_bytes().to_vec()));
            }
        }
        let labels = labels
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), parse_template(v.as_bytes())))
            .collect();
        GraphiteRule { parts, labels }
    }

    fn matches<'s>(&self, mut s: &'s [u8], groups: &mut Vec<&'s [u8]>) -> bool {
        groups.clear();
        groups.push(s);
        let mut i = 0;
        while i < self.parts.len() {
            match &self.parts[i] {
                Some(lit) => {
                    if !s.starts_with(lit) {
                        return false;
                    }
                    s = &s[lit.len()..];
                }
                None => match self.parts.get(i + 1) {
                    None => {
                        if s.contains(&b'.') {
                            return false;
                        }
                        groups.push(s);
                        return true;
                    }
                    Some(next) => {
                        let next = next.as_deref().unwrap_or(b"");
                        let Some(n) = find(s, next) else {
                            return false;
                        };
                        let part = &s[..n];
                        if part.contains(&b'.') {
                            return false;
                        }
                        groups.push(part);
                        s = &s[n + next.len()..];
                        i += 1;
                    }
                },
            }
            i += 1;
        }
        s.is_empty()
    }

    fn apply(&self, set: &mut LabelSet) {
        let name = set.value_or_empty(METRIC_NAME_LABEL).to_vec();
        let mut groups = Vec::new();
        if !self.matches(&name, &mut groups) {
            return;
        }
        let mut value = Vec::new();
        for (target, template) in &self.labels {
            value.clear();
            for p in template {
                match p {
                    TemplatePart::Literal(l) => value.extend_from_slice(l),
                    TemplatePart::Group(g) => {
                        value.extend_from_slice(groups.get(*g).copied().unwrap_or(b""))
                    }
                }
            }
            set.set(target, &value);
        }
    }
}

fn parse_template(t: &[u8]) -> Vec<TemplatePart> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] == b'$' {
            let (digits_start, braced) = if t.get(i + 1) == Some(&b'{') {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            let mut j = digits_start;
            while j < t.len() && t[j].is_ascii_digit() {
                j += 1;
            }
            let closed = !braced || t.get(j) == Some(&b'}');
            if j > digits_start && closed {
                if let Some(n) = std::str::from_utf8(&t[digits_start..j])
                    .ok()
                    .and_then(|d| d.parse::<usize>().ok())
                {
                    if !lit.is_empty() {
                        out.push(TemplatePart::Literal(std::mem::take(&mut lit)));
                    }
                    out.push(TemplatePart::Group(n));
                    i = if braced { j + 1 } else { j };
                    continue;
                }
            }
        }
        lit.push(t[i]);
        i += 1;
    }
    if !lit.is_empty() {
        out.push(TemplatePart::Literal(lit));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: &[(&str, &str)]) -> LabelSet {
        let mut s = LabelSet::new();
        for (n, v) in labels {
            s.push(n.as_bytes(), v.as_bytes());
        }
        s
    }

    fn show(s: &LabelSet) -> Vec<(String, String)> {
        s.labels()
            .iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.name).into_owned(),
                    String::from_utf8_lossy(&l.value).into_owned(),
                )
            })
            .collect()
    }

    fn run(yaml: &str, labels: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        let c = RelabelConfig::parse(yaml).unwrap();
        let mut s = set(labels);
        c.apply(&mut s).then(|| show(&s))
    }

    fn pairs(labels: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            labels
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn replace_with_group_appends_or_overwrites_in_place() {
        let y = "- source_labels: [instance]\n  regex: '([^:]+):.*'\n  target_label: host\n";
        assert_eq!(
            run(y, &[("__name__", "m"), ("instance", "web:80")]),
            pairs(&[("__name__", "m"), ("instance", "web:80"), ("host", "web")])
        );
        assert_eq!(
            run(y, &[("host", "old"), ("instance", "db:1")]),
            pairs(&[("host", "db"), ("instance", "db:1")])
        );
        // No match: nothing happens.
        assert_eq!(
            run(y, &[("instance", "nocolon")]),
            pairs(&[("instance", "nocolon")])
        );
    }

    #[test]
    fn replace_fast_paths_and_label_refs() {
        let y = "- target_label: t\n  replacement: fixed\n- source_labels: [a, b]\n  separator: '-'\n  target_label: j\n- target_label: r\n  replacement: '{{a}}/x'\n";
        assert_eq!(
            run(y, &[("a", "1")]),
            pairs(&[("a", "1"), ("t", "fixed"), ("j", "1-"), ("r", "1/x")])
        );
    }

    #[test]
    fn replace_with_group_in_target_label() {
        let y = "- source_labels: [k]\n  regex: '(.+)=(.+)'\n  target_label: 'x_$1'\n  replacement: '$2'\n";
        assert_eq!(
            run(y, &[("k", "a=b")]),
            pairs(&[("k", "a=b"), ("x_a", "b")])
        );
    }

    #[test]
    fn replace_all_and_labelmap_all() {
        let y = "- action: replace_all\n  source_labels: [__name__]\n  regex: '[.]'\n  target_label: __name__\n  replacement: ':'\n- action: labelmap_all\n  regex: '\\.'\n  replacement: _\n";
        assert_eq!(
            run(y, &[("__name__", "a.b.c"), ("x.y", "1")]),
            pairs(&[("__name__", "a:b:c"), ("x_y", "1")])
        );
    }

    #[test]
    fn keep_and_drop() {
        let keep = "- action: keep\n  source_labels: [job]\n  regex: 'a|b'\n";
        assert!(run(keep, &[("job", "a")]).is_some());
        assert!(run(keep, &[("job", "ab")]).is_none(), "regex is anchored");
        let drop = "- action: drop\n  source_labels: [__name__]\n  regex: 'drop_me.*'\n";
        assert!(run(drop, &[("__name__", "drop_me_now")]).is_none());
        assert!(run(drop, &[("__name__", "keep_drop_me")]).is_some());
        let km = "- action: keep_metrics\n  regex: '(app|svc)[._].*'\n";
        assert!(run(km, &[("__name__", "app.x")]).is_some());
        assert!(run(km, &[("__name__", "other")]).is_none());
        let dm = "- action: drop_metrics\n  regex: [x, y]\n";
        assert!(run(dm, &[("__name__", "y")]).is_none());
        assert!(run(dm, &[("__name__", "z")]).is_some());
    }

    #[test]
    fn equal_and_contains_actions() {
        let die = "- action: drop_if_equal\n  source_labels: [src, dst]\n";
        assert!(run(die, &[("src", "a"), ("dst", "a")]).is_none());
        assert!(run(die, &[("k", "v")]).is_none(), "both absent are equal");
        assert!(run(die, &[("src", "a"), ("dst", "b")]).is_some());
        let kie = "- action: keep_if_equal\n  source_labels: [src, dst]\n";
        assert!(run(kie, &[("src", "a"), ("dst", "a")]).is_some());
        assert!(run(kie, &[("src", "a"), ("dst", "b")]).is_none());
        let ke = "- action: keepequal\n  source_labels: [a]\n  target_label: b\n";
        assert!(run(ke, &[("a", "1"), ("b", "1")]).is_some());
        assert!(run(ke, &[("a", "1"), ("b", "2")]).is_none());
        let de = "- action: dropequal\n  source_labels: [a]\n  target_label: b\n";
        assert!(run(de, &[("a", "1"), ("b", "1")]).is_none());
        let kc = "- action: keep_if_contains\n  source_labels: [a]\n  target_label: tags\n";
        assert!(run(kc, &[("a", "x"), ("tags", ",x,y,")]).is_some());
        assert!(run(kc, &[("a", "z"), ("tags", ",x,y,")]).is_none());
        let dc = "- action: drop_if_contains\n  source_labels: [a]\n  target_label: tags\n";
        assert!(run(dc, &[("a", "x"), ("tags", ",x,y,")]).is_none());
    }

    #[test]
    fn hashmod_is_xxhash_of_the_joined_sources() {
        let y = "- action: hashmod\n  source_labels: [a, b]\n  separator: /\n  modulus: 16\n  target_label: shard\n";
        let want = (xxh64(b"1/2", 0) % 16).to_string();
        assert_eq!(
            run(y, &[("a", "1"), ("b", "2")]),
            pairs(&[("a", "1"), ("b", "2"), ("shard", &want)])
        );
    }

    #[test]
    fn labelmap_keeps_the_original() {
        let y = "- action: labelmap\n  regex: 'meta_(.+)'\n  replacement: 'm_$1'\n";
        assert_eq!(
            run(y, &[("meta_owner", "bob"), ("meta_", "x")]),
            pairs(&[("meta_owner", "bob"), ("meta_", "x"), ("m_owner", "bob")])
        );
    }

    #[test]
    fn labeldrop_and_labelkeep() {
        let y = "- action: labeldrop\n  regex: 'tmp_.*'\n";
        assert_eq!(
            run(y, &[("__name__", "m"), ("tmp_a", "1"), ("b", "2")]),
            pairs(&[("__name__", "m"), ("b", "2")])
        );
        let y = "- action: labelkeep\n  regex: '__name__|b'\n";
        assert_eq!(
            run(y, &[("__name__", "m"), ("a", "1"), ("b", "2")]),
            pairs(&[("__name__", "m"), ("b", "2")])
        );
    }

    #[test]
    fn case_changes() {
        let y = "- action: uppercase\n  source_labels: [env]\n  target_label: up\n- action: lowercase\n  source_labels: [env]\n  target_label: low\n";
        assert_eq!(
            run(y, &[("env", "Prod-é")]),
            pairs(&[("env", "Prod-é"), ("up", "PROD-É"), ("low", "prod-é")])
        );
        // Missing source: the target gets an empty value and disappears afterwards.
        assert_eq!(run(y, &[("x", "1")]), pairs(&[("x", "1")]));
    }

    #[test]
    fn if_selector_gates_a_rule_and_keep_drops_on_mismatch() {
        let y = "- if: '{team=\"core\"}'\n  target_label: owned\n  replacement: 'yes'\n";
        assert_eq!(
            run(y, &[("team", "core")]),
            pairs(&[("team", "core"), ("owned", "yes")])
        );
        assert_eq!(run(y, &[("team", "edge")]), pairs(&[("team", "edge")]));
        let y = "- action: keep\n  if: 'up{job=~\"a.*\", x!=\"1\" or job=\"z\"}'\n";
        assert!(run(y, &[("__name__", "up"), ("job", "ab")]).is_some());
        assert!(run(y, &[("__name__", "up"), ("job", "ab"), ("x", "1")]).is_none());
        assert!(run(y, &[("__name__", "up"), ("job", "z"), ("x", "1")]).is_some());
        assert!(run(y, &[("__name__", "down"), ("job", "ab")]).is_none());
        let y = "- action: drop\n  if: ['{a=\"1\"}', '{b!~\"x|y\"}']\n";
        assert!(run(y, &[("a", "1"), ("b", "x")]).is_none());
        assert!(run(y, &[("a", "2"), ("b", "q")]).is_none());
        assert!(run(y, &[("a", "2"), ("b", "y")]).is_some());
    }

    #[test]
    fn graphite_action() {
        let y = "- action: graphite\n  match: 'foo.*.baz'\n  labels:\n    __name__: 'foo_$1'\n    job: '${1}-x'\n    all: '$0'\n";
        assert_eq!(
            run(y, &[("__name__", "foo.bar.baz")]),
            pairs(&[
                ("__name__", "foo_bar"),
                ("all", "foo.bar.baz"),
                ("job", "bar-x")
            ])
        );
        assert_eq!(
            run(y, &[("__name__", "foo.a.b.baz")]),
            pairs(&[("__name__", "foo.a.b.baz")])
        );
    }

    #[test]
    fn double_underscore_labels_are_removed_after_rules() {
        let y = "- target_label: __tmp\n  replacement: x\n";
        assert_eq!(
            run(y, &[("__name__", "m"), ("__keep", "no")]),
            pairs(&[("__name__", "m")])
        );
        // Without rules (renaming only) they stay.
        let c = RelabelConfig::empty().with_prom_compatible_naming(true);
        let mut s = set(&[("__name__", "m"), ("__x", "1")]);
        assert!(c.apply(&mut s));
        assert_eq!(show(&s).len(), 2);
    }

    #[test]
    fn prom_compatible_naming() {
        let c = RelabelConfig::empty().with_prom_compatible_naming(true);
        assert!(c.is_active());
        let mut s = set(&[
            ("__name__", "my.meas_f-x:é"),
            ("tag.k", "v.v"),
            ("a:b", "1"),
        ]);
        assert!(c.apply(&mut s));
        assert_eq!(
            show(&s),
            pairs(&[
                ("__name__", "my_meas_f_x:_"),
                ("tag_k", "v.v"),
                ("a_b", "1")
            ])
            .unwrap()
        );
        let mut s = LabelSet::new();
        s.push(b"a\xffb", b"1");
        assert!(c.apply(&mut s));
        assert_eq!(s.labels()[0].name, b"a_b");
    }

    #[test]
    fn dropping_every_label_drops_the_series() {
        let y = "- action: labeldrop\n  regex: '.*'\n";
        assert!(run(y, &[("a", "1")]).is_none());
    }

    #[test]
    fn parse_errors_name_the_rule() {
        let cases = [
            ("- action: nope\n", "unknown action"),
            ("- action: replace\n  source_labels: [a]\n", "target_label"),
            (
                "- action: hashmod\n  source_labels: [a]\n  target_label: b\n",
                "modulus",
            ),
            ("- action: keep\n  regex: '('\n", "regex"),
            ("- action: keep\n  unknown_field: 1\n", "unknown field"),
            ("- action: keep\n  if: '{a=}'\n", "if"),
            (
                "- action: drop_if_equal\n  source_labels: [a]\n",
                "two labels",
            ),
            ("a: b\n", "list"),
            ("- [\n", "YAML"),
        ];
        for (y, want) in cases {
            let e = RelabelConfig::parse(y).unwrap_err().to_string();
            assert!(e.contains(want), "{y:?}: {e}");
        }
        assert!(RelabelConfig::parse("- action: keep\n  regex: x\n").is_ok());
        assert!(RelabelConfig::parse("")
            .map(|c| !c.is_active())
            .unwrap_or(false));
    }

    #[test]
    fn vector_rule_files_load() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/relabel");
        let mut n = 0;
        for f in ["basic.yml", "keep-rename.yml", "noop-limit.yml"] {
            let text = std::fs::read_to_string(format!("{dir}/{f}")).unwrap();
            let c = RelabelConfig::parse(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(c.is_active());
            n += c.rule_count();
        }
        assert_eq!(n, 9 + 6 + 1);
    }
}
