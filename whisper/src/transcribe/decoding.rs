//! Choosing tokens: Whisper's logit rules, greedy or sampled steps, and the guards that keep
//! it honest on silence and noise.
//!
//! The rules are OpenAI's (`whisper/decoding.py`): `SuppressBlank` and `SuppressTokens` (the
//! lists come with the model's `config.json`), and `ApplyTimestampRules` — timestamps come in
//! pairs around text, never go backwards, the first token is a timestamp within the first
//! second, and when the timestamps together are likelier than any text token a timestamp is
//! taken. The guards are faster-whisper's (`transcribe.py`): a window is decoded again at
//! rising temperatures when its text repeats itself (compression ratio above 2.4) or is
//! improbable (average log-probability below −1), and judged silent when the no-speech token is
//! likely and the text improbable.

use std::io::Write;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::decoder::{CrossCache, Decoder};
use super::kernels;
use super::vocab::Vocabulary;

/// Temperatures tried in turn until a decoding passes the guards.
pub const TEMPERATURES: [f32; 6] = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0];
pub const COMPRESSION_RATIO_THRESHOLD: f64 = 2.4;
pub const LOG_PROB_THRESHOLD: f32 = -1.0;
pub const NO_SPEECH_THRESHOLD: f32 = 0.6;
/// The first timestamp may be at most this late (OpenAI's `max_initial_timestamp`).
const MAX_INITIAL_TIMESTAMP_SECS: f32 = 1.0;
const SECS_PER_TIMESTAMP: f32 = 0.02;

/// What the model's `config.json` says to suppress.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct SuppressLists {
    /// Never generated (non-speech symbols, special tokens).
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Not generated as the first token (a blank and end-of-text).
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
}

/// One decoding of one window.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Text and timestamp tokens, without the prompt or end-of-text.
    pub tokens: Vec<u32>,
    pub avg_log_prob: f32,
    pub no_speech_prob: f32,
    pub compression_ratio: f64,
    pub temperature: f32,
}

impl Decoded {
    /// Whisper's "silent window" rule: the no-speech token likely *and* the text improbable.
    /// Either alone drops real speech.
    pub fn is_silence(&self) -> bool {
        self.no_speech_prob > NO_SPEECH_THRESHOLD && self.avg_log_prob < LOG_PROB_THRESHOLD
    }

    fn needs_fallback(&self) -> bool {
        if self.no_speech_prob > NO_SPEECH_THRESHOLD {
            // Likely silence: a hotter decoding will not find speech that is not there.
            return false;
        }
        self.compression_ratio > COMPRESSION_RATIO_THRESHOLD
            || self.avg_log_prob < LOG_PROB_THRESHOLD
    }
}

pub struct Policy<'a> {
    pub decoder: &'a Decoder,
    pub vocab: &'a Vocabulary,
    pub suppress: &'a SuppressLists,
}

impl Policy<'_> {
    /// Decodes a window, falling back to hotter temperatures while the result fails the guards;
    /// when every temperature fails, the likeliest result is kept. `seed` makes sampling
    /// repeatable.
    pub fn decode_with_fallback(&self, cross: &CrossCache, seed: u64) -> Decoded {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut best: Option<Decoded> = None;
        for temperature in TEMPERATURES {
            let decoded = self.decode(cross, temperature, &mut rng);
            if !decoded.needs_fallback() {
                return decoded;
            }
            tracing::debug!(
                temperature,
                compression_ratio = decoded.compression_ratio,
                avg_log_prob = decoded.avg_log_prob,
                "decoding again at a higher temperature"
            );
            if best
                .as_ref()
                .is_none_or(|b| decoded.avg_log_prob > b.avg_log_prob)
            {
                best = Some(decoded);
            }
        }
        best.unwrap_or_else(|| self.decode(cross, 0.0, &mut rng))
    }

    /// One decoding at `temperature` (0 is greedy).
    pub fn decode(&self, cross: &CrossCache, temperature: f32, rng: &mut StdRng) -> Decoded {
        let specials = &self.vocab.specials;
        let mut state = self.decoder.start(cross);
        let mut logits = vec![0.0f32; self.decoder.vocab_size()];
        self.decoder
            .step(specials.start_of_transcript, &mut state, &mut logits);
        let no_speech_prob = probability_of(&logits, specials.no_speech as usize);

        // Room for the prompt plus the sampled tokens, as OpenAI's `sample_len` (224 = 448 / 2).
        let sample_len = self.decoder.max_positions / 2;
        let mut tokens: Vec<u32> = Vec::new();
        let mut sum_log_prob = 0.0f32;
        loop {
            self.apply_rules(&mut logits, &tokens);
            let next = if temperature > 0.0 {
                sample(&logits, temperature, rng)
            } else {
                argmax(&logits)
            };
            sum_log_prob += log_softmax_at(&logits, next as usize);
            if next == specials.end_of_text
                || tokens.len() + 1 >= sample_len
                || state.len() + 1 >= self.decoder.max_positions
            {
                if next != specials.end_of_text {
                    tokens.push(next);
                }
                break;
            }
            tokens.push(next);
            self.decoder.step(next, &mut state, &mut logits);
        }

        let text: Vec<String> = tokens
            .iter()
            .filter(|&&t| self.vocab.is_text(t))
            .map(|&t| self.vocab.token(t).to_string())
            .collect();
        Decoded {
            avg_log_prob: sum_log_prob / (tokens.len() as f32 + 1.0),
            no_speech_prob,
            compression_ratio: compression_ratio(&Vocabulary::decode(&text)),
            temperature,
            tokens,
        }
    }

    /// SuppressBlank, SuppressTokens and ApplyTimestampRules over the next token's logits,
    /// given the tokens sampled so far.
    fn apply_rules(&self, logits: &mut [f32], tokens: &[u32]) {
        let specials = &self.vocab.specials;
        let ts_begin = specials.timestamp_begin as usize;
        let eot = specials.end_of_text as usize;
        let forbid = |logits: &mut [f32], range: std::ops::Range<usize>| {
            let end = range.end.min(logits.len());
            for l in &mut logits[range.start.min(end)..end] {
                *l = f32::NEG_INFINITY;
            }
        };

        if tokens.is_empty() {
            for &t in &self.suppress.suppress_ids_begin {
                forbid(logits, t as usize..t as usize + 1);
            }
        }
        for &t in &self.suppress.suppress_ids {
            forbid(logits, t as usize..t as usize + 1);
        }
        let no_ts = specials.no_timestamps as usize;
        forbid(logits, no_ts..no_ts + 1);

        let is_ts = |t: u32| t as usize >= ts_begin;
        let last_was_ts = tokens.last().is_some_and(|&t| is_ts(t));
        let penultimate_was_ts = tokens.len() < 2 || is_ts(tokens[tokens.len() - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                // A pair of timestamps closed a segment: text (or the end) comes next.
                forbid(logits, ts_begin..logits.len());
            } else {
                // A timestamp after text: another timestamp or the end, not text.
                forbid(logits, 0..eot);
            }
        }
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| is_ts(t)) {
            // Time never goes backwards; a segment that just opened may not be empty.
            let floor = if last_was_ts && !penultimate_was_ts {
                last_ts as usize
            } else {
                last_ts as usize + 1
            };
            forbid(logits, ts_begin..floor);
        }
        if tokens.is_empty() {
            forbid(logits, 0..ts_begin);
            let latest = (MAX_INITIAL_TIMESTAMP_SECS / SECS_PER_TIMESTAMP).round() as usize;
            forbid(logits, ts_begin + latest + 1..logits.len());
        }

        // When the timestamps together are likelier than any single text token, take one.
        let max = kernels::max(logits);
        if max.is_finite() {
            let log_sum = log_sum_exp(logits, max);
            let ts_log_prob = log_sum_exp(&logits[ts_begin..], max) - log_sum;
            let max_text = kernels::max(&logits[..ts_begin]) - log_sum;
            if ts_log_prob > max_text {
                forbid(logits, 0..ts_begin);
            }
        }
    }
}

