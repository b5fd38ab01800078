//! Stack files: one safetensors file per frozen stack, holding every wrapped module's experts,
//! router and noise net, keyed by module path, expert and role:
//!
//! ```text
//! model.layers.{l}.{module}.experts.{e}.lora_A.weight   [r, d_in]
//! model.layers.{l}.{module}.experts.{e}.lora_B.weight   [d_out, r]
//! model.layers.{l}.{module}.router.weight               [E, d_in]
//! model.layers.{l}.{module}.noise.weight                [E, d_in]
//! ```
//!
//! Metadata: `format = "brainstacks-stack"`, `version`, `domain`, `round`, `experts`, `top_k`,
//! `rank`, `alpha`. Files are written atomically (temp file, fsync, rename).

use std::collections::BTreeMap;
use std::path::Path;

use brainstacks_autograd::Var;
use brainstacks_tensor::Tensor;
use brainstacks_tensor::io::{SafeTensors, TensorToWrite, write_safetensors};

use super::StackId;
use super::set::StackSet;
use crate::Result;
use crate::file_meta::{FileMeta, file_err};
use crate::moe_lora::{MoeLora, MoeLoraConfig};
use crate::null_space::NullSpace;

pub const FORMAT: &str = "brainstacks-stack";
pub const VERSION: &str = "1";

/// What a stack file's metadata says.
#[derive(Clone, Debug, PartialEq)]
pub struct StackFileInfo {
    pub id: StackId,
    pub config: MoeLoraConfig,
}

/// Reads and checks a stack file's metadata.
pub fn read_info(st: &SafeTensors) -> Result<StackFileInfo> {
    let meta = FileMeta::check(st, FORMAT, VERSION, "stack file")?;
    Ok(StackFileInfo {
        id: StackId::new(meta.get("domain")?.clone(), meta.parse::<usize>("round")? as u32),
        config: MoeLoraConfig {
            experts: meta.parse("experts")?,
            top_k: meta.parse("top_k")?,
            rank: meta.parse("rank")?,
            alpha: meta.parse("alpha")?,
        },
    })
}

impl StackSet {
    /// Writes frozen stack `id` to `path`.
    pub fn save_stack(&self, id: &StackId, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        let mut config = None;
        for m in self.modules() {
            let st = m.lock();
            let f = st.frozen.iter().find(|f| &f.id == id).ok_or_else(|| file_err(path, format!("no frozen stack {id} to save")))?;
            let s = &f.stack;
            let base = m.path();
            for e in 0..s.config.experts {
                tensors.push(TensorToWrite::from_tensor(
                    format!("{base}.experts.{e}.lora_A.weight"),
                    &s.a.tensor().narrow(0usize, e, 1)?.reshape(&s.a.shape()[1..])?,
                )?);
                tensors.push(TensorToWrite::from_tensor(
                    format!("{base}.experts.{e}.lora_B.weight"),
                    &s.b.tensor().narrow(0usize, e, 1)?.reshape(&s.b.shape()[1..])?,
                )?);
            }
            tensors.push(TensorToWrite::from_tensor(format!("{base}.router.weight"), s.w_router.tensor())?);
            tensors.push(TensorToWrite::from_tensor(format!("{base}.noise.weight"), s.w_noise.tensor())?);
            config.get_or_insert_with(|| s.config.clone());
        }
        let c = config.ok_or_else(|| file_err(path, "the stack set has no modules"))?;
        let meta = BTreeMap::from([
            ("format".to_string(), FORMAT.to_string()),
            ("version".to_string(), VERSION.to_string()),
            ("domain".to_string(), id.domain.clone()),
            ("round".to_string(), id.round.to_string()),
            ("experts".to_string(), c.experts.to_string()),
            ("top_k".to_string(), c.top_k.to_string()),
            ("rank".to_string(), c.rank.to_string()),
            // Debug formatting of f64 round-trips exactly.
            ("alpha".to_string(), format!("{:?}", c.alpha)),
        ]);
        write_safetensors(path, &tensors, &meta)?;
        Ok(())
    }

