//! Forward–backward over (position × automaton state): the exact distribution of token sequences
//! that a constraint automaton accepts, under per-position token scores.
//!
//! Given scores `score[p][w]` (disallowed tokens at `−∞`) and a temperature `T`, a [`Lattice`]
//! represents
//!
//! ```text
//! p(w) ∝ exp(Σ_p score[p][w_p] / T)   over the sequences whose content the automaton accepts
//!                                      and whose tail is PAD
//! ```
//!
//! and answers three questions about it: one exact sample ([`Lattice::sample`]), the marginal
//! probability of one token at one position ([`Lattice::marginal`]), and a position's whole
//! marginal row ([`Lattice::marginal_row`]).
//!
//! # How it is computed, and what it costs
//!
//! Tokens enter the lattice only through *token sets*: the automaton groups the tokens leaving a
//! state by destination, and groups with the same token list share a set id. Per position, each
//! set's total weight `E[p][set] = Σ_{t ∈ set} exp((score[p][t] − max_p) / T)` is computed once
//! (`max_p`: the best score at `p` among the tokens of any set and PAD; no other token can be
//! drawn, so no other token's `exp` is taken). The forward and backward passes then cost one
//! multiply-add per live (state, group), not per token. Three things keep it cheap:
//!
//! * **Linear space.** The passes run on `f64` weights rescaled at each position, not on
//!   log-sum-exps, so a transition costs a multiply-add instead of an `exp` and a `ln`.
//! * **Live states only.** The forward pass follows only the states reachable from the start
//!   that can still reach acceptance in the positions left; the backward pass visits only those.
//!   Once most positions are committed (a committed position scores its token 0 and every other
//!   `−∞`), only the few states consistent with them stay live.
//! * **Sets from sets.** Large token sets are often near-copies of each other ("any token
//!   without a quote", "any token without a quote or a backslash"). Once per automaton, each set
//!   is planned as the cheapest of: its own tokens, the union of all sets minus a few, or an
//!   earlier set plus and minus a few. A position's set weights then cost the sum of those
//!   differences, not the sum of the set sizes. An exact count of each set's positive weights
//!   goes along, so a set with none weighs exactly 0, and a difference that cancelled to within
//!   `1e-9` of the terms it came from is summed again from the set's own tokens.
//!
//! A committed position (one finite score) costs no `exp` and no set weight: the passes follow
//! the committed token's transition column (each state's next state on that token, made once per
//! token and automaton). A position's marginal row costs its live groups plus the planned
//! differences (a token whose sum cancelled is summed again); one token's marginal costs a
//! binary search per live set. The forward pass on a free position ends with a scan of every
//! state.
//!
//! Scores must be finite or `−∞`; NaN and `+∞` count as `−∞`. Token weights are `f32`, so a
//! token more than about 100 nats (times `T`) below `max_p` weighs 0; set and path weights are
//! `f64`, rescaled at every position. What underflows drops out of the linear passes: at
//! temperature 1 such sequences are negligible, but near temperature 0 (below about 0.01 with a
//! trained model) it can leave no sequence at all, or a position's total can underflow, and then
//! the lattice is recomputed in log space, exactly, which is slower (every marginal is computed
//! up front). Either way a sample only takes transitions and tokens with a positive weight, so
//! every sample is accepted.
//!
//! ```
//! use diffusion_lm::{TextTokenizer, steer::{automaton::TokenAutomaton, token_index::TokenIndex, lattice::Lattice}};
//! use rand::SeedableRng;
//! let tok = TextTokenizer::train(["aaa bbb", "ab ba"].into_iter(), 300).unwrap();
//! let index = TokenIndex::new(&tok);
//! let only_a = TokenAutomaton::from_byte_automaton(&index, 0u8, |_, b| (b == b'a').then_some(1), |s| s == 1, 100).unwrap();
//! let (len, v) = (4, tok.vocab_size());
//! let scores = vec![0f32; len * v]; // every token equally likely before the constraint
//! let lattice = Lattice::new(&scores, len, v, &only_a, tok.pad_id(), 1.0).unwrap();
//! let ids = lattice.sample(&mut rand::rngs::StdRng::seed_from_u64(0));
//! let content: Vec<u32> = ids.iter().copied().take_while(|&t| t != tok.pad_id()).collect();
//! assert!(only_a.accepts(&content));
//! // Position 0 must start the content: PAD there is impossible.
//! assert_eq!(lattice.marginal(0, tok.pad_id()), 0.0);
//! let row = lattice.marginal_row(1);
//! assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
//! ```

use rayon::prelude::*;

use crate::steer::automaton::{Edge, TokenAutomaton, TokenGroup};

/// The distribution of accepted sequences under token scores (see the [module docs](self)).
pub struct Lattice<'a> {
    inner: Inner<'a>,
}

enum Inner<'a> {
    Linear(Linear<'a>),
    /// The exact log-space fallback, with its marginals computed up front.
    Log(LogLattice<'a>, Vec<f32>),
}

impl<'a> Lattice<'a> {
    /// The lattice of `scores` (`len × vocab`, row-major) under `automaton`, at `temperature`
    /// (floored at `1e-6`). `None` when no accepted sequence has a finite score.
    pub fn new(
        scores: &'a [f32],
        len: usize,
        vocab: usize,
        automaton: &'a TokenAutomaton,
        pad: u32,
        temperature: f32,
    ) -> Option<Self> {
        debug_assert_eq!(scores.len(), len * vocab);
        if let Some(l) = Linear::new(scores, len, vocab, automaton, pad, temperature) {
            return Some(Lattice {
                inner: Inner::Linear(l),
            });
        }
        // The exact fallback, on a copy where NaN and +∞ are −∞ as the linear lattice takes them.
        let cleaned: Vec<f32> = scores
            .iter()
            .map(|&x| if x.is_finite() { x } else { f32::NEG_INFINITY })
            .collect();
        let log = LogLattice::new(cleaned, len, vocab, automaton, pad, temperature)?;
        let marginals = log.marginals();
        Some(Lattice {
            inner: Inner::Log(log, marginals),
        })
    }

    /// The sequence length.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Linear(l) => l.len,
            Inner::Log(l, _) => l.len,
        }
    }

    /// Whether the sequence is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One exact sample: a whole sequence, accepted by the automaton with a PAD tail.
    pub fn sample(&self, rng: &mut impl rand::Rng) -> Vec<u32> {
        match &self.inner {
            Inner::Linear(l) => l.sample(rng),
            Inner::Log(l, _) => l.sample(rng),
        }
    }

    /// The probability that position `p` holds `token`.
    pub fn marginal(&self, p: usize, token: u32) -> f32 {
        match &self.inner {
            Inner::Linear(l) => l.marginal(p, token),
            Inner::Log(l, m) => m[p * l.vocab + token as usize],
        }
    }

    /// Position `p`'s marginal distribution over the vocabulary.
    pub fn marginal_row(&self, p: usize) -> Vec<f32> {
        match &self.inner {
            Inner::Linear(l) => l.marginal_row(p),
            Inner::Log(l, m) => m[p * l.vocab..(p + 1) * l.vocab].to_vec(),
        }
    }

    /// Every position's marginal row (`len × vocab`).
    pub fn marginals(&self) -> Vec<f32> {
        match &self.inner {
            Inner::Linear(l) => (0..l.len).flat_map(|p| l.marginal_row(p)).collect(),
            Inner::Log(_, m) => m.clone(),
        }
    }

    /// `ln Σ exp(Σ_p score[p][w_p] / T)` over the accepted sequences: the log of the mass the
    /// constraints leave (`ln` of its probability when the scores are log-probabilities at
    /// `T = 1`).
    pub fn log_partition(&self) -> f64 {
        match &self.inner {
            Inner::Linear(l) => l.log_partition(),
            Inner::Log(l, _) => l.log_z as f64,
        }
    }

    /// Whether the exact log-space fallback is in use (weights underflowed in linear space).
    pub fn is_log_space(&self) -> bool {
        matches!(self.inner, Inner::Log(..))
    }
}

