//! The run's data as every worker sees it: prompt id → problem (synthetic, a row of the
//! `data.train` file of expert demonstrations, or a row of a problem file for evaluations), its
//! chat prompt tokens, its expert trace and its corruptions.
//! Deterministic from the run config, so rollout workers and learners agree without shipping
//! problems around.

use crate::airl::corrupt::{self, first_error_token, strip_calculator_annotations, CorruptionKind};
use crate::airl::iteration::{IterationBatch, Sample};
use crate::airl::synth::{self, Split, SynthConfig, SynthProblem};
use crate::gsm8k::{self, Problem, ProblemSource};
use crate::rng::SplitMix64;
use crate::tokenizer::Tokenizer;
use airlift_proto::config::RunConfig;
use std::collections::HashMap;
use std::path::PathBuf;

/// Problems of one split, generated on demand.
pub struct RunData {
    pub synth: SynthConfig,
    seed: u64,
    train: Vec<SynthProblem>,
    eval: Vec<SynthProblem>,
    eos: u32,
    corruptions_per_expert: usize,
    /// `reward.corruption_kinds`, cycled through.
    kinds: Vec<CorruptionKind>,
    /// Problem files read so far, by path.
    files: HashMap<PathBuf, Vec<Problem>>,
    /// `data.train`: training prompt id `i` is row `i mod rows` of this file.
    train_file: Option<PathBuf>,
}

impl RunData {
    /// The data of `cfg`; `eos` ends every expert trace.
    pub fn new(cfg: &RunConfig, eos: u32) -> Self {
        let synth = SynthConfig {
            min_steps: cfg.data.min_steps as usize,
            max_steps: cfg.data.max_steps as usize,
            start_range: (2, cfg.data.max_start),
            ..SynthConfig::default()
        };
        RunData {
            synth,
            seed: cfg.run.seed,
            train: Vec::new(),
            eval: Vec::new(),
            eos,
            corruptions_per_expert: cfg.reward.corruptions_per_expert as usize,
            // The config's validation admits only known names.
            kinds: cfg.reward.corruption_kinds.iter().filter_map(|k| CorruptionKind::from_name(k)).collect(),
            files: HashMap::new(),
            train_file: cfg.data.train.clone(),
        }
    }

    /// The number of rows of the `data.train` file (read on first use), if one is configured.
    pub fn train_rows(&mut self) -> Result<Option<usize>, String> {
        let Some(f) = self.train_file.clone() else { return Ok(None) };
        self.load_file(&f)?;
        Ok(Some(self.files[&f].len()))
    }

    fn load_file(&mut self, path: &PathBuf) -> Result<(), String> {
        if !self.files.contains_key(path) {
            let problems = gsm8k::load(path).map_err(|e| e.to_string())?;
            if problems.is_empty() {
                return Err(format!("{}: no problems in the file", path.display()));
            }
            self.files.insert(path.clone(), problems);
        }
        Ok(())
    }

    fn ensure(&mut self, split: Split, n: usize) {
        let have = match split {
            Split::Train => self.train.len(),
            Split::Eval => self.eval.len(),
        };
        if n > have {
            let want = n.max(1024).next_power_of_two();
            let v = synth::dataset(&self.synth, self.seed, want, split);
            match split {
                Split::Train => self.train = v,
                Split::Eval => self.eval = v,
            }
        }
    }

    /// Problem `id` of `split`.
    pub fn problem(&mut self, split: Split, id: u64) -> &SynthProblem {
        self.ensure(split, id as usize + 1);
        match split {
            Split::Train => &self.train[id as usize],
            Split::Eval => &self.eval[id as usize],
        }
    }

    /// Problem `id` of `source` (a file is read on first use and kept).
    pub fn problem_of(&mut self, source: &ProblemSource, id: u64) -> Result<&Problem, String> {
        // A training task's problem set is `synthetic:train` on the wire whatever the run trains
        // on; with `data.train` set it means that file.
        if let (ProblemSource::SyntheticTrain, Some(f)) = (source, self.train_file.clone()) {
            return self.problem_of(&ProblemSource::File(f), id);
        }
        match source {
            ProblemSource::SyntheticTrain => Ok(&self.problem(Split::Train, id).problem),
            ProblemSource::SyntheticEval => Ok(&self.problem(Split::Eval, id).problem),
            ProblemSource::ProcessBench(path) => Err(format!(
                "{}: ProcessBench items are scored as written; they are not problems to sample",
                path.display()
            )),
            ProblemSource::File(path) => {
                self.load_file(path)?;
                let v = &self.files[path];
                // Training ids run on past the end of `data.train` (epochs); evaluation ids never do.
                let row = if self.train_file.as_ref() == Some(path) {
                    id as usize % v.len()
                } else {
                    id as usize
                };
                v.get(row)
                    .ok_or_else(|| format!("{}: problem {id} asked for, the file has {} rows", path.display(), v.len()))
            }
        }
    }

