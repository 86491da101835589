//! The LM head fused with the log-probs of chosen tokens, forward and backward, in chunks of
//! positions (the idea of fused linear + cross-entropy kernels).
//!
//! Through autograd, a loss on the log-probs of n chosen tokens keeps the [n, V] logits and
//! their fp32 log-softmax for backward, and backward writes two more [n, V] tensors: for a
//! 16 x 1,024-token batch of a 152k-token vocabulary that is 5 GB of bf16 logits, 10 GB of fp32
//! log-probs and about 95 GB of memory traffic per step. [`logprob_loss`] instead takes the
//! positions in chunks and, for each chunk, computes the logits, the chosen tokens' log-probs
//! (fp32 log-softmax), the caller's loss on them and its gradient, and then the head's gradients
//! right away:
//!
//! ```text
//! ∂L/∂z = g · (onehot(t) − P)                  g = ∂L/∂logp(t), P = softmax(z)
//! ∂L/∂h = g · (W[t] − P·W)                     [c, H]
//! ∂L/∂W = Σ g·h into the rows t − Pᵀ·(g·h)     [V, H], accumulated in fp32
//! ```
//!
//! so no [n, V] tensor lives beyond its chunk and nothing vocabulary-sized goes through
//! autograd. The gradients reach the model through one backward of the surrogate
//! `Σ h·∂L/∂h + Σ W·∂L/∂W` ([`HeadPass::backward`]). The caller's loss must be a sum over
//! positions (each chunk's part computed from that chunk's log-probs alone), which every
//! token-level loss of the learner is.

use tch::{Kind, Tensor};

/// Elements of one chunk's [positions, V] logits on the CPU: 2^27 (512 MB as fp32 log-probs).
const CHUNK_ELEMENTS_CPU: i64 = 1 << 27;
/// The same on a GPU, 2^29 (2 GB as fp32 log-probs): every chunk reads and writes the fp32
/// head gradient [V, H] once, so fewer chunks move less memory.
const CHUNK_ELEMENTS_GPU: i64 = 1 << 29;

/// What [`logprob_loss`] computed. Call [`HeadPass::backward`] to send the gradients into the
/// model (the hidden states' graph and the head weight).
pub struct HeadPass {
    /// [n] fp32 log-probs of the chosen tokens (no grad).
    pub logprobs: Tensor,
    /// The loss: the sum of the chunks' losses (a 0-dim fp32 tensor, no grad).
    pub loss: Tensor,
    /// Mean entropy of the n distributions, when asked for.
    pub entropy: Option<f64>,
    surrogate: Tensor,
}

impl HeadPass {
    /// Accumulates `∂loss/∂θ` into the gradients of every parameter the hidden states and the
    /// head weight depend on.
    pub fn backward(&self) {
        self.surrogate.backward();
    }
}

/// The log-probs of `targets` [n] under the head `weight` [V, H] (the parameter, any storage
/// precision) applied to `hidden` [n, H] (in the compute precision, with grad), and the loss
/// `Σ_chunks loss(logprobs of the chunk [c] fp32, start of the chunk)` with its gradients;
/// see the module docs. `entropy` also returns the mean entropy of the n distributions.
pub fn logprob_loss(hidden: &Tensor, weight: &Tensor, targets: &Tensor, entropy: bool, loss: impl FnMut(&Tensor, i64) -> Tensor) -> HeadPass {
    let vocab = weight.size()[0];
    let budget = if hidden.device().is_cuda() { CHUNK_ELEMENTS_GPU } else { CHUNK_ELEMENTS_CPU };
    logprob_loss_chunked(hidden, weight, targets, entropy, (budget / vocab).max(1), loss)
}

/// One chunk's logits [c, V] in the compute precision, their fp32 log-softmax, and the
/// log-probs [c] of the chunk's targets `tc`.
fn chunk_logprobs(hc: &Tensor, w: &Tensor, tc: &Tensor) -> (Tensor, Tensor, Tensor) {
    let z = hc.linear::<Tensor>(w, None);
    let logp = z.log_softmax(-1, Kind::Float);
    let lp = logp.gather(1, &tc.unsqueeze(1), false).squeeze_dim(1);
    (z, logp, lp)
}

