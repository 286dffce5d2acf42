//! [`DataSource`]: where a dataset comes from, as written on the command line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::{
    ArrayFileKind, ArrayFileSpec, CsvOptions, HeaderMode, Task, load_csv, load_idx, load_npy,
    load_safetensors,
};
use crate::builtin::{BUILTIN_DATASETS, builtin, builtin_series};
use crate::dataset::Dataset;
use crate::error::DataError;
use crate::generated::{AddingTask, ReverseTask};

/// Where a dataset comes from, as written on the command line:
///
/// ```text
/// digits                      a built-in dataset (see BUILTIN_DATASETS)
/// sunspots,window=16          a built-in series, windowed
/// csv:PATH[,label=-1][,header|,no_header][,drop_missing]
///         [,classification|,regression][,delimiter=;|tab|space]
/// npy:FEATURES.npy,LABELS.npy
/// idx:IMAGES,LABELS           MNIST-format files, gzipped or not
/// safetensors:PATH[,NAME=ARRAY]…
///                             named tensors: each model input and label takes the
///                             tensor of its name (or the one mapped to it), the
///                             features falling back to `features`, the label to `labels`
/// npz:PATH[,NAME=ARRAY]…      NumPy's .npz, the same way
/// npy:DIR[,NAME=ARRAY]…       a directory of NAME.npy files, the same way
/// reverse[:length=10][,samples=10000][,seed=0]
///                             generated: reverse a sequence of digits
/// adding[:length=100][,samples=10000][,seed=0]
///                             generated: the adding problem
/// ```
///
/// Paths cannot contain commas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    Builtin {
        name: String,
        window: Option<usize>,
    },
    Csv {
        path: PathBuf,
        options: CsvOptions,
    },
    Npy {
        features: PathBuf,
        labels: PathBuf,
    },
    Idx {
        images: PathBuf,
        labels: PathBuf,
    },
    Safetensors {
        path: PathBuf,
        /// `NAME=ARRAY`: the array of model input or label `NAME`, where it has another
        /// name.
        names: Vec<(String, String)>,
    },
    Npz {
        path: PathBuf,
        names: Vec<(String, String)>,
    },
    NpyDir {
        dir: PathBuf,
        names: Vec<(String, String)>,
    },
    /// A generated sequence-to-sequence task (see [`crate::generated`]).
    Reverse(ReverseTask),
    /// The adding problem (see [`crate::generated::adding`]).
    Adding(AddingTask),
}

impl DataSource {
    /// Parses a command-line spec (see the type's docs).
    pub fn parse(spec: &str) -> Result<DataSource, DataError> {
        let bad = |message: String| DataError::BadSpec {
            spec: spec.to_string(),
            message,
        };
        let (kind, rest) = match spec.split_once(':') {
            Some((kind, rest)) => (kind, rest),
            None if spec.trim() == "reverse" => return Ok(DataSource::Reverse(Default::default())),
            None if spec.trim() == "adding" => return Ok(DataSource::Adding(Default::default())),
            None => ("builtin", spec),
        };
        if kind == "reverse" {
            return parse_reverse(rest).map(DataSource::Reverse).map_err(bad);
        }
        if kind == "adding" {
            return AddingTask::parse(rest).map(DataSource::Adding).map_err(bad);
        }
        let mut parts = rest.split(',').map(str::trim);
        let first = parts.next().unwrap_or_default();
        if first.is_empty() {
            return Err(bad(format!("`{kind}:` needs a path or name after it")));
        }
        let options: Vec<&str> = parts.collect();
        let pair = |what: &str| -> Result<(PathBuf, PathBuf), DataError> {
            match options.as_slice() {
                [second] if !second.is_empty() => Ok((PathBuf::from(first), PathBuf::from(second))),
                _ => Err(bad(format!(
                    "expected `{kind}:{what}` (two comma-separated paths)"
                ))),
            }
        };
        match kind {
            "builtin" => {
                if !BUILTIN_DATASETS.contains(&first) {
                    return Err(DataError::UnknownBuiltin {
                        name: first.to_string(),
                        available: BUILTIN_DATASETS.iter().map(|s| s.to_string()).collect(),
                    });
                }
                let mut window = None;
                for option in options {
                    match option.split_once('=') {
                        Some(("window", w)) => {
                            let w = w.parse().map_err(|_| {
                                bad(format!("window `{w}` is not a positive integer"))
                            })?;
                            window = Some(w);
                        }
                        _ => {
                            return Err(bad(format!(
                                "unknown option `{option}` for a built-in dataset (known: window=N)"
                            )));
                        }
                    }
                }
                Ok(DataSource::Builtin {
                    name: first.to_string(),
                    window,
                })
            }
            "csv" => Ok(DataSource::Csv {
                path: PathBuf::from(first),
                options: parse_csv_options(&options).map_err(bad)?,
            }),
            "npy" if options.iter().all(|o| o.contains('=')) => Ok(DataSource::NpyDir {
                dir: PathBuf::from(first),
                names: array_names(&options).map_err(bad)?,
            }),
            "npy" => {
                let (features, labels) = pair("FEATURES.npy,LABELS.npy")?;
                Ok(DataSource::Npy { features, labels })
            }
            "npz" => Ok(DataSource::Npz {
                path: PathBuf::from(first),
                names: array_names(&options).map_err(bad)?,
            }),
            "idx" => {
                let (images, labels) = pair("IMAGES,LABELS")?;
                Ok(DataSource::Idx { images, labels })
            }
            "safetensors" => Ok(DataSource::Safetensors {
                path: PathBuf::from(first),
                names: array_names(&options).map_err(bad)?,
            }),
            other => Err(bad(format!(
                "unknown kind `{other}` (use a built-in name, csv:, npy:, npz:, idx: or \
                 safetensors:)"
            ))),
        }
    }

