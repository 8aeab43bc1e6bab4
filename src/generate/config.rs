//! [`GenerationConfig`]: every setting of a generation run, with one set of defaults shared by
//! the library ([`crate::Generator`]) and the command line (`diffusion-lm generate --config FILE`,
//! where flags override the file).
//!
//! ```
//! use diffusion_lm::generate::GenerationConfig;
//! let cfg: GenerationConfig = serde_json::from_str(r#"{"steps": 50, "sampler": "ddim:0.5"}"#).unwrap();
//! assert_eq!(cfg.steps, Some(50));
//! assert_eq!(cfg.self_correct.rounds, None); // follows the model: 2 or 8 rounds
//! assert!(serde_json::from_str::<GenerationConfig>(r#"{"stpes": 50}"#).is_err());
//! ```

use serde::{Deserialize, Serialize};

use crate::generate::guide::GuidanceConfig;
use crate::nn::device::{ComputeDtype, DeviceSpec};
use crate::{Error, Result, SamplerKind};

/// Every setting of a generation run. Fields left out of a JSON file take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GenerationConfig {
    /// Reverse steps K; the schedule is respaced exactly from the model's T to K (at most T).
    /// `None` (default): 200, or T if the model has fewer.
    pub steps: Option<usize>,
    /// Seed of the noise: the same seed gives the same text, whatever the batch size. Default 0.
    pub seed: u64,
    /// The reverse update: `renoise` (default), `ddpm`, `ddim` or `ddim:ETA`
    /// ([`SamplerKind`]).
    pub sampler: SamplerKind,
    /// Sequence length in tokens; `None` (default) is the model's `seq_len`.
    pub length: Option<usize>,
    /// How many sequences are denoised together. Default 64.
    pub batch_size: usize,
    /// The clamping trick: snap each predicted `x0` to its nearest word embeddings. Default on.
    pub clamp: bool,
    /// Settings of the guidance update; `None` (default) takes
    /// [`GuidanceConfig::recommended`] for what the stack's guides read.
    pub guidance: Option<GuidanceConfig>,
    /// The soft projection of the noisiest steps (with hard constraints).
    pub soft_projection: SoftProjection,
    /// How many times a sample that fails a constraint's independent check is redrawn with
    /// fresh noise before generation fails. Default 3.
    pub retries: usize,
    /// Rewriting after sampling, for stacks with a repair.
    pub rewrite: Rewrite,
    /// Self-correction after sampling.
    pub self_correct: SelfCorrect,
    /// Minimum Bayes risk decoding: candidates drawn per output (1, the default, turns it off).
    pub mbr: usize,
    /// Best of `k`: each sample is drawn `k` times (with seeds derived from the run's) and the
    /// candidate that passes every check and that the model finds most natural is kept
    /// ([`crate::Generator::naturalness`], plus each guide's `w · log p(c | text)` when the
    /// stack has guides). Costs `k` times the sampling. `None` (default): 8 for models trained
    /// with [`crate::ModelConfig::clean_context`] (whose reading the blind readings in
    /// `docs/results.md` measured: 8 against 4 lifted the two infill templates from 66% to
    /// 78–81% grammatical and faithful), 1 (off) for others.
    pub best_of: Option<usize>,
    /// Best-of prefers a candidate none of whose sentences holds a word twice
    /// ([`crate::scoring::quality::repeats_within_sentence`]: "Alimentum is a pub near
    /// Alimentum."), when one passes the checks; the most natural of those. JSON texts are never
    /// passed over for it. Default on.
    pub avoid_repeats: bool,
    /// Best-of prefers, after [`GenerationConfig::avoid_repeats`], a candidate whose prose
    /// holds only word 4-grams of the model's training corpus ([`crate::text::phrases`],
    /// `phrases.txt` in the checkpoint), the most natural of those; JSON documents always
    /// qualify. It passes over slips such as "The Punter is a family-friendly in the city
    /// centre." at the cost of variety. Off by default: measured for prose left free or kept to
    /// a form or a length, where the command line turns it on (`docs/results.md`); under
    /// templates it would prefer "There is a ..." in a name slot. Without phrases in the
    /// checkpoint it does nothing.
    pub phrases: bool,
    /// After self-correction, drop a word token that repeats the one before it ("located
    /// located"), where the text without it still passes every constraint's check. Default on.
    pub drop_doubled_words: bool,
    /// Progressive commitment: at each step the sampler commits the positions the denoiser is
    /// surest of (the share committed grows linearly to all at the last step), and from then on
    /// feeds them to the denoiser as clean tokens, so later words are written in their context,
    /// as a masked model does. Hard constraints stay exact: every commit comes from a projected
    /// sequence that holds all earlier ones. Not with repairs. `None` (default): on for models
    /// trained with [`crate::ModelConfig::clean_context`], off for others.
    pub commit: Option<bool>,
    /// Under hard constraints, keep every word of the text (every maximal run of letters) to
    /// the model's lexicon, the words of its training corpus ([`crate::text::lexicon`]), where
    /// that is cheap: the product of the lexicon's automaton with the constraints' may have at
    /// most 16 times the constraints' own transitions. That holds for a word slot between fixed
    /// words (`[A-Z][a-z]+ is a ...`), where the projection otherwise finishes a word with
    /// sub-word pieces into one no corpus holds ("Theut"); not for free prose, JSON or infill
    /// holes, where it would slow every projection 100 to 550 times. Without a lexicon in the
    /// checkpoint, or where the constraints need a word outside it, the constraints alone
    /// apply. `None` (default): on.
    pub lexicon: Option<bool>,
    /// Where the model runs, for loaders that read this config ([`crate::DiffusionLm::load_for`]).
    pub device: DeviceSpec,
    /// The dtype the denoiser's transformer computes in. Default f32.
    pub dtype: ComputeDtype,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            steps: None,
            seed: 0,
            sampler: SamplerKind::Renoise,
            length: None,
            batch_size: 64,
            clamp: true,
            guidance: None,
            soft_projection: SoftProjection::default(),
            retries: 3,
            rewrite: Rewrite::default(),
            self_correct: SelfCorrect::default(),
            mbr: 1,
            best_of: None,
            avoid_repeats: true,
            phrases: false,
            drop_doubled_words: true,
            commit: None,
            lexicon: None,
            device: DeviceSpec::Cpu,
            dtype: ComputeDtype::F32,
        }
    }
}

