//! Label values: any bytes from traffic in, a short string of safe characters out.
//!
//! A label value ends up inside an Envoy stat name (`wasmcustom.<metric>.<label>.<value>...`),
//! where a `.` would shift every later name/value pair and break the tag regexes, and in the
//! `/stats/prometheus` text, where quotes, newlines and braces would corrupt the exposition. So a
//! value keeps only ASCII letters, digits and `_ - / :`; every other character becomes `_`.
//! Values the filter cannot or will not show become a fixed placeholder in parentheses, which
//! sanitised traffic can never produce (parentheses are not in the safe set).

/// The series that counts requests whose label combination did not fit the metric's budget.
pub const OTHER: &str = "(other)";
/// The source had no value (header absent, no route name, no verified peer, no response).
pub const NONE: &str = "(none)";
/// The value was present but empty.
pub const EMPTY: &str = "(empty)";
/// The value was not valid UTF-8.
pub const INVALID: &str = "(invalid)";
/// The value was longer than `max_label_bytes`.
pub const TOO_LONG: &str = "(too_long)";
/// A header used as a label appeared more than once: ambiguous, no value is picked.
pub const MULTIPLE: &str = "(multiple)";
/// An HTTP method outside the standard set (methods are client-chosen tokens).
pub const NONSTANDARD: &str = "(nonstandard)";

/// Whether `c` may appear in a label value as it is.
pub fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | ':')
}

/// The label value for raw bytes from traffic or from the host.
pub fn label_value(raw: &[u8], max_bytes: usize) -> String {
    if raw.is_empty() {
        return EMPTY.into();
    }
    // Checked on the raw bytes, before any work: sanitising never makes a value longer
    // (one character in, at most one byte out).
    if raw.len() > max_bytes {
        return TOO_LONG.into();
    }
    match std::str::from_utf8(raw) {
        Ok(text) => safe_text(text),
        Err(_) => INVALID.into(),
    }
}

/// Maps every character outside the safe set to `_`, then defuses Envoy's built-in tag
/// extractors (see [`defuse_builtin_tags`]).
pub fn safe_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if is_safe_char(c) { c } else { '_' })
        .collect();
    defuse_builtin_tags(&mut out);
    out
}

/// Envoy applies its default tag extractors to every stat name, and two of them are not
/// anchored at the start: `_rq(_(\d{3}))$` and `_rq_(\d)xx$`. A label value at the end of a
/// series name that ends like `x_rq_200` would lose `_rq_200` to an `envoy_response_code` tag
/// (verified on Envoy 1.40). Such a value gets its last `_` replaced by `-` (`x_rq-200`).
pub fn defuse_builtin_tags(value: &mut String) {
    let code = |d: u8, x: u8, y: u8| {
        d.is_ascii_digit()
            && ((x.is_ascii_digit() && y.is_ascii_digit()) || (x == b'x' && y == b'x'))
    };
    if let [.., b'_', b'r', b'q', b'_', d, x, y] = value.as_bytes() {
        if code(*d, *x, *y) {
            // The bytes are ASCII, so this is a character boundary.
            let at = value.len() - 4;
            value.replace_range(at..at + 1, "-");
        }
    }
}

/// The standard HTTP methods keep their name; anything else is [`NONSTANDARD`].
pub fn method_value(raw: &[u8]) -> String {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    match STANDARD.iter().find(|m| m.as_bytes() == raw) {
        Some(m) => (*m).to_string(),
        None if raw.is_empty() => NONE.into(),
        None => NONSTANDARD.into(),
    }
}

/// `2xx` for 200..=299 and so on; [`NONE`] when there was no response code (0, or a value
/// outside 100..=599).
pub fn status_class(code: Option<i64>) -> String {
    match code {
        Some(c) if (100..600).contains(&c) => format!("{}xx", c / 100),
        _ => NONE.into(),
    }
}

/// The three-digit status code, or [`NONE`].
pub fn status_code(code: Option<i64>) -> String {
    match code {
        Some(c) if (100..600).contains(&c) => c.to_string(),
        _ => NONE.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_characters_never_survive() {
        let cases: &[(&[u8], &str)] = &[
            (b"payments", "payments"),
            (b"a.b.c", "a_b_c"),
            (b"q\"uo{te}", "q_uo_te_"),
            (b"line\r\nbreak", "line__break"),
            (b"nul\x00del\x7f", "nul_del_"),
            (b"sp ace\ttab", "sp_ace_tab"),
            (b"back\\slash'", "back_slash_"),
            (b"<x>=y,z;w#", "_x__y_z_w_"),
            ("été".as_bytes(), "_t_"),
            (
                b"spiffe://bank.local/ns/pay/sa/api",
                "spiffe://bank_local/ns/pay/sa/api",
            ),
            (b"outbound|8080||pay.svc", "outbound_8080__pay_svc"),
            (b"(other)", "_other_"),
        ];
        for (raw, want) in cases {
            assert_eq!(label_value(raw, 64), *want, "{raw:?}");
            assert!(label_value(raw, 64).chars().all(is_safe_char));
        }
    }

    #[test]
    fn bad_values_become_placeholders() {
        assert_eq!(label_value(b"", 64), EMPTY);
        assert_eq!(label_value(b"ok\xff\xfe", 64), INVALID);
        assert_eq!(label_value(&[b'a'; 65], 64), TOO_LONG);
        assert_eq!(label_value(&[b'a'; 64], 64), "a".repeat(64));
        assert_eq!(label_value(&vec![0xff; 1 << 20], 64), TOO_LONG);
    }

    #[test]
    fn placeholders_cannot_be_forged_by_traffic() {
        for p in [OTHER, NONE, EMPTY, INVALID, TOO_LONG, MULTIPLE, NONSTANDARD] {
            assert_ne!(label_value(p.as_bytes(), 64), p);
            assert!(p.starts_with('(') && p.ends_with(')'));
        }
    }

    #[test]
    fn envoy_response_code_extractors_cannot_fire() {
        assert_eq!(label_value(b"x_rq_200", 64), "x_rq-200");
        assert_eq!(label_value(b"x.rq.5xx", 64), "x_rq-5xx");
        assert_eq!(label_value(b"_rq_404", 64), "_rq-404");
        for kept in ["x_rq_20", "x_rq_2000", "x_rq_abc", "x_rq_5xy", "rq_200"] {
            assert_eq!(label_value(kept.as_bytes(), 64), kept);
        }
    }

    #[test]
    fn methods_and_statuses_have_small_fixed_vocabularies() {
        assert_eq!(method_value(b"GET"), "GET");
        assert_eq!(method_value(b"PATCH"), "PATCH");
        assert_eq!(method_value(b"get"), NONSTANDARD);
        assert_eq!(method_value(b"M12345"), NONSTANDARD);
        assert_eq!(method_value(b"\xff"), NONSTANDARD);
        assert_eq!(method_value(b""), NONE);
        assert_eq!(status_class(Some(204)), "2xx");
        assert_eq!(status_class(Some(503)), "5xx");
        assert_eq!(status_class(Some(0)), NONE);
        assert_eq!(status_class(Some(600)), NONE);
        assert_eq!(status_class(None), NONE);
        assert_eq!(status_code(Some(404)), "404");
        assert_eq!(status_code(Some(-1)), NONE);
    }
}
