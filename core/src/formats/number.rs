//! The number grammars every text format shares (spec: formats/common.md §5).
//!
//! The float parser follows vminsert's arithmetic rather than a correctly rounded parser, so
//! that values with an exponent land on the same bits as the Go gateway produced: the decimal
//! mantissa is gathered as an integer, divided once by an exact power of ten, then scaled by
//! a table power of ten. Long inputs fall back to the standard (correctly rounded) parser, as
//! vminsert does.

/// The NaN that Go's `math.NaN()` returns. vminsert stores this exact payload for every NaN it
/// parses from text (`NaN`, JSON `null`, …), and storage keeps the bits.
pub const GO_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// Go's `math.NaN()`.
pub fn go_nan() -> f64 {
    f64::from_bits(GO_NAN_BITS)
}

/// Exact powers of ten 1e0..=1e16: every one of them is representable in an f64.
const POW10_EXACT: [f64; 17] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
];

const POW10_TAB: [f64; 32] = [
    1e00, 1e01, 1e02, 1e03, 1e04, 1e05, 1e06, 1e07, 1e08, 1e09, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22, 1e23, 1e24, 1e25, 1e26, 1e27, 1e28, 1e29, 1e30, 1e31,
];
const POW10_POS32: [f64; 10] = [
    1e00, 1e32, 1e64, 1e96, 1e128, 1e160, 1e192, 1e224, 1e256, 1e288,
];
const POW10_NEG32: [f64; 11] = [
    1e-00, 1e-32, 1e-64, 1e-96, 1e-128, 1e-160, 1e-192, 1e-224, 1e-256, 1e-288, 1e-320,
];

/// 10^n computed the way Go's `math.Pow10` does (two table lookups), so scaled results match
/// the Go gateway bit for bit.
pub fn pow10(n: i32) -> f64 {
    if (0..=308).contains(&n) {
        let n = n as usize;
        return POW10_POS32[n / 32] * POW10_TAB[n % 32];
    }
    if (-323..=0).contains(&n) {
        let n = (-n) as usize;
        return POW10_NEG32[n / 32] / POW10_TAB[n % 32];
    }
    if n > 0 {
        f64::INFINITY
    } else {
        0.0
    }
}

fn fallback(s: &[u8]) -> Option<f64> {
    // Only reached for inputs that already matched the grammar, so the standard parser accepts
    // them; a leading '+' never gets here.
    std::str::from_utf8(s).ok()?.parse::<f64>().ok()
}

fn parse_special(s: &[u8]) -> Option<f64> {
    if s.eq_ignore_ascii_case(b"inf") || s.eq_ignore_ascii_case(b"infinity") {
        Some(f64::INFINITY)
    } else if s.eq_ignore_ascii_case(b"nan") {
        Some(go_nan())
    } else {
        None
    }
}

/// The "strict float" grammar (common.md §5.1). `None` for anything it rejects.
pub fn parse_float(s: &[u8]) -> Option<f64> {
    let mut i = 0;
    let minus = s.first() == Some(&b'-');
    if minus {
        i = 1;
    }
    let body = &s[i..];
    match body.first() {
        None => return None,
        Some(b'0'..=b'9') | Some(b'.') => {}
        Some(b'+') => {
            let v = parse_special(&body[1..])?;
            return Some(if minus && !v.is_nan() { -v } else { v });
        }
        Some(_) => {
            let v = parse_special(body)?;
            return Some(if minus && !v.is_nan() { -v } else { v });
        }
    }
    let start = i;
    let mut d: u64 = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        d = d.wrapping_mul(10).wrapping_add(u64::from(s[i] - b'0'));
        i += 1;
        if i - start > 18 {
            return validate_then_fallback(s);
        }
    }
    let int_digits = i - start;
    let mut f = d as f64;
    if i < s.len() && s[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            d = d.wrapping_mul(10).wrapping_add(u64::from(s[i] - b'0'));
            i += 1;
            if i - start >= POW10_EXACT.len() {
                return validate_then_fallback(s);
            }
        }
        let frac_digits = i - frac_start;
        if int_digits == 0 && frac_digits == 0 {
            return None;
        }
        f = d as f64 / POW10_EXACT[frac_digits];
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        let mut exp_minus = false;
        if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
            exp_minus = s[i] == b'-';
            i += 1;
        }
        let exp_start = i;
        let mut exp: i32 = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            exp = exp * 10 + i32::from(s[i] - b'0');
            i += 1;
            if exp > 300 {
                return validate_then_fallback(s);
            }
        }
        if i == exp_start {
            return None;
        }
        if exp_minus {
            exp = -exp;
        }
        f *= pow10(exp);
    }
    if i != s.len() {
        return None;
    }
    Some(if minus { -f } else { f })
}

