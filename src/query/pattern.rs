//! LIKE and GLOB pattern matching with SQLite's exact rules (`patternCompare` in
//! SQLite's `func.c`): `%`/`_` and `*`/`?`/`[...]`, LIKE case-insensitive for ASCII only,
//! strings ending at the first NUL as SQLite's C strings do.
//!
//! SQLite recurses once per `%`; this walk does not recurse at all and costs at most
//! pattern × string steps (see [`compare`]), so neither a pattern of many `%` nor a long
//! text can exhaust the stack. Patterns are bounded by [`super::MAX_PATTERN_BYTES`].

/// Decodes bytes into code points the way `sqlite3Utf8Read` does (lenient with invalid
/// sequences), stopping at the first NUL.
fn decode(bytes: &[u8]) -> Vec<u32> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i] as u32;
        i += 1;
        if b == 0 {
            break;
        }
        if b < 0xc0 {
            out.push(b);
            continue;
        }
        let mut c = match b {
            0xc0..=0xdf => b & 0x1f,
            0xe0..=0xef => b & 0x0f,
            0xf0..=0xf7 => b & 0x07,
            0xf8..=0xfb => b & 0x03,
            0xfc..=0xfd => b & 0x01,
            _ => 0,
        };
        while i < bytes.len() && (bytes[i] & 0xc0) == 0x80 {
            c = (c << 6) + (bytes[i] as u32 & 0x3f);
            i += 1;
        }
        if c < 0x80 || (c & 0xffff_f800) == 0xd800 || (c & 0xffff_fffe) == 0xfffe {
            c = 0xfffd;
        }
        out.push(c);
    }
    out
}

/// A "character" no pattern contains, for a wildcard role that is switched off (decoded
/// code points never exceed 31 bits).
const NO_CHAR: u32 = u32::MAX;

/// Which characters play which role in a pattern.
struct Rules {
    match_one: u32,
    match_all: u32,
    /// The escape character for LIKE, `[` for GLOB, 0 for none.
    match_other: u32,
    glob_sets: bool,
    no_case: bool,
}

/// One element of a pattern. Every element but [`Token::Any`] matches exactly one
/// character.
enum Token {
    /// `%` / `*`: any run of characters, the empty one included.
    Any,
    /// `_` / `?`: any one character.
    One,
    /// A literal character (an escaped wildcard included).
    Lit(u32),
    /// A GLOB set `[...]`: inclusive ranges (a single character is a range of one).
    Set {
        ranges: Vec<(u32, u32)>,
        invert: bool,
    },
}

fn lower(c: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&c) {
        c + 32
    } else {
        c
    }
}

impl Token {
    fn matches(&self, c: u32, rules: &Rules) -> bool {
        match self {
            Token::Any | Token::One => true,
            Token::Lit(l) => {
                *l == c || (rules.no_case && *l < 0x80 && c < 0x80 && lower(*l) == lower(c))
            }
            Token::Set { ranges, invert } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *invert
            }
        }
    }
}

/// Splits a decoded pattern into tokens, reading escapes and sets exactly as SQLite's
/// `patternCompare` does. `None` when the pattern can match nothing: an escape character
/// at its end, or a set with no closing `]` (SQLite fails on reaching either, and every
/// match reaches every part of the pattern). Runs of `%` collapse into one.
fn tokens(pattern: &[u32], rules: &Rules) -> Option<Vec<Token>> {
    let at = |i: usize| pattern.get(i).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(pattern.len());
    let mut p = 0;
    while p < pattern.len() {
        let c = pattern[p];
        p += 1;
        if c == rules.match_all {
            if !matches!(out.last(), Some(Token::Any)) {
                out.push(Token::Any);
            }
        } else if c == rules.match_one {
            out.push(Token::One);
        } else if c == rules.match_other && !rules.glob_sets {
            let escaped = at(p);
            p += 1;
            if escaped == 0 {
                return None;
            }
            out.push(Token::Lit(escaped));
        } else if c == rules.match_other {
            let mut ranges = Vec::new();
            let mut invert = false;
            let mut prior: u32 = 0;
            let mut c2 = at(p);
            p += 1;
            if c2 == '^' as u32 {
                invert = true;
                c2 = at(p);
                p += 1;
            }
            if c2 == ']' as u32 {
                ranges.push((c2, c2));
                c2 = at(p);
                p += 1;
            }
            while c2 != 0 && c2 != ']' as u32 {
                let next = at(p);
                if c2 == '-' as u32 && next != ']' as u32 && next != 0 && prior > 0 {
                    p += 1;
                    ranges.push((prior, next));
                    prior = 0;
                } else {
                    ranges.push((c2, c2));
                    prior = c2;
                }
                c2 = at(p);
                p += 1;
            }
            if c2 == 0 {
                return None;
            }
            out.push(Token::Set { ranges, invert });
        } else {
            out.push(Token::Lit(c));
        }
    }
    Some(out)
}

/// Whether the whole `string` matches the whole `pattern`, without recursion: the
/// classic two-pointer walk that, on a mismatch, lets the most recent `%` swallow one
/// more character and retries from just after it. Only the most recent `%` ever needs
/// to move, because every other token matches exactly one character. The position the
/// `%` retries from never moves backwards, so the cost is at most the length of the
/// string times the longest run of tokens between two `%` (pattern × string in the
/// worst case), with no allocation besides the decoded inputs.
fn compare(pattern: &[u32], string: &[u32], rules: &Rules) -> bool {
    let Some(tokens) = tokens(pattern, rules) else {
        return false;
    };
    let (mut t, mut s) = (0usize, 0usize);
    // (token just after the most recent `%`, string position that `%` stops before).
    let mut star: Option<(usize, usize)> = None;
    loop {
        match tokens.get(t) {
            Some(Token::Any) => {
                if t + 1 == tokens.len() {
                    return true;
                }
                star = Some((t + 1, s));
                t += 1;
                continue;
            }
            Some(token) if s < string.len() && token.matches(string[s], rules) => {
                t += 1;
                s += 1;
                continue;
            }
            Some(_) => {}
            None if s == string.len() => return true,
            None => {}
        }
        match star {
            Some((after, from)) if from < string.len() => {
                star = Some((after, from + 1));
                t = after;
                s = from + 1;
            }
            _ => return false,
        }
    }
}

