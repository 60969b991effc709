//! Turning Whisper's output tokens into timed segments.
//!
//! Prompted with `<|startoftranscript|>` alone, an English-only Whisper writes timestamp
//! tokens around each phrase: `<|0.00|> Hello there. <|1.84|><|1.84|> How are you? <|3.10|>`.
//! A timestamp after text closes a segment; a timestamp before text opens one. The last
//! segment may be left open when the window ends mid-phrase; it then ends with the window and
//! is marked open, so the caller can hear that phrase again in the next window.

/// A segment of one window, times in seconds from the window's start.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// `false` when no timestamp closed the segment: the phrase may go on past the window.
    pub closed: bool,
}

/// The time of a timestamp token such as `<|12.34|>`, or `None` for any other token.
pub fn timestamp_of(token: &str) -> Option<f64> {
    token
        .strip_prefix("<|")?
        .strip_suffix("|>")?
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
}

fn is_special(token: &str) -> bool {
    token.starts_with("<|") && token.ends_with("|>")
}

/// Splits `tokens` into segments. `decode` turns a run of text tokens into text;
/// `window_secs` is the length of the audio in the window, which bounds every time.
pub fn segments<E>(
    tokens: &[String],
    window_secs: f64,
    mut decode: impl FnMut(&[String]) -> Result<String, E>,
) -> Result<Vec<WindowSegment>, E> {
    let mut segments = Vec::new();
    let mut open_at: Option<f64> = None;
    let mut last_time = 0.0f64;
    let mut text: Vec<String> = Vec::new();

    let mut close = |start: f64, end: f64, closed: bool, text: &mut Vec<String>| -> Result<(), E> {
        let decoded = decode(text)?;
        text.clear();
        let decoded = decoded.trim();
        if !decoded.is_empty() {
            let start = start.clamp(0.0, window_secs);
            segments.push(WindowSegment {
                start,
                end: end.clamp(start, window_secs),
                text: decoded.to_string(),
                closed,
            });
        }
        Ok(())
    };

    for token in tokens {
        if let Some(time) = timestamp_of(token) {
            if text.is_empty() {
                open_at = Some(time);
            } else {
                close(open_at.unwrap_or(last_time), time, true, &mut text)?;
                open_at = None;
            }
            last_time = time;
        } else if !is_special(token) {
            text.push(token.clone());
        }
    }
    if !text.is_empty() {
        close(open_at.unwrap_or(last_time), window_secs, false, &mut text)?;
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    /// Joins tokens the way the byte-level decoder does for plain ASCII (`Ġ` is a space).
    fn join(tokens: &[String]) -> Result<String, ()> {
        Ok(tokens.concat().replace('Ġ', " "))
    }

    fn seg(start: f64, end: f64, text: &str) -> WindowSegment {
        WindowSegment {
            start,
            end,
            text: text.to_string(),
            closed: true,
        }
    }

    fn open(start: f64, end: f64, text: &str) -> WindowSegment {
        WindowSegment {
            closed: false,
            ..seg(start, end, text)
        }
    }

    #[test]
    fn timestamp_tokens_are_read_and_other_specials_are_not() {
        assert_eq!(timestamp_of("<|0.00|>"), Some(0.0));
        assert_eq!(timestamp_of("<|29.98|>"), Some(29.98));
        assert_eq!(timestamp_of("<|endoftext|>"), None);
        assert_eq!(timestamp_of("ĠHello"), None);
        assert_eq!(timestamp_of("<|-1.00|>"), None);
    }

    #[test]
    fn each_pair_of_timestamps_bounds_one_segment() {
        let out = segments(
            &tokens("<|0.00|> ĠHello Ġthere. <|1.84|> <|1.84|> ĠHow Ġare Ġyou? <|3.10|>"),
            5.0,
            join,
        );
        assert_eq!(
            out,
            Ok(vec![
                seg(0.0, 1.84, "Hello there."),
                seg(1.84, 3.10, "How are you?")
            ])
        );
    }

    #[test]
    fn a_segment_left_open_at_the_end_of_the_window_ends_with_the_window() {
        let out = segments(&tokens("<|26.00|> ĠAnd Ġthen"), 28.5, join);
        assert_eq!(out, Ok(vec![open(26.0, 28.5, "And then")]));
    }

    #[test]
    fn times_never_exceed_the_audio_in_the_window() {
        let out = segments(&tokens("<|3.00|> ĠBye. <|30.00|>"), 4.2, join);
        assert_eq!(out, Ok(vec![seg(3.0, 4.2, "Bye.")]));
    }

    #[test]
    fn text_without_timestamps_becomes_one_segment_spanning_the_window() {
        let out = segments(&tokens("ĠJust Ġwords"), 2.0, join);
        assert_eq!(out, Ok(vec![open(0.0, 2.0, "Just words")]));
    }

    #[test]
    fn a_trailing_lone_timestamp_and_blank_text_make_no_segment() {
        let out = segments(&tokens("<|0.00|> Ġ <|1.00|> <|1.00|>"), 2.0, join);
        assert_eq!(out, Ok(vec![]));
    }
}
