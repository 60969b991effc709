//! Decoding an upload into 16 kHz channels, in builds that have the decoder (the
//! `local-whisper` feature brings `voxline-whisper`'s pure-Rust decoders); without it the
//! recording can only be handed to a provider whole.

use voxline_jobs::HandlerError;

use super::Audio;

/// Why the recording was not decoded.
pub enum Undecoded {
    /// This build has no decoder.
    #[cfg_attr(feature = "local-whisper", allow(dead_code))]
    NoDecoder,
    /// It could not be decoded: the job's error.
    #[cfg_attr(not(feature = "local-whisper"), allow(dead_code))]
    Failed(HandlerError),
}

#[cfg(feature = "local-whisper")]
pub async fn channels(audio: &Audio) -> Result<Vec<Vec<f32>>, Undecoded> {
    use voxline_whisper::AudioError;
    let bytes = audio.bytes.clone();
    let extension = audio
        .file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_string());
    tokio::task::spawn_blocking(move || {
        voxline_whisper::decode_channels(bytes, extension.as_deref())
    })
    .await
    .map_err(|e| {
        Undecoded::Failed(HandlerError::retry(format!(
            "the decoding task failed: {e}"
        )))
    })?
    .map_err(|e| {
        Undecoded::Failed(match e {
            AudioError::Open { .. } => HandlerError::retry(e.to_string()),
            // A file that cannot be decoded never will be: the job goes to `dead`.
            other => HandlerError::permanent(format!("the recording cannot be decoded: {other}")),
        })
    })
}

#[cfg(not(feature = "local-whisper"))]
pub async fn channels(_: &Audio) -> Result<Vec<Vec<f32>>, Undecoded> {
    Err(Undecoded::NoDecoder)
}