    /// Loads a stack file as a frozen stack (in the compute dtype) and returns its id. Every
    /// module of this set must be in the file with the right shapes; extra tensors are an error.
    pub fn load_stack(&self, path: &Path) -> Result<StackId> {
        let st = SafeTensors::open(path)?;
        let info = read_info(&st)?;
        if self.frozen_ids().contains(&info.id) {
            return Err(file_err(path, format!("stack {} is already loaded", info.id)));
        }
        let c = &info.config;
        let dtype = self.compute_dtype();
        let mut used = 0usize;
        let mut stacks = Vec::with_capacity(self.modules().len());
        for m in self.modules() {
            let base = m.path();
            let mut read = |name: String, shape: &[usize]| -> Result<Tensor> {
                let e = st.entry(&name).map_err(|_| file_err(path, format!("missing tensor {name:?}")))?;
                if e.shape != shape {
                    return Err(file_err(path, format!("tensor {name:?} has shape {:?}, expected {shape:?}", e.shape)));
                }
                used += 1;
                Ok(st.tensor_as(&name, dtype)?)
            };
            let mut a = Vec::with_capacity(c.experts);
            let mut b = Vec::with_capacity(c.experts);
            for e in 0..c.experts {
                a.push(read(format!("{base}.experts.{e}.lora_A.weight"), &[c.rank, m.d_in])?);
                b.push(read(format!("{base}.experts.{e}.lora_B.weight"), &[m.d_out, c.rank])?);
            }
            let w_router = read(format!("{base}.router.weight"), &[c.experts, m.d_in])?;
            let w_noise = read(format!("{base}.noise.weight"), &[c.experts, m.d_in])?;
            let stack_of = |parts: &[Tensor]| -> Result<Var> {
                let refs: Vec<&Tensor> = parts.iter().collect();
                Ok(Var::constant(Tensor::stack(&refs, 0usize)?))
            };
            let stack = MoeLora {
                a: stack_of(&a)?,
                b: stack_of(&b)?,
                w_router: Var::constant(w_router),
                w_noise: Var::constant(w_noise),
                config: c.clone(),
            };
            stacks.push(stack.to_device(&self.device())?);
        }
        if used != st.entries().len() {
            let extra: Vec<&str> =
                st.names().filter(|n| !self.modules().iter().any(|m| n.starts_with(&format!("{}.", m.path())))).take(3).collect();
            return Err(file_err(path, format!("{} tensors this model does not wrap (e.g. {extra:?})", st.entries().len() - used)));
        }
        for (m, stack) in self.modules().iter().zip(stacks) {
            let mut guard = m.lock();
            self.insert_frozen(&mut guard, info.id.clone(), stack);
        }
        Ok(info.id)
    }
}

/// `format` metadata of a projector file.
pub const NULL_SPACE_FORMAT: &str = "brainstacks-null-spaces";

impl StackSet {
    /// Writes every module's projector basis V (`{module}.null_space.v`, `[d_out, k]`) to `path`;
    /// modules without one are left out.
    pub fn save_null_spaces(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for m in self.modules() {
            if let Some(ns) = &m.lock().null_space {
                tensors.push(TensorToWrite::from_tensor(format!("{}.null_space.v", m.path()), ns.basis())?);
            }
        }
        let meta = BTreeMap::from([("format".to_string(), NULL_SPACE_FORMAT.to_string()), ("version".to_string(), VERSION.to_string())]);
        write_safetensors(path, &tensors, &meta)?;
        Ok(())
    }

    /// Installs the projectors of a file written by [`StackSet::save_null_spaces`] (modules absent
    /// from it get none).
    pub fn load_null_spaces(&self, path: &Path) -> Result<()> {
        let st = SafeTensors::open(path)?;
        if st.metadata().get("format").map(String::as_str) != Some(NULL_SPACE_FORMAT) {
            return Err(file_err(path, format!("not a projector file (format is not {NULL_SPACE_FORMAT:?})")));
        }
        let mut spaces = Vec::with_capacity(self.modules().len());
        for m in self.modules() {
            let name = format!("{}.null_space.v", m.path());
            spaces.push(if st.entry(&name).is_ok() { Some(NullSpace::from_basis(st.tensor(&name)?)?) } else { None });
        }
        self.set_null_spaces(spaces)
    }
}
