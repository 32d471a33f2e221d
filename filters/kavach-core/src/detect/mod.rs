//! Detectors for regulated data in text: payment card numbers, Aadhaar numbers, and (in
//! [`india`]) PAN, IFSC and UPI VPA identifiers.
//!
//! A number candidate is a run of digits, optionally grouped by single spaces or dashes
//! (`4111 1111 1111 1111`, `2345-6789-0123`), that is not glued to other letters or digits, directly
//! or through `-`, `_` or `.` (the digit tail of a UUID, an `ORD-…` id or a decimal). The
//! whole run must be the number: a long order id that merely contains a Luhn-valid window is not a
//! card. That keeps false positives on ordinary JSON low, which matters because a detection can
//! block a request. Two more rules come from measuring ordinary payloads: a run right after `+` is
//! a phone number in international form (`+91 98765 43210`), never a card or Aadhaar number; and
//! a grouped Aadhaar number is grouped 4-4-4, the way UIDAI prints it (a 2-5-5 grouped run is a
//! phone number), and a grouped card number starts with a group of four (a 3-7-7 grouped run is
//! an order number).
//!
//! [`find`] and [`redact`] cover cards and Aadhaar numbers (what the audit filter masks);
//! [`find_with`] runs any set of [`Detector`]s.

mod checksum;
pub mod india;

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

/// A digit run: its byte span, the digit values in it, and how it looked.
struct Run {
    span: Range<usize>,
    digits: Vec<u8>,
    /// Digits per separator-delimited group (`[4, 4, 4]` for `2345 6789 0123`).
    groups: Vec<usize>,
    /// The run follows a `+`: a phone number in international form.
    after_plus: bool,
}

impl Run {
    fn card(&self) -> bool {
        // Printed card numbers start with a group of four (4-4-4-4, Amex 4-6-5, Diners 4-6-4);
        // a 3-7-7 grouped run is an order number.
        let grouping_ok = self.groups.len() == 1 || self.groups.first() == Some(&4);
        !self.after_plus && grouping_ok && is_card(&self.digits)
    }

    fn aadhaar(&self) -> bool {
        let grouping_ok = self.groups.len() == 1 || self.groups == [4, 4, 4];
        !self.after_plus && grouping_ok && is_aadhaar(&self.digits)
    }
}

/// Whether the byte next to a digit run (`near`, then `far` beyond it) ties the run to other
/// letters or digits: directly (`A4111…`), or through a joiner (`ac5d-7733…`, `12.9999…`,
/// `id_4111…`): then the run is part of an identifier, a UUID or a decimal number.
fn glued(near: Option<&u8>, far: Option<&u8>) -> bool {
    match near {
        Some(b) if b.is_ascii_alphanumeric() => true,
        Some(b'-' | b'_' | b'.') => far.is_some_and(u8::is_ascii_alphanumeric),
        _ => false,
    }
}

/// Splits text into candidate runs: digits with single ` ` or `-` between them, not tied to
/// other letters or digits (see [`glued`]), of at least [`MIN_NUMBER_DIGITS`] digits (shorter
/// ones can be neither a card nor an Aadhaar number, and are measured without allocating).
fn runs(text: &[u8]) -> Vec<Run> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        let before = start.checked_sub(1).and_then(|b| text.get(b));
        let before2 = start.checked_sub(2).and_then(|b| text.get(b));
        let glued_before = glued(before, before2);
        let after_plus = before == Some(&b'+');
        let mut count = 0;
        while i < text.len() {
            let b = text[i];
            if b.is_ascii_digit() {
                count += 1;
                i += 1;
            } else if (b == b' ' || b == b'-') && text.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
            } else {
                break;
            }
        }
        // The loop stops right after a digit: the run is start..i.
        let end = i;
        let glued_after = glued(text.get(end), text.get(end + 1));
        if count >= MIN_NUMBER_DIGITS && !glued_before && !glued_after {
            let mut digits = Vec::with_capacity(count);
            let mut groups = vec![0usize];
            for &b in text.get(start..end).unwrap_or_default() {
                if b.is_ascii_digit() {
                    digits.push(b - b'0');
                    if let Some(g) = groups.last_mut() {
                        *g += 1;
                    }
                } else {
                    groups.push(0);
                }
            }
            out.push(Run {
                span: start..end,
                digits,
                groups,
                after_plus,
            });
        }
        // Skip the rest of a glued token so its tail is not read as a fresh run.
        while i < text.len() && text[i].is_ascii_alphanumeric() {
            i += 1;
        }
    }
    out
}

/// Fewest digits a card (13) or Aadhaar (12) number has.
const MIN_NUMBER_DIGITS: usize = 12;

/// Every card and Aadhaar number in `text`.
pub fn find(text: &[u8]) -> Vec<Finding> {
    // Most text has too few digits to hold a number at all.
    if text.iter().filter(|b| b.is_ascii_digit()).count() < MIN_NUMBER_DIGITS {
        return Vec::new();
    }
    runs(text)
        .into_iter()
        .filter_map(|run| {
            let kind = if run.card() {
                Kind::Card
            } else if run.aadhaar() {
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

/// A detector the residency filter (or any other) can switch on by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Detector {
    /// Payment card number ([`is_card`]).
    Card,
    /// Aadhaar number ([`is_aadhaar`]).
    Aadhaar,
    /// Permanent Account Number ([`india::is_pan`]).
    Pan,
    /// Indian Financial System Code ([`india::is_ifsc`]).
    Ifsc,
    /// UPI virtual payment address ([`india::find_upi_vpas`]).
    UpiVpa,
}

impl Detector {
    pub const ALL: [Detector; 5] = [
        Detector::Card,
        Detector::Aadhaar,
        Detector::Pan,
        Detector::Ifsc,
        Detector::UpiVpa,
    ];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            Detector::Card => "card",
            Detector::Aadhaar => "aadhaar",
            Detector::Pan => "pan",
            Detector::Ifsc => "ifsc",
            Detector::UpiVpa => "upi_vpa",
        }
    }

    pub fn from_name(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.name() == name)
    }
}

/// Every finding of the given detectors in `text`, ordered by position.
pub fn find_with(text: &[u8], detectors: &[Detector]) -> Vec<(Detector, Range<usize>)> {
    let on = |d: Detector| detectors.contains(&d);
    let mut out = Vec::new();
    if on(Detector::Card) || on(Detector::Aadhaar) {
        for run in runs(text) {
            if on(Detector::Card) && run.card() {
                out.push((Detector::Card, run.span));
            } else if on(Detector::Aadhaar) && run.aadhaar() {
                out.push((Detector::Aadhaar, run.span));
            }
        }
    }
    if on(Detector::Pan) || on(Detector::Ifsc) {
        for span in india::tokens(text) {
            let token = text.get(span.clone()).unwrap_or_default();
            if on(Detector::Pan) && india::is_pan(token) {
                out.push((Detector::Pan, span));
            } else if on(Detector::Ifsc) && india::is_ifsc(token) {
                out.push((Detector::Ifsc, span));
            }
        }
    }
    if on(Detector::UpiVpa) {
        out.extend(
            india::find_upi_vpas(text)
                .into_iter()
                .map(|s| (Detector::UpiVpa, s)),
        );
    }
    out.sort_by_key(|(_, span)| span.start);
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod false_positives;
