//! The binary-classification and regression examples train to the bars the training
//! issue sets: breast cancer reaches AUC-ROC >= 0.97 on its test split; diabetes reports
//! MAE and MSE and beats predicting the training mean.

use strata_tests::train_run::train_example;
use strata_training::builtin;

#[test]
fn breast_cancer_reaches_auc_097() {
    let run = train_example("breast_cancer.strata");
    let (summary, auc, accuracy) = (
        &run.summary,
        run.test_metric("auc"),
        run.test_metric("accuracy"),
    );
    println!(
        "breast_cancer: test AUC {auc:.4}, accuracy {accuracy:.4} after {} epochs",
        summary.epochs
    );
    assert!(auc >= 0.97, "test AUC {auc:.4} < 0.97");
}

#[test]
fn diabetes_beats_predicting_the_mean() {
    let run = train_example("diabetes.strata");
    let (summary, mse, mae) = (&run.summary, run.test_metric("mse"), run.test_metric("mae"));
    // The baseline: the variance of the targets around their mean (the MSE of always
    // predicting the mean), over the whole data set.
    let data = builtin("diabetes").expect("built in");
    let strata_training::Labels::Targets { values, .. } = &data.labels else {
        panic!("diabetes is a regression set")
    };
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let baseline = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    println!(
        "diabetes: test MSE {mse:.1} (mean-predictor {baseline:.1}), MAE {mae:.2}, {} epochs",
        summary.epochs
    );
    assert!(
        mse < 0.8 * baseline,
        "test MSE {mse:.1} does not beat the mean predictor's {baseline:.1}"
    );
}
