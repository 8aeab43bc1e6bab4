//! The `Regex` controller: the decoded content (PAD tail excluded) must fully match a pattern.
//!
//! The pattern is compiled with `regex-automata` into an anchored byte DFA of `^(?:pattern)$`
//! (match kind *all*, so no alternative is cut short), with size limits: dense DFAs can blow up
//! exponentially and Unicode classes are costly, so past [`RegexConfig::dfa_size_limit`] or
//! [`RegexConfig::max_token_states`] the build fails with a clear error instead of exhausting
//! the machine. The DFA is lifted to a token automaton through the shared token index.
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
use regex_automata::dfa::{dense, Automaton};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

/// Limits on what compiling a pattern may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegexConfig {
    /// Bytes the dense DFA may occupy (and the Thompson NFA it is built from).
    pub dfa_size_limit: usize,
    /// Bytes determinisation may use.
    pub determinize_size_limit: usize,
    /// States the token automaton may have.
    pub max_token_states: usize,
}

impl Default for RegexConfig {
    fn default() -> Self {
        RegexConfig {
            dfa_size_limit: 64 << 20,
            determinize_size_limit: 64 << 20,
            max_token_states: 20_000,
        }
    }
}

/// Errors building a controller.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("infill template {template:?}: {message}")]
    Template { template: String, message: String },
    #[error("length: {0}")]
    Length(String),
    /// A JSON Schema that cannot be compiled; `pointer` locates the offending schema node.
    #[error("JSON Schema at {pointer}: {message}")]
    JsonSchema { pointer: String, message: String },
    /// Input that is not JSON, or a file that cannot be read.
    #[error("{0}")]
    Input(String),
    /// A GBNF grammar that cannot be parsed or compiled.
    #[error("grammar {grammar}: {message}")]
    Grammar { grammar: String, message: String },
    /// An attribute target the classifier does not know, or a classifier that cannot be loaded.
    #[error("attribute: {0}")]
    Attribute(String),
}

/// The anchored dense DFA of `^(?:pattern)$` (match kind *all*, so no alternative is cut short)
/// under size limits, with its start state; the error message includes the underlying cause.
pub(crate) fn full_match_dfa(
    pattern: &str,
    dfa_size_limit: usize,
    determinize_size_limit: usize,
) -> Result<(dense::DFA<Vec<u32>>, StateID), String> {
    let anchored = anchored(pattern)?;
    let dfa = dense::Builder::new()
        // The NFA is bounded too: `\p{L}{300}{300}` would otherwise spend most of a minute
        // building 90,000 copies of a Unicode class before the DFA limits are ever checked.
        .thompson(thompson::Config::new().nfa_size_limit(Some(dfa_size_limit)))
        .configure(
            dense::Config::new()
                .match_kind(MatchKind::All)
                .start_kind(regex_automata::dfa::StartKind::Anchored)
                .dfa_size_limit(Some(dfa_size_limit))
                .determinize_size_limit(Some(determinize_size_limit)),
        )
        .build(&anchored)
        .map_err(|e| error_chain(&e))?;
    let start = dfa
        .start_state(&start::Config::new().anchored(Anchored::Yes))
        .map_err(|e| format!("no anchored start state: {e}"))?;
    Ok((dfa, start))
}

/// `^(?:pattern)$`, checked to mean exactly "the whole text matches `pattern`".
///
/// The pattern is parsed on its own first: wrapped, `a)|(b` would parse as a different pattern,
/// and a syntax error would point into text the user did not write. Then the wrapped text must
/// parse to the pattern between two anchors; in verbose mode (`(?x)`) a trailing `#` comment
/// would swallow the closing `)$`, so a line end is put before it in that case.
pub(crate) fn anchored(pattern: &str) -> Result<String, String> {
    use regex_syntax::hir::{Hir, Look};
    let parse = regex_automata::util::syntax::parse;
    let hir = parse(pattern).map_err(|e| e.to_string())?;
    let expected = Hir::concat(vec![Hir::look(Look::Start), hir, Hir::look(Look::End)]);
    for wrapped in [format!("^(?:{pattern})$"), format!("^(?:{pattern}\n)$")] {
        if parse(&wrapped).is_ok_and(|h| h == expected) {
            return Ok(wrapped);
        }
    }
    Err("the pattern cannot be anchored to the whole text as written".into())
}

/// An error and all its causes, `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        msg = format!("{msg}: {cause}");
        source = cause.source();
    }
    msg
}

/// Full-match regex constraint on the content.
#[derive(Clone, Debug)]
pub struct Regex {
    pattern: String,
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
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
        let (dfa, start) =
            full_match_dfa(pattern, config.dfa_size_limit, config.determinize_size_limit).map_err(err)?;
        let check = regex::Regex::new(&anchored(pattern).map_err(err)?).map_err(|e| err(e.to_string()))?;
        Ok(Regex {
            pattern: pattern.to_string(),
            dfa,
            start,
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
        let dfa = &self.dfa;
        TokenAutomaton::from_byte_automaton(
            ctx.index,
            self.start,
            |s, b| {
                let n = dfa.next_state(s, b);
                (!dfa.is_dead_state(n) && !dfa.is_quit_state(n)).then_some(n)
            },
            |s| dfa.is_match_state(dfa.next_eoi_state(s)),
            self.config.max_token_states,
        )
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
