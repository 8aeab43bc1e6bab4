//! The `SyntaxTree` controller: repair by parsing, with tree-sitter grammars.
//!
//! Where a [`Grammar`](crate::Grammar) makes syntax exact by projection, `SyntaxTree` works like
//! an editor, in two phases (see [`Repair::faulty_positions`]):
//!
//! * **During sampling**, every `every` steps inside a window of the schedule, it decodes the
//!   current prediction, parses it, and re-noises the tokens inside `ERROR` and `MISSING` nodes
//!   so the denoiser rewrites them from their context.
//! * **After sampling**, the generator asks again about the finished output and *rewrites* the
//!   faulty tokens (and their neighbours) by inpainting with everything else held fixed, in up to
//!   a few rounds that start from more noise each time, keeping a rewrite only if it has fewer
//!   faults ([`diffusion_lm::Generator::rewrite`]).
//!
//! A tree-sitter query can also require structure: while the finished output has no match, every
//! position is named, so each rewrite round redraws it from more noise, and a rewrite that matches
//! is preferred to one that does not, whatever its slips (its [`Repair::fault_score`]).
//! More rounds ([`diffusion_lm::Generator::rewrite`]) find the structure more often.
//!
//! It is soft: outputs parse more often, not always. As a repair it rejects no output;
//! [`SyntaxTree::parses`] says whether one parses. For guaranteed syntax, use a
//! [`Grammar`](crate::Grammar) or a [`JsonSchema`](crate::JsonSchema).
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
//!
//! // Python, and a query for "a function named add with exactly two parameters".
//! let add = SyntaxTree::python().with_query(diffusion_lm_controllers::syntax_tree::PYTHON_ADD_TWO).unwrap();
//! assert!(add.parses("def add(a, b):\n    return a + b"));
//! assert!(!add.parses("def add(a, b, c):\n    return a + b + c"));
//! assert!(!add.parses("def sub(a, b):\n    return a - b"));
//! assert!(!SyntaxTree::python().parses("def add(a, b)\n    return a +"));
//! ```

use diffusion_lm::steer::{Repair, RepairContext, RepairPhase};
use tree_sitter::{Language, Node, Parser, Query, QueryCursor, StreamingIterator};

use crate::ControllerError;

/// A tree-sitter-python query that matches a function named `add` with exactly two plain
/// parameters (the `.` anchors pin the first and last named children of `parameters`).
pub const PYTHON_ADD_TWO: &str = r#"(function_definition
  name: (identifier) @name
  parameters: (parameters . (identifier) . (identifier) .)
  (#eq? @name "add"))"#;

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
    /// Where during sampling an unmatched query re-noises everything (shares of the steps).
    query_from: f64,
    query_until: f64,
}

impl SyntaxTree {
    /// tree-sitter-json.
    pub fn json() -> Self {
        Self::new("json", tree_sitter_json::LANGUAGE.into())
    }

    /// tree-sitter-python.
    pub fn python() -> Self {
        Self::new("python", tree_sitter_python::LANGUAGE.into())
    }

    /// The built-in languages by name: `json` or `python`.
    pub fn by_name(name: &str) -> Result<Self, ControllerError> {
        match name {
            "json" => Ok(Self::json()),
            "python" => Ok(Self::python()),
            _ => Err(ControllerError::Input(format!(
                "unknown tree-sitter language {name:?}: expected json or python"
            ))),
        }
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
            query_from: 0.0,
            query_until: 0.0,
        }
    }

    /// Requires at least one match of this tree-sitter query (S-expression syntax).
    pub fn with_query(mut self, source: &str) -> Result<Self, ControllerError> {
        let query = Query::new(&self.language, source)
            .map_err(|e| ControllerError::Input(format!("tree-sitter query for {}: {e}", self.name)))?;
        self.query = Some(query);
        Ok(self)
    }

    /// During sampling, an unmatched query re-noises everything at the checked steps between
    /// shares `from` and `until`. Off by default: measured on `models/python-toy`, it added
    /// little to the rewrite rounds and cost parse rate, because re-noised outputs have less
    /// time to settle (see `examples/syntax_tree_python.rs`).
    pub fn query_window(mut self, from: f64, until: f64) -> Self {
        self.query_from = from.clamp(0.0, 1.0);
        self.query_until = until.clamp(self.query_from, 1.0);
        self
    }

    /// Parse every `every` steps, between shares `from` and `until` of the steps (default 5,
    /// 0.4 and 0.85).
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

/// The token positions that hold the bytes of `tree`'s error nodes, sorted and deduplicated.
fn error_positions(ctx: &RepairContext, tree: &tree_sitter::Tree, ids: &[u32]) -> Vec<usize> {
    let mut errors = Vec::new();
    collect_errors(tree.root_node(), &mut errors);
    let mut positions: Vec<usize> = errors
        .into_iter()
        .flat_map(|(start, end)| ctx.position_of_byte(ids, start)..=ctx.position_of_byte(ids, end.saturating_sub(1)))
        .collect();
    positions.sort_unstable();
    positions.dedup();
    positions
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

impl Repair for SyntaxTree {
    fn name(&self) -> String {
        format!("syntax tree ({})", self.name)
    }

    fn faulty_positions(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> diffusion_lm::Result<Vec<usize>> {
        let mut repair_errors = true;
        let mut check_query = self.query.is_some();
        if ctx.phase == RepairPhase::Denoising {
            let done = ctx.num_steps - 1 - ctx.step;
            let share = done as f64 / ctx.num_steps as f64;
            if done % self.every != 0 {
                return Ok(Vec::new());
            }
            repair_errors = share >= self.from && share < self.until;
            check_query &= share >= self.query_from && share < self.query_until;
            if !repair_errors && !check_query {
                return Ok(Vec::new());
            }
        }
        let Some(tree) = self.parse(text) else {
            return Ok(Vec::new());
        };
        if check_query && !self.query_matches(&tree, text) {
            // Without the required structure (with or without errors): rewrite it all, the PAD
            // tail too, so the length may change. Naming every position also ranks this below
            // any output that matches when the generator compares rewrites.
            return Ok((0..ids.len()).collect());
        }
        if !repair_errors {
            return Ok(Vec::new());
        }
        Ok(error_positions(ctx, &tree, ids))
    }

    /// Faults, ordered: a missing query match (the sequence length) outweighs any number of
    /// positions inside parse errors (counted).
    fn fault_score(&self, ctx: &RepairContext, text: &str, ids: &[u32]) -> diffusion_lm::Result<f64> {
        let Some(tree) = self.parse(text) else {
            return Ok(0.0);
        };
        let missing = if self.query_matches(&tree, text) {
            0.0
        } else {
            ids.len() as f64
        };
        Ok(missing + error_positions(ctx, &tree, ids).len() as f64)
    }
}
