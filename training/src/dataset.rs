//! In-memory datasets: features and labels for every sample, the seeded splits and
//! shuffles the training driver needs, feature normalization, and batching.
//!
//! A [`Dataset`] keeps one invariant, checked by [`Dataset::new`] and kept by every
//! method here: `features` holds exactly `len * product(feature_shape)` values, row-major
//! with the sample index outermost, and `labels` holds exactly `len` labels (class
//! indices in `0..classes`, `length` of them per sample for sequences, or `width`
//! targets per sample). Code that fills the public
//! fields by hand must keep it too; [`Dataset::validate`] checks it again.
//!
//! # Determinism
//!
//! Every random choice (the split's shuffle, each epoch's batch order) is a Fisher-Yates
//! shuffle (Knuth, TAOCP vol. 2, Algorithm 3.4.2 P) driven by a Philox4x32-10 stream from
//! [`strata_kernels::rng`], keyed by the caller's seed. The counter's top word tags what
//! the stream is for, so the split and the batch order drawn from one seed are
//! independent streams. Indices are drawn without modulo bias with Lemire's
//! multiply-and-reject method ("Fast random integer generation in an interval", 2019).
//! Same data, same seed: the same split and the same batches, on every machine.

use serde::{Deserialize, Serialize};
use strata_kernels::rng::{Philox, key_from_seed, philox4x32};

use super::error::DataError;
use strata_artifact::tensor::{HostTensor, TensorData, element_count};

/// The labels of a dataset: class indices (classification) or real targets (regression).
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// One class index in `0..classes` per sample.
    Classes { values: Vec<i32>, classes: usize },
    /// `width` real targets per sample, row-major (`values.len() == len * width`).
    Targets { values: Vec<f32>, width: usize },
    /// A class index in `0..classes` for each of the `length` positions of a sequence,
    /// row-major (`values.len() == len * length`): a sequence-to-sequence task's targets.
    Sequences {
        values: Vec<i32>,
        classes: usize,
        length: usize,
    },
}

impl Labels {
    /// Number of samples the labels describe (None if `Targets` or `Sequences` are
    /// ragged or have width 0).
    pub fn samples(&self) -> Option<usize> {
        let rows = |values: usize, width: usize| {
            (width > 0 && values.is_multiple_of(width)).then(|| values / width)
        };
        match self {
            Labels::Classes { values, .. } => Some(values.len()),
            Labels::Targets { values, width } => rows(values.len(), *width),
            Labels::Sequences { values, length, .. } => rows(values.len(), *length),
        }
    }

    /// The number of classes, for classification labels (sequences included).
    pub fn classes(&self) -> Option<usize> {
        match self {
            Labels::Classes { classes, .. } | Labels::Sequences { classes, .. } => Some(*classes),
            Labels::Targets { .. } => None,
        }
    }

    /// The labels of the samples at `indices`, in that order (indices must be in range).
    fn gather(&self, indices: &[usize]) -> Labels {
        match self {
            Labels::Classes { values, classes } => Labels::Classes {
                values: indices.iter().map(|&i| values[i]).collect(),
                classes: *classes,
            },
            Labels::Targets { values, width } => Labels::Targets {
                values: indices
                    .iter()
                    .flat_map(|&i| &values[i * width..(i + 1) * width])
                    .copied()
                    .collect(),
                width: *width,
            },
            Labels::Sequences {
                values,
                classes,
                length,
            } => Labels::Sequences {
                values: indices
                    .iter()
                    .flat_map(|&i| &values[i * length..(i + 1) * length])
                    .copied()
                    .collect(),
                classes: *classes,
                length: *length,
            },
        }
    }

    /// The labels of `indices` as a tensor: `i32 [n]`, `f32 [n, width]` or
    /// `i32 [n, length]`.
    fn gather_tensor(&self, indices: &[usize]) -> HostTensor {
        let n = indices.len() as u64;
        match self.gather(indices) {
            Labels::Classes { values, .. } => HostTensor {
                shape: vec![n],
                data: TensorData::I32(values),
            },
            Labels::Targets { values, width } => HostTensor {
                shape: vec![n, width as u64],
                data: TensorData::F32(values),
            },
            Labels::Sequences { values, length, .. } => HostTensor {
                shape: vec![n, length as u64],
                data: TensorData::I32(values),
            },
        }
    }
}