/// How each token set's weight is computed from a row of token weights: once per automaton.
#[derive(Debug, Clone)]
pub(crate) struct SetPlan {
    /// The tokens of each set id, sorted.
    tokens: Vec<Vec<u32>>,
    /// Every token of any set, sorted.
    union: Vec<u32>,
    uses_union: bool,
    /// In evaluation order: a step's base is computed before it.
    steps: Vec<PlanStep>,
}

#[derive(Debug, Clone)]
struct PlanStep {
    set: u32,
    base: Base,
    add: Vec<u32>,
    remove: Vec<u32>,
}

#[derive(Debug, Clone, Copy)]
enum Base {
    Empty,
    Union,
    Set(u32),
}

/// Above this many sets, a set is compared only with the earlier sets nearest in size, so that
/// planning stays near-linear.
const PLAN_CANDIDATES: usize = 256;

impl SetPlan {
    pub(crate) fn new(automaton: &TokenAutomaton) -> Self {
        let mut tokens: Vec<Option<&[u32]>> = vec![None; automaton.num_sets()];
        for s in 0..automaton.num_states() {
            for g in automaton.groups(s as u32) {
                tokens[g.set as usize].get_or_insert(&g.tokens);
            }
        }
        let tokens: Vec<Vec<u32>> = tokens.into_iter().map(|t| t.unwrap_or(&[]).to_vec()).collect();
        let mut union: Vec<u32> = tokens.iter().flatten().copied().collect();
        union.sort_unstable();
        union.dedup();
        let mut order: Vec<u32> = (0..tokens.len() as u32).collect();
        order.sort_by_key(|&s| std::cmp::Reverse(tokens[s as usize].len()));
        let mut steps = Vec::with_capacity(order.len());
        for (i, &set) in order.iter().enumerate() {
            let a = &tokens[set as usize];
            let mut best = (a.len(), Base::Empty);
            if union.len() - a.len() < best.0 {
                best = (union.len() - a.len(), Base::Union);
            }
            // Earlier sets are at least as large; the nearest in size come last.
            for &prev in order[..i].iter().rev().take(PLAN_CANDIDATES) {
                let b = &tokens[prev as usize];
                if b.len() - a.len() >= best.0 {
                    break;
                }
                if let Some(d) = symmetric_difference_below(a, b, best.0) {
                    best = (d, Base::Set(prev));
                }
            }
            let (add, remove) = match best.1 {
                Base::Empty => (a.clone(), Vec::new()),
                Base::Union => (Vec::new(), minus(&union, a)),
                Base::Set(b) => (minus(a, &tokens[b as usize]), minus(&tokens[b as usize], a)),
            };
            steps.push(PlanStep {
                set,
                base: best.1,
                add,
                remove,
            });
        }
        let uses_union = steps.iter().any(|s| matches!(s.base, Base::Union));
        SetPlan {
            tokens,
            union,
            uses_union,
            steps,
        }
    }

    /// The sorted tokens of set `set`.
    fn tokens(&self, set: u32) -> &[u32] {
        &self.tokens[set as usize]
    }

    /// `out[set] = Σ_{t ∈ set} e[t]` for every set. Along with each value go the magnitude of
    /// the terms it was computed from and the exact count of its positive weights: a set with
    /// none weighs exactly 0, and one whose value cancelled to within `1e-9` of its terms is
    /// summed again from its own tokens.
    fn weigh(&self, e: &[f32], out: &mut [f64]) {
        let sum = |ts: &[u32]| {
            let (mut s, mut n) = (0f64, 0i64);
            for &t in ts {
                let x = e[t as usize] as f64;
                s += x;
                n += i64::from(x > 0.0);
            }
            (s, n)
        };
        let sets = out.len();
        let mut magnitude = vec![0f64; sets];
        let mut count = vec![0i64; sets];
        let (union, union_count) = if self.uses_union { sum(&self.union) } else { (0.0, 0) };
        for st in &self.steps {
            let (base, base_magnitude, base_count) = match st.base {
                Base::Empty => (0.0, 0.0, 0),
                Base::Union => (union, union, union_count),
                Base::Set(b) => (out[b as usize], magnitude[b as usize], count[b as usize]),
            };
            let (added, added_count) = sum(&st.add);
            let (removed, removed_count) = if st.remove.is_empty() {
                (0.0, 0)
            } else {
                sum(&st.remove)
            };
            let set = st.set as usize;
            count[set] = base_count + added_count - removed_count;
            let value = base + added - removed;
            let terms = base_magnitude + added + removed;
            (out[set], magnitude[set]) = if count[set] == 0 {
                (0.0, 0.0)
            } else if removed > 0.0 && value <= 1e-9 * terms {
                let exact = sum(&self.tokens[set]).0;
                (exact, exact)
            } else {
                (value, terms)
            };
        }
    }

    /// `acc[t] += Σ_{sets ∋ t} w[set]` (`w ≥ 0`) through the plan, and `magnitude[t]` the sum of
    /// the terms added or subtracted there: where `acc` cancelled to within `1e-9` of it, the
    /// caller sums again.
    fn spread(&self, w: &[f64], acc: &mut [f64], magnitude: &mut [f64]) {
        let mut k = w.to_vec();
        let mut k_union = 0.0;
        // Children before parents: a set's coefficient covers its base's tokens too.
        for st in self.steps.iter().rev() {
            let ks = k[st.set as usize];
            if ks == 0.0 {
                continue;
            }
            for &t in &st.add {
                acc[t as usize] += ks;
                magnitude[t as usize] += ks;
            }
            for &t in &st.remove {
                acc[t as usize] -= ks;
                magnitude[t as usize] += ks;
            }
            match st.base {
                Base::Empty => {}
                Base::Union => k_union += ks,
                Base::Set(b) => k[b as usize] += ks,
            }
        }
        if k_union != 0.0 {
            for &t in &self.union {
                acc[t as usize] += k_union;
                magnitude[t as usize] += k_union;
            }
        }
    }
}

/// `|a △ b|` when it is below `limit` (both sorted).
fn symmetric_difference_below(a: &[u32], b: &[u32], limit: usize) -> Option<usize> {
    let (mut i, mut j, mut d) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
            std::cmp::Ordering::Less => {
                d += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                d += 1;
                j += 1;
            }
        }
        if d >= limit {
            return None;
        }
    }
    d += a.len() - i + b.len() - j;
    (d < limit).then_some(d)
}

