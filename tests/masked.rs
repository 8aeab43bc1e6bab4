//! The masked engine: exact constrained sampling, training, determinism.

mod common;

use candle_core::Device;
use common::*;
use diffusion_lm::masked::{masked_trainer, MaskedConfig, MaskedGenerator, MaskedLm, Remasking};
use diffusion_lm::steer::projection::sample_sequence;
use diffusion_lm::steer::{Constraint, ConstraintContext, Restriction};
use diffusion_lm::TextTokenizer;
use diffusion_lm_controllers::{Infill, Length, Regex};
use proptest::prelude::*;
use rand::SeedableRng;

/// A masked model with random weights: its logits are arbitrary, which is what the exactness
/// property must survive.
fn random_model(tok: &TextTokenizer, seed: u64) -> MaskedLm {
    let cfg = MaskedConfig {
        seq_len: 12,
        ..MaskedConfig::tiny(tok.vocab_size(), tok.pad_id())
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let vars = diffusion_lm::nn::init_varmap(
        &diffusion_lm::masked::MaskedDenoiser::param_specs(&cfg),
        &mut rng,
        &Device::Cpu,
    )
    .unwrap();
    let weights = vars
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    MaskedLm::from_weights(cfg, tok.clone(), weights, &Device::Cpu).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Whatever the logits, the temperature, the commit order and the stack, every output is
    /// valid (the generator also re-checks each output with the independent validators and
    /// would fail otherwise; this checks again with the `regex` crate).
    #[test]
    fn constrained_sampling_from_random_logits_is_always_valid(
        seed in 0u64..1000,
        temperature in prop::sample::select(vec![0.0f32, 0.3, 1.0, 3.0]),
        order in prop::sample::select(vec![Remasking::LowConfidence, Remasking::Random, Remasking::Entropy, Remasking::Margin]),
        stack in 0usize..4,
        block in prop::option::of(1usize..8),
        top_k in prop::option::of(1usize..4),
        top_p in prop::option::of(0.1f32..1.0),
        threshold in prop::option::of(0.3f32..1.0),
        self_correct in 0usize..3,
        lookahead in 0usize..4,
        candidates in 1usize..4,
        length_first in any::<bool>(),
        edits in 0usize..3,
        drop_doubled in any::<bool>(),
    ) {
        let tok = toy_tokenizer();
        let lm = random_model(&tok, seed);
        let (pattern, g) = match stack {
            0 => ("(the|a) [a-z ]+", MaskedGenerator::new(&lm).constrain(Regex::new("(the|a) [a-z ]+").unwrap())),
            1 => (".*", MaskedGenerator::new(&lm).constrain(Length::between(3, 6).unwrap())),
            2 => ("the .+ sat .+", MaskedGenerator::new(&lm).constrain(Infill::new("the ___ sat ___").unwrap())),
            _ => ("[a-z]+ [a-z]+", MaskedGenerator::new(&lm)
                .constrain(Regex::new("[a-z]+ [a-z]+").unwrap())
                .constrain(Length::between(2, 4).unwrap())),
        };
        let mut g = g
            .steps(6)
            .seed(seed)
            .temperature(temperature)
            .remasking(order)
            .batch_size(2)
            .self_correct(self_correct, 0.5)
            .lookahead(lookahead, candidates)
            .length_first(length_first)
            .edits(edits)
            .drop_doubled_words(drop_doubled);
        if let Some(b) = block {
            g = g.block_size(b);
        }
        if let Some(k) = top_k {
            g = g.top_k(k);
        }
        if let Some(p) = top_p {
            g = g.top_p(p);
        }
        if let (Some(t), Remasking::LowConfidence) = (threshold, order) {
            g = g.confidence_threshold(t);
        }
        let re = regex::Regex::new(&format!("^(?s:{pattern})$")).unwrap();
        for s in g.generate(3).unwrap() {
            prop_assert!(re.is_match(&s.text), "{:?} does not match {pattern}", s.text);
            let pad = tok.pad_id();
            let end = s.ids.iter().position(|&t| t == pad).unwrap_or(s.ids.len());
            prop_assert!(s.ids[end..].iter().all(|&t| t == pad), "content after the PAD tail: {:?}", s.ids);
            if stack == 1 {
                prop_assert!((3..=6).contains(&end), "{end} tokens");
            }
        }
    }

    /// The lattice sampler alone: random scores, a regex automaton, every sample accepted.
    #[test]
    fn sampled_sequences_are_accepted_by_the_automaton(seed in 0u64..1000, temperature in 0.1f32..4.0) {
        let tok = toy_tokenizer();
        let index = diffusion_lm::steer::TokenIndex::new(&tok);
        let regex = Regex::new("(the|my) [a-z]+ (sat|ran)").unwrap();
        let ctx = ConstraintContext { tokenizer: &tok, index: &index, seq_len: 10 };
        let Restriction::Automaton(automaton) = regex.restrictions(&ctx).unwrap().remove(0) else {
            panic!("a regex is an automaton")
        };
        let v = tok.vocab_size();
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let scores: Vec<f32> = (0..10 * v).map(|_| rand::Rng::gen_range(&mut rng, -5.0f32..5.0)).collect();
        for _ in 0..4 {
            let ids = sample_sequence(&scores, 10, v, &automaton, tok.pad_id(), temperature, &mut rng).unwrap();
            let end = ids.iter().position(|&t| t == tok.pad_id()).unwrap_or(ids.len());
            prop_assert!(automaton.accepts(&ids[..end]));
            prop_assert!(ids[end..].iter().all(|&t| t == tok.pad_id()));
        }
    }
}

#[test]
fn generate_each_hands_over_the_same_samples_batch_by_batch_and_stops_on_an_error() {
    let tok = toy_tokenizer();
    let lm = random_model(&tok, 3);
    let g = MaskedGenerator::new(&lm)
        .constrain(Regex::new("(the|a) [a-z ]+").unwrap())
        .steps(4)
        .seed(5)
        .batch_size(2);
    let all: Vec<String> = g.generate(5).unwrap().into_iter().map(|s| s.text).collect();
    let mut batches = Vec::new();
    g.generate_each(5, |batch| {
        batches.push(batch.into_iter().map(|s| s.text).collect::<Vec<_>>());
        Ok::<(), diffusion_lm::Error>(())
    })
    .unwrap();
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    assert_eq!(batches.concat(), all);
    // An error from the caller ends the run after that batch.
    let mut calls = 0;
    let err = g
        .generate_each(5, |_| {
            calls += 1;
            Err(diffusion_lm::Error::Config("reader gone".into()))
        })
        .unwrap_err();
    assert_eq!(calls, 1);
    assert!(err.to_string().contains("reader gone"), "{err}");
}

/// Whether `ids` hold a word token (leading space, letters only) right after the same token.
fn has_doubled_word(tok: &TextTokenizer, ids: &[u32]) -> bool {
    ids.windows(2).any(|w| {
        w[0] == w[1]
            && tok
                .id_to_token(w[0])
                .and_then(|s| {
                    s.strip_prefix('Ġ')
                        .map(|w| w.chars().all(char::is_alphabetic) && !w.is_empty())
                })
                .unwrap_or(false)
    })
}

#[test]
fn doubled_words_are_dropped_where_the_constraints_allow_it() {
    let tok = toy_tokenizer();
    let lm = random_model(&tok, 11);
    let run = |pattern: &str, drop: bool, seed: u64| {
        MaskedGenerator::new(&lm)
            .constrain(Regex::new(pattern).unwrap())
            .steps(12)
            .temperature(1.0)
            .seed(seed)
            .drop_doubled_words(drop)
            .generate(16)
            .unwrap()
    };
    let word = |t: u32| {
        tok.id_to_token(t)
            .and_then(|s| {
                s.strip_prefix('Ġ')
                    .map(|w| !w.is_empty() && w.chars().all(char::is_alphabetic))
            })
            .unwrap_or(false)
    };
    let mut dropped = 0;
    for seed in 1..4 {
        // Any number of cats: the text without the copies is valid, and is what comes out (the
        // same draws, then the copies dropped).
        let (kept, cleaned) = (
            run("a cat( cat)* sat", false, seed),
            run("a cat( cat)* sat", true, seed),
        );
        for (k, c) in kept.iter().zip(&cleaned) {
            let content = &k.ids[..tok.content_len(&k.ids)];
            let want: Vec<u32> = content
                .iter()
                .enumerate()
                .filter(|&(p, &t)| !(p > 0 && content[p - 1] == t && word(t)))
                .map(|(_, &t)| t)
                .collect();
            dropped += content.len() - want.len();
            assert_eq!(c.text, tok.decode(&want), "from {:?}", k.text);
            assert_eq!(c.ids.len(), k.ids.len());
            assert!(!has_doubled_word(&tok, &c.ids), "{:?}", c.ids);
        }
        // Exactly three cats: dropping a copy would break the constraint, so they stay.
        for s in run("a cat cat cat", true, seed) {
            assert_eq!(s.text, "a cat cat cat");
        }
    }
    assert!(dropped > 0, "no doubled word to drop");
}

#[test]
fn edits_change_some_texts_keep_them_valid_and_do_not_depend_on_the_batch_size() {
    let tok = toy_tokenizer();
    let lm = random_model(&tok, 13);
    let pattern = "(the|a) [a-z ]+";
    let re = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
    let base = || {
        MaskedGenerator::new(&lm)
            .constrain(Regex::new(pattern).unwrap())
            .steps(12)
            .seed(4)
    };
    let plain = base().batch_size(8).generate(8).unwrap();
    let edited = base().edits(2).batch_size(8).generate(8).unwrap();
    for b in [1, 3] {
        assert_eq!(
            base().edits(2).batch_size(b).generate(8).unwrap(),
            edited,
            "batch size {b}"
        );
    }
    for s in &edited {
        assert!(re.is_match(&s.text), "{:?}", s.text);
    }
    // From arbitrary logits, some least-likely token is worth deleting or preceding.
    assert!(
        plain.iter().zip(&edited).any(|(a, b)| a.ids != b.ids),
        "no text was edited"
    );
    // Fixed tokens hold their positions: no edits.
    let fixed = || base().fixed(vec![(0, plain[0].ids[0])]).batch_size(8);
    assert_eq!(fixed().edits(2).generate(8).unwrap(), fixed().generate(8).unwrap());
}

#[test]
fn best_of_keeps_a_candidate_at_least_as_natural_as_the_first_draw_on_any_batch_size() {
    let tok = toy_tokenizer();
    let lm = random_model(&tok, 7);
    let base = || {
        MaskedGenerator::new(&lm)
            .constrain(Regex::new("(the|a) [a-z ]+").unwrap())
            .steps(4)
            .seed(9)
    };
    let first = base().batch_size(8).generate(8).unwrap();
    assert_eq!(base().best_of(1).batch_size(8).generate(8).unwrap(), first);
    let best = base().best_of(4).batch_size(8).generate(8).unwrap();
    assert_eq!(base().best_of(4).batch_size(3).generate(8).unwrap(), best);
    let scorer = base();
    let ids = |s: &[diffusion_lm::generate::Sample]| s.iter().map(|s| s.ids.clone()).collect::<Vec<_>>();
    let (n_first, n_best) = (
        scorer.naturalness(&ids(&first)).unwrap(),
        scorer.naturalness(&ids(&best)).unwrap(),
    );
    let re = regex::Regex::new("^(the|a) [a-z ]+$").unwrap();
    for (i, s) in best.iter().enumerate() {
        assert!(re.is_match(&s.text), "{:?}", s.text);
        // The first draw is a candidate: the kept one reads at least as well.
        assert!(
            n_best[i] >= n_first[i] - 1e-9,
            "sample {i}: {} < {}",
            n_best[i],
            n_first[i]
        );
    }
    // Four draws of eight samples from arbitrary logits: the first is rarely the best of all.
    assert!(best != first, "best of 4 kept every first draw");
    assert!(n_best.iter().sum::<f64>() > n_first.iter().sum::<f64>());
    // Bad input is refused with its place.
    let err = scorer.naturalness(&[vec![tok.pad_id(); 3]]).unwrap_err();
    assert!(err.to_string().contains("sequence 0 has 3 tokens"), "{err}");
    let err = MaskedGenerator::new(&lm).best_of(0).generate(1).unwrap_err();
    assert!(err.to_string().contains("best-of"), "{err}");
}

#[test]
fn guides_repairs_and_bad_settings_are_refused_clearly() {
    let tok = toy_tokenizer();
    let lm = random_model(&tok, 1);
    let err = MaskedGenerator::new(&lm)
        .steps(0)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("steps must be at least 1"), "{err}");
    let err = MaskedGenerator::new(&lm)
        .temperature(-1.0)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("temperature"), "{err}");
    let err = MaskedGenerator::new(&lm)
        .constrain(Length::exact(30))
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sequence holds 12"), "{err}");
    let stack = diffusion_lm::Stack::new().repair(diffusion_lm_controllers::SyntaxTree::json());
    let err = MaskedGenerator::new(&lm)
        .stack(stack)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("not available on the masked engine"), "{err}");
}