impl GenerationConfig {
    /// Reads a config from a JSON file; unknown fields are an error naming them.
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Best of `k` for a model with this config ([`GenerationConfig::best_of`]).
    pub fn best_of_for(&self, model: &crate::ModelConfig) -> usize {
        self.best_of.unwrap_or(if model.clean_context { 8 } else { 1 })
    }

    /// Self-correction rounds for a model with this config ([`SelfCorrect::rounds`]).
    pub fn self_correct_rounds_for(&self, model: &crate::ModelConfig) -> usize {
        self.self_correct
            .rounds
            .unwrap_or(if model.clean_context { 2 } else { 8 })
    }

    /// Progressive commitment for a model with this config ([`GenerationConfig::commit`]).
    pub fn commit_for(&self, model: &crate::ModelConfig) -> bool {
        self.commit.unwrap_or(model.clean_context)
    }

    /// Checks the values that have a valid range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.steps == Some(0) {
            return bad("steps must be at least 1".into());
        }
        if self.length == Some(0) {
            return bad("the sequence length must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.mbr == 0 {
            return bad("mbr must be at least 1".into());
        }
        if self.best_of == Some(0) {
            return bad("best_of must be at least 1".into());
        }
        let sp = &self.soft_projection;
        if !(0.0..=1.0).contains(&sp.fraction) || !(sp.temperature.is_finite() && sp.temperature > 0.0) {
            return bad(format!(
                "soft_projection: fraction must be in [0, 1] and temperature positive, got {} and {}",
                sp.fraction, sp.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.rewrite.from) {
            return bad(format!("rewrite.from must be in [0, 1], got {}", self.rewrite.from));
        }
        let th = self.self_correct.threshold;
        if !(th > 0.0 && th <= 1.0) {
            return bad(format!("self_correct.threshold must be in (0, 1], got {th}"));
        }
        if let Some(g) = &self.guidance {
            g.validate()?;
        }
        Ok(())
    }
}

/// The soft projection: with hard constraints, the first `fraction` of the steps (the noisiest)
/// replace `x0` by the expected embedding under the constrained token marginals
/// (forward–backward, [`crate::steer::projection::constrained_marginals`], scores divided by
/// `temperature`); the remaining steps and the final rounding project exactly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoftProjection {
    /// Share of the steps, noisiest first. Default 0 (exact projection at every step).
    pub fraction: f64,
    /// Temperature of the marginals. Default 1.
    pub temperature: f32,
}

