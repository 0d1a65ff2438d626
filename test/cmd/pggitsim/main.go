// Command pggitsim runs the pggit-api simulator of the sandbox: it watches
// the Deployments labelled pggitsim.rollguard.io/simulate=true and serves
// the metrics and health answers of their Ready Pods.
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
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/test/pggitsim"
)

func main() { os.Exit(run()) }

func run() int {
	var (
		listen     = flag.String("listen", "127.0.0.1:0", "address to serve on")
		kubeconfig = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the cluster to watch")
		profiles   = flag.String("profiles", "", "YAML file of fault profiles by image tag (built-in defaults when empty)")
		pgDSN      = flag.String("pg-dsn", "", "application role DSN for /control/pg (disabled when empty)")
		tick       = flag.Duration("tick", pggitsim.DefaultTick, "traffic loop period")
		debug      = flag.Bool("debug", false, "log every traffic step")
	)
	flag.Parse()

	lvl := zapcore.InfoLevel
	if *debug {
		lvl = zapcore.DebugLevel
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	logger, err := cfg.Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pggitsim: build logger:", err)
		return 1
	}
	defer func() { _ = logger.Sync() }()

	if err := serve(logger, *listen, *kubeconfig, *profiles, *pgDSN, *tick); err != nil {
		logger.Error("pggitsim failed", zap.Error(err))
		return 1
	}
	return 0
}

func serve(logger *zap.Logger, listen, kubeconfig, profilesPath, pgDSN string, tick time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if kubeconfig == "" {
		return errors.New("no kubeconfig: set --kubeconfig or KUBECONFIG")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	rc.UserAgent = "pggitsim"
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return fmt.Errorf("build clientset: %w", err)
	}
	opts := pggitsim.Options{PGDSN: pgDSN, Tick: tick}
	if profilesPath != "" {
		if opts.Profiles, err = pggitsim.LoadProfiles(profilesPath); err != nil {
			return err
		}
	}
	sim := pggitsim.New(cs, opts, logger)

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}

	errc := make(chan error, 2)
	go func() { errc <- sim.Run(ctx) }()
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve http: %w", err)
		}
	}()
	// The sandbox scripts read the address from this line.
	fmt.Printf("listening on %s\n", ln.Addr())
	logger.Info("pggitsim serving", zap.String("addr", ln.Addr().String()))

	select {
	case <-ctx.Done():
	case err = <-errc:
		stop()
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err == nil {
		// Wait for Run to release held connections.
		err = <-errc
	}
	return err
}
