//! The run config: a TOML file plus `AIRLIFT__SECTION__KEY` environment overrides, read by the
//! coordinator, validated before anything starts, written into the run folder as
//! `config.toml` and handed to every worker at registration, so all processes agree.
//!
//! Unknown keys are errors; every field documents its unit and default.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A config value that is one of a few words: parsed once, when the config is read (a wrong word
/// is an error naming the key and the words allowed), then matched as an enum everywhere.
macro_rules! config_enum {
    ($(#[$doc:meta])* $name:ident, $key:literal, { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            /// The word in the config.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                match s.as_str() {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(concat!($key, ": `{}`: expected one of ", $("`", $word, "` "),+), s).trim_end().replace("` `", "`, `")),
                }
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.as_str().to_string()
            }
        }
    };
}

config_enum!(
    /// `workers.device`.
    Device, "workers.device", { Cpu => "cpu", Cuda => "cuda" }
);
config_enum!(
    /// `model.rollout_dtype` and `model.train_dtype`.
    Dtype, "model.rollout_dtype / model.train_dtype", { Fp32 => "fp32", Bf16 => "bf16" }
);
config_enum!(
    /// `reward.discriminator`: logit D = f − log π (`airl`) or logit D = f (`logit`).
    DiscriminatorForm, "reward.discriminator", { Airl => "airl", Logit => "logit" }
);
config_enum!(
    /// `reward.correct_policy_samples`.
    CorrectPolicySamples, "reward.correct_policy_samples", { Negative => "negative", Ignore => "ignore", Positive => "positive" }
);
config_enum!(
    /// `policy.advantage`: per-token reward-to-go (`token`) or one score per sample (`sequence`).
    AdvantageForm, "policy.advantage", { Token => "token", Sequence => "sequence" }
);
config_enum!(
    /// `policy.lr_schedule`: the rates as configured at every step (`constant`) or times one
    /// cosine factor over the policy's whole run (`cosine`).
    LrSchedule, "policy.lr_schedule", { Constant => "constant", Cosine => "cosine" }
);
config_enum!(
    /// `policy.reward_source`: what scores a policy sample for its advantage, the learned
    /// reward (`learned`) or its grade against the problem's answer (`grade`).
    RewardSource, "policy.reward_source", { Learned => "learned", Grade => "grade" }
);
config_enum!(
    /// `policy.behaviour_logprobs`.
    BehaviourLogprobs, "policy.behaviour_logprobs", { Rollout => "rollout", Learner => "learner" }
);

/// Errors loading a run config; each names the file or the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {what}")]
    Load { path: PathBuf, what: String },
    #[error("config key `{key}`: {what}")]
    Invalid { key: &'static str, what: String },
}

/// `[run]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Name shown in logs and status.
    #[serde(default = "default_name")]
    pub name: String,
    /// Run folder (metrics, trajectories, checkpoints). Default `runs/<name>`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Adversarial iterations to run. Default 3.
    #[serde(default = "default_iterations")]
    pub iterations: u64,
    /// Seed of data order, sampling and initialisation. Default 0.
    #[serde(default)]
    pub seed: u64,
    /// Rollouts may use a policy at most this many versions old (0 = synchronous). Default 0.
    #[serde(default)]
    pub max_staleness: u64,
    /// Shared secret: read from this file, else from env `AIRLIFT_TOKEN`, else none (loopback
    /// runs only; the local launcher then makes one up for its children).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `--local` runs: how many times the learners are restarted from the newest checkpoint
    /// after a learner process dies or a collective fails, before the run fails. Default 3.
    #[serde(default = "default_restarts")]
    pub max_restarts: u32,
}

/// `[workers]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersSection {
    /// Rollout worker processes. Default 1.
    #[serde(default = "one")]
    pub rollout: u32,
    /// Learner worker processes (data-parallel ranks). Default 1.
    #[serde(default = "one")]
    pub learner: u32,
    /// Device of each worker: `cpu` or `cuda`. Default `cpu`.
    #[serde(default = "default_device")]
    pub device: Device,
    /// libtorch intra-op threads per worker process. 0 (the default): the CPUs the process may
    /// use (its affinity and cgroup quota, capped by `SLURM_CPUS_PER_TASK`), or `OMP_NUM_THREADS`.
    #[serde(default)]
    pub threads: u32,
    /// Heartbeat period, milliseconds. Default 1000: cheap, and a lost worker is noticed within a
    /// few seconds.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_ms: Millis,
    /// A worker silent for this many milliseconds is lost and its tasks are re-queued.
    /// Default 10000 (ten heartbeats: tolerates a busy CPU).
    #[serde(default = "default_lost")]
    pub lost_after_ms: Millis,
    /// A rollout task running longer than this (milliseconds) is handed to another worker as
    /// well; whichever finishes first counts, the learner drops the duplicate rows.
    /// Default 900000 (15 min: far above a healthy task, so only stuck workers trigger it).
    #[serde(default = "default_lease")]
    pub task_lease_ms: Millis,
    /// The run fails when its workers have not all registered this long after the coordinator
    /// started (a worker that cannot start, a job step that never ran). Default 600000.
    #[serde(default = "default_register_timeout")]
    pub register_timeout_ms: Millis,
    /// Memory each worker process may use, GB (GPU memory with `device = "cuda"`, RAM with
    /// `cpu`): `coordinator check` refuses a plan whose estimate for a learner or a rollout
    /// worker is larger. Default: none (no limit checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_gb: Option<f64>,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Hugging Face folder of the policy.
    pub policy: PathBuf,
    /// Base folder of the reward model (default: the policy's).
    #[serde(default)]
    pub reward: Option<PathBuf>,
    /// A trained reward model folder (the `reward` folder `coordinator export` writes) to load
    /// instead of a fresh head on `reward`'s backbone (evaluations of exported models).
    #[serde(default)]
    pub reward_weights: Option<PathBuf>,
    /// Parameter / compute precision of generation: `fp32` or `bf16`. Default `fp32`.
    #[serde(default = "default_dtype")]
    pub rollout_dtype: Dtype,
    /// Compute precision of training (master weights stay fp32): `fp32` or `bf16`. Default `fp32`.
    #[serde(default = "default_dtype")]
    pub train_dtype: Dtype,
}

