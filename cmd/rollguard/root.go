package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// The names the binary answers to as a kubectl plugin.
const (
	pluginName           = "kubectl-rollguard"
	completionPluginName = "kubectl_complete-rollguard"
)

// usageError is bad usage found by a command itself (a missing flag, a
// flag that does not apply): printed after the command's path, exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// noArgs refuses positional arguments: every input is a flag.
func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return fmt.Errorf("unexpected arguments %q", args)
	}
	return nil
}

// errNoCommand is `rollguard` alone: the usage is printed, exit 2.
var errNoCommand = errors.New("no command")

// runState is what one command line left for its exit code.
type runState struct {
	stderr io.Writer
	// ran is set once a command's own code starts; an error before that
	// is cobra's (an unknown command or flag, a bad flag value, stray
	// arguments): bad usage.
	ran bool
	// code is the exit code of a command that ended without an error but
	// must not exit 0 (preflight with a blocking check).
	code int
}

func (s *runState) exitCode(cmd *cobra.Command, err error) int {
	var ue usageError
	switch {
	case err == nil:
		return s.code
	case errors.Is(err, errNoCommand):
		return exitUsage
	case !s.ran || errors.As(err, &ue):
		fmt.Fprintf(s.stderr, "%s: %v\n", cmd.CommandPath(), err)
		if !s.ran {
			fmt.Fprintf(s.stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
		}
		return exitUsage
	}
	return exitCode(err, s.stderr)
}

// newRoot builds the command tree for one command line. name is the
// program's name: as kubectl-rollguard, help and completion say
// "kubectl rollguard".
func newRoot(ctx context.Context, name string, stdout, stderr io.Writer) (*cobra.Command, *runState) {
	state := &runState{stderr: stderr}
	root := &cobra.Command{
		Use:   "rollguard",
		Short: "automated rollback watchdog for Kubernetes",
		Long: `rollguard watches a Deployment's health signals (error rate and P99 latency
from Prometheus, connection-pool use and replication lag from PostgreSQL) and,
when a trigger's threshold has held for its whole window, rolls the Deployment
back the way the runbook says, pages on-call and writes the incident record.

Exit codes: 0 success, 1 failure at run time, 2 bad usage or bad input.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		// Runs after flags and arguments were accepted, before the
		// command's own code.
		PersistentPreRun: func(*cobra.Command, []string) { state.ran = true },
		RunE: func(cmd *cobra.Command, _ []string) error {
			cmd.SetOut(stderr)
			_ = cmd.Usage()
			return errNoCommand
		},
	}
	if name == pluginName || name == completionPluginName {
		root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl rollguard"}
	}
	root.SetContext(ctx)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return err })
	root.CompletionOptions.HiddenDefaultCmd = false

	root.AddGroup(
		&cobra.Group{ID: "daemon", Title: "Running and checking the daemon:"},
		&cobra.Group{ID: "read", Title: "Reading (-o table|json|yaml):"},
		&cobra.Group{ID: "act", Title: "Acting on a target:"},
	)
	add := func(group string, cmds ...*cobra.Command) {
		for _, c := range cmds {
			c.GroupID = group
			c.Args = noArgs
			root.AddCommand(c)
		}
	}
	add("daemon", cmdRun(), cmdValidate())
	// A future `incidents` command (the daemon's /api/v1/incidents) joins
	// this group with output.Register like the others.
	add("read", cmdStatus(), cmdPlan(), cmdPreflight(state), cmdBacktest())
	add("act", cmdRollback(), cmdFreeze(true), cmdFreeze(false), cmdResumeGitOps(), cmdBackup())
	v := cmdVersion()
	v.Args = noArgs
	root.AddCommand(v)
	return root, state
}
