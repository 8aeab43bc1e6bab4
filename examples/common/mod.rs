//! Helpers shared by the examples.

use anyhow::{Context, Result};

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
