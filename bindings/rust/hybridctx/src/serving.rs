//! Serving: batched calls over several contexts, forks, bounded rollback, memory reports.

use std::os::raw::{c_int, c_void};
use std::ptr;

use crate::{bad_arg, sys, Context, ContextParams, Error, IoElement, IoMemory, Result, Status};

/// What a context holds, in bytes of its backend's memory (`hc_ctx_memory_info`); see
/// [`Context::memory_info`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemoryInfo {
    /// Cache that this context alone holds: window ring, compressor states, and the entry pages
    /// no other context shares.
    pub own_bytes: u64,
    /// Entry pages shared with forks (copy-on-write); every holder counts them.
    /// `own_bytes + shared_bytes` is [`Context::memory_bytes`].
    pub shared_bytes: u64,
    /// The rollback history ([`ContextParams::max_rollback`]), fixed.
    pub history_bytes: u64,
    /// Activations of one piece of `max_chunk` tokens, plus backend scratch.
    pub workspace_bytes: u64,
}

/// The x and y of a batch: raw pointers and element counts, checked by [`run_batch`].
pub(crate) struct BatchIo {
    pub(crate) memory: IoMemory,
    pub(crate) x: *const c_void,
    pub(crate) x_len: usize,
    pub(crate) y: *mut c_void,
    pub(crate) y_len: usize,
}

impl BatchIo {
    /// The host slices of a batch call.
    fn host<T>(x: &[T], y: &mut [T]) -> Self {
        BatchIo {
            memory: IoMemory::Host,
            x: x.as_ptr().cast(),
            x_len: x.len(),
            y: y.as_mut_ptr().cast(),
            y_len: y.len(),
        }
    }
}

/// `hc_decode_batch` (counts `None`) or `hc_append_batch`, after checking that the contexts
/// take `T` in `io.memory` and that x and y hold exactly their rows.
pub(crate) fn run_batch<T: IoElement>(
    ctxs: &mut [&mut Context],
    layer: usize,
    counts: Option<&[usize]>,
    io: BatchIo,
) -> Result<()> {
    let Some(first) = ctxs.first() else {
        return Err(bad_arg("a batch needs at least one context"));
    };
    let n_ctx = i32::try_from(ctxs.len()).map_err(|_| bad_arg("too many contexts for one batch"))?;
    let dim = first.dim;
    for (i, c) in ctxs.iter().enumerate() {
        // each context must take T in this memory; the library checks that they agree too
        c.rows_in::<T>(io.memory, c.dim)
            .map_err(|e| Error::new(e.status(), format!("batch context {i}: {}", e.message())))?;
        if c.dim != dim {
            return Err(Error::new(
                Status::MODEL_MISMATCH,
                format!(
                    "batch context {i} belongs to a model of width {}, context 0 to one of {dim}",
                    c.dim
                ),
            ));
        }
    }
    let mut n_tokens: Vec<i64> = Vec::new();
    let total = match counts {
        None => ctxs.len(),
        Some(counts) => {
            if counts.len() != ctxs.len() {
                return Err(bad_arg(format!(
                    "{} token counts for {} contexts",
                    counts.len(),
                    ctxs.len()
                )));
            }
            let mut total = 0usize;
            for (i, &n) in counts.iter().enumerate() {
                if n == 0 {
                    return Err(Error::new(
                        Status::N_TOKENS,
                        format!("batch context {i}: a count of 0 tokens"),
                    ));
                }
                total = total
                    .checked_add(n)
                    .ok_or_else(|| bad_arg("the token counts overflow"))?;
                n_tokens.push(i64::try_from(n).map_err(|_| bad_arg("a token count is out of range"))?);
            }
            total
        }
    };
    let want = total
        .checked_mul(dim)
        .ok_or_else(|| bad_arg("the batch's rows overflow"))?;
    if io.x_len != want || io.y_len != want {
        return Err(bad_arg(format!(
            "x has {} and y {} elements; the batch's {total} tokens need {want} (tokens x width {dim})",
            io.x_len, io.y_len
        )));
    }
    let layer = c_int::try_from(layer).unwrap_or(c_int::MAX);
    let raws: Vec<*mut sys::hc_ctx> = ctxs.iter().map(|c| c.raw.as_ptr()).collect();
    // SAFETY: raws are live contexts, distinct because each comes from a &mut Context of one
    // slice; x and y hold exactly the rows the library reads and writes (checked above, host
    // slices by their borrows, device memory by DeviceSlice::from_raw's contract); n_tokens
    // holds n_ctx counts; the library keeps no pointer after the call.
    let st = unsafe {
        match counts {
            None => sys::hc_decode_batch(raws.as_ptr(), n_ctx, layer, io.x, io.y),
            Some(_) => sys::hc_append_batch(raws.as_ptr(), n_ctx, layer, io.x, n_tokens.as_ptr(), io.y),
        }
    };
    if st == sys::HC_OK {
        return Ok(());
    }
    // every context holds the detail (naming the context at fault); panics are per context
    let mut msg = ctxs[0].last_error();
    for (i, c) in ctxs.iter_mut().enumerate() {
        if let Some(p) = c.take_progress_panic() {
            msg.push_str(&format!("; the progress callback of context {i} panicked: {p}"));
        }
    }
    Err(Error::new(Status(st), msg))
}