/// `string LIKE pattern [ESCAPE escape]`, on the text bytes SQLite would see.
pub fn like(pattern: &[u8], string: &[u8], escape: Option<char>) -> bool {
    let escape = escape.map(|c| c as u32);
    // As in SQLite's `likeFunc`: an escape character equal to `%` or `_` stops that
    // character from being a wildcard, so `'%' ESCAPE '%'` matches nothing.
    let unless_escape = |wildcard: char| {
        if escape == Some(wildcard as u32) {
            NO_CHAR
        } else {
            wildcard as u32
        }
    };
    let rules = Rules {
        match_one: unless_escape('_'),
        match_all: unless_escape('%'),
        match_other: escape.unwrap_or(0),
        glob_sets: false,
        no_case: true,
    };
    compare(&decode(pattern), &decode(string), &rules)
}

/// `string GLOB pattern`.
pub fn glob(pattern: &[u8], string: &[u8]) -> bool {
    let rules = Rules {
        match_one: '?' as u32,
        match_all: '*' as u32,
        match_other: '[' as u32,
        glob_sets: true,
        no_case: false,
    };
    compare(&decode(pattern), &decode(string), &rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_is_case_insensitive_for_ascii_only() {
        assert!(like(b"abc", b"ABC", None));
        assert!(like(b"a%", b"Abcdef", None));
        assert!(like(b"%c_e%", b"abcdef", None));
        assert!(!like("é".as_bytes(), "É".as_bytes(), None));
        assert!(like(b"_", "é".as_bytes(), None));
        assert!(!like(b"a_", b"a", None));
        assert!(like(b"", b"", None));
        assert!(!like(b"", b"a", None));
        assert!(like(b"%", b"", None));
    }

    #[test]
    fn like_escape_makes_wildcards_literal() {
        assert!(like(b"100!%", b"100%", Some('!')));
        assert!(!like(b"100!%", b"1000", Some('!')));
        assert!(like(b"%!_x", b"ab_x", Some('!')));
        assert!(!like(b"%!_x", b"abcx", Some('!')));
        assert!(!like(b"a!", b"a!", Some('!')));
    }

    #[test]
    fn like_escape_equal_to_a_wildcard_disables_that_wildcard() {
        // Found by the differential test: SQLite's likeFunc switches the wildcard off.
        assert!(!like(b"%", b"abc", Some('%')));
        assert!(!like(b"%", b"", Some('%')));
        assert!(like(b"a%%", b"a%", Some('%')));
        assert!(!like(b"a%%", b"a%b", Some('%')));
        assert!(like(b"a__", b"a_", Some('_')));
        assert!(!like(b"a_", b"ab", Some('_')));
        assert!(like(b"a%", b"ab_", Some('_')));
    }

    #[test]
    fn glob_is_case_sensitive_with_sets() {
        assert!(glob(b"a*", b"abc"));
        assert!(!glob(b"A*", b"abc"));
        assert!(glob(b"?b?", b"abc"));
        assert!(glob(b"[a-c]x", b"bx"));
        assert!(!glob(b"[^a-c]x", b"bx"));
        assert!(glob(b"[]]", b"]"));
        assert!(glob(b"*[0-9]", b"abc7"));
        assert!(!glob(b"[a-c", b"a"));
    }

    #[test]
    fn backtracking_and_corner_cases() {
        assert!(like(b"%ab%", b"aaab", None));
        assert!(like(b"%a_c", b"abcabc", None));
        assert!(!like(b"%a_c", b"abcab", None));
        assert!(like(b"%_%_%", b"ab", None));
        assert!(!like(b"%_%_%", b"a", None));
        assert!(!like(b"%!", b"abc!", Some('!')));
        assert!(glob(b"*[0-9]*x", b"ab7cx"));
        assert!(!glob(b"*[0-9", b"a7"));
        assert!(glob(b"[]-a]", b"-"));
        assert!(glob(b"[]-a]", b"a"));
        assert!(!glob(b"[]-a]", b"b"));
        assert!(glob(b"[z-a]", b"z"));
        assert!(!glob(b"[z-a]", b"m"));
        assert!(glob(b"[a-]", b"-"));
        assert!(glob(b"[^]]", b"x"));
        assert!(!glob(b"[^]]", b"]"));
        assert!(glob(b"a*", b"a\0ignored"));
        assert!(like(b"abc", b"abc\0def", None));
    }

    #[test]
    fn many_wildcards_on_a_long_text_on_a_small_stack() {
        // The attack from the security review: SQLite's algorithm (and the recursive
        // port this replaced) recursed once per `%`, and retried every position.
        let worker = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                let text = "a".repeat(30_000);
                let pattern = "%a".repeat(400);
                let mut miss = pattern.clone();
                miss.push('b');
                let star_glob = "*a".repeat(400) + "b";
                (
                    like(pattern.as_bytes(), text.as_bytes(), None),
                    like(miss.as_bytes(), text.as_bytes(), None),
                    glob(star_glob.as_bytes(), text.as_bytes()),
                )
            })
            .expect("spawn");
        assert_eq!(
            worker.join().expect("no stack overflow"),
            (true, false, false)
        );
    }
}
