//! The safetensors format, read through a memory map and written atomically.
//!
//! Layout: an 8-byte little-endian header length `n`, `n` bytes of UTF-8 JSON, then the data. The
//! JSON maps each tensor name to `{"dtype", "shape", "data_offsets": [begin, end]}` (offsets
//! relative to the start of the data) and may hold a `"__metadata__"` map of strings.
//!
//! Every claim of the header is checked before anything is allocated from it: the header fits in
//! the file and is at most [`MAX_HEADER_BYTES`]; each tensor's byte range lies inside the data,
//! matches its shape times its element size (with overflow checks), and overlaps no other tensor.
//! A malformed file is an [`Error::Format`] naming the file and the tensor.
//!
//! # Memory maps
//!
//! [`SafeTensors::open`] maps the file read-only. The engine assumes nobody truncates or rewrites
//! a checkpoint while it is open (the operating system would deliver SIGBUS on a read past a
//! truncated end, or show new bytes). Every file this project writes goes through
//! [`crate::io::write_atomic`], which replaces files by rename and so never changes a mapped
//! file's bytes. [`SafeTensors::from_bytes`] parses an in-memory copy for callers that cannot
//! make that promise.
//!
//! # Byte order
//!
//! Data is little-endian by the format; the loaders reinterpret bytes in place, so the crate
//! supports little-endian hosts only (every x86-64 and common ARM64 system).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;

use crate::{CpuStorage, DType, Error, Result, Tensor};

#[cfg(target_endian = "big")]
compile_error!("safetensors I/O reinterprets little-endian bytes in place: big-endian hosts are not supported");

/// The largest header accepted (the reference implementation uses the same cap).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The element types the format defines with whole-byte elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StDtype {
    Bool,
    U8,
    I8,
    U16,
    I16,
    F16,
    BF16,
    U32,
    I32,
    F32,
    U64,
    I64,
    F64,
    F8E4M3,
    F8E5M2,
}

impl StDtype {
    const ALL: [(StDtype, &'static str); 15] = [
        (StDtype::Bool, "BOOL"),
        (StDtype::U8, "U8"),
        (StDtype::I8, "I8"),
        (StDtype::U16, "U16"),
        (StDtype::I16, "I16"),
        (StDtype::F16, "F16"),
        (StDtype::BF16, "BF16"),
        (StDtype::U32, "U32"),
        (StDtype::I32, "I32"),
        (StDtype::F32, "F32"),
        (StDtype::U64, "U64"),
        (StDtype::I64, "I64"),
        (StDtype::F64, "F64"),
        (StDtype::F8E4M3, "F8_E4M3"),
        (StDtype::F8E5M2, "F8_E5M2"),
    ];

    /// The name the header uses, e.g. `"BF16"`.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(d, _)| *d == self).map(|(_, n)| *n).unwrap_or("?")
    }

    /// Parses a header dtype name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(d, _)| *d)
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            StDtype::Bool | StDtype::U8 | StDtype::I8 | StDtype::F8E4M3 | StDtype::F8E5M2 => 1,
            StDtype::U16 | StDtype::I16 | StDtype::F16 | StDtype::BF16 => 2,
            StDtype::U32 | StDtype::I32 | StDtype::F32 => 4,
            StDtype::U64 | StDtype::I64 | StDtype::F64 => 8,
        }
    }

    /// The engine's dtype with the same bytes, if the engine has one.
    pub fn to_dtype(self) -> Option<DType> {
        Some(match self {
            StDtype::U8 => DType::U8,
            StDtype::F16 => DType::F16,
            StDtype::BF16 => DType::BF16,
            StDtype::U32 => DType::U32,
            StDtype::F32 => DType::F32,
            StDtype::I64 => DType::I64,
            StDtype::F64 => DType::F64,
            _ => return None,
        })
    }

    /// The file dtype of an engine dtype.
    pub fn from_dtype(dtype: DType) -> Self {
        match dtype {
            DType::U8 => StDtype::U8,
            DType::F16 => StDtype::F16,
            DType::BF16 => StDtype::BF16,
            DType::U32 => StDtype::U32,
            DType::F32 => StDtype::F32,
            DType::I64 => StDtype::I64,
            DType::F64 => StDtype::F64,
        }
    }
}

impl std::fmt::Display for StDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor of a file: dtype, shape and its byte range relative to the start of the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorEntry {
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    pub begin: usize,
    pub end: usize,
}

impl TensorEntry {
    /// Number of elements.
    pub fn elem_count(&self) -> usize {
        // Checked at parse time not to overflow.
        self.shape.iter().product()
    }
}

enum Backing {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mapped(m) => m,
            Backing::Owned(v) => v,
        }
    }
}

/// An open safetensors file: the validated header, and the bytes (mapped or owned).
pub struct SafeTensors {
    path: PathBuf,
    backing: Backing,
    data_start: usize,
    entries: BTreeMap<String, TensorEntry>,
    metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl SafeTensors {
    /// Maps and validates `path` (see the module docs for what the map assumes).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let len = file.metadata().map_err(|e| Error::io("reading the size of", path, e))?.len();
        let backing = if len == 0 {
            Backing::Owned(Vec::new())
        } else {
            // SAFETY: a read-only private map. The module docs state the assumption that the file
            // is not truncated or modified while this value lives.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("memory-mapping", path, e))?;
            Backing::Mapped(map)
        };
        Self::parse(path.to_path_buf(), backing)
    }

