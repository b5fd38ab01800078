//! `manifest.json`: what a run has produced so far, rewritten atomically after every round and
//! domain. A resumed run reads it, loads the stacks it lists, and continues after the last
//! completed round.

use std::path::Path;

use brainstacks_tensor::io::write_atomic_bytes;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const FORMAT: &str = "brainstacks-run";
pub const VERSION: u32 = 1;

/// Why a round's training ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundStop {
    /// All of its optimizer steps ran.
    Steps,
    /// `patience` evaluations in a row did not improve on the best.
    Patience,
    /// A validation loss rose more than `spike_threshold` above the best.
    Spike,
}

/// One boosting round of one domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    /// Relative to the run directory; `None` for a discarded stack.
    pub file: Option<String>,
    /// The best validation loss seen (the restored snapshot's).
    pub best_val: f64,
    pub best_step: usize,
    pub steps_run: usize,
    pub stop: RoundStop,
    /// `(optimizer step, validation loss)` at every evaluation.
    pub val_history: Vec<(usize, f64)>,
    pub train_loss_last: f64,
    pub tokens: u64,
    pub seconds: f64,
    /// Largest training-time leakage ||δV||/||δ|| of the projected delta (with
    /// `null_space.monitor_leakage` and a projector).
    pub max_leakage: Option<f64>,
    /// Optimizer steps skipped because the loss or a gradient was NaN or infinite (absent in
    /// manifests written before it was recorded).
    #[serde(default)]
    pub skipped_steps: usize,
}

/// One domain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub name: String,
    pub done: bool,
    /// Validation loss before this domain's first round (earlier stacks on).
    pub baseline_val: f64,
    pub rounds: Vec<RoundRecord>,
    /// Null-space projector rank per wrapped module (empty without a projector).
    pub projector_ranks: Vec<usize>,
    /// Why the inner loop ended: "min_delta", "max_rounds" (set when `done`).
    pub stopped: Option<String>,
    /// Prefix configuration (this domain and earlier ones on, later ones off), recorded when the
    /// domain is done: validation loss, and an FNV-1a hash of the f32 logits of a fixed probe
    /// batch, which later configurations must reproduce bit for bit.
    pub prefix_val: Option<f64>,
    pub prefix_logits_fnv: Option<String>,
    pub seconds: f64,
}

/// The ungated forgetting matrix: after each domain, every domain's validation loss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Forgetting {
    pub domains: Vec<String>,
    /// `(domain just finished, losses in `domains` order)`.
    pub rows: Vec<(String, Vec<f64>)>,
}

/// The whole manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub engine: String,
    /// Fingerprint of the config fields that change results; a resume must match it.
    pub config_fnv: String,
    pub domain_order: Vec<String>,
    pub trainable_params_per_stack: usize,
    pub domains: Vec<DomainRecord>,
    pub forgetting: Forgetting,
}

fn invalid(what: impl std::fmt::Display, msg: impl std::fmt::Display) -> Error {
    Error::Invalid { what: what.to_string(), msg: msg.to_string() }
}

impl Manifest {
    pub fn new(config_fnv: String, domain_order: Vec<String>, trainable_params_per_stack: usize) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            engine: format!("brainstacks-rs {}", env!("CARGO_PKG_VERSION")),
            config_fnv,
            forgetting: Forgetting { domains: domain_order.clone(), rows: Vec::new() },
            domain_order,
            trainable_params_per_stack,
            domains: Vec::new(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| invalid(path.display(), format!("cannot read: {e}")))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a `manifest.json` (what [`load`](Self::load) reads), checking its
    /// format and version; errors name it "manifest.json".
    ///
    /// ```
    /// use brainstacks_train::boost::manifest::Manifest;
    /// let m = Manifest::new("abc".into(), vec!["chat".into()], 10);
    /// let text = serde_json::to_string(&m).unwrap();
    /// assert_eq!(Manifest::from_json_str(&text).unwrap(), m);
    /// assert!(Manifest::from_json_str(&text.replace("brainstacks-run", "other")).is_err());
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self> {
        Self::parse(text, "manifest.json")
    }

    /// `what` names the source in errors.
    fn parse(text: &str, what: &str) -> Result<Self> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| invalid(what, format!("not a run manifest: {e}")))?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(invalid(
                what,
                format!("format {:?} version {}; this build writes {FORMAT:?} version {VERSION}", m.format, m.version),
            ));
        }
        Ok(m)
    }

    /// Writes atomically: a crash leaves the previous manifest or this one, never a torn file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| invalid(path.display(), e))?;
        write_atomic_bytes(path, text.as_bytes())?;
        Ok(())
    }

    pub fn domain(&self, name: &str) -> Option<&DomainRecord> {
        self.domains.iter().find(|d| d.name == name)
    }

    pub fn domain_mut(&mut self, name: &str) -> Option<&mut DomainRecord> {
        self.domains.iter_mut().find(|d| d.name == name)
    }
}

/// 64-bit FNV-1a, as lowercase hex: a stable fingerprint of bytes (configs, logits).
pub fn fnv1a_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_hex(b""), "cbf29ce484222325");
        assert_eq!(fnv1a_hex(b"a"), "af63dc4c8601ec8c");
        assert_eq!(fnv1a_hex(b"foobar"), "85944171f73967e8");
    }

    #[test]
    fn round_trips_and_rejects_other_formats() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("bs-manifest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("manifest.json");
        let mut m = Manifest::new("00".into(), vec!["chat".into()], 10);
        m.domains.push(DomainRecord {
            name: "chat".into(),
            done: false,
            baseline_val: 3.5,
            rounds: vec![],
            projector_ranks: vec![],
            stopped: None,
            prefix_val: None,
            prefix_logits_fnv: None,
            seconds: 0.0,
        });
        m.save(&path)?;
        assert_eq!(Manifest::load(&path)?, m);
        std::fs::write(&path, r#"{"format": "other"}"#).unwrap();
        assert!(Manifest::load(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    }
}
