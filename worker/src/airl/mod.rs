//! The AIRL core (design §1): synthetic expert data and corruptions, the token-level reward
//! model, the losses and advantages, and one training iteration (the optimiser and data
//! parallelism it uses are in [`crate::train`]).

pub mod corrupt;
pub mod iteration;
pub mod localize;
pub mod losses;
pub mod metrics;
pub mod reward;
pub mod synth;
