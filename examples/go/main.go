// model_loop - a whole (toy) model around libhybridctx's attention; examples/c/model_loop.c in
// Go, printing the same numbers.
//
// The embedded `tiny` model with random weights and a CPU context run a model loop: a few chunks
// of a prompt, then token-by-token decoding. Every layer is our attention; between layers the
// application runs its own parts, here toy stand-ins (elementwise float32 only):
//
//	x = squash(h)                 the "attn_norm" before the attention, squash(v) = v / (1 + |v|)
//	h += attention(x)             ctx.Append / ctx.Decode, the residual add
//	h += 0.5 * squash(h[perm])    a "MLP" that mixes channels, perm(i) = (7 i + 3) mod dim
//
// The next token's input is squash(h) of the last one. The session is saved to a temporary file
// and loaded into a fresh context; one more token decoded in both must match bit for bit.
//
//	cd examples/go && go run .     (PKG_CONFIG_PATH / LD_LIBRARY_PATH as for the package)
package main

import (
	"fmt"
	"log"
	"math"
	"os"
	"path/filepath"
	"strings"

	"libhybridctx.org/go/hybridctx"
)

const (
	chunks = 3
	chunk  = 48
	decode = 4
)

func squash(v float32) float32 {
	return v / (1 + float32(math.Abs(float64(v))))
}

// forward runs a chunk (h: [n][dim], updated in place) through every layer; one token decodes.
func forward(ctx *hybridctx.Context, h []float32) error {
	dim := ctx.Model().Dim()
	x := make([]float32, len(h))
	y := make([]float32, len(h))
	m := make([]float32, dim)
	for layer := 0; layer < ctx.Model().NLayers(); layer++ {
		for k := range h {
			x[k] = squash(h[k])
		}
		var err error
		if len(h) == dim {
			err = ctx.Decode(layer, x, y)
		} else {
			err = ctx.Append(layer, x, y)
		}
		if err != nil {
			return err
		}
		for k := range h {
			h[k] += y[k]
		}
		for t := 0; t < len(h); t += dim { // toy MLP, from a copy of the token's h
			ht := h[t : t+dim]
			for i := range m {
				m[i] = 0.5 * squash(ht[(7*i+3)%dim])
			}
			for i := range m {
				ht[i] += m[i]
			}
		}
	}
	return nil
}

func head(what string, v []float32) {
	s := make([]string, 4)
	for i := range s {
		s[i] = fmt.Sprintf("%.6f", v[i])
	}
	fmt.Printf("%s h[:4] = [%s]\n", what, strings.Join(s, ", "))
}

func run() (bool, error) {
	model, err := hybridctx.NewRandomModel("tiny", 42, nil)
	if err != nil {
		return false, err
	}
	defer model.Close()
	layers, dim := model.NLayers(), model.Dim()
	fmt.Printf("libhybridctx %s: model tiny, %d layers, dim %d\n", hybridctx.Version(), layers, dim)
	params := &hybridctx.ContextParams{Backend: hybridctx.BackendCPU}
	ctx, err := hybridctx.NewContext(model, params)
	if err != nil {
		return false, err
	}
	defer ctx.Close()

	// prompt: chunks chunks of chunk tokens, a made-up embedding per position
	h := make([]float32, chunk*dim)
	for ch := 0; ch < chunks; ch++ {
		for k := range h {
			pos, i := ch*chunk+k/dim, k%dim
			h[k] = float32((pos*31+i*7)%101)/50 - 1
		}
		if err := forward(ctx, h); err != nil {
			return false, err
		}
	}
	fmt.Printf("prompt: %d chunks of %d tokens, context holds %d tokens\n", chunks, chunk, ctx.NTokens())
	h = append([]float32{}, h[(chunk-1)*dim:]...) // from here on h is one token
	head("last prompt token:", h)

	// decoding: each token's input comes from the previous token's output
	for d := 0; d < decode; d++ {
		for i := range h {
			h[i] = squash(h[i])
		}
		if err := forward(ctx, h); err != nil {
			return false, err
		}
	}
	head(fmt.Sprintf("decoded %d tokens, last:", decode), h)

	// save, load into a fresh context, decode one more token in both
	tmp, err := os.MkdirTemp("", "hybridctx-model-loop-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	path := filepath.Join(tmp, "session.hcs")
	if err := ctx.Save(path); err != nil {
		return false, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	restored, err := hybridctx.NewContext(model, params)
	if err != nil {
		return false, err
	}
	defer restored.Close()
	if err := restored.Load(path); err != nil {
		return false, err
	}
	fmt.Printf("saved the session (%d bytes), loaded it into a new context: %d tokens\n", st.Size(), restored.NTokens())
	for i := range h {
		h[i] = squash(h[i])
	}
	h2 := append([]float32{}, h...)
	if err := forward(ctx, h); err != nil {
		return false, err
	}
	if err := forward(restored, h2); err != nil {
		return false, err
	}
	same := true
	for i := range h {
		same = same && math.Float32bits(h[i]) == math.Float32bits(h2[i])
	}
	head("next token, original context:", h)
	head("next token, restored context:", h2)
	fmt.Printf("restored context bitwise identical: %v\n", same)
	return same, nil
}

func main() {
	same, err := run()
	if err != nil {
		log.Fatal(err)
	}
	if !same {
		os.Exit(1)
	}
}
