//! The synthetic generator and the corruptions.

mod common;

use airlift_worker::airl::corrupt::{self, all_steps_true, first_error_token, strip_calculator_annotations, CorruptionKind, CONSISTENT_KINDS, KINDS};
use airlift_worker::airl::synth::{self, split_of, Split, SynthConfig, TEMPLATES};
use airlift_worker::gsm8k;
use airlift_worker::rng::SplitMix64;
use airlift_worker::tokenizer::Tokenizer;
use std::collections::HashSet;

fn hard() -> SynthConfig {
    SynthConfig {
        min_steps: 1,
        max_steps: 6,
        start_range: (2, 60),
        addend_range: (1, 40),
        factor_range: (2, 9),
        max_value: 5000,
        ..Default::default()
    }
}

#[test]
fn expert_answers_recompute_and_end_with_the_final_line() {
    for cfg in [SynthConfig::default(), hard()] {
        cfg.validate().unwrap();
        for p in synth::dataset(&cfg, 11, 2000, Split::Train) {
            let lines: Vec<&str> = p.problem.answer.lines().collect();
            assert_eq!(lines.len(), p.steps.len() + 1, "{}", p.problem.answer);
            // Each line holds exactly its step, recomputed from the operands.
            for (line, s) in lines.iter().zip(&p.steps) {
                assert_eq!(s.op.apply(s.a, s.b), Some(s.result));
                assert!(line.contains(&format!("{} {} {} = {}", s.a, s.op.symbol(), s.b, s.result)), "{line}");
            }
            for w in p.steps.windows(2) {
                assert_eq!(w[0].result, w[1].a, "steps chain");
            }
            assert!(all_steps_true(&p.problem.answer));
            assert_eq!(p.problem.reference(), Some(p.answer.to_string()));
            assert_eq!(*lines.last().unwrap(), format!("#### {}", p.answer));
            assert!((cfg.min_steps..=cfg.max_steps).contains(&p.steps.len()));
        }
    }
}

#[test]
fn ten_thousand_distinct_problems_seeded_and_split() {
    let cfg = SynthConfig::default();
    let a = synth::dataset(&cfg, 5, 10_000, Split::Train);
    let qs: HashSet<&str> = a.iter().map(|p| p.problem.question.as_str()).collect();
    assert_eq!(qs.len(), 10_000);
    // The raw generator rarely repeats itself (about 2 % at the easy default knobs, mostly
    // one-step problems); `dataset` drops the repeats.
    let raw: HashSet<String> = (0..10_000).filter_map(|i| synth::generate(&cfg, 5, i)).map(|p| p.problem.question).collect();
    println!("raw generator: {} distinct of 10000", raw.len());
    assert!(raw.len() > 9_700, "raw generator repeats too often: {} distinct", raw.len());
    let b = synth::dataset(&cfg, 5, 10_000, Split::Train);
    assert!(a.iter().zip(&b).all(|(x, y)| x.problem == y.problem), "same seed, same data");
    let c = synth::dataset(&cfg, 6, 100, Split::Train);
    assert_ne!(a[0].problem, c[0].problem);
    let eval = synth::dataset(&cfg, 5, 1_000, Split::Eval);
    assert!(eval
        .iter()
        .all(|p| split_of(&p.problem.question) == Split::Eval && !qs.contains(p.problem.question.as_str())));
    let templates: HashSet<&str> = a.iter().map(|p| p.template).collect();
    assert!(
        TEMPLATES.len() >= 20 && templates.len() == TEMPLATES.len(),
        "{} templates used",
        templates.len()
    );
    println!("example:\n{}\n{}", a[0].problem.question, a[0].problem.answer);
}

/// Checks one corruption: the trace is now wrong, and the first error token lies in the changed
/// line.
fn check(tok: &Tokenizer, original: &str, c: &corrupt::Corruption) {
    let p = gsm8k::Problem {
        question: "q".into(),
        answer: original.to_string(),
    };
    let graded_wrong = !gsm8k::grade(&c.text, &p).1;
    assert!(graded_wrong || !all_steps_true(&c.text), "{:?} left the trace right:\n{}", c.kind, c.text);
    assert_eq!(
        original[..c.first_error_byte],
        c.text[..c.first_error_byte],
        "text before the error is unchanged"
    );
    assert_ne!(original.as_bytes().get(c.first_error_byte), c.text.as_bytes().get(c.first_error_byte));
    let (ids, offsets) = tok.encode_with_offsets(&c.text).unwrap();
    let k = first_error_token(&offsets, c.first_error_byte);
    assert!(k < ids.len());
    let line_start = c.text[..c.first_error_byte].rfind('\n').map_or(0, |i| i + 1);
    let line_end = c.text[c.first_error_byte..].find('\n').map_or(c.text.len(), |i| c.first_error_byte + i);
    let (s, e) = offsets[k];
    assert!(
        s >= line_start.saturating_sub(1) && e <= line_end,
        "token {k} {:?} outside the changed line {line_start}..{line_end}",
        (s, e)
    );
    assert!(
        s <= c.first_error_byte && c.first_error_byte < e.max(s + 1),
        "token {k} does not cover byte {}",
        c.first_error_byte
    );
}