/// Check the whole input against the decimal grammar, then let the standard parser convert.
fn validate_then_fallback(s: &[u8]) -> Option<f64> {
    let mut i = usize::from(s.first() == Some(&b'-'));
    let mut digits = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        i += 1;
        digits += 1;
    }
    if i < s.len() && s[i] == b'.' {
        i += 1;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
            digits += 1;
        }
    }
    if digits == 0 {
        return None;
    }
    if i < s.len() && (s[i] == b'e' || s[i] == b'E') {
        i += 1;
        if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
            i += 1;
        }
        let e = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        if i == e {
            return None;
        }
    }
    if i != s.len() {
        return None;
    }
    fallback(s)
}

/// "Lenient float" (Influx field values): the strict grammar, but a failure yields 0.
pub fn parse_float_lenient(s: &[u8]) -> f64 {
    parse_float(s).unwrap_or(0.0)
}

/// "Strict int" (common.md §5.2): `[-]digits`, int64 range.
pub fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        if !c.is_ascii_digit() {
            return None;
        }
        let d = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if neg {
            v.checked_sub(d)?
        } else {
            v.checked_add(d)?
        };
    }
    Some(v)
}

/// Unsigned strict int: `digits`, uint64 range.
pub fn parse_uint(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

/// Go's `strconv.ParseInt(s, 10, 64)`: like [`parse_int`] but a leading `+` is allowed. Used
/// for query arguments such as `timestamp=`.
pub fn parse_go_int(s: &[u8]) -> Option<i64> {
    match s.first() {
        Some(b'+') if s.len() > 1 && s[1] != b'-' => parse_int(&s[1..]),
        _ => parse_int(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for (s, want) in [
            ("1", 1.0),
            ("1.", 1.0),
            (".5", 0.5),
            ("-.5", -0.5),
            ("00012", 12.0),
            ("1e-3", 0.001),
            ("1e309", f64::INFINITY),
            ("1e-400", 0.0),
            ("+Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("-Infinity", f64::NEG_INFINITY),
            ("123456789012345678901234", 123456789012345678901234.0),
            ("0.12345678901234567890", 0.12345678901234568),
        ] {
            assert_eq!(parse_float(s.as_bytes()), Some(want), "{s}");
        }
        for s in ["nan", "-nan", "+NaN", "NaN"] {
            assert_eq!(
                parse_float(s.as_bytes()).map(f64::to_bits),
                Some(GO_NAN_BITS),
                "{s}"
            );
        }
        assert_eq!(
            parse_float(b"-0").map(f64::to_bits),
            Some(0x8000_0000_0000_0000)
        );
        for s in [
            "", ".", "1e", "1e+", "0x10", "1_000", " 1", "1 ", "--1", "+1", "-", "e5", "1.5.5",
            "infx",
        ] {
            assert_eq!(parse_float(s.as_bytes()), None, "{s:?}");
        }
        assert_eq!(
            parse_float(b"1.5e-3").map(f64::to_bits),
            Some(0x3f58_9374_bc6a_7efa)
        );
        assert_eq!(
            parse_float(b"1e308").map(f64::to_bits),
            Some(0x7fe1_ccf3_85eb_c8a0)
        );
    }

    #[test]
    fn ints() {
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_int(b"9223372036854775808"), None);
        assert_eq!(parse_int(b"+1"), None);
        assert_eq!(parse_go_int(b"+1"), Some(1));
        assert_eq!(parse_int(b"1.0"), None);
        assert_eq!(parse_uint(b"18446744073709551615"), Some(u64::MAX));
    }
}