#[test]
fn a_tiny_masked_model_learns_and_samples_the_same_on_any_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = MaskedConfig {
        seq_len: 12,
        hidden: 64,
        ..MaskedConfig::tiny(tok.vocab_size(), tok.pad_id())
    };
    let texts: Vec<&str> = TOY.to_vec();
    let mut trainer = masked_trainer(
        cfg.clone(),
        tok.clone(),
        &texts,
        toy_train_config(300),
        dir.path(),
        &Device::Cpu,
    )
    .unwrap();
    trainer.run(false).unwrap();
    let history = &trainer.state().history;
    let (first, last) = (history[0].values[1], history[history.len() - 1].values[1]);
    assert!(last < first * 0.5, "masked cross-entropy {first} → {last}");
    let lm = MaskedLm::load(dir.path(), &Device::Cpu).unwrap();
    let run = |batch: usize| {
        MaskedGenerator::new(&lm)
            .steps(12)
            .seed(9)
            .batch_size(batch)
            .generate(4)
            .unwrap()
    };
    let samples = run(4);
    assert_eq!(samples, run(1), "the same seed gives the same text on any batch size");
    let corrected = |batch: usize| {
        MaskedGenerator::new(&lm)
            .steps(12)
            .seed(9)
            .batch_size(batch)
            .self_correct(2, 0.9)
            .generate(4)
            .unwrap()
    };
    assert_eq!(corrected(4), corrected(1), "self-correction too");
    let looked = |batch: usize| {
        MaskedGenerator::new(&lm)
            .constrain(Regex::new("[a-z ]+").unwrap())
            .steps(12)
            .seed(9)
            .batch_size(batch)
            .lookahead(3, 3)
            .generate(4)
            .unwrap()
    };
    assert_eq!(looked(4), looked(1), "lookahead too");
    let length_first = |batch: usize| {
        MaskedGenerator::new(&lm)
            .steps(12)
            .seed(9)
            .batch_size(batch)
            .length_first(true)
            .self_correct(1, 0.9)
            .generate(4)
            .unwrap()
    };
    let drawn = length_first(4);
    assert_eq!(drawn, length_first(1), "length first too");
    // Without constraints nothing else keeps the PAD tail whole: the length drawn first does.
    for s in &drawn {
        let end = s.ids.iter().position(|&t| t == tok.pad_id()).unwrap_or(s.ids.len());
        assert!(
            end > 0 && s.ids[end..].iter().all(|&t| t == tok.pad_id()),
            "{:?}",
            s.ids
        );
    }
    // Trained on four sentences, greedy sampling writes one of them.
    let greedy = MaskedGenerator::new(&lm)
        .steps(12)
        .temperature(0.0)
        .generate(2)
        .unwrap();
    for s in &greedy {
        assert!(TOY.contains(&s.text.trim()), "{:?}", s.text);
    }
    assert_eq!(
        diffusion_lm::masked::engine_of(dir.path()).unwrap(),
        diffusion_lm::masked::Engine::Masked
    );
}

