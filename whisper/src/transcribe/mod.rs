//! Transcribing 16 kHz mono samples with Whisper tiny.en through CTranslate2.
//!
//! We drive CTranslate2's low-level `Whisper` model ourselves instead of ct2rs' ready-made
//! `Whisper::generate`, for two reasons measured on synthetic speech: that one prompts with
//! `<|en|><|transcribe|>`, tokens an English-only model was never trained with, and its
//! feature extraction differs from Whisper's (it lost whole phrases, ~16% WER). Here the
//! prompt is `<|startoftranscript|>` alone, as OpenAI's code does for `.en` models, and the
//! features come from [`LogMel`], a faithful port of Whisper's front end.

mod mel;
mod timestamps;
mod windows;

use std::fs;
use std::path::{Path, PathBuf};

use ct2rs::sys::{self, ComputeType, Config, Device, StorageView, WhisperOptions};
use ct2rs::tokenizers::hf;
use serde::Deserialize;

pub use mel::{LogMel, N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE};

/// A stretch of speech and what was said in it. Times are seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscribeError {
    #[error("the model directory {} lacks {file}", dir.display())]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("{}: {reason}", path.display())]
    BadPreprocessorConfig { path: PathBuf, reason: String },
    #[error("loading the model from {}: {reason}", dir.display())]
    Load { dir: PathBuf, reason: String },
    #[error("the model expects {found} mel bins; this front end makes {N_MELS}")]
    UnsupportedModel { found: usize },
    #[error("running the model: {reason}")]
    Inference { reason: String },
    #[error("decoding the model's tokens: {reason}")]
    Tokens { reason: String },
}

/// How to run the model. [`Default`] is what the crate was measured with.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperSettings {
    /// CPU threads for one transcription; 0 lets CTranslate2 choose.
    pub threads: usize,
    /// Beam width; 1 is greedy (faster, slightly less accurate).
    pub beam_size: usize,
}

impl Default for WhisperSettings {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            beam_size: 5,
        }
    }
}

/// Whisper tiny.en loaded for CPU inference with INT8 weights.
///
/// `Send + Sync`: share one behind an `Arc`. CTranslate2 queues concurrent calls onto its
/// replica, so parallel calls do not run faster than one after the other. Every call is
/// CPU-bound for a good fraction of the audio's length: async callers must use
/// `tokio::task::spawn_blocking`.
pub struct LocalWhisper {
    model: sys::Whisper,
    tokenizer: hf::Tokenizer,
    front_end: LogMel,
    options: WhisperOptions,
}

impl std::fmt::Debug for LocalWhisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWhisper")
            .field("model", &self.model)
            .field("beam_size", &self.options.beam_size)
            .finish_non_exhaustive()
    }
}

/// Files CTranslate2 and the tokenizer read from the model directory.
const MODEL_FILES: [&str; 3] = ["model.bin", "vocabulary.txt", "tokenizer.json"];

/// The parts of `preprocessor_config.json` our front end hard-codes; a model that asks for
/// anything else is refused rather than fed the wrong features.
#[derive(Debug, Deserialize)]
struct PreprocessorConfig {
    feature_size: usize,
    sampling_rate: usize,
    n_fft: usize,
    hop_length: usize,
    chunk_length: usize,
}

/// Whisper's rule for a window with nothing to say: the no-speech token is likely *and* the
/// text that was decoded is improbable. Either alone drops real speech.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOG_PROB_THRESHOLD: f32 = -1.0;

impl LocalWhisper {
    /// Loads the model in `model_dir` (as [`crate::models::install`] lays it out) with the
    /// default settings.
    pub fn load(model_dir: &Path) -> Result<Self, TranscribeError> {
        Self::load_with(model_dir, &WhisperSettings::default())
    }