/// A further array of a dataset, one row per sample: a model input other than the
/// features, or a label other than the first (from a file of named arrays).
#[derive(Clone, Debug, PartialEq)]
pub struct NamedArray {
    /// The model input or label it fills.
    pub name: String,
    /// The shape of one sample's row.
    pub sample_shape: Vec<u64>,
    /// Every sample's row, sample index outermost.
    pub data: TensorData,
}

impl NamedArray {
    fn row_size(&self) -> usize {
        element_count(&self.sample_shape)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0)
    }

    fn len(&self) -> usize {
        match &self.data {
            TensorData::F32(v) => v.len(),
            TensorData::I32(v) => v.len(),
        }
    }

    /// The rows at `indices` (known to be in range).
    fn gather(&self, indices: &[usize]) -> NamedArray {
        let size = self.row_size();
        fn rows<T: Copy>(values: &[T], indices: &[usize], size: usize) -> Vec<T> {
            indices
                .iter()
                .flat_map(|&i| &values[i * size..(i + 1) * size])
                .copied()
                .collect()
        }
        NamedArray {
            name: self.name.clone(),
            sample_shape: self.sample_shape.clone(),
            data: match &self.data {
                TensorData::F32(v) => TensorData::F32(rows(v, indices, size)),
                TensorData::I32(v) => TensorData::I32(rows(v, indices, size)),
            },
        }
    }

    /// The rows at `indices` as a tensor `[indices.len(), ...sample_shape]`.
    fn tensor(&self, indices: &[usize]) -> HostTensor {
        let mut shape = vec![indices.len() as u64];
        shape.extend_from_slice(&self.sample_shape);
        HostTensor {
            shape,
            data: self.gather(indices).data,
        }
    }

    /// Appends `other`'s rows (the same array of another split).
    pub(crate) fn extend(&mut self, other: NamedArray) -> Result<(), DataError> {
        match (&mut self.data, other.data) {
            (TensorData::F32(a), TensorData::F32(b)) => a.extend(b),
            (TensorData::I32(a), TensorData::I32(b)) => a.extend(b),
            _ => {
                return Err(DataError::Invalid(format!(
                    "the splits disagree on the element type of `{}`",
                    self.name
                )));
            }
        }
        Ok(())
    }
}

/// A labelled dataset held in memory (see the module docs for its invariant).
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// All samples' features, row-major, sample index outermost.
    pub features: Vec<f32>,
    /// The shape of one sample's features, e.g. `[64]` or `[1, 8, 8]`.
    pub feature_shape: Vec<u64>,
    pub labels: Labels,
    /// Number of samples.
    pub len: usize,
    /// Names of the classes, index by index, where the source gives them (built-in
    /// classification sets do); empty otherwise.
    pub class_names: Vec<String>,
    /// Further arrays (other model inputs and labels), each with `len` rows.
    pub arrays: Vec<NamedArray>,
}

/// One batch of samples, ready to feed an entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `f32 [len, ...feature_shape]`.
    pub features: HostTensor,
    /// `i32 [len]` class indices, or `f32 [len, width]` targets.
    pub labels: HostTensor,
    /// The dataset's further arrays, by name, each `[len, ...]`.
    pub arrays: Vec<(String, HostTensor)>,
    /// Number of samples in the batch: the batch size, or fewer for the last batch.
    pub len: usize,
}

/// How to rescale features before training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Normalization {
    /// Leave the features as they are.
    None,
    /// Divide every feature by this constant (digits: `Scale(16.0)` maps to `[0, 1]`).
    Scale(f32),
    /// Per feature, subtract the mean and divide by the (population) standard deviation,
    /// both computed on the training split only. Constant features are only centred.
    Standardize,
    /// Per feature, map the training split's `[min, max]` to `[0, 1]`. Constant features
    /// are only shifted to 0.
    MinMax,
}