#[test]
fn parallel_decoding_commits_the_certain_tokens_at_once_and_stays_valid() {
    let lm = MaskedLm::load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/e2e-masked"),
        &Device::Cpu,
    )
    .unwrap();
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/schemas/restaurant.json");
    let g = MaskedGenerator::new(&lm)
        .constrain(diffusion_lm_controllers::JsonSchema::from_file(&schema).unwrap())
        .steps(64)
        .seed(1)
        .confidence_threshold(0.9)
        .batch_size(8);
    let samples = g.generate(8).unwrap();
    // The schema's keys and punctuation are certain under the constraint: far fewer passes.
    assert!(g.forward_passes() < 32, "{} forward passes", g.forward_passes());
    for s in &samples {
        let doc: serde_json::Value = serde_json::from_str(&s.text).unwrap();
        assert!(doc.is_object(), "{}", s.text);
    }
    // Self-correction scores every token (4 passes) and re-commits what it masks again, within
    // the constraints.
    let template = r"[A-Z][A-Za-z ]+ is a (pub|restaurant|coffee shop)[a-z ,]* near [A-Z][A-Za-z ]+\.";
    let g = MaskedGenerator::new(&lm)
        .constrain(Regex::new(template).unwrap())
        .steps(64)
        .seed(1)
        .self_correct(1, 1.0)
        .batch_size(4);
    let samples = g.generate(4).unwrap();
    // 64 steps, 4 scoring passes, then one step per re-masked token of the busiest row (at most a
    // quarter of the span).
    let passes = g.forward_passes();
    assert!((64 + 4 + 1..=64 + 4 + 16).contains(&passes), "{passes} forward passes");
    let re = regex::Regex::new(&format!("^(?:{template})$")).unwrap();
    for s in &samples {
        assert!(re.is_match(&s.text), "{}", s.text);
    }
    // Lookahead: a one-word slot. Without it the slot starts with the model's favourite first
    // word, `The`, and sub-word debris must finish the word ("Thename"); with it the first
    // commits weigh what the model predicts next, and the slot holds a one-word name.
    let short = r"[A-Z][a-z]+ is a (pub|restaurant) near [A-Z][a-z]+\.";
    let names = [
        "Alimentum",
        "Wildwood",
        "Giraffe",
        "Clowns",
        "Cocum",
        "Zizzi",
        "Aromi",
        "Cotto",
        "Strada",
        "Fitzbillies",
    ];
    let named = |lookahead: usize| {
        let g = MaskedGenerator::new(&lm)
            .constrain(Regex::new(short).unwrap())
            .seed(1)
            .lookahead(lookahead, 4)
            .batch_size(8);
        let samples = g.generate(8).unwrap();
        let passes = g.forward_passes();
        let n = samples
            .iter()
            .filter(|s| names.iter().any(|n| s.text.starts_with(&format!("{n} "))))
            .count();
        (n, passes)
    };
    let ((with, passes), (without, plain)) = (named(4), named(0));
    assert!(
        with >= 6 && with > without,
        "one-word names: {with}/8 with lookahead, {without}/8 without"
    );
    // Each lookahead commit of the batch costs at most 4 more (partial-batch) passes.
    assert!(
        passes > plain && passes <= plain + 8 * 4 * 4,
        "{passes} passes against {plain}"
    );
    // Length first: the tail is not grown inward one PAD at a time, so the sentences come out
    // at the corpus's length (23 words on average) instead of squeezed (about 11).
    let sentence = r#"[A-Z][^{}"\n]*[.!?]"#;
    let words = |first: bool| {
        let g = MaskedGenerator::new(&lm)
            .constrain(Regex::new(sentence).unwrap())
            .seed(2)
            .length_first(first)
            .batch_size(16);
        let samples = g.generate(16).unwrap();
        let words: usize = samples.iter().map(|s| s.text.split_whitespace().count()).sum();
        (words as f64 / 16.0, g.forward_passes())
    };
    let ((long, passes), (short, plain)) = (words(true), words(false));
    assert!(
        long > 16.0 && long > 1.4 * short,
        "{long} words a sentence with length first, {short} without"
    );
    // Two more passes (the first token and the length) and none for the tail.
    assert!(passes < plain, "{passes} passes against {plain}");
    let e = MaskedGenerator::new(&lm)
        .lookahead(1, 0)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("lookahead"), "{e}");
    let e = MaskedGenerator::new(&lm)
        .self_correct(1, 0.0)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("self-correction threshold"), "{e}");
    let e = MaskedGenerator::new(&lm)
        .remasking(Remasking::Entropy)
        .confidence_threshold(0.9)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("low-confidence"), "{e}");
}

