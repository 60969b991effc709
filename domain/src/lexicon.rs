//! The words coaching looks for in what the user said: fillers, hedges and questions. One
//! definition shared by the analysis (which counts them) and the transcript route (which
//! marks where they are, so a client can highlight them).
//!
//! Text is split into lower-case words of letters, digits and apostrophes; everything else
//! separates. A phrase matches a run of whole words ("sort of" in "SORT-of", never "might" in
//! "mighty"). A question is a sentence ending in '?': from the previous '.', '!', '?' or the
//! start of the text, to the '?'.

use serde::Serialize;

/// Single words and phrases counted as fillers.
pub const FILLERS: &[&str] = &[
    "um",
    "uh",
    "er",
    "ah",
    "hmm",
    "you know",
    "i mean",
    "basically",
    "literally",
    "actually",
];

/// Words and phrases counted as hedging.
pub const HEDGES: &[&str] = &[
    "maybe",
    "perhaps",
    "probably",
    "possibly",
    "might",
    "i think",
    "i guess",
    "sort of",
    "kind of",
    "i feel like",
];

/// A word of `text` and where it is, in characters (Unicode scalar values, not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    pub text: String,
    pub start: usize,
    pub end: usize,
}

/// Where something was found in a segment's text: `[start, end)` in characters, and the text
/// there as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\''
}

/// The lower-case words of `text` with their character positions.
pub fn located_words(text: &str) -> Vec<Word> {
    let mut words = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut position = 0;
    for (i, c) in text.chars().enumerate() {
        position = i + 1;
        if is_word_char(c) {
            current
                .get_or_insert_with(|| (i, String::new()))
                .1
                .extend(c.to_lowercase());
        } else if let Some((start, word)) = current.take() {
            words.push(Word {
                text: word,
                start,
                end: i,
            });
        }
    }
    if let Some((start, word)) = current {
        words.push(Word {
            text: word,
            start,
            end: position,
        });
    }
    words
}

/// The lower-case words of `text`.
pub fn words(text: &str) -> Vec<String> {
    located_words(text).into_iter().map(|w| w.text).collect()
}

/// Every occurrence of one of `phrases` in `words`, as (phrase, index of its first word).
pub fn phrase_matches<'p>(words: &[String], phrases: &[&'p str]) -> Vec<(&'p str, usize)> {
    let mut found = Vec::new();
    for phrase in phrases {
        let parts: Vec<&str> = phrase.split(' ').collect();
        for (at, window) in words.windows(parts.len()).enumerate() {
            if window.iter().zip(&parts).all(|(a, b)| a == b) {
                found.push((*phrase, at));
            }
        }
    }
    found
}

/// Where the `phrases` occur in `text`, in order of position.
pub fn find_phrases(text: &str, phrases: &[&str]) -> Vec<Span> {
    let located = located_words(text);
    let words: Vec<String> = located.iter().map(|w| w.text.clone()).collect();
    let chars: Vec<char> = text.chars().collect();
    let mut spans: Vec<Span> = phrase_matches(&words, phrases)
        .into_iter()
        .map(|(phrase, at)| {
            let last = at + phrase.split(' ').count() - 1;
            let (start, end) = (located[at].start, located[last].end);
            Span {
                start,
                end,
                text: chars[start..end].iter().collect(),
            }
        })
        .collect();
    spans.sort_by_key(|s| (s.start, s.end));
    spans
}

/// The questions in `text`: each sentence that ends in '?', trimmed of surrounding space.
pub fn find_questions(text: &str) -> Vec<Span> {
    let chars: Vec<char> = text.chars().collect();
    let mut spans = Vec::new();
    let mut sentence_start = 0;
    for (i, c) in chars.iter().enumerate() {
        if matches!(c, '.' | '!' | '?') {
            if *c == '?' {
                let start = (sentence_start..=i)
                    .find(|&j| !chars[j].is_whitespace())
                    .unwrap_or(i);
                spans.push(Span {
                    start,
                    end: i + 1,
                    text: chars[start..=i].iter().collect(),
                });
            }
            sentence_start = i + 1;
        }
    }
    spans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(spans: &[Span]) -> Vec<&str> {
        spans.iter().map(|s| s.text.as_str()).collect()
    }

    #[test]
    fn words_are_lower_case_runs_of_letters_digits_and_apostrophes() {
        assert_eq!(
            words("Ummm, I'm SORT-of sure."),
            ["ummm", "i'm", "sort", "of", "sure"]
        );
        let located = located_words("Ça va? Oui");
        assert_eq!(
            located,
            [
                Word {
                    text: "ça".into(),
                    start: 0,
                    end: 2
                },
                Word {
                    text: "va".into(),
                    start: 3,
                    end: 5
                },
                Word {
                    text: "oui".into(),
                    start: 7,
                    end: 10
                },
            ]
        );
    }

    #[test]
    fn phrases_are_found_as_whole_words_with_their_positions_as_written() {
        let text = "Um, I think it's SORT-of fine; mighty fine, you know.";
        let fillers = find_phrases(text, FILLERS);
        assert_eq!(texts(&fillers), ["Um", "you know"]);
        assert_eq!((fillers[1].start, fillers[1].end), (44, 52));
        let hedges = find_phrases(text, HEDGES);
        assert_eq!(texts(&hedges), ["I think", "SORT-of"]);
    }

    #[test]
    fn a_question_is_the_sentence_that_ends_in_a_question_mark() {
        let text = "Thanks. So what does that cost you? And when! How often?";
        assert_eq!(
            texts(&find_questions(text)),
            ["So what does that cost you?", "How often?"]
        );
        assert_eq!(find_questions("No questions here."), []);
        let multibyte = "Ça coûte combien ? Bien.";
        let q = &find_questions(multibyte)[0];
        assert_eq!((q.start, q.end), (0, 18));
    }
}
