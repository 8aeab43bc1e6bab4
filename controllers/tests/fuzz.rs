//! Fuzzing the parsers users feed the controllers: JSON Schema compilation, GBNF grammars and
//! regular expressions. Every input must give `Ok` or an `Err` with a message — never a panic —
//! and what compiles must behave (accepted strings are in the language, the token automaton
//! builds or fails cleanly).
//!
//! The default number of cases keeps this file to about ten seconds in release mode;
//! `FUZZ_CASES=N` runs N cases per property (N/10 or N/20 for the slow ones: default limits, deep
//! nesting), and `benches/fuzz.sh` does a long run. Each property prints how many inputs it tried,
//! how many compiled, and its slowest input.

mod common;

use std::fmt::Debug;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{distances, random_document};
use diffusion_lm::steer::token_index::TokenIndex;
use diffusion_lm::steer::ConstraintContext;
use diffusion_lm::TextTokenizer;
use diffusion_lm_controllers::{
    ControllerError, Grammar, GrammarConfig, JsonSchema, JsonSchemaConfig, Limits, Regex, RegexConfig,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Map, Number, Value};

#[path = "../../tests/support/fuzz_harness.rs"]
mod fuzz_harness;
use fuzz_harness::cases;

/// [`fuzz_harness::fuzz`] for this file's properties (`test` returns whether the input compiled).
fn fuzz<S: Strategy>(name: &str, cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<bool, TestCaseError>)
where
    S::Value: Debug,
{
    fuzz_harness::fuzz("controllers", "compiled", name, cases, strategy, test)
}

/// An error must say something; `Ok(false)`: the input did not compile.
fn nonempty(e: &ControllerError) -> Result<bool, TestCaseError> {
    let msg = e.to_string();
    prop_assert!(!msg.trim().is_empty(), "empty error message: {e:?}");
    Ok(false)
}

/// The shipped model's tokenizer and its token index, for lifting byte automata to tokens.
fn tokens() -> &'static (TextTokenizer, TokenIndex) {
    static T: OnceLock<(TextTokenizer, TokenIndex)> = OnceLock::new();
    T.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/e2e/tokenizer.json");
        let tok = TextTokenizer::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let index = TokenIndex::new(&tok);
        (tok, index)
    })
}

fn context() -> ConstraintContext<'static> {
    let (tokenizer, index) = tokens();
    ConstraintContext {
        tokenizer,
        index,
        seq_len: 64,
    }
}

/// A random document accepted by `dfa`, when the automaton is small enough to walk cheaply.
fn sample(dfa: &diffusion_lm_controllers::dfa::Dfa, seed: u64) -> Option<Vec<u8>> {
    if dfa.num_states() > 3_000 {
        return None;
    }
    let dist = distances(dfa);
    let mut rng = StdRng::seed_from_u64(seed);
    Some(random_document(dfa, &dist, &mut rng, 30))
}

// ------------------------------------------------------------------------------------------------
// JSON Schema
// ------------------------------------------------------------------------------------------------

/// Limits that keep every case fast; the defaults are exercised by `json_schema_default_limits`.
fn schema_config() -> JsonSchemaConfig {
    JsonSchemaConfig {
        limits: Limits {
            json_depth: 3,
            json_any_depth: 2,
            json_states: 4_000,
            json_total_states: 60_000,
            json_max_counted: 24,
            json_regex_bytes: 1 << 20,
            json_token_states: 4_000,
            ..Limits::default()
        },
        ..JsonSchemaConfig::default()
    }
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-20i64..20).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop::sample::select(vec![
            0.0, 0.1, 0.25, 0.5, 1.5, -2.5, 1e-7, 3.0e-300, 1e300, -1e300, 1e18, 1e19, 7e-3
        ])
        .prop_map(|f| Value::Number(Number::from_f64(f).expect("finite"))),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
    ]
}

