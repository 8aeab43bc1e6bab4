//! Differential testing of a compiled schema against the independent `jsonschema` validator.
//!
//! The automaton claims to accept exactly the valid documents in the canonical layout. Two
//! probes test that claim without knowing what the schema means:
//!
//! * **random documents** drawn from the automaton itself ([`Dfa::random_string`]): every one
//!   must parse and validate (soundness);
//! * **mutants** of known-valid instances: a value replaced by one of another type, a key
//!   dropped or added, a number moved across each bound the schema states by steps from 1 down
//!   to 10⁻⁶, an array item duplicated or dropped, a string emptied, lengthened, shortened or
//!   replaced by a format-shaped probe. Each mutant is judged by both sides: the validator on the
//!   value, the automaton on its canonical text. A mutant the automaton accepts and the validator
//!   rejects is a soundness failure; one the validator accepts and the automaton rejects is a
//!   completeness gap.
//!
//! Disagreements that the compiled constraint already reports as approximations
//! ([`JsonSchema::approximations`]) are counted apart: the constraint said it was not exact there.
//!
//! Cost: one random walk is O(length × 256); the distance table is O(states × byte classes), so
//! automata above [`DifferentialConfig::max_states`] are not sampled. Mutants cost one validation
//! and one automaton run each.
//!
//! ```
//! use diffusion_lm_controllers::json_schema::differential::{differential, DifferentialConfig};
//! use diffusion_lm_controllers::JsonSchema;
//! let schema = serde_json::json!({"type": "object", "properties": {"n": {"type": "number", "exclusiveMinimum": 0.5}}});
//! let js = JsonSchema::new(&schema).unwrap();
//! let report = differential(&js, &[serde_json::json!({"n": 2})], &DifferentialConfig::default());
//! assert!(report.mutants > 10);
//! assert!(report.unsound().next().is_none());
//! ```

use std::collections::HashSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Number, Value};

use super::JsonSchema;

/// How much a differential run tries.
#[derive(Debug, Clone)]
pub struct DifferentialConfig {
    /// Random documents drawn from the automaton.
    pub samples: usize,
    /// Mutants judged per schema (a random subset when more are generated).
    pub max_mutants: usize,
    /// Bytes after which a random document heads for the nearest accepting state.
    pub soft_len: usize,
    /// Automata with more states are not sampled (mutants are still judged).
    pub max_states: usize,
    pub seed: u64,
}

impl Default for DifferentialConfig {
    fn default() -> Self {
        DifferentialConfig {
            samples: 16,
            max_mutants: 300,
            soft_len: 120,
            max_states: 200_000,
            seed: 0,
        }
    }
}

/// What kind of disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The automaton produced or accepted a document the validator rejects.
    AcceptedInvalid,
    /// The validator accepts a document whose canonical text the automaton rejects.
    RejectedValid,
}

/// One document on which the automaton and the validator disagree.
#[derive(Debug, Clone)]
pub struct Disagreement {
    pub verdict: Verdict,
    /// `random document`, or the mutation that made it (`drop key "a" at /x`, ...).
    pub origin: String,
    /// The canonical text.
    pub text: String,
    /// The validator's message (for accepted invalid documents).
    pub detail: String,
    /// A stated cause, if there is one.
    pub explained_by: Option<Explanation>,
}

/// A stated cause of a disagreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Explanation {
    /// The violated keyword is one the constraint lists in [`JsonSchema::approximations`].
    Approximation,
    /// The document nests deeper than [`Limits::json_depth`](crate::Limits::json_depth) or
    /// [`Limits::json_any_depth`](crate::Limits::json_any_depth) allow.
    DepthLimit,
    /// A string outside the automaton's subset of its `format` (the automaton compiled with
    /// [`ignore_formats`](super::JsonSchemaConfig::ignore_formats) accepts the document).
    FormatSubset,
    /// A number of more than [`MAX_INT_DIGITS`](super::leaf::MAX_INT_DIGITS) significant
    /// digits, which the automaton does not write where a value's double matters
    /// ([`NumberSpec::double_exact`](super::leaf::NumberSpec::double_exact)).
    DigitLimit,
}