    /// The file of named arrays this source reads, its kind and its `NAME=ARRAY` pairs
    /// (None for other sources).
    pub fn array_file(&self) -> Option<ArrayFileSpec<'_>> {
        let (kind, path, names) = match self {
            DataSource::Safetensors { path, names } => (ArrayFileKind::Safetensors, path, names),
            DataSource::Npz { path, names } => (ArrayFileKind::Npz, path, names),
            DataSource::NpyDir { dir, names } => (ArrayFileKind::NpyDir, dir, names),
            _ => return None,
        };
        Some(ArrayFileSpec { kind, path, names })
    }

    /// Loads the dataset (a file of named arrays: its `features` and `labels`; see
    /// [`super::load_named`] for a model's inputs and labels by name).
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DataSource::Builtin { name, window } => match window {
                Some(w) => builtin_series(name, *w),
                None => builtin(name),
            },
            DataSource::Csv { path, options } => load_csv(path, options),
            DataSource::Npy { features, labels } => load_npy(features, labels),
            DataSource::Idx { images, labels } => load_idx(images, labels),
            DataSource::Safetensors { path, .. } => load_safetensors(path),
            DataSource::Npz { path, .. } => load_pair(ArrayFileKind::Npz, path),
            DataSource::NpyDir { dir, .. } => load_pair(ArrayFileKind::NpyDir, dir),
            DataSource::Reverse(task) => task.generate(),
            DataSource::Adding(task) => task.generate(),
        }
    }
}

impl std::str::FromStr for DataSource {
    type Err = DataError;

    fn from_str(spec: &str) -> Result<DataSource, DataError> {
        DataSource::parse(spec)
    }
}

