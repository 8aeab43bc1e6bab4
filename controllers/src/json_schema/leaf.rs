//! Leaf languages: JSON strings (length, `pattern`, `format`) and JSON numbers (bounds,
//! `multipleOf`), each an exact byte automaton in the canonical layout.
//!
//! Strings are built on the decoded side ([`text`]: lengths, patterns and formats read the
//! characters of the value) and then written with canonical escapes ([`quoted`]), so a pattern
//! holds whatever escapes its value needs. Numbers have one text each ([`canonical_number`]).
//! Each `format` is a sound subset of its format: every accepted string is valid.
//!
//! Regexes (`pattern`, and the regexes [`format_regex`] gives) compile through the byte-DFA layer
//! ([`crate::dfa::regex_dfa`]); what is JSON-specific stays here: ECMA-262 patterns are
//! translated ([`translate_pattern`]) and search rather than fully match ([`pattern_content`]).

use std::cmp::Ordering;

use crate::dfa::{concat, regex_dfa, union, Dfa, RegexFailure, TooLarge, DEAD};

/// UTF-8 continuation expectation after a lead byte: (count, first-byte range).
fn utf8_lead(b: u8) -> Option<(u8, u8, u8)> {
    match b {
        0xC2..=0xDF => Some((1, 0x80, 0xBF)),
        0xE0 => Some((2, 0xA0, 0xBF)),
        0xE1..=0xEC | 0xEE..=0xEF => Some((2, 0x80, 0xBF)),
        0xED => Some((2, 0x80, 0x9F)),
        0xF0 => Some((3, 0x90, 0xBF)),
        0xF1..=0xF3 => Some((3, 0x80, 0xBF)),
        0xF4 => Some((3, 0x80, 0x8F)),
        _ => None,
    }
}

/// Decoded string values of `min..=max` characters (`max: None`: unbounded), as their UTF-8
/// bytes: any Unicode scalar value, control characters, quotes and backslashes included. This is
/// the side `pattern`, `format` and lengths are checked on; [`quoted`] writes it as JSON.
pub fn text(min: usize, max: Option<usize>, limit: usize) -> Result<Dfa, TooLarge> {
    let cap = max.unwrap_or(min);
    let inc = |n: usize| -> Option<usize> {
        match max {
            Some(m) if n >= m => None,
            Some(_) => Some(n + 1),
            None => Some((n + 1).min(cap)),
        }
    };
    // (characters so far, continuation bytes still due, range of the next one)
    Dfa::from_fn(
        (0usize, 0u8, 0u8, 0u8),
        |&(n, cont, lo, hi), b| {
            if cont > 0 {
                return (lo..=hi).contains(&b).then_some((n, cont - 1, 0x80, 0xBF));
            }
            if b < 0x80 {
                return inc(n).map(|n| (n, 0, 0, 0));
            }
            let (c, lo, hi) = utf8_lead(b)?;
            inc(n).map(|n| (n, c, lo, hi))
        },
        |&(n, cont, _, _)| cont == 0 && n >= min,
        limit,
    )
}

/// The decoded byte a canonical escape sequence stands for (`\n` → 0x0A, ...), by its letter.
fn short_escape(letter: u8) -> Option<u8> {
    Some(match letter {
        b'"' => b'"',
        b'\\' => b'\\',
        b'b' => 0x08,
        b'f' => 0x0C,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        _ => return None,
    })
}

