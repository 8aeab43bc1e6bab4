//! The `Infill` controller: text around holes is fixed, the holes are filled by the model.
//!
//! A template such as `The Eagle ___ riverside ___` has fixed text and holes (`___`), each hole a
//! free span of one or more characters (no line breaks). The template becomes the regular
//! language `The Eagle .+ riverside .+` (fixed parts escaped), so the projection places the fixed
//! text at whatever positions fit best, exactly. A hole followed by fixed text that opens with
//! punctuation (`near ___.`) does not end in a space or in punctuation of its own, so the text
//! never reads "near Burger King,." or "near Burger King .".
//!
//! ```
//! use diffusion_lm_controllers::Infill;
//! let t = Infill::new("The Eagle ___ riverside ___").unwrap();
//! assert_eq!(t.holes(), 2);
//! assert!(Infill::new("no holes here").is_err());
//! ```

use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction};
use diffusion_lm::TextTokenizer;

use crate::{ControllerError, Regex};

/// The hole marker in templates.
pub const HOLE: &str = "___";

/// Punctuation that, opening the fixed text after a hole, the hole may not end with (nor with a
/// space), so that the two do not double up.
const CLOSING: [char; 7] = ['.', ',', ';', ':', '!', '?', ')'];

/// The regex of a hole followed by fixed text `next`.
fn hole_pattern(next: &str) -> &'static str {
    if next.starts_with(CLOSING) {
        r"[^\n]*[^\s.,;:!?)]"
    } else {
        ".+"
    }
}

/// Whether `fill` may fill a hole followed by fixed text `next` (see [`hole_pattern`]).
fn fill_fits(fill: &str, next: &str) -> bool {
    !next.starts_with(CLOSING)
        || fill
            .chars()
            .last()
            .is_some_and(|c| !(c.is_whitespace() || CLOSING.contains(&c)))
}

/// A template with fixed text and holes.
#[derive(Clone, Debug)]
pub struct Infill {
    template: String,
    holes: usize,
    regex: Regex,
}

impl Infill {
    pub fn new(template: &str) -> Result<Self, ControllerError> {
        let parts: Vec<&str> = template.split(HOLE).collect();
        let holes = parts.len() - 1;
        if holes == 0 {
            return Err(ControllerError::Template {
                template: template.into(),
                message: format!("has no hole; mark free spans with {HOLE}"),
            });
        }
        let mut pattern = regex::escape(parts[0]);
        for p in &parts[1..] {
            pattern.push_str(hole_pattern(p));
            pattern.push_str(&regex::escape(p));
        }
        let regex = Regex::new(&pattern)
            .map_err(|e| ControllerError::Template {
                template: template.into(),
                message: e.to_string(),
            })?
            .labelled(format!("infill {template:?}"));
        Ok(Infill {
            template: template.into(),
            holes,
            regex,
        })
    }

    pub fn holes(&self) -> usize {
        self.holes
    }

    pub fn template(&self) -> &str {
        &self.template
    }
}

impl Constraint for Infill {
    fn name(&self) -> String {
        format!("infill {:?}", self.template)
    }

    fn restrictions(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<Vec<Restriction>> {
        self.regex.restrictions(ctx)
    }

    /// Independent of the automaton: the fixed parts must appear in order, each hole non-empty
    /// and not ending in a space or punctuation where the fixed text after it opens with
    /// punctuation.
    fn check(&self, text: &str, _ids: &[u32], _tok: &TextTokenizer) -> Result<(), CheckError> {
        let parts: Vec<&str> = self.template.split(HOLE).collect();
        let first = parts[0];
        let Some(mut rest) = text.strip_prefix(first) else {
            return Err(CheckError::new(format!("{text:?} does not start with {first:?}")));
        };
        for (k, part) in parts.iter().enumerate().skip(1) {
            let last = k == parts.len() - 1;
            // The hole takes at least one character (not a line break) before the next fixed part.
            let found = if last {
                rest.ends_with(part) && rest.len() > part.len() && fill_fits(&rest[..rest.len() - part.len()], part)
            } else {
                match rest
                    .char_indices()
                    .skip(1)
                    .find(|(i, _)| rest[*i..].starts_with(part) && fill_fits(&rest[..*i], part))
                {
                    Some((i, _)) => {
                        if rest[..i].contains('\n') {
                            return Err(CheckError::new(format!("hole {k} of {text:?} spans a line break")));
                        }
                        rest = &rest[i + part.len()..];
                        true
                    }
                    None => false,
                }
            };
            if !found {
                return Err(CheckError::new(format!(
                    "{text:?} does not follow the template {:?}",
                    self.template
                )));
            }
            if last && rest[..rest.len() - part.len()].contains('\n') {
                return Err(CheckError::new(format!("hole {k} of {text:?} spans a line break")));
            }
        }
        Ok(())
    }
}
