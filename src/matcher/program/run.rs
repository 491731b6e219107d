//! Evaluation of a compiled program on one row (see the parent module for the layout):
//! a loop over the bytes with a fixed-size stack of open AND/OR groups, comparing row
//! values with the constants where they sit in the program.

use std::cmp::Ordering;

use super::{
    CMP_OPS, MAX_NESTING, NO_ESCAPE, OP_AND, OP_CLOSE, OP_CMP, OP_IN, OP_OR, OP_PATTERN,
    PAT_GLOB_EXACT, PAT_GLOB_PREFIX, PAT_LIKE, PAT_LIKE_EXACT, PAT_LIKE_PREFIX, PAT_NULL, TAG_INT,
    TAG_NULL, TAG_REAL, TAG_TEXT, TRUTH_TESTS,
};
use crate::query::{glob, like, CmpOp, Truth, TruthTest};
use crate::value::Value;

/// A constant as it sits in a program.
#[derive(Debug, Clone, Copy)]
enum Const<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Reads the program as it is walked; the program was written by `encode`, so every
/// read is in bounds.
struct Reader<'a> {
    code: &'a [u8],
    pc: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> u8 {
        let b = self.code[self.pc];
        self.pc += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        let v = u16::from_le_bytes([self.code[self.pc], self.code[self.pc + 1]]);
        self.pc += 2;
        v
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.code[self.pc..self.pc + N]);
        self.pc += N;
        out
    }

    fn bytes(&mut self) -> &'a [u8] {
        let len = self.u16() as usize;
        let out = &self.code[self.pc..self.pc + len];
        self.pc += len;
        out
    }

    fn constant(&mut self) -> Const<'a> {
        match self.u8() {
            TAG_NULL => Const::Null,
            TAG_INT => Const::Int(i64::from_le_bytes(self.array())),
            TAG_REAL => Const::Real(f64::from_bits(u64::from_le_bytes(self.array()))),
            TAG_TEXT => Const::Text(self.bytes()),
            _ => Const::Blob(self.bytes()),
        }
    }
}

/// An open AND/OR group during evaluation.
#[derive(Debug, Clone, Copy)]
struct Frame {
    is_and: bool,
    result: Truth,
    /// Offset of the group's closing op.
    end: u16,
}

/// Evaluates a program on `row`.
pub(super) fn run(code: &[u8], row: &[Value]) -> Truth {
    let mut r = Reader { code, pc: 0 };
    match code.first() {
        Some(&op) if op > OP_CLOSE => {
            r.pc = 1;
            return leaf(op, &mut r, row);
        }
        _ => {}
    }
    let mut stack = [Frame {
        is_and: true,
        result: Truth::True,
        end: 0,
    }; MAX_NESTING];
    let mut depth = 0;
    loop {
        let value = match r.u8() {
            op @ (OP_AND | OP_OR) => {
                let is_and = op == OP_AND;
                stack[depth] = Frame {
                    is_and,
                    result: if is_and { Truth::True } else { Truth::False },
                    end: r.u16(),
                };
                depth += 1;
                continue;
            }
            OP_CLOSE => {
                depth -= 1;
                stack[depth].result
            }
            op => leaf(op, &mut r, row),
        };
        let Some(frame) = depth.checked_sub(1).map(|top| &mut stack[top]) else {
            return value;
        };
        let decisive = if frame.is_and {
            Truth::False
        } else {
            Truth::True
        };
        if value == decisive {
            frame.result = decisive;
            r.pc = frame.end as usize;
        } else if value == Truth::Null {
            frame.result = Truth::Null;
        }
    }
}

