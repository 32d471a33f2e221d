//! Turning untrusted bytes into safe, bounded text.

/// Converts `bytes` to text that is safe in a header value, a log line or a JSON record:
/// invalid UTF-8 becomes U+FFFD, control characters (CR, LF, NUL, DEL, ...) become `\xNN`, and
/// the result is cut to at most `max_bytes` bytes on a character boundary. Returns the text and
/// whether it was cut.
pub fn sanitize(bytes: &[u8], max_bytes: usize) -> (String, bool) {
    // Most values are printable ASCII: nothing to escape or replace.
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        let cut = bytes.len().min(max_bytes);
        let text = bytes.get(..cut).unwrap_or_default();
        return (
            String::from_utf8_lossy(text).into_owned(),
            cut < bytes.len(),
        );
    }
    let lossy = String::from_utf8_lossy(bytes);
    let mut out = String::with_capacity(lossy.len().min(max_bytes));
    for ch in lossy.chars() {
        let piece_len = if ch.is_control() { 4 } else { ch.len_utf8() };
        if out.len() + piece_len > max_bytes {
            return (out, true);
        }
        if ch.is_control() {
            // Every control character is below U+00A0, so two hex digits suffice.
            out.push_str(&format!("\\x{:02x}", u32::from(ch)));
        } else {
            out.push(ch);
        }
    }
    (out, false)
}

/// Lower-case hexadecimal of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// The value of one hexadecimal digit.
pub fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved characters: percent-encoding them changes nothing.
pub fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// A UUID in its 36-character text form (`8-4-4-4-12` hexadecimal digits, any case).
pub fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            sanitize(b"a\r\nb\x00\x7f", 100),
            ("a\\x0d\\x0ab\\x00\\x7f".into(), false)
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        assert_eq!(sanitize(b"ok\xff\xfe", 100).0, "ok\u{fffd}\u{fffd}");
    }

    #[test]
    fn output_is_cut_on_a_character_boundary() {
        let (s, cut) = sanitize("ééé".as_bytes(), 5);
        assert_eq!(s, "éé");
        assert!(cut);
        let (s, cut) = sanitize(b"\n\n", 5);
        assert_eq!(s, "\\x0a");
        assert!(cut);
        assert_eq!(sanitize(b"", 0), (String::new(), false));
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
