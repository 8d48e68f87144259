//! How a result is written: file format, CSV separator, text encoding, header row, file name.
//!
//! Decided at submit and stored with the job, so a result is always written and served the way
//! it was asked for, even after a restart.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The file format of a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// RFC 4180 CSV (the seed's format).
    #[default]
    Csv,
    /// One JSON array of objects, one object per row.
    Json,
    /// An Excel workbook with one sheet.
    Xlsx,
    /// One Parquet file.
    Parquet,
}

impl OutputFormat {
    /// Every format, in the order error messages list them.
    pub const ALL: [OutputFormat; 4] = [Self::Csv, Self::Json, Self::Xlsx, Self::Parquet];

    /// Parses a format name, ignoring case.
    pub fn parse(name: &str) -> Result<Self, InvalidOutput> {
        Self::ALL
            .into_iter()
            .find(|f| f.extension().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| InvalidOutput::Format(name.chars().take(40).collect()))
    }

    /// The file name extension, which is also the format's name in the API.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Csv => "csv",
            Self::Json => "json",
            Self::Xlsx => "xlsx",
            Self::Parquet => "parquet",
        }
    }

    /// Whether the format is text, so that `encode` applies to it.
    pub fn is_text(self) -> bool {
        matches!(self, Self::Csv | Self::Json)
    }

    /// The `Content-Type` of a result in this format written in `encoding`.
    pub fn content_type(self, encoding: TextEncoding) -> String {
        match self {
            Self::Csv => format!("text/csv; charset={}", encoding.label()),
            Self::Json => format!("application/json; charset={}", encoding.label()),
            Self::Xlsx => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".to_owned()
            }
            Self::Parquet => "application/vnd.apache.parquet".to_owned(),
        }
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.extension())
    }
}

/// The character encoding of a text result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextEncoding {
    /// UTF-8 (the default).
    #[default]
    Utf8,
    /// GBK, the Simplified Chinese code page (as the WHATWG Encoding Standard defines it).
    Gbk,
}

impl TextEncoding {
    /// Parses an encoding name, ignoring case: `utf-8`, `utf8`, `gbk`.
    pub fn parse(name: &str) -> Result<Self, InvalidOutput> {
        match name.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Self::Utf8),
            "gbk" => Ok(Self::Gbk),
            _ => Err(InvalidOutput::Encoding(name.chars().take(40).collect())),
        }
    }

    /// The charset label for HTTP headers.
    pub fn label(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Gbk => "gbk",
        }
    }
}

/// The longest CSV separator accepted, in characters.
pub const MAX_SEPARATOR_CHARS: usize = 16;
/// The longest file name kept, in characters; longer names are cut.
pub const MAX_FILE_NAME_CHARS: usize = 200;

/// How a result is written and named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputSpec {
    /// The file format.
    pub format: OutputFormat,
    /// The field separator of CSV results; one or more characters.
    pub separator: String,
    /// The encoding of text results (CSV, JSON).
    pub encoding: TextEncoding,
    /// Whether CSV and XLSX results start with a row of column names.
    pub include_header: bool,
    /// The download's name without extension; safe for headers (see [`OutputSpec::file_name`]).
    pub file_name: String,
    /// Whether the stored result is compressed, and how (the download is then the compressed
    /// file: `result.csv.gz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

/// A compression of the stored result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// gzip (RFC 1952), `.gz`.
    Gzip,
    /// Zstandard, `.zst`.
    Zstd,
}

impl Compression {
    /// Reads a compression name, ignoring case; `none` is no compression.
    pub fn parse(name: &str) -> Result<Option<Self>, InvalidOutput> {
        match name.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => Ok(Some(Self::Gzip)),
            "zstd" | "zst" => Ok(Some(Self::Zstd)),
            "none" | "" => Ok(None),
            _ => Err(InvalidOutput::Compression(name.chars().take(40).collect())),
        }
    }

    /// The file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Gzip => "gz",
            Self::Zstd => "zst",
        }
    }

    /// The `Content-Type` of a compressed file.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Gzip => "application/gzip",
            Self::Zstd => "application/zstd",
        }
    }
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            format: OutputFormat::Csv,
            separator: ",".to_owned(),
            encoding: TextEncoding::Utf8,
            include_header: false,
            file_name: "result".to_owned(),
            compression: None,
        }
    }
}

