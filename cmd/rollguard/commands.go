package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/backtest"
	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/output"
	"github.com/rollguard/rollguard/pkg/preflight"
	"github.com/rollguard/rollguard/pkg/version"
)

// configFlag is --config with its default.
func configFlag(cmd *cobra.Command, p *string, def, usage string) {
	cmd.Flags().StringVar(p, "config", def, usage)
	_ = cmd.MarkFlagFilename("config", "yaml", "yml")
}

func cmdRun() *cobra.Command {
	var (
		cfg      string
		shutdown time.Duration
		k        kubeFlags
	)
	c := &cobra.Command{
		Use:   "run",
		Short: "run the evaluator daemon",
		Long: `Run the daemon: evaluate every trigger each interval, act on the ones that
fire, serve metrics, status and the API on global.listenAddress, and reload the
config on SIGHUP, POST /-/reload or a change of the file.`,
		Example: "  rollguard run --config /etc/rollguard/rollguard.yaml",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return app.Run(cmd.Context(), app.Options{ConfigFile: cfg, ShutdownTimeout: shutdown, LogOutput: cmd.ErrOrStderr(),
				Kubeconfig: k.kubeconfig, KubeContext: k.context})
		},
	}
	configFlag(c, &cfg, "rollguard.yaml", "config file")
	c.Flags().DurationVar(&shutdown, "shutdown-timeout", 20*time.Second, "bound on graceful shutdown")
	k.register(c, false, &cfg)
	return c
}

func cmdValidate() *cobra.Command {
	var (
		cfgFile     string
		skipSecrets bool
	)
	c := &cobra.Command{
		Use:   "validate",
		Short: "check a config file and print a summary",
		Long: `Check a config file: every problem at once, one per line with its file, line
and path, exit 2. Without --skip-secrets every secret file and variable is read
and checked too (a DSN must parse, a CA file must hold a certificate).`,
		Example: "  rollguard validate --config configs/production.yaml --skip-secrets",
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadFile(cfgFile)
			if err == nil && !skipSecrets {
				if serr := cfg.ResolveSecrets(); serr != nil {
					err = fmt.Errorf("%s: %w", cfgFile, serr)
				}
			}
			if err != nil {
				if errors.Is(err, config.ErrInvalid) {
					return err
				}
				// A file that cannot be read is bad input here too.
				return usageError{err}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: valid\n%s", cfgFile, cfg.Summary())
			// Legal but probably unintended: said, not refused.
			for _, w := range cfg.WarningLines() {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: "+w)
			}
			return nil
		},
	}
	configFlag(c, &cfgFile, "rollguard.yaml", "config file")
	c.Flags().BoolVar(&skipSecrets, "skip-secrets", false, "do not read secret files and variables (lint on a machine without them)")
	return c
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

var planActions = []string{"quick", "revert", "full", "pool-recovery", "multi-region"}

func cmdPlan() *cobra.Command {
	var (
		cfg, target, action string
		k                   kubeFlags
		out                 output.Format
	)
	c := &cobra.Command{
		Use:   "plan",
		Short: "print the rollback plan for the live cluster state without acting",
		Long: `Print the plan a rollback of the target would run now: the bad revision, the
revision it would pin, the replicas to restore and every step. It reads the
cluster and the databases and writes nothing.`,
		Example: `  rollguard plan --config rollguard.yaml --target pggit-api
  rollguard plan --config rollguard.yaml -n production --context prod-eu -o yaml
  kubectl rollguard plan --config rollguard.yaml --target pggit-api --action revert`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := k.target(cfg, target)
			if err != nil {
				return err
			}
			pv, err := app.PlanView(cmd.Context(), app.Options{ConfigFile: cfg, LogOutput: cmd.ErrOrStderr(),
				Kubeconfig: k.kubeconfig, KubeContext: k.context}, name, action)
			if err != nil {
				return err
			}
			return output.Write(cmd.OutOrStdout(), out, newPlanDoc(pv), func(w io.Writer) error {
				_, err := io.WriteString(w, app.RenderPlan(pv))
				return err
			})
		},
	}
	configFlag(c, &cfg, "rollguard.yaml", "config file")
	c.Flags().StringVar(&target, "target", "", "target name (default: the only target in -n's namespace)")
	c.Flags().StringVar(&action, "action", "", "plan to show: "+strings.Join(planActions, ", ")+" (default: the target's strategy)")
	_ = c.RegisterFlagCompletionFunc("action", fixedCompletion(planActions...))
	k.register(c, true, &cfg)
	_ = c.RegisterFlagCompletionFunc("target", k.completeTargets(&cfg))
	registerOutput(c, &out)
	return c
}

