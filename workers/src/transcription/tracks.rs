//! One track per speaker, cut from a recording, and the segments heard on each merged back by
//! time. Pure functions over 16 kHz samples, so each rule is checked on synthetic signals.
//!
//! - **Channels.** A call recorded with one speaker per channel still carries some of the other
//!   side on each channel (headset bleed, an echo). A 20 ms frame of a channel is kept when it
//!   is within [`BLEED_DB`] of the loudest channel in that frame and above −55 dBFS, and
//!   silenced otherwise; kept frames are widened by [`HOLD_FRAMES`] on both sides so word edges
//!   are not clipped. Both
//!   sides talking at once are both kept: an overlap stays an overlap.
//! - **Duplicated channels.** A mono recording saved as stereo has the same signal twice;
//!   transcribing each would credit every word to both speakers. Channels whose difference
//!   holds less than [`DUPLICATE_RATIO`] of their energy are treated as one mono recording.
//! - **Voices in one channel.** From diarized turns, each voice's track is the recording with
//!   every other voice's turns silenced.
//! - **Segment times.** A speech-to-text segment's edges are loose (Whisper pads them, and runs
//!   an end on through the silence up to the next speech); on a track where only one speaker
//!   remains, each segment's end is first cut at the next segment's start, then both edges are
//!   tightened to the first and last frame of sound inside it, so talk time and gaps are
//!   measured from the sound.
//! - **Merging.** Segments from all tracks are sorted by start time (ties by end), so
//!   cross-talk keeps its speakers and an interruption is a segment that starts before the
//!   previous speaker's segment ended.

use crate::analysis::metrics::{Segment, Speaker};

pub const SAMPLE_RATE: usize = 16_000;
/// 20 ms frames.
const FRAME: usize = SAMPLE_RATE / 50;
/// A channel's frame this far below the loudest channel's is the other side's bleed.
pub const BLEED_DB: f32 = 15.0;
/// Frames kept on each side of a kept frame (200 ms).
const HOLD_FRAMES: usize = 10;
/// At most this share of energy in the difference: the channels are one signal twice.
pub const DUPLICATE_RATIO: f64 = 0.01;
/// Sound for tightening: within this many dB of the track's loud speech (its 95th percentile
/// frame), and above an absolute floor.
const SOUND_RELATIVE_DB: f32 = 35.0;
const SOUND_FLOOR_DBFS: f32 = -55.0;

/// One speaker's audio: the recording with everyone else silenced.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub speaker: Speaker,
    pub samples: Vec<f32>,
}

fn frame_db(frame: &[f32]) -> f32 {
    let power = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
    10.0 * power.max(1e-12).log10()
}

fn frame_levels(samples: &[f32]) -> Vec<f32> {
    samples.chunks(FRAME).map(frame_db).collect()
}

/// Whether `channels` are (near enough) one signal twice.
pub fn are_duplicates(channels: &[Vec<f32>]) -> bool {
    let Some((first, rest)) = channels.split_first() else {
        return false;
    };
    let energy: f64 = first.iter().map(|s| f64::from(*s).powi(2)).sum();
    rest.iter().all(|other| {
        let difference: f64 = first
            .iter()
            .zip(other)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        let other_energy: f64 = other.iter().map(|s| f64::from(*s).powi(2)).sum();
        let scale = energy.max(other_energy);
        scale == 0.0 || difference <= DUPLICATE_RATIO * scale
    })
}

/// The channels mixed to one.
pub fn mixdown(channels: &[Vec<f32>]) -> Vec<f32> {
    let len = channels.iter().map(Vec::len).max().unwrap_or(0);
    let n = channels.len().max(1) as f32;
    (0..len)
        .map(|i| channels.iter().filter_map(|c| c.get(i)).sum::<f32>() / n)
        .collect()
}

