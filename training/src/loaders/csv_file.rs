//! Delimited text files (CSV): one sample a row, one column the label.
//!
//! The header is detected (a first line with a field that is neither a number nor
//! missing) unless [`HeaderMode`] says otherwise; the first data row fixes the number
//! of columns. Fields are trimmed; an empty field or `NaN` is missing; anything else
//! must be a finite number. Errors name the line and column (both 1-based).

use std::path::Path;

use super::read_data_file;
use crate::dataset::{Dataset, Labels};
use crate::error::{DataError, Location};

/// Integer CSV labels at or above this are read as regression targets under
/// [`Task::Auto`]: no classifier has that many classes, but counts and prices do.
pub const MAX_AUTO_CLASSES: usize = 65_536;

/// Whether the first line of a CSV file names its columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HeaderMode {
    /// A header if any field of the first line is neither a number nor missing.
    #[default]
    Auto,
    Present,
    Absent,
}

/// Whether labels are class indices or regression targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Task {
    /// Classification if every label is a whole number in `0..MAX_AUTO_CLASSES`,
    /// regression otherwise (so `-1/+1` labels read as targets: remap them, or force
    /// `Classification` to get an error naming the line).
    #[default]
    Auto,
    Classification,
    Regression,
}

/// How to read a CSV file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvOptions {
    pub header: HeaderMode,
    /// The label column: 0-based from the left, or negative from the right (-1: last).
    pub label_column: isize,
    pub task: Task,
    /// Skip rows with a missing value (an empty field or `NaN`) instead of failing.
    pub drop_missing: bool,
    /// The field separator (`,` by default).
    pub delimiter: u8,
}

impl Default for CsvOptions {
    fn default() -> CsvOptions {
        CsvOptions {
            header: HeaderMode::Auto,
            label_column: -1,
            task: Task::Auto,
            drop_missing: false,
            delimiter: b',',
        }
    }
}

/// Loads a CSV file (see [`CsvOptions`]).
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    let bytes = read_data_file(path)?;
    parse_csv(&bytes, &path.display().to_string(), options)
}

/// Parses CSV text; `file` names it in errors.
pub fn parse_csv(bytes: &[u8], file: &str, options: &CsvOptions) -> Result<Dataset, DataError> {
    let table = read_csv_table(bytes, file, options)?;
    dataset_from_table(&table, file, options)
}

/// A CSV file's numbers: its rows with every value present (row-major), each with the
/// line it came from.
pub(crate) struct CsvTable {
    pub header: Option<Vec<String>>,
    pub header_line: u64,
    pub columns: usize,
    pub values: Vec<f64>,
    pub lines: Vec<u64>,
}

enum Cell {
    Number(f64),
    Missing,
    Text,
}

fn parse_cell(field: &[u8]) -> Cell {
    let Ok(text) = std::str::from_utf8(field) else {
        return Cell::Text;
    };
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("nan") {
        return Cell::Missing;
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Cell::Number(x),
        _ => Cell::Text,
    }
}

