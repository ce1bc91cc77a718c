//! Progress callbacks (`hc_progress_fn`): the C trampoline, the state its `user` pointer reaches,
//! and the context's registration.
//!
//! A panic of the callback must not unwind into the library: the trampoline catches it, keeps its
//! text and answers "stop", so the call returns `HC_ERR_ABORTED` with everything unchanged; the
//! text then goes into the returned error's message.

use std::any::Any;
use std::ops::ControlFlow;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr::NonNull;

use crate::{sys, Context, Result};

/// What the library's `user` pointer points to: the callback and a panic it caught.
pub(crate) struct Progress<F> {
    f: F,
    pub(crate) panicked: Option<String>,
}

impl<F> Progress<F> {
    pub(crate) fn new(f: F) -> Self {
        Progress { f, panicked: None }
    }
}

/// A context's callback: owned by the context, which is `Send`, so the callback is too.
pub(crate) type ContextProgress = Progress<Box<dyn FnMut(u64, u64) -> ControlFlow<()> + Send>>;

/// The `hc_progress_fn` of a `Progress<F>`.
///
/// # Safety
/// `user` must point to a live `Progress<F>` that nothing else references during the call (the
/// library calls it only on the thread of the call it reports on, which holds `&mut` to the
/// context or the model parameters that own it).
pub(crate) unsafe extern "C" fn trampoline<F>(user: *mut c_void, done: u64, total: u64) -> c_int
where
    F: FnMut(u64, u64) -> ControlFlow<()>,
{
    // SAFETY: guaranteed by the caller (see above).
    let p = unsafe { &mut *user.cast::<Progress<F>>() };
    match catch_unwind(AssertUnwindSafe(|| (p.f)(done, total))) {
        Ok(ControlFlow::Continue(())) => 0,
        Ok(ControlFlow::Break(())) => 1,
        Err(payload) => {
            p.panicked = Some(panic_text(payload.as_ref()));
            1
        }
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a non-string panic payload)".to_string()
    }
}

/// Frees a callback that the library no longer references.
pub(crate) fn free(p: Option<NonNull<ContextProgress>>) {
    if let Some(p) = p {
        // SAFETY: p came from Box::into_raw in set_progress and is freed once: callers take it
        // out of the context after the library dropped its copy of the pointer.
        drop(unsafe { Box::from_raw(p.as_ptr()) });
    }
}

impl Context {
    /// Report the progress of this context's long calls to `f(done, total)`, and let it stop
    /// them (`hc_ctx_set_progress`): appends and decodes (tokens of the chunk through the layer,
    /// one report per piece of [`ContextParams::max_chunk`](crate::ContextParams::max_chunk)
    /// tokens), the batch calls, saves and loads (bytes).
    ///
    /// Return [`ControlFlow::Break`] to stop: the call fails with [`Status::ABORTED`] and the
    /// context is as it was (a stopped save keeps the previous file). A panic in `f` is caught
    /// (it never unwinds through the library) and counts as a stop; the error's message holds
    /// the panic's text. `f` runs on the thread of the call. It replaces any earlier callback; a
    /// [fork](Context::fork) starts without one. On CUDA a callback costs a copy of the layer's
    /// window and states per layer call (see the header): [`Context::clear_progress`] when
    /// latency matters.
    ///
    /// ```no_run
    /// # use std::{ops::ControlFlow, sync::Arc};
    /// # use hybridctx::*;
    /// # let model = Arc::new(Model::create_random("tiny", 42)?);
    /// let mut ctx = Context::new(&model, &ContextParams::new())?;
    /// ctx.set_progress(|done, total| {
    ///     eprint!("\r{done}/{total}");
    ///     ControlFlow::Continue(())
    /// })?;
    /// # Ok::<(), hybridctx::Error>(())
    /// ```
    ///
    /// [`Status::ABORTED`]: crate::Status::ABORTED
    pub fn set_progress<F>(&mut self, f: F) -> Result<()>
    where
        F: FnMut(u64, u64) -> ControlFlow<()> + Send + 'static,
    {
        let boxed: Box<ContextProgress> = Box::new(Progress::new(Box::new(f)));
        // a raw pointer from the start: the library keeps it while the Box's owner moves around
        let raw = NonNull::from(Box::leak(boxed));
        type Dyn = Box<dyn FnMut(u64, u64) -> ControlFlow<()> + Send>;
        // SAFETY: self.raw is live; raw points to a Progress<Dyn> that stays alive until the
        // registration is replaced or the context freed (Drop frees it after hc_ctx_free), and
        // it is only reached through the library's calls on this context (see trampoline).
        let st = unsafe {
            sys::hc_ctx_set_progress(
                self.raw.as_ptr(),
                Some(trampoline::<Dyn>),
                raw.as_ptr().cast::<c_void>(),
            )
        };
        if st != sys::HC_OK {
            free(Some(raw));
            return self.call(st);
        }
        free(self.progress.replace(raw));
        Ok(())
    }

    /// Remove the progress callback (calls run without reports again).
    pub fn clear_progress(&mut self) -> Result<()> {
        // SAFETY: self.raw is live; a NULL callback clears the registration.
        let st = unsafe { sys::hc_ctx_set_progress(self.raw.as_ptr(), None, std::ptr::null_mut()) };
        self.call(st)?;
        free(self.progress.take());
        Ok(())
    }

    /// Whether a progress callback is registered.
    pub fn has_progress(&self) -> bool {
        self.progress.is_some()
    }

    /// The text of a panic the callback had during the last call, taken.
    pub(crate) fn take_progress_panic(&mut self) -> Option<String> {
        let p = self.progress?;
        // SAFETY: p is the live callback owned by self; no library call is running (we hold
        // &mut self), so nothing else references it.
        unsafe { (*p.as_ptr()).panicked.take() }
    }
}
