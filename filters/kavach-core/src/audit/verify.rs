//! Verification of a stream of audit records (one per line, several chains interleaved).
//!
//! Reports the first line where the stream stops being what the filter wrote: an edited record
//! (its hash does not match), a dropped one (a gap in a chain's sequence), reordered ones (a later
//! record of the chain comes before an earlier one) or an inserted one (a record that is not
//! linked to its predecessor or repeats a sequence number). Removing the *last* records of a chain
//! leaves no gap; compare each chain's last sequence number, printed in the summary, with the
//! proxy's `kavach_audit_records_total` counter for that.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use super::record::{digest, unseal, Algorithm, GENESIS};

/// What is wrong at a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not a sealed record at all.
    Malformed(String),
    /// The record's content does not match its hash.
    Edited,
    /// Records of the chain are missing before this one.
    Dropped {
        chain: String,
        missing_from: u64,
        missing_to: u64,
    },
    /// This record comes before records of its chain that precede it.
    Reordered {
        chain: String,
        seq: u64,
        expected: u64,
    },
    /// A record that does not belong where it stands (repeated sequence number, or not linked to
    /// the previous record of its chain).
    Inserted { chain: String, seq: u64 },
    /// A key was given but the record is chained without one (or the other way round).
    WrongAlgorithm { chain: String, alg: &'static str },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Malformed(why) => write!(f, "malformed record: {why}"),
            Problem::Edited => write!(f, "edited record: content does not match its hash"),
            Problem::Dropped { chain, missing_from, missing_to } => write!(
                f,
                "dropped records: chain {chain} is missing seq {missing_from}..={missing_to}"
            ),
            Problem::Reordered { chain, seq, expected } => write!(
                f,
                "reordered records: chain {chain} has seq {seq} where seq {expected} was expected (it appears later)"
            ),
            Problem::Inserted { chain, seq } => write!(
                f,
                "inserted record: chain {chain} seq {seq} is not linked to the record before it"
            ),
            Problem::WrongAlgorithm { chain, alg } => {
                write!(f, "chain {chain} is sealed with {alg}, which does not match the key given")
            }
        }
    }
}

/// A problem and the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub line: usize,
    pub problem: Problem,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Records that verified before the first problem.
    pub verified: u64,
    /// Per chain: the last sequence number verified.
    pub chains: BTreeMap<String, u64>,
    /// Lines that carry no record (`-`: a request the audit filter did not see).
    pub unrecorded: u64,
    pub first_problem: Option<Finding>,
}

struct Parsed {
    chain: String,
    seq: u64,
    prev: String,
    hash: String,
}

#[derive(serde::Deserialize)]
struct ChainFields {
    alg: Algorithm,
    chain: String,
    seq: u64,
    prev: String,
}

fn parse(line: &str, key: Option<&[u8]>) -> Result<Parsed, Problem> {
    let sealed =
        unseal(line).ok_or_else(|| Problem::Malformed("no hash member at the end".into()))?;
    let fields: ChainFields = serde_json::from_str(&sealed.body)
        .map_err(|e| Problem::Malformed(format!("not a record ({e})")))?;
    match (fields.alg, key) {
        (Algorithm::HmacSha256, None) => {
            return Err(Problem::WrongAlgorithm {
                chain: fields.chain,
                alg: "hmac-sha256 (no key given)",
            })
        }
        (Algorithm::Sha256, Some(_)) => {
            return Err(Problem::WrongAlgorithm {
                chain: fields.chain,
                alg: "plain sha256",
            })
        }
        _ => {}
    }
    if digest(key, sealed.body.as_bytes()) != sealed.hash {
        return Err(Problem::Edited);
    }
    Ok(Parsed {
        chain: fields.chain,
        seq: fields.seq,
        prev: fields.prev,
        hash: sealed.hash,
    })
}

/// Verifies every record in `text`. `key` is the chain key for HMAC-sealed records.
pub fn verify(text: &str, key: Option<&[u8]>) -> Report {
    let mut report = Report::default();
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    let parsed: Vec<(usize, Option<Result<Parsed, Problem>>)> = lines
        .iter()
        .map(|(n, l)| (*n, if *l == "-" { None } else { Some(parse(l, key)) }))
        .collect();
    // Which sequence numbers each chain has anywhere in the stream (to tell reordering from loss).
    let mut present: HashSet<(&str, u64)> = HashSet::new();
    for (_, p) in &parsed {
        if let Some(Ok(p)) = p {
            present.insert((p.chain.as_str(), p.seq));
        }
    }
    // Per chain: (next expected seq, hash of the last record).
    let mut state: BTreeMap<&str, (u64, &str)> = BTreeMap::new();
    for (line, p) in &parsed {
        let fail = |problem| Finding {
            line: *line,
            problem,
        };
        let p = match p {
            None => {
                report.unrecorded += 1;
                continue;
            }
            Some(Err(problem)) => {
                report.first_problem = Some(fail(problem.clone()));
                return report;
            }
            Some(Ok(p)) => p,
        };
        let (expected, last_hash) = state.get(p.chain.as_str()).copied().unwrap_or((0, GENESIS));
        let problem = if p.seq == expected {
            (p.prev != last_hash).then(|| Problem::Inserted {
                chain: p.chain.clone(),
                seq: p.seq,
            })
        } else if p.seq > expected {
            if present.contains(&(p.chain.as_str(), expected)) {
                Some(Problem::Reordered {
                    chain: p.chain.clone(),
                    seq: p.seq,
                    expected,
                })
            } else {
                Some(Problem::Dropped {
                    chain: p.chain.clone(),
                    missing_from: expected,
                    missing_to: p.seq - 1,
                })
            }
        } else {
            Some(Problem::Inserted {
                chain: p.chain.clone(),
                seq: p.seq,
            })
        };
        if let Some(problem) = problem {
            report.first_problem = Some(fail(problem));
            return report;
        }
        state.insert(p.chain.as_str(), (p.seq + 1, p.hash.as_str()));
        report.chains.insert(p.chain.clone(), p.seq);
        report.verified += 1;
    }
    report
}

