use super::*;
use DotSegments::{Reject, Resolve};
use PathError::*;

/// `(input, mode, expected)`; every case runs in the given mode only.
type Case = (&'static [u8], DotSegments, Result<&'static str, PathError>);

const CASES: &[Case] = &[
    // ---- plain paths ----
    (b"/", Reject, Ok("/")),
    (b"/v1/cards/42", Reject, Ok("/v1/cards/42")),
    (b"/v1/cards/", Reject, Ok("/v1/cards/")),
    (b"/v1/cards", Reject, Ok("/v1/cards")),
    (b"/a:b/c@d/e!$&'()*+,=", Reject, Ok("/a:b/c@d/e!$&'()*+,=")),
    (b"/a/.../b", Reject, Ok("/a/.../b")),
    (b"/a/..b/.c", Reject, Ok("/a/..b/.c")),
    // ---- query removal ----
    (b"/v1/cards?id=1", Reject, Ok("/v1/cards")),
    (b"/v1/cards/?a=/../b", Reject, Ok("/v1/cards/")),
    (b"/v1?%zz;\\", Reject, Ok("/v1")),
    (b"/?", Reject, Ok("/")),
    (b"?a=1", Reject, Err(Empty)),
    (b"", Reject, Err(Empty)),
    // ---- not origin form ----
    (b"*", Reject, Err(NotAbsolute)),
    (b"v1/cards", Reject, Err(NotAbsolute)),
    (b"http://bank.local/v1", Reject, Err(NotAbsolute)),
    // ---- fragments ----
    (b"/v1/cards#frag", Reject, Err(Fragment)),
    (b"/v1/cards?x=1#frag", Reject, Err(Fragment)),
    (b"#", Reject, Err(Fragment)),
    // ---- slashes ----
    (b"//a///b", Reject, Ok("/a/b")),
    (b"//", Reject, Ok("/")),
    (b"/a//", Reject, Ok("/a/")),
    (b"///v1//cards//42//", Reject, Ok("/v1/cards/42/")),
    // ---- percent-encoding ----
    (b"/%41", Reject, Ok("/A")),
    (b"/%7e/%7E", Reject, Ok("/~/~")),
    (b"/c%61rds/%2D%5f%2e1", Reject, Ok("/cards/-_.1")),
    (b"/a%20b", Reject, Ok("/a%20b")),
    (b"/a%3bb/%3B", Reject, Ok("/a%3Bb/%3B")),
    (b"/%c3%a9", Reject, Ok("/%C3%A9")),
    (b"/%3f%23%40", Reject, Ok("/%3F%23%40")),
    (b"/a%2Fb", Reject, Err(EncodedSlash)),
    (b"/a%2fb", Reject, Err(EncodedSlash)),
    (b"/a%5Cb", Reject, Err(EncodedSlash)),
    (b"/a%5cb", Reject, Err(EncodedSlash)),
    (b"/a%252Fb", Reject, Err(DoubleEncoding)),
    (b"/a%25", Reject, Err(DoubleEncoding)),
    (b"/a%2", Reject, Err(BadEncoding)),
    (b"/a%", Reject, Err(BadEncoding)),
    (b"/a%zz", Reject, Err(BadEncoding)),
    (b"/a%g1", Reject, Err(BadEncoding)),
    (b"/a%%41", Reject, Err(BadEncoding)),
    (b"/a%00", Reject, Err(Control)),
    (b"/a%0A", Reject, Err(Control)),
    (b"/a%1f", Reject, Err(Control)),
    (b"/a%7F", Reject, Err(Control)),
    // ---- raw bytes that are refused ----
    (b"/a\\b", Reject, Err(Backslash)),
    (b"\\a", Reject, Err(NotAbsolute)),
    (b"/cards;jsessionid=abc", Reject, Err(PathParameter)),
    (b"/cards/1;x/2", Reject, Err(PathParameter)),
    (b"/a\x00b", Reject, Err(Control)),
    (b"/a\r\nb", Reject, Err(Control)),
    (b"/a\tb", Reject, Err(Control)),
    (b"/a\x7fb", Reject, Err(Control)),
    (b"/caf\xc3\xa9", Reject, Err(NonAscii)),
    (b"/a\xff\xfe", Reject, Err(NonAscii)),
    (b"/a\xc3", Reject, Err(NonAscii)),
    // ---- dot segments, refused ----
    (b"/a/./b", Reject, Err(DotSegment)),
    (b"/a/../b", Reject, Err(DotSegment)),
    (b"/a/b/..", Reject, Err(DotSegment)),
    (b"/..", Reject, Err(DotSegment)),
    (b"/.", Reject, Err(DotSegment)),
    (b"/a/%2e%2e/b", Reject, Err(DotSegment)),
    (b"/a/%2E/b", Reject, Err(DotSegment)),
    (b"/a/.%2e", Reject, Err(DotSegment)),
    // ---- dot segments, resolved ----
    (b"/a/./b", Resolve, Ok("/a/b")),
    (b"/a/../b", Resolve, Ok("/b")),
    (b"/a/%2e%2e/b", Resolve, Ok("/b")),
    (b"/a/b/..", Resolve, Ok("/a/")),
    (b"/a/b/.", Resolve, Ok("/a/b/")),
    (b"/a/..", Resolve, Ok("/")),
    (b"/a/b/../../c", Resolve, Ok("/c")),
    (b"/a//..//b", Resolve, Ok("/b")),
    (b"/v1/cards/../../v1/tokens/x", Resolve, Ok("/v1/tokens/x")),
    (b"/..", Resolve, Err(Traversal)),
    (b"/a/../..", Resolve, Err(Traversal)),
    (b"/a/%2e%2e/%2e%2e/etc", Resolve, Err(Traversal)),
    (b"/a/./b?x=/..", Resolve, Ok("/a/b")),
    (b"/a/..%2fb", Resolve, Err(EncodedSlash)),
];

