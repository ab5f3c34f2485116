//! Import and export of knowledge-base entries as CSV, JSON or Markdown.
//!
//! CSV (RFC 4180, UTF-8, a header row): the columns `id`, `lang`, `questions`, `answer` and
//! `category` in any order, where `questions` holds the variants separated by `|`; `questions`
//! and `answer` are required, and any other column is an error (a misspelt `categroy` would
//! otherwise lose every category silently). Fields with commas, quotes or line breaks are
//! quoted, quotes doubled. A row with an `id` updates that entry; one without adds an entry.
//!
//! JSON: an array of objects with the same fields (`questions` an array); an unknown field is an
//! error too.
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
    Json,
    Markdown,
}

impl Format {
    pub fn parse(name: &str) -> Result<Format, KbError> {
        match name {
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            "markdown" | "md" => Ok(Format::Markdown),
            other => Err(KbError::Invalid(format!("format: {other:?} is not csv, json or markdown"))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Markdown => "text/markdown; charset=utf-8",
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Markdown => "md",
        }
    }
}

/// One entry of an imported file: an update of entry `id`, or a new entry when `id` is `None`.
#[derive(Clone, Debug)]
pub struct ImportRow {
    pub id: Option<u64>,
    pub input: EntryInput,
}

/// The entries of a file, validated, ignoring any `id`s (every row a new entry).
pub fn import(format: Format, text: &str) -> Result<Vec<EntryInput>, KbError> {
    Ok(import_rows(format, text)?.into_iter().map(|row| row.input).collect())
}

/// The rows of a file, validated; the message of an error names the row or line.
pub fn import_rows(format: Format, text: &str) -> Result<Vec<ImportRow>, KbError> {
    match format {
        Format::Csv => import_csv(text),
        Format::Json => import_json(text),
        Format::Markdown => Ok(import_markdown(text)?.into_iter().map(|input| ImportRow { id: None, input }).collect()),
    }
}

pub fn export(format: Format, entries: &[KbEntry]) -> String {
    match format {
        Format::Csv => export_csv(entries),
        Format::Json => export_json(entries),
        Format::Markdown => export_markdown(entries),
    }
}

/// A JSON row: [`EntryInput`] with an optional `id` (an export always has it).
#[derive(serde::Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<u64>,
    #[serde(default)]
    lang: String,
    questions: Vec<String>,
    answer: String,
    #[serde(default)]
    category: String,
}

fn import_json(text: &str) -> Result<Vec<ImportRow>, KbError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rows: Vec<serde_json::Value> = serde_json::from_str(text)
        .map_err(|error| KbError::Invalid(format!("json: expected an array of entries: {error}")))?;
    let mut imported = Vec::with_capacity(rows.len());
    for (number, row) in rows.into_iter().enumerate() {
        let item = number + 1;
        let row: JsonRow =
            serde_json::from_value(row).map_err(|error| KbError::Invalid(format!("json entry {item}: {error}")))?;
        let input = EntryInput { questions: row.questions, answer: row.answer, category: row.category, lang: row.lang };
        let input = input.validate().map_err(|error| KbError::Invalid(format!("json entry {item}: {error}")))?;
        imported.push(ImportRow { id: row.id, input });
    }
    Ok(imported)
}

fn export_json(entries: &[KbEntry]) -> String {
    let rows: Vec<JsonRow> = entries
        .iter()
        .map(|entry| JsonRow {
            id: Some(entry.id),
            lang: entry.lang.clone(),
            questions: entry.questions.clone(),
            answer: entry.answer.clone(),
            category: entry.category.clone(),
        })
        .collect();
    serde_json::to_string_pretty(&rows).expect("entries always serialize")
}

/// The columns a CSV file may have.
const CSV_COLUMNS: [&str; 5] = ["id", "lang", "questions", "answer", "category"];

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