    /// Parses an in-memory file; `path` is only used in messages.
    pub fn from_bytes(path: impl AsRef<Path>, bytes: Vec<u8>) -> Result<Self> {
        Self::parse(path.as_ref().to_path_buf(), Backing::Owned(bytes))
    }

    fn parse(path: PathBuf, backing: Backing) -> Result<Self> {
        let bytes = backing.bytes();
        let bad = |msg: String| Error::format(&path, msg);
        if bytes.len() < 8 {
            return Err(bad(format!(
                "not a safetensors file: {} bytes, shorter than the 8-byte header length",
                bytes.len()
            )));
        }
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len > MAX_HEADER_BYTES {
            return Err(bad(format!(
                "header claims {header_len} bytes, more than the {MAX_HEADER_BYTES}-byte limit"
            )));
        }
        let data_start = 8 + header_len as usize;
        if data_start > bytes.len() {
            return Err(bad(format!(
                "header claims {header_len} bytes but the file has only {} after the length",
                bytes.len() - 8
            )));
        }
        let header = std::str::from_utf8(&bytes[8..data_start])
            .map_err(|e| bad(format!("header is not UTF-8: {e}")))?;
        let json: serde_json::Value =
            serde_json::from_str(header).map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
        let serde_json::Value::Object(map) = json else {
            return Err(bad("header is not a JSON object".into()));
        };
        let data_len = bytes.len() - data_start;
        let mut entries = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for (name, value) in map {
            if name == "__metadata__" {
                metadata = parse_metadata(&value).map_err(bad)?;
                continue;
            }
            let entry = parse_entry(&name, &value, data_len).map_err(bad)?;
            entries.insert(name, entry);
        }
        check_no_overlap(&entries).map_err(bad)?;
        Ok(Self { path, backing, data_start, entries, metadata })
    }

    /// The file this came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names in sorted order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Every entry, by name.
    pub fn entries(&self) -> &BTreeMap<String, TensorEntry> {
        &self.entries
    }

    /// The `__metadata__` map (empty when absent).
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        &self.metadata
    }

    /// The entry of `name`, or an error naming the tensor and the file.
    pub fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.entries
            .get(name)
            .ok_or_else(|| Error::format(&self.path, format!("no tensor named {name:?}")))
    }

    /// The raw bytes of `name` (no copy).
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let e = self.entry(name)?;
        Ok(&self.backing.bytes()[self.data_start + e.begin..self.data_start + e.end])
    }

    /// `name` as a CPU tensor of its own dtype (one copy out of the map).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let e = self.entry(name)?;
        let dtype = e.dtype.to_dtype().ok_or_else(|| {
            Error::format(&self.path, format!("tensor {name:?} has dtype {}, which the engine does not load", e.dtype))
        })?;
        let raw = self.bytes(name)?;
        let storage = match dtype {
            DType::F64 => CpuStorage::F64(bytemuck::pod_collect_to_vec::<u8, f64>(raw)),
            DType::F32 => CpuStorage::F32(bytemuck::pod_collect_to_vec::<u8, f32>(raw)),
            DType::BF16 => CpuStorage::BF16(bytemuck::pod_collect_to_vec::<u8, bf16>(raw)),
            DType::F16 => CpuStorage::F16(bytemuck::pod_collect_to_vec::<u8, f16>(raw)),
            DType::U8 => CpuStorage::U8(raw.to_vec()),
            DType::U32 => CpuStorage::U32(bytemuck::pod_collect_to_vec::<u8, u32>(raw)),
            DType::I64 => CpuStorage::I64(bytemuck::pod_collect_to_vec::<u8, i64>(raw)),
        };
        Tensor::from_cpu_storage(storage, &e.shape)
    }

    /// `name` converted to `dtype`.
    pub fn tensor_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        let t = self.tensor(name)?;
        if t.dtype() == dtype { Ok(t) } else { t.to_dtype(dtype) }
    }
}

fn parse_metadata(value: &serde_json::Value) -> std::result::Result<BTreeMap<String, String>, String> {
    let serde_json::Value::Object(m) = value else {
        return Err("__metadata__ is not a JSON object".into());
    };
    m.iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!("__metadata__ value of {k:?} is not a string")),
        })
        .collect()
}

