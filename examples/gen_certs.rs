//! `gen_certs <dir>`: writes the test PKI (see `support/pki.rs`) into `<dir>` and prints the
//! absolute directory. Used by the demo script.

#[path = "support/pki.rs"]
mod pki;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: gen_certs <dir>");
        return ExitCode::from(2);
    };
    match pki::Pki::generate(Path::new(&dir)) {
        Ok(pki) => {
            println!("{}", pki.dir.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("gen_certs: {err}");
            ExitCode::FAILURE
        }
    }
}
