//! Metrics against values computed by hand in each test's comments.

use strata_training::MetricError;
use strata_training::metrics::{
    ClassificationReport, ConfusionMatrix, RegressionReport, accuracy, argmax_rows, auc_roc,
    auc_roc_ovr, mean_absolute_error, mean_squared_error, softmax_rows, threshold_scores,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn accuracy_counts_matching_predictions() {
    assert_eq!(accuracy(&[0, 1, 2, 1], &[0, 1, 1, 1]).unwrap(), 0.75);
    assert_eq!(accuracy(&[], &[]), Err(MetricError::Empty));
    assert!(matches!(
        accuracy(&[0], &[0, 1]),
        Err(MetricError::LengthMismatch { .. })
    ));
}

#[test]
fn argmax_takes_the_first_of_equal_scores_and_skips_nan() {
    let scores = [
        0.1,
        0.7,
        0.2,
        /**/ 0.5,
        0.5,
        0.0,
        /**/ f32::NAN,
        -1.0,
        -2.0,
    ];
    assert_eq!(argmax_rows(&scores, 3).unwrap(), vec![1, 0, 1]);
    assert!(argmax_rows(&scores[..4], 3).is_err());
}

#[test]
fn softmax_of_zero_and_ln3_is_a_quarter_and_three_quarters() {
    let p = softmax_rows(&[0.0, 3f32.ln(), 1000.0, 1000.0], 2).unwrap();
    assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
    assert_eq!(&p[2..], &[0.5, 0.5]);
}

// targets   [0, 0, 1, 1, 2, 2]
// predicted [0, 1, 1, 1, 0, 0]
//
//            predicted
//             0  1  2
// target 0 [  1  1  0 ]
//        1 [  0  2  0 ]
//        2 [  2  0  0 ]      class 2 is never predicted
//
// precision: 1/3, 2/3, 0/0 := 0      recall: 1/2, 2/2, 0/2
// F1: 2(1/3)(1/2)/(5/6) = 2/5;  2(2/3)(1)/(5/3) = 4/5;  0
// macro: P = 1/3, R = 1/2, F1 = 2/5;  accuracy 3/6
const TARGETS: [i32; 6] = [0, 0, 1, 1, 2, 2];
const PREDICTED: [i32; 6] = [0, 1, 1, 1, 0, 0];

#[test]
fn confusion_matrix_rows_are_targets_and_columns_predictions() {
    let m = ConfusionMatrix::new(&PREDICTED, &TARGETS, 3).unwrap();
    assert_eq!(m.counts, vec![1, 1, 0, 0, 2, 0, 2, 0, 0]);
    assert_eq!(m.get(2, 0), 2);
    assert_eq!((m.total(), m.correct()), (6, 3));
    assert_eq!(m.accuracy(), 0.5);
}

#[test]
fn precision_of_a_class_never_predicted_is_zero() {
    let m = ConfusionMatrix::new(&PREDICTED, &TARGETS, 3).unwrap();
    assert!(close(m.precision(0), 1.0 / 3.0));
    assert!(close(m.precision(1), 2.0 / 3.0));
    assert_eq!(m.precision(2), 0.0);
    assert_eq!((m.recall(0), m.recall(1), m.recall(2)), (0.5, 1.0, 0.0));
    assert!(close(m.f1(0), 0.4));
    assert!(close(m.f1(1), 0.8));
    assert_eq!(m.f1(2), 0.0);
    assert_eq!(m.per_class()[2].support, 2);
}

#[test]
fn macro_averages_cover_classes_seen_in_targets_or_predictions() {
    let m = ConfusionMatrix::new(&PREDICTED, &TARGETS, 3).unwrap();
    let (p, r, f1) = m.macro_average();
    assert!(
        close(p, 1.0 / 3.0) && close(r, 0.5) && close(f1, 0.4),
        "{p} {r} {f1}"
    );
    // A fourth class that neither the targets nor the predictions mention is left out.
    let m4 = ConfusionMatrix::new(&PREDICTED, &TARGETS, 4).unwrap();
    assert_eq!(m4.macro_average(), m.macro_average());
}

#[test]
fn confusion_matrix_rejects_classes_out_of_range() {
    assert_eq!(
        ConfusionMatrix::new(&[0, 3], &[0, 1], 3),
        Err(MetricError::ClassOutOfRange {
            index: 1,
            value: 3,
            classes: 3
        })
    );
}

#[test]
fn auc_without_ties_counts_correctly_ordered_pairs() {
    // Positives 0.35, 0.8; negatives 0.1, 0.4. Pairs: 0.35>0.1 yes, 0.35>0.4 no,
    // 0.8>0.1 yes, 0.8>0.4 yes: 3 of 4.
    assert_eq!(
        auc_roc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1]).unwrap(),
        0.75
    );
    assert_eq!(auc_roc(&[0.9, 0.8, 0.2], &[1, 1, 0]).unwrap(), 1.0);
    assert_eq!(auc_roc(&[0.1, 0.8, 0.9], &[1, 0, 0]).unwrap(), 0.0);
}