impl Default for SoftProjection {
    fn default() -> Self {
        SoftProjection {
            fraction: 0.0,
            temperature: 1.0,
        }
    }
}

/// Rewriting after sampling, for stacks with a [`crate::steer::Repair`]: an output in which a
/// repair still names faulty positions is noised back to the level of the last `from` share of
/// the steps and denoised again with every token outside those positions (and one token on each
/// side) held, for up to `rounds` rounds with fresh noise each. Round `r` starts from the share
/// `from + (1 − from)·r/rounds`, so later rounds can change more; a round's result is kept only
/// if its fault score is lower.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rewrite {
    /// Rounds; 0 turns rewriting off. Default 3.
    pub rounds: usize,
    /// Share of the steps the first round starts from. Default 0.3.
    pub from: f64,
}

impl Default for Rewrite {
    fn default() -> Self {
        Rewrite { rounds: 3, from: 0.3 }
    }
}

/// Self-correction after sampling: each finished sequence is noised to the level of the
/// rewrite's first round and denoised in one prediction; tokens whose probability under the
/// model's rounding head is below `threshold` times that of the token the model would pick there
/// are rewritten by inpainting (with one neighbour on each side, everything else held), and a
/// rewrite is kept only if the model finds the whole sequence likelier under the same probe
/// noise. Hard constraints hold throughout. A round costs one prediction per sequence plus
/// `rewrite.from × steps` steps for the sequences rewritten.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SelfCorrect {
    /// Rounds; 0 turns it off. `None` (default): 2 for models trained with
    /// [`crate::ModelConfig::clean_context`], where best-of already picks among candidates
    /// (more rounds read no better and take up to 2.6 times as long under constraints), 8 for
    /// others, where they bring the samples' perplexity under the reference LM close to that of
    /// real text (`docs/results.md`).
    pub rounds: Option<usize>,
    /// Probability share in (0, 1] below which a token is rewritten. Default 0.3.
    pub threshold: f64,
}

impl Default for SelfCorrect {
    fn default() -> Self {
        SelfCorrect {
            rounds: None,
            threshold: 0.3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GenerationConfig;
    use crate::ModelConfig;

    #[test]
    fn unset_finishing_follows_the_model_and_explicit_values_win() {
        let plain = ModelConfig::tiny(50);
        let clean = ModelConfig {
            clean_context: true,
            ..ModelConfig::tiny(50)
        };
        let cfg = GenerationConfig::default();
        assert_eq!((cfg.best_of_for(&plain), cfg.self_correct_rounds_for(&plain)), (1, 8));
        assert_eq!((cfg.best_of_for(&clean), cfg.self_correct_rounds_for(&clean)), (8, 2));
        assert!(!cfg.commit_for(&plain) && cfg.commit_for(&clean));
        let mut set = GenerationConfig {
            best_of: Some(3),
            commit: Some(false),
            ..Default::default()
        };
        set.self_correct.rounds = Some(0);
        for m in [&plain, &clean] {
            assert_eq!((set.best_of_for(m), set.self_correct_rounds_for(m)), (3, 0));
            assert!(!set.commit_for(m));
        }
        assert!(GenerationConfig {
            best_of: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
    }
}
