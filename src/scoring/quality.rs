//! Automatic proxies of text quality for `diffusion-lm eval-quality`: what a reader would flag at
//! a glance, counted per sample. They are proxies: a sentence can pass them all and still read
//! badly, which is why the protocol also has a blind reading step.
//!
//! - [`repeated_word`]: a word written twice in a row ("serves serves").
//! - [`repeats_within_sentence`]: a sentence that holds a word twice ("Alimentum is a pub near
//!   Alimentum.").
//! - [`json_leak`]: JSON punctuation inside a text meant to be a sentence.
//! - [`record_in_value_sets`]: a JSON record whose every field is an E2E field and every value is
//!   one the corpus uses for that field.
//! - [`restaurant_name`]: which restaurant a text is about, to count how many different ones a
//!   sampler writes about (a sampler can collapse onto the corpus's commonest name).
//!
//! ```
//! use diffusion_lm::scoring::quality::{json_leak, repeated_word};
//! assert!(repeated_word("It serves serves food."));
//! assert!(!repeated_word("It serves food. Food is cheap."));
//! assert!(json_leak(r#"The Eagle is a Man","eatType":"pub" near X."#));
//! assert!(!json_leak("The Eagle is a pub near Burger King."));
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::e2e::E2E_FIELDS;
use crate::scoring::classifier::{FieldSpec, NONE};

/// Whether some word directly repeats the word before it (case and punctuation ignored; a
/// sentence boundary in between does not count).
pub fn repeated_word(text: &str) -> bool {
    let mut prev: Option<String> = None;
    for raw in text.split_whitespace() {
        let word: String = raw.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if word.is_empty() {
            prev = None;
            continue;
        }
        if prev.as_deref() == Some(word.as_str()) {
            return true;
        }
        // A word ending a sentence or clause does not pair with the next one.
        prev = (!raw.ends_with(['.', ',', ';', '!', '?'])).then_some(word);
    }
    false
}

/// Whether some sentence of a prose text holds the same word of four or more letters twice
/// (case ignored; a word is a maximal run of letters): a duplicated slot such as "Alimentum is a
/// pub near Alimentum." or "near Raja Indian Cuisine near The Bakers.". Sentences end at `.`,
/// `!` or `?`. A text that begins with `{` or `[` (JSON) is not prose and never counts: a
/// record's keys and values share words ("food": "Fast food").
///
/// ```
/// use diffusion_lm::scoring::quality::repeats_within_sentence;
/// assert!(repeats_within_sentence("Alimentum is a pub near Alimentum."));
/// assert!(!repeats_within_sentence("The Eagle is a pub. The Eagle serves food."));
/// assert!(!repeats_within_sentence(r#"{"food":"Fast food"}"#));
/// ```
pub fn repeats_within_sentence(text: &str) -> bool {
    if text.trim_start().starts_with(['{', '[']) {
        return false;
    }
    text.split(['.', '!', '?']).any(|sentence| {
        let mut seen = std::collections::HashSet::new();
        sentence
            .split(|c: char| !c.is_alphabetic())
            .filter(|w| w.chars().count() >= 4)
            .any(|w| !seen.insert(w.to_lowercase()))
    })
}

/// Whether a text meant as a sentence holds JSON punctuation: a brace, a double quote, or a
/// colon right after a word or quote (`"eatType":`).
pub fn json_leak(text: &str) -> bool {
    text.contains(['{', '}', '"']) || text.contains("\":") || text.contains("\" :")
}

/// The values each E2E field takes in a corpus, keyed by the record's JSON key (`customerRating`,
/// not `customer rating`), for [`record_in_value_sets`].
#[derive(Debug, Clone, Default)]
pub struct ValueSets {
    by_key: BTreeMap<String, BTreeSet<String>>,
}

impl ValueSets {
    /// The value sets of these fields (as [`crate::e2e::e2e_fields`] lists them; `none` is left out).
    pub fn new(fields: &[FieldSpec]) -> Self {
        let by_key = fields
            .iter()
            .map(|f| {
                let key = E2E_FIELDS
                    .iter()
                    .find(|(name, _)| *name == f.name)
                    .map_or(f.name.as_str(), |(_, key)| key);
                let values = f.values.iter().filter(|v| *v != NONE).cloned().collect();
                (key.to_string(), values)
            })
            .collect();
        ValueSets { by_key }
    }
}

impl ValueSets {
    /// The values of the `name` field (the restaurants), in the corpus's order.
    pub fn names(&self) -> Vec<String> {
        self.by_key
            .get("name")
            .map_or_else(Vec::new, |v| v.iter().cloned().collect())
    }
}

