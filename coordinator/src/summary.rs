//! The end-of-run summary printed by the coordinator: one line per iteration from the metrics
//! records.

/// Formats the per-iteration table.
pub fn table(records: &[serde_json::Value]) -> String {
    let f = |v: &serde_json::Value| v.as_f64().map_or("   -  ".to_string(), |x| format!("{x:6.3}"));
    let mut out = String::new();
    for r in records.iter().filter(|r| r["iteration"] == 0) {
        let l = &r["learners"][0];
        if l["sft_steps"].as_u64().unwrap_or(0) > 0 {
            out.push_str(&format!(
                "sft warm start: {} steps, loss {} -> {}, {:.1} s\n",
                l["sft_steps"],
                f(&l["sft_loss_first"]),
                f(&l["sft_loss_last"]),
                l["time_sft_s"].as_f64().unwrap_or(0.0)
            ));
        }
        if l["reward_warm_steps"].as_u64().unwrap_or(0) > 0 {
            out.push_str(&format!(
                "reward warm start (experts vs their corruptions): {} steps, loss {} -> {}, {:.1} s\n",
                l["reward_warm_steps"],
                f(&l["reward_warm_loss_first"]),
                f(&l["reward_warm_loss_last"]),
                l["time_reward_warm_s"].as_f64().unwrap_or(0.0)
            ));
        }
    }
    // (group, column, value) per column; header and rows are laid out from the same list.
    let cols = |r: &serde_json::Value| -> Vec<(&'static str, &'static str, serde_json::Value)> {
        let (l, ro) = (&r["learners"][0], &r["rollout"]);
        let ev = &l["eval"];
        vec![
            ("train", "disc", l["disc_loss"].clone()),
            ("train", "e/pol", l["auroc_expert_policy_seq"].clone()),
            ("train", "e/cor", l["auroc_expert_corrupted_seq"].clone()),
            ("held-out", "e/pol", ev["auroc_expert_policy_seq"].clone()),
            ("held-out", "cor:mean", ev["auroc_expert_corrupted_seq"].clone()),
            ("held-out", "min", ev["auroc_expert_corrupted_seq_min"].clone()),
            ("held-out", "pair", ev["auroc_expert_corrupted_paired"].clone()),
            ("held-out", "token", ev["auroc_expert_corrupted_tok"].clone()),
            ("held-out", "loc@1", ev["error_step_hit1"].clone()),
            ("held-out", "acc", ev["policy_accuracy"].clone()),
            ("rollout", "acc", ro["accuracy"].clone()),
            ("rollout", "tok/s", ro["tokens_per_s"].clone()),
            ("time s", "gen", ro["generation_s"].clone()),
            ("time s", "xfer", ro["transfer_s"].clone()),
            ("time s", "sync", ro["weight_sync_s"].clone()),
            ("time s", "disc", l["time_disc_s"].clone()),
            ("time s", "pol", l["time_policy_s"].clone()),
            ("learner", "rss GB", l["learner_peak_rss_mb"].as_f64().map(|x| x / 1024.0).into()),
            ("learner", "flt k", l["learner_minor_faults"].as_f64().map(|x| x / 1e3).into()),
        ]
    };
    let rows: Vec<&serde_json::Value> = records.iter().filter(|r| r["iteration"].as_u64().unwrap_or(0) > 0).collect();
    let Some(first) = rows.first() else { return out };
    let layout = cols(first);
    let width = |name: &str| name.len().max(6);
    let (mut groups, mut names) = (String::from("     "), String::from("iter "));
    let mut prev = "";
    for (g, n, _) in &layout {
        let sep = if *g != prev { "|" } else { " " };
        groups.push_str(&format!("{sep}{:<w$}", if *g != prev { *g } else { "" }, w = width(n)));
        names.push_str(&format!("{sep}{:>w$}", n, w = width(n)));
        prev = g;
    }
    out.push_str(&format!("{}\n{names}\n", groups.trim_end()));
    for r in rows {
        let mut line = format!("{:>4} ", r["iteration"].as_u64().unwrap_or(0));
        let mut prev = "";
        for (g, n, v) in cols(r) {
            let sep = if g != prev { "|" } else { " " };
            let digits = match (g, n) {
                (_, "tok/s") | (_, "flt k") => 1,
                ("time s", _) | ("learner", _) => 2,
                _ => 3,
            };
            let cell = v.as_f64().map_or("-".to_string(), |x| format!("{x:.digits$}"));
            line.push_str(&format!("{sep}{cell:>w$}", w = width(n)));
            prev = g;
        }
        out.push_str(&line);
        out.push('\n');
    }
    let chance = records
        .last()
        .and_then(|r| r["learners"][0]["eval"]["error_step_chance"].as_f64())
        .map_or("-".to_string(), |c| format!("{c:.3}"));
    out.push_str(&format!(
        "AUROCs, expert (e) vs policy samples (pol) and corrupted experts (cor). Held-out cor: mean / min =\n\
         sequence score by mean / min token reward; pair = each corrupted trace vs the expert it came from;\n\
         token = tokens from the first error on. loc@1: how often the lowest-reward line is the first wrong\n\
         line (a random line: {chance}). learner: the learner's peak resident memory so far and its minor\n\
         page faults during the iteration's training steps. Definitions: worker/src/airl/metrics.rs.\n"
    ));
    out
}
