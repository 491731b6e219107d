//! Access plans: which index entries a shape is filed under.
//!
//! A plan is a list of probes such that a row can make the predicate TRUE only if it hits
//! at least one of them (a superset filter; the matcher evaluates every candidate in
//! full). `None` means nothing is indexable and the shape goes to the residual list; an
//! empty plan means the predicate can never be TRUE (`col = NULL`, `col IN (NULL)`).
//!
//! An OR files every branch (no DNF expansion); an AND picks its cheapest indexable
//! conjunct, where range terms on one column combine into a closed interval.

use crate::query::{CmpOp, Pred};
use crate::value::Value;

use super::key::{eq_key, orderable, prefix_key, PatternKind, PREFIX_MAX};

/// One index entry of a shape.
#[derive(Debug, Clone)]
pub(super) enum Probe {
    /// Scanned for every change of the table.
    Residual,
    /// Equality (also IN items, `IS value`, `IS NULL`): rows whose value has `key`.
    Eq { col: usize, key: u64 },
    /// Rows with a non-NULL value `>= bound` (`>` is filed as `>=`).
    Lower { col: usize, bound: Value },
    /// Rows with a non-NULL value `<= bound` (`<` is filed as `<=`).
    Upper { col: usize, bound: Value },
    /// Rows with a value in `[lo, hi]`.
    Between { col: usize, lo: Value, hi: Value },
    /// Rows whose text starts with a literal prefix (cut to `PREFIX_MAX` bytes).
    Prefix {
        col: usize,
        kind: PatternKind,
        key: u64,
        len: usize,
    },
}

/// Estimated work of visiting a probe, from the current state of the index.
pub(super) trait Cost {
    fn cost(&self, probe: &Probe) -> usize;
}

/// How many AND/OR levels a plan looks into. The walk recurses once per level; a
/// compiled subscription nests at most about [`crate::query::MAX_DEPTH`] levels, and a
/// deeper (hand-built) predicate is simply not indexed: it goes to the residual list.
const MAX_PLAN_LEVELS: usize = 2 * crate::query::MAX_DEPTH;

/// The access plan of `pred`; see the module docs.
pub(super) fn plan(pred: &Pred, cost: &dyn Cost) -> Option<Vec<Probe>> {
    plan_within(pred, cost, MAX_PLAN_LEVELS)
}

/// `plan`, looking at most `levels` more AND/OR levels down (bounded recursion).
fn plan_within(pred: &Pred, cost: &dyn Cost, levels: usize) -> Option<Vec<Probe>> {
    match pred {
        Pred::And(_) | Pred::Or(_) if levels == 0 => None,
        Pred::And(children) if children.is_empty() => None,
        Pred::And(children) => plan_and(children, cost, levels - 1),
        Pred::Or(children) => {
            let mut probes = Vec::new();
            for child in children {
                probes.extend(plan_within(child, cost, levels - 1)?);
            }
            Some(probes)
        }
        Pred::Cmp { col, op, value } => plan_cmp(*col, *op, value),
        Pred::In {
            col,
            values,
            negated: false,
        } => {
            let mut probes = Vec::with_capacity(values.len());
            for value in values.iter().filter(|v| !v.is_null()) {
                probes.push(Probe::Eq {
                    col: *col,
                    key: eq_key(*col, value)?,
                });
            }
            Some(probes)
        }
        Pred::Like {
            col,
            pattern,
            escape,
            negated: false,
        } => match pattern {
            None => Some(Vec::new()),
            Some(p) => {
                let prefix = literal_prefix(p, b"%_", escape.map(|c| c as u32));
                prefix_probe(*col, PatternKind::Like, prefix)
            }
        },
        Pred::Glob {
            col,
            pattern,
            negated: false,
        } => match pattern {
            None => Some(Vec::new()),
            Some(p) => {
                let prefix = literal_prefix(p, b"*?[", None);
                prefix_probe(*col, PatternKind::Glob, prefix)
            }
        },
        Pred::In { .. } | Pred::Like { .. } | Pred::Glob { .. } | Pred::Truth { .. } => None,
    }
}