/// `a \ b` (both sorted).
fn minus(a: &[u32], b: &[u32]) -> Vec<u32> {
    a.iter().copied().filter(|t| b.binary_search(t).is_err()).collect()
}

/// What a position's scores allow.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Row {
    /// Exactly one finite score: the token is committed.
    Fixed(u32),
    /// Several finite scores; their weights are in `e`.
    Free,
    /// No finite score.
    Empty,
}

/// The linear-space lattice (see the module docs).
struct Linear<'a> {
    len: usize,
    vocab: usize,
    pad: u32,
    automaton: &'a TokenAutomaton,
    plan: &'a SetPlan,
    rows: Vec<Row>,
    /// `e[p * vocab + t] = exp((score − max_p) / T)` on free rows, for the tokens of some set
    /// and PAD (0 elsewhere); `max_p` is the best of those scores.
    e: Vec<f32>,
    sets: usize,
    /// `set_w[p * sets + set]`: the set's total weight at `p`.
    set_w: Vec<f64>,
    /// PAD's weight at each position.
    pad_w: Vec<f64>,
    width: usize,
    /// `Σ_p max_p / T` over the free rows, and the logs of the forward pass's rescalings: with
    /// the final forward weights, the log partition.
    log_offset: f64,
    log_scale: f64,
    /// Rescaled forward and backward weights, `(len + 1) × width`.
    alpha: Vec<f64>,
    beta: Vec<f64>,
    /// Per position, the states with a positive forward weight that can still finish.
    active: Vec<Vec<u32>>,
    /// Per free position, the weight of passing through each set there.
    passage: Vec<Option<Passage>>,
}

/// Per token set (and PAD) at a position, the forward weight into it times the backward weight
/// out of it, and the position's total: a token's marginal is its own weight times the passage
/// of the sets holding it, over the total.
struct Passage {
    sets: Vec<f64>,
    pad: f64,
    total: f64,
}

impl<'a> Linear<'a> {
    fn new(
        scores: &[f32],
        len: usize,
        vocab: usize,
        automaton: &'a TokenAutomaton,
        pad: u32,
        temperature: f32,
    ) -> Option<Self> {
        let inv = 1.0 / temperature.max(1e-6);
        let plan = automaton.set_plan();
        let sets = automaton.num_sets();
        let mut e = vec![0f32; len * vocab];
        // (A stride of at least 1, so that every position gets its slice even with no set.)
        let stride = sets.max(1);
        let mut set_w = vec![0f64; len * stride];
        // Positions are weighed independently: in parallel, each into its own slices.
        let weighed: Vec<(Row, f64, f64)> = e
            .par_chunks_mut(vocab)
            .zip(set_w.par_chunks_mut(stride))
            .enumerate()
            .map(|(p, (out, w))| {
                let row = &scores[p * vocab..(p + 1) * vocab];
                let (mut finite, mut first) = (0usize, 0u32);
                for (t, &x) in row.iter().enumerate() {
                    if x.is_finite() {
                        if finite == 0 {
                            first = t as u32;
                        }
                        finite += 1;
                        if finite > 1 {
                            break;
                        }
                    }
                }
                match finite {
                    0 => (Row::Empty, 0.0, 0.0),
                    // The passes follow the token's transition column instead of the sets.
                    1 => (
                        Row::Fixed(first),
                        if first == pad { 1.0 } else { 0.0 },
                        f64::from(row[first as usize] * inv),
                    ),
                    _ => {
                        // Only tokens of some set, and PAD, can be drawn: weigh those, relative
                        // to the best of them (which keeps the weights that matter from
                        // underflowing).
                        let drawable = || {
                            plan.union
                                .iter()
                                .copied()
                                .chain([pad])
                                .filter(|&t| row[t as usize].is_finite())
                        };
                        let best = drawable().map(|t| row[t as usize]).fold(f32::NEG_INFINITY, f32::max);
                        for t in drawable() {
                            out[t as usize] = ((row[t as usize] - best) * inv).exp();
                        }
                        plan.weigh(out, &mut w[..sets]);
                        let offset = if best.is_finite() { f64::from(best * inv) } else { 0.0 };
                        (Row::Free, out[pad as usize] as f64, offset)
                    }
                }
            })
            .collect();
        let log_offset = weighed.iter().map(|w| w.2).sum();
        let (rows, pad_w): (Vec<Row>, Vec<f64>) = weighed.into_iter().map(|(r, w, _)| (r, w)).unzip();
        set_w.truncate(len * sets);
        let width = automaton.num_states() + 1;
        let mut lattice = Linear {
            len,
            vocab,
            pad,
            automaton,
            plan,
            rows,
            e,
            sets,
            set_w,
            pad_w,
            width,
            log_offset,
            log_scale: 0.0,
            alpha: vec![0.0; (len + 1) * width],
            beta: vec![0.0; (len + 1) * width],
            active: vec![Vec::new(); len + 1],
            passage: (0..len).map(|_| None).collect(),
        };
        (lattice.forward() && lattice.backward()).then_some(lattice)
    }

    fn pad_state(&self) -> usize {
        self.width - 1
    }

    /// Whether the content may end in lattice state `s` (the PAD state always may).
    fn may_end(&self, s: usize) -> bool {
        s == self.pad_state() || self.automaton.is_accepting(s as u32)
    }

