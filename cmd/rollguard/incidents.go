package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/output"
)

// incidentSource reads records from the daemon (--api) or, with --config,
// from the cluster (or the directory) the config names: no daemon needed.
type incidentSource struct {
	cfg string
	k   kubeFlags
	a   apiFlags
}

func (s *incidentSource) register(c *cobra.Command) {
	configFlag(c, &s.cfg, "", "read the records where this config keeps them (the cluster's ConfigMaps), without the daemon")
	s.k.register(c, false, &s.cfg)
	s.a.registerAddr(c)
}

func (s *incidentSource) reader() (incident.Reader, error) {
	if s.cfg == "" {
		if s.k.set() {
			return nil, usagef("--kubeconfig and --context go with --config (reading from the cluster)")
		}
		return apiIncidents{&api.Client{BaseURL: s.a.addr, HTTP: &http.Client{Timeout: 30 * time.Second}}}, nil
	}
	return app.IncidentReader(app.Options{ConfigFile: s.cfg, Kubeconfig: s.k.kubeconfig, KubeContext: s.k.context})
}

// apiIncidents reads the records through the daemon's API.
type apiIncidents struct{ c *api.Client }

func (a apiIncidents) List(ctx context.Context) ([]incident.Summary, error) {
	return a.c.Incidents(ctx)
}
func (a apiIncidents) Get(ctx context.Context, id string) (*incident.Record, error) {
	return a.c.Incident(ctx, id)
}
func (a apiIncidents) Markdown(ctx context.Context, id string) ([]byte, error) {
	return a.c.IncidentMarkdown(ctx, id)
}

func cmdIncidents() *cobra.Command {
	var (
		src incidentSource
		out output.Format
	)
	c := &cobra.Command{
		Use:   "incidents",
		Short: "list the incident records, newest first",
		Long: `List the incident records, newest first: what happened to which target, its
status and when. By default from the daemon's /api/v1/incidents; with --config,
straight from where that config keeps them (ConfigMaps in rollguard's namespace,
global.notify.incidentStore), so they can be read with no daemon running.
'rollguard incidents show ID' prints one record: its report (the timeline, the
evidence, who asked and why, the steps), or the record itself with -o json|yaml.`,
		Example: `  rollguard incidents
  rollguard incidents --config rollguard.yaml --context prod-eu -o json
  rollguard incidents show production_pggit-api_6d5f8c9b7`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r, err := src.reader()
			if err != nil {
				return err
			}
			list, err := r.List(cmd.Context())
			if err != nil {
				return err
			}
			return output.Write(cmd.OutOrStdout(), out, list, func(w io.Writer) error { printIncidents(w, list); return nil })
		},
	}
	src.register(c)
	registerOutput(c, &out)
	c.AddCommand(cmdIncidentShow())
	return c
}

func cmdIncidentShow() *cobra.Command {
	var (
		src incidentSource
		out output.Format
	)
	c := &cobra.Command{
		Use:   "show ID",
		Short: "print one incident record: its report, or the record with -o json|yaml",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := src.reader()
			if err != nil {
				return err
			}
			if out == output.Table {
				md, err := r.Markdown(cmd.Context(), args[0])
				if err != nil {
					return badID(err)
				}
				_, err = cmd.OutOrStdout().Write(md)
				return err
			}
			rec, err := r.Get(cmd.Context(), args[0])
			if err != nil {
				return badID(err)
			}
			return output.Write(cmd.OutOrStdout(), out, rec, nil)
		},
	}
	src.register(c)
	registerOutput(c, &out)
	return c
}

func printIncidents(w io.Writer, list []incident.Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTARGET\tTRIGGER\tSTATUS\tOPENED\tSUMMARY")
	for _, s := range list {
		sum := s.Summary
		if len(sum) > 80 {
			sum = sum[:77] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Target, dash(s.Trigger), s.Status, s.OpenedAt.UTC().Format(time.RFC3339),
			strings.ReplaceAll(dash(sum), "\n", " "))
	}
	tw.Flush()
}

// badID makes an unknown or malformed ID bad input (exit 2).
func badID(err error) error {
	if errors.Is(err, incident.ErrNotFound) || errors.Is(err, incident.ErrInvalidID) {
		return usageError{err}
	}
	return err
}