#[test]
fn auc_counts_tied_scores_as_half_a_pair() {
    // Positives 0.5, 0.9; negatives 0.5, 0.5. Pairs: 0.5 vs 0.5 twice (1/2 each),
    // 0.9 beats both: (1/2 + 1/2 + 1 + 1) / 4.
    assert_eq!(auc_roc(&[0.5, 0.5, 0.5, 0.9], &[0, 1, 0, 1]).unwrap(), 0.75);
    // Every score equal: 1/2.
    assert_eq!(auc_roc(&[0.3; 5], &[0, 1, 1, 0, 1]).unwrap(), 0.5);
    // Positives 0.2, 0.6, 0.6; negatives 0.6, 0.1. Pairs: 0.2>0.6 no, 0.2>0.1 yes,
    // 0.6=0.6 half (twice), 0.6>0.1 yes (twice): (0 + 1 + 1/2 + 1 + 1/2 + 1) / 6 = 2/3.
    let auc = auc_roc(&[0.2, 0.6, 0.6, 0.6, 0.1], &[1, 1, 1, 0, 0]).unwrap();
    assert!(close(auc, 4.0 / 6.0), "{auc}");
}

#[test]
fn auc_is_undefined_with_a_single_class_and_rejects_bad_input() {
    assert!(matches!(
        auc_roc(&[0.1, 0.2], &[1, 1]),
        Err(MetricError::Undefined(_))
    ));
    assert_eq!(
        auc_roc(&[0.1, 0.2], &[1, 2]),
        Err(MetricError::NotBinary { index: 1, value: 2 })
    );
    assert_eq!(
        auc_roc(&[0.1, f32::NAN], &[1, 0]),
        Err(MetricError::NanScore { index: 1 })
    );
}

#[test]
fn one_vs_rest_auc_is_the_mean_of_per_class_aucs() {
    // targets [0, 1, 2, 2]
    // class 0: positive 0.8 vs negatives 0.3, 0.2, 0.5: 3/3 = 1
    // class 1: positive 0.4 vs negatives 0.1, 0.3, 0.4 (tie): 2.5/3
    // class 2: positives 0.5, 0.1 vs negatives 0.1, 0.3: (1 + 1 + 1/2 + 0)/4 = 0.625
    #[rustfmt::skip]
    let probs = [
        0.8, 0.1, 0.1,
        0.3, 0.4, 0.3,
        0.2, 0.3, 0.5,
        0.5, 0.4, 0.1,
    ];
    let auc = auc_roc_ovr(&probs, 3, &[0, 1, 2, 2]).unwrap();
    assert!(close(auc, (1.0 + 2.5 / 3.0 + 0.625) / 3.0), "{auc}");
    // Class 2 absent from the targets has no AUC and is left out.
    let auc = auc_roc_ovr(&probs, 3, &[0, 1, 1, 0]).unwrap();
    // class 0: positives 0.8, 0.5 vs negatives 0.3, 0.2: 1
    // class 1: positives 0.4, 0.3 vs negatives 0.1, 0.4: (0 + 1/2 + 1 + 0)... see below
    // 0.4 vs 0.1 yes, 0.4 vs 0.4 half, 0.3 vs 0.1 yes, 0.3 vs 0.4 no: 2.5/4
    assert!(close(auc, (1.0 + 0.625) / 2.0), "{auc}");
}

#[test]
fn mae_and_mse_average_over_all_values() {
    // Differences -1, 0, -2: MAE (1 + 0 + 2)/3 = 1, MSE (1 + 0 + 4)/3 = 5/3.
    let (p, t) = ([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]);
    assert_eq!(mean_absolute_error(&p, &t).unwrap(), 1.0);
    assert!(close(mean_squared_error(&p, &t).unwrap(), 5.0 / 3.0));
    let report = RegressionReport::new(&p, &t).unwrap();
    assert_eq!(report.scalars()[0], ("mae".to_string(), 1.0));
    assert_eq!(mean_squared_error(&[], &[]), Err(MetricError::Empty));
}

#[test]
fn report_from_two_class_logits_has_binary_auc() {
    // Logit differences (class 1 - class 0): -1, 2, 0.5, -3. Targets 0, 1, 0, 1.
    // Predicted: 0, 1, 1, 0 -> accuracy 1/2.
    // P(class 1) ranks: positives 2 (top), -3 (bottom); negatives -1, 0.5.
    // Pairs: 2 beats both (2), -3 beats none (0): AUC 2/4.
    let logits = [0.0, -1.0, 0.0, 2.0, 0.0, 0.5, 3.0, 0.0];
    let report = ClassificationReport::from_logits(&logits, 2, &[0, 1, 0, 1]).unwrap();
    assert_eq!(report.accuracy, 0.5);
    assert_eq!(report.auc_roc, Some(0.5));
    let names: Vec<String> = report.scalars().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["accuracy", "precision", "recall", "f1", "auc_roc"]);
}

#[test]
fn report_from_one_logit_thresholds_at_zero() {
    let report = ClassificationReport::from_logits(&[-2.0, 1.0, 3.0], 1, &[0, 0, 1]).unwrap();
    assert_eq!(report.confusion.counts, vec![1, 1, 0, 1]);
    assert_eq!(report.auc_roc, Some(1.0));
    assert_eq!(threshold_scores(&[0.2, 0.7], 0.5), vec![0, 1]);
}

#[test]
fn report_on_a_single_class_split_has_no_auc() {
    let report = ClassificationReport::from_logits(&[1.0, 0.0, 2.0, 0.0], 2, &[0, 0]).unwrap();
    assert_eq!(report.auc_roc, None);
    assert_eq!(report.accuracy, 1.0);
}
