//! `/insert/...` path and tenant parsing (spec: flags-and-endpoints.md §3.2, formats/common.md §2).
//! Pure functions so every rule is unit-tested without a socket.

use shardgate_core::ingest;

/// Whose series these are: one tenant, or per series from `vm_account_id`/`vm_project_id`.
pub use shardgate_core::ingest::TenantMode as TenantSel;

/// A parsed insert path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InsertPath {
    pub tenant: TenantSel,
    /// What follows the tenant, leading slashes stripped and every `//` made `/`.
    pub suffix: String,
}

/// Why an insert path was refused; every one is a 400 except `NotMine`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not an `/insert/` path: the caller answers "unsupported path".
    NotMine,
    Message(String),
}

/// Parse a tenant token: `multitenant`, `accountID` or `accountID:projectID` (vminsert's
/// error texts come from the core).
pub fn parse_tenant(token: &str) -> Result<TenantSel, String> {
    ingest::parse_tenant_mode(token).map_err(|e| e.to_string())
}

/// Tenant from the `AccountID` / `ProjectID` headers (missing or empty ones count as 0).
pub fn tenant_from_headers(
    account: Option<&str>,
    project: Option<&str>,
) -> Result<TenantSel, String> {
    ingest::tenant_from_headers(account, project).map_err(|e| e.to_string())
}

/// Split `/insert/<tenant>/<suffix>` (or `/insert/<suffix>` with header tenancy).
pub fn parse_insert_path(
    path: &str,
    via_headers: bool,
    headers: (Option<&str>, Option<&str>),
) -> Result<InsertPath, PathError> {
    let p = path.trim_start_matches('/');
    let Some((prefix, rest)) = p.split_once('/') else {
        if p == "insert" {
            return Err(PathError::Message(format!(
                "cannot parse path {path:?}: missing suffix"
            )));
        }
        return Err(PathError::NotMine);
    };
    if prefix != "insert" {
        return Err(PathError::NotMine);
    }
    let rest = rest.trim_start_matches('/');
    if rest.is_empty() {
        let what = if via_headers {
            "{suffix}"
        } else {
            "{tenantID}"
        };
        return Err(PathError::Message(format!(
            "cannot find {what} in {path:?}"
        )));
    }
    let (token, after) = match rest.split_once('/') {
        Some((t, a)) => (t, Some(a)),
        None => (rest, None),
    };
    let (tenant, suffix) = if !via_headers || ingest::looks_like_tenant(token) {
        let suffix = after.map(|a| a.trim_start_matches('/')).unwrap_or("");
        if suffix.is_empty() && !via_headers {
            return Err(PathError::Message(format!(
                "cannot find {{tenantID}} in {path:?}"
            )));
        }
        let tenant = parse_tenant(token).map_err(PathError::Message)?;
        (tenant, suffix)
    } else {
        let tenant = tenant_from_headers(headers.0, headers.1).map_err(PathError::Message)?;
        (tenant, rest)
    };
    let mut suffix = suffix.to_string();
    while suffix.contains("//") {
        suffix = suffix.replace("//", "/");
    }
    Ok(InsertPath { tenant, suffix })
}

/// A label added by `?extra_label=name=value`: (name, value) bytes.
pub type ExtraLabel = (Vec<u8>, Vec<u8>);

/// `?extra_label=name=value` items, in URL order, percent-decoded. An item without `=` is a 400.
pub fn extra_labels(query: &str) -> Result<Vec<ExtraLabel>, String> {
    let mut out = Vec::new();
    for (k, v) in query_pairs(query) {
        if k != b"extra_label" {
            continue;
        }
        let Some(eq) = v.iter().position(|&b| b == b'=') else {
            return Err(format!(
                "missing '=' in `extra_label` query arg: {:?}",
                String::from_utf8_lossy(&v)
            ));
        };
        out.push((v[..eq].to_vec(), v[eq + 1..].to_vec()));
    }
    Ok(out)
}

/// The first value of a query argument.
pub fn query_arg(query: &str, name: &str) -> Option<Vec<u8>> {
    query_pairs(query)
        .into_iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| v)
}

/// `application/x-www-form-urlencoded` pairs.
pub fn query_pairs(query: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), Vec::new()),
        })
        .collect()
}

/// Query-string decoding: `%XX` escapes and `+` as a space.
pub fn percent_decode(s: &str) -> Vec<u8> {
    decode(s, true)
}

