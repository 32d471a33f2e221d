//! Indian financial identifiers that have no check digit we can verify: PAN, IFSC and UPI
//! virtual payment addresses. Each is matched by its published format only, so the rules below
//! are strict about shape and boundaries to keep ordinary payloads from matching.
//!
//! - **PAN** (Permanent Account Number): `AAAAA9999A`, ten characters: three letters, a letter
//!   naming the holder type (P person, C company, H Hindu undivided family, F firm, A association
//!   of persons, T trust, B body of individuals, L local authority, J artificial juridical person,
//!   G government), one more letter, four digits and a letter. All upper case or all lower case.
//! - **IFSC** (Indian Financial System Code): eleven characters: four letters (the bank), a `0`
//!   (reserved), six letters or digits (the branch). All upper case or all lower case.
//! - Both must be a whole token: not glued to other letters or digits (`xABCPE1234F` is not a
//!   PAN).
//! - **UPI VPA**: `handle@psp`, where the handle is 2 to 256 characters of letters, digits, `.`,
//!   `-`, `_` (starting and ending with a letter or digit), and the PSP part is 2 to 32 **letters
//!   only** (`okaxis`, `ybl`, `paytm`, `upi`). The rule that keeps e-mail addresses out: an e-mail
//!   domain has a dot (`a@b.com`, `x@bank.co.in`), so the part after `@` must end at a delimiter
//!   (end of text, white space, a quote, `&`, `,`, `;`, a closing bracket or `<`/`>`), never at a
//!   `.`. The address must also start at such a delimiter (or `=` or an opening bracket), so URL
//!   user info (`https://user@host/...`) is not one. Known miss: URL-encoded addresses
//!   (`merchant%40okaxis`). Known false positive: a dot-less e-mail address (`root@localhost`).

use std::ops::Range;

/// PAN holder-type letters (the fourth character).
const PAN_HOLDER_TYPES: &[u8] = b"PCHFATBLJG";

/// Longest handle (the part before `@`) read as part of a VPA.
const MAX_VPA_HANDLE: usize = 256;
/// Shortest and longest PSP part (after `@`).
const VPA_PSP_LEN: std::ops::RangeInclusive<usize> = 2..=32;

/// Letters all in one case: returns the upper-case form of `token`, or None when it mixes cases.
fn uniform_upper(token: &[u8]) -> Option<Vec<u8>> {
    let upper = token.iter().any(u8::is_ascii_uppercase);
    let lower = token.iter().any(u8::is_ascii_lowercase);
    if upper && lower {
        return None;
    }
    Some(token.to_ascii_uppercase())
}

/// A Permanent Account Number (`ABCPE1234F`).
pub fn is_pan(token: &[u8]) -> bool {
    let Some(t) = uniform_upper(token) else {
        return false;
    };
    let [a, b, c, holder, name, d1, d2, d3, d4, check] = t.as_slice() else {
        return false;
    };
    [a, b, c, name, check]
        .iter()
        .all(|x| x.is_ascii_uppercase())
        && PAN_HOLDER_TYPES.contains(holder)
        && [d1, d2, d3, d4].iter().all(|x| x.is_ascii_digit())
}

/// An Indian Financial System Code (`HDFC0001234`).
pub fn is_ifsc(token: &[u8]) -> bool {
    let Some(t) = uniform_upper(token) else {
        return false;
    };
    t.len() == 11
        && t.iter().take(4).all(u8::is_ascii_uppercase)
        && t.get(4) == Some(&b'0')
        && t.iter()
            .skip(5)
            .all(|x| x.is_ascii_uppercase() || x.is_ascii_digit())
}

/// Spans of the letter-and-digit tokens of `text` that are 10 or 11 bytes long (the lengths of a
/// PAN and an IFSC), bounded by anything that is not an ASCII letter or digit.
pub fn tokens(text: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < text.len() && text[i].is_ascii_alphanumeric() {
            i += 1;
        }
        if (10..=11).contains(&(i - start)) {
            out.push(start..i);
        }
    }
    out
}

fn vpa_handle_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'
}

/// What may precede a VPA.
fn vpa_opening(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'=,;([{<>".contains(&b)
}

/// What may follow a VPA (never `.`: that is an e-mail domain).
fn vpa_closing(b: u8) -> bool {
    b.is_ascii_whitespace() || b"\"'&,;)]}<>".contains(&b)
}

/// Every UPI virtual payment address in `text` (see the module documentation for the rule).
pub fn find_upi_vpas(text: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    for (at, _) in text.iter().enumerate().filter(|(_, b)| **b == b'@') {
        // The handle: back from '@' over handle characters, at most MAX_VPA_HANDLE + 1 of them.
        let mut start = at;
        while start > 0
            && at - start <= MAX_VPA_HANDLE
            && text.get(start - 1).copied().is_some_and(vpa_handle_char)
        {
            start -= 1;
        }
        let handle = text.get(start..at).unwrap_or_default();
        let opened = start == 0 || text.get(start - 1).copied().is_some_and(vpa_opening);
        let handle_ok = (2..=MAX_VPA_HANDLE).contains(&handle.len())
            && handle.first().is_some_and(u8::is_ascii_alphanumeric)
            && handle.last().is_some_and(u8::is_ascii_alphanumeric);
        if !opened || !handle_ok {
            continue;
        }
        // The PSP part: letters only, up to a closing delimiter or the end.
        let psp_start = at + 1;
        let mut end = psp_start;
        while end < text.len() && text[end].is_ascii_alphabetic() {
            end += 1;
        }
        let closed = end == text.len() || text.get(end).copied().is_some_and(vpa_closing);
        if closed && VPA_PSP_LEN.contains(&(end - psp_start)) {
            out.push(start..end);
        }
    }
    out
}
