//! Transcription of synthetic speech (espeak-ng) by Whisper tiny.en, end to end: file → audio
//! → segments, scored by word error rate against the text that was spoken.

mod support;

use std::path::Path;

use support::{convert, joined, speak, whisper, word_error_rate};
use voxline_whisper::{LocalWhisper, Segment, audio, decode_file};

const SENTENCES: [&str; 4] = [
    "Thank you for taking the time to meet with me today.",
    "I would like to understand the biggest challenges your team is facing right now.",
    "Our product helps sales teams practice difficult conversations before they happen.",
    "Could you tell me more about how you handle objections from new customers?",
];

/// About forty seconds at espeak-ng's speed 150: long enough to need two windows.
const LONG_TEXT: &str = "Good morning, and welcome to the weekly coaching session. \
    Today we are going to look at how you open a call with a new customer. \
    The first thing to remember is that people decide very quickly whether they want to keep listening. \
    So start by saying who you are and why you are calling, in one short sentence. \
    Then ask a question that shows you have done some research about their business. \
    After that, listen carefully and write down the words they use to describe their problems. \
    When you answer, use their words instead of your own. \
    Finally, agree on a clear next step before the call ends, such as a demo or a follow-up meeting.";

const MAX_WER: f64 = 0.15;

fn assert_plausible_times(segments: &[Segment], audio_secs: f64) {
    assert!(!segments.is_empty(), "no segments at all");
    let mut previous_end = 0.0;
    for s in segments {
        assert!(
            s.start >= 0.0 && s.end >= s.start,
            "backwards segment {s:?}"
        );
        assert!(
            s.start >= previous_end - 1e-9,
            "segment {s:?} starts before the previous one ended at {previous_end}"
        );
        assert!(
            s.end <= audio_secs + 1e-6,
            "segment {s:?} ends after the audio ({audio_secs} s)"
        );
        assert!(!s.text.trim().is_empty(), "empty segment {s:?}");
        previous_end = s.end;
    }
}

fn transcribe_file(model: &LocalWhisper, path: &Path) -> (Vec<Segment>, f64) {
    let samples = decode_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let segments = model.transcribe(&samples).expect("transcription");
    (segments, audio::duration_secs(&samples))
}

#[test]
fn word_error_rate_is_word_edit_distance_over_normalised_words() {
    assert_eq!(word_error_rate("Hello, world!", "hello world"), 0.0);
    // One substitution in four words.
    assert_eq!(
        word_error_rate("the cat sat down", "the hat sat down"),
        0.25
    );
    // One deletion and one insertion.
    assert_eq!(word_error_rate("a b c d", "a c d e"), 0.5);
    assert_eq!(word_error_rate("follow-up call", "follow up call"), 0.0);
    assert_eq!(word_error_rate("one two", ""), 1.0);
}

#[test]
fn spoken_sentences_are_transcribed_within_fifteen_percent_word_error_rate() {
    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut errors = 0.0;
    let mut words = 0.0;
    for (i, sentence) in SENTENCES.iter().enumerate() {
        let wav = dir.path().join(format!("sentence-{i}.wav"));
        let Some(()) = speak(sentence, &wav) else {
            return;
        };
        let (segments, audio_secs) = transcribe_file(model, &wav);
        assert_plausible_times(&segments, audio_secs);
        let transcript = joined(&segments);
        let wer = word_error_rate(sentence, &transcript);
        eprintln!("WER {wer:.3}  {sentence:?} -> {transcript:?}");
        let n = support::normalise(sentence).len() as f64;
        errors += wer * n;
        words += n;
    }
    let wer = errors / words;
    eprintln!("overall WER on {} sentences: {wer:.3}", SENTENCES.len());
    assert!(wer <= MAX_WER, "WER {wer:.3} is above {MAX_WER}");
}

#[test]
fn a_recording_over_thirty_seconds_is_transcribed_across_windows_with_times_in_order() {
    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("long.wav");
    let Some(()) = speak(LONG_TEXT, &wav) else {
        return;
    };
    let (segments, audio_secs) = transcribe_file(model, &wav);
    assert!(audio_secs > 30.0, "the fixture is only {audio_secs} s long");

    for s in &segments {
        eprintln!("[{:6.2} - {:6.2}] {}", s.start, s.end, s.text);
    }
    assert_plausible_times(&segments, audio_secs);
    assert!(
        segments.iter().any(|s| s.start >= 30.0),
        "no segment after 30 s of {audio_secs} s"
    );
    let last = segments.last().map_or(0.0, |s| s.end);
    assert!(
        last > audio_secs - 5.0,
        "the transcript stops at {last} s of {audio_secs} s"
    );

    let wer = word_error_rate(LONG_TEXT, &joined(&segments));
    eprintln!("WER on the {audio_secs:.1} s recording: {wer:.3}");
    assert!(wer <= MAX_WER, "WER {wer:.3} is above {MAX_WER}");
}

