//! The compiled training step (forward, loss, backward, optimizer update in one graph)
//! agrees with the reference interpreter running the same graph: the weights after ten
//! steps, for every optimizer.

use strata_tests::train_check::assert_train_steps_match;

fn model(optimizer: &str) -> String {
    model_with(optimizer, "|> dense(hidden, init = he_uniform)")
}

/// The test network, with `extra` stages after its first layer.
fn model_with(optimizer: &str, extra: &str) -> String {
    format!(
        r#"
model Net(hidden = 16) {{
    input x: f32[batch, 12]
    h = x {extra} |> tanh
    output logits = h |> dense(hidden) |> relu |> dense(4)
}}
train Net {{
    label y: i32[batch]
    loss = cross_entropy(logits, y) + 1e-3 * l2(weights)
    optimizer = {optimizer}
    clip = 5.0
}}
"#
    )
}

fn check_optimizer(optimizer: &str) {
    check_model(optimizer, &model(optimizer));
}

fn check_model(what: &str, text: &str) {
    assert_train_steps_match(what, text, &[12], 4, 6, 10);
}

#[test]
fn sgd_train_step_matches_the_interpreter() {
    check_optimizer("sgd(lr = 0.1)");
}

#[test]
fn nesterov_momentum_train_step_matches_the_interpreter() {
    check_optimizer("sgd(lr = 0.1, momentum = 0.9, nesterov = true)");
}

#[test]
fn adam_train_step_matches_the_interpreter() {
    check_optimizer("adam(lr = 0.01)");
}

#[test]
fn adamw_train_step_matches_the_interpreter() {
    check_optimizer("adamw(lr = 0.01, weight_decay = 0.1)");
}

#[test]
fn rmsprop_train_step_matches_the_interpreter() {
    check_optimizer("rmsprop(lr = 0.01)");
}

#[test]
fn adagrad_train_step_matches_the_interpreter() {
    check_optimizer("adagrad(lr = 0.1)");
}

#[test]
fn batch_norm_train_step_updates_running_statistics_like_the_interpreter() {
    // No bias before batch norm: its gradient is zero in exact arithmetic, so under Adam
    // it would follow each backend's rounding noise.
    check_model(
        "adam + batch_norm",
        &model_with(
            "adam(lr = 0.01)",
            "|> dense(hidden, bias = false) |> batch_norm",
        ),
    );
}

#[test]
fn dropout_train_step_draws_the_interpreters_masks() {
    check_model(
        "adam + dropout",
        &model_with(
            "adam(lr = 0.01)",
            "|> dense(hidden, init = he_uniform) |> dropout(0.3)",
        ),
    );
}

#[test]
fn label_free_train_step_matches_the_interpreter() {
    let text = r#"
model Reconstruct(hidden = 5) {
    input x: f32[batch, 12]
    output recon = x |> dense(hidden) |> relu |> dense(12) |> sigmoid
}
train Reconstruct {
    loss      = mse(recon, x) + 1e-3 * l2(weights)
    optimizer = adam(lr = 0.01)
}
"#;
    assert_train_steps_match("label-free", text, &[12], 1, 6, 10);
}

#[test]
fn leaky_relu_and_softplus_train_step_matches_the_interpreter() {
    check_model(
        "adam + leaky_relu + softplus",
        &model_with(
            "adam(lr = 0.01)",
            "|> dense(hidden) |> leaky_relu(slope = 0.1) |> dense(hidden) |> softplus",
        ),
    );
}

#[test]
fn upsampling_decoder_train_step_matches_the_interpreter() {
    let text = r#"
model Up {
    input x: f32[batch, 1, 4, 4]
    h = x |> conv2d(2, 3, padding = 1) |> leaky_relu |> upsample2d(2)
    output logits = h |> conv2d(1, 3, stride = 2) |> flatten |> dense(4)
}
train Up {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;
    assert_train_steps_match("upsample2d", text, &[1, 4, 4], 4, 5, 10);
}

#[test]
fn grouped_convolution_train_step_matches_the_interpreter() {
    let text = r#"
model Grouped {
    input x: f32[batch, 4, 5, 5]
    h = x |> conv2d(6, 3, padding = 1, groups = 2) |> relu |> conv2d(6, 1, groups = 6)
    output logits = h |> flatten |> dense(4)
}
train Grouped {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;
    assert_train_steps_match("conv2d groups", text, &[4, 5, 5], 4, 5, 10);
}

#[test]
fn overlapping_pooling_train_step_matches_the_interpreter() {
    let text = r#"
model Pools {
    input x: f32[batch, 2, 7, 7]
    a = x |> max_pool2d(3, stride = 2)
    b = x |> avg_pool2d(2, stride = 1)
    output logits = concat(flatten(a), flatten(b)) |> dense(4)
}
train Pools {
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}
"#;
    assert_train_steps_match("overlapping pooling", text, &[2, 7, 7], 4, 5, 10);
}

/// At 512 rows a dense layer's product is several `gemm` calls, so the CPU copies its
/// transposed weight row-major at every launch of the step (`FRESH_COPY_MIN_CALLS`):
/// the steps still match the interpreter, and each copy is of the updated weights.
#[test]
fn a_train_step_of_many_rows_matches_the_interpreter() {
    assert_train_steps_match("many_rows", &model("adam(lr = 0.01)"), &[12], 4, 512, 3);
}
