//! Reading request headers the safe way: every value of a name, not only the first.

use crate::host::Headers;

/// The spelling-independent form of a header name: lower case, with `_` and `.` read as `-`.
/// Some servers and frameworks treat `x_audit_id` and `x.audit.id` as `x-audit-id`, so a control
/// that strips or checks `x-audit-id` must treat all three alike.
pub fn alias_form(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '_' | '.' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// The alias form of one byte of a header name.
fn alias_byte(b: u8) -> u8 {
    match b {
        b'_' | b'.' => b'-',
        b => b.to_ascii_lowercase(),
    }
}

/// Whether `name`'s alias form starts with `prefix_alias` (already in alias form), without
/// building the alias form.
pub fn alias_starts_with(name: &str, prefix_alias: &str) -> bool {
    name.len() >= prefix_alias.len()
        && name
            .bytes()
            .zip(prefix_alias.bytes())
            .all(|(a, b)| alias_byte(a) == b)
}

/// Whether `name`'s alias form is `alias` (already in alias form).
pub fn alias_eq(name: &str, alias: &str) -> bool {
    name.len() == alias.len() && alias_starts_with(name, alias)
}

/// Every value of `name` (case-insensitive), in order.
pub fn all_values<'a>(headers: &'a Headers, name: &str) -> Vec<&'a [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
        .collect()
}

/// The value of a header that must appear at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Single<'a> {
    Absent,
    One(&'a [u8]),
    /// The header appeared more than once: ambiguous, never pick one.
    Duplicated,
}

pub fn single<'a>(headers: &'a Headers, name: &str) -> Single<'a> {
    let mut found = None;
    for (n, v) in headers {
        if n.eq_ignore_ascii_case(name) {
            if found.is_some() {
                return Single::Duplicated;
            }
            found = Some(v.as_slice());
        }
    }
    found.map_or(Single::Absent, Single::One)
}

/// Distinct header names whose alias form starts with `prefix`'s alias form.
pub fn names_with_alias_prefix(headers: &Headers, prefix: &str) -> Vec<String> {
    let wanted = alias_form(prefix);
    let mut names: Vec<String> = Vec::new();
    for (name, _) in headers {
        if alias_starts_with(name, &wanted) && !names.iter().any(|n| n == name) {
            names.push(name.clone());
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &[u8])]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect()
    }

    #[test]
    fn aliases_fold_to_one_form() {
        assert_eq!(alias_form("X_Audit.ID"), "x-audit-id");
        assert_eq!(alias_form("x-audit-id"), "x-audit-id");
    }

    #[test]
    fn alias_comparisons_match_the_alias_form() {
        for name in [
            "X_Audit.ID",
            "x-audit-id",
            "x-audit",
            "X-AUDIT-IDS",
            "é-audit",
            "x",
        ] {
            for alias in ["x-audit-id", "x-audit-", "x-audit", "", "x-auditid"] {
                let form = alias_form(name);
                assert_eq!(
                    alias_starts_with(name, alias),
                    form.starts_with(alias),
                    "{name} {alias}"
                );
                assert_eq!(alias_eq(name, alias), form == alias, "{name} {alias}");
            }
        }
    }

    #[test]
    fn all_duplicates_are_seen() {
        let hs = h(&[("a", b"1"), ("b", b"2"), ("A", b"3")]);
        assert_eq!(all_values(&hs, "a"), vec![b"1".as_slice(), b"3".as_slice()]);
        assert_eq!(single(&hs, "a"), Single::Duplicated);
        assert_eq!(single(&hs, "b"), Single::One(b"2"));
        assert_eq!(single(&hs, "c"), Single::Absent);
    }

    #[test]
    fn prefix_matching_covers_aliases_and_is_deduplicated() {
        let hs = h(&[
            ("x-audit-id", b"1"),
            ("x_audit_id", b"2"),
            ("x.audit.principal", b"3"),
            ("x-audit-id", b"4"),
            ("x-auditor", b"5"),
            ("x-other", b"6"),
        ]);
        assert_eq!(
            names_with_alias_prefix(&hs, "x-audit-"),
            vec!["x-audit-id", "x_audit_id", "x.audit.principal"]
        );
    }
}
