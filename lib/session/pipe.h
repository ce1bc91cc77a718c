/* pipe.h - workers for the session streams: the calling thread submits slots in order and
 * collects them in the same order, while n workers run fn on them (hash, compress, decompress,
 * check, convert). With 0 workers fn runs inside hcs_pipe_submit(). */
#ifndef HCS_PIPE_H
#define HCS_PIPE_H

typedef struct hcs_pipe hcs_pipe;
typedef void (*hcs_pipe_fn)(void *arg, int slot);

/* NULL when out of memory; a pipe whose threads could not start runs with fewer (maybe 0). */
hcs_pipe *hcs_pipe_create(int n_workers, int n_slots, hcs_pipe_fn fn, void *arg);
void hcs_pipe_submit(hcs_pipe *p, int slot);
/* Whether the slot's job is done (or none is queued): hcs_pipe_wait would not block. */
int hcs_pipe_done(hcs_pipe *p, int slot);
/* Wait until the slot's job is done. */
void hcs_pipe_wait(hcs_pipe *p, int slot);
/* Finish queued jobs and join the workers. NULL is a no-op. */
void hcs_pipe_destroy(hcs_pipe *p);

#endif
