//! Writes the shipped masked model's logits on a fixed input, for the PyTorch parity check:
//!
//! ```text
//! cargo run --release --example masked_dump -- models/e2e-masked rust_masked_io.safetensors
//! python3 benches/pytorch_masked_reference.py --model models/e2e-masked --dump rust_masked_io.safetensors
//! ```
//!
//! The input is 3 sequences: the first all `[MASK]`, the others a corpus sentence with every
//! third position masked.

use anyhow::Context;
use candle_core::{Device, Tensor};
use diffusion_lm::masked::MaskedLm;
use diffusion_lm::nn::Mode;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dir, out) = match args.as_slice() {
        [dir, out] => (dir.as_str(), out.as_str()),
        _ => anyhow::bail!("usage: masked_dump MODEL_DIR OUT.safetensors"),
    };
    let lm = MaskedLm::load(dir, &Device::Cpu).with_context(|| format!("loading {dir}"))?;
    let (len, mask) = (lm.config.seq_len, lm.config.mask_id());
    let mut ids = vec![mask; len];
    for (k, text) in [
        "The Eagle is a pub near Burger King.",
        "Green Man serves cheap French food.",
    ]
    .iter()
    .enumerate()
    {
        let mut row = lm.tokenizer.encode_padded(text, len)?;
        for (p, t) in row.iter_mut().enumerate() {
            if (p + k) % 3 == 0 {
                *t = mask;
            }
        }
        ids.extend(row);
    }
    let ids = Tensor::from_vec(ids, (3, len), &Device::Cpu)?;
    let logits = lm.model.forward(&ids, &mut Mode::Infer)?;
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("ids".to_string(), ids), ("logits".to_string(), logits)]),
        out,
    )
    .with_context(|| format!("writing {out}"))?;
    Ok(())
}