/// `Σ −p·log p` over the rows of fp32 log-probs `logp` (0-dim, fp64).
fn entropy_sum(logp: &Tensor) -> Tensor {
    -(logp.exp() * logp).sum(Kind::Double)
}

/// The log-probs [n] of `targets` under the head `weight` applied to `hidden` [n, H], and the
/// mean entropy of the n distributions when asked for; no grad, `chunk` positions at a time, so
/// the full [n, V] log-probs never exist at once.
pub fn logprobs(hidden: &Tensor, weight: &Tensor, targets: &Tensor, entropy: bool, chunk: i64) -> (Tensor, Option<f64>) {
    tch::no_grad(|| {
        let n = hidden.size()[0];
        let w = weight.to_kind(hidden.kind());
        let out = Tensor::zeros([n], (Kind::Float, hidden.device()));
        let mut ent_sum = Tensor::zeros([], (Kind::Double, hidden.device()));
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let (_, logp, lp) = chunk_logprobs(&hidden.narrow(0, s, len), &w, &targets.narrow(0, s, len));
            out.narrow(0, s, len).copy_(&lp);
            if entropy {
                ent_sum += entropy_sum(&logp);
            }
            s += len;
        }
        (out, entropy.then(|| ent_sum.double_value(&[]) / n.max(1) as f64))
    })
}

