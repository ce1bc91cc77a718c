//! Tests of the serving calls (batches, forks, rollback, progress, memory, device I/O,
//! streams and numerics) against the real library, on the CPU backend. Every comparison is bitwise.
use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use hybridctx::{
    backend_info, Backend, BackendState, CacheFormat, Context, ContextParams, CudaStream, DeviceSlice,
    IoDtype, IoMemory, Model, ModelParams, Numerics, Status,
};

fn tiny() -> Arc<Model> {
    Arc::new(Model::create_random("tiny", 42).expect("tiny model"))
}

fn cpu() -> ContextParams {
    ContextParams::new().backend(Backend::Cpu)
}

fn new_ctx(m: &Arc<Model>, p: &ContextParams) -> Context {
    Context::new(m, p).expect("context")
}

/// Input of token `t` at `layer` in the sequence `seq`: exact in f32, different per sequence.
fn input(seq: usize, layer: usize, t: usize, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| {
            let k = (((seq as u64) * 7919 + layer as u64) * 1_000_003 + t as u64) * dim as u64 + i as u64;
            let h = (k.wrapping_mul(2_654_435_761).wrapping_add(12_345)) & 0xffff_ffff;
            (h >> 8) as f32 / 8_388_608.0 - 1.0
        })
        .collect()
}

/// Rows of tokens `from..from + n` of `seq` at `layer`.
fn rows(seq: usize, layer: usize, from: usize, n: usize, dim: usize) -> Vec<f32> {
    (from..from + n).flat_map(|t| input(seq, layer, t, dim)).collect()
}

/// One chunk of `n` tokens of `seq` (positions from the context's length) through every
/// layer; every layer's output, concatenated.
fn chunk(c: &mut Context, seq: usize, n: usize) -> Vec<f32> {
    let (layers, dim) = (c.model().n_layers(), c.model().dim());
    let from = c.n_tokens() as usize;
    let mut out = Vec::new();
    for l in 0..layers {
        let x = rows(seq, l, from, n, dim);
        let mut y = vec![0f32; x.len()];
        c.append(l, &x, &mut y).unwrap();
        out.extend_from_slice(&y);
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    assert!(bits(a) == bits(b), "{what}: not bitwise equal");
}

/// Contexts with the given prefix lengths (sequence i + 1 each), and twins built the same way.
fn contexts(m: &Arc<Model>, lens: &[usize]) -> (Vec<Context>, Vec<Context>) {
    let make = || {
        lens.iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut c = new_ctx(m, &cpu());
                if n > 0 {
                    chunk(&mut c, i + 1, n);
                }
                c
            })
            .collect::<Vec<_>>()
    };
    (make(), make())
}

/// One batched chunk (`counts[i]` tokens of sequence i + 1 for context i) through every layer,
/// checked bitwise against the same chunks run separately on the twins.
fn batch_step_matches(batch: &mut [Context], twins: &mut [Context], counts: &[usize], decode: bool) {
    let m = Arc::clone(batch[0].model());
    let (layers, dim) = (m.n_layers(), m.dim());
    let from: Vec<usize> = batch.iter().map(|c| c.n_tokens() as usize).collect();
    for l in 0..layers {
        let x: Vec<f32> = (0..batch.len())
            .flat_map(|i| rows(i + 1, l, from[i], counts[i], dim))
            .collect();
        let mut y = vec![0f32; x.len()];
        let mut refs: Vec<&mut Context> = batch.iter_mut().collect();
        if decode {
            Context::decode_batch(&mut refs, l, &x, &mut y).unwrap();
        } else {
            Context::append_batch(&mut refs, l, &x, counts, &mut y).unwrap();
        }
        let mut off = 0;
        for (i, t) in twins.iter_mut().enumerate() {
            let n = counts[i] * dim;
            let mut yt = vec![0f32; n];
            if decode {
                t.decode(l, &x[off..off + n], &mut yt).unwrap();
            } else {
                t.append(l, &x[off..off + n], &mut yt).unwrap();
            }
            assert_same(&y[off..off + n], &yt, &format!("layer {l}, context {i}"));
            off += n;
        }
    }
    for (i, (b, t)) in batch.iter().zip(twins.iter()).enumerate() {
        assert_eq!(b.n_tokens(), t.n_tokens(), "context {i}");
        assert_eq!(b.n_tokens() as usize, from[i] + counts[i]);
    }
}

