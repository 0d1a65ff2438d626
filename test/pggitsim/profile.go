// Package pggitsim simulates pggit-api for the sandbox: it watches the
// Deployments that ask for it, and serves the request metrics and health
// answers that their Ready Pods would produce, with a fault profile per
// image tag. A rollback in the sandbox thus really moves the error rate and
// the latency that Prometheus scrapes: a closed loop without containers.
package pggitsim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"sort"
	"sync"

	"gopkg.in/yaml.v3"
)

// ErrInvalidProfile is returned for a profile whose numbers make no sense.
var ErrInvalidProfile = errors.New("invalid profile")

// Profile is how the pods of one image tag behave.
type Profile struct {
	// ErrorRate is the fraction of requests answered with status 500.
	ErrorRate float64 `json:"errorRate" yaml:"errorRate"`
	// LatencySeconds is the duration of every request that is not slow.
	LatencySeconds float64 `json:"latencySeconds" yaml:"latencySeconds"`
	// SlowFraction is the fraction of requests that take SlowSeconds.
	SlowFraction float64 `json:"slowFraction" yaml:"slowFraction"`
	SlowSeconds  float64 `json:"slowSeconds" yaml:"slowSeconds"`
}

// Healthy tells whether /health answers 200 for pods of this profile: a
// version that fails or stalls requests reports itself unhealthy, so a
// rollback's verify step sees the difference.
func (p Profile) Healthy() bool {
	return p.ErrorRate == 0 && p.SlowFraction == 0
}

// Validate checks the ranges.
func (p Profile) Validate() error {
	switch {
	case p.ErrorRate < 0 || p.ErrorRate > 1:
		return fmt.Errorf("%w: errorRate %v not in [0, 1]", ErrInvalidProfile, p.ErrorRate)
	case p.SlowFraction < 0 || p.SlowFraction > 1:
		return fmt.Errorf("%w: slowFraction %v not in [0, 1]", ErrInvalidProfile, p.SlowFraction)
	case p.LatencySeconds < 0:
		return fmt.Errorf("%w: latencySeconds %v < 0", ErrInvalidProfile, p.LatencySeconds)
	case p.SlowSeconds < 0:
		return fmt.Errorf("%w: slowSeconds %v < 0", ErrInvalidProfile, p.SlowSeconds)
	}
	return nil
}

// unknownTagProfile is used for tags without a profile: healthy, 50 ms.
func unknownTagProfile() Profile { return Profile{LatencySeconds: 0.05} }

// DefaultProfiles are the built-in profiles of the pggit-api versions the
// runbook names.
func DefaultProfiles() map[string]Profile {
	return map[string]Profile{
		"v1.0.3": {LatencySeconds: 0.05},
		"v1.1.0": {ErrorRate: 0.2, LatencySeconds: 0.05},
		// 5 % of requests at 8 s puts the 99th percentile in the 5-10 s
		// bucket, above the runbook's 5 s P99 threshold.
		"v1.1.1-slow": {LatencySeconds: 0.05, SlowFraction: 0.05, SlowSeconds: 8},
	}
}

// profileFile is the YAML layout of --profiles.
type profileFile struct {
	Profiles map[string]Profile `yaml:"profiles"`
}

// LoadProfiles reads a YAML file of the form
//
//	profiles:
//	  v1.1.0: {errorRate: 0.2, latencySeconds: 0.05}
//
// (the top-level "profiles:" key may be left out) and returns the defaults
// overlaid with the file's entries. Unknown fields are errors so a typo
// does not silently make a version healthy.
func LoadProfiles(path string) (map[string]Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read profiles %s: %w", path, err)
	}
	var probe map[string]any
	if err := yaml.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("parse profiles %s: %w", path, err)
	}
	_, wrapped := probe["profiles"]
	var f profileFile
	var target any = &f.Profiles
	if wrapped {
		target = &f
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(target); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("parse profiles %s: %w", path, err)
	}
	out := DefaultProfiles()
	for _, tag := range sortedKeys(f.Profiles) {
		p := f.Profiles[tag]
		if err := p.Validate(); err != nil {
			return nil, fmt.Errorf("profiles %s: %s: %w", path, tag, err)
		}
		out[tag] = p
	}
	return out, nil
}

// profiles is the runtime-changeable table; base is what DELETE restores.
type profiles struct {
	mu   sync.RWMutex
	base map[string]Profile
	cur  map[string]Profile
}

func newProfiles(base map[string]Profile) *profiles {
	if base == nil {
		base = DefaultProfiles()
	}
	return &profiles{base: maps.Clone(base), cur: maps.Clone(base)}
}

func (p *profiles) get(tag string) Profile {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if pr, ok := p.cur[tag]; ok {
		return pr
	}
	return unknownTagProfile()
}

func (p *profiles) set(tag string, pr Profile) error {
	if err := pr.Validate(); err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cur[tag] = pr
	return nil
}

// reset puts tag back to its configured (file or built-in) profile.
func (p *profiles) reset(tag string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if pr, ok := p.base[tag]; ok {
		p.cur[tag] = pr
		return
	}
	delete(p.cur, tag)
}

func (p *profiles) all() map[string]Profile {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return maps.Clone(p.cur)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
