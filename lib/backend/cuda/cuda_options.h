/* cuda_options.h - named alternatives to the CUDA backend's code paths, for comparisons and
 * cross-checks in tests and benchmarks (docs/cuda.md). All zero but gemm_wgmma is numerics EXACT; a backend
 * created for numerics FAST (HC_NUMERICS_FAST, or DEFAULT, which is FAST on CUDA) starts with
 * gemv_fast, index_fast, comp_fast and attend_fast set. None is needed for correct results. C and C++. */
#ifndef HCI_CUDA_OPTIONS_H
#define HCI_CUDA_OPTIONS_H

#ifdef __cplusplus
extern "C" {
#endif

struct hci_backend;

typedef struct hci_cu_options {
    /* FP8 projections of more than 16 tokens (64 with gemv_fast: prefill pieces) on cuBLASLt's
     * block-scaled FP8 GEMM (native e4m3 tensor cores, fp32 promotion per 128-k block) instead
     * of the own GEMM (kernels/gemm, the CPU's arithmetic on f16 tensor cores), with an
     * algorithm pinned per weight shape (cuda_gemm.cu) so that a token's result does not depend
     * on the size of its piece. About 2x faster on 2048-token pieces, but the FP8 tensor cores'
     * accumulation moves whole layers 2e-2 from the CPU's (docs/cuda.md): not part of FAST. */
    int fp8_gemm_cublaslt;
    /* Indexer: every (query head, key) dot by the exact fallback (the CPU's fp32 products and
     * double sums) instead of the int8 tensor-core path; the selections must be the same. */
    int index_exact_only;
    /* Attention: the fp32 FMA kernel for every head_dim instead of the tensor-core kernel (d 64,
     * 128, 256, 512); the outputs agree within rounding. */
    int attend_simple;
    /* Projections of up to 64 tokens (decode, batched decode) on the fast tensor-core GEMVs
     * (kernels/gemv/gemv_{fp8,bf16}_tc.cu: native e4m3 MMA with fp32 promotion per 128-k block;
     * bf16 MMA for the grouped output projection) instead of the exact GEMVs and GEMMs: faster,
     * batch-invariant, within the faithful tolerance, not the CPU's bits. Set by
     * HC_NUMERICS_FAST (docs/numerics.md). */
    int gemv_fast;
    /* The decode projections' kernels of 2026-12-07 (kernels/gemv: a team of 1-8 warps per 8-row
     * group sized to fill the GPU once, 16-byte loads of 8 KiB in flight per warp; gemm_bf16_few.cu
     * for the compressor and head-weight projections of up to 64 tokens) instead of the previous
     * ones (gemv_tc_ref.cu, the sliced-K bf16 GEMM): the same bits by construction
     * (tools/gemv-check verifies it). On by default in both modes (measured 2026-12-07). */
    int gemv_teams;
    /* Indexer scores on native e4m3 tensor cores (kernels/index/index_fast.cu): q and the FP4
     * keys scaled exactly into e4m3, each dot scaled back and rounded as the reference rounds
     * (bf16 dot, relu, times the weight, bf16), the head terms summed in fp32 and rounded once
     * to bf16; the same selection kernels. The CPU's scores except for last-bit differences of
     * the tensor cores' dots and of the fp32 head sum (the exact path's is exact);
     * deterministic and batch-invariant. Set by HC_NUMERICS_FAST. */
    int index_fast;
    /* With index_fast, on the wgmma kernel (64 heads, sm_90): the head terms (the same bf16
     * values) added on the tensor cores (an m64n8k16 against ones per 16 heads, fp32
     * accumulation) instead of in a fixed fp32 order on the CUDA cores: fewer epilogue
     * instructions; sums differ in last fp32 bits, so a score's bf16 rounding rarely.
     * Deterministic and batch-invariant either way. Set by HC_NUMERICS_FAST (measured
     * 2026-12-07: tools/gpu-index-tcsum.sh is its check). */
    int index_tcsum;
    /* With index_tcsum: the same kernel's work per query pair pipelined (index_wgmma.cu, PIPE):
     * the sums and the next pair's score MMAs issued together, the scores stored while the
     * next pair's MMAs run, three warpgroups per CTA instead of four (registers). The same
     * terms and sums as index_tcsum, so the same bits. Off by default: written 2026-12-07
     * without a GPU (check: tools/gpu-index-tcpipe.sh). */
    int index_tcpipe;
    /* With index_fast, on the wgmma kernel: the production kernels' head sum (DeepGEMM's MQA
     * logits, docs/numerics.md) instead of the reference's roundings: each score
     * bf16(s_j * sum_h relu(dot_h) * w_h s_qh) with the terms fused into fp32 FMAs in a fixed
     * order, no bf16 rounding per head. Two fp32 instructions per head term where the reference's
     * roundings take conversions that, at a quarter of the FMA rate, cost as much SM time as
     * the tensor cores' dots. Deterministic and batch-invariant; picks within FAST's tolerance,
     * not index_tcsum's bits. Takes precedence over index_tcsum. Off by default: this sum, on the
     * mma.sync kernel, missed golden tiny-a's per-layer tolerance in the fifth session of
     * 2026-12-07 (docs/numerics.md); kept to measure what the reference's roundings cost
     * (tools/gpu-priority-round.sh, PART=1). */
    int index_f32sum;
    /* With index_tcsum (not index_tcpipe): the same kernel with each warp's 16 keys of a tile
     * loaded once (ldmatrix) as wgmma's register A for all the tile's query pairs, so that
     * shared memory feeds the tensor cores only the queries (16 KiB per pair instead of 24);
     * three warpgroups per CTA (registers). The same MMAs on the same values, so
     * index_tcsum's bits. Off by default: written 2026-12-08 without a GPU (check:
     * tools/gpu-priority-round.sh, PART=1; test_gpu's fast_options_same_bits). */
    int index_rega;
    /* With index_tcsum (not index_tcpipe; with or without index_rega): one head-term pair in
     * four rounded to bf16 on the fp32 adder, (x + c) - c with c = sign(x) 2^(e + 16)
     * (kernels/index/config.h: ix_bf16_round_fadd), packed by a byte permute, the relu a bf16x2
     * max, instead of the conversion unit's cvt.rn.relu.bf16x2, which runs at a quarter of the
     * fp32 rate and gives the epilogue as many cycles as the tensor cores' dots. The same bits
     * (the rule is exact for the dots' values). Off by default: written 2026-12-08 without a
     * GPU (check: tools/gpu-priority-round.sh; test_gpu's fast_options_same_bits). */
    int index_tcmix;
    /* Compressor and indexer-weight projections of every token count on bf16 tensor cores (fp32
     * accumulation per 128-k block, blocks added in k order: kernels/gemm/gemm_bf16.cu) instead
     * of the double GEMM / GEMV that reproduce the CPU's sums: one formula for every n, so
     * deterministic and batch-invariant; not the CPU's bits. Set by HC_NUMERICS_FAST. */
    int comp_fast;
    /* Attention for head_dim 512 in groups of 64 heads on Hopper's wgmma (kernels/attend/
     * attend_wgmma.cu): all heads of a query share each dequantised block of entries; exp2 in
     * the log2 domain, fixed row splits for pieces of up to 4 queries. Within rounding of the
     * mma.sync kernel, deterministic and batch-invariant. Set by HC_NUMERICS_FAST. */
    int attend_fast;
    /* FP8 projections of more than 16 tokens (64 with gemv_fast) on an sm_90 GPU by the wgmma
     * kernel (kernels/gemm/gemm_fp8_wgmma.cu) instead of the mma.sync one (gemm_fp8.cu): the
     * same formula (f16 codes, fp32 block dots from zero, the blocks' scaled sums added in k
     * order), each k16 step over the same 16 products; batch-invariant. Other GPUs and shapes it
     * does not take use gemm_fp8.cu. On by default in both modes (measured on an H100 with
     * tools/gemm-check: 1.3-1.5x at 2048 tokens, bitwise the big mma.sync kernel's results; slower
     * on small grids of a few hundred tokens); 0 selects the mma.sync kernel. */
    int gemm_wgmma;
    /* Batches (hc_decode_batch, hc_append_batch): the projections of pieces of several contexts
     * run as shared launches over all their rows (the weights read once per launch instead of
     * once per context) where every row's bits stay those of its context's own ops (pieces of
     * up to 64 tokens with gemv_fast and comp_fast, else up to 16: cuda_backend.cu). On by
     * default in both modes (test_batch on a GPU, 2026-12-07); 0 on any context of a batch runs that context's ops alone, as
     * separate calls do (for comparisons: bench-gpu --batch). */
    int batch_shared;
    /* FP8 projections of more than 16 tokens (64 with gemv_fast) on an sm_90 GPU by the native
     * FP8 kernel (kernels/gemm/gemm_fp8_native.cu) instead of gemm_wgmma's / gemm_fp8.cu's: the
     * e4m3 codes straight from TMA-loaded shared memory into wgmma m64nNk32 e4m3 x e4m3, fp32
     * accumulation inside each 128-k block, each block promoted with its two scales
     * (fma(P, xs * ws, acc), the blocks in k order): the official kernels' structure, not the
     * CPU's bits (the tensor cores' accumulation inside a block is not exact). Deterministic and
     * batch-invariant (one formula for every token count and tile). Takes precedence over
     * gemm_wgmma; other GPUs, shapes, and drivers without the TMA encoder fall back. Off by
     * default: 2.2x at 2048 tokens in tools/gemm-check --native, within 7e-4 of gemm_wgmma there,
     * but test_gpu's FAST layers came out 2e-2 from the CPU with it on an H100 (2026-12-07): the
     * tensor cores' truncated accumulation moves a few percent of its bf16 outputs by an ulp, and
     * the FP8 quantizations after q, kv and c (act_quant, the FP8-simulated KV) turn that into
     * 2e-2 at the block's output, as with fp8_gemm_cublaslt (docs/perf/NEXT-gemm-native.md). */
    int gemm_fp8_native;
    /* With attend_fast: its attention by the ping-pong kernel (kernels/attend/attend_pingpong.cu):
     * the two consumer warpgroups take alternate blocks (each S over all 512 dims, P shared through
     * shared memory), so one's softmax runs under the other's MMAs; the producer refills each
     * buffer by halves through mbarriers and prefetches CSA's picks. The same splits and the same
     * per-block softmax as attend_fast's kernel, q.k and l summed in another order: within
     * rounding of it, deterministic and batch-invariant. Set by HC_NUMERICS_FAST (measured
     * 2026-12-07: tools/attend-check, 1.3-1.5x). */
    int attend_pingpong;
    /* The native FP8 kernel (gemm_fp8_native's) for the output projection wo_b of prefill pieces
     * only, whatever gemm_fp8_native says: its output leaves the block unquantized, so the tensor
     * cores' one-ulp differences stay their size there (7.5e-4 rel. L2 of a layer's output in a
     * CPU emulation of test_gpu's tiny run, against 1.2-1.6e-2 for wq_a, wq_b or wkv alone). Off
     * until measured on a GPU (tools/gpu-native-fix.sh). */
    int gemm_fp8_native_out;
    /* The projections of small pieces (decode, batched decode: up to 64 tokens with gemv_fast
     * and comp_fast, else 16) in fewer, fuller launches (cuda_fused.cu; backend.h proj_in): x
     * quantized once for wq_a and wkv; the FP8 GEMVs that read one input as one grouped launch
     * ([wq_a; wkv] over x, [wq_b; indexer wq_b] over c); the head-weight and compressor
     * projections over x as one; the RMSNorm and act_quant of c with the window KV's RMSNorm,
     * RoPE and FP8 simulation as one; the query and indexer heads as one. Every output by the
     * same operations as the separate kernels: bitwise their results, in both modes. Off by
     * default until measured (docs/perf/NEXT-decode-fused.md). */
    int decode_fused;
} hci_cu_options;

/* Set one by name: the backend op set_option (hc_x_ctx_set_option, hybridctx_experimental.h).
 * decode_fused also switches the backend's ops table (the one with proj_in, or without). */

#ifdef __cplusplus
}
#endif
#endif
