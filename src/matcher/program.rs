//! A shape's predicate compiled into a flat byte program, evaluated without touching
//! anything behind a pointer: constants, `IN` lists and patterns sit inline, so a
//! candidate costs the cache line of its program and nothing more. Pure, no IO; depends
//! only on the predicate and value types (and on the query layer's LIKE/GLOB matcher for
//! patterns the fast forms do not cover).
//!
//! The program is a pre-order walk of the AND/OR tree: a group opens with the offset of
//! its closing op (so a decisive member jumps there, short-circuiting), leaves follow,
//! each folding its truth value into the innermost open group. Evaluation is a loop over
//! the bytes with a fixed-size stack of open groups: no recursion, no allocation (except
//! in the general LIKE/GLOB matcher and for the text of a number a pattern is matched
//! against), at most one step per byte. A predicate whose program would pass the limits
//! ([`MAX_PROGRAM_BYTES`], [`MAX_NESTING`], or a constant longer than `u16::MAX` bytes)
//! keeps its tree and is evaluated by [`Pred::eval`] instead.
//!
//! Semantics are those of [`Pred::eval`] exactly (SQLite's three-valued logic, cross-class
//! comparison, LIKE folding ASCII case only); the tests check the two agree on random
//! predicates and rows.

use crate::query::{CmpOp, Pred, Truth, TruthTest};
use crate::value::Value;

mod run;

use run::run;

/// Program bytes kept inline beside the shape id (one 64-byte line in all).
const INLINE_BYTES: usize = 54;
/// Longest program; a larger predicate is evaluated from its tree.
pub(super) const MAX_PROGRAM_BYTES: usize = u16::MAX as usize;
/// Deepest nesting of AND/OR groups a program may have (the evaluator's stack size).
pub(super) const MAX_NESTING: usize = 16;

const OP_AND: u8 = 0;
const OP_OR: u8 = 1;
const OP_CLOSE: u8 = 2;
const OP_CMP: u8 = 3;
const OP_IN: u8 = 4;
const OP_PATTERN: u8 = 5;
const OP_TRUTH: u8 = 6;

const TAG_NULL: u8 = 0;
const TAG_INT: u8 = 1;
const TAG_REAL: u8 = 2;
const TAG_TEXT: u8 = 3;
const TAG_BLOB: u8 = 4;

/// How a pattern is matched (the byte after `OP_PATTERN`'s column and negation).
const PAT_NULL: u8 = 0;
/// LIKE with an ASCII literal and no wildcard: equal, ASCII case folded.
const PAT_LIKE_EXACT: u8 = 1;
/// LIKE of an ASCII literal then one `%`: starts with, ASCII case folded.
const PAT_LIKE_PREFIX: u8 = 2;
/// GLOB with an ASCII literal and no wildcard: equal bytes.
const PAT_GLOB_EXACT: u8 = 3;
/// GLOB of an ASCII literal then one `*`: starts with.
const PAT_GLOB_PREFIX: u8 = 4;
/// Anything else: the query layer's LIKE (escape follows as a u32, `u32::MAX` for none).
const PAT_LIKE: u8 = 5;
/// Anything else: the query layer's GLOB.
const PAT_GLOB: u8 = 6;

const NO_ESCAPE: u32 = u32::MAX;

/// A compiled predicate.
#[derive(Debug)]
pub(super) enum Program {
    /// A short program, stored in place.
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    /// A longer one, behind one pointer.
    Spilled(Box<[u8]>),
    /// A predicate past the program limits, evaluated as a tree.
    Tree(Box<Pred>),
}

impl Program {
    /// The program of a free slot (never evaluated).
    pub(super) const VACANT: Program = Program::Inline {
        len: 0,
        bytes: [0; INLINE_BYTES],
    };