/// One track per channel, each channel's bleed of the others silenced.
pub fn channel_tracks(channels: Vec<Vec<f32>>, speakers: &[Speaker]) -> Vec<Track> {
    let levels: Vec<Vec<f32>> = channels.iter().map(|c| frame_levels(c)).collect();
    let frames = levels.iter().map(Vec::len).max().unwrap_or(0);
    let loudest: Vec<f32> = (0..frames)
        .map(|f| {
            levels
                .iter()
                .filter_map(|l| l.get(f))
                .fold(f32::NEG_INFINITY, |a, b| a.max(*b))
        })
        .collect();
    channels
        .into_iter()
        .zip(levels)
        .zip(speakers)
        .map(|((mut samples, levels), speaker)| {
            // Silence is nobody's: a silent frame equal on every channel must not be widened
            // into the other side's next words.
            let own: Vec<bool> = levels
                .iter()
                .zip(&loudest)
                .map(|(level, top)| *level >= top - BLEED_DB && *level > SOUND_FLOOR_DBFS)
                .collect();
            let keep = widen(&own, HOLD_FRAMES);
            for (f, chunk) in samples.chunks_mut(FRAME).enumerate() {
                if !keep.get(f).copied().unwrap_or(false) {
                    chunk.fill(0.0);
                }
            }
            Track {
                speaker: *speaker,
                samples,
            }
        })
        .collect()
}

/// `flags` with every true one spread `by` places to each side.
fn widen(flags: &[bool], by: usize) -> Vec<bool> {
    let mut out = vec![false; flags.len()];
    for (i, _) in flags.iter().enumerate().filter(|(_, f)| **f) {
        let (from, to) = (i.saturating_sub(by), (i + by + 1).min(flags.len()));
        out[from..to].fill(true);
    }
    out
}

/// A voice's time in a mono recording: `[start, end)` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VoiceTurn {
    pub voice: usize,
    pub start: f64,
    pub end: f64,
}

/// One track per voice: the recording with the other voices' turns silenced. `speaker_of`
/// says whose each voice is.
pub fn voice_tracks(
    mixed: &[f32],
    turns: &[VoiceTurn],
    voices: usize,
    speaker_of: impl Fn(usize) -> Speaker,
) -> Vec<Track> {
    (0..voices)
        .map(|voice| {
            let mut samples = mixed.to_vec();
            for turn in turns.iter().filter(|t| t.voice != voice) {
                let from = seconds_to_sample(turn.start).min(samples.len());
                let to = seconds_to_sample(turn.end).min(samples.len());
                samples[from..to.max(from)].fill(0.0);
            }
            Track {
                speaker: speaker_of(voice),
                samples,
            }
        })
        .collect()
}

fn seconds_to_sample(t: f64) -> usize {
    (t.max(0.0) * SAMPLE_RATE as f64).round() as usize
}

/// Moves each timed segment's edges in to the first and last frame of sound of `track` inside
/// it. A segment with no sound in it keeps its times (the speech map upstream decides whether
/// such text is kept at all).
pub fn tighten(segments: &mut [Segment], track: &[f32]) {
    let levels = frame_levels(track);
    let mut sorted = levels.clone();
    sorted.sort_by(f32::total_cmp);
    let loud = sorted
        .get((sorted.len() as f32 * 0.95) as usize)
        .or(sorted.last())
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    let threshold = (loud - SOUND_RELATIVE_DB).max(SOUND_FLOOR_DBFS);
    let frame_seconds = FRAME as f64 / SAMPLE_RATE as f64;
    // Whisper runs a segment's end on through the silence that follows it, up to the next
    // speech on the track; that next speech is the next segment's, not this one's.
    let next_starts: Vec<Option<f64>> = (0..segments.len())
        .map(|i| segments.get(i + 1).and_then(|next| next.start))
        .collect();
    for (segment, next_start) in segments.iter_mut().zip(next_starts) {
        let (Some(start), Some(mut end)) = (segment.start, segment.end) else {
            continue;
        };
        if let Some(next) = next_start.filter(|n| *n > start && *n < end) {
            end = next;
            segment.end = Some(end);
        }
        let first = (start / frame_seconds).floor().max(0.0) as usize;
        let last = ((end / frame_seconds).ceil().max(0.0) as usize).min(levels.len());
        let Some(sounding) = levels.get(first..last) else {
            continue;
        };
        let Some((on, off)) = owned_sound(sounding, threshold) else {
            continue;
        };
        segment.start = Some(((first + on) as f64 * frame_seconds).max(start));
        segment.end = Some(((first + off) as f64 * frame_seconds).min(end));
    }
}

