//! AdamW over a flat parameter buffer, with gradient-norm clipping, linear warmup then cosine
//! decay, and weight decay only on matrices (not on norms and biases).
//!
//! All trainable parameters, in the flat order of [`super::flat`] (so every rank lays them out
//! alike), are copied into one contiguous fp32 buffer and then *become views of it*, so an update
//! of the buffer is an update of the model. The optimizer may own only a slice `[lo, hi)` of the buffer (its moments
//! are that long): that is the ZeRO-1 layout of the distributed learner, where each rank steps
//! its slice and the slices are then all-gathered. With one rank the slice is the whole buffer.
//!
//! The update runs as libtorch's fused AdamW kernel (one pass over parameters, gradients and
//! moments) where the C++ shim is built ([`crate::cuda::fused_adamw`]; `AIRLIFT_FUSED_ADAMW=0`
//! turns it off), and as separate in-place tensor ops otherwise.
//!
//! Parameters must be fp32 (the master weights; compute may be bf16) and their var store must
//! not be cast afterwards, which would replace the views.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

/// Optimizer hyper-parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled weight decay, applied to parameters with 2 or more dimensions only.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (none if absent).
    pub max_grad_norm: Option<f64>,
    /// Linear warmup from 0 over this many steps.
    pub warmup_steps: u64,
    /// Cosine decay from the peak to `min_lr_ratio · lr` at this step; 0 = constant after warmup.
    pub total_steps: u64,
    pub min_lr_ratio: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-5,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            warmup_steps: 0,
            total_steps: 0,
            min_lr_ratio: 0.1,
        }
    }
}

impl AdamWConfig {
    /// The learning rate for optimizer step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        if self.total_steps == 0 || self.total_steps <= self.warmup_steps {
            return self.lr;
        }
        let progress = ((step - self.warmup_steps) as f64 / (self.total_steps - self.warmup_steps) as f64).min(1.0);
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy)]
pub struct StepStats {
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// AdamW over a flat buffer (see the module docs).
pub struct FlatAdamW {
    names: Vec<String>,
    params: Vec<Tensor>,
    flat: Tensor,
    /// Runs of the owned slice, `(start in the buffer, length, decayed)`: what the fused kernel
    /// updates, and where weight decay applies (no buffer-sized decay mask: for a 0.5B policy
    /// that was 2.5 GB, and twice that while it was built).
    runs: Vec<(i64, i64, bool)>,
    /// Whether the update runs as libtorch's fused kernel (else as separate tensor ops).
    fused: bool,
    /// The step count as a one-element tensor on the buffer's device (the fused kernel reads it).
    step_t: Tensor,
    m: Tensor,
    v: Tensor,
    /// No moments are held and no step may be taken (a frozen model: `policy.steps = 0`).
    frozen: bool,
    lo: i64,
    hi: i64,
    step: u64,
    /// Steps refused for a non-finite gradient.
    skipped: u64,
    cfg: AdamWConfig,
}

impl FlatAdamW {
    /// Takes over every trainable variable of `vs`; this optimizer owns the whole buffer.
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> Self {
        Self::sharded(vs, cfg, 0, 1)
    }

    /// Takes over every trainable variable of `vs`; this optimizer (rank `rank` of `world`) owns
    /// slice `rank` of the buffer split into `world` near-equal parts
    /// ([`super::flat::FlatLayout::shard`]).
    pub fn sharded(vs: &VarStore, cfg: AdamWConfig, rank: usize, world: usize) -> Self {
        Self::sharded_with(vs, cfg, rank, world, true)
    }