/// `[data]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Prompts per iteration (split across learners). Default 8.
    #[serde(default = "default_prompts")]
    pub prompts_per_iteration: u32,
    /// Policy samples per prompt (the group size G). Default 4.
    #[serde(default = "default_samples")]
    pub samples_per_prompt: u32,
    /// Prompts per rollout task. Default 4.
    #[serde(default = "default_task_prompts")]
    pub prompts_per_task: u32,
    /// Held-out synthetic problems for the end-of-run evaluation. Default 16.
    #[serde(default = "default_eval")]
    pub eval_prompts: u32,
    /// Synthetic generator: fewest / most steps per problem. Defaults 1 / 3.
    #[serde(default = "one")]
    pub min_steps: u32,
    #[serde(default = "three")]
    pub max_steps: u32,
    /// Largest starting number. Default 30.
    #[serde(default = "default_max_start")]
    pub max_start: i64,
    /// Expert demonstrations to train on instead of the synthetic generator: a GSM8K-layout file
    /// (`.jsonl` or `.parquet` with `question` and `answer` ending in `#### <n>`, e.g. the GSM8K
    /// train split `make assets-gsm8k` fetches to `.cache/data/gsm8k/train.jsonl`). Training
    /// prompt id `i` is row `i mod rows` (0-based), so a long run goes round the file again; the
    /// SFT warm start, reward warm start, corruptions and iterations all draw from it. Default:
    /// none (synthetic problems; `min_steps` / `max_steps` / `max_start` apply to those only).
    #[serde(default)]
    pub train: Option<PathBuf>,
}

/// `[sampling]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingSection {
    /// Default 1.0.
    #[serde(default = "one_f")]
    pub temperature: f64,
    /// Default 1.0 (off).
    #[serde(default = "one_f")]
    pub top_p: f64,
    /// Default 128.
    #[serde(default = "default_max_new")]
    pub max_new_tokens: u32,
    /// Most sequences a rollout worker decodes together (rows of its KV cache); more wait and
    /// refill rows as sequences finish (continuous batching). Bounds KV-cache memory: SmolLM2 at
    /// 256 columns takes about 9 MB per row in bf16. Default 64.
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
}

/// `[reward]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardSection {
    /// `airl` (logit D = f − log π) or `logit` (logit D = f). Default `airl`.
    #[serde(default = "default_disc")]
    pub discriminator: DiscriminatorForm,
    /// Keep only the first K layers of the base (default: all).
    #[serde(default)]
    pub backbone_layers: Option<u32>,
    /// Peak learning rate. Default 1e-5.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Discriminator steps per iteration. Default 1.
    #[serde(default = "one")]
    pub disc_steps: u32,
    /// Label smoothing ε. Default 0.1.
    #[serde(default = "default_smoothing")]
    pub label_smoothing: f64,
    /// Class-balance weights. Default true.
    #[serde(default = "yes")]
    pub class_balance: bool,
    /// Rule-corrupted copies per expert trace. Default 1.
    #[serde(default = "one")]
    pub corruptions_per_expert: u32,
    /// Corruption kinds, cycled through per expert (see [`CORRUPTION_KINDS`]): `operator_flip`,
    /// `answer_nudge`, `number_alter` leave a line arithmetically false; `wrong_operation`,
    /// `wrong_quantity` make a consistent error (right arithmetic on the wrong operation or
    /// quantity, carried to the final answer); `miscalculation` writes one result off and carries
    /// it (one false line, the rest consistent with it). Default the first three.
    #[serde(default = "default_corruption_kinds")]
    pub corruption_kinds: Vec<String>,
    /// Leave a corrupted trace's tokens before its first error out of the discriminator loss
    /// (they are identical to the expert's). Default false (all its tokens are labelled 0).
    #[serde(default)]
    pub ignore_corrupted_prefix: bool,
    /// Leave a corrupted trace's tokens after the line of its first error out of the
    /// discriminator loss (they follow from the error and are often right by themselves), so
    /// that the reward marks the wrong line rather than everything after it. Default false.
    #[serde(default)]
    pub ignore_corrupted_suffix: bool,
    /// Leave the final answer line (the last line holding `####`, and anything after it) of
    /// policy samples whose answer grades wrong out of the discriminator loss. That line is
    /// wrong in every wrong sample, whichever line went wrong first, so with it labelled 0 the
    /// reward learns to put its lowest values on the answer line instead of on the wrong step.
    /// Uses the grade (the expert's final answer). Default false (not serialised when false, so
    /// that configs written before it keep their resume hash).
    #[serde(default, skip_serializing_if = "is_false")]
    pub ignore_wrong_answer_line: bool,
    /// The weight of that answer line (of policy samples that grade wrong) in the discriminator
    /// loss, relative to the sample's other tokens: 1 (the default, not serialised) labels it
    /// like them, 0 leaves it out (what `ignore_wrong_answer_line = true` does), in between
    /// keeps some of its signal (a wrong final answer) while the wrong step gets more of the
    /// blame. Uses the grade, as `ignore_wrong_answer_line` does. In [0, 1].
    #[serde(default = "one_f", skip_serializing_if = "is_one")]
    pub wrong_answer_line_weight: f64,
    /// How the discriminator labels policy samples whose final answer grades right: `negative`
    /// (labelled 0 like every policy sample, design §1), `ignore` (left out of its loss) or
    /// `positive` (labelled 1 like the experts). The last two use the grade, i.e. the expert's
    /// final answer, and so depart from learning from demonstrations alone. Default `negative`.
    #[serde(default = "default_correct_policy_samples")]
    pub correct_policy_samples: CorrectPolicySamples,
    /// Reward temperature. Default 1.
    #[serde(default = "one_f")]
    pub temperature: f64,
    /// Clip rewards to ± this (off if absent).
    #[serde(default)]
    pub clip: Option<f64>,
    /// Outcome reward weight. Default 0.
    #[serde(default)]
    pub outcome_weight: f64,
    /// Reward warm start (an airlift addition to design §1): discriminator steps on expert
    /// traces against their own corruptions only, before the first iteration, beside the SFT
    /// warm start. Default 0 (none).
    #[serde(default)]
    pub warm_start_steps: u32,
    /// Its peak learning rate (cosine to 0 over the warm start). Default 1e-3.
    #[serde(default = "default_warm_lr")]
    pub warm_start_lr: f64,
    /// Expert traces per warm-start step, over all learners (each brings its corruptions).
    /// Default 8.
    #[serde(default = "default_micro")]
    pub warm_start_batch: u32,
}

