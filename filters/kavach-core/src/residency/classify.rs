//! The class algebra: every source of evidence can only raise a request's class.
//!
//! A request starts at the default class. The declared class header, the route's floor and the
//! body detectors each propose a class; the request takes the most sensitive one. Nothing a
//! client sends can lower what the route or the body says.

use super::config::ResidencyConfig;
use crate::headers::{single, Single};
use crate::host::Headers;

/// A class, by its place in the sensitivity order (0 = least sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClassId(pub u8);

/// What put the request in its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    Header,
    Route,
    Body,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Header => "header",
            Source::Route => "route",
            Source::Body => "body",
        }
    }

    /// Which source is reported when two propose the same class: evidence from the request
    /// itself first, then the operator's route policy, then the client's word.
    fn weight(self) -> u8 {
        match self {
            Source::Default => 0,
            Source::Header => 1,
            Source::Route => 2,
            Source::Body => 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub class: ClassId,
    pub source: Source,
}

impl Classification {
    pub fn start(default: ClassId) -> Self {
        Classification {
            class: default,
            source: Source::Default,
        }
    }

    /// The more sensitive of the current class and `class`; never lower.
    #[must_use]
    pub fn raise(self, class: ClassId, source: Source) -> Self {
        let higher = class > self.class;
        let same_but_stronger = class == self.class && source.weight() > self.source.weight();
        if higher || same_but_stronger {
            Classification { class, source }
        } else {
            self
        }
    }
}

/// Why a declared class header is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidHeader {
    /// The header appeared more than once.
    Duplicated,
    /// Present but empty (or only white space).
    Empty,
    /// Not the name of a class (also: not UTF-8, a list, anything else).
    Unknown,
}

impl InvalidHeader {
    pub fn reason(self) -> &'static str {
        match self {
            InvalidHeader::Duplicated => "class_header_duplicated",
            InvalidHeader::Empty => "class_header_empty",
            InvalidHeader::Unknown => "class_header_unknown",
        }
    }
}

/// What the client declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Absent,
    Class(ClassId),
    Invalid(InvalidHeader),
}

/// Reads the declared class header: one value, surrounding space removed, case ignored.
pub fn declared(headers: &Headers, cfg: &ResidencyConfig) -> Declared {
    match single(headers, &cfg.class_header) {
        Single::Absent => Declared::Absent,
        Single::Duplicated => Declared::Invalid(InvalidHeader::Duplicated),
        Single::One(raw) => {
            let value = raw.trim_ascii().to_ascii_lowercase();
            if value.is_empty() {
                return Declared::Invalid(InvalidHeader::Empty);
            }
            match cfg.class_by_name(&value) {
                Some(id) => Declared::Class(id),
                None => Declared::Invalid(InvalidHeader::Unknown),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ResidencyConfig {
        ResidencyConfig::parse(
            br#"{"policy_version":"v1","classes":[
                {"name":"public","allowed_regions":["*"]},
                {"name":"pii","allowed_regions":["in-west","in-south"]},
                {"name":"payment","allowed_regions":["in-west"]}]}"#,
        )
        .unwrap()
    }

    fn headers(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    const PUBLIC: ClassId = ClassId(0);
    const PII: ClassId = ClassId(1);
    const PAYMENT: ClassId = ClassId(2);

    #[test]
    fn a_class_is_only_ever_raised() {
        let c = Classification::start(PUBLIC)
            .raise(PAYMENT, Source::Route)
            .raise(PUBLIC, Source::Header)
            .raise(PII, Source::Body);
        assert_eq!(
            c,
            Classification {
                class: PAYMENT,
                source: Source::Route
            }
        );
    }

    #[test]
    fn on_a_tie_the_stronger_evidence_is_reported() {
        let by_header = Classification::start(PUBLIC).raise(PII, Source::Header);
        assert_eq!(by_header.source, Source::Header);
        assert_eq!(by_header.raise(PII, Source::Route).source, Source::Route);
        assert_eq!(
            by_header
                .raise(PII, Source::Body)
                .raise(PII, Source::Route)
                .source,
            Source::Body
        );
        // The default never replaces anything.
        assert_eq!(
            Classification::start(PII)
                .raise(PII, Source::Default)
                .source,
            Source::Default
        );
    }

    #[test]
    fn the_declared_header_is_normalised() {
        let c = cfg();
        for v in [&b"payment"[..], b" Payment ", b"PAYMENT", b"\tpayment"] {
            assert_eq!(
                declared(&headers(&[("x-data-class", v)]), &c),
                Declared::Class(PAYMENT),
                "{v:?}"
            );
        }
        assert_eq!(
            declared(&headers(&[("X-Data-Class", b"pii")]), &c),
            Declared::Class(PII)
        );
        assert_eq!(declared(&headers(&[]), &c), Declared::Absent);
    }

    #[test]
    fn unknown_empty_and_duplicated_declarations_are_invalid() {
        let c = cfg();
        let invalid = |pairs: &[(&str, &[u8])]| match declared(&headers(pairs), &c) {
            Declared::Invalid(why) => why,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            invalid(&[("x-data-class", b"secret")]),
            InvalidHeader::Unknown
        );
        assert_eq!(
            invalid(&[("x-data-class", b"pii, payment")]),
            InvalidHeader::Unknown
        );
        assert_eq!(
            invalid(&[("x-data-class", b"pay\xffment")]),
            InvalidHeader::Unknown
        );
        assert_eq!(
            invalid(&[("x-data-class", b"unclassified")]),
            InvalidHeader::Unknown
        );
        assert_eq!(invalid(&[("x-data-class", b"  ")]), InvalidHeader::Empty);
        assert_eq!(invalid(&[("x-data-class", b"")]), InvalidHeader::Empty);
        assert_eq!(
            invalid(&[("x-data-class", b"public"), ("x-data-class", b"payment")]),
            InvalidHeader::Duplicated
        );
        assert_eq!(
            invalid(&[("x-data-class", b"pii"), ("X-DATA-CLASS", b"pii")]),
            InvalidHeader::Duplicated
        );
    }
}
