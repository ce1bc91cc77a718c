//! Device I/O: x and y in CUDA device memory, and the stream a context runs on.
//!
//! These bindings do not link CUDA: device memory and streams come from the application (cudarc,
//! a CUDA runtime binding, a framework's tensors) as raw handles. Making the handle is the one
//! `unsafe` step, where the caller vouches for it; the calls that take it are safe and check
//! lengths, element type and that the context is one for device I/O.

use std::fmt;
use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;

use crate::serving::{run_batch, BatchIo};
use crate::{bad_arg, sys, Context, IoElement, IoMemory, Result};

/// `len` elements of `T` in CUDA device memory: `x` or `y` of a context created with
/// [`IoMemory::Device`] ([`Context::append_device`] and the other `*_device` calls).
///
/// The library reads and writes the memory asynchronously, in order on the context's stream
/// (for a batch, the first context's), so a call returns before its work is done. The contents
/// are `f32` or `u16` bits, valid whatever the device writes, so a race between streams can give
/// wrong numbers but no undefined behaviour on the host; ordering work is the application's job,
/// as in CUDA.
pub struct DeviceSlice<T: IoElement> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a DeviceSlice is an address and a length; the host never dereferences it. Using the
// memory from several threads is covered by from_raw's contract (see the type's documentation).
unsafe impl<T: IoElement> Send for DeviceSlice<T> {}
// SAFETY: as above.
unsafe impl<T: IoElement> Sync for DeviceSlice<T> {}

impl<T: IoElement> Clone for DeviceSlice<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T: IoElement> Copy for DeviceSlice<T> {}

impl<T: IoElement> PartialEq for DeviceSlice<T> {
    fn eq(&self, other: &Self) -> bool {
        self.ptr == other.ptr && self.len == other.len
    }
}
impl<T: IoElement> Eq for DeviceSlice<T> {}

impl<T: IoElement> fmt::Debug for DeviceSlice<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DeviceSlice<{}>({:p}, {})",
            std::any::type_name::<T>(),
            self.ptr,
            self.len
        )
    }
}

impl<T: IoElement> DeviceSlice<T> {
    /// Names `len` elements of `T` of device memory starting at `ptr`.
    ///
    /// # Safety
    /// `ptr` must be a CUDA device address (not host memory), aligned for `T`, of the device of
    /// the contexts it is given to, with `len` elements readable and writable there, and it must
    /// stay allocated until the work queued on it by the calls that take this slice has
    /// completed on the stream (synchronise the stream before freeing it).
    pub unsafe fn from_raw(ptr: *mut T, len: usize) -> DeviceSlice<T> {
        DeviceSlice { ptr, len }
    }

