//! The `SyntaxTree` controller: repair by parsing, with tree-sitter grammars.
//!
//! Where a [`Grammar`](crate::Grammar) makes syntax exact by projection, `SyntaxTree` works like
//! an editor: at chosen denoising steps it decodes the current prediction, parses it with a
//! tree-sitter grammar, and re-noises the tokens inside `ERROR` and `MISSING` nodes so the
//! denoiser rewrites them from their context. A tree-sitter query can also require structure:
//! while it has no match, the whole sequence is re-noised at the checked steps (early ones only,
//! so the final steps can settle). It is soft: outputs parse more often, not always; its
//! [`Controller::check`] accepts every output, and [`SyntaxTree::parses`] says whether one parses.
//!
//! ```
//! use diffusion_lm_controllers::SyntaxTree;
//! let json = SyntaxTree::json();
//! assert!(json.parses(r#"{"a": [1, 2]}"#));
//! assert!(!json.parses(r#"{"a": [1, 2}"#));
//! assert_eq!(json.error_ranges(r#"{"a" 1}"#).is_empty(), false);
//! let with_key = SyntaxTree::json().with_query(r#"(pair key: (string (string_content) @k (#eq? @k "name")))"#).unwrap();
//! assert!(with_key.parses(r#"{"name": "Aromi"}"#));
//! assert!(!with_key.parses(r#"{"food": "Thai"}"#));
//! ```

use diffusion_lm::controller::{Controller, RepairContext};
use diffusion_lm::TextTokenizer;
use tree_sitter::{Language, Node, Parser, Query, QueryCursor, StreamingIterator};

use crate::ControllerError;

/// Repair by parsing (see the module docs).
pub struct SyntaxTree {
    name: String,
    language: Language,
    query: Option<Query>,
    /// Parse every `every` steps.
    every: usize,
    /// Repair between these shares of the steps (the noisiest first): not before the prediction
    /// has taken shape, and not at the very end, so the repaired tokens can settle.
    from: f64,
    until: f64,
}

impl SyntaxTree {
    /// tree-sitter-json.
    pub fn json() -> Self {
        Self::new("json", tree_sitter_json::LANGUAGE.into())
    }

    /// Any tree-sitter language, e.g. `tree_sitter_python::LANGUAGE.into()`.
    pub fn new(name: &str, language: Language) -> Self {
        SyntaxTree {
            name: name.to_string(),
            language,
            query: None,
            every: 5,
            from: 0.4,
            until: 0.85,
        }
    }

    /// Requires at least one match of this tree-sitter query (S-expression syntax).
    pub fn with_query(mut self, source: &str) -> Result<Self, ControllerError> {
        let query = Query::new(&self.language, source)
            .map_err(|e| ControllerError::Input(format!("tree-sitter query for {}: {e}", self.name)))?;
        self.query = Some(query);
        Ok(self)
    }

    /// Parse every `every` steps, between shares `from` and `until` of the steps.
    pub fn schedule(mut self, every: usize, from: f64, until: f64) -> Self {
        self.every = every.max(1);
        self.from = from.clamp(0.0, 1.0);
        self.until = until.clamp(self.from, 1.0);
        self
    }

    fn parse(&self, text: &str) -> Option<tree_sitter::Tree> {
        let mut parser = Parser::new();
        parser.set_language(&self.language).ok()?;
        parser.parse(text, None)
    }

    /// Byte ranges of the `ERROR` nodes and the places of `MISSING` nodes of `text`'s parse.
    pub fn error_ranges(&self, text: &str) -> Vec<(usize, usize)> {
        let Some(tree) = self.parse(text) else {
            return vec![(0, text.len())];
        };
        let mut out = Vec::new();
        collect_errors(tree.root_node(), &mut out);
        out
    }

    /// Whether `text` parses without errors (and matches the query, if any).
    pub fn parses(&self, text: &str) -> bool {
        let Some(tree) = self.parse(text) else { return false };
        !tree.root_node().has_error() && self.query_matches(&tree, text)
    }

    fn query_matches(&self, tree: &tree_sitter::Tree, text: &str) -> bool {
        let Some(query) = &self.query else { return true };
        let mut cursor = QueryCursor::new();
        let mut matches = cursor.matches(query, tree.root_node(), text.as_bytes());
        matches.next().is_some()
    }
}

fn collect_errors(node: Node, out: &mut Vec<(usize, usize)>) {
    if node.is_error() || node.is_missing() {
        out.push((node.start_byte(), node.end_byte().max(node.start_byte() + 1)));
        return;
    }
    if !node.has_error() {
        return;
    }
    let mut cursor = node.walk();
    for child in node.children(&mut cursor) {
        collect_errors(child, out);
    }
}

impl Controller for SyntaxTree {
    fn name(&self) -> String {
        format!("syntax tree ({})", self.name)
    }

    fn repairs(&self) -> bool {
        true
    }

    fn repair(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> diffusion_lm::Result<Vec<usize>> {
        let done = ctx.num_steps - 1 - ctx.step;
        let share = done as f64 / ctx.num_steps as f64;
        if done % self.every != 0 || share < self.from || share >= self.until {
            return Ok(Vec::new());
        }
        let Some(tree) = self.parse(text) else {
            return Ok(Vec::new());
        };
        let mut errors = Vec::new();
        collect_errors(tree.root_node(), &mut errors);
        if errors.is_empty() && !self.query_matches(&tree, text) {
            // Well formed but without the required structure: rewrite it all.
            let pad = ctx.index.pad_id();
            return Ok((0..ids.len()).take_while(|&p| ids[p] != pad).collect());
        }
        let mut positions: Vec<usize> = Vec::new();
        for (start, end) in errors {
            let (a, b) = (
                ctx.position_of_byte(ids, start),
                ctx.position_of_byte(ids, end.saturating_sub(1)),
            );
            positions.extend(a..=b);
        }
        positions.sort_unstable();
        positions.dedup();
        Ok(positions)
    }

    /// Soft: the repair makes parsing likelier, not certain; see [`SyntaxTree::parses`].
    fn check(&self, _text: &str, _ids: &[u32], _tokenizer: &TextTokenizer) -> Result<(), String> {
        Ok(())
    }
}
