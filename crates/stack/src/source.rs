//! Reading `.tf` files: a file or every `*.tf` of a folder, parsed with hcl-edit so that each
//! block and attribute keeps the line it came from; expressions are converted to hcl-rs's
//! evaluable form.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hcl::edit::Span;
use hcl::edit::structure as edit;

use crate::error::{Location, StackError};

/// An attribute as written: `name = expression`.
#[derive(Debug, Clone)]
pub struct SourceAttribute {
    /// The attribute's name.
    pub name: String,
    /// The unevaluated expression.
    pub expr: hcl::Expression,
    /// Where it is.
    pub at: Location,
}

/// A block as written: `kind "label" ... { attributes and blocks }`.
#[derive(Debug, Clone)]
pub struct SourceBlock {
    /// The block type, e.g. `resource`, `variable`, `kinesis`.
    pub kind: String,
    /// The labels, e.g. `["aws_kinesis_stream", "raw"]`.
    pub labels: Vec<String>,
    /// The attributes in the order written.
    pub attributes: Vec<SourceAttribute>,
    /// The nested blocks in the order written.
    pub blocks: Vec<SourceBlock>,
    /// Where the block starts.
    pub at: Location,
}

impl SourceBlock {
    /// The attribute `name`, if written.
    pub fn attribute(&self, name: &str) -> Option<&SourceAttribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
}

/// One parsed file: its top-level attributes (only allowed in `.tfvars`) and blocks.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The file's path.
    pub path: Arc<PathBuf>,
    /// Top-level attributes.
    pub attributes: Vec<SourceAttribute>,
    /// Top-level blocks.
    pub blocks: Vec<SourceBlock>,
}

/// The `.tf` files of `path` (the file itself, or every `*.tf` in the folder, sorted by name).
pub fn configuration_files(path: &Path) -> Result<Vec<PathBuf>, StackError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let files = files_with(path, |name| name.ends_with(".tf"))?;
    if files.is_empty() {
        return Err(StackError::Input(format!(
            "{}: no .tf files here (give a .tf file or a folder holding them)",
            path.display()
        )));
    }
    Ok(files)
}

/// The folder a stack's `.tf` files live in (the state file and tfvars are looked for there).
pub fn stack_dir(path: &Path) -> PathBuf {
    if path.is_file() {
        path.parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    } else {
        path.to_path_buf()
    }
}

/// The files of `dir` whose name satisfies `keep`, sorted by name.
pub fn files_with(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<PathBuf>, StackError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StackError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StackError::io(dir, e))?;
        let name = entry.file_name();
        if keep(&name.to_string_lossy()) && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Reads and parses one file.
pub fn read_file(path: &Path) -> Result<SourceFile, StackError> {
    let text = std::fs::read_to_string(path).map_err(|e| StackError::io(path, e))?;
    parse(path, &text)
}

/// Parses HCL text that came from `path`.
pub fn parse(path: &Path, text: &str) -> Result<SourceFile, StackError> {
    let file = Arc::new(path.to_path_buf());
    let body = hcl::edit::parser::parse_body(text).map_err(|e| StackError::Config {
        at: Location {
            file: Arc::clone(&file),
            line: e.location().line(),
        },
        message: format!("syntax error: {}", e.message()),
    })?;
    let lines = LineIndex::new(text);
    let (attributes, blocks) = convert_body(body, &file, &lines);
    Ok(SourceFile {
        path: file,
        attributes,
        blocks,
    })
}

fn convert_body(
    body: edit::Body,
    file: &Arc<PathBuf>,
    lines: &LineIndex,
) -> (Vec<SourceAttribute>, Vec<SourceBlock>) {
    let mut attributes = Vec::new();
    let mut blocks = Vec::new();
    for structure in body {
        match structure {
            edit::Structure::Attribute(attribute) => {
                let at = lines.location(file, attribute.span());
                attributes.push(SourceAttribute {
                    name: attribute.key.as_str().to_string(),
                    expr: attribute.value.into(),
                    at,
                });
            }
            edit::Structure::Block(block) => {
                let at = lines.location(file, block.span());
                let labels = block
                    .labels
                    .iter()
                    .map(|label| match label {
                        edit::BlockLabel::Ident(ident) => ident.as_str().to_string(),
                        edit::BlockLabel::String(s) => s.as_str().to_string(),
                    })
                    .collect();
                let (attrs, nested) = convert_body(block.body, file, lines);
                blocks.push(SourceBlock {
                    kind: block.ident.as_str().to_string(),
                    labels,
                    attributes: attrs,
                    blocks: nested,
                    at,
                });
            }
        }
    }
    (attributes, blocks)
}

/// Byte offsets to 1-based lines.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { starts }
    }

    fn location(&self, file: &Arc<PathBuf>, span: Option<std::ops::Range<usize>>) -> Location {
        let line = match span {
            Some(range) => self.starts.partition_point(|&s| s <= range.start),
            None => 0,
        };
        Location {
            file: Arc::clone(file),
            line,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_attributes_keep_their_lines() {
        let text = "\n# comment\nresource \"aws_sns_topic\" \"alerts\" {\n  name = \"a\"\n\n  tags = {}\n}\n";
        let file = parse(Path::new("main.tf"), text).unwrap();
        let block = &file.blocks[0];
        assert_eq!(block.kind, "resource");
        assert_eq!(block.labels, ["aws_sns_topic", "alerts"]);
        assert_eq!(block.at.line, 3);
        assert_eq!(block.attributes[0].at.line, 4);
        assert_eq!(block.attributes[1].at.line, 6);
    }

    #[test]
    fn a_syntax_error_names_file_and_line() {
        let err = parse(
            Path::new("bad.tf"),
            "a = 1\nresource \"x\" {\n  b = = 2\n}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("bad.tf:3: syntax error"), "{text}");
    }
}
