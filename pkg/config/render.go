package config

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// String renders the effective configuration (defaults applied) as YAML.
// Secret values are never part of it: only the names of their files and
// variables are.
func (c *Config) String() string {
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return fmt.Sprintf("<error rendering config: %v>", err)
	}
	_ = enc.Close()
	return b.String()
}

// Summary is a short human overview of targets and triggers, for
// `rollguard validate`.
func (c *Config) Summary() string {
	var b strings.Builder
	n := 0
	for _, t := range c.Targets {
		n += len(t.Triggers)
	}
	fmt.Fprintf(&b, "%d %s, %d %s; interval %s\n", len(c.Targets), plural(len(c.Targets), "target"), n, plural(n, "trigger"), c.Global.Interval)
	for _, t := range c.Targets {
		mode := "live"
		if t.DryRunEnabled() {
			mode = "dry-run"
		}
		if t.Freeze || c.Global.Interlocks.Freeze {
			mode += ", frozen"
		}
		fmt.Fprintf(&b, "target %s: %s/%s, strategy %s, %s\n", t.Name, t.Namespace, t.Deployment, t.Rollback.Strategy, mode)
		for _, tr := range t.Triggers {
			fmt.Fprintf(&b, "  trigger %s: %s %s for %s -> %s (%s)\n", tr.Name, tr.Kind, tr.Comparison(), tr.For, tr.Action, tr.Severity)
		}
	}
	return b.String()
}

func plural(n int, s string) string {
	if n == 1 {
		return s
	}
	return s + "s"
}

// DryRunEnabled is the target's effective dry-run switch.
func (t *Target) DryRunEnabled() bool { return t.DryRun != nil && *t.DryRun }

// Comparison renders the threshold, e.g. "> 0.05" or "< 1".
func (t *Trigger) Comparison() string {
	switch {
	case t.Above != nil:
		return "> " + strconv.FormatFloat(*t.Above, 'g', -1, 64)
	case t.Below != nil:
		return "< " + strconv.FormatFloat(*t.Below, 'g', -1, 64)
	}
	return "(no threshold)"
}

// Fingerprint identifies what a trigger's window holds: the data (kind,
// query, volume query, match labels, database, application) and the rule
// over it (threshold, for, maxGap, onError, minRate, blindAfter). Hot
// reload keeps the window of a trigger whose fingerprint is unchanged.
// The name, action, severity and security flag are not part of it: changing
// who is paged does not invalidate the samples. Two targets' triggers with
// the same definition (e.g. one SQL query) have the same fingerprint, so key
// windows by target name, trigger name and fingerprint.
func (t *Trigger) Fingerprint() string {
	h := sha256.New()
	for _, s := range []string{t.Kind, t.Query, t.VolumeQuery, t.Database, t.Application, string(t.OnError)} {
		writeString(h, s)
	}
	keys := sortedKeys(t.Match)
	writeInt(h, int64(len(keys)))
	for _, k := range keys {
		writeString(h, k)
		writeString(h, t.Match[k])
	}
	writeFloatPtr(h, t.Above)
	writeFloatPtr(h, t.Below)
	writeInt(h, int64(t.For))
	writeInt(h, int64(t.MaxGap))
	writeInt(h, int64(t.BlindAfter))
	writeInt(h, int64(math.Float64bits(t.MinRate)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Length-prefixed fields, so ("ab", "c") and ("a", "bc") differ.
func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeFloatPtr(h hash.Hash, f *float64) {
	if f == nil {
		h.Write([]byte{0})
		return
	}
	h.Write([]byte{1})
	writeInt(h, int64(math.Float64bits(*f)))
}
