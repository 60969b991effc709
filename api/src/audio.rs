//! Audio types voxline accepts, what an upload claims to be (its part's content type or file
//! extension) and what its first bytes say it is. A file that is not what it claims is refused
//! at intake, so the transcription worker never gets a job that is bound to die.

/// An accepted audio container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioType {
    Wav,
    Mp3,
    /// MPEG-4 audio (m4a, mp4, aac in an MP4 container).
    M4a,
    Ogg,
    Webm,
    Flac,
}

impl AudioType {
    pub const ALL: [AudioType; 6] = [
        AudioType::Wav,
        AudioType::Mp3,
        AudioType::M4a,
        AudioType::Ogg,
        AudioType::Webm,
        AudioType::Flac,
    ];

    /// The file extension (and the name stored with the session).
    pub fn extension(self) -> &'static str {
        match self {
            AudioType::Wav => "wav",
            AudioType::Mp3 => "mp3",
            AudioType::M4a => "m4a",
            AudioType::Ogg => "ogg",
            AudioType::Webm => "webm",
            AudioType::Flac => "flac",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            AudioType::Wav => "audio/wav",
            AudioType::Mp3 => "audio/mpeg",
            AudioType::M4a => "audio/mp4",
            AudioType::Ogg => "audio/ogg",
            AudioType::Webm => "audio/webm",
            AudioType::Flac => "audio/flac",
        }
    }

    pub fn from_extension(ext: &str) -> Option<Self> {
        Some(match ext.to_ascii_lowercase().as_str() {
            "wav" | "wave" => AudioType::Wav,
            "mp3" => AudioType::Mp3,
            "m4a" | "mp4" | "aac" => AudioType::M4a,
            "ogg" | "oga" | "opus" => AudioType::Ogg,
            "webm" => AudioType::Webm,
            "flac" => AudioType::Flac,
            _ => return None,
        })
    }

    /// The type a MIME type names; `None` for a type voxline does not take.
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        Some(match essence.to_ascii_lowercase().as_str() {
            "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => AudioType::Wav,
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg-3" => AudioType::Mp3,
            "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" | "audio/x-aac"
            | "video/mp4" => AudioType::M4a,
            "audio/ogg" | "audio/opus" | "application/ogg" => AudioType::Ogg,
            "audio/webm" | "video/webm" => AudioType::Webm,
            "audio/flac" | "audio/x-flac" => AudioType::Flac,
            _ => return None,
        })
    }

    /// What the first bytes say: the containers' magic numbers (RIFF/WAVE, ID3 or an MPEG
    /// audio frame sync, an `ftyp` box, `OggS`, EBML, `fLaC`).
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        let at =
            |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
        if at(0, b"RIFF") && at(8, b"WAVE") {
            Some(AudioType::Wav)
        } else if at(0, b"fLaC") {
            Some(AudioType::Flac)
        } else if at(0, b"OggS") {
            Some(AudioType::Ogg)
        } else if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
            Some(AudioType::Webm)
        } else if at(4, b"ftyp") {
            Some(AudioType::M4a)
        } else if at(0, b"ID3") || is_mpeg_frame(bytes) {
            Some(AudioType::Mp3)
        } else {
            None
        }
    }
}

/// An MPEG-1/2 layer III frame header: 11 sync bits, a valid version, layer III, and a
/// bitrate and sample rate that are not the reserved values.
/// The channel count a WAV file's `fmt ` chunk declares, walking the RIFF chunks from the
/// start; `None` when the bytes are not a WAV file or its header cannot be read.
pub fn wav_channels(bytes: &[u8]) -> Option<u16> {
    if bytes.get(0..4)? != b"RIFF" || bytes.get(8..12)? != b"WAVE" {
        return None;
    }
    let mut at = 12usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if &header[0..4] == b"fmt " {
            let channels = bytes.get(at + 10..at + 12)?;
            return Some(u16::from_le_bytes([channels[0], channels[1]]));
        }
        // Chunks are padded to an even length.
        at = at
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size % 2)?;
    }
    None
}

fn is_mpeg_frame(bytes: &[u8]) -> bool {
    let [a, b, c, ..] = bytes else {
        return false;
    };
    let sync = *a == 0xFF && b & 0xE0 == 0xE0;
    let version_ok = (b >> 3) & 0b11 != 0b01;
    let layer_iii = (b >> 1) & 0b11 == 0b01;
    let bitrate_ok = c >> 4 != 0b1111;
    let rate_ok = (c >> 2) & 0b11 != 0b11;
    sync && version_ok && layer_iii && bitrate_ok && rate_ok
}

