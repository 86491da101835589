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
    let path = path
        .split(" + ")
        .map(|p| std::path::Path::new(p).file_name().map_or(p.to_string(), |n| n.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" + ");
    if rest.is_empty() {
        path
    } else {
        format!("{path} ({rest}")
    }
}

fn mean(v: &[f32]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64
    }
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
.charts svg{{margin:4px}} .note{{color:#555;font-size:90%}} .pick{{color:#1f3f99;font-family:sans-serif;font-size:85%}}</style></head><body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    h.push_str("<table><tr><th>evaluation</th><th>problems</th><th>samples each</th><th>problem set</th></tr>\n");
    for e in evals {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(e.label),
            e.summary["problems"],
            num(&e.summary["samples_per_problem"]),
            escape(e.problem_set)
        );
    }
    h.push_str("</table>\n");

    // Methods: accuracy and 95% interval, evaluations side by side.
    h.push_str("<h2>Choosing one answer of N</h2>\n<table><tr><th>method</th>");
    for e in evals {
        let _ = write!(h, "<th>{}<br>accuracy</th><th>95% interval</th><th>n</th>", escape(e.label));
    }
    let versus: Vec<&serde_json::Value> = evals[0].summary["versus"].as_array().map(|v| v.iter().collect()).unwrap_or_default();
    for v in &versus {
        let _ = write!(
            h,
            "<th>difference<br>vs {}</th><th>95% interval</th>",
            escape(&short(v["other"].as_str().unwrap_or("")))
        );
    }
    h.push_str("</tr>\n");
    let names: Vec<String> = evals[0].summary["methods"]
        .as_object()
        .map(|m| super::summary::in_method_order(m.keys()).into_iter().cloned().collect())
        .unwrap_or_default();
    for name in &names {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for e in evals {
            let r = &e.summary["methods"][name];
            let _ = write!(
                h,
                "<td>{}</td><td>[{}, {}]</td><td>{}</td>",
                num(&r["value"]),
                num(&r["lo"]),
                num(&r["hi"]),
                r["n"]
            );
        }
        for v in &versus {
            h.push_str(&diff_cells(
                v["methods"].as_array().and_then(|d| d.iter().find(|p| p["a"].as_str() == Some(name.as_str()))),
            ));
        }
        h.push_str("</tr>\n");
    }
    let _ = writeln!(
        h,
        "</table><p class=\"note\">Expected accuracy over problems (random choice is its expected value; ties of votes or scores are split evenly among the tied answers); intervals by bootstrap over problems; n = problems. A difference column is this evaluation minus the other, paired on the problems both scored (bold where its 95% interval excludes 0). Default sequence reward for reranking: {}</p>",
        escape(evals[0].summary["default_aggregate"].as_str().unwrap_or(""))
    );
    h.push_str("<h2>Paired comparisons on the same problems</h2>\n<table><tr><th>evaluation</th><th>a − b</th><th>difference</th><th>95% interval</th><th>problems a / b did better</th><th>n</th></tr>\n");
    for e in evals {
        for p in e.summary["paired"].as_array().into_iter().flatten() {
            let _ = writeln!(
                h,
                "<tr><td>{}</td><td>{} − {}</td><td>{}</td><td>[{}, {}]</td><td>{} / {}</td><td>{}</td></tr>",
                escape(e.label),
                escape(p["a"].as_str().unwrap_or("")),
                escape(p["b"].as_str().unwrap_or("")),
                num(&p["diff"]),
                num(&p["lo"]),
                num(&p["hi"]),
                p["only_a"],
                p["only_b"],
                p["n"]
            );
        }
    }
    h.push_str("</table><p class=\"note\">An interval that contains 0 means the difference is not shown at this n.</p>\n");

    h.push_str("<h2>Predicting correctness from the mean token reward</h2>\n<table><tr><th>evaluation</th><th>right / wrong samples</th><th>AUROC</th><th>95% interval (problems)</th><th>ECE (10 bins)</th><th>Pearson r</th>\
<th>within problems: reward [95%]</th><th>within problems: log-prob [95%]</th><th>problems (pairs)</th></tr>\n");
    for e in evals {
        let s = e.summary;
        let auroc = if s["correctness_auroc"].is_f64() {
            num(&s["correctness_auroc"])
        } else {
            "undefined (too few of a class)".into()
        };
        let within = |name: &str| {
            let r = &s["within_problem_auroc"][name];
            if r["value"].is_f64() {
                format!("{} [{}, {}]", num(&r["value"]), num(&r["lo"]), num(&r["hi"]))
            } else {
                "undefined (no problem with both)".into()
            }
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{} / {}</td><td>{}</td><td>[{}, {}]</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ({})</td></tr>",
            escape(e.label),
            s["correct_samples"],
            s["wrong_samples"],
            auroc,
            num(&s["correctness_auroc_lo"]),
            num(&s["correctness_auroc_hi"]),
            num(&s["correctness_ece"]),
            num(&s["correctness_pearson"]),
            within("reward (mean)"),
            within("log-prob (mean)"),
            s["within_problem_auroc"]["reward (mean)"]["n"],
            s["within_problem_pairs"]
        );
    }
    h.push_str(
        "</table><p class=\"note\">Within problems: the share of (right, wrong) sample pairs of the same problem that the score orders \
right (ties count ½), over the problems with both; the interval is a bootstrap over problems. It is blind to problem difficulty, \
which the pooled AUROC also rewards, and it is the signal a reranker or a policy update uses.</p>\n",
    );
    if !versus.is_empty() {
        h.push_str("<table><tr><th>within problems, this evaluation minus</th><th>score</th><th>difference</th><th>95% interval</th><th>problems better / worse</th><th>problems with pairs</th></tr>\n");
        for v in &versus {
            for p in v["within_problem"].as_array().into_iter().flatten() {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td>{}<td>{} / {}</td><td>{}</td></tr>",
                    escape(&short(v["other"].as_str().unwrap_or(""))),
                    escape(p["a"].as_str().unwrap_or("")),
                    diff_cells(Some(p)),
                    p["only_a"],
                    p["only_b"],
                    p["n"]
                );
            }
        }
        h.push_str("</table>\n");
    }

    h.push_str("<h2>Error localisation on controlled corruptions</h2>\n<table><tr><th>method</th>");
    for e in evals {
        let _ = write!(h, "<th>{}<br>rate</th><th>95% interval</th>", escape(e.label));
    }
    for v in &versus {
        let _ = write!(
            h,
            "<th>difference<br>vs {}</th><th>95% interval</th>",
            escape(&short(v["other"].as_str().unwrap_or("")))
        );
    }
    h.push_str("</tr>\n");
    let loc: Vec<String> = evals[0].summary["localisation"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for name in &loc {
        let _ = write!(h, "<tr><td>{}</td>", escape(name));
        for e in evals {
            let r = &e.summary["localisation"][name];
            let _ = write!(h, "<td>{}</td><td>[{}, {}]</td>", num(&r["value"]), num(&r["lo"]), num(&r["hi"]));
        }
        for v in &versus {
            h.push_str(&diff_cells(
                v["localisation"]
                    .as_array()
                    .and_then(|d| d.iter().find(|p| p["a"].as_str() == Some(name.as_str()))),
            ));
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
    let _ = writeln!(
        h,
        "</table><p class=\"note\">{} corruptions. Differences (hit@1 only) are per problem, paired on the problems both evaluations corrupted.</p>",
        evals
            .iter()
            .map(|e| format!("{}: {}", escape(e.label), e.corruptions.len()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for e in evals {
        let Some(kinds) = e.summary["localisation_by_kind"].as_object().filter(|k| !k.is_empty()) else {
            continue;
        };
        let methods: Vec<String> = kinds
            .values()
            .next()
            .and_then(|k| k["hit_at_1"].as_object())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let _ = write!(
            h,
            "<h3>hit@1 by corruption kind: {}</h3>\n<table><tr><th>kind</th><th>traces</th><th>random line</th>",
            escape(e.label)
        );
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

    h.push_str(&traces(&evals[0], token_text));
    h.push_str("</body></html>\n");
    h
}

/// A difference cell pair (value, interval) from a `PairedDiff` object; bold when the interval
/// excludes 0.
fn diff_cells(p: Option<&serde_json::Value>) -> String {
    let Some(p) = p else { return "<td>–</td><td></td>".into() };
    let (lo, hi) = (p["lo"].as_f64().unwrap_or(f64::NAN), p["hi"].as_f64().unwrap_or(f64::NAN));
    let sign = |v: &serde_json::Value| v.as_f64().map_or("–".into(), |x| format!("{x:+.3}"));
    let shown = lo > 0.0 || hi < 0.0;
    let (b, eb) = if shown { ("<b>", "</b>") } else { ("", "") };
    format!("<td>{b}{}{eb}</td><td>[{}, {}]</td>", sign(&p["diff"]), sign(&p["lo"]), sign(&p["hi"]))
}

/// How many traces of each sort the report shows.
const TRACES_EACH: usize = 3;

/// The first `k` of `items` from distinct problems (and, where `key` differs, distinct keys
/// before repeated ones).
fn spread<'a, T>(items: impl Iterator<Item = &'a T>, problem: impl Fn(&T) -> u64, key: impl Fn(&T) -> String, k: usize) -> Vec<&'a T> {
    let mut seen_p = std::collections::BTreeSet::new();
    let mut seen_k = std::collections::BTreeSet::new();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for it in items {
        if !seen_p.insert(problem(it)) {
            continue;
        }
        if seen_k.insert(key(it)) {
            first.push(it)
        } else {
            later.push(it)
        }
    }
    first.into_iter().chain(later).take(k).collect()
}

/// The traces section: right and wrong samples and corruptions from different problems (and
/// corruption kinds), every token shaded on one colour scale (shown as a bar), a corruption's
/// first wrong line outlined and the line each localisation method picked marked.
fn traces(e: &Evaluation, token_text: &dyn Fn(u32) -> String) -> String {
    let right = spread(e.samples.iter().filter(|s| s.correct), |s| s.problem_id, |_| String::new(), TRACES_EACH);
    let wrong = spread(e.samples.iter().filter(|s| !s.correct), |s| s.problem_id, |_| String::new(), TRACES_EACH);
    let corrupted = spread(e.corruptions.iter(), |c| c.problem_id, |c| c.kind.clone(), 2 * TRACES_EACH);
    let scale = right
        .iter()
        .chain(&wrong)
        .flat_map(|s| s.token_rewards.iter())
        .chain(corrupted.iter().flat_map(|c| c.token_rewards.iter()))
        .fold(1e-6f32, |m, r| m.max(r.abs()));
    let mut h = String::from("<h2>Traces, each token shaded by its reward</h2>\n");
    let _ = writeln!(
        h,
        "<p class=\"note\">One colour scale for every trace below (hover a token for its reward). A red outline marks a corruption's first wrong line; the tags at the end of a line say which localisation method ranked it first.</p>\n<div style=\"display:flex;align-items:center;gap:6px;font-size:90%\"><span>{:.2}</span><div style=\"width:300px;height:14px;background:linear-gradient(to right,rgb(255,0,0),rgb(255,255,255),rgb(0,255,0));border:1px solid #ccc\"></div><span>+{:.2}</span><span class=\"note\">(white: 0)</span></div>",
        -scale, scale
    );
    for s in right.iter().chain(&wrong) {
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
        h.push_str(&trace(
            &s.response_tokens,
            &s.token_rewards,
            &s.token_lines,
            None,
            &Default::default(),
            scale,
            token_text,
        ));
    }
    for c in corrupted {
        let f = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let steps: Vec<usize> = c.token_lines.iter().map(|&l| l as usize).collect();
        let mut marks: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
        // The three scored methods (the first-line and last-line baselines are left untagged),
        // tagged by their first word: interval, dense, log-prob.
        for (name, ranked) in super::summary::line_rankings(&f(&c.token_rewards), &f(&c.policy_logprobs), &steps)
            .into_iter()
            .take(3)
        {
            if let Some(&l) = ranked.first() {
                marks.entry(l as u32).or_default().push(name.split(' ').next().unwrap_or(name));
            }
        }
        let _ = writeln!(
            h,
            "<h3>problem {} corruption {} ({}), first wrong line {}</h3>",
            c.problem_id,
            c.corruption_index,
            escape(&c.kind),
            c.first_error_line
        );
        h.push_str(&trace(
            &c.response_tokens,
            &c.token_rewards,
            &c.token_lines,
            Some(c.first_error_line),
            &marks,
            scale,
            token_text,
        ));
    }
    h
}

/// Tokens as spans shaded by reward on the scale ±`scale`, lines as blocks; `wrong` outlines
/// that line; `marks` tags lines (e.g. with the methods that picked them).
fn trace(
    tokens: &[u32],
    rewards: &[f32],
    lines: &[u32],
    wrong: Option<u32>,
    marks: &std::collections::BTreeMap<u32, Vec<&str>>,
    scale: f32,
    token_text: &dyn Fn(u32) -> String,
) -> String {
    let mut h = String::from("<div class=\"trace\">");
    let mut line = u32::MAX;
    let close = |h: &mut String, line: u32| {
        if let Some(m) = marks.get(&line) {
            let _ = write!(h, " <span class=\"pick\">\u{2190} {}</span>", escape(&m.join(", ")));
        }
        h.push_str("</div>");
    };
    for (i, &t) in tokens.iter().enumerate() {
        let l = lines.get(i).copied().unwrap_or(0);
        if l != line {
            if line != u32::MAX {
                close(&mut h, line);
            }
            let class = if wrong == Some(l) { " class=\"wrong\"" } else { "" };
            let _ = write!(h, "<div{class}>");
            line = l;
        }
        let r = (rewards.get(i).copied().unwrap_or(0.0) / scale).clamp(-1.0, 1.0);
        let (red, green) = if r < 0.0 {
            (255, (255.0 * (1.0 + r)) as u8)
        } else {
            ((255.0 * (1.0 - r)) as u8, 255)
        };
        let blue = red.min(green);
        let text = token_text(t).replace('\n', "");
        let _ = write!(
            h,
            "<span style=\"background:rgb({red},{green},{blue})\" title=\"{:.3}\">{}</span>",
            rewards.get(i).copied().unwrap_or(0.0),
            escape(&text)
        );
    }
    if line != u32::MAX {
        close(&mut h, line);
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
        if c {
            tp += 1.0
        } else {
            fp += 1.0
        }
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
        let mut chart = ChartBuilder::on(&root)
            .caption("ROC: correct vs wrong samples", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(245, 245, 245))
            .x_desc("false positive rate")
            .y_desc("true positive rate")
            .draw()?;
        chart.draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], &RGBColor(180, 180, 180)))?;
        // An evaluation whose AUROC is undefined (too few right or wrong samples) gets no curve.
        for (i, e) in evals.iter().enumerate().filter(|(_, e)| e.summary["correctness_auroc"].is_f64()) {
            let c = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(roc_points(&scored(e)), c.stroke_width(2)))?
                .label(format!("{} (AUROC {})", short(e.label), num(&e.summary["correctness_auroc"])))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })
}