#[test]
fn decode_batch_is_bitwise_separate_decodes() {
    let m = tiny();
    let (mut batch, mut twins) = contexts(&m, &[5, 40, 130]);
    for _ in 0..3 {
        batch_step_matches(&mut batch, &mut twins, &[1, 1, 1], true);
    }
}

#[test]
fn append_batch_ragged_is_bitwise_separate_appends() {
    let m = tiny();
    let (mut batch, mut twins) = contexts(&m, &[0, 17, 129]);
    batch_step_matches(&mut batch, &mut twins, &[3, 1, 17], false);
    batch_step_matches(&mut batch, &mut twins, &[2, 64, 1], false);
    // a batch of one is a plain append
    batch_step_matches(&mut batch[1..2], &mut twins[1..2], &[5], false);
}

/// The state of each context (length, next layer) and the outputs of one more decode step of
/// every context, compared with the twins: what "unchanged" means after a refusal.
fn assert_unchanged(batch: &mut [Context], twins: &mut [Context]) {
    for (i, (b, t)) in batch.iter().zip(twins.iter()).enumerate() {
        assert_eq!(
            (b.n_tokens(), b.next_layer()),
            (t.n_tokens(), t.next_layer()),
            "context {i}"
        );
    }
    let n = batch.len();
    batch_step_matches(batch, twins, &vec![1; n], true);
}

