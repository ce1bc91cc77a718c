//! Safe Rust bindings of **libhybridctx**: DeepSeek V4's hybrid attention (sliding window,
//! compressed sparse attention and heavily compressed attention) with its compressed KV cache.
//!
//! - A [`Model`] holds the attention weights of every layer. It is immutable, `Send + Sync`, and
//!   shared through an [`Arc`]: every [`Context`] keeps its model alive.
//! - A [`Context`] holds one token sequence. It is `Send` but not `Sync` (one thread at a time,
//!   as the C library requires); every call that can fail takes `&mut self`.
//! - A chunk of `n` tokens enters layer 0, then 1, ..., then the last layer
//!   ([`Context::append`]); the application runs its own MLP between layers. `x` and `y` are
//!   row-major `[n][dim]` slices of `f32` (or of `u16` bfloat16 bits for a context created with
//!   [`IoDtype::Bf16`]).
//! - Every fallible call returns [`Result`]; an [`Error`] carries the library's [`Status`] and
//!   its message.
//! - [`backend_info`] says whether a backend (CPU, CUDA, or the one [`Backend::Auto`] picks) can
//!   be used here, and if not, why.
//! - Serving: [`Context::decode_batch`] and [`Context::append_batch`] run several contexts in one
//!   call; [`Context::fork`] shares a prefix copy-on-write; [`Context::truncate`] takes back up to
//!   [`ContextParams::max_rollback`] tokens; [`Context::set_progress`] reports and stops long
//!   calls ([`Status::ABORTED`]); [`Context::memory_info`] tells own and shared bytes apart.
//! - Device I/O: a CUDA context created with [`IoMemory::Device`] takes [`DeviceSlice`]s
//!   ([`Context::append_device`]); [`CudaStream`] names the stream it runs on.
//!
//! The C header `include/hybridctx.h` documents every function in detail.
//!
//! ```no_run
//! use std::sync::Arc;
//! use hybridctx::{Backend, Context, ContextParams, Model};
//!
//! let model = Arc::new(Model::create_random("tiny", 42)?);
//! let mut ctx = Context::new(&model, &ContextParams::new().backend(Backend::Cpu))?;
//! let (n, dim) = (16, model.dim());
//! let mut x = vec![0.5f32; n * dim];
//! let mut y = vec![0f32; n * dim];
//! for layer in 0..model.n_layers() {
//!     ctx.append(layer, &x, &mut y)?;
//!     x.copy_from_slice(&y); // your MLP goes here
//! }
//! ctx.save("session.hcs")?;
//! # Ok::<(), hybridctx::Error>(())
//! ```
#![warn(missing_docs)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::ops::{BitAnd, BitOr, BitOrAssign, ControlFlow};
use std::os::raw::{c_char, c_int, c_void};
use std::path::Path;
use std::ptr::{self, NonNull};
use std::sync::{Arc, OnceLock};

pub use hybridctx_sys as sys;

mod device;
mod progress;
mod serving;

pub use device::{CudaStream, DeviceSlice};
pub use serving::MemoryInfo;

/// The library version these bindings were written for: a runtime library with the same major
/// and at least this minor version is accepted (checked when the first model is created). It is
/// the API these bindings wrap (0.2: batches, forks, rollback, progress, device I/O), not the
/// header hybridctx-sys was generated from, which may be newer.
pub const BINDING_VERSION: (u32, u32) = (0, 2);

/// `Result` with the library's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

// ---------------------------------------------------------------------------------------------
// Status and Error
// ---------------------------------------------------------------------------------------------

/// A libhybridctx status code (`hc_status`): 0 is success, negative codes are errors.
///
/// Codes are fixed forever; the constants below name the ones this version knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status(pub i32);

macro_rules! statuses {
    ($($name:ident = $c:ident),* $(,)?) => {
        impl Status {
            $(#[doc = concat!("`", stringify!($c), "`")] pub const $name: Status = Status(sys::$c);)*
        }
    };
}
statuses! {
    OK = HC_OK, NULL_ARG = HC_ERR_NULL_ARG, INVALID_ARG = HC_ERR_INVALID_ARG,
    OUT_OF_MEMORY = HC_ERR_OUT_OF_MEMORY, UNKNOWN_PRESET = HC_ERR_UNKNOWN_PRESET,
    BAD_CONFIG = HC_ERR_BAD_CONFIG, LAYER_RANGE = HC_ERR_LAYER_RANGE, ORDER = HC_ERR_ORDER,
    N_TOKENS = HC_ERR_N_TOKENS, POSITION = HC_ERR_POSITION, NONFINITE = HC_ERR_NONFINITE,
    IO = HC_ERR_IO, FORMAT = HC_ERR_FORMAT, MISSING_TENSOR = HC_ERR_MISSING_TENSOR,
    TENSOR = HC_ERR_TENSOR, UNSUPPORTED = HC_ERR_UNSUPPORTED, NO_DEVICE = HC_ERR_NO_DEVICE,
    CUDA = HC_ERR_CUDA, CUBLAS = HC_ERR_CUBLAS, BAD_STATE = HC_ERR_BAD_STATE,
    CORRUPT = HC_ERR_CORRUPT, VERSION = HC_ERR_VERSION, MODEL_MISMATCH = HC_ERR_MODEL_MISMATCH,
    BUFFER_TOO_SMALL = HC_ERR_BUFFER_TOO_SMALL, LIMIT = HC_ERR_LIMIT, ABORTED = HC_ERR_ABORTED,
    INTERNAL = HC_ERR_INTERNAL,
}

impl Status {
    /// The symbolic name, for example `"HC_ERR_ORDER"` (`"HC_UNKNOWN"` for unknown codes).
    pub fn name(self) -> &'static str {
        // SAFETY: hc_status_name accepts any code and returns a static NUL-terminated string.
        unsafe { static_str(sys::hc_status_name(self.0)) }
    }

    /// The library's static English description of the status.
    pub fn description(self) -> &'static str {
        // SAFETY: hc_strerror accepts any code and returns a static NUL-terminated string.
        unsafe { static_str(sys::hc_strerror(self.0)) }
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({} = {})", self.name(), self.0)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A failed call: the [`Status`] and the message (the context's last error, the model loader's
/// message, the binding's own check, or else the status description).
#[derive(Clone, PartialEq, Eq)]
pub struct Error {
    status: Status,
    message: String,
}

impl Error {
    /// An error with this status and message (an empty message becomes the status description).
    pub fn new(status: Status, message: impl Into<String>) -> Error {
        let mut message = message.into();
        if message.is_empty() {
            message = status.description().to_string();
        }
        Error { status, message }
    }

    /// The status code.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The message, without the status name.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status.name(), self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({}: {:?})", self.status.name(), self.message)
    }
}

