//! Fuzzing the command line's value parsers: `--length` ([`super::parse_length`]),
//! `--attribute` ([`Attribute::parse`]), `--sampler` ([`SamplerKind`]) and `--guidance-rule`
//! ([`GuidanceRule`]). Every input gives a value or an error with a message, never a panic, and
//! well-formed inputs give exactly the value they spell.
//!
//! The default number of cases keeps this module to a few seconds; `FUZZ_CASES=N` runs N cases
//! per property (`benches/fuzz.sh` does a long run).

use std::fmt::Debug;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use diffusion_lm::scoring::classifier::LatentClassifier;
use diffusion_lm::{GuidanceRule, SamplerKind};
use diffusion_lm_controllers::Attribute;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

#[path = "../../tests/support/fuzz_harness.rs"]
mod fuzz_harness;

/// [`fuzz_harness::fuzz`] on `FUZZ_CASES` (else `default`) cases (`test` returns whether the
/// input parsed).
fn fuzz<S: Strategy>(name: &str, default: u32, strategy: S, test: impl Fn(S::Value) -> Result<bool, TestCaseError>)
where
    S::Value: Debug,
{
    fuzz_harness::fuzz("cli", "parsed", name, fuzz_harness::cases(default, 1), strategy, test)
}

fn nonempty(msg: String) -> Result<bool, TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "empty error message");
    Ok(false)
}

/// Numbers as a user might type them, valid or not.
fn number_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0usize..200).prop_map(|n| n.to_string()),
        any::<usize>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "",
            " ",
            "0",
            "-0",
            "+3",
            " 7 ",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "1e3",
            "0x10",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "1_000",
            "٣",
            "１",
            "1.5",
            ".5",
            "5.",
            "1e-400",
            "1e400",
            "\u{0}",
        ])
        .prop_map(String::from),
    ]
}

#[test]
fn length_spec() {
    let spec = prop_oneof![
        2 => any::<String>(),
        2 => "[0-9 .=-]{0,12}",
        4 => (number_text(), prop::sample::select(vec!["..", "..=", " .. ", "...", "..==", "=..", ".", ""]), number_text())
            .prop_map(|(a, sep, b)| format!("{a}{sep}{b}")),
    ];
    fuzz("length", 3000, spec, |spec| match super::parse_length(&spec) {
        Ok(_) => Ok(true),
        Err(e) => nonempty(format!("{e:#}")),
    });
}

#[test]
fn length_spec_values() {
    // Well-formed specs give exactly the range they spell.
    let n = prop_oneof![0usize..100, any::<usize>()];
    let spec = (
        n.clone(),
        prop::option::of((prop::sample::select(vec!["..", "..=", " ..= "]), n)),
    );
    fuzz("length_values", 2000, spec, |(lo, hi)| {
        let text = match &hi {
            None => lo.to_string(),
            Some((sep, hi)) => format!("{lo}{sep}{hi}"),
        };
        let expected = hi.map_or((lo, lo), |(_, hi)| (lo, hi));
        match super::parse_length(&text) {
            Ok(l) => {
                prop_assert_eq!(l.range(), expected, "{}", text);
                Ok(true)
            }
            Err(e) => {
                prop_assert!(expected.0 > expected.1, "{text} rejected: {e:#}");
                nonempty(format!("{e:#}"))
            }
        }
    });
}

/// The shipped attribute classifier, loaded once.
fn classifier() -> &'static Arc<LatentClassifier> {
    static C: OnceLock<Arc<LatentClassifier>> = OnceLock::new();
    C.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/e2e/classifier");
        let c = LatentClassifier::load(&dir, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        Arc::new(c)
    })
}

/// A known field and one of its values.
fn field_value() -> impl Strategy<Value = (String, String)> {
    let fields: Vec<(String, Vec<String>)> = classifier()
        .config()
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.values.clone()))
        .collect();
    (prop::sample::select(fields), any::<prop::sample::Index>())
        .prop_map(|((name, values), i)| (name, i.get(&values).clone()))
}

