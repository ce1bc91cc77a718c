//! Finds libhybridctx without any crate dependency.
//!
//! - `HYBRIDCTX_LIB_DIR=/path/to/dir` links `libhybridctx.so` from that directory;
//! - otherwise the `pkg-config` program is asked for `hybridctx` (set `PKG_CONFIG_PATH`, for
//!   example to `build/meson-uninstalled` for an uninstalled meson build).
//!
//! The library is linked dynamically. Binaries find it at run time like any other shared
//! library (installed, or `LD_LIBRARY_PATH`): an rpath emitted here would not reach the
//! binaries of dependent crates.
use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=HYBRIDCTX_LIB_DIR");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG");
    if let Some(dir) = env::var_os("HYBRIDCTX_LIB_DIR") {
        println!("cargo:rustc-link-search=native={}", dir.to_string_lossy());
        println!("cargo:rustc-link-lib=dylib=hybridctx");
        return;
    }
    let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
    let out = match Command::new(&pkg_config).args(["--libs", "hybridctx"]).output() {
        Ok(o) if o.status.success() => o,
        Ok(o) => fail(&format!(
            "`{pkg_config} --libs hybridctx` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => fail(&format!("cannot run `{pkg_config}`: {e}")),
    };
    let mut linked = false;
    for flag in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
            linked |= lib == "hybridctx";
        }
    }
    if !linked {
        fail("pkg-config did not name -lhybridctx");
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "hybridctx-sys: cannot find libhybridctx: {why}.\n\
         Install libhybridctx, set PKG_CONFIG_PATH to the directory of hybridctx.pc (an uninstalled \
         meson build has it in <builddir>/meson-uninstalled), or set HYBRIDCTX_LIB_DIR."
    );
    std::process::exit(1);
}
