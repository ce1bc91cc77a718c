package hybridctx

// Tests against the real library (CPU backend). Run with
// PKG_CONFIG_PATH=<builddir>/meson-uninstalled LD_LIBRARY_PATH=<builddir> go test ./...
// The cross-language session test reads HC_XLANG_DIR and HC_XLANG_REQUIRE (bindings/README.md).

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

func tiny(t *testing.T) *Model {
	t.Helper()
	m, err := NewRandomModel("tiny", 42, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

var cpu = &ContextParams{Backend: BackendCPU}

func newCtx(t *testing.T, m *Model, p *ContextParams) *Context {
	t.Helper()
	c, err := NewContext(m, p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// input is the shared input of the cross-language scenario: exact in float32 in every language.
func input(layer, tok, dim int) []float32 {
	x := make([]float32, dim)
	for i := range x {
		k := (uint64(layer)*1000003+uint64(tok))*uint64(dim) + uint64(i)
		h := (k*2654435761 + 12345) & 0xffffffff
		x[i] = float32(h>>8)/8388608 - 1
	}
	return x
}

const (
	prefixLen = 150
	decodeLen = 2
)

// prefix runs the scenario's prefix: one chunk of prefixLen tokens, layer l taking input(l, t).
func prefix(t *testing.T, c *Context) {
	t.Helper()
	m := c.Model()
	for l := 0; l < m.NLayers(); l++ {
		x := make([]float32, 0, prefixLen*m.Dim())
		for tok := 0; tok < prefixLen; tok++ {
			x = append(x, input(l, tok, m.Dim())...)
		}
		if err := c.Append(l, x, make([]float32, len(x))); err != nil {
			t.Fatal(err)
		}
	}
}

// decodeTail decodes decodeLen tokens after the prefix; all layers' outputs, concatenated.
func decodeTail(t *testing.T, c *Context) []float32 {
	t.Helper()
	m := c.Model()
	var out []float32
	for k := 0; k < decodeLen; k++ {
		for l := 0; l < m.NLayers(); l++ {
			y := make([]float32, m.Dim())
			if err := c.Decode(l, input(l, prefixLen+k, m.Dim()), y); err != nil {
				t.Fatal(err)
			}
			out = append(out, y...)
		}
	}
	return out
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func wantStatus(t *testing.T, err error, s Status) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want an *Error with %s, got %v", s.Name(), err)
	}
	if e.Status != s || !errors.Is(err, s) {
		t.Fatalf("want %s, got %v", s.Name(), err)
	}
	if e.Message == "" {
		t.Fatalf("%s without a message", s.Name())
	}
	return e
}

func TestVersion(t *testing.T) {
	if err := CheckVersion(); err != nil {
		t.Fatal(err)
	}
	// a library of the bindings' major version and at least their minor (0.2 bindings load 0.3)
	if !strings.HasPrefix(Version(), "0.") || VersionNumber()/10000 != BindingVersionMajor ||
		VersionNumber()/100 < BindingVersionMajor*100+BindingVersionMinor {
		t.Fatalf("version %s (%d)", Version(), VersionNumber())
	}
}

func TestVersionMismatch(t *testing.T) {
	if versionError(200, "0.2.0") != nil || versionError(305, "0.3.5") != nil {
		t.Fatal("a compatible version was refused")
	}
	if versionError(100, "0.1.0") == nil {
		t.Fatal("0.1 accepted by bindings of 0.2")
	}
	err := versionError(10000, "1.0.0")
	if !errors.Is(err, ErrVersion) || err.Error() != "HC_ERR_VERSION: libhybridctx 1.0.0 is loaded, "+
		"but these Go bindings need version 0.x with x >= 2 (install a matching libhybridctx or matching bindings)" {
		t.Fatalf("unexpected %v", err)
	}
	if versionError(0, "0.0.0") == nil {
		t.Fatal("0.0 accepted")
	}
}

func TestModelInfo(t *testing.T) {
	m := tiny(t)
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	if m.NLayers() != 4 || m.Dim() != 512 || info.NLayers != 4 || info.Dim != 512 || !info.HasWeights || info.WeightBytes == 0 {
		t.Fatalf("unexpected info %+v", info)
	}
	if m.LayerRatio(0) < 0 || m.LayerRatio(4) != -1 {
		t.Fatal("LayerRatio")
	}
	kvb, _, err := m.CacheBytes(1<<20, CacheBF16)
	if err != nil {
		t.Fatal(err)
	}
	kvf, _, _ := m.CacheBytes(1<<20, CacheFP8)
	if !(kvb > kvf && kvf > 0) {
		t.Fatalf("cache bytes bf16 %d fp8 %d", kvb, kvf)
	}
	g, err := NewRandomModel("tiny", 1, &ModelOptions{GeometryOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	gi, _ := g.Info()
	if gi.HasWeights {
		t.Fatal("geometry-only model has weights")
	}
	c := newCtx(t, g, cpu)
	wantStatus(t, c.Decode(0, input(0, 0, 512), make([]float32, 512)), ErrUnsupported)
}

func testData() string {
	if d := os.Getenv("HC_TEST_DATA"); d != "" {
		return d
	}
	return "../../tests/data"
}

func TestLoadCheckpoint(t *testing.T) {
	m, err := LoadModel(filepath.Join(testData(), "tiny-a-short.safetensors"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.NLayers() <= 0 || m.Dim() <= 0 {
		t.Fatal("empty model")
	}
}

// goldenJSON is the configuration of the C library's golden session files
// (tests/test_session_util.c).
const goldenJSON = `{"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8, "head_dim": 128,` +
	` "qk_rope_head_dim": 64, "q_lora_rank": 256, "o_groups": 2, "o_lora_rank": 256,` +
	` "index_n_heads": 8, "index_head_dim": 128, "index_topk": 16, "sliding_window": 128,` +
	` "rope_theta": 10000, "compress_rope_theta": 160000, "rms_norm_eps": 1e-6,` +
	` "max_position_embeddings": 1048576,` +
	` "rope_scaling": {"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,` +
	` "beta_fast": 32, "beta_slow": 1},` +
	` "compress_ratios": [0, 4, 128, 4]}`

// TestGoldenSessions loads the session files written by the C library's golden test.
func TestGoldenSessions(t *testing.T) {
	m, err := NewRandomModel(goldenJSON, 1, &ModelOptions{GeometryOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, name := range []string{"session-golden-v1.0-raw.hcs", "session-golden-v1.0-zstd.hcs"} {
		path := filepath.Join(testData(), name)
		if _, err := os.Stat(path); err != nil {
			t.Logf("%s not found: skipped", name)
			continue
		}
		c := newCtx(t, m, cpu)
		if err := c.Load(path); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		md, _ := c.Metadata()
		if c.NTokens() != 300 || string(md) != "golden session, format 1.0\x00" {
			t.Fatalf("%s: %d tokens, metadata %q", name, c.NTokens(), md)
		}
	}
}

func TestAppendDecode(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, cpu)
	if c.Backend() != BackendCPU {
		t.Fatal("backend")
	}
	dim := m.Dim()
	x := make([]float32, 0, 8*dim)
	for i := 0; i < 8; i++ {
		x = append(x, input(0, 0, dim)...)
	}
	y := make([]float32, len(x))
	for l := 0; l < m.NLayers(); l++ {
		if c.NextLayer() != l {
			t.Fatal("NextLayer")
		}
		if err := c.Append(l, x, y); err != nil {
			t.Fatal(err)
		}
	}
	if c.NTokens() != 8 || c.MemoryBytes() == 0 {
		t.Fatal("state after a chunk")
	}
	xy := input(1, 8, dim)
	for l := 0; l < m.NLayers(); l++ {
		if err := c.Decode(l, xy, xy); err != nil { // y may be x
			t.Fatal(err)
		}
	}
	if c.NTokens() != 9 {
		t.Fatal("NTokens")
	}
	if err := c.Reset(); err != nil || c.NTokens() != 0 {
		t.Fatal("Reset", err)
	}
}

func TestBF16(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, &ContextParams{Backend: BackendCPU, IODtype: IODtypeBF16})
	x := make([]uint16, m.Dim())
	for i, v := range input(0, 0, m.Dim()) {
		x[i] = uint16(math.Float32bits(v) >> 16)
	}
	y := make([]uint16, m.Dim())
	if err := c.DecodeBF16(0, x, y); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, c.Decode(1, make([]float32, m.Dim()), make([]float32, m.Dim())), ErrInvalidArg)
}

func TestBadCalls(t *testing.T) {
	m := tiny(t)
	c := newCtx(t, m, cpu)
	dim := m.Dim()
	x, y := input(0, 0, dim), make([]float32, dim)

	e := wantStatus(t, c.Decode(2, x, y), ErrOrder)
	if !strings.Contains(e.Message, "needs layer 0") || !strings.HasPrefix(e.Error(), "HC_ERR_ORDER: ") {
		t.Fatalf("message %q", e.Error())
	}
	wantStatus(t, c.Decode(7, x, y), ErrLayerRange)
	wantStatus(t, c.Decode(-1, x, y), ErrLayerRange)
	// wrong slice lengths are caught before calling C
	e = wantStatus(t, c.Append(0, x[:dim-1], y[:dim-1]), ErrInvalidArg)
	if !strings.Contains(e.Message, "multiple of the model width") {
		t.Fatal(e)
	}
	wantStatus(t, c.Append(0, x, y[:dim-1]), ErrInvalidArg)
	wantStatus(t, c.Append(0, nil, nil), ErrNTokens)
	two := append(append([]float32{}, x...), x...)
	wantStatus(t, c.Decode(0, two, make([]float32, len(two))), ErrInvalidArg)
	wantStatus(t, c.AppendBF16(0, make([]uint16, dim), make([]uint16, dim)), ErrInvalidArg)
	buf := make([]float32, 3*dim)
	wantStatus(t, c.Append(0, buf[:2*dim], buf[dim:]), ErrInvalidArg) // y overlaps x
	_, err := NewContext(nil, cpu)
	wantStatus(t, err, ErrNullArg)
	nan := append([]float32{}, x...)
	nan[3] = float32(math.NaN())
	wantStatus(t, c.Decode(0, nan, y), ErrNonfinite)

	// a chunk in progress cannot be saved
	if err := c.Decode(0, x, y); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	wantStatus(t, c.Save(filepath.Join(dir, "s.hcs")), ErrOrder)
	for l := 1; l < m.NLayers(); l++ {
		if err := c.Decode(l, x, y); err != nil {
			t.Fatal(err)
		}
	}
	if c.NTokens() != 1 {
		t.Fatal("the context should still work")
	}

	_, err = LoadModel("/nonexistent/model/dir", nil)
	wantStatus(t, err, ErrIO)
	wantStatus(t, c.Load(filepath.Join(dir, "missing.hcs")), ErrIO)
	junk := filepath.Join(dir, "junk.hcs")
	os.WriteFile(junk, []byte("not a session at all"), 0o644)
	if err := c.Load(junk); err == nil {
		t.Fatal("a junk session loaded")
	}
	if c.NTokens() != 1 {
		t.Fatal("a failed load changed the context")
	}
	_, err = NewRandomModel("no-such-preset", 1, nil)
	wantStatus(t, err, ErrUnknownPreset)
	if CUDADeviceCount() == 0 {
		_, err = NewContext(m, &ContextParams{Backend: BackendCUDA})
		if !errors.Is(err, ErrNoDevice) {
			t.Fatalf("want ErrNoDevice, got %v", err)
		}
	}

	// closed objects
	c2 := newCtx(t, m, cpu)
	c2.Close()
	c2.Close()
	wantStatus(t, c2.Decode(0, x, y), ErrNullArg)
	if c2.NTokens() != -1 {
		t.Fatal("NTokens of a closed context")
	}
}

func TestModelOutlivesClose(t *testing.T) {
	m, err := NewRandomModel("tiny", 42, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewContext(m, cpu)
	if err != nil {
		t.Fatal(err)
	}
	m.Close() // freed only after the context is closed
	if _, err := NewContext(m, cpu); !errors.Is(err, ErrNullArg) {
		t.Fatal("a closed model made a context")
	}
	y := make([]float32, m.Dim())
	for l := 0; l < m.NLayers(); l++ {
		if err := c.Decode(l, input(l, 0, m.Dim()), y); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	if m.ptr != nil {
		t.Fatal("the model was not freed after its last context")
	}
}

func TestFinalizers(t *testing.T) {
	for i := 0; i < 3; i++ {
		m, _ := NewRandomModel("tiny", 42, nil)
		NewContext(m, cpu) // dropped without Close: the finalizers free both
	}
	runtime.GC()
	runtime.GC()
}

func TestConcurrentContexts(t *testing.T) {
	m := tiny(t)
	shared := newCtx(t, m, cpu)
	var wg sync.WaitGroup
	results := make([][]float32, 4)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			c, err := NewContext(m, &ContextParams{Backend: BackendCPU, NThreads: 1})
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			y := make([]float32, m.Dim())
			for l := 0; l < m.NLayers(); l++ {
				if err := c.Decode(l, input(l, 0, m.Dim()), y); err != nil {
					t.Error(err)
					return
				}
			}
			results[g] = y
			// goroutines sharing one context are serialised by its mutex
			shared.NTokens()
			shared.MemoryBytes()
		}(g)
	}
	wg.Wait()
	for g := 1; g < 4; g++ {
		if !sameBits(results[0], results[g]) {
			t.Fatal("contexts on one model differ")
		}
	}
}

func TestSaveLoad(t *testing.T) {
	m := tiny(t)
	ref := newCtx(t, m, cpu)
	prefix(t, ref)
	a := newCtx(t, m, cpu)
	prefix(t, a)
	if err := a.SetMetadata([]byte("token ids")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "go-self.hcs")
	if err := a.SaveWith(path, &SaveOptions{Compression: CompressZstd, ZstdLevel: 3}); err != nil {
		t.Fatal(err)
	}
	blob, err := a.SaveBytes(nil)
	if err != nil || len(blob) == 0 {
		t.Fatal("SaveBytes", err)
	}
	want := decodeTail(t, ref)

	b := newCtx(t, m, cpu)
	if err := b.Load(path); err != nil {
		t.Fatal(err)
	}
	md, _ := b.Metadata()
	if b.NTokens() != prefixLen || string(md) != "token ids" {
		t.Fatalf("loaded %d tokens, metadata %q", b.NTokens(), md)
	}
	if !sameBits(decodeTail(t, b), want) {
		t.Fatal("decode differs after Load")
	}
	c := newCtx(t, m, &ContextParams{Backend: BackendCPU, CacheFormat: CacheBF16})
	if err := c.LoadBytes(blob); err != nil {
		t.Fatal(err)
	}
	if !sameBits(decodeTail(t, c), want) {
		t.Fatal("decode differs after LoadBytes")
	}
	if err := c.SetMetadata(nil); err != nil {
		t.Fatal(err)
	}
	if md, _ := c.Metadata(); md != nil {
		t.Fatal("metadata not removed")
	}
}

// TestCrossLanguageSessions writes go.hcs into HC_XLANG_DIR and checks every other language's
// session found there (those named in HC_XLANG_REQUIRE must be present).
func TestCrossLanguageSessions(t *testing.T) {
	dir := os.Getenv("HC_XLANG_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m := tiny(t)
	ref := newCtx(t, m, cpu)
	prefix(t, ref)
	if err := ref.Save(filepath.Join(dir, "go.hcs")); err != nil {
		t.Fatal(err)
	}
	want := decodeTail(t, ref)
	for _, lang := range strings.Fields(os.Getenv("HC_XLANG_REQUIRE")) {
		if _, err := os.Stat(filepath.Join(dir, lang+".hcs")); err != nil {
			t.Fatalf("the %s session is missing from %s", lang, dir)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.hcs"))
	sort.Strings(files)
	for _, f := range files {
		c := newCtx(t, m, cpu)
		if err := c.Load(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if c.NTokens() != prefixLen || !sameBits(decodeTail(t, c), want) {
			t.Fatalf("%s: decode differs after loading", f)
		}
		t.Logf("checked %s", filepath.Base(f))
	}
}

const cpuCaps = CapHostIO | CapThreads | CapBitwiseCPU

// cudaAbsent reports whether s explains a CUDA backend missing on a machine without a GPU: a
// CPU-only build (NotBuilt), a CUDA build without its module or the CUDA runtime
// (ModuleMissing), or without a driver or device (NoDevice).
func cudaAbsent(s BackendState) bool {
	return s == BackendNotBuilt || s == BackendModuleMissing || s == BackendNoDevice
}

func backendInfo(t *testing.T, b Backend, device int) BackendInfo {
	t.Helper()
	info, err := b.Info(device)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestBackendInfoCPU(t *testing.T) {
	info := backendInfo(t, BackendCPU, 0)
	want := BackendInfo{Backend: BackendCPU, State: BackendUsable, NDevices: 1, Caps: cpuCaps, Name: "cpu", Detail: info.Detail}
	if info != want || info.Detail == "" {
		t.Fatalf("CPU backend: %+v", info)
	}
	if uint32(info.Caps) != 1|8|16 || !info.Caps.Has(CapHostIO|CapBitwiseCPU) || info.Caps.Has(CapDeviceIO) {
		t.Fatalf("CPU caps %v", info.Caps)
	}
	if s := info.Caps.String(); s != "HC_CAP_HOST_IO|HC_CAP_THREADS|HC_CAP_BITWISE_CPU" {
		t.Fatalf("caps string %q", s)
	}
	if s := (CapStream | 64).String(); s != "HC_CAP_STREAM|0x40" {
		t.Fatalf("caps string %q", s)
	}
	if info.State.String() != "HC_BACKEND_USABLE" || BackendState(9).String() != "BackendState(9)" {
		t.Fatalf("state strings %v %v", info.State, BackendState(9))
	}
	if backendInfo(t, BackendCPU, 5) != info { // the CPU ignores the device
		t.Fatal("the CPU backend depends on the device")
	}
}

func TestBackendInfoCUDAAndAuto(t *testing.T) {
	cuda := backendInfo(t, BackendCUDA, 0)
	auto := backendInfo(t, BackendAuto, 0)
	if cuda.Backend != BackendCUDA || cuda.Name != "cuda" || cuda.Detail == "" {
		t.Fatalf("CUDA backend: %+v", cuda)
	}
	c := newCtx(t, tiny(t), nil)
	if c.Backend() != auto.Backend {
		t.Fatalf("a BackendAuto context runs on %d, Info said %+v", c.Backend(), auto)
	}
	if cuda.State == BackendUsable { // a GPU: AUTO picks it
		if cuda.NDevices < 1 || cuda.NDevices != CUDADeviceCount() || !cuda.Caps.Has(CapHostIO|CapDeviceIO) || auto != cuda {
			t.Fatalf("CUDA %+v, AUTO %+v", cuda, auto)
		}
		if s := backendInfo(t, BackendCUDA, cuda.NDevices).State; s != BackendNoDevice {
			t.Fatalf("CUDA device %d: %v", cuda.NDevices, s)
		}
		return
	}
	if !cudaAbsent(cuda.State) || cuda.NDevices != 0 || cuda.Caps != 0 || CUDADeviceCount() != 0 {
		t.Fatalf("CUDA backend: %+v", cuda)
	}
	if cuda.State == BackendNotBuilt && !strings.Contains(cuda.Detail, "no CUDA backend") {
		t.Fatalf("CUDA detail %q", cuda.Detail)
	}
	// AUTO picks the CPU; its state says why not CUDA
	want := BackendInfo{Backend: BackendCPU, State: cuda.State, NDevices: 1, Caps: cpuCaps, Name: "cpu", Detail: auto.Detail}
	d := cuda.Detail
	if len(d) > 200 {
		d = d[:200]
	}
	if auto != want || !strings.HasPrefix(auto.Detail, "cuda not used: ") || !strings.Contains(auto.Detail, d) {
		t.Fatalf("AUTO: %+v (CUDA: %+v)", auto, cuda)
	}
}

func TestBackendInfoBadArgs(t *testing.T) {
	for _, b := range []Backend{3, -1} {
		_, err := b.Info(0)
		if e := wantStatus(t, err, ErrInvalidArg); !strings.Contains(e.Message, "backend") {
			t.Fatal(e)
		}
	}
	devices := []int{-1}
	if big := int64(math.MaxInt32) + 1; int64(int(big)) == big { // 64-bit int
		devices = append(devices, int(big))
	}
	for _, d := range devices {
		_, err := BackendCUDA.Info(d)
		if e := wantStatus(t, err, ErrInvalidArg); !strings.Contains(e.Message, "device") {
			t.Fatal(e)
		}
	}
}

func TestNewContextErrorCarriesDetail(t *testing.T) {
	m := tiny(t)
	cuda := backendInfo(t, BackendCUDA, 0)
	if cuda.State != BackendUsable && !cudaAbsent(cuda.State) {
		t.Fatalf("CUDA backend: %+v", cuda)
	}
	device := cuda.NDevices // none on a machine without a GPU; one past the last one with GPUs
	_, err := NewContext(m, &ContextParams{Backend: BackendCUDA, Device: device})
	e := wantStatus(t, err, ErrNoDevice)
	if e.Message == ErrNoDevice.Description() || err.Error() != "HC_ERR_NO_DEVICE: "+e.Message {
		t.Fatalf("no detail: %v", err)
	}
	switch cuda.State {
	case BackendNotBuilt, BackendModuleMissing:
		if e.Message != "CUDA backend: "+cuda.Detail {
			t.Fatalf("message %q, backend detail %q", e.Message, cuda.Detail)
		}
		if cuda.State == BackendNotBuilt && !strings.Contains(e.Message, "no CUDA backend") {
			t.Fatalf("message %q", e.Message)
		}
	default: // the module is loaded: it names the device asked for
		if !strings.Contains(e.Message, fmt.Sprintf("CUDA device %d asked for", device)) {
			t.Fatalf("message %q", e.Message)
		}
	}
}
