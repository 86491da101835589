//! Rule-based corruptions of an expert solution, the hard negatives of the discriminator.
//!
//! Each corruption returns the corrupted text and the byte offset where it first becomes wrong;
//! [`first_error_token`] turns that into a token index of the tokenised response. Kinds:
//!
//! * `operator_flip`: flip one operator of one equation (`+`↔`-`, `*`↔`/`); the written result
//!   stays, so the step becomes false. The error starts at the operator.
//! * `answer_nudge`: the final `#### n` becomes `n ± 1`. The error starts at the number.
//! * `number_alter`: change one operand of one equation by 1–3; the written result stays.
//!
//! Those three make a line arithmetically false, which a language model's log-probabilities
//! already notice. Real reasoning errors are mostly **consistent**: right arithmetic on the wrong
//! quantity or with the wrong operation. Two kinds make such errors; every line of the result
//! stays arithmetically true:
//!
//! * `wrong_operation`: one operator of one equation becomes another (`+`→`-`/`*`, `-`→`+`,
//!   `*`→`+`/`/`, `/`→`*`/`-`), its result is recomputed, and the new value is carried through
//!   every later equation that uses the old one, the prose numbers equal to it and the final
//!   `####`. The error starts at the operator.
//! * `wrong_quantity`: one operand of one equation becomes another number of the question (or
//!   of the solution before it), recomputed and carried the same way. The error starts at the
//!   operand.
//!
//! Both are refused (`None`) when a recomputed value is negative, not finite, has more than two
//! decimals, or the final answer does not change.
//!
//! One kind sits between the two groups, the slip a small policy makes most (about 7 in 10 of
//! its wrong samples on the embedded default hold a false line, e.g. `15 / 5 = 4` then `#### 4`):
//!
//! * `miscalculation`: the written result of one equation is off (by 1, 2 or 10, not below 0),
//!   and the wrong value is carried forward as above. That one line is false; every other line
//!   stays true. The error starts at the result.
//!
//! Works on synthetic and real GSM8K answers. Real GSM8K calculator annotations `<<48/2=24>>`
//! are **stripped** first ([`strip_calculator_annotations`]); airlift strips them from every
//! expert trace (training and corruption alike), so the policy never learns to write them.

use crate::rng::SplitMix64;

/// A corruption kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionKind {
    OperatorFlip,
    AnswerNudge,
    NumberAlter,
    WrongOperation,
    WrongQuantity,
    Miscalculation,
}

/// The kinds that leave the written arithmetic false, in the order they are cycled through
/// (`reward.corruption_kinds`' default).
pub const KINDS: [CorruptionKind; 3] = [CorruptionKind::OperatorFlip, CorruptionKind::AnswerNudge, CorruptionKind::NumberAlter];

/// The kinds whose every line stays arithmetically true.
pub const CONSISTENT_KINDS: [CorruptionKind; 2] = [CorruptionKind::WrongOperation, CorruptionKind::WrongQuantity];

/// Every kind, in `proto`'s `CORRUPTION_KINDS` order.
pub const ALL_KINDS: [CorruptionKind; 6] = [
    CorruptionKind::OperatorFlip,
    CorruptionKind::AnswerNudge,
    CorruptionKind::NumberAlter,
    CorruptionKind::WrongOperation,
    CorruptionKind::WrongQuantity,
    CorruptionKind::Miscalculation,
];

impl CorruptionKind {
    /// The snake_case name used in configs and evaluation records.
    pub fn name(self) -> &'static str {
        match self {
            CorruptionKind::OperatorFlip => "operator_flip",
            CorruptionKind::AnswerNudge => "answer_nudge",
            CorruptionKind::NumberAlter => "number_alter",
            CorruptionKind::WrongOperation => "wrong_operation",
            CorruptionKind::WrongQuantity => "wrong_quantity",
            CorruptionKind::Miscalculation => "miscalculation",
        }
    }

    /// The kind named `name` (see [`CorruptionKind::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_KINDS.into_iter().find(|k| k.name() == name)
    }
}

/// A corrupted copy of a solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Corruption {
    pub kind: CorruptionKind,
    pub text: String,
    /// Byte offset in `text` of the first wrong character.
    pub first_error_byte: usize,
}

/// Removes GSM8K calculator annotations `<<...>>`.
pub fn strip_calculator_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("<<") {
        match rest[i..].find(">>") {
            Some(j) => {
                out.push_str(&rest[..i]);
                rest = &rest[i + j + 2..];
            }
            None => break,
        }
    }
    out.push_str(rest);
    out
}

