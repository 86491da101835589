//! A reader for GGUF v2/v3 files (the llama.cpp format): metadata, tensor directory, and
//! dequantisation of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and the K-quants Q4_K, Q5_K
//! and Q6_K to `f32`.
//!
//! Block layouts follow ggml's `ggml-common.h` (32 values per block; 256 per K-quant super-block,
//! with 6-bit sub-block scales and mins packed into 12 bytes for Q4_K / Q5_K and signed 8-bit
//! scales for Q6_K). Every type is tested against the `gguf` Python package's numpy reference
//! (`worker/tests/fixtures/gguf_blocks.json`, made by `scripts/make_gguf_fixtures.py`).
//! Shapes are returned in PyTorch order (outermost first), i.e. GGUF's `ne` reversed.

use half::{bf16, f16};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

/// Errors reading a GGUF file; each names the file and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a GGUF file (magic {magic:?}, expected \"GGUF\")")]
    Magic { path: PathBuf, magic: [u8; 4] },
    #[error("{path}: GGUF version {version} is not supported (expected 2 or 3)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path}: truncated or corrupt at byte {offset}: {what}")]
    Corrupt { path: PathBuf, offset: usize, what: String },
    #[error("{path}: metadata key `{key}`: {what}")]
    Metadata { path: PathBuf, key: String, what: String },
    #[error("{path}: tensor `{name}` has ggml type {ggml_type}, which this reader does not dequantise (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)")]
    UnsupportedType { path: PathBuf, name: String, ggml_type: u32 },
    #[error("{path}: no tensor named `{name}`")]
    MissingTensor { path: PathBuf, name: String },
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is any integer type with a non-negative value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    /// The value as a float, if it is any numeric type.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
}

/// One tensor's directory entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// PyTorch order: outermost dimension first.
    pub shape: Vec<usize>,
    pub ggml_type: u32,
    /// Byte offset of the data from the start of the file.
    pub offset: usize,
}

/// ggml type ids (ggml.h `enum ggml_type`).
pub mod ggml_type {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q5_0: u32 = 6;
    pub const Q5_1: u32 = 7;
    pub const Q8_0: u32 = 8;
    pub const Q4_K: u32 = 12;
    pub const Q5_K: u32 = 13;
    pub const Q6_K: u32 = 14;
    pub const BF16: u32 = 30;
}

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// (values per block, bytes per block) of a supported ggml type.
fn block_layout(t: u32) -> Option<(usize, usize)> {
    use ggml_type::*;
    Some(match t {
        F32 => (1, 4),
        F16 | BF16 => (1, 2),
        Q4_0 => (32, 18),
        Q4_1 => (32, 20),
        Q5_0 => (32, 22),
        Q5_1 => (32, 24),
        Q8_0 => (32, 34),
        Q4_K => (QK_K, 144),
        Q5_K => (QK_K, 176),
        Q6_K => (QK_K, 210),
        _ => return None,
    })
}

/// An open, memory-mapped GGUF file.
pub struct Gguf {
    path: PathBuf,
    mmap: Mmap,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
}

struct Cursor<'a> {
    path: &'a Path,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], GgufError> {
        if self.pos.checked_add(n).is_none_or(|end| end > self.buf.len()) {
            return Err(GgufError::Corrupt {
                path: self.path.to_path_buf(),
                offset: self.pos,
                what: format!("{what}: need {n} bytes, file has {}", self.buf.len() - self.pos),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.take(4, "u32")?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.take(8, "u64")?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()? as usize;
        let start = self.pos;
        let bytes = self.take(n, "string")?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::Corrupt {
            path: self.path.to_path_buf(),
            offset: start,
            what: "string is not UTF-8".into(),
        })
    }
    fn value(&mut self, ty: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.take(1, "u8")?[0]),
            1 => Value::I8(self.take(1, "i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.take(2, "u16")?.try_into().unwrap())),
            3 => Value::I16(i16::from_le_bytes(self.take(2, "i16")?.try_into().unwrap())),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.take(1, "bool")?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()? as usize;
                let mut items = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    items.push(self.value(inner)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => {
                return Err(GgufError::Corrupt {
                    path: self.path.to_path_buf(),
                    offset: self.pos,
                    what: format!("unknown metadata value type {other}"),
                })
            }
        })
    }
}

