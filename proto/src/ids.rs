//! Typed ids that cross module and process boundaries, so that a task id is never mistaken for a
//! worker id or a policy version.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A worker process registered with the coordinator.
    WorkerId, u64, "worker-"
);
id_type!(
    /// One unit of scheduled work (a rollout or learner task).
    TaskId, u64, "task-"
);
id_type!(
    /// The version of the policy weights; incremented by every policy update.
    PolicyVersion, u64, "v"
);
id_type!(
    /// The index of a prompt in the run's dataset.
    PromptId, u64, "prompt-"
);

impl PolicyVersion {
    /// The version that follows this one.
    pub fn next(self) -> Self {
        PolicyVersion(self.0 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_display_with_their_kind() {
        assert_eq!(WorkerId(3).to_string(), "worker-3");
        assert_eq!(PolicyVersion(7).next().to_string(), "v8");
    }
}
