package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/backtest"
	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/preflight"
	"github.com/rollguard/rollguard/pkg/version"
)

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("rollguard "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parse returns an exit code when the command must stop (help or bad flags).
func parse(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK, false
		}
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return exitUsage, false
	}
	return 0, true
}

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("run", stderr)
	cfg := fs.String("config", "rollguard.yaml", "config file")
	shutdown := fs.Duration("shutdown-timeout", 20*time.Second, "bound on graceful shutdown")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	err := app.Run(ctx, app.Options{ConfigFile: *cfg, ShutdownTimeout: *shutdown, LogOutput: stderr})
	return exitCode(err, stderr)
}

func cmdValidate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("validate", stderr)
	cfgFile := fs.String("config", "rollguard.yaml", "config file")
	skipSecrets := fs.Bool("skip-secrets", false, "do not read secret files and variables (lint on a machine without them)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg, err := config.LoadFile(*cfgFile)
	if err == nil && !*skipSecrets {
		if serr := cfg.ResolveSecrets(); serr != nil {
			err = fmt.Errorf("%s: %w", *cfgFile, serr)
		}
	}
	if err != nil {
		printConfigError(stderr, err)
		return exitUsage
	}
	fmt.Fprintf(stdout, "%s: valid\n%s", *cfgFile, cfg.Summary())
	return exitOK
}

func printConfigError(w io.Writer, err error) {
	var errs *config.Errors
	if errors.As(err, &errs) {
		for _, l := range errs.Lines() {
			fmt.Fprintln(w, l)
		}
		return
	}
	fmt.Fprintln(w, err)
}

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("plan", stderr)
	cfg := fs.String("config", "rollguard.yaml", "config file")
	target := fs.String("target", "", "target name")
	action := fs.String("action", "", "plan to show: quick, revert, full, pool-recovery, multi-region (default: the target's strategy)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	out, err := app.Plan(ctx, app.Options{ConfigFile: *cfg, LogOutput: stderr}, *target, *action)
	if err != nil {
		return exitCode(err, stderr)
	}
	fmt.Fprint(stdout, out)
	return exitOK
}

func cmdRollback(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("rollback", stderr)
	cfg := fs.String("config", "", "config file (with --local)")
	target := fs.String("target", "", "target name")
	action := fs.String("action", "", "action: rollback, full-rollback, revert, restart-then-rollback (default: the target's strategy)")
	reason := fs.String("reason", "", "why; recorded in the incident and the pages")
	local := fs.Bool("local", false, "run the plan in this process against the cluster instead of asking the daemon")
	addr, tokenFile := apiFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *target == "" || strings.TrimSpace(*reason) == "" {
		fmt.Fprintln(stderr, "rollguard rollback: --target and --reason are required")
		return exitUsage
	}
	if *local {
		if *cfg == "" {
			fmt.Fprintln(stderr, "rollguard rollback --local: --config is required")
			return exitUsage
		}
		out, err := app.RollbackLocal(ctx, app.Options{ConfigFile: *cfg, LogOutput: stderr}, *target, *action, *reason)
		fmt.Fprint(stdout, out)
		return exitCode(err, stderr)
	}
	c, code := client(*addr, *tokenFile, stderr)
	if c == nil {
		return code
	}
	res, err := c.Rollback(ctx, *target, *action, *reason)
	if err != nil {
		return exitCode(err, stderr)
	}
	fmt.Fprintf(stdout, "%s %s: %s\n", res.Target, res.Action, res.Detail)
	return exitOK
}

func cmdFreeze(frozen bool) func(context.Context, []string, io.Writer, io.Writer) int {
	name, done := "freeze", "frozen"
	if !frozen {
		name, done = "unfreeze", "unfrozen"
	}
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		fs := newFlags(name, stderr)
		target := fs.String("target", "", "target name")
		reason := fs.String("reason", "", "why")
		addr, tokenFile := apiFlags(fs)
		if code, ok := parse(fs, args); !ok {
			return code
		}
		if *target == "" || strings.TrimSpace(*reason) == "" {
			fmt.Fprintf(stderr, "rollguard %s: --target and --reason are required\n", name)
			return exitUsage
		}
		c, code := client(*addr, *tokenFile, stderr)
		if c == nil {
			return code
		}
		if err := c.Freeze(ctx, *target, frozen, *reason); err != nil {
			return exitCode(err, stderr)
		}
		fmt.Fprintf(stdout, "%s: %s\n", *target, done)
		return exitOK
	}
}

