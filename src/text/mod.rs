//! Text in and out: the tokenizer and the corpus readers.

pub mod corpus;
pub mod tokenizer;

pub use tokenizer::TextTokenizer;
