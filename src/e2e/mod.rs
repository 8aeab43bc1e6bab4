//! What is specific to the E2E dataset (restaurant descriptions with meaning representations)
//! and its evaluation protocols: the CSV reader, the fields and their JSON rendering,
//! relexicalization for classifier training, the classifier's field specs, and the checks that
//! a text expresses a `field = value` target.
//!
//! The E2E dataset pairs a *meaning representation* (MR) such as
//! `name[The Eagle], eatType[coffee shop], familyFriendly[yes]` with a human sentence. The E2E
//! reader yields the sentences and, optionally, each MR rendered as a compact JSON record
//! (`{"name":"The Eagle","eatType":"coffee shop","familyFriendly":true}`) so that a model trained
//! on it also speaks E2E-style JSON.
//!
//! ```
//! use diffusion_lm::e2e::MeaningRepresentation;
//! let mr = MeaningRepresentation::parse("name[The Eagle], customer rating[high], familyFriendly[no]").unwrap();
//! assert_eq!(mr.get("customer rating"), Some("high"));
//! assert_eq!(mr.to_json(), r#"{"name":"The Eagle","customerRating":"high","familyFriendly":false}"#);
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::scoring::classifier::{FieldSpec, NONE};
use crate::text::corpus::{non_empty, Example, Labels};
use crate::{Error, Result};

/// The E2E fields in their canonical order, with the JSON key each is rendered under.
pub const E2E_FIELDS: [(&str, &str); 8] = [
    ("name", "name"),
    ("eatType", "eatType"),
    ("food", "food"),
    ("priceRange", "priceRange"),
    ("customer rating", "customerRating"),
    ("area", "area"),
    ("familyFriendly", "familyFriendly"),
    ("near", "near"),
];

/// An E2E meaning representation: field/value pairs in the order they were written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeaningRepresentation {
    /// `(field, value)` pairs in the order written.
    pub fields: Vec<(String, String)>,
}

impl From<MeaningRepresentation> for Labels {
    fn from(mr: MeaningRepresentation) -> Self {
        Labels { fields: mr.fields }
    }
}

impl From<Labels> for MeaningRepresentation {
    fn from(labels: Labels) -> Self {
        MeaningRepresentation { fields: labels.fields }
    }
}

impl MeaningRepresentation {
    /// Parses `field[value], field[value], ...`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let mut fields = Vec::new();
        let mut rest = s.trim();
        while !rest.is_empty() {
            let open = rest
                .find('[')
                .ok_or_else(|| format!("expected `field[value]` at {rest:?}"))?;
            let close = rest[open..]
                .find(']')
                .map(|c| c + open)
                .ok_or_else(|| format!("unclosed `[` in {rest:?}"))?;
            let key = rest[..open].trim().trim_start_matches(',').trim();
            if key.is_empty() {
                return Err(format!("empty field name before {:?}", &rest[open..]));
            }
            let value = rest[open + 1..close].trim();
            if value.contains('[') {
                return Err(format!("unclosed `[` after field {key:?}"));
            }
            fields.push((key.to_string(), value.to_string()));
            rest = rest[close + 1..].trim_start_matches([',', ' ']);
        }
        if fields.is_empty() {
            return Err("empty meaning representation".into());
        }
        Ok(MeaningRepresentation { fields })
    }

    /// The value of `field`, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str())
    }

    /// Renders the record as compact JSON, fields in the canonical E2E order
    /// (`familyFriendly` as a boolean; unknown fields after the known ones).
    pub fn to_json(&self) -> String {
        use serde_json::Value;
        let known = E2E_FIELDS
            .iter()
            .filter_map(|(field, key)| self.get(field).map(|v| (*field, *key, v)));
        let unknown = self
            .fields
            .iter()
            .filter(|(k, _)| !E2E_FIELDS.iter().any(|(f, _)| f == k))
            .map(|(k, v)| ("", k.as_str(), v.as_str()));
        let parts: Vec<String> = known
            .chain(unknown)
            .map(|(field, key, v)| {
                let value = match (field, v) {
                    ("familyFriendly", "yes") => Value::Bool(true),
                    ("familyFriendly", "no") => Value::Bool(false),
                    _ => Value::String(v.to_string()),
                };
                format!("{}:{}", Value::String(key.to_string()), value)
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    }
}

/// Which parts of an E2E CSV become examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E2eOptions {
    /// One example per human sentence (`ref` column).
    pub sentences: bool,
    /// One example per row with the MR rendered as a JSON record.
    pub json_records: bool,
}

impl Default for E2eOptions {
    fn default() -> Self {
        E2eOptions {
            sentences: true,
            json_records: true,
        }
    }
}

