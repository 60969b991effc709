//! Whisper's tokens, from the model's `vocabulary.txt` (one token per line, line N is id N).
//!
//! Text tokens are GPT-2 byte-level BPE strings: every byte is written as a printable
//! character (`Ġ` is a space), so turning tokens back into text is concatenating them and
//! mapping each character back to its byte. No tokenizer library is needed to decode.

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("the vocabulary has no {0} token")]
    MissingSpecial(&'static str),
}

/// The special tokens decoding needs, by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Specials {
    pub end_of_text: u32,
    pub start_of_transcript: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `<|0.00|>`; timestamp `i` (0.02 s steps) is `timestamp_begin + i`.
    pub timestamp_begin: u32,
}

#[derive(Debug, Clone)]
pub struct Vocabulary {
    tokens: Vec<String>,
    pub specials: Specials,
}

impl Vocabulary {
    pub fn parse(text: &str) -> Result<Self, VocabError> {
        let tokens: Vec<String> = text.lines().map(str::to_string).collect();
        let ids: HashMap<&str, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let id = |name: &'static str| {
            ids.get(name)
                .copied()
                .ok_or(VocabError::MissingSpecial(name))
        };
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        let specials = Specials {
            end_of_text: id("<|endoftext|>")?,
            start_of_transcript: id("<|startoftranscript|>")?,
            no_speech,
            no_timestamps: id("<|notimestamps|>")?,
            timestamp_begin: id("<|0.00|>")?,
        };
        Ok(Self { tokens, specials })
    }

    pub(crate) fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The token's text as the vocabulary writes it (`<|1.20|>`, `Ġhello`).
    pub fn token(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or("", String::as_str)
    }

    /// Text tokens are the ones below `<|endoftext|>`; the rest are special.
    pub fn is_text(&self, id: u32) -> bool {
        id < self.specials.end_of_text
    }

    /// The text of a run of byte-level tokens.
    pub fn decode(tokens: &[String]) -> String {
        let table = byte_decoder();
        let mut bytes = Vec::new();
        for token in tokens {
            for c in token.chars() {
                match table.get(&c) {
                    Some(b) => bytes.push(*b),
                    // Not a byte-level character: keep it as it is written.
                    None => bytes.extend(c.to_string().as_bytes()),
                }
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// GPT-2's `bytes_to_unicode`, inverted: printable bytes stand for themselves and the other 68
/// (controls, space, 127–160, 173) are written as U+0100 onwards, in byte order.
fn byte_decoder() -> &'static HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<HashMap<char, u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, 33..=126 | 161..=172 | 174..=255);
        let mut next = 256u32;
        let mut table = HashMap::with_capacity(256);
        for b in 0..=255u8 {
            let c = if printable(b) {
                char::from(b)
            } else {
                let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
                next += 1;
                c
            };
            table.insert(c, b);
        }
        table
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|t| t.to_string()).collect()
    }

    #[test]
    fn byte_level_tokens_decode_to_text() {
        assert_eq!(
            Vocabulary::decode(&strings(&["ĠHello", ",", "Ġworld", "."])),
            " Hello, world."
        );
        // "é" is two bytes, written as two characters.
        assert_eq!(Vocabulary::decode(&strings(&["Ġcaf", "Ã©"])), " café");
        assert_eq!(Vocabulary::decode(&strings(&["Ċ"])), "\n");
    }

    #[test]
    fn the_specials_are_found_by_name() {
        let mut lines: Vec<String> = (0..5).map(|i| format!("t{i}")).collect();
        lines.extend(strings(&[
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|nocaptions|>",
            "<|notimestamps|>",
            "<|0.00|>",
            "<|0.02|>",
        ]));
        let vocab = Vocabulary::parse(&lines.join("\n")).expect("vocab");
        assert_eq!(
            vocab.specials,
            Specials {
                end_of_text: 5,
                start_of_transcript: 6,
                no_speech: 7,
                no_timestamps: 8,
                timestamp_begin: 9,
            }
        );
        assert!(vocab.is_text(4) && !vocab.is_text(5));
        assert_eq!(vocab.token(10), "<|0.02|>");
    }

    #[test]
    fn a_vocabulary_without_timestamps_is_refused() {
        let err = Vocabulary::parse(
            "<|endoftext|>\n<|startoftranscript|>\n<|nocaptions|>\n<|notimestamps|>",
        )
        .expect_err("no timestamps");
        assert!(matches!(err, VocabError::MissingSpecial("<|0.00|>")));
    }
}
