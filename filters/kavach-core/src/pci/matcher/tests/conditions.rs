//! Header conditions and validity windows.

use super::*;

fn condition(test: HeaderTest) -> HeaderCondition {
    HeaderCondition {
        name: "x-h".into(),
        test,
    }
}

#[test]
fn header_condition_table() {
    let re = |s: &str| HeaderTest::Regex(header_regex(&at(), s).unwrap());
    let cases: Vec<(HeaderTest, Single<'_>, bool)> = vec![
        (HeaderTest::Present(true), Single::One(b"x"), true),
        (HeaderTest::Present(true), Single::One(b""), true),
        (HeaderTest::Present(true), Single::Absent, false),
        (HeaderTest::Present(true), Single::Duplicated, false),
        (HeaderTest::Present(false), Single::Absent, true),
        (HeaderTest::Present(false), Single::One(b"x"), false),
        (HeaderTest::Present(false), Single::Duplicated, false),
        (
            HeaderTest::Exact(b"prod".to_vec()),
            Single::One(b"prod"),
            true,
        ),
        (
            HeaderTest::Exact(b"prod".to_vec()),
            Single::One(b"Prod"),
            false,
        ),
        (
            HeaderTest::Exact(b"prod".to_vec()),
            Single::One(b"prod "),
            false,
        ),
        (HeaderTest::Exact(b"prod".to_vec()), Single::Absent, false),
        (
            HeaderTest::Exact(b"prod".to_vec()),
            Single::Duplicated,
            false,
        ),
        (HeaderTest::Exact(b"".to_vec()), Single::One(b""), true),
        (
            HeaderTest::Prefix(b"abc".to_vec()),
            Single::One(b"abcdef"),
            true,
        ),
        (
            HeaderTest::Prefix(b"abc".to_vec()),
            Single::One(b"abc"),
            true,
        ),
        (
            HeaderTest::Prefix(b"abc".to_vec()),
            Single::One(b"ab"),
            false,
        ),
        (
            HeaderTest::Prefix(b"abc".to_vec()),
            Single::One(b"xabc"),
            false,
        ),
        (
            HeaderTest::Prefix(b"abc".to_vec()),
            Single::One(b"abc\xff"),
            true,
        ),
        (re("^[0-9]+$"), Single::One(b"12345"), true),
        (re("^[0-9]+$"), Single::One(b"123a"), false),
        (re("^[0-9]+$"), Single::One(b""), false),
        (re("^[0-9]+$"), Single::One(b"12\xff"), false),
        (re("."), Single::One(b"\xff\xfe"), false),
        (re("[0-9]"), Single::One(b"a1b"), true),
        (re("^[0-9]+$"), Single::Absent, false),
        (re("^[0-9]+$"), Single::Duplicated, false),
    ];
    for (i, (test, value, want)) in cases.into_iter().enumerate() {
        assert_eq!(condition(test).matches(value), want, "case {i}: {value:?}");
    }
}

#[test]
fn header_values_and_regexes_are_validated() {
    assert_eq!(
        header_regex(&at(), "(").unwrap_err().to_string(),
        "p: invalid regex: regex parse error: ( ^ error: unclosed group"
    );
    assert_eq!(
        header_regex(&at(), "").unwrap_err().to_string(),
        "p: must not be empty (use \"present\": true)"
    );
    let huge = header_regex(&at(), "[a-z]{1000}[0-9]{1000}").unwrap_err();
    assert!(huge.to_string().starts_with("p: invalid regex: "), "{huge}");
    assert!(header_regex(&at(), &"a".repeat(5000)).is_err());
    assert_eq!(header_value(&at(), "", true).unwrap(), b"");
    assert_eq!(
        header_value(&at(), "", false).unwrap_err().to_string(),
        "p: must not be empty (use \"present\": true)"
    );
    assert_eq!(
        header_value(&at(), "a\nb", true).unwrap_err().to_string(),
        "p: contains a control character (no header value can match it)"
    );
    assert!(header_value(&at(), &"a".repeat(9000), true).is_err());
}

#[test]
fn validity_windows_are_half_open() {
    let nb = instant(&at(), "2026-11-01T00:00:00+05:30").unwrap();
    let na = instant(&at(), "2026-11-02T00:00:00+05:30").unwrap();
    assert_eq!(nb, 1_793_471_400 * 1_000_000_000);
    assert_eq!(na - nb, 86_400 * 1_000_000_000);
    let w = Window {
        not_before: Some(nb),
        not_after: Some(na),
    };
    let cases = [
        (nb - 1, false),
        (nb, true),
        (nb + 3_600_000_000_000, true),
        (na - 1, true),
        (na, false),
        (na + 1, false),
        (i64::MIN, false),
        (i64::MAX, false),
    ];
    for (now, want) in cases {
        assert_eq!(w.contains(now), want, "{now}");
    }
    assert!(Window::default().contains(0));
    let open_end = Window {
        not_before: Some(nb),
        not_after: None,
    };
    assert!(open_end.contains(i64::MAX));
    assert!(!open_end.contains(nb - 1));
}

#[test]
fn timestamps_must_be_rfc3339() {
    assert_eq!(
        instant(&at(), "2026-11-01T00:00:00Z").unwrap(),
        instant(&at(), "2026-11-01T05:30:00+05:30").unwrap()
    );
    for bad in ["2026-11-01", "2026-11-01 00:00:00", "yesterday", ""] {
        let e = instant(&at(), bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("p: {bad:?} is not an RFC 3339 timestamp")),
            "{e}"
        );
    }
    assert_eq!(
        instant(&at(), "9999-01-01T00:00:00Z")
            .unwrap_err()
            .to_string(),
        "p: \"9999-01-01T00:00:00Z\" is outside the years 1678 to 2261"
    );
}