var rollbackActions = []string{"rollback", "full-rollback", "revert", "restart-then-rollback"}

func cmdRollback() *cobra.Command {
	var (
		cfg, action  string
		local, force bool
		k            kubeFlags
		t            targetFlags
	)
	c := &cobra.Command{
		Use:   "rollback",
		Short: "ask the running daemon to roll a target back (or run it here with --local)",
		Long: `Ask the running daemon (its authenticated API) to roll a target back, through
the same interlocks as an automatic rollback. With --local the plan runs in
this process against the cluster, journaled and fenced like the daemon's.`,
		Example: `  rollguard rollback --target pggit-api --reason "5xx after v1.1.0" --token-file ~/.rollguard-token
  rollguard rollback --local --config rollguard.yaml --context prod-eu -n production --reason "daemon down"`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !local && k.set() {
				return usagef("--kubeconfig, --context and -n/--namespace apply only with --local (the daemon uses its own cluster access)")
			}
			if force && !local {
				return usagef("--force goes with --local (the daemon's API takes no override)")
			}
			if local {
				if cfg == "" {
					return usageError{errors.New("--local: --config is required")}
				}
				if strings.TrimSpace(t.reason) == "" {
					return usagef("--reason is required")
				}
				name, err := k.target(cfg, t.target)
				if err != nil {
					return err
				}
				out, err := app.RollbackLocal(cmd.Context(), app.Options{ConfigFile: cfg, LogOutput: cmd.ErrOrStderr(),
					Kubeconfig: k.kubeconfig, KubeContext: k.context}, name, action, t.reason, force)
				fmt.Fprint(cmd.OutOrStdout(), out)
				return err
			}
			return t.ask(cmd, func(ctx context.Context, cl *api.Client) (string, error) {
				res, err := cl.Rollback(ctx, t.target, action, t.reason)
				return fmt.Sprintf("%s %s: %s", res.Target, res.Action, res.Detail), err
			})
		},
	}
	configFlag(c, &cfg, "", "config file (with --local)")
	t.register(c, "why; recorded in the incident and the pages")
	c.Flags().StringVar(&action, "action", "", "action: "+strings.Join(rollbackActions, ", ")+" (default: the target's strategy)")
	_ = c.RegisterFlagCompletionFunc("action", fixedCompletion(rollbackActions...))
	c.Flags().BoolVar(&local, "local", false, "run the plan in this process against the cluster instead of asking the daemon")
	c.Flags().BoolVar(&force, "force", false, "with --local: pass the cooldown, the hourly budget, one rollback per revision and the revision age (logged; a freeze and dry-run still hold)")
	k.register(c, true, &cfg)
	_ = c.RegisterFlagCompletionFunc("target", k.completeTargets(&cfg))
	return c
}

func cmdFreeze(frozen bool) *cobra.Command {
	name, done, short := "freeze", "frozen", "freeze a target: automatic actions page only"
	if !frozen {
		name, done, short = "unfreeze", "unfrozen", "lift a target's freeze"
	}
	var t targetFlags
	c := &cobra.Command{
		Use:     name,
		Short:   short,
		Example: fmt.Sprintf("  rollguard %s --target pggit-api --reason \"release window\" --token-file ~/.rollguard-token", name),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return t.ask(cmd, func(ctx context.Context, cl *api.Client) (string, error) {
				return t.target + ": " + done, cl.Freeze(ctx, t.target, frozen, t.reason)
			})
		},
	}
	t.register(c, "why")
	return c
}

func cmdResumeGitOps() *cobra.Command {
	var t targetFlags
	c := &cobra.Command{
		Use:   "resume-gitops",
		Short: "lift rollguard's suspension of a target's Flux or Argo CD reconciliation",
		Long: `Lift the suspension rollguard put on the Flux Kustomization or HelmRelease, or
the Argo CD Application, that reconciles a target (gitops.mode: suspend),
through the daemon's authenticated API. Do it once Git no longer deploys the
bad version: the controller then reconciles again.`,
		Example: `  rollguard resume-gitops --target pggit-api --reason "reverted abc123 in Git" --token-file ~/.rollguard-token`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return t.ask(cmd, func(ctx context.Context, cl *api.Client) (string, error) {
				return cl.ResumeGitOps(ctx, t.target, t.reason)
			})
		},
	}
	t.register(c, "why (e.g. the revert commit in Git)")
	return c
}

