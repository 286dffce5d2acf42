//! Datasets: the built-in sets, splits, batches, normalization, windows.

use strata_artifact::TensorData;
use strata_training::builtin::{SUNSPOTS_DEFAULT_WINDOW, builtin_series_values};
use strata_training::{
    Dataset, Labels, Normalization, Normalizer, builtin, builtin_series, epoch_shuffle_seed,
    normalize_splits, windowed,
};

fn counting(n: usize, classes: usize) -> Dataset {
    Dataset::new(
        (0..n * 3).map(|x| x as f32).collect(),
        vec![3],
        Labels::Classes {
            values: (0..n).map(|i| (i % classes) as i32).collect(),
            classes,
        },
    )
    .unwrap()
}

#[test]
fn digits_loads_1797_samples_of_64_pixels_in_10_classes() {
    let digits = builtin("digits").unwrap();
    assert_eq!(digits.len, 1797);
    assert_eq!(digits.feature_shape, vec![64]);
    assert_eq!(digits.features.len(), 1797 * 64);
    assert!(digits.features.iter().all(|&x| (0.0..=16.0).contains(&x)));
    let Labels::Classes { values, classes } = &digits.labels else {
        panic!("digits is a classification set");
    };
    assert_eq!(*classes, 10);
    for class in 0..10 {
        let count = values.iter().filter(|&&v| v == class).count();
        assert!((170..=190).contains(&count), "class {class}: {count}");
    }
    // The first row of the file: pixels 0,0,5,13,9,1,0,0,… and label 0.
    assert_eq!(
        &digits.sample(0).unwrap()[..6],
        &[0.0, 0.0, 5.0, 13.0, 9.0, 1.0]
    );
    assert_eq!(values[0], 0);
    assert_eq!(digits.class_names.len(), 10);
}

#[test]
fn sklearn_sets_load_with_counts_and_class_names_from_their_headers() {
    let iris = builtin("iris").unwrap();
    assert_eq!((iris.len, iris.sample_size()), (150, 4));
    assert_eq!(iris.classes(), Some(3));
    assert_eq!(iris.class_names, ["setosa", "versicolor", "virginica"]);
    assert_eq!(iris.sample(149).unwrap(), &[5.9, 3.0, 5.1, 1.8]);

    let wine = builtin("wine").unwrap();
    assert_eq!(
        (wine.len, wine.sample_size(), wine.classes()),
        (178, 13, Some(3))
    );

    let cancer = builtin("breast_cancer").unwrap();
    assert_eq!((cancer.len, cancer.sample_size()), (569, 30));
    assert_eq!(cancer.class_names, ["malignant", "benign"]);
    assert_eq!(cancer.classes(), Some(2));
}

#[test]
fn diabetes_is_a_regression_set_with_a_separate_target_file() {
    let diabetes = builtin("diabetes").unwrap();
    assert_eq!((diabetes.len, diabetes.sample_size()), (442, 10));
    let Labels::Targets { values, width } = &diabetes.labels else {
        panic!("diabetes is a regression set");
    };
    assert_eq!(*width, 1);
    assert_eq!((values[0], values[1], values[441]), (151.0, 75.0, 57.0));
    assert_eq!(
        diabetes.sample(441).unwrap(),
        &[36.0, 1.0, 19.6, 71.0, 250.0, 133.2, 97.0, 3.0, 4.5951, 92.0]
    );
}

#[test]
fn sunspots_windows_predict_the_next_year() {
    let values = builtin_series_values("sunspots").unwrap();
    assert_eq!(values.len(), 309);
    let series = builtin_series("sunspots", 5).unwrap();
    assert_eq!(series.len, 304);
    assert_eq!(series.feature_shape, vec![5]);
    assert_eq!(series.sample(0).unwrap(), &[5.0, 11.0, 16.0, 23.0, 36.0]);
    let Labels::Targets {
        values: targets, ..
    } = &series.labels
    else {
        panic!("a series is regression");
    };
    assert_eq!((targets[0], targets[1]), (58.0, 29.0));
    assert_eq!(
        builtin("sunspots").unwrap().feature_shape,
        vec![SUNSPOTS_DEFAULT_WINDOW as u64]
    );
}

