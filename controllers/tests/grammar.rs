//! The Grammar controller: the shipped GBNF files compile; every string their depth-bounded
//! automata accept is derived by the independent Earley recogniser (and, for JSON, parsed by
//! serde_json); bad grammars are clear errors; generation with the shipped model parses.

mod common;

use std::path::PathBuf;

use common::{distances, random_document};
use diffusion_lm::{DiffusionLm, Generator};
use diffusion_lm_controllers::{ControllerError, Grammar, GrammarConfig, Limits};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn grammar_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../grammars").join(name)
}

const FILES: [&str; 4] = ["json.gbnf", "arithmetic.gbnf", "sql_select.gbnf", "statements.gbnf"];

#[test]
fn every_accepted_string_is_in_the_language() {
    for file in FILES {
        let g = Grammar::from_file(grammar_file(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let dist = distances(g.dfa());
        let mut rng = StdRng::seed_from_u64(7);
        let mut distinct = std::collections::HashSet::new();
        for _ in 0..150 {
            let bytes = random_document(g.dfa(), &dist, &mut rng, 40);
            let text = String::from_utf8(bytes).unwrap_or_else(|e| panic!("{file}: not UTF-8: {e}"));
            assert!(
                g.recognizes(&text),
                "{file}: the automaton accepts {text:?}, the grammar does not"
            );
            if file == "json.gbnf" {
                serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            }
            distinct.insert(text);
        }
        assert!(distinct.len() > 50, "{file}: only {} distinct strings", distinct.len());
    }
}

#[test]
fn hand_written_sentences_are_accepted_and_non_sentences_rejected() {
    let cases: [(&str, &[&str], &[&str]); 4] = [
        (
            "json.gbnf",
            &[r#"{"a": [1, 2.5, -3e2], "b": {"c": null}}"#, "[]", r#"["x\n\u00e9", true]"#],
            &["{", r#"{"a" 1}"#, "[1,]", "01", r#"{"a": [[[[1]]]]}"#],
        ),
        (
            "arithmetic.gbnf",
            &["1 + 2 * 3", "(1+2)/-4.5", "((7))", "-(2 * 3 - 1)"],
            &["1 +", "(1", "1 ++ 2", "", "(((1)))"],
        ),
        (
            "sql_select.gbnf",
            &[
                "SELECT * FROM t;",
                "SELECT DISTINCT name, COUNT(*) FROM users WHERE (age >= 18 AND city = 'Oslo') ORDER BY name DESC LIMIT 10;",
            ],
            &["SELECT FROM t;", "select * from t;", "SELECT * FROM t"],
        ),
        (
            "statements.gbnf",
            &["x = 1; while (x < 10) { x = x + 1; } print(x);", "if (a == b) { } else { print(1); }"],
            &["x = ;", "while x < 1 { }", "print(x)"],
        ),
    ];
    for (file, good, bad) in cases {
        let g = Grammar::from_file(grammar_file(file)).unwrap();
        for t in good {
            assert!(g.recognizes(t), "{file}: the grammar rejects {t:?}");
            assert!(g.accepts(t), "{file}: the automaton rejects {t:?}");
        }
        for t in bad {
            assert!(!g.accepts(t), "{file}: the automaton accepts {t:?}");
            // Nested deeper than the depth bound: in the language, outside the automaton.
            if *t != r#"{"a": [[[[1]]]]}"# && *t != "(((1)))" {
                assert!(!g.recognizes(t), "{file}: the grammar accepts {t:?}");
            }
        }
    }
    // The depth bound is a setting: deeper nesting compiles in with a larger one.
    let deep = Grammar::from_file_with_config(
        grammar_file("json.gbnf"),
        GrammarConfig {
            limits: Limits {
                grammar_depth: 12,
                ..Limits::default()
            },
        },
    )
    .unwrap();
    assert!(deep.accepts(r#"{"a": [[[[1]]]]}"#));
}

#[test]
fn bad_grammars_are_clear_errors() {
    let err = |text: &str| match Grammar::from_gbnf(text) {
        Err(e @ ControllerError::Grammar { .. }) => e.to_string(),
        Err(other) => panic!("{text:?}: unexpected error kind {other}"),
        Ok(_) => panic!("{text:?} compiled"),
    };
    assert!(err("root ::= value").contains("rule `value` (used in `root`) is not defined"));
    assert!(err("start ::= \"a\"").contains("no `root` rule"));
    assert!(err("root ::= \"a\"\nroot ::= \"b\"").contains("defined twice"));
    assert!(err("root ::= \"a\" (\"b\"").contains("line 1, column 14: unclosed `(`"));
    assert!(err("root ::= \"abc").contains("unclosed string literal"));
    assert!(err("root ::= [z-a]").contains("empty range"));
    assert!(err("root ::= \"a\"{3,1}").contains("min ≤ max"));
    assert!(err("root ::= \"\\q\"").contains("unknown escape"));
    assert!(err("root ::= \"a\" root").contains("language is empty"));
    assert!(err("# nothing\n").contains("defines no rule"));
    assert!(
        err("root ::= \"a\"\n  x").contains("expected `::=` after rule name `x`")
            || err("root ::= \"a\"\n  x").contains("`x`")
    );
    let missing = Grammar::from_file("no/such/file.gbnf").err().unwrap().to_string();
    assert!(missing.contains("cannot read grammar"), "{missing}");
}

#[test]
fn generation_with_the_shipped_model_parses() {
    let lm = DiffusionLm::load(DiffusionLm::default_dir(), &candle_core::Device::Cpu).unwrap();
    for file in ["arithmetic.gbnf", "json.gbnf"] {
        let g = Grammar::from_file(grammar_file(file)).unwrap();
        let samples = Generator::new(&lm)
            .constrain(g.clone())
            .length(32)
            .steps(10)
            .seed(1)
            .generate(2)
            .unwrap();
        for s in samples {
            assert!(g.recognizes(&s.text), "{file}: {:?}", s.text);
        }
    }
}
