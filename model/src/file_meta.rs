//! The metadata of the project's own safetensors files (stack files, router files): a `format`
//! and `version` that must match, then typed values by key, every error naming the file.

use std::path::Path;
use std::str::FromStr;

use brainstacks_tensor::io::SafeTensors;

use crate::{Error, Result};

pub(crate) fn file_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), msg: msg.into() }
}

/// A file's metadata after its format and version were checked.
pub(crate) struct FileMeta<'a> {
    st: &'a SafeTensors,
}

impl<'a> FileMeta<'a> {
    /// Checks `format` and `version`; `what` names the kind of file in the version error
    /// ("stack file", "router file").
    pub(crate) fn check(st: &'a SafeTensors, format: &str, version: &str, what: &str) -> Result<Self> {
        let m = Self { st };
        let found = m.get("format")?;
        if found != format {
            return Err(m.err(format!("metadata format is {found:?}, not {format:?}")));
        }
        let found = m.get("version")?;
        if found != version {
            return Err(m.err(format!("{what} version {found:?}; this build reads {version:?}")));
        }
        Ok(m)
    }

    pub(crate) fn path(&self) -> &'a Path {
        self.st.path()
    }

    pub(crate) fn err(&self, msg: impl Into<String>) -> Error {
        file_err(self.path(), msg)
    }

    pub(crate) fn get(&self, key: &str) -> Result<&'a String> {
        self.st.metadata().get(key).ok_or_else(|| self.err(format!("metadata key {key:?} is missing")))
    }

    /// The value of `key` parsed as `T`.
    pub(crate) fn parse<T: FromStr>(&self, key: &str) -> Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)?.parse().map_err(|e| self.err(format!("metadata {key:?}: {e}")))
    }
}
