//! The layering rule, checked on the source: a module of `src/` imports only from its own
//! top-level module or from a lower layer (see ARCHITECTURE.md, "Layers").
//!
//! The check reads every `crate::...` path in the code (comments and `#[cfg(test)]` modules
//! aside: tests may build what they test from any layer) and fails with each import that points
//! up, and with any top-level module that has no layer yet.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Bottom up. A module may import from its own row's modules only when they are the same
/// top-level module; the domain modules (one row) may import one another.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundations", &["base"]),
    ("wire vocabulary", &["protocol"]),
    ("storage", &["storage"]),
    (
        "domain",
        &["chat", "people", "sites", "routing", "bot", "search", "history", "webhooks", "push", "email", "cluster"],
    ),
    ("transports", &["net"]),
    ("wiring", &["server"]),
    ("entry point", &["cli"]),
];

/// The rows in which a module may import another top-level module of its own row.
const OPEN_ROWS: &[&str] = &["domain"];

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, modules))| modules.contains(&module))
        .map(|(index, (name, _))| (index, *name))
}

fn rust_files(directory: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(directory).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path);
        }
    }
}

/// The code of a file without comments and without its `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut skipping_test_module = false;
    let mut depth_at_skip = 0usize;
    let mut depth = 0usize;
    let mut pending_cfg_test = false;
    for line in text.lines() {
        let line = match line.find("//") {
            Some(comment) => &line[..comment],
            None => line,
        };
        let trimmed = line.trim();
        if !skipping_test_module {
            if trimmed == "#[cfg(test)]" {
                pending_cfg_test = true;
                continue;
            }
            if pending_cfg_test && trimmed.starts_with("mod ") && trimmed.ends_with('{') {
                skipping_test_module = true;
                depth_at_skip = depth;
            }
            pending_cfg_test = false;
        }
        for character in line.chars() {
            match character {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        if skipping_test_module {
            if depth == depth_at_skip {
                skipping_test_module = false;
            }
            continue;
        }
        code.push_str(line);
        code.push('\n');
    }
    code
}

/// The top-level modules named by `crate::` paths in `code`, including each item of a
/// `crate::{a, b::c}` group.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut modules = BTreeSet::new();
    let identifier = |text: &str| -> String {
        text.trim_start().chars().take_while(|character| character.is_alphanumeric() || *character == '_').collect()
    };
    let mut rest = code;
    while let Some(position) = rest.find("crate::") {
        let preceded_by_identifier = rest[..position]
            .chars()
            .next_back()
            .is_some_and(|character| character.is_alphanumeric() || character == '_');
        rest = &rest[position + "crate::".len()..];
        if preceded_by_identifier {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item_start = 0usize;
            for (index, character) in group.char_indices() {
                match character {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if (character == ',' && depth == 1) || depth == 0 {
                    let name = identifier(&group[item_start..index]);
                    if !name.is_empty() {
                        modules.insert(name);
                    }
                    item_start = index + 1;
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            let name = identifier(rest);
            if !name.is_empty() {
                modules.insert(name);
            }
        }
    }
    modules
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&source, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&source).expect("under src/");
        let top = relative.components().next().expect("a path").as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs");
        if top == "lib" || top == "main" {
            continue;
        }
        let Some((own_layer, own_row)) = layer_of(top) else {
            broken.push(format!("src/{top} has no layer: add it to LAYERS here and to ARCHITECTURE.md"));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for imported in imported_modules(&code_of(&text)) {
            if imported == top {
                continue;
            }
            let Some((layer, row)) = layer_of(&imported) else { continue };
            let same_open_row = layer == own_layer && OPEN_ROWS.contains(&row);
            if layer > own_layer || (layer == own_layer && !same_open_row) {
                broken.push(format!(
                    "{} ({own_row}) imports crate::{imported} ({row})",
                    Path::new("src").join(relative).display()
                ));
            }
        }
    }
    assert!(broken.is_empty(), "imports that break the layering:\n{}", broken.join("\n"));
}

#[test]
fn the_check_sees_grouped_and_plain_imports_but_not_comments_or_tests() {
    let code = code_of(
        "use crate::{storage::Store, chat::{delivery, messages}};\n\
         // use crate::net::AppState;\n\
         fn f() { crate::base::clock::now_millis(); }\n\
         #[cfg(test)]\n\
         mod tests {\n    use crate::server::start;\n}\n\
         fn g() { kefu_crate::ignored(); }\n",
    );
    let found: Vec<String> = imported_modules(&code).into_iter().collect();
    assert_eq!(found, ["base", "chat", "storage"]);
}
