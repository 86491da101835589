//! Live progress on the coordinator's console: the phase under way in words, with units done /
//! total, rate, ETA and its headline numbers (SFT loss, discriminator loss, held-out AUROC,
//! rollout accuracy, tokens/s).
//!
//! * stderr a terminal: an `indicatif` bar for the phase; log lines print above it (the log's
//!   writer, [`ConsoleWriter`], hides the bar while a line is written).
//! * otherwise (Slurm output, a file, CI): plain log lines, one when a phase starts, at most one
//!   per [`Console::every`] while it moves, and one when its last unit is done.
//!
//! Learners report warm-start steps over their stream (`Progress` messages, rank 0's are shown);
//! the coordinator itself counts iterations as their records land.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bar on the terminal while a phase runs (none when stderr is not a terminal).
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// `MakeWriter` for the log: each line goes to stderr in one write, with the bar (if any)
/// cleared while it is written and redrawn after.
pub struct ConsoleWriter;

/// One log line being formatted.
pub struct LineBuf(Vec<u8>);

impl Write for LineBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        let out = |b: &[u8]| {
            let _ = std::io::stderr().lock().write_all(b);
        };
        let bar = BAR.lock().ok().and_then(|g| g.clone());
        match bar {
            Some(bar) => bar.suspend(|| out(&self.0)),
            None => out(&self.0),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = LineBuf;
    fn make_writer(&'a self) -> LineBuf {
        LineBuf(Vec::with_capacity(256))
    }
}

/// One phase's counters.
#[derive(Debug, Clone)]
struct Phase {
    name: String,
    unit: &'static str,
    total: u64,
    done: u64,
    /// Units done when this process started watching (a resumed run starts part-way).
    first: u64,
    started: Instant,
    last_line: Option<Instant>,
    values: Vec<(String, f64)>,
}

/// The console's progress display (one per coordinator).
pub struct Console {
    tty: bool,
    /// Plain mode: the least time between two lines of one phase.
    pub every: Duration,
    phase: Option<Phase>,
}

impl Console {
    /// A console on stderr: a bar when it is a terminal, plain lines otherwise.
    pub fn stderr() -> Console {
        Console::new(std::io::IsTerminal::is_terminal(&std::io::stderr()))
    }

    /// `tty = false`: plain lines only (what tests and Slurm see).
    pub fn new(tty: bool) -> Console {
        Console {
            tty,
            every: Duration::from_secs(30),
            phase: None,
        }
    }

    /// Starts phase `name` of `total` `unit`s, `done` of them already done (a resumed run).
    pub fn begin(&mut self, name: &str, unit: &'static str, done: u64, total: u64) {
        self.begin_at(name, unit, done, total, Instant::now());
    }

    pub fn begin_at(&mut self, name: &str, unit: &'static str, done: u64, total: u64, now: Instant) {
        self.end();
        let p = Phase {
            name: name.to_string(),
            unit,
            total,
            done,
            first: done,
            started: now,
            last_line: Some(now),
            values: Vec::new(),
        };
        tracing::info!(
            "{}: {} {}{}",
            p.name,
            p.total,
            plural(p.unit, p.total),
            if done > 0 { format!(" ({done} done before)") } else { String::new() }
        );
        if self.tty {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            bar.set_prefix(p.name.clone());
            bar.set_position(done);
            *BAR.lock().unwrap() = Some(bar);
        }
        self.phase = Some(p);
    }

    /// `done` of `total` units of the phase under way, with the headline numbers of the last
    /// (nothing when no phase is under way).
    pub fn update(&mut self, done: u64, total: u64, values: Vec<(String, f64)>) {
        self.update_at(done, total, values, Instant::now());
    }

    /// [`Console::update`] at time `now`; returns the plain line it printed, if any.
    pub fn update_at(&mut self, done: u64, total: u64, values: Vec<(String, f64)>, now: Instant) -> Option<String> {
        let p = self.phase.as_mut()?;
        (p.done, p.total, p.values) = (done.max(p.done), total, values);
        let text = line(p, now);
        let finished = p.done >= p.total;
        if let Some(bar) = BAR.lock().unwrap().as_ref() {
            bar.set_length(p.total);
            bar.set_position(p.done);
            // The bar shows done/total itself: the message is what follows them.
            let rest = text
                .split_once(": ")
                .and_then(|x| x.1.split_once(", "))
                .map_or(String::new(), |x| x.1.to_string());
            bar.set_message(format!("{} {rest}", p.unit));
        }
        let due = p.last_line.is_none_or(|t| now.duration_since(t) >= self.every);
        if finished || (!self.tty && due) {
            p.last_line = Some(now);
            tracing::info!("{text}");
            if finished {
                self.end();
            }
            return Some(text);
        }
        None
    }

