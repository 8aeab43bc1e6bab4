//! Byte automata lifted to token automata, the form the engine's projection works with.
//!
//! Both kinds of byte automaton in this layer, a [`Dfa`] and a [`RegexDfa`], become a
//! [`TokenAutomaton`] over a vocabulary through the engine's shared token index
//! ([`TokenAutomaton::from_byte_automaton`]): from each state reached so far, the vocabulary
//! trie is walked through the byte automaton, giving the state after each token's bytes.
//!
//! **Cost.** One trie walk per reachable token-level state, each touching the trie nodes whose
//! bytes the automaton can read from that state: free-text states visit most of the vocabulary,
//! tightly constrained ones a few nodes. The number of states is bounded by `max_states`; past
//! it the lift fails with an error that says so.

use diffusion_lm::steer::{TokenAutomaton, TokenIndex};

use super::{Dfa, RegexDfa, DEAD};

impl Dfa {
    /// The token automaton over `index`'s vocabulary that accepts exactly the token sequences
    /// whose bytes this DFA accepts (at most `max_states` states).
    pub fn token_automaton(&self, index: &TokenIndex, max_states: usize) -> diffusion_lm::Result<TokenAutomaton> {
        TokenAutomaton::from_byte_automaton(
            index,
            0u32,
            |s, b| {
                let n = self.next(s, b);
                (n != DEAD).then_some(n)
            },
            |s| self.is_accepting(s),
            max_states,
        )
    }
}

impl RegexDfa {
    /// The token automaton over `index`'s vocabulary that accepts exactly the token sequences
    /// whose text the pattern fully matches (at most `max_states` states).
    pub fn token_automaton(&self, index: &TokenIndex, max_states: usize) -> diffusion_lm::Result<TokenAutomaton> {
        TokenAutomaton::from_byte_automaton(
            index,
            self.start(),
            |s, b| self.next(s, b),
            |s| self.is_accepting(s),
            max_states,
        )
    }
}