#[test]
fn batch_refusals_change_nothing() {
    let m = tiny();
    let dim = m.dim();
    let (mut batch, mut twins) = contexts(&m, &[3, 9]);
    let x: Vec<f32> = (0..2).flat_map(|i| input(i + 1, 0, 99, dim)).collect();
    let mut y = vec![0f32; x.len()];

    // a NaN in the second row: the library's status, and the detail naming context 1
    let mut nan = x.clone();
    nan[dim + 5] = f32::NAN;
    {
        let mut refs: Vec<&mut Context> = batch.iter_mut().collect();
        let e = Context::decode_batch(&mut refs, 0, &nan, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::NONFINITE, "{e}");
        assert!(e.message().contains("context 1"), "{e}");
        // every context of the batch holds the detail: a batch of one shows context 0's own
        let e = Context::append_batch(&mut refs, 0, &nan, &[1, 1], &mut y).unwrap_err();
        assert_eq!(e.status(), Status::NONFINITE);
        // not the layer the contexts are at
        let e = Context::decode_batch(&mut refs, 1, &x, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::ORDER, "{e}");
        // lengths the binding sees
        let e = Context::decode_batch(&mut refs, 0, &x[..dim], &mut y[..dim]).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
        let e = Context::append_batch(&mut refs, 0, &x, &[1], &mut y).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
        let e = Context::append_batch(&mut refs, 0, &x, &[2, 0], &mut y).unwrap_err();
        assert_eq!(e.status(), Status::N_TOKENS, "{e}");
        let e = Context::append_batch(&mut refs, 0, &x, &[2, 1], &mut y).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
        // the element type the contexts do not take
        let (xb, mut yb) = (vec![0u16; 2 * dim], vec![0u16; 2 * dim]);
        let e = Context::decode_batch(&mut refs, 0, &xb, &mut yb).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
    }
    // an empty batch
    let e = Context::decode_batch::<f32>(&mut [], 0, &[], &mut []).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);

    // a context of another model (same width)
    let other = Arc::new(Model::create_random("tiny", 43).unwrap());
    let mut o = new_ctx(&other, &cpu());
    {
        let (a, _) = batch.split_at_mut(1);
        let e = Context::decode_batch(&mut [&mut a[0], &mut o], 0, &x, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::MODEL_MISMATCH, "{e}");
        assert!(e.message().contains("context 1"), "{e}");
    }
    // another cache format, another I/O type
    let mut bf = new_ctx(&m, &cpu().cache_format(CacheFormat::Bf16));
    let mut b16 = new_ctx(&m, &cpu().io_dtype(IoDtype::Bf16));
    {
        let (a, _) = batch.split_at_mut(1);
        let e = Context::decode_batch(&mut [&mut a[0], &mut bf], 0, &x, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
        let e = Context::decode_batch(&mut [&mut a[0], &mut b16], 0, &x, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
    }
    assert_eq!((o.n_tokens(), bf.n_tokens(), b16.n_tokens()), (0, 0, 0));

    // a context with a chunk of 2 tokens in progress cannot join a decode batch at layer 1
    let mut t2 = twins.remove(1);
    let mut b2 = batch.remove(1);
    for c in [&mut t2, &mut b2] {
        c.append(0, &rows(2, 0, 9, 2, dim), &mut vec![0f32; 2 * dim])
            .unwrap();
    }
    {
        let mut a0 = batch.remove(0);
        let mut t0 = twins.remove(0);
        for c in [&mut a0, &mut t0] {
            c.decode(0, &input(1, 0, 3, dim), &mut vec![0f32; dim]).unwrap();
        }
        let e = Context::decode_batch(&mut [&mut a0, &mut b2], 1, &x, &mut y).unwrap_err();
        assert_eq!(e.status(), Status::ORDER, "{e}");
        // finish the chunks in both, identically
        for l in 1..m.n_layers() {
            for c in [&mut a0, &mut t0] {
                c.decode(l, &input(1, l, 3, dim), &mut vec![0f32; dim]).unwrap();
            }
            for c in [&mut b2, &mut t2] {
                c.append(l, &rows(2, l, 9, 2, dim), &mut vec![0f32; 2 * dim])
                    .unwrap();
            }
        }
        batch = vec![a0, b2];
        twins = vec![t0, t2];
    }
    assert_unchanged(&mut batch, &mut twins);
}

#[test]
fn fork_continues_like_the_source() {
    let m = tiny();
    let dim = m.dim();
    let mut src = new_ctx(&m, &cpu());
    let mut reference = new_ctx(&m, &cpu());
    chunk(&mut src, 1, 150);
    chunk(&mut reference, 1, 150);
    src.set_metadata(b"prompt").unwrap();

    let mut f = src.fork(None).unwrap();
    assert_eq!(f.n_tokens(), 150);
    assert_eq!(f.metadata(), b"prompt");
    assert!(!f.has_progress());
    let (fi, si) = (f.memory_info(), src.memory_info());
    assert!(fi.shared_bytes > 0 && si.shared_bytes > 0, "{fi:?} {si:?}");
    assert_eq!(fi.own_bytes + fi.shared_bytes, f.memory_bytes());
    assert_eq!(si.own_bytes + si.shared_bytes, src.memory_bytes());

    // both continue bitwise like the reference, which computed the whole sequence itself
    let r = chunk(&mut reference, 1, 3);
    assert_same(&chunk(&mut f, 1, 3), &r, "fork");
    assert_same(&chunk(&mut src, 1, 3), &r, "source");

    // then they diverge: each still matches a context that saw only its own sequence
    let mut ref_f = new_ctx(&m, &cpu());
    chunk(&mut ref_f, 1, 153);
    assert_same(
        &chunk(&mut f, 5, 2),
        &chunk(&mut ref_f, 5, 2),
        "fork after divergence",
    );
    assert_same(
        &chunk(&mut src, 1, 2),
        &chunk(&mut reference, 1, 2),
        "source after divergence",
    );

    // the source may go first; a fork of the fork still works
    drop(src);
    let mut ff = f.fork(None).unwrap();
    assert_same(&chunk(&mut ff, 5, 1), &chunk(&mut ref_f, 5, 1), "fork of a fork");

    // with parameters: another I/O type and a rollback history of its own
    let mut g = f
        .fork(Some(&cpu().io_dtype(IoDtype::Bf16).max_rollback(8)))
        .unwrap();
    assert_eq!((g.io_dtype(), g.n_tokens()), (IoDtype::Bf16, f.n_tokens()));
    let e = g
        .decode(0, &input(1, 0, 0, dim), &mut vec![0f32; dim])
        .unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);
    let xb: Vec<u16> = input(1, 0, 0, dim)
        .iter()
        .map(|v| (v.to_bits() >> 16) as u16)
        .collect();
    g.decode(0, &xb, &mut vec![0u16; dim]).unwrap();
    assert!(g.memory_info().history_bytes > 0);
}

