//! Path patterns over canonical paths: literal segments, `*` for exactly one non-empty segment,
//! `**` (last only) for any number of remaining segments, including none. Shared by the PCI
//! authorization rules and the rate-limit rules, so a pattern means the same in both.

use crate::config::{ConfigError, FieldPath};
use crate::path_canon::{canonicalize, DotSegments};

/// Longest path pattern.
pub const MAX_PATH_BYTES: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one non-empty segment.
    One,
    /// `**` (last only): zero or more segments.
    Rest,
}

/// A path condition: a canonical path whose segments may be `*`, or `**` as the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    text: String,
    segments: Vec<Segment>,
}

impl PathPattern {
    pub fn parse(at: &FieldPath, text: &str) -> Result<Self, ConfigError> {
        if text.len() > MAX_PATH_BYTES {
            return Err(at.error(format!(
                "longer than {MAX_PATH_BYTES} bytes ({} bytes)",
                text.len()
            )));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(at.error(format!("{text:?} must start with \"/\"")));
        };
        let pieces: Vec<&str> = rest.split('/').collect();
        let last = pieces.len().saturating_sub(1);
        let mut segments = Vec::with_capacity(pieces.len());
        for (i, piece) in pieces.iter().enumerate() {
            segments.push(match *piece {
                "*" => Segment::One,
                "**" if i == last => Segment::Rest,
                "**" => return Err(at.error("\"**\" may only be the last segment")),
                p if p.contains('*') => {
                    return Err(at.error(format!(
                        "{text:?}: \"*\" and \"**\" must be a whole segment (no other wildcards)"
                    )))
                }
                p => Segment::Literal(p.to_string()),
            });
        }
        match canonicalize(text.as_bytes(), DotSegments::Reject) {
            Ok(c) if c == text => {}
            Ok(c) => {
                return Err(at.error(format!("{text:?} is not in canonical form; write {c:?}")))
            }
            Err(e) => {
                return Err(at.error(format!("{text:?} is not a canonical path ({})", e.kind())))
            }
        }
        Ok(PathPattern {
            text: text.to_string(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the canonical path `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        let Some(rest) = path.strip_prefix('/') else {
            return false;
        };
        let mut parts = rest.split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return true,
                Segment::One => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(l) => {
                    if parts.next() != Some(l.as_str()) {
                        return false;
                    }
                }
            }
        }
        parts.next().is_none()
    }
}