impl std::error::Error for Error {}

/// # Safety
/// `p` must be NULL or a NUL-terminated string that lives for the rest of the program.
unsafe fn static_str(p: *const c_char) -> &'static str {
    if p.is_null() {
        return "";
    }
    CStr::from_ptr(p).to_str().unwrap_or("(non-UTF-8 message)")
}

fn bad_arg(message: impl Into<String>) -> Error {
    Error::new(Status::INVALID_ARG, message)
}

fn path_cstring(path: &Path) -> Result<CString> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| bad_arg(format!("path {path:?} is not valid UTF-8")))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| bad_arg(format!("path {path:?} contains a NUL byte")))
}

// ---------------------------------------------------------------------------------------------
// Version
// ---------------------------------------------------------------------------------------------

/// The runtime library's version string, for example `"0.1.0"`.
pub fn version() -> &'static str {
    // SAFETY: hc_version_string takes no argument and returns a static string.
    unsafe { static_str(sys::hc_version_string()) }
}

/// The runtime library's version as `MAJOR * 10000 + MINOR * 100 + PATCH`.
pub fn version_number() -> u32 {
    // SAFETY: hc_version_number takes no argument and has no preconditions.
    unsafe { sys::hc_version_number() }
}

/// Checks that the loaded library is compatible with these bindings: same major version and at
/// least [`BINDING_VERSION`]'s minor. Every constructor of [`Model`] calls it; the result is
/// computed once.
pub fn check_version() -> Result<()> {
    static CHECK: OnceLock<Result<()>> = OnceLock::new();
    CHECK
        .get_or_init(|| match version_error(version_number(), version()) {
            None => Ok(()),
            Some(e) => Err(e),
        })
        .clone()
}

/// The error for runtime version `v` (`MAJOR*10000 + MINOR*100 + PATCH`, printed as `text`), or
/// `None` when these bindings accept it.
fn version_error(v: u32, text: &str) -> Option<Error> {
    let (major, minor) = (v / 10000, v / 100 % 100);
    let (want_major, want_minor) = BINDING_VERSION;
    if major == want_major && minor >= want_minor {
        return None;
    }
    Some(Error::new(
        Status::VERSION,
        format!(
            "libhybridctx {text} is loaded, but these Rust bindings need version {want_major}.x with \
             x >= {want_minor} (install a matching libhybridctx or matching bindings)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mismatch_is_a_clear_error() {
        assert!(version_error(100, "0.1.0").is_some());
        assert!(version_error(200, "0.2.0").is_none());
        assert!(version_error(299, "0.2.99").is_none());
        assert!(version_error(300, "0.3.0").is_none());
        let e = version_error(10000, "1.0.0").unwrap();
        assert_eq!(e.status(), Status::VERSION);
        assert_eq!(
            e.to_string(),
            "HC_ERR_VERSION: libhybridctx 1.0.0 is loaded, but these Rust bindings need version 0.x \
             with x >= 2 (install a matching libhybridctx or matching bindings)"
        );
        assert!(version_error(0, "0.0.0").is_some());
    }

    #[test]
    fn raw_backend_values() {
        for b in [Backend::Auto, Backend::Cpu, Backend::Cuda] {
            assert_eq!(Backend::from_raw(b.raw()), Some(b));
        }
        assert_eq!(Backend::from_raw(3), None);
        for n in [Numerics::Default, Numerics::Fast, Numerics::Exact] {
            assert_eq!(Numerics::from_raw(n.raw()), Some(n));
        }
        assert_eq!((Numerics::from_raw(3), Numerics::from_raw(-1)), (None, None));
        assert_eq!(BackendState::from_raw(0), BackendState::Usable);
        assert_eq!(BackendState::from_raw(1), BackendState::NotBuilt);
        assert_eq!(BackendState::from_raw(4), BackendState::NoDevice);
        assert_eq!(BackendState::from_raw(9), BackendState::Other(9));
        assert_eq!(c_text(b"cpu\0junk"), "cpu");
        assert_eq!(c_text(b"no nul"), "no nul");
    }

    /// A device-I/O context needs CUDA; its refusal of host slices is the binding's own check,
    /// made before the library is called, so a CPU context marked as one exercises it.
    #[test]
    fn device_io_context_refuses_host_slices() {
        let m = Arc::new(Model::create_random("tiny", 42).unwrap());
        let dim = m.dim();
        let mut c = Context::new(&m, &ContextParams::new().backend(Backend::Cpu)).unwrap();
        c.io_memory = IoMemory::Device;
        let (x, mut y) = (vec![0.5f32; dim], vec![0f32; dim]);
        let errors = [
            c.decode(0, &x, &mut y).unwrap_err(),
            c.append(0, &x, &mut y).unwrap_err(),
            c.append_in_place(0, &mut y).unwrap_err(),
            Context::decode_batch(&mut [&mut c], 0, &x, &mut y).unwrap_err(),
            Context::append_batch(&mut [&mut c], 0, &x, &[1], &mut y).unwrap_err(),
        ];
        for e in errors {
            assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
            assert!(e.message().contains("device memory (IoMemory::Device)"), "{e}");
        }
        assert_eq!((c.n_tokens(), c.next_layer()), (0, 0));
        // a fork without params keeps the source's I/O memory
        let f = c.fork(None).unwrap();
        assert_eq!(f.io_memory(), IoMemory::Device);
        c.io_memory = IoMemory::Host;
        c.decode(0, &x, &mut y).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Enumerations and parameters
// ---------------------------------------------------------------------------------------------

/// Where a context computes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// CUDA when built and a GPU exists, else CPU.
    #[default]
    Auto,
    /// The CPU reference backend (bitwise deterministic).
    Cpu,
    /// The CUDA backend.
    Cuda,
}

impl Backend {
    fn raw(self) -> i32 {
        (match self {
            Backend::Auto => sys::HC_BACKEND_AUTO,
            Backend::Cpu => sys::HC_BACKEND_CPU,
            Backend::Cuda => sys::HC_BACKEND_CUDA,
        }) as i32
    }

    fn from_raw(v: i32) -> Option<Backend> {
        match u32::try_from(v).ok()? {
            sys::HC_BACKEND_AUTO => Some(Backend::Auto),
            sys::HC_BACKEND_CPU => Some(Backend::Cpu),
            sys::HC_BACKEND_CUDA => Some(Backend::Cuda),
            _ => None,
        }
    }
}

/// Storage format of a context's cache; both give bitwise identical results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CacheFormat {
    /// The library default (FP8).
    #[default]
    Default,
    /// bfloat16 entries.
    Bf16,
    /// FP8 entries, about half the memory.
    Fp8,
}

impl CacheFormat {
    fn raw(self) -> i32 {
        (match self {
            CacheFormat::Default => sys::HC_CACHE_DEFAULT,
            CacheFormat::Bf16 => sys::HC_CACHE_BF16,
            CacheFormat::Fp8 => sys::HC_CACHE_FP8,
        }) as i32
    }
}

/// Element type of a context's `x` and `y`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoDtype {
    /// `f32` slices.
    #[default]
    F32,
    /// `u16` slices holding bfloat16 bit patterns.
    Bf16,
}

/// Where a context's `x` and `y` live (`hc_ctx_params.io_memory`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum IoMemory {
    /// Host slices ([`Context::append`]): the default.
    #[default]
    Host,
    /// CUDA device memory ([`DeviceSlice`], [`Context::append_device`]); CUDA backend only, used
    /// in order on the context's stream.
    Device,
}

