//! GBNF → a depth-bounded byte DFA.
//!
//! A context-free language is not regular, but the fixed-length token sequence bounds how deep
//! any output can nest. The compiler unrolls recursion: rules that call each other (a strongly
//! connected component of the rule graph) may nest at most `max_depth`
//! ([`Limits::grammar_depth`]) levels; deeper calls derive nothing. Calls into other components
//! start their own count. Every expression becomes a minimised [`Dfa`] of the byte-DFA layer
//! (literals directly, character classes through [`regex_dfa`], sequences, choices and
//! repetitions by its constructions), memoised per rule and remaining depth, so the result is
//! exactly the grammar's language restricted to that nesting depth: every string it accepts is
//! in the grammar's language, and every string of the language within the depth is accepted.
//!
//! **Stack.** The compiler recurses on expressions and rule calls. Rules reached through other
//! components are compiled first, callees before callers, so the recursion never follows a
//! chain of components (a grammar may have thousands of rules); what remains — nesting inside
//! one rule and unrolling inside one component — is bounded by [`MAX_NESTING`].

use std::collections::HashMap;

use super::gbnf::{Expr, Gbnf};
use crate::dfa::{regex_dfa, Dfa, Frag, Nfa, RegexFailure, TooLarge};
use crate::Limits;

/// How deep the compiler may nest expressions, unrolled rule calls included (a recursive call
/// costs the expressions between it and its rule's body, typically 2 to 5): enough for a
/// `max_depth` in the hundreds, and small enough to stay within a 2 MiB thread stack.
pub const MAX_NESTING: usize = 1_000;

/// Why a grammar did not compile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompileError {
    Undefined { rule: String, used_in: String },
    TooLarge { rule: String, limit: usize },
    Class { rule: String, message: String },
    TooDeep { rule: String, limit: usize },
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompileError::Undefined { rule, used_in } => {
                write!(f, "rule `{rule}` (used in `{used_in}`) is not defined")
            }
            CompileError::TooLarge { rule, limit } => write!(
                f,
                "the automaton of rule `{rule}` exceeds {limit} states; lower the nesting depth (Limits::grammar_depth)"
            ),
            CompileError::Class { rule, message } => write!(f, "character class in rule `{rule}`: {message}"),
            CompileError::TooDeep { rule, limit } => write!(
                f,
                "compiling rule `{rule}` nests expressions and unrolled rule calls more than {limit} levels deep; lower the nesting depth (Limits::grammar_depth)"
            ),
        }
    }
}

pub struct Compiler<'g> {
    grammar: &'g Gbnf,
    max_depth: usize,
    limit: usize,
    /// Bytes a character class's regex DFA may occupy (its NFA and determinisation too).
    class_bytes: usize,
    /// Strongly connected component of each rule; callees' components are numbered before
    /// their callers'.
    component: HashMap<&'g str, usize>,
    /// Each rule's automaton (or why it has none) per remaining depth.
    memo: HashMap<(String, usize), Result<Dfa, CompileError>>,
    classes: HashMap<String, Dfa>,
    /// How many expressions are being compiled, each inside the previous (see [`MAX_NESTING`]).
    nesting: usize,
}

