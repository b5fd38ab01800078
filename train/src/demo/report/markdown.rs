//! Small Markdown building blocks: numbers, table cells, tables and fenced blocks.

/// Every loss and share in the report: four decimals.
pub(super) fn num(x: f64) -> String {
    format!("{x:.4}")
}

/// An optional number, `-` when absent.
pub(super) fn opt_num(x: Option<f64>) -> String {
    x.map(num).unwrap_or_else(|| "-".into())
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// Text made safe for one table cell: pipes escaped, line breaks flattened, long text shortened
/// (by characters, so multi-byte text is never cut inside a character).
pub(super) fn cell(text: &str, max_chars: usize) -> String {
    let flat: String = text.chars().map(|c| if c == '\n' || c == '\r' || c == '\t' { ' ' } else { c }).collect();
    let short: String = if flat.chars().count() > max_chars {
        let mut s: String = flat.chars().take(max_chars.saturating_sub(1)).collect();
        s.push('…');
        s
    } else {
        flat
    };
    short.replace('|', "\\|")
}

/// A Markdown table; `right` marks the columns to right-align (numbers).
pub(super) fn table(header: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    let align: Vec<&str> = (0..header.len()).map(|i| if right.get(i).copied().unwrap_or(false) { "---:" } else { "---" }).collect();
    out.push_str(&format!("| {} |\n", align.join(" | ")));
    for row in rows {
        out.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    out
}

/// `text` in a fenced block whose fence is longer than any backtick run inside it, so generated
/// text cannot close the block early; an italic `(empty)` when there is no text.
pub(super) fn fenced(text: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    if text.is_empty() {
        // Outside the fence, so it cannot be mistaken for generated text.
        return "_(empty)_\n".into();
    }
    let fence = "`".repeat((longest + 1).max(3));
    format!("{fence}text\n{text}\n{fence}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_escape_pipes_and_shorten_by_characters() {
        assert_eq!(cell("a|b\nc", 80), "a\\|b c");
        assert_eq!(cell("ééééé", 3), "éé…");
    }

    #[test]
    fn fences_outgrow_backticks_inside() {
        assert_eq!(fenced("x ``` y"), "````text\nx ``` y\n````\n");
        assert_eq!(fenced(""), "_(empty)_\n");
    }

    #[test]
    fn tables_align_number_columns_right() {
        let t = table(&["a", "b"], &[false, true], &[vec!["x".into(), num(1.0)]]);
        assert_eq!(t, "| a | b |\n| --- | ---: |\n| x | 1.0000 |\n");
    }
}
