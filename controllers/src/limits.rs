//! Every size, state and depth limit of the stock controllers, in one struct: [`Limits`].
//!
//! Compiling a language constraint can cost exponential time and memory (see [`crate::dfa`]), so
//! every step is bounded, and a constraint that needs more fails with an error that names the
//! limit instead of exhausting the machine. The limits of all controllers live here, so one value
//! can be tuned once and passed to each controller's config ([`RegexConfig`](crate::RegexConfig),
//! [`JsonSchemaConfig`](crate::JsonSchemaConfig), [`GrammarConfig`](crate::GrammarConfig)); each
//! controller reads only its own fields, named by its prefix (`regex_`, `json_`, `grammar_`).
//! The defaults are what each controller was tuned with, so they differ between controllers for
//! the same kind of limit.
//!
//! | kind | `Regex` (and `Infill`) | `JsonSchema` | `Grammar` |
//! | --- | --- | --- | --- |
//! | regex DFA bytes (and its Thompson NFA) | [`regex_dfa_bytes`](Limits::regex_dfa_bytes) 64 MiB | [`json_regex_bytes`](Limits::json_regex_bytes) 8 MiB | [`grammar_class_bytes`](Limits::grammar_class_bytes) 4 MiB |
//! | regex determinisation bytes | [`regex_determinize_bytes`](Limits::regex_determinize_bytes) 64 MiB | `json_regex_bytes` | `grammar_class_bytes` |
//! | states of one byte automaton | – | [`json_states`](Limits::json_states) 100,000 | [`grammar_states`](Limits::grammar_states) 200,000 |
//! | states built in all | – | [`json_total_states`](Limits::json_total_states) 3,000,000 | – |
//! | token-automaton states | [`regex_token_states`](Limits::regex_token_states) 20,000 | [`json_token_states`](Limits::json_token_states) 100,000 | [`grammar_token_states`](Limits::grammar_token_states) 200,000 |
//! | nesting depth | – | [`json_depth`](Limits::json_depth) 6, [`json_any_depth`](Limits::json_any_depth) 3 | [`grammar_depth`](Limits::grammar_depth) 8 |
//! | counted bounds | – | [`json_max_counted`](Limits::json_max_counted) 256 | – |
//!
//! The product of all constraints' token automata, built by the engine when a stack is
//! prepared, has its own limit there ([`diffusion_lm::steer::MAX_PRODUCT_STATES`]).
//!
//! ```
//! use diffusion_lm_controllers::{Grammar, GrammarConfig, Limits};
//! let parens = r#"root ::= "(" root ")" | "x""#;
//! let ten = "((((((((((x))))))))))";
//! assert!(!Grammar::from_gbnf(parens).unwrap().accepts(ten)); // nesting depth 8 by default
//! let limits = Limits { grammar_depth: 12, ..Limits::default() };
//! let g = Grammar::with_config("parens", parens, GrammarConfig { limits }).unwrap();
//! assert!(g.accepts(ten));
//! ```

/// Size, state and depth limits of every stock controller (see the [module docs](self) for
/// the table of who reads what).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    /// `Regex`: bytes the pattern's dense DFA may occupy, and the Thompson NFA it is built from.
    pub regex_dfa_bytes: usize,
    /// `Regex`: bytes determinising the pattern may use.
    pub regex_determinize_bytes: usize,
    /// `Regex`: states of the pattern's token automaton.
    pub regex_token_states: usize,
    /// `JsonSchema`: bytes the DFA of a `pattern` or `format` regex may occupy (its Thompson NFA
    /// and determinisation too).
    pub json_regex_bytes: usize,
    /// `JsonSchema`: states any single byte automaton may have.
    pub json_states: usize,
    /// `JsonSchema`: states all byte automata built for one schema may have together (bounds the
    /// compile work).
    pub json_total_states: usize,
    /// `JsonSchema`: states of the schema's token automaton.
    pub json_token_states: usize,
    /// `JsonSchema`: deepest nesting of objects and arrays generated; recursive `$ref`s unroll
    /// this far.
    pub json_depth: usize,
    /// `JsonSchema`: deepest nesting inside values the schema leaves free (`{}`, `true`, absent
    /// `items`).
    pub json_any_depth: usize,
    /// `JsonSchema`: upper bounds on lengths, item and property counts (`maxLength`, `maxItems`,
    /// `maxProperties`) are tracked exactly up to this value; larger ones cannot be reached
    /// within a generated sequence and are left to the validator. Lower bounds are always exact.
    pub json_max_counted: usize,
    /// `Grammar`: bytes the DFA of a character class may occupy (its Thompson NFA and
    /// determinisation too).
    pub grammar_class_bytes: usize,
    /// `Grammar`: states of the automaton built for any rule.
    pub grammar_states: usize,
    /// `Grammar`: states of the grammar's token automaton.
    pub grammar_token_states: usize,
    /// `Grammar`: nesting depth of mutually recursive rules (see [`crate::grammar`]).
    pub grammar_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            regex_dfa_bytes: 64 << 20,
            regex_determinize_bytes: 64 << 20,
            regex_token_states: 20_000,
            json_regex_bytes: 8 << 20,
            json_states: 100_000,
            json_total_states: 3_000_000,
            json_token_states: 100_000,
            json_depth: 6,
            json_any_depth: 3,
            json_max_counted: 256,
            grammar_class_bytes: 4 << 20,
            grammar_states: 200_000,
            grammar_token_states: 200_000,
            grammar_depth: 8,
        }
    }
}
