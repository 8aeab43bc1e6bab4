//! Hard constraints hold on every output: proptest over random regexes, lengths and templates,
//! the Viterbi projection against brute force, and stacks of several controllers.

use std::sync::OnceLock;

use candle_core::Device;
use diffusion_lm::steer::automaton::TokenAutomaton;
use diffusion_lm::steer::projection::{best_sequence, constrained_marginals};
use diffusion_lm::steer::Constraint;
use diffusion_lm::train::{train_diffusion, TrainConfig};
use diffusion_lm::{DiffusionLm, Error, Generator, ModelConfig, TextTokenizer};
use diffusion_lm_controllers::{Infill, Length, Regex};
use proptest::prelude::*;

const CORPUS: [&str; 6] = [
    "the cat sat on the mat",
    "a dog ran in the park",
    "call 555 0199 today",
    "born on 2021-03-04",
    "mail bob@example.com now",
    "the bird sang a song",
];

/// A small model trained for a few seconds: constraints must hold whatever its quality.
fn model() -> &'static DiffusionLm {
    static LM: OnceLock<DiffusionLm> = OnceLock::new();
    LM.get_or_init(|| {
        let texts: Vec<&str> = CORPUS.iter().cycle().take(60).copied().collect();
        let tok = TextTokenizer::train(texts.into_iter(), 320).unwrap();
        let cfg = ModelConfig {
            vocab_size: tok.vocab_size(),
            pad_id: tok.pad_id(),
            seq_len: 24,
            embed_dim: 8,
            hidden: 32,
            layers: 1,
            heads: 2,
            ffn_hidden: 64,
            dropout: 0.0,
            diffusion_steps: 100,
            schedule: diffusion_lm::engine::ScheduleKind::Sqrt,
            x0_head: diffusion_lm::engine::X0Head::Direct,
            clean_context: false,
        };
        let train = TrainConfig {
            steps: 150,
            batch_size: 16,
            lr: 3e-3,
            warmup_steps: 10,
            log_every: 50,
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("dlm-constraints-{}", std::process::id()));
        train_diffusion(cfg, tok, &CORPUS, train, &dir, &Device::Cpu).unwrap()
    })
}

fn gen(g: Generator, n: usize) -> Result<Vec<diffusion_lm::Sample>, Error> {
    g.steps(8).batch_size(n).generate(n)
}

#[test]
fn regex_outputs_always_match() {
    let lm = model();
    for pattern in [
        r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
        r"[a-z]+@[a-z]+\.(com|org)",
        r"\(?[0-9]{3}\)? [0-9]{3}-[0-9]{4}",
        r"(cat|dog|bird|fish|cow|pig|hen|owl|fox|bee|ant|elk|yak|emu|eel|ape|bat|rat|gnu|koi)",
        r"[A-Z][a-z]* is (near|in) the [a-z]+\.",
        r"the [a-z ]+",
    ] {
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        let out = gen(Generator::new(lm).constrain(Regex::new(pattern).unwrap()).seed(3), 6).unwrap();
        for s in out {
            assert!(re.is_match(&s.text), "{pattern}: {:?}", s.text);
        }
    }
}

#[test]
fn stacks_of_several_controllers_hold_together() {
    let lm = model();
    let out = gen(
        Generator::new(lm)
            .constrain(Regex::new(r"[a-z ]+").unwrap())
            .constrain(Infill::new("the ___ sat ___").unwrap())
            .constrain(Length::between(5, 9).unwrap()),
        8,
    )
    .unwrap();
    let pad = lm.tokenizer.pad_id();
    for s in out {
        let n = s.ids.iter().position(|&t| t == pad).unwrap_or(s.ids.len());
        assert!((5..=9).contains(&n), "{n} tokens: {:?}", s.text);
        assert!(s.text.starts_with("the ") && s.text.contains(" sat "), "{:?}", s.text);
        assert!(
            s.text.chars().all(|c| c.is_ascii_lowercase() || c == ' '),
            "{:?}",
            s.text
        );
    }
    // Two regexes intersect.
    let out = gen(
        Generator::new(lm)
            .constrain(Regex::new(r"[a-z]+ [a-z]+").unwrap())
            .constrain(Regex::new(r"c.*t").unwrap()),
        4,
    )
    .unwrap();
    for s in out {
        assert!(
            regex::Regex::new(r"^c[a-z]* [a-z]*t$").unwrap().is_match(&s.text),
            "{:?}",
            s.text
        );
    }
}