/// Soft control on the masked engine: a classifier of masked text, trained on the toy corpus's
/// animals, moves the samples to the target animal; a classifier of latents is refused there,
/// and one of masked text on the continuous engine.
#[test]
fn a_classifier_of_masked_text_guides_the_masked_engine() {
    use diffusion_lm::scoring::classifier::{masked_classifier_trainer, ClassifierConfig, LatentClassifier};
    use diffusion_lm::steer::GuideInput;
    use diffusion_lm::text::corpus::{Example, Labels};
    use diffusion_lm_controllers::Attribute;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let tok = toy_tokenizer();
    let cfg = MaskedConfig {
        seq_len: 12,
        hidden: 64,
        ..MaskedConfig::tiny(tok.vocab_size(), tok.pad_id())
    };
    let model_dir = dir.path().join("model");
    let texts: Vec<&str> = TOY.to_vec();
    masked_trainer(
        cfg,
        tok.clone(),
        &texts,
        toy_train_config(300),
        &model_dir,
        &Device::Cpu,
    )
    .unwrap()
    .run(false)
    .unwrap();
    let lm = MaskedLm::load(&model_dir, &Device::Cpu).unwrap();
    let examples: Vec<Example> = TOY
        .iter()
        .zip(["cat", "dog", "bird", "fish"])
        .map(|(text, animal)| Example {
            text: text.to_string(),
            labels: Some(Labels {
                fields: vec![("animal".into(), animal.into())],
            }),
        })
        .collect();
    let clf_cfg = ClassifierConfig {
        reads: GuideInput::Masked,
        vocab_size: Some(tok.vocab_size()),
        ..animal_config(16, 12, 1000)
    };
    let clf_dir = dir.path().join("classifier");
    masked_classifier_trainer(
        clf_cfg,
        tok.clone(),
        &examples,
        toy_train_config(300),
        &clf_dir,
        &Device::Cpu,
    )
    .unwrap()
    .run(false)
    .unwrap();
    let clf = Arc::new(LatentClassifier::load(&clf_dir, &Device::Cpu).unwrap());
    assert_eq!(clf.token_embeddings().unwrap().dims(), &[tok.vocab_size() + 1, 16]);
    let n = 24;
    let fish = |s: &[diffusion_lm::Sample]| s.iter().filter(|s| s.text.contains("fish")).count();
    let run = |g: MaskedGenerator| g.steps(12).seed(5).generate(n).unwrap();
    let plain = fish(&run(MaskedGenerator::new(&lm)));
    let target = || {
        Attribute::new(&clf, "animal", "fish", 2.0)
            .unwrap()
            .reading(GuideInput::Masked)
            .unwrap()
    };
    let guided = fish(&run(MaskedGenerator::new(&lm).guide(target())));
    assert!(
        guided >= 2 * plain.max(3) && guided * 3 >= n * 2,
        "fish in {guided}/{n} guided samples, {plain}/{n} unguided"
    );
    // It composes with hard constraints: every output valid, still mostly fish.
    let constrained = run(MaskedGenerator::new(&lm)
        .guide(target())
        .constrain(Regex::new("[a-z ]+").unwrap()));
    assert!(constrained
        .iter()
        .all(|s| s.text.chars().all(|c| c.is_ascii_lowercase() || c == ' ')));
    assert!(
        fish(&constrained) * 3 >= n * 2,
        "fish in {}/{n} constrained samples",
        fish(&constrained)
    );

    // A classifier of latents cannot read masked text, and the continuous engine cannot guide
    // with a classifier of masked text.
    let err = Attribute::new(&clf, "animal", "fish", 1.0)
        .unwrap()
        .reading(GuideInput::Latent)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("only the masked engine"), "{err}");
    let continuous = train_toy(&dir.path().join("continuous"), 50);
    let err = diffusion_lm::Generator::new(&continuous)
        .guide(target())
        .steps(4)
        .generate(1)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("only the masked engine writes"), "{err}");
}