/// The arithmetic a context computes with (`hc_ctx_params.numerics`; `docs/numerics.md`).
/// [`Context::numerics`] tells which one a context got: `Fast` or `Exact`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Numerics {
    /// The backend's default: [`Numerics::Fast`] on CUDA, [`Numerics::Exact`] on the CPU.
    #[default]
    Default,
    /// The official kernels' structure (CUDA): deterministic and batch-invariant, within the
    /// faithful tolerance of the CPU reference. The CPU backend computes `Exact` instead.
    Fast,
    /// Caches, compressed entries, indexer keys and top-k sets bitwise equal to the CPU
    /// backend's.
    Exact,
}

impl Numerics {
    fn raw(self) -> i32 {
        (match self {
            Numerics::Default => sys::HC_NUMERICS_DEFAULT,
            Numerics::Fast => sys::HC_NUMERICS_FAST,
            Numerics::Exact => sys::HC_NUMERICS_EXACT,
        }) as i32
    }

    fn from_raw(v: i32) -> Option<Numerics> {
        match u32::try_from(v).ok()? {
            sys::HC_NUMERICS_DEFAULT => Some(Numerics::Default),
            sys::HC_NUMERICS_FAST => Some(Numerics::Fast),
            sys::HC_NUMERICS_EXACT => Some(Numerics::Exact),
            _ => None,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

/// An element type of `x` and `y`: `f32` for [`IoDtype::F32`], `u16` (raw bfloat16 bits) for
/// [`IoDtype::Bf16`].
pub trait IoElement: sealed::Sealed + Copy {
    /// The context dtype this element type matches.
    const DTYPE: IoDtype;
}
impl IoElement for f32 {
    const DTYPE: IoDtype = IoDtype::F32;
}
impl IoElement for u16 {
    const DTYPE: IoDtype = IoDtype::Bf16;
}

/// Options of [`Model::create_random_with`] and [`Model::load_with`].
#[derive(Clone, Debug, Default)]
pub struct ModelParams {
    geometry_only: bool,
    n_threads: u32,
}

impl ModelParams {
    /// Defaults: weights included, all cores.
    pub fn new() -> Self {
        Self::default()
    }
    /// Configuration only, without weights: contexts can be created, sized, saved and loaded,
    /// but [`Context::append`] fails with [`Status::UNSUPPORTED`].
    pub fn geometry_only(mut self, yes: bool) -> Self {
        self.geometry_only = yes;
        self
    }
    /// Threads for loading or random initialisation; 0 = all online cores.
    pub fn n_threads(mut self, n: u32) -> Self {
        self.n_threads = n;
        self
    }
}

/// Options of [`Context::new`].
#[derive(Clone, Debug, Default)]
pub struct ContextParams {
    backend: Backend,
    device: u32,
    n_threads: u32,
    cache_format: CacheFormat,
    io_dtype: IoDtype,
    io_memory: IoMemory,
    max_tokens: u64,
    max_chunk: u32,
    max_rollback: u32,
    cuda_stream: Option<CudaStream>,
    numerics: Numerics,
}

impl ContextParams {
    /// Defaults: automatic backend, device 0, all cores, FP8 cache, `f32` input and output,
    /// the model's maximum length, the backend's default numerics.
    pub fn new() -> Self {
        Self::default()
    }
    /// The backend.
    pub fn backend(mut self, b: Backend) -> Self {
        self.backend = b;
        self
    }
    /// The CUDA device ordinal.
    pub fn device(mut self, d: u32) -> Self {
        self.device = d;
        self
    }
    /// CPU backend threads; 0 = all online cores. Results do not depend on it.
    pub fn n_threads(mut self, n: u32) -> Self {
        self.n_threads = n;
        self
    }
    /// The cache format.
    pub fn cache_format(mut self, f: CacheFormat) -> Self {
        self.cache_format = f;
        self
    }
    /// The element type of `x` and `y`.
    pub fn io_dtype(mut self, d: IoDtype) -> Self {
        self.io_dtype = d;
        self
    }
    /// Maximum length; 0 = the model's maximum.
    pub fn max_tokens(mut self, n: u64) -> Self {
        self.max_tokens = n;
        self
    }
    /// Tokens processed at once inside a call (bounds workspace memory); 0 = backend default.
    /// It is also the step of the progress reports of a layer call ([`Context::set_progress`]).
    pub fn max_chunk(mut self, n: u32) -> Self {
        self.max_chunk = n;
        self
    }
    /// Where `x` and `y` live: [`IoMemory::Device`] needs the CUDA backend (a CPU context
    /// refuses it with [`Status::INVALID_ARG`]).
    pub fn io_memory(mut self, m: IoMemory) -> Self {
        self.io_memory = m;
        self
    }
    /// Tokens that [`Context::truncate`] can always take back, 0..=65536; 0 (the default) =
    /// none. Costs a fixed amount of memory per layer ([`MemoryInfo::history_bytes`]).
    pub fn max_rollback(mut self, n: u32) -> Self {
        self.max_rollback = n;
        self
    }
    /// The CUDA stream to run on (CUDA backend); `None` (the default): a stream of the
    /// context's own. Ignored by the CPU backend.
    pub fn cuda_stream(mut self, stream: Option<CudaStream>) -> Self {
        self.cuda_stream = stream;
        self
    }
    /// The numerics to compute with ([`Numerics::Default`]: the backend's). The CPU backend
    /// computes [`Numerics::Exact`] for every value; [`Context::numerics`] tells what a context
    /// got. A batch takes contexts of one numerics only.
    pub fn numerics(mut self, n: Numerics) -> Self {
        self.numerics = n;
        self
    }

    fn to_raw(&self) -> Result<sys::hc_ctx_params> {
        let mut p = std::mem::MaybeUninit::<sys::hc_ctx_params>::zeroed();
        // SAFETY: p points to writable memory of the size passed; the library fills it.
        let st =
            unsafe { sys::hc_ctx_params_init(p.as_mut_ptr(), std::mem::size_of::<sys::hc_ctx_params>()) };
        check(st)?;
        // SAFETY: zero-initialised then filled by hc_ctx_params_init; all fields are plain data.
        let mut p = unsafe { p.assume_init() };
        p.backend = self.backend.raw();
        let int =
            |v: u64, what: &str| i32::try_from(v).map_err(|_| bad_arg(format!("{what} {v} is out of range")));
        p.device = int(self.device.into(), "device")?;
        p.n_threads = int(self.n_threads.into(), "n_threads")?;
        p.cache_format = self.cache_format.raw();
        p.io_dtype = match self.io_dtype {
            IoDtype::F32 => sys::HC_DTYPE_F32,
            IoDtype::Bf16 => sys::HC_DTYPE_BF16,
        } as i32;
        p.max_tokens = i64::try_from(self.max_tokens)
            .map_err(|_| bad_arg(format!("max_tokens {} is out of range", self.max_tokens)))?;
        p.max_chunk = self.max_chunk.into();
        p.io_memory = match self.io_memory {
            IoMemory::Host => sys::HC_MEM_HOST,
            IoMemory::Device => sys::HC_MEM_DEVICE,
        } as i32;
        p.max_rollback = self.max_rollback.into();
        p.cuda_stream = self.cuda_stream.map_or(ptr::null_mut(), CudaStream::as_raw);
        p.numerics = self.numerics.raw();
        Ok(p)
    }
}

/// Compression of a saved session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// The library default (none).
    #[default]
    Default,
    /// Raw chunks.
    None,
    /// zstd per chunk where it gains.
    Zstd,
}

/// Options of [`Context::save_with`] and [`Context::save_to_vec`].
#[derive(Clone, Debug, Default)]
pub struct SaveParams {
    compression: Compression,
    zstd_level: u32,
    n_threads: u32,
}

impl SaveParams {
    /// Defaults: no compression, all cores.
    pub fn new() -> Self {
        Self::default()
    }
    /// The compression.
    pub fn compression(mut self, c: Compression) -> Self {
        self.compression = c;
        self
    }
    /// zstd level 1..19; 0 = 1.
    pub fn zstd_level(mut self, level: u32) -> Self {
        self.zstd_level = level;
        self
    }
    /// Checksum and compression workers; 0 = all online cores.
    pub fn n_threads(mut self, n: u32) -> Self {
        self.n_threads = n;
        self
    }

    fn to_raw(&self) -> Result<sys::hc_save_params> {
        let mut p = std::mem::MaybeUninit::<sys::hc_save_params>::zeroed();
        // SAFETY: p points to writable memory of the size passed; the library fills it.
        let st =
            unsafe { sys::hc_save_params_init(p.as_mut_ptr(), std::mem::size_of::<sys::hc_save_params>()) };
        check(st)?;
        // SAFETY: zero-initialised then filled by hc_save_params_init; plain data.
        let mut p = unsafe { p.assume_init() };
        p.compression = match self.compression {
            Compression::Default => sys::HC_COMPRESS_DEFAULT,
            Compression::None => sys::HC_COMPRESS_NONE,
            Compression::Zstd => sys::HC_COMPRESS_ZSTD,
        } as i32;
        p.zstd_level = i32::try_from(self.zstd_level).unwrap_or(i32::MAX);
        p.n_threads = i32::try_from(self.n_threads).unwrap_or(i32::MAX);
        Ok(p)
    }
}

fn check(st: sys::hc_status) -> Result<()> {
    if st == sys::HC_OK {
        Ok(())
    } else {
        Err(Error::new(Status(st), ""))
    }
}

/// The NUL-terminated text at the start of `buf` (all of it without a NUL), lossily as UTF-8.
fn c_text(buf: &[u8]) -> String {
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// The text of a fixed-size `char` array of a C struct.
fn c_array_text(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().map(|&c| c as u8).collect();
    c_text(&bytes)
}

// ---------------------------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------------------------

/// Why a backend can or cannot be used ([`BackendInfo::state`], `HC_BACKEND_*` in the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendState {
    /// Usable now.
    Usable,
    /// This build has no such backend (built without nvcc).
    NotBuilt,
    /// Its module file is missing or cannot be loaded.
    ModuleMissing,
    /// Its module is of another version or build.
    ModuleInvalid,
    /// Loaded, but no usable device (driver missing, device absent).
    NoDevice,
    /// A state these bindings do not know (from a newer library): the raw value.
    Other(i32),
}

impl BackendState {
    fn from_raw(v: i32) -> BackendState {
        match u32::try_from(v) {
            Ok(sys::HC_BACKEND_USABLE) => BackendState::Usable,
            Ok(sys::HC_BACKEND_NOT_BUILT) => BackendState::NotBuilt,
            Ok(sys::HC_BACKEND_MODULE_MISSING) => BackendState::ModuleMissing,
            Ok(sys::HC_BACKEND_MODULE_INVALID) => BackendState::ModuleInvalid,
            Ok(sys::HC_BACKEND_NO_DEVICE) => BackendState::NoDevice,
            _ => BackendState::Other(v),
        }
    }
}

/// What a backend offers: a set of `HC_CAP_*` flags ([`BackendInfo::caps`]).
///
/// Combine with `|`, test with [`BackendCaps::contains`]:
/// `caps.contains(BackendCaps::HOST_IO | BackendCaps::THREADS)`.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BackendCaps(u32);

impl BackendCaps {
    /// `x` and `y` in host memory.
    pub const HOST_IO: BackendCaps = BackendCaps(sys::HC_CAP_HOST_IO);
    /// `x` and `y` in device memory.
    pub const DEVICE_IO: BackendCaps = BackendCaps(sys::HC_CAP_DEVICE_IO);
    /// Runs on a caller's stream.
    pub const STREAM: BackendCaps = BackendCaps(sys::HC_CAP_STREAM);
    /// Uses [`ContextParams::n_threads`].
    pub const THREADS: BackendCaps = BackendCaps(sys::HC_CAP_THREADS);
    /// Results bitwise equal to the CPU backend's for every chunking.
    pub const BITWISE_CPU: BackendCaps = BackendCaps(sys::HC_CAP_BITWISE_CPU);

    const NAMES: [(BackendCaps, &'static str); 5] = [
        (Self::HOST_IO, "HOST_IO"),
        (Self::DEVICE_IO, "DEVICE_IO"),
        (Self::STREAM, "STREAM"),
        (Self::THREADS, "THREADS"),
        (Self::BITWISE_CPU, "BITWISE_CPU"),
    ];

    /// No flag.
    pub const fn empty() -> BackendCaps {
        BackendCaps(0)
    }
    /// The flags as `HC_CAP_*` bits (unknown bits of a newer library included).
    pub const fn bits(self) -> u32 {
        self.0
    }
    /// Flags from `HC_CAP_*` bits; unknown bits are kept.
    pub const fn from_bits(bits: u32) -> BackendCaps {
        BackendCaps(bits)
    }
    /// Whether every flag of `other` is set.
    pub const fn contains(self, other: BackendCaps) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether no flag is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for BackendCaps {
    type Output = BackendCaps;
    fn bitor(self, rhs: BackendCaps) -> BackendCaps {
        BackendCaps(self.0 | rhs.0)
    }
}

impl BitOrAssign for BackendCaps {
    fn bitor_assign(&mut self, rhs: BackendCaps) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for BackendCaps {
    type Output = BackendCaps;
    fn bitand(self, rhs: BackendCaps) -> BackendCaps {
        BackendCaps(self.0 & rhs.0)
    }
}

impl fmt::Debug for BackendCaps {
    /// `BackendCaps(HOST_IO | THREADS)`; unknown bits in hex; `BackendCaps(empty)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut parts: Vec<String> = Vec::new();
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                parts.push(name.to_string());
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            parts.push(format!("{rest:#x}"));
        }
        if parts.is_empty() {
            parts.push("empty".to_string());
        }
        write!(f, "BackendCaps({})", parts.join(" | "))
    }
}

/// What one backend can do on this machine (`hc_backend_info`); see [`backend_info`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendInfo {
    /// The backend described: [`Backend::Cpu`] or [`Backend::Cuda`].
    pub backend: Backend,
    /// [`BackendState::Usable`] or why not; for a query of [`Backend::Auto`], why AUTO did not
    /// pick CUDA ([`BackendState::Usable`] when it did).
    pub state: BackendState,
    /// Usable devices (1 for the CPU).
    pub n_devices: u32,
    /// What it offers; empty when it is not usable.
    pub caps: BackendCaps,
    /// `"cpu"` or `"cuda"`.
    pub name: String,
    /// Human-readable: the module file, and the reason it cannot be used.
    pub detail: String,
}

/// Describe a backend: whether it can be used here, and if not, why (`hc_backend_info_get`).
///
/// For [`Backend::Auto`] the result describes the backend that a context created with
/// [`Backend::Auto`] and this device runs on, and its `state` says why that is not CUDA.
/// `device` is the CUDA device ordinal that AUTO or CUDA would use. May load the CUDA module.
/// A backend that cannot be used is not an error: read `state` and `detail`.
///
/// ```no_run
/// use hybridctx::{backend_info, Backend, BackendState};
///
/// let cuda = backend_info(Backend::Cuda, 0)?;
/// if cuda.state != BackendState::Usable {
///     println!("no CUDA: {}", cuda.detail);
/// }
/// # Ok::<(), hybridctx::Error>(())
/// ```
pub fn backend_info(backend: Backend, device: u32) -> Result<BackendInfo> {
    let device = i32::try_from(device).map_err(|_| bad_arg(format!("device {device} is out of range")))?;
    let mut i = std::mem::MaybeUninit::<sys::hc_backend_info>::zeroed();
    // SAFETY: struct_size is the first member; the struct is zeroed, so writing it is fine.
    unsafe { (*i.as_mut_ptr()).struct_size = std::mem::size_of::<sys::hc_backend_info>() as u32 };
    // SAFETY: i points to a struct of the size it announces; the call is thread-safe.
    check(unsafe { sys::hc_backend_info_get(backend.raw(), device, i.as_mut_ptr()) })?;
    // SAFETY: zero-initialised and filled by the library; plain data.
    let i = unsafe { i.assume_init() };
    let described = Backend::from_raw(i.backend).ok_or_else(|| {
        Error::new(
            Status::UNSUPPORTED,
            format!(
                "the library describes backend {}, which these bindings do not know",
                i.backend
            ),
        )
    })?;
    Ok(BackendInfo {
        backend: described,
        state: BackendState::from_raw(i.state),
        n_devices: u32::try_from(i.n_devices).unwrap_or(0),
        caps: BackendCaps(i.caps),
        name: c_array_text(&i.name),
        detail: c_array_text(&i.detail),
    })
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// The attention weights and configuration of every layer. Immutable; share it with [`Arc`].
pub struct Model {
    raw: NonNull<sys::hc_model>,
}

// SAFETY: the header guarantees that an hc_model is immutable after creation and may be used
// from any number of threads at once; it is freed only by Drop, which needs sole ownership.
unsafe impl Send for Model {}
// SAFETY: as above: every function taking a model is thread-safe.
unsafe impl Sync for Model {}

/// A description of a model (see `hc_model_info` in the header).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)]
pub struct ModelInfo {
    pub n_layers: i32,
    pub dim: i32,
    pub n_heads: i32,
    pub head_dim: i32,
    pub rope_dim: i32,
    pub q_lora_rank: i32,
    pub o_groups: i32,
    pub o_lora_rank: i32,
    pub window: i32,
    pub index_n_heads: i32,
    pub index_head_dim: i32,
    pub index_topk: i32,
    /// false for a geometry-only model.
    pub has_weights: bool,
    /// max_position_embeddings.
    pub max_positions: i64,
    /// Host bytes held by the weights.
    pub weight_bytes: u64,
}

/// Bytes a context holds after a number of tokens (see [`Model::cache_bytes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheBytes {
    /// Windows, compressed entries and indexer keys.
    pub kv: u64,
    /// Compressor states.
    pub state: u64,
}

impl Model {
    /// A model with seeded random weights: `preset_or_config_json` is `"tiny"`, `"v4-flash"`,
    /// `"v4-pro"` or the text of a HF `config.json`. The same seed gives the same weights
    /// everywhere.
    pub fn create_random(preset_or_config_json: &str, seed: u64) -> Result<Model> {
        Self::create_random_with(preset_or_config_json, seed, &ModelParams::default())
    }

    /// [`Model::create_random`] with options.
    pub fn create_random_with(preset_or_config_json: &str, seed: u64, params: &ModelParams) -> Result<Model> {
        Self::create_random_inner(preset_or_config_json, seed, params, None)
    }

    /// [`Model::create_random_with`], reporting the layers initialised to `progress`
    /// (`hc_model_params.progress`; called on this thread). [`ControlFlow::Break`] stops the
    /// creation with [`Status::ABORTED`], as does a panic of the callback (caught: it does not
    /// unwind through the library; the error's message holds it).
    pub fn create_random_with_progress<F>(
        preset_or_config_json: &str,
        seed: u64,
        params: &ModelParams,
        mut progress: F,
    ) -> Result<Model>
    where
        F: FnMut(u64, u64) -> ControlFlow<()>,
    {
        Self::create_random_inner(preset_or_config_json, seed, params, Some(&mut progress))
    }

    fn create_random_inner(
        preset_or_config_json: &str,
        seed: u64,
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(u64, u64) -> ControlFlow<()>>,
    ) -> Result<Model> {
        let text = CString::new(preset_or_config_json)
            .map_err(|_| bad_arg("the preset or config text contains a NUL byte"))?;
        Self::make(params, progress, |p, out| {
            // SAFETY: text is a valid C string, p a valid params struct, out a valid out pointer.
            unsafe { sys::hc_model_create_random(text.as_ptr(), seed, p, out) }
        })
    }

    /// Load a checkpoint directory or a `.safetensors` file (see `hc_model_load`).
    pub fn load(path: impl AsRef<Path>) -> Result<Model> {
        Self::load_with(path, &ModelParams::default())
    }

    /// [`Model::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, params: &ModelParams) -> Result<Model> {
        Self::load_inner(path.as_ref(), params, None)
    }

    /// [`Model::load_with`], reporting the weight bytes read to `progress` (as
    /// [`Model::create_random_with_progress`]).
    pub fn load_with_progress<F>(
        path: impl AsRef<Path>,
        params: &ModelParams,
        mut progress: F,
    ) -> Result<Model>
    where
        F: FnMut(u64, u64) -> ControlFlow<()>,
    {
        Self::load_inner(path.as_ref(), params, Some(&mut progress))
    }

    fn load_inner(
        path: &Path,
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(u64, u64) -> ControlFlow<()>>,
    ) -> Result<Model> {
        let path = path_cstring(path)?;
        Self::make(params, progress, |p, out| {
            // SAFETY: path is a valid C string, p a valid params struct, out a valid out pointer.
            unsafe { sys::hc_model_load(path.as_ptr(), p, out) }
        })
    }

    fn make<F>(
        params: &ModelParams,
        progress: Option<&mut dyn FnMut(u64, u64) -> ControlFlow<()>>,
        ctor: F,
    ) -> Result<Model>
    where
        F: FnOnce(*const sys::hc_model_params, *mut *mut sys::hc_model) -> sys::hc_status,
    {
        check_version()?;
        let mut errbuf = vec![0u8; 1024];
        let mut p = std::mem::MaybeUninit::<sys::hc_model_params>::zeroed();
        // SAFETY: p points to writable memory of the size passed.
        check(unsafe {
            sys::hc_model_params_init(p.as_mut_ptr(), std::mem::size_of::<sys::hc_model_params>())
        })?;
        // SAFETY: zero-initialised then filled by hc_model_params_init; plain data.
        let mut p = unsafe { p.assume_init() };
        if params.geometry_only {
            p.flags |= sys::HC_MODEL_GEOMETRY_ONLY as i32;
        }
        p.n_threads = i32::try_from(params.n_threads).map_err(|_| bad_arg("n_threads is out of range"))?;
        p.errbuf = errbuf.as_mut_ptr().cast::<c_char>();
        p.errbuf_size = errbuf.len() as u64;
        // lives on this frame for the whole call: the library calls it only during ctor
        let mut slot = progress.map(progress::Progress::new);
        if let Some(slot) = slot.as_mut() {
            p.progress = Some(progress::trampoline::<&mut dyn FnMut(u64, u64) -> ControlFlow<()>>);
            p.progress_user = (slot as *mut progress::Progress<_>).cast::<c_void>();
        }
        let mut raw = ptr::null_mut();
        let st = ctor(&p, &mut raw);
        if st != sys::HC_OK {
            let mut msg = c_text(&errbuf);
            if let Some(panic) = slot.and_then(|s| s.panicked) {
                msg.push_str(&format!("; the progress callback panicked: {panic}"));
            }
            return Err(Error::new(Status(st), msg));
        }
        NonNull::new(raw)
            .map(|raw| Model { raw })
            .ok_or_else(|| Error::new(Status::INTERNAL, "the library returned no model"))
    }

    /// Number of attention layers.
    pub fn n_layers(&self) -> usize {
        // SAFETY: self.raw is a live model.
        unsafe { sys::hc_model_n_layers(self.raw.as_ptr()) as usize }
    }

    /// Model width: the length of one token's `x` and `y`.
    pub fn dim(&self) -> usize {
        // SAFETY: self.raw is a live model.
        unsafe { sys::hc_model_dim(self.raw.as_ptr()) as usize }
    }

    /// Compression ratio of a layer (0 window only, 4 CSA, 128 HCA); `None` out of range.
    pub fn layer_ratio(&self, layer: usize) -> Option<u32> {
        let layer = c_int::try_from(layer).ok()?;
        // SAFETY: self.raw is a live model; any layer index is accepted.
        let r = unsafe { sys::hc_model_layer_ratio(self.raw.as_ptr(), layer) };
        u32::try_from(r).ok()
    }

    /// The model's geometry.
    pub fn info(&self) -> ModelInfo {
        let mut i = std::mem::MaybeUninit::<sys::hc_model_info>::zeroed();
        // SAFETY: struct_size is the first member; the struct is zeroed, so writing it is fine.
        unsafe { (*i.as_mut_ptr()).struct_size = std::mem::size_of::<sys::hc_model_info>() as u32 };
        // SAFETY: self.raw is live and i points to a struct of the size it announces.
        let st = unsafe { sys::hc_model_info_get(self.raw.as_ptr(), i.as_mut_ptr()) };
        debug_assert_eq!(st, sys::HC_OK);
        // SAFETY: zero-initialised and filled by the library; plain data.
        let i = unsafe { i.assume_init() };
        ModelInfo {
            n_layers: i.n_layers,
            dim: i.dim,
            n_heads: i.n_heads,
            head_dim: i.head_dim,
            rope_dim: i.rope_dim,
            q_lora_rank: i.q_lora_rank,
            o_groups: i.o_groups,
            o_lora_rank: i.o_lora_rank,
            window: i.window,
            index_n_heads: i.index_n_heads,
            index_head_dim: i.index_head_dim,
            index_topk: i.index_topk,
            has_weights: i.has_weights != 0,
            max_positions: i.max_positions,
            weight_bytes: i.weight_bytes,
        }
    }

    /// Bytes a context of this model holds after `n_tokens` tokens in the given cache format.
    pub fn cache_bytes(&self, n_tokens: u64, format: CacheFormat) -> Result<CacheBytes> {
        let n = i64::try_from(n_tokens).map_err(|_| bad_arg("n_tokens is out of range"))?;
        let (mut kv, mut state) = (0u64, 0u64);
        // SAFETY: self.raw is live; kv and state are valid out pointers.
        check(unsafe { sys::hc_model_cache_bytes(self.raw.as_ptr(), n, format.raw(), &mut kv, &mut state) })?;
        Ok(CacheBytes { kv, state })
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_ptr(&self) -> *mut sys::hc_model {
        self.raw.as_ptr()
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Model")
            .field("n_layers", &self.n_layers())
            .field("dim", &self.dim())
            .finish()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: we own the model, and no context is left: each holds an Arc<Model>.
        unsafe { sys::hc_model_free(self.raw.as_ptr()) }
    }
}

// ---------------------------------------------------------------------------------------------
// Context
// ---------------------------------------------------------------------------------------------

/// One token sequence and its compressed KV cache.
///
/// `Send` (it may move between threads) but not `Sync` (one thread at a time):
///
/// ```compile_fail
/// fn needs_sync<T: Sync>() {}
/// needs_sync::<hybridctx::Context>();
/// ```
pub struct Context {
    raw: NonNull<sys::hc_ctx>,
    model: Arc<Model>,
    io_dtype: IoDtype,
    io_memory: IoMemory,
    dim: usize,
    /// The registered progress callback (Box::into_raw): the library holds this pointer as its
    /// `user`, so it is freed only after the registration is replaced or the context is freed.
    progress: Option<NonNull<progress::ContextProgress>>,
}

// SAFETY: the header allows a context to move between threads ("used by one thread at a time
// (it may move between threads)"). It is not Sync: calls that can fail write the context's
// last-error buffer and take &mut self; the &self getters only read plain fields. The progress
// closure it owns is Send, and is called only on the thread that makes a call on the context.
unsafe impl Send for Context {}

impl Context {
    /// An empty context for `model`; it keeps the model alive. A failure carries the library's
    /// detail (for a backend that cannot be used, what [`backend_info`] reports too).
    pub fn new(model: &Arc<Model>, params: &ContextParams) -> Result<Context> {
        let mut p = params.to_raw()?;
        let mut errbuf = vec![0u8; 1024];
        p.errbuf = errbuf.as_mut_ptr().cast::<c_char>();
        p.errbuf_size = errbuf.len() as u64;
        let mut raw = ptr::null_mut();
        // SAFETY: model is live (we hold an Arc), p is a valid params struct whose errbuf points
        // to errbuf_size writable bytes that outlive the call, raw an out pointer.
        let st = unsafe { sys::hc_ctx_create(model.raw.as_ptr(), &p, &mut raw) };
        if st != sys::HC_OK {
            return Err(Error::new(Status(st), c_text(&errbuf)));
        }
        Context::wrap(raw, model, params.io_dtype, params.io_memory)
    }

    /// Owns a context the library just made.
    fn wrap(
        raw: *mut sys::hc_ctx,
        model: &Arc<Model>,
        io_dtype: IoDtype,
        io_memory: IoMemory,
    ) -> Result<Context> {
        let raw = NonNull::new(raw)
            .ok_or_else(|| Error::new(Status::INTERNAL, "the library returned no context"))?;
        Ok(Context {
            raw,
            model: Arc::clone(model),
            io_dtype,
            io_memory,
            dim: model.dim(),
            progress: None,
        })
    }

    /// The model of this context.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The element type of `x` and `y`.
    pub fn io_dtype(&self) -> IoDtype {
        self.io_dtype
    }

    /// Where `x` and `y` live: host slices or [`DeviceSlice`]s.
    pub fn io_memory(&self) -> IoMemory {
        self.io_memory
    }

    /// The numerics the context computes with, [`Numerics::Fast`] or [`Numerics::Exact`]
    /// (`hc_ctx_numerics`: [`ContextParams::numerics`] resolved for the backend; always `Exact`
    /// on the CPU).
    pub fn numerics(&self) -> Numerics {
        // SAFETY: self.raw is live.
        match Numerics::from_raw(unsafe { sys::hc_ctx_numerics(self.raw.as_ptr()) }) {
            Some(Numerics::Fast) => Numerics::Fast,
            _ => Numerics::Exact, // the library resolves Default; nothing else is returned
        }
    }

    /// The context's last error, copied.
    fn last_error(&self) -> String {
        // SAFETY: self.raw is live; the returned string is owned by the context and copied
        // before any other call on it.
        let msg = unsafe { CStr::from_ptr(sys::hc_ctx_last_error(self.raw.as_ptr())) };
        msg.to_string_lossy().into_owned()
    }

    fn fail(&mut self, st: sys::hc_status) -> Error {
        let mut msg = self.last_error();
        if let Some(p) = self.take_progress_panic() {
            msg.push_str(&format!("; the progress callback panicked: {p}"));
        }
        Error::new(Status(st), msg)
    }

    fn call(&mut self, st: sys::hc_status) -> Result<()> {
        if st == sys::HC_OK {
            Ok(())
        } else {
            Err(self.fail(st))
        }
    }

    /// The tokens of `len` elements of `T` in `memory`, or why this context refuses them.
    fn rows_in<T: IoElement>(&self, memory: IoMemory, len: usize) -> Result<i64> {
        if memory != self.io_memory {
            return Err(bad_arg(match self.io_memory {
                IoMemory::Host => "the context takes host slices (IoMemory::Host), not device memory",
                IoMemory::Device => {
                    "the context takes device memory (IoMemory::Device): use DeviceSlice and the *_device calls"
                }
            }));
        }
        if T::DTYPE != self.io_dtype {
            let want = if self.io_dtype == IoDtype::F32 {
                "f32"
            } else {
                "u16 (bfloat16 bits)"
            };
            return Err(bad_arg(format!(
                "the context (IoDtype::{:?}) takes {want} slices, not {}",
                self.io_dtype,
                std::any::type_name::<T>()
            )));
        }
        if len == 0 {
            return Err(Error::new(Status::N_TOKENS, "x holds no token"));
        }
        if len % self.dim != 0 {
            return Err(bad_arg(format!(
                "x has {len} elements, not a multiple of the model width {}",
                self.dim
            )));
        }
        Ok((len / self.dim) as i64)
    }

    fn rows<T: IoElement>(&self, len: usize) -> Result<i64> {
        self.rows_in::<T>(IoMemory::Host, len)
    }

    /// Run a chunk of `x.len() / dim` tokens through `layer` (0 starts a chunk, then 1, 2, ...,
    /// the last layer), writing the attention output to `y` (same length as `x`).
    pub fn append<T: IoElement>(&mut self, layer: usize, x: &[T], y: &mut [T]) -> Result<()> {
        let n = self.rows::<T>(x.len())?;
        if y.len() != x.len() {
            return Err(bad_arg(format!("y has {} elements, x has {}", y.len(), x.len())));
        }
        let layer = c_int::try_from(layer).unwrap_or(c_int::MAX);
        // SAFETY: self.raw is live; x and y are valid for n*dim elements of the context's dtype
        // (checked above); the library does not keep the pointers.
        let st = unsafe {
            sys::hc_append(
                self.raw.as_ptr(),
                layer,
                x.as_ptr().cast::<c_void>(),
                n,
                y.as_mut_ptr().cast::<c_void>(),
            )
        };
        self.call(st)
    }

    /// [`Context::append`] with the output written over the input (`y` = `x`).
    pub fn append_in_place<T: IoElement>(&mut self, layer: usize, xy: &mut [T]) -> Result<()> {
        let n = self.rows::<T>(xy.len())?;
        let layer = c_int::try_from(layer).unwrap_or(c_int::MAX);
        let p = xy.as_mut_ptr().cast::<c_void>();
        // SAFETY: as in append; the header allows y == x.
        let st = unsafe { sys::hc_append(self.raw.as_ptr(), layer, p, n, p) };
        self.call(st)
    }

    /// [`Context::append`] with one token: `x` and `y` hold `dim` elements.
    pub fn decode<T: IoElement>(&mut self, layer: usize, x: &[T], y: &mut [T]) -> Result<()> {
        if x.len() != self.dim {
            return Err(bad_arg(format!(
                "decode takes one token: x has {} elements, not {}",
                x.len(),
                self.dim
            )));
        }
        self.append(layer, x, y)
    }

    /// Tokens the context holds (chunks that have passed the last layer).
    pub fn n_tokens(&self) -> u64 {
        // SAFETY: self.raw is live.
        unsafe { sys::hc_ctx_n_tokens(self.raw.as_ptr()) as u64 }
    }

    /// The layer the next [`Context::append`] must name (0 when no chunk is in progress).
    pub fn next_layer(&self) -> usize {
        // SAFETY: self.raw is live.
        unsafe { sys::hc_ctx_next_layer(self.raw.as_ptr()) as usize }
    }

    /// Bytes of cache the context holds now.
    pub fn memory_bytes(&self) -> u64 {
        // SAFETY: self.raw is live.
        unsafe { sys::hc_ctx_memory_bytes(self.raw.as_ptr()) }
    }

    /// The backend the context runs on ([`Backend::Cpu`] or [`Backend::Cuda`]).
    pub fn backend(&self) -> Backend {
        // SAFETY: self.raw is live.
        match unsafe { sys::hc_ctx_backend(self.raw.as_ptr()) } as u32 {
            sys::HC_BACKEND_CUDA => Backend::Cuda,
            _ => Backend::Cpu,
        }
    }

    /// Empty the context (length 0, no chunk in progress).
    pub fn reset(&mut self) -> Result<()> {
        // SAFETY: self.raw is live.
        let st = unsafe { sys::hc_ctx_reset(self.raw.as_ptr()) };
        self.call(st)
    }

    /// Save the session to `path` atomically (no chunk may be in progress).
    pub fn save(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.save_with(path, &SaveParams::default())
    }

    /// [`Context::save`] with options.
    pub fn save_with(&mut self, path: impl AsRef<Path>, params: &SaveParams) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        let p = params.to_raw()?;
        // SAFETY: self.raw is live, path a valid C string, p a valid params struct.
        let st = unsafe { sys::hc_ctx_save(self.raw.as_ptr(), path.as_ptr(), &p) };
        self.call(st)
    }

    /// Replace the context's contents with the session in `path`; on failure the context is
    /// unchanged.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        let path = path_cstring(path.as_ref())?;
        // SAFETY: self.raw is live, path a valid C string.
        let st = unsafe { sys::hc_ctx_load(self.raw.as_ptr(), path.as_ptr()) };
        self.call(st)
    }