/// The restaurant a text is about: a JSON record's `name` when it is one of `names`; otherwise
/// the one of `names` written first in the text (a whole-word match; the longest at that
/// position). `None` when it names none.
///
/// ```
/// use diffusion_lm::scoring::quality::restaurant_name;
/// let names = ["The Eagle".to_string(), "The Mill".to_string()];
/// assert_eq!(restaurant_name(r#"{"name":"The Mill","near":"The Eagle"}"#, &names), Some("The Mill"));
/// assert_eq!(restaurant_name("Near The Eagle is The Mill.", &names), Some("The Eagle"));
/// assert_eq!(restaurant_name("The Eagles sing.", &names), None);
/// ```
pub fn restaurant_name<'a>(text: &str, names: &'a [String]) -> Option<&'a str> {
    if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text.trim()) {
        let name = obj.get("name")?.as_str()?;
        return names.iter().find(|n| *n == name).map(String::as_str);
    }
    let word_edge = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
    let mut best: Option<(usize, &'a str)> = None;
    for name in names {
        let found = text.match_indices(name.as_str()).find(|(at, _)| {
            word_edge(text[..*at].chars().next_back()) && word_edge(text[at + name.len()..].chars().next())
        });
        if let Some((at, _)) = found {
            let better = match best {
                None => true,
                Some((b, n)) => at < b || (at == b && name.len() > n.len()),
            };
            if better {
                best = Some((at, name.as_str()));
            }
        }
    }
    best.map(|(_, n)| n)
}

/// For a text that parses as a JSON object: whether every key is a field of `sets` and every
/// value one the corpus uses for it (`familyFriendly` as `true`/`false` for `yes`/`no`). `None`
/// for a text that is not a JSON object.
///
/// ```
/// use diffusion_lm::scoring::classifier::FieldSpec;
/// use diffusion_lm::scoring::quality::{record_in_value_sets, ValueSets};
/// let field = |name: &str, values: &[&str]| FieldSpec {
///     name: name.into(),
///     values: values.iter().map(|v| v.to_string()).collect(),
/// };
/// let sets = ValueSets::new(&[field("name", &["none", "The Eagle"]), field("familyFriendly", &["none", "no", "yes"])]);
/// assert_eq!(record_in_value_sets(r#"{"name":"The Eagle","familyFriendly":true}"#, &sets), Some(true));
/// assert_eq!(record_in_value_sets(r#"{"name":"The Eagle Eagle"}"#, &sets), Some(false));
/// assert_eq!(record_in_value_sets(r#"{"colour":"red"}"#, &sets), Some(false));
/// assert_eq!(record_in_value_sets("The Eagle is a pub.", &sets), None);
/// ```
pub fn record_in_value_sets(text: &str, sets: &ValueSets) -> Option<bool> {
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text.trim()) else {
        return None;
    };
    Some(obj.iter().all(|(key, value)| {
        let Some(values) = sets.by_key.get(key) else {
            return false;
        };
        match value {
            Value::String(s) => values.contains(s),
            Value::Bool(b) => values.contains(if *b { "yes" } else { "no" }),
            _ => false,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentence_repeats_a_long_word_but_json_and_short_words_do_not() {
        use super::repeats_within_sentence as r;
        assert!(r("The Wrestlers is a pub near Raja Indian Cuisine near The Bakers."));
        assert!(r("It serves FOOD and food!"));
        assert!(!r("It is a pub and it is near a pub")); // "pub", "it", "is": under four letters
        assert!(!r("The Eagle is near. Eagle serves food."));
        assert!(!r(r#"[{"food":"Fast food"}]"#));
        assert!(!r(""));
    }

    #[test]
    fn repeats_need_adjacent_words_in_one_clause() {
        assert!(repeated_word("near near the river"));
        assert!(repeated_word("The the pub"));
        assert!(repeated_word("a pub Pub, then")); // punctuation after the second only
        assert!(!repeated_word("a pub, pub")); // a clause boundary between them
        assert!(!repeated_word("It is cheap. Cheap food."));
        assert!(!repeated_word("a b a b"));
        assert!(!repeated_word(""));
    }

    #[test]
    fn names_are_whole_words_first_in_the_text() {
        let names: Vec<String> = ["The Mill", "The Mill House", "Cotto"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            restaurant_name("The Mill House is a pub.", &names),
            Some("The Mill House")
        );
        assert_eq!(restaurant_name("Cotto is near The Mill.", &names), Some("Cotto"));
        assert_eq!(restaurant_name("Cottoo is a pub.", &names), None);
        assert_eq!(restaurant_name(r#"{"name":"Nowhere"}"#, &names), None);
        assert_eq!(restaurant_name("{not json The Mill", &names), Some("The Mill"));
    }

    #[test]
    fn leaks_are_json_punctuation() {
        assert!(json_leak("name\": \"Eagle"));
        assert!(json_leak("{ pub"));
        assert!(!json_leak("Rated 5: excellent")); // a colon alone is prose
    }
}