/// The counts of one run.
#[derive(Debug, Clone, Default)]
pub struct DifferentialReport {
    /// Random documents drawn from the automaton.
    pub sampled: usize,
    /// Random documents rejected only for repeating a free key (an automaton cannot remember
    /// free keys; generation redraws them).
    pub repeated_keys: usize,
    /// Mutants judged.
    pub mutants: usize,
    /// Mutants the validator accepts.
    pub mutants_valid: usize,
    pub disagreements: Vec<Disagreement>,
}

impl DifferentialReport {
    /// Accepted invalid documents without a stated cause: soundness bugs.
    pub fn unsound(&self) -> impl Iterator<Item = &Disagreement> {
        self.disagreements
            .iter()
            .filter(|d| d.verdict == Verdict::AcceptedInvalid && d.explained_by.is_none())
    }

    /// Rejected valid documents without a stated cause: completeness gaps.
    pub fn incomplete(&self) -> impl Iterator<Item = &Disagreement> {
        self.disagreements
            .iter()
            .filter(|d| d.verdict == Verdict::RejectedValid && d.explained_by.is_none())
    }

    /// Disagreements with a stated cause.
    pub fn explained(&self) -> impl Iterator<Item = &Disagreement> {
        self.disagreements.iter().filter(|d| d.explained_by.is_some())
    }
}

/// Runs both probes on `js`, mutating the known-valid `instances` that its automaton accepts.
pub fn differential(js: &JsonSchema, instances: &[Value], cfg: &DifferentialConfig) -> DifferentialReport {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut r = DifferentialReport::default();
    let dfa = js.dfa();
    if cfg.samples > 0 && dfa.num_states() <= cfg.max_states {
        let dist = dfa.distances_to_accept();
        for _ in 0..cfg.samples {
            let Some(bytes) = dfa.random_string(&dist, cfg.soft_len, || rng.gen::<f64>()) else {
                break;
            };
            r.sampled += 1;
            let text = String::from_utf8_lossy(&bytes).into_owned();
            match js.check_text(&text) {
                Ok(_) => {}
                Err(e) if e.contains("repeated key") => r.repeated_keys += 1,
                Err(detail) => {
                    let explained_by = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| approximated(js, &v));
                    r.disagreements.push(Disagreement {
                        verdict: Verdict::AcceptedInvalid,
                        origin: "random document".into(),
                        text,
                        detail,
                        explained_by,
                    })
                }
            }
        }
    }
    let bounds = schema_numbers(js.schema());
    let mut all: Vec<(String, Value)> = Vec::new();
    // Mutate only instances the automaton accepts, so each disagreement is the mutation's doing
    // (rejected valid instances are what the labelled check reports).
    for v in instances.iter().filter(|v| js.accepts(&js.canonical(v))) {
        mutants(v, "", &bounds, v, &mut all);
    }
    let mut seen = HashSet::new();
    all.retain(|(_, m)| seen.insert(js.canonical(m)));
    let (mut deeper, mut formatless): (Option<Option<JsonSchema>>, Option<Option<JsonSchema>>) = (None, None);
    // A fair subset when there are too many: shuffle, keep the first `max_mutants`.
    for i in (1..all.len()).rev() {
        all.swap(i, rng.gen_range(0..=i));
    }
    all.truncate(cfg.max_mutants);
    for (origin, m) in all {
        r.mutants += 1;
        let text = js.canonical(&m);
        let accepted = js.accepts(&text);
        // The text is what a generator writes and what is validated: judge the value it reads
        // back as (the canonical text of 3.0 is `3`, an integer in every draft).
        let read = serde_json::from_str::<Value>(&text).ok();
        let valid = match &read {
            Some(v) => js.validate(v),
            None => Err(format!("{text} does not parse")),
        };
        r.mutants_valid += usize::from(valid.is_ok());
        match (accepted, valid) {
            (true, Err(detail)) => r.disagreements.push(Disagreement {
                verdict: Verdict::AcceptedInvalid,
                origin,
                explained_by: read.as_ref().and_then(|v| approximated(js, v)),
                text,
                detail,
            }),
            (false, Ok(())) => {
                let deeper = deeper.get_or_insert_with(|| recompiled(js, true, false));
                let formatless = formatless.get_or_insert_with(|| recompiled(js, false, true));
                let explained_by = if deeper.as_ref().is_some_and(|d| d.accepts(&text)) {
                    Some(Explanation::DepthLimit)
                } else if formatless.as_ref().is_some_and(|d| d.accepts(&text)) {
                    Some(Explanation::FormatSubset)
                } else if read.as_ref().is_some_and(long_number) {
                    Some(Explanation::DigitLimit)
                } else {
                    None
                };
                r.disagreements.push(Disagreement {
                    verdict: Verdict::RejectedValid,
                    origin,
                    text,
                    detail: String::new(),
                    explained_by,
                })
            }
            _ => {}
        }
    }
    r
}