/// A fitted normalization: feature `j` becomes `(x - offset[j]) / scale[j]`.
///
/// Fit it on the training split and apply it to every split (and, at inference, to new
/// inputs: it serializes, so a checkpoint's `extra` can carry it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub method: Normalization,
    pub offset: Vec<f64>,
    pub scale: Vec<f64>,
}

/// What a Philox stream drawn from a user's seed is used for: the top counter word, so
/// that one seed gives independent streams for each purpose.
#[derive(Clone, Copy)]
#[repr(u32)]
enum StreamPurpose {
    Split = 0x5350_4c54,      // "SPLT"
    BatchOrder = 0x4241_5443, // "BATC"
    EpochSeed = 0x4550_4f43,  // "EPOC"
}

impl Dataset {
    /// A dataset of `features` (each sample shaped `feature_shape`) and `labels`;
    /// fails unless the counts agree and every class index is in range.
    pub fn new(
        features: Vec<f32>,
        feature_shape: Vec<u64>,
        labels: Labels,
    ) -> Result<Dataset, DataError> {
        let len = labels.samples().ok_or_else(|| {
            DataError::Invalid(match &labels {
                Labels::Targets { values, width } => format!(
                    "{} targets cannot be split into samples of width {width}",
                    values.len()
                ),
                Labels::Sequences { values, length, .. } => format!(
                    "{} labels cannot be split into sequences of length {length}",
                    values.len()
                ),
                Labels::Classes { .. } => "labels are malformed".into(),
            })
        })?;
        let dataset = Dataset {
            features,
            feature_shape,
            labels,
            len,
            class_names: Vec::new(),
            arrays: Vec::new(),
        };
        dataset.validate()?;
        Ok(dataset)
    }

    /// The same dataset with further arrays (other inputs and labels), each of which must
    /// hold one row per sample.
    pub fn with_arrays(mut self, arrays: Vec<NamedArray>) -> Result<Dataset, DataError> {
        self.arrays = arrays;
        self.validate()?;
        Ok(self)
    }

    /// The same dataset with class names attached.
    pub fn with_class_names(mut self, names: Vec<String>) -> Dataset {
        self.class_names = names;
        self
    }

    /// Checks the invariant of the module docs.
    pub fn validate(&self) -> Result<(), DataError> {
        let size = sample_size(&self.feature_shape)?;
        if self.labels.samples() != Some(self.len) {
            return Err(DataError::Invalid(format!(
                "the dataset claims {} samples but its labels describe {}",
                self.len,
                self.labels
                    .samples()
                    .map_or("a ragged number".to_string(), |n| n.to_string())
            )));
        }
        if self.len.checked_mul(size) != Some(self.features.len()) {
            return Err(DataError::Invalid(format!(
                "{} samples of shape {} need {} feature values, the dataset holds {}",
                self.len,
                strata_artifact::error::shape_text(&self.feature_shape),
                self.len.saturating_mul(size),
                self.features.len()
            )));
        }
        for array in &self.arrays {
            let size = array.row_size();
            if size == 0 || self.len.checked_mul(size) != Some(array.len()) {
                return Err(DataError::Invalid(format!(
                    "array `{}` holds {} values, not {} rows of shape {}",
                    array.name,
                    array.len(),
                    self.len,
                    strata_artifact::error::shape_text(&array.sample_shape)
                )));
            }
        }
        let per_sample = match &self.labels {
            Labels::Sequences { length, .. } => *length,
            _ => 1,
        };
        if let Labels::Classes { values, classes }
        | Labels::Sequences {
            values, classes, ..
        } = &self.labels
            && let Some((i, &v)) = values
                .iter()
                .enumerate()
                .find(|&(_, &v)| v < 0 || v as usize >= *classes)
        {
            return Err(DataError::Invalid(format!(
                "sample {} has class {v}, outside 0..{classes}",
                i / per_sample
            )));
        }
        Ok(())
    }

