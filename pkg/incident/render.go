package incident

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Template holds what the runbook's templates need that the events do not
// carry: who is on call, where the status page is, who gets the email.
// Empty fields render as the runbook's placeholders.
type Template struct {
	// Impact describes what users lose, e.g. "Webhook delivery system".
	Impact     string
	OnCall     string
	StatusPage string
	EmailTo    []string
	// StatusURL is rollguard's base URL, for the "incident details" link.
	StatusURL string
}

func (t Template) link(id string) string {
	if t.StatusURL == "" {
		return "[LINK TO INCIDENT REPORT]"
	}
	return strings.TrimSuffix(t.StatusURL, "/") + "/api/v1/incidents/" + url.PathEscape(id)
}

func severityWord(s notify.Severity) string {
	switch s {
	case notify.SeverityCritical:
		return "CRITICAL"
	case notify.SeverityError:
		return "HIGH"
	case notify.SeverityWarning:
		return "MEDIUM"
	case notify.SeverityInfo:
		return "LOW"
	}
	return "CRITICAL"
}

func statusWord(s Status) string {
	switch s {
	case StatusResolved:
		return "RESOLVED"
	case StatusFailed:
		return "ROLLBACK_FAILED"
	case StatusCannotRollback:
		return "NEEDS_HUMAN"
	case StatusDryRun:
		return "DRY_RUN"
	case StatusUnverified:
		return "UNVERIFIED"
	}
	return "IN_PROGRESS"
}

