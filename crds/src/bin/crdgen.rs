//! Prints, or with `--write DIR` writes, the CRDs that trafficmap owns as YAML.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let files = match trafficmap_api::crdgen::render_all() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("crdgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    match args.as_slice() {
        [] => {
            for (_, yaml) in &files {
                print!("---\n{yaml}");
            }
            ExitCode::SUCCESS
        }
        [flag, dir] if flag == "--write" => {
            let dir = PathBuf::from(dir);
            for (name, yaml) in &files {
                let path = dir.join(name);
                if let Err(err) = std::fs::write(&path, yaml) {
                    eprintln!("crdgen: cannot write {}: {err}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: crdgen [--write DIR]");
            ExitCode::from(2)
        }
    }
}
