//! `<run>/report.html`, the training run's report (`coordinator report <run>`, and written at the
//! end of every run): one self-contained page (inline SVG drawn with `plotters`, no scripts,
//! nothing fetched) in the style of the evaluation report. Learning curves of the warm start's
//! losses, the discriminator and the policy, the in-batch and held-out separation and error
//! localisation, rollout accuracy and throughput, wall time per phase; the restarts, the
//! checkpoints on disk, links to the run's evaluation reports, the per-iteration table and the
//! effective config. Everything comes from the run folder (`metrics.jsonl`, `config.toml`,
//! `checkpoints/*/manifest.json`, `eval/*/`), so it can be written again at any time.

use plotters::prelude::*;
use std::fmt::Write;
use std::path::Path;

const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A named curve: (x, y) points.
pub type Series = (String, Vec<(f64, f64)>);

/// A line chart of `series` (those without points are left out; none at all: a note instead).
pub fn chart(title: &str, x_desc: &str, series: &[Series]) -> String {
    let drawn: Vec<&Series> = series.iter().filter(|s| !s.1.is_empty()).collect();
    if drawn.is_empty() {
        return format!("<p class=\"note\">{}: no data</p>", escape(title));
    }
    let pts = drawn.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x1 <= x0 {
        (x0, x1) = (x0 - 0.5, x1 + 0.5);
    }
    let pad = if y1 > y0 { 0.05 * (y1 - y0) } else { 0.5 * y0.abs().max(1e-3) };
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut out = String::new();
    let r = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut out, (440, 300)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(48)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        c.configure_mesh().light_line_style(RGBColor(245, 245, 245)).x_desc(x_desc).draw()?;
        for (i, s) in drawn.iter().enumerate() {
            let col = COLOURS[i % COLOURS.len()];
            c.draw_series(LineSeries::new(s.1.iter().copied(), col.stroke_width(2)))?
                .label(s.0.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], col.stroke_width(2)));
            if s.1.len() < 40 {
                c.draw_series(s.1.iter().map(|&p| Circle::new(p, 2, col.filled())))?;
            }
        }
        c.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })();
    match r {
        Ok(()) => out,
        Err(e) => format!("<p>chart failed: {}</p>", escape(&e.to_string())),
    }
}

/// The points of `get(record)` over the iterations (records of iteration ≥ 1).
fn per_iteration(records: &[serde_json::Value], name: &str, get: impl Fn(&serde_json::Value) -> Option<f64>) -> Series {
    let pts = records
        .iter()
        .filter_map(|r| Some((r["iteration"].as_u64().filter(|&i| i > 0)? as f64, get(r)?)))
        .filter(|p| p.1.is_finite())
        .collect();
    (name.to_string(), pts)
}

fn l0<'a>(r: &'a serde_json::Value, k: &str) -> &'a serde_json::Value {
    &r["learners"][0][k]
}