    fn edges(&self, s: usize) -> &'a [Edge] {
        if s == self.width - 1 {
            &[]
        } else {
            self.automaton.edges(s as u32)
        }
    }

    fn set_weight(&self, p: usize, set: u32) -> f64 {
        self.set_w[p * self.sets + set as usize]
    }

    /// Forward weights from the start over live states; false when no sequence survives.
    fn forward(&mut self) -> bool {
        let (len, width, pad_state) = (self.len, self.width, self.pad_state());
        let start = self.automaton.start() as usize;
        if self.automaton.distance(start as u32) as usize > len && len > 0 {
            return false;
        }
        self.alpha[start] = 1.0;
        self.active[0].push(start as u32);
        for p in 0..len {
            let (here, next) = self.alpha.split_at_mut((p + 1) * width);
            let here = &here[p * width..];
            let next = &mut next[..width];
            let mut reached = Vec::new();
            let remaining = len - p - 1;
            let mut reach = |to: u32, x: f64| {
                let slot = &mut next[to as usize];
                if *slot == 0.0 {
                    reached.push(to);
                }
                *slot += x;
            };
            if let Row::Fixed(t) = self.rows[p] {
                let column = if t == self.pad {
                    &[][..]
                } else {
                    self.automaton.column(t)
                };
                for &s in &self.active[p] {
                    let a = here[s as usize];
                    if let Some(&to) = column.get(s as usize) {
                        if to != u32::MAX && self.automaton.distance(to) as usize <= remaining {
                            reach(to, a);
                        }
                    }
                    if t == self.pad && (s as usize == pad_state || self.automaton.is_accepting(s)) {
                        reach(pad_state as u32, a);
                    }
                }
            } else {
                // Branch-free accumulation; the states reached are collected afterwards.
                let set_w = &self.set_w[p * self.sets..(p + 1) * self.sets];
                for &s in &self.active[p] {
                    let a = here[s as usize];
                    let s = s as usize;
                    if s != pad_state {
                        for g in self.automaton.edges(s as u32) {
                            next[g.to as usize] += a * set_w[g.set as usize];
                        }
                    }
                    if s == pad_state || self.automaton.is_accepting(s as u32) {
                        next[pad_state] += a * self.pad_w[p];
                    }
                }
                for (to, x) in next.iter_mut().enumerate() {
                    if *x > 0.0 {
                        if to == pad_state || self.automaton.distance(to as u32) as usize <= remaining {
                            reached.push(to as u32);
                        } else {
                            *x = 0.0;
                        }
                    }
                }
            }
            // Products that underflowed to 0 after being reached are not live.
            reached.retain(|&s| next[s as usize] > 0.0);
            let max = reached.iter().map(|&s| next[s as usize]).fold(0.0, f64::max);
            if max == 0.0 {
                return false;
            }
            for &s in &reached {
                next[s as usize] /= max;
            }
            self.log_scale += max.ln();
            self.active[p + 1] = reached;
        }
        self.active[len].iter().any(|&s| self.may_end(s as usize))
    }

    fn log_partition(&self) -> f64 {
        let end = &self.alpha[self.len * self.width..];
        let total: f64 = self.active[self.len]
            .iter()
            .filter(|&&s| self.may_end(s as usize))
            .map(|&s| end[s as usize])
            .sum();
        self.log_offset + self.log_scale + total.ln()
    }

    /// Backward weights over the live states; false when no sequence survives.
    fn backward(&mut self) -> bool {
        let (len, width) = (self.len, self.width);
        for &s in &self.active[len] {
            if self.may_end(s as usize) {
                self.beta[len * width + s as usize] = 1.0;
            }
        }
        for p in (0..len).rev() {
            let mut max = 0f64;
            // On a free row the same loop gathers each set's passage weight (forward × backward
            // through it), which the marginals need.
            let free = self.rows[p] == Row::Free;
            let mut passing = if free { vec![0f64; self.sets] } else { Vec::new() };
            let mut pad_passing = 0.0;
            for i in 0..self.active[p].len() {
                let s = self.active[p][i] as usize;
                let a = self.alpha[p * width + s];
                let next = &self.beta[(p + 1) * width..(p + 2) * width];
                let set_w = &self.set_w[p * self.sets..(p + 1) * self.sets];
                let mut b = 0.0;
                if let Row::Fixed(t) = self.rows[p] {
                    if t == self.pad {
                        if self.may_end(s) {
                            b = next[self.pad_state()];
                        }
                    } else if let Some(&to) = self.automaton.column(t).get(s).filter(|&&to| to != u32::MAX) {
                        b = next[to as usize];
                    }
                    self.beta[p * width + s] = b;
                    max = max.max(b);
                    continue;
                }
                if free {
                    for g in self.edges(s) {
                        let x = next[g.to as usize];
                        b += set_w[g.set as usize] * x;
                        passing[g.set as usize] += a * x;
                    }
                } else {
                    for g in self.edges(s) {
                        b += set_w[g.set as usize] * next[g.to as usize];
                    }
                }
                if self.may_end(s) {
                    let x = next[self.pad_state()];
                    b += self.pad_w[p] * x;
                    pad_passing += a * x;
                }
                self.beta[p * width + s] = b;
                max = max.max(b);
            }
            if max == 0.0 {
                return false;
            }
            for &s in &self.active[p] {
                self.beta[p * width + s as usize] /= max;
            }
            if free {
                let set_w = &self.set_w[p * self.sets..(p + 1) * self.sets];
                let total = passing
                    .iter()
                    .zip(set_w)
                    .filter(|(&x, _)| x > 0.0)
                    .map(|(&x, &w)| x * w)
                    .sum::<f64>()
                    + pad_passing * self.pad_w[p];
                if !(total > 0.0 && total.is_finite()) {
                    // The rescaled weights underflowed: the log-space lattice answers instead.
                    return false;
                }
                self.passage[p] = Some(Passage {
                    sets: passing,
                    pad: pad_passing,
                    total,
                });
            }
        }
        true
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> Vec<u32> {
        let (width, pad_state) = (self.width, self.pad_state());
        let mut ids = Vec::with_capacity(self.len);
        let mut s = self.automaton.start() as usize;
        let mut weights = Vec::new();
        for p in 0..self.len {
            let next = &self.beta[(p + 1) * width..(p + 2) * width];
            if let Row::Fixed(t) = self.rows[p] {
                // The only way on: the committed token (a positive backward weight says so).
                ids.push(t);
                s = if t == self.pad {
                    pad_state
                } else {
                    self.automaton.column(t)[s] as usize
                };
                continue;
            }
            let groups = self.edges(s);
            weights.clear();
            weights.extend(groups.iter().map(|g| self.set_weight(p, g.set) * next[g.to as usize]));
            weights.push(if self.may_end(s) {
                self.pad_w[p] * next[pad_state]
            } else {
                0.0
            });
            let choice = draw_linear(&weights, rng);
            if choice == groups.len() {
                ids.push(self.pad);
                s = pad_state;
                continue;
            }
            let g = &groups[choice];
            ids.push(match self.rows[p] {
                Row::Fixed(t) => t,
                _ => {
                    let tokens = self.plan.tokens(g.set);
                    let e = &self.e[p * self.vocab..(p + 1) * self.vocab];
                    weights.clear();
                    weights.extend(tokens.iter().map(|&t| e[t as usize] as f64));
                    tokens[draw_linear(&weights, rng)]
                }
            });
            s = g.to as usize;
        }
        ids
    }

    fn marginal(&self, p: usize, token: u32) -> f32 {
        match self.rows[p] {
            Row::Fixed(t) => f32::from(t == token),
            Row::Empty => 0.0,
            Row::Free => {
                let e = self.e[p * self.vocab + token as usize] as f64;
                if e == 0.0 {
                    return 0.0;
                }
                let Some(Passage {
                    sets: w,
                    pad: w_pad,
                    total,
                }) = &self.passage[p]
                else {
                    return 0.0;
                };
                (e * self.passing_of(w, *w_pad, token) / total) as f32
            }
        }
    }

    fn marginal_row(&self, p: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.vocab];
        match self.rows[p] {
            Row::Fixed(t) => out[t as usize] = 1.0,
            Row::Empty => {}
            Row::Free => {
                let Some(Passage {
                    sets: w,
                    pad: w_pad,
                    total,
                }) = &self.passage[p]
                else {
                    return out;
                };
                let mut acc = vec![0f64; self.vocab];
                let mut magnitude = vec![0f64; self.vocab];
                self.plan.spread(w, &mut acc, &mut magnitude);
                acc[self.pad as usize] += w_pad;
                let e = &self.e[p * self.vocab..(p + 1) * self.vocab];
                for (t, o) in out.iter_mut().enumerate() {
                    if e[t] == 0.0 {
                        continue;
                    }
                    let mut a = acc[t];
                    if a <= 1e-9 * magnitude[t] {
                        // Cancelled: sum the passages of the sets holding `t` directly.
                        a = self.passing_of(w, *w_pad, t as u32);
                    }
                    *o = (e[t] as f64 * a / total) as f32;
                }
            }
        }
        out
    }

    /// `Σ` of the passage weights of the sets holding `token` (and PAD's, for PAD).
    fn passing_of(&self, w: &[f64], w_pad: f64, token: u32) -> f64 {
        let mut m = if token == self.pad { w_pad } else { 0.0 };
        for (set, &x) in w.iter().enumerate() {
            if x > 0.0 && self.plan.tokens(set as u32).binary_search(&token).is_ok() {
                m += x;
            }
        }
        m
    }
}

