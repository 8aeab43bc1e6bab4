//! Helpers shared by the examples (each example uses some of them).

#![allow(dead_code)]

use std::time::Instant;

use anyhow::{Context, Result};
use diffusion_lm::Generator;

/// The next positional argument parsed as `T`, or `default` when there is none; a value that
/// does not parse is an error naming the argument.
pub fn positional<T>(args: &mut impl Iterator<Item = String>, name: &str, default: T) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match args.next() {
        None => Ok(default),
        Some(s) => s.parse().with_context(|| format!("{name}: cannot read {s:?}")),
    }
}

/// Runs `g` for `n` samples of `steps` steps from seed 0, with a progress bar; returns the texts
/// and the seconds they took.
pub fn timed_texts(g: Generator, n: usize, steps: usize) -> Result<(Vec<String>, f64)> {
    let started = Instant::now();
    let samples = g.steps(steps).seed(0).progress(true).generate(n)?;
    Ok((
        samples.into_iter().map(|s| s.text).collect(),
        started.elapsed().as_secs_f64(),
    ))
}