func cmdStatus() *cobra.Command {
	var (
		a      apiFlags
		out    output.Format
		asJSON bool
	)
	c := &cobra.Command{
		Use:   "status",
		Short: "print the running daemon's trigger states",
		Long: `Print every trigger's state (ok, pending, firing, nodata), last value,
threshold, breach start and last source error, and every target's dry-run,
freeze and last result, from the daemon's /api/v1/status.`,
		Example: `  rollguard status
  kubectl rollguard status --api http://127.0.0.1:9847 -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON {
				fmt.Fprintln(cmd.ErrOrStderr(), "rollguard status: --json is deprecated; use -o json")
				if cmd.Flags().Changed("output") && out != output.JSON {
					return usagef("--json and -o %s disagree; use -o", out)
				}
				out = output.JSON
			}
			cl := &api.Client{BaseURL: a.addr, HTTP: &http.Client{Timeout: 10 * time.Second}}
			s, err := cl.Status(cmd.Context())
			if err != nil {
				return err
			}
			return output.Write(cmd.OutOrStdout(), out, s, func(w io.Writer) error { printStatus(w, s); return nil })
		},
	}
	a.registerAddr(c)
	registerOutput(c, &out)
	c.Flags().BoolVar(&asJSON, "json", false, "print the raw JSON (deprecated: -o json)")
	_ = c.Flags().MarkHidden("json")
	return c
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

func cmdBacktest() *cobra.Command {
	var bf backtest.Flags
	c := &cobra.Command{
		Use:   "backtest",
		Short: "replay the config's triggers over Prometheus history",
		Long: `Replay the config's triggers over Prometheus history (query_range) and report
when each would have fired, with the evidence, the plan and the interlocks'
verdict. --set tries other thresholds without editing the file.`,
		Example: `  rollguard backtest --config rollguard.yaml --from now-24h
  rollguard backtest --config rollguard.yaml --from now-7d --set targets.pggit-api.triggers.error-rate.above=0.03 -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadFile(bf.ConfigFile)
			if err != nil {
				return err
			}
			o, err := bf.Options(cfg, time.Now(), cmd.OutOrStdout())
			if err == nil {
				err = backtest.Run(cmd.Context(), o)
			}
			if errors.Is(err, backtest.ErrUsage) {
				return usageError{err}
			}
			return err
		},
	}
	bf.Register(c.Flags())
	_ = c.MarkFlagFilename("config", "yaml", "yml")
	_ = c.MarkFlagFilename("plot", "png", "svg")
	_ = c.RegisterFlagCompletionFunc("output", completeOutput)
	_ = c.RegisterFlagCompletionFunc("target", (&kubeFlags{}).completeTargets(&bf.ConfigFile))
	return c
}

func cmdPreflight(state *runState) *cobra.Command {
	var (
		o                preflight.Options
		next, migrations []string
		k                kubeFlags
		out              output.Format
	)
	c := &cobra.Command{
		Use:   "preflight",
		Short: "check the runbook's pre-deployment checklist for a target (a CD gate)",
		Long: `Check the runbook's pre-deployment checklist for a target: the previous
version to roll back to, the pre-deploy dump, replication, the monitoring
(every trigger has data, the daemon is up) and paging. Exit 1 when a check
blocks the deploy, so a CD pipeline can gate on it.`,
		Example: `  rollguard preflight --config rollguard.yaml --target pggit-api --next-image pggit-api:v1.2.0
  kubectl rollguard preflight --config rollguard.yaml -n production -o json`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			name, err := k.target(o.ConfigFile, o.Target)
			if err != nil {
				return err
			}
			o.Target, o.NextImage, o.RequireMigrations = name, next, migrations
			o.Kubeconfig, o.KubeContext = k.kubeconfig, k.context
			rep, err := preflight.Run(cmd.Context(), o)
			if err != nil {
				if errors.Is(err, preflight.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			var doc bytes.Buffer
			if err := rep.WriteJSON(&doc); err != nil {
				return err
			}
			if err := output.Write(cmd.OutOrStdout(), out, json.RawMessage(doc.Bytes()), rep.WriteTable); err != nil {
				return err
			}
			if rep.Blocking() {
				state.code = exitFail
			}
			return nil
		},
	}
	configFlag(c, &o.ConfigFile, "rollguard.yaml", "config file")
	c.Flags().StringVar(&o.Target, "target", "", "target name (default: the only target in -n's namespace)")
	c.Flags().StringArrayVar(&next, "next-image", nil, "image about to be deployed (image, or container=image); repeatable")
	c.Flags().StringArrayVar(&migrations, "require-migration", nil, "migration that must be in pggit.schema_versions; repeatable")
	c.Flags().BoolVar(&o.RestoreTest, "restore-test", false, "restore the dump into a scratch database, then drop it")
	c.Flags().BoolVar(&o.TestPage, "test-page", false, "send an info-severity test event to PagerDuty")
	c.Flags().StringVar(&o.DaemonURL, "daemon-url", "", "rollguard's API (default http://<global.listenAddress>)")
	k.register(c, true, &o.ConfigFile)
	_ = c.RegisterFlagCompletionFunc("target", k.completeTargets(&o.ConfigFile))
	registerOutput(c, &out)
	return c
}

func cmdBackup() *cobra.Command {
	var o backup.Options
	c := &cobra.Command{
		Use:   "backup",
		Short: "take the pre-deploy database dump the full rollback restores",
		Long: `Take the pre-deploy dump (pg_dump -Fc) of the target's rollback.database to its
dumpPath, keeping the previous one as <dumpPath>.prev, with a record of the
migration state it was taken at.`,
		Example: "  rollguard backup --config rollguard.yaml --target pggit-api",
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := app.NewLogger("info", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			o.Logger = logger
			res, err := backup.Run(cmd.Context(), o)
			if err != nil {
				if errors.Is(err, backup.ErrUsage) {
					return usageError{err}
				}
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Summary())
			return nil
		},
	}
	configFlag(c, &o.ConfigFile, "rollguard.yaml", "config file")
	c.Flags().StringVar(&o.Target, "target", "", "target name")
	c.Flags().BoolVar(&o.DiscardPrevious, "discard-previous", false, "do not keep the previous dump as <dumpPath>.prev")
	_ = c.RegisterFlagCompletionFunc("target", (&kubeFlags{}).completeTargets(&o.ConfigFile))
	return c
}

func cmdVersion() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "print the version",
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			fmt.Fprintf(cmd.OutOrStdout(), "rollguard %s (revision %s, %s)\n", v.Version, v.Revision, v.GoVersion)
			return nil
		},
	}
}

