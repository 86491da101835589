//! Synthetic GSM8K-style problems with correct step-by-step expert solutions.
//!
//! A problem is a chain of 1–6 integer operations on one running quantity, told through one of
//! [`TEMPLATES`] (people, objects, rates, money, time). The solution has one computation per
//! line, `a op b = r` written GSM8K-style with `+ - * /`, and ends with `#### r`. Rows use the
//! GSM8K layout (`question`, `answer`), so every later stage treats real and synthetic data alike.
//!
//! Determinism: problem `i` of seed `s` depends only on `(s, i)`. Splits: a problem belongs to
//! the eval split when a hash of its question text falls in the eval bucket (1 in 10), otherwise
//! to train, so train and eval never share a problem whatever the seeds and sizes.

use crate::gsm8k::Problem;
use crate::rng::SplitMix64;
use std::collections::HashSet;

/// An arithmetic operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Op {
    /// The symbol written in solutions.
    pub fn symbol(self) -> char {
        match self {
            Op::Add => '+',
            Op::Sub => '-',
            Op::Mul => '*',
            Op::Div => '/',
        }
    }

    /// `a op b`, or `None` if it is not a non-negative integer.
    pub fn apply(self, a: i64, b: i64) -> Option<i64> {
        match self {
            Op::Add => a.checked_add(b),
            Op::Sub => (a >= b).then(|| a - b),
            Op::Mul => a.checked_mul(b),
            Op::Div => (b != 0 && a % b == 0).then(|| a / b),
        }
    }
}

/// Difficulty knobs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthConfig {
    /// Fewest operations per problem (≥ 1).
    pub min_steps: usize,
    /// Most operations per problem (≤ 6).
    pub max_steps: usize,
    /// Operations to draw from.
    pub ops: Vec<Op>,
    /// Range of the starting quantity.
    pub start_range: (i64, i64),
    /// Range of added / subtracted amounts.
    pub addend_range: (i64, i64),
    /// Range of multipliers and divisors (≥ 2).
    pub factor_range: (i64, i64),
    /// No intermediate result may exceed this.
    pub max_value: i64,
}

impl Default for SynthConfig {
    /// The embedded default's easy setting: 1–3 steps, small numbers.
    fn default() -> Self {
        SynthConfig {
            min_steps: 1,
            max_steps: 3,
            ops: vec![Op::Add, Op::Sub, Op::Mul, Op::Div],
            start_range: (2, 30),
            addend_range: (1, 20),
            factor_range: (2, 5),
            max_value: 500,
        }
    }
}

impl SynthConfig {
    /// Checks the knobs; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_steps < 1 || self.max_steps > 6 || self.min_steps > self.max_steps {
            return Err(format!("min_steps/max_steps must satisfy 1 <= {} <= {} <= 6", self.min_steps, self.max_steps));
        }
        if self.ops.is_empty() {
            return Err("ops must name at least one of add, sub, mul, div".into());
        }
        for (name, (lo, hi), min) in [
            ("start_range", self.start_range, 1),
            ("addend_range", self.addend_range, 1),
            ("factor_range", self.factor_range, 2),
        ] {
            if lo < min || lo > hi {
                return Err(format!("{name} = ({lo}, {hi}) must have {min} <= lo <= hi"));
            }
        }
        if self.max_value < self.start_range.1 {
            return Err(format!(
                "max_value = {} is below start_range's upper end {}",
                self.max_value, self.start_range.1
            ));
        }
        Ok(())
    }
}

/// One computation of a solution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub a: i64,
    pub op: Op,
    pub b: i64,
    pub result: i64,
}

/// A generated problem with its structure.
#[derive(Debug, Clone)]
pub struct SynthProblem {
    pub problem: Problem,
    pub steps: Vec<Step>,
    pub template: &'static str,
    pub answer: i64,
}

/// Train or eval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
}

/// Which split a question belongs to (FNV-1a hash of the text; bucket 0 of 10 is eval).
pub fn split_of(question: &str) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in question.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h.is_multiple_of(10) {
        Split::Eval
    } else {
        Split::Train
    }
}

