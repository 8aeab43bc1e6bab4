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
use crate::steer::lattice::Lattice;

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

/// The soft version of [`best_sequence`]: per-position token marginals (`len × vocab`) of the
/// distribution `p(w) ∝ exp(Σ_p score[p][w_p] / temperature)` restricted to the sequences the
/// constraints allow, by forward–backward over the same lattice ([`Lattice`]). `None` when no
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
