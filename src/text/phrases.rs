//! A model's phrases: the word 4-grams of its training corpus's prose, which best-of can prefer
//! ([`crate::GenerationConfig::phrases`]).
//!
//! A text is read as lowercase *words*: maximal runs of letters, digits, apostrophes, hyphens
//! and non-ASCII characters ("family-friendly", "café", "£20-25"), and every other character
//! but whitespace as a word of its own ("." and ","). The text's 4-grams run over its words with
//! three start marks before and one end mark after, so a 4-gram also fixes how a text may begin
//! and end. A prose text is *in the phrases* when every one of its 4-grams is; JSON documents
//! are not prose and always are (a text that merely starts with `{` is prose).
//!
//! Why: a small model's slips are mostly a word lost or added between stock phrases ("The
//! Punter is a family-friendly in the city centre.", "a family friendly pub is located near"),
//! and each leaves a 4-gram no corpus sentence holds; the model's own naturalness score hardly
//! tells them apart. Of the 66 free sentences of `models/e2e` read blind at seed 2, the 4-gram
//! test flagged 13 of the 19 judged ungrammatical and 1 of the 47 judged grammatical
//! (`docs/results.md`). The price is variety: a preference for texts made of the corpus's
//! phrases is a preference for its stock phrasing.
//!
//! ```
//! use diffusion_lm::text::phrases::Phrases;
//! let p = Phrases::from_texts(["The Eagle is a pub near Burger King.", "The Mill is a pub near the river."]);
//! assert!(p.covers("The Mill is a pub near Burger King."));
//! assert!(!p.covers("The Mill is a near Burger King.")); // the noun is lost
//! assert!(p.covers(r#"{"name":"The Mill"}"#)); // JSON is not prose
//! assert!(!p.covers(r#"{"name":"The Mill is a near"#)); // a broken record is
//! assert_eq!(p.unseen("The Eagle is a pub."), 2); // "is a pub .", "a pub . </s>"
//! ```
//!
//! Cost: a hash set of the corpus's distinct 4-grams (53,984 for the training split of E2E's
//! 9,365 sentences, a few MB in memory); checking a text is one lookup per word.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use crate::{Error, Result};

/// The file a checkpoint directory keeps its phrases in: one 4-gram per line, its words
/// separated by single spaces.
pub const PHRASES_FILE: &str = "phrases.txt";

/// The n of the n-grams.
const N: usize = 4;
/// Marks before the first word and after the last; no text's words hold `<` or `>`, which
/// are words of their own.
const START: &str = "<s>";
const END: &str = "</s>";

/// Whether `c` belongs to a word rather than standing alone.
fn in_word(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '-' || !c.is_ascii()
}

/// The lowercase words of `text` (see the module docs).
fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        if in_word(c) {
            cur.extend(c.to_lowercase());
            continue;
        }
        if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        if !c.is_whitespace() {
            out.push(c.to_string());
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The text's 4-grams, each as its words joined by single spaces.
fn grams(text: &str) -> Vec<String> {
    let mut w: Vec<String> = vec![START.to_string(); N - 1];
    w.extend(words(text));
    w.push(END.to_string());
    w.windows(N).map(|g| g.join(" ")).collect()
}

/// Whether `text` is a JSON document (a text that only begins like one is prose with a leak).
fn is_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '[']) && serde_json::from_str::<serde_json::Value>(text).is_ok()
}

/// The word 4-grams of a corpus's prose (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Phrases {
    grams: HashSet<String>,
}

impl Phrases {
    /// The 4-grams of the prose among `texts` (JSON documents are skipped).
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let grams = texts.into_iter().filter(|t| !is_json(t)).flat_map(grams).collect();
        Phrases { grams }
    }

    /// Reads a phrases file (one 4-gram per line; blank lines are skipped).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut grams = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            if line.split(' ').count() != N || line.split(' ').any(str::is_empty) {
                return Err(Error::Config(format!(
                    "{} line {}: {line:?} is not {N} words separated by single spaces",
                    path.display(),
                    i + 1
                )));
            }
            grams.insert(line.to_string());
        }
        Ok(Phrases { grams })
    }

    /// Writes the phrases, one 4-gram per line, sorted.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let sorted: BTreeSet<&String> = self.grams.iter().collect();
        let mut text = String::new();
        for g in sorted {
            text.push_str(g);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// The number of distinct 4-grams.
    pub fn len(&self) -> usize {
        self.grams.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.grams.is_empty()
    }

    /// How many of the 4-grams of `text` the corpus does not hold (0 for a JSON document).
    pub fn unseen(&self, text: &str) -> usize {
        if is_json(text) {
            return 0;
        }
        grams(text).iter().filter(|g| !self.grams.contains(*g)).count()
    }

    /// Whether every 4-gram of `text` is the corpus's (always for a JSON document).
    pub fn covers(&self, text: &str) -> bool {
        self.unseen(text) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_keep_hyphens_and_accents_and_split_punctuation() {
        assert_eq!(
            words("The Punter is family-friendly, near Café Sicilia (£20-25)."),
            [
                "the",
                "punter",
                "is",
                "family-friendly",
                ",",
                "near",
                "café",
                "sicilia",
                "(",
                "£20-25",
                ")",
                "."
            ]
        );
        // Start and end marks: a text of one word has four 4-grams.
        assert_eq!(grams("Hi"), ["<s> <s> <s> hi", "<s> <s> hi </s>"]);
    }

    #[test]
    fn a_lost_noun_or_a_new_ending_is_unseen_and_case_is_not() {
        let p = Phrases::from_texts(["The Wrestlers is a family friendly pub located near Raja Indian Cuisine."]);
        assert!(p.covers("the wrestlers is a family friendly pub located near raja indian cuisine."));
        assert!(!p.covers("The Wrestlers is a family friendly located near Raja Indian Cuisine."));
        assert!(!p.covers("The Wrestlers is a family friendly pub")); // ends elsewhere
        assert_eq!(
            p.unseen("The Wrestlers is a family friendly pub located near Raja Indian Cuisine."),
            0
        );
    }

    #[test]
    fn a_saved_file_loads_the_same_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PHRASES_FILE);
        let p = Phrases::from_texts(["The Eagle is a pub.", r#"{"name":"The Eagle"}"#]);
        assert_eq!(p.len(), 7); // 6 words between 3 start marks and an end mark: 7 windows
        p.save(&path).unwrap();
        assert_eq!(Phrases::load(&path).unwrap(), p);
        std::fs::write(&path, "<s> <s> <s> the\nthe eagle  is\n").unwrap();
        let err = Phrases::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("phrases.txt"), "{err}");
    }
}
