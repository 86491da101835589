//! The NCCL backend: collectives between CUDA learners through `cudarc`'s NCCL bindings.
//!
//! libnccl is loaded at run time (cudarc's `dynamic-loading`), so CPU-only builds and hosts need
//! no CUDA: [`unique_id`] and [`Nccl::init`] return [`NcclError`] there instead of failing to
//! link. The `torch==2.11.0` wheel brings `libnccl.so.2` (package `nvidia-nccl-cu13`); libtorch's
//! CUDA library loads it, and otherwise `LD_LIBRARY_PATH` must name its folder.
//!
//! One process per GPU: a learner uses `cuda:0` of what `CUDA_VISIBLE_DEVICES` shows it, and
//! NCCL takes the calling thread's current device, which is device 0 unless something changed it.
//! Operations are enqueued on the legacy default stream (the null stream), the stream libtorch
//! uses unless told otherwise, so they are ordered after the kernels that produced the gradients
//! and before the ones that read the result, without extra synchronisation.
//!
//! Segments of unequal size (a flat buffer not divisible by the rank count) are handled with one
//! NCCL call per segment inside a group: all-gather is a broadcast of segment r from rank r,
//! reduce-scatter a reduce of segment r to rank r.

use super::{offsets, Collective};
use cudarc::nccl::{result, sys};
use std::ffi::c_void;
use std::io;
use tch::{Device, Kind, Tensor};

/// Bytes of an NCCL unique id.
pub const UNIQUE_ID_BYTES: usize = 128;

/// Why an NCCL call could not be made or failed.
#[derive(Debug, thiserror::Error)]
pub enum NcclError {
    #[error("NCCL is not available on this host: cudarc could not load `libnccl.so`. {}", missing_library_hint())]
    NoLibrary,
    #[error("NCCL needs a CUDA device, and libtorch sees none on this host")]
    NoDevice,
    #[error("NCCL unique id: expected {UNIQUE_ID_BYTES} bytes, got {0}")]
    BadId(usize),
    #[error("NCCL {call} failed: {what}")]
    Call { call: &'static str, what: String },
    #[error("NCCL collectives take a contiguous f32 tensor on the communicator's CUDA device, got {0}")]
    BadTensor(String),
}

fn check(call: &'static str, r: Result<result::NcclStatus, result::NcclError>) -> Result<(), NcclError> {
    r.map(|_| ()).map_err(|e| {
        // SAFETY: ncclGetErrorString returns a static NUL-terminated string for any result code.
        let what = unsafe { std::ffi::CStr::from_ptr(sys::ncclGetErrorString(e.0)) }.to_string_lossy().into_owned();
        NcclError::Call {
            call,
            what: format!("{what} ({:?})", e.0),
        }
    })
}

/// What to do about a missing `libnccl.so`: cudarc looks for that name (and a few others), while
/// NCCL installs as `libnccl.so.2` and only -dev packages add the plain link.
fn missing_library_hint() -> String {
    let dirs = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
    for dir in dirs.split(':').filter(|d| !d.is_empty()) {
        let p = std::path::Path::new(dir);
        if p.join("libnccl.so.2").is_file() && !p.join("libnccl.so").exists() {
            return format!("{dir}/libnccl.so.2 exists but has no `libnccl.so` link beside it: `ln -s libnccl.so.2 {dir}/libnccl.so` (or link it from any folder on LD_LIBRARY_PATH)");
        }
    }
    "Put the folder of libnccl.so on LD_LIBRARY_PATH; the torch wheel's copy is site-packages/nvidia/nccl/lib/libnccl.so.2, which needs a `libnccl.so` link beside it".into()
}

/// Whether libnccl can be loaded in this process.
pub fn available() -> bool {
    // SAFETY: only tries to dlopen the library names cudarc knows.
    unsafe { sys::is_culib_present() }
}

/// The loaded NCCL's version as `major.minor.patch`.
pub fn version() -> Result<String, NcclError> {
    if !available() {
        return Err(NcclError::NoLibrary);
    }
    let v = result::get_nccl_version().map_err(|e| NcclError::Call {
        call: "ncclGetVersion",
        what: format!("{:?}", e.0),
    })?;
    Ok(format!("{}.{}.{}", v / 10000, (v % 10000) / 100, v % 100))
}

/// A new NCCL unique id (rank 0 creates it; it also starts NCCL's bootstrap listener in this
/// process, so the process that creates it must stay up while the others join).
pub fn unique_id() -> Result<Vec<u8>, NcclError> {
    if !available() {
        return Err(NcclError::NoLibrary);
    }
    let mut id = std::mem::MaybeUninit::<sys::ncclUniqueId>::uninit();
    // SAFETY: ncclGetUniqueId fills the whole id on success; it is read only then.
    let id = unsafe {
        check("ncclGetUniqueId", sys::ncclGetUniqueId(id.as_mut_ptr()).result())?;
        id.assume_init()
    };
    Ok(id.internal.iter().map(|&c| c as u8).collect())
}

/// One rank's NCCL communicator.
pub struct Nccl {
    comm: sys::ncclComm_t,
    rank: usize,
    world: usize,
    device: Device,
}

// SAFETY: an NCCL communicator may be used from any one thread at a time; `Nccl` is only used
// through `&mut self`, so two threads never call into the same communicator at once.
unsafe impl Send for Nccl {}

impl Nccl {
    /// Joins the communicator of `world` ranks named by rank 0's `id`; blocks until every rank
    /// has joined. Uses CUDA device 0.
    pub fn init(rank: usize, world: usize, id: &[u8]) -> Result<Self, NcclError> {
        if !available() {
            return Err(NcclError::NoLibrary);
        }
        if !tch::Cuda::is_available() {
            return Err(NcclError::NoDevice);
        }
        if id.len() != UNIQUE_ID_BYTES {
            return Err(NcclError::BadId(id.len()));
        }
        let mut uid = sys::ncclUniqueId {
            internal: [0; UNIQUE_ID_BYTES],
        };
        for (d, &b) in uid.internal.iter_mut().zip(id) {
            *d = b as std::ffi::c_char;
        }
        // Make sure libtorch has created device 0's context before NCCL looks for it.
        let device = Device::Cuda(0);
        let _ = Tensor::zeros([1], (Kind::Float, device));
        let mut comm = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id is a full ncclUniqueId.
        check("ncclCommInitRank", unsafe { result::comm_init_rank(&mut comm, world as i32, uid, rank as i32) })?;
        Ok(Nccl { comm, rank, world, device })
    }

