//! Tests of the safe bindings against the real library (CPU backend).
//!
//! Run with `PKG_CONFIG_PATH=<builddir>/meson-uninstalled LD_LIBRARY_PATH=<builddir>
//! cargo test --offline` (tools/check-bindings.sh does). The cross-language session test reads
//! `HC_XLANG_DIR` and `HC_XLANG_REQUIRE` (see bindings/README.md).
use std::path::PathBuf;
use std::sync::Arc;

use hybridctx::{
    backend_info, Backend, BackendCaps, BackendInfo, BackendState, CacheFormat, Compression, Context,
    ContextParams, IoDtype, Model, ModelParams, SaveParams, Status,
};

fn tiny() -> Arc<Model> {
    Arc::new(Model::create_random("tiny", 42).expect("tiny model"))
}

fn cpu() -> ContextParams {
    ContextParams::new().backend(Backend::Cpu)
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hybridctx-rs-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The shared input of the cross-language scenario: exact in f32 in every language.
fn input(layer: usize, t: usize, dim: usize) -> Vec<f32> {
    (0..dim)
        .map(|i| {
            let k = ((layer as u64) * 1_000_003 + t as u64) * dim as u64 + i as u64;
            let h = (k.wrapping_mul(2_654_435_761).wrapping_add(12_345)) & 0xffff_ffff;
            (h >> 8) as f32 / 8_388_608.0 - 1.0
        })
        .collect()
}

const PREFIX: usize = 150;
const DECODE: usize = 2;

/// Run the scenario's prefix: one chunk of PREFIX tokens, layer l taking input(l, t).
fn prefix(ctx: &mut Context) {
    let (layers, dim) = (ctx.model().n_layers(), ctx.model().dim());
    for l in 0..layers {
        let x: Vec<f32> = (0..PREFIX).flat_map(|t| input(l, t, dim)).collect();
        let mut y = vec![0f32; x.len()];
        ctx.append(l, &x, &mut y).unwrap();
    }
}

/// Decode DECODE tokens after the prefix; all layers' outputs, concatenated.
fn decode_tail(ctx: &mut Context) -> Vec<f32> {
    let (layers, dim) = (ctx.model().n_layers(), ctx.model().dim());
    let mut out = Vec::new();
    for k in 0..DECODE {
        for l in 0..layers {
            let mut y = vec![0f32; dim];
            ctx.decode(l, &input(l, PREFIX + k, dim), &mut y).unwrap();
            out.extend_from_slice(&y);
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn version_matches() {
    hybridctx::check_version().unwrap();
    // a library of the bindings' major version and at least their minor (0.2 bindings load 0.3)
    assert_eq!(hybridctx::version_number() / 10000, hybridctx::BINDING_VERSION.0);
    assert!(
        hybridctx::version_number() / 100
            >= hybridctx::BINDING_VERSION.0 * 100 + hybridctx::BINDING_VERSION.1
    );
    assert!(hybridctx::version().starts_with("0."));
}

#[test]
fn model_info() {
    let m = tiny();
    let info = m.info();
    assert_eq!(m.n_layers(), 4);
    assert_eq!(m.dim(), 512);
    assert_eq!(info.n_layers, 4);
    assert_eq!(info.dim, 512);
    assert!(info.has_weights);
    assert!(info.weight_bytes > 0);
    assert!(m.layer_ratio(0).is_some());
    assert_eq!(m.layer_ratio(4), None);
    let cb = m.cache_bytes(1 << 20, CacheFormat::Bf16).unwrap();
    let cf = m.cache_bytes(1 << 20, CacheFormat::Fp8).unwrap();
    assert!(cb.kv > cf.kv && cf.kv > 0);
    let g = Model::create_random_with("tiny", 1, &ModelParams::new().geometry_only(true)).unwrap();
    assert!(!g.info().has_weights);
}

fn test_data() -> PathBuf {
    std::env::var_os("HC_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/data"))
}

#[test]
fn load_checkpoint() {
    let m = Model::load(test_data().join("tiny-a-short.safetensors")).unwrap();
    assert!(m.n_layers() > 0 && m.dim() > 0);
}

/// The configuration of the C library's golden session files (tests/test_session_util.c).
const GOLDEN_JSON: &str = concat!(
    r#"{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "head_dim": 128,"#,
    r#" "qk_rope_head_dim": 64, "q_lora_rank": 256, "o_groups": 2, "o_lora_rank": 256,"#,
    r#" "index_n_heads": 8, "index_head_dim": 128, "index_topk": 16, "sliding_window": 128,"#,
    r#" "rope_theta": 10000, "compress_rope_theta": 160000, "rms_norm_eps": 1e-6,"#,
    r#" "max_position_embeddings": 1048576,"#,
    r#" "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,"#,
    r#" "beta_fast": 32, "beta_slow": 1},"#,
    r#" "compress_ratios": [0, 4, 128, 4]}"#,
);

/// Sessions written by the C library's golden test load here too.
#[test]
fn golden_sessions_of_the_c_library() {
    let m =
        Arc::new(Model::create_random_with(GOLDEN_JSON, 1, &ModelParams::new().geometry_only(true)).unwrap());
    for name in ["session-golden-v1.0-raw.hcs", "session-golden-v1.0-zstd.hcs"] {
        let path = test_data().join(name);
        if !path.exists() {
            eprintln!("{name} not found: skipped");
            continue;
        }
        let mut c = Context::new(&m, &cpu()).unwrap();
        c.load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.n_tokens(), 300);
        assert_eq!(c.metadata(), b"golden session, format 1.0\0");
    }
}

#[test]
fn append_decode_and_state() {
    let m = tiny();
    let mut c = Context::new(&m, &cpu()).unwrap();
    assert_eq!(c.backend(), Backend::Cpu);
    let dim = m.dim();
    let x = input(0, 0, dim).repeat(8);
    let mut y = vec![0f32; x.len()];
    for l in 0..m.n_layers() {
        assert_eq!(c.next_layer(), l);
        c.append(l, &x, &mut y).unwrap();
        assert!(y.iter().all(|v| v.is_finite()));
    }
    assert_eq!(c.n_tokens(), 8);
    assert!(c.memory_bytes() > 0);
    let mut xy = input(1, 8, dim);
    for l in 0..m.n_layers() {
        c.append_in_place(l, &mut xy).unwrap();
    }
    assert_eq!(c.n_tokens(), 9);
    c.reset().unwrap();
    assert_eq!(c.n_tokens(), 0);
}

#[test]
fn bf16_io() {
    let m = tiny();
    let mut c = Context::new(&m, &cpu().io_dtype(IoDtype::Bf16)).unwrap();
    let x: Vec<u16> = input(0, 0, m.dim())
        .iter()
        .map(|v| (v.to_bits() >> 16) as u16)
        .collect();
    let mut y = vec![0u16; x.len()];
    c.decode(0, &x, &mut y).unwrap();
    assert!(y.iter().any(|&v| v != 0));
    // f32 slices on a bf16 context are refused by the binding
    let err = c.decode(1, &[0f32; 512], &mut [0f32; 512]).unwrap_err();
    assert_eq!(err.status(), Status::INVALID_ARG);
}

#[test]
fn bad_calls_are_errors() {
    let m = tiny();
    let mut c = Context::new(&m, &cpu()).unwrap();
    let dim = m.dim();
    let x = input(0, 0, dim);
    let mut y = vec![0f32; dim];

    // wrong layer order: the library's status and message
    let e = c.decode(2, &x, &mut y).unwrap_err();
    assert_eq!(e.status(), Status::ORDER);
    assert_eq!(e.status().name(), "HC_ERR_ORDER");
    assert!(e.message().contains("needs layer 0"), "{e}");
    assert!(e.to_string().starts_with("HC_ERR_ORDER: "), "{e}");

    // layer out of range
    assert_eq!(
        c.decode(usize::MAX, &x, &mut y).unwrap_err().status(),
        Status::LAYER_RANGE
    );

    // wrong slice lengths are caught by the binding before calling C
    let e = c.append(0, &x[..dim - 1], &mut y[..dim - 1]).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);
    assert!(e.message().contains("multiple of the model width"), "{e}");
    assert_eq!(
        c.append(0, &x, &mut y[..dim - 1]).unwrap_err().status(),
        Status::INVALID_ARG
    );
    assert_eq!(
        c.append::<f32>(0, &[], &mut []).unwrap_err().status(),
        Status::N_TOKENS
    );
    let two = x.repeat(2);
    assert_eq!(
        c.decode(0, &two, &mut two.clone()).unwrap_err().status(),
        Status::INVALID_ARG
    );

    // non-finite input
    let mut nan = x.clone();
    nan[3] = f32::NAN;
    assert_eq!(c.decode(0, &nan, &mut y).unwrap_err().status(), Status::NONFINITE);

    // a chunk in progress cannot be saved
    c.decode(0, &x, &mut y).unwrap();
    let dir = tmpdir("bad");
    assert_eq!(c.save(dir.join("s.hcs")).unwrap_err().status(), Status::ORDER);

    // the context still works after all of this
    for l in 1..m.n_layers() {
        c.decode(l, &x, &mut y).unwrap();
    }
    assert_eq!(c.n_tokens(), 1);

    // files that do not exist
    let e = Model::load("/nonexistent/model/dir").unwrap_err();
    assert_eq!(e.status(), Status::IO, "{e}");
    assert!(!e.message().is_empty());
    assert_eq!(c.load(dir.join("missing.hcs")).unwrap_err().status(), Status::IO);
    assert_eq!(c.n_tokens(), 1);
    // a file that is not a session
    std::fs::write(dir.join("junk.hcs"), b"not a session at all").unwrap();
    assert!(c.load(dir.join("junk.hcs")).is_err());
    assert_eq!(c.n_tokens(), 1);
    // an unknown preset, a NUL byte
    assert_eq!(
        Model::create_random("no-such-preset", 1).unwrap_err().status(),
        Status::UNKNOWN_PRESET
    );
    assert_eq!(
        Model::create_random("ti\0ny", 1).unwrap_err().status(),
        Status::INVALID_ARG
    );
    // a backend that is absent
    if hybridctx::sys::HC_BACKEND_CUDA != 0 {
        let mut n = 0;
        // SAFETY: n is a valid out pointer.
        unsafe { hybridctx::sys::hc_cuda_device_count(&mut n) };
        if n == 0 {
            let e = Context::new(&m, &ContextParams::new().backend(Backend::Cuda)).unwrap_err();
            assert_eq!(e.status(), Status::NO_DEVICE);
        }
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn context_keeps_model_alive_and_moves_between_threads() {
    let m = tiny();
    let mut c = Context::new(&m, &cpu()).unwrap();
    drop(m); // the context still holds the model
    let dim = c.model().dim();
    let handle = std::thread::spawn(move || {
        let x = input(0, 0, dim);
        let mut y = vec![0f32; dim];
        for l in 0..c.model().n_layers() {
            c.decode(l, &x, &mut y).unwrap();
        }
        (c, y)
    });
    let (c, y) = handle.join().unwrap();
    assert_eq!(c.n_tokens(), 1);
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn model_shared_by_threads_is_deterministic() {
    let m = tiny();
    let run = |m: Arc<Model>| {
        std::thread::spawn(move || {
            let mut c = Context::new(&m, &cpu().n_threads(1)).unwrap();
            let dim = m.dim();
            let mut y = vec![0f32; dim];
            for l in 0..m.n_layers() {
                c.decode(l, &input(l, 0, dim), &mut y).unwrap();
            }
            bits(&y)
        })
    };
    let (a, b) = (run(Arc::clone(&m)), run(Arc::clone(&m)));
    assert_eq!(a.join().unwrap(), b.join().unwrap());
}

#[test]
fn save_load_roundtrip() {
    let m = tiny();
    let mut reference = Context::new(&m, &cpu()).unwrap();
    prefix(&mut reference);
    let mut a = Context::new(&m, &cpu()).unwrap();
    prefix(&mut a);
    a.set_metadata(b"token ids").unwrap();
    let dir = tmpdir("roundtrip");
    let path = dir.join("rust-self.hcs");
    a.save_with(
        &path,
        &SaveParams::new().compression(Compression::Zstd).zstd_level(3),
    )
    .unwrap();
    let bytes = a.save_to_vec(&SaveParams::new()).unwrap();
    assert!(!bytes.is_empty());

    let want = bits(&decode_tail(&mut reference));
    let mut b = Context::new(&m, &cpu()).unwrap();
    b.load(&path).unwrap();
    assert_eq!(b.n_tokens(), PREFIX as u64);
    assert_eq!(b.metadata(), b"token ids");
    assert_eq!(bits(&decode_tail(&mut b)), want);

    let mut c = Context::new(&m, &cpu().cache_format(CacheFormat::Bf16)).unwrap();
    c.load_from_slice(&bytes).unwrap();
    assert_eq!(bits(&decode_tail(&mut c)), want);
    c.set_metadata(&[]).unwrap();
    assert!(c.metadata().is_empty());
    std::fs::remove_dir_all(dir).ok();
}

/// Writes `rust.hcs` into HC_XLANG_DIR and checks every other language's session found there
/// (those named in HC_XLANG_REQUIRE must be present).
#[test]
fn cross_language_sessions() {
    let dir = match std::env::var_os("HC_XLANG_DIR") {
        Some(d) => PathBuf::from(d),
        None => tmpdir("xlang"),
    };
    std::fs::create_dir_all(&dir).unwrap();
    let m = tiny();
    let mut reference = Context::new(&m, &cpu()).unwrap();
    prefix(&mut reference);
    reference.save(dir.join("rust.hcs")).unwrap();
    let want = bits(&decode_tail(&mut reference));

    let required = std::env::var("HC_XLANG_REQUIRE").unwrap_or_default();
    for lang in required.split_whitespace() {
        assert!(
            dir.join(format!("{lang}.hcs")).exists(),
            "the {lang} session is missing from {dir:?}"
        );
    }
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".hcs") {
            continue;
        }
        let mut c = Context::new(&m, &cpu()).unwrap();
        c.load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(c.n_tokens(), PREFIX as u64, "{name}");
        assert!(
            bits(&decode_tail(&mut c)) == want,
            "{name}: decode differs after loading"
        );
        checked.push(name);
    }
    eprintln!("cross-language sessions checked in {dir:?}: {checked:?}");
}

fn cpu_caps() -> BackendCaps {
    BackendCaps::HOST_IO | BackendCaps::THREADS | BackendCaps::BITWISE_CPU
}

/// Why CUDA is not usable on a machine without a GPU: a CPU-only build (NotBuilt), a CUDA build
/// without its module or the CUDA runtime (ModuleMissing), or without a driver or device (NoDevice).
fn cuda_absent(s: BackendState) -> bool {
    matches!(
        s,
        BackendState::NotBuilt | BackendState::ModuleMissing | BackendState::NoDevice
    )
}

fn cuda_device_count() -> u32 {
    let mut n = 0;
    // SAFETY: n is a valid out pointer.
    assert_eq!(unsafe { hybridctx::sys::hc_cuda_device_count(&mut n) }, 0);
    n as u32
}

#[test]
fn backend_info_of_the_cpu() {
    let info: BackendInfo = backend_info(Backend::Cpu, 0).unwrap();
    assert_eq!(
        (
            info.backend,
            info.state,
            info.n_devices,
            info.caps,
            info.name.as_str()
        ),
        (Backend::Cpu, BackendState::Usable, 1, cpu_caps(), "cpu")
    );
    assert!(!info.detail.is_empty());
    assert_eq!(info.caps.bits(), 1 | 8 | 16);
    assert_eq!(
        info.caps,
        BackendCaps::HOST_IO | BackendCaps::THREADS | BackendCaps::BITWISE_CPU
    );
    assert!(info
        .caps
        .contains(BackendCaps::HOST_IO | BackendCaps::BITWISE_CPU));
    assert!(!info.caps.contains(BackendCaps::DEVICE_IO) && !info.caps.is_empty());
    assert_eq!(
        format!("{:?}", info.caps),
        "BackendCaps(HOST_IO | THREADS | BITWISE_CPU)"
    );
    assert_eq!(
        format!("{:?}", BackendCaps::STREAM | BackendCaps::from_bits(64)),
        "BackendCaps(STREAM | 0x40)"
    );
    assert_eq!(format!("{:?}", BackendCaps::empty()), "BackendCaps(empty)");
    assert_eq!(backend_info(Backend::Cpu, 5).unwrap(), info); // the CPU ignores the device
}

#[test]
fn backend_info_of_cuda_and_auto() {
    let cuda = backend_info(Backend::Cuda, 0).unwrap();
    let auto = backend_info(Backend::Auto, 0).unwrap();
    assert_eq!((cuda.backend, cuda.name.as_str()), (Backend::Cuda, "cuda"));
    assert!(!cuda.detail.is_empty());
    let ctx = Context::new(&tiny(), &ContextParams::new()).unwrap();
    assert_eq!(ctx.backend(), auto.backend);
    if cuda.state == BackendState::Usable {
        // a GPU: AUTO picks it
        assert!(
            cuda.n_devices >= 1 && cuda.n_devices == cuda_device_count(),
            "{cuda:?}"
        );
        assert!(
            cuda.caps.contains(BackendCaps::HOST_IO | BackendCaps::DEVICE_IO),
            "{cuda:?}"
        );
        assert_eq!(auto, cuda);
        assert_eq!(
            backend_info(Backend::Cuda, cuda.n_devices).unwrap().state,
            BackendState::NoDevice
        );
        return;
    }
    assert!(cuda_absent(cuda.state), "{cuda:?}");
    assert_eq!(
        (cuda.n_devices, cuda.caps, cuda_device_count()),
        (0, BackendCaps::empty(), 0)
    );
    if cuda.state == BackendState::NotBuilt {
        assert!(cuda.detail.contains("no CUDA backend"), "{cuda:?}");
    }
    // AUTO picks the CPU; its state says why not CUDA
    assert_eq!(
        (
            auto.backend,
            auto.state,
            auto.n_devices,
            auto.caps,
            auto.name.as_str()
        ),
        (Backend::Cpu, cuda.state, 1, cpu_caps(), "cpu")
    );
    let head: String = cuda.detail.chars().take(200).collect();
    assert!(
        auto.detail.starts_with("cuda not used: ") && auto.detail.contains(&head),
        "{auto:?}"
    );
}

#[test]
fn backend_info_bad_device() {
    let e = backend_info(Backend::Cuda, u32::MAX).unwrap_err();
    assert_eq!(e.status(), Status::INVALID_ARG);
    assert!(e.message().contains("device"), "{e}");
}

#[test]
fn context_creation_error_carries_the_detail() {
    let m = tiny();
    let cuda = backend_info(Backend::Cuda, 0).unwrap();
    assert!(
        cuda.state == BackendState::Usable || cuda_absent(cuda.state),
        "{cuda:?}"
    );
    let device = cuda.n_devices; // none on a machine without a GPU; one past the last one with GPUs
    let e = Context::new(&m, &ContextParams::new().backend(Backend::Cuda).device(device)).unwrap_err();
    assert_eq!(e.status(), Status::NO_DEVICE);
    assert_ne!(e.message(), Status::NO_DEVICE.description());
    assert_eq!(e.to_string(), format!("HC_ERR_NO_DEVICE: {}", e.message()));
    match cuda.state {
        BackendState::NotBuilt | BackendState::ModuleMissing => {
            assert_eq!(e.message(), format!("CUDA backend: {}", cuda.detail));
            if cuda.state == BackendState::NotBuilt {
                assert!(e.message().contains("no CUDA backend"), "{e}");
            }
        }
        // the module is loaded: it names the device asked for
        _ => assert!(
            e.message().contains(&format!("CUDA device {device} asked for")),
            "{e}"
        ),
    }
}