func clock(t time.Time) string { return t.UTC().Format("15:04:05") + " UTC" }
func stamp(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05") + " UTC" }

// Title is the incident's one-line name.
func (r *Record) Title() string {
	s := r.Target + " Deployment Rollback"
	if r.Trigger != "" {
		s += " (" + r.Trigger + ")"
	}
	return s
}

// SlackText is the runbook's Slack notification template filled in.
func SlackText(r *Record, t Template) string {
	var b strings.Builder
	fmt.Fprintf(&b, "🚨 INCIDENT: %s\n\n", r.Title())
	fmt.Fprintf(&b, "Severity: %s\n", severityWord(r.Severity))
	fmt.Fprintf(&b, "Status: %s\n", statusWord(r.Status))
	impact := t.Impact
	if impact == "" {
		impact = r.Target
	}
	fmt.Fprintf(&b, "Impact: %s\n\n", impact)
	b.WriteString("Timeline:\n")
	for _, e := range r.Timeline {
		fmt.Fprintf(&b, "- %s: %s\n", clock(e.Time), e.What)
	}
	b.WriteString("\nRoot Cause: To be determined\n\n")
	b.WriteString("Actions Taken:\n")
	for _, a := range r.actionsTaken() {
		fmt.Fprintf(&b, "- %s\n", a)
	}
	b.WriteString("\nNext Steps:\n- Root cause analysis\n- Fix and test in staging\n- Redeploy with fixes\n\n")
	b.WriteString("ETA for Fix: [TIME]\n\n")
	fmt.Fprintf(&b, "On-Call: %s\n", orDefault(t.OnCall, "@[engineer-name]"))
	fmt.Fprintf(&b, "Status Page: %s\n", orDefault(t.StatusPage, "[STATUS PAGE]"))
	return b.String()
}

func (r *Record) actionsTaken() []string {
	var out []string
	switch r.Status {
	case StatusDryRun:
		return []string{"None: dry-run, rollguard only reported what it would do"}
	case StatusCannotRollback:
		return []string{"None: " + orDefault(r.Reason, "rollguard could not roll back") + "; a human must decide"}
	}
	if !r.RestoredAt.IsZero() {
		out = append(out, "Rolled back to "+orDefault(r.RestoredVersion, "the previous version"))
	} else if !r.RollbackStartedAt.IsZero() {
		out = append(out, "Rollback to "+orDefault(r.RestoredVersion, "the previous version")+" started, not completed")
	}
	if r.DataIntegrity != nil {
		out = append(out, "Verified data integrity: "+integrityText(r.DataIntegrity))
	} else {
		out = append(out, "Data integrity not checked by rollguard")
	}
	for _, s := range r.Steps {
		line := "Step " + s.Name + ": " + orDefault(s.Outcome, "running")
		if !s.Finished.IsZero() && !s.Started.IsZero() {
			line += " in " + s.Finished.Sub(s.Started).Round(time.Millisecond).String()
		}
		if s.Error != "" {
			line += " (" + s.Error + ")"
		} else if s.Detail != "" {
			line += ": " + s.Detail
		}
		out = append(out, line)
	}
	if !r.StableAt.IsZero() {
		out = append(out, "Restored traffic")
	}
	if r.Status == StatusFailed && r.Error != "" {
		out = append(out, "Stopped: "+r.Error)
	}
	if r.Status == StatusFailed && r.LeftBehind != "" {
		out = append(out, "Left behind: "+r.LeftBehind)
	}
	if r.Status == StatusUnverified {
		out = append(out, "NOT verified: "+orDefault(r.Verification, "verify had no data to judge the recovery by"))
	}
	return out
}

// Duration is from the first sign of trouble (breach, else detection,
// else the record's opening) to the system being stable; zero while
// ongoing.
func (r *Record) Duration() time.Duration {
	if r.StableAt.IsZero() {
		return 0
	}
	start := r.OpenedAt
	for _, t := range []time.Time{r.DetectedAt, r.BreachStartedAt} {
		if !t.IsZero() && t.Before(start) {
			start = t
		}
	}
	return r.StableAt.Sub(start)
}

// EmailText is the runbook's email escalation filled in.
func EmailText(r *Record, t Template) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Subject: Incident Report: %s\n\n", r.Title())
	to := "[engineering-leads], [ops]"
	if len(t.EmailTo) > 0 {
		to = strings.Join(t.EmailTo, ", ")
	}
	fmt.Fprintf(&b, "To: %s\n\n", to)
	b.WriteString("Timeline:\n")
	for _, e := range r.Timeline {
		fmt.Fprintf(&b, "- %s: %s\n", stamp(e.Time), e.What)
	}
	b.WriteString("\nImpact Analysis:\n")
	if d := r.Duration(); d > 0 {
		fmt.Fprintf(&b, "- Duration: %s\n", d.Round(time.Second))
	} else {
		b.WriteString("- Duration: ongoing\n")
	}
	b.WriteString("- Affected webhooks: [COUNT]\n- Failed deliveries: [COUNT]\n")
	b.WriteString("- Data loss: To be determined")
	if r.DataIntegrity != nil {
		b.WriteString(" (rollguard counted " + integrityText(r.DataIntegrity) + ")")
	}
	b.WriteString("\n\nAction Items:\n")
	b.WriteString("1. [ ] Root cause analysis (assigned to: [NAME])\n")
	b.WriteString("2. [ ] Fix development and testing (assigned to: [NAME])\n")
	b.WriteString("3. [ ] Post-mortem meeting (scheduled for: [DATE/TIME])\n")
	b.WriteString("4. [ ] Code review process improvement\n\n")
	fmt.Fprintf(&b, "See incident details: %s\n", t.link(r.ID))
	return b.String()
}