/// Why an output option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidOutput {
    /// An unknown format name.
    #[error("field 'format' must be one of csv, json, xlsx, parquet, got {0:?}")]
    Format(String),
    /// An unknown encoding name.
    #[error("field 'encode' must be one of utf-8, gbk, got {0:?}")]
    Encoding(String),
    /// A separator that is empty, too long, or holds a quote or a line break.
    #[error(
        "field 'separator' must be 1 to {MAX_SEPARATOR_CHARS} characters without '\"', carriage returns or line feeds, got {0:?}"
    )]
    Separator(String),
    /// An unknown compression name.
    #[error("field 'compression' must be one of gzip, zstd, none, got {0:?}")]
    Compression(String),
}

impl OutputSpec {
    /// Sets the CSV separator after checking it: 1 to 16 characters, no `"`, CR or LF (they would
    /// make the CSV ambiguous).
    pub fn with_separator(mut self, separator: &str) -> Result<Self, InvalidOutput> {
        let chars = separator.chars().count();
        if chars == 0 || chars > MAX_SEPARATOR_CHARS || separator.contains(['"', '\r', '\n']) {
            return Err(InvalidOutput::Separator(
                separator.chars().take(40).collect(),
            ));
        }
        separator.clone_into(&mut self.separator);
        Ok(self)
    }

    /// Sets the file name, made safe: path separators and control characters become `_`,
    /// surrounding whitespace and dots go, it is cut to 200 characters, and an empty name becomes
    /// `result`. Any other Unicode is kept.
    pub fn with_file_name(mut self, name: &str) -> Self {
        let cleaned: String = name
            .chars()
            .map(|c| {
                if c == '/' || c == '\\' || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .take(MAX_FILE_NAME_CHARS)
            .collect();
        let trimmed = cleaned.trim_matches(|c: char| c.is_whitespace() || c == '.');
        self.file_name = if trimmed.is_empty() {
            "result".to_owned()
        } else {
            trimmed.to_owned()
        };
        self
    }

    /// The download's full file name: `<file_name>.<extension>`.
    pub fn download_name(&self) -> String {
        match self.compression {
            None => format!("{}.{}", self.file_name, self.format.extension()),
            Some(c) => format!(
                "{}.{}.{}",
                self.file_name,
                self.format.extension(),
                c.extension()
            ),
        }
    }

    /// The `Content-Type` of the result.
    pub fn content_type(&self) -> String {
        match self.compression {
            None => self.format.content_type(self.encoding),
            Some(c) => c.content_type().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_ignoring_case_and_list_the_choices_otherwise() {
        assert_eq!(OutputFormat::parse("CSV"), Ok(OutputFormat::Csv));
        assert_eq!(OutputFormat::parse("Parquet"), Ok(OutputFormat::Parquet));
        assert_eq!(OutputFormat::parse("xlsx"), Ok(OutputFormat::Xlsx));
        let e = OutputFormat::parse("xls").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "field 'format' must be one of csv, json, xlsx, parquet, got \"xls\""
        );
    }

    #[test]
    fn separators_may_be_long_but_not_ambiguous() {
        for good in [",", "|", "#", "$", "@", "\t", ";", "||", "::", "分隔"] {
            let spec = OutputSpec::default().with_separator(good).expect(good);
            assert_eq!(spec.separator, good);
        }
        for bad in ["", "\"", "a\nb", "\r", &"x".repeat(17)] {
            assert!(
                OutputSpec::default().with_separator(bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn file_names_keep_unicode_and_lose_paths_and_controls() {
        let name = |s: &str| OutputSpec::default().with_file_name(s).file_name;
        assert_eq!(name("订单 2024"), "订单 2024");
        assert_eq!(name("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(name("a\r\nSet-Cookie: x"), "a__Set-Cookie: x");
        assert_eq!(name("  "), "result");
        assert_eq!(name(".."), "result");
        assert_eq!(name(&"é".repeat(300)).chars().count(), MAX_FILE_NAME_CHARS);
        assert_eq!(
            OutputSpec::default().with_file_name("x").download_name(),
            "x.csv"
        );
    }

    #[test]
    fn old_records_without_output_read_as_the_defaults() {
        let spec: OutputSpec = serde_json::from_str("{}").expect("defaults");
        assert_eq!(spec, OutputSpec::default());
    }
}