/// `[policy]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// Peak learning rate. Default 1e-6.
    #[serde(default = "default_policy_lr")]
    pub lr: f64,
    /// Discount of the reward-to-go. Default 0.9.
    #[serde(default = "default_gamma")]
    pub gamma: f64,
    /// PPO clip ε. Default 0.2.
    #[serde(default = "default_clip")]
    pub clip_eps: f64,
    /// Weight of a KL term (k3 estimator, token mean) to a frozen reference: the policy as the
    /// adversarial phase starts, i.e. after the SFT warm start (a resume reads it from the warm
    /// start's checkpoint, so it needs `checkpoint.keep_warm_start`). Default 0 (no reference kept).
    #[serde(default)]
    pub kl_coef: f64,
    /// Weight of a behaviour-cloning term in every policy step: the token-mean negative
    /// log-likelihood of the iteration's expert traces, added to the PPO loss (a replay of the
    /// demonstrations, as OpenRLHF's `ptx_coef` / InstructGPT's PPO-ptx mix pretraining data in).
    /// It keeps the policy near what SFT would learn while the learned reward moves it. Default 0.
    #[serde(default)]
    pub sft_coef: f64,
    /// Policy steps per iteration; 0 keeps the policy frozen (only the reward is learned, e.g.
    /// a recipe that samples from a policy too large to train on the machine). Default 1.
    #[serde(default = "one")]
    pub steps: u32,
    /// PPO's old log-probs: `rollout` (the behaviour log-probs the rollout worker recorded while
    /// sampling) or `learner` (the learner's own, recomputed before the first policy step, so the
    /// first ratio is exactly 1 despite rounding differences between decoding and training; this
    /// drops the correction for samples of an older policy at `run.max_staleness > 0`). Every
    /// iteration reports the mismatch as `behaviour_kl`. Default `rollout`.
    #[serde(default = "default_behaviour_logprobs")]
    pub behaviour_logprobs: BehaviourLogprobs,
    /// Experts join their group's statistics. Default false.
    #[serde(default)]
    pub expert_in_group: bool,
    /// How the token rewards become advantages. `token` (design §1): rewards normalised with
    /// their group's token statistics, then discounted reward-to-go (`gamma`). `sequence`: each
    /// sample is scored by the mean of its token rewards (the score `coordinator eval` ranks
    /// and votes with), normalised within its prompt's group, and that one value is every one
    /// of its tokens' advantage (GRPO's outcome advantage, with the learned reward as outcome;
    /// `gamma` is not used). Left out of the written config when `token`, so that checkpoints
    /// of runs from before this key resume. Default `token`.
    #[serde(default = "default_advantage", skip_serializing_if = "AdvantageForm::is_token")]
    pub advantage: AdvantageForm,
    /// What scores each policy sample for its `sequence` advantage. `learned`: the learned
    /// reward (the method). `grade`: 1 when the sample's final answer grades right, else 0
    /// (an ungraded sample scores 0), normalised within its group like the learned score; a
    /// group whose samples all grade alike gets advantage 0. That is RL with a verifiable
    /// reward (GRPO's rule reward): a diagnostic ceiling for what the policy update gains at a
    /// recipe's budget with a perfect sequence-level reward, and a baseline beside the learned
    /// one. The reward model is still trained (its metrics and localisation stay measured) but
    /// does not reach the policy; `reward.outcome_weight` is not used. Needs
    /// `advantage = "sequence"`. Left out of the written config when `learned`. Default `learned`.
    #[serde(default = "default_reward_source", skip_serializing_if = "RewardSource::is_learned")]
    pub reward_source: RewardSource,
    /// The learning-rate schedule of the policy's one optimizer, whose steps are the SFT warm
    /// start's (at `sft.lr`) and then the iterations' (at `lr`). `constant`: those rates at
    /// every step. `cosine`: those rates times one factor that falls from 1 at the first step
    /// along a half cosine to `min_lr_ratio` at step `sft.steps + run.iterations × steps`, the
    /// step after the run's last. An SFT-only run with as many SFT steps (`run.iterations = 0`)
    /// then has the same factor at every step, the equal-compute baseline of `make quality`.
    /// Left out of the written config when `constant`, so that checkpoints of runs from before
    /// this key resume. Default `constant`.
    #[serde(default = "default_lr_schedule", skip_serializing_if = "LrSchedule::is_constant")]
    pub lr_schedule: LrSchedule,
    /// `cosine`'s floor, as a fraction of the rate, in [0, 1]. Left out of the written config
    /// when 0.1. Default 0.1.
    #[serde(default = "default_min_lr_ratio", skip_serializing_if = "is_default_min_lr_ratio")]
    pub min_lr_ratio: f64,
    /// Rows per micro-batch. Default 8.
    #[serde(default = "default_micro")]
    pub micro_batch: u32,
    /// true: the learner computes rows with the same prompt as one prefix tree, each shared
    /// token once (reward and policy passes alike); false: every row alone, with no attention
    /// mask (flash attention on GPUs). Same results up to rounding. Default: true with
    /// `workers.device = "cpu"` (the embedded default's learner: 19.5 -> 12 min), false with
    /// `"cuda"` (where the masked attention and the packing cost more than the shared tokens
    /// save: the default config's run on an H200 took 83 s packed, 65 s not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_prefixes: Option<bool>,
}