    /// Compiles `pred`; linear in its size, walks with an explicit stack.
    pub(super) fn compile(pred: &Pred) -> Program {
        match encode(pred) {
            Some(code) if code.len() <= INLINE_BYTES => {
                let mut bytes = [0; INLINE_BYTES];
                bytes[..code.len()].copy_from_slice(&code);
                Program::Inline {
                    len: code.len() as u8,
                    bytes,
                }
            }
            Some(code) => Program::Spilled(code.into_boxed_slice()),
            None => Program::Tree(Box::new(pred.clone())),
        }
    }

    /// The predicate's truth value on `row`, as [`Pred::eval`] computes it.
    pub(super) fn eval(&self, row: &[Value]) -> Truth {
        match self {
            Program::Inline { len, bytes } => run(&bytes[..*len as usize], row),
            Program::Spilled(code) => run(code, row),
            Program::Tree(pred) => pred.eval(row),
        }
    }

    /// `eval(row) == Truth::True`.
    pub(super) fn matches(&self, row: &[Value]) -> bool {
        self.eval(row) == Truth::True
    }

    /// Starts the cache miss of the program's out-of-line part, if it has one (see
    /// `Matcher::match_change`).
    pub(super) fn prefetch(&self) {
        if let Program::Spilled(code) = self {
            if let Some(first) = code.first() {
                super::prefetch::prefetch(first);
            }
        }
    }
}

/// The program of `pred`, or `None` past the limits. Explicit stack, no recursion.
fn encode(pred: &Pred) -> Option<Vec<u8>> {
    enum Step<'a> {
        Enter(&'a Pred),
        /// Close the group whose end offset is stored at this position.
        Close(usize),
    }
    let mut code = Vec::new();
    let mut work = vec![Step::Enter(pred)];
    let mut depth = 0;
    while let Some(step) = work.pop() {
        match step {
            Step::Enter(group @ (Pred::And(children) | Pred::Or(children))) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return None;
                }
                code.push(if matches!(group, Pred::And(_)) {
                    OP_AND
                } else {
                    OP_OR
                });
                let at = code.len();
                code.extend_from_slice(&[0, 0]);
                work.push(Step::Close(at));
                work.extend(children.iter().rev().map(Step::Enter));
            }
            Step::Enter(leaf) => leaf_code(leaf, &mut code)?,
            Step::Close(at) => {
                depth -= 1;
                let end = u16::try_from(code.len()).ok()?;
                code[at..at + 2].copy_from_slice(&end.to_le_bytes());
                code.push(OP_CLOSE);
            }
        }
        if code.len() > MAX_PROGRAM_BYTES {
            return None;
        }
    }
    Some(code)
}

/// Appends the code of one leaf; `None` when a constant is too long to encode.
fn leaf_code(leaf: &Pred, code: &mut Vec<u8>) -> Option<()> {
    match leaf {
        Pred::And(_) | Pred::Or(_) => unreachable!("groups are walked by `encode`"),
        Pred::Cmp { col, op, value } => {
            code.push(OP_CMP);
            push_col(code, *col)?;
            code.push(op_code(*op));
            push_const(code, value)?;
        }
        Pred::In {
            col,
            values,
            negated,
        } => {
            code.push(OP_IN);
            push_col(code, *col)?;
            code.push(u8::from(*negated));
            code.extend_from_slice(&u16::try_from(values.len()).ok()?.to_le_bytes());
            for value in values {
                push_const(code, value)?;
            }
        }
        Pred::Like {
            col,
            pattern,
            escape,
            negated,
        } => push_pattern(
            code,
            (*col, *negated),
            pattern.as_deref(),
            |p| literal_form(p, b'%', b"%_", *escape),
            [PAT_LIKE_EXACT, PAT_LIKE_PREFIX, PAT_LIKE],
            &escape.map_or(NO_ESCAPE, |c| c as u32).to_le_bytes(),
        )?,
        Pred::Glob {
            col,
            pattern,
            negated,
        } => push_pattern(
            code,
            (*col, *negated),
            pattern.as_deref(),
            |p| literal_form(p, b'*', b"*?[", None),
            [PAT_GLOB_EXACT, PAT_GLOB_PREFIX, PAT_GLOB],
            &[],
        )?,
        Pred::Truth { col, test } => {
            code.push(OP_TRUTH);
            push_col(code, *col)?;
            code.push(test_code(*test));
        }
    }
    Some(())
}

