//! `report.html`: one self-contained page (inline SVG charts drawn with `plotters`, inline CSS,
//! no scripts, nothing fetched) that a person reads instead of `summary.json`: the method table
//! (evaluations side by side with `--compare`), correctness prediction and error localisation,
//! the ROC curve, a reliability diagram, reward histograms of correct and wrong samples, and a
//! few traces with each token shaded by its reward and the first wrong line marked.

use super::records::{CorruptionRecord, SampleRecord};
use plotters::prelude::*;
use std::fmt::Write;

/// One evaluation as the report shows it.
pub struct Evaluation<'a> {
    pub label: &'a str,
    pub problem_set: &'a str,
    /// `summary.json`'s `summary` object.
    pub summary: &'a serde_json::Value,
    pub samples: &'a [SampleRecord],
    pub corruptions: &'a [CorruptionRecord],
}

const COLOURS: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14), RGBColor(44, 160, 44), RGBColor(214, 39, 40)];

/// HTML-escapes text.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A number as the report prints it (3 decimals; `–` for a missing one).
pub fn num(v: &serde_json::Value) -> String {
    v.as_f64().map_or("–".into(), |x| format!("{x:.3}"))
}

/// A label short enough for a chart legend: the last folder name of the first path, and what
/// follows in parentheses (`step-000005 (iteration 5, policy v6)`).
pub fn short(label: &str) -> String {
    let (path, rest) = label.split_once(" (").map_or((label, ""), |(p, r)| (p, r));
    let path = path.split(" + ").map(|p| std::path::Path::new(p).file_name().map_or(p.to_string(), |n| n.to_string_lossy().into_owned())).collect::<Vec<_>>().join(" + ");
    if rest.is_empty() { path } else { format!("{path} ({rest}") }
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64 }
}

