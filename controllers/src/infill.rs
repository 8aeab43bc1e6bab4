//! The `Infill` controller: text around holes is fixed, the holes are filled by the model.
//!
//! A template such as `The Eagle ___ riverside ___` has fixed text and holes (`___`), each hole a
//! free span of one or more characters on one line. In a template without JSON punctuation (`{`,
//! `}`, `"`), a prose template, the holes hold none either: a model that also writes JSON
//! records cannot put one into a sentence's hole. The template becomes the regular language
//! `The Eagle [^{}"\n]+ riverside [^{}"\n]+` (fixed parts escaped; `[^\n]+` in a template with
//! JSON punctuation), so the projection places the fixed text at whatever positions fit best,
//! exactly.
//!
//! ```
//! use diffusion_lm_controllers::Infill;
//! let t = Infill::new("The Eagle ___ riverside ___").unwrap();
//! assert_eq!(t.holes(), 2);
//! assert_eq!(t.hole_excludes(), "{}\"\n");
//! assert_eq!(Infill::new(r#"{"name": "___"}"#).unwrap().hole_excludes(), "\n");
//! assert!(Infill::new("no holes here").is_err());
//! ```

use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction};
use diffusion_lm::TextTokenizer;

use crate::{ControllerError, Regex};

/// The hole marker in templates.
pub const HOLE: &str = "___";

/// A template with fixed text and holes.
#[derive(Clone, Debug)]
pub struct Infill {
    template: String,
    holes: usize,
    /// The characters no hole holds.
    excludes: &'static str,
    regex: Regex,
}

/// JSON punctuation, which a prose template's holes leave out.
const JSON_PUNCTUATION: &str = "{}\"";

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
        let (excludes, hole) = if template.contains(|c| JSON_PUNCTUATION.contains(c)) {
            ("\n", r"[^\n]+")
        } else {
            ("{}\"\n", r#"[^{}"\n]+"#)
        };
        let pattern = parts.iter().map(|p| regex::escape(p)).collect::<Vec<_>>().join(hole);
        let regex = Regex::new(&pattern)
            .map_err(|e| ControllerError::Template {
                template: template.into(),
                message: e.to_string(),
            })?
            .labelled(format!("infill {template:?}"));
        Ok(Infill {
            template: template.into(),
            holes,
            excludes,
            regex,
        })
    }

    pub fn holes(&self) -> usize {
        self.holes
    }

    pub fn template(&self) -> &str {
        &self.template
    }

    /// The characters no hole may hold: a line break, and JSON punctuation (`{`, `}`, `"`) unless
    /// the template has some.
    pub fn hole_excludes(&self) -> &'static str {
        self.excludes
    }

    /// An error if hole `k`'s text holds a character holes exclude.
    fn check_hole(&self, k: usize, hole: &str, text: &str) -> Result<(), CheckError> {
        match hole.chars().find(|&c| self.excludes.contains(c)) {
            Some(c) => Err(CheckError::new(format!("hole {k} of {text:?} holds {c:?}"))),
            None => Ok(()),
        }
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
    /// and free of the characters holes exclude. Each fixed part is matched at its first place
    /// after the previous one: that leaves each hole its shortest text, a prefix of any other.
    fn check(&self, text: &str, _ids: &[u32], _tok: &TextTokenizer) -> Result<(), CheckError> {
        let parts: Vec<&str> = self.template.split(HOLE).collect();
        let first = parts[0];
        let Some(mut rest) = text.strip_prefix(first) else {
            return Err(CheckError::new(format!("{text:?} does not start with {first:?}")));
        };
        for (k, part) in parts.iter().enumerate().skip(1) {
            let last = k == parts.len() - 1;
            // The hole takes at least one character before the next fixed part.
            let found = if last {
                rest.ends_with(part) && rest.len() > part.len()
            } else {
                match rest.char_indices().skip(1).find(|(i, _)| rest[*i..].starts_with(part)) {
                    Some((i, _)) => {
                        self.check_hole(k, &rest[..i], text)?;
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
            if last {
                self.check_hole(k, &rest[..rest.len() - part.len()], text)?;
            }
        }
        Ok(())
    }
}
