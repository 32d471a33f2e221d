//! Detectors for regulated data in text: payment card numbers and Aadhaar numbers.
//!
//! A candidate is a run of digits, optionally grouped by single spaces or dashes
//! (`4111 1111 1111 1111`, `2345-6789-0123`), that is not glued to other letters or digits. The
//! whole run must be the number: a long order id that merely contains a Luhn-valid window is not a
//! card. That keeps false positives on ordinary JSON low, which matters because a detection can
//! block a request.

mod checksum;

pub use checksum::{luhn_valid, verhoeff_valid};

use std::borrow::Cow;
use std::ops::Range;

/// What a detected number is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Card,
    Aadhaar,
}

/// One detected number: where it is in the text and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    /// Byte range in the scanned text, separators included.
    pub span: Range<usize>,
}

/// Card numbers are 12 to 19 digits long; we accept the lengths networks issue.
fn card_length_ok(len: usize) -> bool {
    (13..=19).contains(&len)
}

/// Whether `digits` starts with an issuer prefix of a major network (Visa, Mastercard, RuPay,
/// American Express, Discover, JCB, Diners, UnionPay, Maestro).
fn issuer_prefix_ok(digits: &[u8]) -> bool {
    let prefix = |n: usize| -> u32 {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let p1 = prefix(1);
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    let p6 = prefix(6);
    p1 == 4                                   // Visa
        || (51..=55).contains(&p2)            // Mastercard
        || (2221..=2720).contains(&p4)        // Mastercard 2-series
        || p2 == 34 || p2 == 37               // American Express
        || p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) // Discover / RuPay 65
        || p2 == 60 || p2 == 81 || p2 == 82 || p3 == 508 || (652150..=653149).contains(&p6) // RuPay
        || (3528..=3589).contains(&p4)        // JCB
        || p2 == 36 || p2 == 38 || p2 == 39 || (300..=305).contains(&p3) // Diners
        || p2 == 62                           // UnionPay
        || p2 == 50 || (56..=69).contains(&p2) // Maestro
}

/// A payment card number: plausible length, issuer prefix and Luhn check digit.
pub fn is_card(digits: &[u8]) -> bool {
    card_length_ok(digits.len()) && issuer_prefix_ok(digits) && luhn_valid(digits)
}

/// An Aadhaar number: 12 digits, first digit 2-9, Verhoeff check digit.
pub fn is_aadhaar(digits: &[u8]) -> bool {
    digits.len() == 12
        && digits.first().is_some_and(|d| (2..=9).contains(d))
        && verhoeff_valid(digits)
}

/// A digit run: its byte span and the digit values in it.
struct Run {
    span: Range<usize>,
    digits: Vec<u8>,
}

/// Splits text into candidate runs: digits with single ` ` or `-` between them, bounded by
/// characters that are neither letters nor digits.
fn runs(text: &[u8]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let glued_before = start > 0 && text[start - 1].is_ascii_alphanumeric();
        let mut digits = Vec::new();
        let mut end = i;
        while i < text.len() {
            let b = text[i];
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                i += 1;
                end = i;
            } else if (b == b' ' || b == b'-') && text.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        let glued_after = text.get(end).is_some_and(u8::is_ascii_alphanumeric);
        if !glued_before && !glued_after {
            out.push(Run {
                span: start..end,
                digits,
            });
        }
        // Skip the rest of a glued token so its tail is not read as a fresh run.
        while i < text.len() && text[i].is_ascii_alphanumeric() {
            i += 1;
        }
    }
    out
}

/// Every card and Aadhaar number in `text`.
pub fn find(text: &[u8]) -> Vec<Finding> {
    runs(text)
        .into_iter()
        .filter_map(|run| {
            let kind = if is_card(&run.digits) {
                Kind::Card
            } else if is_aadhaar(&run.digits) {
                Kind::Aadhaar
            } else {
                return None;
            };
            Some(Finding {
                kind,
                span: run.span,
            })
        })
        .collect()
}

/// Masks every card number (first 6 and last 4 digits kept) and Aadhaar number (last 4 kept)
/// in `text`; separators stay where they were.
pub fn redact(text: &str) -> Cow<'_, str> {
    let findings = find(text.as_bytes());
    if findings.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for f in findings {
        out.push_str(&text[last..f.span.start]);
        let chunk = &text[f.span.clone()];
        let total = chunk.bytes().filter(u8::is_ascii_digit).count();
        let (keep_head, keep_tail, mask) = match f.kind {
            Kind::Card => (6, 4, '*'),
            Kind::Aadhaar => (0, 4, 'X'),
        };
        let mut seen = 0;
        for ch in chunk.chars() {
            if ch.is_ascii_digit() {
                let keep = seen < keep_head || seen >= total.saturating_sub(keep_tail);
                out.push(if keep { ch } else { mask });
                seen += 1;
            } else {
                out.push(ch);
            }
        }
        last = f.span.end;
    }
    out.push_str(&text[last..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests;
