//! The evaluation job as a user meets it (`coordinator eval`, tiny model, processes on
//! loopback), on checkpoints of a one-iteration run that keeps its warm-start checkpoint:
//! 1. the SFT-only checkpoint is evaluated; then the trained one with 2 rollout workers, one of
//!    them SIGKILLed while it samples, and `--compare` with the first: every (problem, sample)
//!    is in `samples.parquet` exactly once, `report.html` parses as HTML and holds the numbers
//!    of `summary.json` and both evaluations;
//! 2. ProcessBench items are scored (every item once, tokens mapped to steps, the metric's table
//!    and report); a GSM8K-layout problem file is evaluated, and exported model folders are;
//! 3. bad input is refused up front, naming what is wrong: a malformed problem row, a
//!    checkpoint that fails its checks, a reward folder whose tokenizer is not the policy's, a
//!    ProcessBench row with a label past its steps, a `data.train` file with a bad row.

use airlift_tests::*;
use airlift_worker::eval::records;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A one-iteration run on a GSM8K-layout file of experts (`data.train`), with checkpoints after
/// the warm start and the iteration; returns its folder.
/// The run trains on a GSM8K-layout file of expert demonstrations (`data.train`) rather than on
/// synthetic problems.
const TRAIN_ROWS: [(&str, &str); 3] = [
    (
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7",
    ),
    (
        "A box holds 6 eggs. How many eggs are in 2 boxes?",
        "2 boxes hold 2 * 6 = <<2*6=12>>12 eggs.\n#### 12",
    ),
    (
        "Ann had 10 coins and spent 4. How many are left?",
        "She has 10 - 4 = <<10-4=6>>6 coins left.\n#### 6",
    ),
];

fn trained(dir: &Path) -> PathBuf {
    tiny_model(&dir.join("model"));
    std::fs::create_dir_all(dir).unwrap();
    let train = dir.join("train.jsonl");
    let rows: String = TRAIN_ROWS
        .iter()
        .map(|(q, a)| serde_json::json!({ "question": q, "answer": a }).to_string() + "\n")
        .collect();
    std::fs::write(&train, rows).unwrap();
    let cfg = tiny_config(
        &dir.join("model"),
        &dir.join("run"),
        "[checkpoint]\nevery = 1\nkeep = 1\nkeep_warm_start = true\n",
    )
    .replace("[data]\n", &format!("[data]\ntrain = \"{}\"\n", train.display()))
    .replace("iterations = 3", "iterations = 1")
    .replace("learner = 2", "learner = 1")
    // Longer samples: a rollout task lasts long enough to be caught in flight.
    .replace("max_new_tokens = 24", "max_new_tokens = 64");
    let path = dir.join("run.toml");
    std::fs::write(&path, cfg).unwrap();
    let (ok, out, err) = coordinator(&["--config", path.to_str().unwrap(), "--local"]);
    assert!(ok, "{out}\n{err}");
    let run = dir.join("run");
    assert!(run.join("checkpoints/step-000000/manifest.json").exists(), "keep_warm_start kept step 0");
    assert!(run.join("checkpoints/step-000001/manifest.json").exists());
    // Every expert row is one of the file's answers (calculator annotations stripped), for the
    // prompt id's row (ids past the end go round the file), and the policy sampled its questions.
    let mut experts = 0;
    for (_, rows) in trajectories(&run) {
        for r in rows {
            let (q, a) = TRAIN_ROWS[r.prompt_id as usize % TRAIN_ROWS.len()];
            if r.source == "expert" {
                let want = airlift_worker::airl::corrupt::strip_calculator_annotations(a);
                assert_eq!(r.response_text, want, "expert row of prompt {}", r.prompt_id);
                experts += 1;
            }
            let _ = q;
        }
    }
    assert!(experts >= 4, "one expert row per prompt of the iteration: {experts}");
    run
}