fn import_csv(text: &str) -> Result<Vec<ImportRow>, KbError> {
    let mut records = csv_records(text)?.into_iter();
    let header: Vec<String> = records
        .next()
        .ok_or_else(|| KbError::Invalid("csv: empty; expected a header row questions,answer,category".into()))?
        .iter()
        .map(|name| name.trim().to_lowercase())
        .collect();
    if let Some(unknown) = header.iter().find(|name| !CSV_COLUMNS.contains(&name.as_str())) {
        return Err(KbError::Invalid(format!(
            "csv: the header names an unknown column {unknown:?}; the columns are {}",
            CSV_COLUMNS.join(", ")
        )));
    }
    let column = |name: &str| header.iter().position(|found| found == name);
    let (Some(questions_at), Some(answer_at)) = (column("questions"), column("answer")) else {
        return Err(KbError::Invalid("csv: the header must name the columns questions and answer".into()));
    };
    let (category_at, id_at, lang_at) = (column("category"), column("id"), column("lang"));
    let mut rows = Vec::new();
    for (number, record) in records.enumerate() {
        let row = number + 2;
        // More cells than columns is usually an unquoted comma; guessing would move text into
        // the wrong field.
        if record.len() > header.len() {
            return Err(KbError::Invalid(format!(
                "csv row {row}: {} cells but the header names {} columns (quote a cell that holds a comma)",
                record.len(),
                header.len()
            )));
        }
        // Cells kefu's export neutralised against formulas come back as they were typed.
        let field = |at: usize| {
            record.get(at).map(|cell| crate::base::csv_cells::restore_neutralized(cell).to_owned()).unwrap_or_default()
        };
        let id = match id_at.map(field).map(|id| id.trim().to_owned()).filter(|id| !id.is_empty()) {
            Some(id) => Some(id.parse::<u64>().map_err(|_| {
                KbError::Invalid(format!(
                    "csv row {row}: id: {id:?} is not an entry id (leave it empty for a new entry)"
                ))
            })?),
            None => None,
        };
        let input = EntryInput {
            questions: field(questions_at).split('|').map(str::to_owned).collect(),
            answer: field(answer_at),
            category: category_at.map(field).unwrap_or_default(),
            lang: lang_at.map(field).unwrap_or_default(),
        };
        let input = input.validate().map_err(|error| KbError::Invalid(format!("csv row {row}: {error}")))?;
        rows.push(ImportRow { id, input });
    }
    Ok(rows)
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
    let mut out = String::from("id,lang,questions,answer,category\n");
    for entry in entries {
        let questions: Vec<String> = entry.questions.iter().map(|question| question.replace('|', "/")).collect();
        out.push_str(&entry.id.to_string());
        out.push(',');
        out.push_str(&csv_field(&entry.lang));
        out.push(',');
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
                        lang: String::new(),
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
    fn csv_json_and_markdown_round_trip() {
        round_trip(Format::Csv);
        round_trip(Format::Json);
        round_trip(Format::Markdown);
    }

    #[test]
    fn csv_and_json_carry_ids_and_languages() {
        let mut first = entry(7, &["How do I pay?"], "By card.", "Billing");
        first.lang = "en".into();
        for format in [Format::Csv, Format::Json] {
            let rows = import_rows(format, &export(format, std::slice::from_ref(&first))).unwrap();
            assert_eq!(rows[0].id, Some(7));
            assert_eq!(rows[0].input.lang, "en");
        }
        let rows = import_rows(Format::Csv, "questions,answer,id\nq,a,\n").unwrap();
        assert_eq!(rows[0].id, None);
        let error = import_rows(Format::Csv, "questions,answer\nq,Yes, to 40 countries.\n").unwrap_err().to_string();
        assert!(error.contains("row 2") && error.contains("3 cells"), "{error}");
    }

    #[test]
    fn unknown_columns_and_fields_are_errors() {
        let error = import_rows(Format::Csv, "questions,answer,categroy\nq,a,c\n").unwrap_err().to_string();
        assert!(error.contains("unknown column \"categroy\""), "{error}");
        let error =
            import_rows(Format::Json, r#"[{"questions":["q"],"answer":"a","tags":[]}]"#).unwrap_err().to_string();
        assert!(error.contains("json entry 1") && error.contains("tags"), "{error}");
        let error = import_rows(Format::Csv, "id,questions,answer\nseven,q,a\n").unwrap_err().to_string();
        assert!(error.contains("row 2") && error.contains("id"), "{error}");
        let error = import_rows(Format::Csv, "lang,questions,answer\nklingon!,q,a\n").unwrap_err().to_string();
        assert!(error.contains("row 2") && error.contains("lang"), "{error}");
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
