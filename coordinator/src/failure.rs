//! The one place that decides whether a failure is worth a retry. A learner restart (`--local`)
//! reloads the newest checkpoint and runs again: that helps when a process died or a peer
//! vanished, and cannot help when the same write will fail again — a full disk, a quota, a
//! read-only file system — so those end the run at once with the reason, instead of spending
//! `run.max_restarts` restarts on it. (Bad input and config errors are refused before a run
//! starts, or reported as a worker's `Fatal`, which already ends it.)

/// Why `error` would repeat on a restart, if it would.
pub fn permanent(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    if e.contains("no space left on device") || e.contains("os error 28") {
        Some("the disk is full (ENOSPC)")
    } else if e.contains("disk quota exceeded") || e.contains("os error 122") {
        Some("the disk quota is exhausted (EDQUOT)")
    } else if e.contains("read-only file system") || e.contains("os error 30") {
        Some("the file system is read-only (EROFS)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::permanent;

    #[test]
    fn a_full_disk_is_permanent_and_a_lost_peer_is_not() {
        assert!(permanent("writing runs/x/checkpoints/step-000002/rank-00000-of-00001.safetensors: No space left on device (os error 28)").is_some());
        assert!(permanent("Disk quota exceeded (os error 122)").is_some());
        assert!(permanent("learner 3 lost (its stream closed)").is_none());
        assert!(permanent("collective: connection reset by peer").is_none());
    }
}
