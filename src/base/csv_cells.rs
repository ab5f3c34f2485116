//! CSV cells that a spreadsheet shows as text, never runs as a formula (CSV injection).
//!
//! Every CSV kefu writes (history export, report CSVs, knowledge-base export) passes each cell
//! through [`neutralize_formula`]: a cell starting with `=`, `+`, `-`, `@`, a tab or a carriage
//! return gets a single quote in front, as OWASP recommends, so Excel, LibreOffice and Google
//! Sheets show it as typed instead of evaluating it. [`restore_neutralized`] undoes exactly that,
//! for the knowledge-base import, so an exported file imports back unchanged.

use std::borrow::Cow;

/// The first characters that make a spreadsheet read a cell as a formula.
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Whether `text`, after any leading single quotes, starts with a formula trigger. Leading
/// quotes count so that a cell kefu neutralised and one a person typed as `'=x` stay distinct.
fn needs_quote(text: &str) -> bool {
    text.trim_start_matches('\'').starts_with(FORMULA_TRIGGERS)
}

/// The cell as written to a CSV file: with a `'` in front when it would start a formula.
pub fn neutralize_formula(cell: &str) -> Cow<'_, str> {
    if needs_quote(cell) { Cow::Owned(format!("'{cell}")) } else { Cow::Borrowed(cell) }
}

/// The cell as read back from a CSV file kefu wrote: the quote [`neutralize_formula`] added is
/// removed; any other text is unchanged.
pub fn restore_neutralized(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_quote(rest) => rest,
        _ => cell,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_quoted_and_everything_round_trips() {
        for (cell, written) in [
            ("=HYPERLINK(\"http://x\",\"y\")", "'=HYPERLINK(\"http://x\",\"y\")"),
            ("+1", "'+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("'=already", "''=already"),
            ("plain", "plain"),
            ("'quoted", "'quoted"),
            ("a=b", "a=b"),
            ("", ""),
        ] {
            assert_eq!(neutralize_formula(cell), written, "{cell:?}");
            assert_eq!(restore_neutralized(written), cell, "{cell:?}");
        }
    }
}