#[test]
fn unsatisfiable_stacks_fail_before_sampling() {
    let lm = model();
    let err = gen(Generator::new(lm).constrain(Regex::new(r"[0-9]{200}").unwrap()), 1).unwrap_err();
    assert!(
        matches!(err, Error::Unsatisfiable(ref m) if m.contains("needs at least")),
        "{err}"
    );
    let err = gen(
        Generator::new(lm)
            .constrain(Regex::new("a").unwrap())
            .constrain(Regex::new("b").unwrap()),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unsatisfiable(_)), "{err}");
    let err = gen(Generator::new(lm).constrain(Length::exact(30)), 1).unwrap_err();
    assert!(matches!(err, Error::Unsatisfiable(_)), "{err}");
    let err = gen(
        Generator::new(lm)
            .constrain(Length::exact(0))
            .constrain(Regex::new("[a-z]").unwrap()),
        1,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Unsatisfiable(_)), "{err}");
    assert!(Regex::new(r"(a").is_err());
    assert!(Regex::new(r"\bfoo(?!bar)").is_err());
}

#[test]
fn soft_then_hard_projection_still_satisfies_every_constraint() {
    let lm = model();
    for fraction in [0.5, 1.0] {
        let out = gen(
            Generator::new(lm)
                .constrain(Regex::new(r"(the|a) [a-z]+ [a-z ]+").unwrap())
                .constrain(Length::between(3, 10).unwrap())
                .soft_projection(fraction, 1.0),
            6,
        )
        .unwrap();
        for s in out {
            assert!(
                regex::Regex::new(r"^(the|a) [a-z]+ [a-z ]+$")
                    .unwrap()
                    .is_match(&s.text),
                "{:?}",
                s.text
            );
        }
    }
}

#[test]
fn dfa_blow_up_is_a_clear_error() {
    let tight = diffusion_lm_controllers::RegexConfig {
        limits: diffusion_lm_controllers::Limits {
            regex_dfa_bytes: 10_000,
            regex_determinize_bytes: 10_000,
            regex_token_states: 100,
            ..Default::default()
        },
    };
    let err = Regex::with_config(r"[ab]*a[ab]{20}", tight).unwrap_err();
    assert!(err.to_string().contains("[ab]*a[ab]{20}"), "{err}");
}

