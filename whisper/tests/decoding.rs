//! Decoding every accepted upload type (Opus included) into 16 kHz mono, and refusing the rest
//! with a reason.
//! Fixtures are spoken by espeak-ng and re-encoded by ffmpeg.

mod support;

use std::path::{Path, PathBuf};

use support::{convert, speak};
use voxline_whisper::{AudioError, audio, decode_bytes, decode_file};

struct Fixture {
    _dir: tempfile::TempDir,
    source: PathBuf,
    /// The source decoded without any conversion, the yardstick for the others.
    reference: Vec<f32>,
}

fn fixture() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source.wav");
    speak(
        "Let us talk about the price before we sign anything.",
        &source,
    )?;
    let reference = decode_file(&source).expect("espeak-ng's WAV decodes");
    Some(Fixture {
        _dir: dir,
        source,
        reference,
    })
}

impl Fixture {
    fn encode(&self, name: &str, args: &[&str]) -> Option<PathBuf> {
        let out = self.source.with_file_name(name);
        convert(&self.source, args, &out)?;
        Some(out)
    }
}

fn rms(samples: &[f32]) -> f64 {
    (samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len() as f64)
        .sqrt()
}

/// Same length (lossy codecs add a few ms of padding) and same loudness as the reference.
fn assert_same_audio(name: &str, decoded: &[f32], reference: &[f32]) {
    let length_diff = (audio::duration_secs(decoded) - audio::duration_secs(reference)).abs();
    assert!(
        length_diff < 0.1,
        "{name}: length differs by {length_diff:.3} s"
    );
    let (level, expected) = (rms(decoded), rms(reference));
    assert!(
        (level / expected - 1.0).abs() < 0.15,
        "{name}: RMS {level:.4}, expected about {expected:.4}"
    );
    assert!(
        decoded.iter().all(|s| s.is_finite() && s.abs() <= 1.5),
        "{name}: samples out of range"
    );
}

#[test]
fn speech_from_espeak_ng_is_decoded_at_16_khz_mono() {
    let Some(f) = fixture() else { return };
    // espeak-ng writes 22 050 Hz mono; the sentence takes a few seconds.
    let secs = audio::duration_secs(&f.reference);
    assert!((2.0..8.0).contains(&secs), "{secs} s");
    assert!(rms(&f.reference) > 0.01);
}

/// The voice copied to both channels at full level (ffmpeg's `-ac 2` would pan it 3 dB down),
/// so the mono downmix must give back the source level.
const BOTH_CHANNELS: &str = "pan=stereo|c0=c0|c1=c0";

#[test]
fn every_accepted_container_decodes_to_the_same_audio() {
    let Some(f) = fixture() else { return };
    let formats: [(&str, &[&str]); 10] = [
        ("stereo-44k.wav", &["-af", BOTH_CHANNELS, "-ar", "44100"]),
        ("float-48k.wav", &["-ar", "48000", "-c:a", "pcm_f32le"]),
        ("16k.wav", &["-ar", "16000"]),
        ("speech.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"]),
        ("speech.m4a", &["-c:a", "aac", "-b:a", "64k"]),
        ("speech.aac", &["-c:a", "aac", "-b:a", "64k"]),
        ("speech.ogg", &["-c:a", "libvorbis", "-q:a", "4"]),
        ("speech.webm", &["-c:a", "libvorbis", "-q:a", "4"]),
        ("speech.flac", &["-c:a", "flac"]),
        (
            "stereo.flac",
            &["-af", BOTH_CHANNELS, "-ar", "48000", "-c:a", "flac"],
        ),
    ];
    for (name, args) in formats {
        let Some(path) = f.encode(name, args) else {
            return;
        };
        let decoded = decode_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same_audio(name, &decoded, &f.reference);
    }
}

#[test]
fn an_upload_in_memory_decodes_like_the_file() {
    let Some(f) = fixture() else { return };
    let Some(path) = f.encode("speech.mp3", &["-c:a", "libmp3lame"]) else {
        return;
    };
    let bytes = std::fs::read(&path).expect("read");
    // Without an extension hint the content alone decides.
    let from_memory = decode_bytes(bytes, None).expect("decode");
    assert_eq!(from_memory, decode_file(&path).expect("decode"));
}

/// The best normalised cross-correlation of `a` and `b` within `max_lag` samples either way.
fn best_correlation(a: &[f32], b: &[f32], max_lag: usize) -> f64 {
    let n = a.len().min(b.len()).saturating_sub(max_lag);
    let corr = |x: &[f32], y: &[f32]| {
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (p, q) in x.iter().zip(y) {
            let (p, q) = (f64::from(*p), f64::from(*q));
            xy += p * q;
            xx += p * p;
            yy += q * q;
        }
        xy / (xx * yy).sqrt().max(f64::MIN_POSITIVE)
    };
    (0..=max_lag)
        .flat_map(|lag| {
            [
                corr(&a[lag..lag + n], &b[..n]),
                corr(&a[..n], &b[lag..lag + n]),
            ]
        })
        .fold(f64::MIN, f64::max)
}