impl Context {
    /// One decode step of several contexts in one call (`hc_decode_batch`): row `i` of `x` (one
    /// token, `dim` elements) is the input of `ctxs[i]` and row `i` of `y` receives its output.
    /// Bitwise the results of [`Context::decode`] on each context in turn.
    ///
    /// Every context must have `layer` next (with a one-token chunk in progress for
    /// `layer > 0`), and all must belong to one model and share backend, device, I/O type,
    /// cache format and [`Context::numerics`]. All or nothing: on an error no context has changed (but a device fault,
    /// which poisons them all), and the error carries the detail, naming the context at fault
    /// by its index. Take the contexts as `&mut` references, so that none can be named twice:
    ///
    /// ```compile_fail
    /// # use std::sync::Arc;
    /// # use hybridctx::*;
    /// # let model = Arc::new(Model::create_random("tiny", 42)?);
    /// let mut c = Context::new(&model, &ContextParams::new())?;
    /// let (x, mut y) = (vec![0f32; 2 * 512], vec![0f32; 2 * 512]);
    /// Context::decode_batch(&mut [&mut c, &mut c], 0, &x, &mut y)?; // c twice: does not compile
    /// # Ok::<(), hybridctx::Error>(())
    /// ```
    ///
    /// Contexts kept in a `Vec<Context>`: `Context::decode_batch(&mut v.iter_mut().collect::<Vec<_>>(), ...)`.
    pub fn decode_batch<T: IoElement>(
        ctxs: &mut [&mut Context],
        layer: usize,
        x: &[T],
        y: &mut [T],
    ) -> Result<()> {
        run_batch::<T>(ctxs, layer, None, BatchIo::host(x, y))
    }

    /// A ragged batch of appends (`hc_append_batch`): `ctxs[i]` takes `n_tokens[i]` tokens;
    /// `x` and `y` hold the contexts' rows one after another (`n_tokens[0]` rows of `ctxs[0]`,
    /// then those of `ctxs[1]`, ...). For `layer > 0` each count must equal that context's chunk
    /// in progress. Otherwise as [`Context::decode_batch`].
    pub fn append_batch<T: IoElement>(
        ctxs: &mut [&mut Context],
        layer: usize,
        x: &[T],
        n_tokens: &[usize],
        y: &mut [T],
    ) -> Result<()> {
        run_batch::<T>(ctxs, layer, Some(n_tokens), BatchIo::host(x, y))
    }