    /// Number of feature values per sample (the product of `feature_shape`).
    /// 0 if the shape is empty or overflows (which [`Dataset::validate`] rejects).
    pub fn sample_size(&self) -> usize {
        sample_size(&self.feature_shape).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The number of classes, for a classification dataset.
    pub fn classes(&self) -> Option<usize> {
        self.labels.classes()
    }

    /// The features of sample `i`.
    pub fn sample(&self, i: usize) -> Option<&[f32]> {
        let size = self.sample_size();
        if i >= self.len {
            return None;
        }
        self.features
            .get(i.checked_mul(size)?..(i + 1).checked_mul(size)?)
    }

    /// Views each sample's features with another shape of the same size (`[64]` as
    /// `[1, 8, 8]`).
    pub fn reshape_features(&mut self, shape: &[u64]) -> Result<(), DataError> {
        let new = sample_size(shape)?;
        if new != self.sample_size() {
            return Err(DataError::Invalid(format!(
                "cannot view samples of shape {} ({} values) as shape {} ({new} values)",
                strata_artifact::error::shape_text(&self.feature_shape),
                self.sample_size(),
                strata_artifact::error::shape_text(shape),
            )));
        }
        self.feature_shape = shape.to_vec();
        Ok(())
    }

    /// The samples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        self.validate()?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.len) {
            return Err(DataError::Invalid(format!(
                "sample index {bad} is out of range for {} samples",
                self.len
            )));
        }
        Ok(self.gather(indices))
    }

    /// The samples at `indices` (known to be in range).
    fn gather(&self, indices: &[usize]) -> Dataset {
        let size = self.sample_size();
        let features = indices
            .iter()
            .flat_map(|&i| &self.features[i * size..(i + 1) * size])
            .copied()
            .collect();
        Dataset {
            features,
            feature_shape: self.feature_shape.clone(),
            labels: self.labels.gather(indices),
            len: indices.len(),
            class_names: self.class_names.clone(),
            arrays: self.arrays.iter().map(|a| a.gather(indices)).collect(),
        }
    }

    /// Splits into (train, validation, test) with a seeded shuffle.
    ///
    /// `fractions` must be non-negative and sum to 1. The train and validation sizes are
    /// `round(len * fraction)` and the test split takes the rest, so the three sizes
    /// always add up to `len`. Each split keeps its samples in their original order.
    pub fn split(
        &self,
        fractions: (f64, f64, f64),
        seed: u64,
    ) -> Result<(Dataset, Dataset, Dataset), DataError> {
        self.validate()?;
        let (n_train, n_val) = split_sizes(self.len, fractions)?;
        let order = permutation(self.len, &mut stream(seed, StreamPurpose::Split));
        let mut parts = [
            order[..n_train].to_vec(),
            order[n_train..n_train + n_val].to_vec(),
            order[n_train + n_val..].to_vec(),
        ];
        for part in &mut parts {
            part.sort_unstable();
        }
        let [train, val, test] = parts;
        Ok((self.gather(&train), self.gather(&val), self.gather(&test)))
    }

    /// Splits into (train, validation, test) without shuffling: the first samples train,
    /// the next validate, the last test. For time series, where a shuffled split would
    /// let the model see the future. Sizes as in [`Dataset::split`].
    pub fn split_sequential(
        &self,
        fractions: (f64, f64, f64),
    ) -> Result<(Dataset, Dataset, Dataset), DataError> {
        self.validate()?;
        let (n_train, n_val) = split_sizes(self.len, fractions)?;
        let range = |a: usize, b: usize| (a..b).collect::<Vec<usize>>();
        Ok((
            self.gather(&range(0, n_train)),
            self.gather(&range(n_train, n_train + n_val)),
            self.gather(&range(n_train + n_val, self.len)),
        ))
    }

    /// The batches of one pass over the data: in order, or shuffled by `shuffle_seed`
    /// (pass a different seed each epoch, e.g. from [`epoch_shuffle_seed`]).
    ///
    /// Every sample appears exactly once: when `batch` does not divide `len`, the last
    /// batch holds the remaining `len % batch` samples (it is never dropped).
    pub fn batches(
        &self,
        batch: usize,
        shuffle_seed: Option<u64>,
    ) -> Result<Batches<'_>, DataError> {
        if batch == 0 {
            return Err(DataError::Invalid("batch size must be at least 1".into()));
        }
        self.validate()?;
        let order = match shuffle_seed {
            Some(seed) => permutation(self.len, &mut stream(seed, StreamPurpose::BatchOrder)),
            None => (0..self.len).collect(),
        };
        Ok(Batches {
            dataset: self,
            order,
            batch,
            next: 0,
        })
    }

    /// Number of batches of size `batch` in one pass, the partial last one included.
    pub fn batch_count(&self, batch: usize) -> usize {
        if batch == 0 {
            0
        } else {
            self.len.div_ceil(batch)
        }
    }

    /// The samples at `indices` (known to be in range) as one batch.
    fn batch_of(&self, indices: &[usize]) -> Batch {
        let size = self.sample_size();
        let mut shape = vec![indices.len() as u64];
        shape.extend_from_slice(&self.feature_shape);
        let features = indices
            .iter()
            .flat_map(|&i| &self.features[i * size..(i + 1) * size])
            .copied()
            .collect();
        Batch {
            features: HostTensor {
                shape,
                data: TensorData::F32(features),
            },
            labels: self.labels.gather_tensor(indices),
            arrays: self
                .arrays
                .iter()
                .map(|a| (a.name.clone(), a.tensor(indices)))
                .collect(),
            len: indices.len(),
        }
    }

    /// All samples as one batch, in order (for evaluation of a small split).
    pub fn as_batch(&self) -> Result<Batch, DataError> {
        self.validate()?;
        let all: Vec<usize> = (0..self.len).collect();
        Ok(self.batch_of(&all))
    }
}