impl<'g> Compiler<'g> {
    /// A compiler for `grammar` under `limits` (the `grammar_` fields: nesting depth, states per
    /// automaton, bytes of a character class's DFA). Fails if a rule calls an undefined one.
    pub fn new(grammar: &'g Gbnf, limits: &Limits) -> Result<Self, CompileError> {
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
            max_depth: limits.grammar_depth,
            limit: limits.grammar_states,
            class_bytes: limits.grammar_class_bytes,
            component: components(grammar),
            memo: HashMap::new(),
            classes: HashMap::new(),
            nesting: 0,
        })
    }

    /// The DFA of `rule` with `depth` nesting levels left in its component.
    pub fn rule(&mut self, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        if self.nesting == 0 {
            // Compile what `rule` reaches in other components bottom-up, so the recursion below
            // stops at each of them. A rule's result does not depend on where it is reached
            // from, so this changes only the order of the work.
            for target in self.cross_component_targets(rule) {
                let _ = self.rule_at(target, self.max_depth);
            }
        }
        self.rule_at(rule, depth)
    }

    fn rule_at(&mut self, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        let key = (rule.to_string(), depth);
        if let Some(r) = self.memo.get(&key) {
            return r.clone();
        }
        let grammar = self.grammar;
        let body = grammar.rules.get(rule).ok_or_else(|| CompileError::Undefined {
            rule: rule.to_string(),
            used_in: "Compiler::rule".to_string(),
        })?;
        let r = self.expr(body, rule, depth);
        // Hitting the nesting limit depends on where the rule was reached from: not memoised.
        if !matches!(r, Err(CompileError::TooDeep { .. })) {
            self.memo.insert(key, r.clone());
        }
        r
    }

    /// Rules reachable from `start` that some reachable rule calls from another component
    /// (these are always compiled at full depth), callees before callers.
    fn cross_component_targets(&self, start: &str) -> Vec<&'g str> {
        let grammar = self.grammar;
        let Some((start, _)) = grammar.rules.get_key_value(start) else {
            return Vec::new();
        };
        let mut seen = std::collections::HashSet::from([start.as_str()]);
        let mut todo = vec![start.as_str()];
        let mut targets = Vec::new();
        let mut is_target = std::collections::HashSet::new();
        while let Some(v) = todo.pop() {
            let mut refs = Vec::new();
            grammar.rules[v].refs(&mut refs);
            for w in refs {
                let Some((w, _)) = grammar.rules.get_key_value(w) else {
                    continue;
                };
                let w = w.as_str();
                if self.component.get(w) != self.component.get(v) && is_target.insert(w) {
                    targets.push(w);
                }
                if seen.insert(w) {
                    todo.push(w);
                }
            }
        }
        targets.sort_by_key(|t| self.component.get(t).copied().unwrap_or(usize::MAX));
        targets
    }

    fn too_large(&self, rule: &str) -> impl Fn(TooLarge) -> CompileError + '_ {
        let rule = rule.to_string();
        move |e| CompileError::TooLarge {
            rule: rule.clone(),
            limit: e.limit,
        }
    }

    fn expr(&mut self, e: &Expr, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        if self.nesting >= MAX_NESTING {
            return Err(CompileError::TooDeep {
                rule: rule.to_string(),
                limit: MAX_NESTING,
            });
        }
        self.nesting += 1;
        let r = self.expr_inner(e, rule, depth);
        self.nesting -= 1;
        r
    }

    fn expr_inner(&mut self, e: &Expr, rule: &str, depth: usize) -> Result<Dfa, CompileError> {
        Ok(match e {
            Expr::Literal(s) => Dfa::literal(s.as_bytes()),
            Expr::Class { negated, ranges } => {
                let re = class_regex(*negated, ranges);
                if let Some(d) = self.classes.get(&re) {
                    return Ok(d.clone());
                }
                let d = regex_dfa(&re, self.class_bytes, self.limit).map_err(|f| CompileError::Class {
                    rule: rule.to_string(),
                    message: match f {
                        RegexFailure::Build(m) => m,
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
                    (true, d) => self.rule_at(target, d - 1)?,
                    (false, _) => self.rule_at(target, self.max_depth)?,
                }
            }
            Expr::Seq(items) | Expr::Alt(items) => {
                let parts = items
                    .iter()
                    .map(|i| self.expr(i, rule, depth))
                    .collect::<Result<Vec<_>, _>>()?;
                let refs: Vec<&Dfa> = parts.iter().collect();
                let combine = match e {
                    Expr::Seq(_) => crate::dfa::concat,
                    _ => crate::dfa::union,
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

/// Tarjan's strongly connected components of the rule graph, numbered in the order they
/// complete (a component's callees before it). Iterative, so long chains of rules cannot
/// overflow the stack.
fn components(g: &Gbnf) -> HashMap<&str, usize> {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut low: HashMap<&str, usize> = HashMap::new();
    let mut stack: Vec<&str> = Vec::new();
    let mut on_stack: std::collections::HashSet<&str> = Default::default();
    let mut comp: HashMap<&str, usize> = HashMap::new();
    let mut count = 0;
    // The depth-first path: each rule, the (defined) rules it refers to, and how many are done.
    let mut path: Vec<(&str, Vec<&str>, usize)> = Vec::new();
    let refs_of = |v: &str| -> Vec<&str> {
        let mut refs = Vec::new();
        g.rules[v].refs(&mut refs);
        refs.into_iter()
            .filter_map(|w| g.rules.get_key_value(w).map(|(w, _)| w.as_str()))
            .collect()
    };
    for root in &g.order {
        let root = root.as_str();
        if index.contains_key(root) {
            continue;
        }
        index.insert(root, index.len());
        low.insert(root, index[root]);
        stack.push(root);
        on_stack.insert(root);
        path.push((root, refs_of(root), 0));
        while let Some((v, refs, done)) = path.last_mut() {
            let v = *v;
            if let Some(&w) = refs.get(*done) {
                *done += 1;
                if !index.contains_key(w) {
                    index.insert(w, index.len());
                    low.insert(w, index[w]);
                    stack.push(w);
                    on_stack.insert(w);
                    path.push((w, refs_of(w), 0));
                } else if on_stack.contains(w) {
                    let lv = low[v].min(index[w]);
                    low.insert(v, lv);
                }
                continue;
            }
            // Every callee of `v` is done.
            path.pop();
            if let Some((parent, _, _)) = path.last() {
                let lp = low[parent].min(low[v]);
                low.insert(parent, lp);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack.remove(w);
                    comp.insert(w, count);
                    if w == v {
                        break;
                    }
                }
                count += 1;
            }
        }
    }
    comp
}
