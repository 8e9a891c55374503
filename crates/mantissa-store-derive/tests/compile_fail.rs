//! What the derive and the typed queries refuse to compile, and what they
//! say when they do.

#[test]
fn mistakes_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