/// The batches of one pass over a dataset (see [`Dataset::batches`]).
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    dataset: &'a Dataset,
    order: Vec<usize>,
    batch: usize,
    next: usize,
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.order.len() {
            return None;
        }
        let end = (self.next + self.batch).min(self.order.len());
        let batch = self.dataset.batch_of(&self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.order.len() - self.next).div_ceil(self.batch);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Batches<'_> {}

impl Normalizer {
    /// Fits `method` on `train` (per feature position, over all its samples).
    pub fn fit(method: Normalization, train: &Dataset) -> Result<Normalizer, DataError> {
        train.validate()?;
        let size = train.sample_size();
        let (offset, scale) = match method {
            Normalization::None => (vec![0.0; size], vec![1.0; size]),
            Normalization::Scale(s) => {
                if !(s.is_finite() && s != 0.0) {
                    return Err(DataError::Invalid(format!(
                        "cannot scale features by {s}: the divisor must be finite and non-zero"
                    )));
                }
                (vec![0.0; size], vec![f64::from(s); size])
            }
            Normalization::Standardize => {
                let (mean, var) = column_moments(train)?;
                let std = var
                    .into_iter()
                    .map(|v| if v > 0.0 { v.sqrt() } else { 1.0 })
                    .collect();
                (mean, std)
            }
            Normalization::MinMax => {
                if train.is_empty() {
                    return Err(empty_fit());
                }
                let mut min = vec![f64::INFINITY; size];
                let mut max = vec![f64::NEG_INFINITY; size];
                for row in train.features.chunks_exact(size) {
                    for (j, &x) in row.iter().enumerate() {
                        min[j] = min[j].min(f64::from(x));
                        max[j] = max[j].max(f64::from(x));
                    }
                }
                let range = min
                    .iter()
                    .zip(&max)
                    .map(|(lo, hi)| if hi > lo { hi - lo } else { 1.0 })
                    .collect();
                (min, range)
            }
        };
        Ok(Normalizer {
            method,
            offset,
            scale,
        })
    }

