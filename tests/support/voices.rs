//! Recordings of conversations made with two espeak-ng voices at known turn times: a stereo
//! file (one speaker per channel, each channel carrying the other side's bleed 25 dB down) or
//! a mono mix, as 16 kHz 16-bit WAV. When espeak-ng is missing the maker says so (fails in CI)
//! and returns `None`.

use std::path::Path;

pub const RATE: usize = 16_000;
/// Quieter than this is the silence around a spoken line.
const SILENCE_DBFS: f32 = -45.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    User,
    Partner,
}

impl Who {
    /// The speaker label voxline gives this side.
    pub fn label(self) -> &'static str {
        match self {
            Who::User => "user",
            Who::Partner => "partner",
        }
    }

    /// Two espeak-ng voices the speaker model tells apart. Not every pair is: espeak-ng's
    /// variants share one synthesiser, and `en-us -p 35` against `en-gb+f4 -p 70` comes out
    /// "not confident" (see the diarization table in the README).
    fn voice(self) -> &'static [&'static str] {
        match self {
            Who::User => &["-v", "en-us", "-p", "35"],
            Who::Partner => &["-v", "en-us+f2"],
        }
    }
}

/// A turn to speak: who, what, and the silence before it.
pub struct Line {
    pub who: Who,
    pub text: &'static str,
    pub gap_before: f64,
}

pub const fn line(who: Who, gap_before: f64, text: &'static str) -> Line {
    Line {
        who,
        text,
        gap_before,
    }
}

/// A discovery call: the partner asks two questions, the user two; the user's last turn holds
/// a 2.5 s pause (two lines with no partner between).
pub const DISCOVERY_CALL: [Line; 7] = [
    line(
        Who::Partner,
        0.5,
        "Thanks for calling Initech. How can I help you today?",
    ),
    line(
        Who::User,
        0.8,
        "Hi there. How does your team handle reporting today?",
    ),
    line(
        Who::Partner,
        0.8,
        "We export spreadsheets every Friday afternoon. Is that normal?",
    ),
    line(
        Who::User,
        0.8,
        "It is common. What does that cost your team each week?",
    ),
    line(Who::Partner, 0.8, "Six hours of work for two people."),
    line(Who::User, 0.8, "We could automate most of that work."),
    line(Who::User, 2.5, "Let us book a demonstration next week."),
];

/// The user's questions in [`DISCOVERY_CALL`].
pub const DISCOVERY_CALL_USER_QUESTIONS: u64 = 2;

/// Where a turn's sound is, in the recording made.
#[derive(Debug, Clone, Copy)]
pub struct Turn {
    pub who: Who,
    pub start: f64,
    pub end: f64,
}

/// Both sides' channels, sample-aligned, and where each turn lies.
pub struct Recording {
    pub user: Vec<f32>,
    pub partner: Vec<f32>,
    pub turns: Vec<Turn>,
}

fn speak(who: Who, text: &str, dir: &Path) -> Option<Vec<f32>> {
    let out = dir.join(format!("line-{}.wav", rand::random::<u32>()));
    let status = std::process::Command::new("espeak-ng")
        .args(who.voice())
        .args(["-s", "160", "-w"])
        .arg(&out)
        .arg(text)
        .status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        super::service_missing("espeak-ng", &format!("{status:?}"));
        return None;
    }
    Some(voxline_whisper::decode_file(&out).expect("espeak-ng's wav decodes"))
}

/// Speaks `lines` in turn (scratch files go to `dir`), with half a second of silence at the end.
pub fn record(lines: &[Line], dir: &Path) -> Option<Recording> {
    let (mut user, mut partner, mut turns) = (Vec::new(), Vec::new(), Vec::new());
    for line in lines {
        let spoken = speak(line.who, line.text, dir)?;
        // A line's turn is its sound: espeak-ng's leading and trailing silence is cut.
        let clip = voxline_whisper::audio::trim_silence(&spoken, SILENCE_DBFS);
        let silence = (line.gap_before * RATE as f64) as usize;
        user.extend(std::iter::repeat_n(0.0, silence));
        partner.extend(std::iter::repeat_n(0.0, silence));
        let start = user.len() as f64 / RATE as f64;
        let (own, other) = match line.who {
            Who::User => (&mut user, &mut partner),
            Who::Partner => (&mut partner, &mut user),
        };
        own.extend(clip.iter().map(|s| s * 0.8));
        // The other channel hears the line 25 dB down (a headset's bleed).
        other.extend(clip.iter().map(|s| s * 0.8 * 0.056));
        turns.push(Turn {
            who: line.who,
            start,
            end: user.len() as f64 / RATE as f64,
        });
    }
    user.extend(std::iter::repeat_n(0.0, RATE / 2));
    partner.extend(std::iter::repeat_n(0.0, RATE / 2));
    Some(Recording {
        user,
        partner,
        turns,
    })
}

/// A 16 kHz 16-bit WAV of `channels` (equal lengths), interleaved in order.
pub fn wav(channels: &[&[f32]]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: RATE as u32,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut bytes = std::io::Cursor::new(Vec::new());
    let mut writer = hound::WavWriter::new(&mut bytes, spec).expect("wav writer");
    for i in 0..channels[0].len() {
        for channel in channels {
            writer
                .write_sample((channel[i].clamp(-1.0, 1.0) * 32767.0) as i16)
                .expect("sample");
        }
    }
    writer.finalize().expect("wav");
    bytes.into_inner()
}

impl Recording {
    /// The user on channel 0, the partner on channel 1.
    pub fn stereo(&self) -> Vec<u8> {
        wav(&[&self.user, &self.partner])
    }

    /// Both sides in one channel: each line once (the bleed is not mixed in).
    pub fn mono(&self) -> Vec<u8> {
        let mixed: Vec<f32> = self
            .user
            .iter()
            .zip(&self.partner)
            .zip(self.turns_mask())
            .map(|((u, p), who)| match who {
                Some(Who::User) => *u,
                Some(Who::Partner) => *p,
                None => 0.0,
            })
            .collect();
        wav(&[&mixed])
    }

    /// Whose turn each sample lies in.
    pub fn turns_mask(&self) -> Vec<Option<Who>> {
        (0..self.user.len())
            .map(|i| {
                let t = i as f64 / RATE as f64;
                self.turns
                    .iter()
                    .find(|turn| t >= turn.start && t < turn.end)
                    .map(|turn| turn.who)
            })
            .collect()
    }

    /// The user's share of the seconds spoken, from the placed sound.
    pub fn talk_ratio(&self) -> f64 {
        let seconds = |who| -> f64 {
            self.turns
                .iter()
                .filter(|t| t.who == who)
                .map(|t| t.end - t.start)
                .sum()
        };
        seconds(Who::User) / (seconds(Who::User) + seconds(Who::Partner))
    }

    /// Whose turn the segment lies in: the turn it overlaps most.
    pub fn speaker_of(&self, start: f64, end: f64) -> Option<Who> {
        self.turns
            .iter()
            .map(|t| (t.who, (end.min(t.end) - start.max(t.start)).max(0.0)))
            .filter(|(_, overlap)| *overlap > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(who, _)| who)
    }
}
