//! One track's packets into samples: symphonia's decoders, or opus-decoder for Opus (which
//! symphonia cannot decode), mixed to mono or kept one vector per channel.

use std::panic::AssertUnwindSafe;

use opus_decoder::OpusDecoder;
use symphonia::core::audio::{SampleBuffer, SignalSpec};
use symphonia::core::codecs::{CODEC_TYPE_OPUS, CodecType, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::Packet;

use super::{AudioError, Layout, SAMPLE_RATE};

/// Why one packet gave no audio.
pub(super) enum PacketFailure {
    /// The packet is damaged: skip it (and count it).
    Damaged(String),
    /// The stream cannot go on.
    Fatal(AudioError),
}

/// Turns one track's packets into samples: mixed to mono, or one vector per channel.
pub(super) enum TrackDecoder {
    Symphonia {
        decoder: Box<dyn symphonia::core::codecs::Decoder>,
        /// Reused across packets; remade when a packet is larger or its layout differs.
        interleaved: Option<(SignalSpec, SampleBuffer<f32>)>,
        layout: Layout,
    },
    Opus {
        // Boxed: the decoder's state is kilobytes, the other variant a few pointers.
        decoder: Box<OpusDecoder>,
        pcm: Vec<f32>,
        /// Channels the decoder renders (1 mixes a stereo stream down itself).
        channels: usize,
    },
}

/// Opus decodes at any of its internal rates; asking for Whisper's own saves a resampling.
const OPUS_RATE: u32 = SAMPLE_RATE;

impl TrackDecoder {
    pub(super) fn for_track(
        params: &symphonia::core::codecs::CodecParameters,
        layout: Layout,
    ) -> Result<Self, AudioError> {
        if params.codec == CODEC_TYPE_OPUS {
            // Opus renders one or two channels; a stream with more is mixed to stereo by it.
            let channels = match layout {
                Layout::Mono => 1,
                Layout::Channels => params.channels.map_or(1, |c| c.count().clamp(1, 2)),
            };
            let decoder = new_opus_decoder(channels)?;
            // Room for the longest packet (120 ms).
            let pcm = vec![0.0; decoder.max_frame_size_per_channel() * channels];
            return Ok(TrackDecoder::Opus {
                decoder,
                pcm,
                channels,
            });
        }
        let decoder = symphonia::default::get_codecs()
            .make(params, &DecoderOptions::default())
            .map_err(|e| AudioError::UnsupportedCodec {
                codec: codec_name(params.codec),
                reason: e.to_string(),
            })?;
        Ok(TrackDecoder::Symphonia {
            decoder,
            interleaved: None,
            layout,
        })
    }

    /// Decodes `packet` into `out` (replacing its contents: one vector when mixing to mono,
    /// else one per channel) and returns its sample rate, or None when the packet holds no
    /// samples.
    pub(super) fn decode(
        &mut self,
        packet: &Packet,
        out: &mut Vec<Vec<f32>>,
    ) -> Result<Option<u32>, PacketFailure> {
        out.iter_mut().for_each(Vec::clear);
        match self {
            TrackDecoder::Opus {
                decoder,
                pcm,
                channels,
            } => {
                // opus-decoder 0.1.1 panics on some damaged packets (a redundancy length that
                // underflows, found by flipping bytes in real packets): that is one bad packet,
                // skipped like a decode error, and the decoder, its state now unknown, is made
                // anew.
                let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    decoder.decode_float(&packet.data, pcm, false)
                }));
                let frames = match decoded {
                    Ok(Ok(frames)) => frames,
                    Ok(Err(e)) => return Err(PacketFailure::Damaged(format!("Opus: {e}"))),
                    Err(_) => {
                        *decoder = new_opus_decoder(*channels).map_err(PacketFailure::Fatal)?;
                        return Err(PacketFailure::Damaged(
                            "Opus: the decoder failed on this packet".to_string(),
                        ));
                    }
                };
                let frames = frames.min(pcm.len() / *channels);
                deinterleave(&pcm[..frames * *channels], *channels, out);
                Ok((frames > 0).then_some(OPUS_RATE))
            }
            TrackDecoder::Symphonia {
                decoder,
                interleaved,
                layout,
            } => {
                let decoded = match decoder.decode(packet) {
                    Ok(decoded) => decoded,
                    Err(SymphoniaError::DecodeError(reason)) => {
                        return Err(PacketFailure::Damaged(reason.to_string()));
                    }
                    Err(e) => {
                        return Err(PacketFailure::Fatal(AudioError::Corrupt {
                            reason: format!("decoding: {e}"),
                        }));
                    }
                };
                let spec = *decoded.spec();
                let channels = spec.channels.count();
                if decoded.frames() == 0 || channels == 0 {
                    return Ok(None);
                }
                let reusable = matches!(
                    &*interleaved,
                    Some((made_for, buffer))
                        if *made_for == spec && buffer.capacity() >= decoded.capacity() * channels
                );
                if !reusable {
                    *interleaved = Some((spec, SampleBuffer::new(decoded.capacity() as u64, spec)));
                }
                let Some((_, buffer)) = interleaved else {
                    return Ok(None);
                };
                buffer.copy_interleaved_ref(decoded);
                match layout {
                    Layout::Mono => {
                        out.resize_with(1, Vec::new);
                        out[0].extend(
                            buffer
                                .samples()
                                .chunks_exact(channels)
                                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
                        );
                    }
                    Layout::Channels => deinterleave(buffer.samples(), channels, out),
                }
                Ok(Some(spec.rate))
            }
        }
    }
}