#[cfg(test)]
mod tests {
    use super::super::record::tests::sample;
    use super::super::record::Chain;
    use super::*;

    /// Two interleaved chains of `n` records each.
    fn stream(n: usize, key: Option<&[u8]>) -> Vec<String> {
        let mut a = Chain::new("aaaa".into(), key.map(<[u8]>::to_vec));
        let mut b = Chain::new("bbbb".into(), key.map(<[u8]>::to_vec));
        let mut out = Vec::new();
        for i in 0..n {
            let mut r = sample();
            r.audit_id = format!("id-{i}");
            out.push(a.seal(&mut r.clone(), 1 << 16, |_| false).unwrap());
            out.push(b.seal(&mut r, 1 << 16, |_| false).unwrap());
        }
        out
    }

    fn check(lines: &[String]) -> Report {
        verify(&lines.join("\n"), None)
    }

    #[test]
    fn an_untouched_stream_verifies() {
        let r = check(&stream(10, None));
        assert_eq!(r.first_problem, None);
        assert_eq!(r.verified, 20);
        assert_eq!(r.chains.get("aaaa"), Some(&9));
    }

    #[test]
    fn an_edit_is_caught_at_its_line() {
        let mut s = stream(5, None);
        s[4] = s[4].replace("\"GET\"", "\"PUT\"");
        let r = check(&s);
        assert_eq!(
            r.first_problem,
            Some(Finding {
                line: 5,
                problem: Problem::Edited
            })
        );
    }

    #[test]
    fn a_deleted_line_is_a_drop() {
        let mut s = stream(5, None);
        s.remove(2); // aaaa seq 1; line 3 is now bbbb seq 1, line 4 aaaa seq 2
        let f = check(&s).first_problem.unwrap();
        assert_eq!(f.line, 4);
        assert_eq!(
            f.problem,
            Problem::Dropped {
                chain: "aaaa".into(),
                missing_from: 1,
                missing_to: 1
            }
        );
        // Losing the head of a chain is a drop too.
        let mut s = stream(3, None);
        s.remove(0);
        assert!(matches!(
            check(&s).first_problem.unwrap().problem,
            Problem::Dropped { .. }
        ));
    }

    #[test]
    fn swapped_lines_are_a_reordering() {
        let mut s = stream(5, None);
        s.swap(2, 4); // aaaa seq 1 and seq 2
        let f = check(&s).first_problem.unwrap();
        assert_eq!(f.line, 3);
        assert_eq!(
            f.problem,
            Problem::Reordered {
                chain: "aaaa".into(),
                seq: 2,
                expected: 1
            }
        );
    }

    #[test]
    fn a_duplicated_or_forged_record_is_an_insertion() {
        let mut s = stream(3, None);
        let dup = s[2].clone();
        s.insert(4, dup);
        let f = check(&s).first_problem.unwrap();
        assert_eq!(f.line, 5);
        assert!(matches!(f.problem, Problem::Inserted { .. }));

        // A well-formed record with the right seq but its own hash chain: not linked.
        let mut s = stream(3, None);
        let mut other = Chain::new("aaaa".into(), None);
        let mut r = sample();
        other.seal(&mut r.clone(), 1 << 16, |_| false);
        r.method = "DELETE".into();
        s[2] = other.seal(&mut r, 1 << 16, |_| false).unwrap();
        let f = check(&s).first_problem.unwrap();
        assert_eq!(f.line, 3);
        assert!(matches!(f.problem, Problem::Inserted { .. }));
    }

    #[test]
    fn keyed_chains_need_the_key_and_reject_downgrades() {
        let s = stream(3, Some(b"secret"));
        assert_eq!(verify(&s.join("\n"), Some(b"secret")).first_problem, None);
        assert!(matches!(
            verify(&s.join("\n"), None).first_problem.unwrap().problem,
            Problem::WrongAlgorithm { .. }
        ));
        assert_eq!(
            verify(&s.join("\n"), Some(b"other"))
                .first_problem
                .unwrap()
                .problem,
            Problem::Edited
        );
        let plain = stream(1, None);
        assert!(matches!(
            verify(&plain.join("\n"), Some(b"secret"))
                .first_problem
                .unwrap()
                .problem,
            Problem::WrongAlgorithm { .. }
        ));
    }

    #[test]
    fn garbage_and_placeholders() {
        let mut s = stream(2, None);
        s.insert(1, "-".into());
        let r = check(&s);
        assert_eq!(r.unrecorded, 1);
        assert_eq!(r.first_problem, None);
        s.insert(2, "hello".into());
        assert!(matches!(
            check(&s).first_problem.unwrap().problem,
            Problem::Malformed(_)
        ));
    }
}