    /// Rescales `data`'s features in place; fails if its samples have another size.
    pub fn apply(&self, data: &mut Dataset) -> Result<(), DataError> {
        data.validate()?;
        let size = data.sample_size();
        if size != self.offset.len() {
            return Err(DataError::Invalid(format!(
                "the normalization was fitted on samples of {} values, these have {size}",
                self.offset.len()
            )));
        }
        if size == 0 {
            return Ok(());
        }
        for row in data.features.chunks_exact_mut(size) {
            self.apply_to_sample(row);
        }
        Ok(())
    }

    /// Rescales one sample's features in place (`sample.len()` must be the fitted size;
    /// extra values are left alone).
    pub fn apply_to_sample(&self, sample: &mut [f32]) {
        for ((x, o), s) in sample.iter_mut().zip(&self.offset).zip(&self.scale) {
            *x = ((f64::from(*x) - o) / s) as f32;
        }
    }
}

/// Fits `method` on `train`, then applies it to `train` and every one of `others`
/// (validation, test): the statistics never see the held-out data.
pub fn normalize_splits(
    method: Normalization,
    train: &mut Dataset,
    others: &mut [&mut Dataset],
) -> Result<Normalizer, DataError> {
    let normalizer = Normalizer::fit(method, train)?;
    normalizer.apply(train)?;
    for other in others.iter_mut() {
        normalizer.apply(other)?;
    }
    Ok(normalizer)
}

/// A dataset of sliding windows over a series: sample `i` has features
/// `series[i..i + window]` (shape `[window]`) and target `series[i + window]` (width 1),
/// so `series.len() - window` samples.
pub fn windowed(series: &[f32], window: usize) -> Result<Dataset, DataError> {
    if window == 0 || window >= series.len() {
        return Err(DataError::Invalid(format!(
            "a window of {window} needs 1..{} for a series of {} values",
            series.len(),
            series.len()
        )));
    }
    let n = series.len() - window;
    let mut features = Vec::with_capacity(n * window);
    for i in 0..n {
        features.extend_from_slice(&series[i..i + window]);
    }
    Dataset::new(
        features,
        vec![window as u64],
        Labels::Targets {
            values: series[window..].to_vec(),
            width: 1,
        },
    )
}

/// The shuffle seed of `epoch` for a run seeded with `seed`: distinct epochs give
/// independent batch orders, and a resumed run gets the same order as an uninterrupted
/// one.
pub fn epoch_shuffle_seed(seed: u64, epoch: u64) -> u64 {
    let block = philox4x32(
        [
            epoch as u32,
            (epoch >> 32) as u32,
            0,
            StreamPurpose::EpochSeed as u32,
        ],
        key_from_seed(seed),
    );
    (u64::from(block[1]) << 32) | u64::from(block[0])
}

/// A uniformly random permutation of `0..n` (Fisher-Yates, driven by `rng`).
pub fn permutation(n: usize, rng: &mut Philox) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = uniform_below(rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// A uniform integer in `0..bound` (`bound >= 1`), without modulo bias (Lemire 2019).
pub(crate) fn uniform_below(rng: &mut Philox, bound: u64) -> u64 {
    let mut draw = || (u64::from(rng.next_u32()) << 32) | u64::from(rng.next_u32());
    let mut product = u128::from(draw()) * u128::from(bound);
    if (product as u64) < bound {
        let threshold = bound.wrapping_neg() % bound;
        while (product as u64) < threshold {
            product = u128::from(draw()) * u128::from(bound);
        }
    }
    (product >> 64) as u64
}

/// The Philox stream for `purpose` under `seed`.
fn stream(seed: u64, purpose: StreamPurpose) -> Philox {
    Philox::new(key_from_seed(seed), [0, 0, 0, purpose as u32])
}

/// The (train, validation) sizes of a split of `n`; see [`Dataset::split`].
fn split_sizes(n: usize, (train, val, test): (f64, f64, f64)) -> Result<(usize, usize), DataError> {
    let valid = [train, val, test]
        .iter()
        .all(|f| f.is_finite() && *f >= 0.0);
    if !valid || ((train + val + test) - 1.0).abs() > 1e-6 {
        return Err(DataError::Invalid(format!(
            "split fractions ({train}, {val}, {test}) must be non-negative and sum to 1"
        )));
    }
    let n_train = ((n as f64 * train).round() as usize).min(n);
    let n_val = ((n as f64 * val).round() as usize).min(n - n_train);
    Ok((n_train, n_val))
}

/// The number of values in a sample of `shape`; fails for an empty or overflowing shape.
fn sample_size(shape: &[u64]) -> Result<usize, DataError> {
    element_count(shape)
        .and_then(|n| usize::try_from(n).ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            DataError::Invalid(format!(
                "feature shape {} must hold at least one value and fit in memory",
                strata_artifact::error::shape_text(shape)
            ))
        })
}

