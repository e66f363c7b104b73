//! Text a contract supplies (service info, outcomes, refusal reasons, log
//! lines, panic messages) ends up in the node's log, its JSON API and its
//! dashboard. [`sanitize`] bounds and cleans each such string on its way out
//! of the runtime, so a contract can neither flood a log with one huge
//! string nor forge log lines or repaint a terminal with control characters.

/// Most bytes of contract-supplied text echoed inside an error message or a
/// log line of the host (a service name in a refusal, a panic message).
pub const ECHO_BYTES_MAX: usize = 256;

/// `text` with control characters (line breaks, terminal escapes, NUL, ...)
/// and bidirectional overrides escaped (`\n`, `\u{1b}`), cut to at most
/// `max_bytes` bytes on a character boundary. A cut text ends with
/// `"… (N bytes in all)"`, N being the length of the original, so a reader
/// knows it saw only the start. The result is at most `max_bytes` plus that
/// suffix (under 32 bytes).
pub fn sanitize(text: &str, max_bytes: usize) -> String {
    if text.len() <= max_bytes && !text.chars().any(needs_escape) {
        return text.to_string();
    }
    let mut out = String::with_capacity(max_bytes.min(text.len()) + 32);
    let mut cut = false;
    for c in text.chars() {
        let before = out.len();
        if needs_escape(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > max_bytes {
            out.truncate(before);
            cut = true;
            break;
        }
    }
    if cut {
        out.push_str(&format!("… ({} bytes in all)", text.len()));
    }
    out
}

fn needs_escape(c: char) -> bool {
    // Bidirectional overrides and isolates reorder what a terminal or a
    // browser shows ("Trojan source").
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_short_text_is_unchanged() {
        assert_eq!(sanitize("espresso, lungo", 64), "espresso, lungo");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("a\nb\x1b[2J\u{202e}", 64), "a\\nb\\u{1b}[2J\\u{202e}");
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary_and_says_how_long_it_was() {
        let text = "é".repeat(1000);
        let cut = sanitize(&text, 11);
        assert_eq!(cut, format!("{}… (2000 bytes in all)", "é".repeat(5)));
        let escapes = "\x1b".repeat(1 << 20);
        let cut = sanitize(&escapes, 256);
        assert!(cut.len() < 256 + 32, "{}", cut.len());
        assert!(cut.ends_with("(1048576 bytes in all)"), "{cut}");
    }
}