/// `out[p]`: PAD has a finite score at every position from `p` on (`out[len]` is true).
fn pad_from(scores: &[f32], len: usize, vocab: usize, pad: u32) -> Vec<bool> {
    let mut out = vec![true; len + 1];
    for p in (0..len).rev() {
        out[p] = out[p + 1] && scores[p * vocab + pad as usize].is_finite();
    }
    out
}

/// [`content_lengths`] without an automaton (no hard constraints): every content is accepted,
/// so each length the scores allow has mass 1 (`ln` 0): every position before it has a finite
/// non-PAD score, and PAD is finite from it on.
pub(crate) fn free_lengths(scores: &[f32], len: usize, vocab: usize, pad: u32) -> Vec<Option<f64>> {
    let pad_from = pad_from(scores, len, vocab, pad);
    let mut content_so_far = true;
    (0..=len)
        .map(|l| {
            let ok = content_so_far && pad_from[l];
            if l < len {
                content_so_far &= (0..vocab).any(|t| t != pad as usize && scores[l * vocab + t].is_finite());
            }
            ok.then_some(0.0)
        })
        .collect()
}

/// For each content length `l` in `0..=len`: `None` when no sequence the automaton accepts with
/// a PAD tail has content of exactly `l` tokens with every score finite; otherwise
/// `Some(ln M_l)`, where `M_l = Σ exp(Σ_{p < l} score[p][w_p])` over the accepted contents
/// `w` of `l` tokens (PAD must have a finite score at every position from `l` on, and the
/// tail's scores do not count). With scores that are each position's log-probabilities over
/// its content tokens, `M_l` is the probability that content drawn position by position is
/// accepted at length `l`. One forward pass over (position × state), rescaled at every
/// position as the lattice's; feasibility is tracked apart from the weights. Where a feasible
/// length's mass underflows in linear space (a token more than about 100 nats below the best
/// at its position), the masses are computed again in log space.
pub(crate) fn content_lengths(
    scores: &[f32],
    len: usize,
    vocab: usize,
    automaton: &TokenAutomaton,
    pad: u32,
) -> Vec<Option<f64>> {
    debug_assert_eq!(scores.len(), len * vocab);
    let plan = automaton.set_plan();
    let (sets, states) = (automaton.num_sets(), automaton.num_states());
    let pad_from = pad_from(scores, len, vocab, pad);
    let mut out = vec![None; len + 1];
    let (mut reach, mut alpha) = (vec![false; states], vec![0f64; states]);
    reach[automaton.start() as usize] = true;
    alpha[automaton.start() as usize] = 1.0;
    let mut log_scale = 0f64;
    let (mut usable, mut e) = (vec![0f32; vocab], vec![0f32; vocab]);
    let (mut set_ok, mut set_w) = (vec![0f64; sets], vec![0f64; sets]);
    for p in 0..=len {
        let accepting = (0..states).filter(|&s| reach[s] && automaton.is_accepting(s as u32));
        if pad_from[p] {
            let mass: Vec<f64> = accepting.map(|s| alpha[s]).collect();
            if !mass.is_empty() {
                out[p] = Some(mass.iter().sum::<f64>().ln() + log_scale);
            }
        }
        if p == len || !reach.contains(&true) {
            break;
        }
        let row = &scores[p * vocab..(p + 1) * vocab];
        let best = (0..vocab)
            .filter(|&t| t != pad as usize)
            .map(|t| row[t])
            .fold(f32::NEG_INFINITY, f32::max);
        for t in 0..vocab {
            let x = if t == pad as usize { f32::NEG_INFINITY } else { row[t] };
            usable[t] = if x.is_finite() { 1.0 } else { 0.0 };
            e[t] = if x.is_finite() { (x - best).exp() } else { 0.0 };
        }
        plan.weigh(&usable, &mut set_ok);
        plan.weigh(&e, &mut set_w);
        let (mut next_reach, mut next) = (vec![false; states], vec![0f64; states]);
        for s in (0..states).filter(|&s| reach[s]) {
            for g in automaton.edges(s as u32) {
                if set_ok[g.set as usize] > 0.0 {
                    next_reach[g.to as usize] = true;
                    next[g.to as usize] += alpha[s] * set_w[g.set as usize];
                }
            }
        }
        let max = next.iter().copied().fold(0.0, f64::max);
        if max > 0.0 {
            next.iter_mut().for_each(|x| *x /= max);
            log_scale += max.ln() + f64::from(best);
        } else {
            log_scale = f64::NEG_INFINITY;
        }
        (reach, alpha) = (next_reach, next);
    }
    if out.iter().any(|m| *m == Some(f64::NEG_INFINITY)) {
        let exact = content_log_masses(scores, len, vocab, automaton);
        for (m, x) in out.iter_mut().zip(exact) {
            if m.is_some() {
                *m = Some(f64::from(x));
            }
        }
    }
    out
}

/// [`content_lengths`]'s masses in log space (`−∞` where nothing is accepted), ignoring PAD:
/// exact, at a log-sum-exp per position, state and group.
fn content_log_masses(scores: &[f32], len: usize, vocab: usize, automaton: &TokenAutomaton) -> Vec<f32> {
    let states = automaton.num_states();
    let mut alpha = vec![f32::NEG_INFINITY; states];
    alpha[automaton.start() as usize] = 0.0;
    let mut out = Vec::with_capacity(len + 1);
    for p in 0..=len {
        let ends = (0..states)
            .filter(|&s| automaton.is_accepting(s as u32))
            .fold(f32::NEG_INFINITY, |acc, s| log_add(acc, alpha[s]));
        out.push(ends);
        if p == len {
            break;
        }
        let row = &scores[p * vocab..(p + 1) * vocab];
        let mut next = vec![f32::NEG_INFINITY; states];
        for s in (0..states).filter(|&s| alpha[s] > f32::NEG_INFINITY) {
            for g in automaton.groups(s as u32) {
                next[g.to as usize] = log_add(next[g.to as usize], alpha[s] + group_lse(row, &g.tokens, 1.0));
            }
        }
        alpha = next;
    }
    out
}

/// An index drawn with probability ∝ `weights[i]` (at least one positive weight).
pub(crate) fn draw_linear(weights: &[f64], rng: &mut impl rand::Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    let mut last = 0;
    for (i, &x) in weights.iter().enumerate() {
        if x > 0.0 {
            last = i;
            if u < x {
                return i;
            }
            u -= x;
        }
    }
    last
}

