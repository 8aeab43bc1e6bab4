//! Byte automata: the small algebra the JSON Schema compiler builds its constraint with.
//!
//! A [`Dfa`] is a deterministic automaton over bytes (start state 0, dense table over byte
//! classes). Leaves are written as explicit state machines ([`Dfa::from_fn`]) or literals; they
//! are combined exactly:
//!
//! * sequence, choice and repetition go through an [`Nfa`] (Thompson construction with byte
//!   ranges) and back by subset construction ([`Nfa::determinize`]);
//! * intersection, union, difference and "exactly one of" are product constructions
//!   ([`Dfa::product`], [`Dfa::product_many`]), which is what makes `allOf`, `not` and `oneOf`
//!   real set operations instead of string concatenations;
//! * [`Dfa::minimize`] (Moore partition refinement) keeps every intermediate result minimal, so
//!   products stay small.
//!
//! Every construction is bounded by a state limit and fails with [`TooLarge`] instead of
//! exhausting memory.
//!
//! ```
//! use diffusion_lm_controllers::byte_automaton::{Dfa, Nfa};
//! let ab = Dfa::literal(b"ab");
//! let digits = Dfa::from_fn(0u8, |&s, b| b.is_ascii_digit().then_some(s.max(1)), |&s| s == 1, 100).unwrap();
//! // ab followed by one or more digits
//! let mut nfa = Nfa::new();
//! let (a, d) = (nfa.embed(&ab), nfa.embed(&digits));
//! let f = nfa.concat(&[a, d]);
//! let dfa = nfa.determinize(f, 100).unwrap().minimize();
//! assert!(dfa.accepts(b"ab42"));
//! assert!(!dfa.accepts(b"ab"));
//! // digits but not "7"
//! let not7 = Dfa::product(&digits, &Dfa::literal(b"7"), |a, b| a && !b, 100).unwrap();
//! assert!(not7.accepts(b"77") && !not7.accepts(b"7"));
//! ```

use std::collections::HashMap;
use std::hash::Hash;

/// No transition.
pub const DEAD: u32 = u32::MAX;

/// A construction needed more states than its limit allows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the automaton exceeds {limit} states")]
pub struct TooLarge {
    pub limit: usize,
}

/// A deterministic byte automaton; state 0 is the start.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dfa {
    classes: Vec<u8>,
    num_classes: usize,
    table: Vec<u32>,
    accept: Vec<bool>,
}

impl Dfa {
    /// The empty language.
    pub fn empty() -> Dfa {
        Self::from_rows(vec![[DEAD; 256]], vec![false])
    }

    /// The language holding only the empty string.
    pub fn epsilon() -> Dfa {
        Self::from_rows(vec![[DEAD; 256]], vec![true])
    }

    /// The language holding exactly `bytes`.
    pub fn literal(bytes: &[u8]) -> Dfa {
        let mut rows = Vec::with_capacity(bytes.len() + 1);
        for (i, &b) in bytes.iter().enumerate() {
            let mut row = [DEAD; 256];
            row[b as usize] = i as u32 + 1;
            rows.push(row);
        }
        rows.push([DEAD; 256]);
        let mut accept = vec![false; bytes.len() + 1];
        accept[bytes.len()] = true;
        Self::from_rows(rows, accept)
    }