    /// The phase under way's total, if one is.
    pub fn total(&self) -> Option<u64> {
        self.phase.as_ref().map(|p| p.total)
    }

    /// Ends the phase under way (its bar is removed; its last line stays in the log).
    pub fn end(&mut self) {
        self.phase = None;
        if let Some(bar) = BAR.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}

fn plural(unit: &str, n: u64) -> String {
    if n == 1 {
        unit.trim_end_matches('s').to_string()
    } else {
        unit.to_string()
    }
}

/// `SFT warm start: 10/30 steps, 2.1 s/step, ETA 42s, loss 0.4933`.
fn line(p: &Phase, now: Instant) -> String {
    let elapsed = now.duration_since(p.started).as_secs_f64();
    let moved = p.done.saturating_sub(p.first);
    let mut s = format!("{}: {}/{} {}", p.name, p.done, p.total, p.unit);
    if moved > 0 && elapsed > 0.0 {
        let per = elapsed / moved as f64;
        let one = plural(p.unit, 1);
        if per >= 1.0 {
            s += &format!(", {}/{one}", duration(per));
        } else {
            s += &format!(", {:.1} {}/s", 1.0 / per, p.unit);
        }
        let left = p.total.saturating_sub(p.done);
        if left > 0 {
            s += &format!(", ETA {}", duration(per * left as f64));
        }
    }
    for (k, v) in &p.values {
        s += &format!(", {k} {}", number(*v));
    }
    s
}

/// `42s`, `3m05s`, `1h02m`.
pub fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if secs < 10.0 {
        format!("{secs:.1}s")
    } else if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    }
}

/// A headline value in at most 4 significant characters: `812`, `12.5`, `0.493`; a small one
/// (a learning rate) in scientific notation, `1.4e-5`, so that it does not read as `0.000`.
fn number(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.1e}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_rate_eta_and_values() {
        let t0 = Instant::now();
        let mut c = Console::new(false);
        c.every = Duration::from_secs(30);
        c.begin_at("SFT warm start", "steps", 0, 30, t0);
        // 10 steps in 31 s: 3.1 s a step, 20 steps left.
        let l = c.update_at(10, 30, vec![("loss".into(), 0.49331)], t0 + Duration::from_secs(31)).unwrap();
        assert_eq!(l, "SFT warm start: 10/30 steps, 3.1s/step, ETA 1m02s, loss 0.493");
        // Within `every` of the last line: nothing printed.
        assert_eq!(c.update_at(11, 30, vec![], t0 + Duration::from_secs(40)), None);
        // The last unit always prints, and ends the phase: later reports print nothing.
        let l = c.update_at(30, 30, vec![], t0 + Duration::from_secs(60)).unwrap();
        assert_eq!(l, "SFT warm start: 30/30 steps, 2.0s/step");
        assert_eq!(c.update_at(30, 30, vec![], t0 + Duration::from_secs(99)), None);
    }

    #[test]
    fn a_resumed_phase_rates_only_what_this_process_did() {
        let t0 = Instant::now();
        let mut c = Console::new(false);
        c.every = Duration::ZERO;
        c.begin_at("AIRL iterations", "iterations", 4, 12, t0);
        let l = c
            .update_at(
                6,
                12,
                vec![("tok/s".into(), 812.4), ("disc loss".into(), f64::NAN)],
                t0 + Duration::from_secs(150),
            )
            .unwrap();
        assert_eq!(l, "AIRL iterations: 6/12 iterations, 1m15s/iteration, ETA 7m30s, tok/s 812, disc loss -");
        // Many units a second read as a rate.
        c.begin_at("evaluation", "tasks", 0, 100, t0);
        let l = c.update_at(50, 100, vec![], t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(l, "evaluation: 50/100 tasks, 5.0 tasks/s, ETA 10s");
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(duration(4.31), "4.3s");
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(185.0), "3m05s");
        assert_eq!(duration(3720.0), "1h02m");
    }

    #[test]
    fn small_values_such_as_a_learning_rate_keep_their_digits() {
        assert_eq!(number(5e-5), "5.0e-5");
        assert_eq!(number(1.3456e-5), "1.3e-5");
        assert_eq!(number(-0.0042), "-4.2e-3");
        assert_eq!((number(0.0), number(0.0123), number(0.49331)), ("0.000".into(), "0.012".into(), "0.493".into()));
    }
}
