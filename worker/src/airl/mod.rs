//! The AIRL core (design §1): synthetic expert data and corruptions, the token-level reward
//! model, the losses and advantages, the flat-buffer optimiser, and one training iteration.

pub mod losses;
pub mod corrupt;
pub mod synth;
pub mod optim;
pub mod reward;
pub mod iteration;
pub mod metrics;
pub mod localize;
