//! The documented size limits of a subscription, and the checks that enforce them before
//! any tree is built: the text's length first, then one pass over the token stream that
//! counts terms, nesting and IN-list values. Whatever passes here is small enough for the
//! parser, the builder, binding, normalization and evaluation to stay fast and shallow.
//!
//! Pure: no IO. The pass is linear in the number of tokens and keeps only a stack of
//! counters per open parenthesis.

use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, TokenWithSpan, Word};

use super::error::{Pos, QueryError, QueryErrorKind};

/// The longest subscription text accepted, in bytes (64 KiB). Checked before anything
/// else, so a larger text costs one comparison.
pub const MAX_SUBSCRIPTION_BYTES: usize = 64 * 1024;

/// The most terms (comparisons, `IN`, `LIKE`, `GLOB`, truth tests; a `BETWEEN` counts as
/// two) in one subscription's WHERE clause. Counted on the tokens as one more than the
/// number of `AND` and `OR` keywords, before parsing.
pub const MAX_TERMS: usize = 1_000;

/// The deepest nesting of parentheses and prefix `NOT`s accepted. Counted on the tokens
/// before parsing: each open parenthesis (IN lists included) and each `NOT` that applies
/// to what follows it adds one, up to the `AND`/`OR` or `)` that ends its scope.
pub const MAX_DEPTH: usize = 64;

/// The most values in one `IN` list, written out in the text or bound to an `IN :param`.
pub const MAX_IN_LIST: usize = 1_000;

/// The longest LIKE/GLOB pattern accepted, in bytes, literal or bound to a parameter.
/// Matching a pattern against a text costs at most pattern × text steps (see
/// [`super::like`]), so this bounds the work one row costs one subscription.
pub const MAX_PATTERN_BYTES: usize = 1_000;

/// Refuses a text longer than [`MAX_SUBSCRIPTION_BYTES`], before it is tokenized.
pub(super) fn check_length(sql: &str) -> Result<(), QueryError> {
    if sql.len() > MAX_SUBSCRIPTION_BYTES {
        return Err(too_complex(
            format!(
                "subscription is {} bytes long; the limit is {MAX_SUBSCRIPTION_BYTES}",
                sql.len()
            ),
            Pos::START,
        ));
    }
    Ok(())
}

/// One open parenthesis during the pass.
struct Level {
    /// Prefix `NOT`s whose scope is still open at this level.
    nots: usize,
    /// Whether this parenthesis opens an `IN` list, and how many values it has so far.
    in_list: Option<usize>,
}

/// Refuses a token stream with more than [`MAX_TERMS`] terms, nesting deeper than
/// [`MAX_DEPTH`] or an IN list longer than [`MAX_IN_LIST`], at the first token past the
/// limit. Unbalanced parentheses are left for the parser to report.
pub(super) fn check_tokens(tokens: &[TokenWithSpan]) -> Result<(), QueryError> {
    let mut levels = vec![Level {
        nots: 0,
        in_list: None,
    }];
    // Open parentheses plus open prefix NOTs, i.e. the nesting at the current token.
    let mut depth = 0usize;
    let mut terms = 1usize;
    let mut previous: Option<&Token> = None;
    for t in tokens {
        if matches!(t.token, Token::Whitespace(_)) {
            continue;
        }
        let pos = || Pos::from_location(t.span.start);
        match &t.token {
            Token::LParen => {
                let in_list = previous.is_some_and(|p| is_keyword(p, Keyword::IN));
                levels.push(Level {
                    nots: 0,
                    in_list: in_list.then_some(1),
                });
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(pos()));
                }
            }
            Token::RParen if levels.len() > 1 => {
                let level = levels.pop().expect("more than one level");
                depth -= 1 + level.nots;
            }
            Token::Comma => {
                let top = levels.last_mut().expect("the base level stays");
                if let Some(values) = &mut top.in_list {
                    *values += 1;
                    if *values > MAX_IN_LIST {
                        return Err(too_complex(
                            format!("IN list longer than {MAX_IN_LIST} values"),
                            pos(),
                        ));
                    }
                }
            }
            token if is_keyword(token, Keyword::NOT) && prefix_position(previous) => {
                levels.last_mut().expect("the base level stays").nots += 1;
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(too_deep(pos()));
                }
            }
            token if is_keyword(token, Keyword::AND) || is_keyword(token, Keyword::OR) => {
                let top = levels.last_mut().expect("the base level stays");
                depth -= top.nots;
                top.nots = 0;
                terms += 1;
                if terms > MAX_TERMS {
                    return Err(too_complex(
                        format!("more than {MAX_TERMS} terms (comparisons joined by AND/OR)"),
                        pos(),
                    ));
                }
            }
            _ => {}
        }
        previous = Some(&t.token);
    }
    Ok(())
}