#[test]
fn fork_refusals() {
    let m = tiny();
    let dim = m.dim();
    let mut src = new_ctx(&m, &cpu());
    chunk(&mut src, 1, 20);
    // another backend than the source's
    let e = src.fork(Some(&cpu().backend(Backend::Cuda))).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);
    assert!(e.message().contains("fork"), "{e}");
    // a max_tokens below the length
    let e = src.fork(Some(&cpu().max_tokens(10))).unwrap_err();
    assert_eq!(e.status(), Status::POSITION, "{e}");
    // a chunk in progress
    src.decode(0, &input(1, 0, 20, dim), &mut vec![0f32; dim])
        .unwrap();
    let e = src.fork(None).unwrap_err();
    assert_eq!(e.status(), Status::ORDER, "{e}");
    assert_eq!((src.n_tokens(), src.next_layer()), (20, 1));
}

#[test]
fn truncate_then_append_equals_never_seen() {
    let m = tiny();
    let mut c = new_ctx(&m, &cpu().max_rollback(16));
    let mut reference = new_ctx(&m, &cpu());
    chunk(&mut c, 1, 100);
    chunk(&mut reference, 1, 100);
    assert_eq!(c.truncate_limit(), 84);
    chunk(&mut c, 9, 10); // tokens that will be taken back
    assert_eq!((c.n_tokens(), c.truncate_limit()), (110, 94));
    c.truncate(100).unwrap();
    assert_eq!(c.n_tokens(), 100);
    assert_same(
        &chunk(&mut c, 1, 5),
        &chunk(&mut reference, 1, 5),
        "after truncate",
    );
    c.truncate(c.n_tokens()).unwrap(); // the current length: a no-op
    assert_same(
        &chunk(&mut c, 1, 1),
        &chunk(&mut reference, 1, 1),
        "after a no-op truncate",
    );
    assert!(c.memory_info().history_bytes > 0);
    assert_eq!(reference.memory_info().history_bytes, 0);
}

#[test]
fn truncate_refusals_change_nothing() {
    let m = tiny();
    let dim = m.dim();
    let mut c = new_ctx(&m, &cpu().max_rollback(4));
    let mut twin = new_ctx(&m, &cpu().max_rollback(4));
    let mut none = new_ctx(&m, &cpu());
    for x in [&mut c, &mut twin, &mut none] {
        chunk(x, 1, 30);
    }
    let lim = c.truncate_limit();
    assert_eq!(lim, 26);
    let e = c.truncate(lim - 1).unwrap_err();
    assert_eq!(e.status(), Status::LIMIT, "{e}");
    let e = c.truncate(31).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
    let e = c.truncate(u64::MAX).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
    let e = none.truncate(29).unwrap_err();
    assert_eq!(e.status(), Status::LIMIT, "{e}");
    assert!(e.message().contains("max_rollback"), "{e}");
    assert_eq!(none.truncate_limit(), 30);
    // mid-chunk
    for x in [&mut c, &mut twin] {
        x.decode(0, &input(1, 0, 30, dim), &mut vec![0f32; dim]).unwrap();
    }
    let e = c.truncate(28).unwrap_err();
    assert_eq!(e.status(), Status::ORDER, "{e}");
    // unchanged: the same state, and the rest of the chunk gives what the twin gives
    assert_eq!((c.n_tokens(), c.next_layer(), c.truncate_limit()), (30, 1, 26));
    for l in 1..m.n_layers() {
        let x = input(1, l, 30, dim);
        let (mut a, mut b) = (vec![0f32; dim], vec![0f32; dim]);
        c.decode(l, &x, &mut a).unwrap();
        twin.decode(l, &x, &mut b).unwrap();
        assert_same(&a, &b, "after the refusals");
    }
    assert_same(&chunk(&mut c, 1, 2), &chunk(&mut twin, 1, 2), "the next chunk");
    assert_eq!((none.n_tokens(), none.next_layer()), (30, 0));
}

