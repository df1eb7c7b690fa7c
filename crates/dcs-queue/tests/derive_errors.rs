//! `#[derive(Job)]` refuses misuse when the program compiles, naming what is wrong: each
//! file under `tests/ui/` must fail to compile with the error beside it (`.stderr`).
//! After a deliberate change to a message: `TRYBUILD=overwrite cargo test -p dcs-queue
//! --test derive_errors`, then read the diff.

#[test]
fn misuse_is_refused_at_compile_time() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
