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

/// How many AND/OR levels [`Pred::eval`] walks by recursion before it switches to an
/// explicit stack. Compiled subscriptions nest at most about [`super::MAX_DEPTH`] levels,
/// so they never need the stack (and never allocate); a deeper hand-built tree is still
/// evaluated, just without recursion below this level.
const EVAL_RECURSION_LEVELS: usize = 64;

impl Pred {
    /// Whether `row` (the table's columns in order) satisfies the predicate, exactly as a
    /// SQLite `WHERE` would: a row is selected only when the result is `True`. Linear in
    /// the size of the tree (short-circuiting), at any depth.
    pub fn eval(&self, row: &[Value]) -> Truth {
        self.eval_within(row, EVAL_RECURSION_LEVELS)
    }

    /// `eval`, recursing at most `levels` more AND/OR levels (bounded recursion).
    fn eval_within(&self, row: &[Value], levels: usize) -> Truth {
        match self {
            Pred::And(_) | Pred::Or(_) if levels == 0 => eval_with_stack(self, row),
            Pred::And(children) => {
                let mut result = Truth::True;
                for child in children {
                    match child.eval_within(row, levels - 1) {
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
                    match child.eval_within(row, levels - 1) {
                        Truth::True => return Truth::True,
                        Truth::Null => result = Truth::Null,
                        Truth::False => {}
                    }
                }
                result
            }
            leaf => eval_leaf(leaf, row),
        }
    }

    /// `eval(row) == Truth::True`.
    pub fn matches(&self, row: &[Value]) -> bool {
        self.eval(row) == Truth::True
    }
}

/// `pred.eval(row)` with an explicit stack of open groups instead of recursion.
fn eval_with_stack(pred: &Pred, row: &[Value]) -> Truth {
    /// An open group: its members still to evaluate and the result so far.
    struct Frame<'a> {
        rest: std::slice::Iter<'a, Pred>,
        is_and: bool,
        result: Truth,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut next = pred;
    loop {
        // Descend: a group opens a frame; a leaf has a value at once.
        let mut value = match next {
            Pred::And(children) | Pred::Or(children) => {
                let is_and = matches!(next, Pred::And(_));
                stack.push(Frame {
                    rest: children.iter(),
                    is_and,
                    result: if is_and { Truth::True } else { Truth::False },
                });
                None
            }
            leaf => Some(eval_leaf(leaf, row)),
        };
        // Ascend: fold the value into its group, short-circuiting; close finished groups.
        loop {
            let Some(frame) = stack.last_mut() else {
                return value.expect("the root has a value last");
            };
            if let Some(v) = value.take() {
                let decisive = if frame.is_and {
                    Truth::False
                } else {
                    Truth::True
                };
                if v == decisive {
                    stack.pop();
                    value = Some(decisive);
                    continue;
                }
                if v == Truth::Null {
                    frame.result = Truth::Null;
                }
            }
            if let Some(member) = frame.rest.next() {
                next = member;
                break;
            }
            value = Some(frame.result);
            stack.pop();
        }
    }
}

/// The value of one leaf (anything but AND/OR) on `row`.
fn eval_leaf(leaf: &Pred, row: &[Value]) -> Truth {
    match leaf {
        Pred::And(_) | Pred::Or(_) => unreachable!("groups are walked by the callers"),
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
            (Some(p), Some(text)) => Truth::from_bool(pattern::glob(p, &text)).negate_if(*negated),
            _ => Truth::Null,
        },
        Pred::Truth { col, test } => truth_test(&row[*col], *test),
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
        _ => Truth::from_bool(op.holds(left.sqlite_cmp(right))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(col: usize, value: i64) -> Pred {
        Pred::Cmp {
            col,
            op: CmpOp::Eq,
            value: Value::Integer(value),
        }
    }

    /// `col0 = 1 AND (col0 = 2 OR (col0 = 3 AND (...)))`, `depth` groups deep, built
    /// from the inside out without recursion.
    fn deep(depth: usize) -> Pred {
        let mut pred = cmp(0, depth as i64);
        for i in (0..depth).rev() {
            pred = if i % 2 == 0 {
                Pred::And(vec![cmp(1, 1), pred])
            } else {
                Pred::Or(vec![cmp(0, i as i64), pred])
            };
        }
        pred
    }

    #[test]
    fn the_stack_walk_agrees_with_the_recursive_one() {
        let rows: Vec<Vec<Value>> = (0..8)
            .flat_map(|n| [Value::Integer(1), Value::Null].map(|b| vec![Value::Integer(n), b]))
            .collect();
        for depth in 0..8 {
            let pred = deep(depth);
            for row in &rows {
                assert_eq!(
                    eval_with_stack(&pred, row),
                    pred.eval_within(row, usize::MAX)
                );
            }
        }
    }

    #[test]
    fn deep_trees_evaluate_and_drop_on_a_small_stack() {
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let pred = deep(100_000);
                let row = [Value::Integer(99_999), Value::Integer(1)];
                let leaves = pred.leaves().len();
                (pred.eval(&row), leaves)
            })
            .expect("spawn");
        assert_eq!(
            worker.join().expect("no stack overflow"),
            (Truth::True, 100_001)
        );
    }
}
