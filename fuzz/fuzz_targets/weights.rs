#![no_main]
//! Fuzz target: see `strata_tests::fuzz_bodies::load_weights`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strata_tests::fuzz_bodies::load_weights(data));
