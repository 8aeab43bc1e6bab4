//! # diffusion-lm-controllers
//!
//! Stock controllers for [`diffusion_lm`], in the three roles of its steering layer
//! ([`diffusion_lm::steer`]), composable in one stack.
//!
//! | controller | role | what it does |
//! | --- | --- | --- |
//! | [`Regex`] | constraint | the content fully matches a regular expression |
//! | [`Length`] | constraint | the content has an exact length, or a length in a range (tokens) |
//! | [`Infill`] | constraint | fixed text around holes, e.g. `The Eagle ___ riverside ___` |
//! | [`JsonSchema`] | constraint | the content is a JSON document valid under a JSON Schema |
//! | [`Grammar`] | constraint | the content is a sentence of a GBNF grammar |
//! | [`Attribute`] | guide | steers toward `field = value` under an attribute classifier |
//! | [`SyntaxTree`] | repair | rewrites the tokens inside tree-sitter parse errors |
//!
//! `Regex`, `Infill`, `JsonSchema` and `Grammar` all compile through one byte-DFA layer
//! ([`dfa`]: regex → byte DFA, the byte-automaton algebra, the lift to token automata). Every
//! size, state and depth limit they apply is a field of one struct, [`Limits`]; building a
//! controller fails with a [`ControllerError`].
//!
//! ```
//! use diffusion_lm::{DiffusionLm, Generator};
//! use diffusion_lm_controllers::{Length, Regex};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let samples = Generator::new(&lm)
//!     .constrain(Regex::new(r"[A-Z][a-z]+ is a [a-z ]+\.")?)
//!     .constrain(Length::between(6, 20)?)
//!     .steps(20)
//!     .seed(1)
//!     .generate(2)?;
//! for s in &samples {
//!     assert!(regex::Regex::new(r"^[A-Z][a-z]+ is a [a-z ]+\.$")?.is_match(&s.text));
//! }
//! # Ok(()) }
//! ```

pub mod attribute;
pub mod dfa;
pub mod error;
pub mod grammar;
pub mod infill;
pub mod json_schema;
pub mod length;
pub mod limits;
pub mod regex;
pub mod syntax_tree;

pub use crate::attribute::{Attribute, GuideInput};
pub use crate::error::ControllerError;
pub use crate::grammar::{Grammar, GrammarConfig};
pub use crate::infill::Infill;
pub use crate::json_schema::{JsonSchema, JsonSchemaConfig, Layout};
pub use crate::length::Length;
pub use crate::limits::Limits;
pub use crate::regex::{Regex, RegexConfig};
pub use crate::syntax_tree::SyntaxTree;

/// The engine crate, re-exported.
pub use diffusion_lm as engine;
