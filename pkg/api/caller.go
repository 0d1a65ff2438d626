package api

import "context"

// Token is one bearer token of the API. Name, when the token file names
// its tokens, is the caller recorded with what the request asked for.
type Token struct {
	Name   string
	Secret []byte
}

type callerKey struct{}

func withCaller(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, callerKey{}, name)
}

// Caller is the name of the token an authenticated request came with
// ("" for an unnamed token).
func Caller(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}