/// Reads every row of a CSV file as numbers.
pub(crate) fn read_csv_table(
    bytes: &[u8],
    file: &str,
    options: &CsvOptions,
) -> Result<CsvTable, DataError> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(options.delimiter)
        .from_reader(bytes);
    let mut table = CsvTable {
        header: None,
        header_line: 0,
        columns: 0,
        values: Vec::new(),
        lines: Vec::new(),
    };
    let mut record = csv::ByteRecord::new();
    let mut first = true;
    let mut first_data_line = 0;
    let mut row = Vec::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let location = e
                    .position()
                    .map_or(Location::File, |p| Location::Line(p.line()));
                return Err(DataError::malformed(file, location, e.to_string()));
            }
        }
        let line = record.position().map_or(0, |p| p.line());
        // A line holding only whitespace is a blank line, not a row of missing values.
        if record.len() == 1 && record[0].iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if first {
            first = false;
            let is_header = match options.header {
                HeaderMode::Present => true,
                HeaderMode::Absent => false,
                HeaderMode::Auto => record.iter().any(|f| matches!(parse_cell(f), Cell::Text)),
            };
            if is_header {
                table.header = Some(
                    record
                        .iter()
                        .map(|f| String::from_utf8_lossy(f).trim().to_string())
                        .collect(),
                );
                table.header_line = line;
                continue;
            }
        }
        // The first data row fixes the width (a header may differ: scikit-learn's
        // headers hold counts and class names).
        if table.lines.is_empty() && table.columns == 0 {
            table.columns = record.len();
            first_data_line = line;
        }
        if record.len() != table.columns {
            return Err(DataError::malformed(
                file,
                Location::Line(line),
                format!(
                    "{} fields where line {first_data_line} has {}",
                    record.len(),
                    table.columns
                ),
            ));
        }
        row.clear();
        let mut missing = None;
        for (index, field) in record.iter().enumerate() {
            let column = index + 1;
            match parse_cell(field) {
                Cell::Number(x) => row.push(x),
                Cell::Missing => {
                    missing.get_or_insert(column);
                    row.push(f64::NAN);
                }
                Cell::Text => {
                    return Err(DataError::malformed(
                        file,
                        Location::Cell { line, column },
                        format!(
                            "`{}` is not a finite number",
                            String::from_utf8_lossy(field).trim()
                        ),
                    ));
                }
            }
        }
        if let Some(column) = missing {
            if options.drop_missing {
                continue;
            }
            return Err(DataError::MissingValue {
                file: file.to_string(),
                line,
                column,
            });
        }
        table.values.extend_from_slice(&row);
        table.lines.push(line);
    }
    if table.lines.is_empty() {
        return Err(DataError::malformed(
            file,
            Location::File,
            if first {
                "the file is empty"
            } else if table.header.is_some() {
                "the file has no data rows after its header line (or every row has a \
                 missing value)"
            } else {
                "every row has a missing value"
            },
        ));
    }
    Ok(table)
}

/// The label column index of `options` in a table of `columns` columns.
fn label_index(file: &str, options: &CsvOptions, columns: usize) -> Result<usize, DataError> {
    let c = options.label_column;
    let index = if c >= 0 {
        Some(c as usize).filter(|&i| i < columns)
    } else {
        columns.checked_sub(c.unsigned_abs())
    };
    index.ok_or_else(|| {
        DataError::malformed(
            file,
            Location::File,
            format!("label column {c} does not exist: the file has {columns} columns"),
        )
    })
}

pub(crate) fn dataset_from_table(
    table: &CsvTable,
    file: &str,
    options: &CsvOptions,
) -> Result<Dataset, DataError> {
    let columns = table.columns;
    if columns < 2 {
        return Err(DataError::malformed(
            file,
            Location::File,
            format!("{columns} column: need at least one feature column and a label column"),
        ));
    }
    let label = label_index(file, options, columns)?;
    let n = table.lines.len();
    let mut features = Vec::with_capacity(n * (columns - 1));
    let mut labels = Vec::with_capacity(n);
    for (i, row) in table.values.chunks_exact(columns).enumerate() {
        for (j, &x) in row.iter().enumerate() {
            // A finite number past f32's range would become an infinity.
            if !(x as f32).is_finite() {
                return Err(DataError::malformed(
                    file,
                    Location::Cell {
                        line: table.lines[i],
                        column: j + 1,
                    },
                    format!("{x} is too large for f32 (at most about {:e})", f32::MAX),
                ));
            }
            if j == label {
                labels.push(x);
            } else {
                features.push(x as f32);
            }
        }
    }
    let is_class = |x: f64| x.fract() == 0.0 && (0.0..MAX_AUTO_CLASSES as f64).contains(&x);
    let classify = match options.task {
        Task::Auto => labels.iter().all(|&x| is_class(x)),
        Task::Classification => {
            if let Some(i) = labels.iter().position(|&x| !is_class(x)) {
                return Err(DataError::malformed(
                    file,
                    Location::Cell {
                        line: table.lines[i],
                        column: label + 1,
                    },
                    format!(
                        "label {} is not a class index (a whole number in 0..{MAX_AUTO_CLASSES})",
                        labels[i]
                    ),
                ));
            }
            true
        }
        Task::Regression => false,
    };
    let labels = if classify {
        let values: Vec<i32> = labels.iter().map(|&x| x as i32).collect();
        let classes = values.iter().max().map_or(0, |&m| m as usize + 1);
        Labels::Classes { values, classes }
    } else {
        Labels::Targets {
            values: labels.iter().map(|&x| x as f32).collect(),
            width: 1,
        }
    };
    Dataset::new(features, vec![(columns - 1) as u64], labels)
}