/// A number token in an equation: byte span and value.
#[derive(Debug, Clone, Copy)]
struct Num {
    start: usize,
    end: usize,
    value: f64,
}

/// An equation `n0 op n1 op … = r` found in the text.
#[derive(Debug, Clone)]
struct Equation {
    operands: Vec<Num>,
    /// (byte offset, operator char) between consecutive operands.
    ops: Vec<(usize, char)>,
    result: Num,
}

fn parse_number(b: &[u8], mut i: usize) -> Option<Num> {
    let start = i;
    if i < b.len() && b[i] == b'$' {
        i += 1;
    }
    let digits_start = i;
    while i < b.len()
        && (b[i].is_ascii_digit()
            || (b[i] == b',' && i + 1 < b.len() && b[i + 1].is_ascii_digit())
            || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit()))
    {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let text: String = std::str::from_utf8(&b[digits_start..i]).ok()?.chars().filter(|c| *c != ',').collect();
    Some(Num {
        start,
        end: i,
        value: text.parse().ok()?,
    })
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    i
}

/// Whether a number may start at byte `i`: a digit or `$` not inside a word or another number.
fn number_starts_at(b: &[u8], i: usize) -> bool {
    let at_boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.' || b[i - 1] == b',');
    at_boundary && (b[i].is_ascii_digit() || b[i] == b'$')
}

/// Finds equations `a op b [op c …] = r` (operators `+ - * / x ×`).
fn equations(text: &str) -> Vec<Equation> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if number_starts_at(b, i) {
            if let Some(first) = parse_number(b, i) {
                let mut operands = vec![first];
                let mut ops = Vec::new();
                let mut j = first.end;
                loop {
                    let k = skip_spaces(b, j);
                    let (op, width) = match b.get(k) {
                        Some(b'+') => ('+', 1),
                        Some(b'-') => ('-', 1),
                        Some(b'*') => ('*', 1),
                        Some(b'/') => ('/', 1),
                        Some(b'x') if b.get(k + 1) == Some(&b' ') => ('x', 1),
                        _ if text[k..].starts_with('×') => ('×', '×'.len_utf8()),
                        _ => break,
                    };
                    let m = skip_spaces(b, k + width);
                    match parse_number(b, m) {
                        Some(n) => {
                            ops.push((k, op));
                            operands.push(n);
                            j = n.end;
                        }
                        None => break,
                    }
                }
                let k = skip_spaces(b, j);
                if !ops.is_empty() && b.get(k) == Some(&b'=') {
                    if let Some(result) = parse_number(b, skip_spaces(b, k + 1)) {
                        i = result.end;
                        out.push(Equation { operands, ops, result });
                        continue;
                    }
                }
                i = operands.last().unwrap().end.max(i + 1);
                continue;
            }
        }
        i += 1;
    }
    out
}

fn eval(values: &[f64], ops: &[char]) -> f64 {
    // Standard precedence: * and / first.
    let mut terms = vec![values[0]];
    let mut signs = vec![1.0];
    for (k, &op) in ops.iter().enumerate() {
        let v = values[k + 1];
        match op {
            '*' | 'x' | '×' => *terms.last_mut().unwrap() *= v,
            '/' => *terms.last_mut().unwrap() /= v,
            '+' => {
                terms.push(v);
                signs.push(1.0)
            }
            _ => {
                terms.push(v);
                signs.push(-1.0)
            }
        }
    }
    terms.iter().zip(&signs).map(|(t, s)| t * s).sum()
}

/// Whether an equation as written holds.
fn holds(values: &[f64], ops: &[char], result: f64) -> bool {
    (eval(values, ops) - result).abs() < 1e-6 * result.abs().max(1.0)
}

/// Whether every equation `a op b = r` in `text` holds (steps are true).
pub fn all_steps_true(text: &str) -> bool {
    only_false_equation(text) == Some(None)
}