fn parse_entry(name: &str, value: &serde_json::Value, data_len: usize) -> std::result::Result<TensorEntry, String> {
    let obj = value.as_object().ok_or_else(|| format!("tensor {name:?}: entry is not a JSON object"))?;
    let dtype_name = obj
        .get("dtype")
        .and_then(|d| d.as_str())
        .ok_or_else(|| format!("tensor {name:?}: missing string \"dtype\""))?;
    let dtype = StDtype::parse(dtype_name)
        .ok_or_else(|| format!("tensor {name:?}: unsupported dtype {dtype_name:?}"))?;
    let shape = obj
        .get("shape")
        .and_then(|s| s.as_array())
        .ok_or_else(|| format!("tensor {name:?}: missing array \"shape\""))?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(|| format!("tensor {name:?}: shape entries must be non-negative integers"))?;
    let offsets = obj
        .get("data_offsets")
        .and_then(|s| s.as_array())
        .filter(|a| a.len() == 2)
        .and_then(|a| Some((a[0].as_u64()?, a[1].as_u64()?)))
        .ok_or_else(|| format!("tensor {name:?}: \"data_offsets\" must be two non-negative integers"))?;
    let (begin, end) = offsets;
    if begin > end || end > data_len as u64 {
        return Err(format!(
            "tensor {name:?}: data_offsets [{begin}, {end}] outside the {data_len} data bytes"
        ));
    }
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("tensor {name:?}: shape {shape:?} overflows"))?;
    if bytes as u64 != end - begin {
        return Err(format!(
            "tensor {name:?}: shape {shape:?} of {dtype} needs {bytes} bytes, data_offsets give {}",
            end - begin
        ));
    }
    Ok(TensorEntry { dtype, shape, begin: begin as usize, end: end as usize })
}

fn check_no_overlap(entries: &BTreeMap<String, TensorEntry>) -> std::result::Result<(), String> {
    let mut ranges: Vec<(usize, usize, &str)> =
        entries.iter().filter(|(_, e)| e.end > e.begin).map(|(n, e)| (e.begin, e.end, n.as_str())).collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(format!("tensors {:?} and {:?} overlap in the data", w[0].2, w[1].2));
        }
    }
    Ok(())
}

/// One tensor to write: name, file dtype, shape and little-endian bytes.
#[derive(Clone, Debug)]
pub struct TensorToWrite<'a> {
    pub name: String,
    pub dtype: StDtype,
    pub shape: Vec<usize>,
    pub data: Cow<'a, [u8]>,
}

impl<'a> TensorToWrite<'a> {
    /// Raw bytes with an explicit dtype (e.g. packed 4-bit weights as `U8`).
    pub fn raw(name: impl Into<String>, dtype: StDtype, shape: &[usize], data: impl Into<Cow<'a, [u8]>>) -> Self {
        Self { name: name.into(), dtype, shape: shape.to_vec(), data: data.into() }
    }

    /// A tensor's elements in row-major order (copied when the tensor is a strided view or on a GPU).
    pub fn from_tensor(name: impl Into<String>, t: &Tensor) -> Result<TensorToWrite<'static>> {
        // A GPU tensor is downloaded here, so every writer can save device-resident weights.
        let t = t.to_device(&crate::Device::Cpu)?.contiguous()?;
        let bytes: Vec<u8> = crate::match_cpu_storage!(t.cpu_storage("write_safetensors")?, v => {
            let start = t.layout().offset();
            bytemuck::cast_slice(&v[start..start + t.elem_count()]).to_vec()
        });
        Ok(TensorToWrite {
            name: name.into(),
            dtype: StDtype::from_dtype(t.dtype()),
            shape: t.shape().to_vec(),
            data: Cow::Owned(bytes),
        })
    }
}

/// Writes `tensors` and `metadata` to `path`, atomically.
///
/// Tensors are laid out by decreasing element size, then name, and the header is padded with
/// spaces to a multiple of 8 bytes, so every tensor starts at an offset aligned to its element
/// size and a reader can use the mapped bytes in place.
pub fn write_safetensors(path: &Path, tensors: &[TensorToWrite<'_>], metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut order: Vec<&TensorToWrite<'_>> = tensors.iter().collect();
    order.sort_by(|a, b| b.dtype.size_in_bytes().cmp(&a.dtype.size_in_bytes()).then_with(|| a.name.cmp(&b.name)));
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        let m = metadata.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        header.insert("__metadata__".into(), serde_json::Value::Object(m));
    }
    let mut offset = 0usize;
    for t in &order {
        let want = t.shape.iter().try_fold(t.dtype.size_in_bytes(), |a, &d| a.checked_mul(d));
        if want != Some(t.data.len()) {
            return Err(Error::format(
                path,
                format!("tensor {:?}: shape {:?} of {} does not match its {} bytes", t.name, t.shape, t.dtype, t.data.len()),
            ));
        }
        if t.name == "__metadata__" || header.contains_key(&t.name) {
            return Err(Error::format(path, format!("tensor name {:?} is reserved or given twice", t.name)));
        }
        let end = offset + t.data.len();
        header.insert(
            t.name.clone(),
            serde_json::json!({ "dtype": t.dtype.name(), "shape": t.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&serde_json::Value::Object(header))
        .map_err(|e| Error::format(path, format!("serialising the header: {e}")))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    crate::io::write_atomic(path, |w| {
        w.write_all(&(text.len() as u64).to_le_bytes())?;
        w.write_all(text.as_bytes())?;
        for t in &order {
            w.write_all(&t.data)?;
        }
        Ok(())
    })
}