/// Reads an E2E CSV with columns `mr` and `ref`.
pub fn read_e2e_csv(path: impl AsRef<Path>, opts: E2eOptions) -> Result<Vec<Example>> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut reader = csv::Reader::from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| Error::corpus(path, format!("unreadable CSV header: {e}")))?
        .clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| Error::corpus(path, format!("no `{name}` column (columns: {:?})", headers)))
    };
    let (mr_col, ref_col) = (col("mr")?, col("ref")?);
    let mut out = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| Error::corpus(path, format!("row at line {line}: {e}")))?;
        let (Some(mr), Some(sentence)) = (record.get(mr_col), record.get(ref_col)) else {
            return Err(Error::corpus(path, format!("row at line {line} has too few columns")));
        };
        let mr = MeaningRepresentation::parse(mr)
            .map_err(|e| Error::corpus(path, format!("line {line}: bad meaning representation: {e}")))?;
        if opts.sentences && !sentence.trim().is_empty() {
            out.push(Example {
                text: sentence.trim().to_string(),
                labels: Some(mr.clone().into()),
            });
        }
        if opts.json_records {
            out.push(Example {
                text: mr.to_json(),
                labels: Some(mr.into()),
            });
        }
    }
    non_empty(path, out)
}

/// The E2E fields whose values the human sentences write out verbatim (names always, `near`
/// values 99% of the time, foods 80%), so swapping the string swaps the meaning.
pub const VERBATIM_FIELDS: [&str; 3] = ["name", "near", "food"];

