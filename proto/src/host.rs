//! What this host's CPU can do that a run's settings depend on.
//!
//! libtorch multiplies bf16 matrices on the CPU through oneDNN, which needs AVX-512 (natively
//! with AVX512-BF16 or AMX, emulated on plain AVX-512). Without AVX-512 it falls back to a scalar
//! loop: on a 2-core AMD EPYC (Zen 3, AVX2) a 512x576x1536 product ran at 1.0 GFLOP/s in bf16
//! against 78 GFLOP/s in fp32 (torch 2.11, 2026-12-07), and the SFT warm start of
//! `configs/quality.toml` took 4 min a step instead of 17 s in fp32. So a CPU worker asked for bf16
//! on such a CPU computes in fp32 instead (see [`cpu_compute_kind`]), unless
//! [`FORCE_CPU_BF16`]`=1`.

use crate::config::{Device, Dtype, RunConfig};

/// Set to `1` to compute in bf16 on a CPU whatever it supports (benchmarks of the bf16 path).
pub const FORCE_CPU_BF16: &str = "AIRLIFT_CPU_BF16";

/// Why bf16 matrix products are slow on this host's CPU; `None` where they are not (or where
/// this build cannot tell: on other architectures than x86_64 it assumes they are fast).
pub fn cpu_bf16_slow() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512dq");
        if !avx512 {
            return Some("this CPU has no AVX-512, and libtorch's bf16 matrix products fall back to a scalar loop here (about 80x slower than fp32)");
        }
    }
    None
}

/// The CPU flags that choose libtorch's matrix kernels on x86_64 (oneDNN picks AMX, AVX512-BF16,
/// AVX-512 or AVX2 code by them), and so decide a run's arithmetic bit for bit: the same config
/// and seed reproduce a run exactly on CPUs with the same model and flags, and not across them
/// (docs/evaluation.md, twentieth sitting: E31 and E32, same binaries' arithmetic, differed from
/// the first SFT loss on).
const KERNEL_FLAGS: &[&str] = &["avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"];

/// One line naming this host's CPU model and [`KERNEL_FLAGS`] it has, for the workers' logs:
/// `AMD EPYC; avx2 avx512f avx512_bf16`. From `/proc/cpuinfo`; "unknown CPU" where it cannot
/// be read (not Linux).
pub fn cpu_summary() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| cpu_summary_from(&s))
        .unwrap_or_else(|_| "unknown CPU".to_string())
}

/// [`cpu_summary`] of the text of a `/proc/cpuinfo` (its first processor's `model name` and
/// `flags` lines).
pub fn cpu_summary_from(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == name).then(|| v.trim().to_string())
        })
    };
    let model = field("model name").filter(|m| !m.is_empty()).unwrap_or_else(|| "unknown CPU".to_string());
    let flags = field("flags").unwrap_or_default();
    let have: Vec<&str> = KERNEL_FLAGS.iter().copied().filter(|f| flags.split_whitespace().any(|x| x == *f)).collect();
    if have.is_empty() {
        model
    } else {
        format!("{model}; {}", have.join(" "))
    }
}

/// The precision a worker of `cfg` computes in for `dtype` (the value of config key `key`):
/// `dtype`, except bf16 on a CPU worker whose CPU multiplies bf16 slowly ([`cpu_bf16_slow`]),
/// which computes in fp32, and says so in the returned note. `force` is whether
/// [`FORCE_CPU_BF16`] is `1`.
pub fn cpu_compute_kind(cfg: &RunConfig, dtype: Dtype, key: &str, slow: Option<&str>, force: bool) -> (Dtype, Option<String>) {
    if dtype != Dtype::Bf16 || cfg.workers.device != Device::Cpu {
        return (dtype, None);
    }
    match slow {
        None => (Dtype::Bf16, None),
        Some(why) if force => (
            Dtype::Bf16,
            Some(format!("{key} = \"bf16\" on the CPU: {why}; kept in bf16 because {FORCE_CPU_BF16}=1")),
        ),
        Some(why) => (
            Dtype::Fp32,
            Some(format!(
                "{key} = \"bf16\" on the CPU: {why}; this worker computes in fp32 instead (set {FORCE_CPU_BF16}=1 to keep bf16)"
            )),
        ),
    }
}

/// Whether [`FORCE_CPU_BF16`] is set to `1` in this process's environment.
pub fn force_cpu_bf16() -> bool {
    std::env::var(FORCE_CPU_BF16).is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "[model]\npolicy = \"p\"\n";

    fn cfg(device: &str) -> RunConfig {
        RunConfig::from_toml(&format!("{MIN}[workers]\ndevice = \"{device}\"\n")).unwrap()
    }

    #[test]
    fn the_cpu_summary_names_the_model_and_the_kernel_flags() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9554\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 vaes\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: amx_bf16\n";
        assert_eq!(cpu_summary_from(info), "AMD EPYC 9554; avx2 avx512f avx512_bf16");
        // The first processor's lines only, whole flags only (avx512f is not avx512fp16).
        assert_eq!(cpu_summary_from("model name : X\nflags : avx512fp16 avx\n"), "X");
        assert_eq!(cpu_summary_from(""), "unknown CPU");
    }

    #[test]
    fn bf16_on_a_slow_cpu_computes_in_fp32_unless_forced() {
        let (cpu, why) = (cfg("cpu"), Some("no AVX-512"));
        let (d, note) = cpu_compute_kind(&cpu, Dtype::Bf16, "model.train_dtype", why, false);
        assert_eq!(d, Dtype::Fp32);
        let note = note.unwrap();
        assert!(
            note.contains("model.train_dtype") && note.contains("no AVX-512") && note.contains(FORCE_CPU_BF16),
            "{note}"
        );
        let (d, note) = cpu_compute_kind(&cpu, Dtype::Bf16, "model.train_dtype", why, true);
        assert_eq!(d, Dtype::Bf16);
        assert!(note.unwrap().contains("kept in bf16"));
        // A fast CPU, fp32, and CUDA workers: as configured, nothing to say.
        assert_eq!(cpu_compute_kind(&cpu, Dtype::Bf16, "k", None, false), (Dtype::Bf16, None));
        assert_eq!(cpu_compute_kind(&cpu, Dtype::Fp32, "k", why, false), (Dtype::Fp32, None));
        assert_eq!(cpu_compute_kind(&cfg("cuda"), Dtype::Bf16, "k", why, false), (Dtype::Bf16, None));
    }
}