/// What an upload claims to be: its content type when that names audio, else its file name's
/// extension. `Ok(None)` = it claims nothing (e.g. `application/octet-stream` without a known
/// extension); `Err` = it claims a type voxline does not take.
pub fn claimed(
    content_type: Option<&str>,
    file_name: Option<&str>,
) -> Result<Option<AudioType>, String> {
    let generic = |ct: &str| {
        let essence = ct.split(';').next().unwrap_or_default().trim();
        essence.is_empty() || essence.eq_ignore_ascii_case("application/octet-stream")
    };
    if let Some(ct) = content_type
        && !generic(ct)
    {
        return AudioType::from_mime(ct)
            .map(Some)
            .ok_or_else(|| format!("audio of type \"{ct}\" is not accepted"));
    }
    match file_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, ext)| ext)
    {
        Some(ext) => AudioType::from_extension(ext)
            .map(Some)
            .ok_or_else(|| format!("audio files ending in .{ext} are not accepted")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_accepted_container_is_recognised_by_its_first_bytes() {
        let mut wav = b"RIFF\x24\x00\x00\x00WAVEfmt ".to_vec();
        wav.extend([0; 8]);
        assert_eq!(AudioType::sniff(&wav), Some(AudioType::Wav));
        assert_eq!(AudioType::sniff(b"ID3\x04\x00rest"), Some(AudioType::Mp3));
        assert_eq!(
            AudioType::sniff(&[0xFF, 0xFB, 0x90, 0x64]),
            Some(AudioType::Mp3)
        );
        assert_eq!(
            AudioType::sniff(b"\x00\x00\x00\x20ftypM4A "),
            Some(AudioType::M4a)
        );
        assert_eq!(AudioType::sniff(b"OggS\x00\x02"), Some(AudioType::Ogg));
        assert_eq!(
            AudioType::sniff(&[0x1A, 0x45, 0xDF, 0xA3, 0x9F]),
            Some(AudioType::Webm)
        );
        assert_eq!(
            AudioType::sniff(b"fLaC\x00\x00\x00\x22"),
            Some(AudioType::Flac)
        );
    }

    #[test]
    fn text_and_truncated_headers_are_not_audio() {
        assert_eq!(AudioType::sniff(b"hello, this is not audio"), None);
        assert_eq!(AudioType::sniff(b"RIFF\x00\x00\x00\x00AVI "), None);
        assert_eq!(AudioType::sniff(b"Og"), None);
        assert_eq!(AudioType::sniff(&[]), None);
        // Frame sync with the reserved version bits is not MPEG audio.
        assert_eq!(AudioType::sniff(&[0xFF, 0xEB, 0x90, 0x64]), None);
    }

    #[test]
    fn the_claim_comes_from_the_content_type_then_the_extension() {
        assert_eq!(
            claimed(Some("audio/x-wav"), Some("a.mp3")),
            Ok(Some(AudioType::Wav))
        );
        assert_eq!(
            claimed(Some("application/octet-stream"), Some("talk.M4A")),
            Ok(Some(AudioType::M4a))
        );
        assert_eq!(claimed(None, Some("noext")), Ok(None));
        assert!(claimed(Some("text/plain"), Some("a.wav")).is_err());
        assert!(claimed(None, Some("slides.pdf")).is_err());
    }

    #[test]
    fn a_wav_header_says_how_many_channels_the_recording_has() {
        let header = |channels: u16| {
            let mut wav = b"RIFF\x24\x00\x00\x00WAVE".to_vec();
            // A LIST chunk of odd length (padded) before the format chunk.
            wav.extend_from_slice(b"LIST\x03\x00\x00\x00abc\x00");
            wav.extend_from_slice(b"fmt \x10\x00\x00\x00\x01\x00");
            wav.extend_from_slice(&channels.to_le_bytes());
            wav.extend_from_slice(&[0; 12]);
            wav
        };
        assert_eq!(wav_channels(&header(2)), Some(2));
        assert_eq!(wav_channels(&header(1)), Some(1));
        assert_eq!(wav_channels(b"RIFF\x24\x00\x00\x00WAVEfmt "), None);
        assert_eq!(wav_channels(b"OggS"), None);
    }
}