fn format_like(v: f64) -> String {
    if v == v.trunc() {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Applies corruption `kind` to `answer` (already stripped of annotations), choosing the
/// equation / operand with `rng`. `None` if the text offers nothing to corrupt for that kind.
/// `wrong_quantity` draws its numbers from the solution only; [`corrupt_in`] adds the question's.
pub fn corrupt(answer: &str, kind: CorruptionKind, rng: &mut SplitMix64) -> Option<Corruption> {
    corrupt_in("", answer, kind, rng)
}

/// [`corrupt`] of the solution `answer` to `question`.
pub fn corrupt_in(question: &str, answer: &str, kind: CorruptionKind, rng: &mut SplitMix64) -> Option<Corruption> {
    match kind {
        CorruptionKind::WrongOperation | CorruptionKind::WrongQuantity => consistent(question, answer, kind, rng),
        CorruptionKind::Miscalculation => miscalculation(answer, rng),
        CorruptionKind::AnswerNudge => {
            let idx = answer.rfind("####")?;
            let b = answer.as_bytes();
            let start = skip_spaces(b, idx + 4);
            let num = parse_number(b, start)?;
            let delta = if rng.next_u64().is_multiple_of(2) { 1.0 } else { -1.0 };
            let new = format_like(num.value + delta);
            let text = format!("{}{}{}", &answer[..num.start], new, &answer[num.end..]);
            let first = num.start + common_prefix(&answer[num.start..num.end], &new);
            Some(Corruption {
                kind,
                text,
                first_error_byte: first,
            })
        }
        CorruptionKind::OperatorFlip => {
            let eqs = equations(answer);
            let mut candidates = Vec::new();
            for e in &eqs {
                let vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
                for (k, &(pos, op)) in e.ops.iter().enumerate() {
                    let flipped = match op {
                        '+' => '-',
                        '-' => '+',
                        '*' | 'x' | '×' => '/',
                        _ => '*',
                    };
                    let mut ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
                    ops[k] = flipped;
                    if !holds(&vals, &ops, e.result.value) {
                        candidates.push((pos, op, flipped));
                    }
                }
            }
            if candidates.is_empty() {
                return None;
            }
            let (pos, op, flipped) = candidates[rng.range(0, candidates.len() as i64 - 1) as usize];
            let text = format!("{}{}{}", &answer[..pos], flipped, &answer[pos + op.len_utf8()..]);
            Some(Corruption {
                kind,
                text,
                first_error_byte: pos,
            })
        }
        CorruptionKind::NumberAlter => {
            let eqs = equations(answer);
            let mut candidates = Vec::new();
            for e in &eqs {
                let ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
                for k in 0..e.operands.len() {
                    candidates.push((e.clone(), ops.clone(), k));
                }
            }
            for _ in 0..8 {
                if candidates.is_empty() {
                    return None;
                }
                let (e, ops, k) = &candidates[rng.range(0, candidates.len() as i64 - 1) as usize];
                let k = *k;
                let old = e.operands[k];
                let delta = rng.range(1, 3) as f64 * if old.value > 3.0 && rng.next_u64().is_multiple_of(2) { -1.0 } else { 1.0 };
                let new_v = old.value + delta;
                let mut vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
                vals[k] = new_v;
                if holds(&vals, ops, e.result.value) {
                    continue;
                }
                let old_text = &answer[old.start..old.end];
                let prefix = if old_text.starts_with('$') { "$" } else { "" };
                let new = format!("{prefix}{}", format_like(new_v));
                let text = format!("{}{}{}", &answer[..old.start], new, &answer[old.end..]);
                let first = old.start + common_prefix(old_text, &new);
                return Some(Corruption {
                    kind,
                    text,
                    first_error_byte: first,
                });
            }
            None
        }
    }
}

/// Every number of `text` at a word boundary (as the equation scanner reads them).
fn numbers(text: &str) -> Vec<Num> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if number_starts_at(b, i) {
            if let Some(n) = parse_number(b, i) {
                out.push(n);
                i = n.end;
                continue;
            }
        }
        i += 1;
    }
    out
}

/// A value a consistent corruption may write: finite, not negative, below 10⁹, at most two
/// decimals; rounded to them.
fn tidy(v: f64) -> Option<f64> {
    let r = (v * 100.0).round() / 100.0;
    (v.is_finite() && (0.0..1e9).contains(&v) && (v - r).abs() < 1e-9 * v.abs().max(1.0)).then_some(r)
}

fn same(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * a.abs().max(1.0)
}

/// A number's new text: the old one's `$` kept, the value as [`format_like`] writes it.
fn rewrite(answer: &str, n: &Num, v: f64) -> String {
    let prefix = if answer[n.start..n.end].starts_with('$') { "$" } else { "" };
    format!("{prefix}{}", format_like(v))
}