fn plan_cmp(col: usize, op: CmpOp, value: &Value) -> Option<Vec<Probe>> {
    match op {
        CmpOp::Is => Some(vec![Probe::Eq {
            col,
            key: eq_key(col, value)?,
        }]),
        CmpOp::Eq | CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge if value.is_null() => {
            Some(Vec::new())
        }
        CmpOp::Eq => Some(vec![Probe::Eq {
            col,
            key: eq_key(col, value)?,
        }]),
        CmpOp::Lt | CmpOp::Le if orderable(value) => Some(vec![Probe::Upper {
            col,
            bound: value.clone(),
        }]),
        CmpOp::Gt | CmpOp::Ge if orderable(value) => Some(vec![Probe::Lower {
            col,
            bound: value.clone(),
        }]),
        _ => None,
    }
}

fn plan_and(children: &[Pred], cost: &dyn Cost, levels: usize) -> Option<Vec<Probe>> {
    let mut best: Option<(usize, Vec<Probe>)> = None;
    let mut consider = |probes: Vec<Probe>| {
        let c: usize = probes.iter().map(|p| cost.cost(p)).sum();
        if best.as_ref().is_none_or(|(b, _)| c < *b) {
            best = Some((c, probes));
        }
    };
    // Range terms on one column: the tightest lower and upper bound form an interval.
    let mut bounds: Vec<(usize, Option<&Value>, Option<&Value>)> = Vec::new();
    for child in children {
        if let Pred::Cmp { col, op, value } = child {
            if !orderable(value) {
                continue;
            }
            let lower = matches!(op, CmpOp::Gt | CmpOp::Ge);
            let upper = matches!(op, CmpOp::Lt | CmpOp::Le);
            if !lower && !upper {
                continue;
            }
            let at = match bounds.iter().position(|b| b.0 == *col) {
                Some(i) => i,
                None => {
                    bounds.push((*col, None, None));
                    bounds.len() - 1
                }
            };
            let (_, lo, hi) = &mut bounds[at];
            if lower && lo.is_none_or(|l| value.sqlite_cmp(l).is_gt()) {
                *lo = Some(value);
            }
            if upper && hi.is_none_or(|h| value.sqlite_cmp(h).is_lt()) {
                *hi = Some(value);
            }
        }
    }
    for (col, lo, hi) in bounds {
        if let (Some(lo), Some(hi)) = (lo, hi) {
            consider(vec![Probe::Between {
                col,
                lo: lo.clone(),
                hi: hi.clone(),
            }]);
        }
    }
    for child in children {
        if let Some(probes) = plan_within(child, cost, levels) {
            consider(probes);
        }
    }
    best.map(|(_, probes)| probes)
}

/// The literal ASCII bytes a pattern starts with, up to the first wildcard, escape
/// character, NUL or non-ASCII byte (non-ASCII bytes decode leniently, so only ASCII
/// bytes are known to stand for themselves).
fn literal_prefix<'a>(pattern: &'a [u8], stops: &[u8], escape: Option<u32>) -> &'a [u8] {
    let end = pattern
        .iter()
        .position(|&b| {
            b == 0 || b >= 0x80 || stops.contains(&b) || escape.is_some_and(|e| e == b as u32)
        })
        .unwrap_or(pattern.len());
    &pattern[..end]
}