/// Splits interleaved frames into one vector per channel (`out` is resized to `channels`).
fn deinterleave(interleaved: &[f32], channels: usize, out: &mut Vec<Vec<f32>>) {
    out.resize_with(channels, Vec::new);
    for frame in interleaved.chunks_exact(channels) {
        for (channel, sample) in out.iter_mut().zip(frame) {
            channel.push(*sample);
        }
    }
}

/// An Opus decoder at [`OPUS_RATE`] rendering `channels` (1 mixes a stereo stream down).
fn new_opus_decoder(channels: usize) -> Result<Box<OpusDecoder>, AudioError> {
    OpusDecoder::new(OPUS_RATE, channels)
        .map(Box::new)
        .map_err(|e| AudioError::UnsupportedCodec {
            codec: codec_name(CODEC_TYPE_OPUS),
            reason: e.to_string(),
        })
}

fn codec_name(codec: CodecType) -> String {
    match codec {
        CODEC_TYPE_OPUS => "Opus".to_string(),
        other => symphonia::default::get_codecs()
            .get_codec(other)
            .map(|d| d.short_name.to_string())
            .unwrap_or_else(|| format!("codec {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hybrid-mode packet (found by flipping bytes in a libopus recording) on which
    /// opus-decoder 0.1.1 indexes out of bounds, even on a fresh decoder.
    const OPUS_PACKET_THAT_PANICS: [u8; 62] = [
        104, 8, 11, 213, 86, 190, 149, 50, 0, 25, 54, 204, 15, 34, 249, 6, 236, 203, 228, 191, 58,
        155, 30, 253, 235, 168, 22, 214, 90, 203, 152, 217, 153, 68, 112, 128, 137, 101, 37, 34,
        64, 145, 44, 1, 74, 148, 65, 106, 155, 15, 192, 49, 59, 21, 118, 220, 187, 172, 176, 171,
        236, 137,
    ];

    #[test]
    fn an_opus_packet_that_makes_the_decoder_panic_is_skipped_and_decoding_goes_on() {
        let mut params = symphonia::core::codecs::CodecParameters::new();
        params.for_codec(CODEC_TYPE_OPUS);
        let Ok(mut decoder) = TrackDecoder::for_track(&params, Layout::Mono) else {
            panic!("an Opus decoder");
        };
        let mut mono = Vec::new();
        let bad = Packet::new_from_slice(0, 0, 960, &OPUS_PACKET_THAT_PANICS);
        assert!(matches!(
            decoder.decode(&bad, &mut mono),
            Err(PacketFailure::Damaged(_)) | Ok(_)
        ));
        // A 20 ms CELT packet with an empty frame: the decoder conceals it, at 16 kHz.
        let next = Packet::new_from_slice(0, 960, 960, &[0xf8]);
        assert!(matches!(
            decoder.decode(&next, &mut mono),
            Ok(Some(SAMPLE_RATE))
        ));
        assert_eq!(mono.iter().map(Vec::len).collect::<Vec<_>>(), [320]);
    }
}
