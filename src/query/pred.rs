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
    /// Whether the operator holds between two non-NULL operands that compare as `ord`
    /// (`IS` as `=`, `IS NOT` as `!=`).
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::{Equal, Greater, Less};
        match self {
            CmpOp::Eq | CmpOp::Is => ord == Equal,
            CmpOp::Ne | CmpOp::IsNot => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }

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
    /// unwraps single children, at every level. `table` gives names for the sort key.
    ///
    /// Walks with an explicit stack (no recursion, whatever the depth). Nested groups of
    /// the same operator are spliced into their parent before anything is rendered, so
    /// a long chain costs one sort of its members, not one render per link: the cost is
    /// the size of the tree times its depth in AND/OR alternations (at most about
    /// [`super::MAX_DEPTH`] for a compiled subscription), plus the sorts.
    pub fn normalize(self, table: &Table) -> Pred {
        /// A group being normalized: members still to do (next one last) and done ones.
        struct Frame {
            is_and: bool,
            todo: Vec<Pred>,
            done: Vec<Pred>,
        }
        let mut stack: Vec<Frame> = Vec::new();
        let mut next = self;
        loop {
            // Descend: a group opens a frame; anything else is normalized at once.
            let is_and = matches!(next, Pred::And(_));
            let mut finished = match &mut next {
                Pred::And(children) | Pred::Or(children) => {
                    let mut todo = splice_same(std::mem::take(children), is_and);
                    todo.reverse();
                    stack.push(Frame {
                        is_and,
                        todo,
                        done: Vec::new(),
                    });
                    None
                }
                Pred::In {
                    col,
                    values,
                    negated,
                } => Some(normalize_in(*col, std::mem::take(values), *negated)),
                _ => Some(std::mem::replace(&mut next, Pred::TRUE)),
            };
            // Ascend: hand the finished member to its group; close groups that are done.
            loop {
                let Some(frame) = stack.last_mut() else {
                    return finished.expect("the root is finished last");
                };
                if let Some(mut member) = finished.take() {
                    // A member that became a group of the same operator (`x OR (y)` with
                    // `y` an OR) merges into it.
                    match &mut member {
                        Pred::And(inner) if frame.is_and => frame.done.append(inner),
                        Pred::Or(inner) if !frame.is_and => frame.done.append(inner),
                        _ => frame.done.push(member),
                    }
                }
                if let Some(member) = frame.todo.pop() {
                    next = member;
                    break;
                }
                let frame = stack.pop().expect("a frame is open");
                finished = Some(finish_group(frame.done, frame.is_and, table));
            }
        }
    }

    /// SQL text of the predicate, parseable by the subscription language: literals
    /// inlined, identifiers bare where they are plain words, `TRUE` when always true.
    /// Linear in the size of the tree; never fails. See the `render` module.
    pub fn to_sql(&self, table: &Table) -> String {
        literal_sql(self, table)
    }

    /// Every leaf of the tree, depth first, left to right. Walks with an explicit stack.
    pub fn leaves(&self) -> Vec<&Pred> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(pred) = stack.pop() {
            match pred {
                Pred::And(c) | Pred::Or(c) => stack.extend(c.iter().rev()),
                leaf => out.push(leaf),
            }
        }
        out
    }
}

/// Dropping a deep tree with the compiler's drop glue recurses once per level; this
/// moves every group's members onto one explicit stack instead, so each `Pred` dropped
/// has no members left by the time its own drop runs.
impl Drop for Pred {
    fn drop(&mut self) {
        let mut stack = match self {
            Pred::And(children) | Pred::Or(children) if !children.is_empty() => {
                std::mem::take(children)
            }
            _ => return,
        };
        while let Some(mut pred) = stack.pop() {
            if let Pred::And(children) | Pred::Or(children) = &mut pred {
                stack.append(children);
            }
        }
    }
}

/// `children` with every member that is itself a group of the same operator replaced by
/// its members, at any depth, in order (an explicit stack, no recursion).
fn splice_same(children: Vec<Pred>, is_and: bool) -> Vec<Pred> {
    let mut out = Vec::with_capacity(children.len());
    let mut work = children;
    work.reverse();
    while let Some(mut pred) = work.pop() {
        match &mut pred {
            Pred::And(inner) if is_and => work.extend(std::mem::take(inner).into_iter().rev()),
            Pred::Or(inner) if !is_and => work.extend(std::mem::take(inner).into_iter().rev()),
            _ => out.push(pred),
        }
    }
    out
}

/// Sorts a group's normalized members by their text, drops duplicates and unwraps a
/// single member. One render per member, one sort.
fn finish_group(members: Vec<Pred>, is_and: bool, table: &Table) -> Pred {
    let mut keyed: Vec<(String, Pred)> =
        members.into_iter().map(|p| (p.to_sql(table), p)).collect();
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