/// `[sft]`: the behaviour-cloning warm start, run by the learners before iteration 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftSection {
    /// Steps (0 = no warm start). Default 0.
    #[serde(default)]
    pub steps: u32,
    /// Expert traces per step, per learner. Default 8.
    #[serde(default = "default_sft_batch")]
    pub batch: u32,
    /// Learning rate. Default 1e-4.
    #[serde(default = "default_sft_lr")]
    pub lr: f64,
}

/// `[checkpoint]`: sharded checkpoints in `<run>/checkpoints/step-NNNNNN/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSection {
    /// Write one after every this many iterations (the warm start counts as iteration 0);
    /// 0 = only at the end of the run. Default 0.
    #[serde(default)]
    pub every: u64,
    /// Keep the newest this many; older ones are deleted once a newer manifest is in place.
    /// Default 2.
    #[serde(default = "default_keep")]
    pub keep: u32,
    /// Write one at the end of the run. Default true.
    #[serde(default = "yes")]
    pub at_end: bool,
    /// Never delete the checkpoint after the warm start (`step-000000`), so that the SFT-only
    /// policy can be evaluated beside the trained one (`coordinator eval --compare`). Default false.
    #[serde(default)]
    pub keep_warm_start: bool,
}

/// The whole run config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default = "default_run")]
    pub run: RunSection,
    #[serde(default = "default_workers")]
    pub workers: WorkersSection,
    pub model: ModelSection,
    #[serde(default = "default_data")]
    pub data: DataSection,
    #[serde(default = "default_sampling")]
    pub sampling: SamplingSection,
    #[serde(default = "default_reward")]
    pub reward: RewardSection,
    #[serde(default = "default_policy")]
    pub policy: PolicySection,
    #[serde(default = "default_sft")]
    pub sft: SftSection,
    #[serde(default = "default_checkpoint")]
    pub checkpoint: CheckpointSection,
}

/// Config keys that may differ between a checkpoint's run and the run resuming it (a whole
/// section when it has no dot). Every other key must be equal ([`RunConfig::resume_hash`]).
pub const RESUME_MAY_DIFFER: &[&str] = &["run.dir", "run.iterations", "run.token_file", "run.max_restarts", "workers", "checkpoint"];

/// Config keys that may also differ when a run forks from another run's checkpoint
/// (`coordinator --resume PATH --fork`): the settings that act only in the adversarial
/// iterations and change no tensor's shape, so that one warm start serves several ablations of
/// the iterations. A fork is not an exact resume: its iterations differ from the original's.
pub const FORK_MAY_DIFFER: &[&str] = &[
    "run.name",
    "policy",
    "reward.lr",
    "reward.disc_steps",
    "reward.correct_policy_samples",
    "reward.ignore_wrong_answer_line",
    "reward.wrong_answer_line_weight",
    "reward.outcome_weight",
    "reward.temperature",
    "reward.clip",
    "sampling",
];

/// A duration the config writes as whole milliseconds (the keys ending in `_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(self.0)
    }
}

fn default_register_timeout() -> Millis {
    Millis(600_000)
}
fn default_restarts() -> u32 {
    3
}
fn default_keep() -> u32 {
    2
}
fn default_checkpoint() -> CheckpointSection {
    CheckpointSection {
        every: 0,
        keep: default_keep(),
        at_end: true,
        keep_warm_start: false,
    }
}

fn default_name() -> String {
    "airlift".into()
}
fn default_iterations() -> u64 {
    3
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}
fn yes() -> bool {
    true
}
fn default_max_batch() -> u32 {
    64
}
fn one_f() -> f64 {
    1.0
}
fn default_warm_lr() -> f64 {
    1e-3
}

fn default_device() -> Device {
    Device::Cpu
}
fn default_heartbeat() -> Millis {
    Millis(1000)
}
fn default_lost() -> Millis {
    Millis(10_000)
}
fn default_lease() -> Millis {
    Millis(900_000)
}
fn default_dtype() -> Dtype {
    Dtype::Fp32
}
fn default_prompts() -> u32 {
    8
}
fn default_samples() -> u32 {
    4
}
fn default_task_prompts() -> u32 {
    4
}
fn default_eval() -> u32 {
    16
}
fn default_max_start() -> i64 {
    30
}
fn default_max_new() -> u32 {
    128
}
/// Every corruption kind `reward.corruption_kinds` accepts.
pub const CORRUPTION_KINDS: [&str; 6] = [
    "operator_flip",
    "answer_nudge",
    "number_alter",
    "wrong_operation",
    "wrong_quantity",
    "miscalculation",
];

fn default_behaviour_logprobs() -> BehaviourLogprobs {
    BehaviourLogprobs::Rollout
}

fn is_one(x: &f64) -> bool {
    *x == 1.0
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_correct_policy_samples() -> CorrectPolicySamples {
    CorrectPolicySamples::Negative
}

fn default_corruption_kinds() -> Vec<String> {
    CORRUPTION_KINDS[..3].iter().map(|k| k.to_string()).collect()
}

fn default_advantage() -> AdvantageForm {
    AdvantageForm::Token
}

impl AdvantageForm {
    fn is_token(&self) -> bool {
        *self == AdvantageForm::Token
    }
}

fn default_reward_source() -> RewardSource {
    RewardSource::Learned
}

impl RewardSource {
    fn is_learned(&self) -> bool {
        *self == RewardSource::Learned
    }
}

fn default_lr_schedule() -> LrSchedule {
    LrSchedule::Constant
}

impl LrSchedule {
    fn is_constant(&self) -> bool {
        *self == LrSchedule::Constant
    }
}

fn default_min_lr_ratio() -> f64 {
    0.1
}
fn is_default_min_lr_ratio(x: &f64) -> bool {
    *x == default_min_lr_ratio()
}

fn default_disc() -> DiscriminatorForm {
    DiscriminatorForm::Airl
}
fn default_lr() -> f64 {
    1e-5
}
fn default_policy_lr() -> f64 {
    1e-6
}
fn default_smoothing() -> f64 {
    0.1
}
fn default_gamma() -> f64 {
    0.9
}
fn default_clip() -> f64 {
    0.2
}
fn default_micro() -> u32 {
    8
}
fn default_sft_batch() -> u32 {
    8
}
fn default_sft_lr() -> f64 {
    1e-4
}

// Section defaults go through serde so that a missing section equals an empty one.
fn empty<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_value(serde_json::json!({})).expect("every field has a default")
}
fn default_run() -> RunSection {
    empty()
}
fn default_workers() -> WorkersSection {
    empty()
}
fn default_data() -> DataSection {
    empty()
}
fn default_sampling() -> SamplingSection {
    empty()
}
fn default_reward() -> RewardSection {
    empty()
}
fn default_policy() -> PolicySection {
    empty()
}
fn default_sft() -> SftSection {
    empty()
}