    pub fn load_with(
        model_dir: &Path,
        settings: &WhisperSettings,
    ) -> Result<Self, TranscribeError> {
        for file in MODEL_FILES {
            if !model_dir.join(file).is_file() {
                return Err(TranscribeError::MissingFile {
                    dir: model_dir.to_path_buf(),
                    file,
                });
            }
        }
        check_preprocessor_config(model_dir)?;

        let load_error = |reason: String| TranscribeError::Load {
            dir: model_dir.to_path_buf(),
            reason,
        };
        let config = Config {
            device: Device::CPU,
            // Measured for issue 8: the same text as float32 on our test speech, at ~0.15x real
            // time and ~230 MB peak on two cores.
            compute_type: ComputeType::INT8,
            num_threads_per_replica: settings.threads,
            ..Config::default()
        };
        let model =
            sys::Whisper::new(model_dir, config).map_err(|e| load_error(format!("{e:#}")))?;
        if model.n_mels() != N_MELS {
            return Err(TranscribeError::UnsupportedModel {
                found: model.n_mels(),
            });
        }
        let tokenizer = hf::Tokenizer::new(model_dir).map_err(|e| load_error(format!("{e:#}")))?;

        let options = WhisperOptions {
            beam_size: settings.beam_size.max(1),
            return_scores: true,
            return_no_speech_prob: true,
            ..WhisperOptions::default()
        };
        Ok(Self {
            model,
            tokenizer,
            front_end: LogMel::new(),
            options,
        })
    }

    /// Transcribes 16 kHz mono samples in `[-1, 1]` into segments in time order.
    ///
    /// Audio longer than 30 s is heard in windows cut at pauses; a phrase left unfinished or
    /// unheard at the end of a window is heard again at the start of the next. Each window's
    /// times are offset by where it starts. Blocking and CPU-bound.
    pub fn transcribe(&self, samples_16k_mono: &[f32]) -> Result<Vec<Segment>, TranscribeError> {
        let samples = samples_16k_mono;
        let mut segments: Vec<Segment> = Vec::new();
        let mut start = 0;
        while start < samples.len() {
            let end = windows::window_end(samples, start);
            let started = std::time::Instant::now();
            let heard = self.transcribe_window(&samples[start..end])?;
            let (mut keep, mut resume) = windows::resume_after(&heard, end - start);
            if end == samples.len() && keep < heard.len() {
                // In the last window an open phrase simply runs to the end of the audio: keep
                // it. Speech left unheard after the last closed phrase is still heard again
                // (the model sometimes stops early in a full window and drops the last phrase).
                (keep, resume) = (heard.len(), end - start);
            }
            let offset = start as f64 / SAMPLE_RATE as f64;
            tracing::debug!(
                from_secs = offset,
                to_secs = end as f64 / SAMPLE_RATE as f64,
                segments = heard.len(),
                kept = keep,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "transcribed a window"
            );
            for s in heard.into_iter().take(keep) {
                // A window's times are clamped to its own length and the next window starts no
                // earlier than the last kept segment ended, so the list stays in order; the max
                // only guards against rounding.
                let floor = segments.last().map_or(0.0, |last| last.end);
                let start = (offset + s.start).max(floor);
                segments.push(Segment {
                    start,
                    end: (offset + s.end).max(start),
                    text: s.text,
                });
            }
            start += resume.max(1);
        }
        Ok(segments)
    }

