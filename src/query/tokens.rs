//! The tokenizer of the subscription language and of the permission rules file
//! ([`tokenize`], sqlparser's with the SQLite dialect), and the token pass before
//! sqlparser parses a subscription: adds what SQLite has and sqlparser's SQLite dialect
//! lacks (`:name` / `:a.b` parameters, `IN :param`, `GLOB`, `IS <value>` with the
//! precedence of `=`, hex integer literals), keeping every token's position so errors
//! still point at what the user wrote.

use sqlparser::dialect::SQLiteDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer, Word};

use super::error::{snippet, Pos, QueryError, QueryErrorKind};

/// Placeholder prefix the token pass gives to the parameter of `IN :param`.
pub(super) const ARRAY_PARAM: &str = "[]";
/// The token standing for `IS <value>` after the token pass (SQLite has no `<=>`; a
/// user-typed one is refused before the pass).
const IS_OPERATOR: Token = Token::Spaceship;
/// The token standing for `IS NOT <value>` (SQLite has no `!~~`; refused likewise).
const IS_NOT_OPERATOR: Token = Token::ExclamationMarkDoubleTilde;

/// Splits SQL text into SQLite tokens, each with its span (1-based line and column,
/// columns counted in characters; a span's end is just past its last character).
/// Whitespace and comments are tokens too. The subscription parser and the permission
/// rules file both read their text through this.
///
/// Linear in the length of the text. Errors: a malformed token (an unterminated string
/// or quoted name, a bad number) as [`QueryErrorKind::Syntax`] at its position.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, QueryError> {
    Tokenizer::new(&SQLiteDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            QueryError::new(
                QueryErrorKind::Syntax,
                e.message.clone(),
                Pos::from_location(e.location),
            )
        })
}

fn token(token: Token, span: Span) -> TokenWithSpan {
    TokenWithSpan { token, span }
}

fn keyword(word: &str, span: Span) -> TokenWithSpan {
    token(Token::make_keyword(word), span)
}

fn is_keyword(t: &Token, kw: Keyword) -> bool {
    matches!(t, Token::Word(Word { keyword, quote_style: None, .. }) if *keyword == kw)
}

fn is_word(t: &Token, text: &str) -> bool {
    matches!(t, Token::Word(Word { value, quote_style: None, .. }) if value.eq_ignore_ascii_case(text))
}

