// Command rollguard is the automated rollback watchdog: it watches a
// Deployment's health signals and, when a trigger's threshold has held for
// its whole window, rolls the Deployment back the way the runbook says.
//
// Installed as kubectl-rollguard on the PATH it is also a kubectl plugin
// (`kubectl rollguard status`); a link named kubectl_complete-rollguard
// gives kubectl's shell completion the plugin's own.
package main

import (
	"context"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

// Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad input
// (an invalid config, an unknown target or context, a malformed flag).
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	name := filepath.Base(os.Args[0])
	if name == completionPluginName {
		// kubectl completes a plugin's arguments by running
		// kubectl_complete-<plugin> with them.
		args = append([]string{"__complete"}, args...)
	}
	return dispatch(ctx, name, args, os.Stdout, os.Stderr)
}

// dispatch runs the command line args as the program name says (rollguard
// or the kubectl plugin) and returns the exit code.
func dispatch(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	root, state := newRoot(ctx, name, stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	return state.exitCode(cmd, err)
}
