//! The built-in datasets: small real datasets embedded in the binary with
//! `include_bytes!`, so that `strata train` works with no download. The files live in
//! `training/data/`, whose README gives their provenance and licences.
//!
//! | name | samples x features | labels |
//! |---|---|---|
//! | `digits` | 1797 x 64 (8x8 pixel counts 0..16) | 10 classes |
//! | `iris` | 150 x 4 | 3 classes, named |
//! | `wine` | 178 x 13 | 3 classes, named |
//! | `breast_cancer` | 569 x 30 | 2 classes (`malignant`, `benign`) |
//! | `diabetes` | 442 x 10 | 1 regression target |
//! | `sunspots` | yearly series of 309 values, windowed | 1 regression target: the next value |
//!
//! The scikit-learn files (`iris`, `wine`, `breast_cancer`) start with a header line
//! `samples,features,class names…`; it is checked against the rows that follow, so a
//! damaged embedded file is an error, not a smaller dataset.

use super::dataset::{Dataset, Labels, windowed};
use super::error::{DataError, Location};
use super::loaders::{
    CsvOptions, HeaderMode, Task, dataset_from_table, maybe_gunzip, parse_csv, read_csv_table,
};

/// The names [`builtin`] accepts (the contract's list: the compiler checks `data` against it).
pub use strata_artifact::train_config::BUILTIN_DATASETS;

/// The window [`builtin`] uses for `sunspots` (about one solar cycle of 11 years).
pub const SUNSPOTS_DEFAULT_WINDOW: usize = 11;

const DIGITS: &[u8] = include_bytes!("../data/digits.csv.gz");
const IRIS: &[u8] = include_bytes!("../data/iris.csv");
const WINE: &[u8] = include_bytes!("../data/wine_data.csv");
const BREAST_CANCER: &[u8] = include_bytes!("../data/breast_cancer.csv");
const DIABETES_DATA: &[u8] = include_bytes!("../data/diabetes_data_raw.csv.gz");
const DIABETES_TARGET: &[u8] = include_bytes!("../data/diabetes_target.csv.gz");
const SUNSPOTS: &[u8] = include_bytes!("../data/sunspots.csv");

/// A built-in dataset by name (see the module docs); `sunspots` is windowed with
/// [`SUNSPOTS_DEFAULT_WINDOW`].
pub fn builtin(name: &str) -> Result<Dataset, DataError> {
    match name {
        "digits" => digits(),
        "iris" => sklearn_classification("iris", IRIS),
        "wine" => sklearn_classification("wine", WINE),
        "breast_cancer" => sklearn_classification("breast_cancer", BREAST_CANCER),
        "diabetes" => diabetes(),
        "sunspots" => builtin_series("sunspots", SUNSPOTS_DEFAULT_WINDOW),
        _ => Err(unknown(name)),
    }
}

/// The names of a built-in tabular dataset's features, in column order (scikit-learn's
/// names), for pictures that rank them; `None` for the others.
pub fn builtin_feature_names(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "iris" => Some(&["sepal length", "sepal width", "petal length", "petal width"]),
        "wine" => Some(&[
            "alcohol",
            "malic acid",
            "ash",
            "alcalinity of ash",
            "magnesium",
            "total phenols",
            "flavanoids",
            "nonflavanoid phenols",
            "proanthocyanins",
            "color intensity",
            "hue",
            "od280/od315 of diluted wines",
            "proline",
        ]),
        "breast_cancer" => Some(&[
            "mean radius",
            "mean texture",
            "mean perimeter",
            "mean area",
            "mean smoothness",
            "mean compactness",
            "mean concavity",
            "mean concave points",
            "mean symmetry",
            "mean fractal dimension",
            "radius error",
            "texture error",
            "perimeter error",
            "area error",
            "smoothness error",
            "compactness error",
            "concavity error",
            "concave points error",
            "symmetry error",
            "fractal dimension error",
            "worst radius",
            "worst texture",
            "worst perimeter",
            "worst area",
            "worst smoothness",
            "worst compactness",
            "worst concavity",
            "worst concave points",
            "worst symmetry",
            "worst fractal dimension",
        ]),
        "diabetes" => Some(&[
            "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
        ]),
        _ => None,
    }
}

/// A built-in series as a windowed regression dataset: features the last `window`
/// values, target the next one (see [`windowed`]).
pub fn builtin_series(name: &str, window: usize) -> Result<Dataset, DataError> {
    windowed(&builtin_series_values(name)?, window)
}

