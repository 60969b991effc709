//! Decoding uploads into what Whisper hears: 16 kHz mono `f32` samples in `[-1, 1]`.
//!
//! Containers and codecs: symphonia (pure Rust) demuxes WAV, MP3, M4A/MP4, Ogg, WebM/Matroska
//! and FLAC and decodes PCM, ADPCM, MP3, AAC-LC, Vorbis and FLAC. Opus — in `.opus`, Ogg or
//! WebM, what browsers record — has no symphonia decoder, so its packets go to opus-decoder
//! (pure Rust, a port of libopus that passes all 12 RFC 8251 conformance vectors), which renders
//! them at 16 kHz mono directly, as libopus did here before (the encoder's pre-skip, 6.5 ms at
//! the start, is kept, as before). On espeak-ng speech encoded by ffmpeg's libopus (12 to
//! 128 kb/s, 10 to 60 ms frames, mono and stereo, Ogg and WebM) its output correlates 0.998 to
//! 0.9996 with ffmpeg's own decoding at the same level (RMS within 0.3 %); decoding at 48 kHz
//! and resampling with rubato correlated less (0.98 on SILK-coded speech). Its cost is speed:
//! its inverse MDCT is a direct O(n²) DFT, so hybrid and CELT packets (libopus's choice for mono
//! speech from 16 kb/s up) decode at about 10× real time on one core (3.5 minutes of speech in
//! 20 s, where ffmpeg takes 0.5 s); SILK-only packets (12 kb/s) at over 1000×.
//!
//! [`decode_bytes`] averages the channels to mono; [`decode_channels`] keeps each channel apart
//! (a stereo call recording has one speaker per channel). Either way the stream is resampled to
//! 16 kHz with rubato's FFT resampler as it is decoded, so a long upload at 48 kHz never sits
//! in memory at its source rate.

use std::fs::File;
use std::io::{self, Cursor};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};

use opus_decoder::OpusDecoder;
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};
use symphonia::core::audio::{SampleBuffer, SignalSpec};
use symphonia::core::codecs::{CODEC_TYPE_NULL, CODEC_TYPE_OPUS, CodecType, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::{FormatOptions, Packet};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// The sample rate Whisper was trained on.
pub const SAMPLE_RATE: u32 = 16_000;

#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("opening {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("not a recognised audio file ({reason})")]
    UnrecognisedFormat { reason: String },
    #[error("{codec} audio cannot be decoded: {reason}")]
    UnsupportedCodec { codec: String, reason: String },
    #[error("the file has no audio track")]
    NoAudioTrack,
    #[error("the audio is corrupt: {reason}")]
    Corrupt { reason: String },
    #[error("the file holds no audio samples")]
    Empty,
    #[error("resampling from {from} Hz: {reason}")]
    Resample { from: u32, reason: String },
}

/// Decodes the audio file at `path` to 16 kHz mono. The extension is only a hint: the content
/// decides the format.
pub fn decode_file(path: &Path) -> Result<Vec<f32>, AudioError> {
    let file = File::open(path).map_err(|source| AudioError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let extension = path.extension().and_then(|e| e.to_str());
    mono(decode_guarded(Box::new(file), extension, Layout::Mono)?)
}

/// Decodes an upload held in memory to 16 kHz mono. `extension` (e.g. `"m4a"`), when known,
/// helps the format probe.
pub fn decode_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<Vec<f32>, AudioError> {
    mono(decode_guarded(
        Box::new(Cursor::new(bytes)),
        extension,
        Layout::Mono,
    )?)
}

/// Decodes an upload held in memory to 16 kHz, one vector per channel in the file's channel
/// order, all of the same length. A mono file gives one channel.
pub fn decode_channels(
    bytes: Vec<u8>,
    extension: Option<&str>,
) -> Result<Vec<Vec<f32>>, AudioError> {
    decode_guarded(Box::new(Cursor::new(bytes)), extension, Layout::Channels)
}

/// Whether decoding mixes the channels down or keeps them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    Mono,
    Channels,
}

fn mono(mut channels: Vec<Vec<f32>>) -> Result<Vec<f32>, AudioError> {
    channels.pop().ok_or(AudioError::Empty)
}

/// Length in seconds of 16 kHz samples.
pub fn duration_secs(samples_16k: &[f32]) -> f64 {
    samples_16k.len() as f64 / f64::from(SAMPLE_RATE)
}

