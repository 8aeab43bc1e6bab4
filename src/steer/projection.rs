//! Exact constrained rounding: the best-scoring token sequence that satisfies every hard
//! constraint, by dynamic programming over (position, automaton state).
//!
//! A fixed-length sequence is *content* (tokens before the first PAD) followed by a PAD tail. Given
//! per-position token scores `score[p][v]` (disallowed tokens at `-inf`), [`best_sequence`] finds
//!
//! ```text
//! argmax_w Σ_p score[p][w_p]   subject to: content(w) is accepted by the automaton,
//!                                            every token after the first PAD is PAD
//! ```
//!
//! by Viterbi over lattice states = automaton states + one PAD state. From a state, each token
//! group `(dst, tokens)` costs one max over its tokens' scores; states that cannot reach acceptance
//! in the remaining positions (`p + distance(s) > L`) are skipped. The cost per position is the
//! number of live (state, token) transitions, and the result is exact.
//!
//! ```
//! use diffusion_lm::{TextTokenizer, steer::{automaton::TokenAutomaton, token_index::TokenIndex, projection::best_sequence}};
//! let tok = TextTokenizer::train(["aaa bbb", "ab ba"].into_iter(), 300).unwrap();
//! let index = TokenIndex::new(&tok);
//! let only_a = TokenAutomaton::from_byte_automaton(&index, 0u8, |_, b| (b == b'a').then_some(1), |s| s == 1, 100).unwrap();
//! let v = tok.vocab_size();
//! // Scores that prefer 'b' everywhere: the projection still returns a-only content + PAD tail.
//! let b = tok.encode("b").unwrap()[0] as usize;
//! let mut scores = vec![0f32; 4 * v];
//! for p in 0..4 { scores[p * v + b] = 5.0; }
//! let (ids, _) = best_sequence(&scores, 4, v, &only_a, tok.pad_id()).unwrap();
//! let content = &ids[..ids.iter().position(|&t| t == tok.pad_id()).unwrap_or(4)];
//! assert!(only_a.accepts(content));
//! ```

use crate::steer::automaton::TokenAutomaton;

/// The best sequence of `len` tokens under `scores` (`len × vocab`, row-major) whose content the
/// automaton accepts and whose tail is PAD. Returns the ids and the total score, or `None` when no
/// sequence with a finite score exists.
pub fn best_sequence(
    scores: &[f32],
    len: usize,
    vocab: usize,
    automaton: &TokenAutomaton,
    pad: u32,
) -> Option<(Vec<u32>, f32)> {
    let n = automaton.num_states();
    let pad_state = n; // lattice state after the first PAD
    let width = n + 1;
    let neg = f32::NEG_INFINITY;
    let mut cur = vec![neg; width];
    cur[automaton.start() as usize] = 0.0;
    // back[p * width + s] = (previous state, token) that reached s after position p.
    let mut back = vec![(u32::MAX, u32::MAX); len * width];
    let mut next = vec![neg; width];
    // Per position, the best token of each distinct token list, computed on first use.
    let unset = (f32::NAN, u32::MAX);
    let mut memo = vec![unset; automaton.num_sets()];
    for p in 0..len {
        next.iter_mut().for_each(|x| *x = neg);
        memo.iter_mut().for_each(|m| *m = unset);
        let row = &scores[p * vocab..(p + 1) * vocab];
        let remaining = (len - p - 1) as u64; // positions left after this one
        for s in 0..width {
            let here = cur[s];
            if here == neg {
                continue;
            }
            let (accepting, groups) = if s == pad_state {
                (true, &[][..])
            } else {
                (automaton.is_accepting(s as u32), automaton.groups(s as u32))
            };
            for g in groups {
                if automaton.distance(g.to) as u64 > remaining {
                    continue;
                }
                let memo_slot = &mut memo[g.set as usize];
                if memo_slot.0.is_nan() {
                    let mut best = neg;
                    let mut best_tok = u32::MAX;
                    for &t in &g.tokens {
                        let sc = row[t as usize];
                        if sc > best {
                            best = sc;
                            best_tok = t;
                        }
                    }
                    *memo_slot = (best, best_tok);
                }
                let (best, best_tok) = *memo_slot;
                let cand = here + best;
                if best_tok != u32::MAX && cand > next[g.to as usize] {
                    next[g.to as usize] = cand;
                    back[p * width + g.to as usize] = (s as u32, best_tok);
                }
            }
            if accepting {
                let cand = here + row[pad as usize];
                if row[pad as usize] > neg && cand > next[pad_state] {
                    next[pad_state] = cand;
                    back[p * width + pad_state] = (s as u32, pad);
                }
            }
        }
        std::mem::swap(&mut cur, &mut next);
    }
    let mut end = None;
    let mut best = neg;
    for (s, &sc) in cur.iter().enumerate() {
        let ok = s == pad_state || automaton.is_accepting(s as u32);
        if ok && sc > best {
            best = sc;
            end = Some(s);
        }
    }
    let mut s = end?;
    let mut ids = vec![0u32; len];
    for p in (0..len).rev() {
        let (prev, tok) = back[p * width + s];
        ids[p] = tok;
        s = prev as usize;
    }
    Some((ids, best))
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

/// The soft version of [`best_sequence`]: per-position token marginals (`len × vocab`) of the
/// distribution `p(w) ∝ exp(Σ_p score[p][w_p] / temperature)` restricted to the sequences the
/// constraints allow, by forward–backward (log-sum-exp) over the same lattice. `None` when no
/// sequence is allowed.
pub fn constrained_marginals(
    scores: &[f32],
    len: usize,
    vocab: usize,
    automaton: &TokenAutomaton,
    pad: u32,
    temperature: f32,
) -> Option<Vec<f32>> {
    Some(Lattice::new(scores, len, vocab, automaton, pad, temperature)?.marginals())
}

/// One exact sample from the distribution of [`constrained_marginals`]: a whole sequence drawn
/// from `p(w) ∝ exp(Σ_p score[p][w_p] / temperature)` over the sequences the constraints allow
/// (backward messages, then forward sampling). Every sample is accepted by the automaton with a
/// PAD tail. `None` when no sequence is allowed.
pub fn sample_sequence(
    scores: &[f32],
    len: usize,
    vocab: usize,
    automaton: &TokenAutomaton,
    pad: u32,
    temperature: f32,
    rng: &mut impl rand::Rng,
) -> Option<Vec<u32>> {
    Some(Lattice::new(scores, len, vocab, automaton, pad, temperature)?.sample(rng))
}

/// The (position × state) lattice of a score table under an automaton, with its backward
/// messages: what [`constrained_marginals`] and [`sample_sequence`] share.
struct Lattice<'a> {
    scores: &'a [f32],
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

impl<'a> Lattice<'a> {
    fn new(
        scores: &'a [f32],
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
        let mut lattice = Lattice {
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
        (lattice.log_z != f32::NEG_INFINITY).then_some(lattice)
    }

    fn width(&self) -> usize {
        self.automaton.num_states() + 1
    }

    fn set_score(&self, p: usize, g: &crate::steer::automaton::TokenGroup) -> f32 {
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
            let groups: &[crate::steer::automaton::TokenGroup] = if s == pad_state {
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
    let total: f64 = w.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    let mut last = 0;
    for (i, &x) in w.iter().enumerate() {
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