    /// The session as bytes (the same bytes [`Context::save_with`] writes).
    pub fn save_to_vec(&mut self, params: &SaveParams) -> Result<Vec<u8>> {
        let p = params.to_raw()?;
        let mut size = 0u64;
        // SAFETY: self.raw is live, p valid, size a valid out pointer.
        let st = unsafe { sys::hc_ctx_save_size(self.raw.as_ptr(), &p, &mut size) };
        self.call(st)?;
        let len =
            usize::try_from(size).map_err(|_| Error::new(Status::OUT_OF_MEMORY, "session too large"))?;
        let mut buf = vec![0u8; len];
        let mut written = 0u64;
        // SAFETY: buf is valid for buf.len() bytes, the capacity passed; written an out pointer.
        let st = unsafe {
            sys::hc_ctx_save_buffer(
                self.raw.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len() as u64,
                &p,
                &mut written,
            )
        };
        self.call(st)?;
        buf.truncate(written as usize);
        Ok(buf)
    }

    /// Replace the context's contents with a session held in memory.
    pub fn load_from_slice(&mut self, session: &[u8]) -> Result<()> {
        // SAFETY: session is valid for its length; the library does not keep the pointer.
        let st = unsafe {
            sys::hc_ctx_load_buffer(self.raw.as_ptr(), session.as_ptr().cast(), session.len() as u64)
        };
        self.call(st)
    }