type Reports = Arc<Mutex<Vec<(u64, u64)>>>;

fn recorder(stop_at: Option<u64>) -> (Reports, impl FnMut(u64, u64) -> ControlFlow<()> + Send + 'static) {
    let reports: Reports = Arc::default();
    let r = Arc::clone(&reports);
    let f = move |done, total| {
        r.lock().unwrap().push((done, total));
        match stop_at {
            Some(s) if done >= s => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    };
    (reports, f)
}

#[test]
fn progress_reports_the_pieces_of_a_chunk() {
    let m = tiny();
    let dim = m.dim();
    let mut c = new_ctx(&m, &cpu().max_chunk(16));
    let (reports, f) = recorder(None);
    c.set_progress(f).unwrap();
    assert!(c.has_progress());
    let x = rows(1, 0, 0, 64, dim);
    c.append(0, &x, &mut vec![0f32; x.len()]).unwrap();
    assert_eq!(
        *reports.lock().unwrap(),
        vec![(16, 64), (32, 64), (48, 64), (64, 64)]
    );
    // saves report bytes, ending at the total
    for l in 1..m.n_layers() {
        c.append(l, &rows(1, l, 0, 64, dim), &mut vec![0f32; x.len()])
            .unwrap();
    }
    reports.lock().unwrap().clear();
    let session = c.save_to_vec(&Default::default()).unwrap();
    let r = reports.lock().unwrap().clone();
    assert!(!r.is_empty());
    assert!(
        r.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 == w[1].1),
        "{r:?}"
    );
    assert_eq!(r.last().unwrap().0, r.last().unwrap().1);
    // cleared: no more reports
    c.clear_progress().unwrap();
    assert!(!c.has_progress());
    reports.lock().unwrap().clear();
    c.load_from_slice(&session).unwrap();
    assert!(reports.lock().unwrap().is_empty());
}

