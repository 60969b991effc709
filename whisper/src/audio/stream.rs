//! One upload from container to 16 kHz channels: probe the format, pick the audio track,
//! decode its packets (skipping damaged ones) and resample them as they come, with a panic in
//! a parser caught as this file's error.

use std::io;
use std::panic::AssertUnwindSafe;

use symphonia::core::codecs::CODEC_TYPE_NULL;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use super::resample::ToWhisperRate;
use super::track::{PacketFailure, TrackDecoder};
use super::{AudioError, Layout};

/// Uploads are untrusted bytes fed to parsers, and they do panic on some damaged files
/// (symphonia-format-mkv 0.5.5 indexes out of bounds on a garbled WebM, as our tests found):
/// that is this file's error, not the end of the worker thread.
pub(super) fn decode_guarded(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    layout: Layout,
) -> Result<Vec<Vec<f32>>, AudioError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| {
        decode_source(source, extension, layout)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(AudioError::Corrupt {
            reason: format!("the decoder failed on this file: {message}"),
        })
    })
}

fn decode_source(
    source: Box<dyn MediaSource>,
    extension: Option<&str>,
    layout: Layout,
) -> Result<Vec<Vec<f32>>, AudioError> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    if let Some(extension) = extension {
        hint.with_extension(extension);
    }
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymphoniaError::Unsupported(reason) => AudioError::UnrecognisedFormat {
                reason: reason.to_string(),
            },
            other => AudioError::Corrupt {
                reason: other.to_string(),
            },
        })?;
    let mut format = probed.format;

    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or(AudioError::NoAudioTrack)?;
    let track_id = track.id;
    let mut decoder = TrackDecoder::for_track(&track.codec_params, layout)?;

    // One resampler per output channel, made on the first packet with samples.
    let mut to_16k: Vec<ToWhisperRate> = Vec::new();
    let mut decoded: Vec<Vec<f32>> = Vec::new();
    let mut good_packets = 0usize;
    let mut bad_packets = 0usize;
    let mut last_decode_error = String::new();
    loop {
        let packet = match format.next_packet() {
            Ok(packet) => packet,
            // symphonia reports both the end of the stream and a truncated file this way.
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => {
                return Err(AudioError::Corrupt {
                    reason: format!("reading the container: {e}"),
                });
            }
        };
        if packet.track_id() != track_id {
            continue;
        }
        let rate = match decoder.decode(&packet, &mut decoded) {
            Ok(rate) => rate,
            // A damaged packet is skipped, as players do; too many of them fail the file below.
            Err(PacketFailure::Damaged(reason)) => {
                bad_packets += 1;
                last_decode_error = reason;
                continue;
            }
            Err(PacketFailure::Fatal(e)) => return Err(e),
        };
        good_packets += 1;
        let Some(rate) = rate else { continue };
        if to_16k.is_empty() {
            to_16k = (0..decoded.len())
                .map(|_| ToWhisperRate::new(rate))
                .collect::<Result<_, _>>()?;
        }
        if to_16k.len() != decoded.len() {
            return Err(AudioError::Corrupt {
                reason: format!(
                    "the channel count changes mid-stream from {} to {}",
                    to_16k.len(),
                    decoded.len()
                ),
            });
        }
        for (resampler, samples) in to_16k.iter_mut().zip(&decoded) {
            if resampler.from != rate {
                return Err(AudioError::Corrupt {
                    reason: format!(
                        "the sample rate changes mid-stream from {} Hz to {} Hz",
                        resampler.from, rate
                    ),
                });
            }
            resampler.push(samples)?;
        }
    }

    if bad_packets > good_packets {
        return Err(AudioError::Corrupt {
            reason: format!(
                "{bad_packets} of {} packets could not be decoded, the last: {last_decode_error}",
                bad_packets + good_packets
            ),
        });
    }
    let channels: Vec<Vec<f32>> = to_16k
        .into_iter()
        .map(ToWhisperRate::finish)
        .collect::<Result<_, _>>()?;
    if channels.first().is_none_or(Vec::is_empty) {
        return Err(AudioError::Empty);
    }
    Ok(channels)
}