/// The token pass described in the module docs.
pub(super) fn rewrite_tokens(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>, QueryError> {
    // 1. `:name` and `:a.b.c` become one placeholder token.
    let mut merged: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut iter = tokens.into_iter().peekable();
    while let Some(t) = iter.next() {
        match &t.token {
            Token::Colon => {
                let adjacent_word = matches!(
                    iter.peek(),
                    Some(TokenWithSpan { token: Token::Word(w), span })
                        if w.quote_style.is_none() && span.start == t.span.end
                );
                if !adjacent_word {
                    merged.push(t);
                    continue;
                }
                let Some(TokenWithSpan {
                    token: Token::Word(w),
                    span,
                }) = iter.next()
                else {
                    unreachable!("peeked a word")
                };
                let mut name = format!(":{}", w.value);
                let mut end = span.end;
                loop {
                    let dot = matches!(iter.peek(), Some(n) if n.token == Token::Period && n.span.start == end);
                    if !dot {
                        break;
                    }
                    let dot = iter.next().expect("peeked");
                    match iter.next() {
                        Some(TokenWithSpan {
                            token: Token::Word(w),
                            span,
                        }) if w.quote_style.is_none() && span.start == dot.span.end => {
                            name.push('.');
                            name.push_str(&w.value);
                            end = span.end;
                        }
                        _ => {
                            return Err(QueryError::new(
                                QueryErrorKind::Syntax,
                                format!("parameter {}. must continue with a name", snippet(&name)),
                                Pos::from_location(dot.span.start),
                            ))
                        }
                    }
                }
                merged.push(token(
                    Token::Placeholder(name),
                    Span::new(t.span.start, end),
                ));
            }
            // sqlparser reads SQLite's hex integer `0x1F` as a blob literal `x'1F'`; tell
            // them apart by width (`0x1F` is two characters shorter than its digits plus
            // the quotes of `x'1F'`).
            Token::HexStringLiteral(hex)
                if t.span.start.line == t.span.end.line
                    && t.span.end.column.saturating_sub(t.span.start.column)
                        == hex.chars().count() as u64 + 2 =>
            {
                let negated = preceded_by_minus(&merged);
                merged.push(token(hex_integer(hex, negated, t.span)?, t.span));
            }
            // `0X1F` (upper-case X) comes out as the number 0 followed by the word `X1F`.
            Token::Number(zero, false)
                if zero == "0"
                    && matches!(
                        iter.peek(),
                        Some(TokenWithSpan { token: Token::Word(w), span })
                            if w.quote_style.is_none()
                                && span.start == t.span.end
                                && w.value.starts_with('X')
                    ) =>
            {
                let Some(TokenWithSpan {
                    token: Token::Word(w),
                    span,
                }) = iter.next()
                else {
                    unreachable!("peeked a word")
                };
                let whole = Span::new(t.span.start, span.end);
                let negated = preceded_by_minus(&merged);
                merged.push(token(hex_integer(&w.value[1..], negated, whole)?, whole));
            }
            Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("ISNULL") => {
                // SQLite's postfix `ISNULL` is `IS NULL` (sqlparser knows only NOTNULL).
                let space = Token::Whitespace(sqlparser::tokenizer::Whitespace::Space);
                merged.push(keyword("IS", t.span));
                merged.push(token(space, t.span));
                merged.push(keyword("NULL", t.span));
            }
            Token::Spaceship | Token::ExclamationMarkDoubleTilde => {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!(
                        "operator `{}` is not supported",
                        snippet(&t.token.to_string())
                    ),
                    Pos::from_location(t.span.start),
                ))
            }
            Token::Placeholder(p) => {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!(
                        "parameter {} is not supported; name parameters like :team",
                        snippet(p)
                    ),
                    Pos::from_location(t.span.start),
                ))
            }
            Token::Word(_)
                if is_word(&t.token, "SIMILAR")
                    || is_word(&t.token, "REGEXP")
                    || is_word(&t.token, "MATCH") =>
            {
                return Err(QueryError::new(
                    QueryErrorKind::Unsupported,
                    format!(
                        "{} is not supported",
                        snippet(&t.token.to_string().to_uppercase())
                    ),
                    Pos::from_location(t.span.start),
                ))
            }
            _ => merged.push(t),
        }
    }
    // 2. IN :p -> IN ( [] :p ); GLOB -> SIMILAR TO; IS <value> -> IS NOT DISTINCT FROM.
    let significant: Vec<usize> = merged
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(i, _)| i)
        .collect();
    // `significant` is sorted, so the neighbours of a token are found by binary search:
    // the pass stays linear-logarithmic however many IN and IS tokens there are.
    let next_index = |i: usize| significant.get(significant.partition_point(|&j| j <= i));
    let next_sig = |i: usize| -> Option<&TokenWithSpan> { next_index(i).map(|&j| &merged[j]) };
    let mut out = Vec::with_capacity(merged.len() + 4);
    let mut skip_tokens = vec![false; merged.len()];
    for (i, t) in merged.iter().enumerate() {
        let span = t.span;
        if is_keyword(&t.token, Keyword::IN) {
            if let Some(TokenWithSpan {
                token: Token::Placeholder(_),
                ..
            }) = next_sig(i)
            {
                out.push(t.clone());
                out.push(token(Token::LParen, span));
                // The placeholder itself is renamed when it is reached.
                continue;
            }
        }
        if let Token::Placeholder(name) = &t.token {
            let before = significant.partition_point(|&j| j < i);
            let after_in = before
                .checked_sub(1)
                .is_some_and(|k| is_keyword(&merged[significant[k]].token, Keyword::IN));
            if after_in {
                out.push(token(
                    Token::Placeholder(format!("{ARRAY_PARAM}{name}")),
                    span,
                ));
                out.push(token(Token::RParen, span));
                continue;
            }
        }
        if is_word(&t.token, "GLOB") {
            out.push(keyword("SIMILAR", span));
            out.push(token(
                Token::Whitespace(sqlparser::tokenizer::Whitespace::Space),
                span,
            ));
            out.push(keyword("TO", span));
            continue;
        }
        if is_keyword(&t.token, Keyword::IS) {
            // `IS [NOT] <value>` and `IS [NOT] DISTINCT FROM <value>` become one operator
            // token. sqlparser's own `IS [NOT] DISTINCT FROM` parses its right side as a
            // whole expression, so `a IS 5 AND b = 1` would swallow `5 AND b = 1`; the
            // operator tokens below have comparison precedence instead. SQLite gives IS
            // the precedence of `=`.
            let mut j = i;
            let mut negated = false;
            let mut next = next_sig(j);
            let mut skip = Vec::new();
            if next.is_some_and(|n| is_keyword(&n.token, Keyword::NOT)) {
                negated = true;
                j = next_index(j).copied().unwrap_or(j);
                skip.push(j);
                next = next_sig(j);
            }
            let distinct_from = next.is_some_and(|n| is_keyword(&n.token, Keyword::DISTINCT))
                && next_index(j)
                    .copied()
                    .and_then(next_sig)
                    .is_some_and(|n| is_keyword(&n.token, Keyword::FROM));
            if distinct_from {
                // `IS DISTINCT FROM` is `IS NOT`; `IS NOT DISTINCT FROM` is `IS`.
                negated = !negated;
                for _ in 0..2 {
                    j = next_index(j).copied().unwrap_or(j);
                    skip.push(j);
                }
            }
            let special = !distinct_from
                && next.is_none_or(|n| {
                    [
                        Keyword::NULL,
                        Keyword::TRUE,
                        Keyword::FALSE,
                        Keyword::DISTINCT,
                        Keyword::UNKNOWN,
                    ]
                    .iter()
                    .any(|k| is_keyword(&n.token, *k))
                });
            if !special {
                out.push(token(
                    if negated {
                        IS_NOT_OPERATOR
                    } else {
                        IS_OPERATOR
                    },
                    span,
                ));
                for k in skip {
                    skip_tokens[k] = true;
                }
                continue;
            }
        }
        if skip_tokens[i] {
            continue;
        }
        out.push(t.clone());
    }
    Ok(out)
}