/// A story template. Placeholders: `{n}` name, `{p}` pronoun (He / She), `{a}` current value,
/// `{b}` operand, `{r}` result, `{x}` the computation `a op b = r`.
pub struct Template {
    pub id: &'static str,
    /// Opening sentence, with `{a}` the starting quantity.
    pub start: &'static str,
    /// (question clause, solution line) for add, sub, mul, div.
    pub add: (&'static str, &'static str),
    pub sub: (&'static str, &'static str),
    pub mul: (&'static str, &'static str),
    pub div: (&'static str, &'static str),
    /// The closing question.
    pub ask: &'static str,
}

macro_rules! t {
    ($id:literal, $start:literal, $add:expr, $sub:expr, $mul:expr, $div:expr, $ask:literal) => {
        Template {
            id: $id,
            start: $start,
            add: $add,
            sub: $sub,
            mul: $mul,
            div: $div,
            ask: $ask,
        }
    };
}

/// The story templates (22).
pub const TEMPLATES: &[Template] = &[
    t!(
        "apples",
        "{n} has {a} apples.",
        ("{p} picks {b} more apples.", "After picking more, {n} has {x} apples."),
        ("{p} eats {b} of them.", "After eating some, {n} has {x} apples."),
        ("Then {p} ends up with {b} times as many apples.", "{b} times as many is {x} apples."),
        ("{p} splits the apples into {b} equal bags and keeps one bag.", "One bag holds {x} apples."),
        "How many apples does {n} have now?"
    ),
    t!(
        "marbles",
        "{n} owns {a} marbles.",
        ("A friend gives {n} {b} marbles.", "With the gift, {n} has {x} marbles."),
        ("{p} loses {b} marbles at school.", "After losing some, {n} has {x} marbles."),
        ("{p} trades them for {b} times as many marbles.", "The trade gives {x} marbles."),
        (
            "{p} shares them equally with friends so that {b} people get the same number, {n} included.",
            "Each person gets {x} marbles."
        ),
        "How many marbles does {n} have in the end?"
    ),
    t!(
        "stickers",
        "{n} collects {a} stickers.",
        ("{p} buys a pack of {b} stickers.", "Adding the pack gives {x} stickers."),
        ("{p} uses {b} stickers on a card.", "Using some leaves {x} stickers."),
        (
            "{p} then has {b} times as many stickers after a swap meet.",
            "After the swap meet {n} has {x} stickers."
        ),
        ("{p} puts them on {b} pages equally and counts one page.", "One page has {x} stickers."),
        "How many stickers does {n} count at the end?"
    ),
    t!(
        "books",
        "A shelf holds {a} books.",
        ("The library adds {b} books to it.", "The shelf now holds {x} books."),
        ("Readers borrow {b} books from it.", "After borrowing, the shelf holds {x} books."),
        ("The library fills a wall with {b} shelves like it.", "The wall holds {x} books."),
        (
            "The books are split evenly across {b} classrooms; we follow one classroom.",
            "One classroom gets {x} books."
        ),
        "How many books are there at the end?"
    ),
    t!(
        "cookies",
        "{n} bakes {a} cookies.",
        ("{p} bakes another {b} cookies.", "In total {n} has {x} cookies."),
        ("{p} gives {b} cookies to neighbours.", "After giving some away, {n} has {x} cookies."),
        ("{p} bakes {b} batches of that size in total.", "The batches make {x} cookies."),
        ("{p} packs them into {b} equal boxes and looks at one box.", "Each box holds {x} cookies."),
        "How many cookies are in the end result?"
    ),
    t!(
        "pages",
        "{n} reads {a} pages of a book.",
        ("The next day {p} reads {b} more pages.", "So far {n} has read {x} pages."),
        (
            "{p} realises {b} of those pages were a preface {p} skips from the count.",
            "Without the preface that is {x} pages."
        ),
        ("By the end of the month {p} has read {b} times that many pages.", "That is {x} pages."),
        ("{p} spreads that reading evenly over {b} days.", "Each day is {x} pages."),
        "How many pages is that?"
    ),
    t!(
        "savings",
        "{n} saves ${a}.",
        ("{p} earns ${b} more from chores.", "Now {n} has {x} dollars."),
        ("{p} spends ${b} on a toy.", "After the toy, {n} has {x} dollars."),
        ("{p} invests it and it grows to {b} times as much.", "The savings become {x} dollars."),
        (
            "{p} splits the money equally among {b} jars and looks at one jar.",
            "One jar holds {x} dollars."
        ),
        "How many dollars is that?"
    ),
    t!(
        "wages",
        "{n} earns ${a} per hour.",
        ("{p} gets a raise of ${b} per hour.", "The new wage is {x} dollars per hour."),
        ("Taxes take ${b} of each hour's pay.", "After taxes {n} keeps {x} dollars per hour."),
        ("{p} works {b} hours.", "For those hours {n} earns {x} dollars."),
        ("{p} shares that pay equally among {b} family members.", "Each share is {x} dollars."),
        "How many dollars does the last step come to?"
    ),
    t!(
        "practice",
        "{n} practises piano for {a} minutes.",
        ("{p} adds {b} minutes of scales.", "The practice lasts {x} minutes."),
        ("{p} takes a break of {b} minutes from that time.", "Without the break it is {x} minutes."),
        ("{p} practises like that for {b} days.", "Over those days it is {x} minutes."),
        ("{p} divides the time evenly among {b} pieces.", "Each piece gets {x} minutes."),
        "How many minutes is that?"
    ),
    t!(
        "factory",
        "A machine makes {a} toys per hour.",
        ("An upgrade lets it make {b} more toys per hour.", "It now makes {x} toys per hour."),
        ("{b} toys per hour come out broken and are thrown away.", "Good toys per hour: {x}."),
        ("It runs for {b} hours.", "In that time it makes {x} toys."),
        ("The toys are shipped equally to {b} stores; we follow one store.", "One store gets {x} toys."),
        "How many toys does that come to?"
    ),
    t!(
        "bus",
        "A bus leaves with {a} passengers.",
        ("At the first stop {b} people get on.", "Now there are {x} passengers."),
        ("At the next stop {b} people get off.", "Then there are {x} passengers."),
        (
            "A train carries {b} times as many passengers as the bus has now.",
            "The train carries {x} passengers."
        ),
        (
            "The passengers split equally into {b} groups for a tour; we follow one group.",
            "One group has {x} passengers."
        ),
        "How many passengers does the last count give?"
    ),
    t!(
        "garden",
        "{n} plants {a} tulips.",
        ("{p} plants {b} more tulips.", "There are {x} tulips."),
        ("Rabbits eat {b} tulips.", "After the rabbits, {x} tulips remain."),
        (
            "Each tulip bulb multiplies, giving {b} times as many tulips next year.",
            "Next year there are {x} tulips."
        ),
        (
            "{p} gives the tulips equally to {b} friends; we look at one friend.",
            "Each friend gets {x} tulips."
        ),
        "How many tulips is that?"
    ),
    t!(
        "driving",
        "{n} drives at {a} km per hour.",
        ("{p} speeds up by {b} km per hour.", "The speed becomes {x} km per hour."),
        ("Traffic slows {n} down by {b} km per hour.", "The speed drops to {x} km per hour."),
        ("{p} keeps that speed for {b} hours.", "The distance is {x} km."),
        ("The trip is split into {b} equal legs.", "Each leg is {x} km."),
        "What number does the last step give?"
    ),
    t!(
        "water",
        "A tank holds {a} litres of water.",
        ("A hose adds {b} litres.", "The tank holds {x} litres."),
        ("A leak drains {b} litres.", "After the leak, {x} litres remain."),
        ("A bigger tank holds {b} times as much.", "The bigger tank holds {x} litres."),
        (
            "The water is poured equally into {b} buckets; we look at one bucket.",
            "One bucket gets {x} litres."
        ),
        "How many litres is that?"
    ),
    t!(
        "eggs",
        "{n}'s hens lay {a} eggs.",
        ("The next morning they lay {b} more eggs.", "That makes {x} eggs."),
        ("{p} uses {b} eggs for breakfast.", "After breakfast there are {x} eggs."),
        ("Over the season they lay {b} times that many.", "Over the season that is {x} eggs."),
        ("{p} sells them in {b} equal cartons and checks one carton.", "Each carton has {x} eggs."),
        "How many eggs is that?"
    ),
    t!(
        "pencils",
        "A teacher has {a} pencils.",
        ("She buys {b} more pencils.", "She has {x} pencils."),
        ("Students break {b} pencils.", "Unbroken pencils: {x}."),
        ("The school orders {b} times as many pencils as she has.", "The order is {x} pencils."),
        (
            "The pencils are handed out equally to {b} tables; we count one table.",
            "Each table gets {x} pencils."
        ),
        "How many pencils is that?"
    ),
    t!(
        "steps",
        "{n} walks {a} steps before lunch.",
        ("{p} walks {b} more steps after lunch.", "That is {x} steps."),
        ("{p} subtracts {b} steps counted twice by the app.", "The real count is {x} steps."),
        ("{p} walks that much for {b} days.", "Over the days that is {x} steps."),
        ("{p} splits the walking equally into {b} walks.", "Each walk is {x} steps."),
        "How many steps is that?"
    ),
    t!(
        "tickets",
        "A cinema sells {a} tickets in the morning.",
        ("It sells {b} more tickets at noon.", "That makes {x} tickets."),
        ("{b} tickets are refunded.", "After refunds, {x} tickets are sold."),
        ("Each ticket costs ${b}.", "The tickets bring in {x} dollars."),
        ("That amount is split equally among {b} staff members.", "Each staff member gets {x} dollars."),
        "What number does the last step give?"
    ),
    t!(
        "candies",
        "{n} has a jar of {a} candies.",
        ("{p} adds {b} candies.", "The jar has {x} candies."),
        ("{p} eats {b} candies.", "The jar has {x} candies left."),
        ("{p} fills a bigger jar with {b} times as many candies.", "The bigger jar has {x} candies."),
        (
            "{p} shares the candies equally with {b} kids; we count one kid's share.",
            "Each kid gets {x} candies."
        ),
        "How many candies is that?"
    ),
    t!(
        "bakery",
        "A bakery makes {a} loaves of bread.",
        ("It bakes another {b} loaves.", "There are {x} loaves."),
        ("It sells {b} loaves in the morning.", "After the morning, {x} loaves are left."),
        ("A bigger branch makes {b} times as many loaves.", "The bigger branch makes {x} loaves."),
        ("The loaves go equally to {b} cafes; we follow one cafe.", "Each cafe gets {x} loaves."),
        "How many loaves is that?"
    ),
    t!(
        "fish",
        "An aquarium has {a} fish.",
        ("It gets {b} new fish.", "It has {x} fish."),
        ("{b} fish move to another tank.", "It has {x} fish left."),
        ("A new aquarium will hold {b} times as many fish.", "The new aquarium holds {x} fish."),
        ("The fish are placed equally into {b} tanks; we look at one tank.", "Each tank has {x} fish."),
        "How many fish is that?"
    ),
    t!(
        "runner",
        "{n} runs {a} laps on Monday.",
        ("On Tuesday {p} runs {b} laps more than on Monday.", "On Tuesday {n} runs {x} laps."),
        ("On Wednesday {p} runs {b} laps fewer than the day before.", "On Wednesday {n} runs {x} laps."),
        ("Over the season {p} runs {b} times that many laps.", "Over the season that is {x} laps."),
        ("{p} spreads those laps evenly over {b} sessions.", "Each session is {x} laps."),
        "How many laps does the last step give?"
    ),
];