/// Opus is what browsers record (MediaRecorder's WebM and Ogg): in every container, at the
/// bitrates recorders use, mono and stereo, it decodes to the source's length and level, and
/// to the same waveform as an independent decoder (ffmpeg's) gives for the same file.
#[test]
fn opus_in_every_container_decodes_like_an_independent_decoder() {
    let Some(f) = fixture() else { return };
    let formats: [(&str, &[&str]); 4] = [
        ("speech.opus", &["-c:a", "libopus", "-b:a", "32k"]),
        ("speech-opus.ogg", &["-c:a", "libopus", "-b:a", "24k"]),
        ("speech-opus.webm", &["-c:a", "libopus", "-b:a", "48k"]),
        (
            "stereo-opus.webm",
            &["-af", BOTH_CHANNELS, "-c:a", "libopus", "-b:a", "64k"],
        ),
    ];
    for (name, args) in formats {
        let Some(path) = f.encode(name, args) else {
            return;
        };
        let decoded = decode_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_same_audio(name, &decoded, &f.reference);

        let by_ffmpeg = path.with_extension("ffmpeg.wav");
        convert(&path, &["-ar", "16000", "-ac", "1"], &by_ffmpeg).expect("ffmpeg is there");
        let independent = decode_file(&by_ffmpeg).expect("16 kHz WAV");
        // Opus starts with a few ms of encoder delay that decoders trim differently.
        let likeness = best_correlation(&decoded, &independent, 400);
        assert!(
            likeness > 0.95,
            "{name}: correlation {likeness:.3} with ffmpeg's decoding"
        );
    }
}

#[test]
fn bytes_that_are_not_audio_are_refused_as_unrecognised() {
    let junk: Vec<u8> = (0..50_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for extension in [Some("wav"), Some("mp3"), Some("m4a"), None] {
        let result = decode_bytes(junk.clone(), extension);
        assert!(
            matches!(
                result,
                Err(AudioError::UnrecognisedFormat { .. } | AudioError::Corrupt { .. })
            ),
            "{extension:?}: {result:?}"
        );
    }
}

#[test]
fn an_empty_or_missing_file_is_an_error() {
    assert!(decode_bytes(Vec::new(), Some("wav")).is_err());
    let missing = Path::new("/nonexistent/voxline/upload.wav");
    assert!(matches!(decode_file(missing), Err(AudioError::Open { .. })));
}

#[test]
fn a_wav_header_with_no_samples_is_empty_not_a_crash() {
    let Some(f) = fixture() else { return };
    let bytes = std::fs::read(&f.source).expect("read");
    // The 44-byte RIFF header espeak-ng writes, with nothing after it.
    let result = decode_bytes(bytes[..44].to_vec(), Some("wav"));
    assert!(
        matches!(result, Err(AudioError::Empty | AudioError::Corrupt { .. })),
        "{result:?}"
    );
}

#[test]
fn damaged_files_of_every_kind_give_a_result_or_an_error_but_never_panic() {
    let Some(f) = fixture() else { return };
    let formats: [(&str, &[&str]); 8] = [
        ("d.wav", &[]),
        ("d.mp3", &["-c:a", "libmp3lame"]),
        ("d.m4a", &["-c:a", "aac"]),
        ("d.ogg", &["-c:a", "libvorbis"]),
        ("d.webm", &["-c:a", "libvorbis"]),
        ("d.flac", &["-c:a", "flac"]),
        ("d.opus", &["-c:a", "libopus"]),
        ("d-opus.webm", &["-c:a", "libopus"]),
    ];
    for (name, args) in formats {
        let Some(path) = f.encode(name, args) else {
            return;
        };
        let bytes = std::fs::read(&path).expect("read");
        let extension = Path::new(name).extension().and_then(|e| e.to_str());
        let mut damaged = Vec::new();
        for fraction in [0.02, 0.1, 0.5, 0.9] {
            let at = (bytes.len() as f64 * fraction) as usize;
            // Cut short, as an interrupted upload is.
            damaged.push(bytes[..at].to_vec());
            // Overwritten in the middle, as a bad disk or a buggy client does.
            let mut garbled = bytes.clone();
            for (i, b) in garbled[at..(at + 2_000).min(bytes.len())]
                .iter_mut()
                .enumerate()
            {
                *b = (i * 131 % 251) as u8;
            }
            damaged.push(garbled);
        }
        for file in damaged {
            let len = file.len();
            let outcome = std::panic::catch_unwind(|| decode_bytes(file, extension));
            assert!(
                outcome.is_ok(),
                "{name} damaged at {len} bytes made the decoder panic"
            );
        }
    }
}
