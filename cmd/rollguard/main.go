// Command rollguard is the automated rollback watchdog: it watches a
// Deployment's health signals and, when a trigger's threshold has held for
// its whole window, rolls the Deployment back the way the runbook says.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad input
// (an invalid config, an unknown target, a malformed flag).
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return dispatch(ctx, os.Args[1:], os.Stdout, os.Stderr)
}

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"run", "run the evaluator daemon", cmdRun},
		{"validate", "check a config file and print a summary", cmdValidate},
		{"plan", "print the rollback plan for the live cluster state without acting", cmdPlan},
		{"rollback", "ask the running daemon to roll a target back (or run it here with --local)", cmdRollback},
		{"freeze", "freeze a target: automatic actions page only", cmdFreeze(true)},
		{"unfreeze", "lift a target's freeze", cmdFreeze(false)},
		{"resume-gitops", "lift rollguard's suspension of a target's Flux or Argo CD reconciliation", cmdResumeGitOps},
		{"status", "print the running daemon's trigger states", cmdStatus},
		{"backtest", "replay the config's triggers over Prometheus history", cmdBacktest},
		{"preflight", "check the runbook's pre-deployment checklist for a target (a CD gate)", cmdPreflight},
		{"backup", "take the pre-deploy database dump the full rollback restores", cmdBackup},
		{"version", "print the version", cmdVersion},
	}
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "rollguard: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: rollguard <command> [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nrun 'rollguard <command> -h' for a command's flags")
}