/// A run of sound this short (frames) after a silence this long at a segment's edge is the edge
/// of a neighbouring utterance the segment's loose times reach into, not the segment's own.
const STRAY_RUN_FRAMES: usize = 15; // 300 ms
const STRAY_GAP_FRAMES: usize = 25; // 500 ms

/// The frames `[on, off)` of the segment's own sound: from its first to its last sounding
/// frame, less stray runs at either edge.
fn owned_sound(levels: &[f32], threshold: f32) -> Option<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        if *level > threshold {
            match runs.last_mut() {
                Some((_, end)) if *end == i => *end = i + 1,
                _ => runs.push((i, i + 1)),
            }
        }
    }
    let stray = |run: (usize, usize), gap: usize| {
        run.1 - run.0 < STRAY_RUN_FRAMES && gap >= STRAY_GAP_FRAMES
    };
    while runs.len() > 1 {
        let (last, before) = (runs[runs.len() - 1], runs[runs.len() - 2]);
        if !stray(last, last.0 - before.1) {
            break;
        }
        runs.pop();
    }
    while runs.len() > 1 {
        let (head, after) = (runs[0], runs[1]);
        if !stray(head, after.0 - head.1) {
            break;
        }
        runs.remove(0);
    }
    Some((runs.first()?.0, runs.last()?.1))
}

