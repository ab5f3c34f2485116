//! The `kefu` binary: a thin shell over the library's command line.

fn main() -> anyhow::Result<()> {
    kefu::cli::main()
}
