//! The guidance update moves samples toward what a controller's gradient prefers.

mod common;

use candle_core::Tensor;
use common::*;
use diffusion_lm::controller::{Controller, GuidanceContext};
use diffusion_lm::{Generator, GuidanceConfig, GuidanceRule, TextTokenizer};

/// log p(c | x) = −Σ‖x_p − E_target‖²: prefers the target token everywhere.
struct Toward {
    target: u32,
}

impl Controller for Toward {
    fn name(&self) -> String {
        format!("toward token {}", self.target)
    }
    fn guidance(&self, x: &Tensor, ctx: &GuidanceContext) -> diffusion_lm::Result<Option<Tensor>> {
        let e = ctx.embeddings.get(self.target as usize)?;
        Ok(Some((x.broadcast_sub(&e)? * -2.0)?))
    }
    fn check(&self, _: &str, _: &[u32], _: &TextTokenizer) -> Result<(), String> {
        Ok(())
    }
}

#[test]
fn guidance_pulls_samples_toward_the_preferred_token_with_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let lm = train_toy(dir.path(), 100);
    let target = lm.tokenizer.encode(" cat").unwrap()[0];
    let count =
        |samples: &[diffusion_lm::Sample]| samples.iter().flat_map(|s| &s.ids).filter(|&&t| t == target).count();
    let plain = Generator::new(&lm).steps(20).seed(5).generate(4).unwrap();
    let positions = 4 * lm.config.seq_len;
    for rule in [
        GuidanceRule::SignNormalized,
        GuidanceRule::Adam { lr: 1.0 },
        GuidanceRule::Adagrad { lr: 1.0 },
    ] {
        // Guidance also after the last denoising step (skip_last 0), with a strong step, so the
        // final latent sits next to the preferred embedding.
        let cfg = GuidanceConfig {
            rule,
            step_size: 1.0,
            steps: 5,
            skip_last: 0,
            ..GuidanceConfig::default()
        };
        let guided = Generator::new(&lm)
            .with(Toward { target })
            .guidance(cfg)
            .steps(20)
            .seed(5)
            .generate(4)
            .unwrap();
        assert!(
            count(&guided) * 10 >= positions * 9 && count(&plain) * 2 < positions,
            "{rule:?}: {} of {positions} positions are the target with guidance, {} without",
            count(&guided),
            count(&plain)
        );
    }
}
