//! The end-of-run summary printed by the coordinator: one line per iteration from the metrics
//! records.

/// Formats the per-iteration table.
pub fn table(records: &[serde_json::Value]) -> String {
    let f = |v: &serde_json::Value| v.as_f64().map_or("   -  ".to_string(), |x| format!("{x:6.3}"));
    let mut out = String::new();
    for r in records.iter().filter(|r| r["iteration"] == 0) {
        let l = &r["learners"][0];
        out.push_str(&format!(
            "sft warm start: {} steps, loss {} -> {}, {:.1} s\n",
            l["sft_steps"], f(&l["sft_loss_first"]), f(&l["sft_loss_last"]), l["time_sft_s"].as_f64().unwrap_or(0.0)
        ));
    }
    out.push_str("iter | disc loss | AUROC exp/pol | AUROC exp/corr | held-out exp/pol exp/corr acc | rollout acc | gen tok/s | gen s  xfer s  sync s | disc s  pol s\n");
    for r in records.iter().filter(|r| r["iteration"].as_u64().unwrap_or(0) > 0) {
        let l = &r["learners"][0];
        let ev = &l["eval"];
        let ro = &r["rollout"];
        out.push_str(&format!(
            "{:>4} |  {} |  {}       |  {}        |  {}  {}  {}       |  {}     | {:>8.1}  | {} {} {} | {} {}\n",
            r["iteration"], f(&l["disc_loss"]), f(&l["auroc_expert_policy_seq"]), f(&l["auroc_expert_corrupted_seq"]),
            f(&ev["auroc_expert_policy_seq"]), f(&ev["auroc_expert_corrupted_seq"]), f(&ev["policy_accuracy"]),
            f(&ro["accuracy"]), ro["tokens_per_s"].as_f64().unwrap_or(0.0),
            f(&ro["generation_s"]), f(&ro["transfer_s"]), f(&ro["weight_sync_s"]), f(&l["time_disc_s"]), f(&l["time_policy_s"]),
        ));
    }
    out
}
