//! Regular expression → byte automaton, under size limits.
//!
//! A pattern (Rust `regex` syntax, Unicode-aware) is compiled with `regex-automata` into an
//! anchored dense DFA of `^(?:pattern)$` with match kind *all*, so no alternative is cut short
//! and the DFA accepts exactly the texts the pattern fully matches. Unicode classes are compiled
//! to UTF-8 byte sequences, so the automaton runs over bytes like every other one in this crate.
//!
//! **Costs and limits.** Dense DFAs can blow up exponentially (`[ab]*a[ab]{20}`), and Unicode
//! classes are costly: `\p{L}` alone is hundreds of byte ranges, and a counted repetition copies
//! it once per count. Three limits bound the work, each failing with a clear error (the whole
//! cause chain) instead of exhausting the machine:
//!
//! * the Thompson NFA the DFA is built from may occupy at most `dfa_bytes` (without it,
//!   `\p{L}{300}{300}` would spend most of a minute building 90,000 copies of a Unicode class
//!   before the DFA limits are ever checked);
//! * the dense DFA may occupy at most `dfa_bytes`;
//! * determinisation may use at most `determinize_bytes`.
//!
//! The result is a [`RegexDfa`]. The `Regex` controller lifts it to tokens directly
//! ([`RegexDfa::token_automaton`]); JSON Schema and grammars convert it to a minimal [`Dfa`]
//! ([`regex_dfa`], bounded by a state limit) to combine it with their other automata.
//!
//! ```
//! use diffusion_lm_controllers::dfa::{regex_dfa, RegexDfa, RegexFailure};
//! let date = regex_dfa("[0-9]{4}-[0-9]{2}", 1 << 20, 1_000).unwrap();
//! assert!(date.accepts(b"2024-05") && !date.accepts(b"2024-5"));
//! // Look-around is not regular; a blow-up past the byte limits is an error too.
//! assert!(matches!(regex_dfa("(?=a)", 1 << 20, 1_000), Err(RegexFailure::Build(_))));
//! assert!(RegexDfa::new("[ab]*a[ab]{20}", 10_000, 10_000).is_err());
//! // Past the state limit of the byte automaton.
//! assert!(matches!(regex_dfa("[0-9]{50}", 1 << 20, 10), Err(RegexFailure::TooLarge(10))));
//! ```

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};

use super::Dfa;
use crate::error::error_chain;

/// The anchored dense DFA of `^(?:pattern)$`, with its start state.
#[derive(Clone, Debug)]
pub struct RegexDfa {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
}

impl RegexDfa {
    /// Compiles `pattern` to the DFA of the texts it fully matches. The Thompson NFA and the DFA
    /// may occupy at most `dfa_bytes` each, determinisation at most `determinize_bytes`. The
    /// error is a syntax error, a pattern that cannot be anchored ([`anchored`]) or an exceeded
    /// limit, with its underlying causes.
    pub fn new(pattern: &str, dfa_bytes: usize, determinize_bytes: usize) -> Result<Self, String> {
        let anchored = anchored(pattern)?;
        let dfa = dense::Builder::new()
            // The NFA is bounded too: `\p{L}{300}{300}` would otherwise spend most of a minute
            // building 90,000 copies of a Unicode class before the DFA limits are ever checked.
            .thompson(thompson::Config::new().nfa_size_limit(Some(dfa_bytes)))
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Anchored)
                    .dfa_size_limit(Some(dfa_bytes))
                    .determinize_size_limit(Some(determinize_bytes)),
            )
            .build(&anchored)
            .map_err(|e| error_chain(&e))?;
        let start = dfa
            .start_state(&start::Config::new().anchored(Anchored::Yes))
            .map_err(|e| format!("no anchored start state: {e}"))?;
        Ok(RegexDfa { dfa, start })
    }

    /// The start state.
    pub fn start(&self) -> StateID {
        self.start
    }

    /// The state after byte `b` from `s`; `None` once no text continuing this way can match.
    #[inline]
    pub fn next(&self, s: StateID, b: u8) -> Option<StateID> {
        let n = self.dfa.next_state(s, b);
        (!self.dfa.is_dead_state(n) && !self.dfa.is_quit_state(n)).then_some(n)
    }

    /// Whether the text read so far, ending in state `s`, fully matches.
    #[inline]
    pub fn is_accepting(&self, s: StateID) -> bool {
        self.dfa.is_match_state(self.dfa.next_eoi_state(s))
    }

    /// Whether `bytes` fully match.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        let mut s = self.start;
        for &b in bytes {
            match self.next(s, b) {
                Some(n) => s = n,
                None => return false,
            }
        }
        self.is_accepting(s)
    }

    /// The same language as a minimal [`Dfa`] of at most `limit` states (counted before
    /// minimisation), so it can be combined with other byte automata.
    pub fn to_dfa(&self, limit: usize) -> Result<Dfa, super::TooLarge> {
        Dfa::from_fn(self.start, |&s, b| self.next(s, b), |&s| self.is_accepting(s), limit).map(|d| d.minimize())
    }
}

/// Why a regular expression could not be turned into a [`Dfa`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegexFailure {
    /// [`RegexDfa::new`] failed: a syntax error, a pattern that cannot be anchored, or an
    /// exceeded byte limit; the message has the whole cause chain.
    Build(String),
    /// The byte automaton needs more than this many states.
    TooLarge(usize),
}

/// The minimal [`Dfa`] of the texts `pattern` fully matches: the regex-automata DFA and its NFA
/// bounded by `dfa_bytes` (determinisation too), the byte automaton by `limit` states.
pub fn regex_dfa(pattern: &str, dfa_bytes: usize, limit: usize) -> Result<Dfa, RegexFailure> {
    RegexDfa::new(pattern, dfa_bytes, dfa_bytes)
        .map_err(RegexFailure::Build)?
        .to_dfa(limit)
        .map_err(|e| RegexFailure::TooLarge(e.limit))
}

/// `^(?:pattern)$`, checked to mean exactly "the whole text matches `pattern`".
///
/// The pattern is parsed on its own first: wrapped, `a)|(b` would parse as a different pattern,
/// and a syntax error would point into text the user did not write. Then the wrapped text must
/// parse to the pattern between two anchors; in verbose mode (`(?x)`) a trailing `#` comment
/// would swallow the closing `)$`, so a line end is put before it in that case.
pub fn anchored(pattern: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchoring_keeps_the_meaning() {
        assert_eq!(anchored("a|b").unwrap(), "^(?:a|b)$");
        assert!(anchored("a)|(b").is_err());
        assert_eq!(anchored("(?x) a # c").unwrap(), "^(?:(?x) a # c\n)$");
    }

    #[test]
    fn regex_dfa_agrees_with_the_dense_dfa() {
        let re = RegexDfa::new(r"(ab|a)c*|é+", 1 << 20, 1 << 20).unwrap();
        let d = re.to_dfa(1_000).unwrap();
        for w in ["ab", "a", "abccc", "ac", "", "b", "éé", "é", "abé"] {
            assert_eq!(d.accepts(w.as_bytes()), re.accepts(w.as_bytes()), "{w:?}");
        }
        assert!(d.accepts(b"abcc") && !d.accepts(b"abd"));
    }

    #[test]
    fn nfa_limit_stops_unicode_blow_up_early() {
        let t = std::time::Instant::now();
        let e = RegexDfa::new(r"\p{L}{300}{300}", 1 << 20, 1 << 20).unwrap_err();
        assert!(e.contains("exceed"), "{e}");
        assert!(t.elapsed().as_secs() < 10);
    }
}
