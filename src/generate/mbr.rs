//! Minimum Bayes risk decoding (as in Diffusion-LM): of several candidates, the one that agrees
//! most with the others.

use std::collections::HashMap;

use crate::generate::Sample;

/// Unigrams and bigrams of the content (tokens before the first PAD).
fn ngrams(ids: &[u32], pad: u32) -> HashMap<(u32, u32), usize> {
    let content = &ids[..ids.iter().position(|&t| t == pad).unwrap_or(ids.len())];
    let mut counts = HashMap::new();
    for (i, &t) in content.iter().enumerate() {
        *counts.entry((t, u32::MAX)).or_insert(0) += 1;
        if i + 1 < content.len() {
            *counts.entry((t, content[i + 1])).or_insert(0) += 1;
        }
    }
    counts
}

/// F1 of the clipped n-gram overlap of two n-gram multisets.
fn overlap_f1(a: &HashMap<(u32, u32), usize>, b: &HashMap<(u32, u32), usize>) -> f64 {
    let (na, nb) = (a.values().sum::<usize>(), b.values().sum::<usize>());
    if na == 0 || nb == 0 {
        return 0.0;
    }
    let common: usize = a.iter().map(|(k, &c)| c.min(*b.get(k).unwrap_or(&0))).sum();
    2.0 * common as f64 / (na + nb) as f64
}

/// The candidate with the highest total agreement (unigram+bigram F1) with the other candidates.
///
/// ```
/// use diffusion_lm::{generate::mbr_select, Sample};
/// let s = |ids: &[u32]| Sample { text: String::new(), ids: ids.to_vec(), redraws: 0 };
/// let group = [s(&[5, 6, 7, 0]), s(&[9, 9, 9, 0]), s(&[5, 6, 8, 0])];
/// // [5, 6, 7] and [5, 6, 8] share "5", "6" and "5 6"; [9, 9, 9] shares nothing; the first of
/// // equally good candidates wins.
/// assert_eq!(mbr_select(&group, 0).ids, vec![5, 6, 7, 0]);
/// ```
pub fn mbr_select(group: &[Sample], pad: u32) -> Sample {
    let grams: Vec<_> = group.iter().map(|s| ngrams(&s.ids, pad)).collect();
    let score = |i: usize| {
        (0..group.len())
            .filter(|&j| j != i)
            .map(|j| overlap_f1(&grams[i], &grams[j]))
            .sum::<f64>()
    };
    // The first of equally good candidates wins, so the choice does not depend on float ties.
    let mut best = 0;
    let mut best_score = f64::NEG_INFINITY;
    for i in 0..group.len() {
        let sc = score(i);
        if sc > best_score {
            best = i;
            best_score = sc;
        }
    }
    group[best].clone()
}
