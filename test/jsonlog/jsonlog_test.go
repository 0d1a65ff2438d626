package jsonlog

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

type line struct {
	Msg string `json:"msg"`
}

func TestTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	tail := NewTail[line](path)
	if got := tail.Next(); got != nil {
		t.Fatalf("missing file: got %v, want nothing", got)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	steps := []struct {
		name  string
		write string
		want  []line
	}{
		{"complete lines, one not JSON", "{\"msg\":\"a\"}\nnot json\n{\"msg\":\"b\"}\n", []line{{"a"}, {"b"}}},
		{"nothing new", "", nil},
		{"half a line is left for later", "{\"msg\":", nil},
		{"its end completes it", "\"c\"}\n{\"msg\":\"d\"}\n", []line{{"c"}, {"d"}}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if _, err := f.WriteString(st.write); err != nil {
				t.Fatal(err)
			}
			if got := tail.Next(); !reflect.DeepEqual(got, st.want) {
				t.Errorf("Next() = %v, want %v", got, st.want)
			}
		})
	}
	if got, want := Read[line](path), []line{{"a"}, {"b"}, {"c"}, {"d"}}; !reflect.DeepEqual(got, want) {
		t.Errorf("Read = %v, want %v", got, want)
	}
}