/// A pattern that is an ASCII literal (no NUL, no special byte, no escape character)
/// optionally followed by one `all` wildcard: the literal and whether the wildcard
/// follows. Such a pattern matches a text exactly when the text's first bytes equal the
/// literal (ASCII case folded for LIKE) and, without the wildcard, nothing but a NUL or
/// the end follows: a decoded character is ASCII exactly when its first byte is, and the
/// text ends at its first NUL. An escape character equal to a wildcard switches that
/// wildcard off, so such patterns take the general path.
fn literal_form<'a>(
    pattern: &'a [u8],
    all: u8,
    special: &[u8],
    escape: Option<char>,
) -> Option<(&'a [u8], bool)> {
    if let Some(e) = escape {
        if e == '%' || e == '_' || (e.is_ascii() && pattern.contains(&(e as u8))) {
            return None;
        }
    }
    let (literal, prefix) = match pattern.split_last() {
        Some((&last, rest)) if last == all => (rest, true),
        _ => (pattern, false),
    };
    let plain = |b: &u8| *b != 0 && b.is_ascii() && !special.contains(b);
    literal.iter().all(plain).then_some((literal, prefix))
}

/// Emits a pattern test of `col` (negated or not): a NULL pattern, the pattern as a
/// literal when `literal` finds one (`exact` or `prefix` kind), or else the whole pattern
/// (`general` kind, then `operands`, then the pattern).
fn push_pattern<'a>(
    code: &mut Vec<u8>,
    (col, negated): (usize, bool),
    pattern: Option<&'a [u8]>,
    literal: impl FnOnce(&'a [u8]) -> Option<(&'a [u8], bool)>,
    [exact, prefix, general]: [u8; 3],
    operands: &[u8],
) -> Option<()> {
    code.push(OP_PATTERN);
    push_col(code, col)?;
    code.push(u8::from(negated));
    let Some(p) = pattern else {
        code.push(PAT_NULL);
        return Some(());
    };
    match literal(p) {
        Some((literal, is_prefix)) => {
            code.push(if is_prefix { prefix } else { exact });
            push_bytes(code, literal)
        }
        None => {
            code.push(general);
            code.extend_from_slice(operands);
            push_bytes(code, p)
        }
    }
}

fn push_col(code: &mut Vec<u8>, col: usize) -> Option<()> {
    code.extend_from_slice(&u16::try_from(col).ok()?.to_le_bytes());
    Some(())
}

fn push_bytes(code: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    code.extend_from_slice(&u16::try_from(bytes.len()).ok()?.to_le_bytes());
    code.extend_from_slice(bytes);
    Some(())
}

fn push_const(code: &mut Vec<u8>, value: &Value) -> Option<()> {
    match value {
        Value::Null => code.push(TAG_NULL),
        Value::Integer(i) => {
            code.push(TAG_INT);
            code.extend_from_slice(&i.to_le_bytes());
        }
        Value::Real(r) => {
            code.push(TAG_REAL);
            code.extend_from_slice(&r.to_bits().to_le_bytes());
        }
        Value::Text(s) => {
            code.push(TAG_TEXT);
            push_bytes(code, s.as_bytes())?;
        }
        Value::Blob(b) => {
            code.push(TAG_BLOB);
            push_bytes(code, b)?;
        }
    }
    Some(())
}

const CMP_OPS: [CmpOp; 8] = [
    CmpOp::Eq,
    CmpOp::Ne,
    CmpOp::Lt,
    CmpOp::Le,
    CmpOp::Gt,
    CmpOp::Ge,
    CmpOp::Is,
    CmpOp::IsNot,
];