/// Per-feature mean and population variance, in f64 (two passes, for accuracy).
fn column_moments(data: &Dataset) -> Result<(Vec<f64>, Vec<f64>), DataError> {
    if data.is_empty() {
        return Err(empty_fit());
    }
    let size = data.sample_size();
    let n = data.len as f64;
    let mut mean = vec![0.0; size];
    for row in data.features.chunks_exact(size) {
        for (m, &x) in mean.iter_mut().zip(row) {
            *m += f64::from(x);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0.0; size];
    for row in data.features.chunks_exact(size) {
        for ((v, &x), m) in var.iter_mut().zip(row).zip(&mean) {
            *v += (f64::from(x) - m).powi(2);
        }
    }
    var.iter_mut().for_each(|v| *v /= n);
    Ok((mean, var))
}

fn empty_fit() -> DataError {
    DataError::Invalid("cannot fit a normalization on an empty training split".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(n: usize) -> Dataset {
        Dataset::new(
            (0..n * 2).map(|x| x as f32).collect(),
            vec![2],
            Labels::Classes {
                values: (0..n).map(|i| (i % 3) as i32).collect(),
                classes: 3,
            },
        )
        .unwrap()
    }

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        let a = permutation(100, &mut Philox::from_seed(7));
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, permutation(100, &mut Philox::from_seed(7)));
        assert_ne!(a, permutation(100, &mut Philox::from_seed(8)));
    }

    #[test]
    fn uniform_below_stays_in_range() {
        let mut rng = Philox::from_seed(3);
        for bound in [1u64, 2, 3, 7, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(uniform_below(&mut rng, bound) < bound);
            }
        }
    }

    #[test]
    fn new_rejects_class_out_of_range() {
        let err = Dataset::new(
            vec![0.0; 2],
            vec![1],
            Labels::Classes {
                values: vec![0, 3],
                classes: 3,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("sample 1 has class 3"), "{err}");
    }

    #[test]
    fn batches_cover_every_sample_once_in_shuffled_order() {
        let data = tiny(10);
        let mut seen: Vec<f32> = data
            .batches(4, Some(1))
            .unwrap()
            .flat_map(|b| b.features.as_f32().unwrap().to_vec())
            .collect();
        assert_ne!(seen, data.features);
        seen.sort_by(f32::total_cmp);
        assert_eq!(seen, data.features);
    }

    #[test]
    fn epoch_seeds_differ_by_epoch_and_seed() {
        assert_ne!(epoch_shuffle_seed(1, 0), epoch_shuffle_seed(1, 1));
        assert_ne!(epoch_shuffle_seed(1, 0), epoch_shuffle_seed(2, 0));
        assert_eq!(epoch_shuffle_seed(5, 9), epoch_shuffle_seed(5, 9));
    }

    #[test]
    fn standardize_centres_and_scales_train_features() {
        let mut data = tiny(4); // columns 0,2,4,6 and 1,3,5,7
        let norm = Normalizer::fit(Normalization::Standardize, &data).unwrap();
        norm.apply(&mut data).unwrap();
        let col0: Vec<f32> = data.features.iter().step_by(2).copied().collect();
        let mean: f32 = col0.iter().sum::<f32>() / 4.0;
        let var: f32 = col0.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
        assert!((var - 1.0).abs() < 1e-5);
    }
}