/// The integer of a SQLite hex literal's digits: 64-bit two's complement, so
/// `0xFFFFFFFFFFFFFFFF` is -1; more than 16 significant digits is an error, as in SQLite.
///
/// SQLite also refuses `-0x8000000000000000` (a negated hex literal whose value is the
/// smallest integer), so `negated` says whether a unary minus applies directly.
fn hex_integer(digits: &str, negated: bool, span: Span) -> Result<Token, QueryError> {
    const MAX_HEX_DIGITS: usize = 16;
    let malformed = |message: String| {
        Err(QueryError::new(
            QueryErrorKind::Syntax,
            message,
            Pos::from_location(span.start),
        ))
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return malformed(format!("malformed hex integer 0x{}", snippet(digits)));
    }
    let significant = digits.trim_start_matches('0');
    let value = match u64::from_str_radix(digits, 16) {
        Ok(v) if significant.len() <= MAX_HEX_DIGITS && !(negated && v as i64 == i64::MIN) => v,
        _ => {
            let sign = if negated { "-" } else { "" };
            return malformed(format!("hex literal too big: {sign}0x{}", snippet(digits)));
        }
    };
    Ok(Token::Number((value as i64).to_string(), false))
}

/// Whether the tokens so far end with a unary minus, looking through opening parentheses
/// (SQLite has no node for parentheses, so `-(x)` negates `x` directly).
fn preceded_by_minus(tokens: &[TokenWithSpan]) -> bool {
    tokens
        .iter()
        .rev()
        .find(|t| !matches!(t.token, Token::Whitespace(_) | Token::LParen))
        .is_some_and(|t| t.token == Token::Minus)
}
