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
}

/// All kinds, in the order they are cycled through.
pub const KINDS: [CorruptionKind; 3] = [CorruptionKind::OperatorFlip, CorruptionKind::AnswerNudge, CorruptionKind::NumberAlter];

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
    while i < b.len() && (b[i].is_ascii_digit() || (b[i] == b',' && i + 1 < b.len() && b[i + 1].is_ascii_digit()) || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())) {
        i += 1;
    }
    if i == digits_start {
        return None;
    }
    let text: String = std::str::from_utf8(&b[digits_start..i]).ok()?.chars().filter(|c| *c != ',').collect();
    Some(Num { start, end: i, value: text.parse().ok()? })
}

fn skip_spaces(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i] == b' ' {
        i += 1;
    }
    i
}

/// Finds equations `a op b [op c …] = r` (operators `+ - * / x ×`).
fn equations(text: &str) -> Vec<Equation> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let at_boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'.' || b[i - 1] == b',');
        if at_boundary && (b[i].is_ascii_digit() || b[i] == b'$') {
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
    equations(text).iter().all(|e| {
        let vals: Vec<f64> = e.operands.iter().map(|n| n.value).collect();
        let ops: Vec<char> = e.ops.iter().map(|o| o.1).collect();
        holds(&vals, &ops, e.result.value)
    })
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
pub fn corrupt(answer: &str, kind: CorruptionKind, rng: &mut SplitMix64) -> Option<Corruption> {
    match kind {
        CorruptionKind::AnswerNudge => {
            let idx = answer.rfind("####")?;
            let b = answer.as_bytes();
            let start = skip_spaces(b, idx + 4);
            let num = parse_number(b, start)?;
            let delta = if rng.next_u64() % 2 == 0 { 1.0 } else { -1.0 };
            let new = format_like(num.value + delta);
            let text = format!("{}{}{}", &answer[..num.start], new, &answer[num.end..]);
            let first = num.start + common_prefix(&answer[num.start..num.end], &new);
            Some(Corruption { kind, text, first_error_byte: first })
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
            Some(Corruption { kind, text, first_error_byte: pos })
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
                let delta = rng.range(1, 3) as f64 * if old.value > 3.0 && rng.next_u64() % 2 == 0 { -1.0 } else { 1.0 };
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
                return Some(Corruption { kind, text, first_error_byte: first });
            }
            None
        }
    }
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
}
