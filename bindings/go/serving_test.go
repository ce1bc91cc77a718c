package hybridctx

// Tests of the serving calls (batches, forks, rollback, progress, memory, device I/O,
// streams and numerics) against the real library, on the CPU backend. Every comparison is bitwise.

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// seqInput is the input of token tok at layer in the sequence seq: exact in float32, different
// per sequence.
func seqInput(seq, layer, tok, dim int) []float32 {
	x := make([]float32, dim)
	for i := range x {
		k := ((uint64(seq)*7919+uint64(layer))*1000003+uint64(tok))*uint64(dim) + uint64(i)
		h := (k*2654435761 + 12345) & 0xffffffff
		x[i] = float32(h>>8)/8388608 - 1
	}
	return x
}

// seqRows returns the rows of tokens from..from+n-1 of seq at layer.
func seqRows(seq, layer, from, n, dim int) []float32 {
	x := make([]float32, 0, n*dim)
	for tok := from; tok < from+n; tok++ {
		x = append(x, seqInput(seq, layer, tok, dim)...)
	}
	return x
}

// chunk runs n tokens of seq (positions from the context's length) through every layer and
// returns every layer's output, concatenated.
func chunk(t *testing.T, c *Context, seq, n int) []float32 {
	t.Helper()
	m := c.Model()
	from := int(c.NTokens())
	var out []float32
	for l := 0; l < m.NLayers(); l++ {
		x := seqRows(seq, l, from, n, m.Dim())
		y := make([]float32, len(x))
		if err := c.Append(l, x, y); err != nil {
			t.Fatal(err)
		}
		out = append(out, y...)
	}
	return out
}

func wantSame(t *testing.T, a, b []float32, what string) {
	t.Helper()
	if !sameBits(a, b) {
		t.Fatalf("%s: not bitwise equal", what)
	}
}

// contexts returns contexts with the given prefix lengths (sequence i+1 each) and twins built
// the same way.
func contexts(t *testing.T, m *Model, lens ...int) (batch, twins []*Context) {
	for k := 0; k < 2; k++ {
		var cs []*Context
		for i, n := range lens {
			c := newCtx(t, m, cpu)
			if n > 0 {
				chunk(t, c, i+1, n)
			}
			cs = append(cs, c)
		}
		if k == 0 {
			batch = cs
		} else {
			twins = cs
		}
	}
	return
}

// batchStep runs one batched chunk (counts[i] tokens of sequence i+1 for context i) through
// every layer and checks it bitwise against the same chunks run separately on the twins.
func batchStep(t *testing.T, batch, twins []*Context, counts []int, decode bool) {
	t.Helper()
	m := batch[0].Model()
	dim := m.Dim()
	from := make([]int, len(batch))
	for i, c := range batch {
		from[i] = int(c.NTokens())
	}
	for l := 0; l < m.NLayers(); l++ {
		var x []float32
		for i := range batch {
			x = append(x, seqRows(i+1, l, from[i], counts[i], dim)...)
		}
		y := make([]float32, len(x))
		var err error
		if decode {
			err = DecodeBatch(batch, l, x, y)
		} else {
			err = AppendBatch(batch, l, x, counts, y)
		}
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for i, tw := range twins {
			n := counts[i] * dim
			yt := make([]float32, n)
			if err := tw.Append(l, x[off:off+n], yt); err != nil {
				t.Fatal(err)
			}
			wantSame(t, y[off:off+n], yt, fmt.Sprintf("layer %d, context %d", l, i))
			off += n
		}
	}
	for i := range batch {
		if batch[i].NTokens() != twins[i].NTokens() || int(batch[i].NTokens()) != from[i]+counts[i] {
			t.Fatalf("context %d: %d tokens, twin %d", i, batch[i].NTokens(), twins[i].NTokens())
		}
	}
}

func ones(n int) []int {
	c := make([]int, n)
	for i := range c {
		c[i] = 1
	}
	return c
}

