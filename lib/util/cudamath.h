/* cudamath.h - CPU ports of CUDA 13.0 device sinf, cosf, sincosf, expf, powf (the accurate
 * libdevice versions that nvcc uses by default: no fast math, no FTZ), bit for bit.
 *
 * Each function follows the PTX that NVVM makes of libdevice.10.bc (__nv_sinf, __nv_cosf,
 * __nv_sincosf, __nv_expf, __nv_powf) for sm_90, operation by operation: every fma there is an
 * fmaf here, every single multiply or add a single rounded C operation. Build with
 * -ffp-contract=off (so the compiler fuses nothing) and run in the default rounding mode
 * (round to nearest even). NaN results are the GPU's canonical NaN 0x7fffffff.
 *
 * expf and powf each use one hardware approximation (MUFU.EX2 and MUFU.RCP); cudamath.c models
 * them from measurements of every table input on an H200 (see there). */
#ifndef HCI_CUDAMATH_H
#define HCI_CUDAMATH_H

float hci_cuda_sinf(float x);
float hci_cuda_cosf(float x);
/* As __nv_sincosf, what CUDA's sincosf(x, &s, &c) calls; equal to the two functions above
 * (the polynomials are the same; only signs of zero differ in unreachable cases). */
void hci_cuda_sincosf(float x, float *s, float *c);
float hci_cuda_expf(float x);
float hci_cuda_powf(float x, float y);

/* Models of the two hardware approximations used above, for code that issues the PTX
 * instructions directly: ex2.approx.ftz.f32 (MUFU.EX2) and rcp.approx.ftz.f32 (MUFU.RCP), as
 * measured on sm_90 (H200). */
float hci_cuda_ex2_approx_ftz(float x);
float hci_cuda_rcp_approx_ftz(float x);

#endif