    fn stream() -> sys::cudaStream_t {
        std::ptr::null_mut()
    }

    fn check_tensor(&self, t: &Tensor) -> Result<(), NcclError> {
        if t.device() != self.device || t.kind() != Kind::Float || !t.is_contiguous() {
            return Err(NcclError::BadTensor(format!(
                "{:?} {:?} contiguous={}",
                t.kind(),
                t.device(),
                t.is_contiguous()
            )));
        }
        Ok(())
    }

    fn ptr(t: &Tensor, offset: usize) -> *mut c_void {
        // SAFETY (for the callers): the offset stays inside the tensor, checked by the callers.
        unsafe { (t.data_ptr() as *mut f32).add(offset) as *mut c_void }
    }

    /// In place on a contiguous f32 CUDA tensor: the element-wise sum over ranks.
    pub fn all_reduce_sum_device(&mut self, t: &Tensor) -> Result<(), NcclError> {
        self.check_tensor(t)?;
        let p = Self::ptr(t, 0);
        // SAFETY: in-place all-reduce over the tensor's own numel() values.
        check("ncclAllReduce", unsafe {
            result::all_reduce(
                p,
                p,
                t.numel(),
                sys::ncclDataType_t::ncclFloat32,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                Self::stream(),
            )
        })
    }

    /// In place: segment r (sizes `counts`) comes from rank r.
    pub fn all_gather_device(&mut self, t: &Tensor, counts: &[usize]) -> Result<(), NcclError> {
        self.check_segments(t, counts)?;
        let off = offsets(counts);
        self.grouped("ncclBroadcast (all-gather)", |comm, r| {
            let p = Self::ptr(t, off[r]);
            // SAFETY: segment r lies inside the tensor (check_segments).
            unsafe { result::broadcast(p, p, counts[r], sys::ncclDataType_t::ncclFloat32, r as i32, comm, Self::stream()) }
        })
    }