    fn transcribe_window(
        &self,
        audio: &[f32],
    ) -> Result<Vec<timestamps::WindowSegment>, TranscribeError> {
        // Digital silence: nothing to hear, and Whisper tends to invent text for it.
        if audio.iter().all(|s| s.abs() < 1e-4) {
            return Ok(Vec::new());
        }
        let window_secs = audio.len() as f64 / SAMPLE_RATE as f64;
        let inference = |e: anyhow::Error| TranscribeError::Inference {
            reason: format!("{e:#}"),
        };

        let mut features = self.front_end.compute(audio);
        let features = StorageView::new(&[1, N_MELS, N_FRAMES], &mut features, Device::CPU)
            .map_err(inference)?;
        let result = self
            .model
            .generate(&features, &[vec!["<|startoftranscript|>"]], &self.options)
            .map_err(inference)?
            .into_iter()
            .next()
            .ok_or_else(|| TranscribeError::Inference {
                reason: "the model returned no result".to_string(),
            })?;

        let (Some(tokens), Some(ids)) = (result.sequences.first(), result.sequences_ids.first())
        else {
            return Ok(Vec::new());
        };
        let avg_log_prob =
            average_log_prob(result.scores.first().copied(), ids.len(), &self.options);
        if result.no_speech_prob > NO_SPEECH_THRESHOLD && avg_log_prob < LOG_PROB_THRESHOLD {
            tracing::debug!(
                no_speech_prob = result.no_speech_prob,
                avg_log_prob,
                "window judged silent"
            );
            return Ok(Vec::new());
        }

        timestamps::segments(tokens, window_secs, |text| {
            ct2rs::Tokenizer::decode(&self.tokenizer, text.to_vec()).map_err(|e| {
                TranscribeError::Tokens {
                    reason: format!("{e:#}"),
                }
            })
        })
    }
}

/// Whisper's average log-probability per token, from CTranslate2's length-normalised score
/// (as faster-whisper computes it): the end-of-text token counts too, hence `+ 1`.
fn average_log_prob(score: Option<f32>, len: usize, options: &WhisperOptions) -> f32 {
    let Some(score) = score else {
        return 0.0;
    };
    let cumulative = score * (len as f32).powf(options.length_penalty);
    cumulative / (len as f32 + 1.0)
}

fn check_preprocessor_config(model_dir: &Path) -> Result<(), TranscribeError> {
    let path = model_dir.join(crate::models::PREPROCESSOR_CONFIG_FILE);
    let bad = |reason: String| TranscribeError::BadPreprocessorConfig {
        path: path.clone(),
        reason,
    };
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        // Converted models often come without it; the front end uses Whisper's standard values.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(bad(e.to_string())),
    };
    let config: PreprocessorConfig = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let expected = (N_MELS, SAMPLE_RATE, 400, 160, 30);
    let found = (
        config.feature_size,
        config.sampling_rate,
        config.n_fft,
        config.hop_length,
        config.chunk_length,
    );
    if found != expected {
        return Err(bad(format!(
            "(feature_size, sampling_rate, n_fft, hop_length, chunk_length) is {found:?}; \
             this front end implements {expected:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_directory_without_a_model_names_the_missing_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = LocalWhisper::load(dir.path()).expect_err("no model there");
        assert!(
            matches!(
                err,
                TranscribeError::MissingFile {
                    file: "model.bin",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_model_wanting_other_features_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = crate::models::preprocessor_config();
        config["feature_size"] = 128.into();
        fs::write(
            dir.path().join(crate::models::PREPROCESSOR_CONFIG_FILE),
            config.to_string(),
        )
        .expect("write");
        let err = check_preprocessor_config(dir.path()).expect_err("128 mels");
        assert!(
            matches!(err, TranscribeError::BadPreprocessorConfig { .. }),
            "{err}"
        );
    }

    #[test]
    fn the_config_install_writes_is_accepted() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(
            dir.path().join(crate::models::PREPROCESSOR_CONFIG_FILE),
            crate::models::preprocessor_config().to_string(),
        )
        .expect("write");
        assert!(check_preprocessor_config(dir.path()).is_ok());
    }

    #[test]
    fn the_average_log_prob_undoes_ctranslate2_s_length_normalisation() {
        let options = WhisperOptions::default();
        // 9 tokens with a normalised score of -0.5: cumulative -4.5 over 10 (with end-of-text).
        assert!((average_log_prob(Some(-0.5), 9, &options) - (-0.45)).abs() < 1e-6);
        assert_eq!(average_log_prob(None, 9, &options), 0.0);
    }
}