/// Uploads are untrusted bytes fed to parsers, and they do panic on some damaged files
/// (symphonia-format-mkv 0.5.5 indexes out of bounds on a garbled WebM, as our tests found):
/// that is this file's error, not the end of the worker thread.
fn decode_guarded(
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

/// Why one packet gave no audio.
enum PacketFailure {
    /// The packet is damaged: skip it (and count it).
    Damaged(String),
    /// The stream cannot go on.
    Fatal(AudioError),
}

/// Turns one track's packets into samples: mixed to mono, or one vector per channel.
enum TrackDecoder {
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
    fn for_track(
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
    fn decode(
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

/// Streaming mono resampler from the source rate to 16 kHz.
///
/// rubato's `process_all` wants the whole clip; this feeds it chunk by chunk instead, trimming
/// the resampler's start-up delay and cutting the tail to `ceil(len * ratio)` frames, which is
/// what `process_all` does too.
struct ToWhisperRate {
    from: u32,
    /// `None` when the source is already at 16 kHz.
    resampler: Option<Fft<f32>>,
    pending: Vec<f32>,
    scratch: Vec<f32>,
    output: Vec<f32>,
    delay_left: usize,
    input_total: usize,
}

const RESAMPLER_CHUNK: usize = 1024;

impl ToWhisperRate {
    fn new(from: u32) -> Result<Self, AudioError> {
        if from == 0 {
            return Err(AudioError::Corrupt {
                reason: "the stream declares a sample rate of 0 Hz".to_string(),
            });
        }
        let resampler = if from == SAMPLE_RATE {
            None
        } else {
            Some(
                Fft::<f32>::new(
                    from as usize,
                    SAMPLE_RATE as usize,
                    RESAMPLER_CHUNK,
                    1,
                    FixedSync::Input,
                )
                .map_err(|e| AudioError::Resample {
                    from,
                    reason: e.to_string(),
                })?,
            )
        };
        let (scratch, delay_left) = match &resampler {
            Some(r) => (vec![0.0; r.output_frames_max()], r.output_delay()),
            None => (Vec::new(), 0),
        };
        Ok(Self {
            from,
            resampler,
            pending: Vec::new(),
            scratch,
            output: Vec::new(),
            delay_left,
            input_total: 0,
        })
    }

    fn push(&mut self, samples: &[f32]) -> Result<(), AudioError> {
        self.input_total += samples.len();
        let Some(resampler) = &mut self.resampler else {
            self.output.extend_from_slice(samples);
            return Ok(());
        };
        self.pending.extend_from_slice(samples);
        let mut consumed = 0;
        while self.pending.len() - consumed >= resampler.input_frames_next() {
            let need = resampler.input_frames_next();
            let input = &self.pending[consumed..consumed + need];
            let produced = run(resampler, self.from, input, &mut self.scratch, None)?;
            consumed += need;
            keep_output(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
        }
        self.pending.drain(..consumed);
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<f32>, AudioError> {
        let Some(resampler) = &mut self.resampler else {
            return Ok(self.output);
        };
        let ratio = f64::from(SAMPLE_RATE) / f64::from(self.from);
        let expected = (self.input_total as f64 * ratio).ceil() as usize;
        let chunk = resampler.input_frames_next();
        let mut tail = std::mem::take(&mut self.pending);
        let mut partial_len = tail.len();
        tail.resize(chunk, 0.0);
        // Feed the last partial chunk, then silence, until the delayed signal is all out.
        while self.output.len() < expected {
            let indexing = Indexing::new().partial_len(partial_len);
            let produced = run(
                resampler,
                self.from,
                &tail,
                &mut self.scratch,
                Some(&indexing),
            )?;
            keep_output(
                &self.scratch[..produced],
                &mut self.delay_left,
                &mut self.output,
            );
            partial_len = 0;
            if produced == 0 {
                break;
            }
        }
        self.output.truncate(expected);
        Ok(self.output)
    }
}

fn run(
    resampler: &mut Fft<f32>,
    from: u32,
    input: &[f32],
    output: &mut [f32],
    indexing: Option<&Indexing>,
) -> Result<usize, AudioError> {
    let error = |reason: String| AudioError::Resample { from, reason };
    let input_len = input.len();
    let output_len = output.len();
    let input = InterleavedSlice::new(input, 1, input_len).map_err(|e| error(e.to_string()))?;
    let mut output =
        InterleavedSlice::new_mut(output, 1, output_len).map_err(|e| error(e.to_string()))?;
    let (_, produced) = resampler
        .process_into_buffer(&input, &mut output, indexing)
        .map_err(|e| error(e.to_string()))?;
    Ok(produced)
}

/// Appends resampled frames to `output`, first dropping the resampler's start-up delay.
fn keep_output(frames: &[f32], delay_left: &mut usize, output: &mut Vec<f32>) {
    let skip = (*delay_left).min(frames.len());
    *delay_left -= skip;
    output.extend_from_slice(&frames[skip..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    /// Pushes in uneven pieces, as packets arrive, and returns the 16 kHz result.
    fn resample_in_pieces(from: u32, input: &[f32]) -> Vec<f32> {
        let mut r = ToWhisperRate::new(from).expect("resampler");
        for piece in input.chunks(777) {
            r.push(piece).expect("push");
        }
        r.finish().expect("finish")
    }

    #[test]
    fn resampling_keeps_the_duration_to_the_sample() {
        for from in [8_000, 11_025, 22_050, 44_100, 48_000] {
            let input = sine(from, 440.0, 2.5);
            let output = resample_in_pieces(from, &input);
            let expected = (input.len() as f64 * 16_000.0 / f64::from(from)).ceil() as usize;
            assert_eq!(output.len(), expected, "from {from} Hz");
        }
    }

    #[test]
    fn resampling_packet_by_packet_equals_rubato_resampling_the_whole_clip() {
        let input = sine(44_100, 440.0, 1.0);
        let mut whole = Fft::<f32>::new(44_100, 16_000, RESAMPLER_CHUNK, 1, FixedSync::Input)
            .expect("resampler");
        let clip = InterleavedSlice::new(&input, 1, input.len()).expect("adapter");
        let expected = whole
            .process_all(&clip, input.len(), None)
            .expect("process_all")
            .take_data();
        assert_eq!(resample_in_pieces(44_100, &input), expected);
    }

    #[test]
    fn resampling_keeps_a_tone_at_its_level_and_within_a_sample_of_its_phase() {
        let output = resample_in_pieces(44_100, &sine(44_100, 440.0, 1.0));
        // Edges are where the filter sees silence beyond the clip; measure the middle.
        let middle = 2_000..14_000;
        let (mut in_phase, mut quadrature, mut power) = (0.0f64, 0.0f64, 0.0f64);
        for i in middle.clone() {
            let phase = 2.0 * std::f64::consts::PI * 440.0 * i as f64 / 16_000.0;
            let x = f64::from(output[i]);
            in_phase += x * phase.sin();
            quadrature += x * phase.cos();
            power += x * x;
        }
        let rms = (power / middle.len() as f64).sqrt();
        let expected_rms = 0.5 / 2f64.sqrt();
        assert!((rms / expected_rms - 1.0).abs() < 0.001, "RMS {rms}");
        // The start-up delay is trimmed to the whole output sample; what is left is a fraction
        // of one sample (one sample of a 440 Hz tone at 16 kHz is 0.17 rad).
        let lag = quadrature.atan2(in_phase).abs();
        let one_sample = 2.0 * std::f64::consts::PI * 440.0 / 16_000.0;
        assert!(lag < one_sample, "phase lag {lag} rad");
    }

    #[test]
    fn sixteen_kilohertz_input_passes_through_untouched() {
        let input = sine(16_000, 300.0, 0.3);
        assert_eq!(resample_in_pieces(16_000, &input), input);
    }

    #[test]
    fn bytes_that_are_no_audio_format_are_an_error_not_a_panic() {
        let result = decode_bytes(b"this is a text file, not audio".to_vec(), Some("mp3"));
        assert!(
            matches!(
                result,
                Err(AudioError::UnrecognisedFormat { .. } | AudioError::Corrupt { .. })
            ),
            "{result:?}"
        );
    }

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

    #[test]
    fn an_empty_upload_is_an_error() {
        let result = decode_bytes(Vec::new(), None);
        assert!(result.is_err(), "{result:?}");
    }

    /// A 16-bit PCM WAV file of interleaved frames.
    fn wav(rate: u32, channels: u16, interleaved: &[f32]) -> Vec<u8> {
        let data_len = (interleaved.len() * 2) as u32;
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data_len).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        out.extend_from_slice(&(channels * 2).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&data_len.to_le_bytes());
        for s in interleaved {
            out.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
        }
        out
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|s| s * s).sum::<f32>() / samples.len() as f32).sqrt()
    }

    #[test]
    fn a_stereo_file_decodes_to_one_vector_per_channel_or_to_their_mean() {
        // Left: a 440 Hz tone at 0.5; right: silence. 48 kHz, one second.
        let tone = sine(48_000, 440.0, 1.0);
        let interleaved: Vec<f32> = tone.iter().flat_map(|s| [*s, 0.0]).collect();
        let bytes = wav(48_000, 2, &interleaved);

        let channels = decode_channels(bytes.clone(), Some("wav")).expect("decodes");
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0].len(), 16_000);
        assert_eq!(channels[1].len(), 16_000);
        assert!((rms(&channels[0]) - 0.5 / 2f32.sqrt()).abs() < 0.01);
        assert!(rms(&channels[1]) < 1e-4, "the silent channel stays silent");

        let mono = decode_bytes(bytes, Some("wav")).expect("decodes");
        assert!(
            (rms(&mono) - 0.25 / 2f32.sqrt()).abs() < 0.01,
            "mono is the mean"
        );
    }

    #[test]
    fn a_mono_file_decodes_to_one_channel() {
        let bytes = wav(16_000, 1, &sine(16_000, 220.0, 0.5));
        let channels = decode_channels(bytes, Some("wav")).expect("decodes");
        assert_eq!(channels.len(), 1);
        assert_eq!(channels[0].len(), 8_000);
    }
}
