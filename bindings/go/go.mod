module libhybridctx.org/go/hybridctx

go 1.19