    /// Attach a metadata blob (for example token ids) saved with the session; empty removes it.
    pub fn set_metadata(&mut self, data: &[u8]) -> Result<()> {
        // SAFETY: data is valid for its length (a dangling but non-NULL pointer when empty,
        // which the library does not read); the bytes are copied.
        let st =
            unsafe { sys::hc_ctx_set_metadata(self.raw.as_ptr(), data.as_ptr().cast(), data.len() as u64) };
        self.call(st)
    }

    /// The metadata blob (set, or restored by a load); empty when there is none.
    pub fn metadata(&self) -> &[u8] {
        let (mut data, mut len) = (ptr::null::<c_void>(), 0u64);
        // SAFETY: self.raw is live, data and len are valid out pointers.
        let st = unsafe { sys::hc_ctx_get_metadata(self.raw.as_ptr(), &mut data, &mut len) };
        if st != sys::HC_OK || data.is_null() || len == 0 {
            return &[];
        }
        // SAFETY: the blob is owned by the context and valid until a call that changes it,
        // which needs &mut self and so cannot happen while the returned borrow lives.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len as usize) }
    }

    /// The raw handle, for calls this crate does not wrap. It stays owned by `self`.
    pub fn as_ptr(&mut self) -> *mut sys::hc_ctx {
        self.raw.as_ptr()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("n_tokens", &self.n_tokens())
            .field("next_layer", &self.next_layer())
            .field("io_dtype", &self.io_dtype)
            .field("io_memory", &self.io_memory)
            .field("numerics", &self.numerics())
            .finish()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: we own the context; its model is still alive (self.model is dropped after).
        unsafe { sys::hc_ctx_free(self.raw.as_ptr()) }
        // the library, which held the callback's pointer, is gone: free the callback
        progress::free(self.progress.take());
    }
}
