// Command receiver runs the sandbox's stand-ins for PagerDuty's Events API
// v2 and a Slack incoming webhook on one local address.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rollguard/rollguard/test/receiver"
)

func main() { os.Exit(run()) }

func run() int {
	listen := flag.String("listen", "127.0.0.1:0", "address to serve on")
	debug := flag.Bool("debug", false, "log every request")
	flag.Parse()

	cfg := zap.NewProductionConfig()
	if *debug {
		cfg.Level = zap.NewAtomicLevelAt(zapcore.DebugLevel)
	}
	logger, err := cfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "receiver: build logger:", err)
		return 1
	}
	defer func() { _ = logger.Sync() }()
	if err := serve(logger, *listen); err != nil {
		logger.Error("receiver failed", zap.Error(err))
		return 1
	}
	return 0
}

func serve(logger *zap.Logger, listen string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: receiver.New(logger), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	// The sandbox scripts read the address from this line.
	fmt.Printf("listening on %s\n", ln.Addr())
	logger.Info("receiver serving", zap.String("addr", ln.Addr().String()))

	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve http: %w", err)
	}
	// Hanging requests end with their connections: do not wait for them long.
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("shut down http: %w", err)
	}
	return nil
}