const NAMES: &[(&str, &str)] = &[
    ("Ava", "She"),
    ("Ben", "He"),
    ("Chloe", "She"),
    ("Daniel", "He"),
    ("Emma", "She"),
    ("Felix", "He"),
    ("Grace", "She"),
    ("Henry", "He"),
    ("Isla", "She"),
    ("Jack", "He"),
    ("Kira", "She"),
    ("Liam", "He"),
    ("Maya", "She"),
    ("Noah", "He"),
    ("Olivia", "She"),
    ("Pablo", "He"),
    ("Quinn", "She"),
    ("Ravi", "He"),
    ("Sofia", "She"),
    ("Tom", "He"),
    ("Uma", "She"),
    ("Victor", "He"),
    ("Wendy", "She"),
    ("Yusuf", "He"),
];

fn fill(s: &str, name: &str, pronoun: &str, a: i64, b: i64, r: i64, op: Op) -> String {
    let x = format!("{a} {} {b} = {r}", op.symbol());
    let mut out = s.replace("{n}", name).replace("{a}", &a.to_string()).replace("{b}", &b.to_string());
    out = out.replace("{r}", &r.to_string()).replace("{x}", &x);
    // "{p}" starts a sentence when it follows ". " or opens the string; lowercase otherwise.
    let mut res = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("{p}") {
        res.push_str(&rest[..i]);
        let sentence_start = res.is_empty() || res.ends_with(". ");
        res.push_str(if sentence_start {
            pronoun
        } else {
            if pronoun == "He" {
                "he"
            } else {
                "she"
            }
        });
        rest = &rest[i + 3..];
    }
    res.push_str(rest);
    res
}