/// Relexicalized copies of E2E examples: in each copy, the value of every field in `fields`
/// that the text writes verbatim is replaced, in the text and in the meaning representation, by
/// another value of that field drawn uniformly from those seen in `examples`.
///
/// Why: the E2E data ties values together (every row with `near[Avalon]` is about
/// `name[The Cricketers]`), so a classifier trained on it learns to read `near = Avalon` from the
/// name, and guidance towards Avalon writes "The Cricketers" instead. In the copies the values
/// are independent and every value is equally frequent, so a classifier must read the value's
/// own words. Other values of the record written in the text are kept as they are, matched
/// longest first, so food `Indian` inside `Raja Indian Cuisine` is left alone.
///
/// Returns `copies` new examples per example with a meaning representation and at least one
/// swappable value (examples without one are not copied); deterministic for a `seed`.
///
/// ```
/// use diffusion_lm::e2e::{relexicalize, MeaningRepresentation};
/// use diffusion_lm::text::corpus::Example;
/// let ex = |mr: &str, text: &str| Example {
///     text: text.into(),
///     labels: Some(MeaningRepresentation::parse(mr).unwrap().into()),
/// };
/// let corpus = vec![
///     ex("name[The Cricketers], near[Avalon]", "The Cricketers is near Avalon."),
///     ex("name[Cotto], near[Café Rouge]", "Cotto is by Café Rouge."),
/// ];
/// let copies = relexicalize(&corpus, &["name", "near"], 1, 0);
/// assert_eq!(copies[0].text, "Cotto is near Café Rouge.");
/// assert_eq!(copies[0].labels.as_ref().unwrap().get("near"), Some("Café Rouge"));
/// ```
pub fn relexicalize(examples: &[Example], fields: &[&str], copies: usize, seed: u64) -> Vec<Example> {
    use rand::{Rng, SeedableRng};
    let pools: Vec<Vec<&str>> = fields
        .iter()
        .map(|field| {
            let mut values: Vec<&str> = examples.iter().filter_map(|e| e.labels.as_ref()?.get(field)).collect();
            values.sort_unstable();
            values.dedup();
            values
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    for example in examples {
        let Some(mr) = &example.labels else { continue };
        // Every value of the record the text writes, longest first.
        let mut written: Vec<(&str, &str)> = mr
            .fields
            .iter()
            .filter(|(_, v)| !v.is_empty() && example.text.contains(v.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        written.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let swappable: Vec<usize> = (0..fields.len())
            .filter(|&i| pools[i].len() > 1 && written.iter().any(|(k, _)| *k == fields[i]))
            .collect();
        if swappable.is_empty() {
            continue;
        }
        for _ in 0..copies {
            let mut new_mr = mr.clone();
            let mut replacement: Vec<(&str, &str)> = Vec::new();
            for &i in &swappable {
                let old = mr.get(fields[i]).unwrap_or_default();
                let others: Vec<&str> = pools[i].iter().copied().filter(|v| *v != old).collect();
                let new = others[rng.gen_range(0..others.len())];
                replacement.push((old, new));
                for (k, v) in new_mr.fields.iter_mut() {
                    if k == fields[i] {
                        *v = new.to_string();
                    }
                }
            }
            let mut text = String::with_capacity(example.text.len() + 16);
            let mut rest = example.text.as_str();
            while let Some(c) = rest.chars().next() {
                match written.iter().find(|(_, v)| rest.starts_with(v)) {
                    Some((_, v)) => {
                        let to = replacement.iter().find(|(old, _)| old == v).map_or(*v, |(_, new)| *new);
                        text.push_str(to);
                        rest = &rest[v.len()..];
                    }
                    None => {
                        text.push(c);
                        rest = &rest[c.len_utf8()..];
                    }
                }
            }
            out.push(Example {
                text,
                labels: Some(new_mr),
            });
        }
    }
    out
}

/// The corpus files of the E2E dataset in `data_dir` (the repository ships them in `data/e2e`).
pub fn e2e_files(data_dir: &Path) -> Vec<PathBuf> {
    vec![data_dir.join("devset.csv"), data_dir.join("testset_w_refs.csv")]
}

/// The field specs of the E2E examples: every E2E field, with `none` and each value seen
/// (sorted, so the class order does not depend on the corpus order).
pub fn e2e_fields(examples: &[Example]) -> Vec<FieldSpec> {
    E2E_FIELDS
        .iter()
        .map(|(field, _)| {
            let mut values: Vec<String> = examples
                .iter()
                .filter_map(|e| e.labels.as_ref()?.get(field).map(str::to_string))
                .collect();
            values.sort();
            values.dedup();
            values.retain(|v| v != NONE);
            let mut all = vec![NONE.to_string()];
            all.extend(values);
            FieldSpec {
                name: field.to_string(),
                values: all,
            }
        })
        .collect()
}

/// The paper's semantic-content criterion: the value string occurs in the text. For
/// `familyFriendly` (values `yes`/`no`, which never occur as such) its usual surface forms count.
///
/// ```
/// use diffusion_lm::e2e::attribute_mentioned;
/// assert!(attribute_mentioned("Zizzi serves Italian food.", "food", "Italian"));
/// assert!(attribute_mentioned("A kid friendly pub.", "familyFriendly", "yes"));
/// assert!(!attribute_mentioned("A pub.", "food", "Italian"));
/// ```
pub fn attribute_mentioned(text: &str, field: &str, value: &str) -> bool {
    if field == "familyFriendly" {
        return family_friendly(text) == Some(value == "yes");
    }
    text.contains(value)
}

/// A field-aware check that the text *expresses* `field = value`: for a JSON record, the field
/// holds the value; for a sentence, the value occurs in the role of that field (`near X` for
/// `near`, `X` not after `near` for `name`; prices and ratings next to a word of their kind where
/// the value alone is ambiguous, e.g. `high`; family-friendliness with its negation).
///
/// ```
/// use diffusion_lm::e2e::attribute_expressed;
/// assert!(attribute_expressed(r#"{"name":"Aromi","food":"Italian"}"#, "food", "Italian"));
/// assert!(!attribute_expressed(r#"{"name":"Aromi","near":"Italian"}"#, "food", "Italian"));
/// assert!(attribute_expressed("The Eagle is near Burger King.", "near", "Burger King"));
/// assert!(!attribute_expressed("The Eagle is near Burger King.", "name", "Burger King"));
/// assert!(attribute_expressed("It has a high customer rating.", "customer rating", "high"));
/// assert!(!attribute_expressed("It has a high customer rating.", "priceRange", "high"));
/// assert!(attribute_expressed("It is not family-friendly.", "familyFriendly", "no"));
/// ```
pub fn attribute_expressed(text: &str, field: &str, value: &str) -> bool {
    if let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        let key = E2E_FIELDS.iter().find(|(f, _)| *f == field).map_or(field, |(_, k)| k);
        return match (field, obj.get(key)) {
            ("familyFriendly", Some(serde_json::Value::Bool(b))) => *b == (value == "yes"),
            (_, Some(serde_json::Value::String(s))) => s == value,
            _ => false,
        };
    }
    let lower = text.to_lowercase();
    let v = value.to_lowercase();
    match field {
        "familyFriendly" => family_friendly(text) == Some(value == "yes"),
        "near" => ["near ", "next to ", "close to ", "by "]
            .iter()
            .any(|p| lower.contains(&format!("{p}{v}"))),
        "name" => lower.match_indices(&v).any(|(i, _)| {
            let before = lower[..i].trim_end();
            !["near", "to", "by"].iter().any(|w| before.ends_with(w))
        }),
        "priceRange" if matches!(value, "high" | "moderate" | "cheap") => {
            (lower.contains(&v) && (lower.contains("pric") || lower.contains("cost") || value == "cheap"))
                || (value == "high" && lower.contains("expensive"))
        }
        "customer rating" if matches!(value, "high" | "low" | "average") => lower.contains(&v) && lower.contains("rat"),
        _ => lower.contains(&v),
    }
}

/// Whether a sentence says the place is family-friendly (`Some(true)`), not (`Some(false)`), or
/// does not say (`None`).
fn family_friendly(text: &str) -> Option<bool> {
    let lower = text.to_lowercase();
    if lower.contains("\"familyfriendly\":true") {
        return Some(true);
    }
    if lower.contains("\"familyfriendly\":false") {
        return Some(false);
    }
    let negative = [
        "not family",
        "not a family",
        "not kid",
        "not child",
        "non family",
        "non-family",
        "isn't family",
        "no kids",
        "no children",
        "adults only",
        "adult only",
        "not for famil",
        "not suitable for",
    ];
    if negative.iter().any(|n| lower.contains(n)) {
        return Some(false);
    }
    let positive = [
        "family friendly",
        "family-friendly",
        "kid friendly",
        "kid-friendly",
        "child friendly",
        "child-friendly",
        "children friendly",
        "for families",
        "for the whole family",
    ];
    positive.iter().any(|p| lower.contains(p)).then_some(true)
}

#[cfg(test)]
mod tests {
    use super::{relexicalize, Example, MeaningRepresentation, VERBATIM_FIELDS};

    fn example(mr: &str, text: &str) -> Example {
        Example {
            text: text.into(),
            labels: Some(MeaningRepresentation::parse(mr).unwrap().into()),
        }
    }

    #[test]
    fn relexicalized_copies_swap_the_written_values_and_nothing_else() {
        let corpus = vec![
            example(
                "name[The Wrestlers], food[Indian], near[Raja Indian Cuisine]",
                "The Wrestlers serves Indian food near Raja Indian Cuisine.",
            ),
            example(
                "name[Cotto], food[Italian], near[Avalon]",
                "Cotto, near Avalon, serves pasta.",
            ),
            example(
                "name[Loch Fyne], food[English], near[The Bakers]",
                "Loch Fyne is English.",
            ),
        ];
        let mut json = corpus[0].clone();
        json.text = MeaningRepresentation::from(json.labels.clone().unwrap()).to_json();
        let mut all = corpus.clone();
        all.push(json);
        let copies = relexicalize(&all, &VERBATIM_FIELDS, 20, 7);
        assert_eq!(copies.len(), 4 * 20);
        assert_eq!(
            copies,
            relexicalize(&all, &VERBATIM_FIELDS, 20, 7),
            "deterministic for a seed"
        );
        let mut names_seen = std::collections::BTreeSet::new();
        for (i, copy) in copies.iter().enumerate() {
            let source = &all[i / 20];
            let (mr, old) = (copy.labels.as_ref().unwrap(), source.labels.as_ref().unwrap());
            for field in ["name", "food", "near"] {
                let (new_value, old_value) = (mr.get(field).unwrap(), old.get(field).unwrap());
                if source.text.contains(old_value) {
                    assert_ne!(new_value, old_value, "{field} is swapped in {:?}", copy.text);
                    assert!(copy.text.contains(new_value), "{:?} writes {new_value}", copy.text);
                } else {
                    assert_eq!(new_value, old_value, "{field} is not written, so it stays");
                }
            }
            names_seen.insert(mr.get("name").unwrap().to_string());
            // The food inside the `near` value is never touched on its own.
            if i / 20 == 0 {
                let near = mr.get("near").unwrap();
                let food = mr.get("food").unwrap();
                assert_eq!(
                    copy.text,
                    format!("{} serves {food} food near {near}.", mr.get("name").unwrap())
                );
            }
            if i / 20 == 3 {
                assert_eq!(
                    copy.text,
                    MeaningRepresentation::from(mr.clone()).to_json(),
                    "a JSON record stays the record of its MR"
                );
            }
        }
        assert_eq!(names_seen.len(), 3, "every name is drawn");
        // Pasta is not "Italian" verbatim: the food of the second example is never swapped.
        assert!(copies[20..40]
            .iter()
            .all(|c| c.labels.as_ref().unwrap().get("food") == Some("Italian")));
    }

    #[test]
    fn examples_with_nothing_to_swap_are_not_copied() {
        let corpus = vec![
            example("name[Cotto], eatType[pub]", "It is a pub."),
            Example {
                text: "no record".into(),
                labels: None,
            },
        ];
        assert!(relexicalize(&corpus, &VERBATIM_FIELDS, 3, 0).is_empty());
        // One value seen: nothing to swap it with.
        let single = vec![example("name[Cotto]", "Cotto.")];
        assert!(relexicalize(&single, &["name"], 3, 0).is_empty());
    }
}