#[test]
fn unknown_builtin_lists_the_known_names() {
    let message = builtin("mnist").unwrap_err().to_string();
    assert!(message.contains("`mnist`"), "{message}");
    for name in [
        "digits",
        "iris",
        "wine",
        "breast_cancer",
        "diabetes",
        "sunspots",
    ] {
        assert!(message.contains(name), "{message}");
    }
    assert!(builtin_series("digits", 3).is_err());
}

#[test]
fn windowed_rejects_windows_longer_than_the_series() {
    assert!(windowed(&[1.0, 2.0, 3.0], 3).is_err());
    assert!(windowed(&[1.0, 2.0, 3.0], 0).is_err());
    let w = windowed(&[1.0, 2.0, 3.0, 4.0], 2).unwrap();
    assert_eq!(w.features, vec![1.0, 2.0, 2.0, 3.0]);
    assert_eq!(
        w.labels,
        Labels::Targets {
            values: vec![3.0, 4.0],
            width: 1
        }
    );
}

#[test]
fn split_sizes_sum_to_n_and_are_deterministic() {
    let digits = builtin("digits").unwrap();
    let (train, val, test) = digits.split((0.8, 0.1, 0.1), 42).unwrap();
    assert_eq!((train.len, val.len, test.len), (1438, 180, 179));
    assert_eq!(train.len + val.len + test.len, digits.len);

    let (train2, val2, test2) = digits.split((0.8, 0.1, 0.1), 42).unwrap();
    assert_eq!((&train, &val, &test), (&train2, &val2, &test2));
    let (other, _, _) = digits.split((0.8, 0.1, 0.1), 43).unwrap();
    assert_ne!(train.features, other.features);
}

#[test]
fn split_parts_are_disjoint_and_cover_the_data() {
    // Feature 0 of sample i is 3i, so it identifies the sample.
    let data = counting(101, 4);
    let (a, b, c) = data.split((0.5, 0.25, 0.25), 7).unwrap();
    let mut ids: Vec<f32> = [a, b, c]
        .iter()
        .flat_map(|d| d.features.chunks(3).map(|s| s[0]).collect::<Vec<_>>())
        .collect();
    ids.sort_by(f32::total_cmp);
    let expected: Vec<f32> = (0..101).map(|i| (3 * i) as f32).collect();
    assert_eq!(ids, expected);
}

#[test]
fn split_rejects_fractions_that_do_not_sum_to_one() {
    let data = counting(10, 2);
    assert!(data.split((0.8, 0.1, 0.0), 1).is_err());
    assert!(data.split((1.2, -0.1, -0.1), 1).is_err());
    let (train, val, test) = data.split_sequential((0.6, 0.2, 0.2)).unwrap();
    assert_eq!(train.features[0], 0.0);
    assert_eq!((train.len, val.len, test.len), (6, 2, 2));
    assert_eq!(test.features[0], 24.0);
}

#[test]
fn last_partial_batch_is_yielded() {
    let data = counting(10, 3);
    let sizes: Vec<usize> = data.batches(4, None).unwrap().map(|b| b.len).collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    assert_eq!(data.batch_count(4), 3);
    let last = data.batches(4, Some(9)).unwrap().last().unwrap();
    assert_eq!(last.features.shape, vec![2, 3]);
    assert_eq!(last.labels.shape, vec![2]);
    assert_eq!(data.batches(4, Some(9)).unwrap().len(), 3);
}

