/* io/config.h - launch shapes of the conversion, packing and gathering kernels (io.cu). */
#ifndef HCI_KERNELS_IO_CONFIG_H
#define HCI_KERNELS_IO_CONFIG_H

#define IO_THREADS 256      /* element-wise conversions and the finiteness check */
#define IO_PACK_THREADS 64  /* packing: one CTA per row (entry) */
#define IO_GATHER_THREADS 256 /* gathering pages: one CTA per page */
#define IO_ROW_THREADS 256  /* the demo's residual norm: one CTA per row */

#endif