    /// In place: rank r ends with the sum over ranks of segment r (other segments unchanged).
    pub fn reduce_scatter_sum_device(&mut self, t: &Tensor, counts: &[usize]) -> Result<(), NcclError> {
        self.check_segments(t, counts)?;
        let off = offsets(counts);
        self.grouped("ncclReduce (reduce-scatter)", |comm, r| {
            let p = Self::ptr(t, off[r]);
            // SAFETY: segment r lies inside the tensor (check_segments).
            unsafe {
                result::reduce(
                    p,
                    p,
                    counts[r],
                    sys::ncclDataType_t::ncclFloat32,
                    sys::ncclRedOp_t::ncclSum,
                    r as i32,
                    comm,
                    Self::stream(),
                )
            }
        })
    }

    /// In place: every rank ends with `root`'s values.
    pub fn broadcast_device(&mut self, t: &Tensor, root: usize) -> Result<(), NcclError> {
        self.check_tensor(t)?;
        let p = Self::ptr(t, 0);
        // SAFETY: in-place broadcast over the tensor's own numel() values.
        check("ncclBroadcast", unsafe {
            result::broadcast(p, p, t.numel(), sys::ncclDataType_t::ncclFloat32, root as i32, self.comm, Self::stream())
        })
    }

    fn check_segments(&self, t: &Tensor, counts: &[usize]) -> Result<(), NcclError> {
        self.check_tensor(t)?;
        if counts.len() != self.world || counts.iter().sum::<usize>() != t.numel() {
            return Err(NcclError::BadTensor(format!(
                "{} segments summing to {} for {} ranks and {} values",
                counts.len(),
                counts.iter().sum::<usize>(),
                self.world,
                t.numel()
            )));
        }
        Ok(())
    }

    /// One call per rank's segment, fused into one NCCL group.
    fn grouped(
        &mut self,
        call: &'static str,
        mut each: impl FnMut(sys::ncclComm_t, usize) -> Result<result::NcclStatus, result::NcclError>,
    ) -> Result<(), NcclError> {
        check("ncclGroupStart", result::group_start())?;
        let mut first_err = Ok(());
        for r in 0..self.world {
            if let Err(e) = check(call, each(self.comm, r)) {
                first_err = Err(e);
                break;
            }
        }
        let end = check("ncclGroupEnd", result::group_end());
        first_err.and(end)
    }

    /// Stages host values through the device for the slice-based [`Collective`] methods.
    fn staged(&mut self, data: &mut [f32], op: impl FnOnce(&mut Self, &Tensor) -> Result<(), NcclError>) -> io::Result<()> {
        let t = Tensor::from_slice(data).to_device(self.device);
        op(self, &t).map_err(io::Error::other)?;
        let host = Vec::<f32>::try_from(t.to_device(Device::Cpu)).map_err(io::Error::other)?;
        data.copy_from_slice(&host);
        Ok(())
    }
}

impl Drop for Nccl {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by ncclCommInitRank and is destroyed once.
        let _ = unsafe { result::comm_destroy(self.comm) };
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> io::Result<()> {
        self.staged(data, |s, t| s.all_reduce_sum_device(t))
    }