    /// Chat prompt tokens of a problem.
    pub fn prompt_tokens(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Result<Vec<u32>, String> {
        let source: ProblemSource = split.into();
        self.prompt_tokens_of(tok, &source, id)
    }

    /// Chat prompt tokens of problem `id` of `source`.
    pub fn prompt_tokens_of(&mut self, tok: &Tokenizer, source: &ProblemSource, id: u64) -> Result<Vec<u32>, String> {
        let q = gsm8k::prompt_for(&self.problem_of(source, id)?.question);
        tok.encode(&tok.chat_prompt(&q)).map_err(|e| e.to_string())
    }

    /// The expert sample of a problem (group = prompt id).
    pub fn expert(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Result<Sample, String> {
        let source: ProblemSource = split.into();
        self.expert_of(tok, &source, id)
    }

    /// The expert sample of problem `id` of `source`: its worked answer without calculator
    /// annotations, then end of sequence.
    pub fn expert_of(&mut self, tok: &Tokenizer, source: &ProblemSource, id: u64) -> Result<Sample, String> {
        let prompt = self.prompt_tokens_of(tok, source, id)?;
        let answer = strip_calculator_annotations(&self.problem_of(source, id)?.answer);
        let mut response = tok.encode(&answer).map_err(|e| e.to_string())?;
        response.push(self.eos);
        Ok(Sample {
            prompt,
            response,
            group: id as i64,
            correct: Some(true),
            ..Default::default()
        })
    }

    /// Adds problem `id`'s expert trace and its corruptions to `batch` (for discriminator steps
    /// and evaluation, where the texts are not needed).
    pub fn add_expert_and_corruptions(&mut self, batch: &mut IterationBatch, tok: &Tokenizer, split: Split, id: u64) -> Result<(), String> {
        batch.experts.push(self.expert(tok, split, id)?);
        batch.corrupted.extend(self.corruptions(tok, split, id)?.into_iter().map(|c| c.sample));
        Ok(())
    }

    /// `reward.corruptions_per_expert` corrupted copies of a problem's expert trace, with the
    /// text of each (kinds cycle, starting at kind `id mod kinds` for problem `id`; the seed
    /// depends on the prompt id only).
    pub fn corruptions(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Result<Vec<Corrupted>, String> {
        let source: ProblemSource = split.into();
        self.corruptions_of(tok, &source, id)
    }

    /// [`RunData::corruptions`] of problem `id` of `source`. An answer none of the kinds can
    /// corrupt has none.
    pub fn corruptions_of(&mut self, tok: &Tokenizer, source: &ProblemSource, id: u64) -> Result<Vec<Corrupted>, String> {
        let prompt = self.prompt_tokens_of(tok, source, id)?;
        let problem = self.problem_of(source, id)?;
        let (question, answer) = (problem.question.clone(), strip_calculator_annotations(&problem.answer));
        let mut rng = SplitMix64::for_stream(self.seed ^ 0xC0AA, id);
        let mut out = Vec::new();
        let kinds = &self.kinds;
        for k in 0..self.corruptions_per_expert {
            for attempt in 0..kinds.len() {
                // The kinds rotate by problem too, so that every kind is drawn even when there
                // are more kinds than corruptions per expert.
                let kind = kinds[(id as usize % kinds.len() + k + attempt) % kinds.len()];
                if let Some(c) = corrupt::corrupt_in(&question, &answer, kind, &mut rng) {
                    let (mut ids, offsets) = tok.encode_with_offsets(&c.text).map_err(|e| e.to_string())?;
                    let fe = first_error_token(&offsets, c.first_error_byte);
                    // Past the token that holds the newline ending the error's line (or all).
                    let end = c.text[c.first_error_byte..]
                        .find('\n')
                        .map_or(ids.len() + 1, |i| first_error_token(&offsets, c.first_error_byte + i) + 1);
                    ids.push(self.eos);
                    out.push(Corrupted {
                        sample: Sample {
                            prompt: prompt.clone(),
                            response: ids,
                            group: id as i64,
                            first_error_token: Some(fe),
                            error_line_end: Some(end),
                            correct: Some(false),
                            ..Default::default()
                        },
                        text: c.text,
                        kind: c.kind,
                    });
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// A corrupted copy of an expert trace: the sample (its first wrong token marked), its text and
/// the kind of corruption.
pub struct Corrupted {
    pub sample: Sample,
    pub text: String,
    pub kind: CorruptionKind,
}

impl From<Split> for ProblemSource {
    fn from(s: Split) -> Self {
        match s {
            Split::Train => ProblemSource::SyntheticTrain,
            Split::Eval => ProblemSource::SyntheticEval,
        }
    }
}