/// Whether a value holds a number of more than [`MAX_INT_DIGITS`](super::leaf::MAX_INT_DIGITS)
/// significant digits.
fn long_number(v: &Value) -> bool {
    match v {
        Value::Number(n) => super::leaf::Decimal::from_number(n)
            .is_none_or(|d| super::leaf::significant_digits(&d) > usize::from(super::leaf::MAX_INT_DIGITS)),
        Value::Array(a) => a.iter().any(long_number),
        Value::Object(m) => m.values().any(long_number),
        _ => false,
    }
}

/// [`Explanation::Approximation`] when every keyword `v` violates is one the constraint reports
/// as approximated (a format under a negation shows as the negating keyword).
fn approximated(js: &JsonSchema, v: &Value) -> Option<Explanation> {
    let listed: HashSet<&str> = js.approximations().iter().map(|a| a.keyword.as_str()).collect();
    let negating = [
        "not",
        "oneOf",
        "if",
        "then",
        "else",
        "contains",
        "maxContains",
        "minContains",
    ];
    let violations = js.violations(v);
    let all = !violations.is_empty()
        && violations
            .iter()
            .all(|(k, _)| listed.contains(k.as_str()) || (listed.contains("format") && negating.contains(&k.as_str())));
    all.then_some(Explanation::Approximation)
}

/// The same schema compiled with deeper nesting limits or without formats, when that stays
/// within the state limits.
fn recompiled(js: &JsonSchema, deeper: bool, formatless: bool) -> Option<JsonSchema> {
    let mut config = js.config().clone();
    if deeper {
        config.limits.json_depth += 3;
        config.limits.json_any_depth = config.limits.json_depth;
    }
    config.ignore_formats |= formatless;
    JsonSchema::with_config(js.schema(), config).ok()
}