impl fmt::Display for DataSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSource::Builtin { name, window } => {
                write!(f, "{name}")?;
                if let Some(w) = window {
                    write!(f, ",window={w}")?;
                }
                Ok(())
            }
            DataSource::Csv { path, options } => {
                write!(f, "csv:{},label={}", path.display(), options.label_column)?;
                match options.header {
                    HeaderMode::Auto => {}
                    HeaderMode::Present => write!(f, ",header")?,
                    HeaderMode::Absent => write!(f, ",no_header")?,
                }
                match options.task {
                    Task::Auto => {}
                    Task::Classification => write!(f, ",classification")?,
                    Task::Regression => write!(f, ",regression")?,
                }
                if options.drop_missing {
                    write!(f, ",drop_missing")?;
                }
                match options.delimiter {
                    b',' => Ok(()),
                    b'\t' => write!(f, ",delimiter=tab"),
                    b' ' => write!(f, ",delimiter=space"),
                    d => write!(f, ",delimiter={}", d as char),
                }
            }
            DataSource::Npy { features, labels } => {
                write!(f, "npy:{},{}", features.display(), labels.display())
            }
            DataSource::Idx { images, labels } => {
                write!(f, "idx:{},{}", images.display(), labels.display())
            }
            DataSource::Safetensors { path, names } => {
                write!(f, "safetensors:{}{}", path.display(), names_text(names))
            }
            DataSource::Npz { path, names } => {
                write!(f, "npz:{}{}", path.display(), names_text(names))
            }
            DataSource::NpyDir { dir, names } => {
                write!(f, "npy:{}{}", dir.display(), names_text(names))
            }
            DataSource::Reverse(task) => write!(
                f,
                "reverse:length={},samples={},seed={}",
                task.length, task.samples, task.seed
            ),
            DataSource::Adding(task) => write!(
                f,
                "adding:length={},samples={},seed={}",
                task.length, task.samples, task.seed
            ),
        }
    }
}

/// `,a=left,b=right` after a path, or nothing.
fn names_text(names: &[(String, String)]) -> String {
    names.iter().map(|(n, a)| format!(",{n}={a}")).collect()
}

/// `NAME=ARRAY` options: model inputs and labels mapped to the arrays that fill them.
fn array_names(options: &[&str]) -> Result<Vec<(String, String)>, String> {
    let mut names: Vec<(String, String)> = Vec::new();
    for option in options {
        let Some((name, array)) = option.split_once('=') else {
            return Err(format!(
                "`{option}`: a file of named arrays takes NAME=ARRAY options"
            ));
        };
        let (name, array) = (name.trim(), array.trim());
        if name.is_empty() || array.is_empty() {
            return Err(format!("`{option}`: expected NAME=ARRAY"));
        }
        if names.iter().any(|(n, _)| n == name) {
            return Err(format!("`{name}` is mapped twice"));
        }
        names.push((name.to_string(), array.to_string()));
    }
    Ok(names)
}

/// Features and labels from the arrays `features` and `labels` of a file of named arrays.
fn load_pair(kind: ArrayFileKind, path: &Path) -> Result<Dataset, DataError> {
    super::named::load_features_and_labels(kind, path)
}

/// `length=N,samples=N,seed=N`, each optional, in any order.
fn parse_reverse(options: &str) -> Result<ReverseTask, String> {
    let mut task = ReverseTask::default();
    for option in options.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let (key, value) = option
            .split_once('=')
            .ok_or_else(|| format!("`reverse` options are key=value, got `{option}`"))?;
        let number: u64 = value.trim().parse().map_err(|_| {
            format!("`{key}` of `reverse` must be a non-negative integer, got `{value}`")
        })?;
        let size =
            || usize::try_from(number).map_err(|_| format!("`{key}` of `reverse` is too large"));
        match key.trim() {
            "length" => task.length = size()?,
            "samples" => task.samples = size()?,
            "seed" => task.seed = number,
            other => {
                return Err(format!(
                    "unknown option `{other}` for `reverse` (known: length, samples, seed)"
                ));
            }
        }
    }
    Ok(task)
}

