//! Loading the four ONNX models: ONNX Runtime is loaded from a shared library named in the
//! configuration (no download at build or run time), each model file is checked against
//! its configured sha256 before it is used, and each session runs on one thread.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What went wrong with the face models; every message names the file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("ONNX Runtime could not be loaded from {path}: {reason} (run scripts/face-assets.sh, or set face.ort_lib)")]
    Runtime { path: String, reason: String },
    #[error("model {path} could not be read: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("model {path} has sha256 {found}, the configuration expects {expected}")]
    Digest { path: String, expected: String, found: String },
    #[error("model {path} could not be loaded: {reason}")]
    Load { path: String, reason: String },
    #[error("model {model} failed: {reason}")]
    Inference { model: &'static str, reason: String },
    #[error("model {path} does not meet the {role} model's contract: {reason} (see docs/models.md)")]
    Contract { path: String, role: &'static str, reason: String },
    #[error("model {model} gave an output of {found} values, {expected} expected")]
    Shape { model: &'static str, expected: usize, found: usize },
}

/// One model file and the digest it must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    pub path: PathBuf,
    /// Hex sha256 of the file; the model is refused if it differs.
    pub sha256: String,
}

/// The four models (see `docs/models.md` for their contracts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSet {
    /// The ONNX Runtime shared library (`libonnxruntime.so.1.31.1`).
    pub ort_lib: PathBuf,
    pub detector: ModelFile,
    pub landmarks: ModelFile,
    pub embedding: ModelFile,
    pub liveness: ModelFile,
    /// The embedding model's id, written into every template with its sha256.
    pub embedding_id: String,
}

/// The sha256 of the reference models, from `faceplugin-face-recognition-js@0.0.1` as
/// `scripts/face-assets.sh` unpacks them: detector, landmarks, embedding, liveness.
pub const REFERENCE_DIGESTS: [&str; 4] = [
    "6c0256ccd3164f844736a401faf936ec2930764a87ae39442180887d0c5c8854",
    "f10b0ba1d2a8a099adefede1ebf3733e44fe370715e7303dbeb7f59c02142258",
    "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581",
    "afa783b7e902fdfcf323a7240cac2a1c580c25314ea4161129dc1b0d100dc32d",
];

impl ModelSet {
    /// The reference models in `dir` (as `scripts/face-assets.sh` unpacks them) with the
    /// digests given.
    pub fn in_dir(ort_lib: &Path, dir: &Path, digests: [&str; 4]) -> Self {
        let file = |name: &str, sha: &str| ModelFile { path: dir.join(name), sha256: sha.to_owned() };
        Self {
            ort_lib: ort_lib.to_owned(),
            detector: file("fr_detect.onnx", digests[0]),
            landmarks: file("fr_landmark.onnx", digests[1]),
            embedding: file("fr_feature.onnx", digests[2]),
            liveness: file("fr_liveness.onnx", digests[3]),
            embedding_id: "fr_feature".into(),
        }
    }

    /// The model reference templates are bound to.
    pub fn embedding_ref(&self) -> lockerfleet_shared::seal::ModelRef {
        lockerfleet_shared::seal::ModelRef { id: self.embedding_id.clone(), sha256: self.embedding.sha256.clone() }
    }
}

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ModelError::Unreadable { path: path.display().to_string(), reason: e.to_string() })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The process's ONNX Runtime environment (ONNX Runtime allows one per process).
fn environment(lib: &Path) -> Result<ort::environment::Environment, ModelError> {
    static ENV: OnceLock<Result<ort::environment::Environment, ModelError>> = OnceLock::new();
    ENV.get_or_init(|| {
        let runtime = |reason: String| ModelError::Runtime { path: lib.display().to_string(), reason };
        if !lib.exists() {
            return Err(runtime("no such file".into()));
        }
        ort::init_from(lib)
            .map_err(|e| runtime(e.to_string()))?
            .with_name("lockerfleet-face")
            .build()
            .map_err(|e| runtime(e.to_string()))
    })
    .clone()
}

