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
            Err(e) if js.approximations().iter().any(|a| a.keyword == "uniqueItems") => {
                assert!(e.contains("unique"), "{e}")
            }
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

/// The sample of real schemas with labelled instances, in name order.
fn sample_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jsonschema");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn real_schemas_compile_and_agree_with_their_labels() {
    let files = sample_files();
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

/// One valid instance per listed class of disagreement that the differential tester found on
/// real schemas, each now handled exactly.
#[test]
fn canonical_texts_make_bounds_keys_patterns_and_complements_exact() {
    let canon = |js: &JsonSchema, v: Value| js.canonical(&v);
    // Decimal bounds: numbers have one text, exponents and trailing zeros written out.
    let js = JsonSchema::new(&json!({"type": "number", "minimum": 0.01, "maximum": 2.5})).unwrap();
    for (v, ok) in [
        (json!(1e-2), true),
        (json!(25e-1), true),
        (json!(0.0), false),
        (json!(0.001), false),
        (json!(2.5000001), false),
    ] {
        let t = canon(&js, v.clone());
        assert_eq!(js.accepts(&t), ok, "{v} as {t}");
    }
    assert_eq!(canon(&js, json!(1e-5)), "0.00001");
    assert_eq!(canon(&js, json!(3.0)), "3");
    let js = JsonSchema::new(&json!({"exclusiveMinimum": 0})).unwrap();
    assert!(js.accepts("0.00001") && !js.accepts("0") && !js.accepts("-0") && !js.accepts("1e-5"));
    // Keys with any characters, written as serde_json writes them.
    let js = JsonSchema::new(&json!({"properties": {"a\"b": {"type": "integer"}, "general ": {}}, "required": ["a\"b"], "additionalProperties": false})).unwrap();
    assert!(js.accepts(&canon(&js, json!({"a\"b": 1, "general ": "x"}))));
    assert!(!js.accepts(r#"{"a\u0022b":1}"#), "only the canonical escape");
    // Patterns see decoded values, with ECMA-262's `.` and `\s`.
    let js = JsonSchema::new(&json!({"type": "string", "pattern": "^a.b$"})).unwrap();
    assert!(js.accepts(r#""a\"b""#) && js.accepts(r#""a\\b""#) && !js.accepts(r#""a\nb""#) && !js.accepts(r#""a\rb""#));
    let js = JsonSchema::new(&json!({"type": "string", "pattern": "^a\\sb$"})).unwrap();
    assert!(js.accepts(r#""a\u000bb""#) && js.accepts("\"a\u{feff}b\"") && !js.accepts("\"a\u{85}b\""));
    // Complements: `not` of a pattern admits no escaped string the pattern matches.
    let js = JsonSchema::new(&json!({"type": "string", "not": {"pattern": "x"}})).unwrap();
    assert!(!js.accepts(r#""\nx""#) && js.accepts(r#""\ny""#));
    // Overlapping `oneOf` branches: exactly one, including free values nested deeper than
    // `json_any_depth` in one branch and spelled out in the other.
    let js = JsonSchema::new(&json!({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]})).unwrap();
    assert!(js.accepts("-3") && js.accepts("0.5") && !js.accepts("3"));
    let deep =
        json!({"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "array"}}}});
    let js = JsonSchema::new(&json!({"type": "object", "properties": {"v": {"oneOf": [{"type": "array"}, deep]}}, "additionalProperties": false})).unwrap();
    assert!(!js.accepts(r#"{"v":[[[[]]]]}"#), "both branches match");
    assert!(!js.accepts(r#"{"v":[]}"#) && js.accepts(r#"{"v":[1]}"#));
    for doc in [r#"{"v":[[[[]]]]}"#, r#"{"v":[[[[1]]]]}"#] {
        assert!(js.check_text(doc).is_err(), "{doc} is invalid");
    }
    // Draft 4: `1.0` is a number, not an integer; `$ref` replaces its siblings.
    let d4 = "http://json-schema.org/draft-04/schema#";
    let js = JsonSchema::new(
        &json!({"$schema": d4, "type": "object", "properties": {"id": {"type": "integer"}, "n": {"enum": [1]}}}),
    )
    .unwrap();
    assert!(!js.accepts(&canon(&js, json!({"id": 12345.0}))));
    assert!(js.accepts(&canon(&js, json!({"id": 12345}))));
    assert!(js.accepts(r#"{"n":1}"#) && js.accepts(r#"{"n":1.0}"#));
    let js = JsonSchema::new(&json!({"$schema": d4, "definitions": {"l": {"type": "array"}}, "properties": {"p": {"$ref": "#/definitions/l", "maxItems": 1}}, "additionalProperties": false})).unwrap();
    assert!(js.accepts(r#"{"p":[1,2]}"#));
    // Leap days are dates; the local part of an email stays within 64 characters.
    let js = JsonSchema::new(&json!({"type": "string", "format": "date"})).unwrap();
    assert!(
        js.accepts(r#""2024-02-29""#)
            && js.accepts(r#""2000-02-29""#)
            && !js.accepts(r#""2023-02-29""#)
            && !js.accepts(r#""1900-02-29""#)
    );
}

#[test]
fn approximations_are_listed_with_their_pointers() {
    let exact =
        JsonSchema::from_file(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/schemas/restaurant.json"))
            .unwrap();
    assert!(exact.is_exact(), "{:?}", exact.approximations());
    let js = JsonSchema::new(&json!({
        "type": "object",
        "properties": {
            "a": {"type": "string", "maxLength": 1000},
            "b": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
            "c": {"not": {"type": "string", "format": "email"}},
            "d": {"type": "object"}
        },
        "additionalProperties": false
    }))
    .unwrap();
    assert!(!js.is_exact());
    let listed: Vec<(String, String)> = js
        .approximations()
        .iter()
        .map(|a| (a.keyword.clone(), a.pointer.clone()))
        .collect();
    for (k, p) in [
        ("maxLength", "#/properties/a"),
        ("uniqueItems", "#/properties/b"),
        ("format", "#/properties/c/not"),
        ("additionalProperties", "#/properties/d"),
        // Free values hold objects with free keys: the value of `d`'s free keys, and the
        // universe `not` takes its complement in.
        ("free value", "#/properties/d/additionalProperties"),
        ("free value", "#/properties/c"),
        // ... and that universe's objects, which have free keys of their own.
        ("additionalProperties", "#/properties/c"),
        ("free value", "#/properties/c/additionalProperties"),
    ] {
        assert!(
            listed.contains(&(k.to_string(), p.to_string())),
            "{k} at {p} missing from {listed:?}"
        );
    }
    assert_eq!(listed.len(), 8, "{listed:?}");
    // A complement over typed objects below its top level cannot pin their key order.
    let js = JsonSchema::new(&json!({"not": {"properties": {"x": {"properties": {"a": {}}}}}})).unwrap();
    assert!(js
        .approximations()
        .iter()
        .any(|a| a.keyword == "not" && a.pointer == "#"));
    // `uniqueItems` over a small finite set of items is exact.
    assert!(
        !JsonSchema::new(&json!({"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": true}))
            .unwrap()
            .approximations()
            .iter()
            .any(|a| a.keyword == "uniqueItems")
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Differential testing on the real sample schemas: random documents of each automaton and
    /// mutants of its valid instances, judged by the `jsonschema` crate. No accepted invalid
    /// document may lack a stated cause, and neither may a rejected valid one.
    #[test]
    fn automata_agree_with_the_validator_on_mutants_and_random_documents(file in 0usize..64, seed in 0u64..1000) {
        use diffusion_lm_controllers::json_schema::differential::{differential, DifferentialConfig};
        let files = sample_files();
        let case = SuiteCase::load(&files[file % files.len()]).unwrap();
        let Ok(js) = JsonSchema::new(&case.schema) else { return Ok(()) };
        let valid: Vec<Value> = case.tests.iter().filter(|(v, _)| *v).map(|(_, d)| d.clone()).collect();
        let cfg = DifferentialConfig { samples: 8, max_mutants: 80, seed, ..DifferentialConfig::default() };
        let r = differential(&js, &valid, &cfg);
        let unsound: Vec<String> = r.unsound().map(|d| format!("{} ({}): {}", d.text, d.origin, d.detail)).collect();
        proptest::prop_assert!(unsound.is_empty(), "{}: accepted invalid {unsound:#?}", case.name);
        let incomplete: Vec<String> = r.incomplete().map(|d| format!("{} ({})", d.text, d.origin)).collect();
        proptest::prop_assert!(incomplete.is_empty(), "{}: rejected valid {incomplete:#?}", case.name);
        proptest::prop_assert!(r.mutants == 0 || r.mutants_valid < r.mutants, "no mutant is invalid");
    }
}

/// A decimal with more significant digits than a double holds reads back as another value
/// (`405842704927754.01` as the integer `405842704927754`): the automaton writes none, so an
/// integer branch and a free branch of `oneOf` cannot both match what it accepts.
#[test]
fn numbers_keep_to_the_digits_a_double_holds() {
    let js = JsonSchema::new(&serde_json::json!({"oneOf": [{"type": "integer"}, {}]})).unwrap();
    assert!(!js.accepts("405842704927754.01"));
    assert!(!js.accepts("0.30000000000000004"));
    assert!(js.accepts("12345678901234.5"));
    assert!(js.accepts("0.000000000000000123456789012345"));
    let plain = JsonSchema::new(&serde_json::json!({"type": "number"})).unwrap();
    assert!(plain.accepts("0.1") && plain.accepts("123456789012345") && !plain.accepts("1234567890123456"));
    // Where no value is compared, any fraction is a number to both sides.
    assert!(plain.accepts("0.30000000000000004") && plain.accepts("1.00000000000000000001"));
    // Non-strict bounds survive rounding; strict ones, `not` and `if` need the digits kept.
    let at_least = JsonSchema::new(&serde_json::json!({"type": "number", "minimum": 0.1})).unwrap();
    assert!(at_least.accepts("0.10000000000000000001") && !at_least.accepts("0.09"));
    let above = JsonSchema::new(&serde_json::json!({"type": "number", "exclusiveMinimum": 0.1})).unwrap();
    assert!(!above.accepts("0.10000000000000000001") && above.accepts("0.100000000000001"));
    let fraction = JsonSchema::new(&serde_json::json!({"type": "number", "not": {"type": "integer"}})).unwrap();
    assert!(!fraction.accepts("1.00000000000000000001") && fraction.accepts("1.5"));
    let cond = serde_json::json!({"if": {"type": "integer"}, "then": {"minimum": 5}, "else": {"maximum": 0}});
    let cond = JsonSchema::new(&cond).unwrap();
    assert!(!cond.accepts("1.00000000000000000001") && cond.accepts("6") && cond.accepts("-0.5"));
    // A complement of branches that do not tell numbers apart by value keeps every digit.
    let either = JsonSchema::new(&serde_json::json!({"oneOf": [{"type": "number"}, {"enum": ["NE"]}]})).unwrap();
    assert!(either.accepts("-0.30000000000000004") && either.accepts("\"NE\""));
    let validator = jsonschema::validator_for(
        &serde_json::json!({"if": {"type": "integer"}, "then": {"minimum": 5}, "else": {"maximum": 0}}),
    )
    .unwrap();
    assert!(!validator.is_valid(&serde_json::from_str("1.00000000000000000001").unwrap()));
}
