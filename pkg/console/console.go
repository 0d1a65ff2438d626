// Package console is rollguard's web console: server-rendered pages an
// on-call engineer reads during an incident. The overview shows every
// target's triggers (state, last value against the threshold, how much of
// the window the current breach has held, a sparkline of the window); a
// target's page shows its revisions, the plan a rollback would run now and
// every interlock; an incident's page shows the runbook timeline, the
// evidence chart, the steps and the pages sent.
//
// The pages work with JavaScript off (html/template, inline SVG, a CSS
// file); the one script, served as a file so the Content-Security-Policy
// can forbid inline script, refreshes the live parts and carries the
// actions. Actions (freeze, unfreeze, rollback) call the daemon's API with
// the bearer token in an Authorization header the script sets: a browser
// never sends that header by itself, so no other site can forge a request
// (no cookie, no ambient credential), and the token never appears in a URL.
// Without a token the action forms are not in the page at all.
//
// Everything is read through small interfaces the app implements, so the
// console neither reaches into the evaluator nor knows where incidents are
// stored.
package console

import (
	"context"
	"crypto/subtle"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// ErrUnknownTarget is returned by Targets.Target for a name not in the
// config (the page answers 404).
var ErrUnknownTarget = errors.New("unknown target")

// Fleet is the daemon's state now; it must be cheap (no I/O beyond
// in-memory reads and short-lived caches): the overview calls it on every
// refresh.
type Fleet interface {
	Snapshot(ctx context.Context) Snapshot
}

// Targets reads one target's live state from the cluster: revisions,
// interlocks and the plan a rollback would run now.
type Targets interface {
	Target(ctx context.Context, name string) (TargetDetail, error)
	// Plan is what `rollguard plan --action action` prints for the target,
	// for the confirmation of a rollback; "" is the target's strategy.
	Plan(ctx context.Context, name, action string) (*rollback.PlanView, error)
}

// Incidents reads incident records. Errors wrapping incident.ErrNotFound
// and incident.ErrInvalidID answer 404 and 400.
type Incidents interface {
	List(ctx context.Context) ([]incident.Summary, error)
	Get(ctx context.Context, id string) (*incident.Record, error)
	Markdown(ctx context.Context, id string) ([]byte, error)
}

// Deliveries reports the notifications sent for an incident.
type Deliveries interface {
	ForIncident(id string) []notify.Delivery
}

// Snapshot is the daemon's state at one instant.
type Snapshot struct {
	Version string
	// Identity is this replica's name in the leader lease.
	Identity       string
	Leader         bool
	LeaderElection bool
	DryRun         bool
	ConfigHash     string
	LoadedAt       time.Time
	Interval       time.Duration
	Targets        []Target
}

// Target is one configured target as the overview shows it.
type Target struct {
	Name       string
	Namespace  string
	Deployment string
	DryRun     bool
	// Freeze says why the target is frozen ("" when it is not, or when
	// unknown: see FreezeUnknown).
	Freeze        string
	FreezeUnknown bool
	// Image is the Deployment's image(s), when known.
	Image      string
	Running    string
	LastResult string
	Triggers   []evaluator.View
	// Follower is set by the console from the snapshot: this replica only
	// watches the target; the leader acts.
	Follower bool
}

// TargetDetail is a target's page.
type TargetDetail struct {
	Target
	// ReadError says why the cluster could not be read ("" when it was).
	ReadError string
	Current   *Revision
	Previous  *Revision
	// Plan is what a rollback would run now; PlanError why there is none.
	Plan      *rollback.PlanView
	PlanError string
	// Interlocks in the order the guard applies them. More (GitOps
	// state) join the list as the app learns them: the page renders
	// whatever it is given.
	Interlocks []Interlock
	// Verdict is what an automatic action would do if a trigger fired now.
	Verdict        string
	VerdictAllowed bool
	// Actions are the plans a human may ask for.
	Actions []string
}

// Revision is one ReplicaSet of the target.
type Revision struct {
	Number  int64
	Name    string
	Hash    string
	Images  string
	Created time.Time
	Ready   int32
	Desired int32
}

// Interlock states.
const (
	InterlockPass    = "pass"
	InterlockBlocks  = "blocks"
	InterlockOff     = "off"
	InterlockUnknown = "unknown"
)

// Interlock is one check an automatic action must pass.
type Interlock struct {
	Name   string
	State  string // InterlockPass, InterlockBlocks, InterlockOff, InterlockUnknown
	Detail string
}

// Options configure the console.
type Options struct {
	// Token is the API's bearer token; the console only checks a token a
	// human typed before it shows the action forms (the API checks it
	// again on every action). Empty: actions are off.
	Token []byte
	// Refresh is how often the script refreshes the overview (default
	// 2s; a target's page, which reads the cluster, every 5s).
	Refresh time.Duration
	Now     func() time.Time
	// Title names the installation in the page header (default rollguard).
	Title string
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed assets
var assetFS embed.FS

// Console serves the pages.
type Console struct {
	fleet      Fleet
	targets    Targets
	incidents  Incidents
	deliveries Deliveries
	opts       Options
	log        *zap.Logger
	tmpl       *template.Template
	mux        *http.ServeMux
}

// New returns the console. incidents and deliveries may be nil (no
// incident store configured).
func New(fleet Fleet, targets Targets, incidents Incidents, deliveries Deliveries, opts Options, logger *zap.Logger) *Console {
	if opts.Refresh <= 0 {
		opts.Refresh = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Title == "" {
		opts.Title = "rollguard"
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	c := &Console{fleet: fleet, targets: targets, incidents: incidents, deliveries: deliveries, opts: opts, log: logger}
	c.tmpl = template.Must(template.New("").Funcs(funcs).ParseFS(templateFS, "templates/*.html"))
	assets, _ := fs.Sub(assetFS, "assets")
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", c.overview)
	mux.HandleFunc("GET /targets/{name}", c.target)
	mux.HandleFunc("GET /targets/{name}/plan", c.plan)
	mux.HandleFunc("GET /incidents", c.incidentList)
	mux.HandleFunc("GET /incidents/{id}", c.incident)
	mux.HandleFunc("GET /incidents/{id}/report.md", c.download(false))
	mux.HandleFunc("GET /incidents/{id}/record.json", c.download(true))
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", cacheAssets(http.FileServerFS(assets))))
	mux.HandleFunc("POST /console/auth", c.auth)
	c.mux = mux
	return c
}

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mux.ServeHTTP(w, r)
}

// ContentSecurityPolicy is set on every response of the daemon's listener:
// scripts, styles and everything else only from the daemon itself, no
// inline script or style, no framing, forms post only back to it.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; base-uri 'none'; frame-ancestors 'none'"

// SecureHeaders sets the security headers on every response of next.
func SecureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		next.ServeHTTP(w, r)
	})
}

