//! A small benchmark the CLI can run: how fast and how big is transcription on this machine?

use std::path::Path;
use std::time::Instant;

use crate::audio::{self, AudioError};
use crate::transcribe::{LocalWhisper, Segment, TranscribeError, WhisperSettings};

/// See [`BenchReport::optimised_build`].
pub const OPTIMISED_BUILD: bool = cfg!(optimised_build);

#[derive(Debug, Clone, PartialEq)]
pub struct BenchReport {
    /// Length of the audio.
    pub audio_secs: f64,
    /// Loading the model (not part of the real-time factor: a worker loads it once).
    pub load_secs: f64,
    /// Decoding and resampling the file.
    pub decode_secs: f64,
    /// Running Whisper.
    pub transcribe_secs: f64,
    /// `(decode_secs + transcribe_secs) / audio_secs`: below 1 is faster than real time.
    pub real_time_factor: f64,
    /// The process's peak resident memory (`VmHWM`), if the platform reports it.
    pub peak_rss_bytes: Option<u64>,
    /// Whether this crate was compiled with optimisations: timings from an unoptimised build are
    /// tens of times too slow to mean anything (`cargo run --release`, or the `opt-level`
    /// overrides the workspace sets for this crate and candle).
    pub optimised_build: bool,
    pub segments: Vec<Segment>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Audio(#[from] AudioError),
    #[error(transparent)]
    Transcribe(#[from] TranscribeError),
}

/// Loads the model in `model_dir`, transcribes `audio_file` and measures it. Blocking.
pub fn bench_file(model_dir: &Path, audio_file: &Path) -> Result<BenchReport, BenchError> {
    bench_file_with(model_dir, audio_file, &WhisperSettings::default())
}

/// [`bench_file`] with other settings, e.g. to compare beam sizes or thread counts.
pub fn bench_file_with(
    model_dir: &Path,
    audio_file: &Path,
    settings: &WhisperSettings,
) -> Result<BenchReport, BenchError> {
    let started = Instant::now();
    let whisper = LocalWhisper::load_with(model_dir, settings)?;
    let load_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let samples = audio::decode_file(audio_file)?;
    let decode_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let segments = whisper.transcribe(&samples)?;
    let transcribe_secs = started.elapsed().as_secs_f64();

    let audio_secs = audio::duration_secs(&samples);
    Ok(BenchReport {
        audio_secs,
        load_secs,
        decode_secs,
        transcribe_secs,
        real_time_factor: (decode_secs + transcribe_secs) / audio_secs.max(f64::EPSILON),
        peak_rss_bytes: peak_rss_bytes(),
        optimised_build: OPTIMISED_BUILD,
        segments,
    })
}

/// Peak resident set size of this process, from `VmHWM` in `/proc/self/status` (Linux).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut parts = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peak_is_read_from_vm_hwm_in_kilobytes() {
        let status = "Name:\tvoxline\nVmPeak:\t  999 kB\nVmHWM:\t  235520 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(235_520 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reports_a_peak() {
        assert!(peak_rss_bytes().is_some_and(|b| b > 0));
    }
}
