//! Backpropagation through time on the compiled backend: the train step of every
//! recurrent layer (one scan forward, its backward scans, the optimizer update) agrees
//! with the reference interpreter for ten steps, stacked two deep and bidirectional.

use strata_tests::train_check::assert_train_steps_match;

fn sequence_classifier(layer: &str) -> String {
    format!(
        r#"
model Net {{
    input x: f32[batch, 6, 3]
    h = x |> {layer}
    output logits = h |> dense(4)
}}
train Net {{
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}}
"#
    )
}

fn check(layer: &str) {
    assert_train_steps_match(layer, &sequence_classifier(layer), &[6, 3], 4, 5, 10);
}

#[test]
fn rnn_train_step_matches_the_interpreter() {
    check("rnn(8, return_sequences = false)");
}

#[test]
fn lstm_train_step_matches_the_interpreter() {
    check("lstm(8, return_sequences = false)");
}

#[test]
fn gru_train_step_matches_the_interpreter() {
    check("gru(8, return_sequences = false)");
}

#[test]
fn stacked_bidirectional_lstm_train_step_matches_the_interpreter() {
    check("lstm(5, layers = 2, bidirectional = true) |> mean(axis = 1)");
}

#[test]
fn bidirectional_gru_returning_the_last_states_matches_the_interpreter() {
    check("gru(6, bidirectional = true, return_sequences = false)");
}

/// A custom cell written as a block and run by `scan`.
fn custom_cell_model(extra: &str) -> String {
    format!(
        r#"
block Elman(h, x, hidden = 8) {{
    return tanh(dense(h, hidden, bias = false) + dense(x, hidden))
}}
model Net {{
    input x: f32[batch, 6, 3]
    h0 = dense(mean(x, axis = 1), 8)
    hs = scan(Elman, x, h0{extra})
    output logits = hs |> mean(axis = 1) |> dense(4)
}}
train Net {{
    label y: i32[batch]
    loss = cross_entropy(logits, y)
    optimizer = adam(lr = 0.01)
}}
"#
    )
}

#[test]
fn a_custom_scan_cell_train_step_matches_the_interpreter() {
    let text = custom_cell_model("");
    assert_train_steps_match("scan(Elman)", &text, &[6, 3], 4, 5, 10);
    let text = custom_cell_model(", reverse = true");
    assert_train_steps_match("scan(Elman, reverse)", &text, &[6, 3], 4, 5, 10);
}
