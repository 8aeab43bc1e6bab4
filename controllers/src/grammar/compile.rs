//! GBNF → a depth-bounded byte DFA.
//!
//! A context-free language is not regular, but the fixed-length token sequence bounds how deep
//! any output can nest. The compiler unrolls recursion: rules that call each other (a strongly
//! connected component of the rule graph) may nest at most `max_depth` levels; deeper calls
//! derive nothing. Calls into other components start their own count. Every expression becomes a
//! minimised [`Dfa`] (memoised per rule and remaining depth), so the result is exactly the
//! grammar's language restricted to that nesting depth: every string it accepts is in the
//! grammar's language, and every string of the language within the depth is accepted.

use std::collections::HashMap;

use super::gbnf::{Expr, Gbnf};
use crate::byte_automaton::{Dfa, Frag, Nfa, TooLarge};
use crate::json_schema::leaf::{regex_dfa, RegexFailure};

/// Why a grammar did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    Undefined { rule: String, used_in: String },
    TooLarge { rule: String, limit: usize },
    Class { rule: String, message: String },
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Undefined { rule, used_in } => {
                write!(f, "rule `{rule}` (used in `{used_in}`) is not defined")
            }
            CompileError::TooLarge { rule, limit } => write!(
                f,
                "the automaton of rule `{rule}` exceeds {limit} states; lower the nesting depth (max_depth)"
            ),
            CompileError::Class { rule, message } => write!(f, "character class in rule `{rule}`: {message}"),
        }
    }
}

pub struct Compiler<'g> {
    grammar: &'g Gbnf,
    max_depth: usize,
    limit: usize,
    /// Strongly connected component of each rule.
    component: HashMap<&'g str, usize>,
    memo: HashMap<(String, usize), Dfa>,
    classes: HashMap<String, Dfa>,
}

impl<'g> Compiler<'g> {
    pub fn new(grammar: &'g Gbnf, max_depth: usize, limit: usize) -> Result<Self, CompileError> {
        for name in &grammar.order {
            let mut refs = Vec::new();
            grammar.rules[name].refs(&mut refs);
            if let Some(missing) = refs.iter().find(|r| !grammar.rules.contains_key(**r)) {
                return Err(CompileError::Undefined {
                    rule: missing.to_string(),
                    used_in: name.clone(),
                });
            }
        }
        Ok(Compiler {
            grammar,
            max_depth,
            limit,
            component: components(grammar),
            memo: HashMap::new(),
            classes: HashMap::new(),
        })
    }

    /// The DFA of `rule` with `depth` nesting levels left in its component.
    pub fn rule(&mut self, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        if let Some(d) = self.memo.get(&(rule.to_string(), depth)) {
            return Ok(d.clone());
        }
        let body = &self.grammar.rules[rule];
        let dfa = self.expr(body, rule, depth)?;
        self.memo.insert((rule.to_string(), depth), dfa.clone());
        Ok(dfa)
    }

    fn too_large(&self, rule: &str) -> impl Fn(TooLarge) -> CompileError + '_ {
        let rule = rule.to_string();
        move |e| CompileError::TooLarge {
            rule: rule.clone(),
            limit: e.limit,
        }
    }

    fn expr(&mut self, e: &Expr, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        Ok(match e {
            Expr::Literal(s) => Dfa::literal(s.as_bytes()),
            Expr::Class { negated, ranges } => {
                let re = class_regex(*negated, ranges);
                if let Some(d) = self.classes.get(&re) {
                    return Ok(d.clone());
                }
                let d = regex_dfa(&re, 1 << 22, self.limit).map_err(|f| CompileError::Class {
                    rule: rule.to_string(),
                    message: match f {
                        RegexFailure::Syntax(m) => m,
                        RegexFailure::TooLarge(n) => format!("more than {n} states"),
                    },
                })?;
                self.classes.insert(re, d.clone());
                d
            }
            Expr::Ref(target) => {
                let same = self.component[rule] == self.component[target.as_str()];
                match (same, depth) {
                    (true, 0) => Dfa::empty(),
                    (true, d) => self.rule(target, d - 1)?,
                    (false, _) => self.rule(target, self.max_depth)?,
                }
            }
            Expr::Seq(items) | Expr::Alt(items) => {
                let parts = items
                    .iter()
                    .map(|i| self.expr(i, rule, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&Dfa> = parts.iter().collect();
                let combine = match e {
                    Expr::Seq(_) => crate::byte_automaton::concat,
                    _ => crate::byte_automaton::union,
                };
                combine(&refs, self.limit).map_err(self.too_large(rule))?
            }
            Expr::Repeat { expr, min, max } => {
                let x = self.expr(expr, rule, depth)?;
                let mut nfa = Nfa::new();
                let mut parts: Vec<Frag> = (0..*min).map(|_| nfa.embed(&x)).collect();
                match max {
                    None => {
                        let f = nfa.embed(&x);
                        let (s, e) = (nfa.state(), nfa.state());
                        nfa.eps(s, f.start);
                        nfa.eps(f.end, s);
                        nfa.eps(s, e);
                        parts.push(Frag { start: s, end: e });
                    }
                    Some(max) => {
                        for _ in *min..*max {
                            let f = nfa.embed(&x);
                            let (s, e) = (nfa.state(), nfa.state());
                            nfa.eps(s, f.start);
                            nfa.eps(f.end, e);
                            nfa.eps(s, e);
                            parts.push(Frag { start: s, end: e });
                        }
                    }
                }
                let whole = if parts.is_empty() {
                    let s = nfa.state();
                    Frag { start: s, end: s }
                } else {
                    nfa.concat(&parts)
                };
                nfa.determinize(whole, self.limit).map_err(self.too_large(rule))?
            }
        })
    }
}

/// A Rust regex for one character of the class (`.` is the negated empty class).
fn class_regex(negated: bool, ranges: &[(char, char)]) -> String {
    if ranges.is_empty() {
        return if negated { "(?s:.)".into() } else { "[^\\s\\S]".into() };
    }
    let esc = |c: char| format!("\\x{{{:x}}}", c as u32);
    let body: String = ranges
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                esc(lo)
            } else {
                format!("{}-{}", esc(lo), esc(hi))
            }
        })
        .collect();
    format!("[{}{body}]", if negated { "^" } else { "" })
}

/// Tarjan's strongly connected components of the rule graph.
fn components(g: &Gbnf) -> HashMap<&str, usize> {
    struct State<'a> {
        g: &'a Gbnf,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: std::collections::HashSet<&'a str>,
        comp: HashMap<&'a str, usize>,
        next: usize,
        count: usize,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let mut refs = Vec::new();
        s.g.rules[v].refs(&mut refs);
        for w in refs {
            let Some((w, _)) = s.g.rules.get_key_value(w) else {
                continue;
            };
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                s.comp.insert(w, s.count);
                if w == v {
                    break;
                }
            }
            s.count += 1;
        }
    }
    let mut s = State {
        g,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: Default::default(),
        comp: HashMap::new(),
        next: 0,
        count: 0,
    };
    for name in &g.order {
        if !s.index.contains_key(name.as_str()) {
            visit(&mut s, name);
        }
    }
    s.comp
}