// wantUnchanged checks what "unchanged" means after a refusal: the same state as the twins, and
// the same outputs of one more decode step.
func wantUnchanged(t *testing.T, batch, twins []*Context) {
	t.Helper()
	for i := range batch {
		if batch[i].NTokens() != twins[i].NTokens() || batch[i].NextLayer() != twins[i].NextLayer() {
			t.Fatalf("context %d changed: %v, twin %v", i, batch[i], twins[i])
		}
	}
	batchStep(t, batch, twins, ones(len(batch)), true)
}

func TestDecodeBatchIsBitwiseSeparateDecodes(t *testing.T) {
	batch, twins := contexts(t, tiny(t), 5, 40, 130)
	for k := 0; k < 3; k++ {
		batchStep(t, batch, twins, ones(3), true)
	}
}

func TestAppendBatchRaggedIsBitwiseSeparateAppends(t *testing.T) {
	batch, twins := contexts(t, tiny(t), 0, 17, 129)
	batchStep(t, batch, twins, []int{3, 1, 17}, false)
	batchStep(t, batch, twins, []int{2, 64, 1}, false)
	batchStep(t, batch[1:2], twins[1:2], []int{5}, false)
}

func TestBatchRefusalsChangeNothing(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	batch, twins := contexts(t, m, 3, 9)
	x := append(seqInput(1, 0, 99, dim), seqInput(2, 0, 99, dim)...)
	y := make([]float32, len(x))

	nan := append([]float32{}, x...)
	nan[dim+5] = float32(math.NaN())
	e := wantStatus(t, DecodeBatch(batch, 0, nan, y), ErrNonfinite)
	if !strings.Contains(e.Message, "context 1") {
		t.Fatalf("the detail does not name context 1: %v", e)
	}
	wantStatus(t, AppendBatch(batch, 0, nan, []int{1, 1}, y), ErrNonfinite)
	wantStatus(t, DecodeBatch(batch, 1, x, y), ErrOrder)
	wantStatus(t, DecodeBatch(batch, 0, x[:dim], y[:dim]), ErrInvalidArg)
	wantStatus(t, AppendBatch(batch, 0, x, []int{1}, y), ErrInvalidArg)
	wantStatus(t, AppendBatch(batch, 0, x, []int{2, 0}, y), ErrNTokens)
	wantStatus(t, AppendBatch(batch, 0, x, []int{2, 1}, y), ErrInvalidArg)
	wantStatus(t, AppendBatch(batch, 0, x, nil, y), ErrInvalidArg)
	wantStatus(t, DecodeBatch(batch, 0, x, y[:len(y)-1]), ErrInvalidArg)
	wantStatus(t, DecodeBatch(batch, 0, x, x[1:]), ErrInvalidArg)
	wantStatus(t, DecodeBatchBF16(batch, 0, make([]uint16, 2*dim), make([]uint16, 2*dim)), ErrInvalidArg)
	wantStatus(t, DecodeBatch(nil, 0, nil, nil), ErrInvalidArg)
	// the same context twice (the library refuses it as well; locking it twice would deadlock)
	e = wantStatus(t, DecodeBatch([]*Context{batch[0], batch[0]}, 0, x, y), ErrInvalidArg)
	if !strings.Contains(e.Message, "same context") {
		t.Fatalf("unexpected %v", e)
	}
	wantStatus(t, DecodeBatch([]*Context{batch[0], nil}, 0, x, y), ErrNullArg)
	closed := newCtx(t, m, cpu)
	closed.Close()
	wantStatus(t, DecodeBatch([]*Context{batch[0], closed}, 0, x, y), ErrNullArg)

	// another model (same width), another cache format, another I/O type
	other, err := NewRandomModel("tiny", 43, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	o := newCtx(t, other, cpu)
	e = wantStatus(t, DecodeBatch([]*Context{batch[0], o}, 0, x, y), ErrModelMismatch)
	if !strings.Contains(e.Message, "context 1") {
		t.Fatalf("the detail does not name context 1: %v", e)
	}
	bf := newCtx(t, m, &ContextParams{Backend: BackendCPU, CacheFormat: CacheBF16})
	wantStatus(t, DecodeBatch([]*Context{batch[0], bf}, 0, x, y), ErrInvalidArg)
	b16 := newCtx(t, m, &ContextParams{Backend: BackendCPU, IODtype: IODtypeBF16})
	wantStatus(t, DecodeBatch([]*Context{batch[0], b16}, 0, x, y), ErrInvalidArg)
	if o.NTokens()+bf.NTokens()+b16.NTokens() != 0 {
		t.Fatal("a refused context changed")
	}
	wantUnchanged(t, batch, twins)
}

func TestBatchesFromSeveralGoroutines(t *testing.T) {
	// overlapping batches in opposite orders: the id order of the locks keeps them apart
	m := tiny(t)
	batch, twins := contexts(t, m, 4, 6)
	dim := m.Dim()
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 2; g++ {
		order := []*Context{batch[0], batch[1]}
		if g == 1 {
			order = []*Context{batch[1], batch[0]}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 20; k++ {
				x := make([]float32, 2*dim)
				// a layer the contexts are not at: refused after locking, nothing changes
				errs <- DecodeBatch(order, 1, x, make([]float32, len(x)))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		wantStatus(t, err, ErrOrder)
	}
	wantUnchanged(t, batch, twins)
}

func TestForkContinuesLikeTheSource(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	src := newCtx(t, m, cpu)
	reference := newCtx(t, m, cpu)
	chunk(t, src, 1, 150)
	chunk(t, reference, 1, 150)
	if err := src.SetMetadata([]byte("prompt")); err != nil {
		t.Fatal(err)
	}
	f, err := src.Fork(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if md, _ := f.Metadata(); f.NTokens() != 150 || string(md) != "prompt" {
		t.Fatalf("fork: %v, metadata %q", f, md)
	}
	fi, _ := f.MemoryInfo()
	si, _ := src.MemoryInfo()
	if fi.SharedBytes == 0 || si.SharedBytes == 0 || fi.OwnBytes+fi.SharedBytes != f.MemoryBytes() ||
		si.OwnBytes+si.SharedBytes != src.MemoryBytes() {
		t.Fatalf("memory of the fork %+v, of the source %+v", fi, si)
	}
	r := chunk(t, reference, 1, 3)
	wantSame(t, chunk(t, f, 1, 3), r, "fork")
	wantSame(t, chunk(t, src, 1, 3), r, "source")

	refF := newCtx(t, m, cpu)
	chunk(t, refF, 1, 153)
	wantSame(t, chunk(t, f, 5, 2), chunk(t, refF, 5, 2), "fork after divergence")
	wantSame(t, chunk(t, src, 1, 2), chunk(t, reference, 1, 2), "source after divergence")

	// the source may go first, even with its model closed; a fork of the fork still works
	src.Close()
	m.Close()
	ff, err := f.Fork(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ff.Close()
	wantSame(t, chunk(t, ff, 5, 1), chunk(t, refF, 5, 1), "fork of a fork")

	// with parameters: another I/O type and a rollback history of its own
	g, err := f.Fork(&ContextParams{IODtype: IODtypeBF16, MaxRollback: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.IODtype() != IODtypeBF16 || g.NTokens() != f.NTokens() {
		t.Fatalf("fork with params: %v", g)
	}
	wantStatus(t, g.Decode(0, make([]float32, dim), make([]float32, dim)), ErrInvalidArg)
	xb := make([]uint16, dim)
	for i, v := range seqInput(1, 0, 0, dim) {
		xb[i] = uint16(math.Float32bits(v) >> 16)
	}
	if err := g.DecodeBF16(0, xb, make([]uint16, dim)); err != nil {
		t.Fatal(err)
	}
	if gi, _ := g.MemoryInfo(); gi.HistoryBytes == 0 {
		t.Fatalf("no history: %+v", gi)
	}
}

func TestForkRefusals(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	src := newCtx(t, m, cpu)
	chunk(t, src, 1, 20)
	e := wantStatus(t, second(src.Fork(&ContextParams{Backend: BackendCUDA})), ErrInvalidArg)
	if !strings.Contains(e.Message, "fork") {
		t.Fatalf("unexpected %v", e)
	}
	wantStatus(t, second(src.Fork(&ContextParams{MaxTokens: 10})), ErrPosition)
	wantStatus(t, second(src.Fork(&ContextParams{MaxRollback: 65537})), ErrInvalidArg)
	if err := src.Decode(0, seqInput(1, 0, 20, dim), make([]float32, dim)); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, second(src.Fork(nil)), ErrOrder)
	if src.NTokens() != 20 || src.NextLayer() != 1 {
		t.Fatalf("source changed: %v", src)
	}
}

func second(_ *Context, err error) error { return err }

func TestTruncateThenAppendEqualsNeverSeen(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, &ContextParams{Backend: BackendCPU, MaxRollback: 16})
	reference := newCtx(t, m, cpu)
	chunk(t, c, 1, 100)
	chunk(t, reference, 1, 100)
	if c.TruncateLimit() != 84 {
		t.Fatalf("limit %d", c.TruncateLimit())
	}
	chunk(t, c, 9, 10) // tokens that will be taken back
	if c.NTokens() != 110 || c.TruncateLimit() != 94 {
		t.Fatalf("%v, limit %d", c, c.TruncateLimit())
	}
	if err := c.Truncate(100); err != nil {
		t.Fatal(err)
	}
	wantSame(t, chunk(t, c, 1, 5), chunk(t, reference, 1, 5), "after truncate")
	if err := c.Truncate(c.NTokens()); err != nil {
		t.Fatal(err)
	}
	wantSame(t, chunk(t, c, 1, 1), chunk(t, reference, 1, 1), "after a no-op truncate")
}

func TestTruncateRefusalsChangeNothing(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	p := &ContextParams{Backend: BackendCPU, MaxRollback: 4}
	c, twin, none := newCtx(t, m, p), newCtx(t, m, p), newCtx(t, m, cpu)
	for _, x := range []*Context{c, twin, none} {
		chunk(t, x, 1, 30)
	}
	if c.TruncateLimit() != 26 || none.TruncateLimit() != 30 {
		t.Fatalf("limits %d, %d", c.TruncateLimit(), none.TruncateLimit())
	}
	wantStatus(t, c.Truncate(25), ErrLimit)
	wantStatus(t, c.Truncate(31), ErrInvalidArg)
	wantStatus(t, c.Truncate(-1), ErrInvalidArg)
	e := wantStatus(t, none.Truncate(29), ErrLimit)
	if !strings.Contains(e.Message, "max_rollback") {
		t.Fatalf("unexpected %v", e)
	}
	for _, x := range []*Context{c, twin} {
		if err := x.Decode(0, seqInput(1, 0, 30, dim), make([]float32, dim)); err != nil {
			t.Fatal(err)
		}
	}
	wantStatus(t, c.Truncate(28), ErrOrder)
	if c.NTokens() != 30 || c.NextLayer() != 1 || c.TruncateLimit() != 26 || none.NTokens() != 30 {
		t.Fatalf("changed: %v, limit %d", c, c.TruncateLimit())
	}
	for l := 1; l < m.NLayers(); l++ {
		x := seqInput(1, l, 30, dim)
		a, b := make([]float32, dim), make([]float32, dim)
		if err := c.Decode(l, x, a); err != nil {
			t.Fatal(err)
		}
		if err := twin.Decode(l, x, b); err != nil {
			t.Fatal(err)
		}
		wantSame(t, a, b, "after the refusals")
	}
	wantSame(t, chunk(t, c, 1, 2), chunk(t, twin, 1, 2), "the next chunk")
}

type reports struct {
	mu   sync.Mutex
	list [][2]uint64
}

func (r *reports) recorder(stopAt uint64) ProgressFunc {
	return func(done, total uint64) bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.list = append(r.list, [2]uint64{done, total})
		return stopAt == 0 || done < stopAt
	}
}

func (r *reports) get() [][2]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][2]uint64(nil), r.list...)
}

func TestProgressReportsThePiecesOfAChunk(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	c := newCtx(t, m, &ContextParams{Backend: BackendCPU, MaxChunk: 16})
	var r reports
	if err := c.SetProgress(r.recorder(0)); err != nil {
		t.Fatal(err)
	}
	x := seqRows(1, 0, 0, 64, dim)
	if err := c.Append(0, x, make([]float32, len(x))); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(r.get()); got != "[[16 64] [32 64] [48 64] [64 64]]" {
		t.Fatalf("reports %s", got)
	}
	for l := 1; l < m.NLayers(); l++ {
		if err := c.Append(l, seqRows(1, l, 0, 64, dim), make([]float32, len(x))); err != nil {
			t.Fatal(err)
		}
	}
	var s reports
	if err := c.SetProgress(s.recorder(0)); err != nil {
		t.Fatal(err)
	}
	session, err := c.SaveBytes(nil)
	if err != nil {
		t.Fatal(err)
	}
	got := s.get()
	if len(got) == 0 || got[len(got)-1][0] != got[len(got)-1][1] {
		t.Fatalf("save reports %v", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i][0] < got[i-1][0] || got[i][1] != got[0][1] {
			t.Fatalf("save reports %v", got)
		}
	}
	if err := c.SetProgress(nil); err != nil {
		t.Fatal(err)
	}
	n := len(s.get())
	if err := c.LoadBytes(session); err != nil {
		t.Fatal(err)
	}
	if len(s.get()) != n {
		t.Fatal("a cleared callback was called")
	}
}

// stopLeavesTheContextUnchanged stops layer 1 of a 64-token chunk by the callback (returning
// false at stopAt, or panicking), then finishes without callback and compares with a twin.
func stopLeavesTheContextUnchanged(t *testing.T, stopAt uint64, panics bool) {
	m := tiny(t)
	dim := m.Dim()
	p := &ContextParams{Backend: BackendCPU, MaxChunk: 16}
	c, twin := newCtx(t, m, p), newCtx(t, m, p)
	chunk(t, c, 1, 10)
	chunk(t, twin, 1, 10)
	x0 := seqRows(1, 0, 10, 64, dim)
	for _, x := range []*Context{c, twin} {
		if err := x.Append(0, x0, make([]float32, len(x0))); err != nil {
			t.Fatal(err)
		}
	}
	var r reports
	f := r.recorder(stopAt)
	if panics {
		f = func(done, total uint64) bool {
			if done >= stopAt {
				panic(fmt.Sprintf("test panic at %d", done))
			}
			return true
		}
	}
	if err := c.SetProgress(f); err != nil {
		t.Fatal(err)
	}
	x1 := seqRows(1, 1, 10, 64, dim)
	e := wantStatus(t, c.Append(1, x1, make([]float32, len(x1))), ErrAborted)
	if panics && !strings.Contains(e.Message, "panicked: test panic at") {
		t.Fatalf("unexpected %v", e)
	}
	if c.NTokens() != 10 || c.NextLayer() != 1 {
		t.Fatalf("changed: %v", c)
	}
	if err := c.SetProgress(nil); err != nil {
		t.Fatal(err)
	}
	var out [2][]float32
	for i, x := range []*Context{c, twin} {
		for l := 1; l < m.NLayers(); l++ {
			xl := seqRows(1, l, 10, 64, dim)
			y := make([]float32, len(xl))
			if err := x.Append(l, xl, y); err != nil {
				t.Fatal(err)
			}
			out[i] = append(out[i], y...)
		}
	}
	wantSame(t, out[0], out[1], "after the stop")
	wantSame(t, chunk(t, c, 1, 1), chunk(t, twin, 1, 1), "the next token")
}

func TestProgressStopIsAbortedAndChangesNothing(t *testing.T) {
	stopLeavesTheContextUnchanged(t, 32, false)
}

func TestProgressStopAtTheLastReportChangesNothing(t *testing.T) {
	stopLeavesTheContextUnchanged(t, 64, false)
}

func TestProgressPanicIsAStop(t *testing.T) { stopLeavesTheContextUnchanged(t, 16, true) }

func TestProgressStopOfASaveKeepsTheFile(t *testing.T) {
	m := tiny(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "s.hcs")
	c := newCtx(t, m, cpu)
	chunk(t, c, 1, 8)
	if err := c.Save(path); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	chunk(t, c, 1, 8)
	if err := c.SetProgress(func(uint64, uint64) bool { return false }); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, c.Save(path), ErrAborted)
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("a stopped save changed the file")
	}
	wantStatus(t, c.Load(path), ErrAborted)
	if c.NTokens() != 16 {
		t.Fatalf("a stopped load changed the context: %v", c)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
}

