#![no_main]
//! Fuzz target: see `strata_tests::fuzz_bodies::parse_kernel_text`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| strata_tests::fuzz_bodies::parse_kernel_text(data));
