//! Who is who in an uploaded recording, as the client states it: the form fields `channels`
//! (one speaker per channel, in channel order: `user,partner`) and `user_speaker` (which voice
//! of a mono recording of two people is the user's, by order of first speech). Parsed here so
//! the intake API and the transcription worker read the stored values the same way.
//!
//! Rules: `channels` names 1 to [`MAX_CHANNELS`] speakers, each `user` or `partner`, exactly
//! one of them `user`. A mono recording with `channels=user` is the user alone (no
//! diarization). A multi-channel recording without `channels` has the user on channel 0 and
//! partners on the others.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The most channels a recording may name.
pub const MAX_CHANNELS: usize = 8;

/// Whose voice a channel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelSpeaker {
    User,
    Partner,
}

impl ChannelSpeaker {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelSpeaker::User => "user",
            ChannelSpeaker::Partner => "partner",
        }
    }
}

/// The speakers of a recording's channels, in channel order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels(pub Vec<ChannelSpeaker>);

impl Channels {
    /// The layout of an `n`-channel recording uploaded without `channels`: the user on
    /// channel 0, partners on the rest.
    pub fn default_for(n: usize) -> Self {
        Channels(
            (0..n.max(1))
                .map(|i| {
                    if i == 0 {
                        ChannelSpeaker::User
                    } else {
                        ChannelSpeaker::Partner
                    }
                })
                .collect(),
        )
    }
}

impl FromStr for Channels {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let names: Vec<&str> = text.split(',').map(str::trim).collect();
        if names.len() > MAX_CHANNELS {
            return Err(format!(
                "channels names {} channels; at most {MAX_CHANNELS}",
                names.len()
            ));
        }
        let speakers = names
            .iter()
            .enumerate()
            .map(|(i, name)| match *name {
                "user" => Ok(ChannelSpeaker::User),
                "partner" => Ok(ChannelSpeaker::Partner),
                "" => Err(format!(
                    "channel {i} is not named (expected user or partner)"
                )),
                other => Err(format!(
                    "channel {i} is \"{other}\"; each channel is user or partner"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        match speakers
            .iter()
            .filter(|s| **s == ChannelSpeaker::User)
            .count()
        {
            1 => Ok(Channels(speakers)),
            0 => Err("channels must name one channel user".to_string()),
            _ => Err("channels must name exactly one channel user".to_string()),
        }
    }
}

impl fmt::Display for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// Which voice of a mono two-person recording is the user's, by order of first speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserSpeaker {
    #[default]
    First,
    Second,
}

impl UserSpeaker {
    pub fn as_str(self) -> &'static str {
        match self {
            UserSpeaker::First => "first",
            UserSpeaker::Second => "second",
        }
    }

    /// The user's index among voices numbered by first speech (0 = the first to speak).
    pub fn index(self) -> usize {
        match self {
            UserSpeaker::First => 0,
            UserSpeaker::Second => 1,
        }
    }
}

impl FromStr for UserSpeaker {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "first" => Ok(UserSpeaker::First),
            "second" => Ok(UserSpeaker::Second),
            other => Err(format!(
                "user_speaker is \"{other}\"; it must be first or second"
            )),
        }
    }
}

/// How a transcript's speakers were told apart: stored with the transcript, shown with it, and
/// the reason speaker-based metrics give when they are unavailable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attribution {
    pub method: AttributionMethod,
    pub status: AttributionStatus,
    /// Voices heard, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// Why speakers are not separated, for people ("one voice was heard").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionMethod {
    /// One speaker per channel of the recording.
    Channels,
    /// Voices of a mono recording told apart by their sound (speaker embeddings).
    Diarization,
    /// The speech-to-text provider's own diarization.
    Provider,
    /// The client said the mono recording is the user alone (`channels=user`).
    Declared,
    /// The transcript came with its speakers (a JSON submission, a role-play's transcript).
    Transcript,
    /// Nothing could tell the voices apart.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttributionStatus {
    /// Every segment has its speaker.
    Separated,
    /// One voice: every segment is the user's, and there is no partner to measure against.
    OneVoice,
    /// The voices could not be told apart: segments are `unknown`, nothing counts as the user's.
    Undetermined,
}

impl Attribution {
    /// Speakers given with the transcript itself.
    pub fn from_transcript() -> Self {
        Attribution {
            method: AttributionMethod::Transcript,
            status: AttributionStatus::Separated,
            count: None,
            reason: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChannelSpeaker::{Partner, User};

    #[test]
    fn channels_name_each_channel_user_or_partner_with_one_user() {
        assert_eq!(
            "user,partner".parse::<Channels>(),
            Ok(Channels(vec![User, Partner]))
        );
        assert_eq!(
            " partner , user ".parse::<Channels>(),
            Ok(Channels(vec![Partner, User]))
        );
        assert_eq!("user".parse::<Channels>(), Ok(Channels(vec![User])));
        for bad in [
            "",
            "user,",
            "partner,partner",
            "user,user",
            "user,coach",
            "user,partner,partner,partner,partner,partner,partner,partner,partner",
        ] {
            assert!(bad.parse::<Channels>().is_err(), "{bad:?} is refused");
        }
        assert_eq!(
            Channels(vec![User, Partner, Partner]).to_string(),
            "user,partner,partner"
        );
        assert_eq!(Channels::default_for(2), Channels(vec![User, Partner]));
    }

    #[test]
    fn user_speaker_is_first_or_second() {
        assert_eq!("first".parse::<UserSpeaker>(), Ok(UserSpeaker::First));
        assert_eq!(
            "second".parse::<UserSpeaker>().map(UserSpeaker::index),
            Ok(1)
        );
        for bad in ["", "1", "third", "First"] {
            assert!(bad.parse::<UserSpeaker>().is_err(), "{bad:?} is refused");
        }
    }
}
