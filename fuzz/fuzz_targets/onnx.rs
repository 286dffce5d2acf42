#![no_main]
//! Fuzz target: see `strata_tests::fuzz_bodies::import_onnx`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strata_tests::fuzz_bodies::import_onnx(data));
