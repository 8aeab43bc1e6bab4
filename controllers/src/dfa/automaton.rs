//! Byte automata: the small algebra every byte-level language in this crate is built with.
//!
//! A [`Dfa`] is a deterministic automaton over bytes (start state 0, dense table over byte
//! classes). Leaves are written as explicit state machines ([`Dfa::from_fn`]), literals, or
//! compiled from a regular expression ([`super::regex_dfa`]); they are combined exactly:
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
//! use diffusion_lm_controllers::dfa::{Dfa, Nfa};
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

use std::hash::Hash;

use rustc_hash::{FxHashMap as HashMap, FxHashSet};

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
        let mut ids: HashMap<S, u32> = HashMap::default();
        ids.insert(start.clone(), 0);
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
        let classes: Vec<u8> = (0..=255u8).collect();
        let table: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Self::compress(&classes, 256, table, accept)
    }

    /// Merges byte classes whose columns are identical.
    fn compress(classes: &[u8], k: usize, table: Vec<u32>, accept: Vec<bool>) -> Dfa {
        let n = accept.len();
        let mut h = vec![0xcbf2_9ce4_8422_2325u64; k];
        for s in 0..n {
            for (c, hc) in h.iter_mut().enumerate() {
                *hc = (*hc ^ u64::from(table[s * k + c])).wrapping_mul(0x0100_0000_01b3);
            }
        }
        let mut new_id = vec![0usize; k];
        let mut reps: Vec<usize> = Vec::new();
        let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::default();
        for c in 0..k {
            let cands = by_hash.entry(h[c]).or_default();
            let same = cands
                .iter()
                .copied()
                .find(|&r| (0..n).all(|s| table[s * k + r] == table[s * k + c]));
            match same {
                Some(r) => new_id[c] = new_id[r],
                None => {
                    new_id[c] = reps.len();
                    reps.push(c);
                    cands.push(c);
                }
            }
        }
        let nk = reps.len();
        let mut t2 = Vec::with_capacity(n * nk);
        for s in 0..n {
            for &r in &reps {
                t2.push(table[s * k + r]);
            }
        }
        Dfa {
            classes: classes.iter().map(|&c| new_id[c as usize] as u8).collect(),
            num_classes: nk,
            table: t2,
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

    /// The fewest bytes from each state to an accepting state (`u32::MAX`: none). One backward
    /// breadth-first search over the transition table: O(states × byte classes).
    pub fn distances_to_accept(&self) -> Vec<u32> {
        let (n, k) = (self.num_states(), self.num_classes);
        // Reverse edges in compressed-row form.
        let mut count = vec![0u32; n + 1];
        for &t in &self.table {
            if t != DEAD {
                count[t as usize + 1] += 1;
            }
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let mut fill = count.clone();
        let mut preds = vec![0u32; count[n] as usize];
        for s in 0..n {
            for &t in &self.table[s * k..(s + 1) * k] {
                if t != DEAD {
                    preds[fill[t as usize] as usize] = s as u32;
                    fill[t as usize] += 1;
                }
            }
        }
        let mut dist = vec![u32::MAX; n];
        let mut queue = std::collections::VecDeque::new();
        for (s, d) in dist.iter_mut().enumerate() {
            if self.accept[s] {
                *d = 0;
                queue.push_back(s);
            }
        }
        while let Some(t) = queue.pop_front() {
            for &p in &preds[count[t] as usize..count[t + 1] as usize] {
                if dist[p as usize] == u32::MAX {
                    dist[p as usize] = dist[t] + 1;
                    queue.push_back(p as usize);
                }
            }
        }
        dist
    }

    /// A random accepted string (`None` for the empty language): a walk that stops at an
    /// accepting state with probability 1/4, picks printable ASCII bytes 9 times in 10 while it is
    /// shorter than `soft_len`, and past `soft_len` takes the shortest way to acceptance. `dist`
    /// is [`Dfa::distances_to_accept`]; `coin()` returns uniform numbers in [0, 1).
    pub fn random_string(&self, dist: &[u32], soft_len: usize, mut coin: impl FnMut() -> f64) -> Option<Vec<u8>> {
        if dist.first().is_none_or(|&d| d == u32::MAX) {
            return None;
        }
        let (mut s, mut out) = (0u32, Vec::new());
        loop {
            if self.accept[s as usize] && (out.len() >= soft_len || coin() < 0.25) {
                return Some(out);
            }
            let live: Vec<(u8, u32)> = (0..=255u8)
                .filter_map(|b| {
                    let t = self.next(s, b);
                    (t != DEAD && dist[t as usize] != u32::MAX).then_some((b, t))
                })
                .collect();
            let pick = |v: &[(u8, u32)], x: f64| v[((x * v.len() as f64) as usize).min(v.len() - 1)];
            let (b, t) = if live.is_empty() {
                return Some(out); // accepting with no way on
            } else if out.len() >= soft_len {
                *live.iter().min_by_key(|(_, t)| dist[*t as usize])?
            } else {
                let ascii: Vec<(u8, u32)> = live.iter().copied().filter(|(b, _)| (0x20..0x7f).contains(b)).collect();
                if !ascii.is_empty() && coin() < 0.9 {
                    pick(&ascii, coin())
                } else {
                    pick(&live, coin())
                }
            };
            out.push(b);
            s = t;
        }
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
        fn dfs(d: &Dfa, s: u32, path: &mut Vec<u8>, on_path: &mut [bool], out: &mut Vec<Vec<u8>>, max: usize) -> bool {
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
        // Joint byte classes: bytes every operand treats alike.
        let mut joint: HashMap<Vec<u8>, u8> = HashMap::default();
        let mut classes = vec![0u8; 256];
        let mut reps: Vec<u8> = Vec::new();
        for b in 0..=255u8 {
            let key: Vec<u8> = dfas.iter().map(|d| d.classes[b as usize]).collect();
            let next = joint.len();
            classes[b as usize] = *joint.entry(key).or_insert_with(|| {
                reps.push(b);
                next as u8
            });
        }
        let k = reps.len();
        let start: Vec<u32> = vec![0; dfas.len()];
        let mut ids: HashMap<Vec<u32>, u32> = HashMap::default();
        ids.insert(start.clone(), 0);
        let mut states = vec![start];
        let mut table: Vec<u32> = Vec::new();
        let mut next = vec![0u32; dfas.len()];
        let mut i = 0;
        while i < states.len() {
            for &b in &reps {
                let mut alive = false;
                for (j, d) in dfas.iter().enumerate() {
                    let x = states[i][j];
                    next[j] = if x == DEAD { DEAD } else { d.next(x, b) };
                    alive |= next[j] != DEAD;
                }
                if !alive {
                    table.push(DEAD);
                    continue;
                }
                table.push(intern(&mut ids, &mut states, &next, limit)?);
            }
            i += 1;
        }
        let mut acc = vec![false; dfas.len()];
        let accept = states
            .iter()
            .map(|s| {
                for (j, (&x, d)) in s.iter().zip(dfas).enumerate() {
                    acc[j] = x != DEAD && d.accept[x as usize];
                }
                f(&acc)
            })
            .collect();
        Ok(Dfa {
            classes,
            num_classes: k,
            table,
            accept,
        }
        .minimize())
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

    /// The minimal equivalent automaton (states that cannot reach acceptance removed), by
    /// Hopcroft's partition refinement.
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
        // Partial automaton over the live states: a missing transition is simply absent, and
        // (Valmari & Lehtinen) both initial blocks start in the worklist.
        let delta = |s: usize, c: usize| -> Option<usize> {
            let t = self.table[s * k + c];
            (t != DEAD && live[t as usize]).then_some(t as usize)
        };
        let members: Vec<usize> = (0..n).filter(|&s| live[s]).collect();
        // Inverse transitions in CSR form, per class.
        let m = n;
        let mut count = vec![0u32; k * m + 1];
        for &s in &members {
            for c in 0..k {
                if let Some(t) = delta(s, c) {
                    count[c * m + t + 1] += 1;
                }
            }
        }
        for i in 1..count.len() {
            count[i] += count[i - 1];
        }
        let mut fill = count.clone();
        let mut inv = vec![0u32; count[k * m] as usize];
        for &s in &members {
            for c in 0..k {
                if let Some(t) = delta(s, c) {
                    let slot = &mut fill[c * m + t];
                    inv[*slot as usize] = s as u32;
                    *slot += 1;
                }
            }
        }
        // Partition: elements grouped by block; marked elements sit at the front of their block.
        let mut elems: Vec<usize> = members.iter().copied().filter(|&s| self.accept[s]).collect();
        let n_acc = elems.len();
        elems.extend(members.iter().copied().filter(|&s| !self.accept[s]));
        let mut pos = vec![0usize; m];
        let mut block = vec![0usize; m];
        for (i, &s) in elems.iter().enumerate() {
            pos[s] = i;
            block[s] = usize::from(i >= n_acc);
        }
        let (mut first, mut end) = (vec![0, n_acc], vec![n_acc, elems.len()]);
        let mut mid = first.clone();
        let mut in_w: Vec<bool> = vec![false; 2 * k];
        let mut work: Vec<(usize, usize)> = Vec::new();
        for b0 in 0..2 {
            if first[b0] < end[b0] {
                for c in 0..k {
                    in_w[b0 * k + c] = true;
                    work.push((b0, c));
                }
            }
        }
        let mut touched: Vec<usize> = Vec::new();
        let mut splitter: Vec<usize> = Vec::new();
        while let Some((a, c)) = work.pop() {
            in_w[a * k + c] = false;
            splitter.clear();
            splitter.extend_from_slice(&elems[first[a]..end[a]]);
            for &t in &splitter {
                for &s in &inv[count[c * m + t] as usize..count[c * m + t + 1] as usize] {
                    let s = s as usize;
                    let b = block[s];
                    if pos[s] >= mid[b] {
                        // Move s into the marked front of its block.
                        let other = elems[mid[b]];
                        elems.swap(pos[s], mid[b]);
                        pos[other] = pos[s];
                        pos[s] = mid[b];
                        if mid[b] == first[b] {
                            touched.push(b);
                        }
                        mid[b] += 1;
                    }
                }
            }
            for &b in &touched {
                if mid[b] == end[b] {
                    mid[b] = first[b];
                    continue;
                }
                let nb = first.len();
                first.push(first[b]);
                end.push(mid[b]);
                mid.push(first[b]);
                // b keeps the unmarked tail; with first == mid its marked front is empty again.
                first[b] = mid[b];
                for &s in &elems[first[nb]..end[nb]] {
                    block[s] = nb;
                }
                in_w.extend(std::iter::repeat_n(false, k));
                let smaller = if end[nb] - first[nb] <= end[b] - first[b] {
                    nb
                } else {
                    b
                };
                for cc in 0..k {
                    let target = if in_w[b * k + cc] { nb } else { smaller };
                    if !in_w[target * k + cc] {
                        in_w[target * k + cc] = true;
                        work.push((target, cc));
                    }
                }
            }
            touched.clear();
        }
        // Renumber blocks breadth-first from the start.
        let mut order: HashMap<usize, u32> = HashMap::default();
        order.insert(block[0], 0);
        let mut reps = vec![0usize];
        let mut table = Vec::new();
        let mut accept = Vec::new();
        let mut i = 0;
        while i < reps.len() {
            let s = reps[i];
            for c in 0..k {
                table.push(match delta(s, c) {
                    None => DEAD,
                    Some(t) => {
                        let next = order.len() as u32;
                        *order.entry(block[t]).or_insert_with(|| {
                            reps.push(t);
                            next
                        })
                    }
                });
            }
            accept.push(self.accept[s]);
            i += 1;
        }
        // Merging states may make byte classes equal.
        Dfa::compress(&self.classes, k, table, accept)
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

    /// `open (member (sep member)*)? close`; `member` is used once, looped through.
    pub fn delimited_list(&mut self, open: &[u8], member: Frag, sep: &[u8], close: &[u8]) -> Frag {
        let (open, sep, close) = (self.literal(open), self.literal(sep), self.literal(close));
        self.eps(open.end, close.start);
        self.eps(open.end, member.start);
        self.eps(member.end, sep.start);
        self.eps(sep.end, member.start);
        self.eps(member.end, close.start);
        Frag {
            start: open.start,
            end: close.end,
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
        let mut seen: FxHashSet<u32> = set.iter().copied().collect();
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
        // Byte classes from every range boundary in the automaton.
        let mut is_cut = [false; 257];
        is_cut[0] = true;
        for st in &self.states {
            for &(lo, hi, _) in &st.ranges {
                is_cut[lo as usize] = true;
                is_cut[hi as usize + 1] = true;
            }
        }
        let mut classes = vec![0u8; 256];
        let mut reps: Vec<u8> = Vec::new();
        for b in 0..256usize {
            if is_cut[b] {
                reps.push(b as u8);
            }
            classes[b] = (reps.len() - 1) as u8;
        }
        let k = reps.len();
        let mut start = vec![f.start];
        self.closure(&mut start);
        let mut ids: HashMap<Vec<u32>, u32> = HashMap::default();
        ids.insert(start.clone(), 0);
        let mut sets = vec![start];
        let mut table: Vec<u32> = Vec::new();
        let mut targets: Vec<Vec<u32>> = vec![Vec::new(); k];
        let mut i = 0;
        while i < sets.len() {
            for t in targets.iter_mut() {
                t.clear();
            }
            for &s in &sets[i] {
                for &(lo, hi, t) in &self.states[s as usize].ranges {
                    for c in classes[lo as usize]..=classes[hi as usize] {
                        targets[c as usize].push(t);
                    }
                }
            }
            for target in targets.iter_mut() {
                if target.is_empty() {
                    table.push(DEAD);
                    continue;
                }
                self.closure(target);
                table.push(intern(&mut ids, &mut sets, target, limit)?);
            }
            i += 1;
        }
        let accept = sets.iter().map(|s| s.binary_search(&f.end).is_ok()).collect();
        Ok(Dfa {
            classes,
            num_classes: k,
            table,
            accept,
        }
        .minimize())
    }
}

/// The id of `key` among `states` (a product tuple or an NFA state set), adding it if new.
fn intern(
    ids: &mut HashMap<Vec<u32>, u32>,
    states: &mut Vec<Vec<u32>>,
    key: &[u32],
    limit: usize,
) -> Result<u32, TooLarge> {
    if let Some(&id) = ids.get(key) {
        return Ok(id);
    }
    let id = states.len() as u32;
    ids.insert(key.to_vec(), id);
    states.push(key.to_vec());
    if states.len() > limit {
        return Err(TooLarge { limit });
    }
    Ok(id)
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
        assert_eq!(l.num_states(), 7); // "bat" and "cats" share their final state
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
        let one = Dfa::product_many(
            &[&d, &seven, &Dfa::literal(b"8")],
            |a| a.iter().filter(|&&x| x).count() == 1,
            100,
        )
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

    /// All strings over `alphabet` up to `len` bytes.
    fn strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut layer = vec![Vec::new()];
        for _ in 0..len {
            layer = layer
                .iter()
                .flat_map(|w: &Vec<u8>| {
                    alphabet.iter().map(move |&b| {
                        let mut x = w.clone();
                        x.push(b);
                        x
                    })
                })
                .collect();
            out.extend(layer.iter().cloned());
        }
        out
    }

    fn random_dfa(table: &[Option<u8>], accept: &[bool]) -> Dfa {
        // States 0..n over the alphabet a, b, c; table[s * 3 + i] is the successor on letter i.
        let n = accept.len() as u8;
        Dfa::from_fn(
            0u8,
            |&s, b| match b {
                b'a'..=b'c' => table[s as usize * 3 + (b - b'a') as usize].map(|t| t % n),
                _ => None,
            },
            |&s| accept[s as usize],
            100,
        )
        .unwrap()
    }

    proptest::proptest! {
        #[test]
        fn minimisation_and_products_preserve_languages(
            t1 in proptest::collection::vec(proptest::option::of(0u8..6), 18),
            a1 in proptest::collection::vec(proptest::bool::ANY, 6),
            t2 in proptest::collection::vec(proptest::option::of(0u8..4), 12),
            a2 in proptest::collection::vec(proptest::bool::ANY, 4),
        ) {
            let (x, y) = (random_dfa(&t1, &a1), random_dfa(&t2, &a2));
            let (mx, my) = (x.minimize(), y.minimize());
            proptest::prop_assert_eq!(mx.minimize().num_states(), mx.num_states());
            let and = x.and(&y, 1000).unwrap();
            let minus = x.minus(&y, 1000).unwrap();
            let one = Dfa::product_many(&[&x, &y], |v| v[0] ^ v[1], 1000).unwrap();
            let cat = concat(&[&x, &y], 1000).unwrap();
            for w in strings(b"abc", 5) {
                let (in_x, in_y) = (x.accepts(&w), y.accepts(&w));
                proptest::prop_assert_eq!(mx.accepts(&w), in_x);
                proptest::prop_assert_eq!(my.accepts(&w), in_y);
                proptest::prop_assert_eq!(and.accepts(&w), in_x && in_y);
                proptest::prop_assert_eq!(minus.accepts(&w), in_x && !in_y);
                proptest::prop_assert_eq!(one.accepts(&w), in_x ^ in_y);
                let split = (0..=w.len()).any(|i| x.accepts(&w[..i]) && y.accepts(&w[i..]));
                proptest::prop_assert_eq!(cat.accepts(&w), split);
            }
        }
    }

    #[test]
    fn limits_are_errors() {
        let r = Dfa::from_fn(0u32, |&s, _| Some(s + 1), |_| true, 50);
        assert_eq!(r.unwrap_err(), TooLarge { limit: 50 });
    }
}