// apiFlags reach the daemon's API.
type apiFlags struct{ addr, tokenFile string }

func (a *apiFlags) registerAddr(c *cobra.Command) {
	c.Flags().StringVar(&a.addr, "api", envOr("ROLLGUARD_API", "http://127.0.0.1:9847"), "the daemon's API base URL ($ROLLGUARD_API)")
}

func (a *apiFlags) register(c *cobra.Command) {
	a.registerAddr(c)
	c.Flags().StringVar(&a.tokenFile, "token-file", os.Getenv("ROLLGUARD_TOKEN_FILE"), "file holding the API bearer token ($ROLLGUARD_TOKEN_FILE)")
	_ = c.MarkFlagFilename("token-file")
}

// client is an API client with the bearer token; a missing token is bad
// usage.
func (a *apiFlags) client() (*api.Client, error) {
	if a.tokenFile == "" {
		return nil, errTokenUsage("--token-file (or $ROLLGUARD_TOKEN_FILE) is required for commands that change something")
	}
	b, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return nil, errTokenUsage(fmt.Sprintf("read token file: %v", err))
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return nil, errTokenUsage(fmt.Sprintf("token file %s is empty", a.tokenFile))
	}
	return &api.Client{BaseURL: a.addr, Token: tok, HTTP: &http.Client{Timeout: 60 * time.Second}}, nil
}

// targetFlags name a target and why, for a request about it to the
// daemon's API.
type targetFlags struct {
	target, reason string
	api            apiFlags
}

func (t *targetFlags) register(c *cobra.Command, reasonUsage string) {
	c.Flags().StringVar(&t.target, "target", "", "target name")
	c.Flags().StringVar(&t.reason, "reason", "", reasonUsage)
	t.api.register(c)
}

// ask sends the request (--target and a non-blank --reason are required)
// and prints the line it returns.
func (t *targetFlags) ask(cmd *cobra.Command, request func(context.Context, *api.Client) (string, error)) error {
	if t.target == "" || strings.TrimSpace(t.reason) == "" {
		return usagef("--target and --reason are required")
	}
	cl, err := t.api.client()
	if err != nil {
		return err
	}
	line, err := request(cmd.Context(), cl)
	if err != nil {
		return err
	}
	fmt.Fprintln(cmd.OutOrStdout(), line)
	return nil
}

// errTokenUsage is bad usage reported as "rollguard: ..." (it is about the
// credentials, not the command's flags).
type errTokenUsage string

func (e errTokenUsage) Error() string { return string(e) }

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
	var tu errTokenUsage
	if errors.Is(err, app.ErrUsage) || errors.Is(err, api.ErrUnknownTarget) || errors.Is(err, kube.ErrKubeconfig) || errors.As(err, &tu) {
		fmt.Fprintf(stderr, "rollguard: %v\n", err)
		return exitUsage
	}
	fmt.Fprintf(stderr, "rollguard: %v\n", err)
	return exitFail
}
