//! The pure steps of diarization, over numbers only: where the speech is, two-way clustering
//! of embeddings, and turning window labels into turns.

use std::ops::Range;

/// Speech by loudness, per 10 ms frame of 25 ms: louder than `max(−55 dBFS, the 95th
/// percentile − 30 dB)`. Gaps under 250 ms are bridged and runs under 200 ms dropped; the
/// result is in samples.
pub fn speech_runs(samples: &[f32], rate: usize) -> Vec<Range<usize>> {
    const FLOOR_DB: f64 = -55.0;
    const RANGE_DB: f64 = 30.0;
    const BRIDGE_SECONDS: f64 = 0.25;
    const MIN_RUN_SECONDS: f64 = 0.2;
    let hop = rate / 100;
    let frame = rate * 25 / 1000;
    if samples.len() < frame {
        return Vec::new();
    }
    let loudness: Vec<f64> = (0..=(samples.len() - frame) / hop)
        .map(|i| {
            let chunk = &samples[i * hop..i * hop + frame];
            let power = chunk.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / frame as f64;
            10.0 * power.max(1e-12).log10()
        })
        .collect();
    let mut sorted = loudness.clone();
    sorted.sort_by(f64::total_cmp);
    let p95 = sorted[(sorted.len() - 1) * 95 / 100];
    let threshold = FLOOR_DB.max(p95 - RANGE_DB);

    let mut runs: Vec<Range<usize>> = Vec::new();
    let bridge = (BRIDGE_SECONDS * 100.0) as usize;
    for (i, db) in loudness.iter().enumerate() {
        if *db <= threshold {
            continue;
        }
        match runs.last_mut() {
            Some(run) if i - run.end <= bridge => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
    }
    let min_run = (MIN_RUN_SECONDS * 100.0) as usize;
    runs.into_iter()
        .filter(|run| run.len() >= min_run)
        .map(|run| run.start * hop..(run.end * hop + frame).min(samples.len()))
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    dot / (norm(a) * norm(b))
}

fn mean(vectors: &[&[f32]]) -> Vec<f32> {
    let mut sum = vec![0.0f32; vectors.first().map_or(0, |v| v.len())];
    for v in vectors {
        for (s, x) in sum.iter_mut().zip(v.iter()) {
            *s += x;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.iter().map(|x| x / norm).collect()
}

/// Two clusters of unit vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct TwoWay {
    /// 0 or 1 per embedding.
    pub labels: Vec<usize>,
    /// Cosine similarity of the two centroids.
    pub between: f32,
    /// Mean similarity of each embedding to its own centroid.
    pub within: f32,
}

/// Splits `embeddings` in two by spherical k-means, started from the two embeddings least
/// alike (so the start is deterministic). Needs two embeddings.
pub fn two_way(embeddings: &[Vec<f32>]) -> Option<TwoWay> {
    if embeddings.len() < 2 {
        return None;
    }
    let all: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
    let overall = mean(&all);
    // The embedding farthest from the mean, then the one farthest from it.
    let far = |from: &[f32]| {
        (0..embeddings.len())
            .min_by(|&a, &b| cosine(&embeddings[a], from).total_cmp(&cosine(&embeddings[b], from)))
            .unwrap_or(0)
    };
    let first = far(&overall);
    let second = far(&embeddings[first]);
    let mut centroids = [embeddings[first].clone(), embeddings[second].clone()];
    let mut labels = vec![0usize; embeddings.len()];
    for _ in 0..20 {
        let next: Vec<usize> = embeddings
            .iter()
            .map(|e| usize::from(cosine(e, &centroids[1]) > cosine(e, &centroids[0])))
            .collect();
        let changed = next != labels;
        labels = next;
        for (c, centroid) in centroids.iter_mut().enumerate() {
            let members: Vec<&[f32]> = embeddings
                .iter()
                .zip(&labels)
                .filter(|(_, l)| **l == c)
                .map(|(e, _)| e.as_slice())
                .collect();
            if !members.is_empty() {
                *centroid = mean(&members);
            }
        }
        if !changed {
            break;
        }
    }
    let within = embeddings
        .iter()
        .zip(&labels)
        .map(|(e, &l)| cosine(e, &centroids[l]))
        .sum::<f32>()
        / embeddings.len() as f32;
    Some(TwoWay {
        between: cosine(&centroids[0], &centroids[1]),
        within,
        labels,
    })
}

/// Keeps a change of voice inside one stretch of speech only when the other voice holds at
/// least `min_windows` windows in a row (about 2.4 s for three): a shorter excursion is a
/// misjudged window or two and takes the stretch's majority voice.
pub fn steady(labels: &[usize], min_windows: usize) -> Vec<usize> {
    let ones = labels.iter().filter(|&&l| l == 1).count();
    let majority = usize::from(ones * 2 > labels.len());
    let mut out = labels.to_vec();
    let mut start = 0;
    while start < labels.len() {
        let end = (start..labels.len())
            .find(|&i| labels[i] != labels[start])
            .unwrap_or(labels.len());
        if end - start < min_windows {
            out[start..end].fill(majority);
        }
        start = end;
    }
    out
}

/// Cuts `run` (seconds) where consecutive windows (centred at `centres`, labelled `labels`)
/// change voice, halfway between their centres: `(label, start, end)` pieces.
pub fn split_run(run: (f64, f64), centres: &[f64], labels: &[usize]) -> Vec<(usize, f64, f64)> {
    let mut pieces: Vec<(usize, f64, f64)> = Vec::new();
    for (i, &label) in labels.iter().enumerate() {
        match pieces.last_mut() {
            Some(last) if last.0 == label => {}
            Some(last) => {
                let cut = (centres[i - 1] + centres[i]) / 2.0;
                last.2 = cut;
                pieces.push((label, cut, run.1));
            }
            None => pieces.push((label, run.0, run.1)),
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amplitude: f32) -> Vec<f32> {
        (0..(seconds * 16_000.0) as usize)
            .map(|i| amplitude * (i as f32 * 0.2).sin())
            .collect()
    }

    #[test]
    fn speech_runs_are_the_loud_stretches_with_short_gaps_bridged() {
        let mut audio = vec![0.0; 8_000];
        audio.extend(tone(1.0, 0.3));
        audio.extend(vec![0.0; 1_600]); // 100 ms: bridged
        audio.extend(tone(0.5, 0.3));
        audio.extend(vec![0.0; 16_000]); // 1 s: a new run
        audio.extend(tone(0.05, 0.3)); // 50 ms: too short
        audio.extend(vec![0.0; 16_000]);
        audio.extend(tone(0.8, 0.1));
        let runs: Vec<(f64, f64)> = speech_runs(&audio, 16_000)
            .into_iter()
            .map(|r| (r.start as f64 / 16_000.0, r.end as f64 / 16_000.0))
            .collect();
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert!(
            (runs[0].0 - 0.5).abs() < 0.03 && (runs[0].1 - 2.1).abs() < 0.03,
            "{runs:?}"
        );
        assert!((runs[1].0 - 4.15).abs() < 0.03, "{runs:?}");
    }

    #[test]
    fn two_way_separates_two_directions_and_reports_how_far_apart() {
        let a = |x: f32| vec![1.0, x, 0.0];
        let b = |x: f32| vec![0.0, x, 1.0];
        let embeddings = vec![a(0.1), b(0.1), a(0.2), a(0.0), b(0.2)];
        let split = two_way(&embeddings).expect("two");
        assert_eq!(split.labels[0], split.labels[2]);
        assert_eq!(split.labels[0], split.labels[3]);
        assert_eq!(split.labels[1], split.labels[4]);
        assert_ne!(split.labels[0], split.labels[1]);
        assert!(split.between < 0.1 && split.within > 0.98, "{split:?}");
        assert!(two_way(&embeddings[..1]).is_none());
    }

    #[test]
    fn a_brief_excursion_takes_the_majority_voice_but_a_held_change_is_kept() {
        assert_eq!(steady(&[0, 0, 1, 0, 0], 3), vec![0, 0, 0, 0, 0]);
        assert_eq!(steady(&[0, 0, 0, 0, 1, 1], 3), vec![0, 0, 0, 0, 0, 0]);
        assert_eq!(steady(&[1, 0, 0, 0, 1, 1, 1], 3), vec![1, 0, 0, 0, 1, 1, 1]);
        assert_eq!(steady(&[0, 0, 0, 1, 1, 1], 3), vec![0, 0, 0, 1, 1, 1]);
    }

    #[test]
    fn a_run_is_cut_halfway_between_windows_of_different_voices() {
        let pieces = split_run((1.0, 5.0), &[1.5, 2.0, 3.0, 3.5], &[0, 0, 1, 1]);
        assert_eq!(pieces, vec![(0, 1.0, 2.5), (1, 2.5, 5.0)]);
    }
}
