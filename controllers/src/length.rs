//! The `Length` controller: the content (tokens before the PAD tail) has an exact length or a
//! length in a range. It is a unary constraint: PAD is forbidden before the minimum length and
//! required from the maximum on.
//!
//! ```
//! use diffusion_lm_controllers::Length;
//! assert_eq!(Length::exact(12).range(), (12, 12));
//! assert!(Length::between(5, 3).is_err());
//! ```

use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction, UnaryConstraint};
use diffusion_lm::TextTokenizer;

use crate::ControllerError;

/// Content length in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    min: usize,
    max: usize,
}

impl Length {
    /// Exactly `n` content tokens.
    pub fn exact(n: usize) -> Self {
        Length { min: n, max: n }
    }

    /// Between `min` and `max` content tokens, inclusive.
    pub fn between(min: usize, max: usize) -> Result<Self, ControllerError> {
        if min > max {
            return Err(ControllerError::Length(format!("empty range {min}..={max}")));
        }
        Ok(Length { min, max })
    }

    pub fn range(&self) -> (usize, usize) {
        (self.min, self.max)
    }
}

impl Constraint for Length {
    fn name(&self) -> String {
        if self.min == self.max {
            format!("length {}", self.min)
        } else {
            format!("length {}..={}", self.min, self.max)
        }
    }

    fn restrictions(&self, _ctx: &ConstraintContext) -> diffusion_lm::Result<Vec<Restriction>> {
        Ok(vec![Restriction::Unary(UnaryConstraint {
            content_len: Some((self.min, self.max)),
            ..Default::default()
        })])
    }

    fn check(&self, _text: &str, ids: &[u32], tok: &TextTokenizer) -> Result<(), CheckError> {
        let pad = tok.pad_id();
        let n = ids.iter().position(|&t| t == pad).unwrap_or(ids.len());
        if ids[n..].iter().any(|&t| t != pad) {
            return Err(CheckError::new("content continues after the PAD tail"));
        }
        if n < self.min || n > self.max {
            return Err(CheckError::new(format!(
                "content has {n} tokens, expected {}",
                self.name()
            )));
        }
        Ok(())
    }
}