    /// A finite set of strings.
    pub fn literals<'a>(words: impl IntoIterator<Item = &'a [u8]>, limit: usize) -> Result<Dfa, TooLarge> {
        // A trie, then minimised.
        let mut rows = vec![[DEAD; 256]];
        let mut accept = vec![false];
        for w in words {
            let mut s = 0usize;
            for &b in w {
                let next = rows[s][b as usize];
                s = if next == DEAD {
                    rows.push([DEAD; 256]);
                    accept.push(false);
                    let id = rows.len() - 1;
                    rows[s][b as usize] = id as u32;
                    id
                } else {
                    next as usize
                };
                if rows.len() > limit {
                    return Err(TooLarge { limit });
                }
            }
            accept[s] = true;
        }
        Ok(Self::from_rows(rows, accept).minimize())
    }

    /// Explores a state machine given by `step` from `start` (every byte from every reachable
    /// state). Fails past `limit` states.
    pub fn from_fn<S: Clone + Eq + Hash>(
        start: S,
        mut step: impl FnMut(&S, u8) -> Option<S>,
        accept: impl Fn(&S) -> bool,
        limit: usize,
    ) -> Result<Dfa, TooLarge> {
        let mut ids: HashMap<S, u32> = HashMap::from([(start.clone(), 0)]);
        let mut states = vec![start];
        let mut rows: Vec<[u32; 256]> = Vec::new();
        let mut i = 0;
        while i < states.len() {
            let mut row = [DEAD; 256];
            for b in 0..=255u8 {
                if let Some(next) = step(&states[i], b) {
                    let id = match ids.get(&next) {
                        Some(&id) => id,
                        None => {
                            let id = states.len() as u32;
                            ids.insert(next.clone(), id);
                            states.push(next);
                            if states.len() > limit {
                                return Err(TooLarge { limit });
                            }
                            id
                        }
                    };
                    row[b as usize] = id;
                }
            }
            rows.push(row);
            i += 1;
        }
        let accept = states.iter().map(accept).collect();
        Ok(Self::from_rows(rows, accept))
    }

    /// Builds the class-compressed table from full rows.
    fn from_rows(rows: Vec<[u32; 256]>, accept: Vec<bool>) -> Dfa {
        // Bytes with identical columns share a class.
        let mut class_of_column: HashMap<Vec<u32>, u8> = HashMap::new();
        let mut classes = vec![0u8; 256];
        for b in 0..256 {
            let column: Vec<u32> = rows.iter().map(|r| r[b]).collect();
            let n = class_of_column.len();
            classes[b] = *class_of_column.entry(column).or_insert(n as u8);
        }
        let num_classes = class_of_column.len();
        let mut reps = vec![0usize; num_classes];
        for b in (0..256).rev() {
            reps[classes[b] as usize] = b;
        }
        let mut table = Vec::with_capacity(rows.len() * num_classes);
        for r in &rows {
            for &b in &reps {
                table.push(r[b]);
            }
        }
        Dfa {
            classes,
            num_classes,
            table,
            accept,
        }
    }

    fn row(&self, s: u32) -> [u32; 256] {
        let mut row = [DEAD; 256];
        let base = s as usize * self.num_classes;
        for (b, r) in row.iter_mut().enumerate() {
            *r = self.table[base + self.classes[b] as usize];
        }
        row
    }

    pub fn num_states(&self) -> usize {
        self.accept.len()
    }

    /// The state after byte `b` from `s` ([`DEAD`] if none).
    #[inline]
    pub fn next(&self, s: u32, b: u8) -> u32 {
        self.table[s as usize * self.num_classes + self.classes[b as usize] as usize]
    }

    pub fn is_accepting(&self, s: u32) -> bool {
        self.accept[s as usize]
    }

    /// Whether the automaton accepts `bytes`.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut s = 0u32;
        for &b in bytes {
            s = self.next(s, b);
            if s == DEAD {
                return false;
            }
        }
        self.accept[s as usize]
    }

    /// Whether the language is empty.
    pub fn is_empty(&self) -> bool {
        let mut seen = vec![false; self.num_states()];
        let mut stack = vec![0u32];
        seen[0] = true;
        while let Some(s) = stack.pop() {
            if self.accept[s as usize] {
                return false;
            }
            let base = s as usize * self.num_classes;
            for &n in &self.table[base..base + self.num_classes] {
                if n != DEAD && !seen[n as usize] {
                    seen[n as usize] = true;
                    stack.push(n);
                }
            }
        }
        true
    }

    /// Whether the language is finite; if it is and holds at most `max` strings, lists them.
    pub fn finite_strings(&self, max: usize) -> Option<Vec<Vec<u8>>> {
        let d = self.minimize();
        let mut out = Vec::new();
        let mut path = Vec::new();
        let mut on_path = vec![false; d.num_states()];
        fn dfs(
            d: &Dfa,
            s: u32,
            path: &mut Vec<u8>,
            on_path: &mut [bool],
            out: &mut Vec<Vec<u8>>,
            max: usize,
        ) -> bool {
            if on_path[s as usize] || out.len() > max {
                return false; // a cycle: infinite
            }
            on_path[s as usize] = true;
            if d.accept[s as usize] {
                out.push(path.clone());
            }
            for b in 0..=255u8 {
                let n = d.next(s, b);
                if n != DEAD {
                    path.push(b);
                    let ok = dfs(d, n, path, on_path, out, max);
                    path.pop();
                    if !ok {
                        return false;
                    }
                }
            }
            on_path[s as usize] = false;
            true
        }
        if d.is_empty() {
            return Some(Vec::new());
        }
        (dfs(&d, 0, &mut path, &mut on_path, &mut out, max) && out.len() <= max).then_some(out)
    }

    /// The product automaton of `a` and `b`, accepting where `f(a accepts, b accepts)`. A missing
    /// transition counts as a non-accepting sink, so `f` may be any boolean function.
    pub fn product(a: &Dfa, b: &Dfa, f: impl Fn(bool, bool) -> bool, limit: usize) -> Result<Dfa, TooLarge> {
        Self::product_many(&[a, b], |acc| f(acc[0], acc[1]), limit)
    }

    /// The product of several automata, accepting where `f(acceptance of each)`.
    pub fn product_many(dfas: &[&Dfa], f: impl Fn(&[bool]) -> bool, limit: usize) -> Result<Dfa, TooLarge> {
        let start: Vec<u32> = vec![0; dfas.len()];
        let all_dead = |s: &Vec<u32>| s.iter().all(|&x| x == DEAD);
        let d = Dfa::from_fn(
            start,
            |s, byte| {
                let next: Vec<u32> = s
                    .iter()
                    .zip(dfas)
                    .map(|(&x, d)| if x == DEAD { DEAD } else { d.next(x, byte) })
                    .collect();
                (!all_dead(&next)).then_some(next)
            },
            |s| {
                let acc: Vec<bool> = s
                    .iter()
                    .zip(dfas)
                    .map(|(&x, d)| x != DEAD && d.accept[x as usize])
                    .collect();
                f(&acc)
            },
            limit,
        )?;
        Ok(d.minimize())
    }

    /// Intersection.
    pub fn and(&self, other: &Dfa, limit: usize) -> Result<Dfa, TooLarge> {
        Dfa::product(self, other, |a, b| a && b, limit)
    }

    /// Union.
    pub fn or(&self, other: &Dfa, limit: usize) -> Result<Dfa, TooLarge> {
        Dfa::product(self, other, |a, b| a || b, limit)
    }

    /// Difference: in `self` and not in `other`.
    pub fn minus(&self, other: &Dfa, limit: usize) -> Result<Dfa, TooLarge> {
        Dfa::product(self, other, |a, b| a && !b, limit)
    }

    /// The minimal equivalent automaton (states that cannot reach acceptance removed).
    pub fn minimize(&self) -> Dfa {
        let n = self.num_states();
        let k = self.num_classes;
        // Live states: those that reach acceptance.
        let mut reverse: Vec<Vec<u32>> = vec![Vec::new(); n];
        for s in 0..n {
            for &t in &self.table[s * k..(s + 1) * k] {
                if t != DEAD {
                    reverse[t as usize].push(s as u32);
                }
            }
        }
        let mut live = self.accept.clone();
        let mut stack: Vec<u32> = (0..n as u32).filter(|&s| live[s as usize]).collect();
        while let Some(s) = stack.pop() {
            for &p in &reverse[s as usize] {
                if !live[p as usize] {
                    live[p as usize] = true;
                    stack.push(p);
                }
            }
        }
        if !live[0] {
            return Dfa::empty();
        }
        let next = |s: usize, c: usize| {
            let t = self.table[s * k + c];
            if t == DEAD || !live[t as usize] {
                DEAD
            } else {
                t
            }
        };
        // Moore refinement over live states.
        let mut block: Vec<u32> = (0..n).map(|s| u32::from(self.accept[s])).collect();
        let mut count = 0;
        loop {
            let mut ids: HashMap<Vec<u32>, u32> = HashMap::new();
            let mut new_block = vec![DEAD; n];
            for s in 0..n {
                if !live[s] {
                    continue;
                }
                let mut sig = Vec::with_capacity(k + 1);
                sig.push(block[s]);
                for c in 0..k {
                    let t = next(s, c);
                    sig.push(if t == DEAD { DEAD } else { block[t as usize] });
                }
                let m = ids.len() as u32;
                new_block[s] = *ids.entry(sig).or_insert(m);
            }
            block = new_block;
            if ids.len() == count {
                break;
            }
            count = ids.len();
        }
        // Renumber blocks in breadth-first order from the start.
        let mut order: HashMap<u32, u32> = HashMap::from([(block[0], 0)]);
        let mut reps = vec![0usize];
        let mut i = 0;
        let mut table = Vec::new();
        let mut accept = Vec::new();
        while i < reps.len() {
            let s = reps[i];
            for c in 0..k {
                let t = next(s, c);
                table.push(if t == DEAD {
                    DEAD
                } else {
                    let b = block[t as usize];
                    let m = order.len() as u32;
                    *order.entry(b).or_insert_with(|| {
                        reps.push(t as usize);
                        m
                    })
                });
            }
            accept.push(self.accept[s]);
            i += 1;
        }
        // Re-derive classes, since merging may make classes equal.
        let rows: Vec<[u32; 256]> = (0..reps.len())
            .map(|s| {
                let mut row = [DEAD; 256];
                for (b, r) in row.iter_mut().enumerate() {
                    *r = table[s * k + self.classes[b] as usize];
                }
                row
            })
            .collect();
        Dfa::from_rows(rows, accept)
    }
}