fn log_add(a: f32, b: f32) -> f32 {
    if a == f32::NEG_INFINITY {
        return b;
    }
    if b == f32::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Log-sum-exp of `row[t] / temperature` over `tokens`.
fn group_lse(row: &[f32], tokens: &[u32], inv_temp: f32) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for &t in tokens {
        m = m.max(row[t as usize] * inv_temp);
    }
    if m == f32::NEG_INFINITY {
        return m;
    }
    let s: f32 = tokens.iter().map(|&t| (row[t as usize] * inv_temp - m).exp()).sum();
    m + s.ln()
}

/// The log-space lattice: exact at any temperature, used when the linear one underflows.
struct LogLattice<'a> {
    scores: Vec<f32>,
    len: usize,
    vocab: usize,
    automaton: &'a TokenAutomaton,
    pad: u32,
    inv: f32,
    /// `set_scores[p * sets + set]`: the log-sum-exp of a token set's scaled scores at `p`.
    set_scores: Vec<f32>,
    sets: usize,
    /// `beta[p * width + s]`: log of the total weight of completions from state `s` at `p`.
    beta: Vec<f32>,
    log_z: f32,
}

impl<'a> LogLattice<'a> {
    fn new(
        scores: Vec<f32>,
        len: usize,
        vocab: usize,
        automaton: &'a TokenAutomaton,
        pad: u32,
        temperature: f32,
    ) -> Option<Self> {
        let n = automaton.num_states();
        let inv = 1.0 / temperature.max(1e-6);
        // Groups with the same token list share a set id: one log-sum-exp per position and set.
        let sets = automaton.num_sets();
        let mut set_scores = vec![f32::NAN; len * sets];
        for p in 0..len {
            let row = &scores[p * vocab..(p + 1) * vocab];
            let slots = &mut set_scores[p * sets..(p + 1) * sets];
            for s in 0..n {
                for g in automaton.groups(s as u32) {
                    let slot = &mut slots[g.set as usize];
                    if slot.is_nan() {
                        *slot = group_lse(row, &g.tokens, inv);
                    }
                }
            }
        }
        let mut lattice = LogLattice {
            scores,
            len,
            vocab,
            automaton,
            pad,
            inv,
            set_scores,
            sets,
            beta: Vec::new(),
            log_z: f32::NEG_INFINITY,
        };
        lattice.backward();
        lattice.log_z.is_finite().then_some(lattice)
    }

    fn width(&self) -> usize {
        self.automaton.num_states() + 1
    }

    fn set_score(&self, p: usize, g: &TokenGroup) -> f32 {
        self.set_scores[p * self.sets + g.set as usize]
    }

    fn pad_state(&self) -> usize {
        self.automaton.num_states()
    }

    fn pad_score(&self, p: usize) -> f32 {
        self.scores[p * self.vocab + self.pad as usize] * self.inv
    }

    /// Whether the content may end in state `s` (the PAD state always may).
    fn may_end(&self, s: usize) -> bool {
        s == self.pad_state() || self.automaton.is_accepting(s as u32)
    }

    fn backward(&mut self) {
        let (len, width, neg) = (self.len, self.width(), f32::NEG_INFINITY);
        let mut beta = vec![neg; (len + 1) * width];
        for s in 0..width {
            if self.may_end(s) {
                beta[len * width + s] = 0.0;
            }
        }
        for p in (0..len).rev() {
            for s in 0..width {
                let mut b = neg;
                if s != self.pad_state() {
                    for g in self.automaton.groups(s as u32) {
                        let gs = self.set_score(p, g);
                        b = log_add(b, gs + beta[(p + 1) * width + g.to as usize]);
                    }
                }
                if self.may_end(s) {
                    b = log_add(b, self.pad_score(p) + beta[(p + 1) * width + self.pad_state()]);
                }
                beta[p * width + s] = b;
            }
        }
        self.log_z = beta[self.automaton.start() as usize];
        self.beta = beta;
    }

    fn marginals(&self) -> Vec<f32> {
        let (len, vocab, width, neg) = (self.len, self.vocab, self.width(), f32::NEG_INFINITY);
        let (automaton, pad_state) = (self.automaton, self.pad_state());
        let alive = |p: usize, s: usize| s == pad_state || p as u64 + automaton.distance(s as u32) as u64 <= len as u64;
        let mut alpha = vec![neg; (len + 1) * width];
        alpha[automaton.start() as usize] = 0.0;
        for p in 0..len {
            for s in 0..width {
                let a = alpha[p * width + s];
                if a == neg || !alive(p, s) {
                    continue;
                }
                if s != pad_state {
                    for g in automaton.groups(s as u32) {
                        let slot = &mut alpha[(p + 1) * width + g.to as usize];
                        *slot = log_add(*slot, a + self.set_score(p, g));
                    }
                }
                if self.may_end(s) {
                    let slot = &mut alpha[(p + 1) * width + pad_state];
                    *slot = log_add(*slot, a + self.pad_score(p));
                }
            }
        }
        let beta = &self.beta;
        let mut marg = vec![0f32; len * vocab];
        for p in 0..len {
            let row = &self.scores[p * vocab..(p + 1) * vocab];
            let out = &mut marg[p * vocab..(p + 1) * vocab];
            for s in 0..width {
                let a = alpha[p * width + s];
                if a == neg {
                    continue;
                }
                if s != pad_state {
                    for g in automaton.groups(s as u32) {
                        let b = beta[(p + 1) * width + g.to as usize];
                        if b == neg {
                            continue;
                        }
                        let base = a + b - self.log_z;
                        for &t in &g.tokens {
                            out[t as usize] += (base + row[t as usize] * self.inv).exp();
                        }
                    }
                }
                if self.may_end(s) {
                    let b = beta[(p + 1) * width + pad_state];
                    if b != neg {
                        out[self.pad as usize] += (a + b - self.log_z + self.pad_score(p)).exp();
                    }
                }
            }
        }
        marg
    }

    fn sample(&self, rng: &mut impl rand::Rng) -> Vec<u32> {
        let (width, vocab, neg) = (self.width(), self.vocab, f32::NEG_INFINITY);
        let pad_state = self.pad_state();
        let mut ids = Vec::with_capacity(self.len);
        let mut s = self.automaton.start() as usize;
        for p in 0..self.len {
            let next = &self.beta[(p + 1) * width..(p + 2) * width];
            // Choices from `s`: each group (then a token in it), or PAD; log weights.
            let groups: &[TokenGroup] = if s == pad_state {
                &[]
            } else {
                self.automaton.groups(s as u32)
            };
            let mut weights: Vec<f32> = groups
                .iter()
                .map(|g| self.set_score(p, g) + next[g.to as usize])
                .collect();
            weights.push(if self.may_end(s) {
                self.pad_score(p) + next[pad_state]
            } else {
                neg
            });
            let choice = draw(&weights, rng);
            if choice == groups.len() {
                ids.push(self.pad);
                s = pad_state;
                continue;
            }
            let g = &groups[choice];
            let row = &self.scores[p * vocab..(p + 1) * vocab];
            let token_weights: Vec<f32> = g.tokens.iter().map(|&t| row[t as usize] * self.inv).collect();
            ids.push(g.tokens[draw(&token_weights, rng)]);
            s = g.to as usize;
        }
        ids
    }
}

