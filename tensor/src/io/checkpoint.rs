//! A Hugging Face checkpoint directory: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (`{"metadata": {...}, "weight_map": {name: file}}`).
//!
//! Each shard is opened (mapped) once; a tensor is looked up by name across shards. Opening checks
//! that every shard the index names exists and holds every tensor the index assigns to it, so a
//! broken checkpoint fails at open with the tensor and file named, not halfway through a load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::io::safetensors::{SafeTensors, TensorEntry};
use crate::{DType, Error, Result, Tensor};

/// The single-file name Hugging Face writes.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The shard index Hugging Face writes next to sharded files.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// All tensors of a checkpoint directory.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafeTensors>,
    /// Tensor name -> index into `shards`.
    by_name: BTreeMap<String, usize>,
}

impl Checkpoint {
    /// Opens `dir`: the shard index if present, else `model.safetensors`.
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX_FILE);
        if index.exists() {
            return Self::open_index(dir, &index);
        }
        let single = dir.join(SINGLE_FILE);
        if !single.exists() {
            return Err(Error::format(
                dir,
                format!("no {SINGLE_FILE} and no {INDEX_FILE} in this directory"),
            ));
        }
        Self::from_files(dir, vec![SafeTensors::open(&single)?])
    }

    fn open_index(dir: &Path, index: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io("reading", index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::format(index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(index, "missing object \"weight_map\""))?;
        let mut files: Vec<String> = Vec::new();
        let mut want: Vec<(String, usize)> = Vec::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| Error::format(index, format!("weight_map[{name:?}] is not a file name")))?;
            // Shard names are plain file names next to the index, never paths.
            if file.contains('/') || file.contains('\\') || file == ".." || file.is_empty() {
                return Err(Error::format(index, format!("weight_map[{name:?}] = {file:?} is not a plain file name")));
            }
            let i = match files.iter().position(|f| f == file) {
                Some(i) => i,
                None => {
                    files.push(file.to_string());
                    files.len() - 1
                }
            };
            want.push((name.clone(), i));
        }
        let shards = files.iter().map(|f| SafeTensors::open(dir.join(f))).collect::<Result<Vec<_>>>()?;
        for (name, i) in &want {
            if !shards[*i].entries().contains_key(name) {
                return Err(Error::format(
                    shards[*i].path(),
                    format!("the index assigns tensor {name:?} to this shard, which does not hold it"),
                ));
            }
        }
        let mut ck = Self::from_files(dir, shards)?;
        // The index is authoritative: drop tensors a shard holds but the index does not list.
        ck.by_name.retain(|n, _| map.contains_key(n));
        Ok(ck)
    }

    fn from_files(dir: &Path, shards: Vec<SafeTensors>) -> Result<Self> {
        let mut by_name = BTreeMap::new();
        for (i, s) in shards.iter().enumerate() {
            for name in s.names() {
                if let Some(prev) = by_name.insert(name.to_string(), i) {
                    return Err(Error::format(
                        s.path(),
                        format!("tensor {name:?} is also in {}", shards[prev].path().display()),
                    ));
                }
            }
        }
        Ok(Self { dir: dir.to_path_buf(), shards, by_name })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The file holding `name`, and its entry.
    pub fn locate(&self, name: &str) -> Result<(&SafeTensors, &TensorEntry)> {
        let i = *self
            .by_name
            .get(name)
            .ok_or_else(|| Error::format(&self.dir, format!("the checkpoint has no tensor named {name:?}")))?;
        let s = &self.shards[i];
        Ok((s, s.entry(name)?))
    }

    /// Raw bytes of `name` (no copy).
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        let (s, _) = self.locate(name)?;
        s.bytes(name)
    }

    /// `name` as a CPU tensor of its own dtype.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.locate(name)?.0.tensor(name)
    }

    /// `name` converted to `dtype`.
    pub fn tensor_as(&self, name: &str, dtype: DType) -> Result<Tensor> {
        self.locate(name)?.0.tensor_as(name, dtype)
    }

    /// Total bytes of tensor data.
    pub fn total_bytes(&self) -> usize {
        self.by_name.keys().filter_map(|n| self.locate(n).ok()).map(|(_, e)| e.end - e.begin).sum()
    }
}