/// All tracks' segments in time order.
pub fn merge(tracks: Vec<Vec<Segment>>) -> Vec<Segment> {
    let mut all: Vec<Segment> = tracks.into_iter().flatten().collect();
    all.sort_by(|a, b| {
        let key = |s: &Segment| (s.start.unwrap_or(f64::MAX), s.end.unwrap_or(f64::MAX));
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        let n = (seconds * SAMPLE_RATE as f64) as usize;
        (0..n)
            .map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 200.0 / 16_000.0).sin())
            .collect()
    }

    fn silence(seconds: f64) -> Vec<f32> {
        vec![0.0; (seconds * SAMPLE_RATE as f64) as usize]
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
    }

    fn seconds(samples: &[f32], from: f64, to: f64) -> &[f32] {
        &samples[seconds_to_sample(from)..seconds_to_sample(to)]
    }

    fn seg(speaker: Speaker, start: f64, end: f64) -> Segment {
        Segment {
            speaker,
            start: Some(start),
            end: Some(end),
            text: "words".into(),
        }
    }

    #[test]
    fn each_channel_keeps_its_own_speech_and_loses_the_other_sides_bleed() {
        // 0–2 s the user speaks (partner's channel hears it 25 dB down); 2–4 s the partner
        // speaks (bleed onto the user's channel); 4–5 s both at once.
        let user = [tone(2.0, 0.5), tone(2.0, 0.028), tone(1.0, 0.5)].concat();
        let partner = [tone(2.0, 0.028), tone(2.0, 0.5), tone(1.0, 0.5)].concat();
        let tracks = channel_tracks(vec![user, partner], &[Speaker::User, Speaker::Partner]);
        let (u, p) = (&tracks[0].samples, &tracks[1].samples);
        assert!(rms(seconds(u, 0.0, 1.7)) > 0.3, "the user's speech stays");
        assert_eq!(
            rms(seconds(u, 2.3, 3.7)),
            0.0,
            "the partner's bleed is silenced"
        );
        assert_eq!(rms(seconds(p, 0.3, 1.7)), 0.0);
        assert!(rms(seconds(p, 2.3, 3.7)) > 0.3);
        assert!(rms(seconds(u, 4.0, 5.0)) > 0.3, "an overlap stays on both");
        assert!(rms(seconds(p, 4.0, 5.0)) > 0.3);
        assert_eq!(tracks[1].speaker, Speaker::Partner);
    }

    #[test]
    fn a_mono_signal_saved_twice_is_a_duplicate_and_two_voices_are_not() {
        let a = [tone(1.0, 0.4), silence(1.0)].concat();
        let b = [silence(1.0), tone(1.0, 0.4)].concat();
        assert!(are_duplicates(&[a.clone(), a.clone()]));
        let nearly: Vec<f32> = a.iter().map(|s| s * 0.97).collect();
        assert!(are_duplicates(&[a.clone(), nearly]));
        assert!(!are_duplicates(&[a.clone(), b.clone()]));
        assert_eq!(mixdown(&[a, b]).len(), 32_000);
    }

    #[test]
    fn a_voice_track_silences_the_other_voices_turns() {
        let mixed = tone(3.0, 0.5);
        let turns = [
            VoiceTurn {
                voice: 0,
                start: 0.0,
                end: 1.0,
            },
            VoiceTurn {
                voice: 1,
                start: 1.0,
                end: 2.0,
            },
            VoiceTurn {
                voice: 0,
                start: 2.0,
                end: 3.0,
            },
        ];
        let tracks = voice_tracks(&mixed, &turns, 2, |v| {
            if v == 0 {
                Speaker::User
            } else {
                Speaker::Partner
            }
        });
        assert!(rms(seconds(&tracks[0].samples, 0.0, 1.0)) > 0.3);
        assert_eq!(rms(seconds(&tracks[0].samples, 1.0, 2.0)), 0.0);
        assert_eq!(rms(seconds(&tracks[1].samples, 0.0, 1.0)), 0.0);
        assert!(rms(seconds(&tracks[1].samples, 1.0, 2.0)) > 0.3);
        assert_eq!(rms(seconds(&tracks[1].samples, 2.0, 3.0)), 0.0);
    }

    #[test]
    fn segments_are_tightened_to_their_sound() {
        // Sound from 1.0 to 2.5 s; the transcriber said 0.6 → 3.0.
        let track = [silence(1.0), tone(1.5, 0.5), silence(1.5)].concat();
        let mut segments = vec![seg(Speaker::User, 0.6, 3.0), seg(Speaker::User, 3.2, 3.8)];
        tighten(&mut segments, &track);
        assert_eq!(segments[0].start, Some(1.0));
        assert_eq!(segments[0].end, Some(2.5));
        assert_eq!(
            (segments[1].start, segments[1].end),
            (Some(3.2), Some(3.8)),
            "no sound inside: unchanged"
        );
    }

    #[test]
    fn the_onset_of_the_next_utterance_at_a_segments_edge_is_not_its_own() {
        // The segment's words 1–2.5 s; the next utterance starts at 4.9 s, and the segment's
        // end runs to 5.0 s.
        let track = [silence(1.0), tone(1.5, 0.5), silence(2.4), tone(1.0, 0.5)].concat();
        let mut segments = vec![seg(Speaker::User, 0.9, 5.0)];
        tighten(&mut segments, &track);
        assert_eq!((segments[0].start, segments[0].end), (Some(1.0), Some(2.5)));
        // A pause inside the segment followed by real speech is kept.
        let track = [tone(1.0, 0.5), silence(2.5), tone(1.0, 0.5)].concat();
        let mut segments = vec![seg(Speaker::User, 0.0, 4.5)];
        tighten(&mut segments, &track);
        assert_eq!((segments[0].start, segments[0].end), (Some(0.0), Some(4.5)));
    }

    #[test]
    fn an_end_that_runs_into_the_next_segment_is_cut_there_first() {
        // Sound 0–1 s and 3–4 s; the first segment claims 0 → 3.5.
        let track = [tone(1.0, 0.5), silence(2.0), tone(1.0, 0.5)].concat();
        let mut segments = vec![seg(Speaker::User, 0.0, 3.5), seg(Speaker::User, 2.9, 4.0)];
        tighten(&mut segments, &track);
        assert_eq!((segments[0].start, segments[0].end), (Some(0.0), Some(1.0)));
        assert_eq!((segments[1].start, segments[1].end), (Some(3.0), Some(4.0)));
    }

    #[test]
    fn merged_segments_are_in_time_order_with_their_speakers() {
        let merged = merge(vec![
            vec![seg(Speaker::User, 0.0, 2.0), seg(Speaker::User, 4.5, 6.0)],
            vec![seg(Speaker::Partner, 2.5, 5.0)],
        ]);
        let order: Vec<(Speaker, Option<f64>)> =
            merged.iter().map(|s| (s.speaker, s.start)).collect();
        assert_eq!(
            order,
            [
                (Speaker::User, Some(0.0)),
                (Speaker::Partner, Some(2.5)),
                (Speaker::User, Some(4.5)),
            ]
        );
    }
}
