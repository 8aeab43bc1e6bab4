//! # diffusion-lm-controllers
//!
//! Stock controllers for [`diffusion_lm`]: hard constraints that every output satisfies exactly,
//! composable in one stack.
//!
//! | controller | constraint |
//! | --- | --- |
//! | [`Regex`] | the content fully matches a regular expression |
//! | [`Length`] | the content has an exact length, or a length in a range (tokens) |
//! | [`Infill`] | fixed text around holes, e.g. `The Eagle ___ riverside ___` |
//! | [`JsonSchema`] | the content is a JSON document valid under a JSON Schema |
//!
//! ```
//! use diffusion_lm::{DiffusionLm, Generator};
//! use diffusion_lm_controllers::{Length, Regex};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu)?;
//! let samples = Generator::new(&lm)
//!     .with(Regex::new(r"[A-Z][a-z]+ is a [a-z ]+\.")?)
//!     .with(Length::between(6, 20)?)
//!     .steps(20)
//!     .seed(1)
//!     .generate(2)?;
//! for s in &samples {
//!     assert!(regex::Regex::new(r"^[A-Z][a-z]+ is a [a-z ]+\.$")?.is_match(&s.text));
//! }
//! # Ok(()) }
//! ```

pub mod attribute;
pub mod byte_automaton;
pub mod grammar;
pub mod infill;
pub mod json_schema;
pub mod length;
pub mod regex;
pub mod syntax_tree;

pub use crate::attribute::{Attribute, GuideInput};
pub use crate::grammar::{Grammar, GrammarConfig};
pub use crate::infill::Infill;
pub use crate::json_schema::{JsonSchema, JsonSchemaConfig, Layout};
pub use crate::length::Length;
pub use crate::regex::{ControllerError, Regex, RegexConfig};
pub use crate::syntax_tree::SyntaxTree;

/// The engine crate, re-exported.
pub use diffusion_lm as engine;