/// The raw values of a built-in series (only `sunspots`).
pub fn builtin_series_values(name: &str) -> Result<Vec<f32>, DataError> {
    match name {
        "sunspots" => {
            let options = CsvOptions {
                header: HeaderMode::Present,
                ..CsvOptions::default()
            };
            let table = read_csv_table(SUNSPOTS, "sunspots", &options)?;
            expect_count("sunspots", "values", 309, table.lines.len())?;
            // Column 0 is the year, column 1 the yearly mean sunspot number.
            Ok(table
                .values
                .chunks_exact(table.columns)
                .filter_map(|row| row.get(1))
                .map(|&x| x as f32)
                .collect())
        }
        other if BUILTIN_DATASETS.contains(&other) => Err(DataError::Invalid(format!(
            "built-in dataset `{other}` is not a series (the series is `sunspots`)"
        ))),
        other => Err(unknown(other)),
    }
}

fn unknown(name: &str) -> DataError {
    DataError::UnknownBuiltin {
        name: name.to_string(),
        available: BUILTIN_DATASETS.iter().map(|s| s.to_string()).collect(),
    }
}

fn expect_count(file: &str, what: &str, expected: usize, found: usize) -> Result<(), DataError> {
    if expected == found {
        Ok(())
    } else {
        Err(DataError::malformed(
            file,
            Location::File,
            format!("expected {expected} {what}, found {found}"),
        ))
    }
}

fn digits() -> Result<Dataset, DataError> {
    let text = maybe_gunzip(DIGITS.to_vec(), "digits")?;
    let options = CsvOptions {
        header: HeaderMode::Absent,
        task: Task::Classification,
        ..CsvOptions::default()
    };
    let mut data = parse_csv(&text, "digits", &options)?;
    expect_count("digits", "samples", 1797, data.len)?;
    expect_count("digits", "features", 64, data.sample_size())?;
    if let Labels::Classes { classes, .. } = &mut data.labels {
        expect_count("digits", "classes", 10, *classes)?;
    }
    let names = (0..10).map(|d| d.to_string()).collect();
    Ok(data.with_class_names(names))
}

/// A scikit-learn classification CSV: header `samples,features,class names…`, then rows
/// of features with the class index last.
fn sklearn_classification(name: &str, bytes: &[u8]) -> Result<Dataset, DataError> {
    let options = CsvOptions {
        header: HeaderMode::Present,
        task: Task::Classification,
        ..CsvOptions::default()
    };
    let table = read_csv_table(bytes, name, &options)?;
    let header = table.header.clone().unwrap_or_default();
    let header_error = || {
        DataError::malformed(
            name,
            Location::Line(table.header_line),
            "the header is not `samples,features,class names…`",
        )
    };
    let count = |i: usize| -> Result<usize, DataError> {
        header
            .get(i)
            .and_then(|s| s.parse().ok())
            .ok_or_else(header_error)
    };
    let (samples, features) = (count(0)?, count(1)?);
    let class_names: Vec<String> = header.get(2..).unwrap_or_default().to_vec();
    if class_names.is_empty() {
        return Err(header_error());
    }
    let mut data = dataset_from_table(&table, name, &options)?;
    expect_count(name, "samples", samples, data.len)?;
    expect_count(name, "features", features, data.sample_size())?;
    if let Labels::Classes { classes, .. } = &mut data.labels {
        if *classes > class_names.len() {
            return Err(DataError::malformed(
                name,
                Location::File,
                format!(
                    "labels go up to {} but the header names {} classes",
                    *classes - 1,
                    class_names.len()
                ),
            ));
        }
        *classes = class_names.len();
    }
    Ok(data.with_class_names(class_names))
}

fn diabetes() -> Result<Dataset, DataError> {
    let data = maybe_gunzip(DIABETES_DATA.to_vec(), "diabetes")?;
    let target = maybe_gunzip(DIABETES_TARGET.to_vec(), "diabetes")?;
    let features = whitespace_numbers(&data, "diabetes_data_raw", 10)?;
    let targets = whitespace_numbers(&target, "diabetes_target", 1)?;
    expect_count("diabetes", "samples", 442, targets.len())?;
    Dataset::new(
        features,
        vec![10],
        Labels::Targets {
            values: targets,
            width: 1,
        },
    )
}

/// Rows of `width` whitespace-separated numbers, one row a line.
fn whitespace_numbers(bytes: &[u8], file: &str, width: usize) -> Result<Vec<f32>, DataError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| DataError::malformed(file, Location::File, format!("not UTF-8: {e}")))?;
    let mut values = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let mut count = 0;
        for (j, field) in line.split_ascii_whitespace().enumerate() {
            let x: f32 = field.parse().map_err(|_| {
                DataError::malformed(
                    file,
                    Location::Cell {
                        line: line_no,
                        column: j + 1,
                    },
                    format!("`{field}` is not a number"),
                )
            })?;
            values.push(x);
            count += 1;
        }
        if count != width {
            return Err(DataError::malformed(
                file,
                Location::Line(line_no),
                format!("{count} values where {width} are expected"),
            ));
        }
    }
    Ok(values)
}
