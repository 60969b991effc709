//! Transcribing 16 kHz mono samples with Whisper tiny.en, in pure Rust.
//!
//! The model is CTranslate2's conversion of OpenAI's weights, read directly from its
//! `model.bin` ([`ct2`]) with no CTranslate2. The encoder runs on candle ([`encoder`]); the
//! decoder is our own one-token-per-step loop with a key/value cache over 8-bit weights
//! ([`decoder`], [`kernels`]); tokens are chosen by Whisper's own rules with faster-whisper's
//! guards against hallucination ([`decoding`]), and text over silence is dropped ([`speech`]).
//! The prompt is `<|startoftranscript|>` alone, as OpenAI's code does for `.en` models, so the
//! model writes timestamp tokens and each phrase gets its times; the features come from
//! [`LogMel`], a faithful port of Whisper's front end.

mod attention;
mod ct2;
mod decoder;
mod decoding;
mod encoder;
mod kernels;
pub(crate) mod mel;
mod speech;
mod timestamps;
mod vocab;
mod windows;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{Device, Tensor};
use serde::Deserialize;

pub use ct2::Ct2Error;
pub use mel::{LogMel, N_FRAMES, N_MELS, N_SAMPLES, SAMPLE_RATE};

use decoder::Decoder;
use decoding::{Policy, SuppressLists};
use encoder::Encoder;
use speech::SpeechMap;
use vocab::Vocabulary;

/// A stretch of speech and what was said in it. Times are seconds from the start of the audio.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// How far a transcription has got, reported after each window it heard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowsHeard {
    /// Windows heard so far (the next one starts where this left off).
    pub windows: usize,
    /// Seconds of the audio heard so far.
    pub heard_secs: f64,
    /// The audio's length in seconds.
    pub total_secs: f64,
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
    /// The caller gave up (its job attempt timed out or was aborted) and asked to stop.
    #[error("transcription cancelled after {heard_secs:.1} s of audio")]
    Cancelled { heard_secs: f64 },
}

/// How to run the model. [`Default`] is what the crate was measured with.
#[derive(Debug, Clone, PartialEq)]
pub struct WhisperSettings {
    /// CPU threads for one transcription (the encoder's matrix products and the decoder's
    /// output projection); 0 means one per core.
    pub threads: usize,
}

impl Default for WhisperSettings {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

/// Whisper tiny.en loaded for CPU inference.
///
/// `Send + Sync`: share one behind an `Arc`. Every call is CPU-bound for a few percent of the
/// audio's length and runs on this model's own thread pool (`threads` wide), so concurrent
/// calls share those cores rather than multiplying the load; async callers must use
/// `tokio::task::spawn_blocking`.
pub struct LocalWhisper {
    encoder: Encoder,
    decoder: Decoder,
    vocab: Vocabulary,
    suppress: SuppressLists,
    front_end: LogMel,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for LocalWhisper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalWhisper")
            .field("vocabulary", &self.vocab.len())
            .field("threads", &self.pool.current_num_threads())
            .finish_non_exhaustive()
    }
}