/// A count keyword's value: usually a small non-negative integer, sometimes anything.
fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => (0u64..6).prop_map(Value::from),
        1 => prop::sample::select(vec![7u64, 30, 255, 256, 257, 1 << 20, u64::MAX]).prop_map(Value::from),
        1 => number(),
        1 => prop::sample::select(vec![json!(-1), json!("3"), json!(null), json!(true), json!(2.5)]),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec!["a", "b", "c", "name", "x_1", "y", ""]).prop_map(String::from),
        1 => "\\PC{0,6}",
        1 => prop::sample::select(vec!["é", "a/b", "~0", "\"q\"", "\\", "\u{0}", "\u{10FFFF}"]).prop_map(String::from),
    ]
}

/// Strings for `pattern`, `patternProperties` and `format`-like fields: regex-ish soup.
fn regex_soup() -> impl Strategy<Value = String> {
    let atoms = vec![
        "a",
        "b",
        "z",
        "0",
        "9",
        "-",
        "_",
        " ",
        ".",
        "*",
        "+",
        "?",
        "|",
        "(",
        ")",
        "[",
        "]",
        "^",
        "$",
        "{",
        "}",
        ",",
        "{2}",
        "{1,3}",
        "{0,}",
        "{30}",
        "{2,50}",
        "\\d",
        "\\w",
        "\\s",
        "\\D",
        "\\W",
        "\\b",
        "\\B",
        "\\p{L}",
        "\\p{Greek}",
        "\\P{N}",
        "\\x41",
        "\\u00e9",
        "\\u{1F600}",
        "\\",
        "\\\\",
        "\\.",
        "(?i)",
        "(?x)",
        "(?=",
        "(?!",
        "(?<n>",
        "(?:",
        "[^a]",
        "[a-z]",
        "[z-a]",
        "[[:alpha:]]",
        "#",
        "\n",
        "é",
        "😀",
        "\u{0}",
    ];
    prop_oneof![
        3 => prop::collection::vec(prop::sample::select(atoms), 0..10).prop_map(|v| v.concat()),
        1 => "\\PC{0,12}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        "\\PC{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn type_name() -> impl Strategy<Value = Value> {
    let names = vec![
        "string", "number", "integer", "boolean", "null", "object", "array", "any", "str",
    ];
    prop_oneof![
        4 => prop::sample::select(names.clone()).prop_map(Value::from),
        2 => prop::collection::vec(prop::sample::select(names), 0..4).prop_map(|v| json!(v)),
        1 => json_value(),
    ]
}

fn reference() -> impl Strategy<Value = Value> {
    let refs = vec![
        "#",
        "#/$defs/a",
        "#/$defs/b",
        "#/definitions/a",
        "#/properties/a",
        "#/$defs/a/properties/b",
        "#/items",
        "#/anyOf/0",
        "#a",
        "#anchor",
        "#/%24defs/a",
        "#/$defs/%61",
        "#/$defs/%zz",
        "#/$defs/%",
        "#/$defs/%a",
        "#/$defs/%aé",
        "#/$defs/%é",
        "#/~1",
        "#/~2",
        "http://example.com/s#",
        "other.json#/a",
        "",
        "#/$defs/a#",
    ];
    prop_oneof![
        4 => prop::sample::select(refs).prop_map(Value::from),
        1 => "#[/%a-z0-9é$~]{0,8}".prop_map(Value::from),
        1 => json_value(),
    ]
}

fn format_name() -> impl Strategy<Value = Value> {
    let formats = vec![
        "date-time",
        "date",
        "time",
        "duration",
        "email",
        "idn-email",
        "hostname",
        "idn-hostname",
        "ipv4",
        "ipv6",
        "uuid",
        "uri",
        "uri-reference",
        "iri",
        "iri-reference",
        "uri-template",
        "json-pointer",
        "relative-json-pointer",
        "regex",
        "unknown-format",
        "",
    ];
    prop_oneof![4 => prop::sample::select(formats).prop_map(Value::from), 1 => json_value()]
}

/// A schema-like JSON value: an object of keywords with mostly well-typed, sometimes
/// ill-typed, values, nested through the applicators.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(json!({})),
        1 => any::<bool>().prop_map(Value::Bool),
        4 => keywords(prop_oneof![Just(json!({})), Just(json!(true)), Just(json!({"type": "integer"}))].boxed()),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            3 => keywords(inner.clone()),
            1 => (prop::collection::vec((key(), inner.clone()), 1..3), inner).prop_map(|(defs, root)| {
                let mut m = match root {
                    Value::Object(m) => m,
                    other => {
                        let mut m = Map::new();
                        m.insert("allOf".into(), json!([other]));
                        m
                    }
                };
                m.insert("$defs".into(), Value::Object(defs.into_iter().collect()));
                Value::Object(m)
            }),
        ]
    })
}

