module model_loop

go 1.19

require libhybridctx.org/go/hybridctx v0.1.0

replace libhybridctx.org/go/hybridctx => ../../bindings/go