/// `ln Σ exp(x)`, with the maximum `max` of the whole vector factored out for stability.
fn log_sum_exp(x: &[f32], max: f32) -> f32 {
    max + kernels::sum_exp(x, max).ln()
}

fn log_softmax_at(logits: &[f32], i: usize) -> f32 {
    logits[i] - log_sum_exp(logits, kernels::max(logits))
}

fn probability_of(logits: &[f32], i: usize) -> f32 {
    log_softmax_at(logits, i).exp()
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn sample(logits: &[f32], temperature: f32, rng: &mut StdRng) -> u32 {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let weights: Vec<f32> = logits
        .iter()
        .map(|v| ((v - max) / temperature).exp())
        .collect();
    let total: f32 = weights.iter().sum();
    let mut target = rng.random::<f32>() * total;
    for (i, w) in weights.iter().enumerate() {
        if target < *w {
            return i as u32;
        }
        target -= w;
    }
    argmax(logits)
}

/// How much zlib shrinks the text: a transcript stuck repeating itself compresses very well.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let compressed = encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .map_or(text.len(), |c| c.len());
    text.len() as f64 / compressed.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeating_transcript_compresses_past_the_threshold_and_speech_does_not() {
        let loop_text = "I'm sorry. ".repeat(30);
        assert!(compression_ratio(&loop_text) > COMPRESSION_RATIO_THRESHOLD);
        let speech = "Thanks for taking the time today. Could you tell me how your team \
                      handles onboarding at the moment, and what slows it down?";
        assert!(compression_ratio(speech) < COMPRESSION_RATIO_THRESHOLD);
        assert_eq!(compression_ratio(""), 0.0);
    }

    fn decoded(no_speech_prob: f32, avg_log_prob: f32, compression_ratio: f64) -> Decoded {
        Decoded {
            tokens: vec![],
            avg_log_prob,
            no_speech_prob,
            compression_ratio,
            temperature: 0.0,
        }
    }

    #[test]
    fn silence_needs_both_signs_and_fallback_follows_faster_whisper() {
        assert!(decoded(0.9, -1.5, 1.0).is_silence());
        assert!(
            !decoded(0.9, -0.3, 1.0).is_silence(),
            "confident text is kept"
        );
        assert!(
            !decoded(0.2, -1.5, 1.0).is_silence(),
            "improbable speech is kept"
        );
        assert!(decoded(0.2, -0.2, 3.0).needs_fallback(), "a loop");
        assert!(decoded(0.2, -1.5, 1.0).needs_fallback(), "improbable");
        assert!(!decoded(0.9, -1.5, 3.0).needs_fallback(), "likely silence");
        assert!(!decoded(0.2, -0.2, 1.2).needs_fallback());
    }

    #[test]
    fn sampling_at_a_low_temperature_picks_the_clear_favourite() {
        let mut rng = StdRng::seed_from_u64(1);
        let logits = [0.0, 10.0, 0.0];
        assert!((0..20).all(|_| sample(&logits, 0.2, &mut rng) == 1));
        assert_eq!(argmax(&logits), 1);
    }
}
