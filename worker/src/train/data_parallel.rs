//! Data parallelism over the flat layout: replicas mean-all-reduce their flat gradients before
//! each optimizer step and, when each rank steps only its shard (ZeRO-1), all-gather the shards
//! afterwards. The transport ([`crate::collective`]) knows nothing of this; the algorithm
//! ([`crate::airl`]) sees only [`GradReducer`].

use super::optim::FlatAdamW;
use crate::collective::Collective;
use tch::Tensor;

/// Keeps data-parallel replicas in step: combines flat gradients before each optimizer step and,
/// when each rank steps only its shard of the parameters, gathers the shards afterwards.
pub trait GradReducer {
    /// Replaces `grad` with the mean over replicas.
    fn all_reduce_mean(&mut self, grad: &mut Tensor);
    /// The mean of `x` over replicas (e.g. a token count that normalises a loss, so that the
    /// mean of the replicas' gradients is the gradient of the whole batch's token mean).
    fn mean_scalar(&mut self, x: f64) -> f64 {
        x
    }
    /// After `opt` stepped its shard: make every replica's flat parameters whole again.
    fn gather_params(&mut self, _opt: &FlatAdamW) {}
}

/// The single-process reducer: leaves gradients and parameters as they are.
pub struct NoReduce;

impl GradReducer for NoReduce {
    fn all_reduce_mean(&mut self, _grad: &mut Tensor) {}
}

/// Data parallelism over a [`Collective`]: mean-all-reduces flat gradients and all-gathers the
/// parameter shards that each rank's optimizer stepped (ZeRO-1).
pub struct DataParallel {
    pub coll: Box<dyn Collective>,
}

impl GradReducer for DataParallel {
    fn all_reduce_mean(&mut self, grad: &mut Tensor) {
        if self.coll.world() == 1 {
            return;
        }
        self.coll
            .all_reduce_sum_tensor(grad)
            .unwrap_or_else(|e| panic!("learner rank {}: gradient all-reduce failed: {e}", self.coll.rank()));
        let w = self.coll.world() as f64;
        tch::no_grad(|| {
            let _ = grad.g_div_scalar_(w);
        });
    }

    fn mean_scalar(&mut self, x: f64) -> f64 {
        if self.coll.world() == 1 {
            return x;
        }
        let t = Tensor::from_slice(&[x]);
        self.coll
            .all_reduce_sum_tensor(&t)
            .unwrap_or_else(|e| panic!("learner rank {}: all-reduce of a scalar failed: {e}", self.coll.rank()));
        t.double_value(&[0]) / self.coll.world() as f64
    }

    fn gather_params(&mut self, opt: &FlatAdamW) {
        if self.coll.world() == 1 {
            return;
        }
        let counts = opt.shard_counts(self.coll.world());
        self.coll
            .all_gather_tensor(opt.flat(), &counts)
            .unwrap_or_else(|e| panic!("learner rank {}: parameter all-gather failed: {e}", self.coll.rank()));
    }
}