fn op_code(op: CmpOp) -> u8 {
    CMP_OPS
        .iter()
        .position(|o| *o == op)
        .expect("every operator is listed") as u8
}

const TRUTH_TESTS: [TruthTest; 6] = [
    TruthTest::Bare,
    TruthTest::NotBare,
    TruthTest::IsTrue,
    TruthTest::IsNotTrue,
    TruthTest::IsFalse,
    TruthTest::IsNotFalse,
];

fn test_code(test: TruthTest) -> u8 {
    TRUTH_TESTS
        .iter()
        .position(|t| *t == test)
        .expect("every test is listed") as u8
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn cmp_leaf(col: usize, op: CmpOp, value: Value) -> Pred {
        Pred::Cmp { col, op, value }
    }

    fn like_leaf(col: usize, pattern: &str, escape: Option<char>, negated: bool) -> Pred {
        Pred::Like {
            col,
            pattern: Some(pattern.as_bytes().to_vec()),
            escape,
            negated,
        }
    }

    /// Asserts the program and the tree agree on `row`, and returns the value.
    fn both(pred: &Pred, row: &[Value]) -> Truth {
        let want = pred.eval(row);
        assert_eq!(
            Program::compile(pred).eval(row),
            want,
            "{pred:?} on {row:?}"
        );
        want
    }

    #[test]
    fn three_valued_logic_of_null_operands() {
        let null = [Value::Null];
        let one = [Value::Integer(1)];
        let eq_null = cmp_leaf(0, CmpOp::Eq, Value::Null);
        assert_eq!(both(&eq_null, &one), Truth::Null);
        assert_eq!(
            both(&cmp_leaf(0, CmpOp::Is, Value::Null), &null),
            Truth::True
        );
        assert_eq!(
            both(&cmp_leaf(0, CmpOp::IsNot, Value::Null), &one),
            Truth::True
        );
        let in_with_null = Pred::In {
            col: 0,
            values: vec![Value::Null, Value::Integer(2)],
            negated: true,
        };
        assert_eq!(both(&in_with_null, &one), Truth::Null);
        assert_eq!(both(&in_with_null, &[Value::Integer(2)]), Truth::False);
        let empty_in = Pred::In {
            col: 0,
            values: Vec::new(),
            negated: false,
        };
        assert_eq!(both(&empty_in, &null), Truth::False);
        // NULL AND FALSE is FALSE; NULL OR TRUE is TRUE; NULL AND TRUE is NULL.
        let f = cmp_leaf(0, CmpOp::Eq, Value::Integer(2));
        let t = cmp_leaf(0, CmpOp::Eq, Value::Integer(1));
        assert_eq!(
            both(&Pred::And(vec![eq_null.clone(), f.clone()]), &one),
            Truth::False
        );
        assert_eq!(
            both(&Pred::Or(vec![eq_null.clone(), t.clone()]), &one),
            Truth::True
        );
        assert_eq!(
            both(&Pred::And(vec![eq_null.clone(), t]), &one),
            Truth::Null
        );
        assert_eq!(both(&Pred::Or(vec![f, eq_null]), &one), Truth::Null);
        assert_eq!(both(&Pred::TRUE, &null), Truth::True);
        let null_pattern = Pred::Glob {
            col: 0,
            pattern: None,
            negated: true,
        };
        assert_eq!(both(&null_pattern, &[Value::Text("a".into())]), Truth::Null);
    }

    #[test]
    fn comparison_follows_the_cross_class_order() {
        let rows = [
            Value::Integer(1),
            Value::Real(1.0),
            Value::Real(-0.0),
            Value::Real(f64::NAN),
            Value::Text("1".into()),
            Value::Blob(b"1".to_vec()),
            Value::Integer(i64::MAX),
        ];
        let constants = [
            Value::Integer(1),
            Value::Real(1.0),
            Value::Integer(0),
            Value::Real(9_223_372_036_854_775_808.0),
            Value::Text("1".into()),
            Value::Blob(b"1".to_vec()),
        ];
        for row in &rows {
            for c in &constants {
                for op in CMP_OPS {
                    both(&cmp_leaf(0, op, c.clone()), std::slice::from_ref(row));
                }
            }
        }
    }

    #[test]
    fn literal_patterns_take_the_fast_forms() {
        let mode = |pred: &Pred| match Program::compile(pred) {
            Program::Inline { bytes, .. } => bytes[4],
            other => panic!("inline expected, got {other:?}"),
        };
        assert_eq!(mode(&like_leaf(0, "Ab%", None, false)), PAT_LIKE_PREFIX);
        assert_eq!(mode(&like_leaf(0, "Ab", Some('!'), false)), PAT_LIKE_EXACT);
        assert_eq!(mode(&like_leaf(0, "a!%", Some('!'), false)), PAT_LIKE);
        assert_eq!(mode(&like_leaf(0, "a%", Some('%'), false)), PAT_LIKE);
        assert_eq!(mode(&like_leaf(0, "a_%", None, false)), PAT_LIKE);
        assert_eq!(mode(&like_leaf(0, "é%", None, false)), PAT_LIKE);
        let glob = |p: &str| Pred::Glob {
            col: 0,
            pattern: Some(p.as_bytes().to_vec()),
            negated: false,
        };
        assert_eq!(mode(&glob("ab*")), PAT_GLOB_PREFIX);
        assert_eq!(mode(&glob("a]b")), PAT_GLOB_EXACT);
        assert_eq!(mode(&glob("a[b]*")), PAT_GLOB);
    }

    #[test]
    fn like_folds_ascii_case_only_and_texts_end_at_nul() {
        let cases = [
            ("ab%", "ABC"),
            ("ab%", "aB"),
            ("ab%", "a"),
            ("ab", "AB"),
            ("ab", "ab\0zz"),
            ("ab", "abc"),
            ("ab%", "a\0b"),
            ("%", ""),
            ("", ""),
            ("", "\0x"),
            ("e%", "é"),
            ("1%", "1.5"),
        ];
        for (pattern, text) in cases {
            for negated in [false, true] {
                let pred = like_leaf(0, pattern, None, negated);
                both(&pred, &[Value::Text(text.into())]);
                both(&pred, &[Value::Blob(text.as_bytes().to_vec())]);
            }
        }
        let number = like_leaf(0, "1%", None, false);
        assert_eq!(both(&number, &[Value::Real(1.5)]), Truth::True);
        assert_eq!(both(&number, &[Value::Integer(21)]), Truth::False);
    }

    #[test]
    fn large_predicates_spill_and_deep_ones_keep_their_tree() {
        let values = (0..40).map(|i| Value::Text(format!("user-{i}"))).collect();
        let big = Pred::In {
            col: 0,
            values,
            negated: false,
        };
        assert!(matches!(Program::compile(&big), Program::Spilled(_)));
        assert_eq!(both(&big, &[Value::Text("user-39".into())]), Truth::True);
        let mut deep = cmp_leaf(0, CmpOp::Eq, Value::Integer(0));
        for i in 0..=MAX_NESTING {
            deep = if i % 2 == 0 {
                Pred::And(vec![cmp_leaf(0, CmpOp::Ge, Value::Integer(0)), deep])
            } else {
                Pred::Or(vec![cmp_leaf(0, CmpOp::Eq, Value::Integer(7)), deep])
            };
        }
        assert!(matches!(Program::compile(&deep), Program::Tree(_)));
        assert_eq!(both(&deep, &[Value::Integer(0)]), Truth::True);
        let long = Value::Text("x".repeat(70_000));
        let too_long = cmp_leaf(0, CmpOp::Eq, long.clone());
        assert!(matches!(Program::compile(&too_long), Program::Tree(_)));
        assert_eq!(both(&too_long, &[long]), Truth::True);
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            (-3i64..4).prop_map(Value::Integer),
            prop_oneof![Just(i64::MAX), Just(i64::MIN)].prop_map(Value::Integer),
            prop_oneof![
                Just(1.0),
                Just(-0.0),
                Just(2.5),
                Just(f64::NAN),
                Just(9_223_372_036_854_775_808.0),
                (-3i32..4).prop_map(f64::from),
            ]
            .prop_map(Value::Real),
            prop_oneof![
                Just(""),
                Just("1"),
                Just("a"),
                Just("A"),
                Just("ab"),
                Just("AB"),
                Just("abc"),
                Just("ab\0c"),
                Just("é"),
                Just("Éa"),
                Just("2.5"),
                Just("%"),
                Just("_"),
            ]
            .prop_map(|s| Value::Text(s.into())),
            prop_oneof![
                Just(&b""[..]),
                Just(&b"1"[..]),
                Just(&b"ab"[..]),
                Just(&b"\xff"[..])
            ]
            .prop_map(|b| Value::Blob(b.to_vec())),
        ]
    }

    fn pattern() -> impl Strategy<Value = Option<Vec<u8>>> {
        prop_oneof![
            Just(None),
            prop_oneof![
                Just("a%"),
                Just("A%"),
                Just("ab%"),
                Just("ab"),
                Just("AB"),
                Just("%"),
                Just(""),
                Just("a_%"),
                Just("%b"),
                Just("a!%%"),
                Just("ab*"),
                Just("a*"),
                Just("*"),
                Just("[a]b*"),
                Just("a?"),
                Just("é%"),
                Just("1%"),
                Just("2.5"),
                Just("a]"),
            ]
            .prop_map(|p| Some(p.as_bytes().to_vec())),
        ]
    }

    const COLS: usize = 3;

    fn leaf() -> impl Strategy<Value = Pred> {
        let col = 0..COLS;
        prop_oneof![
            (col.clone(), 0..CMP_OPS.len(), value()).prop_map(|(col, op, value)| cmp_leaf(
                col,
                CMP_OPS[op],
                value
            )),
            (
                col.clone(),
                prop::collection::vec(value(), 0..4),
                any::<bool>()
            )
                .prop_map(|(col, values, negated)| Pred::In {
                    col,
                    values,
                    negated
                }),
            (
                col.clone(),
                pattern(),
                prop_oneof![
                    Just(None),
                    Just(Some('!')),
                    Just(Some('%')),
                    Just(Some('é'))
                ],
                any::<bool>()
            )
                .prop_map(|(col, pattern, escape, negated)| Pred::Like {
                    col,
                    pattern,
                    escape,
                    negated
                }),
            (col.clone(), pattern(), any::<bool>()).prop_map(|(col, pattern, negated)| {
                Pred::Glob {
                    col,
                    pattern,
                    negated,
                }
            }),
            (col, 0..TRUTH_TESTS.len()).prop_map(|(col, t)| Pred::Truth {
                col,
                test: TRUTH_TESTS[t]
            }),
        ]
    }

    fn pred() -> impl Strategy<Value = Pred> {
        leaf().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Pred::And),
                prop::collection::vec(inner, 1..4).prop_map(Pred::Or),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The compiled program agrees with the tree evaluator (itself checked against
        /// SQLite by the differential tests) on random predicates and rows.
        #[test]
        fn programs_agree_with_the_tree_evaluator(
            pred in pred(),
            rows in prop::collection::vec(prop::collection::vec(value(), COLS), 1..6),
        ) {
            let program = Program::compile(&pred);
            prop_assert!(!matches!(program, Program::Tree(_)));
            for row in &rows {
                prop_assert_eq!(program.eval(row), pred.eval(row), "{:?} on {:?}", pred, row);
            }
        }
    }
}