func TestProgressStopOfOneContextStopsTheBatch(t *testing.T) {
	m := tiny(t)
	batch, twins := contexts(t, m, 4, 6)
	var r reports
	if err := batch[1].SetProgress(r.recorder(1)); err != nil {
		t.Fatal(err)
	}
	dim := m.Dim()
	x := append(seqInput(1, 0, 50, dim), seqInput(2, 0, 50, dim)...)
	wantStatus(t, DecodeBatch(batch, 0, x, make([]float32, len(x))), ErrAborted)
	if len(r.get()) != 1 {
		t.Fatalf("reports %v", r.get())
	}
	if err := batch[1].SetProgress(nil); err != nil {
		t.Fatal(err)
	}
	wantUnchanged(t, batch, twins)
}

func TestModelProgress(t *testing.T) {
	var r reports
	m, err := NewRandomModel("tiny", 42, &ModelOptions{Progress: r.recorder(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	n := uint64(m.NLayers())
	if got := r.get(); len(got) == 0 || got[len(got)-1] != [2]uint64{n, n} {
		t.Fatalf("reports %v", got)
	}
	_, err = NewRandomModel("tiny", 42, &ModelOptions{Progress: func(uint64, uint64) bool { return false }})
	wantStatus(t, err, ErrAborted)
	_, err = NewRandomModel("tiny", 42, &ModelOptions{Progress: func(uint64, uint64) bool { panic("model panic") }})
	if e := wantStatus(t, err, ErrAborted); !strings.Contains(e.Message, "panicked: model panic") {
		t.Fatalf("unexpected %v", e)
	}
	// the same weights as without a callback
	a, b := newCtx(t, m, cpu), newCtx(t, tiny(t), cpu)
	wantSame(t, chunk(t, a, 1, 3), chunk(t, b, 1, 3), "weights")
}

func TestMemoryInfoIsSane(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, cpu)
	i, err := c.MemoryInfo()
	if err != nil {
		t.Fatal(err)
	}
	if i.OwnBytes+i.SharedBytes != c.MemoryBytes() || i.SharedBytes != 0 || i.HistoryBytes != 0 || i.WorkspaceBytes == 0 {
		t.Fatalf("%+v", i)
	}
	chunk(t, c, 1, 200)
	j, _ := c.MemoryInfo()
	if j.OwnBytes <= i.OwnBytes || j.OwnBytes+j.SharedBytes != c.MemoryBytes() {
		t.Fatalf("%+v then %+v", i, j)
	}
	r16, _ := newCtx(t, m, &ContextParams{Backend: BackendCPU, MaxRollback: 16}).MemoryInfo()
	r64, _ := newCtx(t, m, &ContextParams{Backend: BackendCPU, MaxRollback: 64}).MemoryInfo()
	if r16.HistoryBytes == 0 || r16.HistoryBytes >= r64.HistoryBytes {
		t.Fatalf("%+v %+v", r16, r64)
	}
	_, err = NewContext(m, &ContextParams{Backend: BackendCPU, MaxRollback: 65537})
	wantStatus(t, err, ErrInvalidArg)
	c.Close()
	_, err = c.MemoryInfo()
	wantStatus(t, err, ErrNullArg)
}

// fakeDevice is an address that is never dereferenced: the calls below refuse it first.
const fakeDevice = DevicePtr(0x7f0000000000)

func TestDeviceIOOnACPUContextIsRefused(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	_, err := NewContext(m, &ContextParams{Backend: BackendCPU, IOMemory: IOMemoryDevice})
	if e := wantStatus(t, err, ErrInvalidArg); !strings.Contains(e.Message, "device-memory") {
		t.Fatalf("unexpected %v", e)
	}
	c, twin := newCtx(t, m, cpu), newCtx(t, m, cpu)
	chunk(t, c, 1, 5)
	chunk(t, twin, 1, 5)
	if c.IOMemory() != IOMemoryHost {
		t.Fatal(c.IOMemory())
	}
	x := DeviceSlice{Ptr: fakeDevice, Len: dim}
	y := DeviceSlice{Ptr: fakeDevice + 1<<20, Len: dim}
	for _, err := range []error{
		c.DecodeDevice(0, x, y),
		c.AppendDevice(0, x, x),
		DecodeBatchDevice([]*Context{c}, 0, x, y),
		AppendBatchDevice([]*Context{c}, 0, x, []int{1}, y),
	} {
		if e := wantStatus(t, err, ErrInvalidArg); !strings.Contains(e.Message, "host slices") {
			t.Fatalf("unexpected %v", e)
		}
	}
	if c.NTokens() != 5 || c.NextLayer() != 0 {
		t.Fatalf("changed: %v", c)
	}
	wantSame(t, chunk(t, c, 1, 2), chunk(t, twin, 1, 2), "after the refusals")
}

// A device-I/O context needs CUDA; its refusal of slices is the binding's own check, made before
// the library is called, so a CPU context marked as one exercises it.
func TestDeviceIOContextRefusesSlices(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	c := newCtx(t, m, cpu)
	c.ioMemory = IOMemoryDevice
	x, y := make([]float32, dim), make([]float32, dim)
	for _, err := range []error{
		c.Decode(0, x, y),
		c.Append(0, x, y),
		DecodeBatch([]*Context{c}, 0, x, y),
		AppendBatch([]*Context{c}, 0, x, []int{1}, y),
	} {
		if e := wantStatus(t, err, ErrInvalidArg); !strings.Contains(e.Message, "device memory (IOMemoryDevice)") {
			t.Fatalf("unexpected %v", e)
		}
	}
	// lengths and overlaps of device memory are the binding's checks too
	d := DeviceSlice{Ptr: fakeDevice, Len: 2 * dim}
	a, _ := d.Slice(0, dim, IODtypeF32)
	b, _ := d.Slice(dim/2, dim/2+dim, IODtypeF32)
	wantStatus(t, c.DecodeDevice(0, a, b), ErrInvalidArg)
	wantStatus(t, c.DecodeDevice(0, d, d), ErrInvalidArg)
	wantStatus(t, c.AppendDevice(0, a, d), ErrInvalidArg)
	wantStatus(t, c.AppendDevice(0, DeviceSlice{Ptr: fakeDevice, Len: dim - 1}, DeviceSlice{Ptr: fakeDevice, Len: dim - 1}), ErrInvalidArg)
	if _, err := d.Slice(0, 2*dim+1, IODtypeF32); err == nil {
		t.Fatal("a slice past the end")
	}
	if s, _ := d.Slice(3, 5, IODtypeBF16); s.Ptr != fakeDevice+6 || s.Len != 2 {
		t.Fatal(s)
	}
	// a fork without params keeps the source's I/O memory
	f, err := c.Fork(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.IOMemory() != IOMemoryDevice {
		t.Fatal(f.IOMemory())
	}
	if c.NTokens() != 0 || c.NextLayer() != 0 {
		t.Fatalf("changed: %v", c)
	}
}

func TestCUDADeviceIOContext(t *testing.T) {
	m := tiny(t)
	info := backendInfo(t, BackendCUDA, 0)
	c, err := NewContext(m, &ContextParams{Backend: BackendCUDA, IOMemory: IOMemoryDevice})
	if err != nil {
		// no usable CUDA here: the request fails cleanly with the reason
		if info.State == BackendUsable {
			t.Fatalf("CUDA is usable, but: %v", err)
		}
		if e := wantStatus(t, err, ErrNoDevice); e.Message == ErrNoDevice.Description() {
			t.Fatalf("no detail: %v", e)
		}
		return
	}
	defer c.Close()
	dim := m.Dim()
	if c.IOMemory() != IOMemoryDevice {
		t.Fatal(c.IOMemory())
	}
	wantStatus(t, c.Decode(0, make([]float32, dim), make([]float32, dim)), ErrInvalidArg)
	wantStatus(t, DecodeBatch([]*Context{c}, 0, make([]float32, dim), make([]float32, dim)), ErrInvalidArg)
	if c.NTokens() != 0 {
		t.Fatal("changed")
	}
}

func TestStreams(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, cpu)
	if err := c.SetStream(0); err != nil {
		t.Fatal(err)
	}
	// not a stream: a CPU context refuses it without using it
	wantStatus(t, c.SetStream(0x7f0000001000), ErrUnsupported)
	// a stream in the params of a CPU context is not used
	s := newCtx(t, m, &ContextParams{Backend: BackendCPU, CUDAStream: 0x7f0000001000})
	wantSame(t, chunk(t, c, 1, 2), chunk(t, s, 1, 2), "after SetStream")
}

func TestNumericsResolveToExactOnTheCPUAndForksKeepThem(t *testing.T) {
	m := tiny(t)
	dim := m.Dim()
	for _, n := range []Numerics{NumericsDefault, NumericsFast, NumericsExact} {
		c := newCtx(t, m, &ContextParams{Backend: BackendCPU, Numerics: n, MaxRollback: 4})
		if got := c.Numerics(); got != NumericsExact {
			t.Fatalf("numerics %d: the CPU context computes %d, want NumericsExact", n, got)
		}
		chunk(t, c, 1, 20)
		f, err := c.Fork(nil)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		g, err := c.Fork(&ContextParams{Numerics: n, MaxRollback: 2})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		if f.Numerics() != NumericsExact || g.Numerics() != NumericsExact {
			t.Fatalf("numerics %d: forks compute %d and %d", n, f.Numerics(), g.Numerics())
		}
		wantSame(t, chunk(t, f, 1, 2), chunk(t, g, 1, 2), "forks")
		c.Close()
		if c.Numerics() != -1 {
			t.Fatalf("a closed context's numerics: %d", c.Numerics())
		}
	}
	// contexts created with different values compute one numerics on the CPU: one batch
	a := newCtx(t, m, &ContextParams{Backend: BackendCPU, Numerics: NumericsFast})
	b := newCtx(t, m, &ContextParams{Backend: BackendCPU, Numerics: NumericsExact})
	x := seqRows(1, 0, 0, 2, dim)
	if err := DecodeBatch([]*Context{a, b}, 0, x, make([]float32, len(x))); err != nil {
		t.Fatal(err)
	}
	if a.NextLayer() != 1 || b.NextLayer() != 1 {
		t.Fatalf("after the batch: %v %v", a, b)
	}
}

func TestNumericsOutOfRangeAreRefused(t *testing.T) {
	m := tiny(t)
	for _, n := range []Numerics{3, -1, 1 << 20} {
		_, err := NewContext(m, &ContextParams{Backend: BackendCPU, Numerics: n})
		wantStatus(t, err, ErrInvalidArg)
	}
	c := newCtx(t, m, cpu)
	chunk(t, c, 1, 5)
	wantStatus(t, second(c.Fork(&ContextParams{Numerics: 3})), ErrInvalidArg)
	if c.NTokens() != 5 || c.Numerics() != NumericsExact {
		t.Fatalf("source changed: %v", c)
	}
}