/// The canonical JSON encoding, quotes included, of the decoded values `content` accepts
/// (UTF-8 bytes, as [`text`] gives). Canonical is what `serde_json` writes: `"` and `\` escaped
/// as `\"` and `\\`, the control characters with a short escape as `\b \f \n \r \t`, the other
/// control characters as `\u00xx` (lower-case hex), every other character raw. Each value has
/// exactly one text, so set operations on string automata are set operations on values.
pub fn quoted(content: &Dfa, limit: usize) -> Result<Dfa, TooLarge> {
    // (content state, escape phase): 0 raw, 1 after `\`, 2 `\u`, 3 `\u0`, 4 `\u00`, 5 `\u000`,
    // 6 `\u001`; `None`: before the opening quote; content state DEAD: after the closing one.
    let step = |s: u32, byte: u8| -> Option<Option<(u32, u8)>> {
        let t = content.next(s, byte);
        (t != DEAD).then_some(Some((t, 0)))
    };
    Dfa::from_fn(
        None::<(u32, u8)>,
        |st, b| match *st {
            None => (b == b'"').then_some(Some((0, 0))),
            Some((DEAD, _)) => None,
            Some((s, phase)) => match phase {
                0 => match b {
                    b'"' => content.is_accepting(s).then_some(Some((DEAD, 0))),
                    b'\\' => Some(Some((s, 1))),
                    0..=0x1F => None,
                    _ => step(s, b),
                },
                1 if b == b'u' => Some(Some((s, 2))),
                1 => step(s, short_escape(b)?),
                2 | 3 => (b == b'0').then_some(Some((s, phase + 1))),
                4 => match b {
                    b'0' => Some(Some((s, 5))),
                    b'1' => Some(Some((s, 6))),
                    _ => None,
                },
                _ => {
                    let low = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        _ => return None,
                    };
                    let c = if phase == 6 { 0x10 + low } else { low };
                    // Characters with a short escape are never written as `\u00xx`.
                    if matches!(c, 0x08 | 0x09 | 0x0A | 0x0C | 0x0D) {
                        return None;
                    }
                    step(s, c)
                }
            },
        },
        |st| matches!(st, Some((DEAD, _))),
        limit,
    )
    .map(|d| d.minimize())
}

/// A quoted JSON string (canonical escapes) of `min..=max` characters.
pub fn string(min: usize, max: Option<usize>, limit: usize) -> Result<Dfa, TooLarge> {
    quoted(&text(min, max, limit)?, limit)
}

/// ECMA-262's white space and line terminators, the members of `\s` (Rust's `\s` is Unicode's
/// `White_Space`, which adds U+0085 and lacks U+FEFF).
const ECMA_SPACE: &str =
    r"\t\n\x0B\x0C\r \x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}\x{FEFF}";

/// Rewrites an ECMA-262 pattern (what JSON Schema specifies) into Rust regex syntax where the two
/// differ: `\d` and `\w` are ASCII in ECMA-262, `\s` and `.` have their own sets of space and
/// line-terminator characters, and `\/` is a plain slash.
pub fn translate_pattern(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 8);
    let mut in_class = false;
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('d') => out.push_str(if in_class { "0-9" } else { "[0-9]" }),
                Some('w') => out.push_str(if in_class { "0-9A-Za-z_" } else { "[0-9A-Za-z_]" }),
                Some('s') if in_class => out.push_str(ECMA_SPACE),
                Some('s') => out.push_str(&format!("[{ECMA_SPACE}]")),
                // A nested class inside a class is a union in Rust's syntax.
                Some('D') => out.push_str("[^0-9]"),
                Some('W') => out.push_str("[^0-9A-Za-z_]"),
                Some('S') => out.push_str(&format!("[^{ECMA_SPACE}]")),
                Some('/') => out.push('/'),
                Some('-') => out.push_str("\\-"),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    out.push('^');
                    chars.next();
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            '[' if in_class => out.push_str("\\["),
            ']' if in_class => {
                in_class = false;
                out.push(']');
            }
            // ECMA-262's `.` stops at every line terminator, Rust's only at `\n`.
            '.' if !in_class => out.push_str(r"[^\n\r\x{2028}\x{2029}]"),
            _ => out.push(c),
        }
    }
    out
}

/// Content (unquoted, unescaped) that *contains* a match of the JSON Schema `pattern`.
pub fn pattern_content(pattern: &str, dfa_bytes: usize, limit: usize) -> Result<Dfa, RegexFailure> {
    let p = translate_pattern(pattern);
    // Validate the pattern alone first, so its own syntax errors are reported plainly.
    regex_automata::util::syntax::parse(&p).map_err(|e| RegexFailure::Build(e.to_string()))?;
    regex_dfa(&format!("(?s:.*)(?:{p})(?s:.*)"), dfa_bytes, limit)
}