/// How equation `k`'s result changes in [`carry`].
enum NewResult<'a> {
    /// Recomputed from these operand values and operators (a consistent error).
    Recomputed(&'a [f64], &'a [char]),
    /// Written as this value, which the operands do not give (a slip).
    Slip(f64),
}

/// Edits equation `k` of `answer` (the first changed byte range is `first`, replaced by its
/// text), gives it the result `new` and carries every changed value forward. `None` if a value
/// is not [`tidy`], nothing downstream of the final answer changes, or a line would not hold
/// (with a slip: any line but equation `k`).
fn carry(answer: &str, eqs: &[Equation], k: usize, new: NewResult, first: (usize, usize, String)) -> Option<(String, usize)> {
    let e = &eqs[k];
    let (r, slip) = match new {
        NewResult::Recomputed(vals, ops) => (tidy(eval(vals, ops))?, false),
        NewResult::Slip(v) => (tidy(v)?, true),
    };
    if same(r, e.result.value) {
        return None;
    }
    // (start, end, replacement), non-overlapping; a slip's first edit is the result itself.
    let mut edits: Vec<(usize, usize, String)> = vec![first.clone()];
    if !slip {
        edits.push((e.result.start, e.result.end, rewrite(answer, &e.result, r)));
    }
    let mut changed: Vec<(f64, f64)> = vec![(e.result.value, r)];
    let mapped = |changed: &[(f64, f64)], v: f64| changed.iter().rev().find(|(old, _)| same(*old, v)).map(|c| c.1);
    let mut in_equations: Vec<(usize, usize)> = eqs.iter().map(|q| (q.operands[0].start, q.result.end)).collect();
    in_equations.sort();
    for q in &eqs[k + 1..] {
        let mut vals: Vec<f64> = q.operands.iter().map(|n| n.value).collect();
        let mut any = false;
        for (i, n) in q.operands.iter().enumerate() {
            if let Some(new) = mapped(&changed, n.value) {
                vals[i] = new;
                edits.push((n.start, n.end, rewrite(answer, n, new)));
                any = true;
            }
        }
        if any {
            let qops: Vec<char> = q.ops.iter().map(|o| o.1).collect();
            let s = tidy(eval(&vals, &qops))?;
            if !same(s, q.result.value) {
                edits.push((q.result.start, q.result.end, rewrite(answer, &q.result, s)));
                changed.push((q.result.value, s));
            }
        }
    }
    // Prose numbers after the edited equation (the final `####` among them).
    let after = e.result.end;
    let final_at = answer.rfind("####");
    let mut final_changed = false;
    for n in numbers(answer) {
        let inside = in_equations.iter().any(|&(a, b)| n.start >= a && n.end <= b);
        if n.start < after || inside {
            continue;
        }
        if let Some(new) = mapped(&changed, n.value) {
            edits.push((n.start, n.end, rewrite(answer, &n, new)));
            if final_at.is_some_and(|f| n.start > f) {
                final_changed = true;
            }
        }
    }
    if final_at.is_some() && !final_changed {
        return None;
    }
    edits.sort_by_key(|x| x.0);
    let mut text = String::with_capacity(answer.len() + 16);
    let mut at = 0;
    for (a, b, t) in &edits {
        if *a < at {
            return None;
        }
        text.push_str(&answer[at..*a]);
        text.push_str(t);
        at = *b;
    }
    text.push_str(&answer[at..]);
    let first_error = first.0 + common_prefix(&answer[first.0..first.1], &first.2);
    let lines_hold = if slip {
        only_false_equation(&text) == Some(Some(k))
    } else {
        all_steps_true(&text)
    };
    (lines_hold && text != answer).then_some((text, first_error))
}

/// `Some(None)` if every equation of `text` holds, `Some(Some(k))` if equation `k` alone does
/// not, `None` if more than one does not.
fn only_false_equation(text: &str) -> Option<Option<usize>> {
    let mut false_at = None;
    for (k, e) in equations(text).iter().enumerate() {
        let vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
        let ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
        if !holds(&vals, &ops, e.result.value) {
            if false_at.is_some() {
                return None;
            }
            false_at = Some(k);
        }
    }
    Some(false_at)
}