/// Whether a `NOT` after `previous` negates what follows (`NOT a`, `(NOT a`, `AND NOT a`)
/// rather than being part of an operator (`NOT IN`, `IS NOT`, `NOT LIKE`).
fn prefix_position(previous: Option<&Token>) -> bool {
    match previous {
        None | Some(Token::LParen) => true,
        Some(t) => [Keyword::WHERE, Keyword::AND, Keyword::OR, Keyword::NOT]
            .iter()
            .any(|k| is_keyword(t, *k)),
    }
}

fn is_keyword(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn too_deep(pos: Pos) -> QueryError {
    too_complex(
        format!("nested more than {MAX_DEPTH} levels deep (parentheses and NOT)"),
        pos,
    )
}

fn too_complex(message: String, pos: Pos) -> QueryError {
    QueryError::new(QueryErrorKind::TooComplex, message, pos)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tokenize;

    fn check(sql: &str) -> Result<(), QueryError> {
        check_length(sql)?;
        check_tokens(&tokenize(sql)?)
    }

    #[test]
    fn terms_are_counted_on_and_or() {
        let at_limit = vec!["a = 1"; MAX_TERMS].join(" OR ");
        assert!(check(&at_limit).is_ok());
        let over = vec!["a = 1"; MAX_TERMS + 1].join(" AND ");
        let e = check(&over).unwrap_err();
        assert_eq!(e.kind, QueryErrorKind::TooComplex);
        assert_eq!(e.pos.column, (MAX_TERMS * "a = 1 AND ".len() - 3) as u64);
    }

    #[test]
    fn depth_counts_parentheses_and_prefix_not_only() {
        let nested = |n: usize| format!("{}a = 1{}", "(".repeat(n), ")".repeat(n));
        assert!(check(&nested(MAX_DEPTH)).is_ok());
        assert!(check(&nested(MAX_DEPTH + 1)).is_err());
        let nots = |n: usize| format!("{}a", "NOT ".repeat(n));
        assert!(check(&nots(MAX_DEPTH)).is_ok());
        assert!(check(&nots(MAX_DEPTH + 1)).is_err());
        // NOT in an operator does not nest, and AND/OR ends a prefix NOT's scope.
        let operators = format!(
            "{}a IS NOT NULL AND b NOT IN (1){}",
            "(".repeat(62),
            ")".repeat(62)
        );
        assert!(check(&operators).is_ok());
        let scoped = vec!["NOT a"; 200].join(" AND ");
        assert!(check(&scoped).is_ok());
    }

    #[test]
    fn in_lists_and_length() {
        let list = |n: usize| format!("a IN ({})", vec!["1"; n].join(","));
        assert!(check(&list(MAX_IN_LIST)).is_ok());
        assert!(check(&list(MAX_IN_LIST + 1)).is_err());
        assert!(check(&"x".repeat(MAX_SUBSCRIPTION_BYTES)).is_ok());
        let e = check(&"x".repeat(MAX_SUBSCRIPTION_BYTES + 1)).unwrap_err();
        assert!(e.to_string().len() < 100);
    }
}