// Markdown is the full incident report: the Slack template, the evidence,
// the steps, the data check, the recovery checklist and the email.
func Markdown(r *Record, t Template) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Incident %s: %s\n\n", r.ID, r.Title())
	b.WriteString("```\n" + SlackText(r, t) + "```\n\n")

	b.WriteString("## Evidence\n\n")
	if r.Summary != "" {
		fmt.Fprintf(&b, "%s\n\n", r.Summary)
	}
	if r.Evidence.Query != "" {
		fmt.Fprintf(&b, "- Query: `%s`\n", r.Evidence.Query)
	}
	if r.Evidence.Op != "" {
		fmt.Fprintf(&b, "- Condition: %s %s", r.Evidence.Op, fmtFloat(r.Evidence.Threshold))
		if r.Evidence.Window != "" {
			fmt.Fprintf(&b, " for %s", r.Evidence.Window)
		}
		b.WriteString("\n")
	}
	if r.BadVersion != "" || r.RestoredVersion != "" {
		fmt.Fprintf(&b, "- Versions: bad %s, restored %s\n", orDefault(r.BadVersion, "unknown"), orDefault(r.RestoredVersion, "none"))
	}
	if len(r.Evidence.Samples) > 0 {
		b.WriteString("\n| time | value |\n|---|---|\n")
		for _, s := range r.Evidence.Samples {
			fmt.Fprintf(&b, "| %s | %g |\n", clock(s.Time), s.Value)
		}
	}
	if r.Reason != "" {
		fmt.Fprintf(&b, "\nReason: %s\n", r.Reason)
	}

	if len(r.Steps) > 0 || len(r.Plan) > 0 {
		b.WriteString("\n## Steps\n\n")
		if len(r.Plan) > 0 {
			fmt.Fprintf(&b, "Plan (%s): %s\n\n", orDefault(r.Strategy, "default"), strings.Join(r.Plan, " → "))
		}
		if len(r.Steps) > 0 {
			b.WriteString("| step | started | finished | outcome | detail or error |\n|---|---|---|---|---|\n")
			for _, s := range r.Steps {
				fin := "-"
				if !s.Finished.IsZero() {
					fin = clock(s.Finished)
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", s.Name, clock(s.Started), fin,
					orDefault(s.Outcome, "running"), strings.ReplaceAll(orDefault(s.Error, s.Detail), "|", "\\|"))
			}
		}
	}
	if len(r.Requests) > 0 {
		b.WriteString("\n## Requested by\n\n")
		b.WriteString("| at | who | why |\n|---|---|---|\n")
		for _, q := range r.Requests {
			who := q.String()
			if !q.StartsAt.IsZero() {
				who += ", firing since " + stamp(q.StartsAt)
			}
			if len(q.Labels) > 0 {
				who += ", labels " + labelText(q.Labels)
			}
			fmt.Fprintf(&b, "| %s | %s | %s |\n", stamp(q.At), cell(who), cell(q.Reason))
		}
	}
	if r.Verification != "" {
		fmt.Fprintf(&b, "\n## Verification\n\n%s\n", r.Verification)
	}
	if r.LeftBehind != "" {
		fmt.Fprintf(&b, "\n## State left behind\n\n%s\n", r.LeftBehind)
	}
	b.WriteString("\n## Data integrity\n\n")
	if d := r.DataIntegrity; d != nil {
		fmt.Fprintf(&b, "- alert_delivery_queue rows: %d\n- unresolved replication conflicts: %d\n", d.AlertDeliveryQueue, d.UnresolvedConflicts)
		if len(d.LatestSchemaVersions) > 0 {
			fmt.Fprintf(&b, "- latest schema versions: %s\n", strings.Join(d.LatestSchemaVersions, ", "))
		}
	} else {
		b.WriteString("Not checked by rollguard.\n")
	}

	b.WriteString("\n## Recovery checklist\n\n")
	for _, it := range r.RecoveryChecklist {
		box := "[ ]"
		if it.Done {
			box = "[x]"
		}
		fmt.Fprintf(&b, "- %s %s", box, it.Item)
		if it.Note != "" {
			fmt.Fprintf(&b, " (%s)", it.Note)
		}
		b.WriteString("\n")
	}
	b.WriteString("\n## Email escalation\n\n```\n" + EmailText(r, t) + "```\n")
	if len(r.Omitted) > 0 {
		b.WriteString("\n## Truncated\n\nThis record is size-bounded; omitted:")
		for _, k := range slices.Sorted(maps.Keys(r.Omitted)) {
			fmt.Fprintf(&b, " %s %d;", k, r.Omitted[k])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// cell makes s safe in a Markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", "\\|", "\n", " ").Replace(s)
}

func labelText(l map[string]string) string {
	parts := make([]string, 0, len(l))
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+strconvQuote(l[k]))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

func strconvQuote(s string) string { return fmt.Sprintf("%q", s) }
