//! LIKE and GLOB pattern matching with SQLite's exact rules (`patternCompare` in
//! SQLite's `func.c`): `%`/`_` and `*`/`?`/`[...]`, LIKE case-insensitive for ASCII only,
//! strings ending at the first NUL as SQLite's C strings do.

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

#[derive(PartialEq)]
enum Outcome {
    Match,
    NoMatch,
    /// No match, and no later position of an enclosing wildcard can match either.
    NoWildcardMatch,
}

struct Rules {
    match_one: u32,
    match_all: u32,
    /// The escape character for LIKE, `[` for GLOB, 0 for none.
    match_other: u32,
    glob_sets: bool,
    no_case: bool,
}

fn lower(c: u32) -> u32 {
    if (b'A' as u32..=b'Z' as u32).contains(&c) {
        c + 32
    } else {
        c
    }
}

fn compare(pattern: &[u32], string: &[u32], rules: &Rules) -> Outcome {
    // Reading past either end yields 0, like SQLite's NUL-terminated strings.
    let at = |v: &[u32], i: usize| v.get(i).copied().unwrap_or(0);
    let (mut p, mut s) = (0usize, 0usize);
    // Position in the pattern just after an escaped character, if any.
    let mut escaped_end: Option<usize> = None;
    while p < pattern.len() {
        let mut c = pattern[p];
        p += 1;
        if c == rules.match_all {
            // Skip further wildcards; each match-one among them consumes one character.
            loop {
                c = at(pattern, p);
                p += 1;
                if c == rules.match_all {
                    continue;
                }
                if c == rules.match_one {
                    if at(string, s) == 0 {
                        return Outcome::NoWildcardMatch;
                    }
                    s += 1;
                    continue;
                }
                break;
            }
            if c == 0 {
                return Outcome::Match;
            }
            if c == rules.match_other {
                if !rules.glob_sets {
                    c = at(pattern, p);
                    p += 1;
                    if c == 0 {
                        return Outcome::NoWildcardMatch;
                    }
                } else {
                    // A set right after `*`: try the rest at every position.
                    while s < string.len() {
                        let r = compare(&pattern[p - 1..], &string[s..], rules);
                        if r != Outcome::NoMatch {
                            return r;
                        }
                        s += 1;
                    }
                    return Outcome::NoWildcardMatch;
                }
            }
            // `c` is a literal: resume after each place it occurs in the string.
            let rest = &pattern[p.min(pattern.len())..];
            while s < string.len() {
                let c2 = string[s];
                s += 1;
                let same =
                    c2 == c || (rules.no_case && c < 0x80 && c2 < 0x80 && lower(c) == lower(c2));
                if !same {
                    continue;
                }
                let r = compare(rest, &string[s..], rules);
                if r != Outcome::NoMatch {
                    return r;
                }
            }
            return Outcome::NoWildcardMatch;
        }
        if c == rules.match_other {
            if !rules.glob_sets {
                c = at(pattern, p);
                p += 1;
                if c == 0 {
                    return Outcome::NoMatch;
                }
                escaped_end = Some(p);
            } else {
                let ch = at(string, s);
                s += 1;
                if ch == 0 {
                    return Outcome::NoMatch;
                }
                let mut seen = false;
                let mut invert = false;
                let mut prior: u32 = 0;
                let mut c2 = at(pattern, p);
                p += 1;
                if c2 == '^' as u32 {
                    invert = true;
                    c2 = at(pattern, p);
                    p += 1;
                }
                if c2 == ']' as u32 {
                    if ch == ']' as u32 {
                        seen = true;
                    }
                    c2 = at(pattern, p);
                    p += 1;
                }
                while c2 != 0 && c2 != ']' as u32 {
                    let next = at(pattern, p);
                    if c2 == '-' as u32 && next != ']' as u32 && next != 0 && prior > 0 {
                        c2 = next;
                        p += 1;
                        if ch >= prior && ch <= c2 {
                            seen = true;
                        }
                        prior = 0;
                    } else {
                        if ch == c2 {
                            seen = true;
                        }
                        prior = c2;
                    }
                    c2 = at(pattern, p);
                    p += 1;
                }
                if c2 == 0 || seen == invert {
                    return Outcome::NoMatch;
                }
                continue;
            }
        }
        let c2 = at(string, s);
        s += 1;
        if c == c2 {
            continue;
        }
        if rules.no_case && c < 0x80 && c2 < 0x80 && lower(c) == lower(c2) {
            continue;
        }
        if c == rules.match_one && escaped_end != Some(p) && c2 != 0 {
            continue;
        }
        return Outcome::NoMatch;
    }
    if at(string, s) == 0 {
        Outcome::Match
    } else {
        Outcome::NoMatch
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
    compare(&decode(pattern), &decode(string), &rules) == Outcome::Match
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
    compare(&decode(pattern), &decode(string), &rules) == Outcome::Match
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
}