/// Brute force over every sequence of a tiny synthetic lattice.
fn brute_force(scores: &[f32], len: usize, vocab: usize, a: &TokenAutomaton, pad: u32) -> Option<f32> {
    let mut best: Option<f32> = None;
    let total = vocab.pow(len as u32);
    for code in 0..total {
        let seq: Vec<u32> = (0..len)
            .map(|p| ((code / vocab.pow(p as u32)) % vocab) as u32)
            .collect();
        let n = seq.iter().position(|&t| t == pad).unwrap_or(len);
        if seq[n..].iter().any(|&t| t != pad) || !a.accepts(&seq[..n]) {
            continue;
        }
        let s: f32 = seq
            .iter()
            .enumerate()
            .map(|(p, &t)| scores[p * vocab + t as usize])
            .sum();
        if s.is_finite() && best.is_none_or(|b| s > b) {
            best = Some(s);
        }
    }
    best
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn viterbi_equals_brute_force(
        states in 1usize..5,
        edges in proptest::collection::vec((0u32..5, 1u32..4, 0u32..5), 0..20),
        accepting in proptest::collection::vec(any::<bool>(), 5),
        scores in proptest::collection::vec(-3.0f32..3.0, 5 * 4),
        len in 1usize..6,
    ) {
        let vocab = 4; // token 0 is PAD
        let mut out = vec![Vec::new(); states];
        for (s, t, d) in edges {
            let (s, d) = (s as usize % states, d % states as u32);
            if !out[s].iter().any(|&(tt, _)| tt == t) { out[s].push((t, d)); }
        }
        let a = TokenAutomaton::from_edges(0, accepting[..states].to_vec(), out);
        let scores = &scores[..len * vocab];
        let dp = best_sequence(scores, len, vocab, &a, 0);
        let bf = brute_force(scores, len, vocab, &a, 0);
        match (dp, bf) {
            (None, None) => {}
            (Some((ids, s)), Some(b)) => {
                prop_assert!((s - b).abs() < 1e-4, "dp {s} vs brute force {b}");
                let n = ids.iter().position(|&t| t == 0).unwrap_or(len);
                prop_assert!(a.accepts(&ids[..n]));
                prop_assert!(ids[n..].iter().all(|&t| t == 0));
            }
            (dp, bf) => prop_assert!(false, "dp {dp:?} vs brute force {bf:?}"),
        }
        // Forward–backward marginals equal the brute-force marginals of the constrained distribution.
        let fb = constrained_marginals(scores, len, vocab, &a, 0, 0.7);
        let mut z = 0f64;
        let mut bm = vec![0f64; len * vocab];
        for code in 0..vocab.pow(len as u32) {
            let seq: Vec<u32> = (0..len).map(|p| ((code / vocab.pow(p as u32)) % vocab) as u32).collect();
            let n = seq.iter().position(|&t| t == 0).unwrap_or(len);
            if seq[n..].iter().any(|&t| t != 0) || !a.accepts(&seq[..n]) { continue; }
            let w = (seq.iter().enumerate().map(|(p, &t)| scores[p * vocab + t as usize] as f64).sum::<f64>() / 0.7).exp();
            z += w;
            for (p, &t) in seq.iter().enumerate() { bm[p * vocab + t as usize] += w; }
        }
        match fb {
            None => prop_assert!(z == 0.0),
            Some(m) => {
                for (x, y) in m.iter().zip(&bm) {
                    prop_assert!((*x as f64 - y / z).abs() < 1e-3, "marginal {x} vs {}", y / z);
                }
            }
        }
    }

    #[test]
    fn random_regexes_lengths_and_templates_always_hold(
        atoms in proptest::collection::vec(prop_oneof![
            Just("[a-z]"), Just("[0-9]"), Just("(cat|dog)"), Just(" "), Just("-"), Just("[a-z]+"),
            Just("the"), Just("[0-9]{2}"), Just("(a|b)?"), Just("x*"),
        ], 1..6),
        min_len in 1usize..12,
        extra in 0usize..12,
        word in prop_oneof![Just("the"), Just("cat"), Just("on"), Just("a")],
        seed in 0u64..1000,
    ) {
        let lm = model();
        let pattern: String = atoms.concat();
        let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        let (lo, hi) = (min_len, min_len + extra);
        match gen(Generator::new(lm).constrain(Regex::new(&pattern).unwrap()).constrain(Length::between(lo, hi).unwrap()).seed(seed), 3) {
            Ok(out) => for s in out {
                prop_assert!(re.is_match(&s.text), "{pattern}: {:?}", s.text);
                let n = s.ids.iter().position(|&t| t == lm.tokenizer.pad_id()).unwrap_or(s.ids.len());
                prop_assert!(n >= lo && n <= hi, "{n} not in {lo}..={hi}");
            },
            Err(Error::Unsatisfiable(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
        let template = format!("{word} ___ on ___");
        match gen(Generator::new(lm).constrain(Infill::new(&template).unwrap()).seed(seed), 2) {
            Ok(out) => for s in out {
                prop_assert!(s.text.starts_with(&format!("{word} ")) && s.text.contains(" on "), "{template}: {:?}", s.text);
            },
            Err(Error::Unsatisfiable(_)) => {}
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}

/// `Infill::check` (matching by hand) against the `regex` crate on the template's language:
/// each hole one or more characters other than a line break, not ending in a space or
/// punctuation where the fixed text after it opens with punctuation.
fn infill_language(template: &str) -> regex::Regex {
    let parts: Vec<&str> = template.split("___").collect();
    let mut pattern = regex::escape(parts[0]);
    for p in &parts[1..] {
        let closing = p.starts_with(['.', ',', ';', ':', '!', '?', ')']);
        pattern.push_str(if closing { r"[^\n]*[^\s.,;:!?)]" } else { r"[^\n]+" });
        pattern.push_str(&regex::escape(p));
    }
    regex::Regex::new(&format!("^(?:{pattern})$")).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn infill_check_accepts_exactly_the_template_language(
        template in prop::sample::select(vec!["a ___ b ___", "___ is a ___.", "{\"k\": \"___\"}", "\"___\" said x", "x___y___", "___", "near ___, by ___!"]),
        fills in prop::collection::vec("[ab{}\"\n., !xy]{0,4}", 3),
    ) {
        static TOK: OnceLock<TextTokenizer> = OnceLock::new();
        let tok = TOK.get_or_init(|| TextTokenizer::train(CORPUS.iter().copied(), 300).unwrap());
        let infill = Infill::new(template).unwrap();
        let parts: Vec<&str> = template.split("___").collect();
        let mut text = parts[0].to_string();
        for (part, fill) in parts[1..].iter().zip(&fills) {
            text.push_str(fill);
            text.push_str(part);
        }
        let expected = infill_language(template).is_match(&text);
        let got = infill.check(&text, &[], tok);
        prop_assert_eq!(got.is_ok(), expected, "{:?} under {:?}: {:?}", text, template, got);
    }
}