impl RunConfig {
    /// Reads `path` (TOML) with `AIRLIFT__SECTION__KEY` environment overrides, then validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let load_err = |what: String| ConfigError::Load {
            path: path.to_path_buf(),
            what,
        };
        if !path.exists() {
            return Err(load_err("no such file".into()));
        }
        let built = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix("AIRLIFT")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true),
            )
            .build()
            .map_err(|e| load_err(e.to_string()))?;
        let cfg: RunConfig = built.try_deserialize().map_err(|e| load_err(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses a TOML string (no environment overrides), then validates.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| ConfigError::Load {
            path: "<config>".into(),
            what: e.to_string(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The effective config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// The hex SHA-256 of the config without the keys in [`RESUME_MAY_DIFFER`]: equal for two
    /// configs exactly when a run of one may resume a checkpoint of the other.
    pub fn resume_hash(&self) -> String {
        self.hash_without(&[RESUME_MAY_DIFFER])
    }

    /// The hex SHA-256 of the config without the keys in [`RESUME_MAY_DIFFER`] and
    /// [`FORK_MAY_DIFFER`]: equal for two configs exactly when a run of one may fork from a
    /// checkpoint of the other (`coordinator --resume PATH --fork`).
    pub fn fork_hash(&self) -> String {
        self.hash_without(&[RESUME_MAY_DIFFER, FORK_MAY_DIFFER])
    }

    fn hash_without(&self, lists: &[&[&str]]) -> String {
        let mut v = toml::Value::try_from(self).expect("config serialises");
        let root = v.as_table_mut().expect("a table");
        for key in lists.iter().flat_map(|l| l.iter()) {
            match key.split_once('.') {
                Some((section, k)) => {
                    if let Some(t) = root.get_mut(section).and_then(|s| s.as_table_mut()) {
                        t.remove(k);
                    }
                }
                None => {
                    root.remove(*key);
                }
            }
        }
        crate::checkpoint::sha256_hex(toml::to_string(&v).expect("config serialises").as_bytes())
    }

    /// The keys (`section.key`) whose values differ between `self` and `other`, in order; a
    /// key set in one and left to its default (not written) in the other counts as differing.
    pub fn differing_keys(&self, other: &RunConfig) -> Vec<String> {
        let a = toml::Value::try_from(self).expect("config serialises");
        let b = toml::Value::try_from(other).expect("config serialises");
        let empty = toml::map::Map::new();
        let (a, b) = (a.as_table().unwrap_or(&empty), b.as_table().unwrap_or(&empty));
        let mut sections: Vec<&String> = a.keys().chain(b.keys()).collect();
        sections.sort();
        sections.dedup();
        let mut out = Vec::new();
        for sec in sections {
            let (ta, tb) = (a.get(sec).and_then(|v| v.as_table()), b.get(sec).and_then(|v| v.as_table()));
            let (ta, tb) = (ta.unwrap_or(&empty), tb.unwrap_or(&empty));
            let mut keys: Vec<&String> = ta.keys().chain(tb.keys()).collect();
            keys.sort();
            keys.dedup();
            out.extend(keys.into_iter().filter(|k| ta.get(*k) != tb.get(*k)).map(|k| format!("{sec}.{k}")));
        }
        out
    }

    /// The run folder.
    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.clone().unwrap_or_else(|| PathBuf::from("runs").join(&self.run.name))
    }

    /// The weight of a wrong policy sample's answer line in the discriminator loss:
    /// `reward.wrong_answer_line_weight`, or 0 with `reward.ignore_wrong_answer_line = true`.
    pub fn wrong_answer_line_weight(&self) -> f64 {
        if self.reward.ignore_wrong_answer_line {
            0.0
        } else {
            self.reward.wrong_answer_line_weight
        }
    }

    /// Checks values that parse but cannot work; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, what: String| Err(ConfigError::Invalid { key, what });
        // Whole numbers must fit TOML's (and the run file's) signed 64-bit integers: `1e19`
        // parses into a u64 but cannot be written back into the run's config.toml.
        let limit = i64::MAX as u64;
        for (key, v) in [
            ("run.iterations", self.run.iterations),
            ("run.seed", self.run.seed),
            ("run.max_staleness", self.run.max_staleness),
            ("workers.heartbeat_ms", self.workers.heartbeat_ms.0),
            ("workers.lost_after_ms", self.workers.lost_after_ms.0),
            ("workers.task_lease_ms", self.workers.task_lease_ms.0),
            ("workers.register_timeout_ms", self.workers.register_timeout_ms.0),
            ("checkpoint.every", self.checkpoint.every),
        ] {
            if v > limit {
                return bad(key, format!("{v} is larger than {limit}"));
            }
        }
        // Real numbers must be finite (`inf` and `nan` parse as TOML floats).
        for (key, v) in [
            ("sampling.temperature", self.sampling.temperature),
            ("sampling.top_p", self.sampling.top_p),
            ("reward.lr", self.reward.lr),
            ("reward.label_smoothing", self.reward.label_smoothing),
            ("reward.wrong_answer_line_weight", self.reward.wrong_answer_line_weight),
            ("reward.temperature", self.reward.temperature),
            ("reward.outcome_weight", self.reward.outcome_weight),
            ("reward.warm_start_lr", self.reward.warm_start_lr),
            ("reward.clip", self.reward.clip.unwrap_or(1.0)),
            ("policy.lr", self.policy.lr),
            ("policy.gamma", self.policy.gamma),
            ("policy.clip_eps", self.policy.clip_eps),
            ("policy.kl_coef", self.policy.kl_coef),
            ("policy.sft_coef", self.policy.sft_coef),
            ("policy.min_lr_ratio", self.policy.min_lr_ratio),
            ("sft.lr", self.sft.lr),
            ("workers.memory_gb", self.workers.memory_gb.unwrap_or(1.0)),
        ] {
            if !v.is_finite() {
                return bad(key, format!("{v} is not a finite number"));
            }
            if v < 0.0 {
                return bad(key, format!("{v} is negative"));
            }
        }
        if self.workers.learner == 0 {
            return bad("workers.learner", "must be at least 1".into());
        }
        if self.workers.rollout == 0 {
            return bad("workers.rollout", "must be at least 1".into());
        }
        if self.workers.heartbeat_ms.0 == 0 || self.workers.lost_after_ms <= self.workers.heartbeat_ms {
            return bad(
                "workers.lost_after_ms",
                format!(
                    "{} must exceed workers.heartbeat_ms = {}",
                    self.workers.lost_after_ms.0, self.workers.heartbeat_ms.0
                ),
            );
        }
        if self.data.prompts_per_iteration == 0 || !self.data.prompts_per_iteration.is_multiple_of(self.workers.learner) {
            return bad(
                "data.prompts_per_iteration",
                format!(
                    "{} must be a positive multiple of workers.learner = {}",
                    self.data.prompts_per_iteration, self.workers.learner
                ),
            );
        }
        if self.data.samples_per_prompt == 0 {
            return bad("data.samples_per_prompt", "must be at least 1".into());
        }
        if self.data.prompts_per_task == 0 {
            return bad("data.prompts_per_task", "must be at least 1".into());
        }
        if !(1..=6).contains(&self.data.min_steps) || self.data.min_steps > self.data.max_steps || self.data.max_steps > 6 {
            return bad(
                "data.max_steps",
                format!("need 1 <= min_steps ({}) <= max_steps ({}) <= 6", self.data.min_steps, self.data.max_steps),
            );
        }
        if self.data.max_start < 2 {
            return bad("data.max_start", "must be at least 2".into());
        }
        if !(self.sampling.top_p > 0.0 && self.sampling.top_p <= 1.0) {
            return bad("sampling.top_p", format!("{} is not in (0, 1]", self.sampling.top_p));
        }
        if self.sampling.temperature < 0.0 {
            return bad("sampling.temperature", "must be >= 0".into());
        }
        if self.sampling.max_new_tokens == 0 {
            return bad("sampling.max_new_tokens", "must be at least 1".into());
        }
        if self.sampling.max_batch == 0 {
            return bad("sampling.max_batch", "must be at least 1".into());
        }
        if self.reward.corruption_kinds.is_empty() {
            return bad("reward.corruption_kinds", format!("is empty: expected some of {CORRUPTION_KINDS:?}"));
        }
        if let Some(k) = self.reward.corruption_kinds.iter().find(|k| !CORRUPTION_KINDS.contains(&k.as_str())) {
            return bad("reward.corruption_kinds", format!("`{k}`: expected one of {CORRUPTION_KINDS:?}"));
        }
        if self.reward.backbone_layers == Some(0) {
            return bad("reward.backbone_layers", "must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.reward.label_smoothing) {
            return bad("reward.label_smoothing", format!("{} is not in [0, 1)", self.reward.label_smoothing));
        }
        if self.policy.reward_source == RewardSource::Grade && self.policy.advantage != AdvantageForm::Sequence {
            return bad(
                "policy.reward_source",
                "`grade` scores whole samples: it needs policy.advantage = \"sequence\"".into(),
            );
        }
        if self.policy.min_lr_ratio > 1.0 {
            return bad("policy.min_lr_ratio", format!("{} is not in [0, 1]", self.policy.min_lr_ratio));
        }
        if !(0.0..=1.0).contains(&self.reward.wrong_answer_line_weight) {
            return bad(
                "reward.wrong_answer_line_weight",
                format!("{} is not in [0, 1]", self.reward.wrong_answer_line_weight),
            );
        }
        if self.reward.ignore_wrong_answer_line && self.reward.wrong_answer_line_weight != 1.0 {
            return bad(
                "reward.wrong_answer_line_weight",
                format!(
                    "{} given with reward.ignore_wrong_answer_line = true, which means weight 0: give one of the two",
                    self.reward.wrong_answer_line_weight
                ),
            );
        }
        if self.reward.temperature <= 0.0 {
            return bad("reward.temperature", "must be > 0".into());
        }
        if self.reward.disc_steps == 0 {
            return bad("reward.disc_steps", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.policy.gamma) {
            return bad("policy.gamma", format!("{} is not in [0, 1]", self.policy.gamma));
        }
        if self.policy.clip_eps <= 0.0 {
            return bad("policy.clip_eps", "must be > 0".into());
        }
        if self.policy.micro_batch == 0 {
            return bad("policy.micro_batch", "must be at least 1".into());
        }
        if self.policy.steps == 0 && (self.policy.lr != 0.0 || self.sft.steps > 0 || self.policy.kl_coef != 0.0 || self.policy.sft_coef != 0.0) {
            return bad(
                "policy.steps",
                format!(
                    "0 (a frozen policy) needs policy.lr = 0, policy.kl_coef = 0, policy.sft_coef = 0 and sft.steps = 0 (they are {}, {}, {} and {})",
                    self.policy.lr, self.policy.kl_coef, self.policy.sft_coef, self.sft.steps
                ),
            );
        }
        if self.policy.kl_coef > 0.0 && !self.checkpoint.keep_warm_start {
            return bad(
                "policy.kl_coef",
                format!(
                    "{} > 0 needs checkpoint.keep_warm_start = true: the KL reference is the policy after the warm start, and a resume reads it from that checkpoint",
                    self.policy.kl_coef
                ),
            );
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1 (the newest checkpoint is what a resume loads)".into());
        }
        if self.sft.steps > 0 && self.sft.batch == 0 {
            return bad("sft.batch", "must be at least 1 when sft.steps > 0".into());
        }
        if self.reward.warm_start_steps > 0 && self.reward.warm_start_batch < self.workers.learner {
            return bad(
                "reward.warm_start_batch",
                format!(
                    "{} is fewer than one trace per learner ({})",
                    self.reward.warm_start_batch, self.workers.learner
                ),
            );
        }
        for (key, lr) in [
            ("reward.lr", self.reward.lr),
            ("policy.lr", self.policy.lr),
            ("sft.lr", self.sft.lr),
            ("reward.warm_start_lr", self.reward.warm_start_lr),
        ] {
            if !(lr >= 0.0 && lr.is_finite()) {
                return bad(key, format!("{lr} must be a finite non-negative number"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[model]\npolicy = \"m\"\n";

    /// `policy.advantage`: `token` by default and then not written (the resume hash of a run
    /// from before the key is unchanged); `sequence` is written; another word names the key.
    #[test]
    fn the_wrong_answer_line_is_kept_by_default_written_only_when_left_out_and_may_fork() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert!(!c.reward.ignore_wrong_answer_line);
        assert!(!c.to_toml().contains("ignore_wrong_answer_line"), "{}", c.to_toml());
        let s = RunConfig::from_toml(&format!("{MIN}[reward]\nignore_wrong_answer_line = true\n")).unwrap();
        assert!(s.reward.ignore_wrong_answer_line);
        assert_eq!(RunConfig::from_toml(&s.to_toml()).unwrap(), s);
        assert_eq!(s.fork_hash(), c.fork_hash());
        assert_ne!(s.resume_hash(), c.resume_hash());
        let e = RunConfig::from_toml(&format!("{MIN}[reward]\nignore_wrong_answer_line = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ignore_wrong_answer_line"), "{e}");
    }

    /// `reward.wrong_answer_line_weight`: 1 by default and then not written; in [0, 1]; may
    /// fork; not given beside `ignore_wrong_answer_line = true` (which means 0).
    #[test]
    fn the_answer_line_weight_defaults_to_one_is_checked_and_may_fork() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert_eq!((c.reward.wrong_answer_line_weight, c.wrong_answer_line_weight()), (1.0, 1.0));
        assert!(!c.to_toml().contains("wrong_answer_line_weight"), "{}", c.to_toml());
        let s = RunConfig::from_toml(&format!("{MIN}[reward]\nwrong_answer_line_weight = 0.25\n")).unwrap();
        assert_eq!(s.wrong_answer_line_weight(), 0.25);
        assert_eq!(RunConfig::from_toml(&s.to_toml()).unwrap(), s);
        assert_eq!(s.fork_hash(), c.fork_hash());
        assert_ne!(s.resume_hash(), c.resume_hash());
        let i = RunConfig::from_toml(&format!("{MIN}[reward]\nignore_wrong_answer_line = true\n")).unwrap();
        assert_eq!(i.wrong_answer_line_weight(), 0.0);
        for (v, want) in [("1.5", "not in [0, 1]"), ("-0.1", "negative"), ("nan", "wrong_answer_line_weight")] {
            let e = RunConfig::from_toml(&format!("{MIN}[reward]\nwrong_answer_line_weight = {v}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("reward.wrong_answer_line_weight") && e.contains(want), "{v}: {e}");
        }
        let e = RunConfig::from_toml(&format!("{MIN}[reward]\nignore_wrong_answer_line = true\nwrong_answer_line_weight = 0.5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reward.wrong_answer_line_weight") && e.contains("give one of the two"), "{e}");
    }

    /// `policy.lr_schedule`: `constant` by default and then not written, nor a default
    /// `min_lr_ratio` (the resume hash of a run from before the keys is unchanged); the ratio is
    /// checked; another word names the key.
    #[test]
    fn the_policy_schedule_defaults_to_constant_and_is_written_only_when_cosine() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert_eq!((c.policy.lr_schedule, c.policy.min_lr_ratio), (LrSchedule::Constant, 0.1));
        assert!(!c.to_toml().contains("lr_schedule") && !c.to_toml().contains("min_lr_ratio"), "{}", c.to_toml());
        let s = RunConfig::from_toml(&format!("{MIN}[policy]\nlr_schedule = \"cosine\"\nmin_lr_ratio = 0\n")).unwrap();
        assert_eq!((s.policy.lr_schedule, s.policy.min_lr_ratio), (LrSchedule::Cosine, 0.0));
        assert_eq!(RunConfig::from_toml(&s.to_toml()).unwrap(), s);
        assert_ne!(s.resume_hash(), c.resume_hash());
        for (v, want) in [("1.5", "not in [0, 1]"), ("-0.1", "negative"), ("inf", "not a finite number")] {
            let e = RunConfig::from_toml(&format!("{MIN}[policy]\nmin_lr_ratio = {v}\n")).unwrap_err().to_string();
            assert!(e.contains("policy.min_lr_ratio") && e.contains(want), "{v}: {e}");
        }
        let e = RunConfig::from_toml(&format!("{MIN}[policy]\nlr_schedule = \"linear\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.lr_schedule") && e.contains("`constant`, `cosine`"), "{e}");
    }

    #[test]
    fn the_advantage_form_defaults_to_token_and_is_written_only_when_sequence() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert_eq!(c.policy.advantage, AdvantageForm::Token);
        assert!(!c.to_toml().contains("advantage"), "{}", c.to_toml());
        let s = RunConfig::from_toml(&format!("{MIN}[policy]\nadvantage = \"sequence\"\n")).unwrap();
        assert_eq!(s.policy.advantage, AdvantageForm::Sequence);
        assert!(s.to_toml().contains("advantage = \"sequence\""));
        assert_eq!(RunConfig::from_toml(&s.to_toml()).unwrap(), s);
        let e = RunConfig::from_toml(&format!("{MIN}[policy]\nadvantage = \"outcome\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.advantage") && e.contains("`token`, `sequence`"), "{e}");
    }

    /// `policy.reward_source`: `learned` by default and then not written; `grade` parses, is
    /// written, and is refused without sequence advantages, naming the key.
    #[test]
    fn the_reward_source_defaults_to_learned_and_grade_needs_sequence_advantages() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert_eq!(c.policy.reward_source, RewardSource::Learned);
        assert!(!c.to_toml().contains("reward_source"), "{}", c.to_toml());
        let g = RunConfig::from_toml(&format!("{MIN}[policy]\nadvantage = \"sequence\"\nreward_source = \"grade\"\n")).unwrap();
        assert_eq!(g.policy.reward_source, RewardSource::Grade);
        assert!(g.to_toml().contains("reward_source = \"grade\""), "{}", g.to_toml());
        assert_eq!(RunConfig::from_toml(&g.to_toml()).unwrap(), g);
        let e = RunConfig::from_toml(&format!("{MIN}[policy]\nreward_source = \"grade\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.reward_source") && e.contains("sequence"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[policy]\nadvantage = \"sequence\"\nreward_source = \"oracle\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("policy.reward_source") && e.contains("`learned`, `grade`"), "{e}");
    }

    /// A fork may change the iterations' settings but not what the checkpoint's tensors are.
    #[test]
    fn a_fork_may_change_the_iteration_settings_only() {
        let base = RunConfig::from_toml(&format!("{MIN}[reward]\nbackbone_layers = 8\n")).unwrap();
        let iter = RunConfig::from_toml(&format!(
            "{MIN}[run]\nname = \"b\"\n[reward]\nbackbone_layers = 8\nlr = 2e-5\n[policy]\nadvantage = \"sequence\"\nsft_coef = 1.0\n"
        ))
        .unwrap();
        assert_ne!(base.resume_hash(), iter.resume_hash());
        assert_eq!(base.fork_hash(), iter.fork_hash());
        assert_eq!(iter.differing_keys(&base), ["policy.advantage", "policy.sft_coef", "reward.lr", "run.name"]);
        let deeper = RunConfig::from_toml(&format!("{MIN}[reward]\nbackbone_layers = 30\n")).unwrap();
        assert_ne!(base.fork_hash(), deeper.fork_hash());
        assert_eq!(deeper.differing_keys(&base), ["reward.backbone_layers"]);
        assert!(base.differing_keys(&base).is_empty());
    }

    /// Every config the repository ships parses and validates.
    #[test]
    fn a_word_not_allowed_names_the_key_and_the_words() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.toml")).unwrap();
        for (from, to, key, words) in [
            ("device = \"cpu\"", "device = \"gpu\"", "workers.device", "`cpu`, `cuda`"),
            ("rollout_dtype = \"bf16\"", "rollout_dtype = \"fp16\"", "model.rollout_dtype", "`fp32`, `bf16`"),
            (
                "discriminator = \"logit\"",
                "discriminator = \"gail\"",
                "reward.discriminator",
                "`airl`, `logit`",
            ),
        ] {
            assert!(text.contains(from), "{from}");
            let e = RunConfig::from_toml(&text.replace(from, to)).unwrap_err().to_string();
            assert!(e.contains(key) && e.contains(words), "{e}");
        }
        let c = RunConfig::from_toml(&text).unwrap();
        assert_eq!(
            (c.workers.device, c.model.train_dtype, c.reward.discriminator),
            (Device::Cpu, Dtype::Bf16, DiscriminatorForm::Logit)
        );
        // Written back as the same words (the resume hash of old checkpoints is unchanged).
        assert!(c.to_toml().contains("device = \"cpu\"") && c.to_toml().contains("discriminator = \"logit\""));
    }

    #[test]
    fn shipped_configs_are_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs");
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                RunConfig::from_toml(&std::fs::read_to_string(&p).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 3, "{n} configs in {dir}");
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = RunConfig::from_toml(MIN).unwrap();
        assert_eq!(c.workers.learner, 1);
        assert_eq!(c.policy.gamma, 0.9);
        assert_eq!(c.reward.label_smoothing, 0.1);
        let back = RunConfig::from_toml(&c.to_toml()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_keys_and_impossible_values_are_named() {
        let e = RunConfig::from_toml(&format!("{MIN}[workers]\nlearners = 2\n")).unwrap_err().to_string();
        assert!(e.contains("unknown field `learners`"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[workers]\nlearner = 0\n")).unwrap_err().to_string();
        assert!(e.contains("workers.learner"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[data]\nprompts_per_iteration = 3\n[workers]\nlearner = 2\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.prompts_per_iteration"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[reward]\ncorrect_policy_samples = \"maybe\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reward.correct_policy_samples") && e.contains("`maybe`"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[reward]\ncorruption_kinds = [\"operator_flip\", \"typo\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("reward.corruption_kinds") && e.contains("`typo`"), "{e}");
        let e = RunConfig::from_toml(&format!("{MIN}[policy]\nkl_coef = 0.1\n")).unwrap_err().to_string();
        assert!(e.contains("policy.kl_coef") && e.contains("checkpoint.keep_warm_start = true"), "{e}");
        RunConfig::from_toml(&format!("{MIN}[policy]\nkl_coef = 0.1\n[checkpoint]\nkeep_warm_start = true\n")).unwrap();
    }

    #[test]
    fn numbers_out_of_range_are_named_not_panicked_on() {
        for (toml, key) in [
            ("[policy]\nlr = inf\n", "policy.lr"),
            ("[sampling]\ntemperature = nan\n", "sampling.temperature"),
            ("[reward]\nlr = -1e-5\n", "reward.lr"),
        ] {
            let e = RunConfig::from_toml(&format!("{MIN}{toml}")).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
        // What an environment override or a float coerced to u64 can produce: too large to
        // write back as TOML.
        let mut c = RunConfig::from_toml(MIN).unwrap();
        c.run.seed = u64::MAX;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("run.seed") && e.contains("18446744073709551615"), "{e}");
        c.run.seed = i64::MAX as u64;
        assert!(c.validate().is_ok());
        assert!(RunConfig::from_toml(&c.to_toml()).is_ok());
    }
}
