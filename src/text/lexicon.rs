//! A model's lexicon: the words of its training corpus, and the token automaton that keeps a
//! text to them.
//!
//! A *word* here is a maximal run of letters, where a letter is an ASCII letter or any
//! non-ASCII character (the automaton reads bytes), so "Café" is one word and so is "£";
//! everything else (spaces, digits, punctuation, JSON
//! syntax) separates words and is free. A text is *in the lexicon* when each of its words is a
//! corpus word, or a corpus word with its first letter capitalised (a sentence may begin with
//! any word).
//!
//! Why: a hard constraint can forbid the word boundary a small model meant to write. Under
//! `[A-Z][a-z]+ is a pub near ...` a model that began "The" must finish the one-word name with
//! sub-word pieces ("Theut", "Midsummeres"): every token is allowed, and the blend is a word
//! no corpus holds. Intersected with the constraints, the lexicon's automaton leaves only
//! sequences whose words the model has read.
//!
//! ```
//! use diffusion_lm::text::lexicon::Lexicon;
//! let lex = Lexicon::from_texts(["The Eagle is a pub.", r#"{"name":"Cotto"}"#]);
//! assert!(lex.accepts("Cotto is a pub, The Eagle a name."));
//! assert!(lex.accepts("Pub is a name")); // a corpus word capitalised
//! assert!(!lex.accepts("Theut is a pub."));
//! assert!(!lex.accepts("Cotto is near The Eagle.")); // "near" is not in this corpus
//! assert_eq!(lex.len(), 7); // The, Eagle, is, a, pub, name, Cotto
//! ```
//!
//! Cost: the byte automaton has one state per trie node of the words (about the corpus's
//! letters in distinct words: 10,000 for E2E); lifted to tokens, only the nodes a token can end
//! on are states. Intersecting it with a constraint costs the product's reachable states, which
//! [`crate::steer::stack::MAX_PRODUCT_STATES`] bounds.

use std::collections::BTreeSet;
use std::path::Path;

use crate::steer::automaton::TokenAutomaton;
use crate::steer::token_index::TokenIndex;
use crate::{Error, Result};

/// The file a checkpoint directory keeps its lexicon in: one word per line.
pub const LEXICON_FILE: &str = "lexicon.txt";

/// Whether `b` is part of a word: an ASCII letter or a byte of a non-ASCII character.
fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b >= 0x80
}

/// The words of a corpus (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lexicon {
    words: BTreeSet<String>,
}

impl Lexicon {
    /// The words of `texts`.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Self {
        let mut words = BTreeSet::new();
        for t in texts {
            for w in t.split(|c: char| !(c.is_ascii_alphabetic() || !c.is_ascii())) {
                if !w.is_empty() && !words.contains(w) {
                    words.insert(w.to_string());
                }
            }
        }
        Lexicon { words }
    }

    /// Reads a lexicon file (one word per line; blank lines are skipped).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut words = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let w = line.trim();
            if w.is_empty() {
                continue;
            }
            if !w.bytes().all(is_letter) {
                return Err(Error::Config(format!(
                    "{} line {}: {w:?} is not a word (letters only)",
                    path.display(),
                    i + 1
                )));
            }
            words.insert(w.to_string());
        }
        Ok(Lexicon { words })
    }

    /// Writes the lexicon, one word per line, sorted.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut text = String::new();
        for w in &self.words {
            text.push_str(w);
            text.push('\n');
        }
        std::fs::write(path, text).map_err(|e| Error::io(path, e))
    }

    /// The number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether it holds no word.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether every word of `text` is in the lexicon (or is a word of it capitalised).
    pub fn accepts(&self, text: &str) -> bool {
        let trie = Trie::new(self);
        let mut s = Trie::BETWEEN;
        for b in text.bytes() {
            match trie.step(s, b) {
                Some(n) => s = n,
                None => return false,
            }
        }
        trie.accepting(s)
    }

    /// The token automaton of the texts in the lexicon (any length, any separators). Fails
    /// past `max_states` states.
    pub fn automaton(&self, index: &TokenIndex, max_states: usize) -> Result<TokenAutomaton> {
        let trie = Trie::new(self);
        TokenAutomaton::from_byte_automaton(
            index,
            Trie::BETWEEN,
            |s, b| trie.step(s, b),
            |s| trie.accepting(s),
            max_states,
        )
    }
}

/// The byte automaton: node 0 is "between words" (and the root of the words' trie); a letter
/// walks the trie, and a separator may follow only a node that ends a word.
struct Trie {
    /// Per node, its children by byte (few per node: a linear scan beats hashing).
    children: Vec<Vec<(u8, u32)>>,
    ends: Vec<bool>,
}

