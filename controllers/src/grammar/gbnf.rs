//! A parser for GBNF, the grammar format of llama.cpp.
//!
//! ```text
//! # comments run to the end of the line
//! root   ::= expr
//! expr   ::= term (("+" | "-") term)*
//! term   ::= [0-9]+ | "(" expr ")"
//! ```
//!
//! Supported: rules `name ::= body` (a body runs until the next `name ::=`, so it may span
//! lines), string literals with `\n \t \r \\ \" \xHH \uHHHH \UHHHHHHHH` escapes, character
//! classes `[a-z_]` and `[^"\\]` (same escapes), `.` (any character), grouping `( )`, alternation
//! `|`, repetition `* + ?` and `{m}`, `{m,}`, `{m,n}`. The start rule is `root`.

use std::collections::BTreeMap;

/// A grammar expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A literal string.
    Literal(String),
    /// A character class: inclusive ranges, possibly negated.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// A reference to a rule.
    Ref(String),
    Seq(Vec<Expr>),
    Alt(Vec<Expr>),
    /// `expr{min,max}`; `max` is `None` for unbounded.
    Repeat {
        expr: Box<Expr>,
        min: usize,
        max: Option<usize>,
    },
}

/// A parsed grammar: its rules in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gbnf {
    pub rules: BTreeMap<String, Expr>,
    /// Rule names in the order they were defined.
    pub order: Vec<String>,
}

/// A syntax error with its line and column (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
    }
}

/// The largest `{m,n}` bound accepted (repetitions are unrolled).
pub const MAX_REPEAT: usize = 256;

/// The deepest nesting accepted, of groups `( )` and of the expression tree (sequences,
/// alternations and repetitions inside each other, `x**` counting twice). Parsing, compiling
/// and recognising recurse on the tree, so this bounds their stack use.
pub const MAX_NESTING: usize = 128;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    /// Groups open at `pos`.
    depth: usize,
    /// Depth of the expression tree last returned by `item`, `repetition`, `sequence` or
    /// `alternation` (a leaf is 1).
    tree_depth: usize,
}