/// Regular expressions (sound subsets, ASCII) for the supported `format` values.
pub fn format_regex(format: &str) -> Option<&'static str> {
    // Every calendar date: 29 February only in leap years (divisible by 4, centuries by 400).
    const DATE: &str = r"([0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29)";
    const TIME: &str = r"([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
    const DATE_TIME: &str = r"([0-9]{4}-((0[13578]|1[02])-(0[1-9]|[12][0-9]|3[01])|(0[469]|11)-(0[1-9]|[12][0-9]|30)|02-(0[1-9]|1[0-9]|2[0-8]))|([0-9]{2}(0[48]|[2468][048]|[13579][26])|(0[48]|[2468][048]|[13579][26])00)-02-29)T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])";
    // Labels of up to 49 characters, at most 5: within RFC 1123's 63 per label, 253 in all.
    const HOST: &str =
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,47}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,47}[A-Za-z0-9])?){0,4}";
    Some(match format {
        "date-time" => DATE_TIME,
        "date" => DATE,
        "time" => TIME,
        // RFC 3339 appendix A: dur-date / dur-time / dur-week, each unit optional only at the end.
        "duration" => {
            r"P([0-9]{1,4}D|[0-9]{1,4}M([0-9]{1,4}D)?|[0-9]{1,4}Y([0-9]{1,4}M([0-9]{1,4}D)?)?)(T([0-9]{1,4}H([0-9]{1,4}M([0-9]{1,4}S)?)?|[0-9]{1,4}M([0-9]{1,4}S)?|[0-9]{1,4}S))?|PT([0-9]{1,4}H([0-9]{1,4}M([0-9]{1,4}S)?)?|[0-9]{1,4}M([0-9]{1,4}S)?|[0-9]{1,4}S)|P[0-9]{1,4}W"
        }
        "email" | "idn-email" => {
            // The local part stays within RFC 5321's 64 characters (at most 16 + 2 × 16).
            r"[A-Za-z0-9]{1,16}([._+-][A-Za-z0-9]{1,15}){0,2}@[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?){0,3}\.[A-Za-z]{2,6}"
        }
        "hostname" | "idn-hostname" => HOST,
        "ipv4" => r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}",
        "ipv6" => {
            r"([0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|([0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}|::([0-9a-f]{1,4}:){0,5}[0-9a-f]{1,4}|::"
        }
        "uuid" => r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        "uri" | "iri" | "uri-reference" | "iri-reference" | "uri-template" => {
            // RFC 3986 with a registered-name host: any scheme, either case, path characters
            // without percent-escapes.
            // A path starts with `//` only after an authority.
            r"[A-Za-z][A-Za-z0-9+.-]{0,9}:(//[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?){0,4}(:[0-9]{1,5})?(/[A-Za-z0-9._~:@!$&'()*+,;=-]*){0,8}|/?([A-Za-z0-9._~:@!$&'()*+,;=-]+(/[A-Za-z0-9._~:@!$&'()*+,;=-]*){0,7})?)(\?[A-Za-z0-9._~:@!$&'()*+,;=/?-]*)?(#[A-Za-z0-9._~:@!$&'()*+,;=/?-]*)?"
        }
        "json-pointer" => r"(/[A-Za-z0-9_.-]*)*",
        "relative-json-pointer" => r"(0|[1-9][0-9]{0,3})(#|(/[A-Za-z0-9_.-]*)*)",
        "regex" => r"[A-Za-z0-9 _-]*",
        _ => return None,
    })
}

/// An exact decimal: sign, integer digits without leading zeros (`"0"` for zero), fraction
/// digits without trailing zeros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    pub neg: bool,
    pub int: Vec<u8>,
    pub frac: Vec<u8>,
}

impl Decimal {
    /// Parses a JSON number literal, exponent included. `None` when out of a sane range.
    pub fn parse(s: &str) -> Option<Decimal> {
        let (neg, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mant, exp) = match s.find(['e', 'E']) {
            Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
            None => (s, 0),
        };
        let (ip, fp) = match mant.find('.') {
            Some(i) => (&mant[..i], &mant[i + 1..]),
            None => (mant, ""),
        };
        if !ip.bytes().chain(fp.bytes()).all(|b| b.is_ascii_digit()) || ip.is_empty() || exp.abs() > 60 {
            return None;
        }
        let mut digits: Vec<u8> = ip.bytes().chain(fp.bytes()).collect();
        let mut point = ip.len() as i32 + exp;
        while point < 1 {
            digits.insert(0, b'0');
            point += 1;
        }
        while digits.len() < point as usize {
            digits.push(b'0');
        }
        let mut int = digits[..point as usize].to_vec();
        let mut frac = digits[point as usize..].to_vec();
        while int.len() > 1 && int[0] == b'0' {
            int.remove(0);
        }
        while frac.last() == Some(&b'0') {
            frac.pop();
        }
        let zero = int == b"0" && frac.is_empty();
        Some(Decimal {
            neg: neg && !zero,
            int,
            frac,
        })
    }