/// Generates problem `index` of `seed`. Returns `None` only if the knobs admit no valid chain
/// after many tries (e.g. only `div` with primes).
pub fn generate(cfg: &SynthConfig, seed: u64, index: u64) -> Option<SynthProblem> {
    let mut rng = SplitMix64::for_stream(seed, index);
    let tpl = &TEMPLATES[rng.range(0, TEMPLATES.len() as i64 - 1) as usize];
    let (name, pronoun) = NAMES[rng.range(0, NAMES.len() as i64 - 1) as usize];
    let n_steps = rng.range(cfg.min_steps as i64, cfg.max_steps as i64) as usize;
    'attempt: for _ in 0..64 {
        let start = rng.range(cfg.start_range.0, cfg.start_range.1);
        let mut a = start;
        let mut steps = Vec::with_capacity(n_steps);
        for _ in 0..n_steps {
            let mut chosen = None;
            for _ in 0..16 {
                let op = cfg.ops[rng.range(0, cfg.ops.len() as i64 - 1) as usize];
                let b = match op {
                    Op::Add => rng.range(cfg.addend_range.0, cfg.addend_range.1),
                    Op::Sub => rng.range(cfg.addend_range.0, cfg.addend_range.1.min(a)),
                    Op::Mul => rng.range(cfg.factor_range.0, cfg.factor_range.1),
                    Op::Div => {
                        let divs: Vec<i64> = (cfg.factor_range.0..=cfg.factor_range.1).filter(|d| a % d == 0).collect();
                        if divs.is_empty() {
                            continue;
                        }
                        divs[rng.range(0, divs.len() as i64 - 1) as usize]
                    }
                };
                if op == Op::Sub && (a <= cfg.addend_range.0 || b >= a) {
                    continue; // keep quantities positive
                }
                if let Some(r) = op.apply(a, b).filter(|&r| r > 0 && r <= cfg.max_value) {
                    chosen = Some(Step { a, op, b, result: r });
                    break;
                }
            }
            let Some(step) = chosen else { continue 'attempt };
            a = step.result;
            steps.push(step);
        }
        let mut question = vec![fill(tpl.start, name, pronoun, start, 0, 0, Op::Add)];
        let mut lines = Vec::with_capacity(steps.len() + 1);
        for s in &steps {
            let (q, sol) = match s.op {
                Op::Add => tpl.add,
                Op::Sub => tpl.sub,
                Op::Mul => tpl.mul,
                Op::Div => tpl.div,
            };
            question.push(fill(q, name, pronoun, s.a, s.b, s.result, s.op));
            lines.push(fill(sol, name, pronoun, s.a, s.b, s.result, s.op));
        }
        question.push(fill(tpl.ask, name, pronoun, 0, 0, 0, Op::Add));
        lines.push(format!("#### {a}"));
        return Some(SynthProblem {
            problem: Problem {
                question: question.join(" "),
                answer: lines.join("\n"),
            },
            steps,
            template: tpl.id,
            answer: a,
        });
    }
    None
}

/// `n` distinct problems of `split`, generated in index order from `seed` (deterministic).
/// Panics if the knobs cannot produce `n` distinct problems within `200 · n` draws.
pub fn dataset(cfg: &SynthConfig, seed: u64, n: usize, split: Split) -> Vec<SynthProblem> {
    let mut seen = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    let mut index = 0u64;
    while out.len() < n {
        assert!(
            index < 200 * n as u64 + 1000,
            "synthetic generator: only {} distinct {split:?} problems after {index} draws",
            out.len()
        );
        if let Some(p) = generate(cfg, seed, index) {
            if split_of(&p.problem.question) == split && seen.insert(p.problem.question.clone()) {
                out.push(p);
            }
        }
        index += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pronouns_are_capitalised_at_sentence_starts_only() {
        assert_eq!(fill("{p} eats. A gift for {p}.", "Ava", "She", 1, 2, 3, Op::Add), "She eats. A gift for she.");
    }
}
