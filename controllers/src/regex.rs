//! The `Regex` controller: the decoded content (PAD tail excluded) must fully match a pattern.
//!
//! The pattern is compiled through the byte-DFA layer ([`crate::dfa::RegexDfa`]) into an anchored
//! byte DFA of `^(?:pattern)$` (match kind *all*, so no alternative is cut short), with size
//! limits: dense DFAs can blow up exponentially and Unicode classes are costly, so past
//! [`Limits::regex_dfa_bytes`] or [`Limits::regex_token_states`] the build fails with a clear
//! error instead of exhausting the machine. The DFA is lifted to a token automaton through the
//! shared token index.
//!
//! The independent check re-matches the decoded text with the `regex` crate.
//!
//! ```
//! use diffusion_lm_controllers::Regex;
//! let r = Regex::new(r"[0-9]{4}-[0-9]{2}-[0-9]{2}").unwrap();
//! assert_eq!(r.pattern(), "[0-9]{4}-[0-9]{2}-[0-9]{2}");
//! assert!(Regex::new(r"(?=x)").is_err()); // look-around is not regular
//! // The pattern is checked on its own before it is anchored, so `)` cannot escape the wrapping.
//! assert!(Regex::new("The)|(.*").is_err());
//! // A verbose-mode comment at the end does not swallow the anchoring.
//! assert!(Regex::new("(?x) [0-9]+ # digits").is_ok());
//! ```

use diffusion_lm::steer::TokenAutomaton;
use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction};
use diffusion_lm::{Error, TextTokenizer};

use crate::dfa::{anchored, RegexDfa};
use crate::{ControllerError, Limits};

/// Options of the `Regex` controller: its limits are [`Limits::regex_dfa_bytes`],
/// [`Limits::regex_determinize_bytes`] and [`Limits::regex_token_states`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegexConfig {
    /// Size and state limits (only the `regex_` fields are read).
    pub limits: Limits,
}

/// Full-match regex constraint on the content.
#[derive(Clone, Debug)]
pub struct Regex {
    pattern: String,
    dfa: RegexDfa,
    check: regex::Regex,
    config: RegexConfig,
    label: String,
}

impl Regex {
    /// Compiles `pattern` with the default limits.
    pub fn new(pattern: &str) -> Result<Self, ControllerError> {
        Self::with_config(pattern, RegexConfig::default())
    }

    /// Compiles `pattern` with explicit limits.
    pub fn with_config(pattern: &str, config: RegexConfig) -> Result<Self, ControllerError> {
        let err = |message: String| ControllerError::Regex {
            pattern: pattern.to_string(),
            message,
        };
        let limits = &config.limits;
        let dfa = RegexDfa::new(pattern, limits.regex_dfa_bytes, limits.regex_determinize_bytes).map_err(err)?;
        let check = regex::Regex::new(&anchored(pattern).map_err(err)?).map_err(|e| err(e.to_string()))?;
        Ok(Regex {
            pattern: pattern.to_string(),
            dfa,
            check,
            config,
            label: format!("regex {pattern:?}"),
        })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Names the controller in messages (e.g. an infill template's own text).
    pub(crate) fn labelled(mut self, label: String) -> Self {
        self.label = label;
        self
    }

    /// The token automaton of this pattern over `ctx`'s vocabulary.
    pub fn token_automaton(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<TokenAutomaton> {
        self.dfa
            .token_automaton(ctx.index, self.config.limits.regex_token_states)
            .map_err(|e| Error::Constraint(format!("{}: {e}", self.label)))
    }
}

impl Constraint for Regex {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn restrictions(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<Vec<Restriction>> {
        Ok(vec![Restriction::Automaton(self.token_automaton(ctx)?)])
    }

    fn check(&self, text: &str, _ids: &[u32], _tok: &TextTokenizer) -> Result<(), CheckError> {
        if self.check.is_match(text) {
            Ok(())
        } else {
            Err(CheckError::new(format!(
                "{text:?} does not fully match {:?}",
                self.pattern
            )))
        }
    }
}