/// One schema object with 0..6 keywords whose subschemas come from `inner`.
fn keywords(inner: BoxedStrategy<Value>) -> impl Strategy<Value = Value> {
    let i = inner;
    let kw = prop_oneof![
        type_name().prop_map(|v| ("type", v)),
        prop::collection::vec((key(), i.clone()), 0..4)
            .prop_map(|kv| ("properties", Value::Object(kv.into_iter().collect()))),
        prop::collection::vec(key(), 0..4).prop_map(|v| ("required", json!(v))),
        prop_oneof![i.clone(), prop::collection::vec(i.clone(), 0..3).prop_map(Value::Array)]
            .prop_map(|v| ("items", v)),
        prop::collection::vec(i.clone(), 0..3).prop_map(|v| ("prefixItems", Value::Array(v))),
        i.clone().prop_map(|v| ("additionalProperties", v)),
        i.clone().prop_map(|v| ("additionalItems", v)),
        prop::collection::vec((regex_soup(), i.clone()), 0..3)
            .prop_map(|kv| ("patternProperties", Value::Object(kv.into_iter().collect()))),
        i.clone().prop_map(|v| ("propertyNames", v)),
        i.clone().prop_map(|v| ("contains", v)),
        prop::collection::vec(json_value(), 0..5).prop_map(|v| ("enum", Value::Array(v))),
        json_value().prop_map(|v| ("const", v)),
        regex_soup().prop_map(|v| ("pattern", Value::String(v))),
        format_name().prop_map(|v| ("format", v)),
        number().prop_map(|v| ("minimum", v)),
        number().prop_map(|v| ("maximum", v)),
        prop_oneof![number(), any::<bool>().prop_map(Value::Bool)].prop_map(|v| ("exclusiveMinimum", v)),
        prop_oneof![number(), any::<bool>().prop_map(Value::Bool)].prop_map(|v| ("exclusiveMaximum", v)),
        number().prop_map(|v| ("multipleOf", v)),
        count().prop_map(|v| ("minLength", v)),
        count().prop_map(|v| ("maxLength", v)),
        count().prop_map(|v| ("minItems", v)),
        count().prop_map(|v| ("maxItems", v)),
        count().prop_map(|v| ("minProperties", v)),
        count().prop_map(|v| ("maxProperties", v)),
        count().prop_map(|v| ("minContains", v)),
        count().prop_map(|v| ("maxContains", v)),
        any::<bool>().prop_map(|v| ("uniqueItems", Value::Bool(v))),
        prop::collection::vec(i.clone(), 0..3).prop_map(|v| ("anyOf", Value::Array(v))),
        prop::collection::vec(i.clone(), 0..3).prop_map(|v| ("oneOf", Value::Array(v))),
        prop::collection::vec(i.clone(), 0..3).prop_map(|v| ("allOf", Value::Array(v))),
        i.clone().prop_map(|v| ("not", v)),
        i.clone().prop_map(|v| ("if", v)),
        i.clone().prop_map(|v| ("then", v)),
        i.clone().prop_map(|v| ("else", v)),
        reference().prop_map(|v| ("$ref", v)),
        prop::collection::vec((key(), prop::collection::vec(key(), 0..3)), 0..3).prop_map(|kv| (
            "dependentRequired",
            Value::Object(kv.into_iter().map(|(k, v)| (k, json!(v))).collect())
        )),
        prop::collection::vec((key(), i.clone()), 0..3)
            .prop_map(|kv| ("dependentSchemas", Value::Object(kv.into_iter().collect()))),
        prop::collection::vec(
            (
                key(),
                prop_oneof![i.clone(), prop::collection::vec(key(), 0..2).prop_map(|v| json!(v))]
            ),
            0..3
        )
        .prop_map(|kv| ("dependencies", Value::Object(kv.into_iter().collect()))),
        prop::sample::select(vec!["a", "anchor", "", "#"]).prop_map(|v| ("$anchor", Value::from(v))),
        prop::sample::select(vec!["#a", "#anchor", "http://example.com/s", "other.json"])
            .prop_map(|v| ("$id", Value::from(v))),
        prop::sample::select(vec![
            "http://json-schema.org/draft-04/schema#",
            "http://json-schema.org/draft-06/schema#",
            "http://json-schema.org/draft-07/schema#",
            "https://json-schema.org/draft/2019-09/schema",
            "https://json-schema.org/draft/2020-12/schema",
            "http://example.com/unknown",
        ])
        .prop_map(|v| ("$schema", Value::from(v))),
        prop::sample::select(vec![
            "unevaluatedProperties",
            "$dynamicRef",
            "title",
            "description",
            "x-custom",
            "default"
        ])
        .prop_flat_map(|k| json_value().prop_map(move |v| (k, v))),
    ];
    prop::collection::vec(kw, 0..6)
        .prop_map(|kws| Value::Object(kws.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// Compiles `schema` and checks what compiles: a sampled document parses and validates
/// (soundness), and the token automaton builds or fails with a message.
fn check_schema(schema: &Value, config: JsonSchemaConfig, seed: u64) -> Result<bool, TestCaseError> {
    let js = match JsonSchema::with_config(schema, config) {
        Ok(js) => js,
        Err(e) => return nonempty(&e),
    };
    if let Some(doc) = sample(js.dfa(), seed) {
        let text = String::from_utf8(doc).map_err(|e| TestCaseError::fail(format!("accepted non-UTF-8: {e}")))?;
        if let Err(e) = js.check_text(&text) {
            // Repeated free keys and the keywords the constraint lists as approximated are the
            // documented cases the automaton cannot exclude (the generator redraws such samples).
            let value: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            let listed: Vec<&str> = js.approximations().iter().map(|a| a.keyword.as_str()).collect();
            let explained = js
                .violations(&value)
                .iter()
                .all(|(k, _)| listed.contains(&k.as_str()) || listed.contains(&"format"));
            prop_assert!(
                e.contains("repeated key") || explained,
                "the automaton accepts {text:?}, which fails the check: {e}; approximations: {:?}",
                js.approximations()
            );
        }
    }
    if seed % 4 == 0 {
        if let Err(e) = js.token_automaton(&context()) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
    Ok(true)
}

#[test]
fn json_schema_structured() {
    fuzz(
        "json_schema_structured",
        cases(600, 1),
        (schema(), any::<u64>()),
        |(s, seed)| check_schema(&s, schema_config(), seed),
    );
}

#[test]
fn json_schema_default_limits() {
    // The default limits, on fewer cases: the limits themselves must bound the work.
    fuzz(
        "json_schema_default_limits",
        cases(60, 10),
        schema(),
        |s| match JsonSchema::new(&s) {
            Ok(_) => Ok(true),
            Err(e) => nonempty(&e),
        },
    );
}

#[test]
fn json_schema_any_value() {
    // Arbitrary JSON (mostly not schema-shaped at all).
    fuzz("json_schema_any_value", cases(500, 1), json_value(), |v| {
        check_schema(&v, schema_config(), 1)
    });
}

/// Text edits: delete, insert or replace a few characters.
fn mutate(text: String, edits: Vec<(usize, u8, char)>) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, op, c) in edits {
        let at = if chars.is_empty() { 0 } else { at % (chars.len() + 1) };
        match op % 3 {
            0 if at < chars.len() => {
                chars.remove(at);
            }
            1 => chars.insert(at, c),
            _ if at < chars.len() => chars[at] = c,
            _ => chars.push(c),
        }
    }
    chars.into_iter().collect()
}

fn edit() -> impl Strategy<Value = (usize, u8, char)> {
    let chars = prop_oneof![
        3 => prop::sample::select(vec!['{', '}', '[', ']', '"', ':', ',', '\\', '0', '-', 'e', '.', ' ', 'a']),
        1 => any::<char>(),
    ];
    (any::<usize>(), any::<u8>(), chars)
}

#[test]
fn json_schema_text() {
    // Schema text as a user would paste it: arbitrary strings, and schemas with a few typos.
    let text = prop_oneof![
        1 => "\\PC{0,40}",
        1 => any::<String>(),
        3 => (schema(), prop::collection::vec(edit(), 1..4)).prop_map(|(s, e)| mutate(s.to_string(), e)),
    ];
    fuzz("json_schema_text", cases(500, 1), text, |t| {
        match JsonSchema::from_json(&t) {
            Ok(js) => {
                // What compiled from text compiles again from its value.
                let v: Value = serde_json::from_str(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(js.schema(), &v);
                Ok(true)
            }
            Err(e) => nonempty(&e),
        }
    });
}

#[test]
fn json_schema_deep_nesting() {
    // Nesting as deep as serde_json's parser allows, through every applicator.
    let wrap = prop::sample::select(vec![
        "not",
        "anyOf",
        "allOf",
        "oneOf",
        "items",
        "properties",
        "if",
        "$defs",
    ]);
    fuzz(
        "json_schema_deep_nesting",
        cases(40, 20),
        prop::collection::vec(wrap, 1..62),
        |wraps| {
            let mut s = json!({"type": "integer"});
            for w in &wraps {
                s = match *w {
                    "anyOf" | "allOf" | "oneOf" => json!({ *w: [s] }),
                    "properties" => json!({"properties": {"a": s}, "required": ["a"]}),
                    "$defs" => json!({"$defs": {"d": s}, "$ref": "#/$defs/d"}),
                    "if" => json!({"if": s, "then": {"type": "object"}}),
                    _ => json!({ *w: s }),
                };
            }
            let text = s.to_string();
            match JsonSchema::from_json(&text) {
                Ok(js) => check_schema(js.schema(), schema_config(), 2),
                Err(e) => nonempty(&e),
            }
        },
    );
}

#[test]
fn json_schema_regressions() {
    // Inputs the fuzzers found. A `$ref` whose `%` escape was followed by a multi-byte character
    // panicked (the percent-decoder sliced inside the character).
    for s in [
        json!({"$ref": "#/$defs/%aé"}),
        json!({"$ref": "#/$defs/%é"}),
        json!({"$defs": {"a": {"type": "integer"}}, "$ref": "#/$defs/%a"}),
        json!({"pattern": "a)|(b"}),
        json!({"patternProperties": {"(?x)a#": true}, "type": "object"}),
    ] {
        if let Err(e) = JsonSchema::with_config(&s, schema_config()) {
            assert!(!e.to_string().is_empty(), "{s}");
        }
    }
    // `%61` is `a`: percent-escapes in `$ref` pointers still decode.
    let js = JsonSchema::new(&json!({"$defs": {"a": {"const": 7}}, "$ref": "#/$defs/%61"})).unwrap();
    assert!(js.accepts("7") && !js.accepts("8"));
    // A bound with a fraction and an integer equal to its integer part: 0 < 0.5, 0 < 1e-7.
    for (schema, below, above) in [
        (json!({"minimum": 0.5}), "0", "0.5"),
        (json!({"type": "number", "minimum": 1e-7}), "0", "0.0000001"),
        (json!({"exclusiveMinimum": 2.25}), "2", "2.3"),
        (json!({"maximum": -0.5}), "0", "-0.5"),
    ] {
        let js = JsonSchema::new(&schema).unwrap();
        assert!(!js.accepts(below), "{schema} accepts {below}");
        assert!(js.accepts(above), "{schema} rejects {above}");
    }
}

// Complements are taken against the canonical universe, in which each value has one text: the
// free-value automaton writes no `1.0`, exponent or non-canonical escape that a typed automaton
// would miss.
#[test]
fn json_schema_complement_of_integer() {
    let js = JsonSchema::new(&json!({"not": {"type": "integer"}})).unwrap();
    for doc in ["1.0", "6E82"] {
        assert!(
            !js.accepts(doc) || js.check_text(doc).is_ok(),
            "accepts {doc}, which is an integer"
        );
    }
}

#[test]
fn json_schema_complement_of_escaped_keys() {
    for schema in [json!({"not": {"maximum": 5}}), json!({"not": {"type": "object"}})] {
        let js = JsonSchema::new(&schema).unwrap();
        let doc = r#"{"\"":0}"#;
        assert!(!js.accepts(doc) || js.check_text(doc).is_ok(), "{schema} accepts {doc}");
    }
}

// ------------------------------------------------------------------------------------------------
// GBNF grammars
// ------------------------------------------------------------------------------------------------

fn grammar_config() -> GrammarConfig {
    GrammarConfig {
        limits: Limits {
            grammar_depth: 3,
            grammar_states: 5_000,
            grammar_token_states: 5_000,
            ..Limits::default()
        },
    }
}

/// A GBNF expression as text: mostly valid, sometimes with a bad escape, class or count.
fn gbnf_expr(names: &'static [&'static str]) -> impl Strategy<Value = String> {
    let escapes = vec![
        "a",
        "\\n",
        "\\t",
        "\\\\",
        "\\\"",
        "\\x41",
        "\\u00e9",
        "\\U0001F600",
        "é",
        "\u{0}",
    ];
    let bad_escapes = vec!["\\x4", "\\xzz", "\\u12", "\\UFFFFFFFF", "\\q", "\\", "\""];
    let literal = prop_oneof![
        30 => "[a-z0-9 ]{0,4}",
        10 => prop::collection::vec(prop::sample::select(escapes), 0..4).prop_map(|v| v.concat()),
        1 => prop::collection::vec(prop::sample::select(bad_escapes), 1..3).prop_map(|v| v.concat()),
    ]
    .prop_map(|s| format!("\"{s}\""));
    let class_item = prop_oneof![
        40 => prop::sample::select(vec![
            "a", "z", "a-z", "0-9", "-", "^", "\\]", "\\\\", "\\x00-\\x7f", "\\u0100-\\uFFFF", "é", "\\n",
        ]),
        1 => prop::sample::select(vec!["z-a", "\\q", "\\x", "]"]),
    ];
    let class = (any::<bool>(), prop::collection::vec(class_item, 1..4))
        .prop_map(|(neg, items)| format!("[{}{}]", if neg { "^" } else { "" }, items.concat()));
    let leaf = prop_oneof![
        16 => literal,
        8 => class,
        4 => Just(".".to_string()),
        12 => prop::sample::select(names).prop_map(String::from),
        // Rarely an undefined rule, or an empty class (an error unless negated).
        1 => prop::sample::select(vec!["undefined", "[]", "[^]"]).prop_map(String::from),
    ];
    leaf.prop_recursive(3, 12, 4, |inner| {
        let rep = prop_oneof![
            // Large counts are rare: they can take seconds (`gbnf_nullable_repetition_fails_fast`).
            60 => prop::sample::select(vec!["", "", "", "*", "+", "?", "{2}", "{0,3}", "{1,}", "{1,2}{2}", "{12}"]),
            1 => Just("{40}"),
            1 => prop::sample::select(vec!["{3,1}", "{256}", "{257}", "{,2}", "{x}", "{", "{1,2"]),
        ];
        prop_oneof![
            prop::collection::vec((inner.clone(), rep), 1..4).prop_map(|v| v
                .into_iter()
                .map(|(e, r)| format!("{e}{r}"))
                .collect::<Vec<_>>()
                .join(" ")),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|v| v.join(" | ")),
            inner.prop_map(|e| format!("( {e} )")),
        ]
    })
}

/// Rule-shaped grammar text: `root` and a few other rules referring to each other (so
/// recursion happens), sometimes with a rule missing, defined twice, or a malformed definition.
fn gbnf_grammar() -> impl Strategy<Value = String> {
    const NAMES: &[&str] = &["root", "a", "b", "c-d", "e_1"];
    let separator = prop_oneof![
        80 => prop::sample::select(vec![" ::= ", "::=", " ::=\n  ", "\t::= "]),
        1 => prop::sample::select(vec![" := ", " ::", " = "]),
    ];
    let rules = prop::collection::vec(
        (
            gbnf_expr(NAMES),
            separator,
            prop::sample::select(vec!["\n", "\n# note\n", " "]),
        ),
        5,
    );
    let defined = prop::collection::vec(prop::bool::weighted(0.95), 5);
    let extra = prop::option::weighted(0.05, (prop::sample::select(NAMES), gbnf_expr(NAMES)));
    (rules, defined, extra).prop_map(|(rules, defined, extra)| {
        let mut text = String::new();
        for (i, ((body, sep, end), keep)) in rules.into_iter().zip(defined).enumerate() {
            if i == 0 || keep {
                text.push_str(&format!("{}{sep}{body}{end}", NAMES[i]));
            }
        }
        if let Some((name, body)) = extra {
            text.push_str(&format!("\n{name} ::= {body}\n"));
        }
        text
    })
}

/// Compiles a grammar; what compiles must only accept sentences (checked by the Earley
/// recogniser) and lift to tokens or fail with a message.
fn check_grammar(text: &str, seed: u64) -> Result<bool, TestCaseError> {
    let g = match Grammar::with_config("fuzz", text, grammar_config()) {
        Ok(g) => g,
        Err(e) => return nonempty(&e),
    };
    if let Some(doc) = sample(g.dfa(), seed) {
        if let Ok(text) = String::from_utf8(doc.clone()) {
            prop_assert!(
                g.recognizes(&text),
                "the automaton accepts {text:?}, the grammar does not"
            );
        } else {
            // Classes are over characters: an accepted string is always UTF-8.
            return Err(TestCaseError::fail(format!("accepted non-UTF-8 bytes {doc:?}")));
        }
    }
    if seed % 4 == 0 {
        let (tokenizer, index) = tokens();
        let ctx = ConstraintContext {
            tokenizer,
            index,
            seq_len: 64,
        };
        use diffusion_lm::steer::Constraint;
        if let Err(e) = g.restrictions(&ctx) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
    Ok(true)
}

#[test]
fn gbnf_rule_shaped() {
    fuzz(
        "gbnf_rule_shaped",
        cases(1500, 1),
        (gbnf_grammar(), any::<u64>()),
        |(t, seed)| check_grammar(&t, seed),
    );
}

#[test]
fn gbnf_soup() {
    let atoms = vec![
        "root", "a", " ", "\n", "::=", "::", "=", "\"", "\"x\"", "[", "]", "^", "-", "(", ")", "|", "*", "+", "?", "{",
        "}", ",", "2", "{1,2}", "\\", "\\x", "\\u", "é", ".", "#", "# c\n",
    ];
    let text = prop_oneof![
        3 => prop::collection::vec(prop::sample::select(atoms), 0..30).prop_map(|v| v.concat()),
        1 => any::<String>(),
        1 => (gbnf_grammar(), prop::collection::vec(edit(), 1..4)).prop_map(|(g, e)| mutate(g, e)),
    ];
    fuzz("gbnf_soup", cases(1500, 1), (text, any::<u64>()), |(t, seed)| {
        check_grammar(&t, seed)
    });
}

#[test]
fn gbnf_deep_nesting() {
    // Deep parentheses and long chains of rules: the recursive-descent parser, the compiler and
    // the recogniser must not overflow the stack.
    let shape = prop_oneof![
        (1usize..3000).prop_map(|n| format!("root ::= {}\"x\"{}", "(".repeat(n), ")".repeat(n))),
        (1usize..3000).prop_map(|n| format!("root ::= {}", "(".repeat(n))),
        // (Compiling a chain costs time quadratic in its length: rule i's automaton has i states.)
        (1usize..600).prop_map(|n| {
            let mut g = String::from("root ::= r0\n");
            for i in 0..n {
                g.push_str(&format!("r{i} ::= r{} \"a\"?\n", i + 1));
            }
            g.push_str(&format!("r{n} ::= \"z\"\n"));
            g
        }),
        (1usize..3000).prop_map(|n| format!("root ::= \"a\"{}", "?".repeat(n))),
    ];
    fuzz("gbnf_deep_nesting", cases(30, 20), shape, |t| check_grammar(&t, 3));
}

// ------------------------------------------------------------------------------------------------
// Regular expressions
// ------------------------------------------------------------------------------------------------

fn regex_config() -> RegexConfig {
    RegexConfig {
        limits: Limits {
            regex_dfa_bytes: 1 << 20,
            regex_determinize_bytes: 1 << 20,
            regex_token_states: 2_000,
            ..Limits::default()
        },
    }
}

/// Compiles a pattern: `Ok` only for a pattern that parses on its own (the wrapping in
/// `^(?:…)$` must not change what is accepted), and the token automaton builds or fails cleanly.
fn check_regex(pattern: &str, seed: u64) -> Result<bool, TestCaseError> {
    let r = match Regex::with_config(pattern, regex_config()) {
        Ok(r) => r,
        Err(e) => {
            // A pattern that is a regex on its own is refused only for its size or for a
            // feature DFAs cannot have (Unicode word boundaries), never for the anchoring.
            let msg = e.to_string().to_lowercase();
            prop_assert!(
                regex_automata::util::syntax::parse(pattern).is_err()
                    || msg.contains("limit")
                    || msg.contains("unsupported"),
                "{pattern:?} parses on its own but was refused: {msg}"
            );
            return nonempty(&e);
        }
    };
    prop_assert!(
        regex_automata::util::syntax::parse(pattern).is_ok(),
        "{pattern:?} compiled, but it is not a regex on its own (the wrapping changed it)"
    );
    if seed % 4 == 0 {
        if let Err(e) = r.token_automaton(&context()) {
            prop_assert!(!e.to_string().trim().is_empty());
        }
    }
    Ok(true)
}

#[test]
fn regex_soup_patterns() {
    fuzz(
        "regex_soup",
        cases(1500, 1),
        (regex_soup(), any::<u64>()),
        |(p, seed)| check_regex(&p, seed),
    );
}

#[test]
fn regex_any_string() {
    fuzz(
        "regex_any_string",
        cases(1000, 1),
        (any::<String>(), any::<u64>()),
        |(p, seed)| check_regex(&p, seed),
    );
}

#[test]
fn regex_wrapping_escapes() {
    // Patterns built to break out of the `^(?:…)$` wrapping.
    let p = prop::collection::vec(
        prop::sample::select(vec![
            "a", ")", "(", "|", "(?:", "(?x)", "#", "\n", "$", "^", "\\", "\\)", "]", "[",
        ]),
        1..8,
    )
    .prop_map(|v| v.concat());
    fuzz("regex_wrapping", cases(1000, 1), p, |p| check_regex(&p, 1));
}

// Found by fuzzing: without a Thompson NFA size limit, a pattern that repeats a large class many
// times (`\p{L}{300}{300}` is 90,000 copies) spent 30-45 s building the NFA before the DFA limits
// rejected it.
#[test]
fn regex_huge_repetition_fails_fast() {
    for pattern in [r"\p{L}{300}{300}", r"\w{300}{300}"] {
        let start = Instant::now();
        let r = Regex::with_config(pattern, regex_config());
        assert!(r.is_err(), "{pattern} compiled");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{pattern}: {:?}",
            start.elapsed()
        );
    }
}

// FIXME slow: controllers/src/grammar/compile.rs builds `x{m,n}` as one NFA of n copies and
// determinises it (controllers/src/dfa/automaton.rs `Nfa::determinize`); when `x` can be empty,
// the subsets span all copies, and this 1,610-state result takes 18-30 s (release) although the
// grammar is tiny. Building the repetition by repeated concatenation of minimised DFAs would
// keep the subsets small.
#[test]
#[ignore = "known slow input, found by fuzzing"]
fn gbnf_nullable_repetition_fails_fast() {
    let text = "root ::= e{1,}{40}\ne ::= b | \"15 \"?\nb ::= \"\"{40} .? [-]{40}\n";
    let start = Instant::now();
    let _ = Grammar::with_config("slow", text, grammar_config());
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
}