    fn all_gather(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()> {
        self.staged(data, |s, t| s.all_gather_device(t, counts))
    }

    fn reduce_scatter_sum(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()> {
        self.staged(data, |s, t| s.reduce_scatter_sum_device(t, counts))
    }

    fn broadcast(&mut self, data: &mut [f32], root: usize) -> io::Result<()> {
        self.staged(data, |s, t| s.broadcast_device(t, root))
    }

    fn all_reduce_sum_tensor(&mut self, t: &Tensor) -> io::Result<()> {
        if self.check_tensor(t).is_ok() {
            return self.all_reduce_sum_device(t).map_err(io::Error::other);
        }
        super::all_reduce_sum_staged(self, t)
    }

    fn all_gather_tensor(&mut self, t: &Tensor, counts: &[usize]) -> io::Result<()> {
        if self.check_tensor(t).is_ok() {
            return self.all_gather_device(t, counts).map_err(io::Error::other);
        }
        super::all_gather_staged(self, t, counts)
    }
}

/// Out of place: `out` receives the element-wise sum over ranks of `t` (same numel). For a
/// one-rank communicator this is a device copy, where the in-place form is a no-op.
pub fn all_reduce_sum_into(c: &mut Nccl, t: &Tensor, out: &Tensor) -> Result<(), NcclError> {
    c.check_tensor(t)?;
    c.check_tensor(out)?;
    if out.numel() != t.numel() {
        return Err(NcclError::BadTensor(format!("output of {} values for an input of {}", out.numel(), t.numel())));
    }
    // SAFETY: both pointers cover numel() f32 values on the communicator's device.
    check("ncclAllReduce", unsafe {
        result::all_reduce(
            Nccl::ptr(t, 0),
            Nccl::ptr(out, 0),
            t.numel(),
            sys::ncclDataType_t::ncclFloat32,
            sys::ncclRedOp_t::ncclSum,
            c.comm,
            Nccl::stream(),
        )
    })
}

/// `worker nccl-check`: loads NCCL, makes a unique id, and with a GPU runs every collective of a
/// one-rank communicator on `values` f32 values of CUDA memory, checking the results; prints one
/// line per collective with its time (the device is synchronised before the clock stops) and
/// the algorithm and bus bandwidth as nccl-tests defines them (bus = algorithm x 2(n-1)/n for
/// all-reduce, x (n-1)/n for all-gather and reduce-scatter, x 1 for broadcast; 0 with one rank,
/// where nothing crosses a link). Errors say what is missing.
pub fn self_check(values: usize) -> Result<(), NcclError> {
    let v = version()?;
    println!("NCCL {v} loaded");
    let t = std::time::Instant::now();
    let id = unique_id()?;
    println!("unique id: {} bytes in {:.1} ms", id.len(), t.elapsed().as_secs_f64() * 1e3);
    println!("{}", crate::cuda::support());
    let t = std::time::Instant::now();
    let mut c = Nccl::init(0, 1, &id)?;
    println!("communicator of 1 rank: {:.1} ms", t.elapsed().as_secs_f64() * 1e3);
    let n = c.world as f64;
    let host: Vec<f32> = (0..values).map(|i| (i % 1000) as f32 * 0.5).collect();
    let x = Tensor::from_slice(&host).to_device(c.device);
    let y = Tensor::zeros([values as i64], (Kind::Float, c.device));
    let want = x.copy();
    let bytes = (values * 4) as f64;
    const ITERS: usize = 20;
    let mut timed = |name: &str, bus_factor: f64, f: &mut dyn FnMut(&mut Nccl) -> Result<(), NcclError>| -> Result<(), NcclError> {
        f(&mut c)?;
        tch::Cuda::synchronize(0);
        let t = std::time::Instant::now();
        for _ in 0..ITERS {
            f(&mut c)?;
        }
        tch::Cuda::synchronize(0);
        let secs = t.elapsed().as_secs_f64() / ITERS as f64;
        let alg = bytes / secs / 1e9;
        println!(
            "{name:<34} {:>6.1} MB: {:>9.3} ms  algbw {:>8.1} GB/s  busbw {:>8.1} GB/s",
            bytes / 1e6,
            secs * 1e3,
            alg,
            alg * bus_factor
        );
        Ok(())
    };
    timed("all-reduce (out of place)", 2.0 * (n - 1.0) / n, &mut |c| all_reduce_sum_into(c, &x, &y))?;
    timed("all-reduce (in place)", 2.0 * (n - 1.0) / n, &mut |c| c.all_reduce_sum_device(&x))?;
    timed("all-gather (grouped bcast)", (n - 1.0) / n, &mut |c| c.all_gather_device(&x, &[values]))?;
    timed("reduce-scatter (grouped)", (n - 1.0) / n, &mut |c| c.reduce_scatter_sum_device(&x, &[values]))?;
    timed("broadcast", 1.0, &mut |c| c.broadcast_device(&x, 0))?;
    let copy = Tensor::zeros([values as i64], (Kind::Float, c.device));
    tch::Cuda::synchronize(0);
    let t = std::time::Instant::now();
    for _ in 0..ITERS {
        copy.shallow_clone().copy_(&x);
    }
    tch::Cuda::synchronize(0);
    let secs = t.elapsed().as_secs_f64() / ITERS as f64;
    println!(
        "{:<34} {:>6.1} MB: {:>9.3} ms  (device memcpy, for scale)",
        "reference: tensor copy",
        bytes / 1e6,
        secs * 1e3
    );
    if !x.equal(&want) || !y.equal(&want) {
        return Err(NcclError::Call {
            call: "check",
            what: "a one-rank collective changed the values".into(),
        });
    }
    println!("values unchanged by one-rank collectives: ok");
    Ok(())
}