#[test]
fn every_accepted_container_transcribes_to_the_spoken_sentence() {
    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let sentence = SENTENCES[1];
    let wav = dir.path().join("source.wav");
    let Some(()) = speak(sentence, &wav) else {
        return;
    };
    let formats: [(&str, &[&str]); 10] = [
        ("stereo-44k.wav", &["-ac", "2", "-ar", "44100"]),
        ("mp3", &["-c:a", "libmp3lame", "-b:a", "64k"]),
        ("m4a", &["-c:a", "aac", "-b:a", "64k"]),
        ("aac", &["-c:a", "aac", "-b:a", "64k"]),
        ("ogg", &["-c:a", "libvorbis", "-q:a", "4"]),
        ("webm", &["-c:a", "libvorbis", "-q:a", "4"]),
        ("flac", &["-c:a", "flac"]),
        ("48k.wav", &["-ar", "48000", "-c:a", "pcm_s24le"]),
        ("opus", &["-c:a", "libopus", "-b:a", "24k"]),
        ("opus.webm", &["-c:a", "libopus", "-b:a", "48k"]),
    ];
    for (name, args) in formats {
        let file = dir.path().join(format!("speech.{name}"));
        let Some(()) = convert(&wav, args, &file) else {
            return;
        };
        let (segments, audio_secs) = transcribe_file(model, &file);
        assert_plausible_times(&segments, audio_secs);
        let transcript = joined(&segments);
        let wer = word_error_rate(sentence, &transcript);
        eprintln!("{name}: WER {wer:.3} {transcript:?}");
        assert!(wer <= MAX_WER, "{name}: WER {wer:.3} for {transcript:?}");
    }
}

#[test]
fn silence_transcribes_to_no_segments() {
    let Some(model) = whisper() else { return };
    let silence = vec![0.0f32; 5 * 16_000];
    assert_eq!(model.transcribe(&silence).expect("transcription"), vec![]);
    assert_eq!(model.transcribe(&[]).expect("transcription"), vec![]);
}

#[test]
fn one_model_serves_several_threads_with_the_same_result() {
    fn shareable<T: Send + Sync>() {}
    shareable::<LocalWhisper>();

    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("shared.wav");
    let Some(()) = speak(SENTENCES[0], &wav) else {
        return;
    };
    let samples = decode_file(&wav).expect("decode");
    let results: Vec<Vec<Segment>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| model.transcribe(&samples).expect("transcription")))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(results[0], results[1]);
}

/// Just under one window: the model sometimes stops after a phrase that ends well before the
/// window does, so the last phrase must be heard again rather than dropped.
const NEARLY_A_WINDOW: &str = "Thanks for taking the time to talk with me today. I would like to \
    understand how your team handles onboarding right now, and what slows it down. When a new \
    engineer joins, how long does it take before they ship their first change? What tools do they \
    use in the first week? If we could cut that time in half, what would that mean for your \
    roadmap this quarter? Let me tell you how two other teams did it, and then you can tell me \
    whether it sounds like a fit.";

#[test]
fn the_last_phrase_of_a_nearly_full_window_is_not_dropped() {
    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("nearly.wav");
    let Some(()) = speak(NEARLY_A_WINDOW, &wav) else {
        return;
    };
    let (segments, audio_secs) = transcribe_file(model, &wav);
    assert!(
        (25.0..30.0).contains(&audio_secs),
        "the fixture is {audio_secs} s long"
    );
    assert_plausible_times(&segments, audio_secs);
    let heard = joined(&segments).to_lowercase();
    assert!(
        heard.contains("sounds like a fit"),
        "the last phrase is missing: {heard}"
    );
    let wer = word_error_rate(NEARLY_A_WINDOW, &joined(&segments));
    assert!(wer <= MAX_WER, "WER {wer:.3} is above {MAX_WER}");
}

/// Faint noise: what a quiet room sounds like to a microphone, reproducible.
fn faint_noise(secs: f64, amplitude: f32, seed: u32) -> Vec<f32> {
    let mut state = seed;
    (0..(secs * 16_000.0) as usize)
        .map(|_| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((state >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * amplitude
        })
        .collect()
}

#[test]
fn a_long_silence_transcribes_to_no_words() {
    let Some(model) = whisper() else { return };
    // Longer than one window, so every window of it is judged.
    let silence = faint_noise(45.0, 0.0005, 3);
    assert_eq!(model.transcribe(&silence).expect("transcription"), vec![]);
}

#[test]
fn nothing_is_written_over_the_silence_after_speech() {
    let Some(model) = whisper() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("then-silence.wav");
    let Some(()) = speak(SENTENCES[0], &wav) else {
        return;
    };
    let mut samples = decode_file(&wav).expect("decode");
    let speech_secs = audio::duration_secs(&samples);
    samples.extend(faint_noise(20.0, 0.0005, 5));
    let segments = model.transcribe(&samples).expect("transcription");
    assert_plausible_times(&segments, audio::duration_secs(&samples));
    for s in &segments {
        assert!(
            s.start < speech_secs,
            "{s:?} was written over the silence after {speech_secs:.2} s"
        );
    }
    let wer = word_error_rate(SENTENCES[0], &joined(&segments));
    assert!(wer <= MAX_WER, "WER {wer:.3} for {:?}", joined(&segments));
}
