//! Labels a request adds to every series: Pushgateway-style path labels, then `extra_label`
//! query arguments (common.md §4). Pure functions over already percent-decoded text.

use std::fmt;

use crate::model::OwnedLabel;

/// A request's extra labels are unusable: vminsert answers 400 with this text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraLabelError(String);

impl fmt::Display for ExtraLabelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ExtraLabelError {}

/// All extra labels of a request, in the order they are appended to each series. Labels with
/// an empty value are left out here (they would never be appended, common.md §3 step 3).
///
/// `path` is the request path as routed (percent-decoded, before `//` is collapsed: path labels
/// come from the raw path); `extra_label_args` are the values of every `extra_label` query
/// argument in URL order.
pub fn extra_labels<'a>(
    path: &str,
    extra_label_args: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<OwnedLabel>, ExtraLabelError> {
    let mut out = pushgateway_labels(path).map_err(|e| {
        ExtraLabelError(format!(
            "cannot parse pushgateway-style labels from {path:?}: {e}"
        ))
    })?;
    for arg in extra_label_args {
        if let Some(l) = parse_extra_label(arg)? {
            out.push(l);
        }
    }
    Ok(out)
}

/// One `extra_label=name=value` argument, split on the first `=`. `Ok(None)` for an empty
/// value. An empty name is the metric name.
pub fn parse_extra_label(arg: &str) -> Result<Option<OwnedLabel>, ExtraLabelError> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(ExtraLabelError(format!(
            "`extra_label` query arg must have the format `name=value`; got {arg:?}"
        )));
    };
    Ok((!value.is_empty()).then(|| OwnedLabel::new(name, value)))
}

/// Labels from a Pushgateway-style path `…/metrics/job/<j>/<name>/<value>…` (`@base64` names
/// carry URL-safe base64 values). A path without `/metrics/job/` or `/metrics/job@base64/` has
/// none. Errors are vminsert's texts, without the "cannot parse pushgateway-style labels"
/// prefix that [`extra_labels`] adds.
pub fn pushgateway_labels(path: &str) -> Result<Vec<OwnedLabel>, String> {
    let Some(n) = path.find("/metrics/job") else {
        return Ok(Vec::new());
    };
    let mut s = &path[n + "/metrics/".len()..];
    if !s.starts_with("job/") && !s.starts_with("job@base64/") {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    while !s.is_empty() {
        let Some(slash) = s.find('/') else {
            return Err(format!("missing value for label {s:?}"));
        };
        let mut name = &s[..slash];
        s = &s[slash + 1..];
        let base64 = name.ends_with("@base64");
        if base64 {
            name = &name[..name.len() - "@base64".len()];
        }
        let raw = match s.find('/') {
            Some(i) => {
                let v = &s[..i];
                s = &s[i + 1..];
                v
            }
            None => std::mem::take(&mut s),
        };
        let value = if base64 {
            decode_base64_url(raw.trim_end_matches('=')).map_err(|pos| {
                format!(
                    "cannot base64-decode value={raw:?} for label={name:?}: illegal base64 data at input byte {pos}"
                )
            })?
        } else {
            raw.as_bytes().to_vec()
        };
        if !value.is_empty() {
            out.push(OwnedLabel::new(name, value));
        }
    }
    Ok(out)
}

/// URL-safe base64 without padding, as Go's `RawURLEncoding` decodes it (CR and LF are skipped,
/// unused trailing bits are ignored). The error is the offset of the offending input byte.
fn decode_base64_url(s: &str) -> Result<Vec<u8>, usize> {
    let sextet = |b: u8| -> Option<u32> {
        Some(match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut n = 0;
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        if b == b'\r' || b == b'\n' {
            continue;
        }
        acc = (acc << 6) | sextet(b).ok_or(i)?;
        n += 1;
        last = i;
        if n == 4 {
            out.extend_from_slice(&acc.to_be_bytes()[1..]);
            acc = 0;
            n = 0;
        }
    }
    match n {
        0 => {}
        1 => return Err(last),
        2 => out.push((acc >> 4) as u8),
        _ => out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes()),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[OwnedLabel]) -> Vec<(String, String)> {
        v.iter()
            .map(|l| {
                (
                    String::from_utf8_lossy(&l.name).into_owned(),
                    String::from_utf8_lossy(&l.value).into_owned(),
                )
            })
            .collect()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn path_labels_then_query_args() {
        let l = extra_labels(
            "/insert/0/prometheus/api/v1/import/prometheus/metrics/job/myjob/instance/inst1",
            ["x=1", "e=", "=name", "y=a=b"],
        )
        .unwrap();
        assert_eq!(
            labels(&l),
            pairs(&[
                ("job", "myjob"),
                ("instance", "inst1"),
                ("x", "1"),
                ("", "name"),
                ("y", "a=b")
            ])
        );
        assert!(extra_labels("/insert/0/x", ["novalue"])
            .unwrap_err()
            .to_string()
            .contains(
                "`extra_label` query arg must have the format `name=value`; got \"novalue\""
            ));
    }

    #[test]
    fn base64_path_labels() {
        let l =
            pushgateway_labels("/p/metrics/job@base64/L3Zhci90bXA/path@base64/YS9iK2M=/plain/v")
                .unwrap();
        assert_eq!(
            labels(&l),
            pairs(&[("job", "/var/tmp"), ("path", "a/b+c"), ("plain", "v")])
        );
        let l = pushgateway_labels("/p/metrics/job/j2/blank@base64/=/k/v").unwrap();
        assert_eq!(labels(&l), pairs(&[("job", "j2"), ("k", "v")]));
    }

    #[test]
    fn pushgateway_errors_and_non_matches() {
        let p = "/insert/0/prometheus/api/v1/import/prometheus/metrics/job/j/instance";
        assert_eq!(
            extra_labels(p, []).unwrap_err().to_string(),
            format!("cannot parse pushgateway-style labels from {p:?}: missing value for label \"instance\"")
        );
        assert_eq!(
            pushgateway_labels("/x/metrics/job@base64/!!!").unwrap_err(),
            "cannot base64-decode value=\"!!!\" for label=\"job\": illegal base64 data at input byte 0"
        );
        assert!(pushgateway_labels("/x/metrics/foo/bar").unwrap().is_empty());
        assert!(pushgateway_labels("/x/metrics/jobs/bar")
            .unwrap()
            .is_empty());
        // Raw path: "a//b/c" is a="" (skipped) then b=c.
        let l = pushgateway_labels("/x/metrics/job/j3/a//b/c").unwrap();
        assert_eq!(labels(&l), pairs(&[("job", "j3"), ("b", "c")]));
    }

    #[test]
    fn base64_decoder() {
        assert_eq!(decode_base64_url("").unwrap(), b"");
        assert_eq!(decode_base64_url("YQ").unwrap(), b"a");
        assert_eq!(decode_base64_url("YWI").unwrap(), b"ab");
        assert_eq!(decode_base64_url("YWJj").unwrap(), b"abc");
        assert_eq!(decode_base64_url("-_8").unwrap(), vec![0xfb, 0xff]);
        assert_eq!(decode_base64_url("YWJjZ"), Err(4));
        assert_eq!(decode_base64_url("YW=j"), Err(2));
    }
}
