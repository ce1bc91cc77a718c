package hybridctx

// The preamble of a file with //export may only declare: the helpers are in hcgo.h.

/*
#include <stdint.h>
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
)

// ProgressFunc receives the progress of a long call: done grows from report to report and the
// last report has done == total (tokens, bytes or layers, as the call documents). Return true
// to go on, false to stop the call, which then fails with ErrAborted and changes nothing. It runs
// on the goroutine that made the call, while the call holds the context (for a batch, every
// context of the batch): it must not call their methods (they would wait for the call to end). A panic in it is recovered
// and stops the call; the error's message holds the panic's value.
type ProgressFunc func(done, total uint64) bool

// progressState is what a registration's cgo.Handle refers to: C keeps only the handle's
// number, never a Go pointer.
type progressState struct {
	f        ProgressFunc
	panicked any
}

// panicText takes the recovered panic of the last call, "" when there was none.
func (s *progressState) panicText() string {
	if s == nil || s.panicked == nil {
		return ""
	}
	p := s.panicked
	s.panicked = nil
	return fmt.Sprint(p)
}

//export hcgoProgress
func hcgoProgress(handle C.uintptr_t, done, total C.uint64_t) (stop C.int) {
	s := cgo.Handle(handle).Value().(*progressState)
	// a panic must not unwind into the library's C frames: it stops the call instead
	defer func() {
		if r := recover(); r != nil {
			s.panicked = r
			stop = 1
		}
	}()
	if s.f(uint64(done), uint64(total)) {
		return 0
	}
	return 1
}

// newProgress returns the handle of a registration of f (0 for nil); delete it once C no longer
// holds it.
func newProgress(f ProgressFunc) cgo.Handle {
	if f == nil {
		return 0
	}
	return cgo.NewHandle(&progressState{f: f})
}

func progressOf(h cgo.Handle) *progressState {
	if h == 0 {
		return nil
	}
	return h.Value().(*progressState)
}
