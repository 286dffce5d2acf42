//! Links `strata` as a position-dependent executable on Linux.
//!
//! Every built model is this binary with its artifact appended, so the binary's start is
//! every model's start. As a position-independent executable (the default) it carries
//! ~127,000 relative relocations (the vtables and constant tables of an 80 MB program),
//! which the dynamic loader applies at every start, writing to ~370 pages of its
//! read-only-after-relocation data: 1.2-1.9 ms of a batch-1 `infer`'s 6 ms. Linked at a
//! fixed address there is nothing to relocate. The price is that the binary's own code
//! and data are not placed at a random address (its libraries, heap and stack still
//! are); docs/design.md ("Machine code ahead of time") says so.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=strata=-no-pie");
    }
}
