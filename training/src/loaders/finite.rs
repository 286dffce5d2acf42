//! Non-finite values (NaN, ±infinity) in a loaded dataset: refused by default, naming
//! the file, the sample (row) and the value's position in it (column), because one NaN
//! in the features turns every loss and gradient it touches into NaN. A source spec
//! ending in `,allow_nonfinite` keeps them (a model that masks them itself).

use super::source::DataSource;
use crate::dataset::{Dataset, Labels};
use crate::error::{DataError, Location};

/// The option that keeps non-finite values, as written at the end of a source spec.
pub const ALLOW_NONFINITE: &str = "allow_nonfinite";

/// A data source spec and whether it keeps non-finite values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSpec {
    pub source: DataSource,
    pub allow_nonfinite: bool,
}

impl DataSpec {
    /// Parses `SOURCE[,allow_nonfinite]` (see [`DataSource`] for `SOURCE`).
    pub fn parse(spec: &str) -> Result<DataSpec, DataError> {
        let (rest, allow_nonfinite) = match spec.trim_end().strip_suffix(ALLOW_NONFINITE) {
            Some(rest) if rest.ends_with(',') || rest.ends_with(':') => {
                (rest.trim_end_matches([',', ':']), true)
            }
            _ => (spec, false),
        };
        Ok(DataSpec {
            source: DataSource::parse(rest)?,
            allow_nonfinite,
        })
    }

    /// Loads the dataset, refusing non-finite values unless allowed.
    pub fn load(&self) -> Result<Dataset, DataError> {
        let data = self.source.load()?;
        if !self.allow_nonfinite {
            refuse_non_finite(&data, &self.source)?;
        }
        Ok(data)
    }
}

/// The first non-finite feature or target of `data`, as an error naming the file it
/// came from, its sample (row) and its position in the sample (column), from 0.
pub fn refuse_non_finite(data: &Dataset, source: &DataSource) -> Result<(), DataError> {
    let (features_file, labels_file) = files(source);
    let width = data.features.len() / data.len.max(1);
    if let Some(at) = data.features.iter().position(|x| !x.is_finite()) {
        return Err(non_finite(
            features_file,
            "feature",
            data.features[at],
            at,
            width,
        ));
    }
    if let Labels::Targets { values, width } = &data.labels
        && let Some(at) = values.iter().position(|x| !x.is_finite())
    {
        return Err(non_finite(labels_file, "target", values[at], at, *width));
    }
    for array in &data.arrays {
        if let strata_artifact::tensor::TensorData::F32(values) = &array.data
            && let Some(at) = values.iter().position(|x| !x.is_finite())
        {
            let width = values.len() / data.len.max(1);
            let what = format!("`{}`", array.name);
            return Err(non_finite(features_file, &what, values[at], at, width));
        }
    }
    Ok(())
}

fn non_finite(file: String, what: &str, value: f32, at: usize, width: usize) -> DataError {
    let width = width.max(1);
    DataError::malformed(
        file,
        Location::Sample {
            row: (at / width) as u64,
            column: at % width,
        },
        format!(
            "{what} value {value} is not finite; add `,{ALLOW_NONFINITE}` to the data spec to keep such values"
        ),
    )
}

/// The files a source's features and labels come from, for messages.
fn files(source: &DataSource) -> (String, String) {
    let show = |p: &std::path::Path| p.display().to_string();
    match source {
        DataSource::Csv { path, .. }
        | DataSource::Safetensors { path, .. }
        | DataSource::Npz { path, .. } => (show(path), show(path)),
        DataSource::NpyDir { dir, .. } => (show(dir), show(dir)),
        DataSource::Npy { features, labels } => (show(features), show(labels)),
        DataSource::Idx { images, labels } => (show(images), show(labels)),
        other => (other.to_string(), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_is_read_off_the_end_of_the_spec() {
        let spec = DataSpec::parse("npy:x.npy,y.npy,allow_nonfinite").expect("parses");
        assert!(spec.allow_nonfinite);
        assert_eq!(
            spec.source,
            DataSource::parse("npy:x.npy,y.npy").expect("parses")
        );
        assert!(!DataSpec::parse("digits").expect("parses").allow_nonfinite);
    }

    #[test]
    fn a_nan_feature_is_named_by_row_and_column() {
        let data = Dataset::new(
            vec![1.0, 2.0, 3.0, f32::NAN],
            vec![2],
            Labels::Classes {
                values: vec![0, 1],
                classes: 2,
            },
        )
        .expect("a dataset");
        let source = DataSource::parse("npy:x.npy,y.npy").expect("parses");
        let e = refuse_non_finite(&data, &source).expect_err("refused");
        let text = e.to_string();
        assert!(text.contains("x.npy"), "{text}");
        assert!(text.contains("row 1, column 1"), "{text}");
    }

    #[test]
    fn an_infinite_target_is_named_in_the_labels_file() {
        let data = Dataset::new(
            vec![1.0, 2.0],
            vec![1],
            Labels::Targets {
                values: vec![0.5, f32::INFINITY],
                width: 1,
            },
        )
        .expect("a dataset");
        let source = DataSource::parse("npy:x.npy,y.npy").expect("parses");
        let text = refuse_non_finite(&data, &source)
            .expect_err("refused")
            .to_string();
        assert!(text.contains("y.npy"), "{text}");
        assert!(text.contains("row 1, column 0"), "{text}");
    }
}
