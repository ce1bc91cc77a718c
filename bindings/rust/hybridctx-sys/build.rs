//! Finds libhybridctx and tells cargo how to link it.
//!
//! - `HYBRIDCTX_LIB_DIR=/path/to/dir` links `libhybridctx.so` from that directory (the headers
//!   are taken from `HYBRIDCTX_INCLUDE_DIR`, else `<dir>/../include`);
//! - otherwise the `pkg-config` crate asks `pkg-config` for `hybridctx` (at least 0.2; set
//!   `PKG_CONFIG_PATH`, for example to `<builddir>/meson-uninstalled` for an uninstalled meson
//!   build, or to `<prefix>/lib/<triplet>/pkgconfig` for an installed one). Its environment
//!   variables apply (`PKG_CONFIG`, `PKG_CONFIG_PATH`, `PKG_CONFIG_SYSROOT_DIR`, ...).
//!
//! The library is linked dynamically. Binaries find it at run time like any other shared
//! library (installed, or `LD_LIBRARY_PATH`): an rpath emitted here would not reach the
//! binaries of dependent crates.
//!
//! For the build scripts of crates that depend on this one (`links = "hybridctx"`), it sets
//! `DEP_HYBRIDCTX_INCLUDE` (the directories holding `hybridctx.h`, joined like `PATH`),
//! `DEP_HYBRIDCTX_LIB_DIR` and `DEP_HYBRIDCTX_VERSION` (the library's version, from pkg-config).
use std::env;
use std::path::PathBuf;

const MIN_VERSION: &str = "0.2";

fn main() {
    println!("cargo:rerun-if-env-changed=HYBRIDCTX_LIB_DIR");
    println!("cargo:rerun-if-env-changed=HYBRIDCTX_INCLUDE_DIR");
    if let Some(dir) = env::var_os("HYBRIDCTX_LIB_DIR") {
        let dir = PathBuf::from(dir);
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-lib=dylib=hybridctx");
        let include = env::var_os("HYBRIDCTX_INCLUDE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("..").join("include"));
        emit_metadata(&[include], &[dir], None);
        return;
    }
    // The -sys crate never links statically: the library is built as a shared object only.
    let lib = match pkg_config::Config::new()
        .atleast_version(MIN_VERSION)
        .statik(false)
        .probe("hybridctx")
    {
        Ok(lib) => lib,
        Err(e) => fail(&e.to_string()),
    };
    if !lib.libs.iter().any(|l| l == "hybridctx") {
        fail("pkg-config did not name -lhybridctx");
    }
    emit_metadata(&lib.include_paths, &lib.link_paths, Some(&lib.version));
}

fn emit_metadata(include: &[PathBuf], lib_dirs: &[PathBuf], version: Option<&str>) {
    let join = |dirs: &[PathBuf]| match env::join_paths(dirs) {
        Ok(s) => s.to_string_lossy().into_owned(),
        Err(e) => fail(&format!("a directory cannot be passed on: {e}")),
    };
    println!("cargo:include={}", join(include));
    println!("cargo:lib_dir={}", join(lib_dirs));
    if let Some(v) = version {
        println!("cargo:version={v}");
    }
}

fn fail(why: &str) -> ! {
    eprintln!(
        "hybridctx-sys: cannot find libhybridctx {MIN_VERSION} or newer: {why}\n\
         Install libhybridctx, set PKG_CONFIG_PATH to the directory of hybridctx.pc (an uninstalled \
         meson build has it in <builddir>/meson-uninstalled), or set HYBRIDCTX_LIB_DIR."
    );
    std::process::exit(1);
}