/// The page for the run in `run_dir`.
pub fn html(run_dir: &Path) -> Result<String, String> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut all = Vec::new();
    for (i, l) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        all.push(serde_json::from_str::<serde_json::Value>(l).map_err(|e| format!("{} line {}: not a JSON record ({e})", path.display(), i + 1))?);
    }
    let records: Vec<serde_json::Value> = all.iter().filter(|r| r.get("iteration").is_some()).cloned().collect();
    let restarts: Vec<&serde_json::Value> = all.iter().filter(|r| r.get("restart").is_some()).collect();
    let config = std::fs::read_to_string(run_dir.join("config.toml")).unwrap_or_default();
    let cfg: Option<toml::Value> = toml::from_str(&config).ok();
    let name = cfg
        .as_ref()
        .and_then(|c| c["run"]["name"].as_str().map(String::from))
        .unwrap_or_else(|| run_dir.display().to_string());
    let total = cfg.as_ref().and_then(|c| c["run"]["iterations"].as_integer()).unwrap_or(0);
    let done = records.iter().filter_map(|r| r["iteration"].as_u64()).max().unwrap_or(0);
    let elapsed = records.iter().filter_map(|r| r["elapsed_s"].as_f64()).fold(0.0f64, f64::max);

    let mut h = String::new();
    let title = format!("airlift run: {name}");
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse;margin:1em 0}} \
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} \
pre{{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:85%}} .charts svg{{margin:4px}} .note{{color:#555;font-size:90%}}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let _ = writeln!(
        h,
        "<p>Run folder <code>{}</code>: {done} of {total} iterations recorded, {:.1} min of wall time in the last attempt's records, {} learner restart(s).</p>",
        escape(&run_dir.display().to_string()),
        elapsed / 60.0,
        restarts.len()
    );

    // Warm start: per-step losses (step 0's record).
    let warm = records.iter().find(|r| r["iteration"].as_u64() == Some(0));
    let steps = |k: &str| -> Vec<(f64, f64)> {
        warm.map(|w| {
            l0(w, k)
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .filter_map(|(i, v)| Some(((i + 1) as f64, v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default()
    };
    h.push_str("<h2>Learning curves</h2>\n<div class=\"charts\">\n");
    h.push_str(&chart(
        "Warm start: SFT loss (token NLL)",
        "SFT step",
        &[("SFT loss".into(), steps("sft_losses"))],
    ));
    h.push_str(&chart(
        "Warm start: discriminator loss",
        "reward warm-start step",
        &[("experts vs their corruptions".into(), steps("reward_warm_losses"))],
    ));
    let f = |k: &'static str| move |r: &serde_json::Value| l0(r, k).as_f64();
    h.push_str(&chart(
        "Discriminator loss per iteration",
        "iteration",
        &[
            per_iteration(&records, "first step", f("disc_loss_first")),
            per_iteration(&records, "last step", f("disc_loss")),
        ],
    ));
    h.push_str(&chart(
        "Policy (PPO) per iteration",
        "iteration",
        &[
            per_iteration(&records, "policy loss", f("policy_loss")),
            per_iteration(&records, "approx KL", f("approx_kl")),
            per_iteration(&records, "behaviour KL (rollout vs learner)", f("behaviour_kl")),
            per_iteration(&records, "clip fraction", f("clip_fraction")),
        ],
    ));
    let nll = per_iteration(&records, "expert NLL (replay term)", f("expert_nll"));
    if nll.1.iter().any(|p| p.1 != 0.0) {
        h.push_str(&chart("Policy: experts' NLL under the policy", "iteration", &[nll]));
    }
    h.push_str(&chart(
        "In-batch AUROC (reward after the discriminator steps)",
        "iteration",
        &[
            per_iteration(&records, "expert vs policy", f("auroc_expert_policy_seq")),
            per_iteration(&records, "expert vs corrupted", f("auroc_expert_corrupted_seq")),
        ],
    ));
    let e = |k: &'static str| move |r: &serde_json::Value| l0(r, "eval")[k].as_f64();
    h.push_str(&chart(
        "Held-out problems (learner rank 0's evaluation)",
        "iteration",
        &[
            per_iteration(&records, "AUROC expert vs policy", e("auroc_expert_policy_seq")),
            per_iteration(&records, "AUROC expert vs corrupted", e("auroc_expert_corrupted_seq")),
            per_iteration(&records, "error-line hit@1", e("error_step_hit1")),
            per_iteration(&records, "hit@1 of a random line", e("error_step_chance")),
            per_iteration(&records, "policy accuracy", e("policy_accuracy")),
        ],
    ));
    h.push_str(&chart(
        "Rollout accuracy (this iteration's samples)",
        "iteration",
        &[per_iteration(&records, "accuracy", |r| r["rollout"]["accuracy"].as_f64())],
    ));
    h.push_str(&chart(
        "Generation throughput",
        "iteration",
        &[per_iteration(&records, "tokens/s", |r| r["rollout"]["tokens_per_s"].as_f64())],
    ));
    h.push_str(&chart(
        "Wall time per iteration (s)",
        "iteration",
        &[
            per_iteration(&records, "rollouts (queued to learning)", |r| r["time_rollout_wall_s"].as_f64()),
            per_iteration(&records, "learning", |r| r["time_learn_wall_s"].as_f64()),
            per_iteration(&records, "discriminator steps", f("time_disc_s")),
            per_iteration(&records, "policy steps", f("time_policy_s")),
            per_iteration(&records, "generation", |r| r["rollout"]["generation_s"].as_f64()),
        ],
    ));
    h.push_str("</div>\n");

    if let Some(w) = warm {
        let w0 = &w["learners"][0];
        let _ = writeln!(
            h,
            "<p>Warm start: {} SFT steps in {:.0} s, {} reward warm-start steps in {:.0} s.</p>",
            w0["sft_steps"].as_u64().unwrap_or(0),
            w0["time_sft_s"].as_f64().unwrap_or(0.0),
            w0["reward_warm_steps"].as_u64().unwrap_or(0),
            w0["time_reward_warm_s"].as_f64().unwrap_or(0.0)
        );
    }

    h.push_str("<h2>Restarts</h2>\n");
    if restarts.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table><tr><th>restart</th><th>from checkpoint of iteration</th><th>iterations redone</th><th>why</th></tr>\n");
        for r in &restarts {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r["restart"],
                r["checkpoint_iteration"],
                escape(&r["redone"].to_string()),
                escape(r["reason"].as_str().unwrap_or(""))
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Checkpoints on disk</h2>\n");
    let mut ckpts: Vec<_> = std::fs::read_dir(run_dir.join("checkpoints"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .collect();
    ckpts.sort_by_key(|e| e.file_name());
    if ckpts.is_empty() {
        h.push_str("<p>None.</p>\n");
    } else {
        h.push_str("<table><tr><th>folder</th><th>iteration</th><th>policy version</th><th>learner ranks</th><th>MB</th></tr>\n");
        for c in &ckpts {
            let m: Option<serde_json::Value> = std::fs::read_to_string(c.path().join("manifest.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let mb: u64 = std::fs::read_dir(c.path())
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|f| f.metadata().ok())
                .map(|m| m.len())
                .sum::<u64>()
                / 1_000_000;
            let cell = |k: &str| m.as_ref().map_or("no manifest".to_string(), |m| m[k].to_string());
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{mb}</td></tr>",
                escape(&c.file_name().to_string_lossy()),
                cell("iteration"),
                cell("policy_version"),
                cell("world_size")
            );
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Evaluations</h2>\n");
    let mut evals: Vec<_> = std::fs::read_dir(run_dir.join("eval"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("report.html").exists())
        .collect();
    evals.sort_by_key(|e| e.file_name());
    if evals.is_empty() {
        h.push_str("<p class=\"note\">None in <code>eval/</code> yet (<code>coordinator eval --checkpoint …</code> writes them there).</p>\n");
    } else {
        h.push_str("<ul>\n");
        for e in &evals {
            let n = e.file_name().to_string_lossy().into_owned();
            let _ = writeln!(h, "<li><a href=\"eval/{0}/report.html\">{0}</a></li>", escape(&n));
        }
        h.push_str("</ul>\n");
    }

    h.push_str("<h2>Per iteration</h2>\n<pre>");
    h.push_str(&escape(&crate::summary::table(&all)));
    h.push_str("</pre>\n<h2>Effective config</h2>\n<pre>");
    h.push_str(&escape(&config));
    h.push_str("</pre>\n</body></html>\n");
    Ok(h)
}

/// Writes `<run_dir>/report.html`; returns its path.
pub fn write(run_dir: &Path) -> Result<std::path::PathBuf, String> {
    let page = html(run_dir)?;
    let path = run_dir.join("report.html");
    std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_without_points_is_a_note_and_one_with_points_is_svg() {
        assert!(chart("x", "i", &[("a".into(), vec![])]).contains("no data"));
        let svg = chart(
            "loss",
            "iteration",
            &[("a".into(), vec![(1.0, 0.5), (2.0, 0.25)]), ("b".into(), vec![(1.0, 1.0)])],
        );
        assert!(svg.starts_with("<svg") && svg.contains("loss"), "{svg}");
        // One point, one x: still drawn (the axis is widened).
        assert!(chart("one", "i", &[("a".into(), vec![(3.0, 2.0)])]).starts_with("<svg"));
    }
}