fn prefix_probe(col: usize, kind: PatternKind, prefix: &[u8]) -> Option<Vec<Probe>> {
    if prefix.is_empty() {
        return None;
    }
    let len = prefix.len().min(PREFIX_MAX);
    let mut bytes = prefix[..len].to_vec();
    if kind == PatternKind::Like {
        bytes.make_ascii_lowercase();
    }
    Some(vec![Probe::Prefix {
        col,
        kind,
        key: prefix_key(col, kind, &bytes),
        len,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flat;

    impl Cost for Flat {
        fn cost(&self, probe: &Probe) -> usize {
            match probe {
                Probe::Eq { .. } => 1,
                Probe::Prefix { .. } => 2,
                Probe::Between { .. } => 3,
                _ => 10,
            }
        }
    }

    fn cmp(col: usize, op: CmpOp, value: Value) -> Pred {
        Pred::Cmp { col, op, value }
    }

    #[test]
    fn and_prefers_equality_then_intervals() {
        let pred = Pred::And(vec![
            cmp(0, CmpOp::Ge, Value::Integer(1)),
            cmp(0, CmpOp::Le, Value::Integer(5)),
            cmp(1, CmpOp::Ne, Value::Integer(2)),
        ]);
        let probes = plan(&pred, &Flat).expect("indexable");
        assert!(matches!(&probes[..], [Probe::Between { col: 0, .. }]));
        let mut pred = pred;
        let mut with_eq = match &mut pred {
            Pred::And(c) => std::mem::take(c),
            _ => unreachable!(),
        };
        with_eq.push(cmp(2, CmpOp::Eq, Value::Text("x".into())));
        let probes = plan(&Pred::And(with_eq), &Flat).expect("indexable");
        assert!(matches!(&probes[..], [Probe::Eq { col: 2, .. }]));
    }

    #[test]
    fn or_needs_every_branch_indexable() {
        let both = Pred::Or(vec![
            cmp(0, CmpOp::Eq, Value::Integer(1)),
            cmp(1, CmpOp::Lt, Value::Integer(0)),
        ]);
        assert_eq!(plan(&both, &Flat).map(|p| p.len()), Some(2));
        let one = Pred::Or(vec![
            cmp(0, CmpOp::Eq, Value::Integer(1)),
            cmp(1, CmpOp::Ne, Value::Integer(0)),
        ]);
        assert!(plan(&one, &Flat).is_none());
    }

    #[test]
    fn null_constants_never_match_and_not_terms_are_residual() {
        assert_eq!(
            plan(&cmp(0, CmpOp::Eq, Value::Null), &Flat).map(|p| p.len()),
            Some(0)
        );
        assert_eq!(
            plan(&cmp(0, CmpOp::Gt, Value::Null), &Flat).map(|p| p.len()),
            Some(0)
        );
        assert_eq!(
            plan(&cmp(0, CmpOp::Is, Value::Null), &Flat).map(|p| p.len()),
            Some(1)
        );
        assert!(plan(&cmp(0, CmpOp::IsNot, Value::Null), &Flat).is_none());
        let in_nulls = Pred::In {
            col: 0,
            values: vec![Value::Null],
            negated: false,
        };
        assert_eq!(plan(&in_nulls, &Flat).map(|p| p.len()), Some(0));
        let not_in = Pred::In {
            col: 0,
            values: vec![Value::Integer(1)],
            negated: true,
        };
        assert!(plan(&not_in, &Flat).is_none());
        assert!(plan(&Pred::TRUE, &Flat).is_none());
    }

    #[test]
    fn patterns_index_their_literal_prefix() {
        let like = |p: &str, escape| Pred::Like {
            col: 0,
            pattern: Some(p.as_bytes().to_vec()),
            escape,
            negated: false,
        };
        let probes = plan(&like("Ab%", None), &Flat);
        let Some([Probe::Prefix { len: 2, key, .. }]) = probes.as_deref() else {
            panic!("prefix expected");
        };
        assert_eq!(*key, prefix_key(0, PatternKind::Like, b"ab"));
        assert!(plan(&like("%ab", None), &Flat).is_none());
        assert!(plan(&like("!%a", Some('!')), &Flat).is_none());
        let glob = Pred::Glob {
            col: 0,
            pattern: Some(b"[a]x*".to_vec()),
            negated: false,
        };
        assert!(plan(&glob, &Flat).is_none());
        assert_eq!(literal_prefix("aé%".as_bytes(), b"%", None), b"a");
    }
}
