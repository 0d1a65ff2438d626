package output

import (
	"bytes"
	"io"
	"testing"

	"github.com/spf13/pflag"
)

func TestFlag(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    Format
		wantErr string
	}{
		{nil, Table, ""},
		{[]string{"-o", "json"}, JSON, ""},
		{[]string{"--output=yaml"}, YAML, ""},
		{[]string{"-otable"}, Table, ""},
		{[]string{"-o", "xml"}, "", `invalid argument "xml" for "-o, --output" flag: want table, json or yaml`},
		{[]string{"-o", "JSON"}, "", `invalid argument "JSON" for "-o, --output" flag: want table, json or yaml`},
	} {
		fs := pflag.NewFlagSet("x", pflag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var f Format
		Register(fs, &f)
		err := fs.Parse(tc.args)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("%q: error %v, want %s", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil || f != tc.want {
			t.Errorf("%q: %q, %v; want %q", tc.args, f, err, tc.want)
		}
	}
}

func TestWrite(t *testing.T) {
	type doc struct {
		Name  string            `json:"name"`
		Count int               `json:"count"`
		Tags  map[string]string `json:"tags,omitempty"`
	}
	v := doc{Name: "pggit-api", Count: 2, Tags: map[string]string{"b": "2", "a": "1"}}
	table := func(w io.Writer) error { _, err := io.WriteString(w, "NAME COUNT\npggit-api 2\n"); return err }
	for _, tc := range []struct {
		f    Format
		want string
	}{
		{Table, "NAME COUNT\npggit-api 2\n"},
		{JSON, "{\n  \"name\": \"pggit-api\",\n  \"count\": 2,\n  \"tags\": {\n    \"a\": \"1\",\n    \"b\": \"2\"\n  }\n}\n"},
		{YAML, "count: 2\nname: pggit-api\ntags:\n  a: \"1\"\n  b: \"2\"\n"},
	} {
		var b bytes.Buffer
		if err := Write(&b, tc.f, v, table); err != nil {
			t.Fatalf("%s: %v", tc.f, err)
		}
		if b.String() != tc.want {
			t.Errorf("%s:\n%s\nwant:\n%s", tc.f, b.String(), tc.want)
		}
	}
	if err := Write(io.Discard, "xml", v, table); err == nil || err.Error() != `output format "xml": want table, json or yaml` {
		t.Errorf("unknown format: %v", err)
	}
}