/// A chunk of 64 tokens through every layer with `c` stopped by its callback at layer `stop`;
/// checks the refusal, then finishes without callback and compares with a twin.
fn stop_leaves_the_context_unchanged(stop_at: u64, panic: bool) {
    let m = tiny();
    let dim = m.dim();
    let p = cpu().max_chunk(16);
    let (mut c, mut twin) = (new_ctx(&m, &p), new_ctx(&m, &p));
    chunk(&mut c, 1, 10);
    chunk(&mut twin, 1, 10);
    let x0 = rows(1, 0, 10, 64, dim);
    c.append(0, &x0, &mut vec![0f32; x0.len()]).unwrap();
    twin.append(0, &x0, &mut vec![0f32; x0.len()]).unwrap();
    if panic {
        c.set_progress(move |done, _| {
            if done >= stop_at {
                panic!("test panic at {done}");
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    } else {
        c.set_progress(recorder(Some(stop_at)).1).unwrap();
    }
    let x1 = rows(1, 1, 10, 64, dim);
    let e = c.append(1, &x1, &mut vec![0f32; x1.len()]).unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    if panic {
        assert!(e.message().contains("panicked: test panic at"), "{e}");
    }
    assert_eq!((c.n_tokens(), c.next_layer()), (10, 1));
    c.clear_progress().unwrap();
    let mut out = [Vec::new(), Vec::new()];
    for (i, ctx) in [&mut c, &mut twin].into_iter().enumerate() {
        for l in 1..m.n_layers() {
            let x = rows(1, l, 10, 64, dim);
            let mut y = vec![0f32; x.len()];
            ctx.append(l, &x, &mut y).unwrap();
            out[i].extend_from_slice(&y);
        }
    }
    assert_same(&out[0], &out[1], "after the stop");
    assert_same(&chunk(&mut c, 1, 1), &chunk(&mut twin, 1, 1), "the next token");
}

#[test]
fn progress_stop_is_aborted_and_changes_nothing() {
    stop_leaves_the_context_unchanged(32, false);
}

#[test]
fn progress_stop_at_the_last_report_changes_nothing() {
    stop_leaves_the_context_unchanged(64, false);
}

#[test]
fn progress_panic_is_a_stop() {
    stop_leaves_the_context_unchanged(16, true);
}

#[test]
fn progress_stop_of_a_save_keeps_the_file() {
    let m = tiny();
    let dir = std::env::temp_dir().join(format!("hybridctx-rs-serving-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.hcs");
    let mut c = new_ctx(&m, &cpu());
    chunk(&mut c, 1, 8);
    c.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    chunk(&mut c, 1, 8);
    c.set_progress(|_, _| ControlFlow::Break(())).unwrap();
    let e = c.save(&path).unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let e = c.load(&path).unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    assert_eq!(c.n_tokens(), 16);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "no temporary file is left"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn progress_stop_of_one_context_stops_the_batch() {
    let m = tiny();
    let (mut batch, mut twins) = contexts(&m, &[4, 6]);
    let (reports, f) = recorder(Some(1));
    batch[1].set_progress(f).unwrap();
    let dim = m.dim();
    let x: Vec<f32> = (0..2).flat_map(|i| input(i + 1, 0, 50, dim)).collect();
    let mut y = vec![0f32; x.len()];
    let mut refs: Vec<&mut Context> = batch.iter_mut().collect();
    let e = Context::decode_batch(&mut refs, 0, &x, &mut y).unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    assert_eq!(reports.lock().unwrap().len(), 1);
    batch[1].clear_progress().unwrap();
    assert_unchanged(&mut batch, &mut twins);
}

#[test]
fn model_progress() {
    let mut seen = Vec::new();
    let m = Model::create_random_with_progress("tiny", 42, &ModelParams::new(), |done, total| {
        seen.push((done, total));
        ControlFlow::Continue(())
    })
    .unwrap();
    let n = m.n_layers() as u64;
    assert_eq!(seen.last(), Some(&(n, n)), "{seen:?}");
    let e =
        Model::create_random_with_progress("tiny", 42, &ModelParams::new(), |_, _| ControlFlow::Break(()))
            .unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    let e = Model::create_random_with_progress("tiny", 42, &ModelParams::new(), |_, _| panic!("model panic"))
        .unwrap_err();
    assert_eq!(e.status(), Status::ABORTED, "{e}");
    assert!(e.message().contains("panicked: model panic"), "{e}");
    // the same weights as without a callback
    let (a, b) = (Arc::new(m), tiny());
    let (mut ca, mut cb) = (new_ctx(&a, &cpu()), new_ctx(&b, &cpu()));
    assert_same(&chunk(&mut ca, 1, 3), &chunk(&mut cb, 1, 3), "weights");
}

#[test]
fn memory_info_is_sane() {
    let m = tiny();
    let mut c = new_ctx(&m, &cpu());
    let i = c.memory_info();
    assert_eq!(i.own_bytes + i.shared_bytes, c.memory_bytes());
    assert_eq!((i.shared_bytes, i.history_bytes), (0, 0));
    assert!(i.workspace_bytes > 0, "{i:?}");
    chunk(&mut c, 1, 200);
    let j = c.memory_info();
    assert!(j.own_bytes > i.own_bytes, "{i:?} {j:?}");
    assert_eq!(j.own_bytes + j.shared_bytes, c.memory_bytes());
    let r = new_ctx(&m, &cpu().max_rollback(16)).memory_info();
    let r2 = new_ctx(&m, &cpu().max_rollback(64)).memory_info();
    assert!(
        0 < r.history_bytes && r.history_bytes < r2.history_bytes,
        "{r:?} {r2:?}"
    );
    // out of range: the library's refusal, with the detail
    let e = Context::new(&m, &cpu().max_rollback(65537)).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);
    assert!(!e.message().is_empty());
}

/// A device address that is never dereferenced: the calls below refuse it first.
fn fake_device<T: hybridctx::IoElement>(len: usize) -> DeviceSlice<T> {
    // SAFETY: not device memory: only given to host-I/O contexts, which refuse it before the
    // library could use it.
    unsafe { DeviceSlice::from_raw(NonNull::<T>::dangling().as_ptr(), len) }
}

#[test]
fn device_io_on_a_cpu_context_is_refused() {
    let m = tiny();
    let dim = m.dim();
    // a CPU context cannot be made for device I/O: the library says why
    let e = Context::new(&m, &cpu().io_memory(IoMemory::Device)).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
    assert!(e.message().contains("device-memory"), "{e}");

    // a host context refuses device memory cleanly, and stays unchanged
    let (mut c, mut twin) = (new_ctx(&m, &cpu()), new_ctx(&m, &cpu()));
    chunk(&mut c, 1, 5);
    chunk(&mut twin, 1, 5);
    assert_eq!(c.io_memory(), IoMemory::Host);
    let (x, y) = (fake_device::<f32>(dim), fake_device::<f32>(dim));
    for e in [
        c.decode_device(0, x, y).unwrap_err(),
        c.append_device(0, x, x).unwrap_err(),
        Context::decode_batch_device(&mut [&mut c], 0, x, y).unwrap_err(),
        Context::append_batch_device(&mut [&mut c], 0, x, &[1], y).unwrap_err(),
    ] {
        assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
        assert!(e.message().contains("host slices"), "{e}");
    }
    assert_eq!((c.n_tokens(), c.next_layer()), (5, 0));
    assert_same(
        &chunk(&mut c, 1, 2),
        &chunk(&mut twin, 1, 2),
        "after the refusals",
    );
}

#[test]
fn device_slices() {
    let s = fake_device::<f32>(10);
    assert_eq!((s.len(), s.is_empty()), (10, false));
    let (a, b) = s.split_at(4).unwrap();
    assert_eq!((a.len(), b.len()), (4, 6));
    assert_eq!(a.as_ptr(), s.as_ptr());
    assert_eq!(b.as_ptr() as usize, s.as_ptr() as usize + 16);
    assert!(s.split_at(11).is_none());
    assert!(s.split_at(10).unwrap().1.is_empty());
    assert!(format!("{s:?}").starts_with("DeviceSlice<f32>("));
}

#[test]
fn cuda_device_io_context() {
    let m = tiny();
    let cuda = backend_info(Backend::Cuda, 0).unwrap();
    let p = ContextParams::new()
        .backend(Backend::Cuda)
        .io_memory(IoMemory::Device);
    match Context::new(&m, &p) {
        // no usable CUDA here: the request fails cleanly with the reason
        Err(e) => {
            assert_ne!(cuda.state, BackendState::Usable, "{e}");
            assert_eq!(e.status(), Status::NO_DEVICE, "{e}");
            assert_ne!(e.message(), Status::NO_DEVICE.description());
        }
        // a GPU: the device-I/O context refuses host slices before calling the library
        Ok(mut c) => {
            assert_eq!(c.io_memory(), IoMemory::Device);
            let dim = m.dim();
            let e = c.decode(0, &vec![0f32; dim], &mut vec![0f32; dim]).unwrap_err();
            assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
            assert!(e.message().contains("device memory"), "{e}");
            let e =
                Context::decode_batch(&mut [&mut c], 0, &vec![0f32; dim], &mut vec![0f32; dim]).unwrap_err();
            assert_eq!(e.status(), Status::INVALID_ARG, "{e}");
            // partial overlap of x and y is refused; lengths are checked
            let s = fake_device::<f32>(2 * dim);
            let (a, _) = s.split_at(dim).unwrap();
            let (_, b) = s.split_at(dim / 2).unwrap();
            let b = b.split_at(dim).unwrap().0;
            assert_eq!(
                c.decode_device(0, a, b).unwrap_err().status(),
                Status::INVALID_ARG
            );
            assert_eq!(
                c.decode_device(0, s, s).unwrap_err().status(),
                Status::INVALID_ARG
            );
            assert_eq!(c.n_tokens(), 0);
        }
    }
}

#[test]
fn streams() {
    let m = tiny();
    assert!(
        // SAFETY: NULL is no stream; from_raw returns None without keeping it.
        unsafe { CudaStream::from_raw(std::ptr::null_mut()) }.is_none()
    );
    let mut c = new_ctx(&m, &cpu());
    c.set_stream(None).unwrap(); // a CPU context accepts "its own stream"
                                 // SAFETY: not a stream: only given to a CPU context, which refuses it without using it.
    let bogus = unsafe { CudaStream::from_raw(NonNull::<u8>::dangling().as_ptr().cast()) }.unwrap();
    let e = c.set_stream(Some(bogus)).unwrap_err();
    assert_eq!(e.status(), Status::UNSUPPORTED, "{e}");
    assert_same(
        &chunk(&mut c, 1, 2),
        &chunk(&mut new_ctx(&m, &cpu()), 1, 2),
        "after set_stream",
    );
}

#[test]
fn numerics_resolve_to_exact_on_the_cpu_and_forks_keep_them() {
    let m = tiny();
    let dim = m.dim();
    for n in [Numerics::Default, Numerics::Fast, Numerics::Exact] {
        let mut c = new_ctx(&m, &cpu().numerics(n).max_rollback(4));
        assert_eq!(
            c.numerics(),
            Numerics::Exact,
            "{n:?}: the CPU computes Exact for every value"
        );
        chunk(&mut c, 1, 20);
        let mut f = c.fork(None).unwrap();
        let mut g = c.fork(Some(&cpu().numerics(n).max_rollback(2))).unwrap();
        assert_eq!(
            (f.numerics(), g.numerics()),
            (Numerics::Exact, Numerics::Exact),
            "{n:?}"
        );
        assert_same(&chunk(&mut f, 1, 2), &chunk(&mut g, 1, 2), "forks");
    }
    // contexts created with different values compute one numerics on the CPU: one batch
    let mut a = new_ctx(&m, &cpu().numerics(Numerics::Fast));
    let mut b = new_ctx(&m, &cpu().numerics(Numerics::Exact));
    let x = rows(1, 0, 0, 2, dim);
    let mut y = vec![0f32; x.len()];
    Context::decode_batch(&mut [&mut a, &mut b], 0, &x, &mut y).unwrap();
    assert_eq!((a.next_layer(), b.next_layer()), (1, 1));
}

/// Numerics cannot hold an out-of-range value; the library refuses one passed through the raw
/// params (the mirror's numerics and reserved fields).
#[test]
fn numerics_out_of_range_are_refused_by_the_library() {
    use hybridctx::sys;
    let m = tiny();
    for (numerics, reserved) in [(3, 0), (-1, 0), (0, 1)] {
        let mut p = std::mem::MaybeUninit::<sys::hc_ctx_params>::zeroed();
        let size = std::mem::size_of::<sys::hc_ctx_params>();
        // SAFETY: p points to size writable bytes; the library fills them.
        assert_eq!(
            unsafe { sys::hc_ctx_params_init(p.as_mut_ptr(), size) },
            sys::HC_OK
        );
        // SAFETY: zero-initialised then filled by hc_ctx_params_init; plain data.
        let mut p = unsafe { p.assume_init() };
        assert_eq!((p.numerics, p.reserved), (0, 0));
        p.backend = sys::HC_BACKEND_CPU as i32;
        p.numerics = numerics;
        p.reserved = reserved;
        let mut out = std::ptr::null_mut();
        // SAFETY: the model is live, p a valid params struct, out an out pointer.
        let st = unsafe { sys::hc_ctx_create(m.as_ptr(), &p, &mut out) };
        assert_eq!(
            (st, out.is_null()),
            (sys::HC_ERR_INVALID_ARG, true),
            "{numerics} {reserved}"
        );
    }
}
