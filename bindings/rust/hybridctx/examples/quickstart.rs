//! The quick-start program of every binding's README: create the `tiny` model, append a chunk
//! through every layer, decode a token, save the session, load it into a new context, decode
//! the next token in both contexts and compare.
//!
//!     cargo run --offline --example quickstart [session-path]
use std::sync::Arc;

use hybridctx::{Backend, Context, ContextParams, Model};

/// One token through every layer; the output of a layer is the next layer's input (a real
/// application runs its MLP there).
fn decode(ctx: &mut Context, token: &[f32]) -> hybridctx::Result<Vec<f32>> {
    let mut x = token.to_vec();
    let mut y = vec![0f32; x.len()];
    for layer in 0..ctx.model().n_layers() {
        ctx.decode(layer, &x, &mut y)?;
        x.copy_from_slice(&y);
    }
    Ok(y)
}

fn main() -> hybridctx::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "session.hcs".into());
    let model = Arc::new(Model::create_random("tiny", 42)?);
    let (layers, dim) = (model.n_layers(), model.dim());
    println!(
        "libhybridctx {}: model tiny, {layers} layers, dim {dim}",
        hybridctx::version()
    );

    let params = ContextParams::new().backend(Backend::Cpu);
    let mut ctx = Context::new(&model, &params)?;
    let n = 64;
    let mut x: Vec<f32> = (0..n * dim).map(|i| (i * 7 % 101) as f32 / 50.0 - 1.0).collect();
    let mut y = vec![0f32; n * dim];
    for layer in 0..layers {
        ctx.append(layer, &x, &mut y)?;
        x.copy_from_slice(&y);
    }
    let token: Vec<f32> = (0..dim).map(|i| (i * 3 % 17) as f32 / 8.0 - 1.0).collect();
    let y1 = decode(&mut ctx, &token)?;
    println!("appended {n} tokens, decoded 1: y[:4] = {:.6?}", &y1[..4]);

    ctx.save(&path)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut restored = Context::new(&model, &params)?;
    restored.load(&path)?;
    println!(
        "saved {path} ({size} bytes), loaded into a new context: {} tokens",
        restored.n_tokens()
    );

    let a = decode(&mut ctx, &y1)?;
    let b = decode(&mut restored, &y1)?;
    let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
    println!(
        "next token: y[:4] = {:.6?}, restored context identical: {same}",
        &b[..4]
    );
    if !same {
        std::process::exit(1);
    }
    Ok(())
}