impl Parser {
    fn err(&self, at: usize, message: impl Into<String>) -> SyntaxError {
        let before: String = self.chars[..at.min(self.chars.len())].iter().collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SyntaxError {
            line,
            column,
            message: message.into(),
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    /// Skips whitespace (newlines included) and comments.
    fn skip(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while let Some(c) = self.peek() {
                    self.pos += 1;
                    if c == '\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    fn name_at(&self, at: usize) -> Option<(String, usize)> {
        let mut end = at;
        while end < self.chars.len()
            && (self.chars[end].is_ascii_alphanumeric() || matches!(self.chars[end], '-' | '_'))
        {
            end += 1;
        }
        (end > at).then(|| (self.chars[at..end].iter().collect(), end))
    }

    /// Whether a rule definition `name ::=` starts at the current position.
    fn at_definition(&self) -> bool {
        let Some((_, mut end)) = self.name_at(self.pos) else {
            return false;
        };
        while end < self.chars.len() && self.chars[end].is_whitespace() {
            end += 1;
        }
        self.chars[end..].starts_with(&[':', ':', '='])
    }

    fn grammar(&mut self) -> Result<Gbnf, SyntaxError> {
        let mut rules = BTreeMap::new();
        let mut order = Vec::new();
        self.skip();
        while self.pos < self.chars.len() {
            let start = self.pos;
            let Some((name, end)) = self.name_at(self.pos) else {
                return Err(self.err(self.pos, "expected a rule name (`name ::= ...`)"));
            };
            self.pos = end;
            self.skip();
            if !self.chars[self.pos..].starts_with(&[':', ':', '=']) {
                return Err(self.err(self.pos, format!("expected `::=` after rule name `{name}`")));
            }
            self.pos += 3;
            let body = self.alternation()?;
            if rules.insert(name.clone(), body).is_some() {
                return Err(self.err(start, format!("rule `{name}` is defined twice")));
            }
            order.push(name);
            self.skip();
        }
        if rules.is_empty() {
            return Err(self.err(0, "the grammar defines no rule"));
        }
        Ok(Gbnf { rules, order })
    }

    fn alternation(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.pos;
        let mut alts = vec![self.sequence()?];
        let mut depth = self.tree_depth;
        loop {
            self.skip();
            if self.peek() == Some('|') {
                self.pos += 1;
                alts.push(self.sequence()?);
                depth = depth.max(self.tree_depth);
            } else {
                break;
            }
        }
        self.tree_depth = if alts.len() == 1 { depth } else { depth + 1 };
        if self.tree_depth > MAX_NESTING {
            return Err(self.err(at, format!("expression nested more than {MAX_NESTING} levels deep")));
        }
        Ok(if alts.len() == 1 {
            alts.pop().expect("one")
        } else {
            Expr::Alt(alts)
        })
    }

    fn sequence(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.pos;
        let mut items = Vec::new();
        let mut depth = 0;
        loop {
            self.skip();
            match self.peek() {
                None | Some('|') | Some(')') => break,
                _ if self.at_definition() => break,
                _ => {
                    let item = self.item()?;
                    items.push(self.repetition(item)?);
                    depth = depth.max(self.tree_depth);
                }
            }
        }
        self.tree_depth = if items.len() == 1 { depth } else { depth + 1 };
        if self.tree_depth > MAX_NESTING {
            return Err(self.err(at, format!("expression nested more than {MAX_NESTING} levels deep")));
        }
        Ok(if items.len() == 1 {
            items.pop().expect("one")
        } else {
            Expr::Seq(items)
        })
    }

    fn repetition(&mut self, mut item: Expr) -> Result<Expr, SyntaxError> {
        let mut depth = self.tree_depth;
        loop {
            let (min, max) = match self.peek() {
                Some('*') => (0, None),
                Some('+') => (1, None),
                Some('?') => (0, Some(1)),
                Some('{') => {
                    let at = self.pos;
                    let close = self.chars[at..]
                        .iter()
                        .position(|&c| c == '}')
                        .ok_or_else(|| self.err(at, "unclosed `{`"))?;
                    let inner: String = self.chars[at + 1..at + close].iter().collect();
                    let num = |s: &str| {
                        s.trim()
                            .parse::<usize>()
                            .map_err(|_| self.err(at, format!("bad repetition count {:?} in `{{{inner}}}`", s.trim())))
                    };
                    let (min, max) = match inner.split_once(',') {
                        None => {
                            let n = num(&inner)?;
                            (n, Some(n))
                        }
                        Some((a, b)) if b.trim().is_empty() => (num(a)?, None),
                        Some((a, b)) => (num(a)?, Some(num(b)?)),
                    };
                    if max.is_some_and(|m| m < min) || min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
                        return Err(self.err(
                            at,
                            format!("repetition `{{{inner}}}` must have min ≤ max ≤ {MAX_REPEAT}"),
                        ));
                    }
                    self.pos = at + close; // the `}`; the shared `pos += 1` below passes it
                    (min, max)
                }
                _ => return Ok(item),
            };
            depth += 1;
            if depth > MAX_NESTING {
                return Err(self.err(
                    self.pos,
                    format!("expression nested more than {MAX_NESTING} levels deep"),
                ));
            }
            self.tree_depth = depth;
            self.pos += 1;
            item = Expr::Repeat {
                expr: Box::new(item),
                min,
                max,
            };
        }
    }

    fn item(&mut self) -> Result<Expr, SyntaxError> {
        let at = self.pos;
        // A leaf; a group sets the depth of its contents.
        self.tree_depth = 1;
        match self.peek() {
            Some('"') => {
                self.pos += 1;
                let mut s = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.err(at, "unclosed string literal")),
                        Some('"') => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => s.push(self.escape()?),
                        Some(c) => {
                            s.push(c);
                            self.pos += 1;
                        }
                    }
                }
                Ok(Expr::Literal(s))
            }
            Some('[') => {
                self.pos += 1;
                let negated = self.peek() == Some('^');
                if negated {
                    self.pos += 1;
                }
                let mut ranges = Vec::new();
                loop {
                    let lo = match self.peek() {
                        None => return Err(self.err(at, "unclosed character class")),
                        Some(']') => {
                            self.pos += 1;
                            break;
                        }
                        Some('\\') => self.escape()?,
                        Some(c) => {
                            self.pos += 1;
                            c
                        }
                    };
                    let hi = if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|&c| c != ']') {
                        self.pos += 1;
                        match self.peek() {
                            Some('\\') => self.escape()?,
                            Some(c) => {
                                self.pos += 1;
                                c
                            }
                            None => return Err(self.err(at, "unclosed character class")),
                        }
                    } else {
                        lo
                    };
                    if hi < lo {
                        return Err(self.err(at, format!("empty range {lo:?}-{hi:?} in character class")));
                    }
                    ranges.push((lo, hi));
                }
                if ranges.is_empty() && !negated {
                    return Err(self.err(at, "empty character class `[]` matches nothing"));
                }
                Ok(Expr::Class { negated, ranges })
            }
            Some('.') => {
                self.pos += 1;
                Ok(Expr::Class {
                    negated: true,
                    ranges: Vec::new(),
                })
            }
            Some('(') => {
                if self.depth >= MAX_NESTING {
                    return Err(self.err(at, format!("groups `(` nested more than {MAX_NESTING} levels deep")));
                }
                self.pos += 1;
                self.depth += 1;
                let inner = self.alternation()?;
                self.depth -= 1;
                self.skip();
                if self.peek() != Some(')') {
                    return Err(self.err(at, "unclosed `(`"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                let (name, end) = self.name_at(at).expect("an identifier character");
                self.pos = end;
                Ok(Expr::Ref(name))
            }
            Some(c) => Err(self.err(at, format!("unexpected {c:?}"))),
            None => Err(self.err(at, "unexpected end of grammar")),
        }
    }

    /// An escape sequence at `\`.
    fn escape(&mut self) -> Result<char, SyntaxError> {
        let at = self.pos;
        self.pos += 1;
        let c = self.peek().ok_or_else(|| self.err(at, "unfinished escape"))?;
        self.pos += 1;
        let hex = |p: &mut Self, n: usize| -> Result<char, SyntaxError> {
            let digits: String = p
                .chars
                .get(p.pos..p.pos + n)
                .map(|s| s.iter().collect())
                .unwrap_or_default();
            p.pos += n;
            u32::from_str_radix(&digits, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| p.err(at, format!("bad escape \\{c}{digits}")))
        };
        Ok(match c {
            'n' => '\n',
            't' => '\t',
            'r' => '\r',
            'x' => hex(self, 2)?,
            'u' => hex(self, 4)?,
            'U' => hex(self, 8)?,
            '\\' | '"' | '[' | ']' | '-' | '^' | '/' => c,
            other => return Err(self.err(at, format!("unknown escape \\{other}"))),
        })
    }
}

/// Parses GBNF text.
///
/// ```
/// use diffusion_lm_controllers::grammar::gbnf::{parse, Expr};
/// let g = parse(r#"root ::= "a" [0-9]+"#).unwrap();
/// assert!(matches!(g.rules["root"], Expr::Seq(_)));
/// let err = parse("root ::= (\"a\"").unwrap_err();
/// assert_eq!((err.line, err.column), (1, 10));
/// ```
pub fn parse(src: &str) -> Result<Gbnf, SyntaxError> {
    Parser {
        chars: src.chars().collect(),
        pos: 0,
        depth: 0,
        tree_depth: 0,
    }
    .grammar()
}

impl Expr {
    /// Every rule this expression refers to.
    pub fn refs<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Ref(r) => out.push(r),
            Expr::Seq(v) | Expr::Alt(v) => v.iter().for_each(|e| e.refs(out)),
            Expr::Repeat { expr, .. } => expr.refs(out),
            Expr::Literal(_) | Expr::Class { .. } => {}
        }
    }

    /// Whether `c` is in this character class (`false` for other expressions).
    pub fn class_contains(&self, c: char) -> bool {
        match self {
            Expr::Class { negated, ranges } => ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated,
            _ => false,
        }
    }
}
