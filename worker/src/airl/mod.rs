//! The AIRL core (design §1): synthetic expert data and corruptions, the token-level reward
//! model, the losses and advantages, and one training iteration (the optimiser and data
//! parallelism it uses are in [`crate::train`]).

pub mod losses;
pub mod corrupt;
pub mod synth;
pub mod reward;
pub mod iteration;
pub mod metrics;
pub mod localize;