func cacheAssets(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The assets change with the binary only; a short max-age keeps an
		// upgrade visible within minutes.
		w.Header().Set("Cache-Control", "public, max-age=300")
		next.ServeHTTP(w, r)
	})
}

// auth answers 204 when the request carries the API token, so the script
// shows the action forms only to someone who can use them. It changes
// nothing.
func (c *Console) auth(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if len(c.opts.Token) == 0 {
		http.Error(w, "actions are disabled: no API token configured (global.api.tokenFile)", http.StatusForbidden)
		return
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="rollguard"`)
		http.Error(w, "missing bearer token", http.StatusUnauthorized)
		return
	}
	if subtle.ConstantTimeCompare([]byte(got), c.opts.Token) != 1 {
		c.log.Warn("console sign-in with a wrong token", zap.String("remote", r.RemoteAddr))
		http.Error(w, "wrong token", http.StatusForbidden)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// timeout bounds the reads behind one page.
const timeout = 10 * time.Second

func (c *Console) render(w http.ResponseWriter, code int, name string, data any) {
	var b strings.Builder
	if err := c.tmpl.ExecuteTemplate(&b, name, data); err != nil {
		c.log.Error("console template failed", zap.String("template", name), zap.Error(err))
		http.Error(w, "console: cannot render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(b.String()))
}

func (c *Console) errorPage(w http.ResponseWriter, r *http.Request, code int, msg string) {
	snap := c.fleet.Snapshot(r.Context())
	c.render(w, code, "error.html", c.page(snap, "Error", 0, map[string]any{"Code": code, "Message": msg}))
}
