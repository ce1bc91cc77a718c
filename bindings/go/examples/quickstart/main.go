// The quick-start program of every binding's README: create the tiny model, append a chunk
// through every layer, decode a token, save the session, load it into a new context, decode the
// next token in both contexts and compare.
//
//	go run ./examples/quickstart [session-path]
package main

import (
	"fmt"
	"log"
	"math"
	"os"
	"strings"

	"libhybridctx.org/go/hybridctx"
)

// decode runs one token through every layer; the output of a layer is the next layer's input
// (a real application runs its MLP there).
func decode(c *hybridctx.Context, token []float32) ([]float32, error) {
	x := append([]float32{}, token...)
	y := make([]float32, len(x))
	for layer := 0; layer < c.Model().NLayers(); layer++ {
		if err := c.Decode(layer, x, y); err != nil {
			return nil, err
		}
		copy(x, y)
	}
	return y, nil
}

func head(v []float32) string {
	s := make([]string, 4)
	for i := range s {
		s[i] = fmt.Sprintf("%.6f", v[i])
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func run(path string) error {
	model, err := hybridctx.NewRandomModel("tiny", 42, nil)
	if err != nil {
		return err
	}
	defer model.Close()
	layers, dim := model.NLayers(), model.Dim()
	fmt.Printf("libhybridctx %s: model tiny, %d layers, dim %d\n", hybridctx.Version(), layers, dim)

	params := &hybridctx.ContextParams{Backend: hybridctx.BackendCPU}
	ctx, err := hybridctx.NewContext(model, params)
	if err != nil {
		return err
	}
	defer ctx.Close()
	n := 64
	x := make([]float32, n*dim)
	for i := range x {
		x[i] = float32(i*7%101)/50 - 1
	}
	y := make([]float32, n*dim)
	for layer := 0; layer < layers; layer++ {
		if err := ctx.Append(layer, x, y); err != nil {
			return err
		}
		copy(x, y)
	}
	token := make([]float32, dim)
	for i := range token {
		token[i] = float32(i*3%17)/8 - 1
	}
	y1, err := decode(ctx, token)
	if err != nil {
		return err
	}
	fmt.Printf("appended %d tokens, decoded 1: y[:4] = %s\n", n, head(y1))

	if err := ctx.Save(path); err != nil {
		return err
	}
	st, _ := os.Stat(path)
	restored, err := hybridctx.NewContext(model, params)
	if err != nil {
		return err
	}
	defer restored.Close()
	if err := restored.Load(path); err != nil {
		return err
	}
	fmt.Printf("saved %s (%d bytes), loaded into a new context: %d tokens\n", path, st.Size(), restored.NTokens())

	a, err := decode(ctx, y1)
	if err != nil {
		return err
	}
	b, err := decode(restored, y1)
	if err != nil {
		return err
	}
	same := true
	for i := range a {
		same = same && math.Float32bits(a[i]) == math.Float32bits(b[i])
	}
	fmt.Printf("next token: y[:4] = %s, restored context identical: %v\n", head(b), same)
	if !same {
		os.Exit(1)
	}
	return nil
}

func main() {
	path := "session.hcs"
	if len(os.Args) > 1 {
		path = os.Args[1]
	}
	if err := run(path); err != nil {
		log.Fatal(err)
	}
}