/// One loaded model.
pub struct Model {
    name: &'static str,
    session: Session,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Model {
    /// Checks the file's digest, then loads it for single-threaded inference.
    pub fn load(name: &'static str, lib: &Path, file: &ModelFile) -> Result<Self, ModelError> {
        let path = file.path.display().to_string();
        let found = sha256_file(&file.path)?;
        if !found.eq_ignore_ascii_case(&file.sha256) {
            return Err(ModelError::Digest { path, expected: file.sha256.clone(), found });
        }
        let env = environment(lib)?;
        let load = |reason: String| ModelError::Load { path: path.clone(), reason };
        let session = Session::builder(&env)
            .map_err(|e| load(e.to_string()))?
            .with_intra_threads(1)
            .map_err(|e| load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| load(e.to_string()))?
            .commit_from_file(&file.path)
            .map_err(|e| load(e.to_string()))?;
        if session.inputs().len() != 1 {
            return Err(load(format!("has {} inputs, one expected", session.inputs().len())));
        }
        Ok(Self { name, session })
    }

    /// Runs the model on one NCHW input; returns each output's values, in the model's
    /// output order.
    pub fn run(&mut self, shape: [usize; 4], input: Vec<f32>) -> Result<Vec<Vec<f32>>, ModelError> {
        let fail = |e: ort::Error| ModelError::Inference { model: self.name, reason: e.to_string() };
        let tensor = Tensor::from_array((shape, input)).map_err(fail)?;
        let outputs = self
            .session
            .run(ort::inputs![tensor])
            .map_err(|e| ModelError::Inference { model: self.name, reason: e.to_string() })?;
        let mut values = Vec::with_capacity(outputs.len());
        for (_, v) in outputs.iter() {
            let (_, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| ModelError::Inference { model: self.name, reason: e.to_string() })?;
            values.push(data.to_vec());
        }
        Ok(values)
    }

    /// Output names, in order (for the detector: which output is which).
    pub fn output_names(&self) -> Vec<String> {
        self.session.outputs().iter().map(|o| o.name().to_owned()).collect()
    }

    /// The input's dimensions as the model declares them (`-1` where a dimension is left
    /// free); `None` if the input is not a tensor.
    pub fn input_dims(&self) -> Option<Vec<i64>> {
        self.session.inputs().first().and_then(|i| i.dtype().tensor_shape()).map(|s| s.to_vec())
    }

    /// Each output's dimensions as the model declares them, in output order.
    pub fn output_dims(&self) -> Vec<Option<Vec<i64>>> {
        self.session.outputs().iter().map(|o| o.dtype().tensor_shape().map(|s| s.to_vec())).collect()
    }
}

/// Where `scripts/face-assets.sh` put the runtime, the models and the photos:
/// `$LOCKERFLEET_ASSETS`, else `~/.cache/lockerfleet/assets`.
#[derive(Debug, Clone)]
pub struct Assets {
    pub root: PathBuf,
}

impl Assets {
    /// The asset folder, or a message saying how to make it.
    pub fn locate() -> Result<Self, String> {
        let root = match std::env::var_os("LOCKERFLEET_ASSETS") {
            Some(p) => PathBuf::from(p),
            None => {
                let home = std::env::var_os("HOME").ok_or("neither LOCKERFLEET_ASSETS nor HOME is set")?;
                PathBuf::from(home).join(".cache/lockerfleet/assets")
            }
        };
        let a = Self { root };
        for need in [a.ort_lib(), a.root.join("models/fr_feature.onnx")] {
            if !need.exists() {
                return Err(format!("{} is missing: run scripts/face-assets.sh first", need.display()));
            }
        }
        Ok(a)
    }

    pub fn ort_lib(&self) -> PathBuf {
        self.root.join("onnxruntime/libonnxruntime.so.1.31.1")
    }

    /// The reference models, pinned by digest.
    pub fn models(&self) -> ModelSet {
        ModelSet::in_dir(&self.ort_lib(), &self.root.join("models"), REFERENCE_DIGESTS)
    }

    /// A photo from `photos/<set>/<name>`.
    pub fn photo(&self, set: &str, name: &str) -> PathBuf {
        self.root.join("photos").join(set).join(name)
    }

    /// The Python with onnxruntime and numpy, for reference checks.
    pub fn python(&self) -> PathBuf {
        self.root.join("venv/bin/python")
    }
}