impl Trie {
    const BETWEEN: u32 = 0;

    fn new(lex: &Lexicon) -> Self {
        let mut trie = Trie {
            children: vec![Vec::new()],
            ends: vec![false],
        };
        for w in &lex.words {
            trie.insert(w.as_bytes());
            let mut chars = w.chars();
            if let Some(first) = chars.next().filter(char::is_ascii_lowercase) {
                let capital: String = std::iter::once(first.to_ascii_uppercase()).chain(chars).collect();
                trie.insert(capital.as_bytes());
            }
        }
        trie
    }

    fn child(&self, n: u32, b: u8) -> Option<u32> {
        self.children[n as usize].iter().find(|c| c.0 == b).map(|c| c.1)
    }

    fn insert(&mut self, word: &[u8]) {
        let mut n = Self::BETWEEN;
        for &b in word {
            n = match self.child(n, b) {
                Some(c) => c,
                None => {
                    let c = self.ends.len() as u32;
                    self.children[n as usize].push((b, c));
                    self.children.push(Vec::new());
                    self.ends.push(false);
                    c
                }
            };
        }
        self.ends[n as usize] = true;
    }

    fn step(&self, s: u32, b: u8) -> Option<u32> {
        if is_letter(b) {
            self.child(s, b)
        } else if s == Self::BETWEEN || self.ends[s as usize] {
            Some(Self::BETWEEN)
        } else {
            None
        }
    }

    fn accepting(&self, s: u32) -> bool {
        s == Self::BETWEEN || self.ends[s as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::Lexicon;

    #[test]
    fn words_are_letter_runs_and_separators_are_free() {
        let lex = Lexicon::from_texts(["Café Sicilia: £20-25, children's"]);
        assert_eq!(
            lex.words.iter().map(String::as_str).collect::<Vec<_>>(),
            ["Café", "Sicilia", "children", "s", "£"],
            "a non-ASCII character counts as a letter"
        );
        assert!(lex.accepts("Sicilia's Café, £30 - children!"));
        assert!(lex.accepts("Children"), "a capitalised word");
        assert!(!lex.accepts("CAFÉ"));
        assert!(!lex.accepts("Caf"), "a prefix is not a word");
        assert!(!lex.accepts("Cafés"), "nor a word with more letters");
        assert!(lex.accepts(""));
    }

    #[test]
    fn the_token_automaton_accepts_what_the_lexicon_accepts_and_a_budget_bounds_a_product() {
        use crate::steer::automaton::TokenAutomaton;
        use crate::steer::token_index::TokenIndex;
        let corpus = ["the cat sat on the mat", "a dog ran in the park"];
        let tok = crate::TextTokenizer::train(corpus.iter().cycle().take(20).copied(), 300).unwrap();
        let index = TokenIndex::new(&tok);
        let lex = Lexicon::from_texts(["the cat sat on the mat"]);
        let words = lex.automaton(&index, 10_000).unwrap();
        for text in ["the cat sat", "The mat", "the dog", "thecat", "a cat", "cat, mat."] {
            let ids = tok.encode(text).unwrap();
            assert_eq!(words.accepts(&ids), lex.accepts(text), "{text:?}");
        }
        // Lowercase letters and spaces only, intersected with the lexicon.
        let lower = TokenAutomaton::from_byte_automaton(
            &index,
            0u8,
            |_, b| (b.is_ascii_lowercase() || b == b' ').then_some(0),
            |_| true,
            10,
        )
        .unwrap();
        let v = tok.vocab_size();
        assert!(
            words.intersect_within(&lower, v, 10_000, 0).unwrap().is_none(),
            "over the budget"
        );
        let both = words.intersect_within(&lower, v, 10_000, usize::MAX).unwrap().unwrap();
        for (text, ok) in [("the cat sat", true), ("The cat", false), ("the dog", false)] {
            assert_eq!(both.accepts(&tok.encode(text).unwrap()), ok, "{text:?}");
        }
    }

    #[test]
    fn a_saved_lexicon_loads_the_same_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lexicon.txt");
        let lex = Lexicon::from_texts(["the cat sat", "a dog"]);
        lex.save(&path).unwrap();
        assert_eq!(Lexicon::load(&path).unwrap(), lex);
        std::fs::write(&path, "cat\nhot dog\n").unwrap();
        let err = Lexicon::load(&path).unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("hot dog"), "{err}");
    }
}
