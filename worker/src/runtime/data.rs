//! The run's data as every worker sees it: prompt id → synthetic problem, its chat prompt
//! tokens, its expert trace and its corruptions. Deterministic from the run config, so rollout
//! workers and learners agree without shipping problems around.

use crate::airl::corrupt::{self, first_error_token, strip_calculator_annotations, KINDS};
use crate::airl::iteration::{IterationBatch, Sample};
use crate::airl::synth::{self, Split, SynthConfig, SynthProblem};
use crate::gsm8k;
use crate::rng::SplitMix64;
use crate::tokenizer::Tokenizer;
use airlift_proto::config::RunConfig;

/// Problems of one split, generated on demand.
pub struct RunData {
    pub synth: SynthConfig,
    seed: u64,
    train: Vec<SynthProblem>,
    eval: Vec<SynthProblem>,
    eos: u32,
    corruptions_per_expert: usize,
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
        RunData { synth, seed: cfg.run.seed, train: Vec::new(), eval: Vec::new(), eos, corruptions_per_expert: cfg.reward.corruptions_per_expert as usize }
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

    /// Chat prompt tokens of a problem.
    pub fn prompt_tokens(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Vec<u32> {
        let q = gsm8k::prompt_for(&self.problem(split, id).problem.question);
        tok.encode(&tok.chat_prompt(&q)).expect("tokenizer encodes prompts")
    }

    /// The expert sample of a problem (group = prompt id).
    pub fn expert(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Sample {
        let prompt = self.prompt_tokens(tok, split, id);
        let answer = strip_calculator_annotations(&self.problem(split, id).problem.answer);
        let mut response = tok.encode(&answer).expect("tokenizer encodes answers");
        response.push(self.eos);
        Sample { prompt, response, group: id as i64, correct: Some(true), ..Default::default() }
    }

    /// Adds problem `id`'s expert trace and its corruptions to `batch` (for discriminator steps
    /// and evaluation, where the texts are not needed).
    pub fn add_expert_and_corruptions(&mut self, batch: &mut IterationBatch, tok: &Tokenizer, split: Split, id: u64) {
        batch.experts.push(self.expert(tok, split, id));
        batch.corrupted.extend(self.corruptions(tok, split, id).into_iter().map(|c| c.0));
    }

    /// `reward.corruptions_per_expert` corrupted copies of a problem's expert trace, with the
    /// text of each (kinds cycle; the seed depends on the prompt id only).
    pub fn corruptions(&mut self, tok: &Tokenizer, split: Split, id: u64) -> Vec<(Sample, String)> {
        let prompt = self.prompt_tokens(tok, split, id);
        let answer = strip_calculator_annotations(&self.problem(split, id).problem.answer);
        let mut rng = SplitMix64::for_stream(self.seed ^ 0xC0AA, id);
        let mut out = Vec::new();
        for k in 0..self.corruptions_per_expert {
            for attempt in 0..KINDS.len() {
                if let Some(c) = corrupt::corrupt(&answer, KINDS[(k + attempt) % KINDS.len()], &mut rng) {
                    let (mut ids, offsets) = tok.encode_with_offsets(&c.text).expect("tokenizer encodes");
                    let fe = first_error_token(&offsets, c.first_error_byte);
                    ids.push(self.eos);
                    out.push((
                        Sample { prompt: prompt.clone(), response: ids, group: id as i64, first_error_token: Some(fe), correct: Some(false), ..Default::default() },
                        c.text,
                    ));
                    break;
                }
            }
        }
        out
    }
}
