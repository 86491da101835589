//! Host memory: the allocator settings a learner needs, and the process's peak memory and page
//! faults for the metrics.
//!
//! A training step allocates and frees tensors of hundreds of MB (one micro-batch's logits over
//! SmolLM2's 49,152-token vocabulary are 400 MB in fp32). glibc serves every allocation above
//! its mmap threshold (at most 32 MB) with a fresh `mmap` and returns it with `munmap` when freed,
//! so each step touches every page of those buffers anew: on a 2-core machine the learner spent
//! about half its time in the kernel with ~100k minor page faults per second. [`tune_allocator`]
//! makes glibc serve blocks up to 1.5 GB from its heap and keep freed memory for reuse (no
//! trimming, one arena), as PyTorch users get from jemalloc or tcmalloc; only larger blocks are
//! mapped and returned when freed. The price is that the process keeps its peak heap until it
//! exits, which for a long-lived worker is what it needs anyway.

/// Makes glibc reuse freed memory instead of unmapping it (see the module docs). Set
/// `AIRLIFT_MALLOC=system` to keep glibc's defaults, `AIRLIFT_MMAP_THRESHOLD_MB` (default 1536,
/// at most 2047) for the size above which blocks are mapped and unmapped. A no-op on other C
/// libraries.
pub fn tune_allocator() {
    if std::env::var("AIRLIFT_MALLOC").is_ok_and(|v| v == "system") {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the worker starts
    // any threads of its own.
    unsafe {
        // Blocks below the threshold come from the heap and are reused; larger ones (rare: a
        // long packed batch's attention scores) are mapped and returned to the system when
        // freed, so one such step does not grow the heap for good. With `M_MMAP_MAX = 0` (all
        // blocks from the heap) a Qwen2.5-0.5B learner sat at 14.0 GB for 125 reward warm-start
        // steps, then reached 21 GB within one step and was OOM-killed. At 512 MB its reward's
        // 0.9 GB optimizer temporaries were mapped afresh every step (120k page faults a
        // second, 17% of its time in the kernel, 20 s a step against 13 s).
        let mb = std::env::var("AIRLIFT_MMAP_THRESHOLD_MB")
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(1536);
        libc::mallopt(libc::M_MMAP_THRESHOLD, mb.clamp(1, 2047) << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        // Grow the heap in 256 MB steps rather than one page range per request.
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        // One arena: with libtorch's threads each on an arena of its own and nothing ever
        // trimmed, freed blocks of one arena could not serve another's requests. A Qwen2.5-0.5B
        // learner (configs/gsm8k-qwen-coder.toml) grew from 13.6 to 21 GB in a few reward
        // warm-start steps and was OOM-killed; with one arena it stayed at 14.0 GB, 13 s a step.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Resource usage of this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Peak resident set, MB.
    pub peak_rss_mb: f64,
    /// Minor page faults so far (a page touched for the first time, or again after an unmap).
    pub minor_faults: u64,
}

/// This process's resident set now, MB (0 where `/proc/self/statm` is unavailable).
pub fn rss_now_mb() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    pages * page / (1024.0 * 1024.0)
}

impl Usage {
    /// The current values (zeros where `getrusage` is unavailable).
    pub fn now() -> Usage {
        #[cfg(unix)]
        {
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: `ru` is a valid out-pointer for getrusage.
            if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } == 0 {
                // Linux reports ru_maxrss in KB.
                return Usage {
                    peak_rss_mb: ru.ru_maxrss as f64 / 1024.0,
                    minor_faults: ru.ru_minflt as u64,
                };
            }
        }
        Usage::default()
    }
}
