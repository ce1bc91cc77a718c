//! model_loop - a whole (toy) model around libhybridctx's attention; examples/c/model_loop.c in
//! Rust, printing the same numbers.
//!
//! The embedded `tiny` model with random weights and a CPU context run a model loop: a few chunks
//! of a prompt, then token-by-token decoding. Every layer is our attention; between layers the
//! application runs its own parts, here toy stand-ins (elementwise f32 only):
//!   x = squash(h)                 the "attn_norm" before the attention, squash(v) = v / (1 + |v|)
//!   h += attention(x)             ctx.append / ctx.decode, the residual add
//!   h += 0.5 * squash(h[perm])    a "MLP" that mixes channels, perm(i) = (7 i + 3) mod dim
//! The next token's input is squash(h) of the last one. The session is saved to a temporary file
//! and loaded into a fresh context; one more token decoded in both must match bit for bit.
//!
//!     cd examples/rust && cargo run --offline     (PKG_CONFIG_PATH / LD_LIBRARY_PATH as for the crate)
use std::sync::Arc;

use hybridctx::{Backend, Context, ContextParams, Model};

const CHUNKS: usize = 3;
const CHUNK: usize = 48;
const DECODE: usize = 4;

fn squash(v: f32) -> f32 {
    v / (1.0 + v.abs())
}

/// A chunk (`h`: `[n][dim]`, updated in place) through every layer; one token decodes.
fn forward(ctx: &mut Context, h: &mut [f32]) -> hybridctx::Result<()> {
    let dim = ctx.model().dim();
    let mut y = vec![0f32; h.len()];
    for layer in 0..ctx.model().n_layers() {
        let x: Vec<f32> = h.iter().map(|&v| squash(v)).collect();
        if h.len() == dim {
            ctx.decode(layer, &x, &mut y)?;
        } else {
            ctx.append(layer, &x, &mut y)?;
        }
        h.iter_mut().zip(&y).for_each(|(a, b)| *a += b);
        for t in h.chunks_mut(dim) {
            // toy MLP, from a copy of the token's h
            let m: Vec<f32> = (0..dim).map(|i| 0.5 * squash(t[(7 * i + 3) % dim])).collect();
            t.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        }
    }
    Ok(())
}

fn head(what: &str, v: &[f32]) {
    let s: Vec<String> = v[..4].iter().map(|a| format!("{a:.6}")).collect();
    println!("{what} h[:4] = [{}]", s.join(", "));
}

fn main() -> hybridctx::Result<()> {
    let model = Arc::new(Model::create_random("tiny", 42)?); // every failure is an Err
    let (layers, dim) = (model.n_layers(), model.dim());
    println!(
        "libhybridctx {}: model tiny, {layers} layers, dim {dim}",
        hybridctx::version()
    );
    let params = ContextParams::new().backend(Backend::Cpu);
    let mut ctx = Context::new(&model, &params)?;

    // prompt: CHUNKS chunks of CHUNK tokens, a made-up embedding per position
    let mut h = vec![0f32; CHUNK * dim];
    for ch in 0..CHUNKS {
        for (k, v) in h.iter_mut().enumerate() {
            let (pos, i) = (ch * CHUNK + k / dim, k % dim);
            *v = ((pos * 31 + i * 7) % 101) as f32 / 50.0 - 1.0;
        }
        forward(&mut ctx, &mut h)?;
    }
    println!(
        "prompt: {CHUNKS} chunks of {CHUNK} tokens, context holds {} tokens",
        ctx.n_tokens()
    );
    let mut h = h[(CHUNK - 1) * dim..].to_vec(); // from here on h is one token
    head("last prompt token:", &h);

    // decoding: each token's input comes from the previous token's output
    for _ in 0..DECODE {
        h.iter_mut().for_each(|v| *v = squash(*v));
        forward(&mut ctx, &mut h)?;
    }
    head(&format!("decoded {DECODE} tokens, last:"), &h);

    // save, load into a fresh context, decode one more token in both
    let path = std::env::temp_dir().join(format!("hybridctx-model-loop-{}.hcs", std::process::id()));
    ctx.save(&path)?;
    let size = std::fs::metadata(&path).expect("the saved session").len();
    let mut restored = Context::new(&model, &params)?;
    let loaded = restored.load(&path);
    let _ = std::fs::remove_file(&path);
    loaded?;
    println!(
        "saved the session ({size} bytes), loaded it into a new context: {} tokens",
        restored.n_tokens()
    );
    h.iter_mut().for_each(|v| *v = squash(*v));
    let mut h2 = h.clone();
    forward(&mut ctx, &mut h)?;
    forward(&mut restored, &mut h2)?;
    let same = h.iter().zip(&h2).all(|(a, b)| a.to_bits() == b.to_bits());
    head("next token, original context:", &h);
    head("next token, restored context:", &h2);
    println!("restored context bitwise identical: {same}");
    if !same {
        std::process::exit(1);
    }
    Ok(())
}