    pub fn from_number(n: &serde_json::Number) -> Option<Decimal> {
        Self::parse(&n.to_string())
    }

    fn magnitude(&self) -> Decimal {
        Decimal {
            neg: false,
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Decimal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digits = |d: &[u8]| String::from_utf8_lossy(d).into_owned();
        write!(f, "{}{}", if self.neg { "-" } else { "" }, digits(&self.int))?;
        if !self.frac.is_empty() {
            write!(f, ".{}", digits(&self.frac))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Cmp {
    Ge,
    Gt,
    Le,
    Lt,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Mag {
    Int { n: usize, st: Ordering },
    Frac { j: usize, st: Ordering },
}

/// Unsigned decimal texts (digits, optional `.digits`) whose value compares to `m` by `op`.
/// Assumes no leading zeros (the grammar it is intersected with ensures that).
fn magnitude_cmp(m: &Decimal, op: Cmp, limit: usize) -> Result<Dfa, TooLarge> {
    let (len, flen) = (m.int.len(), m.frac.len());
    let resolve = |n: usize, st: Ordering| match n.cmp(&len) {
        Ordering::Equal => st,
        o => o,
    };
    Dfa::from_fn(
        Mag::Int {
            n: 0,
            st: Ordering::Equal,
        },
        |s, b| match *s {
            Mag::Int { n, st } => match b {
                b'0'..=b'9' if n < len => Some(Mag::Int {
                    n: n + 1,
                    st: if st == Ordering::Equal { b.cmp(&m.int[n]) } else { st },
                }),
                b'0'..=b'9' => Some(Mag::Int {
                    n: len + 1,
                    st: Ordering::Greater,
                }),
                b'.' => Some(Mag::Frac {
                    j: 0,
                    st: resolve(n, st),
                }),
                _ => None,
            },
            Mag::Frac { j, st } => {
                if !b.is_ascii_digit() {
                    return None;
                }
                if st != Ordering::Equal {
                    return Some(Mag::Frac { j: 0, st });
                }
                let md = m.frac.get(j).copied().unwrap_or(b'0');
                Some(Mag::Frac {
                    j: (j + 1).min(flen),
                    st: b.cmp(&md),
                })
            }
        },
        |s| {
            let r = match *s {
                // An integer whose digits equal `m`'s integer part is less than `m` if `m` has a
                // fraction (0 < 0.5).
                Mag::Int { n, st } => match resolve(n, st) {
                    Ordering::Equal if flen > 0 => Ordering::Less,
                    r => r,
                },
                Mag::Frac { j, st } if st == Ordering::Equal && j < flen => Ordering::Less,
                Mag::Frac { st, .. } => st,
            };
            match op {
                Cmp::Ge => r != Ordering::Less,
                Cmp::Gt => r == Ordering::Greater,
                Cmp::Le => r != Ordering::Greater,
                Cmp::Lt => r == Ordering::Less,
            }
        },
        limit,
    )
}

/// Unsigned decimal texts whose value is a multiple of `p / 10^k`.
fn magnitude_multiple(p: u64, k: usize, limit: usize) -> Result<Dfa, TooLarge> {
    Dfa::from_fn(
        (0u64, None::<usize>),
        |&(r, frac), b| {
            if b == b'.' {
                return frac.is_none().then_some((r, Some(0)));
            }
            let d = u64::from(b.checked_sub(b'0').filter(|&d| d <= 9)?);
            match frac {
                None => Some(((r * 10 + d) % p, None)),
                Some(j) if j < k => Some(((r * 10 + d) % p, Some(j + 1))),
                Some(j) => (d == 0).then_some((r, Some(j))),
            }
        },
        |&(r, frac)| {
            let j = frac.unwrap_or(0).min(k);
            let mut v = r;
            for _ in j..k {
                v = (v * 10) % p;
            }
            v == 0
        },
        limit,
    )
}

/// `0|[1-9][0-9]*` with an optional fraction (unless `integer`) that does not end in `0`: each
/// value has one text (`1`, not `1.0` or `1.50`). With `point_zero`, the fraction may also be
/// exactly `.0` (draft 4's float-valued integers). Integer parts have at most
/// [`MAX_INT_DIGITS`] digits. With `double_exact`, the whole number has at most that many
/// significant digits, so that every text reads back as a double that writes the same decimal
/// (`405842704927754.01` would read as the integer `405842704927754`); tracking them costs about
/// three times the states, so it is asked for only where a value's double matters.
fn unsigned_grammar(integer: bool, point_zero: bool, double_exact: bool, limit: usize) -> Result<Dfa, TooLarge> {
    // phase: 0 start, 1 "0", 2 integer digits, 3 ".", 4 fraction ending in 1-9, 5 ending in 0,
    // 6 the fraction "0"; sig: significant digits so far (the leading zeros of `0.00x` are not;
    // without `double_exact`, fraction digits are not counted)
    Dfa::from_fn(
        (0u8, 0u8),
        |&(s, sig), b| {
            // A fraction digit is significant once a nonzero digit came before it, or if it is one.
            let next = match (double_exact, sig > 0 || b != b'0') {
                (false, _) => sig,
                (true, true) => sig + 1,
                (true, false) => 0,
            };
            match (s, b) {
                (0, b'0') => Some((1, 0)),
                (0, b'1'..=b'9') => Some((2, 1)),
                (2, b'0'..=b'9') if sig < MAX_INT_DIGITS => Some((2, sig + 1)),
                // Without `double_exact`, the integer digits are forgotten at the point.
                (1 | 2, b'.') if !integer => Some((3, if double_exact { sig } else { 0 })),
                (3..=6, b'1'..=b'9') if next <= MAX_INT_DIGITS => Some((4, next)),
                (3, b'0') if next <= MAX_INT_DIGITS => Some((6, next)),
                (4..=6, b'0') if next <= MAX_INT_DIGITS => Some((5, next)),
                _ => None,
            }
        },
        |&(s, _)| matches!(s, 1 | 2 | 4) || (point_zero && s == 6),
        limit,
    )
}

/// Significant digits of a decimal: all of them from the first nonzero one on.
pub fn significant_digits(d: &Decimal) -> usize {
    if d.int.iter().all(|&c| c == b'0') {
        d.frac.iter().skip_while(|&&c| c == b'0').count()
    } else {
        d.int.iter().skip_while(|&&c| c == b'0').count() + d.frac.len()
    }
}

/// Integer parts longer than this are not generated, nor, where a value's double matters
/// ([`NumberSpec::double_exact`]), numbers with more significant digits: every such decimal
/// reads back exactly from a double, so validators that compute with doubles agree with the
/// automaton.
pub const MAX_INT_DIGITS: u8 = 15;

/// Bounds and divisibility of a JSON number.
#[derive(Debug, Clone, Default)]
pub struct NumberSpec {
    pub integer: bool,
    /// Draft 4 tells `1.0` (a number) from `1` (an integer): integral values may also be written
    /// with the fraction `.0` (not for `integer`).
    pub point_zero: bool,
    /// Lower bounds: (value, exclusive).
    pub lower: Vec<(Decimal, bool)>,
    pub upper: Vec<(Decimal, bool)>,
    /// `multipleOf` as (p, k): the number must be a multiple of p / 10^k.
    pub multiple: Vec<(u64, usize)>,
    /// At most [`MAX_INT_DIGITS`] significant digits in all (not only in the integer part), so
    /// that a validator reading the text as a double sees the value written. Needed where the
    /// automaton tells values apart that doubles could merge: strict bounds, `multipleOf`, and
    /// complements (`oneOf`, `not`, `if`), where `1.00000000000000000001` is not an integer to
    /// the automaton but is one to the validator.
    pub double_exact: bool,
}

/// The JSON numbers satisfying `spec`, in the canonical form [`canonical_number`] writes: no
/// exponent, no trailing zeros in the fraction, integer parts of at most [`MAX_INT_DIGITS`]
/// digits. Negative zero is never written (validators disagree on whether it is an integer).
pub fn number(spec: &NumberSpec, limit: usize) -> Result<Dfa, TooLarge> {
    let mut base = unsigned_grammar(spec.integer, spec.point_zero, spec.double_exact, limit)?;
    for &(p, k) in &spec.multiple {
        base = base.and(&magnitude_multiple(p, k, limit)?, limit)?;
    }
    let zero = Decimal {
        neg: false,
        int: b"0".to_vec(),
        frac: Vec::new(),
    };
    let mut pos = Some(base.clone());
    // Negative magnitudes are above zero: no `-0`.
    let mut neg = Some(base.and(&magnitude_cmp(&zero, Cmp::Gt, limit)?, limit)?);
    let restrict = |d: &mut Option<Dfa>, m: &Decimal, op: Cmp| -> Result<(), TooLarge> {
        if let Some(x) = d.take() {
            *d = Some(x.and(&magnitude_cmp(&m.magnitude(), op, limit)?, limit)?);
        }
        Ok(())
    };
    for (l, strict) in &spec.lower {
        if l.neg {
            // x > l for negative x means |x| < |l|; non-negative x always pass.
            restrict(&mut neg, l, if *strict { Cmp::Lt } else { Cmp::Le })?;
        } else {
            neg = None;
            restrict(&mut pos, l, if *strict { Cmp::Gt } else { Cmp::Ge })?;
        }
    }
    for (u, strict) in &spec.upper {
        if u.neg {
            pos = None;
            restrict(&mut neg, u, if *strict { Cmp::Gt } else { Cmp::Ge })?;
        } else {
            restrict(&mut pos, u, if *strict { Cmp::Lt } else { Cmp::Le })?;
        }
    }
    let mut parts = Vec::new();
    if let Some(p) = pos {
        parts.push(p);
    }
    if let Some(n) = neg {
        parts.push(concat(&[&Dfa::literal(b"-"), &n], limit)?);
    }
    let refs: Vec<&Dfa> = parts.iter().collect();
    union(&refs, limit)
}

/// The one text of a JSON number that [`number`] accepts, when it has one: integers in decimal
/// (`3.0` is `3`), other values as the shortest decimal that reads back as the same double, with
/// no exponent (`1e-7` is `0.0000001`). With `point_zero` (draft 4), integral doubles keep the
/// fraction `.0`. `None` for negative zero, for integer parts longer than [`MAX_INT_DIGITS`]
/// digits and for exponents beyond ±60: no automaton accepts those. A text of more than
/// [`MAX_INT_DIGITS`] significant digits (`0.30000000000000004`) is accepted only where no
/// value's double matters ([`NumberSpec::double_exact`]).
pub fn canonical_number(n: &serde_json::Number, point_zero: bool) -> Option<String> {
    if let Some(f) = n.as_f64().filter(|_| n.is_f64()) {
        if f == 0.0 && f.is_sign_negative() {
            return None;
        }
        if f.fract() == 0.0 && f.abs() < 1e15 {
            let int = (f as i64).to_string();
            return Some(if point_zero { format!("{int}.0") } else { int });
        }
    }
    let d = Decimal::from_number(n)?;
    (d.int.len() <= usize::from(MAX_INT_DIGITS)).then(|| d.to_string())
}

/// `multipleOf` as (p, k) with value p / 10^k, or `None` when it is not a positive decimal of
/// manageable size.
pub fn multiple_of(n: &serde_json::Number) -> Option<(u64, usize)> {
    let d = Decimal::from_number(n)?;
    if d.neg {
        return None;
    }
    let mut digits = d.int.clone();
    digits.extend_from_slice(&d.frac);
    let p: u64 = std::str::from_utf8(&digits).ok()?.parse().ok()?;
    (p > 0 && p <= 1_000_000).then_some((p, d.frac.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(spec: NumberSpec) -> Dfa {
        number(&spec, 10_000).unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::parse(s).unwrap()
    }

    #[test]
    fn decimals_parse_exactly() {
        assert_eq!(dec("1e2"), dec("100"));
        assert_eq!(dec("1.50").frac, b"5");
        assert_eq!(dec("1e-3").int, b"0");
        assert_eq!(dec("1e-3").frac, b"001");
        assert!(!dec("-0").neg);
    }

    #[test]
    fn bounded_numbers_agree_with_arithmetic() {
        for double_exact in [false, true] {
            let spec = NumberSpec {
                integer: false,
                point_zero: false,
                lower: vec![(dec("-2.5"), false)],
                upper: vec![(dec("10"), true)],
                multiple: vec![],
                double_exact,
            };
            bounded_as_arithmetic(&num(spec));
        }
    }

    fn bounded_as_arithmetic(d: &Dfa) {
        for (text, value) in [
            ("-2.5", -2.5),
            ("-2.51", -2.51),
            ("-3", -3.0),
            ("0", 0.0),
            ("9.999", 9.999),
            ("10", 10.0),
            ("10.0", 10.0),
            ("11", 11.0),
            ("-0.5", -0.5),
            ("3.25", 3.25),
        ] {
            assert_eq!(d.accepts(text.as_bytes()), (-2.5..10.0).contains(&value), "{text}");
        }
        assert!(!d.accepts(b"01") && !d.accepts(b"1e2") && !d.accepts(b"-"));
    }

    #[test]
    fn multiples() {
        let ints = num(NumberSpec {
            integer: true,
            multiple: vec![multiple_of(&serde_json::Number::from(7)).unwrap()],
            ..Default::default()
        });
        for n in -30..30i32 {
            assert_eq!(ints.accepts(n.to_string().as_bytes()), n % 7 == 0, "{n}");
        }
        let cents = num(NumberSpec {
            multiple: vec![multiple_of(&serde_json::Number::from_f64(0.25).unwrap()).unwrap()],
            ..Default::default()
        });
        assert!(cents.accepts(b"1.25") && cents.accepts(b"2") && cents.accepts(b"0.5") && !cents.accepts(b"0.3"));
    }

    #[test]
    fn strings_count_characters() {
        let s = string(2, Some(3), 1000).unwrap();
        assert!(s.accepts(br#""ab""#) && s.accepts("\"é\\n\"".as_bytes()) && s.accepts(br#""a\u0001c""#));
        assert!(!s.accepts(br#""a""#) && !s.accepts(br#""abcd""#) && !s.accepts(b"\"a\nb\""));
        // Only the canonical escapes: no `\/`, no `\u` for a character with a short escape or none.
        for t in [r#""a\/""#, r#""a\u000a""#, r#""a\u00e9""#, r#""a\u001F""#] {
            assert!(!s.accepts(t.as_bytes()), "{t}");
        }
        let content = text(0, None, 1000).unwrap();
        assert!(
            content.accepts("naïve ☕".as_bytes()) && content.accepts(b"a\"b\n") && !content.accepts(&[0xC0, 0x80])
        );
        // Every string serde_json writes is accepted.
        let any = string(0, None, 1000).unwrap();
        for v in ["", "a\"b\\c", "\u{1}\u{7f}\u{1f}\t", "ünïcödé ☕ 𝄞"] {
            let t = serde_json::to_string(v).unwrap();
            assert!(any.accepts(t.as_bytes()), "{t}");
        }
    }

    #[test]
    fn patterns_search_like_ecma() {
        let d = pattern_content(r"\d{3}", 1 << 20, 10_000).unwrap();
        assert!(d.accepts(b"ab123cd") && !d.accepts(b"12a"));
        let anchored = pattern_content(r"^[a-z]+$", 1 << 20, 10_000).unwrap();
        assert!(anchored.accepts(b"abc") && !anchored.accepts(b"ab1"));
        assert!(matches!(
            pattern_content(r"(?=a)", 1 << 20, 100),
            Err(RegexFailure::Build(_))
        ));
    }

    #[test]
    fn formats_compile() {
        for f in [
            "date-time",
            "date",
            "time",
            "duration",
            "email",
            "hostname",
            "ipv4",
            "ipv6",
            "uuid",
            "uri",
        ] {
            let re = format_regex(f).unwrap();
            regex_dfa(re, 8 << 20, 100_000).unwrap_or_else(|_| panic!("{f}"));
        }
    }
}