fn reliability_chart(evals: &[Evaluation]) -> String {
    svg(|root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Reliability: sigmoid(mean reward)", ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(245, 245, 245))
            .x_desc("predicted P(correct)")
            .y_desc("fraction correct")
            .draw()?;
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
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(short(e.label))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })
}

fn histogram(e: &Evaluation) -> String {
    let s = scored(e);
    let (lo, hi) = s.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x.0), b.max(x.0)));
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (lo.min(0.0) - 1.0, hi.max(0.0) + 1.0)
    };
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
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(40)
            .build_cartesian_2d(lo..hi, 0f64..top * 1.1)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(245, 245, 245))
            .x_desc("mean token reward")
            .y_desc("samples")
            .draw()?;
        for (k, (name, c)) in [("wrong", RGBColor(214, 39, 40)), ("correct", RGBColor(44, 160, 44))].into_iter().enumerate() {
            let idx = if name == "correct" { 1 } else { 0 };
            let bars: Vec<Rectangle<(f64, f64)>> = (0..BINS)
                .filter(|&b| counts[idx][b] > 0)
                .map(|b| {
                    let x0 = lo + b as f64 * w + if k == 0 { 0.0 } else { w / 2.0 };
                    Rectangle::new([(x0, 0.0), (x0 + w / 2.0, counts[idx][b] as f64)], c.mix(0.7).filled())
                })
                .collect();
            chart
                .draw_series(bars)?
                .label(name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 10, y + 4)], c.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_escapes_and_roc_points() {
        assert_eq!(
            short("runs/a/checkpoints/step-000005 (iteration 5, policy v6)"),
            "step-000005 (iteration 5, policy v6)"
        );
        assert_eq!(short("x/policy + x/reward"), "policy + reward");
        assert_eq!(escape("<a href=\"x\">&</a>"), "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;");
        // Scores 3 (correct), 2 (wrong), 2 (correct), 1 (wrong): the tie at 2 is one step.
        let pts = roc_points(&[(3.0, true), (2.0, false), (2.0, true), (1.0, false)]);
        assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }
}
