//! The flat parameter layout: every trainable variable of a var store, sorted by name, laid end to
//! end in one fp32 vector. The optimizer ([`super::optim::FlatAdamW`]), data parallelism (each
//! rank's shard of it), fingerprints and weight publishing all use this one order, so a value's
//! offset means the same everywhere and on every rank.

use tch::nn::VarStore;
use tch::Tensor;

pub use airlift_proto::checkpoint::FlatLayout;

/// The trainable variables of `vs`, sorted by name (the flat order).
pub fn trainable(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The layout of `vs`'s trainable variables.
pub fn layout_of(vs: &VarStore) -> FlatLayout {
    let vars = trainable(vs);
    let mut offsets = Vec::with_capacity(vars.len());
    let mut total = 0;
    for (_, t) in &vars {
        offsets.push(total);
        total += t.numel() as i64;
    }
    FlatLayout {
        names: vars.iter().map(|(n, _)| n.clone()).collect(),
        shapes: vars.iter().map(|(_, t)| t.size()).collect(),
        offsets,
        total,
    }
}

/// Flat fp32 values of the trainable variables of `vs`, in flat order.
pub fn values(vs: &VarStore) -> Vec<f32> {
    let mut out = Vec::new();
    for (_, t) in trainable(vs) {
        out.extend(Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).reshape([-1])).expect("f32"));
    }
    out
}

/// Copies flat values (flat order) into the trainable variables of `vs`, converting to their
/// kinds. Fails, changing nothing, when the count does not match.
pub fn load_values(vs: &VarStore, flat: &[f32]) -> Result<(), String> {
    let vars = trainable(vs);
    let total: usize = vars.iter().map(|(_, t)| t.numel()).sum();
    if total != flat.len() {
        return Err(format!("weights: received {} values, the model has {total} parameters", flat.len()));
    }
    let mut off = 0;
    tch::no_grad(|| {
        for (_, t) in vars {
            let n = t.numel();
            let src = Tensor::from_slice(&flat[off..off + n]).view(t.size().as_slice());
            t.shallow_clone().copy_(&src.to_kind(t.kind()).to_device(t.device()));
            off += n;
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optim::{AdamWConfig, FlatAdamW};
    use tch::{nn::Init, Device};

    #[test]
    fn layout_orders_by_name_and_shards_cover_the_vector_as_the_optimizer_does() {
        let vs = VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = (&root / "b").var("weight", &[3, 4], Init::Const(1.0));
        let _ = (&root / "a").var("bias", &[5], Init::Const(2.0));
        let _ = root.var("c", &[2], Init::Const(3.0));
        let l = layout_of(&vs);
        assert_eq!(l.names, ["a.bias", "b.weight", "c"]);
        assert_eq!(l.offsets, [0, 5, 17]);
        assert_eq!(l.total, 19);
        assert_eq!(values(&vs)[..6], [2.0, 2.0, 2.0, 2.0, 2.0, 1.0]);
        for world in 1..=4 {
            let mut next = 0;
            for rank in 0..world {
                let (lo, hi) = l.shard(rank, world);
                assert_eq!(lo, next);
                next = hi;
                let opt = FlatAdamW::sharded(&vs, AdamWConfig::default(), rank, world);
                assert_eq!(opt.shard(), (lo, hi), "rank {rank} of {world}");
            }
            assert_eq!(next, l.total);
        }
        assert!(load_values(&vs, &[0.0; 3]).unwrap_err().contains("received 3 values, the model has 19"));
    }
}