#[test]
fn batches_in_order_hold_the_samples_and_labels() {
    let data = counting(5, 2);
    let first = data.batches(2, None).unwrap().next().unwrap();
    assert_eq!(
        first.features.data,
        TensorData::F32(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    );
    assert_eq!(first.labels.data, TensorData::I32(vec![0, 1]));
    assert!(data.batches(0, None).is_err());
}

#[test]
fn shuffled_batches_depend_only_on_the_seed() {
    let data = counting(50, 5);
    let order = |seed| -> Vec<f32> {
        data.batches(8, Some(seed))
            .unwrap()
            .flat_map(|b| b.features.as_f32().unwrap().to_vec())
            .collect()
    };
    let (e0, e1) = (epoch_shuffle_seed(1, 0), epoch_shuffle_seed(1, 1));
    assert_eq!(order(e0), order(e0));
    assert_ne!(order(e0), order(e1));
}

#[test]
fn regression_batches_have_n_by_width_targets() {
    let data = builtin("diabetes").unwrap();
    let batch = data.batches(100, None).unwrap().last().unwrap();
    assert_eq!(batch.len, 42);
    assert_eq!(batch.labels.shape, vec![42, 1]);
    assert_eq!(batch.features.shape, vec![42, 10]);
}

#[test]
fn reshaped_features_give_image_batches() {
    let mut digits = builtin("digits").unwrap();
    digits.reshape_features(&[1, 8, 8]).unwrap();
    let batch = digits.batches(32, None).unwrap().next().unwrap();
    assert_eq!(batch.features.shape, vec![32, 1, 8, 8]);
    assert!(digits.reshape_features(&[9, 8]).is_err());
}

#[test]
fn standardize_uses_train_statistics_for_every_split() {
    let digits = builtin("digits").unwrap();
    let (mut train, mut val, mut test) = digits.split((0.7, 0.15, 0.15), 3).unwrap();
    let raw_val = val.clone();
    let norm = normalize_splits(
        Normalization::Standardize,
        &mut train,
        &mut [&mut val, &mut test],
    )
    .unwrap();
    // Pixel 20 of the training split now has mean 0 and variance 1.
    let column: Vec<f64> = train
        .features
        .iter()
        .skip(20)
        .step_by(64)
        .map(|&x| f64::from(x))
        .collect();
    let mean = column.iter().sum::<f64>() / column.len() as f64;
    let var = column.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / column.len() as f64;
    assert!(
        mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-4,
        "{mean} {var}"
    );
    // Validation used the training mean and std, not its own.
    let expected = ((f64::from(raw_val.features[20]) - norm.offset[20]) / norm.scale[20]) as f32;
    assert_eq!(val.features[20], expected);
    // Pixel 0 is always 0: a constant feature is only centred.
    assert_eq!(norm.scale[0], 1.0);
    assert!(train.features.iter().all(|x| x.is_finite()));
}

#[test]
fn scale_and_min_max_map_digits_to_the_unit_interval() {
    let mut digits = builtin("digits").unwrap();
    let norm = Normalizer::fit(Normalization::MinMax, &digits).unwrap();
    norm.apply(&mut digits).unwrap();
    assert!(digits.features.iter().all(|&x| (0.0..=1.0).contains(&x)));

    let mut digits = builtin("digits").unwrap();
    Normalizer::fit(Normalization::Scale(16.0), &digits)
        .unwrap()
        .apply(&mut digits)
        .unwrap();
    assert_eq!(digits.features[3], 13.0 / 16.0);
    assert!(Normalizer::fit(Normalization::Scale(0.0), &digits).is_err());
}

#[test]
fn normalizer_round_trips_through_json() {
    let data = counting(4, 2);
    let norm = Normalizer::fit(Normalization::Standardize, &data).unwrap();
    let json = serde_json::to_value(&norm).unwrap();
    let back: Normalizer = serde_json::from_value(json).unwrap();
    assert_eq!(back, norm);
}

#[test]
fn hand_built_inconsistent_datasets_are_errors_not_panics() {
    let mut data = counting(4, 2);
    data.len = 5;
    assert!(data.batches(2, None).is_err());
    assert!(data.split((0.5, 0.25, 0.25), 0).is_err());
    let mut data = counting(4, 2);
    data.features.pop();
    assert!(data.batches(2, None).is_err());
    assert!(data.as_batch().is_err());
}
