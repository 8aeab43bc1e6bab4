//! The steering layer: how a generation is controlled, independent of the engine that samples.
//!
//! | piece | module |
//! | --- | --- |
//! | the three roles: [`Constraint`], [`Guide`], [`Repair`] | [`roles`] |
//! | composing them: [`Stack`], [`PreparedStack`] | [`stack`] |
//! | the vocabulary's byte trie, shared by every constraint | [`token_index`] |
//! | token automata (grouped transitions, intersection) | [`automaton`] |
//! | the exact distribution of accepted sequences (sample, marginals) | [`lattice`] |
//! | exact projection of token scores onto a constraint set | [`projection`] |
//!
//! A constraint sees only the tokenizer, the token index and the sequence length; the engine
//! hands its own per-position token scores to [`projection`], so the same constraints serve any
//! engine that scores tokens.

pub mod automaton;
pub mod lattice;
pub mod projection;
pub mod roles;
pub mod stack;
pub mod token_index;

pub use automaton::TokenAutomaton;
pub use roles::{
    CheckError, Constraint, ConstraintContext, Guide, GuideContext, GuideInput, Repair, RepairContext, RepairPhase,
    Restriction, UnaryConstraint,
};
pub use stack::{PreparedStack, Stack, MAX_PRODUCT_STATES};
pub use token_index::TokenIndex;