#[test]
fn canonicalisation_table() {
    let mut failures = Vec::new();
    for (input, mode, expected) in CASES {
        let got = canonicalize(input, *mode);
        let want = expected.map(str::to_string);
        if got != want {
            failures.push(format!(
                "{:?} ({mode:?}): got {got:?}, want {want:?}",
                String::from_utf8_lossy(input)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(CASES.len() >= 30);
}

#[test]
fn canonical_paths_are_fixed_points() {
    for (input, mode, expected) in CASES {
        if let Ok(c) = expected {
            assert_eq!(
                canonicalize(c.as_bytes(), *mode).as_deref(),
                Ok(*c),
                "canonical form of {:?} is not stable",
                String::from_utf8_lossy(input)
            );
        }
    }
}

#[test]
fn reasons_are_short_snake_case() {
    let all = [
        Empty,
        NotAbsolute,
        Fragment,
        NonAscii,
        Control,
        Backslash,
        PathParameter,
        EncodedSlash,
        DoubleEncoding,
        BadEncoding,
        DotSegment,
        Traversal,
    ];
    for e in all {
        let k = e.kind();
        assert!(
            k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{k}"
        );
        assert_eq!(e.to_string(), k);
    }
    assert_eq!(EncodedSlash.kind(), "encoded_slash");
    assert_eq!(DotSegment.kind(), "dot_segment");
}

#[test]
fn every_byte_is_handled_without_panicking() {
    for b in 0u8..=255 {
        for mode in [Reject, Resolve] {
            let _ = canonicalize(&[b], mode);
            let _ = canonicalize(&[b'/', b], mode);
            let _ = canonicalize(&[b'/', b'%', b], mode);
            let _ = canonicalize(&[b'/', b'%', b'4', b], mode);
            let encoded = format!("/%{b:02x}");
            let got = canonicalize(encoded.as_bytes(), mode);
            if let Ok(p) = got {
                assert!(p.is_ascii(), "{p}");
                assert_eq!(canonicalize(p.as_bytes(), mode), Ok(p.clone()));
            }
        }
    }
}

#[test]
fn the_mode_defaults_to_reject() {
    assert_eq!(DotSegments::default(), Reject);
}
