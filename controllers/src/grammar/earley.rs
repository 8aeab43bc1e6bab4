//! An Earley recogniser for GBNF grammars, over characters.
//!
//! It is the `Grammar` controller's independent check: it reads the parsed rules directly (no
//! depth bound, no automaton), so an output the depth-bounded automaton produced is accepted only
//! if it really is in the grammar's language.

use std::collections::HashSet;

use super::gbnf::{Expr, Gbnf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sym {
    /// A terminal: index into `classes`.
    T(usize),
    /// A nonterminal.
    N(usize),
}

/// A context-free grammar over characters, compiled from GBNF for recognition.
pub struct Recognizer {
    /// (left-hand side, right-hand side) of every production.
    prods: Vec<(usize, Vec<Sym>)>,
    by_lhs: Vec<Vec<usize>>,
    nullable: Vec<bool>,
    /// Character classes of the terminals (`Expr::Class`).
    classes: Vec<Expr>,
    start: usize,
}

struct Builder<'g> {
    grammar: &'g Gbnf,
    rule_ids: Vec<String>,
    prods: Vec<(usize, Vec<Sym>)>,
    classes: Vec<Expr>,
    nonterminals: usize,
}

impl Builder<'_> {
    fn fresh(&mut self) -> usize {
        self.nonterminals += 1;
        self.nonterminals - 1
    }

    fn rule(&self, name: &str) -> Result<usize, String> {
        self.rule_ids
            .iter()
            .position(|r| r == name)
            .ok_or_else(|| format!("rule `{name}` is used but not defined"))
    }

    /// The symbols deriving exactly `e`.
    fn symbols(&mut self, e: &Expr) -> Result<Vec<Sym>, String> {
        Ok(match e {
            Expr::Literal(s) => s
                .chars()
                .map(|c| {
                    self.classes.push(Expr::Class {
                        negated: false,
                        ranges: vec![(c, c)],
                    });
                    Sym::T(self.classes.len() - 1)
                })
                .collect(),
            Expr::Class { .. } => {
                self.classes.push(e.clone());
                vec![Sym::T(self.classes.len() - 1)]
            }
            Expr::Ref(name) => vec![Sym::N(self.rule(name)?)],
            Expr::Seq(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(self.symbols(item)?);
                }
                out
            }
            Expr::Alt(alts) => {
                let nt = self.fresh();
                for a in alts {
                    let rhs = self.symbols(a)?;
                    self.prods.push((nt, rhs));
                }
                vec![Sym::N(nt)]
            }
            Expr::Repeat { expr, min, max } => {
                let x = self.symbols(expr)?;
                let nt = self.fresh();
                let mut base = Vec::new();
                for _ in 0..*min {
                    base.extend(x.iter().copied());
                }
                match max {
                    None => {
                        // nt → x^min S;  S → ε | x S
                        let s = self.fresh();
                        self.prods.push((s, Vec::new()));
                        let mut more = x.clone();
                        more.push(Sym::N(s));
                        self.prods.push((s, more));
                        base.push(Sym::N(s));
                        self.prods.push((nt, base));
                    }
                    Some(max) => {
                        for _ in *min..=*max {
                            self.prods.push((nt, base.clone()));
                            base.extend(x.iter().copied());
                        }
                    }
                }
                vec![Sym::N(nt)]
            }
        })
    }
}

impl Recognizer {
    /// Builds the recogniser of `grammar` starting at rule `root`.
    pub fn new(grammar: &Gbnf, root: &str) -> Result<Self, String> {
        let rule_ids: Vec<String> = grammar.order.clone();
        let mut b = Builder {
            grammar,
            nonterminals: rule_ids.len(),
            rule_ids,
            prods: Vec::new(),
            classes: Vec::new(),
        };
        for (i, name) in b.grammar.order.iter().enumerate() {
            let body = &b.grammar.rules[name];
            let rhs = b.symbols(body)?;
            b.prods.push((i, rhs));
        }
        let start = b.rule(root)?;
        let n = b.nonterminals;
        let mut by_lhs = vec![Vec::new(); n];
        for (i, (lhs, _)) in b.prods.iter().enumerate() {
            by_lhs[*lhs].push(i);
        }
        let mut nullable = vec![false; n];
        loop {
            let mut changed = false;
            for (lhs, rhs) in &b.prods {
                if !nullable[*lhs] && rhs.iter().all(|s| matches!(s, Sym::N(a) if nullable[*a])) {
                    nullable[*lhs] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Recognizer {
            prods: b.prods,
            by_lhs,
            nullable,
            classes: b.classes,
            start,
        })
    }

    /// Whether the whole `text` derives from the start rule.
    pub fn accepts(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let n = chars.len();
        // Item: (production, dot, origin).
        let mut sets: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); n + 1];
        let mut seen: Vec<HashSet<(usize, usize, usize)>> = vec![HashSet::new(); n + 1];
        let add = |sets: &mut Vec<Vec<_>>, seen: &mut Vec<HashSet<_>>, i: usize, item: (usize, usize, usize)| {
            if seen[i].insert(item) {
                sets[i].push(item);
            }
        };
        for &p in &self.by_lhs[self.start] {
            add(&mut sets, &mut seen, 0, (p, 0, 0));
        }
        for i in 0..=n {
            let mut k = 0;
            while k < sets[i].len() {
                let (p, dot, origin) = sets[i][k];
                k += 1;
                let (lhs, rhs) = &self.prods[p];
                match rhs.get(dot) {
                    Some(Sym::N(a)) => {
                        for &q in &self.by_lhs[*a] {
                            add(&mut sets, &mut seen, i, (q, 0, i));
                        }
                        if self.nullable[*a] {
                            add(&mut sets, &mut seen, i, (p, dot + 1, origin));
                        }
                    }
                    Some(Sym::T(c)) => {
                        if i < n && self.classes[*c].class_contains(chars[i]) {
                            add(&mut sets, &mut seen, i + 1, (p, dot + 1, origin));
                        }
                    }
                    None => {
                        let waiting: Vec<(usize, usize, usize)> = sets[origin]
                            .iter()
                            .copied()
                            .filter(|&(q, d, _)| self.prods[q].1.get(d) == Some(&Sym::N(*lhs)))
                            .collect();
                        for (q, d, o) in waiting {
                            add(&mut sets, &mut seen, i, (q, d + 1, o));
                        }
                    }
                }
            }
        }
        sets[n]
            .iter()
            .any(|&(p, dot, origin)| origin == 0 && self.prods[p].0 == self.start && dot == self.prods[p].1.len())
    }
}
