// Package output is how rollguard's read commands print what they read:
// one -o/--output flag taking table, json or yaml, the same on every
// command, and the writers behind it. JSON is the machine form (indented,
// one document); YAML is the same document converted, so both carry the
// same field names; table is the command's own human form.
package output

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"
)

// Format is an output format; it is a pflag.Value that refuses anything
// but the formats below when the flag is parsed.
type Format string

// The formats.
const (
	Table Format = "table"
	JSON  Format = "json"
	YAML  Format = "yaml"
)

// Formats are the accepted values, in the order help and completion list
// them.
var Formats = []Format{Table, JSON, YAML}

// String returns the format's name.
func (f *Format) String() string { return string(*f) }

// Set parses a flag value.
func (f *Format) Set(s string) error {
	for _, v := range Formats {
		if s == string(v) {
			*f = v
			return nil
		}
	}
	return fmt.Errorf("want %s", names())
}

// Type names the value in help.
func (f *Format) Type() string { return "format" }

func names() string {
	s := make([]string, len(Formats))
	for i, v := range Formats {
		s[i] = string(v)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// Register adds -o/--output to fs, bound to f, defaulting to table.
func Register(fs *pflag.FlagSet, f *Format) {
	*f = Table
	fs.VarP(f, "output", "o", "output format: "+names())
}

// Write prints v in format f: table calls table; json and yaml marshal v
// (through its JSON form, so field names and custom marshalling match).
func Write(w io.Writer, f Format, v any, table func(io.Writer) error) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case YAML:
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	case Table, "":
		return table(w)
	}
	return fmt.Errorf("output format %q: want %s", string(f), names())
}
