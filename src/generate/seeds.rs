//! Every random stream of a generation run, derived from the run's seed in one place.
//!
//! Noise is drawn per sample (from the sample's index), so the same seed gives the same text
//! whatever the batch size; each later stage (a redraw after a failed check, a rewrite round, a
//! self-correction probe or round) mixes its own constant and round into the seed, so no two
//! stages share noise.

use rand::rngs::StdRng;
use rand::SeedableRng;

/// A stage of the pipeline that draws its own noise.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    /// Redraw `n` (from 1) of samples that failed a check; 0 is the first draw.
    Attempt(u64),
    /// Rewrite round `r` (from 0).
    Rewrite(usize),
    /// The probe noise of self-correction round `r`.
    Probe(usize),
    /// The inpainting noise of self-correction round `r`.
    Correction(usize),
    /// Candidate `j` (from 1) of a best-of-k run; candidate 0 is the first draw.
    Candidate(usize),
    /// The probe noise of best-of's naturalness score.
    Natural,
}

/// The seed of `stream` under the run's (or attempt's) seed `seed`.
pub(crate) fn derive(seed: u64, stream: Stream) -> u64 {
    match stream {
        Stream::Attempt(n) => seed ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03),
        Stream::Rewrite(r) => seed ^ (r as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F),
        Stream::Probe(r) => seed ^ (r as u64 + 1).wrapping_mul(0x94D0_49BB_1331_11EB),
        Stream::Correction(r) => seed ^ (r as u64 + 1).wrapping_mul(0xE703_7ED1_A0B4_28DB),
        Stream::Candidate(j) => seed ^ (j as u64).wrapping_mul(0x8EBC_6AF0_9C88_C6E3),
        Stream::Natural => seed ^ 0x2545_F491_4F6C_DD1D,
    }
}

/// The noise generator of sample `index` under `seed`.
pub(crate) fn sample_rng(seed: u64, index: usize) -> StdRng {
    StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}