/// `miscalculation` (see the module docs): one true equation's result written off by 1, 2 or
/// 10, carried forward.
fn miscalculation(answer: &str, rng: &mut SplitMix64) -> Option<Corruption> {
    let eqs = equations(answer);
    let mut candidates: Vec<(usize, f64)> = Vec::new();
    for (k, e) in eqs.iter().enumerate() {
        let vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
        let ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
        if !holds(&vals, &ops, e.result.value) {
            continue; // an expert's own slip is not ours to carry
        }
        for d in [1.0, -1.0, 2.0, -2.0, 10.0, -10.0] {
            let v = e.result.value + d;
            if v >= 0.0 {
                candidates.push((k, v));
            }
        }
    }
    for _ in 0..16 {
        if candidates.is_empty() {
            return None;
        }
        let pick = rng.range(0, candidates.len() as i64 - 1) as usize;
        let (k, v) = candidates.swap_remove(pick);
        let n = &eqs[k].result;
        let first = (n.start, n.end, rewrite(answer, n, v));
        if let Some((text, first_error_byte)) = carry(answer, &eqs, k, NewResult::Slip(v), first) {
            return Some(Corruption {
                kind: CorruptionKind::Miscalculation,
                text,
                first_error_byte,
            });
        }
    }
    None
}

/// The two consistent kinds (see the module docs).
fn consistent(question: &str, answer: &str, kind: CorruptionKind, rng: &mut SplitMix64) -> Option<Corruption> {
    let eqs = equations(answer);
    // Only equations that hold as written: an expert's own slip is not ours to carry.
    let usable: Vec<usize> = (0..eqs.len())
        .filter(|&k| {
            let vals: Vec<f64> = eqs[k].operands.iter().map(|n| n.value).collect();
            let ops: Vec<char> = eqs[k].ops.iter().map(|o| o.1).collect();
            holds(&vals, &ops, eqs[k].result.value)
        })
        .collect();
    let mut candidates: Vec<(usize, usize, f64)> = Vec::new(); // (equation, operator or operand index, new value / operator code)
    for &k in &usable {
        let e = &eqs[k];
        match kind {
            CorruptionKind::WrongOperation => {
                for (i, &(_, op)) in e.ops.iter().enumerate() {
                    let alts: &[char] = match op {
                        '+' => &['-', '*'],
                        '-' => &['+'],
                        '/' => &['*', '-'],
                        _ => &['+', '/'],
                    };
                    for &a in alts {
                        candidates.push((k, i, a as u32 as f64));
                    }
                }
            }
            _ => {
                let mut pool: Vec<f64> = numbers(question).iter().map(|n| n.value).collect();
                pool.extend(numbers(&answer[..e.operands[0].start]).iter().map(|n| n.value));
                for (i, n) in e.operands.iter().enumerate() {
                    let mut seen: Vec<f64> = Vec::new();
                    for &v in &pool {
                        if !same(v, n.value) && !seen.iter().any(|&s| same(s, v)) {
                            seen.push(v);
                            candidates.push((k, i, v));
                        }
                    }
                }
            }
        }
    }
    for _ in 0..16 {
        if candidates.is_empty() {
            return None;
        }
        let pick = rng.range(0, candidates.len() as i64 - 1) as usize;
        let (k, i, x) = candidates.swap_remove(pick);
        let e = &eqs[k];
        let mut vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
        let mut ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
        let first = if kind == CorruptionKind::WrongOperation {
            let new = char::from_u32(x as u32).expect("an operator");
            let (pos, old) = e.ops[i];
            ops[i] = new;
            (pos, pos + old.len_utf8(), new.to_string())
        } else {
            vals[i] = x;
            let n = &e.operands[i];
            (n.start, n.end, rewrite(answer, n, x))
        };
        if let Some((text, first_error_byte)) = carry(answer, &eqs, k, NewResult::Recomputed(&vals, &ops), first) {
            return Some(Corruption { kind, text, first_error_byte });
        }
    }
    None
}

fn common_prefix(a: &str, b: &str) -> usize {
    a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count()
}