/// The page.
pub fn html(evals: &[Evaluation], token_text: &dyn Fn(u32) -> String) -> String {
    let mut h = String::new();
    let title = format!("airlift evaluation: {}", evals.first().map_or("", |e| e.label));
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}} table{{border-collapse:collapse;margin:1em 0}} \
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} td:first-child,th:first-child{{text-align:left}} \
.trace{{font-family:monospace;white-space:pre-wrap;border:1px solid #ddd;padding:6px;margin:6px 0}} .wrong{{outline:2px solid #d62728}} \
.charts svg{{margin:4px}} .note{{color:#555;font-size:90%}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    h.push_str("<table><tr><th>evaluation</th><th>problems</th><th>samples each</th><th>problem set</th></tr>\n");
    for e in evals {
        let _ = writeln!(h, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", escape(e.label), e.summary["problems"], num(&e.summary["samples_per_problem"]), escape(e.problem_set));
    }
    h.push_str("</table>\n");

    // Methods: accuracy and 95% interval, evaluations side by side.
    h.push_str("<h2>Choosing one answer of N</h2>\n<table><tr><th>method</th>");
    for e in evals {
        let _ = write!(h, "<th>{}<br>accuracy</th><th>95% interval</th><th>n</th>", escape(e.label));
    }
    h.push_str("</tr>\n");
    let names: Vec<String> = evals[0].summary["methods"].as_object().map(|m| super::summary::in_method_order(m.keys()).into_iter().cloned().collect()).unwrap_or_default();
    for name in &names {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for e in evals {
            let r = &e.summary["methods"][name];
            let _ = write!(h, "<td>{}</td><td>[{}, {}]</td><td>{}</td>", num(&r["value"]), num(&r["lo"]), num(&r["hi"]), r["n"]);
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(
        h,
        "</table><p class=\"note\">Expected accuracy over problems (random choice is its expected value; ties of votes or scores are split evenly among the tied answers); intervals by bootstrap over problems; n = problems. Default sequence reward for reranking: {}</p>",
        escape(evals[0].summary["default_aggregate"].as_str().unwrap_or(""))
    );
    h.push_str("<h2>Paired comparisons on the same problems</h2>\n<table><tr><th>evaluation</th><th>a − b</th><th>difference</th><th>95% interval</th><th>problems a / b did better</th><th>n</th></tr>\n");
    for e in evals {
        for p in e.summary["paired"].as_array().into_iter().flatten() {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{} − {}</td><td>{}</td><td>[{}, {}]</td><td>{} / {}</td><td>{}</td></tr>",
                escape(e.label), escape(p["a"].as_str().unwrap_or("")), escape(p["b"].as_str().unwrap_or("")), num(&p["diff"]), num(&p["lo"]), num(&p["hi"]), p["only_a"], p["only_b"], p["n"]
            );
        }
    }
    h.push_str("</table><p class=\"note\">An interval that contains 0 means the difference is not shown at this n.</p>\n");

    h.push_str("<h2>Predicting correctness from the mean token reward</h2>\n<table><tr><th>evaluation</th><th>right / wrong samples</th><th>AUROC</th><th>95% interval (problems)</th><th>ECE (10 bins)</th><th>Pearson r</th></tr>\n");
    for e in evals {
        let s = e.summary;
        let auroc = if s["correctness_auroc"].is_f64() { num(&s["correctness_auroc"]) } else { "undefined (too few of a class)".into() };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td>{}</td></tr>",
            escape(e.label), s["correct_samples"], s["wrong_samples"], auroc, num(&s["correctness_auroc_lo"]), num(&s["correctness_auroc_hi"]), num(&s["correctness_ece"]), num(&s["correctness_pearson"])
        );
    }
    h.push_str("</table>\n");

    h.push_str("<h2>Error localisation on controlled corruptions</h2>\n<table><tr><th>method</th>");
    for e in evals {
        let _ = write!(h, "<th>{}<br>rate</th><th>95% interval</th>", escape(e.label));
    }
    h.push_str("</tr>\n");
    let loc: Vec<String> = evals[0].summary["localisation"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default();
    for name in &loc {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for e in evals {
            let r = &e.summary["localisation"][name];
            let _ = write!(h, "<td>{}</td><td>[{}, {}]</td>", num(&r["value"]), num(&r["lo"]), num(&r["hi"]));
        }
        h.push_str("</tr>\n");
    }
    for (k, key) in [(1, "localisation_chance_at_1"), (3, "localisation_chance_at_3")] {
        let _ = write!(h, "<tr><td>random line hit@{k}</td>");
        for e in evals {
            let _ = write!(h, "<td>{}</td><td></td>", num(&e.summary[key]));
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(h, "</table><p class=\"note\">{} corruptions.</p>", evals.iter().map(|e| format!("{}: {}", escape(e.label), e.corruptions.len())).collect::<Vec<_>>().join(", "));
    for e in evals {
        let Some(kinds) = e.summary["localisation_by_kind"].as_object().filter(|k| !k.is_empty()) else { continue };
        let methods: Vec<String> = kinds.values().next().and_then(|k| k["hit_at_1"].as_object()).map(|m| m.keys().cloned().collect()).unwrap_or_default();
        let _ = write!(h, "<h3>hit@1 by corruption kind: {}</h3>\n<table><tr><th>kind</th><th>traces</th><th>random line</th>", escape(e.label));
        for m in &methods {
            let _ = write!(h, "<th>{}</th>", escape(m));
        }
        h.push_str("</tr>\n");
        for (kind, k) in kinds {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td>", escape(kind), k["traces"], num(&k["random_line"]));
            for m in &methods {
                let _ = write!(h, "<td>{}</td>", num(&k["hit_at_1"][m]["value"]));
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Charts</h2>\n<div class=\"charts\">\n");
    h.push_str(&roc_chart(evals));
    h.push_str(&reliability_chart(evals));
    for e in evals {
        h.push_str(&histogram(e));
    }
    h.push_str("</div>\n");

    h.push_str("<h2>Traces, each token shaded by its reward</h2>\n<p class=\"note\">Green: high reward, red: low (scaled to the largest |reward| shown). A red outline marks the first wrong line of a corruption.</p>\n");
    let e = &evals[0];
    let pick: Vec<&SampleRecord> = e.samples.iter().filter(|s| s.correct).take(2).chain(e.samples.iter().filter(|s| !s.correct).take(2)).collect();
    for s in pick {
        let _ = writeln!(
            h,
            "<h3>problem {} sample {}: {} (answer {}, reference {}), mean reward {:.3}</h3>",
            s.problem_id,
            s.sample_index,
            if s.correct { "correct" } else { "wrong" },
            escape(s.predicted_answer.as_deref().unwrap_or("none")),
            escape(s.reference_answer.as_deref().unwrap_or("?")),
            mean(&s.token_rewards)
        );
        h.push_str(&trace(&s.response_tokens, &s.token_rewards, &s.token_lines, None, token_text));
    }
    for c in e.corruptions.iter().take(3) {
        let _ = writeln!(h, "<h3>problem {} corruption {} ({}), first wrong line {}</h3>", c.problem_id, c.corruption_index, escape(&c.kind), c.first_error_line);
        h.push_str(&trace(&c.response_tokens, &c.token_rewards, &c.token_lines, Some(c.first_error_line), token_text));
    }
    h.push_str("</body></html>\n");
    h
}

/// Tokens as spans shaded by reward, lines as blocks; `wrong` outlines that line.
fn trace(tokens: &[u32], rewards: &[f32], lines: &[u32], wrong: Option<u32>, token_text: &dyn Fn(u32) -> String) -> String {
    let scale = rewards.iter().fold(1e-6f32, |m, r| m.max(r.abs()));
    let mut h = String::from("<div class=\"trace\">");
    let mut line = u32::MAX;
    for (i, &t) in tokens.iter().enumerate() {
        let l = lines.get(i).copied().unwrap_or(0);
        if l != line {
            if line != u32::MAX {
                h.push_str("</div>");
            }
            let class = if wrong == Some(l) { " class=\"wrong\"" } else { "" };
            let _ = write!(h, "<div{class}>");
            line = l;
        }
        let r = rewards.get(i).copied().unwrap_or(0.0) / scale;
        let (red, green) = if r < 0.0 { (255, (255.0 * (1.0 + r)) as u8) } else { ((255.0 * (1.0 - r)) as u8, 255) };
        let blue = 255u8.min(red).min(green);
        let text = token_text(t).replace('\n', "");
        let _ = write!(h, "<span style=\"background:rgb({red},{green},{blue})\" title=\"{:.3}\">{}</span>", rewards.get(i).copied().unwrap_or(0.0), escape(&text));
    }
    if line != u32::MAX {
        h.push_str("</div>");
    }
    h.push_str("</div>\n");
    h
}

/// (sequence score, correct) of each sample: the mean token reward.
fn scored(e: &Evaluation) -> Vec<(f64, bool)> {
    e.samples.iter().map(|s| (mean(&s.token_rewards), s.correct)).collect()
}

fn roc_points(scored: &[(f64, bool)]) -> Vec<(f64, f64)> {
    let mut v = scored.to_vec();
    v.sort_by(|a, b| b.0.total_cmp(&a.0));
    let pos = v.iter().filter(|x| x.1).count().max(1) as f64;
    let neg = v.iter().filter(|x| !x.1).count().max(1) as f64;
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut pts = vec![(0.0, 0.0)];
    for (i, &(s, c)) in v.iter().enumerate() {
        if c { tp += 1.0 } else { fp += 1.0 }
        if i + 1 == v.len() || v[i + 1].0 != s {
            pts.push((fp / neg, tp / pos));
        }
    }
    pts
}

fn svg(draw: impl FnOnce(DrawingArea<SVGBackend, plotters::coord::Shift>) -> Result<(), Box<dyn std::error::Error + '_>>) -> String {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (440, 320)).into_drawing_area();
        if let Err(e) = draw(root) {
            return format!("<p>chart failed: {}</p>", escape(&e.to_string()));
        }
    }
    out
}

fn roc_chart(evals: &[Evaluation]) -> String {
    svg(|root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).caption("ROC: correct vs wrong samples", ("sans-serif", 15)).margin(8).x_label_area_size(32).y_label_area_size(40).build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart.configure_mesh().light_line_style(RGBColor(245, 245, 245)).x_desc("false positive rate").y_desc("true positive rate").draw()?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &RGBColor(180, 180, 180)))?;
        // An evaluation whose AUROC is undefined (too few right or wrong samples) gets no curve.
        for (i, e) in evals.iter().enumerate().filter(|(_, e)| e.summary["correctness_auroc"].is_f64()) {
            let c = COLOURS[i % COLOURS.len()];
            chart.draw_series(LineSeries::new(roc_points(&scored(e)), c.stroke_width(2)))?.label(format!("{} (AUROC {})", short(e.label), num(&e.summary["correctness_auroc"]))).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    })
}

fn reliability_chart(evals: &[Evaluation]) -> String {
    svg(|root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).caption("Reliability: sigmoid(mean reward)", ("sans-serif", 15)).margin(8).x_label_area_size(32).y_label_area_size(40).build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart.configure_mesh().light_line_style(RGBColor(245, 245, 245)).x_desc("predicted P(correct)").y_desc("fraction correct").draw()?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &RGBColor(180, 180, 180)))?;
        for (i, e) in evals.iter().enumerate() {
            let c = COLOURS[i % COLOURS.len()];
            let mut bins = [(0.0f64, 0.0f64, 0usize); 10];
            for (s, ok) in scored(e) {
                let p = 1.0 / (1.0 + (-s).exp());
                let b = ((p * 10.0) as usize).min(9);
                bins[b].0 += p;
                bins[b].1 += ok as u8 as f64;
                bins[b].2 += 1;
            }
            let pts: Vec<(f64, f64)> = bins.iter().filter(|b| b.2 > 0).map(|b| (b.0 / b.2 as f64, b.1 / b.2 as f64)).collect();
            chart.draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?.label(short(e.label)).legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    })
}

fn histogram(e: &Evaluation) -> String {
    let s = scored(e);
    let (lo, hi) = s.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x.0), b.max(x.0)));
    let (lo, hi) = if lo.is_finite() && hi > lo { (lo, hi) } else { (lo.min(0.0) - 1.0, hi.max(0.0) + 1.0) };
    const BINS: usize = 20;
    let w = (hi - lo) / BINS as f64;
    let mut counts = [[0usize; BINS]; 2];
    for (x, ok) in &s {
        let b = (((x - lo) / w) as usize).min(BINS - 1);
        counts[*ok as usize][b] += 1;
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let caption = format!("Mean reward: {}", short(e.label));
    svg(|root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root).caption(caption, ("sans-serif", 15)).margin(8).x_label_area_size(32).y_label_area_size(40).build_cartesian_2d(lo..hi, 0f64..top * 1.1)?;
        chart.configure_mesh().light_line_style(RGBColor(245, 245, 245)).x_desc("mean token reward").y_desc("samples").draw()?;
        for (k, (name, c)) in [("wrong", RGBColor(214, 39, 40)), ("correct", RGBColor(44, 160, 44))].into_iter().enumerate() {
            let idx = if name == "correct" { 1 } else { 0 };
            let bars: Vec<Rectangle<(f64, f64)>> = (0..BINS)
                .filter(|&b| counts[idx][b] > 0)
                .map(|b| {
                    let x0 = lo + b as f64 * w + if k == 0 { 0.0 } else { w / 2.0 };
                    Rectangle::new([(x0, 0.0), (x0 + w / 2.0, counts[idx][b] as f64)], c.mix(0.7).filled())
                })
                .collect();
            chart.draw_series(bars)?.label(name).legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], c.filled()));
        }
        chart.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        root.present()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escapes_and_roc_points() {
        assert_eq!(short("runs/a/checkpoints/step-000005 (iteration 5, policy v6)"), "step-000005 (iteration 5, policy v6)");
        assert_eq!(short("x/policy + x/reward"), "policy + reward");
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
        // Scores 3 (correct), 2 (wrong), 2 (correct), 1 (wrong): the tie at 2 is one step.
        let pts = roc_points(&[(3.0, true), (2.0, false), (2.0, true), (1.0, false)]);
        assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }
}