/// URL path decoding: `%XX` escapes only (a `+` stays a `+`), as Go's `URL.Path` holds it.
pub fn path_decode(s: &str) -> String {
    String::from_utf8_lossy(&decode(s, false)).into_owned()
}

fn decode(s: &str, plus_is_space: bool) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' if plus_is_space => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_core::Tenant;

    fn one(a: u32, p: u32) -> TenantSel {
        TenantSel::Fixed(Tenant::new(a, p))
    }

    fn ok(path: &str) -> InsertPath {
        parse_insert_path(path, true, (None, None)).unwrap()
    }

    #[test]
    fn tenant_tokens() {
        assert_eq!(parse_tenant("42").unwrap(), one(42, 0));
        assert_eq!(parse_tenant("1:2").unwrap(), one(1, 2));
        assert_eq!(parse_tenant("007:0").unwrap(), one(7, 0));
        assert_eq!(parse_tenant("multitenant").unwrap(), TenantSel::Multitenant);
        for bad in ["1:2:3", "-1", "+1", "4294967296", "1:", "a:1", " 1"] {
            let e = parse_tenant(bad).unwrap_err();
            assert!(
                e.starts_with("auth error: cannot parse authToken"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn paths_with_url_tenant() {
        let p = ok("/insert/1:2/prometheus/api/v1/write");
        assert_eq!(
            (p.tenant, p.suffix.as_str()),
            (one(1, 2), "prometheus/api/v1/write")
        );
        let p = ok("//insert/multitenant//prometheus//api/v1/import/prometheus");
        assert_eq!(p.tenant, TenantSel::Multitenant);
        assert_eq!(p.suffix, "prometheus/api/v1/import/prometheus");
        // A token with ':' after position 0 is a tenant even when it does not parse.
        assert!(matches!(
            parse_insert_path("/insert/1:x/prometheus", true, (None, None)),
            Err(PathError::Message(m)) if m.contains("auth error")
        ));
    }

    #[test]
    fn paths_with_header_tenant() {
        let p = parse_insert_path(
            "/insert/prometheus/api/v1/write",
            true,
            (Some("5"), Some("6")),
        )
        .unwrap();
        assert_eq!(
            (p.tenant, p.suffix.as_str()),
            (one(5, 6), "prometheus/api/v1/write")
        );
        let p = parse_insert_path("/insert/influx/write", true, (Some("5"), None)).unwrap();
        assert_eq!(p.tenant, one(5, 0));
        assert_eq!(ok("/insert/influx/write").tenant, one(0, 0));
        let p =
            parse_insert_path("/insert/influx/write", true, (Some("multitenant"), None)).unwrap();
        assert_eq!(p.tenant, TenantSel::Multitenant);
        assert!(parse_insert_path("/insert/influx/write", true, (Some("x"), None)).is_err());
        // Strict form without header tenancy.
        assert!(matches!(
            parse_insert_path("/insert/prometheus/api/v1/write", false, (None, None)),
            Err(PathError::Message(m)) if m.contains("auth error")
        ));
        assert!(parse_insert_path("/insert/0", false, (None, None)).is_err());
    }

    #[test]
    fn not_insert_paths() {
        assert_eq!(
            parse_insert_path("/api/v1/write", true, (None, None)),
            Err(PathError::NotMine)
        );
        assert_eq!(
            parse_insert_path("/foo", true, (None, None)),
            Err(PathError::NotMine)
        );
        assert!(matches!(
            parse_insert_path("/insert", true, (None, None)),
            Err(PathError::Message(_))
        ));
        assert!(
            matches!(parse_insert_path("/insert/", true, (None, None)), Err(PathError::Message(m)) if m.contains("{suffix}"))
        );
    }

    #[test]
    fn extra_labels_in_url_order() {
        let l = extra_labels("a=1&extra_label=job=x%3Dy&extra_label=env=&extra_label==n").unwrap();
        assert_eq!(
            l,
            vec![
                (b"job".to_vec(), b"x=y".to_vec()),
                (b"env".to_vec(), b"".to_vec()),
                (b"".to_vec(), b"n".to_vec())
            ]
        );
        assert!(extra_labels("extra_label=novalue").is_err());
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%41+b"), b"A b");
        assert_eq!(path_decode("/a%2Fb+c"), "/a/b+c");
    }
}
