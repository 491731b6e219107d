//! Evaluation of a compiled predicate on one row, with SQLite's three-valued logic.

use std::cmp::Ordering;

use super::pattern;
use super::pred::{CmpOp, Pred, TruthTest};
use crate::value::Value;

/// SQL's three truth values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Definitely false.
    False,
    /// Unknown (SQL NULL): not a match, and its negation is not one either.
    Null,
    /// Definitely true.
    True,
}

impl Truth {
    fn from_bool(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }

    fn not(self) -> Truth {
        match self {
            Truth::True => Truth::False,
            Truth::False => Truth::True,
            Truth::Null => Truth::Null,
        }
    }

    fn negate_if(self, negated: bool) -> Truth {
        if negated {
            self.not()
        } else {
            self
        }
    }
}

impl Pred {
    /// Whether `row` (the table's columns in order) satisfies the predicate, exactly as a
    /// SQLite `WHERE` would: a row is selected only when the result is `True`.
    pub fn eval(&self, row: &[Value]) -> Truth {
        match self {
            Pred::And(children) => {
                let mut result = Truth::True;
                for child in children {
                    match child.eval(row) {
                        Truth::False => return Truth::False,
                        Truth::Null => result = Truth::Null,
                        Truth::True => {}
                    }
                }
                result
            }
            Pred::Or(children) => {
                let mut result = Truth::False;
                for child in children {
                    match child.eval(row) {
                        Truth::True => return Truth::True,
                        Truth::Null => result = Truth::Null,
                        Truth::False => {}
                    }
                }
                result
            }
            Pred::Cmp { col, op, value } => compare(&row[*col], *op, value),
            Pred::In {
                col,
                values,
                negated,
            } => in_list(&row[*col], values).negate_if(*negated),
            Pred::Like {
                col,
                pattern,
                escape,
                negated,
            } => match (pattern, row[*col].text_bytes()) {
                (Some(p), Some(text)) => {
                    Truth::from_bool(pattern::like(p, &text, *escape)).negate_if(*negated)
                }
                _ => Truth::Null,
            },
            Pred::Glob {
                col,
                pattern,
                negated,
            } => match (pattern, row[*col].text_bytes()) {
                (Some(p), Some(text)) => {
                    Truth::from_bool(pattern::glob(p, &text)).negate_if(*negated)
                }
                _ => Truth::Null,
            },
            Pred::Truth { col, test } => truth_test(&row[*col], *test),
        }
    }

    /// `eval(row) == Truth::True`.
    pub fn matches(&self, row: &[Value]) -> bool {
        self.eval(row) == Truth::True
    }
}

/// `left op right` with three-valued logic; `right` is already affinity-converted.
pub fn compare(left: &Value, op: CmpOp, right: &Value) -> Truth {
    match op {
        CmpOp::Is | CmpOp::IsNot => {
            let equal = match (left.is_null(), right.is_null()) {
                (true, true) => true,
                (false, false) => left.sqlite_cmp(right) == Ordering::Equal,
                _ => false,
            };
            Truth::from_bool(equal == (op == CmpOp::Is))
        }
        _ if left.is_null() || right.is_null() => Truth::Null,
        _ => {
            let ord = left.sqlite_cmp(right);
            Truth::from_bool(match op {
                CmpOp::Eq => ord == Ordering::Equal,
                CmpOp::Ne => ord != Ordering::Equal,
                CmpOp::Lt => ord == Ordering::Less,
                CmpOp::Le => ord != Ordering::Greater,
                CmpOp::Gt => ord == Ordering::Greater,
                CmpOp::Ge => ord != Ordering::Less,
                CmpOp::Is | CmpOp::IsNot => unreachable!("handled above"),
            })
        }
    }
}

fn in_list(left: &Value, values: &[Value]) -> Truth {
    if values.is_empty() {
        return Truth::False;
    }
    if left.is_null() {
        return Truth::Null;
    }
    let mut saw_null = false;
    for v in values {
        if v.is_null() {
            saw_null = true;
        } else if left.sqlite_cmp(v) == Ordering::Equal {
            return Truth::True;
        }
    }
    if saw_null {
        Truth::Null
    } else {
        Truth::False
    }
}

fn truth_test(value: &Value, test: TruthTest) -> Truth {
    let t = value.truthiness();
    match test {
        TruthTest::Bare => t.map_or(Truth::Null, Truth::from_bool),
        TruthTest::NotBare => t.map_or(Truth::Null, |b| Truth::from_bool(!b)),
        TruthTest::IsTrue => Truth::from_bool(t == Some(true)),
        TruthTest::IsNotTrue => Truth::from_bool(t != Some(true)),
        TruthTest::IsFalse => Truth::from_bool(t == Some(false)),
        TruthTest::IsNotFalse => Truth::from_bool(t != Some(false)),
    }
}
