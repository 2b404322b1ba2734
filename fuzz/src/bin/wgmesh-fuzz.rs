//! The libFuzzer binary: runs the target named by `WGMESH_FUZZ_TARGET` (see scripts/fuzz.sh);
//! every other argument is libFuzzer's.
#![no_main]

use std::sync::OnceLock;

use wgmesh_fuzz::Target;

fn target() -> &'static Target {
    static TARGET: OnceLock<&'static Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        let name = std::env::var("WGMESH_FUZZ_TARGET").unwrap_or_default();
        wgmesh_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = wgmesh_fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!(
                "wgmesh-fuzz: set WGMESH_FUZZ_TARGET to one of {}",
                names.join(", ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(init: { target(); }, |data: &[u8]| (target().run)(data));