/// Evaluates the leaf whose op byte was just read, leaving the reader after it.
fn leaf(op: u8, r: &mut Reader<'_>, row: &[Value]) -> Truth {
    let left = &row[r.u16() as usize];
    match op {
        OP_CMP => {
            let op = CMP_OPS[r.u8() as usize];
            compare(left, op, r.constant())
        }
        OP_IN => {
            let negated = r.u8() != 0;
            let count = r.u16();
            let (mut found, mut saw_null) = (false, false);
            for _ in 0..count {
                let c = r.constant();
                if found || left.is_null() {
                    continue;
                }
                match c {
                    Const::Null => saw_null = true,
                    c => found = cmp(left, c) == Ordering::Equal,
                }
            }
            let result = if count == 0 {
                Truth::False
            } else if left.is_null() || (!found && saw_null) {
                Truth::Null
            } else {
                truth(found)
            };
            negate_if(result, negated)
        }
        OP_PATTERN => {
            let negated = r.u8() != 0;
            let mode = r.u8();
            let escape = if mode == PAT_LIKE { r.u32() } else { NO_ESCAPE };
            if mode == PAT_NULL {
                return Truth::Null;
            }
            let pattern = r.bytes();
            let Some(text) = left.text_bytes() else {
                return Truth::Null;
            };
            let hit = match mode {
                PAT_LIKE_EXACT | PAT_LIKE_PREFIX => {
                    starts_with(&text, pattern, true) && ends_after(&text, pattern, mode)
                }
                PAT_GLOB_EXACT | PAT_GLOB_PREFIX => {
                    starts_with(&text, pattern, false) && ends_after(&text, pattern, mode)
                }
                PAT_LIKE => like(pattern, &text, char::from_u32(escape)),
                _ => glob(pattern, &text),
            };
            negate_if(if hit { Truth::True } else { Truth::False }, negated)
        }
        _ => {
            let test = TRUTH_TESTS[r.u8() as usize];
            let t = left.truthiness();
            let b = match test {
                TruthTest::Bare => return t.map_or(Truth::Null, truth),
                TruthTest::NotBare => return t.map_or(Truth::Null, |b| truth(!b)),
                TruthTest::IsTrue => t == Some(true),
                TruthTest::IsNotTrue => t != Some(true),
                TruthTest::IsFalse => t == Some(false),
                TruthTest::IsNotFalse => t != Some(false),
            };
            truth(b)
        }
    }
}

/// Whether `text` starts with the ASCII `literal` (case folded when `fold`).
fn starts_with(text: &[u8], literal: &[u8], fold: bool) -> bool {
    text.len() >= literal.len()
        && if fold {
            text[..literal.len()].eq_ignore_ascii_case(literal)
        } else {
            &text[..literal.len()] == literal
        }
}

/// For the exact forms, whether the text ends (or has a NUL) right after the literal.
fn ends_after(text: &[u8], literal: &[u8], mode: u8) -> bool {
    matches!(mode, PAT_LIKE_PREFIX | PAT_GLOB_PREFIX)
        || text.get(literal.len()).is_none_or(|&b| b == 0)
}

fn truth(b: bool) -> Truth {
    if b {
        Truth::True
    } else {
        Truth::False
    }
}

fn negate_if(t: Truth, negated: bool) -> Truth {
    match (t, negated) {
        (Truth::True, true) => Truth::False,
        (Truth::False, true) => Truth::True,
        (t, _) => t,
    }
}

/// `left op c` with three-valued logic, as `query::compare`.
fn compare(left: &Value, op: CmpOp, c: Const<'_>) -> Truth {
    let c_null = matches!(c, Const::Null);
    match op {
        CmpOp::Is | CmpOp::IsNot => {
            let equal = match (left.is_null(), c_null) {
                (true, true) => true,
                (false, false) => cmp(left, c) == Ordering::Equal,
                _ => false,
            };
            truth(equal == (op == CmpOp::Is))
        }
        _ if left.is_null() || c_null => Truth::Null,
        _ => truth(op.holds(cmp(left, c))),
    }
}

/// `Value::sqlite_cmp` of a row value and a program constant.
fn cmp(left: &Value, c: Const<'_>) -> Ordering {
    match (left, c) {
        (Value::Integer(a), Const::Int(b)) => a.cmp(&b),
        (Value::Real(a), Const::Real(b)) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
        (Value::Integer(a), Const::Real(b)) => int_real_cmp(*a, b),
        (Value::Real(a), Const::Int(b)) => int_real_cmp(b, *a).reverse(),
        (Value::Text(a), Const::Text(b)) => a.as_bytes().cmp(b),
        (Value::Blob(a), Const::Blob(b)) => a.as_slice().cmp(b),
        (a, b) => rank(a).cmp(&const_rank(b)),
    }
}

/// The integer/real order of `Value::sqlite_cmp` (SQLite's `sqlite3IntFloatCompare`).
fn int_real_cmp(i: i64, r: f64) -> Ordering {
    Value::Integer(i).sqlite_cmp(&Value::Real(r))
}

fn rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Integer(_) | Value::Real(_) => 1,
        Value::Text(_) => 2,
        Value::Blob(_) => 3,
    }
}

fn const_rank(c: Const<'_>) -> u8 {
    match c {
        Const::Null => 0,
        Const::Int(_) | Const::Real(_) => 1,
        Const::Text(_) => 2,
        Const::Blob(_) => 3,
    }
}