/// [`logprob_loss`] with `chunk` positions per chunk.
pub fn logprob_loss_chunked(
    hidden: &Tensor,
    weight: &Tensor,
    targets: &Tensor,
    entropy: bool,
    chunk: i64,
    mut loss: impl FnMut(&Tensor, i64) -> Tensor,
) -> HeadPass {
    let (n, width) = (hidden.size()[0], hidden.size()[1]);
    let kind = hidden.kind();
    let dev = hidden.device();
    let (grad_h, grad_w, logprobs, total, ent_sum) = tch::no_grad(|| {
        let w = weight.detach().to_kind(kind);
        let h = hidden.detach();
        let grad_h = Tensor::zeros([n, width], (Kind::Float, dev));
        let grad_w = Tensor::zeros(weight.size(), (Kind::Float, dev));
        let logprobs = Tensor::zeros([n], (Kind::Float, dev));
        let mut total = Tensor::zeros([], (Kind::Float, dev));
        let mut ent_sum = Tensor::zeros([], (Kind::Double, dev));
        let mut s = 0;
        while s < n {
            let len = chunk.min(n - s);
            let (hc, tc) = (h.narrow(0, s, len), targets.narrow(0, s, len));
            let (z, mut logp, lp) = chunk_logprobs(&hc, &w, &tc);
            if entropy {
                ent_sum += entropy_sum(&logp);
            }
            // The softmax: from the fp32 log-probs in place when computing in fp32, else from
            // the logits straight into the compute precision (one pass, fp32 inside).
            let p = if kind == Kind::Float { logp.exp_() } else { z.softmax(-1, kind) };
            drop(z);
            logprobs.narrow(0, s, len).copy_(&lp);
            // The chunk's loss and g = ∂loss/∂lp, by autograd over the chunk's [c] log-probs.
            let leaf = lp.detach().set_requires_grad(true);
            let l = tch::with_grad(|| loss(&leaf, s));
            let g = Tensor::run_backward(&[&l], &[&leaf], false, false).pop().expect("one input, one gradient");
            total += l.detach();
            let g = g.unsqueeze(1);
            // ∂L/∂h = g · (W[t] − P·W)
            let pw = p.mm(&w);
            grad_h.narrow(0, s, len).copy_(&((w.index_select(0, &tc) - pw) * &g));
            // ∂L/∂W = Σ g·h into rows t − Pᵀ·(g·h), the GEMM accumulating into the fp32 gradient
            // (in its epilogue where the device can: bf16 inputs, fp32 output).
            let gh = &hc * &g;
            let _ = grad_w.shallow_clone().index_add_(0, &tc, &gh);
            let minus_gh = -gh.to_kind(kind);
            if kind == Kind::Float {
                let _ = grad_w.shallow_clone().addmm_(&p.tr(), &minus_gh);
            } else if grad_w.f_addmm_dtype_out(&grad_w, &p.tr(), &minus_gh, Kind::Float).is_err() {
                let _ = grad_w.shallow_clone().g_add_(&p.tr().mm(&minus_gh));
            }
            s += len;
        }
        (grad_h, grad_w, logprobs, total, ent_sum)
    });
    let surrogate = (hidden * grad_h.to_kind(kind)).sum(Kind::Float) + (weight * grad_w.to_kind(weight.kind())).sum(Kind::Float);
    let entropy = entropy.then(|| ent_sum.double_value(&[]) / n.max(1) as f64);
    HeadPass {
        logprobs,
        loss: total,
        entropy,
        surrogate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Log-probs, loss, entropy and the gradients of hidden states and weight against autograd
    /// through the full logits, in fp32 (1e-5) and with a bf16 hidden / fp32 weight (bf16
    /// tolerance), for chunks that do and do not divide n.
    #[test]
    fn matches_autograd_through_the_full_logits() {
        tch::manual_seed(7);
        let (n, hs, v) = (11, 16, 37);
        let hidden0 = Tensor::randn([n, hs], (Kind::Float, Device::Cpu));
        let weight = Tensor::randn([v, hs], (Kind::Float, Device::Cpu)) * 0.5;
        let targets = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        let coef = Tensor::randn([n], (Kind::Float, Device::Cpu));
        // A nonlinear token-level loss: Σ coef · exp(lp) + lp².
        let f = |lp: &Tensor, c: &Tensor| (c * lp.exp() + lp.square()).sum(Kind::Float);
        for (kind, tol) in [(Kind::Float, 1e-5), (Kind::BFloat16, 3e-2)] {
            let w_ref = weight.copy().set_requires_grad(true);
            let h_ref = hidden0.to_kind(kind).copy().set_requires_grad(true);
            let logp = h_ref.linear::<Tensor>(&w_ref.to_kind(kind), None).log_softmax(-1, Kind::Float);
            let lp_ref = logp.gather(1, &targets.unsqueeze(1), false).squeeze_dim(1);
            let ent_ref = tch::no_grad(|| -(logp.exp() * &logp).sum(Kind::Float).double_value(&[]) / n as f64);
            let l_ref = f(&lp_ref, &coef);
            l_ref.backward();
            for chunk in [1, 4, 11, 64] {
                let w = weight.copy().set_requires_grad(true);
                let h = hidden0.to_kind(kind).copy().set_requires_grad(true);
                let pass = logprob_loss_chunked(&h, &w, &targets, true, chunk, |lp, s| f(lp, &coef.narrow(0, s, lp.size()[0])));
                pass.backward();
                let rel = |a: &Tensor, b: &Tensor| {
                    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
                    ((&a - &b).abs().max() / b.abs().max().clamp_min(1e-12)).double_value(&[])
                };
                let what = format!("{kind:?}, chunk {chunk}");
                assert!(rel(&pass.logprobs, &lp_ref.detach()) < tol, "{what}: log-probs");
                assert!(rel(&pass.loss, &l_ref.detach()) < tol, "{what}: loss");
                assert!((pass.entropy.unwrap() - ent_ref).abs() < tol * ent_ref, "{what}: entropy");
                assert!(rel(&h.grad(), &h_ref.grad()) < tol, "{what}: hidden grad {}", rel(&h.grad(), &h_ref.grad()));
                assert!(rel(&w.grad(), &w_ref.grad()) < tol, "{what}: weight grad {}", rel(&w.grad(), &w_ref.grad()));
            }
        }
    }
}