/// Files read from the model directory: the weights, the tokens, and the suppression lists.
const MODEL_FILES: [&str; 3] = ["model.bin", "vocabulary.txt", "config.json"];

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
        let read = |file: &str| {
            fs::read(model_dir.join(file)).map_err(|e| load_error(format!("reading {file}: {e}")))
        };

        let (encoder, decoder) = {
            // The file's bytes are dropped once the layers hold their own copies.
            let bytes = read("model.bin")?;
            let model =
                ct2::Ct2Model::parse(&bytes).map_err(|e| load_error(format!("model.bin: {e}")))?;
            model
                .expect_spec("WhisperSpec")
                .map_err(|e| load_error(format!("model.bin: {e}")))?;
            let n_mels = model
                .get("encoder/conv1/weight")
                .map_err(|e| load_error(e.to_string()))?
                .dims
                .get(1)
                .copied()
                .unwrap_or(0);
            if n_mels != N_MELS {
                return Err(TranscribeError::UnsupportedModel { found: n_mels });
            }
            let encoder =
                Encoder::load(&model, &Device::Cpu).map_err(|e| load_error(e.to_string()))?;
            let decoder = Decoder::load(&model).map_err(|e| load_error(e.to_string()))?;
            (encoder, decoder)
        };

        let vocab_text = String::from_utf8(read("vocabulary.txt")?)
            .map_err(|e| load_error(format!("vocabulary.txt: {e}")))?;
        let vocab = Vocabulary::parse(&vocab_text)
            .map_err(|e| load_error(format!("vocabulary.txt: {e}")))?;
        if vocab.len() != decoder.vocab_size() {
            return Err(load_error(format!(
                "vocabulary.txt has {} tokens; the model's embedding has {}",
                vocab.len(),
                decoder.vocab_size()
            )));
        }
        let suppress: SuppressLists = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| load_error(format!("config.json: {e}")))?;

        let threads = if settings.threads == 0 {
            WhisperSettings::default().threads
        } else {
            settings.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("whisper-{i}"))
            .build()
            .map_err(|e| load_error(format!("starting {threads} inference threads: {e}")))?;
        Ok(Self {
            encoder,
            decoder,
            vocab,
            suppress,
            front_end: LogMel::new(),
            pool,
        })
    }

    /// Transcribes 16 kHz mono samples in `[-1, 1]` into segments in time order.
    ///
    /// Audio longer than 30 s is heard in windows cut at pauses; a phrase left unfinished or
    /// unheard at the end of a window is heard again at the start of the next. Each window's
    /// times are offset by where it starts. Blocking and CPU-bound.
    pub fn transcribe(&self, samples_16k_mono: &[f32]) -> Result<Vec<Segment>, TranscribeError> {
        self.transcribe_until(samples_16k_mono, &AtomicBool::new(false))
    }

    /// As [`LocalWhisper::transcribe`], stopping with [`TranscribeError::Cancelled`] before
    /// the next window once `cancelled` is set: a caller that has given up (a job attempt past
    /// its time-out) frees the CPU within one window instead of at the end of the recording.
    pub fn transcribe_until(
        &self,
        samples_16k_mono: &[f32],
        cancelled: &AtomicBool,
    ) -> Result<Vec<Segment>, TranscribeError> {
        self.transcribe_reporting(samples_16k_mono, cancelled, &mut |_| {})
    }

    /// As [`LocalWhisper::transcribe_until`], calling `on_window` after each window with how
    /// much of the audio has been heard, so a caller can show progress. The transcription is
    /// the same as without it.
    pub fn transcribe_reporting(
        &self,
        samples_16k_mono: &[f32],
        cancelled: &AtomicBool,
        on_window: &mut (dyn FnMut(WindowsHeard) + Send),
    ) -> Result<Vec<Segment>, TranscribeError> {
        self.pool
            .install(|| self.transcribe_on_pool(samples_16k_mono, cancelled, on_window))
    }

    fn transcribe_on_pool(
        &self,
        samples: &[f32],
        cancelled: &AtomicBool,
        on_window: &mut (dyn FnMut(WindowsHeard) + Send),
    ) -> Result<Vec<Segment>, TranscribeError> {
        let mut windows = 0;
        let speech = SpeechMap::new(samples);
        let mut segments: Vec<Segment> = Vec::new();
        let mut start = 0;
        while start < samples.len() {
            if cancelled.load(Ordering::Relaxed) {
                return Err(TranscribeError::Cancelled {
                    heard_secs: start as f64 / SAMPLE_RATE as f64,
                });
            }
            let end = windows::window_end(samples, start);
            let started = std::time::Instant::now();
            let offset = start as f64 / SAMPLE_RATE as f64;
            let window_secs = (end - start) as f64 / SAMPLE_RATE as f64;
            let heard = if speech.has_speech(offset, offset + window_secs) {
                self.transcribe_window(&samples[start..end], start as u64)?
            } else {
                Vec::new()
            };
            let (mut keep, mut resume) = windows::resume_after(&heard, end - start);
            if end == samples.len() && keep < heard.len() {
                // In the last window an open phrase simply runs to the end of the audio: keep
                // it. Speech left unheard after the last closed phrase is still heard again
                // (the model sometimes stops early in a full window and drops the last phrase).
                (keep, resume) = (heard.len(), end - start);
            }
            tracing::debug!(
                from_secs = offset,
                to_secs = end as f64 / SAMPLE_RATE as f64,
                segments = heard.len(),
                kept = keep,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "transcribed a window"
            );
            for s in heard.into_iter().take(keep) {
                if !speech.has_speech(offset + s.start, offset + s.end) {
                    tracing::debug!(text = %s.text, "dropped text written over silence");
                    continue;
                }
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
            windows += 1;
            on_window(WindowsHeard {
                windows,
                heard_secs: start.min(samples.len()) as f64 / SAMPLE_RATE as f64,
                total_secs: samples.len() as f64 / SAMPLE_RATE as f64,
            });
        }
        Ok(segments)
    }

    fn transcribe_window(
        &self,
        audio: &[f32],
        seed: u64,
    ) -> Result<Vec<timestamps::WindowSegment>, TranscribeError> {
        let window_secs = audio.len() as f64 / SAMPLE_RATE as f64;
        let inference = |e: candle_core::Error| TranscribeError::Inference {
            reason: e.to_string(),
        };
        let features = self.front_end.compute(audio);
        let features =
            Tensor::from_vec(features, (1, N_MELS, N_FRAMES), &Device::Cpu).map_err(inference)?;
        let started = std::time::Instant::now();
        let encoded = self.encoder.forward(&features).map_err(inference)?;
        let cross = self.decoder.cross_cache(&encoded).map_err(inference)?;
        drop(encoded);
        let encoded_ms = started.elapsed().as_secs_f64() * 1e3;

        let policy = Policy {
            decoder: &self.decoder,
            vocab: &self.vocab,
            suppress: &self.suppress,
        };
        let started = std::time::Instant::now();
        let decoded = policy.decode_with_fallback(&cross, seed);
        tracing::debug!(
            encoded_ms,
            decoded_ms = started.elapsed().as_secs_f64() * 1e3,
            tokens = decoded.tokens.len(),
            temperature = decoded.temperature,
            "decoded a window"
        );
        if decoded.is_silence() {
            tracing::debug!(
                no_speech_prob = decoded.no_speech_prob,
                avg_log_prob = decoded.avg_log_prob,
                "window judged silent"
            );
            return Ok(Vec::new());
        }
        let tokens: Vec<String> = decoded
            .tokens
            .iter()
            .map(|&t| self.vocab.token(t).to_string())
            .collect();
        timestamps::segments(&tokens, window_secs, |text| {
            Ok::<_, TranscribeError>(Vocabulary::decode(text))
        })
    }
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
}
