module hybridctx

go 1.19
