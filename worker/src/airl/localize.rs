//! Error localisation (design §1): the predicted wrong step of a trace is the step (line) with
//! the lowest mean token reward; a prediction is a hit when it is the step that holds the trace's
//! first wrong token.

/// Step (line) index of each response token, from whether each token's text contains a newline:
/// a newline token ends its step, so the next token starts a new one.
pub fn step_ids(ends_line: &[bool]) -> Vec<usize> {
    let mut step = 0;
    ends_line
        .iter()
        .map(|&nl| {
            let s = step;
            if nl {
                step += 1;
            }
            s
        })
        .collect()
}

/// Index of the first token of the final answer line, the line of the last `####` (`pieces`
/// are the response's tokens decoded one by one; a token whose text holds a newline ends its
/// line, as in [`step_ids`]). When the marker follows a newline inside one token, that token.
/// `None` when the response holds no `####`.
pub fn answer_line_start(pieces: &[String]) -> Option<usize> {
    let full: String = pieces.concat();
    let pos = full.rfind("####")?;
    let (mut begin, mut i) = (0, 0);
    while begin + pieces[i].len() <= pos {
        begin += pieces[i].len();
        i += 1;
    }
    if pieces[i][..pos - begin].contains('\n') {
        return Some(i);
    }
    let steps = step_ids(&pieces.iter().map(|p| p.contains('\n')).collect::<Vec<_>>());
    Some(steps.iter().position(|&s| s == steps[i]).unwrap_or(i))
}

/// The step with the lowest mean reward (the first such step on ties); `None` for no tokens.
pub fn lowest_step(rewards: &[f64], steps: &[usize]) -> Option<usize> {
    let n = steps.iter().max().map(|&m| m + 1)?;
    let mut sum = vec![0.0; n];
    let mut count = vec![0usize; n];
    for (&r, &s) in rewards.iter().zip(steps) {
        sum[s] += r;
        count[s] += 1;
    }
    (0..n)
        .filter(|&s| count[s] > 0)
        .min_by(|&a, &b| (sum[a] / count[a] as f64).total_cmp(&(sum[b] / count[b] as f64)))
}

/// Hit@1 of error localisation over traces `(token rewards, step ids, first wrong token)`, and
/// the hit rate of a uniformly random step pick (the mean of 1 / number of steps). NaN for none.
pub fn hit_at_1(traces: &[(Vec<f64>, Vec<usize>, usize)]) -> (f64, f64) {
    if traces.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut hits = 0usize;
    let mut chance = 0.0;
    for (rewards, steps, first_error) in traces {
        let n_steps = steps.iter().collect::<std::collections::BTreeSet<_>>().len().max(1);
        chance += 1.0 / n_steps as f64;
        let want = steps.get(*first_error).copied();
        if want.is_some() && lowest_step(rewards, steps) == want {
            hits += 1;
        }
    }
    (hits as f64 / traces.len() as f64, chance / traces.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_answer_line_starts_at_the_first_token_of_the_last_marker_line() {
        // Lines: "3 + 4 = 7.\n" (tokens 0-4), "#### 7" (tokens 5-6).
        let p = pieces(&["3", " +", " 4", " = 7", ".\n", "####", " 7"]);
        assert_eq!(answer_line_start(&p), Some(5));
        // A marker split over two tokens, after a space on its line: the line's first token.
        let p = pieces(&["a", "\n", "The", " ##", "## 9", "\n"]);
        assert_eq!(answer_line_start(&p), Some(2));
        // The marker after a newline inside one token: that token.
        let p = pieces(&["x = 2", ".\n####", " 2"]);
        assert_eq!(answer_line_start(&p), Some(1));
        // The last of two marker lines; none at all.
        let p = pieces(&["#### 1", "\n", "#### 2"]);
        assert_eq!(answer_line_start(&p), Some(2));
        assert_eq!(answer_line_start(&pieces(&["no", " answer", "\n"])), None);
        assert_eq!(answer_line_start(&[]), None);
    }

    #[test]
    fn steps_split_after_newline_tokens() {
        assert_eq!(step_ids(&[false, false, true, false, true, false]), [0, 0, 0, 1, 1, 2]);
        assert_eq!(step_ids(&[]), Vec::<usize>::new());
    }

    #[test]
    fn the_lowest_mean_step_is_predicted_and_scored() {
        let steps = vec![0, 0, 1, 1, 2];
        // Step means: 0.5, -1.0, -0.9.
        let rewards = vec![0.5, 0.5, -1.0, -1.0, -0.9];
        assert_eq!(lowest_step(&rewards, &steps), Some(1));
        let (hit, chance) = hit_at_1(&[(rewards.clone(), steps.clone(), 2), (rewards, steps, 4)]);
        assert_eq!(hit, 0.5, "first error in step 1: hit; in step 2: miss");
        assert!((chance - 1.0 / 3.0).abs() < 1e-12);
        assert!(hit_at_1(&[]).0.is_nan());
    }
}
