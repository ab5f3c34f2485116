//! Import and export of knowledge-base entries as CSV or Markdown.
//!
//! CSV (RFC 4180, UTF-8, a header row): `questions,answer,category`, where `questions` holds the
//! variants separated by `|`. Fields with commas, quotes or line breaks are quoted, quotes doubled.
//!
//! Markdown: `# Category` sets the category of the entries below it; each entry is one or more
//! `## question` lines (its variants; blank lines between them are allowed), followed by its
//! answer, which runs until the next heading. An answer line that itself starts with `#` is
//! written as `\#` and read back without the backslash.
//!
//! Parsing never stores anything; the caller validates every entry and stores all or none.

use super::{EntryInput, KbEntry, KbError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Csv,
    Markdown,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format, KbError> {
        match name {
            "csv" => Ok(Format::Csv),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(KbError::Invalid(format!("format: {other:?} is not csv or markdown"))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
        }
    }
}

pub fn import(format: Format, text: &str) -> Result<Vec<EntryInput>, KbError> {
    match format {
        Format::Csv => import_csv(text),
        Format::Markdown => import_markdown(text),
    }
}

pub fn export(format: Format, entries: &[KbEntry]) -> String {
    match format {
        Format::Csv => export_csv(entries),
        Format::Markdown => export_markdown(entries),
    }
}

/// Splits CSV text into records of fields.
fn csv_records(text: &str) -> Result<Vec<Vec<String>>, KbError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut characters = text.chars().peekable();
    let mut in_quotes = false;
    let mut line = 1;
    while let Some(character) = characters.next() {
        if in_quotes {
            match character {
                '"' if characters.peek() == Some(&'"') => {
                    characters.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                other => field.push(other),
            }
            continue;
        }
        match character {
            '"' if field.is_empty() => in_quotes = true,
            '"' => return Err(KbError::Invalid(format!("csv line {line}: a quote inside an unquoted field"))),
            ',' => record.push(std::mem::take(&mut field)),
            '\r' if characters.peek() == Some(&'\n') => {}
            '\n' => {
                line += 1;
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            other => field.push(other),
        }
    }
    if in_quotes {
        return Err(KbError::Invalid("csv: a quoted field is not closed".into()));
    }
    if !field.is_empty() || !record.is_empty() {
        record.push(field);
        records.push(record);
    }
    records.retain(|record| !(record.len() == 1 && record[0].trim().is_empty()));
    Ok(records)
}

fn import_csv(text: &str) -> Result<Vec<EntryInput>, KbError> {
    let mut records = csv_records(text)?.into_iter();
    let header: Vec<String> = records
        .next()
        .ok_or_else(|| KbError::Invalid("csv: empty; expected a header row questions,answer,category".into()))?
        .iter()
        .map(|name| name.trim().to_lowercase())
        .collect();
    let column = |name: &str| header.iter().position(|found| found == name);
    let (Some(questions_at), Some(answer_at)) = (column("questions"), column("answer")) else {
        return Err(KbError::Invalid("csv: the header must name the columns questions and answer".into()));
    };
    let category_at = column("category");
    let mut inputs = Vec::new();
    for (number, record) in records.enumerate() {
        let row = number + 2;
        // Cells kefu's export neutralised against formulas come back as they were typed.
        let field = |at: usize| {
            record.get(at).map(|cell| crate::base::csv_cells::restore_neutralized(cell).to_owned()).unwrap_or_default()
        };
        let input = EntryInput {
            questions: field(questions_at).split('|').map(str::to_owned).collect(),
            answer: field(answer_at),
            category: category_at.map(field).unwrap_or_default(),
        };
        inputs.push(input.validate().map_err(|error| KbError::Invalid(format!("csv row {row}: {error}")))?);
    }
    Ok(inputs)
}

fn csv_field(value: &str) -> String {
    let value = crate::base::csv_cells::neutralize_formula(value);
    if value.contains([',', '"', '\n', '\r']) || value.starts_with(' ') || value.ends_with(' ') {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.into_owned()
    }
}

fn export_csv(entries: &[KbEntry]) -> String {
    let mut out = String::from("questions,answer,category\n");
    for entry in entries {
        let questions: Vec<String> = entry.questions.iter().map(|question| question.replace('|', "/")).collect();
        out.push_str(&csv_field(&questions.join("|")));
        out.push(',');
        out.push_str(&csv_field(&entry.answer));
        out.push(',');
        out.push_str(&csv_field(&entry.category));
        out.push('\n');
    }
    out
}

fn import_markdown(text: &str) -> Result<Vec<EntryInput>, KbError> {
    let mut inputs = Vec::new();
    let mut category = String::new();
    let mut current: Option<(EntryInput, usize)> = None;
    let finish = |current: Option<(EntryInput, usize)>, inputs: &mut Vec<EntryInput>| -> Result<(), KbError> {
        if let Some((input, line)) = current {
            inputs.push(input.validate().map_err(|error| KbError::Invalid(format!("markdown line {line}: {error}")))?);
        }
        Ok(())
    };
    for (number, line) in text.strip_prefix('\u{feff}').unwrap_or(text).lines().enumerate() {
        let line_number = number + 1;
        if let Some(question) = line.strip_prefix("## ") {
            match &mut current {
                Some((input, _)) if input.answer.trim().is_empty() => input.questions.push(question.to_owned()),
                _ => {
                    finish(current.take(), &mut inputs)?;
                    let input = EntryInput {
                        questions: vec![question.to_owned()],
                        answer: String::new(),
                        category: category.clone(),
                    };
                    current = Some((input, line_number));
                }
            }
        } else if let Some(name) = line.strip_prefix("# ") {
            finish(current.take(), &mut inputs)?;
            category = name.trim().to_owned();
        } else if let Some((input, _)) = &mut current {
            let line = line.strip_prefix('\\').filter(|rest| rest.starts_with('#')).unwrap_or(line);
            if !(input.answer.is_empty() && line.trim().is_empty()) {
                input.answer.push_str(line);
                input.answer.push('\n');
            }
        } else if !line.trim().is_empty() {
            return Err(KbError::Invalid(format!(
                "markdown line {line_number}: text before the first \"## question\" heading"
            )));
        }
    }
    finish(current, &mut inputs)?;
    if inputs.is_empty() {
        return Err(KbError::Invalid("markdown: no entries; each starts with a \"## question\" line".into()));
    }
    Ok(inputs)
}

fn export_markdown(entries: &[KbEntry]) -> String {
    let mut sorted: Vec<&KbEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.category.cmp(&b.category).then(a.id.cmp(&b.id)));
    let mut out = String::new();
    let mut category: Option<&str> = None;
    for entry in sorted {
        if category != Some(entry.category.as_str()) {
            category = Some(entry.category.as_str());
            if !entry.category.is_empty() {
                out.push_str(&format!("# {}\n\n", entry.category));
            }
        }
        for question in &entry.questions {
            out.push_str(&format!("## {}\n", question.replace('\n', " ")));
        }
        out.push('\n');
        for line in entry.answer.lines() {
            if line.starts_with('#') || line.starts_with("\\#") {
                out.push('\\');
            }
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, questions: &[&str], answer: &str, category: &str) -> KbEntry {
        KbEntry {
            id,
            questions: questions.iter().map(|question| (*question).to_owned()).collect(),
            answer: answer.into(),
            category: category.into(),
            ..KbEntry::default()
        }
    }

    fn round_trip(format: Format) {
        let entries = vec![
            entry(1, &["How do I pay?", "付款方式"], "Card, \"Alipay\", or WeChat Pay.\n# not a heading", "Billing"),
            entry(2, &["Where is my order?"], "See https://shop.example/orders, then ask us.", ""),
        ];
        let text = export(format, &entries);
        let imported = import(format, &text).unwrap();
        assert_eq!(imported.len(), 2, "{text}");
        for entry in &entries {
            let input = imported.iter().find(|input| input.questions == entry.questions).expect("every entry returns");
            assert_eq!(input.questions, entry.questions);
            assert_eq!(input.answer, entry.answer);
            assert_eq!(input.category, entry.category);
        }
    }

    #[test]
    fn csv_and_markdown_round_trip() {
        round_trip(Format::Csv);
        round_trip(Format::Markdown);
    }

    #[test]
    fn bad_files_say_where() {
        let error = import(Format::Csv, "questions,answer\n\"open").unwrap_err().to_string();
        assert!(error.contains("not closed"), "{error}");
        let error = import(Format::Csv, "q,a\nx,y").unwrap_err().to_string();
        assert!(error.contains("header"), "{error}");
        let error = import(Format::Csv, "questions,answer\nhello,\n").unwrap_err().to_string();
        assert!(error.contains("row 2") && error.contains("answer"), "{error}");
        let error = import(Format::Markdown, "intro\n## q\na").unwrap_err().to_string();
        assert!(error.contains("line 1"), "{error}");
        let error = import(Format::Markdown, "## q\n\n## r\n").unwrap_err().to_string();
        assert!(error.contains("answer"), "{error}");
    }
}