/// (problem, sample) → how many rows of `samples.parquet` have it.
fn sample_counts(eval: &Path) -> BTreeMap<(u64, u32), usize> {
    let mut m = BTreeMap::new();
    for s in records::read_samples(&eval.join("samples.parquet")).unwrap() {
        assert_eq!(s.token_rewards.len(), s.response_tokens.len(), "a reward per token");
        assert_eq!(s.behaviour_logprobs.len(), s.response_tokens.len(), "a log-prob per token");
        *m.entry((s.problem_id, s.sample_index)).or_default() += 1;
    }
    m
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// The text of every element of `dom` matching `selector`.
fn texts(dom: &tl::VDom, selector: &str) -> Vec<String> {
    let p = dom.parser();
    dom.query_selector(selector)
        .map(|q| q.filter_map(|h| h.get(p)).map(|n| n.inner_text(p).into_owned()).collect())
        .unwrap_or_default()
}

#[test]
fn eval_jobs_sigkill_compare_files_and_exports() {
    let _one_at_a_time = serial();
    let dir = temp_dir("eval");
    let run = trained(&dir);
    let ckpt = |s: u64| run.join(format!("checkpoints/step-{s:06}"));

    // 1a. The SFT-only checkpoint.
    let sft = dir.join("sft");
    let (ok, out, err) = coordinator(&[
        "eval",
        "--checkpoint",
        ckpt(0).to_str().unwrap(),
        "--problems",
        "synthetic:6",
        "--samples",
        "2",
        "--out",
        sft.to_str().unwrap(),
        "--rollouts",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("majority vote") && out.contains("report.html"), "{out}");
    assert_eq!(sample_counts(&sft).len(), 12);
    // The console counts the job's tasks to the end: rollouts, their score tasks, the report.
    let last = err
        .lines()
        .filter_map(|l| l.split_once("evaluation: ").map(|x| x.1))
        .filter_map(|rest| rest.split_once(" tasks").map(|x| x.0.to_string()))
        .next_back();
    let counts = last.as_deref().and_then(|c| c.split_once('/')).map(|(a, b)| (a.to_string(), b.to_string()));
    assert!(
        counts.as_ref().is_some_and(|(a, b)| a == b && b.parse::<u64>().unwrap() % 2 == 1),
        "no finished progress line: {counts:?}\n{err}"
    );

    // 1b. The trained checkpoint, 2 rollout workers, one SIGKILLed once it holds a task.
    let airl = dir.join("airl");
    let trained_ckpt = ckpt(1);
    let args = [
        "eval",
        "--checkpoint",
        trained_ckpt.to_str().unwrap(),
        "--problems",
        "synthetic:6",
        "--samples",
        "2",
        "--out",
        airl.to_str().unwrap(),
        "--rollouts",
        "2",
        "--compare",
        sft.to_str().unwrap(),
    ];
    // The first rollout worker to attach is stopped (SIGSTOP) at once, so that the task it is
    // handed stays in flight; it is SIGKILLed once the coordinator has handed it a task.
    let (mut pids, mut stopped, mut killed) = (BTreeMap::<String, u32>::new(), None::<String>, false);
    let field = |line: &str, key: &str| {
        line.split(&format!(" {key}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .map(str::to_string)
    };
    let (ok, out, log) = coordinator_watched(&args, Duration::from_secs(300), |line, _| {
        if line.contains("worker registered") && line.contains("role=Rollout") {
            pids.insert(field(line, "worker_id").unwrap(), field(line, "pid").unwrap().parse().unwrap());
        } else if stopped.is_none() && line.contains("worker attached") && line.contains("role=Rollout") {
            let id = field(line, "worker_id").unwrap();
            signal(pids[&id], "-STOP");
            stopped = Some(id);
        } else if !killed && line.contains("rollout task started") && field(line, "worker_id") == stopped {
            signal(pids[stopped.as_ref().unwrap()], "-KILL");
            killed = true;
        }
    });
    assert!(ok, "{out}\n{log}");
    assert!(
        killed && log.contains("worker lost") && log.contains("re-queued the lost worker's task"),
        "the kill did not hit a task:\n{log}"
    );
    let counts = sample_counts(&airl);
    let want: Vec<(u64, u32)> = (0..6).flat_map(|p| (0..2).map(move |k| (p, k))).collect();
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), want, "every (problem, sample) of the job");
    assert!(counts.values().all(|&n| n == 1), "none twice: {counts:?}");
    let corruptions = records::read_corruptions(&airl.join("corruptions.parquet")).unwrap();
    assert!(!corruptions.is_empty());
    for c in &corruptions {
        assert_eq!(c.token_lines[c.first_error_token as usize], c.first_error_line);
        assert_eq!(c.token_rewards.len(), c.response_tokens.len());
    }

    // The report: HTML with the summary's numbers, both evaluations, charts.
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(airl.join("summary.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(airl.join("report.html")).unwrap();
    let dom = tl::parse(&html, tl::ParserOptions::default()).expect("report.html parses as HTML");
    assert!(dom.query_selector("svg").map_or(0, |q| q.count()) >= 4, "ROC, reliability and two histograms");
    assert!(
        !html.contains("<script") && !html.contains("<link") && !html.contains("src=\"http"),
        "self-contained"
    );
    let cells = texts(&dom, "td").join("|");
    for (name, r) in summary["summary"]["methods"].as_object().unwrap() {
        assert!(cells.contains(name.as_str()), "method {name} in the report");
        assert!(
            cells.contains(&format!("{:.3}", r["value"].as_f64().unwrap())),
            "{name} = {} in the report",
            r["value"]
        );
    }
    for key in ["correctness_auroc", "correctness_ece"] {
        if let Some(v) = summary["summary"][key].as_f64() {
            assert!(cells.contains(&format!("{v:.3}")), "{key} = {v} in the report");
        }
    }
    // The within-problem AUROC beside the pooled one: its value, or why it has none (the tiny
    // model's samples are rarely right, so no problem may hold both classes).
    for name in ["reward (mean)", "log-prob (mean)"] {
        match summary["summary"]["within_problem_auroc"][name]["value"].as_f64() {
            Some(v) => assert!(cells.contains(&format!("{v:.3} [")), "within-problem AUROC of the {name} = {v} in the report"),
            None => assert!(
                cells.contains("undefined (no problem with both)"),
                "an undefined within-problem AUROC said so: {cells}"
            ),
        }
    }
    let heads = texts(&dom, "th").join("|");
    assert!(
        heads.contains("step-000001") && heads.contains("step-000000"),
        "both evaluations side by side: {heads}"
    );
    // --compare: every method paired against the other checkpoint on the same problems, shown
    // as a difference column; the traces on one colour scale with its bar.
    let versus = &summary["summary"]["versus"][0];
    let pass1 = versus["methods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["a"] == "pass@1 (mean over samples)")
        .expect("pass@1 paired");
    assert_eq!(pass1["n"], summary["summary"]["problems"]);
    assert!(pass1["lo"].as_f64().unwrap() <= pass1["diff"].as_f64().unwrap() && pass1["diff"].as_f64().unwrap() <= pass1["hi"].as_f64().unwrap());
    assert!(
        heads.contains("difference") && html.contains("linear-gradient"),
        "difference column and colour bar"
    );
    // The within-problem AUROC of both scores against the other checkpoint (undefined where
    // the tiny model has no problem with both classes), in the report as well.
    let within: Vec<&str> = versus["within_problem"].as_array().unwrap().iter().map(|p| p["a"].as_str().unwrap()).collect();
    assert_eq!(within, ["reward (mean)", "log-prob (mean)"]);
    assert!(heads.contains("within problems, this evaluation minus"), "{heads}");

    // 2a. ProcessBench items (scored as written, no sampling): every item once, a reward and a
    // log-prob per token, steps mapped, the metric's table with its baselines.
    let pb = dir.join("processbench.jsonl");
    let item = |id: u32, steps: &[&str], label: i64| {
        serde_json::json!({ "id": format!("gsm8k-{id}"), "generator": "hand", "problem": "Tom has 3 apples and buys 4 more. How many apples does he have?", "steps": steps, "final_answer_correct": label < 0, "label": label }).to_string() + "\n"
    };
    let items: String = [
        item(0, &["Tom starts with 3 apples.", "He buys 4 more: 3 + 4 = 7.", "#### 7"], -1),
        item(2, &["Tom starts with 3 apples.", "He buys 4 more: 3 + 4 = 8.", "#### 8"], 1),
        item(4, &["He buys 4 more, so 3 * 4 = 12.", "#### 12"], 0),
        item(6, &["3 + 4 = 7", "#### 7"], -1),
        item(8, &["Tom has 3.", "Then 4 more.", "3 - 4 = -1", "#### -1"], 2),
        item(10, &["3 + 4 = 7 apples in all.", "#### 7"], -1),
    ]
    .concat();
    std::fs::write(&pb, items).unwrap();
    let pb_out = dir.join("pb");
    let (ok, out, err) = coordinator(&[
        "eval",
        "--checkpoint",
        ckpt(1).to_str().unwrap(),
        "--problems",
        &format!("processbench:{}", pb.display()),
        "--out",
        pb_out.to_str().unwrap(),
        "--rollouts",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    for m in [
        "random",
        "same step every time",
        "oracle final-answer",
        "policy log-prob",
        "interval reward",
        "dense reward",
        "F1",
    ] {
        assert!(out.contains(m), "the ProcessBench table shows {m}:\n{out}");
    }
    let scored: Vec<serde_json::Value> = std::fs::read_to_string(pb_out.join("processbench.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        scored.iter().map(|r| r["item_index"].as_u64().unwrap()).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>(),
        "every item once"
    );
    for r in &scored {
        let n = r["response_tokens"].as_array().unwrap().len();
        assert!(n > 0);
        assert_eq!(r["token_rewards"].as_array().unwrap().len(), n);
        assert_eq!(r["policy_logprobs"].as_array().unwrap().len(), n);
        let steps: Vec<u64> = r["token_steps"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
        assert_eq!(steps.len(), n);
        assert!(
            steps.windows(2).all(|w| w[0] <= w[1]) && steps[0] == 0 && *steps.last().unwrap() + 1 == r["n_steps"].as_u64().unwrap(),
            "tokens cover the steps in order: {steps:?}"
        );
    }
    let summary: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pb_out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        (summary["summary"]["n_error"].as_u64(), summary["summary"]["n_correct"].as_u64()),
        (Some(3), Some(3))
    );
    let html = std::fs::read_to_string(pb_out.join("report.html")).unwrap();
    assert!(
        tl::parse(&html, tl::ParserOptions::default()).is_ok() && html.contains("gsm8k-2") && html.contains("3 + 4 = 8."),
        "the report draws items step by step"
    );

    // 2b. A GSM8K-layout file, and the exported folders of the trained checkpoint.
    let file = dir.join("problems.jsonl");
    std::fs::write(&file, "{\"question\": \"Tom has 3 apples and buys 4 more. How many apples does he have?\", \"answer\": \"He has 3 + 4 = <<3+4=7>>7 apples.\\n#### 7\"}\n{\"question\": \"A box holds 6 eggs. How many eggs are in 2 boxes?\", \"answer\": \"2 * 6 = <<2*6=12>>12 eggs.\\n#### 12\"}\n").unwrap();
    let (ok, out, err) = coordinator(&[
        "eval",
        "--checkpoint",
        ckpt(1).to_str().unwrap(),
        "--problems",
        file.to_str().unwrap(),
        "--samples",
        "1",
        "--out",
        dir.join("file").to_str().unwrap(),
        "--rollouts",
        "1",
        "--corruption-kinds",
        "wrong_operation,wrong_quantity",
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(sample_counts(&dir.join("file")).len(), 2);
    let kinds: std::collections::BTreeSet<String> = records::read_corruptions(&dir.join("file").join("corruptions.parquet"))
        .unwrap()
        .into_iter()
        .map(|c| c.kind)
        .collect();
    assert!(
        !kinds.is_empty() && kinds.iter().all(|k| k == "wrong_operation" || k == "wrong_quantity"),
        "--corruption-kinds: {kinds:?}"
    );
    let exported = dir.join("exported");
    let (ok, out, err) = coordinator(&["export", ckpt(1).to_str().unwrap(), "--out", exported.to_str().unwrap()]);
    assert!(ok, "{out}\n{err}");
    let cfg = dir.join("run.toml");
    let (p, r) = (exported.join("policy"), exported.join("reward"));
    let (ok, out, err) = coordinator(&[
        "--config",
        cfg.to_str().unwrap(),
        "eval",
        "--policy",
        p.to_str().unwrap(),
        "--reward",
        r.to_str().unwrap(),
        "--problems",
        "synthetic:2",
        "--samples",
        "1",
        "--out",
        dir.join("exp").to_str().unwrap(),
        "--rollouts",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    assert_eq!(sample_counts(&dir.join("exp")).len(), 2);

    // 3. Bad input, each refused before any worker starts.
    let refused = |args: &[&str], want: &[&str]| {
        let t = Instant::now();
        let (ok, out, err) = coordinator(args);
        assert!(!ok, "accepted: {args:?}\n{out}");
        for w in want {
            assert!(err.contains(w), "{args:?}: the error should name {w}:\n{err}");
        }
        assert!(
            t.elapsed() < Duration::from_secs(20) && !err.contains("worker started"),
            "refused up front:\n{err}"
        );
    };
    refused(
        &[
            "eval",
            "--checkpoint",
            ckpt(1).to_str().unwrap(),
            "--corruption-kinds",
            "wrong_quantity,typo",
            "--out",
            dir.join("x").to_str().unwrap(),
        ],
        &["--corruption-kinds", "`typo`"],
    );
    let bad_file = dir.join("bad.jsonl");
    std::fs::write(
        &bad_file,
        "{\"question\": \"q\", \"answer\": \"a\\n#### 1\"}\n{\"question\": \"q2\", \"answer\": \"no final line\"}\n",
    )
    .unwrap();
    refused(
        &[
            "eval",
            "--checkpoint",
            ckpt(1).to_str().unwrap(),
            "--problems",
            bad_file.to_str().unwrap(),
            "--out",
            dir.join("x").to_str().unwrap(),
        ],
        &["bad.jsonl", "row 2", "answer"],
    );
    let bad_pb = dir.join("bad-pb.jsonl");
    std::fs::write(&bad_pb, item(0, &["a", "b"], -1) + &item(2, &["a", "b"], 2)).unwrap();
    refused(
        &[
            "eval",
            "--checkpoint",
            ckpt(1).to_str().unwrap(),
            "--problems",
            &format!("processbench:{}", bad_pb.display()),
            "--out",
            dir.join("w").to_str().unwrap(),
        ],
        &["bad-pb.jsonl", "row 2", "label"],
    );
    let bad_train = dir.join("bad-train.toml");
    std::fs::write(
        &bad_train,
        std::fs::read_to_string(dir.join("run.toml"))
            .unwrap()
            .replace("train.jsonl", "bad.jsonl")
            .replace(&dir.join("run").display().to_string(), &dir.join("run-bad").display().to_string()),
    )
    .unwrap();
    refused(&["--config", bad_train.to_str().unwrap(), "--local"], &["data.train", "bad.jsonl", "row 2"]);
    let broken = dir.join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    for e in std::fs::read_dir(ckpt(1)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), broken.join(e.file_name())).unwrap();
    }
    let shard = std::fs::read_dir(&broken)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&shard).unwrap();
    f.set_len(f.metadata().unwrap().len() - 8).unwrap();
    refused(
        &["eval", "--checkpoint", broken.to_str().unwrap(), "--out", dir.join("y").to_str().unwrap()],
        &["--checkpoint", "broken", shard.file_name().unwrap().to_str().unwrap()],
    );
    let other_tok = dir.join("reward-other-tokenizer");
    std::fs::create_dir_all(&other_tok).unwrap();
    for e in std::fs::read_dir(&r).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), other_tok.join(e.file_name())).unwrap();
    }
    let tj = other_tok.join("tokenizer.json");
    let text = std::fs::read_to_string(&tj).unwrap();
    std::fs::write(&tj, text.replacen("\"<|im_end|>\"", "\"<|end|>\"", 1)).unwrap();
    refused(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "eval",
            "--policy",
            p.to_str().unwrap(),
            "--reward",
            other_tok.to_str().unwrap(),
            "--out",
            dir.join("z").to_str().unwrap(),
        ],
        &["reward-other-tokenizer", "tokenizer.json differs"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The span a corrupted trace's loss keeps with `ignore_corrupted_suffix`: from its first wrong
/// token to the end of that token's line (the newline included), or to the end.
#[test]
fn the_error_line_ends_at_its_newline() {
    let dir = temp_dir("error-line");
    let cfg = airlift_proto::config::RunConfig::from_toml(
        &tiny_config(&dir, &dir, "").replace("warm_start_steps = 1", "warm_start_steps = 1\ncorruptions_per_expert = 3"),
    )
    .unwrap();
    let tok = airlift_worker::tokenizer::Tokenizer::from_dir(&cache().join("models").join("SmolLM2-135M-Instruct")).unwrap();
    let mut data = airlift_worker::runtime::data::RunData::new(&cfg, 2);
    let mut seen = 0;
    for id in 0..20 {
        for c in data.corruptions(&tok, airlift_worker::airl::synth::Split::Eval, id).unwrap() {
            let r = &c.sample.response;
            let (fe, end) = (c.sample.first_error_token.unwrap(), c.sample.error_line_end.unwrap());
            assert!(fe < end && end <= r.len(), "{fe}..{end} of {}", r.len());
            let line = tok.decode(&r[fe..end]).unwrap();
            if end < r.len() {
                assert!(line.ends_with('\n') && line.matches('\n').count() == 1, "{line:?} in {:?}", c.text);
            } else {
                assert!(!line.contains('\n'), "the last line: {line:?}");
            }
            seen += 1;
        }
    }
    assert!(seen >= 40);
    let _ = std::fs::remove_dir_all(&dir);
}

/// With more corruption kinds than corruptions per expert every kind is still drawn: the kinds
/// rotate by problem (before, each expert took them from the first, and the fifth of five kinds
/// at 4 per expert was never used).
#[test]
fn every_corruption_kind_is_drawn() {
    let dir = temp_dir("kinds");
    let all = airlift_proto::config::CORRUPTION_KINDS;
    let kinds = format!("corruption_kinds = {all:?}");
    let cfg = airlift_proto::config::RunConfig::from_toml(
        &tiny_config(&dir, &dir, "").replace("warm_start_steps = 1", &format!("warm_start_steps = 1\ncorruptions_per_expert = 4\n{kinds}")),
    )
    .unwrap();
    let tok = airlift_worker::tokenizer::Tokenizer::from_dir(&cache().join("models").join("SmolLM2-135M-Instruct")).unwrap();
    let mut data = airlift_worker::runtime::data::RunData::new(&cfg, 2);
    let mut count: std::collections::BTreeMap<String, usize> = Default::default();
    for id in 0..40 {
        for c in data.corruptions(&tok, airlift_worker::airl::synth::Split::Eval, id).unwrap() {
            *count.entry(c.kind.name().to_string()).or_default() += 1;
        }
    }
    assert_eq!(count.len(), all.len(), "{count:?}");
    assert!(count.values().all(|&n| n >= 20), "{count:?}");
    // Each kind's record: the consistent kinds (and a nudged final answer, which is no
    // equation) keep every equation true; the others, a miscalculation among them, do not.
    for id in 0..40 {
        for c in data.corruptions(&tok, airlift_worker::airl::synth::Split::Eval, id).unwrap() {
            let consistent = matches!(c.kind.name(), "wrong_operation" | "wrong_quantity" | "answer_nudge");
            assert_eq!(
                airlift_worker::airl::corrupt::all_steps_true(&c.text),
                consistent,
                "{}: {}",
                c.kind.name(),
                c.text
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
