//! Helpers shared by the controller tests: random walks through byte automata.

#![allow(dead_code)]

use diffusion_lm_controllers::dfa::{Dfa, DEAD};
use rand::rngs::StdRng;
use rand::Rng;

/// Fewest bytes from each state to acceptance.
pub fn distances(d: &Dfa) -> Vec<usize> {
    let n = d.num_states();
    let mut dist: Vec<usize> = (0..n)
        .map(|s| if d.is_accepting(s as u32) { 0 } else { usize::MAX })
        .collect();
    loop {
        let mut changed = false;
        for s in 0..n {
            for b in 0..=255u8 {
                let t = d.next(s as u32, b);
                if t != DEAD && dist[t as usize] != usize::MAX && dist[t as usize] + 1 < dist[s] {
                    dist[s] = dist[t as usize] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            return dist;
        }
    }
}

/// A random accepted string: random bytes, then the shortest way out once `soft_len` is passed.
pub fn random_document(d: &Dfa, dist: &[usize], rng: &mut StdRng, soft_len: usize) -> Vec<u8> {
    let mut s = 0u32;
    let mut out = Vec::new();
    loop {
        if d.is_accepting(s) && (rng.gen_bool(0.25) || out.len() > soft_len) {
            return out;
        }
        let options: Vec<(u8, u32)> = (0..=255u8)
            .filter_map(|b| {
                let t = d.next(s, b);
                (t != DEAD).then_some((b, t))
            })
            .collect();
        if options.is_empty() {
            assert!(d.is_accepting(s), "a non-accepting state without transitions");
            return out;
        }
        // Prefer printable ASCII so documents stay readable; keep some other bytes.
        let (b, t) = if out.len() > soft_len {
            *options.iter().min_by_key(|(_, t)| dist[*t as usize]).unwrap()
        } else {
            let ascii: Vec<&(u8, u32)> = options.iter().filter(|(b, _)| (0x20..0x7f).contains(b)).collect();
            if !ascii.is_empty() && rng.gen_bool(0.9) {
                *ascii[rng.gen_range(0..ascii.len())]
            } else {
                options[rng.gen_range(0..options.len())]
            }
        };
        out.push(b);
        s = t;
    }
}
