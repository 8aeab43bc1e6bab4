//! Structured output from a pretrained masked diffusion LLM (LLaDA, Dream, DiffuCoder) in a local
//! Hugging Face snapshot: a prompt through the chat template, then a JSON document valid under
//! a schema, with certainty.
//!
//! ```text
//! cargo run --release -p diffusion-lm --example pretrained -- [SNAPSHOT] [SCHEMA] [cpu|cuda:0] [f32|bf16]
//! ```
//!
//! Without arguments it runs the tiny random-weight LLaDA checkpoint of the tests
//! (`tests/fixtures/pretrained/llada-tiny`): the document is valid, its content random.

use anyhow::Result;
use diffusion_lm::masked::{MaskedGenerator, Remasking};
use diffusion_lm::pretrained::PretrainedLm;
use diffusion_lm_controllers::JsonSchema;

fn main() -> Result<()> {
    diffusion_lm::tune_runtime();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = std::env::args().skip(1).collect();
    let snapshot = args
        .first()
        .map_or_else(|| root.join("tests/fixtures/pretrained/llada-tiny"), Into::into);
    let schema = args
        .get(1)
        .map_or_else(|| root.join("examples/schemas/restaurant.json"), Into::into);
    let device = diffusion_lm::nn::device::parse_device(args.get(2).map_or("cpu", String::as_str))?;
    let dtype = diffusion_lm::nn::device::parse_dtype(args.get(3).map_or("f32", String::as_str))?;

    let lm = PretrainedLm::load(&snapshot, &device, dtype)?;
    let prompt = lm.prompt(
        "Describe a family-friendly Italian restaurant by the river as a JSON object.",
        Some("You answer with JSON only."),
    )?;
    let samples = MaskedGenerator::new(&lm)
        .prompt(prompt)
        .length(128) // the generated span; its tail is filled with the end-of-text token
        .steps(64)
        .block_size(32) // semi-autoregressive, as LLaDA's reference sampler
        .remasking(Remasking::LowConfidence)
        .temperature(0.0)
        .constrain(JsonSchema::from_file(&schema)?)
        .generate(1)?;
    for s in samples {
        println!("{}", s.text);
    }
    Ok(())
}
