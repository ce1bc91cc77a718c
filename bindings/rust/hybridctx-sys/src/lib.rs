//! Raw FFI declarations of libhybridctx, generated from `include/hybridctx.h` by the `bindgen`
//! CLI (`bindgen.sh`) and committed. Use the safe `hybridctx` crate instead; the header is the
//! reference for every item here.
//!
//! The crate links `libhybridctx` dynamically (see `build.rs`: `HYBRIDCTX_LIB_DIR` or
//! `pkg-config hybridctx`, through the `pkg-config` crate, its only, build-time, dependency).
//! Build scripts of dependent crates get `DEP_HYBRIDCTX_INCLUDE`, `DEP_HYBRIDCTX_LIB_DIR` and
//! `DEP_HYBRIDCTX_VERSION`.
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case)]
#![allow(clippy::all)]

include!("bindings.rs");