    /// A new context with this one's sequence, metadata and rollback history (`hc_ctx_fork`).
    /// The two share the cache pages of the common prefix copy-on-write and are independent
    /// afterwards; each continues bitwise like a context that computed the whole sequence.
    ///
    /// `params`: `None` for this context's own parameters; otherwise read as for
    /// [`Context::new`], where the backend, device and cache format must be the defaults or
    /// this context's (a fork holds its source's pages), and `max_tokens` at least the current
    /// length; the fork computes with the params' [`ContextParams::numerics`] (`None`, or
    /// `Numerics::Default`: this context's). The fork has no progress callback. Refused with [`Status::ORDER`] while a chunk
    /// is in progress; on failure this context is unchanged and the error has the detail.
    pub fn fork(&mut self, params: Option<&ContextParams>) -> Result<Context> {
        let raw_params = params.map(ContextParams::to_raw).transpose()?;
        let p = raw_params
            .as_ref()
            .map_or(ptr::null(), |p| p as *const sys::hc_ctx_params);
        let mut out = ptr::null_mut();
        // SAFETY: self.raw is live, p NULL or a valid params struct (errbuf NULL: the detail
        // goes to this context's last error), out a valid out pointer.
        let st = unsafe { sys::hc_ctx_fork(self.raw.as_ptr(), p, &mut out) };
        self.call(st)?;
        let (io_dtype, io_memory) = match params {
            Some(p) => (p.io_dtype, p.io_memory),
            None => (self.io_dtype, self.io_memory),
        };
        Context::wrap(out, &self.model, io_dtype, io_memory)
    }

    /// Shorten the sequence to `n_tokens` (`hc_ctx_truncate`): appending afterwards gives
    /// bitwise what appending without the discarded tokens would have given. `n_tokens` must
    /// lie between [`Context::truncate_limit`] and [`Context::n_tokens`]: further back is
    /// [`Status::LIMIT`] (always, with `max_rollback` 0), longer [`Status::INVALID_ARG`], and a
    /// chunk in progress [`Status::ORDER`]; the context is then unchanged. The metadata blob
    /// is kept as it is.
    pub fn truncate(&mut self, n_tokens: u64) -> Result<()> {
        // a length past i64 is longer than any context: the library refuses it as such
        let n = i64::try_from(n_tokens).unwrap_or(i64::MAX);
        // SAFETY: self.raw is live.
        let st = unsafe { sys::hc_ctx_truncate(self.raw.as_ptr(), n) };
        self.call(st)
    }

    /// The shortest length [`Context::truncate`] accepts now: the current length minus
    /// `max_rollback`, or later where the history starts (creation, reset, load, or a
    /// truncation); the current length itself with `max_rollback` 0.
    pub fn truncate_limit(&self) -> u64 {
        // SAFETY: self.raw is live.
        unsafe { sys::hc_ctx_truncate_limit(self.raw.as_ptr()) as u64 }
    }

    /// The memory the context holds, own and shared with forks (`hc_ctx_memory_info_get`).
    pub fn memory_info(&self) -> MemoryInfo {
        let mut i = std::mem::MaybeUninit::<sys::hc_ctx_memory_info>::zeroed();
        // SAFETY: struct_size is the first member; the struct is zeroed, so writing it is fine.
        unsafe { (*i.as_mut_ptr()).struct_size = std::mem::size_of::<sys::hc_ctx_memory_info>() as u32 };
        // SAFETY: self.raw is live and i points to a struct of the size it announces.
        let st = unsafe { sys::hc_ctx_memory_info_get(self.raw.as_ptr(), i.as_mut_ptr()) };
        debug_assert_eq!(st, sys::HC_OK);
        // SAFETY: zero-initialised and filled by the library; plain data.
        let i = unsafe { i.assume_init() };
        MemoryInfo {
            own_bytes: i.own_bytes,
            shared_bytes: i.shared_bytes,
            history_bytes: i.history_bytes,
            workspace_bytes: i.workspace_bytes,
        }
    }
}