/// A piece of an [`Nfa`] with one entry and one exit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frag {
    pub start: u32,
    pub end: u32,
}

#[derive(Debug, Clone, Default)]
struct NState {
    eps: Vec<u32>,
    ranges: Vec<(u8, u8, u32)>,
}

/// A nondeterministic byte automaton with ε-moves, for sequence, choice and repetition.
#[derive(Debug, Clone, Default)]
pub struct Nfa {
    states: Vec<NState>,
}

impl Nfa {
    pub fn new() -> Nfa {
        Nfa::default()
    }

    pub fn num_states(&self) -> usize {
        self.states.len()
    }

    /// A fresh state.
    pub fn state(&mut self) -> u32 {
        self.states.push(NState::default());
        self.states.len() as u32 - 1
    }

    pub fn eps(&mut self, from: u32, to: u32) {
        self.states[from as usize].eps.push(to);
    }

    pub fn range(&mut self, from: u32, lo: u8, hi: u8, to: u32) {
        self.states[from as usize].ranges.push((lo, hi, to));
    }

    /// Copies `dfa` in as a fragment.
    pub fn embed(&mut self, dfa: &Dfa) -> Frag {
        let base = self.states.len() as u32;
        let n = dfa.num_states();
        for _ in 0..n {
            self.state();
        }
        let end = self.state();
        for s in 0..n as u32 {
            let row = dfa.row(s);
            let mut b = 0usize;
            while b < 256 {
                let t = row[b];
                let mut e = b;
                while e + 1 < 256 && row[e + 1] == t {
                    e += 1;
                }
                if t != DEAD {
                    self.range(base + s, b as u8, e as u8, base + t);
                }
                b = e + 1;
            }
            if dfa.accept[s as usize] {
                self.eps(base + s, end);
            }
        }
        Frag { start: base, end }
    }

