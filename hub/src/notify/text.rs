//! Text helpers shared by the channels: vendor size limits and markup escaping.

/// Cut `s` to at most `max` characters (Unicode scalar values, which is how the vendors
/// count), marking the cut with an ellipsis so a reader sees the text was shortened.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Escape for XML and HTML text and attribute values (TwiML, email HTML).
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Slack mrkdwn treats only these three as control characters.
pub fn escape_slack(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate_chars("short", 10), "short");
        let t = truncate_chars(&"é".repeat(20), 10);
        assert_eq!(t.chars().count(), 10);
        assert!(t.ends_with('…'));
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape_markup(r#"R&D <"x"> 'y'"#),
            "R&amp;D &lt;&quot;x&quot;&gt; &apos;y&apos;"
        );
        assert_eq!(escape_slack("a<b>&c"), "a&lt;b&gt;&amp;c");
    }
}
