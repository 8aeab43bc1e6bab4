//! The JSON Schema controller: soundness (every document the automaton accepts validates under
//! the independent `jsonschema` crate), completeness on labelled instances, errors, and
//! generation with the shipped model.

mod common;

use std::path::PathBuf;

use common::{distances, random_document};

use diffusion_lm::{DiffusionLm, Error, Generator};
use diffusion_lm_controllers::json_schema::suite::{check_case, SuiteCase};
use diffusion_lm_controllers::{JsonSchema, JsonSchemaConfig, Layout, Limits};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};

/// Every sampled document parses and validates; returns how many distinct ones were seen.
fn assert_sound(schema: &Value, samples: usize) -> usize {
    let js = JsonSchema::new(schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
    let dist = distances(js.dfa());
    for st in 0..js.dfa().num_states() {
        assert!(
            dist[st] != usize::MAX,
            "{schema}: state {st} of {} cannot reach acceptance",
            js.dfa().num_states()
        );
    }
    let mut rng = StdRng::seed_from_u64(7);
    let mut seen = std::collections::HashSet::new();
    let mut repeated = 0;
    for _ in 0..samples {
        let doc = random_document(js.dfa(), &dist, &mut rng, 60);
        let text = String::from_utf8(doc).expect("the automaton only accepts UTF-8");
        match js.check_text(&text) {
            Ok(_) => {}
            // Repeated free-form keys are the one thing the automaton cannot exclude; the check
            // catches them (and the generator redraws such samples).
            Err(e) if e.contains("repeated key") => repeated += 1,
            Err(e) if !js.validated_only().is_empty() => assert!(e.contains("unique"), "{e}"),
            Err(e) => panic!("schema {schema}\naccepted {text}\nwhich fails the check: {e}"),
        }
        seen.insert(text);
    }
    assert!(
        repeated < samples || samples < 5,
        "{schema}: every sample repeats a key"
    );
    seen.len()
}

#[test]
fn every_accepted_document_validates() {
    let schemas = [
        json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": -3, "exclusiveMaximum": 40}, "b": {"type": "string", "maxLength": 3}}, "required": ["a"]}),
        json!({"type": "number", "minimum": -2.5, "maximum": 7.25, "multipleOf": 0.25}),
        json!({"type": "integer", "multipleOf": 7, "exclusiveMinimum": 10}),
        json!({"type": "string", "pattern": "^[a-z]+-\\d{2}$"}),
        json!({"type": "string", "pattern": "ab"}),
        json!({"type": "string", "minLength": 2, "maxLength": 4}),
        json!({"enum": ["red", 1, null, {"k": [true]}]}),
        json!({"const": {"x": 1}}),
        json!({"type": ["string", "null", "boolean"]}),
        json!({"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "boolean"}}, "required": ["b"]}]}),
        json!({"anyOf": [{"type": "integer", "maximum": 3}, {"type": "string", "maxLength": 2}]}),
        json!({"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "integer", "multipleOf": 3}]}),
        json!({"type": "object", "properties": {"a": {}, "b": {}}, "not": {"required": ["a"]}}),
        json!({"type": "object", "properties": {"kind": {"enum": ["x", "y"]}, "n": {"type": "integer"}}, "required": ["kind"],
               "if": {"properties": {"kind": {"const": "x"}}}, "then": {"required": ["n"]}, "else": {"not": {"required": ["n"]}}}),
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "dependentRequired": {"a": ["b"]}, "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "dependencies": {"a": {"required": ["b"]}}, "additionalProperties": false}),
        json!({"type": "object", "patternProperties": {"^x_": {"type": "integer"}, "^y": {"type": "boolean"}}, "additionalProperties": false, "maxProperties": 3}),
        json!({"type": "object", "additionalProperties": {"type": "string"}, "propertyNames": {"maxLength": 3}, "minProperties": 1}),
        json!({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": {"type": "boolean"}, "minItems": 1, "maxItems": 4}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{"type": "integer"}], "additionalItems": false}),
        json!({"type": "array", "items": {"enum": ["a", "b", "c"]}, "uniqueItems": true}),
        json!({"type": "array", "items": {"type": "integer"}, "contains": {"const": 3}, "minContains": 2, "maxContains": 3}),
        json!({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}, "required": ["v"], "additionalProperties": false}}, "$ref": "#/$defs/node"}),
        json!({"$schema": "http://json-schema.org/draft-07/schema#", "definitions": {"n": {"$id": "#num", "type": "integer"}}, "type": "array", "items": {"$ref": "#num"}}),
        json!({"$defs": {"n": {"$anchor": "num", "type": "integer", "maximum": 9}}, "type": "array", "items": {"$ref": "#num"}}),
        json!({"type": "object", "properties": {"when": {"type": "string", "format": "date-time"}, "day": {"format": "date", "type": "string"},
               "mail": {"type": "string", "format": "email"}, "ip": {"type": "string", "format": "ipv4"}, "id": {"type": "string", "format": "uuid"},
               "t": {"type": "string", "format": "time"}, "d": {"type": "string", "format": "duration"}, "h": {"type": "string", "format": "hostname"},
               "v6": {"type": "string", "format": "ipv6"}, "u": {"type": "string", "format": "uri"}}, "additionalProperties": false}),
        json!({"$schema": "http://json-schema.org/draft-04/schema#", "type": "number", "exclusiveMinimum": true, "minimum": 0, "maximum": 1}),
        json!({}),
    ];
    for s in &schemas {
        let distinct = assert_sound(s, 150);
        assert!(
            distinct > 1 || s.get("const").is_some(),
            "{s}: only {distinct} distinct documents"
        );
    }
}

#[test]
fn keywords_accept_and_reject_what_they_should() {
    let js = JsonSchema::new(&json!({
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": false
    }))
    .unwrap();
    assert!(js.accepts(r#"{"a":1}"#));
    assert!(!js.accepts("{\"a\":-12,\"b\":\"x\ny\"}")); // a raw newline is not JSON
    assert!(js.accepts(r#"{"a":-12,"b":"x\ny"}"#));
    assert!(!js.accepts(r#"{"b":"x"}"#));
    assert!(!js.accepts(r#"{"a":1,"c":2}"#));
    assert!(!js.accepts(r#"{"a":1.5}"#));
    // allOf is a real intersection: both required properties, in schema order.
    let all = JsonSchema::new(&json!({"allOf": [
        {"properties": {"a": {"type": "integer"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"]}
    ]}))
    .unwrap();
    assert!(all.accepts(r#"{"a":1,"b":2}"#) && !all.accepts(r#"{"a":1}"#));
    // oneOf excludes documents matching both branches.
    let one = JsonSchema::new(
        &json!({"oneOf": [{"type": "integer", "multipleOf": 2}, {"type": "integer", "multipleOf": 3}]}),
    )
    .unwrap();
    assert!(one.accepts("4") && one.accepts("9") && !one.accepts("6"));
    // Recursion unrolls to the nesting limit.
    let list = JsonSchema::with_config(
        &json!({"type": "object", "properties": {"next": {"$ref": "#"}}, "additionalProperties": false}),
        JsonSchemaConfig {
            limits: Limits {
                json_depth: 3,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    assert!(list.accepts(r#"{"next":{"next":{}}}"#) && !list.accepts(r#"{"next":{"next":{"next":{}}}}"#));
    // Bounded pretty-printing is one exact layout too.
    let pretty = JsonSchema::with_config(
        &json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}}},
                "required": ["a"], "additionalProperties": false}),
        JsonSchemaConfig {
            layout: Layout::Pretty { indent: 2, max_levels: 2 },
            ..Default::default()
        },
    )
    .unwrap();
    assert!(pretty.accepts("{\n  \"a\": 1,\n  \"b\": [\n    2,\n    3\n  ]\n}"));
    assert!(pretty.accepts("{\n  \"a\": 1,\n  \"b\": []\n}"));
    assert!(!pretty.accepts(r#"{"a":1}"#));
    // Canonical layout: keys in schema order, compact.
    assert_eq!(js.canonical(&json!({"b": "x", "a": 1})), r#"{"a":1,"b":"x"}"#);
}

#[test]
fn bad_schemas_are_clear_errors() {
    let msg = |r: Result<JsonSchema, diffusion_lm_controllers::ControllerError>| r.unwrap_err().to_string();
    assert!(msg(JsonSchema::from_json("{\"type\": ")).contains("not valid JSON"));
    assert!(msg(JsonSchema::new(&json!({"type": 5}))).contains("type"));
    assert!(msg(JsonSchema::new(&json!({"type": "strin"}))).contains("unknown type"));
    let remote = msg(JsonSchema::new(&json!({"$ref": "https://example.com/s.json#/a"})));
    assert!(remote.contains("outside this document"), "{remote}");
    assert!(msg(JsonSchema::new(&json!({"$ref": "#/definitions/missing"}))).contains("does not resolve"));
    let unsat = msg(JsonSchema::new(&json!({"type": "integer", "minimum": 5, "maximum": 1})));
    assert!(unsat.contains("no document satisfies"), "{unsat}");
    let look = msg(JsonSchema::new(&json!({"type": "string", "pattern": "(?=a)b"})));
    assert!(look.contains("#/pattern") && look.contains("look"), "{look}");
    let kw = msg(JsonSchema::new(
        &json!({"properties": {"a": {"unevaluatedProperties": false}}}),
    ));
    assert!(
        kw.contains("#/properties/a") && kw.contains("`unevaluatedProperties`"),
        "{kw}"
    );
    let huge = msg(JsonSchema::with_config(
        &json!({"type": "string", "pattern": "^[ab]*a[ab]{12}$"}),
        JsonSchemaConfig {
            limits: Limits {
                json_states: 200,
                ..Default::default()
            },
            ..Default::default()
        },
    ));
    assert!(huge.contains("states"), "{huge}");
    assert!(msg(JsonSchema::from_file("/nonexistent/schema.json")).contains("cannot read"));
}

fn sample_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jsonschema")
}

#[test]
fn real_schemas_compile_and_agree_with_their_labels() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(sample_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20);
    let (mut compiled, mut agree) = (0, 0);
    for f in &files {
        let case = SuiteCase::load(f).unwrap();
        let r = check_case(&case, &JsonSchemaConfig::default());
        // Soundness: no invalid instance is ever accepted.
        assert!(r.unsound.is_empty(), "{}: accepted invalid {:?}", case.name, r.unsound);
        if r.error.is_none() {
            compiled += 1;
            agree += usize::from(r.agrees());
            // Random documents of real schemas validate too.
            assert_sound(&case.schema, 20);
        }
    }
    assert!(
        compiled * 10 >= files.len() * 9,
        "only {compiled}/{} compiled",
        files.len()
    );
    assert!(
        agree * 10 >= compiled * 9,
        "only {agree}/{compiled} agree with their labels"
    );
}

#[test]
fn generates_valid_restaurant_records_with_the_shipped_model() {
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu).unwrap();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/schemas/restaurant.json");
    let js = JsonSchema::from_file(&path).unwrap();
    let docs = Generator::new(&lm)
        .constrain(js.clone())
        .steps(20)
        .seed(3)
        .generate(3)
        .unwrap();
    for d in &docs {
        let v: Value = serde_json::from_str(&d.text).unwrap();
        js.validate(&v).unwrap();
        assert!(js.accepts(&d.text));
    }
    // A sequence too short for any valid document is refused before sampling, with the length needed.
    let e = Generator::new(&lm)
        .constrain(js)
        .length(8)
        .steps(5)
        .generate(1)
        .unwrap_err();
    assert!(matches!(e, Error::Unsatisfiable(_)), "{e}");
    assert!(e.to_string().contains("needs at least"), "{e}");
}
