package incident

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Sentinel errors.
var (
	ErrNotFound  = errors.New("incident not found")
	ErrInvalidID = errors.New("invalid incident id")
)

// IDs are notify.IncidentID's alphabet; anything else could escape dir.
var validID = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}$`)

// Store keeps each record as <dir>/<id>.json and <dir>/<id>.md, written
// atomically so a reader (or a crash) never sees half a record.
type Store struct {
	dir  string
	tmpl Template
	mu   sync.Mutex
	// recMu serialises Record's read-modify-write.
	recMu sync.Mutex
}

// NewStore returns a store in dir, creating it.
func NewStore(dir string, tmpl Template) (*Store, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("incident store %s: %w", dir, err)
	}
	return &Store{dir: dir, tmpl: tmpl}, nil
}

// Template returns the store's rendering template.
func (s *Store) Template() Template { return s.tmpl }

func checkID(id string) error {
	if !validID.MatchString(id) {
		return fmt.Errorf("%w: %q", ErrInvalidID, id)
	}
	return nil
}

// Put renders r's email escalation and Markdown and writes both files.
func (s *Store) Put(r *Record) error {
	if err := checkID(r.ID); err != nil {
		return err
	}
	r.EmailEscalation = EmailText(r, s.tmpl)
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("incident %s: encode: %w", r.ID, err)
	}
	md := Markdown(r, s.tmpl)
	s.mu.Lock()
	defer s.mu.Unlock()
	// Markdown first: the JSON is what List sees, so a record is listed
	// only once both exist.
	if err := writeAtomic(filepath.Join(s.dir, r.ID+".md"), []byte(md)); err != nil {
		return fmt.Errorf("incident %s: %w", r.ID, err)
	}
	if err := writeAtomic(filepath.Join(s.dir, r.ID+".json"), append(js, '\n')); err != nil {
		return fmt.Errorf("incident %s: %w", r.ID, err)
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	if err := os.Chmod(tmp, 0o640); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

// Get reads the record id.
func (s *Store) Get(id string) (*Record, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.dir, id+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("incident %s: %w", id, err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("incident %s: decode: %w", id, err)
	}
	return &r, nil
}

// Markdown reads the rendered report of id.
func (s *Store) Markdown(id string) ([]byte, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(s.dir, id+".md"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("incident %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("incident %s: %w", id, err)
	}
	return b, nil
}

// Summary is a record's line in the list.
type Summary struct {
	ID        string    `json:"id"`
	Target    string    `json:"target"`
	Trigger   string    `json:"trigger,omitempty"`
	Severity  string    `json:"severity"`
	Status    Status    `json:"status"`
	Summary   string    `json:"summary,omitempty"`
	OpenedAt  time.Time `json:"openedAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// List returns every record's summary, newest first. Unreadable files are
// skipped: one corrupt record must not hide the others.
func (s *Store) List() ([]Summary, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("incident store %s: %w", s.dir, err)
	}
	out := []Summary{}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		r, err := s.Get(strings.TrimSuffix(name, ".json"))
		if err != nil {
			continue
		}
		out = append(out, Summary{
			ID: r.ID, Target: r.Target, Trigger: r.Trigger, Severity: string(r.Severity),
			Status: r.Status, Summary: r.Summary, OpenedAt: r.OpenedAt, UpdatedAt: r.UpdatedAt,
		})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].OpenedAt.Equal(out[j].OpenedAt) {
			return out[i].OpenedAt.After(out[j].OpenedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Reader reads incident records: a Store (a directory) or a
// ClusterStore (ConfigMaps).
type Reader interface {
	List(ctx context.Context) ([]Summary, error)
	Get(ctx context.Context, id string) (*Record, error)
	Markdown(ctx context.Context, id string) ([]byte, error)
}

// Reader returns the store as a Reader.
func (s *Store) Reader() Reader { return dirReader{s} }

type dirReader struct{ s *Store }

func (d dirReader) List(context.Context) ([]Summary, error)               { return d.s.List() }
func (d dirReader) Get(_ context.Context, id string) (*Record, error)     { return d.s.Get(id) }
func (d dirReader) Markdown(_ context.Context, id string) ([]byte, error) { return d.s.Markdown(id) }

// Record folds e into its incident's record (the Recorder's write).
func (s *Store) Record(_ context.Context, e notify.Event) error {
	s.recMu.Lock()
	defer s.recMu.Unlock()
	rec, err := s.Get(e.IncidentID)
	switch {
	case errors.Is(err, ErrNotFound):
		rec = &Record{}
	case err != nil:
		return err
	}
	Apply(rec, e)
	return s.Put(rec)
}

// Handler serves GET /api/v1/incidents (summaries, newest first) and
// GET /api/v1/incidents/{id} (the record as JSON, or the Markdown report
// with ?format=markdown or Accept: text/markdown). It is read-only.
func (s *Store) Handler() http.Handler { return Handler(s.Reader(), nil) }

// Handler serves the incident API over r: GET /api/v1/incidents
// (summaries, newest first) and GET /api/v1/incidents/{id} (the record as
// JSON, or the Markdown report with ?format=markdown or Accept:
// text/markdown). It is read-only. logger may be nil.
func Handler(r Reader, logger *zap.Logger) http.Handler {
	if logger == nil {
		logger = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/incidents", func(w http.ResponseWriter, req *http.Request) {
		list, err := r.List(req.Context())
		if err != nil {
			logger.Warn("incident list unavailable", zap.Error(err))
			http.Error(w, "incident store unavailable", http.StatusInternalServerError)
			return
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("GET /api/v1/incidents/{id}", func(w http.ResponseWriter, req *http.Request) {
		id := req.PathValue("id")
		if req.URL.Query().Get("format") == "markdown" || strings.Contains(req.Header.Get("Accept"), "text/markdown") {
			md, err := r.Markdown(req.Context(), id)
			if err != nil {
				httpError(w, logger, err)
				return
			}
			w.Header().Set("Content-Type", "text/markdown; charset=utf-8")
			_, _ = w.Write(md)
			return
		}
		rec, err := r.Get(req.Context(), id)
		if err != nil {
			httpError(w, logger, err)
			return
		}
		writeJSON(w, rec)
	})
	return mux
}

func httpError(w http.ResponseWriter, logger *zap.Logger, err error) {
	switch {
	case errors.Is(err, ErrNotFound):
		http.Error(w, "incident not found", http.StatusNotFound)
	case errors.Is(err, ErrInvalidID):
		http.Error(w, "invalid incident id", http.StatusBadRequest)
	case errors.Is(err, ErrInvalidRecord):
		logger.Warn("unreadable incident record", zap.Error(err))
		http.Error(w, "incident record unreadable: "+err.Error(), http.StatusInternalServerError)
	default:
		logger.Warn("incident store unavailable", zap.Error(err))
		http.Error(w, "incident store unavailable", http.StatusInternalServerError)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