    fn sharded_with(vs: &VarStore, cfg: AdamWConfig, rank: usize, world: usize, moments: bool) -> Self {
        assert!(world > 0 && rank < world, "rank {rank} of world {world}");
        let vars = super::flat::trainable(vs);
        assert!(!vars.is_empty(), "no trainable parameters");
        let layout = super::flat::layout_of(vs);
        let total = layout.total;
        let device = vars[0].1.device();
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut runs: Vec<(i64, i64, bool)> = Vec::new();
        let (lo, hi) = layout.shard(rank, world);
        let mut off = 0;
        tch::no_grad(|| {
            for (name, t) in &vars {
                assert_eq!(t.kind(), Kind::Float, "{name}: flat AdamW needs fp32 master parameters");
                let n = t.numel() as i64;
                let view = flat.narrow(0, off, n);
                view.shallow_clone().copy_(&t.reshape([-1]));
                let mut p = t.shallow_clone();
                p.set_data(&view.view(t.size().as_slice()));
                let (a, b) = (off.max(lo), (off + n).min(hi));
                if a < b {
                    match runs.last_mut() {
                        Some(r) if r.0 + r.1 == a && r.2 == (t.dim() >= 2) => r.1 += b - a,
                        _ => runs.push((a, b - a, t.dim() >= 2)),
                    }
                }
                off += n;
            }
        });
        let len = hi - lo;
        let fused = crate::cuda::fused_adamw_built() && std::env::var("AIRLIFT_FUSED_ADAMW").as_deref() != Ok("0");
        FlatAdamW {
            names: vars.iter().map(|(n, _)| n.clone()).collect(),
            params: vars.into_iter().map(|(_, t)| t).collect(),
            flat,
            runs,
            fused,
            step_t: Tensor::from(0f32).to_device(device),
            m: Tensor::zeros([if moments { len } else { 0 }], (Kind::Float, device)),
            v: Tensor::zeros([if moments { len } else { 0 }], (Kind::Float, device)),
            frozen: false,
            lo,
            hi,
            step: 0,
            skipped: 0,
            cfg,
        }
    }

    /// [`FlatAdamW::sharded`] for a model that is never stepped: the flat buffer and its layout
    /// (for checkpoints and weight publishing) without moments, which for a 0.5B policy are 5 GB.
    /// Checkpoints still carry the moment vectors, as zeros.
    pub fn frozen(vs: &VarStore, cfg: AdamWConfig, rank: usize, world: usize) -> Self {
        let mut o = Self::sharded_with(vs, cfg, rank, world, false);
        o.frozen = true;
        o
    }

    /// Whether this optimizer holds no moments and takes no steps.
    pub fn is_frozen(&self) -> bool {
        self.frozen
    }

    /// The flat parameter buffer (views of it are the model's parameters).
    pub fn flat(&self) -> &Tensor {
        &self.flat
    }

    /// Number of parameters.
    pub fn numel(&self) -> i64 {
        self.flat.size()[0]
    }

    /// Sizes of every rank's slice, in rank order.
    pub fn shard_counts(&self, world: usize) -> Vec<usize> {
        crate::collective::split_counts(self.numel() as usize, world)
    }

    /// The owned slice `[lo, hi)`.
    pub fn shard(&self) -> (i64, i64) {
        (self.lo, self.hi)
    }

    /// Parameter names in buffer order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Changes the peak learning rate (e.g. for a warm-start phase).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Starts a new phase with `cfg`: step count and moments back to zero, parameters kept.
    pub fn restart(&mut self, cfg: AdamWConfig) {
        self.cfg = cfg;
        self.step = 0;
        tch::no_grad(|| {
            let _ = self.m.zero_();
            let _ = self.v.zero_();
        });
    }

    /// Optimizer steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// Steps skipped because their gradient was not finite (since this optimizer was made).
    pub fn skipped_steps(&self) -> u64 {
        self.skipped
    }

    /// This rank's slice of the first and second moments, as fp32 values.
    pub fn moments(&self) -> (Vec<f32>, Vec<f32>) {
        let get = |t: &Tensor| Vec::<f32>::try_from(t.to_device(tch::Device::Cpu)).expect("f32 moments");
        (get(&self.m), get(&self.v))
    }

    /// This rank's slice of the first and second moments (for checkpoints); `None` when frozen
    /// (the moments are zeros).
    pub fn moment_tensors(&self) -> Option<(&Tensor, &Tensor)> {
        (!self.frozen).then_some((&self.m, &self.v))
    }

    /// Restores a saved state: `fill(0, flat)` writes the whole parameter buffer, `fill(1, m)`
    /// and `fill(2, v)` this rank's slice of the moments; then the step count is set.
    pub fn load_state_with(&mut self, step: u64, mut fill: impl FnMut(usize, &Tensor) -> Result<(), String>) -> Result<(), String> {
        fill(0, &self.flat)?;
        if !self.frozen {
            fill(1, &self.m)?;
            fill(2, &self.v)?;
        }
        self.step = step;
        Ok(())
    }