/// Index of the token containing byte `byte` of the text that produced `offsets` (the byte
/// spans of each token); the last token if `byte` is past the end.
pub fn first_error_token(offsets: &[(usize, usize)], byte: usize) -> usize {
    offsets.iter().position(|&(s, e)| s <= byte && byte < e).unwrap_or_else(|| {
        // Byte-level BPE may give a token an empty span; fall back to the first token that starts
        // at or after the byte.
        offsets.iter().position(|&(s, _)| s >= byte).unwrap_or(offsets.len().saturating_sub(1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_equations_in_gsm8k_text() {
        let t = strip_calculator_annotations("Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\nShe makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18");
        assert_eq!(t, "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day.\n#### 18");
        let eqs = equations(&t);
        assert_eq!(eqs.len(), 2);
        assert_eq!(eqs[0].operands.len(), 3);
        assert_eq!(eqs[1].result.value, 18.0);
        assert!(all_steps_true(&t));
        assert!(!all_steps_true("so 2 + 2 = 5"));
    }

    #[test]
    fn a_wrong_operation_is_carried_to_the_final_answer() {
        let a = "Janet keeps 16 - 3 = 13 eggs.\nShe sells 13 * 2 = $26 of them, so $26 a day.\n#### 26";
        // `-` has one alternative (`+`); the multiplication's alternatives give 15 or 6.5, so
        // some seed picks the subtraction; find it.
        let c = (0..64).find_map(|seed| {
            let c = corrupt(a, CorruptionKind::WrongOperation, &mut SplitMix64::new(seed))?;
            c.text.starts_with("Janet keeps 16 + 3").then_some(c)
        });
        let c = c.expect("a seed that flips the subtraction");
        assert_eq!(c.text, "Janet keeps 16 + 3 = 19 eggs.\nShe sells 19 * 2 = $38 of them, so $38 a day.\n#### 38");
        assert_eq!(&a[..c.first_error_byte], "Janet keeps 16 ");
        assert!(all_steps_true(&c.text));
    }

    #[test]
    fn a_miscalculation_is_one_false_line_carried_to_the_final_answer() {
        let a = "Janet keeps 16 - 3 = 13 eggs.\nShe sells 13 * 2 = $26 of them, so $26 a day.\n#### 26";
        let mut seen = Vec::new();
        for seed in 0..64 {
            let c = corrupt(a, CorruptionKind::Miscalculation, &mut SplitMix64::new(seed)).expect("a result to miscalculate");
            assert_eq!(c.kind, CorruptionKind::Miscalculation);
            // Exactly one line is false, the one the error starts on; the prefix is the expert's.
            let eqs = equations(&c.text);
            let k = only_false_equation(&c.text).expect("one false line").expect("a false line");
            assert!(
                eqs[k].result.start <= c.first_error_byte && c.first_error_byte < eqs[k].result.end,
                "{}",
                c.text
            );
            assert_eq!(&c.text[..c.first_error_byte], &a[..c.first_error_byte]);
            assert!(!c.text.ends_with("#### 26"), "the final answer follows: {}", c.text);
            seen.push(c.text);
        }
        // The first result off by one is carried through the second equation, its prose copy
        // and the final answer; the second line holds.
        assert!(
            seen.iter()
                .any(|t| t == "Janet keeps 16 - 3 = 14 eggs.\nShe sells 14 * 2 = $28 of them, so $28 a day.\n#### 28"),
            "{seen:?}"
        );
        // The last result off by ten, carried to the prose and the final answer.
        assert!(
            seen.iter()
                .any(|t| t == "Janet keeps 16 - 3 = 13 eggs.\nShe sells 13 * 2 = $36 of them, so $36 a day.\n#### 36"),
            "{seen:?}"
        );
        // Nothing to miscalculate without a true equation.
        assert!(corrupt("It has 2 + 2 = 5 left.\n#### 5", CorruptionKind::Miscalculation, &mut SplitMix64::new(0)).is_none());
        assert!(corrupt("#### 5", CorruptionKind::Miscalculation, &mut SplitMix64::new(0)).is_none());
    }

    #[test]
    fn a_wrong_quantity_comes_from_the_question() {
        let q = "A box holds 12 pens. Tom has 3 boxes and gives away 5 pens. How many are left?";
        let a = "Tom has 12 * 3 = 36 pens.\nHe keeps 36 - 5 = 31 pens.\n#### 31";
        for seed in 0..32 {
            let c = corrupt_in(q, a, CorruptionKind::WrongQuantity, &mut SplitMix64::new(seed)).expect("a quantity to swap");
            assert!(all_steps_true(&c.text), "{}", c.text);
            assert_eq!(&c.text[..c.first_error_byte], &a[..c.first_error_byte]);
            assert!(!c.text.ends_with("#### 31"), "{}", c.text);
        }
        // A result that would be negative is refused: `5 - 12` has nowhere else to go.
        assert!(corrupt_in("", "It has 12 - 5 = 7 left.\n#### 7", CorruptionKind::WrongOperation, &mut SplitMix64::new(0)).is_some());
        assert!(corrupt_in("", "It has 5 = 5 left.\n#### 5", CorruptionKind::WrongOperation, &mut SplitMix64::new(0)).is_none());
    }
}