    /// A fragment matching `bytes`.
    pub fn literal(&mut self, bytes: &[u8]) -> Frag {
        let start = self.state();
        let mut s = start;
        for &b in bytes {
            let t = self.state();
            self.range(s, b, b, t);
            s = t;
        }
        Frag { start, end: s }
    }

    /// Fragments in sequence.
    pub fn concat(&mut self, parts: &[Frag]) -> Frag {
        if parts.is_empty() {
            return self.literal(b"");
        }
        for w in parts.windows(2) {
            self.eps(w[0].end, w[1].start);
        }
        Frag {
            start: parts[0].start,
            end: parts[parts.len() - 1].end,
        }
    }

    /// Any one of `parts`.
    pub fn alt(&mut self, parts: &[Frag]) -> Frag {
        let start = self.state();
        let end = self.state();
        for p in parts {
            self.eps(start, p.start);
            self.eps(p.end, end);
        }
        Frag { start, end }
    }

    fn closure(&self, set: &mut Vec<u32>) {
        let mut seen: std::collections::HashSet<u32> = set.iter().copied().collect();
        let mut stack = set.clone();
        while let Some(s) = stack.pop() {
            for &t in &self.states[s as usize].eps {
                if seen.insert(t) {
                    set.push(t);
                    stack.push(t);
                }
            }
        }
        set.sort_unstable();
        set.dedup();
    }