    /// Zeroes every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// The gradients as one flat fp32 tensor (zeros for parameters without a gradient).
    pub fn flat_grad(&self) -> Tensor {
        let parts: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| {
                let g = p.grad();
                if g.defined() {
                    g.reshape([-1]).to_kind(Kind::Float)
                } else {
                    Tensor::zeros([p.numel() as i64], (Kind::Float, p.device()))
                }
            })
            .collect();
        Tensor::cat(&parts, 0)
    }

    /// One AdamW step on the owned slice using `grad` (a full flat gradient, e.g. already
    /// all-reduced across ranks). Clipping uses the norm of the whole `grad`. A gradient that is
    /// not finite (NaN or ±inf anywhere: an overflow, a bad row) is **skipped**: parameters,
    /// moments and the step count stay as they were, and [`FlatAdamW::skipped_steps`] counts it
    /// (every rank sees the same all-reduced gradient, so replicas skip together).
    pub fn step_with(&mut self, grad: &Tensor) -> StepStats {
        assert!(!self.frozen, "a frozen optimizer takes no steps");
        let lr = self.cfg.lr_at(self.step);
        let grad_norm = tch::no_grad(|| grad.norm().double_value(&[]));
        if !grad_norm.is_finite() {
            self.skipped += 1;
            tracing::warn!(
                grad_norm,
                skipped = self.skipped,
                "non-finite gradient: optimizer step skipped, parameters unchanged"
            );
            return StepStats { grad_norm, lr };
        }
        self.step += 1;
        let stats = tch::no_grad(|| {
            let c = &self.cfg;
            let scale = match c.max_grad_norm {
                Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
                _ => 1.0,
            };
            let len = self.hi - self.lo;
            if len > 0 {
                let g = grad.narrow(0, self.lo, len);
                let g = if scale != 1.0 { g * scale } else { g };
                if self.fused {
                    self.fused_step(&self.runs, &g, lr);
                    return StepStats { grad_norm, lr };
                }
                // In place, in torch's order (`torch.optim.AdamW`, single-tensor path): two
                // temporaries of the slice's size instead of ten, which matters for a 0.5B model.
                let mut p = self.flat.narrow(0, self.lo, len);
                if c.weight_decay > 0.0 {
                    for &(start, n, _) in self.runs.iter().filter(|r| r.2) {
                        let mut run = self.flat.narrow(0, start, n);
                        run *= 1.0 - lr * c.weight_decay;
                    }
                }
                let _ = self.m.lerp_(&g, 1.0 - c.beta1);
                let _ = self.v.lerp_(&g.square(), 1.0 - c.beta2);
                let t = self.step as i32;
                let bc1 = 1.0 - c.beta1.powi(t);
                let bc2 = 1.0 - c.beta2.powi(t);
                let mut denom = self.v.sqrt();
                let _ = denom.g_div_scalar_(bc2.sqrt());
                let _ = denom.g_add_scalar_(c.eps);
                // p -= (lr / bc1) * m / denom, with the step size folded into the denominator.
                let _ = denom.g_div_scalar_(-lr / bc1);
                let _ = p.addcdiv_(&self.m, &denom);
            }
            StepStats { grad_norm, lr }
        });
        stats
    }

    /// The update of [`FlatAdamW::step_with`] with libtorch's fused kernel: one call for the
    /// decayed runs of the owned slice and one for the others. `g` is the owned slice's gradient.
    fn fused_step(&self, runs: &[(i64, i64, bool)], g: &Tensor, lr: f64) {
        let c = &self.cfg;
        let _ = self.step_t.shallow_clone().fill_(self.step as f64);
        for decayed in [true, false] {
            let (mut p, mut gs, mut m, mut v) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for &(start, len, _) in runs.iter().filter(|r| r.2 == decayed) {
                let local = start - self.lo;
                p.push(self.flat.narrow(0, start, len));
                gs.push(g.narrow(0, local, len));
                m.push(self.m.narrow(0, local, len));
                v.push(self.v.narrow(0, local, len));
            }
            if p.is_empty() {
                continue;
            }
            let weight_decay = if decayed { c.weight_decay } else { 0.0 };
            let h = crate::cuda::AdamWStep {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                weight_decay,
                eps: c.eps,
            };
            crate::cuda::fused_adamw(&p, &gs, &m, &v, &self.step_t, h).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    /// Gathers this rank's gradients and steps (single-process training).
    pub fn step(&mut self) -> StepStats {
        let g = self.flat_grad();
        self.step_with(&g)
    }
}