    /// The device address.
    pub fn as_ptr(&self) -> *mut T {
        self.ptr
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `mid` elements and the rest, or `None` when `mid > len` (for example the rows
    /// of one context of a batch).
    pub fn split_at(self, mid: usize) -> Option<(DeviceSlice<T>, DeviceSlice<T>)> {
        if mid > self.len {
            return None;
        }
        // wrapping_add: a device address is no Rust allocation, only a number to offset
        let rest = DeviceSlice {
            ptr: self.ptr.wrapping_add(mid),
            len: self.len - mid,
        };
        Some((
            DeviceSlice {
                ptr: self.ptr,
                len: mid,
            },
            rest,
        ))
    }

    /// The byte range it covers, or `None` when it would pass the address space.
    fn range(&self) -> Option<(usize, usize)> {
        let start = self.ptr as usize;
        let bytes = self.len.checked_mul(std::mem::size_of::<T>())?;
        Some((start, start.checked_add(bytes)?))
    }
}

/// Refuses x and y that overlap without being the same memory (the library allows y == x only).
fn check_overlap<T: IoElement>(x: &DeviceSlice<T>, y: &DeviceSlice<T>) -> Result<()> {
    let (Some((xs, xe)), Some((ys, ye))) = (x.range(), y.range()) else {
        return Err(bad_arg("a DeviceSlice passes the end of the address space"));
    };
    if x != y && xs < ye && ys < xe {
        return Err(bad_arg("y overlaps x without being x"));
    }
    Ok(())
}

/// A CUDA stream (`cudaStream_t`) for [`ContextParams::cuda_stream`](crate::ContextParams::cuda_stream)
/// and [`Context::set_stream`]. Never the NULL (legacy default) stream: the library reads NULL as
/// "a stream of the context's own", which `None` stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CudaStream(NonNull<c_void>);

// SAFETY: a stream handle may be used from any host thread (CUDA streams are thread-safe
// objects); this type only carries the handle.
unsafe impl Send for CudaStream {}
// SAFETY: as above.
unsafe impl Sync for CudaStream {}

impl CudaStream {
    /// Wraps a `cudaStream_t`; `None` for NULL.
    ///
    /// # Safety
    /// `stream` must be a valid stream of the device of the contexts that will run on it, and
    /// stay valid (not destroyed) while any context runs on it, that is until the context is
    /// freed or moved to another stream and the work queued on it has completed.
    pub unsafe fn from_raw(stream: *mut c_void) -> Option<CudaStream> {
        NonNull::new(stream).map(CudaStream)
    }

    /// The raw `cudaStream_t`.
    pub fn as_raw(self) -> *mut c_void {
        self.0.as_ptr()
    }
}

impl Context {
    /// [`Context::append`] for a context created with [`IoMemory::Device`]: `x` and `y` are
    /// device memory of `n * dim` elements each (`y` may be `x`), used in order on the
    /// context's stream; the call returns once the work is queued. A host context refuses
    /// device memory, and a device context host slices, with [`Status::INVALID_ARG`] before
    /// the library is called.
    ///
    /// [`Status::INVALID_ARG`]: crate::Status::INVALID_ARG
    pub fn append_device<T: IoElement>(
        &mut self,
        layer: usize,
        x: DeviceSlice<T>,
        y: DeviceSlice<T>,
    ) -> Result<()> {
        let n = self.rows_in::<T>(IoMemory::Device, x.len())?;
        if y.len() != x.len() {
            return Err(bad_arg(format!("y has {} elements, x has {}", y.len(), x.len())));
        }
        check_overlap(&x, &y)?;
        let layer = c_int::try_from(layer).unwrap_or(c_int::MAX);
        // SAFETY: self.raw is live and takes device memory; x and y name n*dim elements of the
        // context's dtype in device memory (DeviceSlice::from_raw's contract, lengths checked
        // above); the library does not keep the pointers beyond the queued work.
        let st = unsafe {
            sys::hc_append(
                self.raw.as_ptr(),
                layer,
                x.as_ptr().cast::<c_void>(),
                n,
                y.as_ptr().cast::<c_void>(),
            )
        };
        self.call(st)
    }

    /// [`Context::append_device`] with one token: `x` and `y` hold `dim` elements.
    pub fn decode_device<T: IoElement>(
        &mut self,
        layer: usize,
        x: DeviceSlice<T>,
        y: DeviceSlice<T>,
    ) -> Result<()> {
        if x.len() != self.dim {
            return Err(bad_arg(format!(
                "decode takes one token: x has {} elements, not {}",
                x.len(),
                self.dim
            )));
        }
        self.append_device(layer, x, y)
    }

    /// [`Context::decode_batch`] with `x` and `y` in device memory (contexts created with
    /// [`IoMemory::Device`]). The batch is ordered on the stream of `ctxs[0]`: `x` must be
    /// ready there, and `y` is ready there when the queued work completes (see the header).
    pub fn decode_batch_device<T: IoElement>(
        ctxs: &mut [&mut Context],
        layer: usize,
        x: DeviceSlice<T>,
        y: DeviceSlice<T>,
    ) -> Result<()> {
        check_overlap(&x, &y)?;
        run_batch::<T>(ctxs, layer, None, device_io(x, y))
    }

    /// [`Context::append_batch`] with `x` and `y` in device memory, ordered as
    /// [`Context::decode_batch_device`].
    pub fn append_batch_device<T: IoElement>(
        ctxs: &mut [&mut Context],
        layer: usize,
        x: DeviceSlice<T>,
        n_tokens: &[usize],
        y: DeviceSlice<T>,
    ) -> Result<()> {
        check_overlap(&x, &y)?;
        run_batch::<T>(ctxs, layer, Some(n_tokens), device_io(x, y))
    }

    /// Move a CUDA context to another stream (`hc_ctx_set_stream`); `None`: back to a stream of
    /// its own. Calls queued before complete before work queued after (ordered by an event,
    /// without blocking the host). A CPU context accepts `None` only ([`Status::UNSUPPORTED`]).
    ///
    /// [`Status::UNSUPPORTED`]: crate::Status::UNSUPPORTED
    pub fn set_stream(&mut self, stream: Option<CudaStream>) -> Result<()> {
        let raw = stream.map_or(std::ptr::null_mut(), CudaStream::as_raw);
        // SAFETY: self.raw is live; raw is NULL or a stream vouched for by CudaStream::from_raw.
        let st = unsafe { sys::hc_ctx_set_stream(self.raw.as_ptr(), raw) };
        self.call(st)
    }
}

fn device_io<T: IoElement>(x: DeviceSlice<T>, y: DeviceSlice<T>) -> BatchIo {
    BatchIo {
        memory: IoMemory::Device,
        x: x.as_ptr().cast_const().cast(),
        x_len: x.len(),
        y: y.as_ptr().cast(),
        y_len: y.len(),
    }
}
