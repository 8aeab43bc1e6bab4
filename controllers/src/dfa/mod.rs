//! The byte-DFA layer: every language constraint in this crate is compiled through it.
//!
//! A constraint on text is a language over bytes; sampling needs it over tokens. This layer
//! holds the three steps every language controller ([`Regex`](crate::Regex),
//! [`JsonSchema`](crate::JsonSchema), [`Grammar`](crate::Grammar), and [`Infill`](crate::Infill)
//! through `Regex`) takes from its source to the engine:
//!
//! | step | module | what | bounded by |
//! | --- | --- | --- | --- |
//! | regex → DFA | [`regex`] | `regex-automata` dense DFA of the full matches ([`RegexDfa`]), or that as a minimal [`Dfa`] ([`regex_dfa`]) | NFA and DFA bytes, determinisation bytes; states |
//! | byte algebra | [`automaton`] | [`Dfa`] and [`Nfa`]: literals, explicit state machines, sequence, choice, repetition, products (and, or, minus, exactly one), minimisation | states per automaton |
//! | bytes → tokens | [`token`] | [`Dfa::token_automaton`], [`RegexDfa::token_automaton`]: the [`TokenAutomaton`](diffusion_lm::steer::TokenAutomaton) over a vocabulary | token-automaton states |
//!
//! The `Regex` controller lifts its [`RegexDfa`] to tokens directly. JSON Schema builds its leaves
//! as [`Dfa`]s (strings, numbers, and `pattern`/`format` regexes through [`regex_dfa`]) and
//! combines them by structure; a grammar does the same with its literals and character classes
//! (classes through [`regex_dfa`]) and its rules. Both lift the result with
//! [`Dfa::token_automaton`].
//!
//! **Costs.** Determinisation (of a regex or of an [`Nfa`]) and products can grow exponentially;
//! minimisation is O(n log n) in states × byte classes; the lift to tokens walks the vocabulary
//! trie once per reachable state. Every step therefore takes a limit (bytes or states, see
//! [`Limits`](crate::Limits) for the values each controller passes) and fails with a clear
//! error, never by exhausting memory.

pub mod automaton;
pub mod regex;
pub mod token;

pub use self::automaton::{concat, union, Dfa, Frag, Nfa, TooLarge, DEAD};
pub use self::regex::{anchored, regex_dfa, RegexDfa, RegexFailure};