func cmdResumeGitOps(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("resume-gitops", stderr)
	target := fs.String("target", "", "target name")
	reason := fs.String("reason", "", "why (e.g. the revert commit in Git)")
	addr, tokenFile := apiFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *target == "" || strings.TrimSpace(*reason) == "" {
		fmt.Fprintln(stderr, "rollguard resume-gitops: --target and --reason are required")
		return exitUsage
	}
	c, code := client(*addr, *tokenFile, stderr)
	if c == nil {
		return code
	}
	detail, err := c.ResumeGitOps(ctx, *target, *reason)
	if err != nil {
		return exitCode(err, stderr)
	}
	fmt.Fprintln(stdout, detail)
	return exitOK
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("status", stderr)
	asJSON := fs.Bool("json", false, "print the raw JSON")
	addr, _ := apiFlags(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	c := &api.Client{BaseURL: *addr, HTTP: &http.Client{Timeout: 10 * time.Second}}
	s, err := c.Status(ctx)
	if err != nil {
		return exitCode(err, stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(s)
		return exitOK
	}
	printStatus(stdout, s)
	return exitOK
}

func printStatus(w io.Writer, s api.Status) {
	fmt.Fprintf(w, "rollguard %s  leader=%v  dryRun=%v  config=%s loaded %s\n\n", s.Version, s.Leader, s.DryRun, s.ConfigHash, s.LoadedAt.Format(time.RFC3339))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tTRIGGER\tSTATE\tVALUE\tTHRESHOLD\tBREACH SINCE\tERROR")
	for _, t := range s.Triggers {
		v := "-"
		if !math.IsNaN(t.Value) {
			v = fmt.Sprintf("%.4g", t.Value)
		}
		since := "-"
		if !t.BreachStart.IsZero() {
			since = t.BreachStart.Format(time.TimeOnly)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s %g\t%s\t%s\n", t.Target, t.Trigger, t.State, v, t.Op, t.Threshold, since, t.LastError)
	}
	tw.Flush()
	if len(s.Targets) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TARGET\tDEPLOYMENT\tDRY-RUN\tFROZEN\tRUNNING\tLAST RESULT")
		for _, t := range s.Targets {
			fmt.Fprintf(tw, "%s\t%s/%s\t%v\t%v\t%s\t%s\n", t.Name, t.Namespace, t.Deployment, t.DryRun, t.Frozen, dash(t.Running), dash(t.LastResult))
		}
		tw.Flush()
		printGitOps(w, s.Targets)
	}
}

// printGitOps lists the targets a GitOps controller reconciles, and the
// suspensions rollguard holds.
func printGitOps(w io.Writer, ts []api.TargetStatus) {
	var rows []api.TargetStatus
	for _, t := range ts {
		if t.GitOps != nil {
			rows = append(rows, t)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tGITOPS OWNER\tMODE\tREVISION\tSUSPENDED\tBY ROLLGUARD SINCE\tERROR")
	for _, t := range rows {
		g := t.GitOps
		since := "-"
		if g.ByRollguard && g.Since != nil {
			since = g.Since.Format(time.RFC3339) + " (run " + g.Run + ")"
		} else if g.Watching != "" {
			since = "lifted; watching " + g.Watching
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", t.Name, dash(g.Owner), g.Mode, dash(g.Revision), g.Suspended, since, dash(g.Error))
	}
	tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cmdBacktest(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("backtest", stderr)
	var bf backtest.Flags
	bf.Register(fs)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	cfg, err := config.LoadFile(bf.ConfigFile)
	if err != nil {
		printConfigError(stderr, err)
		return exitUsage
	}
	o, err := bf.Options(cfg, time.Now(), stdout)
	if err == nil {
		err = backtest.Run(ctx, o)
	}
	if errors.Is(err, backtest.ErrUsage) {
		fmt.Fprintln(stderr, "rollguard backtest:", err)
		return exitUsage
	}
	return exitCode(err, stderr)
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

func cmdPreflight(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("preflight", stderr)
	var o preflight.Options
	var next, migrations stringList
	fs.StringVar(&o.ConfigFile, "config", "rollguard.yaml", "config file")
	fs.StringVar(&o.Target, "target", "", "target name")
	output := fs.String("output", "table", "table or json")
	fs.Var(&next, "next-image", "image about to be deployed (image, or container=image); repeatable")
	fs.Var(&migrations, "require-migration", "migration that must be in pggit.schema_versions; repeatable")
	fs.BoolVar(&o.RestoreTest, "restore-test", false, "restore the dump into a scratch database, then drop it")
	fs.BoolVar(&o.TestPage, "test-page", false, "send an info-severity test event to PagerDuty")
	fs.StringVar(&o.DaemonURL, "daemon-url", "", "rollguard's API (default http://<global.listenAddress>)")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *output != "table" && *output != "json" {
		fmt.Fprintf(stderr, "rollguard preflight: --output %q: want table or json\n", *output)
		return exitUsage
	}
	o.NextImage, o.RequireMigrations = next, migrations
	rep, err := preflight.Run(ctx, o)
	if err != nil {
		if errors.Is(err, preflight.ErrUsage) {
			fmt.Fprintln(stderr, "rollguard preflight:", err)
			return exitUsage
		}
		return exitCode(err, stderr)
	}
	if *output == "json" {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		return exitCode(err, stderr)
	}
	if rep.Blocking() {
		return exitFail
	}
	return exitOK
}

func cmdBackup(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("backup", stderr)
	var o backup.Options
	fs.StringVar(&o.ConfigFile, "config", "rollguard.yaml", "config file")
	fs.StringVar(&o.Target, "target", "", "target name")
	fs.BoolVar(&o.DiscardPrevious, "discard-previous", false, "do not keep the previous dump as <dumpPath>.prev")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	logger, err := app.NewLogger("info", stderr)
	if err != nil {
		return exitCode(err, stderr)
	}
	o.Logger = logger
	res, err := backup.Run(ctx, o)
	if err != nil {
		if errors.Is(err, backup.ErrUsage) {
			fmt.Fprintln(stderr, "rollguard backup:", err)
			return exitUsage
		}
		return exitCode(err, stderr)
	}
	fmt.Fprintln(stdout, res.Summary())
	return exitOK
}

func cmdVersion(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlags("version", stderr)
	if code, ok := parse(fs, args); !ok {
		return code
	}
	v := version.Get()
	fmt.Fprintf(stdout, "rollguard %s (revision %s, %s)\n", v.Version, v.Revision, v.GoVersion)
	return exitOK
}

func apiFlags(fs *flag.FlagSet) (addr, tokenFile *string) {
	addr = fs.String("api", envOr("ROLLGUARD_API", "http://127.0.0.1:9847"), "the daemon's API base URL ($ROLLGUARD_API)")
	tokenFile = fs.String("token-file", os.Getenv("ROLLGUARD_TOKEN_FILE"), "file holding the API bearer token ($ROLLGUARD_TOKEN_FILE)")
	return addr, tokenFile
}

func client(addr, tokenFile string, stderr io.Writer) (*api.Client, int) {
	if tokenFile == "" {
		fmt.Fprintln(stderr, "rollguard: --token-file (or $ROLLGUARD_TOKEN_FILE) is required for commands that change something")
		return nil, exitUsage
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		fmt.Fprintf(stderr, "rollguard: read token file: %v\n", err)
		return nil, exitUsage
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		fmt.Fprintf(stderr, "rollguard: token file %s is empty\n", tokenFile)
		return nil, exitUsage
	}
	return &api.Client{BaseURL: addr, Token: tok, HTTP: &http.Client{Timeout: 60 * time.Second}}, 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// exitCode prints err and maps it: invalid input → 2, anything else → 1.
func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, context.Canceled) {
		return exitOK
	}
	if errors.Is(err, config.ErrInvalid) {
		printConfigError(stderr, err)
		return exitUsage
	}
	if errors.Is(err, app.ErrUsage) || errors.Is(err, api.ErrUnknownTarget) {
		fmt.Fprintf(stderr, "rollguard: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "rollguard: %v\n", err)
	return exitFail
}