    /// Subset construction of fragment `f` (accepting at `f.end`), minimised.
    pub fn determinize(&self, f: Frag, limit: usize) -> Result<Dfa, TooLarge> {
        let mut start = vec![f.start];
        self.closure(&mut start);
        let mut ids: HashMap<Vec<u32>, u32> = HashMap::from([(start.clone(), 0)]);
        let mut sets = vec![start];
        let mut rows: Vec<[u32; 256]> = Vec::new();
        let mut i = 0;
        while i < sets.len() {
            // Elementary byte intervals of this set's ranges.
            let mut cuts = vec![0u16, 256];
            for &s in &sets[i] {
                for &(lo, hi, _) in &self.states[s as usize].ranges {
                    cuts.push(lo as u16);
                    cuts.push(hi as u16 + 1);
                }
            }
            cuts.sort_unstable();
            cuts.dedup();
            let mut row = [DEAD; 256];
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0], w[1] - 1);
                let mut target = Vec::new();
                for &s in &sets[i] {
                    for &(a, b, t) in &self.states[s as usize].ranges {
                        if a as u16 <= lo && hi <= b as u16 {
                            target.push(t);
                        }
                    }
                }
                if target.is_empty() {
                    continue;
                }
                self.closure(&mut target);
                let id = match ids.get(&target) {
                    Some(&id) => id,
                    None => {
                        let id = sets.len() as u32;
                        ids.insert(target.clone(), id);
                        sets.push(target);
                        if sets.len() > limit {
                            return Err(TooLarge { limit });
                        }
                        id
                    }
                };
                for b in lo..=hi {
                    row[b as usize] = id;
                }
            }
            rows.push(row);
            i += 1;
        }
        let accept = sets.iter().map(|s| s.binary_search(&f.end).is_ok()).collect();
        Ok(Dfa::from_rows(rows, accept).minimize())
    }
}

/// Sequence of automata.
pub fn concat(parts: &[&Dfa], limit: usize) -> Result<Dfa, TooLarge> {
    let mut nfa = Nfa::new();
    let frags: Vec<Frag> = parts.iter().map(|d| nfa.embed(d)).collect();
    let f = nfa.concat(&frags);
    nfa.determinize(f, limit)
}

/// Union of automata.
pub fn union(parts: &[&Dfa], limit: usize) -> Result<Dfa, TooLarge> {
    let mut nfa = Nfa::new();
    let frags: Vec<Frag> = parts.iter().map(|d| nfa.embed(d)).collect();
    let f = nfa.alt(&frags);
    nfa.determinize(f, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> Dfa {
        Dfa::from_fn(0u8, |_, b| b.is_ascii_digit().then_some(1), |&s| s == 1, 10).unwrap()
    }

    #[test]
    fn literal_and_minimize() {
        let d = Dfa::literal(b"abc");
        assert!(d.accepts(b"abc") && !d.accepts(b"ab") && !d.accepts(b"abcd"));
        assert_eq!(d.minimize().num_states(), 4);
        let l = Dfa::literals([&b"cat"[..], b"bat", b"cats"], 100).unwrap();
        assert!(l.accepts(b"cat") && l.accepts(b"bat") && l.accepts(b"cats") && !l.accepts(b"ca"));
        // "cat"/"bat" share their suffix states after minimisation.
        assert_eq!(l.num_states(), 5);
    }

    #[test]
    fn products() {
        let d = digits();
        let seven = Dfa::literal(b"7");
        assert!(d.and(&seven, 100).unwrap().accepts(b"7"));
        let not7 = d.minus(&seven, 100).unwrap();
        assert!(!not7.accepts(b"7") && not7.accepts(b"77") && not7.accepts(b"8"));
        let either = Dfa::literal(b"x").or(&seven, 100).unwrap();
        assert!(either.accepts(b"x") && either.accepts(b"7") && !either.accepts(b"x7"));
        let one = Dfa::product_many(&[&d, &seven, &Dfa::literal(b"8")], |a| a.iter().filter(|&&x| x).count() == 1, 100)
            .unwrap();
        assert!(one.accepts(b"9") && !one.accepts(b"7") && !one.accepts(b"8"));
        assert!(d.and(&Dfa::literal(b"x"), 100).unwrap().is_empty());
    }

    #[test]
    fn nfa_sequence_and_choice() {
        let ab = concat(&[&Dfa::literal(b"a"), &digits(), &Dfa::literal(b"b")], 100).unwrap();
        assert!(ab.accepts(b"a123b") && !ab.accepts(b"ab"));
        let u = union(&[&Dfa::literal(b"12"), &digits()], 100).unwrap();
        assert!(u.accepts(b"12") && u.accepts(b"5") && !u.accepts(b""));
    }

    #[test]
    fn finite_strings() {
        let l = Dfa::literals([&b"a"[..], b"bc"], 10).unwrap();
        let mut s = l.finite_strings(10).unwrap();
        s.sort();
        assert_eq!(s, vec![b"a".to_vec(), b"bc".to_vec()]);
        assert!(digits().finite_strings(10).is_none());
    }

    #[test]
    fn limits_are_errors() {
        let r = Dfa::from_fn(0u32, |&s, _| Some(s + 1), |_| true, 50);
        assert_eq!(r.unwrap_err(), TooLarge { limit: 50 });
    }
}