#[test]
fn corruptions_of_synthetic_experts_are_wrong_and_located() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let mut rng = SplitMix64::new(3);
    let mut made = [0usize; 3];
    for p in synth::dataset(&hard(), 9, 300, Split::Train) {
        for (i, kind) in KINDS.iter().enumerate() {
            if let Some(c) = corrupt::corrupt(&p.problem.answer, *kind, &mut rng) {
                check(&tok, &p.problem.answer, &c);
                made[i] += 1;
            }
        }
    }
    println!("corruptions made (flip, nudge, alter): {made:?} of 300 each");
    assert!(made.iter().all(|&m| m >= 290), "{made:?}");
}

#[test]
fn corruptions_of_real_gsm8k_answers_are_wrong_and_located() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let rows = gsm8k::load(&common::cache().join("data").join("gsm8k").join("test.jsonl")).unwrap();
    let mut rng = SplitMix64::new(4);
    let mut made = [0usize; 3];
    for r in rows.iter().take(300) {
        let clean = strip_calculator_annotations(&r.answer);
        assert!(!clean.contains("<<"));
        for (i, kind) in KINDS.iter().enumerate() {
            if let Some(c) = corrupt::corrupt(&clean, *kind, &mut rng) {
                check(&tok, &clean, &c);
                made[i] += 1;
            }
        }
    }
    println!("real GSM8K corruptions made (flip, nudge, alter): {made:?} of 300 each");
    assert_eq!(made[1], 300, "every GSM8K answer has a final line to nudge");
    assert!(made[0] > 250 && made[2] > 250, "{made:?}");
    // The nudge kind names its kind.
    let c = corrupt::corrupt("2 + 3 = 5\n#### 5", CorruptionKind::AnswerNudge, &mut rng).unwrap();
    assert!(c.text == "2 + 3 = 5\n#### 6" || c.text == "2 + 3 = 5\n#### 4");
}

/// A consistent corruption: every line still holds, the final answer is wrong, and the first
/// wrong token is on the changed line ([`check`]).
fn check_consistent(tok: &Tokenizer, original: &str, c: &corrupt::Corruption) {
    check(tok, original, c);
    assert!(all_steps_true(&c.text), "{:?} left a false line:\n{}", c.kind, c.text);
    let p = gsm8k::Problem {
        question: "q".into(),
        answer: original.to_string(),
    };
    assert!(!gsm8k::grade(&c.text, &p).1, "{:?} kept the final answer:\n{}", c.kind, c.text);
}

#[test]
fn consistent_corruptions_keep_every_line_true_and_change_the_answer() {
    let tok = Tokenizer::from_dir(&common::smollm2_dir()).unwrap();
    let mut rng = SplitMix64::new(5);
    let mut made = [0usize; 2];
    for p in synth::dataset(&hard(), 9, 300, Split::Train) {
        for (i, kind) in CONSISTENT_KINDS.iter().enumerate() {
            if let Some(c) = corrupt::corrupt_in(&p.problem.question, &p.problem.answer, *kind, &mut rng) {
                check_consistent(&tok, &p.problem.answer, &c);
                made[i] += 1;
            }
        }
    }
    println!("synthetic consistent corruptions made (operation, quantity): {made:?} of 300 each");
    assert!(made.iter().all(|&m| m >= 250), "{made:?}");
    let rows = gsm8k::load(&common::cache().join("data").join("gsm8k").join("test.jsonl")).unwrap();
    let mut made = [0usize; 2];
    let mut shown = 0;
    for r in rows.iter().take(300) {
        let clean = strip_calculator_annotations(&r.answer);
        for (i, kind) in CONSISTENT_KINDS.iter().enumerate() {
            if let Some(c) = corrupt::corrupt_in(&r.question, &clean, *kind, &mut rng) {
                check_consistent(&tok, &clean, &c);
                made[i] += 1;
                if shown < 2 {
                    println!("--- {:?}\n{clean}\n--- becomes\n{}", c.kind, c.text);
                    shown += 1;
                }
            }
        }
    }
    println!("real GSM8K consistent corruptions made (operation, quantity): {made:?} of 300 each");
    assert!(made.iter().all(|&m| m >= 150), "{made:?}");
    for k in KINDS.iter().chain(&CONSISTENT_KINDS) {
        assert_eq!(CorruptionKind::from_name(k.name()), Some(*k));
        assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.name()));
    }
}
