//! Compiles the variadic exec wrappers (`src/execl.c`); `lifecycle.rs` exports them.
fn main() {
    println!("cargo:rerun-if-changed=src/execl.c");
    cc::Build::new()
        .file("src/execl.c")
        .compile("allocscope_execl");
}
