//! The one integration-test binary: one module per feature, run with `cargo test --test it`.

mod simulator;