#[test]
fn attribute_spec() {
    let spec = prop_oneof![
        2 => any::<String>(),
        1 => "[a-zA-Z =:.0-9-]{0,20}",
        4 => (
            field_value(),
            prop::sample::select(vec!["=", " = ", "==", ":", ""]),
            prop::option::of(prop_oneof![number_text(), "[a-z:]{0,4}"]),
            any::<bool>(),
        )
            .prop_map(|((f, v), eq, w, upper)| {
                let f = if upper { f.to_uppercase() } else { f };
                match w {
                    Some(w) => format!("{f}{eq}{v}:{w}"),
                    None => format!("{f}{eq}{v}"),
                }
            }),
    ];
    fuzz("attribute", 2000, spec, |spec| {
        match Attribute::parse(classifier(), &spec) {
            Ok(a) => {
                // What parsed is one of the classifier's targets.
                let (f, v) = a.target();
                let known = classifier()
                    .config()
                    .fields
                    .iter()
                    .any(|s| s.name == f && s.values.iter().any(|x| x == v));
                prop_assert!(known, "{spec:?} parsed to unknown target {f}={v}");
                Ok(true)
            }
            Err(e) => nonempty(e.to_string()),
        }
    });
}

#[test]
fn attribute_spec_values() {
    // `field=value[:weight]` with a known target parses exactly when the weight is positive.
    let weight = prop_oneof![
        Just(None),
        (0.001f64..100.0).prop_map(Some),
        prop::sample::select(vec![
            0.0,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            5e-324
        ])
        .prop_map(Some),
    ];
    fuzz("attribute_values", 1000, (field_value(), weight), |((f, v), w)| {
        let spec = match w {
            Some(w) => format!("{f}={v}:{w}"),
            None => format!("{f}={v}"),
        };
        match Attribute::parse(classifier(), &spec) {
            Ok(a) => {
                prop_assert_eq!(a.target(), (f.as_str(), v.as_str()));
                prop_assert!(w.is_none_or(|w| w.is_finite() && w > 0.0), "{spec} accepted");
                Ok(true)
            }
            Err(e) => {
                prop_assert!(w.is_some_and(|w| !(w.is_finite() && w > 0.0)), "{spec} rejected: {e}");
                nonempty(e.to_string())
            }
        }
    });
}

#[test]
fn sampler_spec() {
    let spec = prop_oneof![
        2 => any::<String>(),
        1 => prop::sample::select(vec!["ddpm", "ddim", "DDPM", "ddim:", "ddpm:0.5", " ddim", "ddim:0.5:1"]).prop_map(String::from),
        4 => (prop::sample::select(vec!["ddim:", "ddim: ", "ddim;", "ddpm:"]), number_text()).prop_map(|(p, n)| format!("{p}{n}")),
    ];
    fuzz("sampler", 3000, spec, |spec| match SamplerKind::from_str(&spec) {
        Ok(SamplerKind::Ddim { eta }) => {
            prop_assert!((0.0..=1.0).contains(&eta), "{spec:?} gave eta {eta}");
            Ok(true)
        }
        Ok(SamplerKind::Ddpm) => {
            prop_assert_eq!(spec.as_str(), "ddpm");
            Ok(true)
        }
        Ok(SamplerKind::Renoise) => {
            prop_assert_eq!(spec.as_str(), "renoise");
            Ok(true)
        }
        Err(e) => nonempty(e),
    });
}

#[test]
fn guidance_rule_spec() {
    let spec = prop_oneof![
        2 => any::<String>(),
        1 => prop::sample::select(vec!["sign", "normalized", "adam", "adagrad", "adam:", "Sign", "sign:1", "adam:1:2"]).prop_map(String::from),
        4 => (prop::sample::select(vec!["adam:", "adagrad:", "adam: ", "adam="]), number_text()).prop_map(|(p, n)| format!("{p}{n}")),
    ];
    fuzz("guidance_rule", 3000, spec, |spec| {
        match GuidanceRule::from_str(&spec) {
            Ok(GuidanceRule::Adam { lr } | GuidanceRule::Adagrad { lr }) => {
                prop_assert!(lr.is_finite() && lr > 0.0, "{spec:?} gave learning rate {lr}");
                Ok(true)
            }
            Ok(_) => {
                prop_assert!(spec == "sign" || spec == "normalized", "{spec:?} parsed");
                Ok(true)
            }
            Err(e) => nonempty(e.to_string()),
        }
    });
}
