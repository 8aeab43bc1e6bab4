//! Classifier-gradient guidance: steer the shipped model toward an E2E attribute, alone and inside
//! the restaurant JSON Schema, and compare with unguided samples from the same seeds.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example attribute -- [FIELD=VALUE[:WEIGHT]] [N] [STEPS]
//! cargo run --release -p diffusion-lm --example attribute -- food=Italian 6
//! ```

mod common;

use std::sync::Arc;

use anyhow::Result;
use candle_core::Device;
use diffusion_lm::e2e::attribute_expressed;
use diffusion_lm::scoring::classifier::LatentClassifier;
use diffusion_lm::{DiffusionLm, Generator, GuidanceConfig};
use diffusion_lm_controllers::{Attribute, JsonSchema};

const SCHEMA: &str = include_str!("schemas/restaurant.json");

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let mut args = std::env::args().skip(1);
    let spec = args.next().unwrap_or_else(|| "food=Italian".into());
    let n: usize = common::positional(&mut args, "N", 6)?;
    // 100 steps by default, as in the evaluation of `docs/results.md`.
    let steps: usize = common::positional(&mut args, "STEPS", 100)?;
    let dir = DiffusionLm::default_dir();
    let lm = DiffusionLm::load(&dir, &Device::Cpu)?;
    let classifier = Arc::new(LatentClassifier::load(dir.join("classifier"), lm.device())?);
    let attribute = Attribute::parse(&classifier, &spec)?;
    let (field, value) = attribute.target();
    let (field, value) = (field.to_string(), value.to_string());

    let show = |title: &str, texts: &[String]| {
        let hits = texts.iter().filter(|t| attribute_expressed(t, &field, &value)).count();
        println!("{title} ({hits}/{} express {field} = {value}):", texts.len());
        for t in texts {
            println!("  {t}");
        }
    };
    // The shipped classifier reads the denoiser's predictions: one normalised update per step,
    // through the denoiser (the CLI's default too; see `docs/results.md`).
    let guidance = GuidanceConfig::recommended(classifier.config().reads);
    let texts = |g: Generator| -> Result<Vec<String>> {
        Ok(g.guidance(guidance)
            .steps(steps)
            .seed(7)
            .progress(true)
            .generate(n)?
            .into_iter()
            .map(|s| s.text)
            .collect())
    };
    show("unguided", &texts(Generator::new(&lm))?);
    show(
        "guided",
        &texts(Generator::new(&lm).guide(Attribute::parse(&classifier, &spec)?))?,
    );
    // Composition with a hard constraint: every record is valid under the schema, and guidance
    // picks its content.
    let schema = JsonSchema::from_json(SCHEMA)?;
    show(
        "guided inside the restaurant JSON Schema",
        &texts(Generator::new(&lm).constrain(schema).guide(attribute))?,
    );
    Ok(())
}