/// An index drawn with probability ∝ `exp(log_weights[i])` (at least one finite weight).
fn draw(log_weights: &[f32], rng: &mut impl rand::Rng) -> usize {
    let m = log_weights.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let w: Vec<f64> = log_weights.iter().map(|&x| ((x - m) as f64).exp()).collect();
    draw_linear(&w, rng)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A random automaton over `vocab` tokens (token 0 is PAD and never a content token), with
    /// large overlapping sets so that the plan uses unions and differences.
    fn random_automaton(rng: &mut impl Rng, states: usize, vocab: usize) -> TokenAutomaton {
        let accepting: Vec<bool> = (0..states).map(|s| s == states - 1 || rng.gen_bool(0.3)).collect();
        let edges = (0..states)
            .map(|_| {
                let mut out = Vec::new();
                for t in 1..vocab as u32 {
                    if rng.gen_bool(0.7) {
                        out.push((t, rng.gen_range(0..states as u32)));
                    }
                }
                out
            })
            .collect();
        TokenAutomaton::from_edges(0, accepting, edges)
    }

    fn random_scores(rng: &mut impl Rng, len: usize, vocab: usize, fixed: &[usize]) -> Vec<f32> {
        let mut scores: Vec<f32> = (0..len * vocab)
            .map(|_| {
                if rng.gen_bool(0.1) {
                    f32::NEG_INFINITY
                } else {
                    rng.gen_range(-6.0..2.0)
                }
            })
            .collect();
        for &p in fixed {
            let keep = rng.gen_range(0..vocab);
            for t in 0..vocab {
                scores[p * vocab + t] = if t == keep { 0.0 } else { f32::NEG_INFINITY };
            }
        }
        scores
    }

    #[test]
    fn linear_marginals_match_the_log_space_ones() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut compared = 0;
        for case in 0..60 {
            let (len, vocab) = (rng.gen_range(1..9), rng.gen_range(3..24));
            let states = rng.gen_range(1..6);
            let a = random_automaton(&mut rng, states, vocab);
            let fixed: Vec<usize> = (0..len).filter(|_| rng.gen_bool(0.3)).collect();
            let scores = random_scores(&mut rng, len, vocab, &fixed);
            let t = [0.25f32, 0.5, 1.0, 2.0][case % 4];
            let log = LogLattice::new(scores.clone(), len, vocab, &a, 0, t);
            let lin = Linear::new(&scores, len, vocab, &a, 0, t);
            assert_eq!(log.is_some(), lin.is_some(), "case {case}: satisfiability differs");
            let (Some(log), Some(lin)) = (log, lin) else { continue };
            let (z, want_z) = (lin.log_partition(), log.log_z as f64);
            assert!(
                (z - want_z).abs() < 1e-3 * want_z.abs().max(1.0),
                "case {case}: log Z {z} vs {want_z}"
            );
            let want = log.marginals();
            for p in 0..len {
                let row = lin.marginal_row(p);
                for tok in 0..vocab {
                    let w = want[p * vocab + tok];
                    assert!(
                        (row[tok] - w).abs() < 1e-4,
                        "case {case} p {p} t {tok}: row {} vs {w}",
                        row[tok]
                    );
                    let one = lin.marginal(p, tok as u32);
                    assert!((one - w).abs() < 1e-4, "case {case} p {p} t {tok}: one {one} vs {w}");
                }
            }
            compared += 1;
        }
        assert!(compared > 20, "only {compared} satisfiable cases");
    }

    #[test]
    fn content_lengths_are_the_lengths_some_lattice_allows_with_their_mass() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let (mut some, mut none) = (0, 0);
        for case in 0..80 {
            let (len, vocab) = (rng.gen_range(0..5), rng.gen_range(3..6));
            let states = rng.gen_range(1..6);
            let a = random_automaton(&mut rng, states, vocab);
            let fixed: Vec<usize> = (0..len).filter(|_| rng.gen_bool(0.2)).collect();
            let scores = random_scores(&mut rng, len, vocab, &fixed);
            let got = content_lengths(&scores, len, vocab, &a, 0);
            assert_eq!(got.len(), len + 1);
            for (l, &mass) in got.iter().enumerate() {
                // The length pinned: PAD banned before l and the only token from l on.
                let mut pinned = scores.clone();
                for p in 0..len {
                    for t in 0..vocab {
                        if (p < l) == (t == 0) {
                            pinned[p * vocab + t] = f32::NEG_INFINITY;
                        }
                    }
                }
                let want = LogLattice::new(pinned, len, vocab, &a, 0, 1.0).is_some();
                assert_eq!(mass.is_some(), want, "case {case}: length {l} of {len}");
                // The mass by enumerating every content of l tokens (tokens 1..vocab).
                let mut total = 0f64;
                let pad_ok = (l..len).all(|p| scores[p * vocab].is_finite());
                for code in 0..(vocab - 1).pow(l as u32) {
                    let content: Vec<u32> = (0..l)
                        .map(|i| 1 + (code / (vocab - 1).pow(i as u32) % (vocab - 1)) as u32)
                        .collect();
                    let score: f32 = content
                        .iter()
                        .enumerate()
                        .map(|(p, &t)| scores[p * vocab + t as usize])
                        .sum();
                    if pad_ok && score.is_finite() && a.accepts(&content) {
                        total += f64::from(score).exp();
                    }
                }
                match mass {
                    Some(m) => {
                        assert!(
                            (m.exp() - total).abs() <= 1e-4 * total.max(1e-30),
                            "case {case}: length {l}: {} vs {total}",
                            m.exp()
                        );
                        some += 1;
                    }
                    None => {
                        assert_eq!(total, 0.0, "case {case}: length {l}");
                        none += 1;
                    }
                }
            }
        }
        assert!(some > 30 && none > 30, "{some} allowed and {none} refused lengths");
    }

    #[test]
    fn content_lengths_survive_a_token_far_below_the_best() {
        // 0 -a-> 1 (accepting) -c-> 2 (accepting); 0 -b-> 3 (a dead end). At position 1, c
        // is 150 nats below b, beyond what the linear weights hold.
        let a = TokenAutomaton::from_edges(
            0,
            vec![false, true, true, false],
            vec![vec![(1, 1), (2, 3)], vec![(3, 2)], vec![], vec![]],
        );
        let (len, vocab) = (3, 4);
        let mut scores = vec![0f32; len * vocab];
        scores[vocab + 3] = -150.0;
        let got = content_lengths(&scores, len, vocab, &a, 0);
        assert_eq!(got[0], None);
        let (one, two) = (got[1].unwrap(), got[2].unwrap());
        // M(1) = p(a) = 1 (b leads nowhere); M(2) = p(a) p(c) = e^-150.
        assert!(one.abs() < 1e-4, "{one}");
        assert!((two + 150.0).abs() < 1e-3, "{two}");
        assert_eq!(got[3], None);
    }

    #[test]
    fn the_plan_weighs_every_set_exactly() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let vocab = rng.gen_range(4..64);
            let states = rng.gen_range(2..8);
            let a = random_automaton(&mut rng, states, vocab);
            let plan = SetPlan::new(&a);
            let e: Vec<f32> = (0..vocab)
                .map(|_| if rng.gen_bool(0.2) { 0.0 } else { rng.gen() })
                .collect();
            let mut w = vec![0f64; a.num_sets()];
            plan.weigh(&e, &mut w);
            for (set, &got) in w.iter().enumerate() {
                let want: f64 = plan.tokens(set as u32).iter().map(|&t| e[t as usize] as f64).sum();
                assert!((got - want).abs() <= 1e-9 * want.max(1.0), "set {set}: {got} vs {want}");
                if want == 0.0 {
                    assert_eq!(got, 0.0, "an all-zero set must weigh exactly 0");
                }
            }
            let coef: Vec<f64> = (0..a.num_sets()).map(|_| rng.gen()).collect();
            let mut acc = vec![0f64; vocab];
            plan.spread(&coef, &mut acc, &mut vec![0f64; vocab]);
            for (t, &got) in acc.iter().enumerate() {
                let want: f64 = (0..a.num_sets())
                    .filter(|&s| plan.tokens(s as u32).contains(&(t as u32)))
                    .map(|s| coef[s])
                    .sum();
                assert!((got - want).abs() < 1e-9, "token {t}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn samples_follow_the_exact_distribution() {
        // Enumerate every sequence of a tiny lattice, weigh the accepted ones, and compare with
        // the frequencies of 40,000 samples.
        let (len, vocab, t) = (3, 4, 0.8);
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut tried = 0;
        let (a, scores, exact, z) = loop {
            tried += 1;
            assert!(tried < 100, "no random case with several allowed sequences");
            let a = random_automaton(&mut rng, 3, vocab);
            let scores = random_scores(&mut rng, len, vocab, &[1]);
            let mut exact = std::collections::HashMap::new();
            let mut z = 0f64;
            for code in 0..vocab.pow(len as u32) {
                let w: Vec<u32> = (0..len)
                    .map(|p| ((code / vocab.pow(p as u32)) % vocab) as u32)
                    .collect();
                let content: Vec<u32> = w.iter().copied().take_while(|&x| x != 0).collect();
                let ok = w[content.len()..].iter().all(|&x| x == 0) && a.accepts(&content);
                let s: f32 = (0..len).map(|p| scores[p * vocab + w[p] as usize]).sum();
                if ok && s > f32::NEG_INFINITY {
                    let x = ((s / t) as f64).exp();
                    z += x;
                    exact.insert(w, x);
                }
            }
            if exact.len() >= 4 {
                break (a, scores, exact, z);
            }
        };
        let lattice = Lattice::new(&scores, len, vocab, &a, 0, t).expect("satisfiable");
        let n = 40_000;
        let mut counts = std::collections::HashMap::new();
        for _ in 0..n {
            let w = lattice.sample(&mut rng);
            assert!(
                exact.contains_key(&w),
                "sampled {w:?}, which is not an allowed sequence"
            );
            *counts.entry(w).or_insert(0usize) += 1;
        }
        for (w, x) in &exact {
            let (p, f) = (x / z, *counts.get(w).unwrap_or(&0) as f64 / n as f64);
            assert!(
                (p - f).abs() < 4.0 * (p * (1.0 - p) / n as f64).sqrt() + 1e-3,
                "{w:?}: exact {p}, sampled {f}"
            );
        }
    }

    #[test]
    fn a_set_with_no_allowed_token_weighs_exactly_zero() {
        // Tokens: 0 PAD, 1 q, 2 a, 3 and 4 r. Sets: {q}, A = {a, r, r} (planned as the union
        // minus {q}), B = {r, r} (planned as A minus {a}). With q at weight 1, a at 1.5e-9 and
        // the r's at 0, B's difference leaves rounding error; it must still weigh exactly 0.
        let edges = vec![
            vec![(1u32, 1u32), (3, 3), (4, 3)],
            vec![(2, 2), (3, 2), (4, 2)],
            vec![],
            vec![(1, 2)],
        ];
        let a = TokenAutomaton::from_edges(0, vec![false, false, true, false], edges);
        let plan = SetPlan::new(&a);
        let e = [0.0, 1.0, 1.5e-9, 0.0, 0.0];
        let mut w = vec![0f64; a.num_sets()];
        plan.weigh(&e, &mut w);
        for set in 0..a.num_sets() {
            let tokens = plan.tokens(set as u32);
            let want: f64 = tokens.iter().map(|&t| e[t as usize] as f64).sum();
            if want == 0.0 {
                assert_eq!(w[set], 0.0, "set {tokens:?}");
            }
        }
        // The only valid sequence takes q, then a.
        let ln = |x: f32| if x > 0.0 { x.ln() } else { f32::NEG_INFINITY };
        let scores: Vec<f32> = [e, e].concat().into_iter().map(ln).collect();
        let l = Lattice::new(&scores, 2, 5, &a, 0, 1.0).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        for _ in 0..100 {
            assert_eq!(l.sample(&mut rng), vec![1, 2]);
        }
    }

    #[test]
    fn nan_and_infinite_scores_count_as_disallowed() {
        // From state 0: token 2 to state 1 (not accepting), tokens 1 and 3 to state 2 (accepting).
        let edges = vec![vec![(2u32, 1u32), (1, 2), (3, 2)], vec![(1, 2)], vec![]];
        let a = TokenAutomaton::from_edges(0, vec![false, false, true], edges);
        for scores in [
            [f32::NEG_INFINITY, f32::NAN, 0.0, 0.0],
            [f32::NEG_INFINITY, f32::INFINITY, 0.0, 0.0],
        ] {
            let l = Lattice::new(&scores, 1, 4, &a, 0, 1.0).unwrap();
            let mut rng = rand::rngs::StdRng::seed_from_u64(0);
            for _ in 0..50 {
                assert_eq!(l.sample(&mut rng), vec![3], "scores {scores:?}");
            }
        }
        // Only a NaN where the content must go: nothing is allowed.
        assert!(Lattice::new(
            &[f32::NEG_INFINITY, f32::NAN, f32::NEG_INFINITY, f32::NAN],
            1,
            4,
            &a,
            0,
            1.0
        )
        .is_none());
    }

    #[test]
    fn near_zero_temperature_falls_back_to_log_space_and_stays_exact() {
        // The content must start with token 2, which scores 1000 nats below token 1 (drawable
        // later): in linear space at T = 1 its weight underflows, so the log-space lattice answers.
        let edges = vec![vec![(2u32, 1u32)], vec![(1, 1)]];
        let a = TokenAutomaton::from_edges(0, vec![false, true], edges);
        let (len, vocab) = (1, 3);
        let scores = vec![f32::NEG_INFINITY, 0.0, -1000.0];
        let l = Lattice::new(&scores, len, vocab, &a, 0, 1.0).expect("a valid sequence exists");
        assert!(l.is_log_space());
        assert_eq!(l.sample(&mut rand::rngs::StdRng::seed_from_u64(0)), vec![2]);
        assert!((l.marginal(0, 2) - 1.0).abs() < 1e-6);
    }
}
