//! `civis`: the one command-line binary. Thin: parsing and printing here, logic in the crates.
#![forbid(unsafe_code)]

mod cli;

fn main() {
    std::process::exit(cli::run());
}
