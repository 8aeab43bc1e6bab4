//! The `Grammar` controller: every output is a sentence of a context-free grammar written in
//! GBNF (the format llama.cpp uses; see [`gbnf`] and the files in `grammars/`).
//!
//! **How it is exact.** The projection at each denoising step is a dynamic programme over
//! (position, automaton state), so the constraint must be a finite automaton over bytes. A
//! context-free language is not regular, but a fixed-length token sequence bounds how deep an
//! output can nest. The grammar is compiled, through the byte-DFA layer ([`crate::dfa`]), into
//! the automaton of its language *restricted to nesting depth `max_depth`*
//! ([`Limits::grammar_depth`]; [`compile`]: recursion among mutually recursive rules is unrolled
//! `max_depth` times; everything else is exact). The projection then finds the best-scoring
//! token sequence in that language, so every output parses. Depth counts calls between mutually
//! recursive rules, so one level of nesting costs as many as the cycle has calls (JSON's
//! `value → object → value` two, arithmetic's `expr → term → factor → expr` three). The cost is
//! states: each level multiplies them by the number of ways to be inside it. The default depth
//! (8) suits the 64-token sequences of the shipped model; raise it for longer sequences.
//!
//! Weighted CKY/Earley parsing over the token lattice would be exact at any depth, but costs
//! O(L³ · |grammar|) per step and sequence instead of the automaton's O(L · states · tokens
//! touched); with L = 64 and the dense per-position token scores the projection reads, the
//! depth-bounded automaton is the faster of the two by orders of magnitude, and within the
//! sequence length it loses only outputs nested deeper than `max_depth`.
//!
//! **Independent check.** [`Constraint::check`] parses each output with an Earley recogniser
//! built directly from the rules ([`earley`]), with no depth bound.
//!
//! ```
//! use diffusion_lm_controllers::Grammar;
//! let g = Grammar::from_gbnf(r#"
//!     root ::= expr
//!     expr ::= term (("+" | "-") term)*
//!     term ::= [0-9]+ | "(" expr ")"
//! "#).unwrap();
//! assert!(g.accepts("(1+2)-3"));
//! assert!(!g.accepts("(1+2"));
//! // Undefined rules are errors that name the rule.
//! let err = Grammar::from_gbnf("root ::= value").err().unwrap();
//! assert!(err.to_string().contains("`value`"));
//! ```

pub mod compile;
pub mod earley;
pub mod gbnf;

use std::path::Path;

use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction};
use diffusion_lm::{Error, TextTokenizer};

use crate::dfa::Dfa;
use crate::{ControllerError, Limits};

/// Settings of the grammar compiler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GrammarConfig {
    /// Size, state and depth limits (only the `grammar_` fields are read): the nesting depth of
    /// recursive rules ([`Limits::grammar_depth`], see the module docs), the largest automaton
    /// built for any rule, the largest token automaton, the bytes of a character class's DFA.
    pub limits: Limits,
}

/// A GBNF grammar as a hard constraint.
#[derive(Clone)]
pub struct Grammar {
    name: String,
    dfa: Dfa,
    recognizer: std::sync::Arc<earley::Recognizer>,
    config: GrammarConfig,
}

fn grammar_error(name: &str, message: impl std::fmt::Display) -> ControllerError {
    ControllerError::Grammar {
        grammar: name.to_string(),
        message: message.to_string(),
    }
}

impl Grammar {
    /// Compiles GBNF text with the default [`GrammarConfig`].
    pub fn from_gbnf(text: &str) -> Result<Self, ControllerError> {
        Self::with_config("grammar", text, GrammarConfig::default())
    }

    /// Reads and compiles a `.gbnf` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ControllerError> {
        Self::from_file_with_config(path, GrammarConfig::default())
    }

    pub fn from_file_with_config(path: impl AsRef<Path>, config: GrammarConfig) -> Result<Self, ControllerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ControllerError::Input(format!("cannot read grammar {}: {e}", path.display())))?;
        Self::with_config(&path.display().to_string(), &text, config)
    }

    /// Compiles GBNF `text`; `name` labels errors (e.g. the file name).
    pub fn with_config(name: &str, text: &str, config: GrammarConfig) -> Result<Self, ControllerError> {
        let g = gbnf::parse(text).map_err(|e| grammar_error(name, e))?;
        if !g.rules.contains_key("root") {
            return Err(grammar_error(name, "no `root` rule (the start rule)"));
        }
        let limits = &config.limits;
        let mut compiler = compile::Compiler::new(&g, limits).map_err(|e| grammar_error(name, e))?;
        let dfa = compiler
            .rule("root", limits.grammar_depth)
            .map_err(|e| grammar_error(name, e))?;
        if dfa.is_empty() {
            return Err(grammar_error(
                name,
                format!(
                    "the language is empty within nesting depth {} (is every rule able to end?)",
                    limits.grammar_depth
                ),
            ));
        }
        let recognizer = earley::Recognizer::new(&g, "root").map_err(|e| grammar_error(name, e))?;
        Ok(Grammar {
            name: name.to_string(),
            dfa,
            recognizer: std::sync::Arc::new(recognizer),
            config,
        })
    }

    /// Whether the depth-bounded automaton accepts `text`.
    pub fn accepts(&self, text: &str) -> bool {
        self.dfa.accepts(text.as_bytes())
    }

    /// Whether the grammar (no depth bound) derives `text`: the independent check.
    pub fn recognizes(&self, text: &str) -> bool {
        self.recognizer.accepts(text)
    }

    /// The depth-bounded byte automaton.
    pub fn dfa(&self) -> &Dfa {
        &self.dfa
    }
}

impl Constraint for Grammar {
    fn name(&self) -> String {
        format!("grammar {}", self.name)
    }

    fn restrictions(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<Vec<Restriction>> {
        let automaton = self
            .dfa
            .token_automaton(ctx.index, self.config.limits.grammar_token_states)
            .map_err(|e| Error::Constraint(format!("grammar {}: {e}", self.name)))?;
        Ok(vec![Restriction::Automaton(automaton)])
    }

    fn check(&self, text: &str, _ids: &[u32], _tokenizer: &TextTokenizer) -> Result<(), CheckError> {
        if self.recognizer.accepts(text) {
            Ok(())
        } else {
            Err(CheckError::new(format!(
                "{text:?} is not in the language of grammar {}",
                self.name
            )))
        }
    }
}