/// Every number a numeric or count keyword of the schema states.
fn schema_numbers(schema: &Value) -> Vec<f64> {
    fn walk(v: &Value, out: &mut Vec<f64>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    match (k.as_str(), x) {
                        (
                            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf",
                            Value::Number(n),
                        ) => out.extend(n.as_f64()),
                        ("const", Value::Number(n)) => out.extend(n.as_f64()),
                        ("enum", Value::Array(a)) => out.extend(a.iter().filter_map(Value::as_f64)),
                        _ => walk(x, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = vec![0.0];
    walk(schema, &mut out);
    out.sort_by(f64::total_cmp);
    out.dedup();
    out.truncate(24);
    out
}

fn num(x: f64) -> Option<Value> {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Some(Value::from(x as i64))
    } else {
        Number::from_f64(x).map(Value::Number)
    }
}

/// Pushes (origin, whole document) for every mutation of the node at `path` and below.
fn mutants(node: &Value, path: &str, bounds: &[f64], root: &Value, out: &mut Vec<(String, Value)>) {
    let mut local: Vec<(String, Value)> = Vec::new();
    let mut children: Vec<(&Value, String)> = Vec::new();
    let mut put = |what: String, new: Value| local.push((what, new));
    // Flip the type.
    for other in [
        json!(null),
        json!(true),
        json!(0),
        json!(1.5),
        json!("s"),
        json!([]),
        json!({}),
    ] {
        if std::mem::discriminant(&other) != std::mem::discriminant(node) {
            put(format!("type {}", type_name(&other)), other);
        }
    }
    match node {
        Value::Number(n) => {
            let Some(x) = n.as_f64() else { return };
            let mut targets: Vec<f64> = vec![x + 1.0, x - 1.0, -x, x + 0.5, x * 10.0];
            for &b in bounds {
                targets.push(b);
                for step in [1.0, 0.1, 0.01, 0.001, 1e-6] {
                    targets.extend([b - step, b + step]);
                }
            }
            for t in targets {
                if let Some(v) = num(t) {
                    put(format!("number {t}"), v);
                }
            }
            put(
                "number 0.0".into(),
                Value::Number(Number::from_f64(0.0).expect("finite")),
            );
            if x.fract() == 0.0 && x.abs() < 1e15 {
                // The same integer written as a float.
                if let Some(f) = Number::from_f64(x) {
                    put(format!("number {x} as a float"), Value::Number(f));
                }
            }
        }
        Value::String(s) => {
            let chars: Vec<char> = s.chars().collect();
            let mut probes: Vec<(String, String)> = vec![
                ("empty string".into(), String::new()),
                ("append a letter".into(), format!("{s}x")),
                ("append a space".into(), format!("{s} ")),
                ("double the string".into(), s.repeat(2)),
                ("prepend a quote".into(), format!("\"{s}")),
                ("append a newline".into(), format!("{s}\n")),
                ("append a non-ASCII letter".into(), format!("{s}é")),
                ("upper case".into(), s.to_uppercase()),
            ];
            if !chars.is_empty() {
                probes.push((
                    "drop the last character".into(),
                    chars[..chars.len() - 1].iter().collect(),
                ));
                probes.push(("drop the first character".into(), chars[1..].iter().collect()));
            }
            for p in [
                "a@b.co",
                "not an email@",
                "http://example.com/x",
                "example.com",
                "2024-02-29",
                "2023-02-29",
                "2024-13-01",
                "12:30:00Z",
                "2024-01-01T12:30:00Z",
                "2024-01-01T25:30:00Z",
                "127.0.0.1",
                "256.1.1.1",
                "123e4567-e89b-12d3-a456-426614174000",
                "P1D",
            ] {
                probes.push((format!("string {p:?}"), p.to_string()));
            }
            for (what, p) in probes {
                if p != *s {
                    put(what, Value::String(p));
                }
            }
        }
        Value::Array(a) => {
            if let Some(first) = a.first() {
                let mut dup = a.clone();
                dup.push(first.clone());
                put("duplicate the first item".into(), Value::Array(dup));
                let mut fewer = a.clone();
                fewer.pop();
                put("drop the last item".into(), Value::Array(fewer));
            }
            let mut more = a.clone();
            more.push(Value::Null);
            put("append null".into(), Value::Array(more));
            for (i, x) in a.iter().enumerate().take(8) {
                children.push((x, format!("{path}/{i}")));
            }
        }
        Value::Object(m) => {
            for k in m.keys() {
                let mut fewer = m.clone();
                fewer.shift_remove(k);
                put(format!("drop key {k:?}"), Value::Object(fewer));
            }
            for (k, v) in [("extra", json!("x")), ("general ", json!(1)), ("a\"b", json!(null))] {
                if !m.contains_key(k) {
                    let mut more: Map<String, Value> = m.clone();
                    more.insert(k.to_string(), v);
                    put(format!("add key {k:?}"), Value::Object(more));
                }
            }
            for (k, x) in m.iter().take(16) {
                children.push((x, format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"))));
            }
        }
        _ => {}
    }
    for (what, new) in local {
        let mut doc = root.clone();
        if let Some(slot) = pointer_mut(&mut doc, path) {
            *slot = new;
            out.push((format!("{what} at {}", if path.is_empty() { "/" } else { path }), doc));
        }
    }
    for (child, p) in children {
        mutants(child, &p, bounds, root, out);
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn pointer_mut<'v>(v: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    if path.is_empty() {
        Some(v)
    } else {
        v.pointer_mut(path)
    }
}
