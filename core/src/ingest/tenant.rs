//! Tenants from URLs and headers (common.md §2), with vminsert's error texts.

use std::fmt;

use crate::model::Tenant;

/// How a request picks the tenant of its series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantMode {
    /// Every series goes to this tenant (`/insert/{accountID[:projectID]}/…` or the headers).
    Fixed(Tenant),
    /// Per series, from the `vm_account_id`/`vm_project_id` labels (`/insert/multitenant/…` and
    /// the TCP/UDP listeners).
    Multitenant,
}

/// A tenant string that does not parse. Displayed as vminsert's 400 body (without the newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantError {
    token: String,
    detail: String,
}

impl fmt::Display for TenantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "auth error: cannot parse authToken {:?}: {}",
            self.token, self.detail
        )
    }
}

impl std::error::Error for TenantError {}

/// Go's `strconv.ParseUint(s, 10, 32)`: digits only, within u32.
fn parse_u32(s: &str) -> Result<u32, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("strconv.ParseUint: parsing {s:?}: invalid syntax"));
    }
    s.parse::<u32>()
        .map_err(|_| format!("strconv.ParseUint: parsing {s:?}: value out of range"))
}

/// Parse `accountID[:projectID]` (projectID defaults to 0).
pub fn parse_tenant(token: &str) -> Result<Tenant, TenantError> {
    let fail = |detail: String| TenantError {
        token: token.to_string(),
        detail,
    };
    let parts: Vec<&str> = token.split(':').collect();
    if parts.len() > 2 {
        return Err(fail(format!(
            "unexpected number of items in authToken {token:?}; got {}; want 1 or 2",
            parts.len()
        )));
    }
    let account_id = parse_u32(parts[0])
        .map_err(|e| fail(format!("cannot parse accountID from {:?}: {e}", parts[0])))?;
    let project_id = match parts.get(1) {
        Some(p) => {
            parse_u32(p).map_err(|e| fail(format!("cannot parse projectID from {p:?}: {e}")))?
        }
        None => 0,
    };
    Ok(Tenant::new(account_id, project_id))
}

/// Parse a tenant path segment or token: `multitenant` or `accountID[:projectID]`.
pub fn parse_tenant_mode(token: &str) -> Result<TenantMode, TenantError> {
    if token == "multitenant" {
        return Ok(TenantMode::Multitenant);
    }
    parse_tenant(token).map(TenantMode::Fixed)
}

/// Whether the path segment after `/insert/` is a tenant (so the route is
/// `/insert/{tenant}/{suffix}`) rather than the start of the suffix: `multitenant`, a `:` after
/// the first byte, or a decimal uint32. Only used when `-enableMultitenancyViaHeaders` is on;
/// with it off every segment is taken as a tenant.
pub fn looks_like_tenant(segment: &str) -> bool {
    segment == "multitenant"
        || segment.find(':').is_some_and(|i| i > 0)
        || parse_u32(segment).is_ok()
}

/// The tenant of an `/insert/{suffix}` request from its `AccountID` and `ProjectID` headers:
/// both missing or empty → `0:0`; `AccountID: multitenant` → multitenant; otherwise
/// `AccountID:ProjectID` with an empty one read as `0`. Bad values give vminsert's error, which
/// quotes the combined token (`"abc:0"`).
pub fn tenant_from_headers(
    account_id: Option<&str>,
    project_id: Option<&str>,
) -> Result<TenantMode, TenantError> {
    let account = account_id.unwrap_or("");
    let project = project_id.unwrap_or("");
    if account.is_empty() && project.is_empty() {
        return Ok(TenantMode::Fixed(Tenant::default()));
    }
    if account == "multitenant" {
        return Ok(TenantMode::Multitenant);
    }
    let account = if account.is_empty() { "0" } else { account };
    let project = if project.is_empty() { "0" } else { project };
    parse_tenant(&format!("{account}:{project}")).map(TenantMode::Fixed)
}

