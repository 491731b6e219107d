//! The compiled predicate of a shape: an AND/OR tree in negation normal form whose
//! leaves compare one column with constant values (literals already converted by the
//! column's affinity, so evaluation is a plain SQLite value comparison).
//!
//! Normalization (flattening, sorting, de-duplication) lives here, so equivalent
//! subscriptions produce the same tree and the same text.

use super::render::literal_sql;
use crate::schema::Table;
use crate::value::Value;

/// A comparison operator of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=` (also written `<>`)
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `IS`: equality where NULL equals NULL; never NULL itself.
    Is,
    /// `IS NOT`.
    IsNot,
}

impl CmpOp {
    /// The operator whose result is the negation of this one for non-NULL operands (`=` and `!=`, `<` and `>=`, `IS` and `IS NOT`).
    pub fn negate(self) -> CmpOp {
        match self {
            CmpOp::Eq => CmpOp::Ne,
            CmpOp::Ne => CmpOp::Eq,
            CmpOp::Lt => CmpOp::Ge,
            CmpOp::Ge => CmpOp::Lt,
            CmpOp::Le => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Le,
            CmpOp::Is => CmpOp::IsNot,
            CmpOp::IsNot => CmpOp::Is,
        }
    }

    /// The operator with its operands swapped (`1 < a` is `a > 1`).
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

    /// The operator as SQL text.
    pub fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
            CmpOp::Is => "IS",
            CmpOp::IsNot => "IS NOT",
        }
    }
}

/// How a column is read as a truth value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TruthTest {
    /// `col`: NULL when NULL, else its truth value.
    Bare,
    /// `NOT col`.
    NotBare,
    /// `col IS TRUE`: never NULL.
    IsTrue,
    /// `col IS NOT TRUE`.
    IsNotTrue,
    /// `col IS FALSE`.
    IsFalse,
    /// `col IS NOT FALSE`.
    IsNotFalse,
}

impl TruthTest {
    /// The test that holds exactly when this one does not (NULL included for the `IS` forms).
    pub fn negate(self) -> TruthTest {
        match self {
            TruthTest::Bare => TruthTest::NotBare,
            TruthTest::NotBare => TruthTest::Bare,
            TruthTest::IsTrue => TruthTest::IsNotTrue,
            TruthTest::IsNotTrue => TruthTest::IsTrue,
            TruthTest::IsFalse => TruthTest::IsNotFalse,
            TruthTest::IsNotFalse => TruthTest::IsFalse,
        }
    }
}

/// A compiled predicate in negation normal form.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// All must hold. An empty `And` is TRUE (a subscription without WHERE).
    And(Vec<Pred>),
    /// One must hold. Never empty.
    Or(Vec<Pred>),
    /// `col op value`, the value already converted by the column's affinity.
    Cmp {
        /// The column's index in the table.
        col: usize,
        /// The operator.
        op: CmpOp,
        /// The constant compared with.
        value: Value,
    },
    /// `col [NOT] IN (values)`: values sorted, de-duplicated, converted.
    In {
        /// The column's index in the table.
        col: usize,
        /// The values.
        values: Vec<Value>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `col [NOT] LIKE pattern [ESCAPE e]`; a `None` pattern is NULL (never matches).
    Like {
        /// The column's index in the table.
        col: usize,
        /// The pattern's bytes; `None` for NULL.
        pattern: Option<Vec<u8>>,
        /// The escape character, if any.
        escape: Option<char>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `col [NOT] GLOB pattern`; a `None` pattern is NULL.
    Glob {
        /// The column's index in the table.
        col: usize,
        /// The pattern's bytes; `None` for NULL.
        pattern: Option<Vec<u8>>,
        /// `NOT GLOB`.
        negated: bool,
    },
    /// `col`, `NOT col`, `col IS [NOT] TRUE|FALSE`.
    Truth {
        /// The column's index in the table.
        col: usize,
        /// Which reading.
        test: TruthTest,
    },
}

impl Pred {
    /// The always-true predicate (an empty `And`).
    pub const TRUE: Pred = Pred::And(Vec::new());

    /// Whether this is the always-true predicate.
    pub fn is_true(&self) -> bool {
        matches!(self, Pred::And(v) if v.is_empty())
    }

    /// Flattens nested AND/OR, sorts children by their text, drops duplicates and
    /// unwraps single children, recursively. `table` gives names for the sort key.
    pub fn normalize(self, table: &Table) -> Pred {
        match self {
            Pred::And(children) => normalize_group(children, true, table),
            Pred::Or(children) => normalize_group(children, false, table),
            Pred::In {
                col,
                values,
                negated,
            } => normalize_in(col, values, negated),
            leaf => leaf,
        }
    }

    /// SQL text of the predicate, parseable by the subscription language: literals
    /// inlined, identifiers bare where they are plain words, `TRUE` when always true.
    /// Linear in the size of the tree; never fails. See the `render` module.
    pub fn to_sql(&self, table: &Table) -> String {
        literal_sql(self, table)
    }

    /// Every leaf of the tree, depth first.
    pub fn leaves(&self) -> Vec<&Pred> {
        let mut out = Vec::new();
        self.collect_leaves(&mut out);
        out
    }

    fn collect_leaves<'a>(&'a self, out: &mut Vec<&'a Pred>) {
        match self {
            Pred::And(c) | Pred::Or(c) => c.iter().for_each(|p| p.collect_leaves(out)),
            leaf => out.push(leaf),
        }
    }
}

fn normalize_group(children: Vec<Pred>, is_and: bool, table: &Table) -> Pred {
    let mut flat = Vec::new();
    for child in children {
        match child.normalize(table) {
            Pred::And(inner) if is_and => flat.extend(inner),
            Pred::Or(inner) if !is_and => flat.extend(inner),
            other => flat.push(other),
        }
    }
    let mut keyed: Vec<(String, Pred)> = flat.into_iter().map(|p| (p.to_sql(table), p)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.dedup_by(|a, b| a.0 == b.0);
    let mut children: Vec<Pred> = keyed.into_iter().map(|(_, p)| p).collect();
    if children.len() == 1 {
        return children.pop().expect("one child");
    }
    if is_and {
        Pred::And(children)
    } else {
        Pred::Or(children)
    }
}

fn normalize_in(col: usize, mut values: Vec<Value>, negated: bool) -> Pred {
    // Equal values (1 and 1.0) decide IN identically; keep one, preferring the integer.
    values.sort_by(|a, b| {
        a.sqlite_cmp(b).then_with(|| {
            let rank = |v: &Value| matches!(v, Value::Real(_)) as u8;
            rank(a).cmp(&rank(b))
        })
    });
    values.dedup_by(|later, earlier| later.sqlite_cmp(earlier).is_eq());
    if values.len() == 1 && !is_array_marker(&values[0]) {
        let value = values.pop().expect("one value");
        let op = if negated { CmpOp::Ne } else { CmpOp::Eq };
        return Pred::Cmp { col, op, value };
    }
    Pred::In {
        col,
        values,
        negated,
    }
}

/// Marks an unbound parameter inside a template's normalized text (see `query::check`).
pub(crate) const PARAM_MARKER: &str = "\u{0}\u{1}sluice-param";

pub(super) fn is_param_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER))
}

fn is_array_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER) && s.contains("[]"))
}

pub(super) fn is_plus_param_marker(v: &Value) -> bool {
    matches!(v, Value::Text(s) if s.starts_with(PARAM_MARKER) && s[PARAM_MARKER.len()..].starts_with('+'))
}