fn parse_csv_options(options: &[&str]) -> Result<CsvOptions, String> {
    let mut parsed = CsvOptions::default();
    for &option in options {
        match option.split_once('=') {
            Some(("label", v)) => {
                parsed.label_column = v
                    .parse()
                    .map_err(|_| format!("label column `{v}` is not an integer"))?;
            }
            Some(("delimiter", v)) => {
                parsed.delimiter = match v {
                    "tab" => b'\t',
                    "space" => b' ',
                    _ if v.len() == 1 => v.as_bytes()[0],
                    _ => return Err(format!("delimiter `{v}` is not one byte, `tab` or `space`")),
                };
            }
            None if option == "header" => parsed.header = HeaderMode::Present,
            None if option == "no_header" => parsed.header = HeaderMode::Absent,
            None if option == "drop_missing" => parsed.drop_missing = true,
            None if option == "classification" => parsed.task = Task::Classification,
            None if option == "regression" => parsed.task = Task::Regression,
            _ => {
                return Err(format!(
                    "unknown CSV option `{option}` (known: label=N, header, no_header, \
                     drop_missing, classification, regression, delimiter=C)"
                ));
            }
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_the_compiler_checks_data_against_parses() {
        use strata_artifact::train_config::{DATA_SOURCE_KINDS, GENERATED_DATASETS};
        for kind in DATA_SOURCE_KINDS {
            let spec = match *kind {
                "npy" | "idx" => format!("{kind}:a,b"),
                _ => format!("{kind}:a"),
            };
            DataSource::parse(&spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
        }
        for name in GENERATED_DATASETS.iter().chain(BUILTIN_DATASETS) {
            DataSource::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(DataSource::parse("csvv:a").is_err());
    }

    #[test]
    fn parses_builtin_and_file_specs() {
        assert_eq!(
            DataSource::parse("digits").unwrap(),
            DataSource::Builtin {
                name: "digits".into(),
                window: None
            }
        );
        assert_eq!(
            DataSource::parse("sunspots,window=12").unwrap(),
            DataSource::Builtin {
                name: "sunspots".into(),
                window: Some(12)
            }
        );
        let DataSource::Csv { path, options } =
            DataSource::parse("csv:a.csv,label=0,header,drop_missing,regression").unwrap()
        else {
            panic!("not csv");
        };
        assert_eq!(path, PathBuf::from("a.csv"));
        assert_eq!(options.label_column, 0);
        assert_eq!(options.header, HeaderMode::Present);
        assert!(options.drop_missing);
        assert_eq!(options.task, Task::Regression);
        assert_eq!(
            DataSource::parse("npy:x.npy,y.npy").unwrap(),
            DataSource::Npy {
                features: "x.npy".into(),
                labels: "y.npy".into()
            }
        );
    }

    #[test]
    fn parses_the_reverse_task_with_defaults() {
        assert_eq!(
            DataSource::parse("reverse").unwrap(),
            DataSource::Reverse(ReverseTask::default())
        );
        assert_eq!(
            DataSource::parse("reverse:seed=3,samples=50").unwrap(),
            DataSource::Reverse(ReverseTask {
                length: 10,
                samples: 50,
                seed: 3
            })
        );
        for (spec, message) in [
            ("reverse:width=3", "unknown option `width`"),
            ("reverse:length=-1", "non-negative integer"),
            ("reverse:length", "key=value"),
        ] {
            let e = DataSource::parse(spec).unwrap_err().to_string();
            assert!(e.contains(message), "{spec}: {e}");
        }
    }

    #[test]
    fn spec_errors_name_the_problem() {
        let e = DataSource::parse("mnist").unwrap_err().to_string();
        assert!(
            e.contains("unknown built-in dataset `mnist`") && e.contains("digits"),
            "{e}"
        );
        let e = DataSource::parse("npy:x.npy,y.npy,z.npy")
            .unwrap_err()
            .to_string();
        assert!(e.contains("two comma-separated paths"), "{e}");
        let e = DataSource::parse("npz:f.npz,a=left,a=right")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`a` is mapped twice"), "{e}");
        let e = DataSource::parse("csv:a.csv,labels=2")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown CSV option `labels=2`"), "{e}");
        let e = DataSource::parse("parquet:a").unwrap_err().to_string();
        assert!(e.contains("unknown kind `parquet`"), "{e}");
    }

    #[test]
    fn display_round_trips_through_parse() {
        for spec in [
            "digits",
            "sunspots,window=5",
            "csv:a.csv,label=-1,no_header,regression,drop_missing,delimiter=tab",
            "npy:a.npy,b.npy",
            "idx:i,l",
            "safetensors:d.safetensors",
            "safetensors:d.safetensors,a=left",
            "npz:d.npz,a=left,y=target",
            "npy:dir,b=right",
            "npy:dir",
            "reverse:length=7,samples=30,seed=2",
        ] {
            let source = DataSource::parse(spec).unwrap();
            assert_eq!(DataSource::parse(&source.to_string()).unwrap(), source);
        }
    }
}