/// The tenant of one series in multitenant mode, taking it from the labels and removing
/// `vm_account_id`/`vm_project_id` (the legacy `VictoriaMetrics_AccountID`/`_ProjectID` are
/// read too but kept). A later label overrides an earlier one; an unparsable value reads as 0.
pub fn take_tenant_from_labels(labels: &mut Vec<crate::model::Label<'_>>) -> Tenant {
    let mut t = Tenant::default();
    let value = |v: &[u8]| {
        std::str::from_utf8(v)
            .ok()
            .and_then(|s| parse_u32(s).ok())
            .unwrap_or(0)
    };
    labels.retain(|l| match l.name {
        b"vm_account_id" => {
            t.account_id = value(l.value);
            false
        }
        b"vm_project_id" => {
            t.project_id = value(l.value);
            false
        }
        b"VictoriaMetrics_AccountID" => {
            t.account_id = value(l.value);
            true
        }
        b"VictoriaMetrics_ProjectID" => {
            t.project_id = value(l.value);
            true
        }
        _ => true,
    });
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Label;

    #[test]
    fn tenant_tokens() {
        assert_eq!(parse_tenant("42"), Ok(Tenant::new(42, 0)));
        assert_eq!(parse_tenant("42:7"), Ok(Tenant::new(42, 7)));
        assert_eq!(parse_tenant("4294967295:1"), Ok(Tenant::new(u32::MAX, 1)));
        assert_eq!(
            parse_tenant("1:2:3").unwrap_err().to_string(),
            "auth error: cannot parse authToken \"1:2:3\": unexpected number of items in authToken \"1:2:3\"; got 3; want 1 or 2"
        );
        assert_eq!(
            parse_tenant("prometheus").unwrap_err().to_string(),
            "auth error: cannot parse authToken \"prometheus\": cannot parse accountID from \"prometheus\": strconv.ParseUint: parsing \"prometheus\": invalid syntax"
        );
        assert!(parse_tenant("4294967296")
            .unwrap_err()
            .to_string()
            .ends_with("value out of range"));
        assert!(parse_tenant("1:").is_err());
        assert!(parse_tenant("+1").is_err());
        assert_eq!(
            parse_tenant_mode("multitenant"),
            Ok(TenantMode::Multitenant)
        );
    }

    #[test]
    fn tenant_segments() {
        assert!(looks_like_tenant("0"));
        assert!(looks_like_tenant("1:2:3"));
        assert!(looks_like_tenant("multitenant"));
        assert!(!looks_like_tenant("4294967296"));
        assert!(!looks_like_tenant(":1"));
        assert!(!looks_like_tenant("prometheus"));
    }

    #[test]
    fn tenant_headers() {
        let f = |a, p| tenant_from_headers(a, p);
        assert_eq!(f(None, None), Ok(TenantMode::Fixed(Tenant::new(0, 0))));
        assert_eq!(
            f(Some(""), Some("")),
            Ok(TenantMode::Fixed(Tenant::new(0, 0)))
        );
        assert_eq!(
            f(Some("12"), None),
            Ok(TenantMode::Fixed(Tenant::new(12, 0)))
        );
        assert_eq!(
            f(None, Some("34")),
            Ok(TenantMode::Fixed(Tenant::new(0, 34)))
        );
        assert_eq!(
            f(Some("multitenant"), Some("3")),
            Ok(TenantMode::Multitenant)
        );
        assert_eq!(
            f(Some("abc"), None).unwrap_err().to_string(),
            "auth error: cannot parse authToken \"abc:0\": cannot parse accountID from \"abc\": strconv.ParseUint: parsing \"abc\": invalid syntax"
        );
        assert_eq!(
            f(Some("1"), Some("-1")).unwrap_err().to_string(),
            "auth error: cannot parse authToken \"1:-1\": cannot parse projectID from \"-1\": strconv.ParseUint: parsing \"-1\": invalid syntax"
        );
    }

    #[test]
    fn tenant_from_labels() {
        let mut l = vec![
            Label::metric_name(b"mt_metric"),
            Label::new(b"vm_account_id", b"5"),
            Label::new(b"vm_project_id", b"6"),
            Label::new(b"VictoriaMetrics_AccountID", b"9"),
            Label::new(b"x", b"y"),
        ];
        assert_eq!(take_tenant_from_labels(&mut l), Tenant::new(9, 6));
        assert_eq!(
            l,
            vec![
                Label::metric_name(b"mt_metric"),
                Label::new(b"VictoriaMetrics_AccountID", b"9"),
                Label::new(b"x", b"y"),
            ]
        );
        let mut l = vec![Label::new(b"vm_account_id", b"x1"), Label::new(b"a", b"b")];
        assert_eq!(take_tenant_from_labels(&mut l), Tenant::new(0, 0));
        assert_eq!(l.len(), 1);
    }
}