impl Gguf {
    /// Opens and parses the header and tensor directory of `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io { path: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the file is opened read-only and not modified while mapped.
        let mmap = unsafe { Mmap::map(&file) }.map_err(io)?;
        let mut c = Cursor {
            path: &path,
            buf: &mmap,
            pos: 0,
        };
        let magic: [u8; 4] = c.take(4, "magic")?.try_into().unwrap();
        if &magic != b"GGUF" {
            return Err(GgufError::Magic { path, magic });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version { path, version });
        }
        let n_tensors = c.u64()? as usize;
        let n_kv = c.u64()? as usize;
        // Each metadata entry takes at least 12 bytes and each tensor entry at least 24: counts
        // the file cannot hold are corruption, found before anything is allocated from them.
        let left = mmap.len().saturating_sub(c.pos);
        if n_kv > left / 12 || n_tensors > left / 24 {
            return Err(GgufError::Corrupt {
                path: path.clone(),
                offset: 8,
                what: format!("{n_kv} metadata entries and {n_tensors} tensors cannot fit in the {left} bytes that follow"),
            });
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty)?;
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()? as usize;
            if n_dims > 4 {
                return Err(GgufError::Corrupt {
                    path: path.clone(),
                    offset: c.pos,
                    what: format!("tensor `{name}` has {n_dims} dimensions (GGUF allows at most 4)"),
                });
            }
            let mut ne = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ne.push(c.u64()? as usize);
            }
            let ggml_type = c.u32()?;
            let offset = c.u64()? as usize;
            ne.reverse();
            tensors.push(TensorInfo {
                name,
                shape: ne,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32) as usize;
        let data_start = c.pos.div_ceil(alignment) * alignment;
        for t in &mut tensors {
            t.offset += data_start;
        }
        Ok(Gguf {
            path,
            mmap,
            version,
            metadata,
            tensors,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta_err(&self, key: &str, what: impl Into<String>) -> GgufError {
        GgufError::Metadata {
            path: self.path.clone(),
            key: key.into(),
            what: what.into(),
        }
    }

    /// A required metadata value.
    pub fn get(&self, key: &str) -> Result<&Value, GgufError> {
        self.metadata.get(key).ok_or_else(|| self.meta_err(key, "missing"))
    }

    /// A required unsigned-integer metadata value.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.get(key)?.as_u64().ok_or_else(|| self.meta_err(key, "expected an unsigned integer"))
    }

    /// A required numeric metadata value.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.get(key)?.as_f64().ok_or_else(|| self.meta_err(key, "expected a number"))
    }

    /// A required string metadata value.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        match self.get(key)? {
            Value::String(s) => Ok(s),
            _ => Err(self.meta_err(key, "expected a string")),
        }
    }

    /// A required array-of-strings metadata value.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(self.meta_err(key, "expected an array of strings")),
                })
                .collect(),
            _ => Err(self.meta_err(key, "expected an array")),
        }
    }

    /// A required array-of-integers metadata value.
    pub fn get_ints(&self, key: &str) -> Result<Vec<i64>, GgufError> {
        match self.get(key)? {
            Value::Array(items) => items
                .iter()
                .map(|v| match *v {
                    Value::I32(x) => Ok(x as i64),
                    Value::I64(x) => Ok(x),
                    _ => v.as_u64().map(|x| x as i64).ok_or_else(|| self.meta_err(key, "expected integers")),
                })
                .collect(),
            _ => Err(self.meta_err(key, "expected an array")),
        }
    }

    /// The directory entry of tensor `name`.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.tensors.iter().find(|t| t.name == name).ok_or_else(|| GgufError::MissingTensor {
            path: self.path.clone(),
            name: name.into(),
        })
    }

    /// Dequantises tensor `info` to `f32`, row-major in `info.shape`.
    pub fn dequantize(&self, info: &TensorInfo) -> Result<Vec<f32>, GgufError> {
        let (per_block, block_bytes) = block_layout(info.ggml_type).ok_or_else(|| GgufError::UnsupportedType {
            path: self.path.clone(),
            name: info.name.clone(),
            ggml_type: info.ggml_type,
        })?;
        let n = info
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= self.mmap.len().saturating_mul(8))
            .ok_or_else(|| GgufError::Corrupt {
                path: self.path.clone(),
                offset: info.offset,
                what: format!("tensor `{}` has shape {:?}, more values than the file can hold", info.name, info.shape),
            })?;
        if n % per_block != 0 {
            return Err(GgufError::Corrupt {
                path: self.path.clone(),
                offset: info.offset,
                what: format!("tensor `{}` has {n} values, not a multiple of the block size {per_block}", info.name),
            });
        }
        let len = n / per_block * block_bytes;
        let mut c = Cursor {
            path: &self.path,
            buf: &self.mmap,
            pos: info.offset,
        };
        let data = c.take(len, &format!("data of tensor `{}`", info.name))?;
        Ok(dequantize_blocks(info.ggml_type, data, n))
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantises `n` values of ggml type `t` stored in `data` (whose length matches).
pub fn dequantize_blocks(t: u32, data: &[u8], n: usize) -> Vec<f32> {
    use ggml_type::*;
    let mut out = Vec::with_capacity(n);
    match t {
        F32 => out.extend(data.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()))),
        F16 => out.extend(data.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())),
        BF16 => out.extend(data.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        Q4_0 => {
            for b in data.chunks_exact(18) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|q| ((q & 0x0f) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        Q4_1 => {
            for b in data.chunks_exact(20) {
                let (d, m) = (f16_at(b, 0), f16_at(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|q| (q >> 4) as f32 * d + m));
            }
        }
        Q5_0 | Q5_1 => {
            let (head, stride) = if t == Q5_0 { (2, 22) } else { (4, 24) };
            for b in data.chunks_exact(stride) {
                let d = f16_at(b, 0);
                let m = if t == Q5_1 { f16_at(b, 2) } else { 0.0 };
                let qh = u32::from_le_bytes(b[head..head + 4].try_into().unwrap());
                let qs = &b[head + 4..head + 20];
                let mut lo = [0f32; 16];
                let mut hi = [0f32; 16];
                for j in 0..16 {
                    let xh0 = ((qh >> j) & 1) << 4;
                    let xh1 = (qh >> (j + 12)) & 0x10;
                    let x0 = (qs[j] as u32 & 0x0f) | xh0;
                    let x1 = (qs[j] as u32 >> 4) | xh1;
                    if t == Q5_0 {
                        lo[j] = (x0 as i32 - 16) as f32 * d;
                        hi[j] = (x1 as i32 - 16) as f32 * d;
                    } else {
                        lo[j] = x0 as f32 * d + m;
                        hi[j] = x1 as f32 * d + m;
                    }
                }
                out.extend_from_slice(&lo);
                out.extend_from_slice(&hi);
            }
        }
        Q8_0 => {
            for b in data.chunks_exact(34) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        Q4_K | Q5_K => {
            let stride = if t == Q4_K { 144 } else { 176 };
            for b in data.chunks_exact(stride) {
                let (d, dmin) = (f16_at(b, 0), f16_at(b, 2));
                let scales = &b[4..16];
                let (qh, qs) = if t == Q5_K { (&b[16..48], &b[48..176]) } else { (&b[0..0], &b[16..144]) };
                // Four groups of 64 values: 32 low nibbles then 32 high nibbles of 32 bytes, each
                // half with its own 6-bit scale and min; Q5_K adds one high bit per value from qh.
                for g in 0..4 {
                    let q = &qs[g * 32..g * 32 + 32];
                    for half in 0..2 {
                        let (sc, m) = scale_min_k4(2 * g + half, scales);
                        let (dl, ml) = (d * sc as f32, dmin * m as f32);
                        let bit = 1u8 << (2 * g + half);
                        out.extend((0..32).map(|l| {
                            let lo = if half == 0 { q[l] & 0x0f } else { q[l] >> 4 };
                            let hi = if t == Q5_K && qh[l] & bit != 0 { 16 } else { 0 };
                            dl * (lo + hi) as f32 - ml
                        }));
                    }
                }
            }
        }
        Q6_K => {
            for b in data.chunks_exact(210) {
                let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
                let d = f16_at(b, 208);
                // Two halves of 128 values; each value has 4 low bits in ql and 2 high bits in qh,
                // and a signed 8-bit scale per 16 values.
                for n in 0..2 {
                    let (ql, qh, sc) = (&ql[n * 64..n * 64 + 64], &qh[n * 32..n * 32 + 32], &sc[n * 8..n * 8 + 8]);
                    let mut y = [0f32; 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = |lo: u8, shift: u32| ((lo as i32) | ((((qh[l] >> shift) & 3) as i32) << 4)) - 32;
                        let s = |k: usize| d * (sc[is + k] as i8) as f32;
                        y[l] = s(0) * q(ql[l] & 0x0f, 0) as f32;
                        y[l + 32] = s(2) * q(ql[l + 32] & 0x0f, 2) as f32;
                        y[l + 64] = s(4) * q(ql[l] >> 4, 4) as f32;
                        y[l + 96] = s(6) * q(ql[l + 32] >> 4, 6) as f32;
                    }
                    out.extend_from_slice(&y);
                }
            }
        }
        _ => unreachable!("block_layout admitted type {t}"),
    }
    out
}

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K super-block, packed in 12
/// bytes: sub-blocks 0-3 in the low 6 bits of bytes 0-3 / 4-7, sub-blocks 4-7 split between the
/// nibbles of bytes 8-11 and the top 2 bits of bytes 0-7.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_block_dequantises_low_nibbles_first() {
        // d = 0.5, m = -1.0; qs[j] = (j+1) << 4 | j  → low nibbles 0..15, high nibbles 1..16 (mod 16)
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        b.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            b.push((((j + 1) & 0x0f) << 4) | j);
        }
        let v = dequantize_blocks(ggml_type::Q4_1, &b, 32);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[15], 15.0 * 0.5 - 1.0);
        assert_eq!(v[16], 1.0 * 0.5 - 1.0);
        assert_eq!(v[31], -1.0); // (15 + 1) & 0xf = 0
    }

    #[test]
    fn q8_0_and_q4_0_blocks() {
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(0.25).to_le_bytes());
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let v = dequantize_blocks(ggml_type::Q8_0, &b, 32);
        assert_eq!(v[0], -4.0);
        assert_eq!(v[31], 15.0 * 0.25);
        let mut b = Vec::new();
        b.extend_from_slice(&f16::from_f32(2.0).to_le_bytes());
        b.extend(std::iter::repeat_n(0xf0u8, 16));
        let v = dequantize_blocks(ggml_type::Q4_0, &b, 32);
        assert_eq!(v[0], -16.0);
        assert_eq!(v[16], 14.0);
    }
}
